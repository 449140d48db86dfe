"""A durable agent loop: every model call and every tool call is a step.

Run it with no arguments:

    .venv/bin/python examples/agent_loop.py

A travel agent (a deterministic fake model, so the run is reproducible) plans a
trip by calling tools: search flights, check the weather, book. Each model reply
and each tool result is checkpointed, and the model's words are streamed as it
"types" them (``ctx.stream("tokens")``), for a UI to show live. The demo:

1. spawns the agent task on an embedded PostgreSQL;
2. starts a worker *process* that loses power (``os._exit``) in the middle of
   the third model call, half of its reply streamed: no cleanup, no goodbye;
3. shows the checkpoints that survived;
4. starts a second worker, which resumes the loop: earlier model and tool calls
   are replayed from their checkpoints, so the flight is booked exactly once,
   and the third reply is streamed again without repeating its first half;
5. reads the token stream (``app.read_stream``) as a UI would.

It exits 1 if any model or tool call ran twice, a token was streamed twice, or
the agent did not finish.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import psycopg

from absurd import Absurd, TaskContext, schema
from absurd.embedded import start_embedded

QUEUE = "agents"
GOAL = "Book me a weekend in Lisbon, somewhere sunny."
MAX_TURNS = 8

calls: Counter[str] = Counter()  # model and tool calls made by this process


def say(text: str) -> None:
    print(text, flush=True)


# -- the fake model and its tools ------------------------------------------------
def fake_model(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Deterministic: decides the next action from the tool results seen so far."""
    seen = {m["name"]: m["content"] for m in messages if m["role"] == "tool"}
    if "search_flights" not in seen:
        return {"role": "assistant", "tool": "search_flights", "args": {"to": "LIS"}}
    if "get_weather" not in seen:
        return {"role": "assistant", "tool": "get_weather", "args": {"city": "Lisbon"}}
    if "book_flight" not in seen:
        cheapest = min(seen["search_flights"], key=lambda f: f["price"])
        return {"role": "assistant", "tool": "book_flight", "args": {"flight": cheapest["id"]}}
    booking, weather = seen["book_flight"], seen["get_weather"]
    return {
        "role": "assistant",
        "final": f"Booked {booking['flight']} (confirmation {booking['confirmation']});"
        f" Lisbon will be {weather['sky']} at {weather['high_c']} C.",
    }


def words(reply: dict[str, Any]) -> list[str]:
    """What the fake model "types" for a reply, word by word."""
    if "final" in reply:
        return reply["final"].split()
    return f"I will call {reply['tool']} with {reply['args']}.".split()


def transcript() -> list[str]:
    """Every word the agent streams on a run without a crash, in order."""
    messages: list[dict[str, Any]] = []
    out: list[str] = []
    for _ in range(MAX_TURNS):
        reply = fake_model(messages)
        out += words(reply)
        messages.append(reply)
        if "final" in reply:
            return out
        messages.append({"role": "tool", "name": reply["tool"],
                         "content": run_tool(reply["tool"], reply["args"])})  # fmt: skip
    return out


def run_tool(name: str, args: dict[str, Any]) -> Any:
    if name == "search_flights":
        return [{"id": "TP1351", "price": 129}, {"id": "FR8342", "price": 89}]
    if name == "get_weather":
        return {"sky": "sunny", "high_c": 24}
    if name == "book_flight":
        return {"flight": args["flight"], "confirmation": "BK-7Q2X"}
    raise ValueError(f"unknown tool {name}")


# -- the durable loop --------------------------------------------------------------
def build_app(dsn: str, who: str, crash_at_turn: int | None = None, pause: float = 0.0) -> Absurd:
    app = Absurd(dsn, QUEUE)

    def step(ctx: TaskContext, name: str, fn: Any) -> Any:
        handle = ctx.begin_step(name)
        if handle.done:
            say(f"  [{who}] {handle.checkpoint_name}: replayed from its checkpoint")
            return handle.state
        value = fn()
        calls[name] += 1
        say(f"  [{who}] {handle.checkpoint_name}: called -> {value}")
        return ctx.complete_step(handle, value)

    @app.register_task("travel-agent")
    def travel_agent(params: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        say(f"  [{who}] attempt {ctx.attempt} of the agent loop")
        messages: list[dict[str, Any]] = [{"role": "user", "content": params["goal"]}]
        tokens = ctx.stream("tokens")
        for turn in range(1, MAX_TURNS + 1):

            def call_model(turn: int = turn) -> dict[str, Any]:
                reply = fake_model(messages)
                typed = words(reply)
                for n, word in enumerate(typed):
                    tokens.write(word)  # buffered; flushed a few words at a time
                    time.sleep(pause)
                    if turn == crash_at_turn and n == len(typed) // 2:
                        tokens.flush()  # half the reply has reached the readers
                        say(f"  [{who}] *** power failure in the middle of model call {turn} ***")
                        os._exit(137)
                return reply

            reply = step(ctx, "model", call_model)
            messages.append(reply)
            if "final" in reply:
                tokens.close()
                return {"answer": reply["final"], "turns": turn}
            result = step(
                ctx, f"tool:{reply['tool']}", lambda r=reply: run_tool(r["tool"], r["args"])
            )
            messages.append({"role": "tool", "name": reply["tool"], "content": result})
        raise RuntimeError("the agent did not finish")

    return app


def crashing_worker(dsn: str, crash_at_turn: int) -> int:
    """The first worker: a process that dies in the middle of the loop."""
    app = build_app(dsn, "worker 1", crash_at_turn)
    # A 1 s lease (renewed while alive): after the crash, another worker may take
    # the task over one second later.
    app.start_worker(claim_timeout=1, poll_interval=0.2)
    return 1  # not reached: the worker crashes


def checkpoints(dsn: str, task_id: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f'select checkpoint_name from absurd."c_{QUEUE}" where task_id = %s'
            " order by updated_at",
            (task_id,),
        ).fetchall()
    return [r[0] for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", metavar="DSN", help=argparse.SUPPRESS)
    parser.add_argument("--crash-at-turn", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return crashing_worker(args.worker, args.crash_at_turn)

    say("A durable agent loop: model and tool calls are steps, so a crash loses nothing\n")
    server = start_embedded()
    app: Absurd | None = None
    try:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            schema.migrate(conn)
        app = build_app(server.dsn, "worker 2")
        app.create_queue()
        say(f"1. spawn the agent: {GOAL!r}")
        task_id = app.spawn("travel-agent", {"goal": GOAL}, max_attempts=3)["task_id"]

        say("2. worker 1 (a separate process) runs the loop")
        crashed = subprocess.run(
            [sys.executable, __file__, "--worker", server.dsn, "--crash-at-turn", "3"],
            timeout=60,
        )
        say(f"   worker 1 died with exit code {crashed.returncode}")
        saved = checkpoints(server.dsn, task_id)
        say(f"3. checkpoints that survived the crash: {saved}")

        say("4. worker 2 takes over once worker 1's lease expires")
        worker = threading.Thread(
            target=app.start_worker, kwargs={"poll_interval": 0.2}, daemon=True
        )
        started = time.monotonic()
        worker.start()
        result = app.await_task_result(task_id, timeout=30)
        say(f"   resumed and finished in {time.monotonic() - started:.1f}s")
        app.stop_worker()
        worker.join(10)

        say(f"\nAgent: {result.result['answer'] if result.result else result}")
        say(f"Calls made by worker 2: {dict(calls)}")
        streamed = list(app.read_stream(task_id, "tokens"))
        say(f"5. the token stream, as a UI reads it: {' '.join(streamed)}")
        expected_saved = ["model", "tool:search_flights", "model#2", "tool:get_weather"]
        ok = (
            crashed.returncode == 137
            and saved == expected_saved
            and result.state == "completed"
            and result.result["turns"] == 4
            # worker 1 made the first two model calls and two tool calls; worker 2
            # only the rest: nothing ran twice, the flight was booked once.
            and dict(calls) == {"model": 2, "tool:book_flight": 1}
            # every word streamed once, although model call 3 streamed half of its
            # reply before the crash and all of it after
            and streamed == transcript()
        )
        say(
            "OK: the agent resumed after the crash, no call ran twice, no token twice"
            if ok
            else "FAILED: see above"
        )
        return 0 if ok else 1
    finally:
        if app is not None:
            app.close()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
