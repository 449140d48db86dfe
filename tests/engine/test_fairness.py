"""Fairness between flow keys: within a priority band keys are served in turn, a key's
weight is its share of the turns, and unkeyed runs are one more group (docs/engine.md
"Fairness between keys")."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from typing import Any

import psycopg
import pytest

from tests.conftest import Connect
from tests.engine._engine import Engine
from tests.engine.test_flow import (
    T0,
    assert_invariants,
    key_of,
    override,
    parked_by_key,
    policy,
    running_by_key,
    spawn_keyed,
)


def claim_keys(engine: Engine, n: int, qty: int = 1) -> list[str | None]:
    """The keys of the runs of n claims of qty each, in claim order."""
    keys: list[str | None] = []
    for _ in range(n):
        keys.extend(key_of(engine, r["run_id"]) for r in engine.claim(qty=qty))
    return keys


def test_a_single_task_is_not_starved_by_a_deep_backlog(engine: Engine) -> None:
    engine.set_time(T0)
    spawn_keyed(engine, ["A"] * 5000)
    engine.set_time(T0 + dt.timedelta(seconds=1))
    spawn_keyed(engine, ["B"])
    assert claim_keys(engine, 2) == ["A", "B"]
    assert claim_keys(engine, 2) == ["A", "A"]


def test_keys_with_backlogs_are_served_in_turn(engine: Engine) -> None:
    engine.set_time(T0)
    for key in ["c", "a", "b"]:  # spawned in this order, served in key order
        spawn_keyed(engine, [key] * 20)
        engine.set_time(engine.now() + dt.timedelta(seconds=1))
    assert claim_keys(engine, 9) == ["a", "b", "c"] * 3
    # A batch takes a turn of each key, round after round.
    assert Counter(claim_keys(engine, 1, qty=6)) == {"a": 2, "b": 2, "c": 2}


def test_a_new_session_starts_at_the_first_key_and_keeps_its_own_turn(
    engine: Engine, connect: Connect
) -> None:
    engine.set_time(T0)
    spawn_keyed(engine, ["a"] * 5 + ["b"] * 5)
    other = Engine(connect(), engine.queue)
    other.set_time(T0)
    assert claim_keys(engine, 1) == ["a"]
    assert claim_keys(other, 1) == ["a"]
    assert claim_keys(engine, 1) == ["b"]
    assert claim_keys(other, 1) == ["b"]


def test_weights_give_their_share_of_turns(engine: Engine) -> None:
    engine.set_time(T0)
    override(engine, "heavy", {"weight": 3})
    spawn_keyed(engine, ["heavy"] * 100 + ["light"] * 100)
    assert claim_keys(engine, 8) == ["heavy"] * 3 + ["light"] + ["heavy"] * 3 + ["light"]
    counts = Counter(claim_keys(engine, 10, qty=4))
    assert counts == {"heavy": 30, "light": 10}
    # The weight is shown, and removing it goes back to one turn each.
    rows = engine.rows("select * from absurd.get_flow_limits(%s)", (engine.queue,))
    assert [(r["flow_key"], r["limits"]) for r in rows] == [("heavy", {"weight": 3})]
    override(engine, "heavy", None)
    assert Counter(claim_keys(engine, 10)) == {"heavy": 5, "light": 5}


def test_priority_bands_win_over_turns(engine: Engine) -> None:
    engine.set_time(T0)
    spawn_keyed(engine, ["a"] * 5)
    engine.spawn("t", 1, flow_key="b", priority=5)
    engine.spawn("t", 2, flow_key="b", priority=5)
    assert claim_keys(engine, 3) == ["b", "b", "a"]


def test_unkeyed_runs_take_turns_as_one_more_group(engine: Engine) -> None:
    engine.set_time(T0)
    spawn_keyed(engine, ["a"] * 20 + ["b"] * 20)
    engine.set_time(T0 + dt.timedelta(seconds=1))
    spawn_keyed(engine, [None] * 20)
    assert claim_keys(engine, 6) == ["a", "b", None, "a", "b", None]


def test_a_queue_without_keys_claims_oldest_first_and_has_no_keys(engine: Engine) -> None:
    engine.set_time(T0)
    ids = [engine.spawn("t", i)["task_id"] for i in range(5)]
    assert not engine.one(
        "select has_keys from absurd.queues where queue_name = %s", (engine.queue,)
    )["has_keys"]
    assert {r["task_id"] for r in engine.claim(qty=5)} == set(ids)
    engine.spawn("t", 9, flow_key="k")
    assert engine.one("select has_keys from absurd.queues where queue_name = %s", (engine.queue,))[
        "has_keys"
    ]


def test_spawn_tasks_sets_the_flag(engine: Engine) -> None:
    spawn_keyed(engine, [None, None])
    assert not engine.one(
        "select has_keys from absurd.queues where queue_name = %s", (engine.queue,)
    )["has_keys"]
    spawn_keyed(engine, [None, "k"])
    assert engine.one("select has_keys from absurd.queues where queue_name = %s", (engine.queue,))[
        "has_keys"
    ]


def test_delayed_and_parked_keys_are_passed_over(engine: Engine) -> None:
    """Keys whose runs are not due cost a probe each, bounded: the claim still finds
    the due run behind hundreds of them, and the turns go on past them."""
    engine.set_time(T0)
    for i in range(300):
        engine.spawn("t", i, flow_key=f"d{i:03}", delay=3600)
    spawn_keyed(engine, ["z"] * 3 + ["a"] * 3)
    assert Counter(claim_keys(engine, 6)) == {"a": 3, "z": 3}
    assert engine.claim(qty=1) == []


def test_limits_and_turns_together_stay_exact(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, max_running_per_key=2)
    spawn_keyed(engine, ["a"] * 10 + ["b"] * 10)
    engine.set_time(T0 + dt.timedelta(seconds=1))
    spawn_keyed(engine, ["c"] + [None] * 3)
    # One claim of one: keys in turn, each admitted under its limit.
    assert claim_keys(engine, 4) == ["a", "b", "c", None]
    assert claim_keys(engine, 3) == ["a", "b", None]
    assert_invariants(engine)
    assert claim_keys(engine, 3) == [None]  # a and b are full: parked
    assert running_by_key(engine) == {"a": 2, "b": 2, "c": 1, None: 3}
    assert parked_by_key(engine) == {"a": 8, "b": 8}
    assert_invariants(engine)


def test_weights_with_a_queue_limit(engine: Engine) -> None:
    engine.set_time(T0)
    policy(engine, max_running=4)
    override(engine, "a", {"weight": 3})
    spawn_keyed(engine, ["a"] * 10 + ["b"] * 10)
    assert Counter(claim_keys(engine, 1, qty=10)) == {"a": 3, "b": 1}
    assert_invariants(engine)


@pytest.mark.parametrize("weight", [0, -1, 1.5, "3", 10**6, 1e300, True, [3], {"w": 3}])
def test_bad_weights_are_refused_and_change_nothing(engine: Engine, weight: Any) -> None:
    override(engine, "k", {"weight": 2})
    with pytest.raises(psycopg.Error) as info:
        engine.conn.execute(
            "select absurd.set_flow_limit(%s, 'k', %s)",
            (engine.queue, json.dumps({"weight": weight})),
        )
    assert info.value.sqlstate == "AB051"
    rows = engine.rows("select * from absurd.get_flow_limits(%s)", (engine.queue,))
    assert [r["limits"] for r in rows] == [{"weight": 2}]


HOSTILE = ["'; drop table x; --", 'a"b', "ключ", " x", "\tx", "%s", "日本", "a\\b", "{}", "z" * 512]


def test_the_fairness_index_comes_with_the_first_keyed_spawn(engine: Engine) -> None:
    """Queues whose tasks never carry a key do not maintain r_<q>_fwi."""

    def fair_index() -> Any:
        return engine.conn.execute(
            "select count(*) from pg_indexes where schemaname = 'absurd' and indexname = %s",
            (f"r_{engine.queue}_fwi",),
        ).fetchone()

    engine.spawn("plain")
    assert fair_index() == (0,)
    spawn_keyed(engine, ["a"])
    assert fair_index() == (1,)


def test_hostile_keys_take_turns(engine: Engine) -> None:
    engine.set_time(T0)
    override(engine, HOSTILE[0], {"weight": 2})
    spawn_keyed(engine, [k for k in HOSTILE for _ in range(4)])
    counts = Counter(claim_keys(engine, 1, qty=len(HOSTILE) + 1))
    assert counts == {**dict.fromkeys(HOSTILE, 1), HOSTILE[0]: 2}


def test_partitioned_queue(conn: psycopg.Connection[Any]) -> None:
    queue = "fair_part"
    conn.execute("select absurd.create_queue(%s, 'partitioned')", (queue,))
    try:
        engine = Engine(conn, queue)

        def fair_index() -> Any:
            return conn.execute(
                "select count(*) from pg_indexes where schemaname = 'absurd' and indexname = %s",
                (f"r_{queue}_fwi",),
            ).fetchone()

        assert fair_index() == (0,)  # made by the first keyed spawn
        spawn_keyed(engine, ["a"] * 5 + ["b"] * 5)
        assert fair_index() == (1,)
        assert claim_keys(engine, 4) == ["a", "b", "a", "b"]
    finally:
        conn.execute("select absurd.drop_queue(%s)", (queue,))
