"""The README's Python example and its test: the test below is the one the README
shows (test_the_readme_shows_this_test keeps them the same)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

README = Path(__file__).parents[2] / "README.md"


def fulfil(params: dict[str, Any], ctx: Any) -> dict[str, Any]:  # the README's handler
    stock = ctx.step("reserve", lambda: {"sku": params["sku"], "reserved": True})
    shipment = ctx.await_event(f"shipped:{params['id']}", timeout=86400)
    ctx.sleep_for("cool-off", 3600)  # on the database clock; frees the worker slot
    return {"stock": stock, "shipment": shipment}


# -- shown in the README ---------------------------------------------------------------
from datetime import timedelta  # noqa: E402

from absurd import Absurd  # noqa: E402
from absurd.testing import emit, run_until_idle  # noqa: E402


def test_an_order_ships_once_its_event_comes(absurd_dsn, absurd_clock):  # type: ignore[no-untyped-def]
    app = Absurd(absurd_dsn, queue_name="orders")  # a database of this test's own
    app.create_queue()
    app.register_task("fulfil-order")(fulfil)

    app.spawn("fulfil-order", {"id": 42, "sku": "B-42"})
    waiting = run_until_idle(app, max_advance=timedelta(hours=1))  # not up to the timeout
    assert waiting[-1].state == "sleeping"  # waits for the event

    emit(app, "shipped:42", {"carrier": "DHL"})
    done = run_until_idle(app)  # the hour's cool-off is skipped, not waited
    assert done[-1].result == {
        "stock": {"sku": "B-42", "reserved": True},
        "shipment": {"carrier": "DHL"},
    }
    app.close()


# -----------------------------------------------------------------------------------------


def test_the_readme_shows_this_test() -> None:
    text = README.read_text()
    handler = inspect.getsource(fulfil).split("\n", 1)[1]
    assert handler.replace("  # on", "      # on") in text, "the README's handler changed"
    shown = re.search(r"```python\n(# test_orders\.py.*?)```", text, re.S)
    assert shown is not None, "the README shows no test_orders.py"
    source = inspect.getsource(test_an_order_ships_once_its_event_comes)
    source = source.replace("  # type: ignore[no-untyped-def]", "")
    assert source in shown.group(1)
