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
-- habitat ---------------------------------------------------------------------
-- The dashboard's reads (src/absurd/habitat/store.py). Counts are bounded
-- (count over a LIMITed subquery, shown as "N+" at the cap); lists are keyset
-- pages; filters that no index serves (task name, params, event name prefix)
-- look at a bounded window of the newest rows and say where they stopped.

-- name: habitat_now --
select absurd.current_time() as now

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

-- name: habitat_task_get --
select task_id, task_name, params, headers, retry_strategy, max_attempts, cancellation,
       enqueue_at, first_started_at, state, attempts, last_attempt_run, completed_payload,
       cancelled_at, idempotency_key, priority, finished_at
from {t}
where task_id = %(task_id)s

-- name: habitat_run_get --
select run_id, task_id from {r} where run_id = %(run_id)s

-- name: habitat_task_runs --
select run_id, task_id, attempt, state, claimed_by, claim_expires_at, available_at,
       wake_event, event_payload, started_at, completed_at, failed_at, result,
       failure_reason, created_at, priority
from {r}
where task_id = %(task_id)s
order by attempt, run_id
limit 1000

-- name: habitat_task_checkpoints --
select checkpoint_name, state, status, owner_run_id, updated_at
from {c}
where task_id = %(task_id)s
order by updated_at, checkpoint_name
limit 1000

-- name: habitat_task_waits --
select w.run_id, w.step_name, w.event_name, w.timeout_at, w.created_at,
       e.payload as event_payload, e.emitted_at
from {w} w
left join {e} e on e.event_name = w.event_name and e.payload is not null
where w.task_id = %(task_id)s
order by w.created_at, w.step_name
limit 1000

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

-- ---------------------------------------------------------------------------
-- SDK (src/absurd/_async, and _sync generated from it): every statement the
-- client, the worker and a task's context send. Read once at import into the
-- constants of absurd/_core/statements.py (the name in capitals). Plain text
-- with positional parameters and no per-queue tables: they call stored
-- functions, and the hot path sends them as they are.
-- ---------------------------------------------------------------------------

-- name: db_ping --
select 1

-- name: clock_now --
select absurd.current_time() as now

-- name: queue_create --
select absurd.create_queue(%s, %s)

-- name: queue_drop --
select absurd.drop_queue(%s)

-- name: queue_list_names --
select queue_name from absurd.list_queues()

-- name: queue_policy_get --
select queue_name, storage_mode, partition_lookahead, partition_lookback, cleanup_ttl,
       cleanup_limit, detach_mode, detach_min_age
from absurd.get_queue_policy(%s)

-- name: queue_policy_set --
select absurd.set_queue_policy(%s, %s::jsonb)

-- name: queue_channel --
select absurd.queue_channel(%s) as channel

-- name: queue_next_wake --
-- Seconds until the queue's next due run (null: nothing is due).
select extract(epoch from absurd.queue_next_wake(%s) - absurd.current_time()) as wait

-- name: task_spawn --
select task_id, run_id, attempt, created from absurd.spawn_task(%s, %s, %s, %s)

-- name: task_spawn_many --
select task_id, run_id, attempt, created from absurd.spawn_tasks(%s, %s)

-- name: task_retry --
select task_id, run_id, attempt, created from absurd.retry_task(%s, %s, %s)

-- name: task_cancel --
select absurd.cancel_task(%s, %s)

-- name: task_result_get --
select state, result, failure_reason from absurd.get_task_result(%s, %s)

-- name: task_result_await --
select should_suspend, payload
from absurd.await_task_result(%s, %s, %s, %s, %s, %s::uuid[], %s)

-- name: event_emit --
select absurd.emit_event(%s, %s, %s)

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
-- The worker's group commit: checkpoints (the lease extended) and completions in one
-- statement; one applied flag per write, in order.
select absurd.set_task_checkpoint_states(%s, %s::uuid[], %s::text[], %s::jsonb[],
         %s::uuid[], %s) as checkpointed,
       absurd.complete_runs(%s, %s::uuid[], %s::jsonb[]) as completed

-- name: write_batch_and_claim --
-- The writes first (a materialized CTE), then the claim of runs for the slots the
-- completions free, which depends on them (lateral), in the same transaction.
with w as materialized (
  select absurd.set_task_checkpoint_states(%s, %s::uuid[], %s::text[], %s::jsonb[],
           %s::uuid[], %s) as checkpointed,
         absurd.complete_runs(%s, %s::uuid[], %s::jsonb[]) as completed
)
select w.checkpointed, w.completed, k.*
from w left join lateral (
  select run_id, task_id, attempt, task_name, params, retry_strategy, max_attempts, headers,
         wake_event, event_payload, checkpoints
  from absurd.claim_task_with_checkpoints(%s, %s, %s, %s + 0 * cardinality(w.completed))
) k on true
