-- Upstream Absurd 0.5.1 -> Absurd for Python 0.6.0: pre-steps, run before absurd.sql.
-- Nothing needs rewriting: absurd.sql adds the new columns and indexes to every
-- queue and backfills them. This guard refuses to run on another version.
do $$
begin
  if absurd.get_schema_version() <> '0.5.1' then
    raise exception using errcode = 'AB016',
      message = format('Migration 0.5.1-0.6.0 expects schema 0.5.1, found %s',
                       absurd.get_schema_version());
  end if;
end;
$$;
