"""A worker process for the chaos suite (launched with ``python``; killed at will).

    python tests/chaos/chaos_worker.py --flavour sync|async --dsn DSN --queue Q
        [--claim-timeout S] [--concurrency N] [--stall S]

Task ``chaos`` (params, all optional): ``steps`` plain steps ``s0``..; ``nap``
seconds of ``sleep_for`` after ``s0``; ``event`` awaited after ``s1``; ``flaky: k``
(step ``flaky`` fails k times, then passes); ``doom`` (step ``doom`` always
fails); ``stall`` (step ``stall`` blocks ``--stall`` seconds, longer than the
lease and without heartbeat, on its first execution only). Every step logs its
execution in the side-effect table (tests/chaos/invariants.py) on a connection
of its own, then returns the value the SDK checkpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import Any

import psycopg

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absurd import Absurd, AsyncAbsurd
from tests.chaos.invariants import EFFECTS_TABLE


class InjectedFailure(Exception):
    """A failure the chaos workload raises on purpose."""


class Effects:
    """The side-effect log: each write is its own transaction on its own connection."""

    def __init__(self, dsn: str, queue: str, stall: float) -> None:
        self.dsn, self.queue, self.stall_seconds = dsn, queue, stall

    def log(self, task_id: Any, run_id: Any, step: str, kind: str = "run") -> None:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as c:
            c.execute(
                f"insert into {EFFECTS_TABLE} (queue, task_id, run_id, step, kind, pid)"
                " values (%s, %s, %s, %s, %s, %s)",
                (self.queue, task_id, run_id, step, kind, os.getpid()),
            )

    def count(self, task_id: Any, step: str, kind: str) -> int:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as c:
            row = c.execute(
                f"select count(*) from {EFFECTS_TABLE}"
                " where queue = %s and task_id = %s and step = %s and kind = %s",
                (self.queue, task_id, step, kind),
            ).fetchone()
        return int(row[0]) if row else 0

    # The step bodies, shared by both flavours (blocking; async runs them in a thread).
    def plain(self, task_id: Any, run_id: Any, step: str, value: int) -> int:
        self.log(task_id, run_id, step)
        return value

    def flaky(self, task_id: Any, run_id: Any, times: int) -> str:
        if self.count(task_id, "flaky", "fail") < times:
            self.log(task_id, run_id, "flaky", "fail")
            raise InjectedFailure(f"injected failure in task {task_id}")
        self.log(task_id, run_id, "flaky")
        return "passed"

    def doom(self, task_id: Any, run_id: Any) -> str:
        self.log(task_id, run_id, "doom", "fail")
        raise InjectedFailure(f"doomed task {task_id}")

    def first_stall(self, task_id: Any, run_id: Any) -> bool:
        """Logs the stall step; True when this is its first execution (it must block)."""
        first = self.count(task_id, "stall", "stall") == 0
        self.log(task_id, run_id, "stall", "stall")
        return first


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flavour", choices=["sync", "async"], required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--claim-timeout", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--stall", type=float, default=5.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s [{args.flavour} {os.getpid()}] %(name)s %(levelname)s %(message)s",
    )
    fx = Effects(args.dsn, args.queue, args.stall)
    options: dict[str, Any] = {
        "claim_timeout": args.claim_timeout,
        "concurrency": args.concurrency,
        "poll_interval": 0.1,
        "shutdown_grace": 2.0,
    }
    if args.flavour == "sync":
        app = Absurd(args.dsn, args.queue)

        @app.register_task("chaos")
        def chaos(p: dict[str, Any], ctx: Any) -> Any:
            tid, rid = ctx.task_id, ctx.run_id
            for i in range(p.get("steps", 3)):
                ctx.step(f"s{i}", lambda i=i: fx.plain(tid, rid, f"s{i}", i))
                if i == 0 and p.get("nap"):
                    ctx.sleep_for("nap", p["nap"])
                if i == 1 and p.get("event"):
                    ctx.await_event(p["event"])
            if p.get("flaky"):
                ctx.step("flaky", lambda: fx.flaky(tid, rid, p["flaky"]))
            if p.get("doom"):
                ctx.step("doom", lambda: fx.doom(tid, rid))
            if p.get("stall"):

                def stall() -> str:
                    if fx.first_stall(tid, rid):
                        time.sleep(fx.stall_seconds)  # past the lease, no heartbeat
                        fx.log(tid, rid, "stall", "woke")
                    return "stalled"

                ctx.step("stall", stall)
            return {"run_id": str(rid), "attempt": ctx.attempt}

        try:
            app.start_worker(**options)
        finally:
            app.close()
        return 0

    async def amain() -> None:
        app = AsyncAbsurd(args.dsn, args.queue)

        def blocking(fn: Any, *a: Any) -> Any:
            return lambda: asyncio.to_thread(fn, *a)

        @app.register_task("chaos")
        async def chaos(p: dict[str, Any], ctx: Any) -> Any:
            tid, rid = ctx.task_id, ctx.run_id
            for i in range(p.get("steps", 3)):
                await ctx.step(f"s{i}", blocking(fx.plain, tid, rid, f"s{i}", i))
                if i == 0 and p.get("nap"):
                    await ctx.sleep_for("nap", p["nap"])
                if i == 1 and p.get("event"):
                    await ctx.await_event(p["event"])
            if p.get("flaky"):
                await ctx.step("flaky", blocking(fx.flaky, tid, rid, p["flaky"]))
            if p.get("doom"):
                await ctx.step("doom", blocking(fx.doom, tid, rid))
            if p.get("stall"):

                async def stall() -> str:
                    if await asyncio.to_thread(fx.first_stall, tid, rid):
                        await asyncio.sleep(fx.stall_seconds)  # past the lease, no heartbeat
                        await asyncio.to_thread(fx.log, tid, rid, "stall", "woke")
                    return "stalled"

                await ctx.step("stall", stall)
            return {"run_id": str(rid), "attempt": ctx.attempt}

        try:
            await app.start_worker(**options)
        finally:
            await app.close()

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
