"""Streams over SSE (absurd.ingress.sse) through uvicorn on loopback and a real HTTP
client: the text matches, a reconnect with Last-Event-ID misses nothing and repeats
nothing, and a read token opens its own stream only."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette

import absurd
from absurd.ingress.sse import StreamTokenSigner, stream_routes
from tests.habitat.data import Server

SECRET = "k1=" + "s" * 32
WORDS = [f"word{i}" for i in range(30)]


def events(response: Any, stop_after: int | None = None) -> Iterator[dict[str, Any]]:
    """Parses an event-stream: dicts of id, event and data (JSON), as they arrive."""
    event: dict[str, Any] = {}
    count = 0
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
                count += 1
                if stop_after is not None and count >= stop_after:
                    return
            event = {}
            continue
        field, _, value = line.partition(": ")
        event[field] = json.loads(value) if field == "data" else value


@pytest.fixture
def served(dsn: str, queue: str) -> Iterator[tuple[str, absurd.Absurd]]:
    """The SSE routes on uvicorn, and a worker (a thread) that runs task "talk"."""
    reader = absurd.AsyncAbsurd(dsn, queue_name=queue)
    web = Starlette(routes=stream_routes(reader, [SECRET]))
    worker = absurd.Absurd(dsn, queue_name=queue)

    @worker.register_task("talk")
    def talk(params: Any, ctx: absurd.TaskContext) -> int:
        out = ctx.stream("out")
        for word in WORDS:
            out.write(word)
            time.sleep(params["pause"])
        out.close()
        return len(WORDS)

    thread = threading.Thread(
        target=worker.start_worker, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    with Server(web) as server:
        yield server.url, worker
    worker.stop_worker()
    thread.join(10)
    worker.close()


def token(queue: str, task_id: Any, name: str = "out", seconds: float = 600) -> str:
    expires = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
    return StreamTokenSigner([SECRET]).sign(queue, task_id, name, expires)


def test_sse_resumes_with_last_event_id_missing_nothing_repeating_nothing(
    served: tuple[str, absurd.Absurd], queue: str
) -> None:
    url, app = served
    task_id = app.spawn("talk", {"pause": 0.02})["task_id"]
    target = f"{url}/streams/{task_id}/out?token={token(queue, task_id)}"
    with httpx2.Client(timeout=20) as client:
        with client.stream("GET", target) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            first = list(events(response, stop_after=7))  # then the browser drops
        last_id = first[-1]["id"]
        with client.stream("GET", target, headers={"Last-Event-ID": last_id}) as response:
            rest = list(events(response))
    got = first + rest
    assert rest[-1]["event"] == "end"
    chunks = [e for e in got if "event" not in e]
    assert [e["data"] for e in chunks] == WORDS
    assert [int(e["id"]) for e in chunks] == list(range(len(WORDS)))
    assert " ".join(e["data"] for e in chunks) == " ".join(WORDS)


def test_a_read_token_opens_its_own_stream_only(
    served: tuple[str, absurd.Absurd], queue: str
) -> None:
    url, app = served
    task_id = app.spawn("talk", {"pause": 0})["task_id"]
    other = uuid.uuid4()
    good = token(queue, task_id)
    with httpx2.Client(timeout=20) as client:
        denied = [
            f"{url}/streams/{task_id}/out",  # no token
            f"{url}/streams/{task_id}/other?token={good}",  # another stream
            f"{url}/streams/{other}/out?token={good}",  # another task
            f"{url}/streams/{task_id}/out?queue=elsewhere&token={good}",  # another queue
            f"{url}/streams/{task_id}/out?token={token(queue, task_id, seconds=-5)}",  # expired
            f"{url}/streams/{task_id}/out?token={good[:-2]}xx",  # tampered
            f"{url}/streams/{task_id}/out?token=../../etc",
        ]
        for target in denied:
            assert client.get(target).status_code == 403, target
        assert client.get(f"{url}/streams/not-a-uuid/out?token={good}").status_code == 400
        bearer = {"Authorization": f"Bearer {good}"}
        with client.stream("GET", f"{url}/streams/{task_id}/out", headers=bearer) as response:
            got = list(events(response))
        assert [e["data"] for e in got if "event" not in e] == WORDS
        resumed = client.get(
            f"{url}/streams/{task_id}/out?token={good}", headers={"Last-Event-ID": "x"}
        )
        assert resumed.status_code == 400


def test_routes_refuse_to_serve_without_secrets(dsn: str) -> None:
    with pytest.raises(absurd.InvalidArgument):
        stream_routes(absurd.AsyncAbsurd(dsn), None)


def example(name: str) -> ModuleType:
    """An example script, imported as a module."""
    path = Path(__file__).parents[2] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_agent_loop_example_streams_its_tokens_over_sse(dsn: str) -> None:
    """examples/agent_loop.py's agent, read over SSE while it runs: the words match
    the fake model's transcript, each once."""
    agent = example("agent_loop")
    app = agent.build_app(dsn, "test", pause=0.005)
    app.create_queue()
    reader = absurd.AsyncAbsurd(dsn, queue_name=agent.QUEUE)
    web = Starlette(routes=stream_routes(reader, [SECRET]))
    thread = threading.Thread(target=app.start_worker, kwargs={"poll_interval": 0.05})
    try:
        thread.start()
        task_id = app.spawn("travel-agent", {"goal": agent.GOAL})["task_id"]
        with Server(web) as server, httpx2.Client(timeout=30) as client:
            target = f"{server.url}/streams/{task_id}/tokens"
            bearer = {"Authorization": f"Bearer {token(agent.QUEUE, task_id, 'tokens')}"}
            with client.stream("GET", target, headers=bearer) as response:
                got = list(events(response))
        assert got[-1]["event"] == "end"
        assert [e["data"] for e in got[:-1]] == agent.transcript()
    finally:
        app.stop_worker()
        thread.join(10)
        app.drop_queue()
        app.close()
