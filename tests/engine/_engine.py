"""A thin test helper over the SQL API of one queue (no logic of its own)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.datetime import TimestamptzLoader

Row = dict[str, Any]

#: What an 'infinity' timestamp (a wait with no timeout) loads as.
INFINITY = dt.datetime.max.replace(tzinfo=dt.timezone.utc)


class _InfinityTimestamptzLoader(TimestamptzLoader):
    def load(self, data: Any) -> dt.datetime:
        if bytes(data) == b"infinity":
            return INFINITY
        return super().load(data)  # type: ignore[no-any-return]


class Engine:
    """Calls the engine's stored functions for one queue on one connection."""

    def __init__(self, conn: psycopg.Connection[Any], queue: str) -> None:
        self.conn = conn
        self.queue = queue
        conn.adapters.register_loader("timestamptz", _InfinityTimestamptzLoader)

    # -- plumbing -----------------------------------------------------------
    def rows(self, query: str | sql.Composable, params: tuple[Any, ...] = ()) -> list[Row]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def one(self, query: str | sql.Composable, params: tuple[Any, ...] = ()) -> Row:
        rows = self.rows(query, params)
        assert len(rows) == 1, rows
        return rows[0]

    def table(self, prefix: str) -> sql.Composable:
        return sql.SQL("absurd.{}").format(sql.Identifier(f"{prefix}_{self.queue}"))

    # -- time ---------------------------------------------------------------
    def set_time(self, when: dt.datetime | None) -> None:
        if when is None:
            self.conn.execute("set absurd.fake_now = default")
        else:
            self.conn.execute(
                sql.SQL("set absurd.fake_now = {}").format(sql.Literal(when.isoformat()))
            )

    def now(self) -> dt.datetime:
        value = self.one("select absurd.current_time() as now")["now"]
        assert isinstance(value, dt.datetime)
        return value

    # -- the API ------------------------------------------------------------
    def spawn(self, task_name: str = "task", params: Any = None, **options: Any) -> Row:
        return self.one(
            "select * from absurd.spawn_task(%s, %s, %s, %s)",
            (self.queue, task_name, json.dumps(params), json.dumps(options, default=str)),
        )

    def claim(self, qty: int = 1, worker: str = "w1", timeout: int = 60) -> list[Row]:
        return self.rows(
            "select * from absurd.claim_task(%s, %s, %s, %s)", (self.queue, worker, timeout, qty)
        )

    def claim_one(self, **kw: Any) -> Row:
        rows = self.claim(**kw)
        assert len(rows) == 1, rows
        return rows[0]

    def complete(self, run_id: UUID, result: Any = None) -> None:
        self.conn.execute(
            "select absurd.complete_run(%s, %s, %s)", (self.queue, run_id, json.dumps(result))
        )

    def fail(self, run_id: UUID, reason: Any = None, retry_at: dt.datetime | None = None) -> None:
        self.conn.execute(
            "select absurd.fail_run(%s, %s, %s, %s)",
            (
                self.queue,
                run_id,
                json.dumps(reason or {"name": "Error", "message": "boom"}),
                retry_at,
            ),
        )

    def schedule(self, run_id: UUID, wake_at: dt.datetime) -> None:
        self.conn.execute("select absurd.schedule_run(%s, %s, %s)", (self.queue, run_id, wake_at))

    def checkpoint(
        self, task_id: UUID, step: str, value: Any, run_id: UUID, extend: int | None = None
    ) -> None:
        self.conn.execute(
            "select absurd.set_task_checkpoint_state(%s, %s, %s, %s, %s, %s)",
            (self.queue, task_id, step, json.dumps(value), run_id, extend),
        )

    def checkpoints(self, task_id: UUID, run_id: UUID) -> dict[str, Any]:
        rows = self.rows(
            "select * from absurd.get_task_checkpoint_states(%s, %s, %s)",
            (self.queue, task_id, run_id),
        )
        return {r["checkpoint_name"]: r["state"] for r in rows}

    def await_event(
        self,
        task_id: UUID,
        run_id: UUID,
        event: str,
        step: str | None = None,
        timeout: int | None = None,
    ) -> Row:
        return self.one(
            "select * from absurd.await_event(%s, %s, %s, %s, %s, %s)",
            (self.queue, task_id, run_id, step or f"$awaitEvent:{event}", event, timeout),
        )

    def emit(self, event: str, payload: Any = None) -> None:
        self.conn.execute(
            "select absurd.emit_event(%s, %s, %s)", (self.queue, event, json.dumps(payload))
        )

    def cancel(self, task_id: UUID) -> None:
        self.conn.execute("select absurd.cancel_task(%s, %s)", (self.queue, task_id))

    def retry(self, task_id: UUID, **options: Any) -> Row:
        return self.one(
            "select * from absurd.retry_task(%s, %s, %s)",
            (self.queue, task_id, json.dumps(options)),
        )

    def result(self, task_id: UUID) -> Row | None:
        rows = self.rows("select * from absurd.get_task_result(%s, %s)", (self.queue, task_id))
        return rows[0] if rows else None

    # -- reading the tables ---------------------------------------------------
    def task(self, task_id: UUID) -> Row:
        return self.one(
            sql.SQL("select * from {} where task_id = %s").format(self.table("t")), (task_id,)
        )

    def run(self, run_id: UUID) -> Row:
        return self.one(
            sql.SQL("select * from {} where run_id = %s").format(self.table("r")), (run_id,)
        )

    def runs(self, task_id: UUID) -> list[Row]:
        return self.rows(
            sql.SQL("select * from {} where task_id = %s order by attempt").format(self.table("r")),
            (task_id,),
        )

    def count(self, prefix: str) -> int:
        return int(
            self.one(sql.SQL("select count(*) as n from {}").format(self.table(prefix)))["n"]
        )
