"""A worker process for the shutdown and crash tests (launched with ``python``).

    python tests/worker/worker_process.py --flavour sync|async --dsn DSN --queue Q
        [--grace S] [--claim-timeout S] [--concurrency N] [--max-block S]

Tasks (both flavours; each step records its side effect in the table
``absurd_test_effects``, outside the checkpoint, so a test can count executions):

* ``nap`` ``{"seconds": s}``: step ``start``, blocks ``s`` seconds, step ``end``.
* ``multi`` ``{"block": s}``: steps ``one``, ``two``, ``three`` (records, then
  blocks ``s`` seconds), ``four``.

``--max-block`` caps every block (a second worker finishes what the first left).
The process exits 0 when its worker stops (SIGTERM, SIGINT).
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

from absurd import Absurd, AsyncAbsurd

EFFECTS_DDL = """
create table if not exists absurd_test_effects (
  id bigserial primary key,
  queue text not null,
  task_id uuid not null,
  step text not null,
  pid integer not null,
  at timestamptz not null default clock_timestamp()
)"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flavour", choices=["sync", "async"], required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--claim-timeout", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--max-block", type=float, default=None)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s [{args.flavour} {os.getpid()}] %(name)s %(levelname)s %(message)s",
    )

    def block_for(seconds: float) -> float:
        return seconds if args.max_block is None else min(seconds, args.max_block)

    def record(task_id: str, step: str) -> None:
        with psycopg.connect(args.dsn, autocommit=True) as c:
            c.execute(
                "insert into absurd_test_effects (queue, task_id, step, pid)"
                " values (%s, %s, %s, %s)",
                (args.queue, task_id, step, os.getpid()),
            )

    worker_options: dict[str, Any] = {
        "claim_timeout": args.claim_timeout,
        "concurrency": args.concurrency,
        "poll_interval": args.poll_interval,
        "shutdown_grace": args.grace,
    }

    if args.flavour == "sync":
        app = Absurd(args.dsn, args.queue)

        @app.register_task("nap")
        def nap(params: Any, ctx: Any) -> Any:
            ctx.step("start", lambda: record(ctx.task_id, "start"))
            time.sleep(block_for(params["seconds"]))
            ctx.step("end", lambda: record(ctx.task_id, "end"))
            return {"pid": os.getpid()}

        @app.register_task("multi")
        def multi(params: Any, ctx: Any) -> Any:
            def three() -> None:
                record(ctx.task_id, "three")
                time.sleep(block_for(params["block"]))

            for name in ("one", "two"):
                ctx.step(name, lambda name=name: record(ctx.task_id, name))
            ctx.step("three", three)
            ctx.step("four", lambda: record(ctx.task_id, "four"))
            return {"pid": os.getpid()}

        try:
            app.start_worker(**worker_options)
        finally:
            app.close()
        return 0

    async def amain() -> None:
        app = AsyncAbsurd(args.dsn, args.queue)

        async def arecord(task_id: str, step: str) -> None:
            await asyncio.to_thread(record, task_id, step)

        @app.register_task("nap")
        async def nap(params: Any, ctx: Any) -> Any:
            await ctx.step("start", lambda: arecord(ctx.task_id, "start"))
            await asyncio.sleep(block_for(params["seconds"]))
            await ctx.step("end", lambda: arecord(ctx.task_id, "end"))
            return {"pid": os.getpid()}

        @app.register_task("multi")
        async def multi(params: Any, ctx: Any) -> Any:
            async def three() -> None:
                await arecord(ctx.task_id, "three")
                await asyncio.sleep(block_for(params["block"]))

            for name in ("one", "two"):
                await ctx.step(name, lambda name=name: arecord(ctx.task_id, name))
            await ctx.step("three", three)
            await ctx.step("four", lambda: arecord(ctx.task_id, "four"))
            return {"pid": os.getpid()}

        try:
            await app.start_worker(**worker_options)
        finally:
            await app.close()

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
