-- Named queries for absurdctl, Habitat, storage maintenance and the schema installer
-- (loaded by absurd/queries.py): their reads, and their calls of the engine's functions.
-- Each block starts with "-- name: noun_verb --". Per-queue tables are written
-- {t} {r} {c} {e} {w}; values are bind parameters, %(name)s.
-- Every read is bounded (LIMIT or a key lookup) and index-driven. Each block is
-- EXPLAINed by tests/cli/test_query_plans.py or tests/habitat/test_plans.py.

-- name: queue_list --
select queue_name, created_at from absurd.queues order by queue_name

-- ---------------------------------------------------------------------------
-- absurdctl (src/absurd/cli). Each is EXPLAINed by tests/cli/test_query_plans.py.
-- ---------------------------------------------------------------------------

-- name: queue_list_detail --
select queue_name, storage_mode, created_at from absurd.queues order by queue_name

-- name: queue_get --
select queue_name, storage_mode, created_at from absurd.queues where queue_name = %(queue)s

-- name: task_list --
-- Newest tasks first (task ids are UUIDv7, so id order is creation order): a backward
-- scan of the primary key that stops after `limit` rows; `before` (a task id) pages.
select t.task_id, t.task_name, t.state, t.attempts, t.enqueue_at, r.run_id, r.claimed_by,
  coalesce(r.completed_at, r.failed_at, t.cancelled_at, r.started_at, t.enqueue_at) as updated_at
from {t} t left join {r} r on r.run_id = t.last_attempt_run
where (%(before)s::uuid is null or t.task_id < %(before)s::uuid)
order by t.task_id desc
limit %(limit)s

-- name: task_list_by_state --
-- Tasks in one state, most recently active first: walks the runs' (state, available_at)
-- index r_<q>_sai newest first and probes each run's task by primary key (the lateral
-- LIMIT 1 keeps it a nested loop), keeping tasks whose latest run this is.
select t.task_id, t.task_name, t.state, t.attempts, t.enqueue_at, r.run_id, r.claimed_by,
  coalesce(r.completed_at, r.failed_at, t.cancelled_at, r.started_at, t.enqueue_at) as updated_at
from {r} r
cross join lateral (
  select t.task_id, t.task_name, t.state, t.attempts, t.enqueue_at, t.cancelled_at
  from {t} t
  where t.task_id = r.task_id and t.last_attempt_run = r.run_id and t.state = %(state)s::text
  limit 1
) t
where r.state = %(state)s::text
order by r.available_at desc
limit %(limit)s

-- name: task_list_by_name --
-- Tasks of one name, newest first: a backward range scan of the name index
-- t_<q>_tni (left(task_name, 128), task_id); the whole name and a state are filters
-- on that range (it costs the number of tasks of that name, not of the queue).
select t.task_id, t.task_name, t.state, t.attempts, t.enqueue_at, r.run_id, r.claimed_by,
  coalesce(r.completed_at, r.failed_at, t.cancelled_at, r.started_at, t.enqueue_at) as updated_at
from {t} t left join {r} r on r.run_id = t.last_attempt_run
where left(t.task_name, 128) = left(%(task_name)s::text, 128)
  and t.task_name = %(task_name)s::text
  and (%(state)s::text is null or t.state = %(state)s::text)
  and (%(before)s::uuid is null or t.task_id < %(before)s::uuid)
order by t.task_id desc
limit %(limit)s

-- name: task_find --
-- Is this task id in this queue? (a primary-key probe; dump-task unions one per queue,
-- Habitat probes queue after queue)
select task_id from {t} where task_id = %(task_id)s::uuid

-- name: run_find --
-- The task of a run id in this queue (a primary-key probe, unioned per queue).
select task_id from {r} where run_id = %(run_id)s::uuid

-- The four reads of one task, shared by dump-task and Habitat's task page. `limit`
-- caps the rows of a task with very many runs, steps or waits (Habitat passes its page
-- cap; dump-task passes null, i.e. everything: a dump is complete).

-- name: task_get --
select task_id, task_name, state, attempts, max_attempts, params, headers, retry_strategy,
  cancellation, priority, idempotency_key, enqueue_at, first_started_at, cancelled_at,
  finished_at, last_attempt_run, completed_payload, flow_key
from {t} where task_id = %(task_id)s::uuid

-- name: run_list_by_task --
select run_id, task_id, attempt, state, claimed_by, claim_expires_at, available_at, wake_event,
  event_payload, started_at, completed_at, failed_at, result, failure_reason, created_at
from {r} where task_id = %(task_id)s::uuid
order by attempt, run_id
limit %(limit)s

-- name: checkpoint_list_by_task --
select checkpoint_name, state, status, owner_run_id, updated_at
from {c} where task_id = %(task_id)s::uuid
order by updated_at, checkpoint_name
limit %(limit)s

-- name: wait_list_by_task --
-- A task's event waits, with the event's payload and emission time once it has been
-- emitted. Awaiting an event that was not emitted yet leaves a placeholder row in
-- {e} (payload null, emitted_at 'epoch'): the join skips it, so both columns are
-- null until the event really is emitted.
select w.run_id, w.step_name, w.event_name, w.timeout_at, w.created_at,
  e.payload as event_payload, e.emitted_at
from {w} w left join {e} e on e.event_name = w.event_name and e.payload is not null
where w.task_id = %(task_id)s::uuid
order by w.created_at, w.step_name
limit %(limit)s

-- name: task_count_finished_before --
-- cleanup --dry-run: finished tasks older than the cut-off (index t_<q>_fai).
select count(*) as n from {t} where finished_at < %(cutoff)s::timestamptz

-- name: event_count_before --
-- cleanup --dry-run: events older than the cut-off (index e_<q>_eai).
select count(*) as n from {e} where emitted_at < %(cutoff)s::timestamptz

-- name: partition_has_default --
-- Whether a partitioned table has a DEFAULT partition (DETACH CONCURRENTLY is refused then).
select exists (
  select 1 from pg_partitioned_table
  where partrelid = to_regclass(%(parent)s::text) and partdefid <> 0
) as has_default

-- name: schema_function_list --
-- validate: the functions in schema absurd (catalogue read, one row per overload).
select p.proname as name from pg_proc p
where p.pronamespace = to_regnamespace('absurd')

-- name: schema_relation_list --
-- validate: tables and indexes in schema absurd.
select c.relname as name, c.relkind as kind from pg_class c
where c.relnamespace = to_regnamespace('absurd')

-- name: schema_trigger_list --
-- validate: the triggers on tables in schema absurd.
select c.relname as table_name, tg.tgname as name
from pg_trigger tg join pg_class c on c.oid = tg.tgrelid
where c.relnamespace = to_regnamespace('absurd') and not tg.tgisinternal

-- ---------------------------------------------------------------------------
-- The tools' calls of the engine's functions (absurdctl, Habitat's actions, storage
-- maintenance, the schema installer) and the small reads around them. One block
-- per call, whoever sends it: JSON arguments are cast here, so callers may pass
-- text or Jsonb.
-- ---------------------------------------------------------------------------

-- name: clock_now --
-- The database's clock (absurd.fake_now moves it in tests).
select absurd.current_time() as now

-- name: database_exists --
-- absurdctl dev: whether the server has this database yet.
select 1 as found from pg_database where datname = %(database)s

-- name: relation_exists --
-- Whether a table exists; `relation` is a qualified, quoted name ("absurd"."t_q_d").
select to_regclass(%(relation)s::text) is not null as found

-- name: advisory_lock_try --
select pg_try_advisory_lock(%(key)s::bigint) as locked

-- name: advisory_unlock --
select pg_advisory_unlock(%(key)s::bigint) as unlocked

-- name: advisory_xact_lock --
select pg_advisory_xact_lock(%(key)s::bigint)

-- name: schema_version_probe --
-- Whether a schema is installed: asked first, as a call of a missing function fails.
select to_regprocedure('absurd.get_schema_version()') is not null as installed

-- name: schema_version_get --
select absurd.get_schema_version() as version

-- name: schema_statement_name_list --
-- validate: the names of the engine's catalogue of per-queue statements.
select absurd._sql_names() as name

-- name: schema_statement_get --
select absurd._sql(%(statement)s, %(queue)s) as text

-- name: role_pair_list --
-- The least-privilege role pairs installed (table absurd.installed_roles, roles.sql).
select worker_role, reader_role from absurd.installed_roles

-- name: role_pair_install --
select absurd._install_roles(%(worker)s, %(reader)s)

-- name: role_pair_uninstall --
select absurd._uninstall_roles(%(worker)s, %(reader)s)

-- name: role_ingress_install --
-- The ingress role (absurd.ingress): EXECUTE on what a verified request can cause.
select absurd._install_ingress_role(%(ingress)s, %(create)s)

-- name: role_ingress_uninstall --
select absurd._uninstall_ingress_role(%(ingress)s)

-- name: queue_create --
-- A null storage_mode creates an unpartitioned queue, as create_queue(name) does.
select absurd.create_queue(%(queue)s::text, coalesce(%(storage_mode)s::text, 'unpartitioned'))

-- name: queue_drop --
select absurd.drop_queue(%(queue)s)

-- name: queue_policy_get --
select queue_name, storage_mode, default_partition, partition_lookahead, partition_lookback,
  cleanup_ttl, cleanup_limit, detach_mode, detach_min_age
from absurd.get_queue_policy(%(queue)s)

-- name: queue_policy_set --
select absurd.set_queue_policy(%(queue)s, %(policy)s::jsonb)

-- name: flow_policy_get --
-- The queue's flow policy: max_running, max_running_per_key, the rate limits and
-- flow_hold (absurd.get_flow_policy; set through queue_policy_set).
select queue_name, max_running, max_running_per_key, flow_hold, rate_limit, rate_limit_per_key
from absurd.get_flow_policy(%(queue)s)

-- name: flow_limit_set --
-- A key's override (null limits: removed); raising one wakes the key's parked runs.
select absurd.set_flow_limit(%(queue)s, %(flow_key)s, %(limits)s::jsonb)

-- name: flow_limit_list --
-- The queue's per-key overrides, by key, from a key on (keyset pages), at most %(limit)s.
select flow_key, limits, updated_at from absurd.get_flow_limits(%(queue)s)
where %(after)s::text is null or flow_key > %(after)s::text
order by flow_key
limit %(limit)s

-- name: task_explain --
-- Why a task is not running (absurd.explain_task): absurdctl explain-task, Habitat's
-- task page, the SDK's explain_task.
select reason, message, until, task_state, run_id, attempt, flow_key, running, "limit",
  event_name
from absurd.explain_task(%(queue)s, %(task_id)s::uuid)

-- name: queue_maintenance_policy --
-- The policy storage maintenance follows (the TTL in seconds, as cleanup_* take it).
select storage_mode, extract(epoch from cleanup_ttl) as cleanup_ttl_seconds, cleanup_limit,
  default_partition = 'enabled' as default_partition, partition_lookback, partition_lookahead
from absurd.queues where queue_name = %(queue)s

-- name: queue_sweep --
select cancelled, expired from absurd.sweep_queue(%(queue)s, %(limit)s)

-- name: task_spawn --
select task_id, run_id, attempt, created
from absurd.spawn_task(%(queue)s, %(task_name)s, %(params)s::jsonb, %(options)s::jsonb)

-- name: task_retry --
select task_id, run_id, attempt, created
from absurd.retry_task(%(queue)s, %(task_id)s::uuid, %(options)s::jsonb)

-- name: task_cancel --
select absurd.cancel_task(%(queue)s, %(task_id)s::uuid)

-- name: event_emit --
select absurd.emit_event(%(queue)s, %(event_name)s, %(payload)s::jsonb)

-- Schedules (absurd.create_schedule ... fire_schedules): shared by the SDK, absurdctl
-- and Habitat. `options` and `changes` are JSON objects (docs/engine.md, "Schedules").
-- name: schedule_create --
select schedule_name, next_fire_at
from absurd.create_schedule(%(queue)s, %(name)s, %(task_name)s, %(cron)s, %(options)s::jsonb)

-- name: schedule_update --
select schedule_name, next_fire_at, version
from absurd.update_schedule(%(queue)s, %(name)s, %(changes)s::jsonb)

-- name: schedule_pause --
select absurd.pause_schedule(%(queue)s, %(name)s, %(note)s)

-- name: schedule_resume --
select absurd.resume_schedule(%(queue)s, %(name)s) as next_fire_at

-- name: schedule_delete --
select absurd.delete_schedule(%(queue)s, %(name)s) as deleted

-- name: schedule_trigger --
select absurd.trigger_schedule(%(queue)s, %(name)s) as task_id

-- name: schedule_backfill --
select absurd.backfill_schedule(%(queue)s, %(name)s, %(start)s::timestamptz,
  %(end)s::timestamptz) as spawned

-- name: schedule_fire --
select absurd.fire_schedules(%(queue)s, %(limit)s) as spawned

-- name: schedule_list --
select schedule_name, task_name, cron, timezone, definition, paused, note, next_fire_at,
  last_fire_at, last_task_id, buffered_tick, version, created_at, updated_at
from absurd.list_schedules(%(queue)s)

-- name: schedule_preview --
select tick, fire_at from absurd.preview_schedule(%(queue)s, %(name)s, %(count)s)

-- name: schedule_fire_list --
-- The latest fires of a schedule, newest first, with the state of each fire's task
-- (a primary-key probe of {t} per row; null once the task is cleaned up).
select f.fire_id, f.tick, f.through, f.ticks, f.outcome, f.task_id, f.version, f.fired_at,
  (select t.state from {t} t where t.task_id = f.task_id) as task_state
from absurd.list_schedule_fires(%(queue)s, %(name)s, %(limit)s) f
order by f.fire_id desc

-- Promises (docs/engine.md, "Promises") for absurdctl; resolve and reject are the
-- SDK's promise_resolve and promise_reject blocks. The state is read as get_promise
-- reads it: a pending promise past its expiry is "expired".
-- name: promise_list --
-- A queue's promises, newest first, at most `limit`: a backward walk of promises_qc.
-- With `task_id`, that task's: those it owns (promises_ti) and those its runs wait
-- for (its {w} rows of an event "$promise:<id>", each a primary-key probe). `state`
-- (null: any) filters them. The null tests fold away: the statement is planned for
-- its values (absurdctl and Habitat send it unprepared).
select p.promise_id, p.task_id, s.state, p.payload, p.tags, p.idempotency_key,
  p.delivery_key, p.settled_by, p.created_at, p.expires_at, p.settled_at
from absurd.promises p
cross join lateral (
  select case when p.state = 'pending' and p.expires_at <= absurd.current_time()
    then 'expired' else p.state end as state
) s
where p.queue_name = %(queue)s
  and (%(task_id)s::uuid is null or p.task_id = %(task_id)s::uuid
    or p.promise_id = any (array(
      select case when w.event_name ~ '^[$]promise:[0-9a-f]{{8}}(-[0-9a-f]{{4}}){{3}}-[0-9a-f]{{12}}$'
        then substr(w.event_name, 10)::uuid end
      from {w} w where w.task_id = %(task_id)s::uuid)))
  and (%(state)s::text is null or s.state = %(state)s::text)
order by p.created_at desc, p.promise_id desc
limit %(limit)s

-- name: promise_show --
-- One promise (get_promise: AB030 when unknown) with its owning task's name and state
-- (primary-key probes of {t}; null when it has no owner or the task is gone).
select p.promise_id, p.queue_name, p.task_id,
  (select t.task_name from {t} t where t.task_id = p.task_id) as task_name,
  (select t.state from {t} t where t.task_id = p.task_id) as task_state,
  p.state, p.payload, p.tags, p.idempotency_key, p.delivery_key, p.settled_by, p.created_at,
  p.expires_at, p.settled_at
from absurd.get_promise(%(queue)s, %(promise_id)s::uuid) p

-- name: task_cleanup --
-- One batch: up to `limit` finished tasks older than `ttl` seconds (cleanup, maintenance).
select absurd.cleanup_tasks(%(queue)s, %(ttl)s, %(limit)s) as n

-- name: event_cleanup --
-- One batch: up to `limit` events older than `ttl` seconds that no run waits for.
select absurd.cleanup_events(%(queue)s, %(ttl)s, %(limit)s) as n

-- name: cron_enable --
select job_name, job_id from absurd.enable_cron(%(queue)s, %(partition_schedule)s,
  %(cleanup_schedule)s, %(detach_schedule)s)

-- name: cron_disable --
select job_name, job_id from absurd.disable_cron(%(queue)s)

-- name: partition_detach_candidate_list --
-- Empty, old partitions (all queues when `queue` is null).
select queue_name, parent_table, partition_table
from absurd.list_detach_candidates(%(queue)s)

-- name: partition_detach_pending --
-- No row: not attached; false: attached; true: half-way through DETACH CONCURRENTLY.
select inhdetachpending as pending from pg_inherits where inhrelid = to_regclass(%(partition)s::text)

-- name: partition_drop_detached --
-- Kept bare: `list-detach-candidates --show-sql` prints it, bound, for people to run.
select absurd.drop_detached_partition(%(partition)s)

-- name: partition_week_list --
-- The weeks (UTC Monday buckets) from `lookback` before now to `lookahead` after,
-- stepped in hours: '7 days' would follow the session time zone's daylight saving.
select generate_series(absurd.week_bucket_utc(n - %(lookback)s::interval),
  absurd.week_bucket_utc(n + %(lookahead)s::interval), interval '168 hours') as week
from absurd.current_time() n

-- name: partition_week_add --
select absurd._add_week_partition(%(prefix)s, %(queue)s, %(week)s) as created

-- name: partition_week_retirable_list --
select lower_id, upper_id, partitions, parents from absurd._retirable_weeks(%(queue)s)

-- name: partition_week_retire --
select absurd._retire_week(%(queue)s, %(partitions)s, %(lower)s, %(upper)s) as retired

-- name: partition_week_reattach --
select absurd._reattach_week(%(queue)s, %(partitions)s, %(lower)s, %(upper)s)

-- habitat ---------------------------------------------------------------------
-- The dashboard's reads (src/absurd/habitat/store.py). Counts are bounded
-- (count over a LIMITed subquery, shown as "N+" at the cap); lists are keyset
-- pages; filters that no index serves (task name, params, event name prefix)
-- look at a bounded window of the newest rows and say where they stopped.

-- name: habitat_ping --
-- The health check (/healthz): can a pooled connection still run a statement?
select 1 as ok

-- name: habitat_queue_list --
select q.queue_name, q.created_at, q.storage_mode, q.default_partition, q.partition_lookahead,
       q.partition_lookback, q.cleanup_ttl, q.cleanup_limit, q.detach_mode, q.detach_min_age,
       case when c.reltuples >= 0 then c.reltuples::bigint end as tasks_estimate
from absurd.queues q
left join pg_class c
  on c.relname = 't_' || q.queue_name
 and c.relnamespace = 'absurd'::regnamespace
order by q.queue_name
limit 1000

-- name: habitat_queue_metrics --
select
  (select count(*) from (select 1 from {r} where state = 'pending'
     order by available_at limit %(cap)s) x) as pending,
  (select count(*) from (select 1 from {r} where state = 'pending'
     and available_at <= %(now)s order by available_at limit %(cap)s) x)
  + (select count(*) from (select 1 from {r} where state = 'sleeping'
     and available_at <= %(now)s order by available_at limit %(cap)s) x) as visible,
  (select count(*) from (select 1 from {r} where state = 'running'
     order by available_at limit %(cap)s) x) as running,
  (select count(*) from (select 1 from {r} where state = 'sleeping'
     order by available_at limit %(cap)s) x) as sleeping,
  (select count(*) from (select 1 from {r} where state = 'completed'
     order by available_at limit %(cap)s) x) as completed,
  (select count(*) from (select 1 from {r} where state = 'failed'
     order by available_at limit %(cap)s) x) as failed,
  (select count(*) from (select 1 from {r} where state = 'cancelled'
     order by available_at limit %(cap)s) x) as cancelled,
  (select count(*) from (select 1 from {t} where finished_at > %(now)s - interval '1 minute'
     and finished_at <= %(now)s and state = 'completed' limit %(cap)s) x) as completed_last_minute,
  (select min(available_at) from {r} where state = 'pending') as oldest_pending_at,
  (select absurd.uuidv7_timestamp(task_id) from {t}
     order by task_id desc limit 1) as newest_task_at

-- name: habitat_queue_gauges --
-- /metrics: every queue's gauges (absurd.queue_gauges: capped, index-driven counts).
select queue_name, pending, running, sleeping, waiting, oldest_pending_age,
       failed_recently, schedule_lag
from absurd.queue_gauges(null, make_interval(secs => %(window)s), %(cap)s)

-- name: habitat_flow_keys --
-- The queue page's keys: those with the most running runs (r_<q>_fki holds only the
-- running keyed runs, as many as run at once) and the first keys with parked runs (a
-- loose index scan of r_<q>_fpi: one probe per key, never a walk of a backlog), at
-- most %(keys)s of each. Per key: running, parked (counted up to %(cap)s) and the
-- key's override.
with recursive running as (
  select flow_key, count(*) as running from {r}
  where state = 'running' and flow_key is not null
  group by flow_key
  order by count(*) desc, flow_key
  limit %(keys)s
), parked_keys(flow_key) as (
  (select flow_key from {r}
   where state = 'pending' and available_at = 'infinity' and flow_key is not null
   order by flow_key limit 1)
  union all
  select (select r.flow_key from {r} r
          where r.state = 'pending' and r.available_at = 'infinity'
            and r.flow_key is not null and r.flow_key > p.flow_key
          order by r.flow_key limit 1)
  from parked_keys p
  where p.flow_key is not null
), keys as (
  select flow_key from running
  union
  select flow_key from (select flow_key from parked_keys where flow_key is not null
                        limit %(keys)s) pk
)
select k.flow_key, coalesce(n.running, 0) as running,
  (select count(*) from (select 1 from {r} x
     where x.state = 'pending' and x.available_at = 'infinity' and x.flow_key = k.flow_key
     limit %(cap)s) c) as parked,
  l.limits
from keys k
left join running n on n.flow_key = k.flow_key
left join absurd.flow_limits l on l.queue_name = %(queue)s and l.flow_key = k.flow_key
order by running desc, parked desc, k.flow_key

-- name: habitat_queue_throughput --
select m as minute,
  (select count(*) from (select 1 from {t} where finished_at >= m
     and finished_at < m + interval '1 minute' limit %(cap)s) x) as finished
from generate_series(date_trunc('minute', %(now)s::timestamptz) - interval '29 minutes',
                     date_trunc('minute', %(now)s::timestamptz), interval '1 minute') m
order by m

-- name: habitat_run_page --
select r.run_id, r.task_id, r.attempt, r.state, r.claimed_by, r.claim_expires_at,
       r.available_at, r.started_at, r.completed_at, r.failed_at, r.created_at,
       t.task_name, t.state as task_state, t.max_attempts, t.attempts
from (
  select * from {r}
  where run_id < %(before_id)s and run_id >= %(after_id)s
  order by run_id desc
  limit %(scan)s
) r
cross join lateral (
  select task_name, state, max_attempts, attempts, params from {t} t
  where t.task_id = r.task_id limit 1
) t
where (%(task_name)s::text is null or t.task_name = %(task_name)s::text)
  and (%(params)s::jsonb is null or t.params @> %(params)s::jsonb)
order by r.run_id desc
limit %(limit)s

-- name: habitat_run_window_end --
select run_id, scanned from (
  select run_id, count(*) over () as scanned,
         row_number() over (order by run_id) as n
  from (
    select run_id from {r}
    where run_id < %(before_id)s and run_id >= %(after_id)s
    order by run_id desc
    limit %(scan)s
  ) w
) x
where n = 1

-- name: habitat_run_page_by_state --
select r.run_id, r.task_id, r.attempt, r.state, r.claimed_by, r.claim_expires_at,
       r.available_at, r.started_at, r.completed_at, r.failed_at, r.created_at,
       t.task_name, t.state as task_state, t.max_attempts, t.attempts
from (
  select * from {r}
  where state = %(state)s
    and available_at <= %(before_at)s
    and (available_at < %(before_at)s or run_id < %(before_id)s)
  order by available_at desc, run_id desc
  limit %(scan)s
) r
cross join lateral (
  select task_name, state, max_attempts, attempts, params from {t} t
  where t.task_id = r.task_id limit 1
) t
where r.run_id < %(max_id)s and r.run_id >= %(after_id)s
  and (%(task_name)s::text is null or t.task_name = %(task_name)s::text)
  and (%(params)s::jsonb is null or t.params @> %(params)s::jsonb)
order by r.available_at desc, r.run_id desc
limit %(limit)s

-- name: habitat_run_window_end_by_state --
select available_at, run_id, scanned from (
  select available_at, run_id, count(*) over () as scanned,
         row_number() over (order by available_at, run_id) as n
  from (
    select available_at, run_id from {r}
    where state = %(state)s
      and available_at <= %(before_at)s
      and (available_at < %(before_at)s or run_id < %(before_id)s)
    order by available_at desc, run_id desc
    limit %(scan)s
  ) w
) x
where n = 1

-- name: habitat_task_name_count --
-- How many tasks bear this name, up to `cap` (an index-only range of t_<q>_tni; it
-- counts the names sharing the first 128 characters: an upper bound).
select count(*) as n from (
  select 1 from {t} where left(task_name, 128) = left(%(task_name)s::text, 128)
  order by left(task_name, 128), task_id limit %(cap)s
) x

-- name: habitat_run_page_by_name --
-- Runs of the tasks of one name, newest first, exactly: the name's tasks come from
-- t_<q>_tni (at most `cap` of them: the caller counted first), their runs from
-- r_<q>_ti. The windowed habitat_run_page serves names with more tasks.
select r.run_id, r.task_id, r.attempt, r.state, r.claimed_by, r.claim_expires_at,
       r.available_at, r.started_at, r.completed_at, r.failed_at, r.created_at,
       t.task_name, t.state as task_state, t.max_attempts, t.attempts
from (
  select task_id, task_name, state, max_attempts, attempts, params from {t}
  where left(task_name, 128) = left(%(task_name)s::text, 128)
    and task_name = %(task_name)s::text
  limit %(cap)s
) t
join {r} r on r.task_id = t.task_id
where r.run_id < %(before_id)s and r.run_id >= %(after_id)s
  and (%(params)s::jsonb is null or t.params @> %(params)s::jsonb)
order by r.run_id desc
limit %(limit)s

-- name: habitat_run_page_by_name_and_state --
-- The same in one state, most recently available first (the by-state order).
select r.run_id, r.task_id, r.attempt, r.state, r.claimed_by, r.claim_expires_at,
       r.available_at, r.started_at, r.completed_at, r.failed_at, r.created_at,
       t.task_name, t.state as task_state, t.max_attempts, t.attempts
from (
  select task_id, task_name, state, max_attempts, attempts, params from {t}
  where left(task_name, 128) = left(%(task_name)s::text, 128)
    and task_name = %(task_name)s::text
  limit %(cap)s
) t
join {r} r on r.task_id = t.task_id
where r.state = %(state)s
  and r.available_at <= %(before_at)s
  and (r.available_at < %(before_at)s or r.run_id < %(before_id)s)
  and r.run_id < %(max_id)s and r.run_id >= %(after_id)s
  and (%(params)s::jsonb is null or t.params @> %(params)s::jsonb)
order by r.available_at desc, r.run_id desc
limit %(limit)s

-- name: habitat_task_names --
select distinct task_name from (
  select task_name from {t} order by task_id desc limit %(scan)s
) t
order by task_name
limit 200

-- name: habitat_event_page --
select event_name, payload, emitted_at from (
  select event_name, payload, emitted_at from {e}
  where emitted_at <= %(before_at)s
    and (emitted_at < %(before_at)s or event_name < %(before_name)s)
    and emitted_at >= %(after_at)s
  order by emitted_at desc, event_name desc
  limit %(scan)s
) e
where payload is not null
  and (%(name_like)s::text is null or event_name like %(name_like)s::text)
order by emitted_at desc, event_name desc
limit %(limit)s

-- name: habitat_event_get --
select event_name, payload, emitted_at from {e}
where event_name = %(event_name)s and payload is not null

-- name: habitat_worker_claims --
select r.run_id, r.task_id, r.attempt, r.claimed_by, r.claim_expires_at, r.started_at,
       t.task_name
from (
  select run_id, task_id, attempt, claimed_by, claim_expires_at, started_at from {r}
  where state = 'running' and claim_expires_at is not null
  order by claim_expires_at
  limit %(limit)s
) r
cross join lateral (select task_name from {t} t where t.task_id = r.task_id limit 1) t
order by r.claim_expires_at, r.run_id

-- name: habitat_schedule_page --
-- A queue's schedules by name after `after` (keyset on the primary key), each with
-- its latest fire-log row (a backward probe of schedule_fires_by_schedule) and the
-- state of its last task (a primary-key probe of {t}; null once cleaned up).
select s.schedule_name, s.definition ->> 'task_name' as task_name,
  s.definition ->> 'cron' as cron, s.definition ->> 'timezone' as timezone, s.definition,
  s.paused, s.note, s.paused_at, s.next_fire_at, s.last_fire_at, s.last_task_id,
  s.buffered_tick, s.version, s.created_at, s.updated_at,
  f.outcome as last_outcome, f.fired_at as last_fired_at,
  (select t.state from {t} t where t.task_id = s.last_task_id) as last_task_state
from absurd.schedules s
left join lateral (
  select x.outcome, x.fired_at from absurd.schedule_fires x
  where x.queue_name = s.queue_name and x.schedule_name = s.schedule_name
  order by x.fire_id desc
  limit 1
) f on true
where s.queue_name = %(queue)s and s.schedule_name > %(after)s
order by s.schedule_name
limit %(limit)s

-- name: habitat_schedule_get --
-- One schedule (a primary-key probe), with the same columns as habitat_schedule_page.
select s.schedule_name, s.definition ->> 'task_name' as task_name,
  s.definition ->> 'cron' as cron, s.definition ->> 'timezone' as timezone, s.definition,
  s.paused, s.note, s.paused_at, s.next_fire_at, s.last_fire_at, s.last_task_id,
  s.buffered_tick, s.version, s.created_at, s.updated_at,
  f.outcome as last_outcome, f.fired_at as last_fired_at,
  (select t.state from {t} t where t.task_id = s.last_task_id) as last_task_state
from absurd.schedules s
left join lateral (
  select x.outcome, x.fired_at from absurd.schedule_fires x
  where x.queue_name = s.queue_name and x.schedule_name = s.schedule_name
  order by x.fire_id desc
  limit 1
) f on true
where s.queue_name = %(queue)s and s.schedule_name = %(name)s

-- name: habitat_stream_list --
-- The task's streams (at most `limit`), by name, each with its last row: a skip scan
-- of s_<q>_pkey (task_id, stream, seq) (or s_<q>_ki, which leads with the same two
-- columns; PostgreSQL picks). The recursive walk finds the next name after
-- the last one (one index probe each) and stops at `limit` names; the lateral reads
-- each name's last row backwards. `closed` is the stream's own close_stream row (a
-- stream also closes when its task ends: the caller knows the task's state).
with recursive names (stream, n) as (
  (select s.stream, 1 from {s} s
   where s.task_id = %(task_id)s
   order by s.task_id, s.stream
   limit 1)
  union all
  select (select s.stream from {s} s
          where s.task_id = %(task_id)s and s.stream > names.stream
          order by s.task_id, s.stream
          limit 1), names.n + 1
  from names
  where names.stream is not null and names.n < %(limit)s
)
select names.stream, l.seq as last_seq, l.closed, l.written_at as last_written_at
from names
cross join lateral (
  select s.seq, s.closed, s.written_at from {s} s
  where s.task_id = %(task_id)s and s.stream = names.stream
  order by s.task_id, s.stream, s.seq desc
  limit 1
) l
where names.stream is not null
order by names.stream

-- name: habitat_stream_read --
-- Up to `limit` rows of one stream from seq `from_seq` on (absurd.read_stream: the
-- primary key, in order; a closed stream ends with a row closed = true, chunk null).
select seq, chunk, written_at, attempt, closed
from absurd.read_stream(%(queue)s, %(task_id)s, %(stream)s, %(from_seq)s, %(limit)s)

-- ---------------------------------------------------------------------------
-- absurd.testing (the pytest plugin): the test clock of a test's database (the row
-- absurd.current_time() reads when the database's absurd.test_clock is on). Each is
-- EXPLAINed by tests/cli/test_query_plans.py.
-- ---------------------------------------------------------------------------

-- name: test_clock_reset --
-- The clock of a new test database: the real time, no offset.
insert into absurd.test_clock (id, frozen_at, offset_by) values (true, null, interval '0')
on conflict (id) do update set frozen_at = null, offset_by = interval '0'

-- name: test_database_fingerprint --
-- What a used test database must share with its template to be handed to the next
-- test (else it is dropped and a fresh clone made): its relations (with their grants),
-- functions (body, security, settings, grants), schemas and database settings. Rows
-- are compared apart (absurd.testing._databases). Sent with parameters ({}): %% is %.
select md5(concat_ws('|',
  (select string_agg(format('%%s.%%s:%%s:%%s', n.nspname, c.relname, c.relkind, c.relacl), ','
                     order by n.nspname, c.relname)
   from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where n.nspname not in ('pg_catalog', 'information_schema')
     and n.nspname not like 'pg\_toast%%' and n.nspname not like 'pg\_temp%%'),
  (select string_agg(format('%%s.%%s(%%s):%%s:%%s:%%s:%%s', n.nspname, p.proname,
                            pg_get_function_identity_arguments(p.oid), md5(p.prosrc),
                            p.prosecdef, p.proconfig, p.proacl), ','
                     order by n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
   from pg_proc p join pg_namespace n on n.oid = p.pronamespace
   where n.nspname not in ('pg_catalog', 'information_schema')),
  (select string_agg(format('%%s:%%s', nspname, nspacl), ',' order by nspname)
   from pg_namespace
   where nspname not like 'pg\_toast%%' and nspname not like 'pg\_temp%%'),
  (select string_agg(array_to_string(s.setconfig, ','), ';' order by s.setrole)
   from pg_db_role_setting s join pg_database d on d.oid = s.setdatabase
   where d.datname = current_database())
)) as fingerprint

-- name: test_clock_freeze --
-- Stops the clock at `at` (null: where it stands).
update absurd.test_clock set frozen_at = coalesce(%(at)s::timestamptz, absurd.current_time())
where id
returning frozen_at as now

-- name: test_clock_advance --
-- Moves the clock on by `by`; a frozen clock stays frozen.
update absurd.test_clock
set frozen_at = frozen_at + %(by)s::interval,
    offset_by = case when frozen_at is null then offset_by + %(by)s::interval else offset_by end
where id
returning coalesce(frozen_at, clock_timestamp() + offset_by) as now

-- name: test_clock_resume --
-- Lets a frozen clock run on from where it stands.
update absurd.test_clock
set offset_by = coalesce(frozen_at - clock_timestamp(), offset_by), frozen_at = null
where id
returning clock_timestamp() + offset_by as now

-- name: ingress_delivery_record --
-- absurd.ingress: true for a webhook delivery id not seen before from that source
-- (recorded in the transaction of the action it causes), false for a redelivery.
select absurd.record_delivery(%(source)s, %(delivery_id)s) as first

-- name: ingress_delivery_cleanup --
select absurd.cleanup_ingress_deliveries(%(ttl)s) as deleted

-- ---------------------------------------------------------------------------
-- SDK (src/absurd/_async, and _sync generated from it): every statement the
-- client, the worker and a task's context send. Read once at import into the
-- constants of absurd/_core/statements.py (the name in capitals). Plain text
-- with positional parameters and no per-queue tables: they call stored
-- functions, and the hot path sends them as they are. The SDK also sends the
-- tools' blocks above that do the same thing (task_spawn, task_retry,
-- task_cancel, event_emit, queue_create, queue_drop, queue_policy_set,
-- clock_now), with named parameters.
-- ---------------------------------------------------------------------------

-- name: db_ping --
select 1

-- name: queue_list_names --
select queue_name from absurd.list_queues()

-- name: queue_policy_get_compat --
-- The SDK's QueuePolicy, upstream's shape (no default_partition).
select queue_name, storage_mode, partition_lookahead, partition_lookback, cleanup_ttl,
       cleanup_limit, detach_mode, detach_min_age
from absurd.get_queue_policy(%s)

-- name: queue_channel --
select absurd.queue_channel(%s) as channel

-- name: queue_register_waiter --
-- The worker's LISTEN connection waits for the queue's NOTIFY (false: the barrier
-- timed out behind a notifier's open transaction; poll and call again).
select absurd.register_waiter(%s, %s) as passed

-- name: queue_unregister_waiter --
select absurd.unregister_waiter(%s, %s) as was_waiting

-- name: queue_next_wake --
-- Seconds until the queue's next due run (null: nothing is due).
select extract(epoch from absurd.queue_next_wake(%s) - absurd.current_time()) as wait

-- name: task_spawn_many --
select task_id, run_id, attempt, created from absurd.spawn_tasks(%s, %s)

-- name: task_result_get --
select state, result, failure_reason from absurd.get_task_result(%s, %s)

-- name: task_result_await --
select should_suspend, payload
from absurd.await_task_result(%s, %s, %s, %s, %s, %s::uuid[], %s)

-- name: task_results_await_all --
select should_suspend, payload
from absurd.await_all_tasks(%s, %s, %s, %s, %s, %s::uuid[], %s)

-- name: event_await --
select should_suspend, payload from absurd.await_event(%s, %s, %s, %s, %s, %s)

-- name: run_claim --
select run_id, task_id, attempt, task_name, params, retry_strategy, max_attempts, headers,
       wake_event, event_payload
from absurd.claim_task(%s, %s, %s, %s)

-- name: run_claim_with_checkpoints --
-- A claim together with the checkpoints each run may replay (one round trip).
select run_id, task_id, attempt, task_name, params, retry_strategy, max_attempts, headers,
       wake_event, event_payload, checkpoints
from absurd.claim_task_with_checkpoints(%s, %s, %s, %s)

-- name: run_extend_claim --
select absurd.extend_claim(%s, %s, %s)

-- name: run_complete --
select absurd.complete_run(%s, %s, %s)

-- name: run_fail --
select absurd.fail_run(%s, %s, %s, null)

-- name: run_schedule --
select absurd.schedule_run(%s, %s, %s)

-- name: run_schedule_after --
-- Deferred by some seconds of database time (0: handed back, claimable at once).
select absurd.schedule_run(%s, %s, absurd.current_time() + make_interval(secs => %s))

-- name: checkpoint_list_for_run --
select checkpoint_name, state from absurd.get_task_checkpoint_states(%s, %s, %s)

-- name: checkpoint_set --
select absurd.set_task_checkpoint_state(%s, %s, %s, %s, %s, %s)

-- name: write_batch --
-- The worker's group commit: stream chunks first (a materialized CTE: a task's last
-- chunks land while its run still holds it), then checkpoints (the lease extended)
-- and completions, in one statement; one applied flag per write, in order.
with s as materialized (
  select absurd.write_streams(%s, %s::uuid[], %s::uuid[], %s::text[], %s::integer[],
           %s::jsonb[], %s::text[]) as streamed
)
select s.streamed,
       absurd.set_task_checkpoint_states(%s, %s::uuid[], %s::text[], %s::jsonb[],
         %s::uuid[], %s) as checkpointed,
       absurd.complete_runs(%s, %s::uuid[], %s::jsonb[]) as completed
from s

-- name: write_batch_and_claim --
-- The writes first (materialized CTEs), then the claim of runs for the slots the
-- completions free, which depends on them (lateral), in the same transaction.
with s as materialized (
  select absurd.write_streams(%s, %s::uuid[], %s::uuid[], %s::text[], %s::integer[],
           %s::jsonb[], %s::text[]) as streamed
), w as materialized (
  select s.streamed,
         absurd.set_task_checkpoint_states(%s, %s::uuid[], %s::text[], %s::jsonb[],
           %s::uuid[], %s) as checkpointed,
         absurd.complete_runs(%s, %s::uuid[], %s::jsonb[]) as completed
  from s
)
select w.streamed, w.checkpointed, w.completed, k.*
from w left join lateral (
  select run_id, task_id, attempt, task_name, params, retry_strategy, max_attempts, headers,
         wake_event, event_payload, checkpoints
  from absurd.claim_task_with_checkpoints(%s, %s, %s, %s + 0 * cardinality(w.completed))
) k on true

-- Promises (docs/engine.md, "Promises"): created in a step of a task or by the
-- client, settled from outside, awaited by tasks.
-- name: promise_create --
select promise_id, expires_at from absurd.create_promise(%s, %s::jsonb)

-- name: promise_resolve --
select applied, duplicate from absurd.resolve_promise(%s, %s::uuid, %s::jsonb, %s)

-- name: promise_reject --
select applied, duplicate from absurd.reject_promise(%s, %s::uuid, %s::jsonb, %s)

-- name: promise_get --
select promise_id, queue_name, task_id, state, payload, tags, idempotency_key, delivery_key,
       settled_by, created_at, expires_at, settled_at
from absurd.get_promise(%s, %s::uuid)

-- name: promise_await --
select should_suspend, payload from absurd.await_promise(%s, %s, %s, %s, %s::uuid, %s)

-- name: stream_write --
select absurd.write_stream(%s, %s, %s, %s, %s::jsonb[], %s::text[]) as last_seq

-- name: stream_close --
select absurd.close_stream(%s, %s, %s, %s) as seq

-- name: stream_notify --
select absurd.notify_stream(%s, %s, %s, %s, %s::jsonb[])

-- name: stream_read --
select seq, chunk, written_at, attempt, closed from absurd.read_stream(%s, %s, %s, %s, %s)

-- name: stream_channel --
select absurd.stream_channel(%s, %s, %s) as channel
