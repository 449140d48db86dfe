"""The spawn option flow_key from the SDK (both flavours): the engine's per-key limits
count by it (docs/engine.md "Flow control")."""

from __future__ import annotations

import pytest

from absurd.errors import InvalidFlowKey
from tests.sdk.conftest import Api


async def test_flow_key_reaches_the_engine_and_its_limit_holds(api: Api) -> None:
    app = await api.client()
    api.engine.conn.execute(
        "select absurd.set_queue_policy(%s, '{\"max_running_per_key\": 1}')", (api.queue,)
    )
    one = await app.spawn("job", {"n": 1}, queue=api.queue, flow_key="tenant-1")
    many = await app.spawn_many("job", [{"n": 2}, {"n": 3}], queue=api.queue, flow_key="tenant-1")
    other = await app.spawn("job", {"n": 4}, queue=api.queue, flow_key="tenant-2")
    claimed = api.engine.claim(qty=10)
    assert sorted(str(r["task_id"]) for r in claimed) == sorted(
        [str(one["task_id"]), str(other["task_id"])]
    )
    keys = api.engine.rows(
        f'select flow_key from absurd."t_{api.queue}" where task_id = any(%s)',
        ([r["task_id"] for r in many],),
    )
    assert [k["flow_key"] for k in keys] == ["tenant-1", "tenant-1"]


async def test_a_bad_flow_key_is_refused(api: Api) -> None:
    app = await api.client()
    with pytest.raises(InvalidFlowKey):
        await app.spawn("job", {}, queue=api.queue, flow_key="x" * 10_000)
