"""Failover to a promoted standby: a PostgreSQL 15 primary and its synchronous
streaming standby (tests/ha/cluster.py), a worker process and a spawner on the
multi-host URL (``target_session_attrs=read-write``); under load the primary is
stopped hard (``pg_ctl -m immediate``) and, GAP seconds later (a failover
manager's decision time), the standby is promoted. Then:

- the worker and the spawner are back at work within RECOVERY_LIMIT seconds of
  the promotion;
- no task is lost: every task spawned (acknowledged) completes;
- no step whose checkpoint was acknowledged runs again (synchronous replication:
  what the primary acknowledged is on the standby);
- leases taken before the failover run out normally on the new primary: a run
  claimed by a statement whose reply was lost (the worker never learnt of it) is
  retried once its lease (30 s here) expires, within the deadline.

The figures (time to reconnect, to 80% of the throughput before the failover)
are printed; ``scripts/failover-soak`` runs many rounds.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from absurd import Absurd
from tests.ha.cluster import Pair, bindir
from tests.ha.scenario import WorkerProcess, failover_round

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(150),
    pytest.mark.skipif(
        bindir() is None,
        reason="needs PostgreSQL 15 server binaries (apt-get install postgresql-15)",
    ),
]

TASKS = 600
RECOVERY_LIMIT = 5.0
#: Between the primary's death and the promotion. psycopg_pool alone retries
#: after 1, 2, 4, 8 ... s: with 8 s here its next attempt came about 7 s after
#: the promotion.
GAP = 8.0


@pytest.fixture
def pair() -> Iterator[Pair]:
    pair = Pair.start(synchronous=True)
    try:
        yield pair
    finally:
        pair.stop()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_failover_to_promoted_standby(pair: Pair, flavour: str, tmp_path: Path) -> None:
    queue = f"ha_{uuid.uuid4().hex[:8]}"
    app = Absurd(pair.dsn, queue)
    app.create_queue(queue)
    app.close()
    worker = WorkerProcess(pair.dsn, queue, flavour, tmp_path / "journal", concurrency=8)
    try:
        result = failover_round(pair, worker, queue, tasks=TASKS, gap=GAP, deadline=40)
    finally:
        worker.stop()
    print(f"\n[{flavour}, PG15 synchronous standby] {result.line()}")
    context = f"{result.line()} {result.notes}\n{worker.log_tail()}"
    assert not result.notes, context
    assert result.spawned == TASKS, context
    assert result.lost == 0, context
    assert result.reruns == 0, context
    assert result.worker_reconnect is not None, context
    assert result.worker_reconnect < RECOVERY_LIMIT, context
    assert result.spawner_reconnect is not None, context
    assert result.spawner_reconnect < RECOVERY_LIMIT, context
