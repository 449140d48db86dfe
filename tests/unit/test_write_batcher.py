"""The group commit's hand-over of the sending (WriteBatcher), without a database: the
batch itself (``_flush``) is replaced by one that records the batches and applies every
write. The SQL side of the batches is tested in tests/engine/test_batch_writes.py and
tests/worker/test_group_commit.py."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from absurd._async import _compat as acompat
from absurd._async.writes import CheckpointWrite, CompletionWrite, Outcome
from absurd._async.writes import WriteBatcher as AsyncWriteBatcher
from absurd._sync import writes as sync_writes
from absurd._sync.writes import WriteBatcher as SyncWriteBatcher

APPLIED = Outcome.APPLIED

pytestmark = pytest.mark.timeout(30)


def batcher(cls: Any) -> Any:
    return cls(None, "q", 60, "w", lambda finishing: 0, lambda claimed: None)


def held_first_flush(batches: list[list[Any]], release: asyncio.Event) -> Any:
    """An asyncio ``_flush`` that records each batch's run ids, holds the first
    batch until ``release`` is set, and applies every write."""

    async def flush(batch: list[Any]) -> None:
        batches.append([w.write.run_id for w in batch])
        if len(batches) == 1:
            await release.wait()
        for w in batch:
            acompat.resolve(w.future, APPLIED)

    return flush


def test_async_writes_queue_behind_a_batch_and_share_the_next() -> None:
    async def main() -> list[list[Any]]:
        writes = batcher(AsyncWriteBatcher)
        batches: list[list[Any]] = []
        release = asyncio.Event()
        writes._flush = held_first_flush(batches, release)
        first = asyncio.create_task(writes.submit(CompletionWrite(0, "0")))
        await asyncio.sleep(0.01)  # the first batch is on its way
        rest = [asyncio.create_task(writes.submit(CompletionWrite(i, str(i)))) for i in range(1, 6)]
        await asyncio.sleep(0.01)
        release.set()
        outcomes = await asyncio.gather(first, *rest)
        assert outcomes == [APPLIED] * 6
        assert writes._sending is False and writes._pending == []
        return batches

    assert asyncio.run(main()) == [[0], [1, 2, 3, 4, 5]]


def test_async_writer_cancelled_as_it_is_handed_the_sending_hands_it_on() -> None:
    """Otherwise the writes queued behind it would wait for ever."""

    async def main() -> None:
        writes = batcher(AsyncWriteBatcher)
        release = asyncio.Event()
        flushed: list[list[Any]] = []
        writes._flush = held_first_flush(flushed, release)
        a = asyncio.create_task(writes.submit(CompletionWrite("a", "1")))
        await asyncio.sleep(0.01)
        b = asyncio.create_task(writes.submit(CompletionWrite("b", "1")))
        c = asyncio.create_task(writes.submit(CompletionWrite("c", "1")))
        await asyncio.sleep(0.01)
        original = writes._pass_on

        def pass_on_then_cancel_b() -> None:
            original()  # b is handed the sending...
            b.cancel()  # ...and cancelled before it can run

        writes._pass_on = pass_on_then_cancel_b
        release.set()
        assert await a == APPLIED
        writes._pass_on = original
        with pytest.raises(asyncio.CancelledError):
            await b
        assert await asyncio.wait_for(c, 5) == APPLIED
        assert flushed[-1] == ["c"]
        assert writes._sending is False

    asyncio.run(main())


def test_sync_writes_from_many_threads_all_complete_in_shared_batches() -> None:
    writes = batcher(SyncWriteBatcher)
    sizes: list[int] = []
    lock = threading.Lock()

    def flush(batch: list[Any]) -> None:
        with lock:
            sizes.append(len(batch))
        time.sleep(0.005)  # a round trip
        for w in batch:
            w.future.set_result(sync_writes.Outcome.APPLIED)

    writes._flush = flush
    outcomes: list[Any] = []

    def task(i: int) -> None:
        for k in range(20):
            outcomes.append(writes.submit(sync_writes.CheckpointWrite(i, f"s{k}", "1", i)))

    threads = [threading.Thread(target=task, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert outcomes == [sync_writes.Outcome.APPLIED] * 160
    assert sum(sizes) == 160
    assert max(sizes) > 1 and len(sizes) < 160
    assert writes._sending is False and writes._pending == []


def test_writes_after_close_go_alone() -> None:
    writes = batcher(SyncWriteBatcher)
    writes.close()
    assert writes.submit(sync_writes.CompletionWrite(1, "1")) is sync_writes.Outcome.ALONE


def test_a_batch_stops_at_about_a_mebibyte_of_data_but_always_takes_one() -> None:
    from absurd._async.writes import MAX_BATCH, MAX_BATCH_BYTES, _Pending, _take

    big = "x" * (MAX_BATCH_BYTES // 2 + 1)
    pending = [
        _Pending(CheckpointWrite(1, "s", big, 1), None),
        _Pending(CompletionWrite(2, big), None),
        _Pending(CompletionWrite(3, "1"), None),
    ]
    assert [w.write.run_id for w in _take(pending)] == [1]  # two halves and a bit: too much
    assert [w.write.run_id for w in _take(pending)] == [2, 3]
    assert pending == []
    huge = [_Pending(CompletionWrite(4, "x" * (2 * MAX_BATCH_BYTES)), None)]
    assert len(_take(huge)) == 1 and huge == []
    many = [_Pending(CompletionWrite(i, "1"), None) for i in range(MAX_BATCH + 5)]
    assert len(_take(many)) == MAX_BATCH and len(many) == 5
