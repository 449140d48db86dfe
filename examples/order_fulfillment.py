"""Order fulfilment with the Absurd SDK: steps, a retry, an event and a sleep.

Run it with no arguments:

    .venv/bin/python examples/order_fulfillment.py

It starts an embedded PostgreSQL, installs the schema, runs a worker in a thread
and walks one order through a durable workflow:

1. reserve stock (a step: its result is checkpointed);
2. charge the card: the payment gateway times out on the first attempt, the task
   is retried, and the reservation is replayed from its checkpoint, not redone;
3. wait for the warehouse's ``packed`` event (the run sleeps, holding no worker);
4. a one-second cooling-off period (a durable sleep: it would survive a restart);
5. ship the parcel and send the receipt.

It exits 1 if any side effect happened twice or the order did not ship.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from typing import Any

import psycopg

from absurd import Absurd, TaskContext, schema
from absurd.embedded import start_embedded

QUEUE = "orders"
ORDER = {"id": "A-1001", "sku": "espresso-machine", "qty": 1, "total": 249.0}

#: Side effects in the outside world, counted here (outside the database).
effects: Counter[str] = Counter()
_lock = threading.Lock()


def say(text: str) -> None:
    print(text, flush=True)


def effect(name: str, value: Any) -> Any:
    with _lock:
        effects[name] += 1
    return value


class PaymentGateway:
    """Times out once, then works: the kind of failure retries are for."""

    def __init__(self) -> None:
        self.calls = 0

    def charge(self, order: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            say("    charge-card: the payment gateway timed out; this attempt fails")
            raise ConnectionError("payment gateway timed out")
        return effect("charge-card", {"charge_id": "ch_42", "amount": order["total"]})


def step(ctx: TaskContext, name: str, fn: Any) -> Any:
    """ctx.step, narrated: says whether the step ran or was replayed."""
    handle = ctx.begin_step(name)
    if handle.done:
        say(f"    {name}: replayed from its checkpoint")
        return handle.state
    value = fn()
    say(f"    {name}: done -> {value}")
    return ctx.complete_step(handle, value)


def build_app(dsn: str) -> Absurd:
    app = Absurd(dsn, QUEUE)
    gateway = PaymentGateway()

    @app.register_task("fulfil-order")
    def fulfil_order(order: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        say(f"  [worker] order {order['id']}, attempt {ctx.attempt}: (re)running the handler")
        reservation = step(
            ctx,
            "reserve-stock",
            lambda: effect("reserve-stock", {"sku": order["sku"], "reservation": "r-7"}),
        )
        charge = step(ctx, "charge-card", lambda: gateway.charge(order))
        packed = ctx.await_event(f"packed:{order['id']}", timeout=60)
        say(f"    packed event received: {packed}; cooling off for 1 s (a durable sleep)")
        ctx.sleep_for("cooling-off", 1.0)
        shipment = step(
            ctx,
            "ship",
            lambda: effect("ship", {"carrier": packed["carrier"], "tracking": "TRK123"}),
        )
        step(ctx, "send-receipt", lambda: effect("send-receipt", {"to": "ada@example.com"}))
        return {
            "reservation": reservation["reservation"],
            "charge": charge["charge_id"],
            "tracking": shipment["tracking"],
        }

    return app


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def main() -> int:
    say("Order fulfilment: steps, a retry, an event and a durable sleep\n")
    server = start_embedded()
    app: Absurd | None = None
    try:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            schema.migrate(conn)
        app = build_app(server.dsn)
        app.create_queue()
        worker = threading.Thread(
            target=app.start_worker, kwargs={"concurrency": 2, "poll_interval": 0.5}, daemon=True
        )
        worker.start()

        say(f"1. the shop spawns the workflow for order {ORDER['id']}")
        spawned = app.spawn(
            "fulfil-order",
            ORDER,
            max_attempts=3,
            retry_strategy={"kind": "fixed", "base_seconds": 0.2},
        )
        task_id = spawned["task_id"]

        def waiting_for_event() -> bool:
            snap = app.fetch_task_result(task_id) if app else None
            return effects["charge-card"] == 1 and snap is not None and snap.state == "sleeping"

        wait_until(waiting_for_event, 15, "the workflow to wait for the packed event")
        say("2. the workflow sleeps until the warehouse reports; no worker slot is held")
        say("3. the warehouse packs the order and emits the event")
        app.emit_event(f"packed:{ORDER['id']}", {"carrier": "DHL", "parcels": 1})
        started = time.monotonic()
        result = app.await_task_result(task_id, timeout=20)
        say(f"4. the workflow finished in {time.monotonic() - started:.1f}s after the event")
        app.stop_worker()
        worker.join(10)

        say(f"\nFinal state: {result.state}, result {result.result}")
        say(f"Side effects: {dict(effects)}")
        expected = {"reserve-stock": 1, "charge-card": 1, "ship": 1, "send-receipt": 1}
        ok = result.state == "completed" and dict(effects) == expected
        say("OK: the order shipped and every side effect happened once" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        if app is not None:
            app.close()
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
