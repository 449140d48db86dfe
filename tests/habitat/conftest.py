"""Fixtures for Habitat: a populated queue and TestClients in each auth mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

pytest.importorskip("starlette", reason="Habitat needs the 'habitat' extra")

from starlette.testclient import TestClient

from absurd.habitat import create_app
from tests.habitat.data import at, new_queue, pinned_dsn, populate, populate_schedules

TOKEN = "t0ken-for-tests"
BASIC = "admin:pa55word"


@pytest.fixture
def hq(conn: psycopg.Connection[Any]) -> Iterator[tuple[str, dict[str, str]]]:
    """A queue with one task in every state: (queue, ids by role)."""
    queue = new_queue(conn)
    ids = populate(conn, queue)
    yield queue, ids
    conn.execute("select absurd.drop_queue(%s)", (queue,))


@pytest.fixture
def sq(conn: psycopg.Connection[Any]) -> Iterator[tuple[str, dict[str, str]]]:
    """A queue with schedules and fires (data.populate_schedules): (queue, names)."""
    queue = new_queue(conn, "sch")
    names = populate_schedules(conn, queue)
    yield queue, names
    at(conn, None)
    conn.execute("select absurd.drop_queue(%s)", (queue,))


@pytest.fixture
def make_client(dsn: str) -> Iterator[Callable[..., TestClient]]:
    """Factory: a TestClient on a fresh app (``token=``, ``basic_auth=``, ``base_path=``;
    ``dsn=`` another DSN, e.g. one with a pinned engine clock)."""
    clients: list[TestClient] = []

    def make(**kwargs: Any) -> TestClient:
        kwargs.setdefault("token", None)
        kwargs.setdefault("basic_auth", None)
        app = create_app(kwargs.pop("dsn", dsn), **kwargs)
        client = TestClient(app, follow_redirects=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
        client.app.state.habitat.close()  # type: ignore[attr-defined]


@pytest.fixture
def ro(make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.delenv("ABSURD_HABITAT_TOKEN", raising=False)
    monkeypatch.delenv("ABSURD_HABITAT_BASIC_AUTH", raising=False)
    return make_client()


@pytest.fixture
def rw(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(token=TOKEN, basic_auth=BASIC)


@pytest.fixture
def sro(
    make_client: Callable[..., TestClient], dsn: str, monkeypatch: pytest.MonkeyPatch
) -> TestClient:
    """A read-only Habitat whose engine clock is pinned to SCHEDULE_VIEW."""
    monkeypatch.delenv("ABSURD_HABITAT_TOKEN", raising=False)
    monkeypatch.delenv("ABSURD_HABITAT_BASIC_AUTH", raising=False)
    return make_client(dsn=pinned_dsn(dsn))


@pytest.fixture
def srw(make_client: Callable[..., TestClient], dsn: str) -> TestClient:
    """A writable Habitat (TOKEN) whose engine clock is pinned to SCHEDULE_VIEW."""
    return make_client(dsn=pinned_dsn(dsn), token=TOKEN)
