-- Named read queries for absurdctl and Habitat (loaded by absurd/queries.py).
-- Each block starts with "-- name: noun_verb --". Per-queue tables are written
-- {t} {r} {c} {e} {w}; values are bind parameters, %(name)s.
-- Every query is bounded (LIMIT or a key lookup) and index-driven.

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
where (%(task_name)s::text is null or t.task_name = %(task_name)s::text)
  and (%(before)s::uuid is null or t.task_id < %(before)s::uuid)
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
    and (%(task_name)s::text is null or t.task_name = %(task_name)s::text)
  limit 1
) t
where r.state = %(state)s::text
order by r.available_at desc
limit %(limit)s

-- name: task_find --
-- Is this task id in this queue? (a primary-key probe; dump-task unions one per queue)
select task_id from {t} where task_id = %(task_id)s::uuid

-- name: run_find --
-- The task of a run id in this queue (a primary-key probe, unioned per queue).
select task_id from {r} where run_id = %(run_id)s::uuid

-- name: task_get --
select task_id, task_name, state, attempts, max_attempts, params, headers, retry_strategy,
  cancellation, priority, idempotency_key, enqueue_at, first_started_at, cancelled_at,
  finished_at, last_attempt_run, completed_payload
from {t} where task_id = %(task_id)s::uuid

-- name: run_list_by_task --
select run_id, attempt, state, claimed_by, claim_expires_at, available_at, wake_event,
  event_payload, started_at, completed_at, failed_at, result, failure_reason, created_at
from {r} where task_id = %(task_id)s::uuid
order by attempt, run_id

-- name: checkpoint_list_by_task --
select checkpoint_name, state, status, owner_run_id, updated_at
from {c} where task_id = %(task_id)s::uuid
order by updated_at, checkpoint_name

-- name: wait_list_by_task --
-- A task's event waits, with the event's payload once it has been emitted.
select w.run_id, w.step_name, w.event_name, w.timeout_at, w.created_at,
  e.payload as event_payload, case when e.payload is not null then e.emitted_at end as emitted_at
from {w} w left join {e} e on e.event_name = w.event_name
where w.task_id = %(task_id)s::uuid
order by w.created_at

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
