"""Fan-out/fan-in with the async SDK: ctx.map, ctx.spawn and ctx.await_first.

Run it with no arguments:

    .venv/bin/python examples/fan_out.py

A ``report`` task, on an embedded PostgreSQL:

1. fans out one ``count-words`` child per document with ``ctx.map`` and fans the
   results back in (in the order given);
2. races three ``fetch-mirror`` children (``ctx.spawn`` + ``ctx.await_first``),
   takes the fastest and cancels the others.

While it waits, the parent *suspends*: it holds no worker slot, so a worker with
fewer slots than tasks never deadlocks on its own children. Each time a child finishes, the
parent is replayed from its checkpoints, so each child is spawned exactly once.
It exits 1 if a child ran twice, a result is wrong, or the race is not won by
the fastest mirror.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from typing import Any

import psycopg

from absurd import AsyncAbsurd, AsyncTaskContext, schema
from absurd.embedded import start_embedded

QUEUE = "reports"
DOCS = [
    {"name": "intro.md", "text": "Absurd keeps durable state in PostgreSQL"},
    {"name": "steps.md", "text": "every step is checkpointed once"},
    {"name": "events.md", "text": "a run can sleep until an event arrives"},
    {"name": "waits.md", "text": "waiting holds no worker slot"},
    {"name": "faq.md", "text": "no other infrastructure is needed"},
]
MIRRORS = {"mirror-a": 1.5, "mirror-b": 0.1, "mirror-c": 1.0}  # download latency (s)

executions: Counter[str] = Counter()  # how often each handler (or step) body ran
_said: set[str] = set()


def say(text: str) -> None:
    print(text, flush=True)


def say_once(text: str) -> None:
    """Handlers replay from the top after each wait: narrate each line once."""
    if text not in _said:
        _said.add(text)
        say(text)


def build_app(dsn: str) -> AsyncAbsurd:
    app = AsyncAbsurd(dsn, QUEUE)

    @app.register_task("count-words")
    async def count_words(doc: dict[str, str], ctx: AsyncTaskContext) -> dict[str, Any]:
        def count() -> dict[str, Any]:
            executions[f"count:{doc['name']}"] += 1
            return {"doc": doc["name"], "words": len(doc["text"].split())}

        return await ctx.step("count", count)  # type: ignore[no-any-return]

    @app.register_task("fetch-mirror")
    async def fetch_mirror(params: dict[str, Any], ctx: AsyncTaskContext) -> dict[str, Any]:
        async def download() -> str:
            executions[f"download:{params['mirror']}"] += 1
            await asyncio.sleep(params["latency"])
            return f"payload from {params['mirror']}"

        body = await ctx.step("download", download)
        return {"mirror": params["mirror"], "body": body}

    @app.register_task("report")
    async def report(params: dict[str, Any], ctx: AsyncTaskContext) -> dict[str, Any]:
        executions["report handler"] += 1
        say_once(f"  [report] fan-out: {len(params['docs'])} count-words children (ctx.map)")
        snapshots = await ctx.map("count-words", params["docs"])
        counts = [s.result for s in snapshots]
        total = sum(c["words"] for c in counts)
        say_once(f"  [report] fan-in: {[(c['doc'], c['words']) for c in counts]} -> {total}")

        say_once(f"  [report] racing {len(MIRRORS)} mirrors (ctx.spawn + ctx.await_first)")
        racers = {
            name: await ctx.spawn(
                "fetch-mirror", {"mirror": name, "latency": latency}, step_name=f"race:{name}"
            )
            for name, latency in MIRRORS.items()
        }
        winner_id, winner = await ctx.await_first([r["task_id"] for r in racers.values()])
        say_once(f"  [report] first to finish: {winner.result['mirror']}")

        async def cancel_losers() -> list[str]:
            losers = [n for n, r in racers.items() if str(r["task_id"]) != str(winner_id)]
            for name in losers:
                await app.cancel_task(racers[name]["task_id"])
            return losers

        cancelled = await ctx.step("cancel-losers", cancel_losers)
        say_once(f"  [report] cancelled the slower mirrors: {cancelled}")
        return {"total_words": total, "counts": counts, "mirror": winner.result["mirror"]}

    return app


async def run(dsn: str) -> int:
    app = build_app(dsn)
    try:
        await app.create_queue()
        # Four slots for six tasks at a time: a waiting parent holds none.
        worker = asyncio.create_task(
            app.start_worker(concurrency=4, poll_interval=0.5, shutdown_grace=2.0)
        )
        say("1. spawn the report")
        task_id = (await app.spawn("report", {"docs": DOCS}))["task_id"]
        snapshot = await app.await_task_result(task_id, timeout=30)
        say(f"2. the report finished: {snapshot.state}")
        mirror_states = {
            name: (await app.fetch_task_result(t)) for name, t in await _racer_ids(dsn, task_id)
        }
        app.stop_worker()
        await worker
    finally:
        await app.close()

    result = snapshot.result or {}
    say(f"\nResult: total_words={result.get('total_words')}, mirror={result.get('mirror')}")
    say(f"Mirror task states: { {n: s.state if s else None for n, s in mirror_states.items()} }")
    say(f"Executions: {dict(executions)}")
    expected_total = sum(len(d["text"].split()) for d in DOCS)
    ok = (
        snapshot.state == "completed"
        and result.get("total_words") == expected_total
        and [c["doc"] for c in result.get("counts", [])] == [d["name"] for d in DOCS]
        and result.get("mirror") == "mirror-b"
        and all(executions[f"count:{d['name']}"] == 1 for d in DOCS)
        and all(n <= 1 for k, n in executions.items() if k.startswith("download:"))
        and mirror_states["mirror-b"] is not None
        and mirror_states["mirror-b"].state == "completed"
        and all(
            s is not None and s.state == "cancelled"
            for n, s in mirror_states.items()
            if n != "mirror-b"
        )
    )
    say(
        f"OK: each child ran once; the report handler ran {executions['report handler']}"
        " times, suspended (holding no slot) in between"
        if ok
        else "FAILED: see above"
    )
    return 0 if ok else 1


async def _racer_ids(dsn: str, task_id: str) -> list[tuple[str, str]]:
    """The mirror tasks the report spawned (read from its checkpoints)."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(
            f'select checkpoint_name, state from absurd."c_{QUEUE}"'
            " where task_id = %s and checkpoint_name like 'race:%%'",
            (task_id,),
        )
        return [
            (name.removeprefix("race:"), state["task_id"]) for name, state in await cur.fetchall()
        ]


def main() -> int:
    say("Fan-out/fan-in: map children, race mirrors, cancel the losers\n")
    server = start_embedded()
    try:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            schema.migrate(conn)
        return asyncio.run(run(server.dsn))
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
