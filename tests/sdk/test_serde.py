"""Serialization: JSONSerializer round-trips (unit), values through tasks (both
flavours), a pluggable serializer, and SerializationError naming the step."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import uuid
from typing import Any

import pytest

import absurd
from absurd import JSONSerializer, SerializationError
from tests.sdk.conftest import NO_DELAY, T0, Api


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Shipment:
    id: uuid.UUID
    at: dt.datetime
    points: list[Point]
    price: decimal.Decimal


try:
    import pydantic
except ImportError:  # optional: the pydantic test is skipped
    pydantic = None

if pydantic is not None:

    class Model(pydantic.BaseModel):
        name: str
        when: dt.datetime
        tags: list[str]


SAMPLES: list[Any] = [
    None,
    True,
    3,
    2.5,
    "text",
    [1, "a", None],
    {"nested": {"list": [1, 2]}},
    dt.datetime(2030, 1, 2, 3, 4, 5, 6000, tzinfo=dt.timezone.utc),
    dt.datetime(2030, 1, 2, 3, 4, 5),
    dt.datetime(2030, 1, 2, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
    dt.date(2030, 1, 2),
    dt.time(12, 30, 1),
    dt.timedelta(days=2, seconds=3, microseconds=4),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    decimal.Decimal("12.3400"),
    b"\x00\xffbytes",
    (1, "two", (3,)),
    {1, 2, 3},
    frozenset({"a"}),
    Point(1, 2),
    Shipment(
        uuid.UUID(int=7),
        dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc),
        [Point(0, 1)],
        decimal.Decimal("9.99"),
    ),
    {"when": dt.date(2031, 5, 6), "ids": [uuid.UUID(int=1)]},
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_json_serializer_round_trips(value: Any) -> None:
    ser = JSONSerializer()
    text = ser.dumps(value)
    revived = ser.revive(json.loads(text))
    assert revived == value
    assert type(revived) is type(value) or isinstance(value, frozenset)


def test_plain_json_is_stored_unchanged() -> None:
    ser = JSONSerializer()
    value = {"a": [1, 2.5, "x", None, True], "b": {}}
    assert json.loads(ser.dumps(value)) == value


def test_json_serializer_refusals() -> None:
    ser = JSONSerializer()
    for bad in (object(), float("nan"), float("inf"), {("tuple", "key"): 1}):
        with pytest.raises(SerializationError):
            ser.dumps(bad)
    assert issubclass(SerializationError, TypeError)


def test_non_string_keys_are_converted_like_json_dumps() -> None:
    # upstream stores values with json.dumps, which turns these keys into strings
    value = {1: "a", 2.5: "b", False: "c", None: "d"}
    assert json.loads(JSONSerializer().dumps(value)) == json.loads(json.dumps(value))


def test_unknown_tags_and_classes_are_left_alone_or_refused() -> None:
    ser = JSONSerializer()
    assert ser.revive({"$absurd": "mystery", "v": 1}) == {"$absurd": "mystery", "v": 1}
    assert ser.revive({"$absurd": "event-timeout"}) == {"$absurd": "event-timeout"}
    for broken in (
        {"$absurd": "dataclass", "cls": "builtins:dict", "v": {}},  # not a dataclass
        {"$absurd": "dataclass", "cls": "no_such_module_xyz:Thing", "v": {}},
        {"$absurd": "dataclass", "cls": f"{__name__}:Gone", "v": {}},
        {"$absurd": "dataclass", "cls": f"{__name__}:Point", "v": {"x": 1}},  # changed
        {"$absurd": "pydantic", "cls": f"{__name__}:Point", "v": {}},  # not a model
    ):
        with pytest.raises(SerializationError):
            ser.revive(broken)


def test_pydantic_models_round_trip() -> None:
    pytest.importorskip("pydantic")
    value = Model(name="x", when=dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc), tags=["a"])
    ser = JSONSerializer()
    text = ser.dumps({"model": value})
    assert json.loads(text)["model"]["v"] == {
        "name": "x",
        "when": "2030-01-01T00:00:00Z",
        "tags": ["a"],
    }
    revived = ser.revive(json.loads(text))["model"]
    assert type(revived) is Model and revived == value


async def test_values_round_trip_through_params_steps_events_and_results(api: Api) -> None:
    app = await api.client()
    shipment = SAMPLES[20]
    seen: list[Any] = []

    @app.register_task("ship")
    async def ship(params: Any, ctx: Any) -> Any:
        seen.append(params)
        stamped = await ctx.step("stamp", lambda: (params["shipment"], dt.date(2030, 2, 3)))
        event = await ctx.await_event("paid")
        return {"stamped": stamped, "event": event}

    task_id = (await app.spawn("ship", {"shipment": shipment}))["task_id"]
    await app.work_batch()
    await app.emit_event("paid", {"amount": decimal.Decimal("5.10")})
    await app.work_batch()
    assert seen == [{"shipment": shipment}] * 2
    snap = await app.fetch_task_result(task_id)
    assert snap is not None
    assert snap.result == {
        "stamped": (shipment, dt.date(2030, 2, 3)),
        "event": {"amount": decimal.Decimal("5.10")},
    }


async def test_unserializable_step_value_names_the_step(api: Api) -> None:
    app = await api.client()
    caught: list[str] = []

    @app.register_task("bad")
    async def bad(params: Any, ctx: Any) -> Any:
        try:
            await ctx.step("first-bad-step", lambda: object())
        except SerializationError as exc:
            caught.append(str(exc))
        await ctx.step("second-bad-step", lambda: {"x": object()})

    task_id = (await app.spawn("bad", max_attempts=1))["task_id"]
    await app.work_batch()
    assert len(caught) == 1 and '"first-bad-step"' in caught[0]
    (run,) = api.runs(task_id)
    assert run["failure_reason"]["name"] == "SerializationError"
    assert '"second-bad-step"' in run["failure_reason"]["message"]
    assert api.checkpoints(task_id) == {}
    with pytest.raises(SerializationError):
        await app.spawn("bad", {"x": object()})


async def test_unserializable_result_fails_the_run(api: Api) -> None:
    app = await api.client()

    @app.register_task("bad")
    async def bad(params: Any, ctx: Any) -> Any:
        return {"handle": object()}

    task_id = (await app.spawn("bad", max_attempts=1))["task_id"]
    await app.work_batch()
    snap = await app.fetch_task_result(task_id)
    assert snap is not None and snap.state == "failed"
    assert snap.failure["name"] == "SerializationError"


class TaggingSerializer:
    """Wraps every value in {"wrapped": ...}: proves the client uses the one it is given."""

    def __init__(self) -> None:
        self.inner = JSONSerializer()

    def dumps(self, value: Any) -> str:
        return json.dumps({"wrapped": json.loads(self.inner.dumps(value))})

    def revive(self, data: Any) -> Any:
        assert isinstance(data, dict) and "wrapped" in data, data
        return self.inner.revive(data["wrapped"])


async def test_pluggable_serializer(api: Api) -> None:
    app = await api.client(serializer=TaggingSerializer(), own_conn=True)
    await api.set_now(app, T0)
    ends: list[Any] = []

    @app.register_task("plug")
    async def plug(params: Any, ctx: Any) -> Any:
        value = await ctx.step("s", lambda: params["n"] + 1)
        await ctx.sleep_for("nap", 10)
        try:
            await ctx.await_event("never", timeout=5)
            timed_out = False
        except absurd.TimeoutError:
            timed_out = True
        child = await ctx.spawn("child", {"n": 3}, queue=api.queue)
        ends.append([value, timed_out, await ctx.await_event("e"), str(child["task_id"])])
        if len(ends) == 1:
            raise RuntimeError("replay everything once")
        return ends[-1]

    spawned = await app.spawn("plug", {"n": 1}, max_attempts=2, retry_strategy=NO_DELAY)
    task_id = spawned["task_id"]
    await app.emit_event("e", "payload")
    await app.work_batch()
    await api.set_now(app, T0 + dt.timedelta(seconds=10))
    await app.work_batch()
    await api.set_now(app, T0 + dt.timedelta(seconds=20))
    await app.work_batch()  # times out, spawns, fails on purpose
    await app.work_batch(batch_size=5)  # attempt 2 replays every checkpoint (+ the child)
    assert api.task(task_id)["state"] == "completed"
    assert ends[0] == ends[1] and ends[0][:3] == [2, True, "payload"]
    assert api.task(task_id)["params"] == {"wrapped": {"n": 1}}
    stored = api.checkpoints(task_id)
    assert stored["s"] == {"wrapped": 2}
    # the SDK's own checkpoints are plain JSON, whatever the serializer
    assert dt.datetime.fromisoformat(stored["nap"]) == T0 + dt.timedelta(seconds=10)
    assert stored["$awaitEvent:never"] == {"$absurd": "event-timeout"}
    assert stored["$spawn:child"]["task_id"] == ends[0][3]
    assert api.task(task_id)["completed_payload"] == {"wrapped": ends[0]}
    assert (await app.fetch_task_result(task_id)).result == ends[0]
    assert isinstance(api.raw(app).serializer, TaggingSerializer)
    assert isinstance(absurd.Absurd("postgresql://x/y").serializer, JSONSerializer)
