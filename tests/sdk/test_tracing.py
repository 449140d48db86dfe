"""Traces through the OpenTelemetry API, recorded by the real OpenTelemetry SDK's
in-memory exporter, on both flavours: producer spans, one consumer span per run
segment, step spans, replays and waits as events, retries and resumptions as new
traces linked to the spawn."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.otel_support import RECORDING, spans_fixture  # noqa: F401 (the spans fixture)
from tests.sdk.conftest import NO_DELAY, T0, Api, until


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = named(exporter, name)
    return span


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def ids(span: ReadableSpan) -> tuple[int, int]:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.trace_id, ctx.span_id


def events(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


async def test_a_spawn_in_a_request_span_is_one_trace_down_to_the_steps(
    api: Api, spans: InMemorySpanExporter
) -> None:
    app = await api.client()

    @app.register_task("order")
    async def order(params: Any, ctx: Any) -> Any:
        a = await ctx.step("reserve", lambda: 1)
        b = await ctx.step("charge", lambda: 2)
        return a + b

    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("POST /orders") as request:
        spawned = await app.spawn("order", {"n": 1})
    assert api.task(spawned["task_id"])["headers"]["traceparent"].startswith("00-")
    await app.work_batch()

    trace_id = request.get_span_context().trace_id
    producer = one(spans, "absurd.spawn order")
    assert producer.kind == SpanKind.PRODUCER
    assert ids(producer)[0] == trace_id
    assert parent_of(producer) == request.get_span_context().span_id
    assert producer.attributes is not None
    assert producer.attributes["messaging.system"] == "absurd"
    assert producer.attributes["messaging.destination.name"] == api.queue
    assert producer.attributes["absurd.task_id"] == str(spawned["task_id"])

    run = one(spans, "absurd.run order")
    assert run.kind == SpanKind.CONSUMER
    assert ids(run)[0] == trace_id
    assert parent_of(run) == ids(producer)[1]
    assert run.links == ()
    assert run.attributes is not None
    assert {k: run.attributes[k] for k in run.attributes if k.startswith("absurd.")} == {
        "absurd.queue": api.queue,
        "absurd.task_name": "order",
        "absurd.task_id": str(spawned["task_id"]),
        "absurd.run_id": str(spawned["run_id"]),
        "absurd.attempt": 1,
        "absurd.resumed": False,
        "absurd.outcome": "completed",
    }
    assert run.attributes["messaging.operation.type"] == "process"
    assert run.status.status_code == StatusCode.UNSET
    for name in ("reserve", "charge"):
        step = one(spans, f"absurd.step {name}")
        assert ids(step)[0] == trace_id
        assert parent_of(step) == ids(run)[1]
        assert step.attributes is not None and step.attributes["absurd.step_name"] == name


async def test_a_retry_starts_a_new_trace_linked_to_the_spawn(
    api: Api, spans: InMemorySpanExporter
) -> None:
    app = await api.client()
    attempts: list[int] = []

    @app.register_task("flaky")
    async def flaky(params: Any, ctx: Any) -> Any:
        await ctx.step("first", lambda: "kept")

        def second() -> str:
            attempts.append(ctx.attempt)
            if len(attempts) == 1:
                raise ValueError("boom")
            return "ok"

        return await ctx.step("second", second)

    with trace.get_tracer("test").start_as_current_span("request"):
        task_id = (await app.spawn("flaky", max_attempts=2, retry_strategy=NO_DELAY))["task_id"]
    await app.work_batch()
    await app.work_batch()
    assert api.task(task_id)["state"] == "completed"

    producer = one(spans, "absurd.spawn flaky")
    first, second = sorted(named(spans, "absurd.run flaky"), key=lambda s: s.start_time or 0)
    assert first.attributes is not None and second.attributes is not None
    assert (first.attributes["absurd.attempt"], second.attributes["absurd.attempt"]) == (1, 2)
    # Attempt 1 failed: an error, its exception recorded, in the spawn's trace.
    assert first.status.status_code == StatusCode.ERROR
    assert first.attributes["absurd.outcome"] == "failed"
    assert events(first, "exception")[0]["exception.type"] == "ValueError"
    assert parent_of(first) == ids(producer)[1]
    # Attempt 2: a trace of its own, linked to the spawn.
    assert ids(second)[0] != ids(producer)[0]
    assert second.parent is None
    assert [ids_of_link(link) for link in second.links] == [ids(producer)]
    assert second.status.status_code == StatusCode.UNSET
    # The step that attempt 1 checkpointed is replayed: an event of the run, not a span.
    assert [s for s in named(spans, "absurd.step first")] and len(
        named(spans, "absurd.step first")
    ) == 1
    assert events(second, "absurd.step.replayed") == [
        {"absurd.step_name": "first", "absurd.checkpoint_name": "first"}
    ]
    failed_step, ok_step = sorted(
        named(spans, "absurd.step second"), key=lambda s: s.start_time or 0
    )
    assert failed_step.status.status_code == StatusCode.ERROR
    assert parent_of(failed_step) == ids(first)[1]
    assert parent_of(ok_step) == ids(second)[1]
    assert ok_step.status.status_code == StatusCode.UNSET


def ids_of_link(link: Any) -> tuple[int, int]:
    return link.context.trace_id, link.context.span_id


async def test_a_sleep_that_resumes_gives_two_segments_linked_to_the_spawn(
    api: Api, spans: InMemorySpanExporter
) -> None:
    app = await api.client(own_conn=True)
    await api.set_now(app, T0)

    @app.register_task("nap")
    async def nap(params: Any, ctx: Any) -> Any:
        await ctx.step("before", lambda: 1)
        await ctx.sleep_for("rest", 7 * 86400)
        return await ctx.step("after", lambda: 2)

    task_id = (await app.spawn("nap"))["task_id"]
    await app.work_batch()
    await api.set_now(app, T0 + dt.timedelta(days=7))
    await app.work_batch()
    assert api.task(task_id)["state"] == "completed"

    producer = one(spans, "absurd.spawn nap")
    first, second = sorted(named(spans, "absurd.run nap"), key=lambda s: s.start_time or 0)
    assert first.attributes is not None and second.attributes is not None
    # Suspension is not an error.
    assert first.attributes["absurd.outcome"] == "suspended"
    assert first.status.status_code == StatusCode.UNSET
    assert parent_of(first) == ids(producer)[1]
    wake_at = (T0 + dt.timedelta(days=7)).isoformat()
    assert events(first, "absurd.sleep") == [
        {"absurd.step_name": "rest", "absurd.wake_at": wake_at, "absurd.suspended": True}
    ]
    # The resumed segment: same attempt, a new trace linked to the spawn.
    assert (second.attributes["absurd.attempt"], second.attributes["absurd.resumed"]) == (1, True)
    assert second.attributes["absurd.outcome"] == "completed"
    assert ids(second)[0] != ids(first)[0]
    assert [ids_of_link(link) for link in second.links] == [ids(producer)]
    assert events(second, "absurd.step.replayed") == [
        {"absurd.step_name": "before", "absurd.checkpoint_name": "before"}
    ]
    assert events(second, "absurd.sleep") == [
        {"absurd.step_name": "rest", "absurd.wake_at": wake_at, "absurd.suspended": False}
    ]
    assert len(named(spans, "absurd.step before")) == 1
    assert parent_of(one(spans, "absurd.step after")) == ids(second)[1]


async def test_a_child_task_joins_its_parents_trace(api: Api, spans: InMemorySpanExporter) -> None:
    app = await api.client()

    @app.register_task("child")
    async def child(params: Any, ctx: Any) -> Any:
        return params * 2

    @app.register_task("parent")
    async def parent(params: Any, ctx: Any) -> Any:
        spawned = await ctx.spawn("child", 21)
        snap = await ctx.await_task_result(spawned["task_id"], timeout=60)
        return snap.result

    parent_id = (await app.spawn("parent"))["task_id"]
    await app.work_batch()  # the parent spawns the child and suspends on it
    await app.work_batch()  # the child
    await app.work_batch()  # the parent resumes
    assert api.task(parent_id)["state"] == "completed"

    first, resumed = sorted(named(spans, "absurd.run parent"), key=lambda s: s.start_time or 0)
    child_producer = one(spans, "absurd.spawn child")
    child_run = one(spans, "absurd.run child")
    assert parent_of(child_producer) == ids(first)[1]
    assert ids(child_producer)[0] == ids(first)[0]
    assert parent_of(child_run) == ids(child_producer)[1]
    assert ids(child_run)[0] == ids(first)[0]
    child_id = child_run.attributes["absurd.task_id"] if child_run.attributes else None
    (waited,) = events(first, "absurd.await_task")
    assert waited["absurd.awaited_task_ids"] == (child_id,)
    assert waited["absurd.wait.outcome"] == "suspended"
    assert waited["absurd.timeout"] == 60
    assert first.attributes is not None and first.attributes["absurd.outcome"] == "suspended"
    (again,) = events(resumed, "absurd.await_task")
    assert again["absurd.wait.outcome"] in ("replayed", "resolved")
    # The replayed spawn starts no second child.
    assert len(named(spans, "absurd.spawn child")) == 1


async def test_a_promise_wait_is_an_event_of_each_segment(
    api: Api, spans: InMemorySpanExporter
) -> None:
    app = await api.client()

    @app.register_task("approve")
    async def approve(params: Any, ctx: Any) -> Any:
        handle = await ctx.promise("approval")
        return await ctx.await_promise(handle, timeout=60)

    task_id = (await app.spawn("approve"))["task_id"]
    await app.work_batch()  # creates the promise and suspends on it
    (first,) = named(spans, "absurd.run approve")
    (waited,) = events(first, "absurd.await_promise")
    assert waited["absurd.wait.outcome"] == "suspended"
    assert waited["absurd.timeout"] == 60
    promise_id = waited["absurd.promise_id"]
    assert await app.resolve_promise(promise_id, {"ok": True})
    await app.work_batch()  # woken with the value
    assert api.task(task_id)["state"] == "completed"
    _, resumed = sorted(named(spans, "absurd.run approve"), key=lambda s: s.start_time or 0)
    (again,) = events(resumed, "absurd.await_promise")
    assert again["absurd.promise_id"] == promise_id
    assert again["absurd.wait.outcome"] in ("replayed", "resolved")


async def test_a_task_spawned_from_sql_with_a_traceparent_joins_that_trace(
    api: Api, spans: InMemorySpanExporter
) -> None:
    # What any producer does (SQL, the TypeScript SDK): a traceparent in the headers.
    app = await api.client()

    @app.register_task("from-sql")
    async def from_sql(params: Any, ctx: Any) -> Any:
        return await ctx.step("only", lambda: "x")

    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    options = {"headers": {"traceparent": traceparent, "tracestate": "vendor=1"}}
    api.engine.conn.execute(
        "select * from absurd.spawn_task(%s, 'from-sql', '{}', %s)",
        (api.queue, json.dumps(options)),
    )
    await app.work_batch()
    run = one(spans, "absurd.run from-sql")
    assert ids(run)[0] == 0x0AF7651916CD43DD8448EB211C80319C
    assert parent_of(run) == 0xB7AD6B7169203331
    assert run.get_span_context() is not None
    assert run.get_span_context().trace_state.to_header() == "vendor=1"  # type: ignore[union-attr]
    assert ids(one(spans, "absurd.step only"))[0] == ids(run)[0]


async def test_spawn_many_injects_one_producer_span_into_every_task(
    api: Api, spans: InMemorySpanExporter
) -> None:
    app = await api.client()
    results = await app.spawn_many("bulk", [1, 2, 3], queue=api.queue)
    producer = one(spans, "absurd.spawn bulk")
    assert producer.attributes is not None
    assert producer.attributes["messaging.batch.message_count"] == 3
    trace_id, span_id = ids(producer)
    for result in results:
        header = api.task(result["task_id"])["headers"]["traceparent"]
        assert header.startswith(f"00-{trace_id:032x}-{span_id:016x}-")


async def test_tracing_false_makes_no_spans_and_no_headers(
    api: Api, spans: InMemorySpanExporter
) -> None:
    app = await api.client(tracing=False)

    @app.register_task("quiet")
    async def quiet(params: Any, ctx: Any) -> Any:
        return await ctx.step("s", lambda: 1)

    with trace.get_tracer("test").start_as_current_span("request"):
        task_id = (await app.spawn("quiet", headers={"mine": 1}))["task_id"]
    await app.work_batch()
    assert api.task(task_id)["state"] == "completed"
    assert api.task(task_id)["headers"] == {"mine": 1}
    assert [s.name for s in spans.get_finished_spans()] == ["request"]


async def test_user_headers_are_kept_and_a_given_traceparent_is_the_parent(
    api: Api, spans: InMemorySpanExporter
) -> None:
    app = await api.client()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    task_id = (
        await app.spawn("given", headers={"traceparent": traceparent, "k": "v"}, queue=api.queue)
    )["task_id"]
    producer = one(spans, "absurd.spawn given")
    assert ids(producer)[0] == 0x4BF92F3577B34DA6A3CE929D0E0E4736
    assert parent_of(producer) == 0x00F067AA0BA902B7
    headers = api.task(task_id)["headers"]
    assert headers["k"] == "v"
    assert headers["traceparent"].startswith(f"00-{ids(producer)[0]:032x}-{ids(producer)[1]:016x}-")


async def test_without_a_configured_sdk_spawns_and_runs_are_unchanged(
    api: Api, spans: InMemorySpanExporter
) -> None:
    # The API's no-op provider (what an application that configures nothing has).
    RECORDING[0] = False
    app = await api.client()

    @app.register_task("plain")
    async def plain(params: Any, ctx: Any) -> Any:
        return await ctx.step("s", lambda: 1)

    task_id = (await app.spawn("plain", headers={"mine": 1}))["task_id"]
    await app.work_batch()
    assert api.task(task_id)["state"] == "completed"
    assert api.task(task_id)["headers"] == {"mine": 1}
    assert spans.get_finished_spans() == ()


async def test_a_running_worker_traces_its_runs_in_the_spawners_trace(
    api: Api, spans: InMemorySpanExporter
) -> None:
    # A real worker (threads on the sync client, asyncio tasks on the async one).
    app = await api.client()

    @app.register_task("child")
    async def child(params: Any, ctx: Any) -> Any:
        return await ctx.step("double", lambda: params * 2)

    @app.register_task("parent")
    async def parent(params: Any, ctx: Any) -> Any:
        spawned = await ctx.spawn("child", 21)
        return (await ctx.await_task_result(spawned["task_id"])).result

    with trace.get_tracer("test").start_as_current_span("request") as request:
        task_id = (await app.spawn("parent"))["task_id"]
    async with api.worker(app, concurrency=2):
        await until(lambda: api.task(task_id)["state"] == "completed")
    trace_id = request.get_span_context().trace_id
    first = min(named(spans, "absurd.run parent"), key=lambda s: s.start_time or 0)
    assert ids(first)[0] == trace_id
    child_run = one(spans, "absurd.run child")
    assert ids(child_run)[0] == trace_id
    assert parent_of(one(spans, "absurd.step double")) == ids(child_run)[1]
    assert parent_of(child_run) == ids(one(spans, "absurd.spawn child"))[1]
