"""An application for ``absurdctl worker tests.cli.worker_app:app`` (sync) and ``:async_app``."""

from __future__ import annotations

import logging
import os
from typing import Any

from absurd import Absurd, AsyncAbsurd

app = Absurd(queue_name="default")  # the database comes from ABSURD_DATABASE_URL
async_app = AsyncAbsurd(queue_name="default")
not_an_app = object()
log = logging.getLogger("worker_app")


@app.register_task("echo")
def echo(params: Any, ctx: Any) -> Any:
    log.info("echoing %s", params)  # carries the task's fields (absurdctl worker's filter)
    return {"echo": params, "pid": os.getpid(), "step": ctx.step("s", lambda: 1)}


@async_app.register_task("echo")
async def aecho(params: Any, ctx: Any) -> Any:
    async def one() -> int:
        return 1

    log.info("echoing %s", params)
    return {"echo": params, "pid": os.getpid(), "step": await ctx.step("s", one)}
