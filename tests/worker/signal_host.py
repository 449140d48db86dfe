"""A host application that embeds a worker (launched with ``python``):

    python tests/worker/signal_host.py --flavour sync|async --dsn DSN --queue Q

It installs its own SIGTERM handler (which prints ``app handler`` and stops its
producer), starts a producer that spawns a short task every 20 ms, then runs
``start_worker()`` with its defaults. When the worker returns it prints
``restored`` if its SIGTERM handler is in place again, then ``exit``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from absurd import Absurd, AsyncAbsurd


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flavour", choices=["sync", "async"], required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    stopping = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        print("app handler", flush=True)
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)

    def produce() -> None:
        spawner = Absurd(args.dsn, args.queue)
        try:
            while not stopping.wait(0.02):
                spawner.spawn("work", {}, queue=args.queue)
        finally:
            spawner.close()
        print("producer stopped", flush=True)

    producer = threading.Thread(target=produce)
    producer.start()
    options: dict[str, Any] = {"concurrency": 2, "poll_interval": 0.2}

    if args.flavour == "sync":
        app = Absurd(args.dsn, args.queue)

        @app.register_task("work")
        def work(params: Any, ctx: Any) -> Any:
            ctx.step("nap", lambda: time.sleep(0.05))
            return 1

        print("worker starting", flush=True)
        app.start_worker(**options)
        app.close()
    else:

        async def amain() -> None:
            app = AsyncAbsurd(args.dsn, args.queue)

            @app.register_task("work")
            async def work(params: Any, ctx: Any) -> Any:
                await ctx.step("nap", lambda: asyncio.sleep(0.05))
                return 1

            print("worker starting", flush=True)
            await app.start_worker(**options)
            await app.close()

        asyncio.run(amain())
    producer.join(10)
    if signal.getsignal(signal.SIGTERM) is on_term:
        print("restored", flush=True)
    print("exit", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
