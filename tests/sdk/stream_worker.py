"""A worker process for tests/sdk/test_streams.py: a task that streams words, a
step at a time, slowly enough to be SIGKILLed in the middle.

    python stream_worker.py --flavour sync|async --dsn DSN --queue Q
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import absurd

#: What the task "talk" streams: per sentence, its words (a step each).
SENTENCES = [f"sentence {s} has words {' '.join(str(w) for w in range(6))}" for s in range(8)]


def expected() -> list[str]:
    return [word for sentence in SENTENCES for word in sentence.split()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flavour", choices=["sync", "async"], required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    if args.flavour == "sync":
        app = absurd.Absurd(args.dsn, queue_name=args.queue)

        @app.register_task("talk")
        def talk(params: Any, ctx: absurd.TaskContext) -> int:
            out = ctx.stream("out")
            for n, sentence in enumerate(SENTENCES):

                def say(sentence: str = sentence) -> int:
                    for word in sentence.split():
                        out.write(word)
                        time.sleep(params["pause"])
                    return len(sentence.split())

                ctx.step(f"sentence-{n}", say)
            out.close()
            return len(SENTENCES)

        app.start_worker(claim_timeout=2, poll_interval=0.1)
    else:
        aapp = absurd.AsyncAbsurd(args.dsn, queue_name=args.queue)

        @aapp.register_task("talk")
        async def atalk(params: Any, ctx: absurd.AsyncTaskContext) -> int:
            out = ctx.stream("out")
            for n, sentence in enumerate(SENTENCES):

                async def say(sentence: str = sentence) -> int:
                    for word in sentence.split():
                        await out.write(word)
                        await asyncio.sleep(params["pause"])
                    return len(sentence.split())

                await ctx.step(f"sentence-{n}", say)
            await out.close()
            return len(SENTENCES)

        asyncio.run(aapp.start_worker(claim_timeout=2, poll_interval=0.1))


if __name__ == "__main__":
    main()
