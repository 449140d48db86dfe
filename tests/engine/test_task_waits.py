"""await_task_result: a run suspends until other tasks finish, then gets their snapshot."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.engine._engine import Engine


@pytest.fixture
def children(conn: psycopg.Connection[Any]) -> Iterator[Engine]:
    name = f"kids_{uuid.uuid4().hex[:8]}"
    conn.execute("select absurd.create_queue(%s)", (name,))
    yield Engine(conn, name)
    conn.execute("select absurd.drop_queue(%s)", (name,))


def await_tasks(
    parent: Engine, run: dict[str, Any], queue: str, ids: list[Any], step: str = "wait"
) -> dict[str, Any]:
    return parent.one(
        "select * from absurd.await_task_result(%s, %s, %s, %s, %s, %s, null)",
        (parent.queue, run["task_id"], run["run_id"], step, queue, ids),
    )


def test_parent_suspends_until_child_completes(engine: Engine, children: Engine) -> None:
    engine.spawn("parent")
    parent_run = engine.claim_one()
    child = children.spawn("child", {"n": 2})
    got = await_tasks(engine, parent_run, children.queue, [child["task_id"]])
    assert got == {"should_suspend": True, "payload": None}
    assert engine.task(parent_run["task_id"])["state"] == "sleeping"

    child_run = children.claim_one()
    children.complete(child_run["run_id"], {"doubled": 4})
    woken = engine.claim_one()
    assert woken["run_id"] == parent_run["run_id"]
    replay = await_tasks(engine, woken, children.queue, [child["task_id"]])
    assert replay["should_suspend"] is False
    assert replay["payload"] == {
        "task_id": str(child["task_id"]),
        "state": "completed",
        "result": {"doubled": 4},
        "failure": None,
    }
    assert engine.count("w") == 0
    assert engine.one("select count(*) as n from absurd.task_watchers")["n"] == 0


def test_same_queue_wait_frees_the_slot(engine: Engine) -> None:
    engine.spawn("parent")
    parent_run = engine.claim_one()
    child = engine.spawn("child")
    assert await_tasks(engine, parent_run, engine.queue, [child["task_id"]])["should_suspend"]
    # The only claimable run is the child: the parent gave its slot up.
    child_run = engine.claim_one()
    assert child_run["task_id"] == child["task_id"]
    engine.fail(child_run["run_id"], {"name": "Boom", "message": "no"})  # retried: not terminal
    assert engine.claim_one()["task_id"] == child["task_id"]  # attempt 2
    engine.cancel(child["task_id"])
    woken = engine.claim_one()
    assert (
        woken["run_id"] == parent_run["run_id"] and woken["event_payload"]["state"] == "cancelled"
    )


def test_finished_child_returns_at_once(engine: Engine, children: Engine) -> None:
    child = children.spawn("child", max_attempts=1)
    children.fail(children.claim_one()["run_id"], {"name": "E", "message": "bad"})
    engine.spawn("parent")
    parent_run = engine.claim_one()
    got = await_tasks(engine, parent_run, children.queue, [child["task_id"]])
    assert got["should_suspend"] is False
    assert got["payload"]["state"] == "failed" and got["payload"]["failure"]["message"] == "bad"


def test_first_of_several_children_wins(engine: Engine, children: Engine) -> None:
    kids = [children.spawn("child", i) for i in range(3)]
    engine.spawn("parent")
    parent_run = engine.claim_one()
    ids = [k["task_id"] for k in kids]
    assert await_tasks(engine, parent_run, children.queue, ids, step="race")["should_suspend"]
    runs = {r["task_id"]: r for r in children.claim(qty=3)}
    children.complete(runs[kids[1]["task_id"]]["run_id"], "second")
    children.complete(runs[kids[0]["task_id"]]["run_id"], "first")  # too late
    woken = engine.claim_one()
    assert woken["event_payload"]["task_id"] == str(kids[1]["task_id"])
    replay = await_tasks(engine, woken, children.queue, ids, step="race")
    assert replay["payload"]["result"] == "second"


def test_unknown_child_is_ab009(engine: Engine, children: Engine) -> None:
    engine.spawn("parent")
    run = engine.claim_one()
    with pytest.raises(psycopg.Error) as err:
        await_tasks(engine, run, children.queue, [uuid.uuid4()])
    assert err.value.sqlstate == "AB009"
    assert engine.one("select count(*) as n from absurd.task_watchers")["n"] == 0


@pytest.mark.parametrize(
    ("change", "sqlstate"),
    [
        ({"step": ""}, "AB014"),
        ({"ids": []}, "AB014"),
        ({"ids": None}, "AB014"),
        ({"child_queue": "no-such-queue"}, "AB005"),
        ({"child_queue": "x" * 58}, "AB004"),
        ({"timeout": -1}, "AB015"),
    ],
)
def test_await_task_result_errors_change_nothing(
    engine: Engine, children: Engine, change: dict[str, Any], sqlstate: str
) -> None:
    engine.spawn("parent")
    run = engine.claim_one()
    child = children.spawn("child")
    args = {
        "step": "wait",
        "child_queue": children.queue,
        "ids": [child["task_id"]],
        "timeout": None,
    }
    args.update(change)
    with pytest.raises(psycopg.Error) as err:
        engine.conn.execute(
            "select * from absurd.await_task_result(%s, %s, %s, %s, %s, %s::uuid[], %s)",
            (
                engine.queue,
                run["task_id"],
                run["run_id"],
                args["step"],
                args["child_queue"],
                args["ids"],
                args["timeout"],
            ),
        )
    assert err.value.sqlstate == sqlstate
    assert engine.one("select count(*) as n from absurd.task_watchers")["n"] == 0
    assert engine.task(run["task_id"])["state"] == "running"


# -- await_all_tasks: one join for a set of tasks ---------------------------------


def await_all(
    parent: Engine, run: dict[str, Any], queue: str, ids: list[Any], step: str = "all"
) -> dict[str, Any]:
    return parent.one(
        "select * from absurd.await_all_tasks(%s, %s, %s, %s, %s, %s, null)",
        (parent.queue, run["task_id"], run["run_id"], step, queue, ids),
    )


def test_await_all_wakes_once_when_the_last_child_finishes(
    engine: Engine, children: Engine
) -> None:
    engine.spawn("parent")
    parent_run = engine.claim_one()
    kids = [children.spawn("child", {"i": i}, max_attempts=1) for i in range(5)]
    ids = [k["task_id"] for k in kids]
    early = children.claim_one()
    children.complete(early["run_id"], {"i": "early"})  # done before the wait
    got = await_all(engine, parent_run, children.queue, [*ids, ids[1]])  # a repeat too
    assert got == {"should_suspend": True, "payload": None}
    assert engine.one("select remaining from absurd.task_joins")["remaining"] == 4
    runs = children.claim(qty=10)
    assert len(runs) == 4
    for n, r in enumerate(runs):
        if n == 2:
            children.fail(r["run_id"], {"message": "boom"})  # max_attempts 1: failed
        else:
            children.complete(r["run_id"], {"task": str(r["task_id"])})
        if n < 3:  # not yet: the parent stays asleep
            assert engine.task(parent_run["task_id"])["state"] == "sleeping"
    woken = engine.claim_one()
    assert woken["run_id"] == parent_run["run_id"]
    replay = await_all(engine, woken, children.queue, [*ids, ids[1]])
    assert replay["should_suspend"] is False
    payload = replay["payload"]
    assert [p["task_id"] for p in payload] == [str(t) for t in [*ids, ids[1]]]
    states = [p["state"] for p in payload]
    assert states.count("failed") == 1 and states.count("completed") == 5
    assert engine.one("select count(*) as n from absurd.task_joins")["n"] == 0
    assert engine.one("select count(*) as n from absurd.task_watchers")["n"] == 0


def test_await_all_of_finished_tasks_does_not_suspend(engine: Engine, children: Engine) -> None:
    engine.spawn("parent")
    parent_run = engine.claim_one()
    kid = children.spawn("child")
    children.complete(children.claim_one()["run_id"], 7)
    got = await_all(engine, parent_run, children.queue, [kid["task_id"]])
    assert got["should_suspend"] is False
    assert got["payload"] == [
        {"task_id": str(kid["task_id"]), "state": "completed", "result": 7, "failure": None}
    ]


def test_await_all_refuses_unknown_and_empty(engine: Engine, children: Engine) -> None:
    engine.spawn("parent")
    parent_run = engine.claim_one()
    kid = children.spawn("child")
    with pytest.raises(psycopg.Error) as info:
        await_all(engine, parent_run, children.queue, [kid["task_id"], uuid.uuid4()])
    assert info.value.sqlstate == "AB009"
    with pytest.raises(psycopg.Error) as info:
        await_all(engine, parent_run, children.queue, [])
    assert info.value.sqlstate == "AB014"
    assert engine.one("select count(*) as n from absurd.task_watchers")["n"] == 0


def test_await_all_join_goes_with_its_queues(engine: Engine, children: Engine) -> None:
    engine.spawn("parent")
    first = engine.claim_one()
    ids = [children.spawn("child")["task_id"] for _ in range(3)]
    assert await_all(engine, first, children.queue, ids)["should_suspend"]
    children.complete(children.claim_one()["run_id"], 1)
    assert engine.one("select remaining from absurd.task_joins")["remaining"] == 2
    other = f"kids_{uuid.uuid4().hex[:8]}"
    engine.conn.execute("select absurd.create_queue(%s)", (other,))
    engine.conn.execute("select absurd.drop_queue(%s)", (other,))
    assert engine.one("select count(*) as n from absurd.task_joins")["n"] == 1
    engine.conn.execute("select absurd.drop_queue(%s)", (children.queue,))
    engine.conn.execute("select absurd.create_queue(%s)", (children.queue,))  # for teardown
    assert engine.one("select count(*) as n from absurd.task_joins")["n"] == 0


def test_concurrent_children_wake_the_join_exactly_once(
    engine: Engine, children: Engine, connect: Any
) -> None:
    """Children finishing at once in separate sessions: one of them is last, and
    exactly one event wakes the parent."""
    import threading

    engine.spawn("parent")
    parent_run = engine.claim_one()
    n = 24
    ids = [children.spawn("child")["task_id"] for _ in range(n)]
    assert await_all(engine, parent_run, children.queue, ids)["should_suspend"]
    runs = children.claim(qty=n)
    sessions = [connect() for _ in range(4)]
    barrier = threading.Barrier(len(sessions))

    def finish(k: int) -> None:
        barrier.wait()
        for r in runs[k :: len(sessions)]:
            sessions[k].execute(
                "select absurd.complete_run(%s, %s, '1')", (children.queue, r["run_id"])
            )

    threads = [threading.Thread(target=finish, args=(k,)) for k in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    woken = engine.claim(qty=5)
    assert [w["run_id"] for w in woken] == [parent_run["run_id"]]
    payload = await_all(engine, woken[0], children.queue, ids)["payload"]
    assert [p["state"] for p in payload] == ["completed"] * n
    assert engine.one("select count(*) as n from absurd.task_joins")["n"] == 0
