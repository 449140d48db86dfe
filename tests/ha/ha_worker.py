"""A worker process for the failover test and soak (launched with ``python``).

    python tests/ha/ha_worker.py --flavour sync|async --dsn DSN --queue Q --journal FILE
        [--concurrency N]

Its one task, ``steps`` ``{"steps": n}``, runs steps ``s0``..``s{n-1}`` and
journals, in FILE (local, so that it outlives any server), one line per event,
after its time (``time.time()``):

* ``exec <task_id> <step>`` when a step's function runs;
* ``ack <task_id> <step>`` once the step's checkpoint is acknowledged (its
  ``ctx.step`` returned);
* ``done <task_id>`` when the task returns.

A step run again after its ``ack`` (an ``exec`` line after it) is an
acknowledged checkpoint that was lost. The process exits 0 when its worker stops
(SIGTERM, SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from typing import Any

from absurd import Absurd, AsyncAbsurd


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flavour", choices=["sync", "async"], required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s [{args.flavour} {os.getpid()}] %(name)s %(levelname)s %(message)s",
    )
    # O_APPEND: each line is one write(2), whole, whichever thread writes it.
    fd = os.open(args.journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def journal(*words: Any) -> None:
        os.write(fd, (" ".join(str(w) for w in (time.time(), *words)) + "\n").encode())

    options: dict[str, Any] = {"concurrency": args.concurrency, "claim_timeout": 30}

    if args.flavour == "sync":
        app = Absurd(args.dsn, args.queue)

        @app.register_task("steps")
        def steps(params: Any, ctx: Any) -> Any:
            for i in range(params["steps"]):
                name = f"s{i}"
                ctx.step(name, lambda name=name: journal("exec", ctx.task_id, name))
                journal("ack", ctx.task_id, name)
            journal("done", ctx.task_id)
            return params["steps"]

        try:
            app.start_worker(**options)
        finally:
            app.close()
        return 0

    async def amain() -> None:
        app = AsyncAbsurd(args.dsn, args.queue)

        @app.register_task("steps")
        async def steps(params: Any, ctx: Any) -> Any:
            for i in range(params["steps"]):
                name = f"s{i}"
                await ctx.step(name, lambda name=name: journal("exec", ctx.task_id, name))
                journal("ack", ctx.task_id, name)
            journal("done", ctx.task_id)
            return params["steps"]

        try:
            await app.start_worker(**options)
        finally:
            await app.close()

    asyncio.run(amain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
