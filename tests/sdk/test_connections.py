"""The client's connections: timeouts and keepalives by default (a server gone
from the network fails a connection in seconds), the URL's own values kept, and
the pool set to retry a lost server at once when someone waits (docs/ha.md)."""

from __future__ import annotations

import asyncio

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from absurd import Absurd, AsyncAbsurd
from absurd._async.db import CONNECT_DEFAULTS, RECONNECT_TIMEOUT, connect_options


def test_defaults_fill_only_what_the_url_leaves_out() -> None:
    assert connect_options("postgresql://u@h/db") == CONNECT_DEFAULTS
    url = "postgresql://u@h1:5432,h2:5433/db?target_session_attrs=read-write&connect_timeout=2"
    options = connect_options(url)
    assert "connect_timeout" not in options
    assert options["keepalives_idle"] == 10
    assert connect_options("host=/tmp keepalives=0 dbname=x").get("keepalives") is None
    assert connect_options("not a url = =") == {}  # fails when used, with its own error


def test_pool_and_listener_connections_carry_the_defaults(dsn: str) -> None:
    given = dict(conninfo_to_dict(dsn))
    given.pop("connect_timeout", None)
    url = make_conninfo(**given)  # type: ignore[arg-type]
    app = Absurd(url)
    try:
        with app.db.connection() as conn:
            params = conn.info.get_parameters()
        assert params["connect_timeout"] == "5"
        assert params["keepalives_idle"] == "10"
        assert app.db.pool is not None
        assert app.db.pool.reconnect_timeout == RECONNECT_TIMEOUT
        listener = app.db.connect()
        try:
            assert listener.info.get_parameters()["keepalives_count"] == "3"
        finally:
            listener.close()
    finally:
        app.close()


def test_url_values_win(dsn: str) -> None:
    url = make_conninfo(dsn, connect_timeout=7, keepalives_idle=30)

    async def main() -> dict[str, str]:
        app = AsyncAbsurd(url)
        try:
            async with app.db.connection() as conn:
                return conn.info.get_parameters()
        finally:
            await app.close()

    params = asyncio.run(main())
    assert params["connect_timeout"] == "7"
    assert params["keepalives_idle"] == "30"
    assert params["keepalives_interval"] == "5"
