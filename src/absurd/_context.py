"""``get_current_context()``: the context of the task running here, in either flavour."""

from __future__ import annotations

from typing import Any

from absurd._async.context import current_context as async_current
from absurd._sync.context import current_context as sync_current


def get_current_context() -> Any:
    """The TaskContext (or AsyncTaskContext) of the task running here, else None."""
    return async_current.get() or sync_current.get()
