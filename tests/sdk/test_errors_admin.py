"""Errors (the tree and their translation from SQLSTATEs), queue administration and
client construction, on both flavours."""

from __future__ import annotations

import builtins
import datetime as dt
import inspect
import re
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

import absurd
from absurd import errors
from tests.sdk.conftest import Api

MISSING_TASK = "019a0000-0000-7000-8000-000000000000"


def test_error_tree() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if not isinstance(obj, type):
            continue
        assert issubclass(obj, (absurd.AbsurdError, absurd.TaskInterrupt)), name
        # a control-flow signal is never an Exception, an error always is
        assert issubclass(obj, Exception) != issubclass(obj, absurd.TaskInterrupt), name
    assert issubclass(absurd.TimeoutError, builtins.TimeoutError)
    assert issubclass(absurd.TimeoutError, absurd.AbsurdError)
    assert issubclass(errors.InvalidQueueName, ValueError)
    assert issubclass(errors.InvalidArgument, ValueError)
    assert issubclass(errors.InvalidRetryStrategy, errors.InvalidArgument)
    assert issubclass(absurd.SerializationError, absurd.AbsurdError)
    for signal in (absurd.SuspendTask, absurd.CancelledTask, absurd.FailedTask):
        assert issubclass(signal, BaseException) and not issubclass(signal, Exception)


def test_the_error_catalogue_and_the_classes_name_the_same_codes() -> None:
    """Each code of docs/errors.md's class AB table translates to a class, each class's
    code is in that table, and the other codes the SDK translates are documented."""
    doc = (Path(__file__).parents[2] / "docs" / "errors.md").read_text(encoding="utf-8")
    start = doc.index("## Class AB")
    table = doc[start : doc.index("\n## ", start)]
    documented = set(re.findall(r"^\| `(AB\d{3})` \|", table, re.M))
    translated = set(errors._BY_SQLSTATE)
    assert len(documented) >= 15
    assert sorted(documented ^ {c for c in translated if c.startswith("AB")}) == []
    for code in sorted(translated - documented):
        assert f"`{code}`" in doc, f"{code} is translated but not in docs/errors.md"
    declared = [
        code
        for cls in errors._BY_SQLSTATE.values()
        for code in [cls.sqlstate, *cls.more_sqlstates]
        if code is not None
    ]
    assert set(declared) == translated


def test_translate_keeps_foreign_errors_and_chains_ours(conn: Any, queue: str) -> None:
    foreign = psycopg.errors.UndefinedTable("no such table")
    assert errors.translate(foreign) is foreign
    with pytest.raises(psycopg.Error) as info:
        conn.execute("select absurd.cancel_task(%s, %s)", (queue, MISSING_TASK))
    ours = errors.translate(info.value)
    assert isinstance(ours, errors.TaskNotFound)
    assert ours.__cause__ is info.value
    assert str(ours) == f'Task "{MISSING_TASK}" not found in queue "{queue}"'


@pytest.mark.parametrize("name", ["x" * 58, "é" * 29, ""])
async def test_invalid_queue_names_are_refused_client_side(api: Api, name: str) -> None:
    cls = absurd.AsyncAbsurd if api.is_async else absurd.Absurd
    # no connection is made: the URL points nowhere
    with pytest.raises(errors.InvalidQueueName):
        cls("postgresql://invalid.invalid/none", queue_name=name)
    app = await api.client()
    with pytest.raises(errors.InvalidQueueName):
        await app.create_queue(name)
    with pytest.raises(ValueError):
        await app.spawn("t", queue=name)
    assert len(("x" * 57).encode()) == 57
    cls("postgresql://invalid.invalid/none", queue_name="x" * 57)  # the limit itself is fine


async def test_missing_queue_and_task_errors(api: Api) -> None:
    app = await api.client()
    nowhere = await api.client(f"missing_{uuid.uuid4().hex[:8]}")
    with pytest.raises(errors.QueueNotFound):
        await app.spawn("t", queue=api.raw(nowhere).queue_name)
    with pytest.raises(errors.QueueNotFound):
        await nowhere.emit_event("e")
    with pytest.raises(errors.QueueNotFound):
        await nowhere.claim_tasks()
    with pytest.raises(errors.TaskNotFound):
        await app.cancel_task(MISSING_TASK)
    with pytest.raises(errors.TaskNotFound):
        await app.retry_task(MISSING_TASK)
    assert await app.fetch_task_result(MISSING_TASK) is None
    with pytest.raises(errors.InvalidArgument):
        await app.emit_event("")
    with pytest.raises(ValueError, match="not registered"):
        await app.spawn("unregistered-and-no-queue")
    with pytest.raises(errors.InvalidArgument):
        await app.spawn("t", queue=api.queue, max_attempts=0)


async def test_a_handler_error_during_a_step_reports_its_type(api: Api) -> None:
    app = await api.client()

    @app.register_task("bad")
    async def bad(params: Any, ctx: Any) -> Any:
        await ctx.step("boom", lambda: 1 / 0)

    task_id = (await app.spawn("bad", max_attempts=1))["task_id"]
    await app.work_batch()
    snap = await app.fetch_task_result(task_id)
    assert snap is not None and snap.state == "failed"
    assert snap.failure["name"] == "ZeroDivisionError"
    assert "division by zero" in snap.failure["message"]


async def test_queue_administration(api: Api) -> None:
    app = await api.client()
    name = f"admin_{uuid.uuid4().hex[:8]}"
    await app.create_queue(name, cleanup_ttl="7 days", cleanup_limit=50)
    try:
        await app.create_queue(name)  # idempotent
        assert name in await app.list_queues()
        policy = await app.get_queue_policy(name)
        assert policy is not None
        assert policy["queue_name"] == name
        assert policy["storage_mode"] == "unpartitioned"
        assert policy["cleanup_ttl"] == dt.timedelta(days=7)
        assert policy["cleanup_limit"] == 50
        assert isinstance(policy["partition_lookahead"], dt.timedelta)
        await app.set_queue_policy(name, detach_mode="empty", detach_min_age="2 days")
        policy = await app.get_queue_policy(name)
        assert policy is not None
        assert (policy["detach_mode"], policy["detach_min_age"]) == ("empty", dt.timedelta(days=2))
        assert policy["cleanup_limit"] == 50  # untouched
        with pytest.raises(errors.InvalidQueuePolicy):
            await app.set_queue_policy(name, cleanup_limit=0)
        with pytest.raises(errors.UnsupportedStorageMode):
            await app.create_queue(f"{name}_p", storage_mode="bogus")  # type: ignore[arg-type]
        await app.create_queue(f"{name}_p", storage_mode="partitioned")
        parted = await app.get_queue_policy(f"{name}_p")
        assert parted is not None and parted["storage_mode"] == "partitioned"
        await app.drop_queue(f"{name}_p")
        # the default queue of the client is used when no name is given
        assert (await app.get_queue_policy())["queue_name"] == api.queue
    finally:
        await app.drop_queue(name)
    assert name not in await app.list_queues()
    assert await app.get_queue_policy(name) is None


async def test_make_async_and_make_sync_keep_queue_and_tasks(api: Api) -> None:
    app = await api.client(default_max_attempts=3)

    @app.register_task("shared")
    async def shared(params: Any, ctx: Any) -> Any:
        return "ran"

    raw = api.raw(app)
    other = raw.make_sync() if api.is_async else raw.make_async()
    try:
        assert isinstance(other, absurd.Absurd if api.is_async else absurd.AsyncAbsurd)
        assert other.queue_name == api.queue
        assert other.default_max_attempts == 3
        assert "shared" in other._registry
        assert not hasattr(raw, "make_async" if api.is_async else "make_sync")
        if api.is_async:
            spawned = other.spawn("shared", None)
        else:
            spawned = await other.spawn("shared", None)
        assert api.task(spawned["task_id"])["max_attempts"] == 3
    finally:
        closing = other.close()
        if inspect.isawaitable(closing):
            await closing


async def test_client_on_a_connection_uses_it_as_is(api: Api) -> None:
    app = await api.client(own_conn=True)
    await app.create_queue()
    spawned = await app.spawn("t", queue=api.queue)
    assert api.task(spawned["task_id"])["state"] == "pending"
    # closing the client does not close a connection it does not own
    await app.close()
    result = await app.fetch_task_result(spawned["task_id"])
    assert result is not None and result.state == "pending"
