"""Streams: chunks a running task appends, read in order from any seq, closed explicitly
or by the task's end, exactly once across replays, one pointer NOTIFY per write."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import Connect
from tests.engine._engine import Engine, Row

T0 = dt.datetime(2030, 1, 7, 10, 0, 30, tzinfo=dt.timezone.utc)  # fixed, never today


@pytest.fixture
def pinned(engine: Engine) -> Engine:
    engine.set_time(T0)
    return engine


def write(
    engine: Engine, run: Row, chunks: list[Any], stream: str = "out", keys: list[str] | None = None
) -> int:
    row = engine.one(
        "select absurd.write_stream(%s, %s, %s, %s, %s::jsonb[], %s) as last",
        (
            engine.queue,
            run["task_id"],
            run["run_id"],
            stream,
            [json.dumps(c) for c in chunks],
            keys,
        ),
    )
    return int(row["last"])


def close(engine: Engine, run: Row, stream: str = "out") -> int:
    row = engine.one(
        "select absurd.close_stream(%s, %s, %s, %s) as seq",
        (engine.queue, run["task_id"], run["run_id"], stream),
    )
    return int(row["seq"])


def read(
    engine: Engine, task_id: Any, stream: str = "out", from_seq: int = 0, limit: int = 1000
) -> list[Row]:
    return engine.rows(
        "select * from absurd.read_stream(%s, %s, %s, %s, %s)",
        (engine.queue, task_id, stream, from_seq, limit),
    )


def chunks(rows: list[Row]) -> list[Any]:
    return [r["chunk"] for r in rows if not r["closed"]]


def stored(engine: Engine) -> int:
    return engine.count("s")


def test_chunks_are_read_in_order_from_any_seq(pinned: Engine) -> None:
    pinned.spawn()
    run = pinned.claim_one()
    assert write(pinned, run, ["a", "b"]) == 1
    assert write(pinned, run, [{"t": "c"}, None, 3]) == 4
    rows = read(pinned, run["task_id"])
    assert [r["seq"] for r in rows] == [0, 1, 2, 3, 4]
    assert chunks(rows) == ["a", "b", {"t": "c"}, None, 3]
    assert {r["attempt"] for r in rows} == {1}
    assert {r["written_at"] for r in rows} == {T0}
    assert chunks(read(pinned, run["task_id"], from_seq=3)) == [None, 3]
    assert chunks(read(pinned, run["task_id"], from_seq=1, limit=2)) == ["b", {"t": "c"}]
    assert read(pinned, run["task_id"], from_seq=5) == []  # open, nothing new
    assert read(pinned, run["task_id"], stream="other") == []
    assert write(pinned, run, []) == 4


def test_explicit_close_ends_the_stream_and_refuses_writes(pinned: Engine) -> None:
    pinned.spawn()
    run = pinned.claim_one()
    write(pinned, run, ["a"])
    assert close(pinned, run) == 1
    assert close(pinned, run) == 1  # idempotent
    last = read(pinned, run["task_id"])[-1]
    assert last["closed"] is True and last["chunk"] is None and last["seq"] == 1
    with pytest.raises(psycopg.Error) as err:
        write(pinned, run, ["b"])
    assert err.value.sqlstate == "AB042"
    assert stored(pinned) == 2
    # A replayed write of chunks the stream holds is no error, even when closed.
    pinned.spawn()
    other = pinned.claim_one()
    write(pinned, other, ["x"], keys=["k0"])
    close(pinned, other)
    assert write(pinned, other, ["x"], keys=["k0"]) == 1


@pytest.mark.parametrize("how", ["complete", "fail", "cancel"])
def test_a_task_that_ends_closes_its_streams(pinned: Engine, how: str) -> None:
    task = pinned.spawn(max_attempts=1)
    run = pinned.claim_one()
    write(pinned, run, ["a", "b"])
    assert read(pinned, task["task_id"])[-1]["closed"] is False
    if how == "complete":
        pinned.complete(run["run_id"], 1)
    elif how == "fail":
        pinned.fail(run["run_id"], {"message": "x"})
    else:
        pinned.cancel(task["task_id"])
    rows = read(pinned, task["task_id"])
    assert [(r["seq"], r["closed"]) for r in rows] == [(0, False), (1, False), (2, True)]
    assert read(pinned, task["task_id"], from_seq=2) == rows[2:]
    # Streams never written read as closed too, and the hot path stored nothing.
    assert [r["seq"] for r in read(pinned, task["task_id"], stream="never")] == [0]
    assert stored(pinned) == 2


def test_a_missing_task_reads_as_closed(engine: Engine) -> None:
    rows = read(engine, uuid.uuid4())
    assert [(r["seq"], r["closed"]) for r in rows] == [(0, True)]


def test_keyed_writes_are_written_once(pinned: Engine) -> None:
    """The replay rule: a chunk whose key the stream holds is not written again."""
    pinned.spawn(max_attempts=2)
    run = pinned.claim_one()
    assert write(pinned, run, ["a", "b"], keys=["s#0", "s#1"]) == 1
    pinned.fail(run["run_id"], {"message": "crash"})
    retry = pinned.claim_one()
    # The replay writes the same two chunks again, then one more, in one batch.
    assert write(pinned, retry, ["a", "b", "c"], keys=["s#0", "s#1", "s#2"]) == 2
    # Duplicated keys inside a batch keep the first.
    assert write(pinned, retry, ["d", "d"], keys=["s#3", "s#3"]) == 3
    rows = read(pinned, run["task_id"])
    assert chunks(rows) == ["a", "b", "c", "d"]
    assert [r["attempt"] for r in rows] == [1, 1, 2, 2]


HOSTILE = [
    "",
    " ",
    "a b",
    "../x",
    "a/b",
    "x\n",
    "é",
    "-x",
    "a" * 129,
    "a'; drop table x;--",
    "\x01",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_stream_names_are_refused(engine: Engine, name: str) -> None:
    engine.spawn()
    run = engine.claim_one()
    for call in (
        lambda: write(engine, run, ["a"], stream=name),
        lambda: close(engine, run, stream=name),
        lambda: read(engine, run["task_id"], stream=name),
    ):
        with pytest.raises(psycopg.Error) as err:
            call()
        assert err.value.sqlstate == "AB040"
    assert stored(engine) == 0


def test_null_stream_name_is_refused(engine: Engine) -> None:
    engine.spawn()
    run = engine.claim_one()
    with pytest.raises(psycopg.Error) as err:
        engine.rows(
            "select absurd.write_stream(%s, %s, %s, null, array['1']::jsonb[])",
            (engine.queue, run["task_id"], run["run_id"]),
        )
    assert err.value.sqlstate == "AB040"


def test_oversize_chunks_and_bad_batches_write_nothing(engine: Engine) -> None:
    engine.spawn()
    run = engine.claim_one()
    with pytest.raises(psycopg.Error) as err:
        write(engine, run, ["ok", "x" * 70_000])
    assert err.value.sqlstate == "AB041"
    with pytest.raises(psycopg.Error) as err:
        write(engine, run, ["a", "b"], keys=["only-one"])
    assert err.value.sqlstate == "AB015"
    with pytest.raises(psycopg.Error) as err:
        write(engine, run, ["a"] * 1001)
    assert err.value.sqlstate == "AB015"
    with pytest.raises(psycopg.Error) as err:
        engine.rows(
            "select absurd.write_stream(%s, %s, %s, 'out', array[null]::jsonb[])",
            (engine.queue, run["task_id"], run["run_id"]),
        )
    assert err.value.sqlstate == "AB015"
    assert stored(engine) == 0


def test_a_run_that_does_not_hold_the_task_writes_nothing(engine: Engine) -> None:
    first = engine.spawn(max_attempts=2)
    run = engine.claim_one()
    engine.spawn()
    other = engine.claim_one()
    # Another task's run.
    with pytest.raises(psycopg.Error) as err:
        write(engine, {"task_id": first["task_id"], "run_id": other["run_id"]}, ["a"])
    assert err.value.sqlstate == "AB043"
    with pytest.raises(psycopg.Error) as err:
        write(engine, {"task_id": first["task_id"], "run_id": uuid.uuid4()}, ["a"])
    assert err.value.sqlstate == "AB043"
    # A run that failed (its lease expired, say): the retry holds the task now.
    engine.fail(run["run_id"], {"message": "lost"})
    with pytest.raises(psycopg.Error) as err:
        write(engine, run, ["a"])
    assert err.value.sqlstate == "AB043"
    with pytest.raises(psycopg.Error) as err:
        close(engine, run)
    assert err.value.sqlstate == "AB043"
    engine.complete(other["run_id"], 1)
    with pytest.raises(psycopg.Error) as err:
        write(engine, other, ["a"])
    assert err.value.sqlstate == "AB043"
    retry = engine.claim_one()
    engine.cancel(retry["task_id"])
    with pytest.raises(psycopg.Error) as err:
        write(engine, retry, ["a"])
    assert err.value.sqlstate == "AB001"
    assert stored(engine) == 0


def listen_stream(connect: Connect, engine: Engine, task_id: Any, stream: str = "out") -> Any:
    listener = connect()
    row = listener.execute(
        "select absurd.stream_channel(%s, %s, %s)", (engine.queue, task_id, stream)
    ).fetchone()
    assert row is not None
    listener.execute(sql.SQL("listen {}").format(sql.Identifier(str(row[0]))))
    return listener


def notes(listener: Any) -> list[Any]:
    return [json.loads(n.payload) for n in listener.notifies(timeout=0.2, stop_after=50)]


def test_one_pointer_notification_per_write(engine: Engine, connect: Connect) -> None:
    task = engine.spawn()
    run = engine.claim_one()
    listener = listen_stream(connect, engine, task["task_id"])
    write(engine, run, ["a"] * 100)
    write(engine, run, ["b"], keys=["k"])
    write(engine, run, ["b"], keys=["k"])  # nothing new: no notification
    write(engine, run, ["c"], stream="elsewhere")  # another channel
    close(engine, run)
    tid = str(task["task_id"])
    assert notes(listener) == [
        {"task_id": tid, "stream": "out", "seq": 99},
        {"task_id": tid, "stream": "out", "seq": 100},
        {"task_id": tid, "stream": "out", "seq": 101},
    ]


def test_the_ephemeral_lane_notifies_the_chunks_and_stores_nothing(
    engine: Engine, connect: Connect
) -> None:
    task = engine.spawn()
    run = engine.claim_one()
    listener = listen_stream(connect, engine, task["task_id"], "typing")
    engine.rows(
        "select absurd.notify_stream(%s, %s, %s, 'typing', %s::jsonb[])",
        (engine.queue, task["task_id"], run["run_id"], ['"a"', '{"b": 1}']),
    )
    assert notes(listener) == [
        {"task_id": str(task["task_id"]), "stream": "typing", "chunks": ["a", {"b": 1}]}
    ]
    with pytest.raises(psycopg.Error) as err:
        engine.rows(
            "select absurd.notify_stream(%s, %s, %s, 'typing', %s::jsonb[])",
            (engine.queue, task["task_id"], run["run_id"], [json.dumps("x" * 3000)] * 3),
        )
    assert err.value.sqlstate == "AB041"
    assert stored(engine) == 0 and notes(listener) == []


def test_cleanup_and_drop_take_the_chunks_with_the_task(pinned: Engine) -> None:
    pinned.spawn()
    run = pinned.claim_one()
    write(pinned, run, ["a", "b"])
    pinned.spawn()
    live = pinned.claim_one()
    write(pinned, live, ["c"])
    pinned.complete(run["run_id"], 1)
    pinned.set_time(T0 + dt.timedelta(days=2))
    pinned.conn.execute("select absurd.cleanup_tasks(%s, 3600)", (pinned.queue,))
    assert stored(pinned) == 1
    assert read(pinned, run["task_id"])[0]["closed"] is True


def test_partitioned_queue(conn: psycopg.Connection[Any]) -> None:
    name = f"sp_{uuid.uuid4().hex[:8]}"
    conn.execute("select absurd.create_queue(%s, 'partitioned')", (name,))
    try:
        engine = Engine(conn, name)
        parts = engine.rows(
            "select partition_table from absurd._queue_partitions(%s) where prefix = 's'", (name,)
        )
        assert parts, "s_<q> gets weekly partitions like c_<q>"
        task = engine.spawn()
        run = engine.claim_one()
        write(engine, run, ["a", "b"], keys=["0", "1"])
        assert write(engine, run, ["a", "b"], keys=["0", "1"]) == 1
        assert write_many(engine, [(run, "out", ["b", "c"], ["1", "2"])]) == [True]
        engine.complete(run["run_id"], 1)
        assert chunks(read(engine, task["task_id"])) == ["a", "b", "c"]
        assert [r["closed"] for r in read(engine, task["task_id"])] == [False] * 3 + [True]
        conn.execute("select absurd.cleanup_tasks(%s, 0)", (name,))
        assert engine.count("s") == 0
    finally:
        conn.execute("select absurd.drop_queue(%s)", (name,))
    assert conn.execute("select to_regclass(%s)", (f"absurd.s_{name}",)).fetchone() == (None,)


def test_concurrent_writers_and_readers(engine: Engine, connect: Connect) -> None:
    """Writers on four connections append to one run's stream while a reader reads:
    seqs stay contiguous, each chunk once, and every read is a prefix."""
    task = engine.spawn()
    run = engine.claim_one()
    per_writer, writers = 50, 4
    errors: list[BaseException] = []
    prefixes: list[list[Any]] = []
    done = threading.Event()

    def writer(n: int) -> None:
        try:
            mine = Engine(connect(), engine.queue)
            for i in range(per_writer):
                write(mine, run, [f"{n}-{i}"])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        mine = Engine(connect(), engine.queue)
        while not done.is_set():
            prefixes.append(read(mine, task["task_id"], limit=10000))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not errors
    rows = read(engine, task["task_id"], limit=10000)
    assert [r["seq"] for r in rows] == list(range(per_writer * writers))
    assert sorted(chunks(rows)) == sorted(
        f"{n}-{i}" for n in range(writers) for i in range(per_writer)
    )
    for n in range(writers):  # each writer's chunks in its own order
        mine = [c for c in chunks(rows) if c.startswith(f"{n}-")]
        assert mine == [f"{n}-{i}" for i in range(per_writer)]
    final = [(r["seq"], r["chunk"]) for r in rows]
    for prefix in prefixes:
        assert [(r["seq"], r["chunk"]) for r in prefix] == final[: len(prefix)]


def write_many(
    engine: Engine, items: list[tuple[Row, str, list[Any], list[str] | None]]
) -> list[Any]:
    """write_streams: one (run, stream, chunks, keys) per item, in one call."""
    row = engine.one(
        "select absurd.write_streams(%s, %s::uuid[], %s::uuid[], %s::text[], %s::integer[],"
        " %s::jsonb[], %s::text[]) as applied",
        (
            engine.queue,
            [run["task_id"] for run, _, _, _ in items],
            [run["run_id"] for run, _, _, _ in items],
            [stream for _, stream, _, _ in items],
            [len(c) for _, _, c, _ in items],
            [json.dumps(c) for _, _, cs, _ in items for c in cs],
            [k for _, _, cs, keys in items for k in (keys or [None] * len(cs))],
        ),
    )
    return list(row["applied"])


def test_write_streams_applies_each_item_as_write_stream_would(
    pinned: Engine, connect: Connect
) -> None:
    """Many streams of many runs in one call: in order, exactly once by key, one
    pointer NOTIFY per stream however many items wrote to it; an item write_stream
    would refuse is not applied (false: the caller sends it alone) and writes nothing,
    nor does a later item of its stream (the order holds), while the others are
    applied."""
    a_task, b_task, c_task = pinned.spawn(), pinned.spawn(), pinned.spawn(max_attempts=1)
    a, b, c = pinned.claim_one(), pinned.claim_one(), pinned.claim_one()
    by_task = {r["task_id"]: r for r in (a, b, c)}
    a, b, c = by_task[a_task["task_id"]], by_task[b_task["task_id"]], by_task[c_task["task_id"]]
    write(pinned, c, ["c0"])
    close(pinned, c)
    listener = listen_stream(connect, pinned, a["task_id"])
    applied = write_many(
        pinned,
        [
            (a, "out", ["a0", "a1"], ["k0", "k1"]),
            (b, "out", [{"b": 0}], ["k0"]),
            (a, "out", ["a1 again", "a2"], ["k1", "k2"]),  # k1 is held: skipped
            (a, "other", ["x"], ["k0"]),
            (b, "bad name!", ["never"], ["k9"]),
            (c, "out", ["after close"], ["k5"]),  # closed: for write_stream to refuse
            ({"task_id": a["task_id"], "run_id": b["run_id"]}, "out", ["stolen"], ["s"]),
            ({"task_id": b["task_id"], "run_id": uuid.uuid4()}, "out", ["ghost"], ["g"]),
            (b, "out", ["after ghost"], ["k1"]),  # after a refused item of its stream
            (b, "empty", [], []),
        ],
    )
    assert applied == [True, True, True, True, False, False, False, False, False, True]
    assert chunks(read(pinned, a["task_id"])) == ["a0", "a1", "a2"]
    assert chunks(read(pinned, a["task_id"], stream="other")) == ["x"]
    assert chunks(read(pinned, b["task_id"])) == [{"b": 0}]
    assert chunks(read(pinned, c["task_id"])) == ["c0"]
    assert stored(pinned) == 2 + 3 + 1 + 1
    tid = str(a["task_id"])
    assert notes(listener) == [{"task_id": tid, "stream": "out", "seq": 2}]
    # Sent again (a batch whose reply was lost): nothing is written twice.
    again = [(a, "out", ["a0", "a1"], ["k0", "k1"]), (b, "out", [{"b": 0}], ["k0"])]
    assert write_many(pinned, again) == [True, True]
    assert stored(pinned) == 7
    assert notes(listener) == []
    # A cancelled run's item is not applied either (alone, it gets AB001).
    pinned.cancel(b["task_id"])
    assert write_many(pinned, [(b, "out", ["late"], ["k7"])]) == [False]
    # An oversize chunk: not applied, nothing of its item written; other streams are.
    big = "x" * 70000
    items = [(a, "out", ["fine", big], ["k8", "k9"]), (a, "other", ["ok"], ["k9"])]
    assert write_many(pinned, items) == [False, True]
    assert chunks(read(pinned, a["task_id"])) == ["a0", "a1", "a2"]
    assert chunks(read(pinned, a["task_id"], stream="other")) == ["x", "ok"]


def test_write_streams_refuses_arrays_that_do_not_match(pinned: Engine) -> None:
    pinned.spawn()
    run = pinned.claim_one()
    bad = [
        ([run["task_id"]], [run["run_id"]], ["out"], [2], ['"a"']),  # counts > chunks
        ([run["task_id"]], [run["run_id"]], ["out", "x"], [1], ['"a"']),  # streams
        ([run["task_id"]], [run["run_id"]], ["out"], [-1], []),
        ([run["task_id"]], [run["run_id"]], ["out"], [None], ['"a"']),
    ]
    for task_ids, run_ids, streams, counts, data in bad:
        with pytest.raises(psycopg.Error) as err:
            pinned.one(
                "select absurd.write_streams(%s, %s::uuid[], %s::uuid[], %s::text[],"
                " %s::integer[], %s::jsonb[])",
                (pinned.queue, task_ids, run_ids, streams, counts, data),
            )
        assert err.value.sqlstate == "AB015"
    assert stored(pinned) == 0
