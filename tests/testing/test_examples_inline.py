"""The examples' workflows under absurd.testing, in-process (the plugin's first users):
the same handlers that tests/test_examples.py runs as processes, here run inline with
the engine's clock skipped and a crash at every step."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from absurd.testing import Clock, crash_at_every_step, emit, run_until_idle, task_history

ROOT = Path(__file__).parents[2]
T0 = dt.datetime(2030, 1, 7, 9, 0, tzinfo=dt.timezone.utc)


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_order_retries_waits_for_packing_and_ships_once(
    absurd_dsn: str, absurd_clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = example("order_fulfillment")
    absurd_clock.freeze(T0)
    app = orders.build_app(absurd_dsn)
    app.create_queue()
    try:
        task = app.spawn(
            "fulfil-order", orders.ORDER, retry_strategy={"kind": "fixed", "base_seconds": 30}
        )
        waiting = run_until_idle(app, max_advance=dt.timedelta(seconds=59))
        assert [r.state for r in waiting] == ["sleeping", "sleeping"]  # retry, then the wait
        emit(app, f"packed:{orders.ORDER['id']}", {"carrier": "DHL", "parcels": 1})
        done = run_until_idle(app)
        assert done[-1].state == "completed"
        assert done[-1].result == {"reservation": "r-7", "charge": "ch_42", "tracking": "TRK123"}
        assert dict(orders.effects) == {
            "reserve-stock": 1,
            "charge-card": 1,
            "ship": 1,
            "send-receipt": 1,
        }
        history = task_history(task["task_id"])
        assert [r["state"] for r in history.runs] == ["failed", "completed"]
        assert "charge-card: the payment gateway timed out" in capsys.readouterr().out
    finally:
        app.close()


def test_the_agent_loop_survives_a_crash_after_every_call(
    absurd_dsn: str, absurd_clock: Clock
) -> None:
    agent = example("agent_loop")
    absurd_clock.freeze(T0)
    app = agent.build_app(absurd_dsn, "test")
    app.create_queue()
    try:
        report = crash_at_every_step(app, "travel-agent", {"goal": agent.GOAL})
        assert report.state == "completed"
        assert report.result["turns"] == 4
        assert report.checkpoints == [
            "model", "tool:search_flights", "model#2", "tool:get_weather",
            "model#3", "tool:book_flight", "model#4",
        ]  # fmt: skip
        runs = 1 + len(report.checkpoints)  # one without a crash, one per checkpoint
        # every run starts from a fresh spawn: each call ran once per run, never twice
        assert dict(agent.calls) == {
            "model": 4 * runs, "tool:search_flights": runs, "tool:get_weather": runs,
            "tool:book_flight": runs,
        }  # fmt: skip
    finally:
        app.close()
