"""Flow control from the SDK (both flavours): the typed policy and override API, a
registered task's derived flow key, debounce and explain_task (docs/flow-control.md)."""

from __future__ import annotations

import uuid

import pytest

import absurd
from absurd import FlowLimit, FlowPolicy, RateLimit
from absurd.errors import (
    InvalidDebounce,
    InvalidFlowKey,
    InvalidFlowLimit,
    QueueNotFound,
    TaskNotFound,
)
from tests.sdk.conftest import Api

HOSTILE_KEYS = ['it\'s "quoted"; drop table x; --', "clé 🔑 ключ 鍵", "k" * 512]


async def test_flow_policy_round_trip(api: Api) -> None:
    app = await api.client()
    before = await app.get_flow_policy(api.queue)
    assert before == FlowPolicy(queue_name=api.queue)
    after = await app.set_flow_policy(api.queue, max_running=10, max_running_per_key=2)
    assert (after.max_running, after.max_running_per_key, after.flow_hold) == (10, 2, "running")
    # A field not given stays; None removes the limit.
    again = await app.set_flow_policy(api.queue, max_running=None)
    assert (again.max_running, again.max_running_per_key) == (None, 2)
    assert await app.get_flow_policy(api.queue) == again
    # Nothing given changes nothing and still returns the policy.
    assert await app.set_flow_policy(api.queue) == again
    held = await app.set_flow_policy(api.queue, flow_hold="lifetime")
    assert (held.flow_hold, held.max_running_per_key) == ("lifetime", 2)


async def test_flow_policy_bad_values_change_nothing(api: Api) -> None:
    app = await api.client()
    await app.set_flow_policy(api.queue, max_running_per_key=3)
    for bad in (0, -1, "three", 1.5):
        with pytest.raises(InvalidFlowLimit):
            await app.set_flow_policy(api.queue, max_running=5, max_running_per_key=bad)
    with pytest.raises(InvalidFlowLimit):
        await app.set_flow_policy(api.queue, flow_hold="forever")
    with pytest.raises(InvalidFlowLimit):
        await app.set_flow_policy(api.queue, rate_limit=[100, 1])
    policy = await app.get_flow_policy(api.queue)
    assert (policy.max_running, policy.max_running_per_key) == (None, 3)
    with pytest.raises(QueueNotFound):
        await app.get_flow_policy("no_such_queue_here")


async def test_flow_limits_set_list_clear(api: Api) -> None:
    app = await api.client()
    for n, key in enumerate(HOSTILE_KEYS, start=1):
        await app.set_flow_limit(key, max_running=n, queue_name=api.queue)
    limits = await app.list_flow_limits(queue_name=api.queue)
    assert [(x.flow_key, x.max_running) for x in limits] == sorted(
        (key, n) for n, key in enumerate(HOSTILE_KEYS, start=1)
    )
    assert all(isinstance(x, FlowLimit) and x.updated_at is not None for x in limits)
    # Pages: from the key after the last one on.
    first = await app.list_flow_limits(limit=1, queue_name=api.queue)
    rest = await app.list_flow_limits(after=first[0].flow_key, queue_name=api.queue)
    assert [x.flow_key for x in first + rest] == [x.flow_key for x in limits]
    # Setting replaces the key's override; clearing removes it.
    await app.set_flow_limit(HOSTILE_KEYS[0], max_running=7, queue_name=api.queue)
    await app.clear_flow_limit(HOSTILE_KEYS[1], queue_name=api.queue)
    await app.clear_flow_limit("never set", queue_name=api.queue)  # no override: a no-op
    after = {x.flow_key: x.max_running for x in await app.list_flow_limits(queue_name=api.queue)}
    assert after == {HOSTILE_KEYS[0]: 7, HOSTILE_KEYS[2]: 3}


async def test_flow_limit_bad_input_changes_nothing(api: Api) -> None:
    app = await api.client()
    await app.set_flow_limit("k", max_running=2, queue_name=api.queue)
    with pytest.raises(InvalidFlowLimit):
        await app.set_flow_limit("k", queue_name=api.queue)  # no field at all
    with pytest.raises(InvalidFlowLimit):
        await app.set_flow_limit("k", max_running=0, queue_name=api.queue)
    for key in ("", "x" * 10_000, " "):
        with pytest.raises(InvalidFlowKey):
            await app.set_flow_limit(key, max_running=1, queue_name=api.queue)
    with pytest.raises(QueueNotFound):
        await app.set_flow_limit("k", max_running=1, queue_name="no_such_queue_here")
    assert [
        (x.flow_key, x.max_running) for x in await app.list_flow_limits(queue_name=api.queue)
    ] == [("k", 2)]


async def test_weights_round_trip_and_share_the_turns(api: Api) -> None:
    app = await api.client()
    await app.set_flow_limit(HOSTILE_KEYS[0], weight=3, queue_name=api.queue)
    (limit,) = await app.list_flow_limits(queue_name=api.queue)
    assert limit == FlowLimit(HOSTILE_KEYS[0], None, None, weight=3, updated_at=limit.updated_at)
    for bad in (0, -2, 10**6):
        with pytest.raises(InvalidFlowLimit):
            await app.set_flow_limit(HOSTILE_KEYS[0], weight=bad, queue_name=api.queue)
    with pytest.raises(InvalidFlowLimit):
        await app.set_flow_limit(HOSTILE_KEYS[0], weight=1.5, queue_name=api.queue)  # type: ignore[arg-type]
    assert [x.weight for x in await app.list_flow_limits(queue_name=api.queue)] == [3]
    for key in (HOSTILE_KEYS[0], HOSTILE_KEYS[1]):
        for n in range(8):
            await app.spawn("job", {"n": n}, queue=api.queue, flow_key=key)
    claimed = api.engine.claim(qty=8)
    keys = [api.task(r["task_id"])["flow_key"] for r in claimed]
    assert sorted(keys) == sorted([HOSTILE_KEYS[0]] * 6 + [HOSTILE_KEYS[1]] * 2)


async def test_a_key_override_binds_the_claim(api: Api) -> None:
    app = await api.client()
    await app.set_flow_policy(api.queue, max_running_per_key=1)
    await app.set_flow_limit(HOSTILE_KEYS[1], max_running=2, queue_name=api.queue)
    for key in (HOSTILE_KEYS[0], HOSTILE_KEYS[1]):
        for n in range(3):
            await app.spawn("job", {"n": n}, queue=api.queue, flow_key=key)
    claimed = api.engine.claim(qty=10)
    keys = [api.task(r["task_id"])["flow_key"] for r in claimed]
    assert sorted(keys) == sorted([HOSTILE_KEYS[0], HOSTILE_KEYS[1], HOSTILE_KEYS[1]])


async def test_a_registered_task_derives_its_flow_key(api: Api) -> None:
    app = await api.client()

    @app.register_task("by_param", queue=api.queue, flow_key="tenant")
    async def by_param(params: object, ctx: object) -> None:
        return None

    @app.register_task("by_function", queue=api.queue, flow_key=lambda p: f"org-{p['org']}")
    async def by_function(params: object, ctx: object) -> None:
        return None

    @app.register_task("maybe", queue=api.queue, flow_key=lambda p: p.get("tenant"))
    async def maybe(params: object, ctx: object) -> None:
        return None

    a = await app.spawn("by_param", {"tenant": HOSTILE_KEYS[1]})
    b = await app.spawn("by_param", {"tenant": 42})
    c = await app.spawn("by_function", {"org": "acme"})
    d = await app.spawn("by_param", {"tenant": "t"}, flow_key="explicit")
    e = await app.spawn("maybe", {})
    many = await app.spawn_many("by_param", [{"tenant": "m1"}, {"tenant": "m2"}])
    got = [api.task(x["task_id"])["flow_key"] for x in (a, b, c, d, e, *many)]
    assert got == [HOSTILE_KEYS[1], "42", "org-acme", "explicit", None, "m1", "m2"]
    with pytest.raises(InvalidFlowKey):
        await app.spawn("by_param", {"other": 1})
    with pytest.raises(InvalidFlowKey):
        await app.spawn("by_param", {"tenant": ["a"]})
    with pytest.raises(InvalidFlowKey):
        await app.spawn("by_param", {"tenant": "x" * 10_000})
    # The other flavour of the client keeps the derivation.
    other = api.raw(app).make_sync() if api.is_async else api.raw(app).make_async()
    assert other._registry["by_param"].flow_key == "tenant"


async def test_debounce_shapes_reach_the_engine(api: Api) -> None:
    """Debounce accepts a Debounce or a dict; a bad one is refused before any write."""
    app = await api.client()
    with pytest.raises(InvalidDebounce):
        await app.spawn("job", {}, queue=api.queue, debounce=("k", 1))
    assert api.engine.rows(f'select 1 from absurd."t_{api.queue}"') == []


async def test_rate_limits_round_trip(api: Api) -> None:
    app = await api.client()
    policy = await app.set_flow_policy(
        api.queue,
        rate_limit=RateLimit(100, 1),
        rate_limit_per_key={"limit": 5, "period_seconds": 60, "burst": 2},
    )
    assert policy.rate_limit == RateLimit(100, 1.0, 0)
    assert policy.rate_limit_per_key == RateLimit(5, 60.0, 2)
    await app.set_flow_limit("slow", rate_limit=RateLimit(1, 60), queue_name=api.queue)
    (limit,) = await app.list_flow_limits(queue_name=api.queue)
    assert (limit.flow_key, limit.max_running, limit.rate_limit) == (
        "slow",
        None,
        RateLimit(1, 60.0),
    )
    with pytest.raises(InvalidFlowLimit):
        await app.set_flow_policy(api.queue, rate_limit=RateLimit(0, 1))
    cleared = await app.set_flow_policy(api.queue, rate_limit=None)
    assert cleared.rate_limit is None and cleared.rate_limit_per_key == RateLimit(5, 60.0, 2)


async def test_a_debounced_spawn_returns_the_waiting_task(api: Api) -> None:
    app = await api.client()
    debounce = absurd.Debounce(key=HOSTILE_KEYS[0], period_seconds=60, timeout_seconds=600)
    first = await app.spawn("job", {"rev": 1}, queue=api.queue, debounce=debounce)
    as_dict = {"key": HOSTILE_KEYS[0], "period_seconds": 60}
    again = await app.spawn("job", {"rev": 2}, queue=api.queue, debounce=as_dict)
    assert first["created"] is True and again["created"] is False
    assert (again["task_id"], again["run_id"]) == (first["task_id"], first["run_id"])
    assert api.task(first["task_id"])["params"] == {"rev": 2}
    why = await app.explain_task(first["task_id"], api.queue)
    assert why.reason == "debounced" and why.until is not None
    other = await app.spawn("job", {}, queue=api.queue, debounce=absurd.Debounce("other", 60))
    assert other["created"] is True and other["task_id"] != first["task_id"]
    for bad in (
        {"period_seconds": 5},
        {"key": "k", "period_seconds": 0},
        {"key": "x" * 10_000, "period_seconds": 1},
    ):
        with pytest.raises(InvalidDebounce):
            await app.spawn("job", {}, queue=api.queue, debounce=bad)
    with pytest.raises(InvalidDebounce):
        await app.spawn("job", {}, queue=api.queue, debounce=as_dict, idempotency_key="i")
    assert len(api.engine.rows(f'select 1 from absurd."t_{api.queue}"')) == 2


async def test_explain_task_says_why(api: Api) -> None:
    app = await api.client()
    await app.set_flow_policy(api.queue, max_running_per_key=1)
    key = HOSTILE_KEYS[1]
    first = await app.spawn("job", {}, queue=api.queue, flow_key=key)
    second = await app.spawn("job", {}, queue=api.queue, flow_key=key)
    claimable = await app.explain_task(second["task_id"], api.queue)
    assert isinstance(claimable, absurd.TaskExplanation) and claimable.reason == "claimable"
    api.engine.claim(qty=10)
    running = await app.explain_task(first["task_id"], api.queue)
    assert running.reason == "running" and running.until is not None
    waiting = await app.explain_task(str(second["task_id"]), api.queue)
    assert waiting.reason == "waiting_key_slot" and key in waiting.message
    assert waiting.details["flow_key"] == key
    assert (waiting.details["running"], waiting.details["limit"]) == (1, 1)
    assert waiting.task_id == str(second["task_id"])
    with pytest.raises(TaskNotFound):
        await app.explain_task(uuid.uuid4(), api.queue)


def test_types_are_public() -> None:
    assert absurd.RateLimit(100, 1.0).to_json() == {"limit": 100, "period_seconds": 1.0, "burst": 0}
    assert absurd.Debounce("k", 5).to_json() == {"key": "k", "period_seconds": 5}
    assert RateLimit.from_json({"limit": 5, "period_seconds": 2}) == RateLimit(5, 2.0, 0)
