"""absurd.current_time() calls per second with the test clock's setting off (the
production path) and on, against the function as it was before the test clock (one
fewer setting lookup). Run: .venv/bin/python -m benchmarks.clock_cost [calls]."""

from __future__ import annotations

import sys
import time

import psycopg

from absurd import schema
from absurd.embedded import start_embedded

BEFORE = """
create or replace function public.current_time_before()
returns timestamptz language sql volatile as $$
  select case
    when nullif(btrim(current_setting('absurd.fake_now', true)), '') is not null
      then absurd._fake_time(btrim(current_setting('absurd.fake_now', true)))
    when nullif(btrim(current_setting('absurd.fake_offset', true)), '') is not null
      then clock_timestamp()
           + absurd._fake_offset(btrim(current_setting('absurd.fake_offset', true)))
    else clock_timestamp() end;
$$"""


def rate(c: psycopg.Connection[tuple[object, ...]], fn: str, calls: int) -> float:
    started = time.perf_counter()
    c.execute(f"select count({fn}) from generate_series(1, %s)", (calls,))
    return calls / (time.perf_counter() - started)


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    server = start_embedded()
    try:
        with psycopg.connect(server.dsn, autocommit=True) as c:
            schema.install(c)
            c.execute(BEFORE)
            c.execute("insert into absurd.test_clock (frozen_at) values (null)")
            best: dict[str, float] = {}
            for _ in range(5):
                for label, fn, setting in (
                    ("before", "public.current_time_before()", "off"),
                    ("after, test clock off", "absurd.current_time()", "off"),
                    ("after, test clock on", "absurd.current_time()", "on"),
                ):
                    c.execute(f"set absurd.test_clock = '{setting}'")
                    best[label] = max(best.get(label, 0.0), rate(c, fn, calls))
            version = c.execute("show server_version").fetchone()
        print(f"PostgreSQL {version[0] if version else '?'}, {calls} calls, best of 5:")
        for label, value in best.items():
            print(f"  {label:24} {value / 1e6:6.2f} M calls/s")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
