"""Every statement the SDK sends, by name: the ``SDK`` section of ``sql/queries.sql``,
and the tools' blocks that do the same thing, read once at import (a constant per
block, its name in capitals).

Plain strings, so a call costs no more than an inline literal did. Most take
positional parameters; the blocks shared with the tools take named ones. Both
flavours (``absurd._async`` and the generated ``absurd._sync``) read them from here,
at call time (``statements.RUN_COMPLETE``), so a test can swap one.
"""

from __future__ import annotations

from absurd.queries import statement

DB_PING = statement("db_ping")
CLOCK_NOW = statement("clock_now")

QUEUE_CREATE = statement("queue_create")
QUEUE_DROP = statement("queue_drop")
QUEUE_LIST_NAMES = statement("queue_list_names")
QUEUE_POLICY_GET_COMPAT = statement("queue_policy_get_compat")
QUEUE_POLICY_SET = statement("queue_policy_set")
QUEUE_CHANNEL = statement("queue_channel")
QUEUE_NEXT_WAKE = statement("queue_next_wake")
QUEUE_REGISTER_WAITER = statement("queue_register_waiter")
QUEUE_UNREGISTER_WAITER = statement("queue_unregister_waiter")

FLOW_POLICY_GET = statement("flow_policy_get")
FLOW_LIMIT_SET = statement("flow_limit_set")
FLOW_LIMIT_LIST = statement("flow_limit_list")
TASK_EXPLAIN = statement("task_explain")

TASK_SPAWN = statement("task_spawn")
TASK_SPAWN_MANY = statement("task_spawn_many")
TASK_RETRY = statement("task_retry")
TASK_CANCEL = statement("task_cancel")
TASK_RESULT_GET = statement("task_result_get")
TASK_RESULT_AWAIT = statement("task_result_await")
TASK_RESULTS_AWAIT_ALL = statement("task_results_await_all")

EVENT_EMIT = statement("event_emit")
EVENT_AWAIT = statement("event_await")

RUN_CLAIM = statement("run_claim")
RUN_CLAIM_WITH_CHECKPOINTS = statement("run_claim_with_checkpoints")
RUN_EXTEND_CLAIM = statement("run_extend_claim")
RUN_COMPLETE = statement("run_complete")
RUN_FAIL = statement("run_fail")
RUN_SCHEDULE = statement("run_schedule")
RUN_SCHEDULE_AFTER = statement("run_schedule_after")

CHECKPOINT_LIST_FOR_RUN = statement("checkpoint_list_for_run")
CHECKPOINT_SET = statement("checkpoint_set")

SCHEDULE_CREATE = statement("schedule_create")
SCHEDULE_UPDATE = statement("schedule_update")
SCHEDULE_PAUSE = statement("schedule_pause")
SCHEDULE_RESUME = statement("schedule_resume")
SCHEDULE_DELETE = statement("schedule_delete")
SCHEDULE_TRIGGER = statement("schedule_trigger")
SCHEDULE_BACKFILL = statement("schedule_backfill")
SCHEDULE_LIST = statement("schedule_list")
SCHEDULE_PREVIEW = statement("schedule_preview")
#: Per-queue (``{t}``): run through ``absurd.queries.query(name, queue)``.
SCHEDULE_FIRE_LIST = statement("schedule_fire_list")

WRITE_BATCH = statement("write_batch")
WRITE_BATCH_AND_CLAIM = statement("write_batch_and_claim")

PROMISE_CREATE = statement("promise_create")
PROMISE_RESOLVE = statement("promise_resolve")
PROMISE_REJECT = statement("promise_reject")
PROMISE_GET = statement("promise_get")
PROMISE_AWAIT = statement("promise_await")

STREAM_WRITE = statement("stream_write")
STREAM_CLOSE = statement("stream_close")
STREAM_NOTIFY = statement("stream_notify")
STREAM_READ = statement("stream_read")
STREAM_CHANNEL = statement("stream_channel")
