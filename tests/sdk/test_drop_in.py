"""Drop-in: one program written against ``absurd_sdk`` 0.5.1 runs unchanged with
``import absurd as sdk``, against our schema, with the same observable outcome.

The program only uses upstream's API and upstream-safe patterns (child tasks in
another queue, events, short real sleeps). What it observes (results, failures,
runs, checkpoints, side effects, hook calls, exceptions) is normalised (ids become
placeholders) and must be identical for both SDKs.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import absurd_sdk
import psycopg
import pytest
from psycopg.rows import dict_row

import absurd

QUICK_RETRY = {"kind": "fixed", "base_seconds": 0}


def observe(dsn: str, queue: str) -> list[Any]:
    """Every task of a queue as (name, state, attempts, runs, checkpoints, result)."""
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as db:
        tasks = db.execute(
            f'select * from absurd."t_{queue}" order by enqueue_at, task_name'
        ).fetchall()
        out = []
        for t in tasks:
            runs = db.execute(
                f'select attempt, state, failure_reason from absurd."r_{queue}"'
                " where task_id = %s order by attempt",
                (t["task_id"],),
            ).fetchall()
            cps = db.execute(
                f'select checkpoint_name, state from absurd."c_{queue}"'
                " where task_id = %s order by checkpoint_name",
                (t["task_id"],),
            ).fetchall()
            out.append(
                {
                    "task": (t["task_name"], t["state"], t["attempts"], t["headers"]),
                    "runs": [
                        (r["attempt"], r["state"], (r["failure_reason"] or {}).get("message"))
                        for r in runs
                    ],
                    # a sleep's checkpoint holds a time: compare its name only
                    # ours also checkpoints an event timeout (upstream's replays wait anew)
                    "checkpoints": {
                        c["checkpoint_name"]: checkpoint(c)
                        for c in cps
                        if c["state"] != {"$absurd": "event-timeout"}
                    },
                    "result": t["completed_payload"],
                }
            )
        return out


def checkpoint(row: dict[str, Any]) -> Any:
    """A checkpoint's value, where the two SDKs store different but compatible JSON."""
    name, state = row["checkpoint_name"], row["state"]
    if name == "nap":
        return "<time>"  # a sleep target: a time
    if name.startswith("$awaitTaskResult:"):
        # ours stores the engine's snapshot {task_id, state, result, failure}; upstream
        # {state, result} or {state, failure}. Each reads the other's.
        return {k: v for k, v in state.items() if k in ("state", "result", "failure") and v}
    return state


def normalise(value: dict[str, Any]) -> dict[str, str]:
    """Each entry as text, with UUIDs replaced by their order of first appearance."""
    seen: dict[str, str] = {}
    pattern = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

    def text(v: Any) -> str:
        return re.sub(pattern, lambda m: seen.setdefault(m.group(0), f"<id{len(seen)}>"), repr(v))

    return {key: text(v) for key, v in value.items()}


def until_idle(apps: list[Any], done: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        for app in apps:
            app.work_batch(batch_size=5)
        assert time.monotonic() < deadline, "the program did not finish"
        time.sleep(0.05)


def program(sdk: ModuleType, conn: Any, queue: str, child_queue: str) -> dict[str, Any]:
    """An upstream-style program (sync API). Returns what it saw."""
    log: list[Any] = []

    def before_spawn(task_name: str, params: Any, options: Any) -> Any:
        log.append(("spawn", task_name))
        return {**options, "headers": {**(options.get("headers") or {}), "via": "hook"}}

    def wrap(ctx: Any, execute: Any) -> Any:
        log.append(("run", type(ctx).__name__))
        return execute()

    hooks = {"before_spawn": before_spawn, "wrap_task_execution": wrap}
    app = sdk.Absurd(conn, queue_name=queue, hooks=hooks)
    children = sdk.Absurd(conn, queue_name=child_queue)
    app.create_queue()
    children.create_queue()
    assert queue in app.list_queues()

    @app.register_task("order", default_max_attempts=3)
    def order(params: Any, ctx: Any) -> Any:
        log.append(("order", sdk.get_current_context() is ctx, dict(ctx.headers)))
        charged = ctx.step("charge", lambda: log.append("charged") or params["amount"])
        again = ctx.step("charge", lambda: "second")

        @ctx.run_step("label")
        def label() -> str:
            log.append("label")
            return f"L-{params['amount']}"

        handle = ctx.begin_step("receipt")
        receipt = handle.state if handle.done else ctx.complete_step(handle, {"n": 1})
        if log.count("charged") == 1 and not handle.done:
            raise RuntimeError("transient")
        ctx.emit_event("order-done", {"amount": charged})
        return {"charged": charged, "again": again, "label": label, "receipt": receipt}

    @app.register_task("waiter")
    def waiter(params: Any, ctx: Any) -> Any:
        return {"got": ctx.await_event("order-done")}

    @app.register_task("sleeper")
    def sleeper(params: Any, ctx: Any) -> Any:
        ctx.sleep_for("nap", 0.2)
        return "rested"

    @app.register_task("impatient")
    def impatient(params: Any, ctx: Any) -> Any:
        try:
            ctx.await_event("never", timeout=1)
        except sdk.TimeoutError:
            return "timed out"
        return "event"

    fixed = {"on": False}

    @app.register_task("doomed")
    def doomed(params: Any, ctx: Any) -> Any:
        if not fixed["on"]:
            raise ValueError("doomed to fail")
        return "fixed"

    @children.register_task("child")
    def child(params: Any, ctx: Any) -> Any:
        return params["x"] * 2

    @app.register_task("parent")
    def parent(params: Any, ctx: Any) -> Any:
        snap = ctx.await_task_result(params["child"], queue_name=child_queue)
        return {"state": snap.state, "result": snap.result}

    seen: dict[str, Any] = {"log": log}
    order_id = app.spawn("order", {"amount": 42}, retry_strategy=QUICK_RETRY)["task_id"]
    app.spawn("waiter", None)
    app.spawn("sleeper", None)
    app.spawn("impatient", None)
    doomed_id = app.spawn("doomed", None, max_attempts=1)["task_id"]
    cancel_id = app.spawn("doomed", {"never": True})["task_id"]
    app.cancel_task(cancel_id)
    first = app.spawn("doomed", {"k": 1}, idempotency_key="once", max_attempts=1)
    second = app.spawn("doomed", {"k": 2}, idempotency_key="once", max_attempts=1)
    seen["idempotent"] = first["task_id"] == second["task_id"]
    child_id = children.spawn("child", {"x": 21})["task_id"]
    children.work_batch()
    app.spawn("parent", {"child": str(child_id)})
    app.spawn("nobody-knows", None, queue=queue)

    expected = {"order", "waiter", "sleeper", "impatient", "parent"}

    def settled() -> bool:
        rows = observe_states(conn, queue)
        done = {r["task_name"] for r in rows if r["state"] == "completed"}
        return expected <= done and app.fetch_task_result(doomed_id).state == "failed"

    until_idle([app], settled)  # meanwhile the sleep (0.2 s) and the timeout (1 s) pass
    assert app.fetch_task_result(order_id).state == "completed"

    seen["doomed"] = app.fetch_task_result(doomed_id).failure["message"]
    fixed["on"] = True
    retried = app.retry_task(doomed_id)
    seen["retried"] = (retried["task_id"] == doomed_id, retried["attempt"], retried["created"])
    app.work_batch()
    seen["after_retry"] = app.await_task_result(doomed_id, timeout=5)
    seen["cancelled"] = app.fetch_task_result(cancel_id)
    seen["missing"] = app.fetch_task_result(str(uuid.uuid4()))
    for label, call in {
        "long queue name": lambda: sdk.Absurd(conn, queue_name="x" * 58),
        "unregistered spawn": lambda: app.spawn("nobody-knows", None),
        "empty event": lambda: app.emit_event(""),
        "retry a completed task": lambda: app.retry_task(order_id),
    }.items():
        with pytest.raises(Exception) as info:
            call()
        seen[label] = isinstance(info.value, ValueError)
    return seen


def observe_states(conn: Any, queue: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f'select task_name, state from absurd."t_{queue}"')
        return cur.fetchall()


@pytest.fixture
def queues(dsn: str) -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        made.append(f"di_{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield make
    with psycopg.connect(dsn, autocommit=True) as c:
        for q in made:
            c.execute("select absurd.drop_queue(%s)", (q,))


def test_every_upstream_name_exists() -> None:
    assert [n for n in absurd_sdk.__all__ if not hasattr(absurd, n)] == []


def test_the_same_program_behaves_the_same_on_both_sdks(
    dsn: str, queues: Callable[[], str]
) -> None:
    outcomes = []
    for sdk in (absurd_sdk, absurd):
        queue, child_queue = queues(), queues()
        with psycopg.connect(dsn, autocommit=True) as conn:
            seen = program(sdk, conn, queue, child_queue)
        seen["tables"] = observe(dsn, queue)
        seen["child tables"] = observe(dsn, child_queue)
        outcomes.append(normalise(seen))
    for key in outcomes[0]:
        assert outcomes[0][key] == outcomes[1][key], key
    # and the program did what it says
    tables = outcomes[1]["tables"]
    assert "'charged'" in outcomes[1]["log"] and "'rested'" in tables
    assert "'timed out'" in tables and "'fixed'" in tables


async def async_program(sdk: ModuleType, dsn: str, queue: str) -> list[Any]:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    app = sdk.AsyncAbsurd(conn, queue_name=queue)
    await app.create_queue()
    seen: list[Any] = []

    @app.register_task("greet")
    async def greet(params: Any, ctx: Any) -> Any:
        name = await ctx.step("name", lambda: asyncio.sleep(0, params["name"]))
        payload = await ctx.await_event("go")
        seen.append(sdk.get_current_context() is ctx)
        return f"hello {name} {payload}"

    task_id = (await app.spawn("greet", {"name": "ada"}))["task_id"]
    await app.work_batch()
    await app.emit_event("go", "now")
    await app.work_batch()
    seen.append(await app.await_task_result(task_id, timeout=5))
    try:
        await app.await_task_result(str(uuid.uuid4()), timeout=1)
    except Exception as exc:
        seen.append(("not found", "not found" in str(exc)))
    await app.close()
    await conn.close()
    return seen


def test_an_async_program_behaves_the_same_on_both_sdks(
    dsn: str, queues: Callable[[], str]
) -> None:
    results = [
        normalise({"seen": asyncio.run(async_program(sdk, dsn, queues()))})
        for sdk in (absurd_sdk, absurd)
    ]
    assert results[0] == results[1]
    assert "hello ada now" in results[1]["seen"]


def test_ids_have_the_same_type_as_upstream(dsn: str, queues: Callable[[], str]) -> None:
    def ids(sdk: ModuleType) -> list[Any]:
        with psycopg.connect(dsn, autocommit=True) as conn:
            queue = queues()
            app = sdk.Absurd(conn, queue_name=queue)
            app.create_queue()
            spawned = app.spawn("t", None, queue=queue)
            (claimed,) = app.claim_tasks()
            return [type(spawned["task_id"]), claimed["task_id"] == spawned["task_id"]]

    assert ids(absurd) == ids(absurd_sdk)
