"""absurd.record_delivery and cleanup_ingress_deliveries: a webhook delivery is acted
on once, in the transaction of its action, and forgotten after its TTL."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

import psycopg
import pytest

from tests.conftest import Connect

T0 = dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.timezone.utc)  # fixed, never today


def record(conn: psycopg.Connection[Any], source: Any, delivery: Any) -> bool:
    row = conn.execute("select absurd.record_delivery(%s, %s)", (source, delivery)).fetchone()
    assert row is not None
    return bool(row[0])


def test_first_delivery_is_recorded_and_a_repeat_is_not(conn: psycopg.Connection[Any]) -> None:
    src = f"s-{uuid.uuid4().hex}"
    assert record(conn, src, "evt_1") is True
    assert record(conn, src, "evt_1") is False
    assert record(conn, src, "evt_2") is True
    assert record(conn, src + "-other", "evt_1") is True  # ids are per source


def test_a_rolled_back_delivery_can_come_again(conn: psycopg.Connection[Any]) -> None:
    src = f"s-{uuid.uuid4().hex}"
    with pytest.raises(ZeroDivisionError), conn.transaction():
        assert record(conn, src, "evt_1") is True
        raise ZeroDivisionError  # the action failed
    assert record(conn, src, "evt_1") is True


def test_concurrent_copies_wait_for_the_first(connect: Connect) -> None:
    """A copy that arrives while the first is in flight waits for its transaction:
    a commit makes it a repeat, a rollback makes it the first."""
    src = f"s-{uuid.uuid4().hex}"
    for outcome, expected in (("commit", False), ("rollback", True)):
        first, second = connect(), connect()
        first.execute("begin")
        assert record(first, src, outcome) is True
        got: list[bool] = []
        waiter = threading.Thread(target=lambda: got.append(record(second, src, outcome)))  # noqa: B023
        waiter.start()
        waiter.join(0.3)
        assert waiter.is_alive()  # blocked on the first's row
        first.execute(outcome)
        waiter.join(10)
        assert got == [expected]


@pytest.mark.parametrize(
    ("source", "delivery"),
    [(None, "x"), ("", "x"), ("s" * 201, "x"), ("s", None), ("s", ""), ("s", "d" * 513)],
)
def test_bad_arguments_are_ab015(conn: psycopg.Connection[Any], source: Any, delivery: Any) -> None:
    with pytest.raises(psycopg.Error) as info:
        record(conn, source, delivery)
    assert info.value.sqlstate == "AB015"


def test_hostile_ids_are_plain_data(conn: psycopg.Connection[Any]) -> None:
    src = "s'; drop table absurd.ingress_deliveries; --"
    for delivery in (
        "evt\n1",
        "'); delete from absurd.ingress_deliveries; --",
        "\u202e",
        "é" * 512,
    ):
        assert record(conn, src, delivery) is True
        assert record(conn, src, delivery) is False


def test_cleanup_forgets_deliveries_past_their_ttl(conn: psycopg.Connection[Any]) -> None:
    src = f"s-{uuid.uuid4().hex}"
    conn.execute("select set_config('absurd.fake_now', %s, false)", (T0.isoformat(),))
    try:
        assert record(conn, src, "old") is True
        later = T0 + dt.timedelta(days=3)
        conn.execute("select set_config('absurd.fake_now', %s, false)", (later.isoformat(),))
        assert record(conn, src, "new") is True
        (deleted,) = conn.execute("select absurd.cleanup_ingress_deliveries(86400)").fetchone() or (
            0,
        )
        assert deleted >= 1
        assert record(conn, src, "old") is True  # forgotten: a new first delivery
        assert record(conn, src, "new") is False
        with pytest.raises(psycopg.Error) as info:
            conn.execute("select absurd.cleanup_ingress_deliveries(-1)")
        assert info.value.sqlstate == "AB015"
    finally:
        conn.execute("set absurd.fake_now = default")
