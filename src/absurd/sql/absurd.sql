-- =============================================================================
-- Absurd for Python: the durable-execution engine, schema "absurd".
--
-- Compatible with the SQL interface of Absurd 0.5.1 (same functions, parameter
-- names, defaults, result columns, tables and SQLSTATEs AB001..AB003), so the
-- official TypeScript, Python and Go clients run on it unmodified.
--
-- MAP
--   absurd.queues                 one row per queue: storage mode and policy
--   absurd.task_watchers          which waiting queue/event a task's result goes to
--   absurd.task_joins             fan-in joins: how many of a set of tasks a run
--                                 still waits for (see await_all_tasks)
--                                 when it finishes (await_task_result)
--   per queue <q> (6 tables, created by ensure_queue_tables):
--     t_<q>  tasks        one row per task (state, params, result, retry policy)
--     r_<q>  runs         one row per attempt of a task (lease, wake-up time)
--     c_<q>  checkpoints  step results, keyed (task_id, checkpoint_name)
--     e_<q>  events       first-write-wins event payloads, keyed by name
--     w_<q>  waits        which run waits for which event, until when
--     i_<q>  idempotency keys (partitioned queues only; see "Storage")
--     s_<q>  streams      chunks a task streams out, keyed (task_id, stream, seq)
--                         (see "Streams")
--   absurd.schedules              one row per schedule of a queue (cron, options,
--                                 next fire time, pause state; see "Schedules")
--   absurd.schedule_fires         the fire log: each tick's outcome
--   absurd.promises               durable promises of every queue: settled once
--                                 from outside, awaited by tasks (see "Promises")
--   absurd.ingress_deliveries     webhook deliveries absurd.ingress acted on, by
--                                 (source, provider delivery id): redeliveries
--                                 are recognised (see "Ingress deliveries")
--   absurd.flow_limits            per-key overrides of a queue's flow limits (see
--                                 "Flow control"; the queue's own are in queues)
--   absurd.queue_waiters          (unlogged) LISTEN connections of workers that
--                                 wait for a queue's NOTIFY (see register_waiter)
--
--   Public functions, by group (tests/engine/test_sql_map.py checks that this
--   list names every public function, and only those):
--   Utilities      current_time, get_schema_version, validate_queue_name,
--                  portable_uuidv7, uuidv7_timestamp, uuidv7_floor,
--                  week_bucket_utc, partition_week_tag, retry_delay_seconds,
--                  queue_channel, queue_next_wake, queue_gauges,
--                  register_waiter, unregister_waiter
--   Queues         ensure_queue_tables, create_queue, drop_queue, list_queues,
--                  get_queue_policy, set_queue_policy
--   Task lifecycle spawn_task, spawn_tasks, claim_task,
--                  claim_task_with_checkpoints, complete_run,
--                  complete_run_and_claim, schedule_run, fail_run, retry_task,
--                  cancel_task, get_task_result
--   Steps, waits   set_task_checkpoint_state, get_task_checkpoint_state,
--                  get_task_checkpoint_states, extend_claim, await_event,
--                  emit_event, await_task_result, await_all_tasks
--   Batches        set_task_checkpoint_states, complete_runs (the worker's group
--                  commit: many writes in one statement)
--   Schedules      create_schedule, update_schedule, pause_schedule,
--                  resume_schedule, delete_schedule, trigger_schedule,
--                  backfill_schedule, list_schedules, list_schedule_fires,
--                  preview_schedule,
--                  fire_schedules (claim_task fires due schedules itself)
--   Promises       create_promise, resolve_promise, reject_promise,
--                  await_promise, get_promise
--   Ingress        record_delivery, cleanup_ingress_deliveries
--   Streams        write_stream, write_streams (the worker's group commit),
--                  close_stream, notify_stream, read_stream, stream_channel
--   Flow control   set_flow_limit, get_flow_limits, get_flow_policy, explain_task
--                  (the queue's limits are set by set_queue_policy)
--   Cleanup        cleanup_tasks, cleanup_events, cleanup_all_queues
--   Storage        ensure_partitions, list_detach_candidates,
--                  drop_detached_partition, schedule_detach_jobs, enable_cron,
--                  disable_cron, sweep_queue (ours; absurd/maintenance.py uses it)
--   Internal       functions whose names start with "_" (not a public API)
--
-- STATE FLOW (tasks and runs share the six states)
--   spawn -> pending --claim--> running --complete_run--> completed
--                                  |--schedule_run / await_event--> sleeping
--                                  |      sleeping --due or emit--> claimable
--                                  |--fail_run--> failed (+ new run pending or
--                                  |              sleeping when a retry is left)
--   cancel_task: any non-terminal state -> cancelled
--
-- WHERE IT DIFFERS FROM UPSTREAM (all additive; see docs/engine.md)
--   * claim cost is flat in the backlog: runs are claimed through the partial
--     index r_<q>_cli (priority, available_at, run_id) one priority band at a
--     time, and the maintenance it does (expired leases, cancellation policies)
--     is bounded and index-driven (r_<q>_cei, t_<q>_cdi).
--   * flow control (docs/engine.md "Flow control"): flow keys, limits, rate limits,
--     and keys served in turn within a band on queues with keyed runs
--     (absurd._fair_pick, r_<q>_fwi, the session setting absurd.fair_cursor).
--   * push wake-ups: NOTIFY on absurd.queue_channel(q) whenever work becomes
--     claimable now; absurd.queue_next_wake(q) tells when timed work is due.
--   * spawn options "available_at"/"delay" (delayed start) and "priority".
--   * every error a caller can cause has its own SQLSTATE in class AB
--     (catalogue in docs/errors.md); upstream's message texts are kept.
--   * the file is re-runnable and upgrades an upstream 0.5.x schema in place.
--
-- LOCK ORDER (deadlock freedom): (promise row ->) event row -> run rows (by run_id)
-- -> task row.
-- Claims never wait: they take run and task rows with SKIP LOCKED.
-- =============================================================================

create schema if not exists absurd;

create table if not exists absurd.queues (
  queue_name text primary key,
  created_at timestamptz not null default clock_timestamp(),
  storage_mode text not null default 'unpartitioned'
    check (storage_mode in ('unpartitioned', 'partitioned')),
  default_partition text not null default 'enabled'
    check (default_partition in ('enabled', 'disabled')),
  partition_lookahead interval not null default '28 days'
    check (partition_lookahead >= interval '0'),
  partition_lookback interval not null default '1 day'
    check (partition_lookback >= interval '0'),
  cleanup_ttl interval not null default '30 days'
    check (cleanup_ttl >= interval '0'),
  cleanup_limit integer not null default 1000 check (cleanup_limit >= 1),
  detach_mode text not null default 'none' check (detach_mode in ('none', 'empty')),
  detach_min_age interval not null default '30 days'
    check (detach_min_age >= interval '0')
);

-- Tasks waiting for other tasks: when the watched task reaches a terminal state,
-- its result is emitted as event <event_name> into <watcher_queue>, which wakes
-- the waiting runs there (see await_task_result).
create table if not exists absurd.task_watchers (
  queue_name text not null,
  task_id uuid not null,
  watcher_queue text not null,
  event_name text not null,
  created_at timestamptz not null default clock_timestamp(),
  primary key (queue_name, task_id, watcher_queue, event_name)
);

-- Fan-in joins (await_all_tasks): a run waits for every task of a set. The
-- children still running each have a task_watchers row for the join's event;
-- as each finishes, remaining drops by one (one row lock per join, taken by the
-- finishing child's transaction), and the last one emits the snapshots of all
-- children, in the order given, as the event: one wake-up, one resume.
create table if not exists absurd.task_joins (
  watcher_queue text not null,
  event_name text not null,
  child_queue text not null,
  children uuid[] not null,
  remaining integer not null,
  created_at timestamptz not null default clock_timestamp(),
  primary key (watcher_queue, event_name)
);

-- -----------------------------------------------------------------------------
-- Utilities
-- -----------------------------------------------------------------------------

-- Now; or the fake time of the session setting absurd.fake_now (a frozen instant:
-- tests, demos); or, with absurd.fake_offset (an interval), a clock that runs on from
-- now + offset (the test suite's simulated dates: ALTER DATABASE ... SET gives it to
-- every session, pooled and worker ones included). absurd.fake_now wins when both
-- are set. Fake time is for tests and tools run by the schema's owner or a
-- superuser. A restricted role (absurd_worker, docs/security.md) must not move the
-- engine's clock: it could make other workers' leases look expired.
create or replace function absurd._fake_clock_allowed(p_setting text)
returns void
language plpgsql
stable
as $$
begin
  if not exists (select 1 from pg_roles where rolname = session_user and rolsuper)
     and not pg_has_role(session_user,
                         (select nspowner from pg_namespace where nspname = 'absurd'), 'USAGE') then
    raise exception using errcode = '42501',
      message = format('%s is honoured only for superusers and the absurd schema''s owner, not for role "%s"', p_setting, session_user),
      hint = format('Unset %s: fake time is for tests.', p_setting);
  end if;
end;
$$;

create or replace function absurd._fake_time(p_value text)
returns timestamptz
language plpgsql
stable
as $$
begin
  perform absurd._fake_clock_allowed('absurd.fake_now');
  return p_value::timestamptz;
end;
$$;

create or replace function absurd._fake_offset(p_value text)
returns interval
language plpgsql
stable
as $$
begin
  perform absurd._fake_clock_allowed('absurd.fake_offset');
  return p_value::interval;
end;
$$;

-- The test clock (absurd.testing, the pytest plugin): one row read by every session
-- of a database whose setting absurd.test_clock is 'on' (ALTER DATABASE ... SET, so
-- pooled and worker sessions see each move at once, unlike a session setting). Only
-- the schema's owner and superusers can write the row (absurd_worker has no table
-- privilege, absurd_reader SELECT only), so a restricted role cannot move the clock;
-- without a row (any production database) the setting changes nothing.
create table if not exists absurd.test_clock (
  id boolean primary key default true check (id),
  frozen_at timestamptz,
  offset_by interval not null default '0'
);

create or replace function absurd._test_clock_now()
returns timestamptz
language sql
volatile
as $$
  select coalesce(
    (select coalesce(frozen_at, clock_timestamp() + offset_by) from absurd.test_clock where id),
    clock_timestamp());
$$;

create or replace function absurd.current_time()
returns timestamptz
language sql
volatile
as $$
  -- One expression, no FROM: PostgreSQL inlines it (a subquery made each call ~5x dearer;
  -- the test clock's lookup is in a function called only when its setting is on).
  select case
    when nullif(btrim(current_setting('absurd.fake_now', true)), '') is not null
      then absurd._fake_time(btrim(current_setting('absurd.fake_now', true)))
    when current_setting('absurd.test_clock', true) = 'on' then absurd._test_clock_now()
    when nullif(btrim(current_setting('absurd.fake_offset', true)), '') is not null
      then clock_timestamp() + absurd._fake_offset(btrim(current_setting('absurd.fake_offset', true)))
    else clock_timestamp() end;
$$;

alter table absurd.queues alter column created_at set default absurd.current_time();

-- Flow control (docs/engine.md "Flow control"): limits of the queue's policy.
-- flow_enabled is true when any limit applies (a queue-wide one, a per-key
-- default, or a per-key override in absurd.flow_limits): claim_task reads it with
-- the queue's existence check and takes today's path when it is false.
alter table absurd.queues add column if not exists max_running integer
  check (max_running >= 1);
alter table absurd.queues add column if not exists max_running_per_key integer
  check (max_running_per_key >= 1);
alter table absurd.queues add column if not exists flow_hold text not null default 'running';
alter table absurd.queues drop constraint if exists queues_flow_hold_check;
alter table absurd.queues add constraint queues_flow_hold_check
  check (flow_hold in ('running', 'lifetime'));
alter table absurd.queues add column if not exists flow_enabled boolean not null default false;
-- Rate limits, normalized {limit, period_seconds, burst} (absurd._flow_rate), or null.
alter table absurd.queues add column if not exists rate_limit jsonb;
alter table absurd.queues add column if not exists rate_limit_per_key jsonb;

-- Per-key overrides of the queue's per-key limits (absurd.set_flow_limit).
create table if not exists absurd.flow_limits (
  queue_name text not null,
  flow_key text not null,
  max_running integer check (max_running >= 1),
  limits jsonb not null,
  rate_limit jsonb,
  updated_at timestamptz not null default clock_timestamp(),
  primary key (queue_name, flow_key)
);
alter table absurd.flow_limits add column if not exists rate_limit jsonb;
-- Fairness between keys (docs/engine.md "Fairness between keys"): a key's share of
-- the turns, an integer >= 1 (null: 1).
alter table absurd.flow_limits add column if not exists weight integer check (weight >= 1);
-- has_keys: the queue has had a keyed run (set once, by the first keyed spawn, only
-- when not set yet: no hot row). Claims on such a queue serve its keys in turn.
alter table absurd.queues add column if not exists has_keys boolean not null default false;

create or replace function absurd.get_schema_version()
returns text
language sql
immutable
as $$
  select '0.6.1'::text;
$$;

-- Raise an engine error with its own SQLSTATE (catalogue: docs/errors.md).
create or replace function absurd._raise(p_code text, p_message text, p_hint text default null)
returns void
language plpgsql
as $$
begin
  if p_hint is null then
    raise exception using errcode = p_code, message = p_message;
  end if;
  raise exception using errcode = p_code, message = p_message, hint = p_hint;
end;
$$;

-- A value for an error message: NULL shows as <NULL>, as in RAISE.
create or replace function absurd._show(p_value anyelement)
returns text
language sql
immutable
as $$
  select coalesce(p_value::text, '<NULL>');
$$;

create or replace function absurd.validate_queue_name(p_queue_name text)
returns text
language plpgsql
immutable
as $$
begin
  if p_queue_name is null or p_queue_name = '' then
    perform absurd._raise('AB004', 'Queue name must be provided');
  end if;
  if octet_length(p_queue_name) > 57 then
    perform absurd._raise('AB004',
      format('Queue name "%s" is too long (max 57 bytes).', p_queue_name));
  end if;
  return p_queue_name;
end;
$$;

-- Validates the name and checks that the queue exists (AB004 / AB005).
create or replace function absurd._require_queue(p_queue_name text)
returns void
language plpgsql
stable
as $$
begin
  perform absurd.validate_queue_name(p_queue_name);
  perform 1 from absurd.queues where queue_name = p_queue_name;
  if not found then
    perform absurd._raise('AB005', format('Queue "%s" does not exist', p_queue_name));
  end if;
end;
$$;

-- The LISTEN/NOTIFY channel of a queue: 'absurd.<queue>' when that fits the
-- 63-byte identifier limit, else 'absurd.' || md5(queue).
create or replace function absurd.queue_channel(p_queue_name text)
returns text
language sql
immutable
strict
as $$
  select case when octet_length(p_queue_name) <= 56
    then 'absurd.' || p_queue_name
    else 'absurd.' || md5(p_queue_name) end;
$$;

-- Waiting listeners: a worker with free slots that found nothing to claim
-- registers its LISTEN connection here (register_waiter) before it sleeps, and
-- leaves when its slots fill (unregister_waiter). _notify sends a queue's NOTIFY
-- only while the queue has a waiter not yet notified since it last registered
-- (the first notifier marks it; the worker registers again before it next sleeps). PostgreSQL serializes the commits of
-- notifying transactions (a database-wide lock held through the commit's WAL
-- flush), so concurrent spawners that always notified could not share a WAL
-- flush; with busy workers nobody needs the wake-up, and nobody pays for it.
-- Unlogged: a waiter is a live backend, which a crash ends anyway.
create unlogged table if not exists absurd.queue_waiters (
  queue_name text not null,
  pid integer not null,
  since timestamptz not null default clock_timestamp(),
  -- A NOTIFY was sent since the waiter last (re)registered: later notifiers
  -- skip theirs until it registers again (one NOTIFY per wait, not per write).
  notified boolean not null default false,
  primary key (queue_name, pid)
);

-- The key of a queue's waiter barrier (see register_waiter).
create or replace function absurd._waiter_key(p_queue_name text)
returns bigint
language sql
immutable
strict
as $$
  select ((hashtext('absurd.waiters')::bigint << 32) | (hashtext(p_queue_name)::bigint & 4294967295));
$$;

-- Why no wake-up is lost: a notifier holds the queue's barrier key in share mode
-- from the moment it looks for waiters until it commits; register_waiter takes
-- it in exclusive mode before its row becomes visible. A notifier that looked
-- before the registration has committed before the registration did, so the
-- worker's claim after registering sees its work; one that looks after it sees
-- the waiter. Outside READ COMMITTED the look could use an older snapshot, so
-- those transactions always notify.
create or replace function absurd._notify(p_queue_name text, p_reason text)
returns void
language plpgsql
as $$
begin
  if current_setting('transaction_isolation') = 'read committed' then
    perform pg_advisory_xact_lock_shared(absurd._waiter_key(p_queue_name));
    if not exists (select 1 from absurd.queue_waiters
                   where queue_name = p_queue_name and not notified) then
      return;
    end if;
    -- Marked in this transaction: gone again if it rolls back (no NOTIFY either).
    -- A waiter row another notifier is marking is skipped, not waited for: this
    -- one notifies too.
    update absurd.queue_waiters w set notified = true
    where w.ctid = any (array(select ctid from absurd.queue_waiters
                              where queue_name = p_queue_name and not notified
                              for update skip locked));
  end if;
  perform pg_notify(absurd.queue_channel(p_queue_name), p_reason);
end;
$$;

-- Registers the backend p_pid (a worker's LISTEN connection) as waiting for the
-- queue's NOTIFY, or registers it again after a NOTIFY it got. Call it, then
-- claim once more before sleeping: work committed before it returned is
-- claimable, work committed after it is notified. Waits at
-- most p_wait_ms for notifiers in flight (a spawn inside a long transaction
-- holds its share of the barrier until it commits); false when that wait timed
-- out: nothing changed, and the caller should poll until a call returns true.
-- Also forgets this queue's waiters whose backends are gone.
create or replace function absurd.register_waiter(p_queue_name text, p_pid integer,
                                                  p_wait_ms integer default 50)
returns boolean
language plpgsql
as $$
declare
  v_passed boolean := true;
begin
  perform absurd._require_queue(p_queue_name);
  begin
    perform set_config('lock_timeout', greatest(coalesce(p_wait_ms, 50), 1)::text || 'ms', true);
    perform pg_advisory_xact_lock(absurd._waiter_key(p_queue_name));
  exception when lock_not_available then
    v_passed := false;
  end;
  perform set_config('lock_timeout', '0', true);
  if not v_passed then
    -- A notifier's transaction is open (it may hold this waiter's row too): change
    -- nothing; the caller polls and calls again.
    return false;
  end if;
  update absurd.queue_waiters set notified = false
  where queue_name = p_queue_name and pid = p_pid;
  if not found then
    delete from absurd.queue_waiters w
    where w.queue_name = p_queue_name and w.pid <> p_pid
      and not exists (select 1 from pg_stat_activity a where a.pid = w.pid);
    insert into absurd.queue_waiters (queue_name, pid) values (p_queue_name, p_pid)
    on conflict (queue_name, pid) do update set notified = false;
  end if;
  return v_passed;
end;
$$;

-- The backend p_pid no longer waits for the queue's NOTIFY (its worker is busy
-- or stopping). Returns whether it was registered.
create or replace function absurd.unregister_waiter(p_queue_name text, p_pid integer)
returns boolean
language sql
as $$
  with gone as (
    delete from absurd.queue_waiters where queue_name = p_queue_name and pid = p_pid returning 1
  )
  select exists (select 1 from gone);
$$;

-- A UUIDv7 for a given instant: 48 bits of Unix milliseconds, then random bits.
create or replace function absurd._uuidv7_at(p_ts timestamptz)
returns uuid
language sql
volatile
as $$
  select encode(
    set_byte(
      overlay(uuid_send(gen_random_uuid())
        placing substring(int8send(floor(extract(epoch from p_ts) * 1000)::bigint) from 3)
        from 1 for 6),
      6, (get_byte(uuid_send(gen_random_uuid()), 6) & 15) | 112),
    'hex')::uuid;
$$;

-- portable_uuidv7: PostgreSQL 18's native uuidv7() when there is no fake time
-- (absurd.fake_now, absurd.fake_offset or the test clock),
-- else a v7 UUID built from absurd.current_time().
do $$
begin
  if to_regprocedure('pg_catalog.uuidv7()') is not null then
    execute $f$
      create or replace function absurd.portable_uuidv7()
      returns uuid language sql volatile as $b$
        select case
          when nullif(btrim(current_setting('absurd.fake_now', true)), '') is null
               and nullif(btrim(current_setting('absurd.fake_offset', true)), '') is null
               and current_setting('absurd.test_clock', true) is distinct from 'on'
            then pg_catalog.uuidv7()
          else absurd._uuidv7_at(absurd.current_time()) end;
      $b$;
    $f$;
  else
    execute $f$
      create or replace function absurd.portable_uuidv7()
      returns uuid language sql volatile as $b$
        select absurd._uuidv7_at(absurd.current_time());
      $b$;
    $f$;
  end if;
end;
$$;

create or replace function absurd.uuidv7_timestamp(p_id uuid)
returns timestamptz
language sql
immutable
strict
as $$
  select case when substring(p_id::text from 15 for 1) = '7'
    then to_timestamp(('x' || lpad(replace(substring(p_id::text from 1 for 13), '-', ''), 16, '0'))
                        ::bit(64)::bigint / 1000.0)
    end;
$$;

create or replace function absurd.uuidv7_floor(p_ts timestamptz)
returns uuid
language plpgsql
immutable
strict
as $$
declare
  v_ms bigint;
  v_hex text;
begin
  if not isfinite(p_ts) then
    perform absurd._raise('AB015',
      format('Timestamp "%s" is outside UUIDv7 supported range', p_ts));
  end if;
  v_ms := floor(extract(epoch from p_ts) * 1000)::bigint;
  if v_ms < 0 or v_ms > 281474976710655 then
    perform absurd._raise('AB015',
      format('Timestamp "%s" is outside UUIDv7 supported range', p_ts));
  end if;
  v_hex := lpad(to_hex(v_ms), 12, '0');
  return (substring(v_hex from 1 for 8) || '-' || substring(v_hex from 9 for 4)
          || '-7000-8000-000000000000')::uuid;
end;
$$;

create or replace function absurd.week_bucket_utc(p_ts timestamptz)
returns timestamptz
language sql
immutable
strict
as $$
  select date_trunc('week', p_ts at time zone 'UTC') at time zone 'UTC';
$$;

create or replace function absurd.partition_week_tag(p_ts timestamptz)
returns text
language sql
immutable
strict
as $$
  select right(to_char(p_ts at time zone 'UTC', 'IYYY'), 1)
      || to_char(p_ts at time zone 'UTC', 'IW');
$$;

-- A number from a retry strategy: JSON numbers, or strings holding a number.
create or replace function absurd._strategy_number(p_value jsonb)
returns numeric
language plpgsql
immutable
as $$
begin
  if p_value is null or jsonb_typeof(p_value) = 'null' then
    return null;
  end if;
  if jsonb_typeof(p_value) = 'number' then
    return p_value::text::numeric;
  end if;
  if jsonb_typeof(p_value) = 'string'
     and (p_value #>> '{}' ~ '^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?\s*$'
          or lower(btrim(p_value #>> '{}')) in ('nan', 'infinity', '+infinity', '-infinity')) then
    return (p_value #>> '{}')::numeric;  -- NaN and infinities fail the range checks
  end if;
  perform absurd._raise('AB003', 'retry_strategy contains an invalid number');
  return null;
end;
$$;

-- Seconds to wait before retry number p_attempt + 1; validates the strategy (AB003).
create or replace function absurd.retry_delay_seconds(p_strategy jsonb, p_attempt integer)
returns double precision
language plpgsql
immutable
as $$
declare
  v_kind text;
  v_base numeric;
  v_factor numeric;
  v_max numeric;
  v_exp numeric;
begin
  if p_strategy is null or jsonb_typeof(p_strategy) = 'null' then
    return 0;
  end if;
  if jsonb_typeof(p_strategy) <> 'object' then
    perform absurd._raise('AB003', 'retry_strategy must be a JSON object');
  end if;
  v_kind := coalesce(p_strategy ->> 'kind', 'none');
  if v_kind not in ('none', 'fixed', 'exponential') then
    perform absurd._raise('AB003', format('Unsupported retry strategy kind "%s"', v_kind));
  end if;
  if v_kind = 'none' then
    return 0;
  end if;
  v_base := coalesce(absurd._strategy_number(p_strategy -> 'base_seconds'),
                     case v_kind when 'fixed' then 60 else 30 end);
  if v_base = 'NaN' or v_base < 0 or v_base > 86400 then
    perform absurd._raise('AB003', 'retry_strategy.base_seconds must be between 0 and 86400');
  end if;
  if v_kind = 'fixed' then
    return v_base::double precision;
  end if;
  v_factor := coalesce(absurd._strategy_number(p_strategy -> 'factor'), 2);
  if v_factor = 'NaN' or v_factor < 0 or v_factor > 1e300 then
    perform absurd._raise('AB003', 'retry_strategy.factor must be a finite non-negative number');
  end if;
  v_max := coalesce(absurd._strategy_number(p_strategy -> 'max_seconds'), 86400);
  if v_max = 'NaN' or v_max < 0 or v_max > 86400 then
    perform absurd._raise('AB003', 'retry_strategy.max_seconds must be between 0 and 86400');
  end if;
  if v_base = 0 then
    return 0;
  end if;
  v_exp := greatest(coalesce(p_attempt, 1) - 1, 0);
  if v_factor = 0 then
    return (case when v_exp = 0 then least(v_base, v_max) else 0 end)::double precision;
  end if;
  -- Compare in log space so huge exponents cannot overflow.
  if ln(v_base) + v_exp * ln(v_factor) >= ln(greatest(v_max, 1e-300)) then
    return v_max::double precision;
  end if;
  if ln(v_base) + v_exp * ln(v_factor) < -700 then
    return 0;
  end if;
  return least(v_base * power(v_factor, v_exp), v_max)::double precision;
end;
$$;

-- Typed readers for JSON options. Absent keys and JSON null give NULL; a value
-- of the wrong type raises AB015 naming the key.
create or replace function absurd._opt_int(p_options jsonb, p_key text)
returns integer
language plpgsql
immutable
as $$
declare
  v jsonb := p_options -> p_key;
  v_text text;
begin
  if v is null or jsonb_typeof(v) = 'null' then
    return null;
  end if;
  v_text := v #>> '{}';
  if jsonb_typeof(v) in ('number', 'string') and v_text ~ '^\s*[+-]?[0-9]{1,10}(\.0*)?\s*$'
     and v_text::numeric between -2147483648 and 2147483647 then
    return v_text::numeric::integer;
  end if;
  perform absurd._raise('AB015', format('%s must be an integer, got %s', p_key, left(v::text, 100)));
  return null;
end;
$$;

create or replace function absurd._opt_seconds(p_options jsonb, p_key text)
returns double precision
language plpgsql
immutable
as $$
declare
  v jsonb := p_options -> p_key;
  v_text text;
begin
  if v is null or jsonb_typeof(v) = 'null' then
    return null;
  end if;
  v_text := v #>> '{}';
  if jsonb_typeof(v) in ('number', 'string')
     and v_text ~ '^\s*[+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,3})?\s*$'
     and v_text::numeric <= 3153600000 then  -- 100 years
    return v_text::double precision;
  end if;
  perform absurd._raise('AB015', format(
    '%s must be a non-negative number of seconds (at most 100 years), got %s',
    p_key, left(v::text, 100)));
  return null;
end;
$$;

create or replace function absurd._opt_bool(p_options jsonb, p_key text)
returns boolean
language plpgsql
immutable
as $$
declare
  v jsonb := p_options -> p_key;
begin
  if v is null or jsonb_typeof(v) = 'null' then
    return null;
  end if;
  if jsonb_typeof(v) = 'boolean' then
    return v::text::boolean;
  end if;
  if jsonb_typeof(v) = 'string' and lower(v #>> '{}') in ('true', 'false') then
    return lower(v #>> '{}')::boolean;
  end if;
  perform absurd._raise('AB015', format('%s must be a boolean, got %s', p_key, left(v::text, 100)));
  return null;
end;
$$;

create or replace function absurd._opt_timestamp(p_options jsonb, p_key text)
returns timestamptz
language plpgsql
stable
as $$
declare
  v jsonb := p_options -> p_key;
begin
  if v is null or jsonb_typeof(v) = 'null' then
    return null;
  end if;
  if jsonb_typeof(v) = 'string' and v #>> '{}' ~ '^\s*[0-9]{4}-' then
    begin
      if isfinite((v #>> '{}')::timestamptz) then
        return (v #>> '{}')::timestamptz;
      end if;
    exception when others then
      null;  -- fall through to the typed error below
    end;
  end if;
  perform absurd._raise('AB015', format(
    '%s must be an ISO 8601 timestamp string, got %s', p_key, left(v::text, 100)));
  return null;
end;
$$;

create or replace function absurd._require_object(p_value jsonb, p_what text)
returns jsonb
language plpgsql
immutable
as $$
begin
  if p_value is null or jsonb_typeof(p_value) = 'null' then
    return '{}'::jsonb;
  end if;
  if jsonb_typeof(p_value) <> 'object' then
    perform absurd._raise('AB015', format('%s must be a JSON object', p_what));
  end if;
  return p_value;
end;
$$;

create or replace function absurd._require_text(p_value text, p_what text)
returns void
language plpgsql
immutable
as $$
begin
  if p_value is null or btrim(p_value) = '' then
    perform absurd._raise('AB014', format('%s must be provided', p_what));
  end if;
end;
$$;

-- Validates a cancellation policy {max_delay, max_duration} (seconds) so that
-- a bad one fails at spawn, not later inside everybody's claim.
create or replace function absurd._check_cancellation(p_policy jsonb)
returns jsonb
language plpgsql
immutable
as $$
declare
  v_key text;
begin
  if p_policy is null or jsonb_typeof(p_policy) = 'null' then
    return null;
  end if;
  if jsonb_typeof(p_policy) <> 'object' then
    perform absurd._raise('AB015', 'cancellation must be a JSON object');
  end if;
  for v_key in select jsonb_object_keys(p_policy) loop
    if v_key in ('max_delay', 'max_duration') then
      perform absurd._opt_seconds(p_policy, v_key);
    end if;
  end loop;
  return p_policy;
end;
$$;

-- When a task's cancellation policy next fires: max_delay counts from the time
-- the task became available and applies until its first start; max_duration
-- counts from the first start.
-- STABLE, not IMMUTABLE: timestamptz + interval is stable, and PostgreSQL inlines
-- a SQL function into the calling statement only when its declared volatility
-- covers its body. Declared immutable, it ran through the SQL-function executor on
-- every spawn and claim (PostgreSQL 15 planned its body again each time).
create or replace function absurd._cancel_deadline(
  p_policy jsonb, p_available_at timestamptz, p_first_started_at timestamptz)
returns timestamptz
language sql
stable
as $$
  select case
    when p_policy is null then null
    when p_first_started_at is null then
      p_available_at + make_interval(secs => (p_policy ->> 'max_delay')::double precision)
    else
      p_first_started_at + make_interval(secs => (p_policy ->> 'max_duration')::double precision)
  end;
$$;

-- -----------------------------------------------------------------------------
-- Queues
-- -----------------------------------------------------------------------------

-- A queue's tables and indexes share one namespace with every other queue's:
-- queue "x" has index r_x_sai, queue "x_sai" has table r_x_sai. Refuse (AB006)
-- a queue whose names are taken by another queue's objects, before creating
-- anything, instead of silently skipping an index or failing half-way.
create or replace function absurd._check_queue_names(p_queue_name text)
returns void
language plpgsql
stable
as $$
declare
  v_clash text;
  v_partitioned boolean := exists (select 1 from absurd.queues
    where queue_name = p_queue_name and storage_mode = 'partitioned');
begin
  with expected(relname, kind, parent) as (
    values ('t_' || p_queue_name, 'table', null), ('r_' || p_queue_name, 'table', null),
           ('c_' || p_queue_name, 'table', null), ('e_' || p_queue_name, 'table', null),
           ('w_' || p_queue_name, 'table', null), ('s_' || p_queue_name, 'table', null),
           ('s_' || p_queue_name || '_ki', 'index', 's_' || p_queue_name),
           ('r_' || p_queue_name || '_sai', 'index', 'r_' || p_queue_name),
           ('r_' || p_queue_name || '_ti', 'index', 'r_' || p_queue_name),
           ('r_' || p_queue_name || '_cei', 'index', 'r_' || p_queue_name),
           ('r_' || p_queue_name || '_cli', 'index', 'r_' || p_queue_name),
           ('t_' || p_queue_name || '_ci', 'index', 't_' || p_queue_name),
           ('t_' || p_queue_name || '_cdi', 'index', 't_' || p_queue_name),
           ('t_' || p_queue_name || '_fai', 'index', 't_' || p_queue_name),
           ('t_' || p_queue_name || '_tni', 'index', 't_' || p_queue_name),
           ('w_' || p_queue_name || '_eni', 'index', 'w_' || p_queue_name),
           ('w_' || p_queue_name || '_ti', 'index', 'w_' || p_queue_name),
           ('e_' || p_queue_name || '_eai', 'index', 'e_' || p_queue_name)
    -- Partitioned queues also own i_<q> and the default partitions <p>_<q>_d.
    union all
    select * from (values ('i_' || p_queue_name, 'table', null),
           ('i_' || p_queue_name || '_ti', 'index', 'i_' || p_queue_name),
           ('t_' || p_queue_name || '_d', 'partition', 't_' || p_queue_name),
           ('r_' || p_queue_name || '_d', 'partition', 'r_' || p_queue_name),
           ('c_' || p_queue_name || '_d', 'partition', 'c_' || p_queue_name),
           ('w_' || p_queue_name || '_d', 'partition', 'w_' || p_queue_name),
           ('s_' || p_queue_name || '_d', 'partition', 's_' || p_queue_name)) p
    where v_partitioned
  )
  select x.relname into v_clash
  from expected x
  join pg_class c on c.relname = x.relname
    and c.relnamespace = 'absurd'::regnamespace
  left join pg_index i on i.indexrelid = c.oid
  where (x.kind = 'table' and (c.relkind not in ('r', 'p') or c.relispartition))
     or (x.kind = 'index' and (c.relkind not in ('i', 'I')
         or i.indrelid is distinct from to_regclass(format('absurd.%I', x.parent))))
     or (x.kind = 'partition' and not exists (select 1 from pg_inherits h
         where h.inhrelid = c.oid and h.inhparent = to_regclass(format('absurd.%I', x.parent))))
  limit 1;
  if v_clash is not null then
    perform absurd._raise('AB006', format(
      'Queue "%s" cannot be created: the name absurd.%s belongs to another queue''s objects',
      p_queue_name, v_clash), 'Choose a queue name that does not extend another queue''s name with _sai, _ti, _cei, _cli, _ci, _cdi, _fai, _tni, _eni, _eai or _ki.');
  end if;
end;
$$;

-- Creates (or upgrades in place) the per-queue tables and indexes. Re-runnable.
create or replace function absurd.ensure_queue_tables(p_queue_name text)
returns void
language plpgsql
as $$
declare
  q text := absurd.validate_queue_name(p_queue_name);
  v_mode text;
  v_t text := 't_' || q;
  v_r text := 'r_' || q;
  v_c text := 'c_' || q;
  v_e text := 'e_' || q;
  v_w text := 'w_' || q;
  v_s text := 's_' || q;
  v_had_tasks boolean;
  v_had_deadline boolean;
  -- Storage: partitioned queues range-partition t_/c_ by task_id and r_/w_ by
  -- run_id (weekly UUIDv7 ranges, see ensure_partitions); a partitioned
  -- table takes no storage parameters and no unique key on idempotency_key.
  v_by_task text := 'with (fillfactor = 70)';
  v_by_run text := 'with (fillfactor = 70)';
  v_waits text := '';
  v_key_def text := 'idempotency_key text unique';
begin
  select storage_mode into v_mode from absurd.queues where queue_name = q;
  v_mode := coalesce(v_mode, 'unpartitioned');
  if v_mode = 'partitioned' then
    v_by_task := 'partition by range (task_id)';
    v_by_run := 'partition by range (run_id)';
    v_waits := v_by_run;
    v_key_def := 'idempotency_key text';
  elsif v_mode <> 'unpartitioned' then
    perform absurd._raise('AB007', format('Unsupported queue storage mode "%s"', v_mode));
  end if;
  perform absurd._check_queue_names(q);
  insert into absurd.queues (queue_name) values (q) on conflict (queue_name) do nothing;

  v_had_tasks := to_regclass(format('absurd.%I', v_t)) is not null;
  v_had_deadline := v_had_tasks and exists (
    select 1 from pg_attribute
    where attrelid = to_regclass(format('absurd.%I', v_t))
      and attname = 'cancel_deadline' and not attisdropped);

  execute format($ddl$
    create table if not exists absurd.%I (
      task_id uuid primary key,
      task_name text not null,
      params jsonb not null,
      headers jsonb,
      retry_strategy jsonb,
      max_attempts integer,
      cancellation jsonb,
      enqueue_at timestamptz not null default absurd.current_time(),
      first_started_at timestamptz,
      state text not null check (state in
        ('pending', 'running', 'sleeping', 'completed', 'failed', 'cancelled')),
      attempts integer not null default 0,
      last_attempt_run uuid,
      completed_payload jsonb,
      cancelled_at timestamptz,
      %2$s,
      priority integer not null default 0,
      cancel_deadline timestamptz,
      finished_at timestamptz
    ) %3$s
  $ddl$, v_t, v_key_def, v_by_task);
  execute format($ddl$
    create table if not exists absurd.%I (
      run_id uuid primary key,
      task_id uuid not null,
      attempt integer not null,
      state text not null check (state in
        ('pending', 'running', 'sleeping', 'completed', 'failed', 'cancelled')),
      claimed_by text,
      claim_expires_at timestamptz,
      available_at timestamptz not null,
      wake_event text,
      event_payload jsonb,
      started_at timestamptz,
      completed_at timestamptz,
      failed_at timestamptz,
      result jsonb,
      failure_reason jsonb,
      created_at timestamptz not null default absurd.current_time(),
      priority integer not null default 0
    ) %2$s
  $ddl$, v_r, v_by_run);
  execute format($ddl$
    create table if not exists absurd.%I (
      task_id uuid not null,
      checkpoint_name text not null,
      state jsonb,
      status text not null default 'committed',
      owner_run_id uuid,
      updated_at timestamptz not null default absurd.current_time(),
      primary key (task_id, checkpoint_name)
    ) %2$s
  $ddl$, v_c, v_by_task);
  execute format($ddl$
    create table if not exists absurd.%I (
      event_name text primary key,
      payload jsonb,
      emitted_at timestamptz not null default absurd.current_time()
    )
  $ddl$, v_e);
  execute format($ddl$
    create table if not exists absurd.%I (
      task_id uuid not null,
      run_id uuid not null,
      step_name text not null,
      event_name text not null,
      timeout_at timestamptz,
      created_at timestamptz not null default absurd.current_time(),
      primary key (run_id, step_name)
    ) %2$s
  $ddl$, v_w, v_waits);
  -- Streams: chunks in order per (task, stream); a row with closed = true and
  -- no chunk closes the stream; key makes a replayed write a no-op.
  execute format($ddl$
    create table if not exists absurd.%I (
      task_id uuid not null,
      stream text not null,
      seq bigint not null,
      chunk jsonb,
      run_id uuid,
      attempt integer,
      key text,
      closed boolean not null default false,
      written_at timestamptz not null default absurd.current_time(),
      primary key (task_id, stream, seq)
    ) %2$s
  $ddl$, v_s, v_by_task);

  -- Columns this engine adds to tables that an upstream schema created.
  execute format('alter table absurd.%I add column if not exists priority integer not null default 0', v_t);
  execute format('alter table absurd.%I add column if not exists cancel_deadline timestamptz', v_t);
  execute format('alter table absurd.%I add column if not exists finished_at timestamptz', v_t);
  execute format('alter table absurd.%I add column if not exists priority integer not null default 0', v_r);
  -- Flow control: the spawn option flow_key, on the task and on each of its runs.
  execute format('alter table absurd.%I add column if not exists flow_key text', v_t);
  execute format('alter table absurd.%I add column if not exists flow_key text', v_r);
  -- Debounce (spawn option): the task's debounce key and its latest start.
  execute format('alter table absurd.%I add column if not exists debounce_key text', v_t);
  execute format('alter table absurd.%I add column if not exists debounce_deadline timestamptz', v_t);
  -- Why a run waits with a finite available_at set by a claim: 'rate' (the queue's
  -- rate limit) or 'rate_key' (its key's); null otherwise (explain_task reads it).
  execute format('alter table absurd.%I add column if not exists flow_wait text', v_r);
  -- flow_hold "lifetime": true from the claim that admitted the task to its end.
  execute format('alter table absurd.%I add column if not exists flow_slot boolean', v_t);
  if v_had_tasks and not v_had_deadline then
    -- Upgrading an upstream table: derive the new columns once.
    execute format($up$
      update absurd.%1$I t set
        cancel_deadline = case when t.state in ('pending', 'running', 'sleeping')
          then absurd._cancel_deadline(t.cancellation, t.enqueue_at, t.first_started_at) end,
        finished_at = case
          when t.state = 'cancelled' then coalesce(t.cancelled_at, absurd.current_time())
          when t.state in ('completed', 'failed') then coalesce(
            (select coalesce(r.completed_at, r.failed_at) from absurd.%2$I r
              where r.run_id = t.last_attempt_run), absurd.current_time())
          end
      where t.cancellation is not null or t.state in ('completed', 'failed', 'cancelled')
    $up$, v_t, v_r);
  end if;

  -- Indexes. Names keep upstream's where upstream has them (tools look them up).
  execute format('create index if not exists %I on absurd.%I (state, available_at)', v_r || '_sai', v_r);
  execute format('create index if not exists %I on absurd.%I (task_id)', v_r || '_ti', v_r);
  execute format($ix$create index if not exists %I on absurd.%I (claim_expires_at)
    where state = 'running' and claim_expires_at is not null$ix$, v_r || '_cei', v_r);
  -- The claim index: one ordered range per priority band, only claimable states.
  execute format($ix$create index if not exists %I on absurd.%I (priority, available_at, run_id)
    where state in ('pending', 'sleeping')$ix$, v_r || '_cli', v_r);
  -- Flow control: a key's running runs (counted by claims, bounded by the limit)
  -- and its parked runs (available_at 'infinity', woken in turn by releases).
  -- Runs without a key are in neither: queues without flow control pay nothing.
  execute format($ix$create index if not exists %I on absurd.%I (flow_key)
    where state = 'running' and flow_key is not null$ix$, v_r || '_fki', v_r);
  execute format($ix$create index if not exists %I on absurd.%I (flow_key, priority desc, run_id)
    where state = 'pending' and available_at = 'infinity' and flow_key is not null$ix$,
    v_r || '_fpi', v_r);
  -- A key's pending runs, by due time: a claim that finds the key full parks a batch
  -- of them at once (flow.park_key), not one per claim.
  execute format($ix$create index if not exists %I on absurd.%I (flow_key, available_at)
    where state = 'pending' and flow_key is not null$ix$, v_r || '_fdi', v_r);
  -- flow_hold "lifetime": the live tasks that hold a slot, by key (null: no key);
  -- counted by claims up to the limit, like r_<q>_fki for the "running" hold.
  execute format($ix$create index if not exists %I on absurd.%I (flow_key)
    where flow_slot and state in ('pending', 'running', 'sleeping')$ix$, v_t || '_fli', v_t);
  -- Rate limits per key: the key's recent starts (a sliding window, read newest
  -- first, bounded by the limit). The queue-wide window's index r_<q>_rsi is made
  -- when a queue first gets a rate limit (absurd._flow_rate_index).
  execute format($ix$create index if not exists %I on absurd.%I (flow_key, started_at)
    where flow_key is not null and started_at is not null$ix$, v_r || '_fsi', v_r);
  if exists (select 1 from absurd.queues qu where qu.queue_name = q and qu.rate_limit is not null) then
    perform absurd._flow_rate_index(q);
  end if;
  if not exists (select 1 from absurd.queues qu where qu.queue_name = q and qu.has_keys) then
    -- A queue upgraded from a version without the flag: set it if it has keyed runs.
    -- Two probes of the flow indexes: a live keyed run is pending (r_<q>_fdi) or was
    -- started (r_<q>_fsi).
    execute format($up$update absurd.queues set has_keys = true
      where queue_name = %1$L
        and (exists (select 1 from absurd.%2$I where flow_key is not null and state = 'pending')
          or exists (select 1 from absurd.%2$I
                     where flow_key is not null and started_at is not null))$up$,
      q, v_r);
  end if;
  -- Fairness's index r_<q>_fwi, on queues that have had a keyed run only (others
  -- pay nothing for it: absurd._fair_index).
  if exists (select 1 from absurd.queues qu where qu.queue_name = q and qu.has_keys) then
    perform absurd._fair_index(q);
  end if;
  -- Debounce: at most one not-yet-started task per debounce key (unique where the
  -- table allows it; partitioned tables cannot, and rely on the key's lock alone).
  execute format($ix$create %s index if not exists %I on absurd.%I (debounce_key)
    where debounce_key is not null and first_started_at is null and state = 'pending'$ix$,
    case when v_mode = 'partitioned' then '' else 'unique' end, v_t || '_dki', v_t);
  execute format($ix$create index if not exists %I on absurd.%I (task_id)
    where cancellation is not null$ix$, v_t || '_ci', v_t);
  execute format($ix$create index if not exists %I on absurd.%I (cancel_deadline)
    where cancel_deadline is not null$ix$, v_t || '_cdi', v_t);
  execute format($ix$create index if not exists %I on absurd.%I (finished_at)
    where finished_at is not null$ix$, v_t || '_fai', v_t);
  -- Recently failed runs (queue_gauges); only failed runs have an entry.
  execute format($ix$create index if not exists %I on absurd.%I (failed_at)
    where failed_at is not null$ix$, v_r || '_fri', v_r);
  -- Task-name lookups (absurdctl list-tasks -n, Habitat's name filter). On the first
  -- 128 characters: a btree entry is limited to ~2.7 kB and task names are not;
  -- lookups also compare the whole name.
  execute format($ix$create index if not exists %I on absurd.%I (left(task_name, 128), task_id)$ix$,
    v_t || '_tni', v_t);
  execute format('create index if not exists %I on absurd.%I (event_name)', v_w || '_eni', v_w);
  execute format('create index if not exists %I on absurd.%I (task_id)', v_w || '_ti', v_w);
  execute format('create index if not exists %I on absurd.%I (emitted_at)', v_e || '_eai', v_e);
  execute format('create unique index if not exists %I on absurd.%I (task_id, stream, key)',
                 v_s || '_ki', v_s);
  -- Wakes tasks that await this queue's tasks (absurd.task_watchers).
  execute format('drop trigger if exists t_finished on absurd.%I', v_t);
  execute format($tr$create trigger t_finished after update of state on absurd.%I
    for each row when (new.state in ('completed', 'failed', 'cancelled')
                       and old.state is distinct from new.state)
    execute function absurd._task_finished(%L)$tr$, v_t, q);
  if v_mode = 'partitioned' then
    perform absurd._ensure_partitioned_extras(q);
  end if;
  perform absurd._make_queue_functions(q);
end;
$$;

-- The queue's own functions: its hot statements written out as static SQL, which
-- PL/pgSQL plans once per session, with its tables' names in them (spawn_task calls
-- "_sp:<queue>", its statement "spawn"). Made by ensure_queue_tables (so create_queue,
-- and every queue when absurd.sql runs again: an upgrade rewrites them), dropped by
-- drop_queue. Named by absurd._spawn_function: "_sp:" (4 bytes) and a queue name's 57
-- fit PostgreSQL's 63, and the leading "_" keeps them internal (SECURITY INVOKER: only
-- a caller that may write the queue's tables can run them, which is the schema owner
-- inside spawn_task).
create or replace function absurd._spawn_function(p_queue_name text)
returns text
language sql
immutable
as $$
  select '_sp:' || p_queue_name;
$$;

create or replace function absurd._make_queue_functions(p_queue_name text)
returns void
language plpgsql
as $$
begin
  execute format($fn$create or replace function absurd.%I(
      uuid, text, jsonb, jsonb, jsonb, integer, jsonb, timestamptz, uuid, text, integer,
      timestamptz, text, text, timestamptz)
    returns integer
    language plpgsql
    set enable_seqscan = off
    as %L$fn$,
    absurd._spawn_function(p_queue_name),
    E'declare\n  n integer;\nbegin\n' || absurd._sql('spawn', p_queue_name)
      || E'\n  into n;\n  return n;\nend;\n');
end;
$$;

create or replace function absurd.create_queue(p_queue_name text, p_storage_mode text)
returns void
language plpgsql
as $$
declare
  q text := absurd.validate_queue_name(p_queue_name);
  v_mode text := lower(btrim(coalesce(p_storage_mode, '')));
  v_existing text;
begin
  if v_mode not in ('unpartitioned', 'partitioned') then
    perform absurd._raise('AB007', format('Unsupported queue storage mode "%s"', absurd._show(p_storage_mode)));
  end if;
  insert into absurd.queues (queue_name, storage_mode) values (q, v_mode)
  on conflict (queue_name) do nothing;
  select storage_mode into v_existing from absurd.queues where queue_name = q;
  if v_existing <> v_mode then
    perform absurd._raise('AB006', format(
      'Queue "%s" already exists with storage mode "%s"', q, v_existing));
  end if;
  perform absurd.ensure_queue_tables(q);
end;
$$;

create or replace function absurd.create_queue(p_queue_name text)
returns void
language sql
as $$
  select absurd.create_queue(p_queue_name, 'unpartitioned');
$$;

-- Drops a queue and all its data. Not validated, so legacy names can be dropped.
create or replace function absurd.drop_queue(p_queue_name text)
returns void
language plpgsql
as $$
declare
  v_prefix text;
  v_fn regprocedure;
begin
  if p_queue_name is null
     or not exists (select 1 from absurd.queues where queue_name = p_queue_name) then
    return;
  end if;
  if to_regclass('cron.job') is not null
     and to_regprocedure('absurd.disable_cron(text)') is not null then
    perform absurd.disable_cron(p_queue_name);
  end if;
  foreach v_prefix in array array['i_', 's_', 'w_', 'e_', 'c_', 'r_', 't_'] loop
    execute format('drop table if exists absurd.%I cascade', v_prefix || p_queue_name);
  end loop;
  for v_fn in select p.oid::regprocedure from pg_proc p  -- its own functions
             where p.pronamespace = 'absurd'::regnamespace
               and p.proname = absurd._spawn_function(p_queue_name) loop
    execute format('drop function %s', v_fn);
  end loop;
  delete from absurd.task_watchers
  where queue_name = p_queue_name or watcher_queue = p_queue_name;
  delete from absurd.task_joins
  where child_queue = p_queue_name or watcher_queue = p_queue_name;
  if to_regclass('absurd.promises') is not null then
    delete from absurd.promises where queue_name = p_queue_name;
  end if;
  delete from absurd.flow_limits where queue_name = p_queue_name;
  delete from absurd.queue_waiters where queue_name = p_queue_name;
  if to_regclass('absurd.schedules') is not null then
    delete from absurd.schedule_fires where queue_name = p_queue_name;
    delete from absurd.schedules where queue_name = p_queue_name;
  end if;
  delete from absurd.queues where queue_name = p_queue_name;
end;
$$;

create or replace function absurd.list_queues()
returns table (queue_name text)
language sql
stable
as $$
  select q.queue_name from absurd.queues q order by q.queue_name;
$$;

-- A function whose result gained columns cannot be replaced, only dropped and made
-- again: drops p_function (a regprocedure's text) when its result has no column
-- p_column yet.
create or replace function absurd._drop_without_column(p_function text, p_column text)
returns void
language plpgsql
as $$
begin
  if exists (select 1 from pg_proc p
             where p.oid = to_regprocedure(p_function)
               and not (p_column = any(coalesce(p.proargnames, '{}')))) then
    execute format('drop function %s', to_regprocedure(p_function));
  end if;
end;
$$;

-- Upstream's nine columns first (its clients select them by name), then the flow
-- fields set by set_queue_policy (the same as get_flow_policy's). 0.6.0 had only the
-- nine.
do $$ begin perform absurd._drop_without_column('absurd.get_queue_policy(text)', 'max_running'); end $$;
create or replace function absurd.get_queue_policy(p_queue_name text)
returns table (
  queue_name text,
  storage_mode text,
  default_partition text,
  partition_lookahead interval,
  partition_lookback interval,
  cleanup_ttl interval,
  cleanup_limit integer,
  detach_mode text,
  detach_min_age interval,
  max_running integer,
  max_running_per_key integer,
  flow_hold text,
  rate_limit jsonb,
  rate_limit_per_key jsonb
)
language sql
stable
as $$
  select q.queue_name, q.storage_mode, q.default_partition, q.partition_lookahead,
         q.partition_lookback, q.cleanup_ttl, q.cleanup_limit, q.detach_mode, q.detach_min_age,
         q.max_running, q.max_running_per_key, q.flow_hold, q.rate_limit, q.rate_limit_per_key
  from absurd.queues q
  where q.queue_name = p_queue_name;
$$;

-- The flow fields of a queue's policy alone (set by set_queue_policy; also the last
-- five columns of get_queue_policy).
-- Its result gained the rate limits.
do $$ begin perform absurd._drop_without_column('absurd.get_flow_policy(text)', 'rate_limit'); end $$;
create or replace function absurd.get_flow_policy(p_queue_name text)
returns table (queue_name text, max_running integer, max_running_per_key integer,
               flow_hold text, rate_limit jsonb, rate_limit_per_key jsonb)
language sql
stable
as $$
  select q.queue_name, q.max_running, q.max_running_per_key, q.flow_hold, q.rate_limit,
         q.rate_limit_per_key
  from absurd.queues q
  where q.queue_name = p_queue_name;
$$;

create or replace function absurd._policy_interval(p_policy jsonb, p_key text)
returns interval
language plpgsql
stable
as $$
declare
  v interval;
begin
  if not (p_policy ? p_key) or jsonb_typeof(p_policy -> p_key) = 'null' then
    return null;
  end if;
  begin
    if jsonb_typeof(p_policy -> p_key) not in ('string', 'number') then
      raise exception 'not an interval';
    end if;
    v := case jsonb_typeof(p_policy -> p_key)
           when 'number' then make_interval(secs => (p_policy ->> p_key)::double precision)
           else (p_policy ->> p_key)::interval end;
  exception when others then
    perform absurd._raise('AB008', format('%s must be an interval, got %s',
      p_key, left((p_policy -> p_key)::text, 100)));
  end;
  if v < interval '0' then
    perform absurd._raise('AB008', format('%s must be non-negative', p_key));
  end if;
  return v;
end;
$$;

create or replace function absurd.set_queue_policy(p_queue_name text, p_policy jsonb)
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := absurd.validate_queue_name(p_queue_name);
  v_policy jsonb := coalesce(p_policy, '{}'::jsonb);
  v_key text;
  v_row absurd.queues%rowtype;
  v_limit integer;
  v_mode text;
begin
  if jsonb_typeof(v_policy) <> 'object' then
    perform absurd._raise('AB008', 'Queue policy must be a JSON object');
  end if;
  for v_key in select jsonb_object_keys(v_policy) loop
    if v_key not in ('partition_lookahead', 'partition_lookback', 'cleanup_ttl',
                     'cleanup_limit', 'detach_mode', 'detach_min_age', 'default_partition',
                     'max_running', 'max_running_per_key', 'flow_hold', 'rate_limit',
                     'rate_limit_per_key') then
      perform absurd._raise('AB008', format('Unsupported queue policy key "%s"', v_key));
    end if;
  end loop;
  select * into v_row from absurd.queues where queue_name = q for update;
  if not found then
    perform absurd._raise('AB005', format('Queue "%s" does not exist', q));
  end if;
  -- Flow fields: a value sets the limit, null removes it (no limit).
  perform absurd._flow_unsupported(v_policy);
  if v_policy ? 'max_running' then
    v_row.max_running := absurd._flow_limit(v_policy, 'max_running');
  end if;
  if v_policy ? 'max_running_per_key' then
    v_row.max_running_per_key := absurd._flow_limit(v_policy, 'max_running_per_key');
  end if;
  if v_policy ? 'flow_hold' then
    v_row.flow_hold := coalesce(v_policy ->> 'flow_hold', 'running');
  end if;
  if v_policy ? 'rate_limit' then
    v_row.rate_limit := absurd._flow_rate(v_policy, 'rate_limit');
  end if;
  if v_policy ? 'rate_limit_per_key' then
    v_row.rate_limit_per_key := absurd._flow_rate(v_policy, 'rate_limit_per_key');
  end if;

  v_row.partition_lookahead := coalesce(
    absurd._policy_interval(v_policy, 'partition_lookahead'), v_row.partition_lookahead);
  v_row.partition_lookback := coalesce(
    absurd._policy_interval(v_policy, 'partition_lookback'), v_row.partition_lookback);
  v_row.cleanup_ttl := coalesce(absurd._policy_interval(v_policy, 'cleanup_ttl'), v_row.cleanup_ttl);
  v_row.detach_min_age := coalesce(
    absurd._policy_interval(v_policy, 'detach_min_age'), v_row.detach_min_age);
  if v_policy ? 'cleanup_limit' and jsonb_typeof(v_policy -> 'cleanup_limit') <> 'null' then
    begin
      v_limit := absurd._opt_int(v_policy, 'cleanup_limit');
    exception when sqlstate 'AB015' then
      perform absurd._raise('AB008', 'cleanup_limit must be at least 1');
    end;
    if v_limit < 1 then
      perform absurd._raise('AB008', 'cleanup_limit must be at least 1');
    end if;
    v_row.cleanup_limit := v_limit;
  end if;
  if v_policy ? 'detach_mode' and jsonb_typeof(v_policy -> 'detach_mode') <> 'null' then
    v_mode := lower(btrim(v_policy ->> 'detach_mode'));
    if v_mode not in ('none', 'empty') then
      perform absurd._raise('AB008', format('Unsupported detach mode "%s"', v_mode));
    end if;
    v_row.detach_mode := v_mode;
  end if;
  if v_policy ? 'default_partition' and jsonb_typeof(v_policy -> 'default_partition') <> 'null' then
    v_mode := lower(btrim(v_policy ->> 'default_partition'));
    if v_mode not in ('enabled', 'disabled') then
      perform absurd._raise('AB008', format('Unsupported default_partition mode "%s"', v_mode));
    end if;
    if v_row.storage_mode <> 'partitioned' then
      perform absurd._raise('AB008',
        'default_partition policy is only supported for partitioned queues');
    end if;
    v_row.default_partition := v_mode;
  end if;

  update absurd.queues set
    partition_lookahead = v_row.partition_lookahead,
    partition_lookback = v_row.partition_lookback,
    cleanup_ttl = v_row.cleanup_ttl,
    cleanup_limit = v_row.cleanup_limit,
    detach_mode = v_row.detach_mode,
    detach_min_age = v_row.detach_min_age,
    default_partition = v_row.default_partition,
    max_running = v_row.max_running,
    max_running_per_key = v_row.max_running_per_key,
    rate_limit = v_row.rate_limit,
    rate_limit_per_key = v_row.rate_limit_per_key,
    flow_hold = v_row.flow_hold
  where queue_name = q;
  if v_row.rate_limit is not null then
    perform absurd._flow_rate_index(q);
  end if;
  if v_policy ?| array['max_running', 'max_running_per_key', 'rate_limit', 'rate_limit_per_key',
                       'flow_hold'] then
    -- A raised or removed limit admits parked runs at once (claims park again
    -- those still over a limit); a lowered one drains as runs finish.
    perform absurd._flow_wake(q, null);
    perform absurd._notify(q, 'flow');
  end if;
  if v_row.storage_mode = 'partitioned' then
    perform absurd._apply_default_partition(q, v_row.default_partition);
  end if;
end;
$$;

-- -----------------------------------------------------------------------------
-- The statement catalogue: every per-queue statement on a hot path, by name.
-- Functions run them with EXECUTE absurd._sql(name, queue) USING ...; tests
-- EXPLAIN the very same text to prove each one is index-driven.
-- Placeholders: %1$I = t_<q> (tasks), %2$I = r_<q> (runs), %3$I = c_<q>
-- (checkpoints), %4$I = e_<q> (events), %5$I = w_<q> (waits), %6$I = s_<q>
-- (streams).
--
-- Every function that runs these statements is declared "set enable_seqscan =
-- off": each statement reaches its rows by key, so its plan must not depend on
-- how big a table or partition was when it was planned. Without it, a week's
-- partition planned while small (the week has just begun; its first ANALYZE saw
-- a few hundred rows) is sequentially scanned, and the plans the engine keeps
-- for the whole session (absurd._cached, generic) go on scanning it while it
-- grows, until autovacuum analyses it again: measured on PostgreSQL 15, a cached
-- complete.many took 0.2 ms with the index and 18.7 ms scanning a 200,000-row
-- waits partition. Where no index serves a statement, PostgreSQL still scans
-- (the setting only prices scans out), and the plan tests would catch it.
-- -----------------------------------------------------------------------------
create or replace function absurd._sql(p_statement text, p_queue_name text)
returns text
language plpgsql
immutable
as $$
declare
  v_template text;
begin
  if p_statement in ('claim.ids', 'claim.flow_ids') then
    -- claim.band and claim.flow_candidates over the runs absurd._fair_pick chose
    -- ($1: their run_ids, found by primary key) instead of a whole band.
    v_template := absurd._sql(case p_statement when 'claim.ids' then 'claim.band'
      else 'claim.flow_candidates' end, p_queue_name);
    return replace(v_template, 'r.priority = $1 and', 'r.run_id = any($1::uuid[]) and');
  end if;
  v_template := case p_statement

  -- $1 task_id, $2 task_name, $3 params, $4 headers, $5 retry_strategy,
  -- $6 max_attempts, $7 cancellation, $8 now, $9 run_id, $10 idempotency_key,
  -- $11 priority, $12 available_at, $13 flow_key, $14 debounce_key, $15 debounce_deadline
  when 'spawn' then $q$
    with t as (
      insert into absurd.%1$I as t (task_id, task_name, params, headers, retry_strategy,
        max_attempts, cancellation, enqueue_at, state, attempts, last_attempt_run,
        idempotency_key, priority, cancel_deadline, flow_key, debounce_key, debounce_deadline)
      values ($1, $2, coalesce($3, 'null'::jsonb), $4, $5, $6, $7, $8, 'pending', 1, $9,
        $10, $11, absurd._cancel_deadline($7, $12, null), $13, $14, $15)
      on conflict do nothing
      returning t.task_id
    ), r as (
      insert into absurd.%2$I (run_id, task_id, attempt, state, available_at, created_at, priority,
        flow_key)
      select $9, t.task_id, 1, 'pending', $12, $8, $11, $13 from t
    )
    select count(*) from t$q$

  -- spawn_tasks: one row per array element, all arrays of one length.
  -- $1 task_ids, $2 task_names, $3 params, $4 headers, $5 retry_strategies,
  -- $6 max_attempts, $7 cancellations, $8 now, $9 run_ids, $10 priorities,
  -- $11 available_ats, $12 flow_keys
  when 'spawn.many' then $q$
    with x as (
      select * from unnest($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[], $5::jsonb[],
        $6::integer[], $7::jsonb[], $9::uuid[], $10::integer[], $11::timestamptz[], $12::text[])
        as x(task_id, task_name, params, headers, retry_strategy, max_attempts, cancellation,
             run_id, priority, available_at, flow_key)
    ), t as (
      insert into absurd.%1$I (task_id, task_name, params, headers, retry_strategy,
        max_attempts, cancellation, enqueue_at, state, attempts, last_attempt_run,
        priority, cancel_deadline, flow_key)
      select task_id, task_name, coalesce(params, 'null'::jsonb), headers, retry_strategy,
        max_attempts, cancellation, $8, 'pending', 1, run_id, priority,
        absurd._cancel_deadline(cancellation, available_at, null), flow_key
      from x
    ), r as (
      insert into absurd.%2$I (run_id, task_id, attempt, state, available_at, created_at, priority,
        flow_key)
      select run_id, task_id, 1, 'pending', available_at, $8, priority, flow_key from x
    )
    select count(*) from x$q$

  -- Debounce. $1 debounce_key: the key's task that has not started (r_<q>_dki).
  when 'debounce.find' then $q$
    select task_id, last_attempt_run, attempts, debounce_deadline from absurd.%1$I
    where debounce_key = $1 and first_started_at is null and state = 'pending'
    limit 1$q$
  -- $1 run_id: locks the run first (the lock order: run, then task).
  when 'debounce.lock_run' then $q$
    select state from absurd.%2$I where run_id = $1 for update$q$
  -- $1 task_id, $2 run_id, $3 params, $4 new available_at: replaces the params and
  -- moves the start, if the task has still not started.
  when 'debounce.push' then $q$
    with ut as (
      update absurd.%1$I t set params = coalesce($3, 'null'::jsonb),
        cancel_deadline = absurd._cancel_deadline(t.cancellation, $4, null)
      where t.task_id = $1 and t.state = 'pending' and t.first_started_at is null
      returning t.task_id
    )
    update absurd.%2$I r set available_at = $4, flow_wait = null
    from ut where r.run_id = $2 and r.state = 'pending'
    returning r.run_id$q$

  -- $1 idempotency_key
  when 'spawn.existing' then $q$
    select task_id, last_attempt_run, attempts from absurd.%1$I where idempotency_key = $1$q$

  -- $1 exclusive upper bound: the highest priority band below it that has a
  -- pending or sleeping run (a backward probe of r_<q>_cli).
  when 'claim.next_band' then $q$
    select priority from absurd.%2$I
    where state in ('pending', 'sleeping') and priority < $1::bigint
    order by priority desc limit 1$q$

  -- $1 priority, $2 now, $3 qty, $4 worker, $5 lease end. One range scan of
  -- r_<q>_cli that stops at "now"; rows locked by other claimers are skipped.
  -- Planned once per session (generic plan, see claim_task): each write finds
  -- its rows by primary key through "= any(array(select ... from c))", which
  -- keeps the plan index-driven whatever qty is (with the bare join to c, the
  -- generic plan hash-joins whole tables; planning anew cost more than the claim).
  -- A candidate whose task is past its cancellation deadline is cancelled on
  -- the spot (column "late"), so overdue tasks at the head of the queue are
  -- visited once, never re-scanned by every claim.
  when 'claim.band' then $q$
    with c as (
      select r.run_id, r.task_id, r.attempt, r.wake_event, r.event_payload, r.available_at,
             coalesce(t.cancel_deadline <= $2, false) as late
      from absurd.%2$I r
      join absurd.%1$I t on t.task_id = r.task_id
      where r.state in ('pending', 'sleeping') and r.priority = $1 and r.available_at <= $2
        and t.state in ('pending', 'sleeping', 'running')
      order by r.available_at, r.run_id
      limit $3
      for update of r, t skip locked
    ), ur as (
      update absurd.%2$I r set
        state = case when c.late then 'cancelled' else 'running' end,
        claimed_by = case when c.late then null else $4 end,
        claim_expires_at = case when c.late then null else $5::timestamptz end,
        started_at = case when c.late then r.started_at else $2 end,
        available_at = case when c.late then r.available_at else $2 end
      from c where r.run_id = c.run_id and r.run_id = any(array(select c.run_id from c))
    ), ut as (
      update absurd.%1$I t set
        state = case when c.late then 'cancelled' else 'running' end,
        attempts = case when c.late then t.attempts else greatest(t.attempts, c.attempt) end,
        first_started_at = case when c.late then t.first_started_at
          else coalesce(t.first_started_at, $2) end,
        last_attempt_run = case when c.late then t.last_attempt_run else c.run_id end,
        cancelled_at = case when c.late then coalesce(t.cancelled_at, $2) else t.cancelled_at end,
        finished_at = case when c.late then $2 else t.finished_at end,
        cancel_deadline = case
          when c.late then null
          when t.first_started_at is null then absurd._cancel_deadline(t.cancellation, null, $2)
          else t.cancel_deadline end
      from c where t.task_id = c.task_id and t.task_id = any(array(select c.task_id from c))
      returning t.task_id, t.task_name, t.params, t.retry_strategy, t.max_attempts, t.headers
    ), dw as (
      delete from absurd.%5$I w using c
      where w.run_id = c.run_id and w.run_id = any(array(select c.run_id from c))
        and not c.late and w.timeout_at is not null and w.timeout_at <= $2
    ), dl as (
      delete from absurd.%5$I w using c
      where w.task_id = c.task_id and w.task_id = any(array(select c.task_id from c)) and c.late
    )
    select c.run_id, c.task_id, c.attempt, ut.task_name, ut.params, ut.retry_strategy,
           ut.max_attempts, ut.headers, c.wake_event, c.event_payload, c.late
    from c join ut on ut.task_id = c.task_id
    order by c.available_at, c.run_id$q$

  -- Fairness between keys (queues with has_keys only; see absurd._fair_pick). A
  -- group is a key, or '' for the runs without one (first in the order).
  -- $1 priority, $2 a group, $3 now, $4 at most, $5 the runs this claim chose already,
  -- $6 queue name: the band's next group after $2 that has waiting runs (due or not,
  -- parked runs aside), else the first one (around again): one probe of r_<q>_fwi,
  -- a skip scan group by group; with the group's weight (its override's, else 1) and
  -- its oldest due runs, up to the weight and $4, locked.
  when 'claim.fair_turn' then $q$
    select n.grp, w.weight, array(
      select run_id from absurd.%2$I
      where state in ('pending', 'sleeping') and available_at < 'infinity' and priority = $1
        and coalesce(flow_key, '') = n.grp and available_at <= $3::timestamptz
        and run_id <> all($5::uuid[])
      order by available_at, run_id limit least(w.weight, $4::integer)
      for update skip locked) as ids
    from (
      (select coalesce(flow_key, '') as grp from absurd.%2$I
       where state in ('pending', 'sleeping') and available_at < 'infinity' and priority = $1
         and coalesce(flow_key, '') > $2::text
       order by coalesce(flow_key, '') limit 1)
      union all
      (select coalesce(flow_key, '') from absurd.%2$I
       where state in ('pending', 'sleeping') and available_at < 'infinity' and priority = $1
       order by coalesce(flow_key, '') limit 1)
      limit 1) n
    cross join lateral (select coalesce((select l.weight from absurd.flow_limits l
      where l.queue_name = $6::text and l.flow_key = n.grp), 1) as weight) w$q$
  -- $1 priority, $2 group, $3 now, $4 at most, $5 the runs this claim chose already
  -- (its own locks do not skip them): the group's oldest due runs, locked (r_<q>_fwi:
  -- a range that stops at "now"; a parked or delayed key reads nothing).
  when 'claim.fair_key' then $q$
    select array(select run_id from absurd.%2$I
      where state in ('pending', 'sleeping') and available_at < 'infinity' and priority = $1
        and coalesce(flow_key, '') = $2::text and available_at <= $3::timestamptz
        and run_id <> all($5::uuid[])
      order by available_at, run_id limit $4::integer
      for update skip locked)$q$

  -- Flow control (queues with flow_enabled only; see absurd._claim_flow).
  -- $1 priority, $2 now, $3 qty, $4 run_ids to pass over, $5 queue name, $6 the
  -- per-key running limit, $7 the per-key rate limit (the queue's defaults): the due
  -- runs of a band, locked but not yet claimed (admission decides each one), with
  -- their key's limits (its override's, else the defaults).
  when 'claim.flow_candidates' then $q$
    select r.run_id, r.task_id, r.flow_key, coalesce(t.cancel_deadline <= $2, false) as late,
           t.flow_slot is true as holds, coalesce(l.max_running, $6::integer) as key_limit,
           coalesce(l.rate_limit, $7::jsonb) as key_rate
    from absurd.%2$I r
    join absurd.%1$I t on t.task_id = r.task_id
    left join absurd.flow_limits l on l.queue_name = $5::text and l.flow_key = r.flow_key
    where r.state in ('pending', 'sleeping') and r.priority = $1 and r.available_at <= $2
      and t.state in ('pending', 'sleeping', 'running') and r.run_id <> all($4::uuid[])
    order by r.available_at, r.run_id
    limit $3
    for update of r, t skip locked$q$
  -- flow_hold "lifetime" with the queue's slots all held: only tasks that hold one
  -- may run (back from a sleep or a wait, or a retry), whatever waits ahead of them.
  -- $1 now, $2 qty, $3 run_ids to pass over, $4 $5 $6 as $5 $6 $7 of
  -- claim.flow_candidates. Bounded: at most max_running tasks hold a slot (t_<q>_fli).
  when 'claim.held_candidates' then $q$
    select r.run_id, r.task_id, r.flow_key, coalesce(t.cancel_deadline <= $1, false) as late,
           true as holds, coalesce(l.max_running, $5::integer) as key_limit,
           coalesce(l.rate_limit, $6::jsonb) as key_rate
    from absurd.%1$I t join absurd.%2$I r on r.run_id = t.last_attempt_run
    left join absurd.flow_limits l on l.queue_name = $4::text and l.flow_key = r.flow_key
    where t.flow_slot and t.state in ('pending', 'sleeping') and r.state in ('pending', 'sleeping')
      and r.available_at <= $1 and r.run_id <> all($3::uuid[])
    order by r.priority desc, r.available_at, r.run_id
    limit $2
    for update of r, t skip locked$q$
  -- $1 run_id, $2 now, $3 worker, $4 lease end, $5 whether the task takes a
  -- lifetime slot, $6 a running limit of the run's key to check (null: none), $7 the
  -- run's flow_key: claims one admitted candidate (the writes of claim.band for one
  -- run). With $6, only while fewer than $6 of the key's runs are running: counted
  -- here, in this statement's snapshot, taken after the caller locked the key
  -- (r_<q>_fki, up to the limit); a full key claims nothing, and the caller parks the
  -- run. One statement instead of a count and a claim.
  when 'claim.one' then $q$
    with ur as (
      update absurd.%2$I r set state = 'running', claimed_by = $3, claim_expires_at = $4::timestamptz,
        started_at = $2, available_at = $2, flow_wait = null
      where r.run_id = $1 and ($6::integer is null or (select count(*) from (
        select 1 from absurd.%2$I k where k.flow_key = $7::text and k.state = 'running'
        limit $6::integer) x) < $6::integer)
      returning r.run_id, r.task_id, r.attempt, r.wake_event, r.event_payload
    ), ut as (
      update absurd.%1$I t set state = 'running', attempts = greatest(t.attempts, ur.attempt),
        first_started_at = coalesce(t.first_started_at, $2), last_attempt_run = ur.run_id,
        cancel_deadline = case when t.first_started_at is null
          then absurd._cancel_deadline(t.cancellation, null, $2) else t.cancel_deadline end,
        flow_slot = case when $5::boolean then true else t.flow_slot end
      from ur where t.task_id = ur.task_id
      returning t.task_id, t.task_name, t.params, t.retry_strategy, t.max_attempts, t.headers
    ), dw as (
      delete from absurd.%5$I w
      where w.run_id = (select ur.run_id from ur) and w.timeout_at is not null
        and w.timeout_at <= $2
    )
    select ur.run_id, ur.task_id, ur.attempt, ut.task_name, ut.params, ut.retry_strategy,
           ut.max_attempts, ut.headers, ur.wake_event, ur.event_payload
    from ur join ut on ut.task_id = ur.task_id$q$
  -- $1 flow_key, $2 limit: how many of the key's runs hold a slot, counted up to
  -- the limit (r_<q>_fki; a bounded probe, no counter row).
  when 'flow.key_running' then $q$
    select count(*) from (
      select 1 from absurd.%2$I where flow_key = $1 and state = 'running' limit $2) x$q$
  -- Rate limits: a sliding window over the runs' start times (absurd._flow_rate_room).
  -- $1 flow_key, $2 the window's start, $3 at most this many: the key's newest
  -- starts after $2, newest first (r_<q>_fsi, read backwards).
  when 'flow.rate_key' then $q$
    select array(select started_at from absurd.%2$I
      where flow_key = $1 and started_at is not null and started_at > $2::timestamptz
      order by started_at desc limit $3::integer)$q$
  -- The same for the whole queue (r_<q>_rsi); $1 is null.
  when 'flow.rate_queue' then $q$
    select array(select started_at from absurd.%2$I
      where started_at is not null and started_at > $2::timestamptz and $1::text is null
      order by started_at desc limit $3::integer)$q$
  -- $1 flow_key, $2 now, $3 batch: parks up to $3 of a full key's due pending runs
  -- (r_<q>_fdi), under the key's lock, so that claims do not meet them one by one.
  when 'flow.park_key' then $q$
    with u as (
      update absurd.%2$I r set available_at = 'infinity', flow_wait = null
      where r.run_id = any(array(
        select p.run_id from absurd.%2$I p
        where p.flow_key = $1 and p.state = 'pending' and p.available_at <= $2
        order by p.available_at limit $3
        for update skip locked))
      returning 1
    )
    select count(*) from u$q$
  -- flow_hold "lifetime": $1 flow_key, $2 limit: the key's live tasks holding a
  -- slot, counted up to the limit (t_<q>_fli).
  when 'flow.key_held' then $q$
    select count(*) from (select 1 from absurd.%1$I where flow_key = $1 and flow_slot
      and state in ('pending', 'running', 'sleeping') limit $2) x$q$
  -- $1 limit: the queue's live tasks holding a slot (t_<q>_fli).
  when 'flow.queue_held' then $q$
    select count(*) from (select 1 from absurd.%1$I where flow_slot
      and state in ('pending', 'running', 'sleeping') limit $1) x$q$
  -- $1 limit: the queue's running runs, counted up to the limit (r_<q>_sai).
  when 'flow.queue_running' then $q$
    select count(*) from (select 1 from absurd.%2$I where state = 'running' limit $1) x$q$
  -- $1 run_id, $2 task_id, $3 available_at, $4 flow_wait: parks a candidate whose
  -- key has no free slot ('infinity', null: until a release wakes it) or that is
  -- over a rate limit (until its window frees, 'rate_key').
  when 'flow.park' then $q$
    with ur as (
      update absurd.%2$I set state = 'pending', available_at = $3, flow_wait = $4
      where run_id = $1
    )
    update absurd.%1$I set state = 'pending' where task_id = $2 and state = 'sleeping'$q$
  -- $1 flow_key, $2 its limit (null: none), $3 now, $4 lifetime hold: the release,
  -- under the key's lock: wakes as many parked runs as the key has free slots (its
  -- running runs counted up to the limit, r_<q>_fki; with the lifetime hold its
  -- live tasks holding a slot, t_<q>_fli), all of them when it has no limit.
  when 'flow.release' then $q$
    with u as (
      update absurd.%2$I r set available_at = $3
      where r.run_id = any(array(
        select p.run_id from absurd.%2$I p
        where p.flow_key = $1 and p.state = 'pending' and p.available_at = 'infinity'
        order by p.priority desc, p.run_id
        limit case when $2::integer is null then null
          when $4::boolean then greatest($2::integer - (
            select count(*) from (
              select 1 from absurd.%1$I h where h.flow_key = $1 and h.flow_slot
                and h.state in ('pending', 'running', 'sleeping') limit $2::integer) n), 0)
          else greatest($2::integer - (
            select count(*) from (
              select 1 from absurd.%2$I x where x.flow_key = $1 and x.state = 'running'
              limit $2::integer) n), 0) end
        for update skip locked))
      returning 1
    )
    select count(*) from u$q$
  -- $1 now: wakes every parked run of the queue (a limit was raised or removed).
  when 'flow.unpark_all' then $q$
    with u as (
      update absurd.%2$I r set available_at = $1
      where r.flow_key is not null and r.state = 'pending' and r.available_at = 'infinity'
      returning 1
    )
    select count(*) from u$q$

  -- $1 priority, $2 now, $3 batch. Cancels the tasks past their cancellation
  -- deadline among the first $3 due runs of a band: a bounded read of the
  -- head of r_<q>_cli, however many overdue tasks there are.
  when 'claim.cancel_head' then $q$
    with h as (
      select run_id, task_id from absurd.%2$I
      where state in ('pending', 'sleeping') and priority = $1 and available_at <= $2
      order by available_at, run_id
      limit $3
    ), c as (
      select r.run_id, r.task_id
      from h join absurd.%2$I r on r.run_id = h.run_id join absurd.%1$I t on t.task_id = h.task_id
      where r.state in ('pending', 'sleeping') and t.state in ('pending', 'sleeping', 'running')
        and t.cancel_deadline <= $2
      for update of r, t skip locked
    ), ur as (
      update absurd.%2$I r set state = 'cancelled', claimed_by = null, claim_expires_at = null
      from c where r.run_id = c.run_id
    ), dw as (
      -- = any(array(...)), not a join: PG15 hash-joins every w_<q> partition otherwise.
      delete from absurd.%5$I w where w.task_id = any(array(select task_id from c))
    ), ut as (
      update absurd.%1$I t set state = 'cancelled', cancelled_at = coalesce(t.cancelled_at, $2),
        finished_at = $2, cancel_deadline = null
      from c where t.task_id = c.task_id
      returning 1
    )
    select count(*) from ut$q$

  -- $1 now, $2 limit (r_<q>_cdi)
  when 'sweep.cancellations' then $q$
    select task_id from absurd.%1$I where cancel_deadline <= $1
    order by cancel_deadline limit $2$q$

  -- $1 now, $2 limit (r_<q>_cei)
  when 'sweep.leases' then $q$
    select run_id, claimed_by, claim_expires_at, attempt, flow_key from absurd.%2$I
    where state = 'running' and claim_expires_at is not null and claim_expires_at <= $1
    order by claim_expires_at, run_id limit $2
    for update skip locked$q$

  -- $1 task_id
  when 'cancel.lock_runs' then $q$
    select 1 from absurd.%2$I where task_id = $1
      and state not in ('completed', 'failed', 'cancelled')
    order by run_id for update$q$
  when 'task.lock' then $q$
    select state from absurd.%1$I where task_id = $1 for update$q$
  -- $1 task_id, $2 now
  when 'cancel.apply' then $q$
    with ut as (
      update absurd.%1$I set state = 'cancelled', cancelled_at = coalesce(cancelled_at, $2),
        cancel_deadline = null, finished_at = $2
      where task_id = $1
    ), ur as (
      update absurd.%2$I set state = 'cancelled', claimed_by = null, claim_expires_at = null
      where task_id = $1 and state not in ('completed', 'failed', 'cancelled')
    )
    delete from absurd.%5$I where task_id = $1$q$
  -- $1 now, $2 limit: the flow keys a sweep may release (a superset of the keys of
  -- sweep.cancellations and sweep.leases), so that it locks them in order first.
  when 'flow.sweep_keys' then $q$
    select array(select distinct k from (
      (select t.flow_key as k from absurd.%1$I t where t.cancel_deadline <= $1
       order by t.cancel_deadline limit $2)
      union all
      (select r.flow_key from absurd.%2$I r
       where r.state = 'running' and r.claim_expires_at is not null and r.claim_expires_at <= $1
       order by r.claim_expires_at, r.run_id limit $2)) x
      where k is not null order by 1)$q$
  -- $1 task_id: the task's state and flow key, locked (cancel: after its runs).
  when 'task.lock_key' then $q$
    select state, flow_key from absurd.%1$I where task_id = $1 for update$q$

  -- $1 run_id
  when 'run.state' then $q$
    select state from absurd.%2$I where run_id = $1$q$

  -- $1 run_id, $2 now, $3 result. The task row is updated from the run's
  -- output, so the run row is always locked first. "(state = ...) is true" is
  -- not indexable on purpose: with stale statistics a plain "state = 'running'"
  -- can steer the planner to r_<q>_sai and a scan of every running run; this
  -- way the primary key always drives (the same in schedule and checkpoint.write).
  when 'complete' then $q$
    with ur as (
      update absurd.%2$I set state = 'completed', completed_at = $2, result = $3
      where run_id = $1 and (state = 'running') is true
      returning task_id
    ), ut as (
      update absurd.%1$I t set state = 'completed', completed_payload = $3, last_attempt_run = $1,
        cancel_deadline = null, finished_at = $2
      from ur where t.task_id = ur.task_id
      returning t.task_id, t.flow_key
    ), dw as (
      delete from absurd.%5$I where run_id = $1
    )
    select task_id, flow_key from ut$q$

  -- Batched writes of one worker (set_task_checkpoint_states, complete_runs): one
  -- statement for many runs. Each reports, per input position, whether its item was
  -- applied; one that was not is for the caller to send alone through the single
  -- function, which raises its precise error.
  -- $1 task_ids, $2 steps, $3 states, $4 run_ids, $5 now, $6 extend seconds (0: none).
  -- The runs are locked first, in run_id order (the lock order), and checked as
  -- checkpoint.owner + set_task_checkpoint_state check one. Item i applies when its run
  -- exists, belongs to its task, and neither is cancelled nor the run failed.
  when 'checkpoint.write_many' then $q$
    with x as (
      select * from unnest($1::uuid[], $2::text[], $3::jsonb[], $4::uuid[])
        with ordinality as x(task_id, step, state, run_id, i)
    ), o as materialized (
      select r.run_id, r.task_id, r.attempt, r.state, r.claim_expires_at, t.state as task_state
      from absurd.%2$I r left join absurd.%1$I t on t.task_id = r.task_id
      where r.run_id = any($4::uuid[])
      order by r.run_id
      for no key update of r
    ), ok as materialized (
      select x.i, x.task_id, x.step, x.state, x.run_id, o.attempt, o.claim_expires_at,
             o.state as run_state
      from x join o on o.run_id = x.run_id and o.task_id = x.task_id
      where btrim(x.step) <> '' and o.task_state is distinct from 'cancelled'
        and o.state not in ('cancelled', 'failed')
    ), ext as (
      update absurd.%2$I r set claim_expires_at = $5::timestamptz + make_interval(secs => $6::integer)
      where r.run_id = any(array(select run_id from ok
                                 where claim_expires_at is not null and run_state = 'running'))
        and $6::integer > 0 and (r.state = 'running') is true
    ), ins as (
      insert into absurd.%3$I as c (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
      select task_id, step, state, 'committed', run_id, $5 from ok order by i
      on conflict (task_id, checkpoint_name) do update
        set state = excluded.state, status = 'committed', owner_run_id = excluded.owner_run_id,
            updated_at = excluded.updated_at
        where c.owner_run_id is null or c.owner_run_id = excluded.owner_run_id
           or coalesce((select o.attempt from absurd.%2$I o where o.run_id = c.owner_run_id), 0)
              <= (select n.attempt from absurd.%2$I n where n.run_id = excluded.owner_run_id)
    )
    select array_agg(ok.i is not null order by x.i) from x left join ok on ok.i = x.i$q$

  -- $1 run_ids, $2 results, $3 now: 'complete' for many runs. Item i applies when its
  -- run was running.
  when 'complete.many' then $q$
    with x as (
      select * from unnest($1::uuid[], $2::jsonb[]) with ordinality as x(run_id, result, i)
    ), ur as (
      update absurd.%2$I r set state = 'completed', completed_at = $3, result = x.result
      from x where r.run_id = x.run_id and (r.state = 'running') is true
      returning r.run_id, r.task_id, x.result, r.flow_key
    ), ut as (
      update absurd.%1$I t set state = 'completed', completed_payload = ur.result,
        last_attempt_run = ur.run_id, cancel_deadline = null, finished_at = $3
      from ur where t.task_id = ur.task_id
      returning ur.run_id
    ), dw as (
      delete from absurd.%5$I w where w.run_id = any(array(select run_id from ur))
    )
    select array_agg(ut.run_id is not null order by x.i),
           array(select distinct ur.flow_key from ur where ur.flow_key is not null order by 1)
    from x left join ut on ut.run_id = x.run_id$q$

  -- $1 run_id, $2 wake_at
  when 'schedule' then $q$
    with ur as (
      update absurd.%2$I set state = 'sleeping', available_at = $2, claimed_by = null,
        claim_expires_at = null, wake_event = null
      where run_id = $1 and (state = 'running') is true
      returning task_id
    )
    update absurd.%1$I t set state = 'sleeping' from ur where t.task_id = ur.task_id
    returning t.task_id, t.flow_key$q$

  -- $1 run_id
  when 'fail.lock_run' then $q$
    select run_id, task_id, attempt, state, flow_key from absurd.%2$I where run_id = $1 for update$q$
  -- $1 task_id
  when 'fail.lock_task' then $q$
    select task_id, attempts, max_attempts, retry_strategy, cancellation, first_started_at, priority,
      flow_key
    from absurd.%1$I where task_id = $1 for update$q$
  -- $1 run_id, $2 now, $3 reason
  when 'fail.mark' then $q$
    with ur as (
      update absurd.%2$I set state = 'failed', failed_at = $2, failure_reason = $3, wake_event = null
      where run_id = $1
    )
    delete from absurd.%5$I where run_id = $1$q$
  -- $1 new run_id, $2 task_id, $3 attempt, $4 state, $5 available_at, $6 now, $7 priority,
  -- $8 flow_key
  when 'fail.retry' then $q$
    with nr as (
      insert into absurd.%2$I (run_id, task_id, attempt, state, available_at, created_at, priority,
        flow_key)
      values ($1, $2, $3, $4, $5, $6, $7, $8)
    )
    update absurd.%1$I set state = $4, attempts = greatest(attempts, $3), last_attempt_run = $1
    where task_id = $2$q$
  -- $1 task_id, $2 final state, $3 attempt, $4 run_id, $5 now
  when 'fail.finish' then $q$
    update absurd.%1$I set state = $2, attempts = greatest(attempts, $3), last_attempt_run = $4,
      cancelled_at = case when $2 = 'cancelled' then coalesce(cancelled_at, $5) else cancelled_at end,
      cancel_deadline = null, finished_at = $5
    where task_id = $1$q$

  -- $1 run_id
  -- The run row is locked so that the state check and the write are atomic: a
  -- fail_run or cancel_task racing the write (lease expiry) is waited for and
  -- seen, never overtaken by a checkpoint of an ended run (tests/chaos/test_regressions.py).
  when 'checkpoint.owner' then $q$
    select r.task_id, r.attempt, r.state, r.claim_expires_at, t.state as task_state
    from absurd.%2$I r left join absurd.%1$I t on t.task_id = r.task_id
    where r.run_id = $1
    for no key update of r$q$
  -- $1 task_id, $2 step, $3 state, $4 run_id, $5 now, $6 extend seconds (0: no
  -- extension), $7 attempt. The extension is a primary-key update: its WHERE
  -- must not imply r_<q>_cei's predicate, or stale statistics can pick that
  -- index. An older attempt never overwrites a newer attempt's checkpoint.
  when 'checkpoint.write' then $q$
    with ext as (
      update absurd.%2$I set claim_expires_at = $5::timestamptz + make_interval(secs => $6::integer)
      where run_id = $4 and $6::integer > 0 and (state = 'running') is true
    )
    insert into absurd.%3$I as c (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
    values ($1, $2, $3, 'committed', $4, $5)
    on conflict (task_id, checkpoint_name) do update
      set state = excluded.state, status = 'committed', owner_run_id = excluded.owner_run_id,
          updated_at = excluded.updated_at
      where c.owner_run_id is null or c.owner_run_id = excluded.owner_run_id
         or coalesce((select o.attempt from absurd.%2$I o where o.run_id = c.owner_run_id), 0) <= $7$q$

  -- $1 event_name, $2 payload, $3 now. First write wins.
  when 'emit.store' then $q$
    with up as (
      insert into absurd.%4$I as e (event_name, payload, emitted_at) values ($1, $2, $3)
      on conflict (event_name) do update set payload = excluded.payload, emitted_at = excluded.emitted_at
        where e.payload is null
      returning 1
    )
    select count(*) from up$q$
  -- $1 event_name, $2 payload, $3 now. Wakes live waiters (w_<q>_eni).
  when 'emit.wake' then $q$
    with dw as (
      delete from absurd.%5$I where event_name = $1
      returning task_id, run_id, step_name, timeout_at
    ), ur as (
      update absurd.%2$I r set state = 'pending', available_at = $3, wake_event = null,
        event_payload = $2, claimed_by = null, claim_expires_at = null
      from dw
      where r.run_id = dw.run_id and r.state = 'sleeping'
        and (dw.timeout_at is null or dw.timeout_at > $3)
      returning r.run_id, r.task_id, dw.step_name
    ), uc as (
      insert into absurd.%3$I as c (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
      select ur.task_id, ur.step_name, $2, 'committed', ur.run_id, $3 from ur
      on conflict (task_id, checkpoint_name) do update
        set state = excluded.state, status = 'committed', owner_run_id = excluded.owner_run_id,
            updated_at = excluded.updated_at
    ), ut as (
      update absurd.%1$I t set state = 'pending' from ur where t.task_id = ur.task_id
    )
    select count(*) from ur$q$

  -- $1 task_id, $2 attempt: the checkpoints a run of that attempt may replay,
  -- those written by its own or earlier attempts (or by no run). The one place
  -- this rule lives: get_task_checkpoint_states and the claim's preload use it.
  when 'checkpoint.replayable' then $q$
    select c.checkpoint_name, c.state, c.status, c.owner_run_id, c.updated_at
    from absurd.%3$I c left join absurd.%2$I o on o.run_id = c.owner_run_id
    where c.task_id = $1 and c.status = 'committed' and (o.run_id is null or o.attempt <= $2)
    order by c.updated_at$q$
  -- $1 task_id, $2 step
  when 'checkpoint.get' then $q$
    select state from absurd.%3$I where task_id = $1 and checkpoint_name = $2$q$
  -- $1 event_name
  when 'await.sentinel' then $q$
    insert into absurd.%4$I (event_name, payload, emitted_at) values ($1, null, 'epoch')
    on conflict (event_name) do nothing$q$
  when 'await.lock_event' then $q$
    select payload from absurd.%4$I where event_name = $1 for share$q$
  -- $1 run_id
  when 'await.lock_run' then $q$
    select task_id, state, wake_event, event_payload, flow_key from absurd.%2$I
    where run_id = $1 for update$q$
  when 'await.clear_payload' then $q$
    update absurd.%2$I set event_payload = null where run_id = $1$q$
  when 'await.clear_wake' then $q$
    update absurd.%2$I set wake_event = null where run_id = $1$q$
  -- $1 task_id, $2 step, $3 payload, $4 run_id, $5 now
  when 'await.resolve' then $q$
    insert into absurd.%3$I as c (task_id, checkpoint_name, state, status, owner_run_id, updated_at)
    values ($1, $2, $3, 'committed', $4, $5)
    on conflict (task_id, checkpoint_name) do update
      set state = excluded.state, status = 'committed', owner_run_id = excluded.owner_run_id,
          updated_at = excluded.updated_at$q$
  -- $1 task_id, $2 run_id, $3 step, $4 event, $5 timeout_at, $6 now
  when 'await.suspend' then $q$
    with w as (
      insert into absurd.%5$I as w (task_id, run_id, step_name, event_name, timeout_at, created_at)
      values ($1, $2, $3, $4, $5, $6)
      on conflict (run_id, step_name) do update
        set event_name = excluded.event_name, timeout_at = excluded.timeout_at,
            created_at = excluded.created_at
    ), ur as (
      update absurd.%2$I set state = 'sleeping', claimed_by = null, claim_expires_at = null,
        available_at = coalesce($5, 'infinity'), wake_event = $4, event_payload = null
      where run_id = $2
    )
    update absurd.%1$I set state = 'sleeping' where task_id = $1$q$

  -- Promises live in one table for every queue (absurd.promises), reached by
  -- primary key (promise_id, then the queue is checked) or by (queue, key).
  -- $1 promise_id, $2 queue name
  when 'promise.lock' then $q$
    select promise_id, task_id, state, payload, delivery_key, expires_at, settled_at
    from absurd.promises where promise_id = $1 and queue_name = $2 for update$q$
  when 'promise.get' then $q$
    select promise_id, queue_name, task_id, state, payload, tags, idempotency_key,
           delivery_key, settled_by, created_at, expires_at, settled_at
    from absurd.promises where promise_id = $1 and queue_name = $2$q$
  -- $1 promise_id, $2 queue name, $3 owner task_id, $4 tags, $5 idempotency key,
  -- $6 now, $7 expires_at. A key the queue already used creates nothing.
  when 'promise.create' then $q$
    insert into absurd.promises (promise_id, queue_name, task_id, tags, idempotency_key,
      created_at, expires_at)
    values ($1, $2, $3, $4, $5, $6, $7)
    on conflict (queue_name, idempotency_key) where idempotency_key is not null do nothing
    returning promise_id, expires_at$q$
  -- $1 queue name, $2 idempotency key (promises_ik)
  when 'promise.by_key' then $q$
    select promise_id, expires_at from absurd.promises
    where queue_name = $1 and idempotency_key = $2$q$
  -- $1 promise_id, $2 state, $3 payload, $4 delivery key, $5 settled_by, $6 settled_at
  when 'promise.settle' then $q$
    update absurd.promises set state = $2, payload = $3, delivery_key = $4, settled_by = $5,
      settled_at = $6
    where promise_id = $1$q$
  -- $1 promise_id, $2 task_id: the first task to await an ownerless promise owns it.
  when 'promise.own' then $q$
    update absurd.promises set task_id = $2 where promise_id = $1 and task_id is null$q$
  -- $1 settled or expired before, $2 limit, $3 queue name (promises_oi): promises
  -- no task owns. Owned ones go with their task (cleanup.tasks).
  when 'cleanup.promises' then $q$
    with d as (
      delete from absurd.promises where promise_id = any (array(
        select p.promise_id from absurd.promises p
        where p.queue_name = $3 and p.task_id is null
          and coalesce(p.settled_at, p.expires_at) < $1
        order by coalesce(p.settled_at, p.expires_at) limit $2
        for update of p skip locked))
      returning 1
    )
    select count(*) from d$q$

  -- $1 finished before, $2 limit, $3 queue name (t_<q>_fai). A task whose
  -- result another task still awaits (absurd.task_watchers) is kept. Its
  -- promises (absurd.promises, promises_ti) go with it.
  when 'cleanup.tasks' then $q$
    with v as (
      select array(
        select t.task_id from absurd.%1$I t
        where t.finished_at < $1 and t.state in ('completed', 'failed', 'cancelled')
          and not exists (select 1 from absurd.task_watchers tw
                          where tw.queue_name = $3 and tw.task_id = t.task_id)
        order by t.finished_at limit $2
        for update of t skip locked) as ids
    ), dc as (
      delete from absurd.%3$I where task_id = any ((select ids from v)::uuid[])
    ), dw as (
      delete from absurd.%5$I where task_id = any ((select ids from v)::uuid[])
    ), ds as (
      delete from absurd.%6$I where task_id = any ((select ids from v)::uuid[])
    ), dr as (
      delete from absurd.%2$I where task_id = any ((select ids from v)::uuid[])
    ), dp as (
      delete from absurd.promises where queue_name = $3
        and task_id = any ((select ids from v)::uuid[])
    ), dt as (
      delete from absurd.%1$I where task_id = any ((select ids from v)::uuid[]) returning 1
    )
    select count(*) from dt$q$
  -- $1 emitted before, $2 limit (e_<q>_eai). An event some run still waits
  -- for (a row in w_<q>) is kept.
  when 'cleanup.events' then $q$
    with d as (
      delete from absurd.%4$I where event_name = any (array(
        select e.event_name from absurd.%4$I e where e.emitted_at < $1
          and not exists (select 1 from absurd.%5$I w where w.event_name = e.event_name)
        order by e.emitted_at limit $2
        for update of e skip locked))
      returning 1
    )
    select count(*) from d$q$

  -- $1 queue name: the earliest due_at of the queue's unpaused schedules, one
  -- probe of schedules_due (claim_task fires schedules only when it is past).
  -- $1 now, $2 failed since, $3 cap: queue_gauges' capped counts by state, one
  -- ordered range each of r_<q>_sai, the oldest due pending run (its first entry),
  -- and runs failed in ($2, $1] (r_<q>_fri).
  when 'gauges' then $q$
    select
      (select count(*) from (select 1 from absurd.%2$I where state = 'pending'
         order by available_at limit $3) x) as pending,
      (select count(*) from (select 1 from absurd.%2$I where state = 'running'
         order by available_at limit $3) x) as running,
      s.sleeping, s.waiting,
      (select min(available_at) from absurd.%2$I where state = 'pending'
         and available_at <= $1) as oldest_pending_at,
      (select count(*) from (select 1 from absurd.%2$I where failed_at > $2
         and failed_at <= $1 limit $3) x) as failed
    from (select count(*) filter (where wake_event is null) as sleeping,
                 count(*) filter (where wake_event is not null) as waiting
          from (select wake_event from absurd.%2$I where state = 'sleeping'
                order by available_at limit $3) x) s$q$

  when 'schedule.due' then $q$
    select min(due_at) from absurd.schedules where queue_name = $1 and not paused$q$

  -- (no parameters) four index probes: due runs (r_<q>_sai), expiring leases
  -- (r_<q>_cei) and cancellation deadlines (t_<q>_cdi), all handled by claim.
  -- Streams. $1 run_id, $2 task_id: the run, if it is one of the task's (its
  -- row locked: writes of one run are serialized, and a write waits for a
  -- concurrent complete/fail/cancel of the run and then sees its outcome).
  when 'stream.lock_run' then $q$
    select r.attempt, r.state from absurd.%2$I r
    where r.run_id = $1 and r.task_id = $2
    for no key update of r$q$
  -- $1 task_id, $2 stream: the last row (s_<q>_pkey, backwards).
  when 'stream.last' then $q$
    select s.seq, s.closed from absurd.%6$I s
    where s.task_id = $1 and s.stream = $2
    order by s.seq desc limit 1$q$
  -- $1 task_id, $2 stream, $3 chunks, $4 keys (or null), $5 first seq, $6
  -- run_id, $7 attempt, $8 now. A chunk whose key the stream already holds, or
  -- an earlier chunk of the batch holds, is skipped (s_<q>_ki); the others take
  -- consecutive seqs. Returns the number of rows written.
  when 'stream.append' then $q$
    with i as (
      select x.chunk, x.key, x.ord
      from unnest($3::jsonb[], coalesce($4::text[], array_fill(null::text,
        array[cardinality($3::jsonb[])]))) with ordinality x(chunk, key, ord)
    ), f as (
      select i.chunk, i.key, i.ord from i
      where i.key is null
         or (not exists (select 1 from i j where j.key = i.key and j.ord < i.ord)
             and not exists (select 1 from absurd.%6$I s
                             where s.task_id = $1 and s.stream = $2 and s.key = i.key))
    ), w as (
      insert into absurd.%6$I (task_id, stream, seq, chunk, run_id, attempt, key, written_at)
      select $1, $2, $5::bigint + row_number() over (order by f.ord) - 1, f.chunk, $6, $7,
             f.key, $8
      from f
      returning 1
    )
    select count(*) from w$q$
  -- write_streams: many items (a run's write to a stream) in one statement. $1
  -- task_ids, $2 run_ids, $3 streams, $4 counts (item i's chunks are the next
  -- counts[i] of $5 chunks and $6 keys, or null), $7 now. The runs are locked
  -- first, in run_id order (the lock order). Item i applies when write_stream
  -- would not refuse it (its name and chunks are valid, its run holds the task,
  -- its stream is not closed when it has chunks) and no earlier item of its
  -- stream was refused (order). Its chunks are then appended as stream.append
  -- appends them, in item order. Returns the flags in item order and, per stream
  -- written to, its task, name and last seq (one NOTIFY each).
  when 'stream.append_many' then $q$
    with i as materialized (
      select x.task_id, x.run_id, x.stream, x.n, x.item,
             sum(x.n) over (order by x.item) - x.n as off
      from unnest($1::uuid[], $2::uuid[], $3::text[], $4::integer[])
        with ordinality as x(task_id, run_id, stream, n, item)
    ), c as materialized (
      -- item i's chunks are the next n: the chunks, their keys and their items
      -- unnested side by side (linear; subscripts would walk the array each time)
      select x.item, x.chunk, x.key, x.ord
      from unnest($5::jsonb[], coalesce($6::text[], array_fill(null::text,
             array[cardinality($5::jsonb[])])),
             array(select i.item from i cross join lateral generate_series(1, i.n)
                   order by i.item)) with ordinality as x(chunk, key, item, ord)
    ), bad as materialized (
      select distinct c.item from c
      where c.chunk is null or octet_length(c.chunk::text) > 65536 or octet_length(c.key) > 512
    ), o as materialized (
      select r.run_id, r.task_id, r.attempt, r.state from absurd.%2$I r
      where r.run_id = any($2::uuid[])
      order by r.run_id
      for no key update of r
    ), st as materialized (
      select d.task_id, d.stream, l.seq, l.closed
      from (select distinct i.task_id, i.stream from i) d
      left join lateral (
        select s.seq, s.closed from absurd.%6$I s
        where s.task_id = d.task_id and s.stream = d.stream
        order by s.seq desc limit 1) l on true
    ), ok0 as materialized (
      select i.item, i.task_id, i.run_id, i.stream, o.attempt, st.seq as last_seq,
             coalesce(i.stream ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$', false)
             and i.n <= 1000 and o.state is not distinct from 'running'
             and (i.n = 0 or st.closed is not true)
             and not exists (select 1 from bad where bad.item = i.item) as ok
      from i
      left join o on o.run_id = i.run_id and o.task_id = i.task_id
      left join st on st.task_id = i.task_id and st.stream = i.stream
    ), ok as materialized (
      -- applied: valid, and every earlier item of its stream too (order)
      select a.item, a.task_id, a.run_id, a.stream, a.attempt, a.last_seq,
             bool_and(a.ok) over (partition by a.task_id, a.stream order by a.item
                                  rows between unbounded preceding and current row) as applied
      from ok0 a
    ), k as (
      select c.ord, ok.task_id, ok.stream, ok.run_id, ok.attempt, ok.last_seq, c.chunk, c.key,
             row_number() over (partition by ok.task_id, ok.stream, c.key order by c.ord)
               as nth
      from c join ok on ok.item = c.item and ok.applied
    ), f as (
      select k.* from k
      where k.key is null
         or (k.nth = 1 and not exists (select 1 from absurd.%6$I s
                                       where s.task_id = k.task_id and s.stream = k.stream
                                         and s.key = k.key))
    ), w as (
      insert into absurd.%6$I (task_id, stream, seq, chunk, run_id, attempt, key, written_at)
      select f.task_id, f.stream,
             coalesce(f.last_seq, -1)
               + row_number() over (partition by f.task_id, f.stream order by f.ord),
             f.chunk, f.run_id, f.attempt, f.key, $7::timestamptz
      from f
      returning task_id, stream, seq
    ), n as (
      select w.task_id, w.stream, max(w.seq) as seq from w group by w.task_id, w.stream
    )
    select (select array_agg(ok.applied order by ok.item) from ok),
           array(select n.task_id from n order by n.task_id, n.stream),
           array(select n.stream from n order by n.task_id, n.stream),
           array(select n.seq from n order by n.task_id, n.stream)$q$
  -- $1 task_id, $2 stream, $3 seq, $4 run_id, $5 attempt, $6 now.
  when 'stream.close' then $q$
    insert into absurd.%6$I (task_id, stream, seq, chunk, run_id, attempt, closed, written_at)
    values ($1, $2, $3, null, $4, $5, true, $6)$q$
  -- $1 task_id, $2 stream, $3 from seq, $4 limit (s_<q>_pkey).
  when 'stream.read' then $q$
    select s.seq, s.chunk, s.written_at, s.attempt, s.closed from absurd.%6$I s
    where s.task_id = $1 and s.stream = $2 and s.seq >= $3
    order by s.seq limit $4$q$
  -- $1 task_id: whether the task exists and has ended, and when.
  when 'stream.task_end' then $q$
    select t.state in ('completed', 'failed', 'cancelled'), t.finished_at
    from absurd.%1$I t where t.task_id = $1$q$
  when 'next_wake' then $q$
    select least(
      (select min(available_at) from absurd.%2$I where state = 'pending'
         and available_at < 'infinity'),
      (select min(available_at) from absurd.%2$I where state = 'sleeping'
         and available_at < 'infinity'),
      (select min(claim_expires_at) from absurd.%2$I
         where state = 'running' and claim_expires_at is not null),
      (select min(cancel_deadline) from absurd.%1$I where cancel_deadline is not null))$q$
  end;
  if v_template is null then
    perform absurd._raise('AB015', format('Unknown engine statement "%s"', p_statement));
  end if;
  return format(v_template, 't_' || p_queue_name, 'r_' || p_queue_name, 'c_' || p_queue_name,
                'e_' || p_queue_name, 'w_' || p_queue_name, 's_' || p_queue_name);
end;
$$;

-- The names in the catalogue (tests EXPLAIN each one).
-- The hot statements of the catalogue run as session-level prepared statements:
-- PostgreSQL keeps their parse tree and plan for the session instead of parsing
-- and planning the text on every EXECUTE (complete_run: about 3x cheaper per
-- call). Returns the text to EXECUTE: 'execute absurd_<md5 of the text>(args)'. A utility
-- EXECUTE takes no parameters, so the caller passes every argument as a literal
-- (quote_nullable). The statement is prepared on first use in a session; the
-- check against pg_prepared_statements on every call makes DEALLOCATE ALL or
-- DISCARD ALL (poolers, drivers) harmless, and PREPARE is not undone by a
-- rollback. A plan survives drop and re-create of its queue (PostgreSQL
-- re-analyses it by table name; _require_queue refuses a dropped queue first).
-- At most 200 per session: past that, ours are deallocated and prepared again
-- as they are used. Statements whose generic plan is checked by
-- tests/engine/test_plans.py (CACHED) only.
create or replace function absurd._cached(
  p_statement text, p_queue_name text, variadic p_args text[] default '{}')
returns text
language plpgsql
as $$
declare
  -- Named after the text itself: a session that outlives an upgrade of absurd.sql
  -- (a worker connected during a deploy) prepares the new text instead of
  -- running the old statement it prepared under the same name.
  v_text text := absurd._sql(p_statement, p_queue_name);
  v_name text := 'absurd_' || md5(v_text);
  v_prepare text := format('prepare %I as %s', v_name, v_text);
  v_have text;
  v_old text;
begin
  -- The name is predictable, so the session may hold a statement of that name that
  -- is not ours (a restricted role could PREPARE one to have this SECURITY DEFINER
  -- function run it with the owner's rights): only our exact text is reused.
  select statement into v_have from pg_prepared_statements where name = v_name;
  if v_have is distinct from v_prepare then
    if v_have is not null then
      execute format('deallocate %I', v_name);
    elsif (select count(*) from pg_prepared_statements where name like 'absurd\_%') >= 200 then
      for v_old in select name from pg_prepared_statements where name like 'absurd\_%' loop
        execute format('deallocate %I', v_old);
      end loop;
    end if;
    execute v_prepare;
  end if;
  if cardinality(p_args) = 0 then
    return format('execute %I', v_name);
  end if;
  return format('execute %I(%s)', v_name, array_to_string(p_args, ', '));
end;
$$;

create or replace function absurd._sql_names()
returns setof text
language sql
immutable
as $$
  select unnest(array['spawn', 'spawn.many', 'spawn.existing', 'debounce.find',
    'debounce.lock_run', 'debounce.push', 'claim.next_band', 'claim.band',
    'claim.cancel_head', 'sweep.cancellations', 'sweep.leases', 'cancel.lock_runs', 'task.lock', 'cancel.apply',
    'run.state', 'complete', 'complete.many', 'schedule', 'fail.lock_run', 'fail.lock_task', 'fail.mark',
    'fail.retry', 'fail.finish', 'checkpoint.owner', 'checkpoint.write',
    'checkpoint.write_many', 'emit.store',
    'emit.wake', 'checkpoint.replayable', 'checkpoint.get', 'await.sentinel', 'await.lock_event', 'await.lock_run',
    'await.clear_payload', 'await.clear_wake', 'await.resolve', 'await.suspend',
    'cleanup.tasks', 'cleanup.events', 'next_wake', 'schedule.due', 'promise.lock',
    'promise.get', 'promise.create', 'promise.by_key', 'promise.settle', 'promise.own',
    'cleanup.promises', 'gauges', 'stream.lock_run', 'stream.last', 'stream.append',
    'stream.append_many', 'stream.close', 'stream.read', 'stream.task_end', 'claim.flow_candidates', 'claim.one',
    'flow.key_running', 'flow.queue_running', 'flow.park', 'flow.unpark_all',
    'task.lock_key', 'flow.sweep_keys', 'flow.release', 'flow.rate_key', 'flow.rate_queue',
    'flow.key_held', 'flow.queue_held', 'claim.held_candidates', 'flow.park_key',
    'claim.fair_turn', 'claim.fair_key', 'claim.ids', 'claim.flow_ids']);
$$;

-- -----------------------------------------------------------------------------
-- Cron: expressions evaluated in an IANA time zone (internal; see docs/engine.md)
--
-- Fields: [second] minute hour day-of-month month day-of-week. A field is a list
-- of items: *, n, a-b, */s, a-b/s, a/s (a to the field's end); JAN-DEC and
-- SUN-SAT by name; day-of-week 7 is Sunday. Day-of-month and day-of-week
-- restrict with OR when both are restricted (neither covers its whole range).
-- Matching runs on local wall-clock time; the DST policy maps it to instants:
-- a repeated local time fires once, at its first occurrence; a local time in a
-- gap fires at the first instant after the gap (all of a gap's times fire once).
-- -----------------------------------------------------------------------------

-- The sorted distinct values of one cron field, or AB017 naming the field.
create or replace function absurd._cron_field(
  p_expr text, p_field text, p_text text, p_min integer, p_max integer, p_names text[]
)
returns integer[]
language plpgsql
immutable
as $$
declare
  v_item text;
  v_m text[];
  v_lo integer;
  v_hi integer;
  v_step integer;
  v_vals integer[] := '{}';
  v_bound text;
  v_i integer;
  v_k integer;
  -- a step may be as long as the field (day-of-week has 7 days, though 7 = 0)
  v_size integer := least(p_max - p_min + 1, case when p_names[1] = 'SUN' then 7 end);
begin
  if p_text = '*' then
    return array(select generate_series(p_min, p_min + v_size - 1));
  end if;
  foreach v_item in array string_to_array(p_text, ',') loop
    v_m := regexp_match(v_item,
      '^(?:(\*)|([A-Za-z0-9]{1,3})(?:-([A-Za-z0-9]{1,3}))?)(?:/([0-9]{1,3}))?$');
    if v_m is null then
      perform absurd._raise('AB017', format('Invalid cron expression "%s": %s field "%s": %s',
        left(p_expr, 100), p_field, left(p_text, 100),
        case when v_item = '' then 'empty list item'
             else format('"%s" is not a value, range or step', left(v_item, 40)) end));
    end if;
    for v_k in 2..3 loop
      v_bound := v_m[v_k];
      continue when v_bound is null;
      if v_bound ~ '^[0-9]+$' then
        v_i := v_bound::integer;
      elsif p_names is not null and upper(v_bound) = any(p_names) then
        v_i := array_position(p_names, upper(v_bound)) - 1 + p_min;
      else
        perform absurd._raise('AB017', format('Invalid cron expression "%s": %s field "%s": "%s" is not a %s',
          left(p_expr, 100), p_field, left(p_text, 100), v_bound,
          case when p_names is null then 'number' else 'number or name' end));
      end if;
      if v_i < p_min or v_i > p_max then
        perform absurd._raise('AB017', format('Invalid cron expression "%s": %s field "%s": %s is out of range %s-%s',
          left(p_expr, 100), p_field, left(p_text, 100), v_i, p_min, p_max));
      end if;
      if v_k = 2 then v_lo := v_i; else v_hi := v_i; end if;
    end loop;
    -- "*" and "a/s" run to the field's end (Saturday, 6, for day-of-week);
    -- a lone "a" is just a
    if v_m[1] is not null then
      v_lo := p_min;
      v_hi := p_min + v_size - 1;
    elsif v_m[3] is null then
      v_hi := case when v_m[4] is null then v_lo else p_min + v_size - 1 end;
    elsif v_lo > v_hi then
      perform absurd._raise('AB017', format('Invalid cron expression "%s": %s field "%s": range %s-%s runs backwards',
        left(p_expr, 100), p_field, left(p_text, 100), v_lo, v_hi));
    end if;
    v_step := coalesce(v_m[4]::integer, 1);
    if v_step < 1 or v_step > v_size then
      perform absurd._raise('AB017', format('Invalid cron expression "%s": %s field "%s": step %s is not between 1 and %s',
        left(p_expr, 100), p_field, left(p_text, 100), v_step, v_size));
    end if;
    v_vals := v_vals || array(select generate_series(v_lo, v_hi, v_step));
  end loop;
  if strpos(p_text, ',') = 0 then
    return v_vals;  -- one item: already sorted and distinct
  end if;
  return array(select distinct v from unnest(v_vals) v order by v);
end;
$$;

-- A cron expression as value sets (sorted arrays), or AB017.
create or replace function absurd._cron_spec(
  p_expr text,
  out seconds integer[], out minutes integer[], out hours integer[],
  out days integer[], out months integer[], out weekdays integer[],
  out days_restricted boolean, out weekdays_restricted boolean
)
language plpgsql
immutable
as $$
declare
  v_text text;
  v_fields text[];
begin
  if p_expr is null or length(p_expr) > 1000 then
    perform absurd._raise('AB017', format('Invalid cron expression "%s": %s', left(p_expr, 100),
      case when p_expr is null then 'it must be provided' else 'longer than 1000 characters' end));
  end if;
  v_text := lower(btrim(p_expr, E' \t\r\n'));
  if left(v_text, 1) = '@' then
    v_text := case v_text
      when '@yearly' then '0 0 1 1 *' when '@annually' then '0 0 1 1 *'
      when '@monthly' then '0 0 1 * *' when '@weekly' then '0 0 * * 0'
      when '@daily' then '0 0 * * *' when '@midnight' then '0 0 * * *'
      when '@hourly' then '0 * * * *' end;
    if v_text is null then
      perform absurd._raise('AB017', format('Invalid cron expression "%s": unknown macro (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)',
        left(p_expr, 100)));
    end if;
  end if;
  v_fields := case when v_text = '' then '{}'::text[] else regexp_split_to_array(v_text, E'[ \t\r\n]+') end;
  if cardinality(v_fields) = 5 then
    v_fields := '0'::text || v_fields;
  elsif cardinality(v_fields) <> 6 then
    perform absurd._raise('AB017', format('Invalid cron expression "%s": expected 5 fields (minute hour day-of-month month day-of-week) or 6 (a leading second), got %s',
      left(p_expr, 100), cardinality(v_fields)));
  end if;
  seconds := absurd._cron_field(p_expr, 'second', v_fields[1], 0, 59, null);
  minutes := absurd._cron_field(p_expr, 'minute', v_fields[2], 0, 59, null);
  hours := absurd._cron_field(p_expr, 'hour', v_fields[3], 0, 23, null);
  days := absurd._cron_field(p_expr, 'day-of-month', v_fields[4], 1, 31, null);
  months := absurd._cron_field(p_expr, 'month', v_fields[5], 1, 12,
    '{JAN,FEB,MAR,APR,MAY,JUN,JUL,AUG,SEP,OCT,NOV,DEC}');
  weekdays := absurd._cron_field(p_expr, 'day-of-week', v_fields[6], 0, 7,
    '{SUN,MON,TUE,WED,THU,FRI,SAT}');
  if 7 = any(weekdays) then
    weekdays := array(select distinct v % 7 from unnest(weekdays) v order by 1);
  end if;
  days_restricted := cardinality(days) < 31;
  weekdays_restricted := cardinality(weekdays) < 7;
end;
$$;

-- The normalised form of a cron expression (jsonb), or AB017: the allowed values
-- of each field, and whether day-of-month / day-of-week restrict the day.
create or replace function absurd._cron_parse(p_expr text)
returns jsonb
language sql
immutable
as $$
  select jsonb_build_object('second', to_jsonb(s.seconds), 'minute', to_jsonb(s.minutes),
    'hour', to_jsonb(s.hours), 'dom', to_jsonb(s.days), 'month', to_jsonb(s.months),
    'dow', to_jsonb(s.weekdays), 'dom_restricted', s.days_restricted,
    'dow_restricted', s.weekdays_restricted)
  from absurd._cron_spec(p_expr) s;
$$;

-- p_timezone if it names a zone of pg_timezone_names, else AB018. That view reads
-- the whole zone database (tens of ms), so names found are remembered for the
-- session in the setting absurd.cron_zones.
create or replace function absurd._cron_zone(p_timezone text)
returns text
language plpgsql
stable
as $$
declare
  v_known text := coalesce(current_setting('absurd.cron_zones', true), '');
begin
  if p_timezone = 'UTC' or position('|' || p_timezone || '|' in v_known) > 0 then
    return p_timezone;
  end if;
  if p_timezone is null or p_timezone !~ '^[A-Za-z0-9_+./-]{1,64}$'
     or not exists (select 1 from pg_timezone_names where name = p_timezone) then
    perform absurd._raise('AB018', format('Unknown time zone "%s"', left(absurd._show(p_timezone), 100)),
      'Use an IANA zone name from pg_timezone_names, such as Europe/Berlin or UTC.');
  end if;
  if length(v_known) > 2000 then
    v_known := '';
  end if;
  perform set_config('absurd.cron_zones', coalesce(nullif(v_known, ''), '|') || p_timezone || '|', false);
  return p_timezone;
end;
$$;

-- The first instant in (p_lo, p_hi] whose UTC offset in p_zone is p_hi's: the
-- zone's transition between them (binary search to the second).
create or replace function absurd._cron_transition(p_zone text, p_lo timestamptz, p_hi timestamptz)
returns timestamptz
language plpgsql
stable
as $$
declare
  v_off interval := (p_hi at time zone p_zone) - (p_hi at time zone 'UTC');
  v_mid timestamptz;
begin
  while p_hi - p_lo > interval '1 second' loop
    v_mid := p_lo + date_trunc('second', (p_hi - p_lo) / 2);
    if (v_mid at time zone p_zone) - (v_mid at time zone 'UTC') = v_off then
      p_hi := v_mid;
    else
      p_lo := v_mid;
    end if;
  end loop;
  return p_hi;
end;
$$;

-- The instant at which local wall-clock time p_local in p_zone fires (the DST
-- policy): its first occurrence when it occurs twice; the end of the gap (the
-- first valid instant after it) when it does not occur.
create or replace function absurd._cron_instant(p_local timestamp, p_zone text)
returns timestamptz
language plpgsql
stable
as $$
declare
  v_u timestamptz := p_local at time zone 'UTC';
  v_before interval := ((v_u - interval '1 day') at time zone p_zone) - (p_local - interval '1 day');
  v_after interval := ((v_u + interval '1 day') at time zone p_zone) - (p_local + interval '1 day');
  v_a timestamptz := v_u - v_before;
  v_b timestamptz := v_u - v_after;
  v_a_ok boolean;
  v_b_ok boolean;
begin
  v_a_ok := (v_a at time zone p_zone) = p_local;
  if v_before = v_after and v_a_ok then
    return v_a;
  end if;
  v_b_ok := (v_b at time zone p_zone) = p_local;
  if v_a_ok and v_b_ok then
    return least(v_a, v_b);
  elsif v_a_ok then
    return v_a;
  elsif v_b_ok then
    return v_b;
  end if;
  return absurd._cron_transition(p_zone, least(v_a, v_b), greatest(v_a, v_b));
end;
$$;

-- The first fire instant of cron expression p_expr strictly after p_after, in
-- the local wall-clock time of IANA zone p_timezone, under the DST policy above
-- (AB017: invalid expression, AB018: unknown zone). Jumps field by field (month,
-- day, hour, minute, second) and looks at most 8 calendar years ahead (29
-- February across a skipped leap year): NULL when nothing fires in that span,
-- e.g. "0 0 30 2 *". NULL when p_after is NULL or infinite.
create or replace function absurd._cron_next(p_expr text, p_after timestamptz, p_timezone text default 'UTC')
returns timestamptz
language plpgsql
stable
as $$
declare
  v_zone text := absurd._cron_zone(p_timezone);
  s record;
  v_l timestamp;
  v_limit integer;
  v_n integer;
  v_w integer;
  v_d integer;
  v_dow integer;
  v_day_ok boolean;
  v_at timestamptz;
  v_u timestamptz;
  v_off interval;
begin
  select * into s from absurd._cron_spec(p_expr);
  if p_after is null or not isfinite(p_after) then
    return null;
  end if;
  -- fires fall on whole seconds: start at the next whole second after p_after, in
  -- local time (converting p_after + 1 s instead would jump over a gap that starts
  -- at that second, and miss the tick the gap moves to its end)
  v_l := date_trunc('second', p_after at time zone v_zone) + interval '1 second';
  v_limit := extract(year from v_l)::integer + 8;
  for v_try in 1..10 loop
    -- the first local time >= v_l that matches every field
    loop
      if extract(year from v_l) > v_limit then
        return null;
      end if;
      v_n := extract(month from v_l)::integer;
      if not v_n = any(s.months) then
        v_n := s.months[width_bucket(v_n, s.months) + 1];
        if v_n is null then
          v_l := make_timestamp(extract(year from v_l)::integer + 1, s.months[1], 1, 0, 0, 0);
        else
          v_l := make_timestamp(extract(year from v_l)::integer, v_n, 1, 0, 0, 0);
        end if;
        continue;
      end if;
      v_d := extract(day from v_l)::integer;
      v_dow := extract(dow from v_l)::integer;
      v_day_ok := case
        when s.days_restricted and s.weekdays_restricted
          then v_d = any(s.days) or v_dow = any(s.weekdays)
        when s.days_restricted then v_d = any(s.days)
        when s.weekdays_restricted then v_dow = any(s.weekdays)
        else true end;
      if not v_day_ok then
        -- the next day that matches either restricting field (least() skips NULLs)
        v_n := null;
        if s.days_restricted then
          v_n := s.days[width_bucket(v_d, s.days) + 1];
        end if;
        if s.weekdays_restricted then
          foreach v_w in array s.weekdays loop
            v_n := least(v_n, v_d + 1 + (v_w - v_dow + 6) % 7);
          end loop;
        end if;
        if v_n is null
           or v_n > extract(day from date_trunc('month', v_l) + interval '1 month - 1 day') then
          v_l := date_trunc('month', v_l) + interval '1 month';
        else
          v_l := date_trunc('day', v_l) + (v_n - v_d) * interval '1 day';
        end if;
        continue;
      end if;
      v_n := extract(hour from v_l)::integer;
      if not v_n = any(s.hours) then
        v_n := s.hours[width_bucket(v_n, s.hours) + 1];
        v_l := date_trunc('day', v_l)
          + coalesce(v_n * interval '1 hour', interval '1 day');
        continue;
      end if;
      v_n := extract(minute from v_l)::integer;
      if not v_n = any(s.minutes) then
        v_n := s.minutes[width_bucket(v_n, s.minutes) + 1];
        v_l := date_trunc('hour', v_l)
          + coalesce(v_n * interval '1 minute', interval '1 hour');
        continue;
      end if;
      v_n := floor(extract(second from v_l))::integer;
      if not v_n = any(s.seconds) then
        v_n := s.seconds[width_bucket(v_n, s.seconds) + 1];
        v_l := date_trunc('minute', v_l)
          + coalesce(v_n * interval '1 second', interval '1 minute');
        continue;
      end if;
      exit;
    end loop;
    v_at := absurd._cron_instant(v_l, v_zone);
    if v_at > p_after then
      return v_at;
    end if;
    -- v_l occurs twice and p_after lies in its second occurrence: its first one
    -- has passed, and so has every local time until the repeated span ends
    -- (the transition, in the offset before it)
    v_u := v_l at time zone 'UTC';
    v_off := ((v_u - interval '1 day') at time zone v_zone) - (v_l - interval '1 day');
    v_at := absurd._cron_transition(v_zone, v_at, v_u - ((v_u + interval '1 day') at time zone v_zone
      - (v_l + interval '1 day')));
    v_l := greatest(v_l + interval '1 second', (v_at at time zone 'UTC') + v_off);
  end loop;
  return null;
end;
$$;

-- The fire instants of p_expr in (p_from, p_to], at most p_limit of them, in
-- order (for backfill and catch-up).
create or replace function absurd._cron_between(
  p_expr text, p_from timestamptz, p_to timestamptz, p_timezone text default 'UTC',
  p_limit integer default 1000
)
returns setof timestamptz
language plpgsql
stable
as $$
declare
  v_at timestamptz := p_from;
begin
  perform absurd._cron_spec(p_expr);
  perform absurd._cron_zone(p_timezone);
  if p_limit is null or p_limit < 1 then
    perform absurd._raise('AB015', 'limit must be at least 1');
  end if;
  for v_i in 1..p_limit loop
    v_at := absurd._cron_next(p_expr, v_at, p_timezone);
    exit when v_at is null or v_at > p_to;
    return next v_at;
  end loop;
end;
$$;

-- -----------------------------------------------------------------------------
-- Task lifecycle
-- -----------------------------------------------------------------------------

-- Drops the top-level keys whose value is null (nested values are kept as-is).
create or replace function absurd._strip_top_nulls(p_object jsonb)
returns jsonb
language sql
immutable
as $$
  select coalesce(jsonb_object_agg(key, value), '{}'::jsonb)
  from jsonb_each(p_object) where jsonb_typeof(value) <> 'null';
$$;

-- Explains why a run could not move: AB011 missing, AB001 cancelled, AB002
-- failed, else AB012 with p_message (formatted with run id and queue).
create or replace function absurd._run_state_error(p_queue_name text, p_run_id uuid, p_message text)
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  v_state text;
begin
  execute absurd._sql('run.state', p_queue_name) into v_state using p_run_id;
  if v_state is null then
    perform absurd._raise('AB011', format('Run "%s" not found in queue "%s"', absurd._show(p_run_id), p_queue_name));
  elsif v_state = 'cancelled' then
    perform absurd._raise('AB001', 'Task has been cancelled');
  elsif v_state = 'failed' then
    perform absurd._raise('AB002', format(
      'Run "%s" has already failed in queue "%s"', absurd._show(p_run_id), p_queue_name));
  end if;
  perform absurd._raise('AB012', format(p_message, absurd._show(p_run_id), p_queue_name));
end;
$$;

-- The spawn option debounce = {key, period_seconds, timeout_seconds}, checked
-- (AB054): key a non-empty string of at most 512 bytes, period_seconds > 0,
-- timeout_seconds (optional: no latest start) >= period_seconds. Not with
-- idempotency_key, delay or available_at (a debounced task's start is the debounce's).
create or replace function absurd._debounce(
  p_options jsonb, out key text, out period double precision, out timeout double precision)
language plpgsql
immutable
as $$
declare
  v jsonb := p_options -> 'debounce';
  v_field text;
begin
  if jsonb_typeof(v) <> 'object' then
    perform absurd._raise('AB054', format(
      'debounce must be an object {"key", "period_seconds", "timeout_seconds"}, got %s',
      left(v::text, 100)));
  end if;
  for v_field in select jsonb_object_keys(v) loop
    if v_field not in ('key', 'period_seconds', 'timeout_seconds') then
      perform absurd._raise('AB054', format('Unsupported debounce field "%s"', left(v_field, 100)));
    end if;
  end loop;
  if jsonb_typeof(v -> 'key') is distinct from 'string' or btrim(v ->> 'key') = ''
     or octet_length(v ->> 'key') > 512 then
    perform absurd._raise('AB054', format(
      'debounce.key must be a non-empty string of at most 512 bytes, got %s',
      left(coalesce(v -> 'key', 'null')::text, 100)));
  end if;
  key := v ->> 'key';
  begin
    period := absurd._opt_seconds(v, 'period_seconds');
    timeout := absurd._opt_seconds(v, 'timeout_seconds');
  exception when sqlstate 'AB015' then
    perform absurd._raise('AB054', format('debounce is malformed: %s', sqlerrm));
  end;
  if period is null or period <= 0 then
    perform absurd._raise('AB054', format('debounce.period_seconds must be a number > 0, got %s',
      left(coalesce(v -> 'period_seconds', 'null')::text, 100)));
  end if;
  if timeout < period then
    perform absurd._raise('AB054', format(
      'debounce.timeout_seconds (%s) must not be less than period_seconds (%s)', timeout, period));
  end if;
  foreach v_field in array array['idempotency_key', 'delay', 'available_at'] loop
    if jsonb_typeof(p_options -> v_field) is distinct from 'null' and p_options ? v_field then
      perform absurd._raise('AB054', format('debounce cannot be combined with %s', v_field));
    end if;
  end loop;
end;
$$;

-- The spawn options of spawn_task and spawn_tasks, checked and resolved
-- (AB015 for a bad value): available_at from "delay" or "available_at" (never
-- before p_now), priority defaulting to 0.
drop function if exists absurd._spawn_options(jsonb, timestamptz);
create or replace function absurd._spawn_options(
  p_options jsonb, p_now timestamptz,
  out headers jsonb, out retry_strategy jsonb, out max_attempts integer,
  out cancellation jsonb, out priority integer, out available_at timestamptz,
  out flow_key text, out debounce_key text, out debounce_period double precision,
  out debounce_deadline timestamptz)
language plpgsql
as $$
declare
  v_delay double precision;
begin
  -- Each option's reader runs only when the option is there (every reader takes a
  -- missing option as null): a spawn pays for the options it gives.
  retry_strategy := nullif(p_options -> 'retry_strategy', 'null'::jsonb);
  if retry_strategy is not null then
    perform absurd.retry_delay_seconds(retry_strategy, 1);
  end if;
  if p_options ? 'max_attempts' then
    max_attempts := absurd._opt_int(p_options, 'max_attempts');
    if max_attempts < 1 then
      perform absurd._raise('AB015', 'max_attempts must be >= 1');
    end if;
  end if;
  if p_options ? 'delay' then
    v_delay := absurd._opt_seconds(p_options, 'delay');
  end if;
  if p_options ? 'available_at' then
    available_at := absurd._opt_timestamp(p_options, 'available_at');
  end if;
  if v_delay is not null and available_at is not null then
    perform absurd._raise('AB015', 'Give either available_at or delay, not both');
  end if;
  available_at := case when v_delay is not null then p_now + make_interval(secs => v_delay)
                       else greatest(coalesce(available_at, p_now), p_now) end;
  headers := nullif(p_options -> 'headers', 'null'::jsonb);
  if p_options ? 'cancellation' then
    cancellation := absurd._check_cancellation(p_options -> 'cancellation');
  end if;
  priority := 0;
  if p_options ? 'priority' then
    priority := coalesce(absurd._opt_int(p_options, 'priority'), 0);
  end if;
  if p_options ? 'flow_key' then
    flow_key := absurd._flow_key(p_options -> 'flow_key');
  end if;
  if p_options ? 'debounce' and jsonb_typeof(p_options -> 'debounce') <> 'null' then
    select d.key, d.period, d.timeout into debounce_key, debounce_period, v_delay
    from absurd._debounce(p_options) d;
    available_at := p_now + make_interval(secs => debounce_period);
    debounce_deadline := p_now + make_interval(secs => v_delay);
  end if;
end;
$$;

-- The first keyed spawn of a queue turns fairness between its keys on
-- (absurd.queues.has_keys). Later keyed spawns only read the flag: the update
-- matches no row once it is set, so the queue's row is not written again.
create or replace function absurd._keyed(p_queue_name text)
returns void
language plpgsql
as $$
begin
  update absurd.queues set has_keys = true where queue_name = p_queue_name and not has_keys;
  if found then
    perform absurd._fair_index(p_queue_name);  -- once per queue
  end if;
end;
$$;

-- Fairness: the waiting runs by key, for the claim's skip scan over keys
-- (absurd._fair_pick). The runs without a key form one more group, '' (a key is
-- never empty). Parked runs (available_at 'infinity') are not in it: the skip scan
-- never visits a key whose runs are all parked, and statements that do not say
-- "available_at < 'infinity'" (claim.next_band, claim.band) cannot use it. Made
-- for a queue when it gets its first keyed run (absurd._keyed, in that spawn's
-- transaction: on a queue that already holds many runs without a key, that spawn
-- builds it, and the queue's other writes wait for it once), so that queues whose
-- tasks never carry a key do not maintain it on every spawn and claim.
create or replace function absurd._fair_index(p_queue_name text)
returns void
language plpgsql
as $$
begin
  execute format($ix$create index if not exists %I on absurd.%I
    (priority, coalesce(flow_key, ''), available_at, run_id)
    where state in ('pending', 'sleeping') and available_at < 'infinity'$ix$,
    'r_' || p_queue_name || '_fwi', 'r_' || p_queue_name);
end;
$$;

create or replace function absurd.spawn_task(
  p_queue_name text,
  p_task_name text,
  p_params jsonb,
  p_options jsonb default '{}'
)
returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_now timestamptz := absurd.current_time();
  v_opts jsonb;
  o record;
  v_available timestamptz;
  v_task_id uuid := absurd.portable_uuidv7();
  v_run_id uuid := absurd.portable_uuidv7();
  v_inserted integer;
  v_old record;
  v_pushed uuid;
begin
  -- The checks of _require_queue, _require_text and _require_object, each called
  -- only when its quick test fails (to raise its error): a spawn is the one call
  -- every application makes per task, and each call of a function costs.
  perform 1 from absurd.queues qu where qu.queue_name = q;
  if not found then
    perform absurd._require_queue(q);
  end if;
  if p_task_name is null or btrim(p_task_name) = '' then
    perform absurd._require_text(p_task_name, 'task_name');
  end if;
  v_opts := case when jsonb_typeof(p_options) = 'object' then p_options
                 else absurd._require_object(p_options, 'options') end;
  o := absurd._spawn_options(v_opts, v_now);
  v_available := o.available_at;

  if o.debounce_key is not null then
    -- Under the debounce key's lock: the key's task that has not started takes the
    -- new params and a later start, and is handed back (created = false).
    perform pg_advisory_xact_lock(hashtextextended(q || '/' || o.debounce_key, 1));
    execute absurd._sql('debounce.find', q) into v_old using o.debounce_key;
    if v_old.task_id is not null then
      execute absurd._sql('debounce.lock_run', q) using v_old.last_attempt_run;
      execute absurd._sql('debounce.push', q) into v_pushed
        using v_old.task_id, v_old.last_attempt_run, p_params,
              least(v_available, coalesce(v_old.debounce_deadline, v_available));
      if v_pushed is not null then
        return query select v_old.task_id, v_old.last_attempt_run, v_old.attempts, false;
        return;
      end if;
      -- It started (or ended) meanwhile: a new task.
    end if;
  end if;

  if v_opts ->> 'idempotency_key' is not null and absurd._is_partitioned(q) then
    -- Partitioned queues hold keys in i_<q> (see "Storage"): reserve it first.
    select * into v_old from absurd._reserve_key(q, v_opts ->> 'idempotency_key', v_task_id);
    if v_old.task_id is not null then
      return query select v_old.task_id, v_old.last_attempt_run, v_old.attempts, false;
      return;
    end if;
  end if;
  -- The queue's spawn function (absurd._make_queue_functions): the statement "spawn"
  -- planned once per session, its arguments passed as values (not as literals to
  -- parse again, as a prepared statement's EXECUTE would take them).
  execute format('select absurd.%I($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,'
                 ' $14, $15)', absurd._spawn_function(q))
    into v_inserted
    using v_task_id, p_task_name, p_params, o.headers, o.retry_strategy, o.max_attempts,
          o.cancellation, v_now, v_run_id, v_opts ->> 'idempotency_key', o.priority,
          v_available, o.flow_key, o.debounce_key, o.debounce_deadline;
  if v_inserted = 0 then
    -- The idempotency key is taken: hand back the task that holds it.
    execute absurd._sql('spawn.existing', q) into v_old using v_opts ->> 'idempotency_key';
    if v_old.task_id is null then
      raise exception using errcode = '40001',
        message = format('Idempotency key "%s" in queue "%s" was concurrently cleaned up',
                         v_opts ->> 'idempotency_key', q),
        hint = 'Retry spawn_task with the same idempotency key.';
    end if;
    return query select v_old.task_id, v_old.last_attempt_run, v_old.attempts, false;
    return;
  end if;
  if o.flow_key is not null then
    perform absurd._keyed(q);
  end if;
  if v_available <= v_now then
    perform absurd._notify(q, 'spawn');
  end if;
  task_id := v_task_id;  -- the row itself: cheaper than a query returning it
  run_id := v_run_id;
  attempt := 1;
  created := true;
  return next;
end;
$$;

-- Spawns many tasks in one call: p_tasks is a JSON array of objects
-- {"task_name": text, "params": any, "options": {as spawn_task}}. Tasks
-- without an idempotency key are inserted by one set-based statement; tasks
-- with one go through spawn_task (a taken key hands back its task, created =
-- false). One row per element, in array order; one NOTIFY at most.
create or replace function absurd.spawn_tasks(p_queue_name text, p_tasks jsonb)
returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_now timestamptz := absurd.current_time();
  v_item jsonb;
  v_opts jsonb;
  o record;
  v_i integer := 0;
  v_keyed record;
  v_due boolean := false;
  v_out_task uuid[] := '{}';
  v_out_run uuid[] := '{}';
  v_out_attempt integer[] := '{}';
  v_out_created boolean[] := '{}';
  a_task uuid[] := '{}';
  a_name text[] := '{}';
  a_params jsonb[] := '{}';
  a_headers jsonb[] := '{}';
  a_retry jsonb[] := '{}';
  a_max integer[] := '{}';
  a_cancel jsonb[] := '{}';
  a_run uuid[] := '{}';
  a_priority integer[] := '{}';
  a_available timestamptz[] := '{}';
  a_flow text[] := '{}';
  v_inserted integer;
begin
  perform absurd._require_queue(q);
  if p_tasks is null or jsonb_typeof(p_tasks) <> 'array' then
    perform absurd._raise('AB015', format(
      'tasks must be a JSON array of {"task_name", "params", "options"} objects, not %s',
      coalesce(jsonb_typeof(p_tasks), 'NULL')));
  end if;
  for v_item in select value from jsonb_array_elements(p_tasks) loop
    v_i := v_i + 1;
    if jsonb_typeof(v_item) <> 'object' then
      perform absurd._raise('AB015', format('tasks[%s] must be an object, not %s',
        v_i - 1, jsonb_typeof(v_item)));
    end if;
    perform absurd._require_text(v_item ->> 'task_name', format('tasks[%s].task_name', v_i - 1));
    v_opts := absurd._require_object(
      coalesce(nullif(v_item -> 'options', 'null'::jsonb), '{}'::jsonb),
      format('tasks[%s].options', v_i - 1));
    if nullif(v_opts -> 'idempotency_key', 'null'::jsonb) is not null
       or nullif(v_opts -> 'debounce', 'null'::jsonb) is not null then
      select * into v_keyed
      from absurd.spawn_task(q, v_item ->> 'task_name', v_item -> 'params', v_opts) s;
      v_out_task := v_out_task || v_keyed.task_id;
      v_out_run := v_out_run || v_keyed.run_id;
      v_out_attempt := v_out_attempt || v_keyed.attempt;
      v_out_created := v_out_created || v_keyed.created;
      continue;
    end if;
    o := absurd._spawn_options(v_opts, v_now);
    a_task := a_task || absurd.portable_uuidv7();
    a_run := a_run || absurd.portable_uuidv7();
    a_name := a_name || (v_item ->> 'task_name');
    a_params := a_params || (v_item -> 'params');
    a_headers := a_headers || o.headers;
    a_retry := a_retry || o.retry_strategy;
    a_max := a_max || o.max_attempts;
    a_cancel := a_cancel || o.cancellation;
    a_priority := a_priority || o.priority;
    a_available := a_available || o.available_at;
    a_flow := a_flow || o.flow_key;
    v_due := v_due or o.available_at <= v_now;
    v_out_task := v_out_task || a_task[cardinality(a_task)];
    v_out_run := v_out_run || a_run[cardinality(a_run)];
    v_out_attempt := v_out_attempt || 1;
    v_out_created := v_out_created || true;
  end loop;
  if cardinality(a_task) > 0 then
    execute absurd._sql('spawn.many', q) into v_inserted
      using a_task, a_name, a_params, a_headers, a_retry, a_max, a_cancel, v_now, a_run,
            a_priority, a_available, a_flow;
    if exists (select 1 from unnest(a_flow) k where k is not null) then
      perform absurd._keyed(q);
    end if;
    if v_due then
      perform absurd._notify(q, 'spawn');
    end if;
  end if;
  return query
    select u.t, u.r, u.a, u.c
    from unnest(v_out_task, v_out_run, v_out_attempt, v_out_created) with ordinality
      as u(t, r, a, c, n)
    order by u.n;
end;
$$;

-- Cancels one task: locks its live runs (by run_id) then the task, like every
-- other writer. Returns false when the task does not exist.
create or replace function absurd._cancel_task(p_queue_name text, p_task_id uuid, p_now timestamptz)
returns boolean
language plpgsql
set enable_seqscan = off
as $$
declare
  v_state text;
begin
  execute absurd._sql('cancel.lock_runs', p_queue_name) using p_task_id;
  execute absurd._sql('task.lock', p_queue_name) into v_state using p_task_id;
  if v_state is null then
    return false;
  end if;
  if v_state not in ('completed', 'failed', 'cancelled') then
    execute absurd._sql('cancel.apply', p_queue_name) using p_task_id, p_now;
  end if;
  return true;
end;
$$;

-- -----------------------------------------------------------------------------
-- Flow control (docs/engine.md "Flow control")
--
-- A run holds a slot of its queue (max_running) and of its flow key
-- (max_running_per_key, or the key's override in absurd.flow_limits) while it is
-- running. Nothing counts slots in a row of its own: a claim counts the key's
-- running runs through r_<q>_fki, up to the limit (a bounded index probe), after
-- taking the key's advisory lock, so two claims never spend one slot. A run whose
-- key is full is parked (available_at 'infinity', out of the claim range). Every
-- statement that moves a keyed run out of 'running' is followed, in the same
-- transaction, by absurd._flow_release: under the same lock it wakes as many
-- parked runs as the key has free slots.
-- -----------------------------------------------------------------------------

-- A spawn option flow_key: null, or a non-empty string of at most 512 bytes (AB050).
create or replace function absurd._flow_key(p_value jsonb)
returns text
language plpgsql
immutable
as $$
begin
  if p_value is null or jsonb_typeof(p_value) = 'null' then
    return null;
  end if;
  if jsonb_typeof(p_value) <> 'string' or btrim(p_value #>> '{}') = ''
     or octet_length(p_value #>> '{}') > 512 then
    perform absurd._raise('AB050', format(
      'flow_key must be a non-empty string of at most 512 bytes, got %s',
      left(p_value::text, 100)));
  end if;
  return p_value #>> '{}';
end;
$$;

-- A limit of the flow policy: null, or an integer >= 1 (AB051).
create or replace function absurd._flow_limit(p_policy jsonb, p_key text)
returns integer
language plpgsql
immutable
as $$
declare
  v integer;
begin
  begin
    v := absurd._opt_int(p_policy, p_key);
  exception when sqlstate 'AB015' then
    perform absurd._raise('AB051', format('%s must be an integer >= 1, got %s',
      p_key, left((p_policy -> p_key)::text, 100)));
  end;
  if v < 1 then
    perform absurd._raise('AB051', format('%s must be an integer >= 1, got %s', p_key, v));
  end if;
  return v;
end;
$$;

-- The fields of the flow contract this engine does not enforce are refused (AB052)
-- rather than stored and ignored: none today (weight is enforced since 0.6.1). Also
-- checks flow_hold.
create or replace function absurd._flow_unsupported(p_policy jsonb)
returns void
language plpgsql
immutable
as $$
begin
  if p_policy ? 'flow_hold' and jsonb_typeof(p_policy -> 'flow_hold') <> 'null'
     and (p_policy ->> 'flow_hold') not in ('running', 'lifetime') then
    perform absurd._raise('AB051', format('flow_hold must be "running" or "lifetime", got %s',
      left((p_policy -> 'flow_hold')::text, 100)));
  end if;
end;
$$;

-- The limits of a key: its override's, else the queue's per-key defaults (one lookup).
create or replace function absurd._flow_key_limits(
  p_queue_name text, p_key text, p_max_running integer, p_rate jsonb,
  out max_running integer, out rate_limit jsonb)
language sql
stable
as $$
  select coalesce(l.max_running, p_max_running), coalesce(l.rate_limit, p_rate)
  from (select 1) one
  left join absurd.flow_limits l on l.queue_name = p_queue_name and l.flow_key = p_key;
$$;

-- The running limit of a key: its override, else the queue's per-key default.
create or replace function absurd._flow_key_limit(p_queue_name text, p_key text, p_default integer)
returns integer
language sql
stable
as $$
  select (absurd._flow_key_limits(p_queue_name, p_key, p_default, null)).max_running;
$$;

-- A rate limit of a policy or override: null, or an object {limit, period_seconds,
-- burst} with limit an integer >= 1, period_seconds a number > 0 (at most a year)
-- and burst an integer in 0..limit (default 0); returned normalized. AB051 else.
create or replace function absurd._flow_rate(p_policy jsonb, p_field text)
returns jsonb
language plpgsql
immutable
as $$
declare
  v jsonb := p_policy -> p_field;
  v_key text;
  v_limit integer;
  v_burst integer;
  v_period double precision;
begin
  if v is null or jsonb_typeof(v) = 'null' then
    return null;
  end if;
  if jsonb_typeof(v) <> 'object' then
    perform absurd._raise('AB051', format(
      '%s must be an object {"limit", "period_seconds", "burst"}, got %s', p_field, left(v::text, 100)));
  end if;
  for v_key in select jsonb_object_keys(v) loop
    if v_key not in ('limit', 'period_seconds', 'burst') then
      perform absurd._raise('AB051', format('Unsupported field "%s" in %s', left(v_key, 100), p_field));
    end if;
  end loop;
  begin
    v_limit := absurd._opt_int(v, 'limit');
    v_burst := coalesce(absurd._opt_int(v, 'burst'), 0);
    v_period := absurd._opt_seconds(v, 'period_seconds');
  exception when sqlstate 'AB015' then
    perform absurd._raise('AB051', format('%s is malformed: %s', p_field, sqlerrm));
  end;
  if v_limit is null or v_limit < 1 then
    perform absurd._raise('AB051', format('%s.limit must be an integer >= 1, got %s', p_field,
      left(coalesce(v -> 'limit', 'null')::text, 100)));
  end if;
  if v_period is null or v_period <= 0 or v_period > 31622400 then
    perform absurd._raise('AB051', format(
      '%s.period_seconds must be a number of seconds > 0 and at most a year, got %s', p_field,
      left(coalesce(v -> 'period_seconds', 'null')::text, 100)));
  end if;
  if v_burst < 0 or v_burst > v_limit then
    perform absurd._raise('AB051', format('%s.burst must be an integer from 0 to limit (%s), got %s',
      p_field, v_limit, v_burst));
  end if;
  return jsonb_build_object('limit', v_limit, 'period_seconds', v_period, 'burst', v_burst);
end;
$$;

-- The queue-wide rate window's index, made when the queue first gets a rate limit
-- (so that queues without one do not index every start).
create or replace function absurd._flow_rate_index(p_queue_name text)
returns void
language plpgsql
as $$
begin
  execute format($ix$create index if not exists %I on absurd.%I (started_at)
    where started_at is not null$ix$, 'r_' || p_queue_name || '_rsi', 'r_' || p_queue_name);
end;
$$;

-- How many more runs may start now under a rate limit (p_key null: the queue's),
-- and when the window frees when none may. The window, with L = limit, B = burst
-- and P = period_seconds: at most L + B starts in any P seconds and, when B > 0,
-- at most 2L in any 2P seconds (a burst borrows from the next period). Counted
-- from the runs' start times (started_at: a run's latest claim), newest first,
-- reading at most max(L + B, 2L) index entries.
create or replace function absurd._flow_rate_room(
  p_queue_name text, p_key text, p_rate jsonb, p_now timestamptz,
  out room integer, out started integer, out allowed integer, out free_at timestamptz)
language plpgsql
set enable_seqscan = off
as $$
declare
  v_limit integer := (p_rate ->> 'limit')::integer;
  v_burst integer := coalesce((p_rate ->> 'burst')::integer, 0);
  v_period double precision := (p_rate ->> 'period_seconds')::double precision;
  v_n1 integer := v_limit + v_burst;
  v_n2 integer := case when v_burst > 0 then 2 * v_limit end;
  v_starts timestamptz[];
  v_c1 integer;
  v_c2 integer;
begin
  -- The starts in the last period (or two, with a burst), newest first.
  execute absurd._sql(case when p_key is null then 'flow.rate_queue' else 'flow.rate_key' end,
    p_queue_name) into v_starts
    using p_key, p_now - make_interval(secs => v_period * case when v_n2 is null then 1 else 2 end),
          greatest(v_n1, coalesce(v_n2, 0));
  v_c2 := cardinality(v_starts);
  select count(*) into v_c1 from unnest(v_starts) u
  where u > p_now - make_interval(secs => v_period);
  started := v_c1;
  allowed := v_n1;
  room := least(v_n1 - v_c1, coalesce(v_n2 - v_c2, v_n1 - v_c1));
  if room <= 0 then
    -- Free when the oldest start that fills a window leaves it.
    room := 0;
    free_at := greatest(
      case when v_c1 >= v_n1 then v_starts[v_n1] + make_interval(secs => v_period) end,
      case when v_c2 >= v_n2 then v_starts[v_n2] + make_interval(secs => 2 * v_period) end);
  end if;
end;
$$;

-- Whether a run of key p_key (null: none) may start now under the queue's rate
-- and its key's: free_at (null when it may) is when the binding window frees.
create or replace function absurd._flow_rate_check(
  p_queue_name text, p_key text, p_rate jsonb, p_rate_per_key jsonb, p_now timestamptz,
  out free_at timestamptz, out started integer, out allowed integer, out per_key boolean)
language plpgsql
as $$
declare
  v_rate jsonb;
  v record;
begin
  if p_rate is not null then
    v := absurd._flow_rate_room(p_queue_name, null, p_rate, p_now);
    if v.room <= 0 then
      free_at := v.free_at; started := v.started; allowed := v.allowed; per_key := false;
      return;
    end if;
  end if;
  if p_key is not null then
    v_rate := (absurd._flow_key_limits(p_queue_name, p_key, null, p_rate_per_key)).rate_limit;
    if v_rate is not null then
      v := absurd._flow_rate_room(p_queue_name, p_key, v_rate, p_now);
      if v.room <= 0 then
        free_at := v.free_at; started := v.started; allowed := v.allowed; per_key := true;
      end if;
    end if;
  end if;
end;
$$;

-- Whether any limit applies to the queue (absurd.queues.flow_enabled).
create or replace function absurd._flow_refresh(p_queue_name text)
returns boolean
language sql
as $$
  update absurd.queues q set flow_enabled = q.max_running is not null
    or q.max_running_per_key is not null or q.rate_limit is not null
    or q.rate_limit_per_key is not null
    or exists (select 1 from absurd.flow_limits l
               where l.queue_name = q.queue_name
                 and (l.max_running is not null or l.rate_limit is not null))
  where q.queue_name = p_queue_name
  returning flow_enabled;
$$;

-- After keyed runs left 'running' (or a key's limit changed): for each key, in
-- order, under the key's lock, wakes as many parked runs as it has free slots
-- (all of them when the key has no limit any more). Idempotent: calling it for a
-- key that released nothing wakes nothing that should stay parked. NOTIFY when
-- it woke a run.
create or replace function absurd._flow_release(p_queue_name text, p_keys text[], p_now timestamptz)
returns integer
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_per_key integer;
  v_enabled boolean;
  v_lifetime boolean;
  v_key text;
  v_limit integer;
  v_woken integer;
  v_total integer := 0;
begin
  select qu.max_running_per_key, qu.flow_enabled, qu.flow_hold = 'lifetime'
    into v_per_key, v_enabled, v_lifetime
  from absurd.queues qu where qu.queue_name = q;
  if not coalesce(v_enabled, false) then
    return 0;  -- no limit, no parked run (disabling flow control wakes them all)
  end if;
  for v_key in select distinct k from unnest(p_keys) k where k is not null order by 1 loop
    perform pg_advisory_xact_lock(hashtext(q), hashtext(v_key));
    v_limit := absurd._flow_key_limit(q, v_key, v_per_key);
    execute absurd._cached('flow.release', q, quote_nullable(v_key), quote_nullable(v_limit),
      quote_nullable(p_now), quote_nullable(v_lifetime)) into v_woken;
    v_total := v_total + v_woken;
  end loop;
  if v_total > 0 then
    perform absurd._notify(q, 'flow');
  end if;
  return v_total;
end;
$$;

-- Fairness between keys (docs/engine.md "Fairness between keys"): the due runs of
-- a band that a claim on a queue with keyed runs takes first, locked (FOR UPDATE
-- SKIP LOCKED), in turn by key. The groups with waiting runs (each key, and '' for
-- the runs without one, first) are visited in order and around again, one statement
-- per turn (claim.fair_turn: a probe of r_<q>_fwi for the next group, and up to its
-- weight of its oldest due runs; a key whose runs are parked or not due yet gives
-- none). Where the last turn ended (its group, how many runs it took, its weight)
-- is the session's, in the setting absurd.fair_cursor ({queue: {"k", "u", "w"}}):
-- the session's next claim goes on from there, finishing a weighted turn first
-- (claim.fair_key). No row is written (a cursor row would be updated by every
-- claim). A session without a cursor starts at the first group. It stops when the
-- batch is full, after a whole cycle that took nothing, or after 2 x qty + 8
-- statements (128 at most); the caller claims what is left oldest first.
create or replace function absurd._fair_pick(
  p_queue_name text, p_priority integer, p_now timestamptz, p_qty integer)
returns uuid[]
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_all jsonb := coalesce(nullif(current_setting('absurd.fair_cursor', true), ''), '{}')::jsonb;
  v_key text := coalesce(v_all -> q ->> 'k', '');  -- the position: a group
  v_used integer := coalesce((v_all -> q ->> 'u')::integer, 0);  -- taken in its turn
  v_weight integer := coalesce((v_all -> q ->> 'w')::integer, 0);  -- its turn's size
  v_first text;  -- the first group visited: back there, a cycle is done
  v_turn record;
  v_got uuid[];
  v_ids uuid[] := '{}';
  v_left integer := p_qty;
  v_want integer;
  v_probes integer := 0;
  v_max integer := least(2 * p_qty + 8, 128);
  v_took integer := 0;  -- runs taken in the current cycle
begin
  if v_used < v_weight then
    v_want := least(v_weight - v_used, v_left);
    execute absurd._cached('claim.fair_key', q, quote_nullable(p_priority),
      quote_nullable(v_key), quote_nullable(p_now), quote_nullable(v_want),
      quote_nullable(v_ids)) into v_got;
    v_probes := 1;
    v_ids := v_got;
    v_left := v_left - cardinality(v_got);
    -- Fewer than asked: nothing more of it is due (or other claims hold it).
    v_used := case when cardinality(v_got) < v_want then v_weight
                   else v_used + cardinality(v_got) end;
  end if;
  while v_left > 0 and v_probes < v_max loop
    execute absurd._cached('claim.fair_turn', q, quote_nullable(p_priority),
      quote_nullable(v_key), quote_nullable(p_now), quote_nullable(v_left),
      quote_nullable(v_ids), quote_nullable(q)) into v_turn;
    v_probes := v_probes + 1;
    exit when v_turn.grp is null;  -- no waiting run in the band
    if v_turn.grp = v_first then
      exit when v_took = 0;  -- a whole cycle took nothing
      v_took := 0;
    end if;
    v_first := coalesce(v_first, v_turn.grp);
    v_key := v_turn.grp;
    v_weight := v_turn.weight;
    v_want := least(v_weight, v_left);
    v_ids := v_ids || v_turn.ids;
    v_left := v_left - cardinality(v_turn.ids);
    v_took := v_took + cardinality(v_turn.ids);
    v_used := case when cardinality(v_turn.ids) < v_want then v_weight
                   else cardinality(v_turn.ids) end;
  end loop;
  perform set_config('absurd.fair_cursor', jsonb_set(v_all, array[q],
    jsonb_build_object('k', v_key, 'u', v_used, 'w', v_weight))::text, false);
  return v_ids;
end;
$$;

-- Claims for a queue with flow control (claim_task after its sweep). Candidates
-- of a band are locked (SKIP LOCKED) and admitted one by one: the queue's limit
-- caps the batch under the queue's lock (the one serialized step, taken only when
-- max_running is set); a keyed candidate takes its key's lock without waiting (a
-- key another transaction holds is passed over, not waited for), counts the key's
-- running runs, and is claimed or parked.
-- A claimed run, as claim_task returns it (the row of claim.one).
do $$
begin
  if to_regtype('absurd._claimed_run') is null then
    create type absurd._claimed_run as (run_id uuid, task_id uuid, attempt integer,
      task_name text, params jsonb, retry_strategy jsonb, max_attempts integer, headers jsonb,
      wake_event text, event_payload jsonb);
  end if;
end;
$$;

drop function if exists absurd._claim_flow(text, text, timestamptz, timestamptz, integer,
  integer, integer);
drop function if exists absurd._claim_flow(text, text, timestamptz, timestamptz, integer,
  integer, integer, jsonb, jsonb);
drop function if exists absurd._claim_flow(text, text, timestamptz, timestamptz, integer,
  integer, integer, jsonb, jsonb, boolean);
create or replace function absurd._claim_flow(
  p_queue_name text, p_worker text, p_now timestamptz, p_expires timestamptz, p_qty integer,
  p_max_running integer, p_per_key integer, p_rate jsonb, p_rate_per_key jsonb,
  p_lifetime boolean, p_keyed boolean)
returns setof absurd._claimed_run
language plpgsql
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_left integer := p_qty;
  v_below bigint := 2147483648;
  v_priority integer;
  v_cand record;
  v_row absurd._claimed_run;
  v_pass uuid[] := '{}';
  v_limit integer;
  v_running integer;
  v_seen integer;
  v_rounds integer;
  v_rate jsonb;
  v_room record;
  v_queue_free integer;  -- lifetime hold: the queue's free slots for tasks not holding one
  v_holds boolean;
  v_full text[] := '{}';  -- the keys found full
  v_key text;
  v_ids uuid[] := '{}';  -- the keys' turns (absurd._fair_pick), admitted first
  v_check integer;  -- the key's running limit, for claim.one to count
begin
  -- Each count must see every claim committed before its lock was granted: a
  -- statement snapshot, taken after the lock (READ COMMITTED).
  if current_setting('transaction_isolation') <> 'read committed' then
    perform absurd._raise('AB053', format(
      'Claims on queue "%s" (flow control) need READ COMMITTED isolation, not %s', q,
      current_setting('transaction_isolation')));
  end if;
  if p_max_running is not null or p_rate is not null then
    perform pg_advisory_xact_lock(hashtextextended(q, 0));
    if p_max_running is not null and p_lifetime then
      -- Tasks that hold a slot (a retry, a task back from a sleep) need no new one.
      execute absurd._sql('flow.queue_held', q) into v_running using p_max_running;
      v_queue_free := p_max_running - v_running;
    elsif p_max_running is not null then
      execute absurd._sql('flow.queue_running', q) into v_running using p_max_running;
      v_left := least(v_left, p_max_running - v_running);
    end if;
    if p_rate is not null then
      -- The queue's rate caps the batch (nothing is parked: every due run waits).
      v_room := absurd._flow_rate_room(q, null, p_rate, p_now);
      v_left := least(v_left, v_room.room);
    end if;
    if v_left <= 0 then
      return;
    end if;
  end if;
  loop
    if v_queue_free <= 0 then
      v_priority := null;  -- one pass over the tasks that hold a slot, all bands at once
    else
      execute absurd._cached('claim.next_band', q, quote_nullable(v_below)) into v_priority;
      exit when v_priority is null;
    end if;
    v_rounds := 0;
    if p_keyed and v_priority is not null then
      v_ids := absurd._fair_pick(q, v_priority, p_now, v_left);
    end if;
    loop
      v_seen := 0;
      for v_cand in execute case when v_queue_free <= 0
          then absurd._cached('claim.held_candidates', q, quote_nullable(p_now),
            quote_nullable(v_left), quote_nullable(v_pass), quote_nullable(q),
            quote_nullable(p_per_key), quote_nullable(p_rate_per_key))
          when v_ids <> '{}' then absurd._cached('claim.flow_ids', q,
            quote_nullable(v_ids), quote_nullable(p_now), quote_nullable(cardinality(v_ids)),
            quote_nullable(v_pass), quote_nullable(q), quote_nullable(p_per_key),
            quote_nullable(p_rate_per_key))
          else absurd._cached('claim.flow_candidates', q,
            quote_nullable(v_priority), quote_nullable(p_now), quote_nullable(v_left),
            quote_nullable(v_pass), quote_nullable(q), quote_nullable(p_per_key),
            quote_nullable(p_rate_per_key)) end loop
        v_seen := v_seen + 1;
        v_check := null;
        v_holds := p_lifetime and v_cand.holds;  -- a lifetime slot taken by an earlier run
        if v_cand.late and v_holds then
          -- Past its deadline and holding a lifetime slot: the sweep cancels it and
          -- releases its key (with the keys locked in order first).
          v_pass := v_pass || v_cand.run_id;
          continue;
        elsif v_cand.late then
          -- Past its cancellation deadline: cancelled, not claimed. Not running,
          -- it held no slot.
          perform absurd._cancel_task(q, v_cand.task_id, p_now);
          continue;
        end if;
        if v_queue_free <= 0 and not v_holds then
          v_pass := v_pass || v_cand.run_id;  -- the queue is full (lifetime hold)
          continue;
        end if;
        if v_cand.flow_key is not null then
          v_limit := v_cand.key_limit;
          v_rate := v_cand.key_rate;
          if v_limit is not null or v_rate is not null then
            if not pg_try_advisory_xact_lock(hashtext(q), hashtext(v_cand.flow_key)) then
              v_pass := v_pass || v_cand.run_id;
              continue;
            end if;
          end if;
          if v_limit is not null and not v_holds and not p_lifetime and v_rate is null then
            v_check := v_limit;  -- counted by claim.one itself, below
          elsif v_limit is not null and not v_holds then
            if p_lifetime then
              execute absurd._sql('flow.key_held', q) into v_running
                using v_cand.flow_key, v_limit;
            else
              execute absurd._cached('flow.key_running', q, quote_nullable(v_cand.flow_key),
                quote_nullable(v_limit)) into v_running;
            end if;
            if v_running >= v_limit then
              execute absurd._sql('flow.park', q)
                using v_cand.run_id, v_cand.task_id, 'infinity'::timestamptz, null::text;
              v_full := v_full || v_cand.flow_key;
              continue;
            end if;
          end if;
          if v_rate is not null then
            v_room := absurd._flow_rate_room(q, v_cand.flow_key, v_rate, p_now);
            if v_room.room <= 0 then
              -- Over the key's rate: parked until its window frees (a finite time).
              execute absurd._sql('flow.park', q)
                using v_cand.run_id, v_cand.task_id, v_room.free_at, 'rate_key'::text;
              continue;
            end if;
          end if;
        end if;
        execute absurd._cached('claim.one', q, quote_nullable(v_cand.run_id),
          quote_nullable(p_now), quote_nullable(p_worker), quote_nullable(p_expires),
          quote_nullable(p_lifetime), quote_nullable(v_check),
          quote_nullable(v_cand.flow_key)) into v_row;
        if v_row.run_id is null then
          -- Its key was full (v_check): parked until a release wakes it.
          execute absurd._sql('flow.park', q)
            using v_cand.run_id, v_cand.task_id, 'infinity'::timestamptz, null::text;
          v_full := v_full || v_cand.flow_key;
          continue;
        end if;
        return next v_row;
        if not v_holds then
          v_queue_free := v_queue_free - 1;
        end if;
        v_left := v_left - 1;
        exit when v_left <= 0;
      end loop;
      if v_ids <> '{}' then
        v_ids := '{}';  -- the keys' turns are admitted: the rest oldest first
        exit when v_left <= 0;
        continue;
      end if;
      exit when v_seen = 0 or v_left <= 0 or v_rounds >= 8;
      v_rounds := v_rounds + 1;
    end loop;
    exit when v_left <= 0 or v_priority is null;
    v_below := v_priority;
  end loop;
  -- The keys found full (their locks still held): their other due runs are parked
  -- too, a batch at a time, so a full key's backlog leaves the head of the claim
  -- index in a few claims instead of one run per claim.
  foreach v_key in array v_full loop
    execute absurd._sql('flow.park_key', q) using v_key, p_now, 1000;
  end loop;
end;
$$;

-- After a limit changed: recomputes flow_enabled, then wakes the parked runs of
-- p_keys (null: of every key) that may now run. Claims park again any that may not.
create or replace function absurd._flow_wake(p_queue_name text, p_keys text[])
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  v_woken integer;
begin
  if absurd._flow_refresh(p_queue_name) and p_keys is not null then
    perform absurd._flow_release(p_queue_name, p_keys, absurd.current_time());
    return;
  end if;
  execute absurd._sql('flow.unpark_all', p_queue_name) into v_woken using absurd.current_time();
  if v_woken > 0 then
    perform absurd._notify(p_queue_name, 'flow');
  end if;
end;
$$;

-- Per-key overrides: p_limits {"max_running": n}; null removes the key's
-- override. Raising or removing a limit wakes the key's parked runs at once.
create or replace function absurd.set_flow_limit(p_queue_name text, p_flow_key text, p_limits jsonb)
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_key text;
  v_max integer;
  v_rate jsonb;
  v_weight integer;
  v_field text;
begin
  perform absurd._require_queue(q);
  v_key := absurd._flow_key(to_jsonb(p_flow_key));
  if v_key is null then
    perform absurd._raise('AB050', 'flow_key must be a non-empty string of at most 512 bytes, got null');
  end if;
  perform 1 from absurd.queues where queue_name = q for update;
  if p_limits is null or jsonb_typeof(p_limits) = 'null' then
    delete from absurd.flow_limits where queue_name = q and flow_key = v_key;
  else
    if jsonb_typeof(p_limits) <> 'object' then
      perform absurd._raise('AB051', 'Flow limits must be a JSON object or null');
    end if;
    perform absurd._flow_unsupported(p_limits);
    for v_field in select jsonb_object_keys(p_limits) loop
      if v_field not in ('max_running', 'rate_limit', 'weight') then
        perform absurd._raise('AB051', format('Unsupported flow limit "%s"', left(v_field, 100)));
      end if;
    end loop;
    v_max := absurd._flow_limit(p_limits, 'max_running');
    v_rate := absurd._flow_rate(p_limits, 'rate_limit');
    if jsonb_typeof(p_limits -> 'weight') not in ('number', 'null') then
      perform absurd._raise('AB051', format('weight must be an integer from 1 to 1000, got %s',
        left((p_limits -> 'weight')::text, 100)));
    end if;
    v_weight := absurd._flow_limit(p_limits, 'weight');
    if v_weight > 1000 then
      perform absurd._raise('AB051', format('weight must be an integer from 1 to 1000, got %s',
        v_weight));
    end if;
    insert into absurd.flow_limits (queue_name, flow_key, max_running, limits, rate_limit, weight)
    values (q, v_key, v_max, absurd._strip_top_nulls(p_limits
              || coalesce(jsonb_build_object('rate_limit', v_rate), '{}')), v_rate, v_weight)
    on conflict (queue_name, flow_key) do update
      set max_running = excluded.max_running, limits = excluded.limits,
          rate_limit = excluded.rate_limit, weight = excluded.weight,
          updated_at = clock_timestamp();
  end if;
  perform absurd._flow_wake(q, array[v_key]);
end;
$$;

create or replace function absurd.get_flow_limits(p_queue_name text)
returns table (flow_key text, limits jsonb, updated_at timestamptz)
language plpgsql
stable
as $$
begin
  perform absurd._require_queue(p_queue_name);
  return query
    select l.flow_key, l.limits, l.updated_at from absurd.flow_limits l
    where l.queue_name = p_queue_name order by l.flow_key;
end;
$$;

-- Why a task is not running (or that it is, or has ended): one row, a reason code
-- and a message, plus the facts behind it (docs/engine.md "Why a task waits").
-- Reasons: claimable, running, delayed, sleeping, waiting_event, waiting_promise,
-- waiting_key_slot, waiting_queue_slot, rate_limited, debounced, completed,
-- failed, cancelled. Reads only; an unknown task is AB009.
create or replace function absurd.explain_task(p_queue_name text, p_task_id uuid)
returns table (reason text, message text, task_state text, run_id uuid, attempt integer,
               flow_key text, running integer, "limit" integer, until timestamptz,
               event_name text)
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_now timestamptz := absurd.current_time();
  t record;
  r record;
  qu record;
  v_limit integer;
  v_running integer;
  v_rate record;
  v_until timestamptz;
  v_event text;
begin
  perform absurd._require_queue(q);
  select qu2.max_running, qu2.max_running_per_key, qu2.flow_enabled, qu2.rate_limit,
         qu2.rate_limit_per_key, qu2.flow_hold = 'lifetime' as lifetime
    into qu from absurd.queues qu2 where qu2.queue_name = q;
  execute format($f$select task_id, state, flow_key, first_started_at, last_attempt_run,
      finished_at, debounce_key, debounce_deadline, flow_slot is true as holds
      from absurd.%I where task_id = $1$f$, 't_' || q)
    into t using p_task_id;
  if t.task_id is null then
    perform absurd._raise('AB009', format('Task "%s" not found in queue "%s"',
      absurd._show(p_task_id), q));
  end if;
  execute format($f$select run_id, attempt, state, available_at, claimed_by, claim_expires_at,
      wake_event, flow_wait, started_at from absurd.%I where run_id = $1$f$, 'r_' || q)
    into r using t.last_attempt_run;
  task_state := t.state;
  run_id := r.run_id;
  attempt := r.attempt;
  flow_key := t.flow_key;
  if t.state in ('completed', 'failed', 'cancelled') then
    reason := t.state;
    until := t.finished_at;
    message := format('%s at %s', initcap(t.state), t.finished_at);
    return next;
    return;
  end if;
  if r.state = 'running' then
    reason := 'running';
    until := r.claim_expires_at;
    message := format('Running (attempt %s) on worker %s', r.attempt, coalesce(r.claimed_by, '?'))
      || coalesce(format(', lease until %s', r.claim_expires_at), '');
    return next;
    return;
  end if;
  if r.state = 'sleeping' and r.wake_event is not null then
    v_until := nullif(r.available_at, 'infinity');
    event_name := r.wake_event;
    until := v_until;
    if r.wake_event like '$promise:%' then
      reason := 'waiting_promise';
      message := format('Waiting for promise %s', substr(r.wake_event, 10));
    else
      reason := 'waiting_event';
      message := format('Waiting for event "%s"', r.wake_event);
    end if;
    message := message || coalesce(format(' until %s', v_until), '');
    return next;
    return;
  end if;
  if r.available_at > v_now and r.available_at < 'infinity' then
    until := r.available_at;
    if t.debounce_key is not null and t.first_started_at is null then
      reason := 'debounced';
      message := format('Debounced (key "%s") until %s', t.debounce_key, r.available_at)
        || coalesce(format(', at the latest %s', t.debounce_deadline), '');
    elsif r.flow_wait is not null then
      reason := 'rate_limited';
      message := format('Rate-limited (%s) until %s',
        case r.flow_wait when 'rate_key' then format('key "%s"', t.flow_key) else 'queue' end,
        r.available_at);
    elsif r.state = 'sleeping' and r.started_at is not null then
      reason := 'sleeping';
      message := format('Sleeping until %s', r.available_at);
    else
      reason := 'delayed';
      message := case when r.attempt > 1
        then format('Retry (attempt %s) delayed until %s', r.attempt, r.available_at)
        else format('Delayed until %s', r.available_at) end;
    end if;
    return next;
    return;
  end if;
  -- Parked (waiting for a release), or due now: claimable unless a limit binds (the
  -- next claim parks it, or passes it by).
  -- (With the lifetime hold, slots are live tasks that took one; a task that holds
  -- one needs no other.)
  if qu.max_running is not null and r.available_at < 'infinity'
     and not (qu.lifetime and t.holds) then
    execute absurd._sql(case when qu.lifetime then 'flow.queue_held' else 'flow.queue_running' end,
      q) into v_running using qu.max_running;
    if v_running >= qu.max_running then
      reason := 'waiting_queue_slot';
      running := v_running;
      "limit" := qu.max_running;
      message := format('Waiting for a slot of the queue (%s of %s running)', v_running,
        qu.max_running);
      return next;
      return;
    end if;
  end if;
  if t.flow_key is not null and not (qu.lifetime and t.holds) then
    v_limit := absurd._flow_key_limit(q, t.flow_key, qu.max_running_per_key);
    if v_limit is not null then
      execute absurd._sql(case when qu.lifetime then 'flow.key_held' else 'flow.key_running' end,
        q) into v_running using t.flow_key, v_limit;
      if v_running >= v_limit or r.available_at = 'infinity' then
        reason := 'waiting_key_slot';
        running := v_running;
        "limit" := v_limit;
        message := format('Waiting for a slot of key "%s" (%s of %s running)', t.flow_key,
          v_running, v_limit);
        return next;
        return;
      end if;
    end if;
  end if;
  v_rate := absurd._flow_rate_check(q, t.flow_key, qu.rate_limit, qu.rate_limit_per_key, v_now);
  if v_rate.free_at is not null then
    reason := 'rate_limited';
    until := v_rate.free_at;
    running := v_rate.started;
    "limit" := v_rate.allowed;
    message := format('Rate-limited (%s: %s starts of %s allowed) until %s',
      case when v_rate.per_key then format('key "%s"', t.flow_key) else 'queue' end,
      v_rate.started, v_rate.allowed, v_rate.free_at);
    return next;
    return;
  end if;
  reason := 'claimable';
  until := r.available_at;
  message := 'Claimable now: the next claim of the queue may take it';
  return next;
end;
$$;

-- Bounded maintenance done by claim: at most p_limit cancellation policies and
-- p_limit expired leases, each found through its own partial index.
drop function if exists absurd._sweep(text, timestamptz, integer);
create or replace function absurd._sweep(
  p_queue_name text, p_now timestamptz, p_limit integer, p_flow boolean)
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  v_task uuid;
  v_run record;
  v_keys text[];
  v_key text;
begin
  if p_flow then
    -- Releases below lock their keys; lock them all first, in order, so two
    -- sweeps (or a sweep and a batch of completions) never wait on each other.
    execute absurd._cached('flow.sweep_keys', p_queue_name, quote_nullable(p_now),
      quote_nullable(p_limit)) into v_keys;
    foreach v_key in array v_keys loop
      perform pg_advisory_xact_lock(hashtext(p_queue_name), hashtext(v_key));
    end loop;
  end if;
  for v_task in execute absurd._cached('sweep.cancellations', p_queue_name,
      quote_nullable(p_now), quote_nullable(p_limit)) loop
    perform absurd._cancel_task(p_queue_name, v_task, p_now);
  end loop;
  for v_run in execute absurd._cached('sweep.leases', p_queue_name,
      quote_nullable(p_now), quote_nullable(p_limit)) loop
    perform absurd._fail_run(p_queue_name, v_run.run_id, jsonb_strip_nulls(jsonb_build_object(
      'name', '$ClaimTimeout',
      'message', 'worker did not finish task within claim interval',
      'workerId', v_run.claimed_by,
      'claimExpiredAt', v_run.claim_expires_at,
      'attempt', v_run.attempt)), null, p_now);
  end loop;
  if p_flow and v_keys <> '{}' then
    perform absurd._flow_release(p_queue_name, v_keys, p_now);  -- the cancelled tasks' keys
  end if;
end;
$$;

-- Claims up to p_qty runs, highest priority first, then oldest available_at.
-- Each priority band is one ordered range scan of r_<q>_cli that stops at
-- "now", so the cost does not depend on how many runs wait behind it.
create or replace function absurd.claim_task(
  p_queue_name text,
  p_worker_id text,
  p_claim_timeout integer default 30,
  p_qty integer default 1
)
returns table (
  run_id uuid,
  task_id uuid,
  attempt integer,
  task_name text,
  params jsonb,
  retry_strategy jsonb,
  max_attempts integer,
  headers jsonb,
  wake_event text,
  event_payload jsonb
)
language plpgsql
-- Generic plans, made once per session: the claim's statements are index-driven
-- in them (tests/engine/test_plans.py), and planning claim.band anew per call
-- cost about twice its execution.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_now timestamptz := absurd.current_time();
  v_timeout integer := greatest(coalesce(p_claim_timeout, 30), 0);
  v_worker text := coalesce(nullif(p_worker_id, ''), 'worker');
  v_left integer := greatest(coalesce(p_qty, 1), 1);
  v_expires timestamptz;
  v_below bigint := 2147483648;  -- bands are searched below this priority
  v_priority integer;
  v_row record;
  v_late integer;
  v_rounds integer := 0;
  v_due timestamptz;
  v_flow record;
  v_ids uuid[] := '{}';
begin
  -- absurd._require_queue, reading the queue's flow settings on the way.
  perform absurd.validate_queue_name(q);
  select qu.flow_enabled, qu.max_running, qu.max_running_per_key, qu.rate_limit,
         qu.rate_limit_per_key, qu.flow_hold, qu.has_keys into v_flow
  from absurd.queues qu where qu.queue_name = q;
  if not found then
    perform absurd._raise('AB005', format('Queue "%s" does not exist', q));
  end if;
  if v_timeout > 0 then
    v_expires := v_now + make_interval(secs => v_timeout);
  end if;
  -- Schedules fire from claims (no scheduler process): one index probe, and
  -- fire_schedules only when a schedule of the queue is due. A schedule that
  -- cannot fire must not stop the queue's claims: its error becomes a WARNING.
  -- The probe is the catalogue's "schedule.due" (EXPLAIN-tested, generic plan as
  -- here) written as static SQL: it names no per-queue table, so PL/pgSQL can keep
  -- its plan for the session; through absurd._cached it cost about 15 us per claim
  -- instead of 5 (tests/engine/test_schedules.py checks the two texts agree).
  select min(due_at) into v_due from absurd.schedules where queue_name = q and not paused;
  if v_due <= v_now then
    begin
      perform absurd.fire_schedules(q, 100);
    exception when others then
      raise warning 'absurd: firing the schedules of queue "%" failed: % (%)', q, sqlerrm, sqlstate;
    end;
  end if;
  perform absurd._sweep(q, v_now, v_left, v_flow.flow_enabled);
  if v_flow.flow_enabled then
    return query select * from absurd._claim_flow(q, v_worker, v_now, v_expires, v_left,
      v_flow.max_running, v_flow.max_running_per_key, v_flow.rate_limit,
      v_flow.rate_limit_per_key, v_flow.flow_hold = 'lifetime', v_flow.has_keys);
    return;
  end if;
  loop
    execute absurd._cached('claim.next_band', q, quote_nullable(v_below)) into v_priority;
    exit when v_priority is null;
    if v_flow.has_keys then
      -- Keys in turn first (absurd._fair_pick); the rest of the batch oldest first.
      v_ids := absurd._fair_pick(q, v_priority, v_now, v_left);
    end if;
    loop
      v_late := 0;
      for v_row in execute case when v_ids <> '{}'
          then absurd._cached('claim.ids', q, quote_nullable(v_ids),
            quote_nullable(v_now), quote_nullable(cardinality(v_ids)), quote_nullable(v_worker),
            quote_nullable(v_expires))
          else absurd._cached('claim.band', q, quote_nullable(v_priority),
          quote_nullable(v_now), quote_nullable(v_left), quote_nullable(v_worker),
          quote_nullable(v_expires)) end loop
        if v_row.late then
          v_late := v_late + 1;  -- cancelled by its policy, not claimed
          continue;
        end if;
        run_id := v_row.run_id;
        task_id := v_row.task_id;
        attempt := v_row.attempt;
        task_name := v_row.task_name;
        params := v_row.params;
        retry_strategy := v_row.retry_strategy;
        max_attempts := v_row.max_attempts;
        headers := v_row.headers;
        wake_event := v_row.wake_event;
        event_payload := v_row.event_payload;
        return next;
        v_left := v_left - 1;
      end loop;
      if v_ids <> '{}' then
        v_ids := '{}';  -- the keys' turns are claimed: the rest oldest first
        exit when v_left <= 0;
        continue;
      end if;
      exit when v_late = 0 or v_left <= 0 or v_rounds >= 4;
      -- Overdue tasks sit at the head of this band: cancel a bounded batch of
      -- them at once, then look at the band again.
      execute absurd._sql('claim.cancel_head', q) using v_priority, v_now, 1000;
      v_rounds := v_rounds + 1;
    end loop;
    exit when v_left <= 0;
    v_below := v_priority;
  end loop;
end;
$$;

-- The checkpoints a run may replay, as one JSON object {checkpoint_name: state}.
create or replace function absurd._run_checkpoints(p_queue_name text, p_task_id uuid, p_attempt integer)
returns jsonb
language plpgsql
set enable_seqscan = off
as $$
declare
  v jsonb;
  r record;
  v_names text[] := '{}';
  v_states jsonb[] := '{}';
begin
  for r in execute absurd._cached('checkpoint.replayable', p_queue_name,
      quote_nullable(p_task_id), quote_nullable(p_attempt)) loop
    v_names := v_names || r.checkpoint_name;
    v_states := v_states || r.state;
  end loop;
  if v_names = '{}' then
    return '{}'::jsonb;
  end if;
  select jsonb_object_agg(n, st) into v from unnest(v_names, v_states) as u(n, st);
  return v;
end;
$$;

-- claim_task plus, per claimed run, the checkpoints it may replay: a worker
-- starts a task in one round trip instead of two. (Ours; the SDK's worker uses it.)
create or replace function absurd.claim_task_with_checkpoints(
  p_queue_name text,
  p_worker_id text,
  p_claim_timeout integer default 30,
  p_qty integer default 1
)
returns table (
  run_id uuid,
  task_id uuid,
  attempt integer,
  task_name text,
  params jsonb,
  retry_strategy jsonb,
  max_attempts integer,
  headers jsonb,
  wake_event text,
  event_payload jsonb,
  checkpoints jsonb
)
language sql
as $$
  select c.run_id, c.task_id, c.attempt, c.task_name, c.params, c.retry_strategy,
         c.max_attempts, c.headers, c.wake_event, c.event_payload,
         absurd._run_checkpoints(p_queue_name, c.task_id, c.attempt)
  from absurd.claim_task(p_queue_name, p_worker_id, p_claim_timeout, p_qty) c;
$$;

create or replace function absurd.complete_run(p_queue_name text, p_run_id uuid, p_state jsonb default null)
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  v_task uuid;
  v_key text;
begin
  perform absurd._require_queue(p_queue_name);
  execute absurd._cached('complete', p_queue_name, quote_nullable(p_run_id),
    quote_nullable(absurd.current_time()), quote_nullable(p_state)) into v_task, v_key;
  if v_task is null then
    perform absurd._run_state_error(p_queue_name, p_run_id,
      'Run "%s" is not currently running in queue "%s"');
  end if;
  if v_key is not null then
    perform absurd._flow_release(p_queue_name, array[v_key], absurd.current_time());
  end if;
end;
$$;

-- complete_run, then claim_task_with_checkpoints, in one transaction: a worker
-- that finishes a task and has a free slot commits (and waits for the WAL
-- flush) once instead of twice. p_qty 0 only completes. (Ours; the SDK's
-- worker uses it.)
create or replace function absurd.complete_run_and_claim(
  p_queue_name text,
  p_run_id uuid,
  p_state jsonb,
  p_worker_id text,
  p_claim_timeout integer,
  p_qty integer
)
returns table (
  run_id uuid,
  task_id uuid,
  attempt integer,
  task_name text,
  params jsonb,
  retry_strategy jsonb,
  max_attempts integer,
  headers jsonb,
  wake_event text,
  event_payload jsonb,
  checkpoints jsonb
)
language plpgsql
as $$
begin
  perform absurd.complete_run(p_queue_name, p_run_id, p_state);
  if coalesce(p_qty, 0) > 0 then
    return query select * from absurd.claim_task_with_checkpoints(
      p_queue_name, p_worker_id, p_claim_timeout, p_qty);
  end if;
end;
$$;

-- Batched writes (ours; the SDK's worker sends the writes of its running tasks
-- this way, so that many share one statement and one commit). Each returns one
-- boolean per input position: true when the item was applied; false when it was
-- not, and nothing of it was written: the caller sends that item alone through
-- the single function (complete_run, set_task_checkpoint_state), whose error is
-- precise. The other items are written whatever one item's fate.
-- Checks the queue and that a batch's arrays have one length (AB015); returns it.
create or replace function absurd._batch_length(p_queue_name text, p_lengths integer[])
returns integer
language plpgsql
stable
as $$
begin
  perform absurd._require_queue(p_queue_name);
  if (select count(distinct coalesce(n, 0)) from unnest(p_lengths) n) > 1 then
    perform absurd._raise('AB015', 'The arrays of a batch must have the same length');
  end if;
  return coalesce(p_lengths[1], 0);
end;
$$;

create or replace function absurd.complete_runs(p_queue_name text, p_run_ids uuid[], p_states jsonb[])
returns boolean[]
language plpgsql
-- Generic plans: PostgreSQL would plan a statement of arrays anew on every call.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
  v_ok boolean[];
  v_keys text[];
begin
  if absurd._batch_length(p_queue_name, array[cardinality(p_run_ids), cardinality(p_states)]) = 0 then
    return '{}';
  end if;
  execute absurd._cached('complete.many', p_queue_name, quote_nullable(p_run_ids),
    quote_nullable(p_states), quote_nullable(absurd.current_time())) into v_ok, v_keys;
  if cardinality(v_keys) > 0 then
    perform absurd._flow_release(p_queue_name, v_keys, absurd.current_time());
  end if;
  return v_ok;
end;
$$;

create or replace function absurd.schedule_run(p_queue_name text, p_run_id uuid, p_wake_at timestamptz)
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  v_task uuid;
  v_key text;
begin
  perform absurd._require_queue(p_queue_name);
  if p_wake_at is null then
    perform absurd._raise('AB014', 'wake_at must be provided');
  end if;
  execute absurd._cached('schedule', p_queue_name, quote_nullable(p_run_id),
    quote_nullable(p_wake_at)) into v_task, v_key;
  if v_task is null then
    perform absurd._run_state_error(p_queue_name, p_run_id,
      'Run "%s" is not currently running in queue "%s"');
  end if;
  if v_key is not null then
    perform absurd._flow_release(p_queue_name, array[v_key], absurd.current_time());
  end if;
  if p_wake_at <= absurd.current_time() then
    perform absurd._notify(p_queue_name, 'wake');
  end if;
end;
$$;

-- Fails a run and decides the task's fate: a new attempt (now or later), a
-- cancellation (max_duration would be exceeded), or a permanent failure.
create or replace function absurd._fail_run(
  p_queue_name text, p_run_id uuid, p_reason jsonb, p_retry_at timestamptz, p_now timestamptz)
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_run record;
  v_task record;
  v_retry boolean;
  v_cancel boolean := false;
  v_next timestamptz;
  v_max_duration double precision;
  v_new_run uuid;
begin
  execute absurd._sql('fail.lock_run', q) into v_run using p_run_id;
  if v_run.run_id is null then
    perform absurd._raise('AB011', format('Run "%s" cannot be failed in queue "%s"', absurd._show(p_run_id), q));
  elsif v_run.state = 'cancelled' then
    perform absurd._raise('AB001', 'Task has been cancelled');
  elsif v_run.state = 'failed' then
    perform absurd._raise('AB002', format('Run "%s" has already failed in queue "%s"', absurd._show(p_run_id), q));
  elsif v_run.state not in ('running', 'sleeping') then
    perform absurd._raise('AB012', format('Run "%s" cannot be failed in queue "%s"', absurd._show(p_run_id), q));
  end if;
  execute absurd._sql('fail.lock_task', q) into v_task using v_run.task_id;

  v_retry := v_task.max_attempts is null or v_run.attempt + 1 <= v_task.max_attempts;
  if v_retry then
    if p_retry_at is not null then
      v_next := greatest(p_retry_at, p_now);
    else
      begin
        v_next := p_now + make_interval(
          secs => absurd.retry_delay_seconds(v_task.retry_strategy, v_run.attempt));
      exception when sqlstate 'AB003' then
        v_retry := false;  -- a legacy, invalid strategy: fail for good
      end;
    end if;
  end if;
  if v_retry and v_task.first_started_at is not null then
    v_max_duration := (v_task.cancellation ->> 'max_duration')::double precision;
    if v_max_duration is not null
       and extract(epoch from (v_next - v_task.first_started_at)) >= v_max_duration then
      v_retry := false;
      v_cancel := true;
    end if;
  end if;

  execute absurd._sql('fail.mark', q) using p_run_id, p_now, p_reason;
  if v_retry then
    v_new_run := absurd.portable_uuidv7();
    execute absurd._sql('fail.retry', q)
      using v_new_run, v_task.task_id, v_run.attempt + 1,
            case when v_next > p_now then 'sleeping' else 'pending' end,
            v_next, p_now, v_task.priority, v_task.flow_key;
    if v_next <= p_now then
      perform absurd._notify(q, 'retry');
    end if;
  else
    execute absurd._sql('fail.finish', q)
      using v_task.task_id, case when v_cancel then 'cancelled' else 'failed' end,
            v_run.attempt, p_run_id, p_now;
  end if;
  if v_run.flow_key is not null and v_run.state = 'running' then
    perform absurd._flow_release(q, array[v_run.flow_key], p_now);
  end if;
end;
$$;

create or replace function absurd.fail_run(
  p_queue_name text,
  p_run_id uuid,
  p_reason jsonb,
  p_retry_at timestamptz default null
)
returns void
language plpgsql
as $$
begin
  perform absurd._require_queue(p_queue_name);
  perform absurd._fail_run(p_queue_name, p_run_id, p_reason, p_retry_at, absurd.current_time());
end;
$$;

create or replace function absurd.retry_task(p_queue_name text, p_task_id uuid, p_options jsonb default '{}')
returns table (task_id uuid, run_id uuid, attempt integer, created boolean)
language plpgsql
as $$
declare
  q text := p_queue_name;
  v_now timestamptz := absurd.current_time();
  v_opts jsonb;
  v_max integer;
  v_task record;
  v_run_id uuid;
begin
  perform absurd._require_queue(q);
  v_opts := absurd._require_object(p_options, 'options');
  v_max := absurd._opt_int(v_opts, 'max_attempts');
  if v_max < 1 then
    perform absurd._raise('AB015', 'max_attempts must be >= 1');
  end if;
  execute format($q$select task_id, task_name, params, headers, retry_strategy, max_attempts,
      cancellation, attempts, state, priority, flow_key from absurd.%I where task_id = $1 for update$q$,
      't_' || q)
    into v_task using p_task_id;
  if v_task.task_id is null then
    perform absurd._raise('AB009', format('Task "%s" not found in queue "%s"', absurd._show(p_task_id), q));
  end if;
  if v_task.state <> 'failed' then
    perform absurd._raise('AB010', format(
      'Task "%s" is not currently failed in queue "%s"', absurd._show(p_task_id), q));
  end if;

  if coalesce(absurd._opt_bool(v_opts, 'spawn_new'), false) then
    return query select * from absurd.spawn_task(q, v_task.task_name, v_task.params,
      absurd._strip_top_nulls(jsonb_build_object(
        'headers', v_task.headers,
        'retry_strategy', v_task.retry_strategy,
        'max_attempts', coalesce(v_max, v_task.max_attempts),
        'cancellation', v_task.cancellation,
        'priority', v_task.priority,
        'flow_key', v_task.flow_key)));
    return;
  end if;

  v_max := coalesce(v_max, coalesce(v_task.max_attempts, v_task.attempts) + 1);
  if v_max <= v_task.attempts then
    perform absurd._raise('AB010', format(
      'max_attempts (%s) must be greater than current attempts (%s)', v_max, v_task.attempts));
  end if;
  v_run_id := absurd.portable_uuidv7();
  execute format($q$
    with nr as (
      insert into absurd.%1$I (run_id, task_id, attempt, state, available_at, created_at, priority,
        flow_key)
      values ($1, $2, $3, 'pending', $4, $4, $5, $7)
    )
    update absurd.%2$I set state = 'pending', attempts = $3, max_attempts = $6,
      last_attempt_run = $1, cancelled_at = null, finished_at = null, flow_slot = null,
      cancel_deadline = absurd._cancel_deadline(cancellation, $4, first_started_at)
    where task_id = $2
  $q$, 'r_' || q, 't_' || q)
    using v_run_id, p_task_id, v_task.attempts + 1, v_now, v_task.priority, v_max, v_task.flow_key;
  perform absurd._notify(q, 'retry');
  return query select p_task_id, v_run_id, v_task.attempts + 1, false;
end;
$$;

create or replace function absurd.cancel_task(p_queue_name text, p_task_id uuid)
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  v_state text;
  v_key text;
begin
  perform absurd._require_queue(p_queue_name);
  if not absurd._cancel_task(p_queue_name, p_task_id, absurd.current_time()) then
    perform absurd._raise('AB009', format(
      'Task "%s" not found in queue "%s"', absurd._show(p_task_id), p_queue_name));
  end if;
  -- The task row is locked: its key, to release the slot its run may have held.
  execute absurd._sql('task.lock_key', p_queue_name) into v_state, v_key using p_task_id;
  if v_key is not null then
    perform absurd._flow_release(p_queue_name, array[v_key], absurd.current_time());
  end if;
end;
$$;

create or replace function absurd.get_task_result(p_queue_name text, p_task_id uuid)
returns table (task_id uuid, state text, result jsonb, failure_reason jsonb)
language plpgsql
stable
as $$
begin
  perform absurd._require_queue(p_queue_name);
  return query execute format($q$
    select t.task_id, t.state,
           case when t.state = 'completed' then t.completed_payload end,
           case when t.state = 'failed' then r.failure_reason end
    from absurd.%I t left join absurd.%I r on r.run_id = t.last_attempt_run
    where t.task_id = $1
  $q$, 't_' || p_queue_name, 'r_' || p_queue_name) using p_task_id;
end;
$$;

-- -----------------------------------------------------------------------------
-- Steps, leases and events
-- -----------------------------------------------------------------------------

-- Stores a step's result. An older attempt never overwrites a newer attempt's
-- checkpoint. Renews the run's lease by p_extend_claim_by seconds when given.
create or replace function absurd.set_task_checkpoint_state(
  p_queue_name text,
  p_task_id uuid,
  p_step_name text,
  p_state jsonb,
  p_owner_run uuid,
  p_extend_claim_by integer default null
)
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_run record;
begin
  perform absurd._require_queue(q);
  perform absurd._require_text(p_step_name, 'step_name');
  execute absurd._cached('checkpoint.owner', q, quote_nullable(p_owner_run)) into v_run;
  if v_run.task_id is null then
    perform absurd._raise('AB011', format('Run "%s" not found for checkpoint', absurd._show(p_owner_run)));
  elsif v_run.task_id is distinct from p_task_id then
    perform absurd._raise('AB013', format(
      'Run "%s" does not belong to task "%s" in queue "%s"', absurd._show(p_owner_run), absurd._show(p_task_id), q));
  elsif v_run.task_state = 'cancelled' or v_run.state = 'cancelled' then
    perform absurd._raise('AB001', 'Task has been cancelled');
  elsif v_run.state = 'failed' then
    perform absurd._raise('AB002', format(
      'Run "%s" has already failed in queue "%s"', absurd._show(p_owner_run), q));
  end if;
  execute absurd._cached('checkpoint.write', q, quote_nullable(p_task_id),
    quote_nullable(p_step_name), quote_nullable(p_state), quote_nullable(p_owner_run),
    quote_nullable(absurd.current_time()),
    quote_nullable(case when v_run.claim_expires_at is null then 0
                        else greatest(coalesce(p_extend_claim_by, 0), 0) end),
    quote_nullable(v_run.attempt));
end;
$$;

-- set_task_checkpoint_state for many steps of different runs (see complete_runs).
create or replace function absurd.set_task_checkpoint_states(
  p_queue_name text,
  p_task_ids uuid[],
  p_step_names text[],
  p_states jsonb[],
  p_owner_runs uuid[],
  p_extend_claim_by integer default null
)
returns boolean[]
language plpgsql
-- Generic plans: PostgreSQL would plan a statement of arrays anew on every call.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
  v_ok boolean[];
begin
  if absurd._batch_length(p_queue_name, array[cardinality(p_task_ids),
      cardinality(p_step_names), cardinality(p_states), cardinality(p_owner_runs)]) = 0 then
    return '{}';
  end if;
  execute absurd._cached('checkpoint.write_many', p_queue_name, quote_nullable(p_task_ids),
    quote_nullable(p_step_names), quote_nullable(p_states), quote_nullable(p_owner_runs),
    quote_nullable(absurd.current_time()),
    quote_nullable(greatest(coalesce(p_extend_claim_by, 0), 0))) into v_ok;
  return v_ok;
end;
$$;

create or replace function absurd.extend_claim(p_queue_name text, p_run_id uuid, p_extend_by integer)
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_run record;
  v_task_state text;
begin
  perform absurd._require_queue(q);
  if p_extend_by is null or p_extend_by <= 0 then
    perform absurd._raise('AB015', 'extend_by must be > 0');
  end if;
  execute format('select task_id, state, claim_expires_at from absurd.%I where run_id = $1 for update',
                 'r_' || q)
    into v_run using p_run_id;
  if v_run.task_id is null then
    perform absurd._raise('AB011', format('Run "%s" not found in queue "%s"', absurd._show(p_run_id), q));
  end if;
  execute absurd._sql('task.lock', q) into v_task_state using v_run.task_id;
  if v_task_state = 'cancelled' or v_run.state = 'cancelled' then
    perform absurd._raise('AB001', 'Task has been cancelled');
  elsif v_run.state = 'failed' then
    perform absurd._raise('AB002', format('Run "%s" has already failed in queue "%s"', absurd._show(p_run_id), q));
  elsif v_run.state <> 'running' then
    perform absurd._raise('AB012', format(
      'Run "%s" is not currently running in queue "%s"', absurd._show(p_run_id), q));
  elsif v_run.claim_expires_at is null then
    perform absurd._raise('AB012', format(
      'Run "%s" does not have an active claim in queue "%s"', absurd._show(p_run_id), q));
  end if;
  execute format('update absurd.%I set claim_expires_at = $2 where run_id = $1', 'r_' || q)
    using p_run_id, absurd.current_time() + make_interval(secs => p_extend_by);
end;
$$;

create or replace function absurd.get_task_checkpoint_state(
  p_queue_name text,
  p_task_id uuid,
  p_step_name text,
  p_include_pending boolean default false
)
returns table (checkpoint_name text, state jsonb, status text, owner_run_id uuid, updated_at timestamptz)
language plpgsql
stable
as $$
begin
  perform absurd._require_queue(p_queue_name);
  return query execute format($q$
    select c.checkpoint_name, c.state, c.status, c.owner_run_id, c.updated_at
    from absurd.%I c
    where c.task_id = $1 and c.checkpoint_name = $2 and ($3 or c.status = 'committed')
  $q$, 'c_' || p_queue_name) using p_task_id, p_step_name, coalesce(p_include_pending, false);
end;
$$;

-- The checkpoints a run may replay: those written by its own or earlier attempts.
create or replace function absurd.get_task_checkpoint_states(p_queue_name text, p_task_id uuid, p_run_id uuid)
returns table (checkpoint_name text, state jsonb, status text, owner_run_id uuid, updated_at timestamptz)
language plpgsql
stable
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_run record;
begin
  perform absurd._require_queue(q);
  execute format('select task_id, attempt from absurd.%I where run_id = $1', 'r_' || q)
    into v_run using p_run_id;
  if v_run.task_id is null then
    perform absurd._raise('AB011', format('Run "%s" not found in queue "%s"', absurd._show(p_run_id), q));
  elsif v_run.task_id is distinct from p_task_id then
    perform absurd._raise('AB013', format(
      'Run "%s" does not belong to task "%s" in queue "%s"', absurd._show(p_run_id), absurd._show(p_task_id), q));
  end if;
  return query execute absurd._sql('checkpoint.replayable', q) using p_task_id, v_run.attempt;
end;
$$;

-- Waits for an event. Returns (false, payload) when it has been emitted (and
-- checkpoints it), else registers the wait, puts the run to sleep and returns
-- (true, null). Lock order event row -> run -> task prevents lost wake-ups.
create or replace function absurd.await_event(
  p_queue_name text,
  p_task_id uuid,
  p_run_id uuid,
  p_step_name text,
  p_event_name text,
  p_timeout integer default null
)
returns table (should_suspend boolean, payload jsonb)
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_now timestamptz := absurd.current_time();
  v_checkpoint jsonb;
  v_event_payload jsonb;
  v_run record;
  v_task_state text;
  v_resolved boolean := false;
  v_rows integer;
begin
  perform absurd._require_queue(q);
  perform absurd._require_text(p_event_name, 'event_name');
  perform absurd._require_text(p_step_name, 'step_name');
  if p_timeout < 0 then
    perform absurd._raise('AB015', 'timeout must be non-negative');
  end if;

  execute absurd._sql('checkpoint.get', q) into v_checkpoint using p_task_id, p_step_name;
  get diagnostics v_rows = row_count;  -- EXECUTE does not set FOUND
  if v_rows > 0 then
    return query select false, v_checkpoint;
    return;
  end if;

  execute absurd._sql('await.sentinel', q) using p_event_name;
  execute absurd._sql('await.lock_event', q) into v_event_payload using p_event_name;
  execute absurd._sql('await.lock_run', q) into v_run using p_run_id;
  if v_run.task_id is null then
    perform absurd._raise('AB011', format('Run "%s" not found while awaiting event', absurd._show(p_run_id)));
  elsif v_run.task_id is distinct from p_task_id then
    perform absurd._raise('AB013', format(
      'Run "%s" does not belong to task "%s" in queue "%s"', absurd._show(p_run_id), absurd._show(p_task_id), q));
  end if;
  execute absurd._sql('task.lock', q) into v_task_state using v_run.task_id;
  if v_task_state = 'cancelled' or v_run.state = 'cancelled' then
    perform absurd._raise('AB001', 'Task has been cancelled');
  end if;

  if v_run.event_payload is not null then
    execute absurd._sql('await.clear_payload', q) using p_run_id;
    v_resolved := v_event_payload is not null and v_run.event_payload = v_event_payload;
  end if;
  if v_run.state <> 'running' then
    perform absurd._raise('AB012', format('Run "%s" must be running to await events', absurd._show(p_run_id)));
  end if;

  if v_resolved or v_event_payload is not null then
    execute absurd._sql('await.resolve', q)
      using p_task_id, p_step_name, v_event_payload, p_run_id, v_now;
    return query select false, v_event_payload;
    return;
  end if;

  if v_run.wake_event = p_event_name and v_run.event_payload is null then
    -- Woken by the timeout: report it once and forget the wait.
    execute absurd._sql('await.clear_wake', q) using p_run_id;
    return query select false, null::jsonb;
    return;
  end if;

  execute absurd._sql('await.suspend', q)
    using p_task_id, p_run_id, p_step_name, p_event_name,
          v_now + make_interval(secs => p_timeout), v_now;
  if v_run.flow_key is not null then
    perform absurd._flow_release(q, array[v_run.flow_key], v_now);
  end if;
  return query select true, null::jsonb;
end;
$$;

-- Emits an event: the first emit of a name wins, later ones change nothing.
-- Wakes every run waiting for it (and checkpoints the payload for each).
create or replace function absurd.emit_event(p_queue_name text, p_event_name text, p_payload jsonb default null)
returns void
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_now timestamptz := absurd.current_time();
  v_stored integer;
  v_woken integer;
begin
  perform absurd._require_queue(q);
  perform absurd._require_text(p_event_name, 'event_name');
  execute absurd._cached('emit.store', q, quote_nullable(p_event_name),
    quote_nullable(coalesce(p_payload, 'null'::jsonb)), quote_nullable(v_now)) into v_stored;
  if v_stored = 0 then
    return;
  end if;
  -- A new statement, so a new snapshot: waits committed while we queued on
  -- the event row are visible here.
  execute absurd._cached('emit.wake', q, quote_nullable(p_event_name),
    quote_nullable(coalesce(p_payload, 'null'::jsonb)), quote_nullable(v_now)) into v_woken;
  if v_woken > 0 then
    perform absurd._notify(q, 'event');
  end if;
end;
$$;

-- When a worker should look again without a notification: the earliest time
-- a claim has something to do (a pending or sleeping run becomes claimable, a
-- lease expires, a cancellation policy fires), or NULL when nothing is scheduled.
create or replace function absurd.queue_next_wake(p_queue_name text)
returns timestamptz
language plpgsql
stable
set enable_seqscan = off
as $$
declare
  v_next timestamptz;
  v_due timestamptz;
begin
  perform absurd._require_queue(p_queue_name);
  execute absurd._sql('next_wake', p_queue_name) into v_next;
  execute absurd._sql('schedule.due', p_queue_name) into v_due using p_queue_name;
  return least(v_next, v_due);
end;
$$;

-- Gauges of each queue (or of one), for dashboards and alerts (Habitat's /metrics):
-- pending and running runs, sleeping runs (a sleep or a retry's backoff) and waiting
-- ones (an event or another task), the age in seconds of the oldest due pending run,
-- runs failed in the last p_window, and schedule lag: how late, in seconds, the most
-- overdue unpaused schedule is (0 when none is due). Each count stops at p_cap, so a
-- call reads a bounded number of index entries whatever the backlog.
create or replace function absurd.queue_gauges(
  p_queue_name text default null,
  p_window interval default '5 minutes',
  p_cap integer default 100000
)
returns table (queue_name text, pending bigint, running bigint, sleeping bigint,
               waiting bigint, oldest_pending_age double precision, failed_recently bigint,
               schedule_lag double precision)
language plpgsql
stable
set enable_seqscan = off
as $$
#variable_conflict use_column
declare
  v_now timestamptz := absurd.current_time();
  v_queue text;
  v_oldest timestamptz;
  v_due timestamptz;
begin
  if p_cap is null or p_cap < 1 then
    perform absurd._raise('AB015', 'limit must be at least 1');
  end if;
  if p_window is null or p_window < interval '0' then
    perform absurd._raise('AB015', 'window must be a non-negative interval');
  end if;
  if p_queue_name is not null then
    perform absurd._require_queue(p_queue_name);
  end if;
  for v_queue in
    select q.queue_name from absurd.queues q
    where (p_queue_name is null or q.queue_name = p_queue_name)
    order by q.queue_name
  loop
    queue_name := v_queue;
    execute absurd._sql('gauges', v_queue)
      into pending, running, sleeping, waiting, v_oldest, failed_recently
      using v_now, v_now - p_window, p_cap;
    execute absurd._sql('schedule.due', v_queue) into v_due using v_queue;
    oldest_pending_age := coalesce(greatest(extract(epoch from v_now - v_oldest), 0), 0);
    schedule_lag := coalesce(greatest(extract(epoch from v_now - v_due), 0), 0);
    return next;
  end loop;
end;
$$;

-- -----------------------------------------------------------------------------
-- Waiting for other tasks (suspending, never polling)
-- -----------------------------------------------------------------------------

-- The result of a task as a JSON snapshot: {task_id, state, result, failure}.
create or replace function absurd._task_snapshot(p_queue_name text, p_task_id uuid)
returns jsonb
language plpgsql
stable
as $$
declare
  v_row record;
begin
  select * into v_row from absurd.get_task_result(p_queue_name, p_task_id);
  if v_row.task_id is null then
    return null;
  end if;
  return jsonb_build_object('task_id', v_row.task_id, 'state', v_row.state,
    'result', v_row.result, 'failure', v_row.failure_reason);
end;
$$;

-- Trigger on t_<q>: a task reached a terminal state; emit its snapshot to
-- every queue watching it (one index probe when nobody watches).
create or replace function absurd._task_finished()
returns trigger
language plpgsql
as $$
declare
  v_watch record;
  v_snapshot jsonb;
begin
  for v_watch in
    delete from absurd.task_watchers
    where queue_name = tg_argv[0] and task_id = new.task_id
    returning watcher_queue, event_name
  loop
    if starts_with(v_watch.event_name, '$allTasks:') then
      perform absurd._join_child_finished(v_watch.watcher_queue, v_watch.event_name);
      continue;
    end if;
    v_snapshot := coalesce(v_snapshot, absurd._task_snapshot(tg_argv[0], new.task_id));
    if exists (select 1 from absurd.queues where queue_name = v_watch.watcher_queue) then
      perform absurd.emit_event(v_watch.watcher_queue, v_watch.event_name, v_snapshot);
    end if;
  end loop;
  return null;
end;
$$;

-- The snapshots of a set of tasks of one queue, in the order given (a task that
-- does not exist, or whose row retention removed, gives null): one statement.
create or replace function absurd._task_snapshots(p_queue_name text, p_task_ids uuid[])
returns jsonb
language plpgsql
stable
set enable_seqscan = off
as $$
declare
  v_out jsonb;
begin
  execute format($q$
    select coalesce(jsonb_agg(
             case when t.task_id is null then null else jsonb_build_object(
               'task_id', t.task_id, 'state', t.state,
               'result', case when t.state = 'completed' then t.completed_payload end,
               'failure', case when t.state = 'failed' then r.failure_reason end) end
             order by u.n), '[]'::jsonb)
    from unnest($1::uuid[]) with ordinality as u(id, n)
    left join absurd.%I t on t.task_id = u.id
    left join absurd.%I r on r.run_id = t.last_attempt_run
  $q$, 't_' || p_queue_name, 'r_' || p_queue_name) into v_out using p_task_ids;
  return v_out;
end;
$$;

-- A child of a join finished (called by _task_finished, in the child's
-- transaction): one fewer to wait for; the last one emits every snapshot.
create or replace function absurd._join_child_finished(p_watcher_queue text, p_event text)
returns void
language plpgsql
as $$
declare
  v_join record;
begin
  update absurd.task_joins set remaining = remaining - 1
  where watcher_queue = p_watcher_queue and event_name = p_event
  returning remaining, child_queue, children into v_join;
  if not found or v_join.remaining > 0 then
    return;
  end if;
  delete from absurd.task_joins where watcher_queue = p_watcher_queue and event_name = p_event;
  if exists (select 1 from absurd.queues where queue_name = p_watcher_queue) then
    perform absurd.emit_event(p_watcher_queue, p_event,
      absurd._task_snapshots(v_join.child_queue, v_join.children));
  end if;
end;
$$;

-- The checks of a wait for tasks (both queues exist, a step name, a non-empty set
-- of ids without null: AB005 / AB014), and its checkpoint when the wait
-- already ended (replayed: a replay returns it without touching the children).
create or replace function absurd._task_wait_replay(
  p_queue_name text, p_task_id uuid, p_step_name text, p_child_queue text,
  p_child_task_ids uuid[]
)
returns table (replayed boolean, state jsonb)
language plpgsql
set enable_seqscan = off
as $$
declare
  v_done jsonb;
  v_rows integer;
begin
  perform absurd._require_queue(p_queue_name);
  perform absurd._require_queue(p_child_queue);
  perform absurd._require_text(p_step_name, 'step_name');
  if p_child_task_ids is null or cardinality(p_child_task_ids) = 0 then
    perform absurd._raise('AB014', 'child task ids must be provided');
  end if;
  if array_position(p_child_task_ids, null) is not null then
    perform absurd._raise('AB014', 'child task ids must not contain null');
  end if;
  execute absurd._sql('checkpoint.get', p_queue_name) into v_done using p_task_id, p_step_name;
  get diagnostics v_rows = row_count;
  return query select v_rows > 0, v_done;
end;
$$;

-- Suspends the run until one of the given tasks (in p_child_queue) finishes,
-- then returns that task's snapshot {task_id, state, result, failure}; the
-- snapshot is checkpointed under p_step_name, so a replay returns it at once.
-- One task: the event is "$taskResult:<id>"; several: the first to finish wins.
-- Works within one queue too, since the waiting run gives up its slot.
-- Returns (true, null) when the run must suspend, like await_event.
create or replace function absurd.await_task_result(
  p_queue_name text,
  p_task_id uuid,
  p_run_id uuid,
  p_step_name text,
  p_child_queue text,
  p_child_task_ids uuid[],
  p_timeout integer default null
)
returns table (should_suspend boolean, payload jsonb)
language plpgsql
set enable_seqscan = off
as $$
declare
  v_event text;
  v_child uuid;
  v_state text;
  v_prior record;
begin
  select * into v_prior
  from absurd._task_wait_replay(p_queue_name, p_task_id, p_step_name, p_child_queue,
                                p_child_task_ids);
  if v_prior.replayed then  -- the checkpoint, without touching the children
    return query select false, v_prior.state;
    return;
  end if;
  v_event := case when cardinality(p_child_task_ids) = 1
    then '$taskResult:' || p_child_task_ids[1]
    else '$anyTask:' || p_task_id || ':' || p_step_name end;
  foreach v_child in array p_child_task_ids loop
    -- Lock the child (as complete/fail/cancel do) so it cannot finish between
    -- the check and the registration.
    execute absurd._sql('task.lock', p_child_queue) into v_state using v_child;
    if v_state is null then
      perform absurd._raise('AB009', format(
        'Task "%s" not found in queue "%s"', absurd._show(v_child), p_child_queue));
    end if;
    if v_state in ('completed', 'failed', 'cancelled') then
      perform absurd.emit_event(p_queue_name, v_event, absurd._task_snapshot(p_child_queue, v_child));
      exit;
    end if;
    insert into absurd.task_watchers (queue_name, task_id, watcher_queue, event_name)
    values (p_child_queue, v_child, p_queue_name, v_event)
    on conflict do nothing;
  end loop;
  return query select * from absurd.await_event(
    p_queue_name, p_task_id, p_run_id, p_step_name, v_event, p_timeout);
end;
$$;

-- Suspends the run until every one of the given tasks (in p_child_queue) has
-- finished, then returns their snapshots as a JSON array in the order given (a
-- task may appear more than once). Fan-in without a resume per child: the run
-- registers one join (absurd.task_joins) and a watcher per child still running,
-- under the row locks of those children (so none can finish unseen between the
-- check and the registration); the last child to finish emits the event
-- "$allTasks:<task_id>:<step>" carrying every snapshot. The result is checkpointed
-- under p_step_name, so a replay returns it at once. A retry of the waiting task
-- registers again (the join is replaced, counting the children still running).
-- Returns (true, null) when the run must suspend, like await_event.
create or replace function absurd.await_all_tasks(
  p_queue_name text,
  p_task_id uuid,
  p_run_id uuid,
  p_step_name text,
  p_child_queue text,
  p_child_task_ids uuid[],
  p_timeout integer default null
)
returns table (should_suspend boolean, payload jsonb)
language plpgsql
set enable_seqscan = off
as $$
declare
  v_event text;
  v_prior record;
  v_found integer;
  v_distinct integer;
  v_open integer;
  v_missing uuid;
begin
  select * into v_prior
  from absurd._task_wait_replay(p_queue_name, p_task_id, p_step_name, p_child_queue,
                                p_child_task_ids);
  if v_prior.replayed then  -- the checkpoint, without touching the children
    return query select false, v_prior.state;
    return;
  end if;
  v_event := '$allTasks:' || p_task_id || ':' || p_step_name;
  -- The children still running, locked in task_id order (as a finishing child's
  -- own transaction locks its row), each given a watcher of the join's event.
  execute format($q$
    with ids as (
      select distinct id from unnest($1::uuid[]) as u(id)
    ), locked as (
      select t.task_id from absurd.%1$I t
      where t.task_id in (select id from ids)
        and t.state not in ('completed', 'failed', 'cancelled')
      order by t.task_id
      for update of t
    ), watched as (
      insert into absurd.task_watchers (queue_name, task_id, watcher_queue, event_name)
      select $2, task_id, $3, $4 from locked
      on conflict do nothing
    )
    select (select count(*) from locked),
           (select count(*) from ids),
           (select count(*) from absurd.%1$I t where t.task_id in (select id from ids)),
           (select id from ids where id not in (select t.task_id from absurd.%1$I t
                                                where t.task_id in (select id from ids))
            limit 1)
  $q$, 't_' || p_child_queue)
  into v_open, v_distinct, v_found, v_missing
  using p_child_task_ids, p_child_queue, p_queue_name, v_event;
  if v_found < v_distinct then
    perform absurd._raise('AB009', format(
      'Task "%s" not found in queue "%s"', absurd._show(v_missing), p_child_queue));
  end if;
  if v_open = 0 then
    delete from absurd.task_joins where watcher_queue = p_queue_name and event_name = v_event;
    perform absurd.emit_event(p_queue_name, v_event,
      absurd._task_snapshots(p_child_queue, p_child_task_ids));
  else
    insert into absurd.task_joins (watcher_queue, event_name, child_queue, children, remaining)
    values (p_queue_name, v_event, p_child_queue, p_child_task_ids, v_open)
    on conflict (watcher_queue, event_name) do update
      set child_queue = excluded.child_queue, children = excluded.children,
          remaining = excluded.remaining;
  end if;
  return query select * from absurd.await_event(
    p_queue_name, p_task_id, p_run_id, p_step_name, v_event, p_timeout);
end;
$$;

-- -----------------------------------------------------------------------------
-- Promises: a value the outside world settles once, which tasks await
--
-- One table for every queue (a promise id is random, not time-ordered, so it
-- cannot share a partitioned queue's weekly ranges; one table needs no
-- per-queue DDL). A promise is created pending, with an optional expiry, and
-- settled once: resolved (a value) or rejected (an error). The settlement is
-- also emitted as the event "$promise:<id>" of its queue, so awaiting reuses
-- await_event: a run suspends without a slot and emit_event wakes it (NOTIFY).
-- An expired promise is settled as "expired" by the first await that sees it.
-- A promise belongs to the task that created it (option task_id) or first
-- awaited it, and is deleted with that task; an ownerless one is deleted by
-- cleanup_tasks once settled or expired longer than the TTL ago.
-- LOCK ORDER: promise row -> event row -> run rows -> task row.
-- -----------------------------------------------------------------------------

create table if not exists absurd.promises (
  promise_id uuid primary key,
  queue_name text not null,
  task_id uuid,
  state text not null default 'pending'
    check (state in ('pending', 'resolved', 'rejected', 'expired')),
  payload jsonb,
  tags jsonb not null default '[]',
  idempotency_key text,
  delivery_key text,
  settled_by text,
  created_at timestamptz not null default absurd.current_time(),
  expires_at timestamptz,
  settled_at timestamptz
);
create unique index if not exists promises_ik on absurd.promises (queue_name, idempotency_key)
  where idempotency_key is not null;
create index if not exists promises_ti on absurd.promises (queue_name, task_id)
  where task_id is not null;
create index if not exists promises_oi on absurd.promises
  (queue_name, (coalesce(settled_at, expires_at))) where task_id is null;
-- A queue's promises newest first (absurdctl promises list, bounded by a limit).
create index if not exists promises_qc on absurd.promises (queue_name, created_at, promise_id);

-- A promise id argument, or AB014.
create or replace function absurd._require_promise_id(p_promise_id uuid)
returns void
language plpgsql
immutable
as $$
begin
  if p_promise_id is null then
    perform absurd._raise('AB014', 'promise_id must be provided');
  end if;
end;
$$;

-- AB030 unless the lookup of promise p_promise_id in the queue found its row.
create or replace function absurd._require_promise_row(
  p_found uuid, p_queue_name text, p_promise_id uuid)
returns void
language plpgsql
immutable
as $$
begin
  if p_found is null then
    perform absurd._raise('AB030', format(
      'Promise "%s" not found in queue "%s"', p_promise_id, p_queue_name));
  end if;
end;
$$;

-- A text option of a promise: absent or a string of 1..p_max characters (AB033).
create or replace function absurd._promise_text(p_value jsonb, p_what text, p_max integer)
returns text
language plpgsql
immutable
as $$
begin
  if p_value is null or jsonb_typeof(p_value) = 'null' then
    return null;
  end if;
  if jsonb_typeof(p_value) <> 'string' or length(p_value #>> '{}') not between 1 and p_max then
    perform absurd._raise('AB033', format('%s must be a string of 1 to %s characters, got %s',
      p_what, p_max, left(p_value::text, 100)));
  end if;
  return p_value #>> '{}';
end;
$$;

-- The event that carries a promise's settlement to its awaiting runs.
create or replace function absurd._promise_event(p_promise_id uuid)
returns text
language sql
immutable
as $$
  select '$promise:' || p_promise_id::text;
$$;

-- Creates a promise. Options: timeout_seconds (it expires then; absent: never),
-- idempotency_key (the queue's promise with that key is returned instead of a
-- new one), tags (an array of at most 20 strings) and task_id (the owning task
-- of the queue: the promise is deleted with it). Invalid options: AB033,
-- nothing created. The id is random (gen_random_uuid): it is a capability.
create or replace function absurd.create_promise(p_queue_name text, p_options jsonb default '{}')
returns table (promise_id uuid, expires_at timestamptz)
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_options jsonb := coalesce(p_options, '{}'::jsonb);
  v_now timestamptz := absurd.current_time();
  v_key text;
  v_tags jsonb;
  v_timeout jsonb;
  v_task uuid;
  v_expires timestamptz;
  v_bad text;
  v_state text;
  v_row record;
begin
  perform absurd._require_queue(q);
  if jsonb_typeof(v_options) <> 'object' then
    perform absurd._raise('AB033', 'Promise options must be a JSON object');
  end if;
  select k into v_bad from jsonb_object_keys(v_options) k
  where k not in ('timeout_seconds', 'idempotency_key', 'tags', 'task_id') limit 1;
  if v_bad is not null then
    perform absurd._raise('AB033', format('Unsupported promise option "%s"', left(v_bad, 100)),
      'Options are timeout_seconds, idempotency_key, tags and task_id.');
  end if;
  v_key := absurd._promise_text(v_options -> 'idempotency_key', 'idempotency_key', 512);
  v_timeout := v_options -> 'timeout_seconds';
  if v_timeout is not null and jsonb_typeof(v_timeout) <> 'null' then
    if jsonb_typeof(v_timeout) <> 'number' or (v_timeout #>> '{}')::numeric <= 0
       or (v_timeout #>> '{}')::numeric > 3153600000 then
      perform absurd._raise('AB033', format(
        'timeout_seconds must be a positive number of seconds (at most 100 years), got %s',
        left(v_timeout::text, 100)));
    end if;
    v_expires := v_now + make_interval(secs => (v_timeout #>> '{}')::double precision);
  end if;
  v_tags := coalesce(nullif(v_options -> 'tags', 'null'::jsonb), '[]'::jsonb);
  if jsonb_typeof(v_tags) <> 'array' or jsonb_array_length(v_tags) > 20
     or exists (select 1 from jsonb_array_elements(v_tags) t
                where jsonb_typeof(t) <> 'string' or length(t #>> '{}') not between 1 and 200) then
    perform absurd._raise('AB033', format(
      'tags must be an array of at most 20 strings of 1 to 200 characters, got %s',
      left(v_tags::text, 100)));
  end if;
  if v_options ? 'task_id' and jsonb_typeof(v_options -> 'task_id') <> 'null' then
    begin
      v_task := absurd._promise_text(v_options -> 'task_id', 'task_id', 36)::uuid;
    exception when invalid_text_representation then
      perform absurd._raise('AB033', format('task_id must be a UUID, got %s',
        left((v_options -> 'task_id')::text, 100)));
    end;
    execute absurd._sql('task.lock', q) into v_state using v_task;
    if v_state is null then
      perform absurd._raise('AB009', format('Task "%s" not found in queue "%s"', v_task, q));
    end if;
  end if;

  execute absurd._sql('promise.create', q) into v_row
    using gen_random_uuid(), q, v_task, v_tags, v_key, v_now, v_expires;
  if v_row.promise_id is null then
    execute absurd._sql('promise.by_key', q) into v_row using q, v_key;
  end if;
  return query select v_row.promise_id, v_row.expires_at;
end;
$$;

-- Settles a promise (resolve_promise, reject_promise). The first settlement
-- wins: it is stored, emitted to the awaiting runs, and reported applied. A
-- later call with the same delivery key, or the same outcome and payload, is a
-- repeat: applied, duplicate, nothing changes. Any other later call changes
-- nothing and is reported not applied. Settling a promise past its expiry:
-- AB031; an unknown promise (or one of another queue): AB030.
create or replace function absurd._settle_promise(
  p_queue_name text, p_promise_id uuid, p_state text, p_payload jsonb, p_delivery_key text)
returns table (applied boolean, duplicate boolean, state text, settled_at timestamptz)
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_now timestamptz := absurd.current_time();
  v_payload jsonb := coalesce(p_payload, 'null'::jsonb);
  v_row record;
  v_repeat boolean;
begin
  perform absurd._require_queue(q);
  perform absurd._require_promise_id(p_promise_id);
  if p_delivery_key is not null and length(p_delivery_key) not between 1 and 512 then
    perform absurd._raise('AB033', 'delivery_key must be a string of 1 to 512 characters');
  end if;
  execute absurd._sql('promise.lock', q) into v_row using p_promise_id, q;
  perform absurd._require_promise_row(v_row.promise_id, q, p_promise_id);
  if v_row.state in ('resolved', 'rejected') then
    v_repeat := (p_delivery_key is not null and v_row.delivery_key = p_delivery_key)
      or (v_row.state = p_state and v_row.payload = v_payload);
    return query select v_repeat, v_repeat, v_row.state, v_row.settled_at;
    return;
  end if;
  if v_row.state = 'expired' or v_row.expires_at <= v_now then
    perform absurd._raise('AB031', format('Promise "%s" expired at %s', p_promise_id,
      absurd._iso_utc(v_row.expires_at)), 'A promise cannot be settled after its expiry.');
  end if;
  execute absurd._sql('promise.settle', q)
    using p_promise_id, p_state, v_payload, p_delivery_key, session_user::text, v_now;
  perform absurd.emit_event(q, absurd._promise_event(p_promise_id),
    jsonb_build_object('state', p_state, 'payload', v_payload));
  return query select true, false, p_state, v_now;
end;
$$;

create or replace function absurd.resolve_promise(
  p_queue_name text, p_promise_id uuid, p_payload jsonb, p_delivery_key text default null)
returns table (applied boolean, duplicate boolean, state text, settled_at timestamptz)
language sql
as $$
  select * from absurd._settle_promise(p_queue_name, p_promise_id, 'resolved', p_payload, p_delivery_key);
$$;

create or replace function absurd.reject_promise(
  p_queue_name text, p_promise_id uuid, p_error jsonb, p_delivery_key text default null)
returns table (applied boolean, duplicate boolean, state text, settled_at timestamptz)
language sql
as $$
  select * from absurd._settle_promise(p_queue_name, p_promise_id, 'rejected', p_error, p_delivery_key);
$$;

-- Waits for a promise, like await_event: returns (false, settlement) once it is
-- settled, with the settlement {"state": "resolved" | "rejected" | "expired",
-- "payload": value or error} checkpointed under p_step_name; else suspends the
-- run (true, null) until it is settled, it expires, or p_timeout seconds pass
-- (then (false, null) once, as await_event reports a timeout).
create or replace function absurd.await_promise(
  p_queue_name text,
  p_task_id uuid,
  p_run_id uuid,
  p_step_name text,
  p_promise_id uuid,
  p_timeout integer default null
)
returns table (should_suspend boolean, payload jsonb)
language plpgsql
set enable_seqscan = off
as $$
declare
  q text := p_queue_name;
  v_now timestamptz := absurd.current_time();
  v_checkpoint jsonb;
  v_row record;
  v_timeout integer := p_timeout;
  v_rows integer;
begin
  -- await_event checks the step name, the timeout, the run and the task.
  perform absurd._require_queue(q);
  perform absurd._require_promise_id(p_promise_id);
  execute absurd._sql('checkpoint.get', q) into v_checkpoint using p_task_id, p_step_name;
  get diagnostics v_rows = row_count;
  if v_rows > 0 then
    return query select false, v_checkpoint;
    return;
  end if;

  execute absurd._sql('promise.lock', q) into v_row using p_promise_id, q;
  perform absurd._require_promise_row(v_row.promise_id, q, p_promise_id);
  if v_row.task_id is null then
    execute absurd._sql('promise.own', q) using p_promise_id, p_task_id;
  end if;
  if v_row.state = 'pending' and v_row.expires_at <= v_now then
    v_row.state := 'expired';
    execute absurd._sql('promise.settle', q)
      using p_promise_id, 'expired', null::jsonb, null::text, null::text, v_row.expires_at;
  end if;
  if v_row.state <> 'pending' then
    -- Emitted when settled; again here in case event retention removed it.
    perform absurd.emit_event(q, absurd._promise_event(p_promise_id),
      jsonb_build_object('state', v_row.state, 'payload', v_row.payload));
  elsif v_row.expires_at is not null then
    -- Wake at the expiry at the latest (whole seconds, rounded up).
    v_timeout := least(coalesce(p_timeout, 2147483647),
      ceil(extract(epoch from v_row.expires_at - v_now))::bigint)::integer;
  end if;
  return query select * from absurd.await_event(
    q, p_task_id, p_run_id, p_step_name, absurd._promise_event(p_promise_id), v_timeout);
end;
$$;

-- A promise of the queue, or AB030. A pending promise past its expiry reads
-- as "expired".
create or replace function absurd.get_promise(p_queue_name text, p_promise_id uuid)
returns table (
  promise_id uuid,
  queue_name text,
  task_id uuid,
  state text,
  payload jsonb,
  tags jsonb,
  idempotency_key text,
  delivery_key text,
  settled_by text,
  created_at timestamptz,
  expires_at timestamptz,
  settled_at timestamptz
)
language plpgsql
stable
set enable_seqscan = off
as $$
declare
  v_row record;
begin
  perform absurd._require_queue(p_queue_name);
  perform absurd._require_promise_id(p_promise_id);
  execute absurd._sql('promise.get', p_queue_name) into v_row using p_promise_id, p_queue_name;
  perform absurd._require_promise_row(v_row.promise_id, p_queue_name, p_promise_id);
  if v_row.state = 'pending' and v_row.expires_at <= absurd.current_time() then
    v_row.state := 'expired';
  end if;
  return query select v_row.promise_id, v_row.queue_name, v_row.task_id, v_row.state,
    v_row.payload, v_row.tags, v_row.idempotency_key, v_row.delivery_key, v_row.settled_by,
    v_row.created_at, v_row.expires_at, v_row.settled_at;
end;
$$;

-- -----------------------------------------------------------------------------
-- Ingress deliveries (absurd.ingress): a webhook delivery is recorded in the
-- transaction of the action it causes, so a provider's redelivery of the same id
-- is recognised and applied once. Not per queue: the source names its queue.
-- -----------------------------------------------------------------------------

create table if not exists absurd.ingress_deliveries (
  source text not null,
  delivery_id text not null,
  received_at timestamptz not null,
  primary key (source, delivery_id)
);

create index if not exists ingress_deliveries_received_at
  on absurd.ingress_deliveries (received_at);

-- True when (p_source, p_delivery_id) is new (it is recorded), false for a repeat.
-- A concurrent first delivery of the same id makes this wait for its transaction:
-- if that commits, this is a repeat; if it rolls back, this one is the first.
create or replace function absurd.record_delivery(p_source text, p_delivery_id text)
returns boolean
language plpgsql
as $$
declare
  v_inserted integer;
begin
  if p_source is null or length(p_source) not between 1 and 200 then
    perform absurd._raise('AB015', 'source must be a string of 1 to 200 characters');
  end if;
  if p_delivery_id is null or length(p_delivery_id) not between 1 and 512 then
    perform absurd._raise('AB015', 'delivery_id must be a string of 1 to 512 characters');
  end if;
  insert into absurd.ingress_deliveries (source, delivery_id, received_at)
  values (p_source, p_delivery_id, absurd.current_time())
  on conflict do nothing;
  get diagnostics v_inserted = row_count;
  return v_inserted = 1;
end;
$$;

-- Forgets deliveries older than p_ttl_seconds (a provider stops redelivering after
-- days: Stripe 3, GitHub never on its own, Svix 5). Returns the rows deleted.
create or replace function absurd.cleanup_ingress_deliveries(p_ttl_seconds integer)
returns integer
language plpgsql
as $$
declare
  v_deleted integer;
begin
  if p_ttl_seconds is null or p_ttl_seconds < 0 then
    perform absurd._raise('AB015', 'TTL must be a non-negative number of seconds');
  end if;
  delete from absurd.ingress_deliveries
  where received_at < absurd.current_time() - make_interval(secs => p_ttl_seconds);
  get diagnostics v_deleted = row_count;
  return v_deleted;
end;
$$;

-- -----------------------------------------------------------------------------
-- Streams (see docs/streams.md)
--
-- A running task appends chunks (JSON values) to named streams; readers read
-- them from any seq and tail new ones. Chunks live in s_<q>, next to the task:
-- partitioned by task_id like c_<q> on a partitioned queue, deleted with the
-- task by cleanup_tasks, dropped with its week or its queue. seq counts from
-- 0 per (task, stream). A stream is closed by close_stream (a last row with
-- closed = true and no chunk), or by its task ending: read_stream then ends
-- with a closing row of its own (seq = last + 1), so completing, failing or
-- cancelling a task costs nothing more for streams. Each write_stream or
-- close_stream, and write_streams per stream (a worker's group commit of many
-- streams' flushes), sends at most one NOTIFY on stream_channel(q, task, stream),
-- carrying a pointer {"task_id", "stream", "seq"} (the last seq written), never
-- the chunks. notify_stream (the ephemeral lane) stores nothing: its one
-- NOTIFY carries the chunks.
-- -----------------------------------------------------------------------------

-- The LISTEN/NOTIFY channel of one stream (a fixed-length name whatever the
-- queue, task and stream).
create or replace function absurd.stream_channel(p_queue_name text, p_task_id uuid, p_stream text)
returns text
language sql
immutable
strict
as $$
  select 'absurd.s.' || md5(p_queue_name || '/' || p_task_id::text || '/' || p_stream);
$$;

-- A stream name: 1 to 128 characters of letters, digits and . _ : - (it goes
-- into URLs and NOTIFY payloads as it is), starting with a letter or digit.
create or replace function absurd._stream_name(p_stream text)
returns text
language plpgsql
immutable
as $$
begin
  if p_stream is null or p_stream !~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$' then
    perform absurd._raise('AB040', format('Invalid stream name "%s"',
      left(regexp_replace(coalesce(p_stream, '<null>'), '[^[:print:]]', '?', 'g'), 200)),
      'A stream name is 1 to 128 letters, digits, ".", "_", ":" or "-", starting with a letter or digit.');
  end if;
  return p_stream;
end;
$$;

-- The chunks of one write, checked before anything is written: at most 1,000
-- per call, none SQL NULL (a JSON null is a chunk), each at most p_cap bytes
-- of JSON text (AB041).
create or replace function absurd._stream_chunks(p_chunks jsonb[], p_keys text[], p_cap integer)
returns void
language plpgsql
immutable
as $$
declare
  v_size integer;
begin
  if p_chunks is null or cardinality(p_chunks) > 1000 then
    perform absurd._raise('AB015', 'chunks must be an array of at most 1000 JSON values');
  end if;
  if array_position(p_chunks, null) is not null then
    perform absurd._raise('AB015', 'A chunk cannot be SQL NULL (write the JSON value null)');
  end if;
  if p_keys is not null and (cardinality(p_keys) <> cardinality(p_chunks)
                             or exists (select 1 from unnest(p_keys) k where octet_length(k) > 512)) then
    perform absurd._raise('AB015', 'keys must match chunks one to one, each at most 512 bytes');
  end if;
  select max(octet_length(c::text)) into v_size from unnest(p_chunks) c;
  if v_size > p_cap then
    perform absurd._raise('AB041', format('A stream chunk of %s bytes exceeds the cap of %s bytes',
      v_size, p_cap), 'Split the chunk, or store large values elsewhere and stream a reference.');
  end if;
end;
$$;

-- Locks the run (stream.lock_run) and returns its attempt when it holds the
-- task (state running). A cancelled run gets AB001 (the SDK stops the task),
-- any other AB043, and nothing is written.
create or replace function absurd._stream_holder(p_queue_name text, p_task_id uuid, p_run_id uuid)
returns integer
language plpgsql
set enable_seqscan = off
as $$
declare
  v_attempt integer;
  v_state text;
begin
  perform absurd._require_queue(p_queue_name);
  execute absurd._sql('stream.lock_run', p_queue_name) into v_attempt, v_state
    using p_run_id, p_task_id;
  if v_state = 'cancelled' then
    perform absurd._raise('AB001', 'Task has been cancelled');
  elsif v_state is distinct from 'running' then
    perform absurd._raise('AB043', format(
      'Run "%s" does not hold task "%s" in queue "%s" (run %s): its streams are closed to it',
      absurd._show(p_run_id), absurd._show(p_task_id), p_queue_name, coalesce(v_state, 'not found')));
  end if;
  return v_attempt;
end;
$$;

create or replace function absurd._stream_notify(
  p_queue_name text, p_task_id uuid, p_stream text, p_seq bigint)
returns void
language sql
as $$
  select pg_notify(absurd.stream_channel(p_queue_name, p_task_id, p_stream),
    json_build_object('task_id', p_task_id, 'stream', p_stream, 'seq', p_seq)::text);
$$;

-- Appends chunks, in order, to a stream of the task p_run_id holds. p_keys
-- (optional, one per chunk) makes the write idempotent: a chunk whose key the
-- stream already holds is skipped, so a replayed run re-writing what an
-- earlier attempt wrote writes nothing (the SDK's rule: docs/streams.md).
-- Errors, and nothing written: AB040 bad name, AB041 chunk over 64 KiB, AB042
-- stream closed (when a chunk would be written), AB043 the run does not hold
-- the task. Returns the stream's last seq (-1 when empty); one NOTIFY when
-- something was written.
create or replace function absurd.write_stream(
  p_queue_name text, p_task_id uuid, p_run_id uuid, p_stream text, p_chunks jsonb[],
  p_keys text[] default null)
returns bigint
language plpgsql
set enable_seqscan = off
as $$
declare
  v_stream text := absurd._stream_name(p_stream);
  v_attempt integer;
  v_last bigint;
  v_closed boolean;
  v_written bigint;
begin
  perform absurd._stream_chunks(p_chunks, p_keys, 65536);
  v_attempt := absurd._stream_holder(p_queue_name, p_task_id, p_run_id);
  execute absurd._sql('stream.last', p_queue_name) into v_last, v_closed using p_task_id, v_stream;
  v_last := coalesce(v_last, -1);
  if cardinality(p_chunks) = 0 then
    return v_last;
  end if;
  execute absurd._sql('stream.append', p_queue_name) into v_written
    using p_task_id, v_stream, p_chunks, p_keys, v_last + 1, p_run_id, v_attempt,
          absurd.current_time();
  if v_written > 0 and v_closed then
    perform absurd._raise('AB042', format('Stream "%s" of task "%s" is closed', v_stream, p_task_id));
  end if;
  if v_written > 0 then
    v_last := v_last + v_written;
    perform absurd._stream_notify(p_queue_name, p_task_id, v_stream, v_last);
  end if;
  return v_last;
end;
$$;

-- write_stream for many streams of different runs in one call: the worker's group
-- commit sends the flushes of its tasks' streams with their checkpoints and
-- completions (one transaction). Item i is the (p_task_ids[i], p_run_ids[i],
-- p_streams[i]) write of the next p_counts[i] chunks and keys of p_chunks and
-- p_keys (concatenated in item order; p_keys null: no keys). Items are applied in
-- order, as write_stream would apply them; returns one flag per item: false when
-- the item was not applied and is for the caller to send alone through
-- write_stream, which raises its precise error (a bad name or chunk, a run that
-- does not hold its task, a closed stream). One NOTIFY per stream that was
-- written to, with its last seq, however many items wrote to it.
create or replace function absurd.write_streams(
  p_queue_name text, p_task_ids uuid[], p_run_ids uuid[], p_streams text[],
  p_counts integer[], p_chunks jsonb[], p_keys text[] default null)
returns boolean[]
language plpgsql
-- Generic plans: PostgreSQL would plan a statement of arrays anew on every call.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
  v_n integer := coalesce(cardinality(p_task_ids), 0);
  v_applied boolean[];
  v_tasks uuid[];
  v_streams text[];
  v_seqs bigint[];
begin
  if v_n = 0 and coalesce(cardinality(p_run_ids), 0) = 0 and coalesce(cardinality(p_streams), 0) = 0
     and coalesce(cardinality(p_counts), 0) = 0 and coalesce(cardinality(p_chunks), 0) = 0 then
    return '{}';  -- a batch without streams (most of them) pays nothing more
  end if;
  perform absurd._require_queue(p_queue_name);
  if cardinality(p_run_ids) is distinct from v_n or cardinality(p_streams) is distinct from v_n
     or cardinality(p_counts) is distinct from v_n
     or array_position(p_counts, null) is not null
     or exists (select 1 from unnest(p_counts) c where c < 0)
     or coalesce((select sum(c) from unnest(p_counts) c), 0) is distinct from
        coalesce(cardinality(p_chunks), 0)::bigint
     or (p_keys is not null and cardinality(p_keys) <> coalesce(cardinality(p_chunks), 0)) then
    perform absurd._raise('AB015',
      'write_streams takes one task, run, stream and count per item, and as many chunks as the counts add up to');
  end if;
  execute absurd._cached('stream.append_many', p_queue_name, quote_nullable(p_task_ids),
    quote_nullable(p_run_ids), quote_nullable(p_streams), quote_nullable(p_counts),
    quote_nullable(coalesce(p_chunks, '{}')), quote_nullable(p_keys),
    quote_nullable(absurd.current_time()))
    into v_applied, v_tasks, v_streams, v_seqs;
  perform absurd._stream_notify(p_queue_name, n.task_id, n.stream, n.seq)
  from unnest(v_tasks, v_streams, v_seqs) as n(task_id, stream, seq);
  return v_applied;
end;
$$;

-- Closes a stream of the task p_run_id holds (AB043 otherwise). Closing a
-- closed stream does nothing. Returns the closing row's seq.
create or replace function absurd.close_stream(
  p_queue_name text, p_task_id uuid, p_run_id uuid, p_stream text)
returns bigint
language plpgsql
set enable_seqscan = off
as $$
declare
  v_stream text := absurd._stream_name(p_stream);
  v_attempt integer := absurd._stream_holder(p_queue_name, p_task_id, p_run_id);
  v_last bigint;
  v_closed boolean;
begin
  execute absurd._sql('stream.last', p_queue_name) into v_last, v_closed using p_task_id, v_stream;
  if v_closed then
    return v_last;
  end if;
  v_last := coalesce(v_last, -1) + 1;
  execute absurd._sql('stream.close', p_queue_name)
    using p_task_id, v_stream, v_last, p_run_id, v_attempt, absurd.current_time();
  perform absurd._stream_notify(p_queue_name, p_task_id, v_stream, v_last);
  return v_last;
end;
$$;

-- The ephemeral lane: one NOTIFY carrying the chunks themselves
-- {"task_id", "stream", "chunks": [...]}, nothing stored (a reader that is not
-- listening misses them). At most 7,000 bytes of chunks per call (AB041: a
-- NOTIFY payload holds less than 8,000). Same checks as write_stream.
create or replace function absurd.notify_stream(
  p_queue_name text, p_task_id uuid, p_run_id uuid, p_stream text, p_chunks jsonb[])
returns void
language plpgsql
as $$
declare
  v_stream text := absurd._stream_name(p_stream);
  v_payload text;
begin
  perform absurd._stream_chunks(p_chunks, null, 7000);
  perform absurd._stream_holder(p_queue_name, p_task_id, p_run_id);
  if cardinality(p_chunks) = 0 then
    return;
  end if;
  v_payload := json_build_object('task_id', p_task_id, 'stream', v_stream,
                                 'chunks', to_json(p_chunks))::text;
  if octet_length(v_payload) > 7900 then
    perform absurd._raise('AB041', format(
      'Ephemeral chunks of %s bytes exceed a notification''s cap', octet_length(v_payload)),
      'Send fewer chunks per flush.');
  end if;
  perform pg_notify(absurd.stream_channel(p_queue_name, p_task_id, v_stream), v_payload);
end;
$$;

-- Reads up to p_limit rows of a stream from seq p_from_seq on, in order:
-- (seq, chunk, written_at, attempt, closed). The last row of a closed stream
-- has closed = true and chunk NULL: the stream's close_stream row, or, when the
-- task has ended (completed, failed, cancelled; or it is gone), one made up
-- here with seq = the last seq + 1. A stream nobody wrote reads as empty while
-- its task runs.
create or replace function absurd.read_stream(
  p_queue_name text, p_task_id uuid, p_stream text, p_from_seq bigint default 0,
  p_limit integer default 1000)
returns table (seq bigint, chunk jsonb, written_at timestamptz, attempt integer, closed boolean)
language plpgsql
stable
set enable_seqscan = off
as $$
#variable_conflict use_column
declare
  v_stream text := absurd._stream_name(p_stream);
  v_count integer := 0;
  v_last bigint;
  v_closed boolean;
  v_ended boolean;
  v_finished timestamptz;
begin
  perform absurd._require_queue(p_queue_name);
  if p_limit is null or p_limit < 1 or p_limit > 10000 then
    perform absurd._raise('AB015', 'limit must be between 1 and 10000');
  end if;
  if p_from_seq is null or p_from_seq < 0 then
    perform absurd._raise('AB015', 'from_seq must be a non-negative number');
  end if;
  for seq, chunk, written_at, attempt, closed in
    execute absurd._sql('stream.read', p_queue_name)
    using p_task_id, v_stream, p_from_seq, p_limit
  loop
    v_count := v_count + 1;
    return next;
  end loop;
  if v_count = p_limit or closed then
    return;
  end if;
  -- The page reached the end of the stream without a closing row: the stream
  -- is closed when its task has ended.
  execute absurd._sql('stream.task_end', p_queue_name) into v_ended, v_finished using p_task_id;
  if v_ended is false then
    return;
  end if;
  execute absurd._sql('stream.last', p_queue_name) into v_last, v_closed using p_task_id, v_stream;
  seq := greatest(coalesce(v_last, -1) + 1, p_from_seq);
  chunk := null;
  written_at := coalesce(v_finished, absurd.current_time());
  attempt := null;
  closed := true;
  return next;
end;
$$;

-- -----------------------------------------------------------------------------
-- Cleanup
-- -----------------------------------------------------------------------------

-- One cleanup batch: validates the arguments, then runs the named catalogue
-- statement with the cut-off time and the limit. Returns the rows deleted.
create or replace function absurd._cleanup(
  p_statement text, p_queue_name text, p_ttl_seconds integer, p_limit integer)
returns integer
language plpgsql
set enable_seqscan = off
as $$
declare
  v_deleted integer;
begin
  perform absurd._require_queue(p_queue_name);
  if p_ttl_seconds is null or p_ttl_seconds < 0 then
    perform absurd._raise('AB015', 'TTL must be a non-negative number of seconds');
  end if;
  if p_limit is not null and p_limit < 1 then
    perform absurd._raise('AB015', 'limit must be at least 1');
  end if;
  execute absurd._sql(p_statement, p_queue_name) into v_deleted
    using absurd.current_time() - make_interval(secs => p_ttl_seconds), coalesce(p_limit, 1000),
          p_queue_name;
  return v_deleted;
end;
$$;

-- Deletes up to p_limit finished tasks (oldest first) that finished more than
-- p_ttl_seconds ago, with their runs, checkpoints, waits and promises. Live
-- tasks are never touched. Returns the number of tasks deleted.
-- Also deletes up to p_limit promises no task owns that were settled (or
-- expired) more than p_ttl_seconds ago, and up to p_limit rows of the queue's
-- schedule fire log older than
-- the TTL (absurd.schedule_fires), so every retention path covers them.
create or replace function absurd.cleanup_tasks(p_queue_name text, p_ttl_seconds integer, p_limit integer default 1000)
returns integer
language plpgsql
as $$
declare
  v_deleted integer := absurd._cleanup('cleanup.tasks', p_queue_name, p_ttl_seconds, p_limit);
begin
  perform absurd._cleanup('cleanup.promises', p_queue_name, p_ttl_seconds, p_limit);
  perform absurd._cleanup_schedule_fires(p_queue_name,
    absurd.current_time() - make_interval(secs => p_ttl_seconds), coalesce(p_limit, 1000));
  return v_deleted;
end;
$$;

-- Deletes up to p_limit events emitted more than p_ttl_seconds ago (including
-- the sentinel rows that waits create).
create or replace function absurd.cleanup_events(p_queue_name text, p_ttl_seconds integer, p_limit integer default 1000)
returns integer
language sql
as $$
  select absurd._cleanup('cleanup.events', p_queue_name, p_ttl_seconds, p_limit);
$$;

create or replace function absurd.cleanup_all_queues(p_queue_name text default null)
returns table (queue_name text, tasks_deleted integer, events_deleted integer)
language plpgsql
as $$
#variable_conflict use_column
declare
  v_queue record;
  v_ttl integer;
begin
  if p_queue_name is not null then
    perform absurd._require_queue(p_queue_name);
  end if;
  for v_queue in
    select q.queue_name, q.cleanup_ttl, q.cleanup_limit from absurd.queues q
    where (p_queue_name is null or q.queue_name = p_queue_name)
    order by q.queue_name
  loop
    v_ttl := least(floor(extract(epoch from v_queue.cleanup_ttl)), 2147483647)::integer;
    queue_name := v_queue.queue_name;
    tasks_deleted := absurd.cleanup_tasks(v_queue.queue_name, v_ttl, v_queue.cleanup_limit);
    events_deleted := absurd.cleanup_events(v_queue.queue_name, v_ttl, v_queue.cleanup_limit);
    return next;
  end loop;
end;
$$;

-- -----------------------------------------------------------------------------
-- Schedules: cron-driven tasks of a queue, fired by the engine itself
--
-- absurd.schedules holds one row per (queue, schedule): its normalized
-- definition (jsonb, compared by create_schedule and patched by
-- update_schedule), a version bumped on every change, the pause state and the
-- firing state: next_tick (the next cron tick), next_fire_at (that tick plus
-- its jitter) and due_at (when fire_schedules must look at the row: next_fire_at,
-- or about a second from now while a buffered tick waits). Partial index
-- schedules_due (queue_name, due_at) where not paused: claim_task probes it once
-- per call (catalogue "schedule.due") and fires only when something is due.
--
-- Exactly once per tick: fire_schedules locks due rows FOR UPDATE SKIP LOCKED,
-- spawns and advances next_tick in the same transaction, and spawns with the
-- idempotency key 'schedule:<name>:<tick UTC ISO>' (backfill uses the same keys).
-- Every outcome is logged to absurd.schedule_fires (cleaned with the queue's
-- cleanup_ttl by cleanup_tasks). See docs/engine.md, "Schedules".
-- -----------------------------------------------------------------------------

create table if not exists absurd.schedules (
  queue_name text not null,
  schedule_name text not null,
  definition jsonb not null,
  version integer not null default 1,
  paused boolean not null default false,
  note text,
  paused_at timestamptz,
  next_tick timestamptz,
  next_fire_at timestamptz,
  due_at timestamptz,
  buffered_tick timestamptz,
  last_tick timestamptz,
  last_fire_at timestamptz,
  last_task_id uuid,
  created_at timestamptz not null default absurd.current_time(),
  updated_at timestamptz not null default absurd.current_time(),
  primary key (queue_name, schedule_name)
);

create index if not exists schedules_due on absurd.schedules (queue_name, due_at)
  where not paused;

create table if not exists absurd.schedule_fires (
  fire_id bigint generated always as identity primary key,
  queue_name text not null,
  schedule_name text not null,
  tick timestamptz not null,
  through timestamptz,
  ticks integer not null default 1,
  outcome text not null check (outcome in ('spawned', 'skipped_overlap', 'skipped_catchup',
    'skipped_paused', 'buffered', 'triggered', 'backfilled')),
  task_id uuid,
  version integer not null,
  fired_at timestamptz not null
);

create index if not exists schedule_fires_by_schedule
  on absurd.schedule_fires (queue_name, schedule_name, fire_id);
create index if not exists schedule_fires_by_time on absurd.schedule_fires (queue_name, fired_at);

-- An instant as UTC ISO 8601 text: 2026-03-29T01:00:00Z (fractions only when present).
create or replace function absurd._iso_utc(p_ts timestamptz)
returns text
language sql
immutable
as $$
  select replace(to_char(p_ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), '.000000Z', 'Z');
$$;

create or replace function absurd._schedule_name(p_schedule_name text)
returns text
language plpgsql
immutable
as $$
begin
  perform absurd._require_text(p_schedule_name, 'schedule_name');
  if octet_length(p_schedule_name) > 200 then
    perform absurd._raise('AB019', format('Schedule name "%s..." is too long (max 200 bytes)',
      left(p_schedule_name, 50)));
  end if;
  return p_schedule_name;
end;
$$;

-- A non-negative interval option (seconds, or interval text) of at most 100 years.
create or replace function absurd._schedule_interval(p_options jsonb, p_key text)
returns interval
language plpgsql
stable
as $$
declare
  v interval;
  v_type text := jsonb_typeof(p_options -> p_key);
begin
  if v_type is null or v_type = 'null' then
    return null;
  end if;
  begin
    v := case v_type
           when 'number' then make_interval(secs => (p_options ->> p_key)::double precision)
           when 'string' then (p_options ->> p_key)::interval end;
  exception when others then
    v := null;
  end;
  if v is null or v < interval '0' or v > interval '100 years' then
    perform absurd._raise('AB019', format(
      '%s must be a non-negative interval (seconds or interval text, at most 100 years), got %s',
      p_key, left((p_options -> p_key)::text, 100)));
  end if;
  return v;
end;
$$;

-- One of a fixed set of words (case-insensitive), or the default when absent.
create or replace function absurd._schedule_word(
  p_options jsonb, p_key text, p_allowed text[], p_default text)
returns text
language plpgsql
immutable
as $$
declare
  v_type text := jsonb_typeof(p_options -> p_key);
  v text;
begin
  if v_type is null or v_type = 'null' then
    return p_default;
  end if;
  v := lower(btrim(p_options ->> p_key));
  if v_type <> 'string' or not (v = any (p_allowed)) then
    perform absurd._raise('AB019', format('%s must be one of %s, got %s',
      p_key, array_to_string(p_allowed, ', '), left((p_options -> p_key)::text, 100)));
  end if;
  return v;
end;
$$;

-- Checks a schedule's task, cron and options (AB014, AB015, AB017, AB018, AB019)
-- and returns its normalized definition: every option with its default filled
-- in, intervals in seconds, instants in UTC ISO, so that equal definitions are
-- equal jsonb. The definition is itself valid options (plus task_name, cron).
create or replace function absurd._schedule_definition(p_task_name text, p_cron text, p_options jsonb)
returns jsonb
language plpgsql
stable
as $$
declare
  o jsonb := coalesce(nullif(p_options, 'null'::jsonb), '{}'::jsonb);
  v_key text;
  v_tz text;
  v_spawn record;
  v_start timestamptz;
  v_end timestamptz;
  v_window interval;
  v_jitter interval;
begin
  if jsonb_typeof(o) <> 'object' then
    perform absurd._raise('AB019', 'Schedule options must be a JSON object');
  end if;
  for v_key in select jsonb_object_keys(o) loop
    if v_key not in ('timezone', 'params', 'max_attempts', 'retry_strategy', 'headers',
                     'priority', 'cancellation', 'overlap', 'catchup', 'catchup_window',
                     'jitter', 'start_at', 'end_at', 'paused') then
      perform absurd._raise('AB019', format('Unsupported schedule option "%s"', left(v_key, 100)),
        'Options: timezone, params, max_attempts, retry_strategy, headers, priority, cancellation, overlap, catchup, catchup_window, jitter, start_at, end_at, paused.');
    end if;
  end loop;
  perform absurd._require_text(p_task_name, 'task_name');
  perform absurd._cron_parse(p_cron);
  if jsonb_typeof(o -> 'timezone') not in ('string', 'null') then
    perform absurd._raise('AB019', format('timezone must be a string, got %s',
      left((o -> 'timezone')::text, 100)));
  end if;
  v_tz := absurd._cron_zone(coalesce(nullif(o ->> 'timezone', ''), 'UTC'));
  if jsonb_typeof(o -> 'headers') not in ('object', 'null') then
    perform absurd._raise('AB019', 'headers must be a JSON object');
  end if;
  perform absurd._opt_bool(o, 'paused');
  v_spawn := absurd._spawn_options(jsonb_build_object(
    'max_attempts', o -> 'max_attempts', 'retry_strategy', o -> 'retry_strategy',
    'priority', o -> 'priority', 'cancellation', o -> 'cancellation'), absurd.current_time());
  v_start := absurd._opt_timestamp(o, 'start_at');
  v_end := absurd._opt_timestamp(o, 'end_at');
  if v_start >= v_end then
    perform absurd._raise('AB019', 'end_at must be after start_at');
  end if;
  v_window := absurd._schedule_interval(o, 'catchup_window');
  v_jitter := absurd._schedule_interval(o, 'jitter');
  return absurd._strip_top_nulls(jsonb_build_object(
    'task_name', p_task_name,
    'cron', p_cron,
    'timezone', v_tz,
    'params', o -> 'params',
    'max_attempts', v_spawn.max_attempts,
    'retry_strategy', v_spawn.retry_strategy,
    'headers', nullif(o -> 'headers', 'null'::jsonb),
    'priority', v_spawn.priority,
    'cancellation', v_spawn.cancellation,
    'overlap', absurd._schedule_word(o, 'overlap',
      array['skip', 'buffer_one', 'allow_all', 'cancel_other'], 'skip'),
    'catchup', absurd._schedule_word(o, 'catchup', array['latest', 'all', 'none'], 'latest'),
    'catchup_window', extract(epoch from v_window),
    'jitter', coalesce(extract(epoch from v_jitter), 0),
    'start_at', absurd._iso_utc(v_start),
    'end_at', absurd._iso_utc(v_end)));
end;
$$;

-- The first tick of a definition after p_after, within start_at/end_at (NULL: none).
create or replace function absurd._schedule_next(p_def jsonb, p_after timestamptz)
returns timestamptz
language plpgsql
stable
as $$
declare
  v_start timestamptz := (p_def ->> 'start_at')::timestamptz;
  v_after timestamptz := p_after;
  v timestamptz;
begin
  if v_start is not null and v_start - interval '1 second' > v_after then
    v_after := v_start - interval '1 second';
  end if;
  v := absurd._cron_next(p_def ->> 'cron', v_after, p_def ->> 'timezone');
  if v is not null and v < v_start then
    v := absurd._cron_next(p_def ->> 'cron', v, p_def ->> 'timezone');
  end if;
  if v > (p_def ->> 'end_at')::timestamptz then
    return null;
  end if;
  return v;
end;
$$;

-- The latest tick in [p_from, p_upto] (p_from is a tick), or NULL. Looks back
-- in growing windows from p_upto, so it never walks a long run of missed ticks.
create or replace function absurd._schedule_last_tick(p_def jsonb, p_from timestamptz, p_upto timestamptz)
returns timestamptz
language plpgsql
stable
as $$
declare
  v_span interval;
  v_lo timestamptz;
  v timestamptz;
  v_n timestamptz;
  v_upto timestamptz := least(p_upto, coalesce((p_def ->> 'end_at')::timestamptz, p_upto));
begin
  if p_from is null or p_from > v_upto then
    return null;
  end if;
  foreach v_span in array array[interval '1 second', interval '1 minute', interval '1 hour',
      interval '1 day', interval '32 days', interval '367 days', interval '10 years',
      interval '1000 years'] loop
    v_lo := v_upto - v_span;
    if v_lo < p_from then
      v := p_from;  -- a known tick: no need to search for it
    else
      v := absurd._cron_next(p_def ->> 'cron', v_lo, p_def ->> 'timezone');
    end if;
    if v is not null and v <= v_upto then
      loop
        v_n := absurd._cron_next(p_def ->> 'cron', v, p_def ->> 'timezone');
        exit when v_n is null or v_n > v_upto;
        v := v_n;
      end loop;
      return v;
    end if;
    exit when v_lo < p_from;
  end loop;
  return null;
end;
$$;

-- The tick's jitter: a fraction of the schedule's jitter derived from a hash of
-- (queue, schedule, tick), so every firer computes the same instant; always
-- before the next tick.
create or replace function absurd._schedule_jitter(
  p_queue_name text, p_schedule_name text, p_def jsonb, p_tick timestamptz)
returns interval
language plpgsql
stable
as $$
declare
  v_max double precision := coalesce((p_def ->> 'jitter')::double precision, 0);
  v_off interval;
  v_next timestamptz;
begin
  if v_max <= 0 or p_tick is null then
    return interval '0';
  end if;
  v_off := make_interval(secs => v_max * ((hashtextextended(
    p_queue_name || chr(31) || p_schedule_name || chr(31) || absurd._iso_utc(p_tick), 0)
    & 140737488355327)::double precision / 140737488355328.0));
  v_next := absurd._cron_next(p_def ->> 'cron', p_tick, p_def ->> 'timezone');
  if v_next is not null and p_tick + v_off >= v_next then
    v_off := greatest(v_next - p_tick - interval '1 millisecond', interval '0');
  end if;
  return date_trunc('milliseconds', v_off);
end;
$$;

create or replace function absurd._schedule_log(
  p_queue_name text, p_schedule_name text, p_tick timestamptz, p_outcome text,
  p_task_id uuid, p_version integer, p_now timestamptz,
  p_ticks integer default 1, p_through timestamptz default null)
returns void
language sql
as $$
  insert into absurd.schedule_fires (queue_name, schedule_name, tick, through, ticks, outcome,
    task_id, version, fired_at)
  values (p_queue_name, p_schedule_name, p_tick, p_through, p_ticks, p_outcome, p_task_id,
    p_version, p_now);
$$;

-- Logs the ticks in [p_from, p_before) as one row (count capped at 1000).
create or replace function absurd._schedule_skip(
  p_queue_name text, p_schedule_name text, p_def jsonb, p_version integer,
  p_from timestamptz, p_before timestamptz, p_outcome text, p_now timestamptz)
returns void
language plpgsql
as $$
declare
  v_count integer;
  v_through timestamptz;
begin
  if p_from is null or p_from >= p_before then
    return;
  end if;
  select count(*), max(t) into v_count, v_through
  from absurd._cron_between(p_def ->> 'cron', p_from, p_before - interval '1 microsecond',
                            p_def ->> 'timezone', 999) t
  where t <= coalesce((p_def ->> 'end_at')::timestamptz, t);
  perform absurd._schedule_log(p_queue_name, p_schedule_name, p_from, p_outcome, null,
    p_version, p_now, v_count + 1, v_through);
end;
$$;

-- Spawns the task of one tick. Keyed spawns use 'schedule:<name>:<tick>' so a
-- tick spawns at most once whoever fires it; the tick is in the task's headers
-- as scheduled_for (UTC ISO), with the schedule's name as schedule.
create or replace function absurd._schedule_spawn(
  p_queue_name text, p_schedule_name text, p_def jsonb, p_tick timestamptz, p_keyed boolean)
returns table (task_id uuid, created boolean)
language plpgsql
as $$
declare
  v_iso text := absurd._iso_utc(p_tick);
begin
  return query
    select s.task_id, s.created
    from absurd.spawn_task(p_queue_name, p_def ->> 'task_name', p_def -> 'params',
      absurd._strip_top_nulls(jsonb_build_object(
        'max_attempts', p_def -> 'max_attempts', 'retry_strategy', p_def -> 'retry_strategy',
        'priority', p_def -> 'priority', 'cancellation', p_def -> 'cancellation',
        'headers', coalesce(p_def -> 'headers', '{}'::jsonb)
          || jsonb_build_object('scheduled_for', v_iso, 'schedule', p_schedule_name),
        'idempotency_key', case when p_keyed then 'schedule:' || p_schedule_name || ':' || v_iso end))) s;
end;
$$;

-- Whether a task is still live (not completed, failed or cancelled, and not gone).
create or replace function absurd._schedule_task_live(p_queue_name text, p_task_id uuid)
returns boolean
language plpgsql
stable
as $$
declare
  v_state text;
begin
  if p_task_id is null then
    return false;
  end if;
  select r.state into v_state from absurd.get_task_result(p_queue_name, p_task_id) r;
  return coalesce(v_state not in ('completed', 'failed', 'cancelled'), false);
end;
$$;

-- Stores the next tick of definition p_def and the instants derived from it
-- (row locked by the caller).
create or replace function absurd._schedule_set_next(
  p_queue_name text, p_schedule_name text, p_def jsonb, p_next timestamptz, p_now timestamptz)
returns timestamptz
language plpgsql
as $$
declare
  v_fire timestamptz := p_next + absurd._schedule_jitter(p_queue_name, p_schedule_name, p_def, p_next);
begin
  update absurd.schedules set next_tick = p_next, next_fire_at = v_fire,
    due_at = case when buffered_tick is not null
                  then least(v_fire, p_now + interval '1 second') else v_fire end,
    updated_at = p_now
  where queue_name = p_queue_name and schedule_name = p_schedule_name;
  return v_fire;
end;
$$;

-- Fires one due tick under the overlap policy, checked against the previous
-- tick's task. Returns 1 when a task was spawned.
create or replace function absurd._schedule_fire_tick(
  p_queue_name text, p_schedule_name text, p_tick timestamptz, p_now timestamptz)
returns integer
language plpgsql
as $$
declare
  s absurd.schedules%rowtype;
  v record;
begin
  select * into s from absurd.schedules where queue_name = p_queue_name and schedule_name = p_schedule_name;
  if absurd._schedule_task_live(p_queue_name, s.last_task_id) then
    case s.definition ->> 'overlap'
      when 'skip' then
        perform absurd._schedule_log(p_queue_name, p_schedule_name, p_tick, 'skipped_overlap',
          null, s.version, p_now);
        return 0;
      when 'buffer_one' then
        if s.buffered_tick is null then
          update absurd.schedules set buffered_tick = p_tick
          where queue_name = p_queue_name and schedule_name = p_schedule_name;
          perform absurd._schedule_log(p_queue_name, p_schedule_name, p_tick, 'buffered',
            null, s.version, p_now);
        else
          perform absurd._schedule_log(p_queue_name, p_schedule_name, p_tick, 'skipped_overlap',
            null, s.version, p_now);
        end if;
        return 0;
      when 'cancel_other' then
        perform absurd._cancel_task(p_queue_name, s.last_task_id, p_now);
      else
        null;  -- allow_all
    end case;
  end if;
  select * into v from absurd._schedule_spawn(p_queue_name, p_schedule_name, s.definition, p_tick, true);
  update absurd.schedules set last_task_id = v.task_id, last_tick = p_tick, last_fire_at = p_now
  where queue_name = p_queue_name and schedule_name = p_schedule_name;
  if not v.created then
    return 0;  -- the tick's task exists already (a backfill spawned it)
  end if;
  perform absurd._schedule_log(p_queue_name, p_schedule_name, p_tick, 'spawned', v.task_id,
    s.version, p_now);
  return 1;
end;
$$;

-- Fires what is due of one schedule (its row locked by the caller): a buffered
-- tick whose predecessor finished, then the due ticks under the catch-up
-- policy. Spawns at most p_budget tasks. Returns how many it spawned.
create or replace function absurd._schedule_process(
  p_queue_name text, p_schedule_name text, p_now timestamptz, p_budget integer)
returns integer
language plpgsql
as $$
declare
  s absurd.schedules%rowtype;
  d jsonb;
  v_spawned integer := 0;
  v_steps integer := 0;
  v_tick timestamptz;
  v_last timestamptz;
  v_next timestamptz;
  v_hold timestamptz;
  v_cutoff timestamptz;
begin
  select * into s from absurd.schedules where queue_name = p_queue_name and schedule_name = p_schedule_name;
  d := s.definition;
  if s.buffered_tick is not null and not absurd._schedule_task_live(p_queue_name, s.last_task_id) then
    update absurd.schedules set buffered_tick = null
    where queue_name = p_queue_name and schedule_name = p_schedule_name;
    v_spawned := absurd._schedule_fire_tick(p_queue_name, p_schedule_name, s.buffered_tick, p_now);
  end if;
  v_tick := s.next_tick;
  if v_tick is not null and s.next_fire_at <= p_now and v_spawned < p_budget then
    if d ->> 'catchup' = 'all' then
      if d ? 'catchup_window' then
        v_cutoff := p_now - make_interval(secs => (d ->> 'catchup_window')::double precision);
        if v_tick < v_cutoff then
          v_last := v_tick;
          v_tick := absurd._schedule_next(d, v_cutoff - interval '1 second');
          if v_tick < v_cutoff then
            v_tick := absurd._schedule_next(d, v_tick);
          end if;
          perform absurd._schedule_skip(p_queue_name, p_schedule_name, d, s.version, v_last,
            coalesce(v_tick, 'infinity'), 'skipped_catchup', p_now);
        end if;
      end if;
      while v_tick is not null and v_tick <= p_now and v_spawned < p_budget and v_steps < p_budget loop
        exit when v_tick + absurd._schedule_jitter(p_queue_name, p_schedule_name, d, v_tick) > p_now;
        v_spawned := v_spawned + absurd._schedule_fire_tick(p_queue_name, p_schedule_name, v_tick, p_now);
        v_steps := v_steps + 1;
        v_tick := absurd._schedule_next(d, v_tick);
      end loop;
    else
      -- The usual case: the pending tick is the only one due (it is due, as its
      -- fire time has come), and the tick after it is the next one: one cron step.
      v_next := absurd._schedule_next(d, v_tick);
      if v_next is null or v_next > p_now then
        v_last := v_tick;
      else
        v_next := null;
        v_last := absurd._schedule_last_tick(d, v_tick, p_now);
        if v_last + absurd._schedule_jitter(p_queue_name, p_schedule_name, d, v_last) > p_now then
          -- The latest tick is not due yet (its jitter): it stays next.
          v_hold := v_last;
          v_last := absurd._schedule_last_tick(d, v_tick, v_last - interval '1 second');
        end if;
      end if;
      if v_last is not null then
        if d ->> 'catchup' = 'latest'
           or p_now <= v_last + absurd._schedule_jitter(p_queue_name, p_schedule_name, d, v_last)
                       + interval '60 seconds' then
          perform absurd._schedule_skip(p_queue_name, p_schedule_name, d, s.version, v_tick,
            v_last, 'skipped_catchup', p_now);
          v_spawned := v_spawned + absurd._schedule_fire_tick(p_queue_name, p_schedule_name, v_last, p_now);
        else
          perform absurd._schedule_skip(p_queue_name, p_schedule_name, d, s.version, v_tick,
            v_last + interval '1 microsecond', 'skipped_catchup', p_now);
        end if;
      end if;
      v_tick := coalesce(v_hold, v_next, absurd._schedule_next(d, coalesce(v_last, v_tick)));
    end if;
  end if;
  perform absurd._schedule_set_next(p_queue_name, p_schedule_name, d, v_tick, p_now);
  return v_spawned;
end;
$$;

-- Spawns the due ticks of the queue's unpaused schedules (at most p_limit
-- tasks). Rows another firer holds are skipped, so any number of callers
-- (claims, absurdctl, pg_cron) may run it at once. Returns how many it spawned.
create or replace function absurd.fire_schedules(p_queue_name text, p_limit integer default 100)
returns integer
language plpgsql
set enable_seqscan = off
as $$
declare
  v_now timestamptz := absurd.current_time();
  v_name text;
  v_spawned integer := 0;
begin
  perform absurd._require_queue(p_queue_name);
  if p_limit is null or p_limit < 1 then
    perform absurd._raise('AB015', 'limit must be at least 1');
  end if;
  for v_name in
    select s.schedule_name from absurd.schedules s
    where s.queue_name = p_queue_name and not s.paused and s.due_at <= v_now
    order by s.due_at
    limit p_limit
    for update skip locked
  loop
    v_spawned := v_spawned + absurd._schedule_process(p_queue_name, v_name, v_now, p_limit - v_spawned);
    exit when v_spawned >= p_limit;
  end loop;
  return v_spawned;
end;
$$;

-- Creates a schedule; the same definition again is a no-op, another definition
-- under the name is AB020. Options: docs/engine.md, "Schedules".
create or replace function absurd.create_schedule(
  p_queue_name text, p_schedule_name text, p_task_name text, p_cron text,
  p_options jsonb default '{}')
returns table (schedule_name text, next_fire_at timestamptz)
language plpgsql
as $$
declare
  v_now timestamptz := absurd.current_time();
  v_def jsonb;
  v_paused boolean;
  v_old absurd.schedules%rowtype;
begin
  perform absurd._require_queue(p_queue_name);
  perform absurd._schedule_name(p_schedule_name);
  v_def := absurd._schedule_definition(p_task_name, p_cron, p_options);
  v_paused := coalesce(absurd._opt_bool(p_options, 'paused'), false);
  insert into absurd.schedules as s (queue_name, schedule_name, definition, paused, paused_at,
    created_at, updated_at)
  values (p_queue_name, p_schedule_name, v_def, v_paused, case when v_paused then v_now end,
    v_now, v_now)
  on conflict on constraint schedules_pkey do nothing;
  if not found then
    select * into v_old from absurd.schedules s
    where s.queue_name = p_queue_name and s.schedule_name = p_schedule_name;
    if v_old.definition is distinct from v_def then
      perform absurd._raise('AB020', format(
        'Schedule "%s" already exists in queue "%s" with another definition',
        p_schedule_name, p_queue_name), 'Use update_schedule to change it.');
    end if;
    return query select p_schedule_name, v_old.next_fire_at;
    return;
  end if;
  return query select p_schedule_name, absurd._schedule_set_next(p_queue_name, p_schedule_name,
    v_def, absurd._schedule_next(v_def, v_now), v_now);
end;
$$;

-- Locks a schedule's row, or AB021.
create or replace function absurd._schedule_lock(p_queue_name text, p_schedule_name text)
returns absurd.schedules
language plpgsql
as $$
declare
  s absurd.schedules%rowtype;
begin
  perform absurd._require_queue(p_queue_name);
  select * into s from absurd.schedules
  where queue_name = p_queue_name and schedule_name = p_schedule_name for update;
  if not found then
    perform absurd._raise('AB021', format('Schedule "%s" not found in queue "%s"',
      left(absurd._show(p_schedule_name), 200), p_queue_name));
  end if;
  return s;
end;
$$;

-- Changes the given fields only (a JSON null resets a field to its default).
-- A change bumps the version and recomputes the next fire time from now.
create or replace function absurd.update_schedule(
  p_queue_name text, p_schedule_name text, p_changes jsonb)
returns table (schedule_name text, next_fire_at timestamptz, version integer)
language plpgsql
as $$
declare
  v_now timestamptz := absurd.current_time();
  s absurd.schedules%rowtype := absurd._schedule_lock(p_queue_name, p_schedule_name);
  v_changes jsonb := coalesce(nullif(p_changes, 'null'::jsonb), '{}'::jsonb);
  v_merged jsonb;
  v_def jsonb;
begin
  if jsonb_typeof(v_changes) <> 'object' then
    perform absurd._raise('AB019', 'Schedule changes must be a JSON object');
  end if;
  if v_changes ? 'paused' then
    perform absurd._raise('AB019', 'Use pause_schedule or resume_schedule to change "paused"');
  end if;
  if jsonb_typeof(v_changes -> 'task_name') not in ('string', 'null')
     or jsonb_typeof(v_changes -> 'cron') not in ('string', 'null') then
    perform absurd._raise('AB019', 'task_name and cron must be strings');
  end if;
  v_merged := absurd._strip_top_nulls(s.definition || v_changes);
  v_def := absurd._schedule_definition(v_merged ->> 'task_name', v_merged ->> 'cron',
    v_merged - 'task_name' - 'cron');
  if v_def <> s.definition then
    update absurd.schedules x set definition = v_def, version = x.version + 1
    where x.queue_name = p_queue_name and x.schedule_name = p_schedule_name;
    perform absurd._schedule_set_next(p_queue_name, p_schedule_name, v_def,
      absurd._schedule_next(v_def, v_now), v_now);
  end if;
  return query select x.schedule_name, x.next_fire_at, x.version from absurd.schedules x
    where x.queue_name = p_queue_name and x.schedule_name = p_schedule_name;
end;
$$;

-- Pauses a schedule (with an optional note). A buffered tick is dropped and
-- logged as skipped_paused.
create or replace function absurd.pause_schedule(
  p_queue_name text, p_schedule_name text, p_note text default null)
returns void
language plpgsql
as $$
declare
  v_now timestamptz := absurd.current_time();
  s absurd.schedules%rowtype := absurd._schedule_lock(p_queue_name, p_schedule_name);
begin
  if s.buffered_tick is not null then
    perform absurd._schedule_log(p_queue_name, p_schedule_name, s.buffered_tick,
      'skipped_paused', null, s.version, v_now);
  end if;
  update absurd.schedules x set paused = true, note = p_note,
    paused_at = coalesce(x.paused_at, v_now), buffered_tick = null, updated_at = v_now
  where x.queue_name = p_queue_name and x.schedule_name = p_schedule_name;
end;
$$;

-- Resumes a schedule: the ticks that fell while it was paused are logged as
-- skipped_paused (one row) and none fires; the next fire time counts from now.
create or replace function absurd.resume_schedule(p_queue_name text, p_schedule_name text)
returns timestamptz
language plpgsql
as $$
declare
  v_now timestamptz := absurd.current_time();
  s absurd.schedules%rowtype := absurd._schedule_lock(p_queue_name, p_schedule_name);
begin
  if not s.paused then
    return s.next_fire_at;
  end if;
  if s.next_tick <= v_now then
    perform absurd._schedule_skip(p_queue_name, p_schedule_name, s.definition, s.version,
      s.next_tick, v_now + interval '1 microsecond', 'skipped_paused', v_now);
  end if;
  update absurd.schedules x set paused = false, note = null, paused_at = null
  where x.queue_name = p_queue_name and x.schedule_name = p_schedule_name;
  return absurd._schedule_set_next(p_queue_name, p_schedule_name, s.definition,
    absurd._schedule_next(s.definition, v_now), v_now);
end;
$$;

-- Deletes a schedule and its fire log; its tasks stay. False when it did not exist.
create or replace function absurd.delete_schedule(p_queue_name text, p_schedule_name text)
returns boolean
language plpgsql
as $$
begin
  perform absurd._require_queue(p_queue_name);
  delete from absurd.schedule_fires
  where queue_name = p_queue_name and schedule_name = p_schedule_name;
  delete from absurd.schedules
  where queue_name = p_queue_name and schedule_name = p_schedule_name;
  return found;
end;
$$;

-- Fires the schedule once now, paused or not, overlap policy aside; the task's
-- scheduled_for is now. Returns the task id.
create or replace function absurd.trigger_schedule(p_queue_name text, p_schedule_name text)
returns uuid
language plpgsql
as $$
declare
  v_now timestamptz := absurd.current_time();
  s absurd.schedules%rowtype := absurd._schedule_lock(p_queue_name, p_schedule_name);
  v record;
begin
  select * into v from absurd._schedule_spawn(p_queue_name, p_schedule_name, s.definition, v_now, false);
  update absurd.schedules x set last_task_id = v.task_id, last_fire_at = v_now
  where x.queue_name = p_queue_name and x.schedule_name = p_schedule_name;
  perform absurd._schedule_log(p_queue_name, p_schedule_name, v_now, 'triggered', v.task_id,
    s.version, v_now);
  return v.task_id;
end;
$$;

-- Spawns one task per tick in [p_from, p_to] (at most 1000 ticks, else AB022),
-- with the same idempotency keys as regular fires: a tick already spawned (by
-- a fire or an earlier backfill) is not spawned again. Ignores pause, overlap
-- and start_at/end_at. Returns how many tasks it spawned.
create or replace function absurd.backfill_schedule(
  p_queue_name text, p_schedule_name text, p_from timestamptz, p_to timestamptz)
returns integer
language plpgsql
as $$
declare
  v_now timestamptz := absurd.current_time();
  s absurd.schedules%rowtype := absurd._schedule_lock(p_queue_name, p_schedule_name);
  v_ticks timestamptz[];
  v_tick timestamptz;
  v record;
  v_spawned integer := 0;
begin
  if p_from is null or p_to is null or not isfinite(p_from) or not isfinite(p_to) or p_from > p_to then
    perform absurd._raise('AB015', 'Backfill needs finite from <= to');
  end if;
  v_ticks := array(
    select t from absurd._cron_between(s.definition ->> 'cron', p_from - interval '1 second', p_to,
                                       s.definition ->> 'timezone', 1002) t
    where t >= p_from order by t);
  if cardinality(v_ticks) > 1000 then
    perform absurd._raise('AB022', format(
      'Backfill of schedule "%s" covers more than 1000 ticks', p_schedule_name),
      'Backfill a shorter range at a time.');
  end if;
  foreach v_tick in array v_ticks loop
    select * into v from absurd._schedule_spawn(p_queue_name, p_schedule_name, s.definition, v_tick, true);
    if v.created then
      v_spawned := v_spawned + 1;
      perform absurd._schedule_log(p_queue_name, p_schedule_name, v_tick, 'backfilled',
        v.task_id, s.version, v_now);
    end if;
  end loop;
  return v_spawned;
end;
$$;

create or replace function absurd.list_schedules(p_queue_name text)
returns table (
  schedule_name text, task_name text, cron text, timezone text, definition jsonb,
  paused boolean, note text, next_fire_at timestamptz, last_fire_at timestamptz,
  last_task_id uuid, buffered_tick timestamptz, version integer,
  created_at timestamptz, updated_at timestamptz)
language plpgsql
stable
as $$
begin
  perform absurd._require_queue(p_queue_name);
  return query
    select s.schedule_name, s.definition ->> 'task_name', s.definition ->> 'cron',
      s.definition ->> 'timezone', s.definition, s.paused, s.note, s.next_fire_at,
      s.last_fire_at, s.last_task_id, s.buffered_tick, s.version, s.created_at, s.updated_at
    from absurd.schedules s where s.queue_name = p_queue_name
    order by s.schedule_name;
end;
$$;

-- The schedule's next p_count ticks (at most 100) and the instants they fire at
-- (jitter applied), from its pending tick on; a paused schedule shows the ticks
-- it would fire after a resume now. Fewer rows when end_at comes first.
create or replace function absurd.preview_schedule(
  p_queue_name text, p_schedule_name text, p_count integer default 5)
returns table (tick timestamptz, fire_at timestamptz)
language plpgsql
stable
as $$
declare
  v_now timestamptz := absurd.current_time();
  s absurd.schedules%rowtype;
  v_tick timestamptz;
  v_n integer := 0;
begin
  perform absurd._require_queue(p_queue_name);
  select * into s from absurd.schedules x
  where x.queue_name = p_queue_name and x.schedule_name = p_schedule_name;
  if not found then
    perform absurd._raise('AB021', format('Schedule "%s" not found in queue "%s"',
      left(absurd._show(p_schedule_name), 200), p_queue_name));
  end if;
  if p_count is null or p_count < 1 or p_count > 100 then
    perform absurd._raise('AB019', 'preview_schedule counts 1 to 100 ticks');
  end if;
  v_tick := case when s.paused or s.next_tick is null
                 then absurd._schedule_next(s.definition, v_now) else s.next_tick end;
  while v_tick is not null and v_n < p_count loop
    tick := v_tick;
    fire_at := v_tick + absurd._schedule_jitter(p_queue_name, p_schedule_name, s.definition, v_tick);
    return next;
    v_n := v_n + 1;
    v_tick := absurd._schedule_next(s.definition, v_tick);
  end loop;
end;
$$;

-- The latest p_limit rows of a schedule's fire log, newest first. A row stands
-- for `ticks` ticks from `tick` through `through` (summaries of skipped ticks).
create or replace function absurd.list_schedule_fires(
  p_queue_name text, p_schedule_name text, p_limit integer default 100)
returns table (
  fire_id bigint, tick timestamptz, through timestamptz, ticks integer, outcome text,
  task_id uuid, version integer, fired_at timestamptz)
language plpgsql
stable
as $$
begin
  perform absurd._require_queue(p_queue_name);
  return query
    select f.fire_id, f.tick, f.through, f.ticks, f.outcome, f.task_id, f.version, f.fired_at
    from absurd.schedule_fires f
    where f.queue_name = p_queue_name and f.schedule_name = p_schedule_name
    order by f.fire_id desc
    limit greatest(coalesce(p_limit, 100), 1);
end;
$$;

-- Deletes up to p_limit fire-log rows of the queue written before p_before.
create or replace function absurd._cleanup_schedule_fires(
  p_queue_name text, p_before timestamptz, p_limit integer)
returns integer
language plpgsql
as $$
declare
  v_deleted integer;
begin
  delete from absurd.schedule_fires where fire_id = any (array(
    select f.fire_id from absurd.schedule_fires f
    where f.queue_name = p_queue_name and f.fired_at < p_before
    order by f.fired_at limit p_limit));
  get diagnostics v_deleted = row_count;
  return v_deleted;
end;
$$;

-- =============================================================================
-- Storage: partitioned queues, partition maintenance, pg_cron
--
-- A partitioned queue range-partitions t_<q> and c_<q> by task_id and r_<q>
-- and w_<q> by run_id, one partition per ISO week (UTC) of the UUIDv7 time:
-- <p>_<q>_<YWW>, plus a DEFAULT partition <p>_<q>_d (policy default_partition)
-- that catches any id no weekly partition covers, so no insert ever fails for
-- lack of a partition. Idempotency keys live in i_<q> (a partitioned table
-- cannot hold a unique key on a column outside the partition key); a key is
-- released only when its task row is deleted (trigger) or its week is dropped.
-- e_<q> is never partitioned. DDL that must run outside a transaction
-- (DETACH ... CONCURRENTLY) is driven from Python (absurd.maintenance) or by
-- pg_cron jobs; everything here runs inside one.
-- =============================================================================

create or replace function absurd._is_partitioned(p_queue_name text)
returns boolean
language sql
stable
as $$
  select exists (select 1 from absurd.queues
                 where queue_name = p_queue_name and storage_mode = 'partitioned');
$$;

-- i_<q>, its index, and the trigger that releases a key with its task.
create or replace function absurd._ensure_partitioned_extras(p_queue_name text)
returns void
language plpgsql
as $$
declare
  v_i text := 'i_' || p_queue_name;
begin
  execute format('create table if not exists absurd.%I (
      idempotency_key text primary key,
      task_id uuid not null)', v_i);
  execute format('create index if not exists %I on absurd.%I (task_id)', v_i || '_ti', v_i);
  execute format('drop trigger if exists t_release_key on absurd.%I', 't_' || p_queue_name);
  execute format($tr$create trigger t_release_key after delete on absurd.%I
    for each row when (old.idempotency_key is not null)
    execute function absurd._release_key(%L)$tr$, 't_' || p_queue_name, p_queue_name);
  perform absurd.ensure_partitions(p_queue_name);
end;
$$;

create or replace function absurd._release_key()
returns trigger
language plpgsql
as $$
begin
  execute format('delete from absurd.%I where idempotency_key = $1 and task_id = $2',
                 'i_' || tg_argv[0])
    using old.idempotency_key, old.task_id;
  return null;
end;
$$;

-- spawn_task on a partitioned queue with an idempotency key: reserves the key
-- for p_task_id. Returns one row: all NULL when reserved, else the task that
-- holds the key (task_id, last_attempt_run, attempts).
create or replace function absurd._reserve_key(p_queue_name text, p_key text, p_task_id uuid)
returns table (task_id uuid, last_attempt_run uuid, attempts integer)
language plpgsql
as $$
declare
  v_rows integer;
  v_found record;
begin
  execute format('insert into absurd.%I (idempotency_key, task_id) values ($1, $2)
                  on conflict (idempotency_key) do nothing', 'i_' || p_queue_name)
    using p_key, p_task_id;
  get diagnostics v_rows = row_count;
  if v_rows > 0 then
    return query select null::uuid, null::uuid, null::integer;
    return;
  end if;
  execute format('select t.task_id, t.last_attempt_run, t.attempts
                  from absurd.%I i join absurd.%I t on t.task_id = i.task_id
                  where i.idempotency_key = $1 for key share of i',
                 'i_' || p_queue_name, 't_' || p_queue_name)
    into v_found using p_key;
  if v_found.task_id is null then
    raise exception using errcode = '40001',
      message = format('Idempotency key "%s" in queue "%s" was concurrently cleaned up',
                       p_key, p_queue_name),
      hint = 'Retry spawn_task with the same idempotency key.';
  end if;
  if v_found.last_attempt_run is null then
    perform absurd._raise('AB011', format(
      'Idempotency key "%s" in queue "%s" resolved to task "%s" without a run',
      p_key, p_queue_name, v_found.task_id));
  end if;
  return query select v_found.task_id, v_found.last_attempt_run, v_found.attempts;
end;
$$;

-- The bounds of a range partition, read from its catalogue entry.
create or replace function absurd._partition_bounds(p_partition regclass)
returns table (lower_id uuid, upper_id uuid)
language sql
stable
as $$
  select (regexp_match(b, 'FROM \(''([0-9a-f-]{36})''\)'))[1]::uuid,
         (regexp_match(b, 'TO \(''([0-9a-f-]{36})''\)'))[1]::uuid
  from (select pg_get_expr(c.relpartbound, c.oid) as b from pg_class c
        where c.oid = p_partition) x;
$$;

-- The weekly and default partitions of a queue's four partitioned tables.
create or replace function absurd._queue_partitions(p_queue_name text)
returns table (prefix text, parent_table text, partition_table text, is_default boolean,
               lower_id uuid, upper_id uuid)
language sql
stable
as $$
  select p.prefix, p.prefix || '_' || p_queue_name, c.relname::text,
         pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', b.lower_id, b.upper_id
  from unnest(array['t', 'r', 'c', 'w', 's']) p(prefix)
  join pg_inherits h on h.inhparent = to_regclass(format('absurd.%I', p.prefix || '_' || p_queue_name))
  join pg_class c on c.oid = h.inhrelid
  left join lateral absurd._partition_bounds(c.oid) b on true;
$$;

-- Creates one weekly partition unless its name exists (ours, or taken by
-- another queue's relation). Skips (returns false) when the DEFAULT partition
-- already holds rows of that week, or when waiting for the lock could deadlock.
create or replace function absurd._add_week_partition(
  p_prefix text, p_queue_name text, p_week timestamptz)
returns boolean
language plpgsql
as $$
declare
  v_parent text := p_prefix || '_' || p_queue_name;
  v_name text := v_parent || '_' || absurd.partition_week_tag(p_week);
  v_default text := v_parent || '_d';
  v_key text := case when p_prefix in ('t', 'c', 's') then 'task_id' else 'run_id' end;
  v_from uuid := absurd.uuidv7_floor(p_week);
  -- 168 hours, not '7 days': a day added to a timestamptz follows the session time
  -- zone's daylight-saving changes, and would end the week an hour early or late.
  v_to uuid := absurd.uuidv7_floor(p_week + interval '168 hours');
  v_busy boolean;
begin
  if to_regclass(format('absurd.%I', v_name)) is not null then
    return false;
  end if;
  begin
    -- Creating a partition locks its parent (and the DEFAULT partition)
    -- ACCESS EXCLUSIVE until the end of the transaction. Workers, and other
    -- callers of this function, lock the queue's tables in several orders, so
    -- waiting for a second parent while holding a first could deadlock: wait
    -- only when this transaction holds no other parent of the queue, else skip
    -- the partition if its parent is busy (a later run, or the DEFAULT
    -- partition meanwhile, takes care of it). Nothing else is read before the
    -- parent is locked.
    if exists (select 1 from pg_locks l
               where l.pid = pg_backend_pid() and l.locktype = 'relation'
                 and l.mode = 'AccessExclusiveLock' and l.granted
                 and l.relation in (select to_regclass(format('absurd.%I', x || '_' || p_queue_name))
                                    from unnest(array['t', 'r', 'c', 'w', 's']) x where x <> p_prefix)) then
      execute format('lock table absurd.%I in access exclusive mode nowait', v_parent);
    else
      execute format('lock table absurd.%I in access exclusive mode', v_parent);
    end if;
    if to_regclass(format('absurd.%I', v_name)) is not null then
      return false;  -- created meanwhile
    end if;
    -- Fit between the neighbours: an older release stepped weeks in calendar days,
    -- so after a daylight-saving change in the session's time zone a neighbour may
    -- start or end an hour off the UTC week; the new partition starts where the
    -- previous one ends and ends where the next one starts.
    v_from := coalesce((select b.upper_id from absurd._queue_partitions(p_queue_name) b
                        where b.prefix = p_prefix and not b.is_default
                          and b.lower_id < v_from and b.upper_id > v_from
                        order by b.upper_id desc limit 1), v_from);
    v_to := coalesce((select b.lower_id from absurd._queue_partitions(p_queue_name) b
                      where b.prefix = p_prefix and not b.is_default
                        and b.lower_id < v_to and b.upper_id > v_to
                      order by b.lower_id limit 1), v_to);
    if v_from >= v_to then
      return false;
    end if;
    -- The DEFAULT partition may already hold rows of that week: they stay
    -- there (moving them would block writers; cleanup removes them in time).
    if to_regclass(format('absurd.%I', v_default)) is not null then
      execute format('select exists (select 1 from absurd.%I where %I >= $1 and %I < $2)',
                     v_default, v_key, v_key)
        into v_busy using v_from, v_to;
      if v_busy then
        return false;
      end if;
    end if;
    execute format('create table absurd.%I partition of absurd.%I for values from (%L) to (%L) %s',
                   v_name, v_parent, v_from, v_to,
                   case when p_prefix = 'w' then '' else 'with (fillfactor = 70)' end);
  exception
    when lock_not_available then
      return false;
  end;
  return true;
end;
$$;

create or replace function absurd.ensure_partitions(p_queue_name text default null)
returns void
language plpgsql
as $$
declare
  v_now timestamptz := absurd.current_time();
  v_queue record;
  v_week timestamptz;
  v_prefix text;
begin
  if p_queue_name is not null then
    perform absurd._require_queue(p_queue_name);
  end if;
  for v_queue in
    select q.queue_name, q.default_partition, q.partition_lookahead, q.partition_lookback
    from absurd.queues q
    where q.storage_mode = 'partitioned'
      and (p_queue_name is null or q.queue_name = p_queue_name)
    order by q.queue_name
  loop
    if v_queue.default_partition = 'enabled' then
      foreach v_prefix in array array['t', 'r', 'c', 'w', 's'] loop
        execute format('create table if not exists absurd.%I partition of absurd.%I default',
                       v_prefix || '_' || v_queue.queue_name || '_d',
                       v_prefix || '_' || v_queue.queue_name);
      end loop;
    end if;
    v_week := absurd.week_bucket_utc(v_now - v_queue.partition_lookback);
    while v_week <= absurd.week_bucket_utc(v_now + v_queue.partition_lookahead) loop
      foreach v_prefix in array array['t', 'r', 'c', 'w', 's'] loop
        perform absurd._add_week_partition(v_prefix, v_queue.queue_name, v_week);
      end loop;
      v_week := v_week + interval '168 hours';  -- see _add_week_partition
    end loop;
  end loop;
end;
$$;

-- set_queue_policy's default_partition switch: enabled creates the DEFAULT
-- partitions; disabled drops them, refusing (AB008) when one holds rows.
create or replace function absurd._apply_default_partition(p_queue_name text, p_mode text)
returns void
language plpgsql
as $$
declare
  v_prefix text;
  v_part text;
  v_rows boolean;
begin
  if p_mode = 'enabled' then
    perform absurd.ensure_partitions(p_queue_name);
    return;
  end if;
  foreach v_prefix in array array['t', 'r', 'c', 'w', 's'] loop
    v_part := v_prefix || '_' || p_queue_name || '_d';
    continue when to_regclass(format('absurd.%I', v_part)) is null;
    execute format('lock table absurd.%I in access exclusive mode', v_part);
    execute format('select exists (select 1 from absurd.%I)', v_part) into v_rows;
    if v_rows then
      perform absurd._raise('AB008', format(
        'Cannot disable default_partition for queue "%s": default partition "%s" is not empty',
        p_queue_name, v_part));
    end if;
    execute format('alter table absurd.%I detach partition absurd.%I',
                   v_prefix || '_' || p_queue_name, v_part);
    execute format('drop table absurd.%I', v_part);
  end loop;
end;
$$;

-- Weekly partitions that may be detached (policy detach_mode 'empty'): older
-- than detach_min_age (by their upper bound) and empty. Detaches nothing.
create or replace function absurd.list_detach_candidates(p_queue_name text default null)
returns table (queue_name text, parent_table text, partition_table text)
language plpgsql
as $$
#variable_conflict use_column
declare
  v_now timestamptz := absurd.current_time();
  v_queue record;
  v_part record;
  v_rows boolean;
begin
  if p_queue_name is not null then
    perform absurd._require_queue(p_queue_name);
  end if;
  for v_queue in
    select q.queue_name, q.detach_min_age from absurd.queues q
    where q.storage_mode = 'partitioned' and q.detach_mode = 'empty'
      and (p_queue_name is null or q.queue_name = p_queue_name)
    order by q.queue_name
  loop
    for v_part in
      select p.parent_table, p.partition_table from absurd._queue_partitions(v_queue.queue_name) p
      where not p.is_default
        and absurd.uuidv7_timestamp(p.upper_id) < v_now - v_queue.detach_min_age
      order by array_position(array['t', 'r', 'c', 'w', 's'], p.prefix), p.upper_id
    loop
      execute format('select exists (select 1 from absurd.%I)', v_part.partition_table)
        into v_rows;
      continue when v_rows;
      queue_name := v_queue.queue_name;
      parent_table := v_part.parent_table;
      partition_table := v_part.partition_table;
      return next;
    end loop;
  end loop;
end;
$$;

-- Refuses (AB015) a name that is not a partition-shaped table of a queue, so
-- no call can drop absurd.queues or a queue's own table by mistake.
create or replace function absurd._require_partition_name(p_table text)
returns void
language plpgsql
stable
as $$
begin
  if p_table !~ '^[trcws]_.+_([0-9]{3}|d)$'
     or exists (select 1 from absurd.queues q
                where p_table in ('t_' || q.queue_name, 'r_' || q.queue_name,
                                  'c_' || q.queue_name, 'w_' || q.queue_name,
                                  's_' || q.queue_name))
     or exists (select 1 from pg_class c where c.relnamespace = 'absurd'::regnamespace
                and c.relname = p_table and c.relkind <> 'r') then
    perform absurd._raise('AB015', format('Table "%s" is not a queue partition', p_table));
  end if;
end;
$$;

create or replace function absurd._cron_unschedule(p_job_names text[])
returns void
language plpgsql
as $$
declare
  v_job bigint;
begin
  if to_regclass('cron.job') is null or p_job_names is null then
    return;
  end if;
  for v_job in execute 'select jobid from cron.job where jobname = any ($1)' using p_job_names loop
    execute 'select cron.unschedule($1)' using v_job;
  end loop;
end;
$$;

-- Drops a partition once it is detached; unschedules the named pg_cron job
-- (and its paired detach job) as upstream does. Returns true when dropped.
create or replace function absurd.drop_detached_partition(
  p_partition_table text,
  p_unschedule_job_name text default null
)
returns boolean
language plpgsql
as $$
declare
  v_table text := nullif(btrim(coalesce(p_partition_table, '')), '');
  v_detach_job text;
  v_oid oid;
begin
  if v_table is null then
    perform absurd._raise('AB014', 'partition table must be provided');
  end if;
  if p_unschedule_job_name like 'absurd\_drop\_run\_%' then
    v_detach_job := 'absurd_detach_run_' || substr(p_unschedule_job_name, 17);
  end if;
  v_oid := to_regclass(format('absurd.%I', v_table));
  if v_oid is null then
    perform absurd._cron_unschedule(array[p_unschedule_job_name, v_detach_job]);
    return false;
  end if;
  perform absurd._require_partition_name(v_table);
  if exists (select 1 from pg_inherits where inhrelid = v_oid) then
    return false;  -- still attached (or a detach is pending): try again later
  end if;
  perform absurd._cron_unschedule(array[v_detach_job]);
  execute format('drop table if exists absurd.%I', v_table);
  perform absurd._cron_unschedule(array[p_unschedule_job_name]);
  return true;
end;
$$;

-- pg_cron's API, or AB007 naming what is missing.
create or replace function absurd._require_cron(p_schedule boolean default true)
returns void
language plpgsql
stable
as $$
begin
  if to_regclass('cron.job') is null then
    perform absurd._raise('AB007', 'pg_cron is not available (missing cron.job)');
  end if;
  if p_schedule and not exists (select 1 from pg_proc where proname = 'schedule'
                     and pronamespace = 'cron'::regnamespace) then
    perform absurd._raise('AB007', 'pg_cron is not available (missing cron.schedule)');
  end if;
  if not exists (select 1 from pg_proc where proname = 'unschedule'
                 and pronamespace = 'cron'::regnamespace) then
    perform absurd._raise('AB007', 'pg_cron is not available (missing cron.unschedule)');
  end if;
end;
$$;

create or replace function absurd._cron_scope(p_queue_name text)
returns text
language sql
immutable
as $$
  select case when p_queue_name is null then 'all' else left(md5(p_queue_name), 12) end;
$$;

-- Plans pg_cron jobs that detach and then drop the oldest detach candidate of
-- each parent table, one pipeline per parent at a time (upstream's job names).
create or replace function absurd.schedule_detach_jobs(p_queue_name text default null)
returns table (job_name text, job_id bigint, queue_name text, partition_table text, job_kind text)
language plpgsql
as $$
#variable_conflict use_column
declare
  v_scope text;
  v_cand record;
  v_parent_key text;
  v_key text;
  v_detach text;
  v_drop text;
  v_command text;
begin
  if p_queue_name is not null then
    perform absurd.validate_queue_name(p_queue_name);
  end if;
  perform absurd._require_cron();
  v_scope := absurd._cron_scope(p_queue_name);
  for v_cand in
    select distinct on (c.parent_table) c.queue_name, c.parent_table, c.partition_table
    from absurd.list_detach_candidates(p_queue_name) c
    cross join lateral absurd._partition_bounds(to_regclass(format('absurd.%I', c.partition_table))) b
    order by c.parent_table, b.upper_id, c.partition_table
  loop
    v_parent_key := left(md5(v_cand.parent_table), 8);
    continue when exists (select 1 from cron.job j
      where j.jobname like 'absurd\_detach\_run\_%\_' || v_parent_key || '\_%'
         or j.jobname like 'absurd\_drop\_run\_%\_' || v_parent_key || '\_%');
    v_key := left(md5(v_cand.parent_table || ':' || v_cand.partition_table), 12);
    v_detach := format('absurd_detach_run_%s_%s_%s', v_scope, v_parent_key, v_key);
    v_drop := format('absurd_drop_run_%s_%s_%s', v_scope, v_parent_key, v_key);
    if not exists (select 1 from cron.job j
                   where j.jobname = v_detach or j.jobname like 'absurd\_detach\_run\_%\_' || v_key) then
      -- CONCURRENTLY is impossible while the parent has a DEFAULT partition.
      v_command := format('alter table absurd.%I detach partition absurd.%I%s',
        v_cand.parent_table, v_cand.partition_table,
        case when to_regclass(format('absurd.%I', v_cand.parent_table || '_d')) is null
          then ' concurrently' else '' end);
      execute 'select cron.schedule($1, $2, $3)' into job_id using v_detach, '* * * * *', v_command;
      job_name := v_detach;
      queue_name := v_cand.queue_name;
      partition_table := v_cand.partition_table;
      job_kind := 'detach';
      return next;
    end if;
    if not exists (select 1 from cron.job j
                   where j.jobname = v_drop or j.jobname like 'absurd\_drop\_run\_%\_' || v_key) then
      execute 'select cron.schedule($1, $2, $3)' into job_id
        using v_drop, '* * * * *',
              format('select absurd.drop_detached_partition(%L, %L);', v_cand.partition_table, v_drop);
      job_name := v_drop;
      queue_name := v_cand.queue_name;
      partition_table := v_cand.partition_table;
      job_kind := 'drop';
      return next;
    end if;
  end loop;
end;
$$;

-- (Re)schedules the three pg_cron maintenance jobs of one queue or of all.
create or replace function absurd.enable_cron(
  p_queue_name text default null,
  p_partition_schedule text default '5 * * * *',
  p_cleanup_schedule text default '17 * * * *',
  p_detach_schedule text default '29 * * * *'
)
returns table (job_name text, job_id bigint)
language plpgsql
as $$
#variable_conflict use_column
declare
  v_scope text := absurd._cron_scope(p_queue_name);
  v_arg text := coalesce(quote_literal(p_queue_name), 'null::text');
  v_job record;
begin
  if p_queue_name is not null then
    perform absurd._require_queue(p_queue_name);
  end if;
  if p_partition_schedule is null or btrim(p_partition_schedule) = '' then
    perform absurd._raise('AB014', 'Partition schedule must be provided');
  end if;
  if p_cleanup_schedule is null or btrim(p_cleanup_schedule) = '' then
    perform absurd._raise('AB014', 'Cleanup schedule must be provided');
  end if;
  if p_detach_schedule is null or btrim(p_detach_schedule) = '' then
    perform absurd._raise('AB014', 'Detach schedule must be provided');
  end if;
  perform absurd._require_cron();
  for v_job in
    select * from (values
      (1, 'absurd_partitions_' || v_scope, p_partition_schedule,
       format('select absurd.ensure_partitions(%s);', v_arg)),
      (2, 'absurd_cleanup_' || v_scope, p_cleanup_schedule,
       format('select * from absurd.cleanup_all_queues(%s);', v_arg)),
      (3, 'absurd_detach_plan_' || v_scope, p_detach_schedule,
       format('select * from absurd.schedule_detach_jobs(%s);', v_arg))) j(n, name, schedule, command)
    order by n
  loop
    perform absurd._cron_unschedule(array[v_job.name]);
    execute 'select cron.schedule($1, $2, $3)' into job_id
      using v_job.name, v_job.schedule, v_job.command;
    job_name := v_job.name;
    return next;
  end loop;
end;
$$;

-- Unschedules the jobs enable_cron and schedule_detach_jobs made for that scope.
create or replace function absurd.disable_cron(p_queue_name text default null)
returns table (job_name text, job_id bigint)
language plpgsql
as $$
#variable_conflict use_column
declare
  v_scope text;
  v_job record;
begin
  if p_queue_name is not null then
    perform absurd.validate_queue_name(p_queue_name);
  end if;
  perform absurd._require_cron(false);
  v_scope := absurd._cron_scope(p_queue_name);
  for v_job in execute $j$
      select jobid, jobname from cron.job
      where jobname in ('absurd_partitions_' || $1, 'absurd_cleanup_' || $1,
                        'absurd_detach_plan_' || $1)
         or jobname like 'absurd\_detach\_run\_' || $1 || '\_%'
         or jobname like 'absurd\_drop\_run\_' || $1 || '\_%'
      order by jobname, jobid$j$ using v_scope
  loop
    execute 'select cron.unschedule($1)' using v_job.jobid;
    job_name := v_job.jobname;
    job_id := v_job.jobid;
    return next;
  end loop;
end;
$$;

-- ---- Beyond upstream: maintenance without pg_cron (absurd.maintenance) -----

-- Applies what claim_task otherwise applies only while a worker polls: expired
-- leases are failed (retried per policy) and cancellation policies fire. Up
-- to p_limit of each; returns how many of each were due.
create or replace function absurd.sweep_queue(p_queue_name text, p_limit integer default 1000)
returns table (cancelled integer, expired integer)
language plpgsql
set enable_seqscan = off
as $$
declare
  v_now timestamptz := absurd.current_time();
  v_limit integer := greatest(coalesce(p_limit, 1000), 1);
begin
  perform absurd._require_queue(p_queue_name);
  execute 'select count(*) from (' || absurd._sql('sweep.cancellations', p_queue_name) || ') x'
    into cancelled using v_now, v_limit;
  execute 'select count(*) from (' || absurd._sql('sweep.leases', p_queue_name) || ') x'
    into expired using v_now, v_limit;
  perform absurd._sweep(p_queue_name, v_now, v_limit,
    (select flow_enabled from absurd.queues where queue_name = p_queue_name));
  if cancelled + expired > 0 then
    perform absurd._notify(p_queue_name, 'sweep');
  end if;
  return next;
end;
$$;

-- Weeks of a partitioned queue that can be retired as a whole: outside the
-- provisioning window, and every task in them finished before the cleanup
-- cut-off. Checked again, race-free, by _retire_week once they are detached.
create or replace function absurd._retirable_weeks(p_queue_name text)
returns table (lower_id uuid, upper_id uuid, partitions text[], parents text[])
language plpgsql
as $$
declare
  v_now timestamptz := absurd.current_time();
  v_policy record;
  v_week record;
  v_live boolean;
begin
  select * into v_policy from absurd.queues
  where queue_name = p_queue_name and storage_mode = 'partitioned';
  if not found then
    return;
  end if;
  for v_week in
    select p.lower_id as lo, p.upper_id as hi,
           array_agg(p.partition_table order by array_position(array['t', 'c', 's', 'r', 'w'], p.prefix)) as parts,
           array_agg(p.parent_table order by array_position(array['t', 'c', 's', 'r', 'w'], p.prefix)) as parents
    from absurd._queue_partitions(p_queue_name) p
    where not p.is_default
      and absurd.uuidv7_timestamp(p.upper_id)
          <= least(absurd.week_bucket_utc(v_now - v_policy.partition_lookback),
                   v_now - v_policy.cleanup_ttl)
    group by p.lower_id, p.upper_id
    order by p.lower_id
  loop
    v_live := absurd._week_is_live(p_queue_name, v_week.parts, v_now - v_policy.cleanup_ttl);
    continue when v_live;
    lower_id := v_week.lo;
    upper_id := v_week.hi;
    partitions := v_week.parts;
    parents := v_week.parents;
    return next;
  end loop;
end;
$$;

-- Does a week (its t/c/r/w partitions, attached or detached) hold anything
-- still needed: a task not finished before p_cutoff, a task another task
-- awaits, or a run of such a task?
create or replace function absurd._week_is_live(p_queue_name text, p_parts text[], p_cutoff timestamptz)
returns boolean
language plpgsql
as $$
declare
  v_part text;
  v_live boolean;
begin
  foreach v_part in array p_parts loop
    if v_part like 't\_%' then
      execute format($q$select exists (select 1 from absurd.%I t
          where t.state not in ('completed', 'failed', 'cancelled') or t.finished_at is null
             or t.finished_at >= $1
             or exists (select 1 from absurd.task_watchers tw
                        where tw.queue_name = $2 and tw.task_id = t.task_id))$q$, v_part)
        into v_live using p_cutoff, p_queue_name;
    elsif v_part like 'r\_%' then
      -- A run whose task (in any week) is live, or still running/sleeping.
      execute format($q$select exists (select 1 from absurd.%I r
          left join absurd.%I t on t.task_id = r.task_id
          where r.state in ('pending', 'running', 'sleeping')
             or (t.task_id is not null and (t.state not in ('completed', 'failed', 'cancelled')
                 or t.finished_at is null or t.finished_at >= $1)))$q$,
          v_part, 't_' || p_queue_name)
        into v_live using p_cutoff;
    elsif v_part like 'w\_%' then
      execute format('select exists (select 1 from absurd.%I)', v_part) into v_live;
    else
      v_live := false;  -- checkpoints and stream chunks belong to the tasks of the same week
    end if;
    if v_live then
      return true;
    end if;
  end loop;
  return false;
end;
$$;

-- Second half of retiring a week, after absurd.maintenance detached its
-- partitions: checks them again (nothing can change them now), deletes what
-- their tasks left in other weeks (later runs and waits, idempotency keys),
-- and drops them. Returns false, dropping nothing, when the week turned out
-- to be live: the caller attaches the partitions back (_reattach_week).
create or replace function absurd._retire_week(
  p_queue_name text, p_partitions text[], p_lower uuid, p_upper uuid)
returns boolean
language plpgsql
as $$
declare
  v_cutoff timestamptz;
  v_part text;
  v_t text;
begin
  select absurd.current_time() - cleanup_ttl into v_cutoff
  from absurd.queues where queue_name = p_queue_name;
  foreach v_part in array p_partitions loop
    perform absurd._require_partition_name(v_part);
    if exists (select 1 from pg_inherits where inhrelid = to_regclass(format('absurd.%I', v_part))) then
      return false;
    end if;
  end loop;
  if v_cutoff is null or absurd._week_is_live(p_queue_name, p_partitions, v_cutoff) then
    return false;
  end if;
  select p into v_t from unnest(p_partitions) p where p like 't\_%';
  if v_t is not null then
    -- Later attempts of these tasks live in later weeks' partitions.
    execute format('delete from absurd.%I where run_id >= $1 and task_id in (select task_id from absurd.%I)',
                   'r_' || p_queue_name, v_t) using p_upper;
    execute format('delete from absurd.%I where run_id >= $1 and task_id in (select task_id from absurd.%I)',
                   'w_' || p_queue_name, v_t) using p_upper;
    if to_regclass(format('absurd.%I', 'i_' || p_queue_name)) is not null then
      execute format('delete from absurd.%I where task_id >= $1 and task_id < $2',
                     'i_' || p_queue_name) using p_lower, p_upper;
    end if;
    -- The week's tasks take their promises with them (promises_ti).
    delete from absurd.promises
    where queue_name = p_queue_name and task_id >= p_lower and task_id < p_upper;
  end if;
  foreach v_part in array p_partitions loop
    execute format('drop table absurd.%I', v_part);
  end loop;
  return true;
end;
$$;

create or replace function absurd._reattach_week(
  p_queue_name text, p_partitions text[], p_lower uuid, p_upper uuid)
returns void
language plpgsql
as $$
declare
  v_part text;
begin
  foreach v_part in array p_partitions loop
    continue when exists (select 1 from pg_inherits
                          where inhrelid = to_regclass(format('absurd.%I', v_part)));
    execute format('alter table absurd.%I attach partition absurd.%I for values from (%L) to (%L)',
                   left(v_part, 2) || p_queue_name, v_part, p_lower, p_upper);
  end loop;
end;
$$;

-- -----------------------------------------------------------------------------
-- Bring every existing queue up to this version (new columns and indexes).
-- -----------------------------------------------------------------------------
do $$
declare
  v_queue text;
begin
  for v_queue in select queue_name from absurd.queues order by queue_name loop
    perform absurd.ensure_queue_tables(v_queue);
  end loop;
end;
$$;
