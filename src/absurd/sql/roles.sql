-- =============================================================================
-- Absurd for Python: least-privilege roles (optional; apply after absurd.sql).
--
-- Defines absurd._install_roles(worker, reader) and absurd._uninstall_roles(
-- worker, reader); absurd.schema.install_roles() / uninstall_roles() call them.
-- From psql:   \i roles.sql
--              select absurd._install_roles('absurd_worker', 'absurd_reader');
--
-- ROLES (NOLOGIN group roles: grant them to your login roles)
--   <worker>  runs workers and spawns tasks: USAGE on schema absurd and EXECUTE
--             on the engine's public functions except the administrative ones
--             (drop_queue, set_queue_policy, cleanup_*, partition maintenance
--             and pg_cron scheduling). No table privilege
--             at all: it cannot select, insert, update or delete a row itself.
--   <reader>  for dashboards (Habitat) and reporting: SELECT on every absurd
--             table (present and future), EXECUTE on the read-only functions.
--   <ingress> for absurd.ingress, the public HTTP receiver (installed with the
--             pair by absurd.schema.install_roles: absurd._install_ingress_role):
--             EXECUTE on the functions ingress calls (emit_event, spawn_task,
--             resolve_promise, reject_promise, get_promise, record_delivery) and
--             nothing else; no table privilege.
--
-- HOW THE WORKER WRITES WITHOUT TABLE PRIVILEGES
--   The engine's public functions (names without a leading "_") are switched to
--   SECURITY DEFINER with search_path pinned to pg_catalog, pg_temp (every
--   engine object is schema-qualified, so nothing can be hijacked through the
--   caller's search_path or temporary schema). They run as the schema owner, who
--   owns the tables. Explicit per-table DML grants were rejected: the worker
--   could then rewrite any row directly, which is what the role must not do.
--   EXECUTE is revoked from PUBLIC on every function in schema absurd, so only
--   the owner and the granted roles can call the engine, and nobody but the
--   owner can call the internal "_" helpers (which stay SECURITY INVOKER).
--
--   CREATE OR REPLACE FUNCTION resets SECURITY DEFINER and the search_path, so
--   re-running absurd.sql undoes the switch. absurd.schema.install() and
--   migrate() therefore re-apply every role pair recorded in
--   absurd.installed_roles. (Without that, the worker fails closed: it is
--   refused access to the tables; nothing is opened up.)
-- =============================================================================

create table if not exists absurd.installed_roles (
  worker_role name not null,
  reader_role name not null,
  installed_at timestamptz not null default clock_timestamp(),
  primary key (worker_role, reader_role)
);

-- Functions the worker role must not call: queue administration and cleanup.
create or replace function absurd._admin_function(p_name name)
returns boolean
language sql
immutable
as $$
  select p_name in ('drop_queue', 'set_queue_policy', 'cleanup_tasks', 'cleanup_events',
                    'cleanup_all_queues', 'ensure_partitions', 'drop_detached_partition',
                    'schedule_detach_jobs', 'enable_cron', 'disable_cron',
                    'cleanup_ingress_deliveries')
$$;

-- Functions that only read (granted to the reader role).
create or replace function absurd._read_only_function(p_name name)
returns boolean
language sql
immutable
as $$
  select p_name in ('current_time', 'get_schema_version', 'validate_queue_name',
                    'uuidv7_timestamp', 'uuidv7_floor', 'week_bucket_utc',
                    'partition_week_tag', 'retry_delay_seconds', 'queue_channel',
                    'queue_next_wake', 'list_queues', 'get_queue_policy',
                    'get_task_result', 'get_task_checkpoint_state',
                    'get_task_checkpoint_states', 'list_schedules', 'list_schedule_fires',
                    'preview_schedule', 'get_promise', 'queue_gauges', 'read_stream',
                    'stream_channel', 'get_flow_limits', 'get_flow_policy', 'explain_task')
$$;

create or replace function absurd._install_roles(p_worker name, p_reader name)
returns void
language plpgsql
as $$
declare
  v_fn record;
  v_role name;
begin
  if p_worker is null or p_reader is null or p_worker = '' or p_worker = p_reader then
    perform absurd._raise('AB015', 'install_roles needs two distinct role names');
  end if;
  foreach v_role in array array[p_worker, p_reader] loop
    if not exists (select 1 from pg_roles where rolname = v_role) then
      execute format('create role %I nologin', v_role);
    end if;
  end loop;

  execute format('grant usage on schema absurd to %I, %I', p_worker, p_reader);
  execute 'revoke all on all tables in schema absurd from public';
  execute 'revoke all on all sequences in schema absurd from public';
  execute format('revoke all on all tables in schema absurd from %I', p_worker);
  execute format('grant select on all tables in schema absurd to %I', p_reader);
  -- Queue tables created later (create_queue runs as the owner).
  execute format('alter default privileges in schema absurd grant select on tables to %I',
                 p_reader);
  execute 'revoke execute on all functions in schema absurd from public';

  for v_fn in
    select p.oid::regprocedure as sig, p.proname
    from pg_proc p
    where p.pronamespace = 'absurd'::regnamespace and p.prokind = 'f'
      and left(p.proname, 1) <> '_'
  loop
    execute format('alter function %s security definer set search_path = pg_catalog, pg_temp',
                   v_fn.sig);
    if absurd._admin_function(v_fn.proname) then
      execute format('revoke execute on function %s from %I', v_fn.sig, p_worker);
    else
      execute format('grant execute on function %s to %I', v_fn.sig, p_worker);
    end if;
    if absurd._read_only_function(v_fn.proname) then
      execute format('grant execute on function %s to %I', v_fn.sig, p_reader);
    else
      execute format('revoke execute on function %s from %I', v_fn.sig, p_reader);
    end if;
  end loop;

  insert into absurd.installed_roles (worker_role, reader_role)
  values (p_worker, p_reader) on conflict do nothing;
end;
$$;

-- Undoes _install_roles in this database: privileges revoked, functions back to
-- SECURITY INVOKER with EXECUTE for PUBLIC, and the roles dropped when no other
-- pair still uses them. A role with privileges in another database cannot be
-- dropped (PostgreSQL refuses); uninstall there first.
create or replace function absurd._uninstall_roles(p_worker name, p_reader name)
returns void
language plpgsql
as $$
declare
  v_fn record;
  v_role name;
begin
  delete from absurd.installed_roles where worker_role = p_worker and reader_role = p_reader;
  if not exists (select 1 from absurd.installed_roles) then
    for v_fn in
      select p.oid::regprocedure as sig
      from pg_proc p
      where p.pronamespace = 'absurd'::regnamespace and p.prokind = 'f'
        and left(p.proname, 1) <> '_'
    loop
      execute format('alter function %s security invoker reset search_path', v_fn.sig);
    end loop;
    execute 'grant execute on all functions in schema absurd to public';
  end if;
  foreach v_role in array array[p_worker, p_reader] loop
    if exists (select 1 from pg_roles where rolname = v_role)
       and not exists (select 1 from absurd.installed_roles
                       where v_role in (worker_role, reader_role)) then
      execute format('alter default privileges in schema absurd revoke all on tables from %I',
                     v_role);
      execute format('drop owned by %I', v_role);
      execute format('drop role %I', v_role);
    end if;
  end loop;
end;
$$;

-- Functions the ingress role may call: what a verified request can cause.
create or replace function absurd._ingress_function(p_name name)
returns boolean
language sql
immutable
as $$
  select p_name in ('emit_event', 'spawn_task', 'resolve_promise', 'reject_promise',
                    'get_promise', 'record_delivery')
$$;

-- Creates (p_create) or refreshes the ingress role: USAGE on the schema, EXECUTE on
-- the ingress functions only. Needs an installed role pair (the functions must be
-- SECURITY DEFINER for a role without table privileges). With p_create false, a
-- missing role is left missing (what install() and migrate() re-apply).
create or replace function absurd._install_ingress_role(p_ingress name, p_create boolean default true)
returns void
language plpgsql
as $$
declare
  v_fn record;
begin
  if p_ingress is null or p_ingress = '' then
    perform absurd._raise('AB015', 'the ingress role needs a name');
  end if;
  if exists (select 1 from absurd.installed_roles
             where p_ingress in (worker_role, reader_role)) then
    perform absurd._raise('AB015', 'the ingress role must differ from the worker and reader roles');
  end if;
  if not exists (select 1 from absurd.installed_roles) then
    perform absurd._raise('AB015', 'install the worker and reader roles first');
  end if;
  if not exists (select 1 from pg_roles where rolname = p_ingress) then
    if not p_create then
      return;
    end if;
    execute format('create role %I nologin', p_ingress);
  end if;
  execute format('grant usage on schema absurd to %I', p_ingress);
  execute format('revoke all on all tables in schema absurd from %I', p_ingress);
  for v_fn in
    select p.oid::regprocedure as sig, p.proname
    from pg_proc p
    where p.pronamespace = 'absurd'::regnamespace and p.prokind = 'f'
  loop
    if left(v_fn.proname, 1) <> '_' and absurd._ingress_function(v_fn.proname) then
      execute format('grant execute on function %s to %I', v_fn.sig, p_ingress);
    else
      execute format('revoke execute on function %s from %I', v_fn.sig, p_ingress);
    end if;
  end loop;
end;
$$;

-- Drops the ingress role of this database (its privileges here first).
create or replace function absurd._uninstall_ingress_role(p_ingress name)
returns void
language plpgsql
as $$
begin
  if exists (select 1 from pg_roles where rolname = p_ingress) then
    execute format('drop owned by %I', p_ingress);
    execute format('drop role %I', p_ingress);
  end if;
end;
$$;

revoke execute on function absurd._install_ingress_role(name, boolean) from public;
revoke execute on function absurd._uninstall_ingress_role(name) from public;
revoke execute on function absurd._install_roles(name, name) from public;
revoke execute on function absurd._uninstall_roles(name, name) from public;
