"""The application ``absurdctl demo`` runs in its worker processes.

One order workflow: two steps, a step that fails once (a retry), a step that is
slow in the first worker (so the demo can SIGKILL it there), a durable sleep, an
event wait and a last step. Each step records its side effect in the table
``demo_effects`` as its last action, outside the checkpoint, so the demo can count
how many times each step really completed.
"""

from __future__ import annotations

import os
import time
from typing import Any

import psycopg

from absurd import Absurd

QUEUE = "demo"
EFFECTS_DDL = """
create table if not exists demo_effects (
  id bigserial primary key,
  task_id uuid not null,
  step text not null,
  pid integer not null,
  at timestamptz not null default clock_timestamp()
)"""

app = Absurd(queue_name=QUEUE)  # the database comes from ABSURD_DATABASE_URL


def record(task_id: object, step: str) -> str:
    """The step's side effect: one row per completed execution."""
    with psycopg.connect(app.db.url or "", autocommit=True) as conn:
        conn.execute(
            "insert into demo_effects (task_id, step, pid) values (%s, %s, %s)",
            (task_id, step, os.getpid()),
        )
    return f"{step} done by pid {os.getpid()}"


@app.register_task("process-order")
def process_order(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
    order = params["order"]
    ctx.step("reserve-stock", lambda: record(ctx.task_id, "reserve-stock"))

    def charge() -> str:
        if ctx.attempt == 1:  # the payment provider times out once
            raise ConnectionError("payment provider timed out")
        return record(ctx.task_id, "charge-card")

    ctx.step("charge-card", charge)

    def pack() -> str:
        if os.environ.get("ABSURD_DEMO_SLOW"):
            time.sleep(120)  # the demo kills this worker here
        return record(ctx.task_id, "pack-parcel")

    ctx.step("pack-parcel", pack)
    ctx.sleep_for("cool-off", 1.0)
    shipment = ctx.await_event(f"shipped:{order}", timeout=60)
    ctx.step("send-receipt", lambda: record(ctx.task_id, "send-receipt"))
    return {"order": order, "carrier": shipment.get("carrier") if shipment else None}
