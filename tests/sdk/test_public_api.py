"""The public surface: absurd.__all__, and cheap signature checks against absurd_sdk 0.5.1."""

from __future__ import annotations

import inspect
import re
import types
from typing import Any

import absurd_sdk
import pytest

import absurd
from absurd import errors

CLASSES = ["Absurd", "AsyncAbsurd", "TaskContext", "AsyncTaskContext"]


def isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest."""
    if name.isupper():
        return 0, name
    return (1 if name[:1].isupper() else 2), name


@pytest.mark.parametrize("module", [absurd, errors], ids=["absurd", "absurd.errors"])
def test_all_is_sorted_unique_and_resolves(module: Any) -> None:
    names = list(module.__all__)
    assert names == sorted(names, key=isort_key)
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(module, name) is not None, name


def test_every_absurd_sdk_name_exists_in_absurd() -> None:
    missing = [n for n in absurd_sdk.__all__ if not hasattr(absurd, n)]
    assert missing == []
    assert set(absurd_sdk.__all__) <= set(absurd.__all__)
    assert re.fullmatch(r"\d+\.\d+\.\d+", absurd.__version__)


def test_every_public_name_of_the_package_is_in_all() -> None:
    """The converse of the test above: nothing public reaches ``absurd`` by accident
    (a helper imported for a signature, a stray alias). Submodules and the
    ``from __future__`` import do not count."""
    public = {
        name
        for name, value in vars(absurd).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and type(value).__module__ != "__future__"
    }
    assert sorted(public - set(absurd.__all__)) == []


def test_the_whole_error_tree_is_importable_from_the_package() -> None:
    """Every exception class of ``absurd.errors`` (``translate`` is a tool, not an error)."""
    tree = {
        name
        for name in errors.__all__
        if isinstance(getattr(errors, name), type)
        and issubclass(getattr(errors, name), BaseException)
    }
    assert tree == set(errors.__all__) - {"translate"}
    assert sorted(tree - set(absurd.__all__)) == []
    for name in tree:
        assert getattr(absurd, name) is getattr(errors, name)


def public_methods(cls: type) -> dict[str, Any]:
    """The public methods of ``cls``, with the client's schedule methods (a base of
    its own, ``absurd._async.schedules.ScheduleMethods`` and its sync twin)."""
    return {
        name: member
        for klass in reversed(cls.__mro__)
        if klass is cls or klass.__module__.endswith(".schedules")
        for name, member in vars(klass).items()
        if not name.startswith("_") and callable(member)
    }


def upstream_method_names(cls_name: str) -> list[str]:
    cls = getattr(absurd_sdk, cls_name)
    names = []
    for klass in cls.__mro__:
        if klass.__module__ != "absurd_sdk":
            continue
        names += [n for n, m in vars(klass).items() if not n.startswith("_") and callable(m)]
    return sorted(set(names))


@pytest.mark.parametrize("cls_name", CLASSES)
def test_methods_accept_every_upstream_call(cls_name: str) -> None:
    """Each upstream method exists, is async exactly when upstream's is, and takes
    upstream's parameters at the same positions with the same names and defaults.
    Our extra parameters must be optional."""
    ours_cls = getattr(absurd, cls_name)
    for name in upstream_method_names(cls_name):
        theirs = getattr(getattr(absurd_sdk, cls_name), name)
        ours = getattr(ours_cls, name, None)
        assert ours is not None, f"{cls_name}.{name} is missing"
        is_async = inspect.iscoroutinefunction
        assert is_async(ours) == is_async(theirs), f"{cls_name}.{name}: async mismatch"
        t_params = list(inspect.signature(theirs).parameters.values())
        o_params = list(inspect.signature(ours).parameters.values())
        o_by_name = {p.name: p for p in o_params}
        for i, tp in enumerate(t_params):
            if tp.kind in (tp.VAR_POSITIONAL, tp.VAR_KEYWORD):
                continue
            where = f"{cls_name}.{name}({tp.name})"
            if name == "run_step" and i == 1:
                continue  # upstream: name_or_fn; ours: name (positional use is the same)
            op = o_by_name.get(tp.name)
            assert op is not None, f"{where} is missing"
            if tp.kind in (tp.POSITIONAL_ONLY, tp.POSITIONAL_OR_KEYWORD):
                assert o_params.index(op) == i, f"{where} is at another position"
                assert op.kind in (op.POSITIONAL_ONLY, op.POSITIONAL_OR_KEYWORD), where
            if tp.default is not tp.empty:
                assert op.default == tp.default, f"{where}: default {op.default!r}"
        t_names = {p.name for p in t_params}
        for op in o_params:
            if op.name not in t_names and op.kind not in (op.VAR_POSITIONAL, op.VAR_KEYWORD):
                assert op.default is not op.empty, f"{cls_name}.{name}({op.name}) is required"


@pytest.mark.parametrize("cls_name", ["Absurd", "AsyncAbsurd"])
def test_constructors_match(cls_name: str) -> None:
    theirs = list(inspect.signature(getattr(absurd_sdk, cls_name)).parameters)
    ours = list(inspect.signature(getattr(absurd, cls_name)).parameters)
    assert ours[: len(theirs)] == theirs


def test_data_types_have_upstream_fields() -> None:
    for name in ("RetryStrategy", "CancellationPolicy", "SpawnOptions", "QueuePolicyOptions",
                 "CreateQueueOptions", "QueuePolicy", "RetryTaskResult", "ClaimedTask",
                 "AbsurdHooks"):  # fmt: skip
        theirs = getattr(absurd_sdk, name)
        ours = getattr(absurd, name)
        assert set(theirs.__annotations__) <= set(ours.__annotations__), name
        assert theirs.__required_keys__ == ours.__required_keys__, name
    for name in ("TaskResultSnapshot", "StepHandle"):
        theirs, ours = getattr(absurd_sdk, name), getattr(absurd, name)
        assert list(inspect.signature(theirs).parameters) == list(
            inspect.signature(ours).parameters
        )
    assert absurd.TaskResultState.__args__ == absurd_sdk.TaskResultState.__args__
    # ours also reports whether a spawn created the task (upstream's TypeScript SDK does)
    assert set(absurd.SpawnResult.__annotations__) == {"task_id", "run_id", "attempt", "created"}


PROMISE_METHODS = [
    "create_promise",
    "get_promise",
    "promise_url",
    "reject_promise",
    "resolve_promise",
]
SCHEDULE_METHODS = [
    "backfill_schedule",
    "create_schedule",
    "delete_schedule",
    "list_schedule_fires",
    "list_schedules",
    "pause_schedule",
    "preview_schedule",
    "resume_schedule",
    "sync_schedules",
    "trigger_schedule",
    "update_schedule",
]
STREAM_METHODS = ["read_stream", "stream_entries"]


def test_ours_has_no_method_upstream_lacks_on_the_wrong_flavour() -> None:
    assert hasattr(absurd.Absurd, "make_async") and not hasattr(absurd.Absurd, "make_sync")
    assert hasattr(absurd.AsyncAbsurd, "make_sync") and not hasattr(
        absurd.AsyncAbsurd, "make_async"
    )
    # extras we add on top of upstream, listed so that a new one is a conscious choice
    extras = {
        cls: sorted(set(public_methods(getattr(absurd, cls))) - set(upstream_method_names(cls)))
        for cls in CLASSES
    }
    assert extras == {
        "Absurd": sorted(["execute_task", "for_queue", "spawn_many", *PROMISE_METHODS,
                          *SCHEDULE_METHODS, *STREAM_METHODS]),
        "AsyncAbsurd": sorted(["execute_task", "for_queue", "spawn_many", *PROMISE_METHODS,
                               *SCHEDULE_METHODS, *STREAM_METHODS]),
        "TaskContext": ["await_all", "await_first", "await_promise", "flush_streams", "map",
                        "promise", "spawn", "spawn_many", "stream"],
        "AsyncTaskContext": ["await_all", "await_first", "await_promise", "flush_streams",
                             "map", "promise", "spawn", "spawn_many", "stream"],
    }  # fmt: skip
    assert callable(absurd.AsyncTaskContext.run_step)  # raises TypeError: sync only
