"""Event fan-in's emitters and figures, shared by every system of ``event_fanin.py``.

Standard library only: the DBOS peer (``benchmarks/peers/dbos_peer.py``) imports it from
a virtualenv that has neither psycopg nor absurd.
"""

from __future__ import annotations

import collections
import statistics
import threading
import time
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from typing import Any

from benchmarks.harness.stats import percentile

#: Opens one emitter thread's connection: a context manager that yields ``emit(name)``.
Opener = Callable[[], AbstractContextManager[Callable[[str], Any]]]


def emit_all(
    names: list[str], emitters: int, opener: Opener, deadline: float | None = None
) -> list[tuple[int, float]]:
    """Emits every name once from ``emitters`` threads, thread k taking positions k,
    k + emitters, ...; returns (position, ms) per emit. Past ``deadline`` (a
    ``time.monotonic()`` value) the threads stop early; an emitter's error is raised
    once every thread has ended."""
    out: list[tuple[int, float]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(k: int) -> None:
        mine: list[tuple[int, float]] = []
        try:
            with opener() as emit:
                for pos in range(k, len(names), emitters):
                    if deadline is not None and time.monotonic() > deadline:
                        break
                    t = time.perf_counter()
                    emit(names[pos])
                    mine.append((pos, (time.perf_counter() - t) * 1000))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(emitters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def fanin_figures(
    n: int,
    emitters: int,
    suspend_s: float,
    emit_s: float,
    emits: list[tuple[int, float]],
    resumed: int,
    resume_s: float,
    entries: Collection[int],
) -> dict[str, Any]:
    """The scenario's report: the emit rate; the per-emit p50 and p99, and the median of
    the first and of the last tenth of the emits in their order (flat: the cost does not
    grow with the events stored or the waits left); the tasks resumed; how many tasks
    had their handler entered how many times (``entries``: one count per task)."""
    ms = [m for _, m in sorted(emits)]
    tenth = max(1, len(ms) // 10)
    return {
        "n": n,
        "emitters": emitters,
        "suspend_all_s": round(suspend_s, 1),
        "emit_per_s": round(n / emit_s, 1),
        "emit_p50_ms": round(percentile(ms, 0.5), 3),
        "emit_p99_ms": round(percentile(ms, 0.99), 3),
        "emit_first_tenth_median_ms": round(statistics.median(ms[:tenth]), 3),
        "emit_last_tenth_median_ms": round(statistics.median(ms[-tenth:]), 3),
        "resumed": resumed,
        "resumed_all_s": round(resume_s, 1),
        "handler_entries": dict(collections.Counter(entries)),
    }
