"""The absurd.testing plugin's overhead per test: N tests that take ``absurd_dsn`` and
connect, against N that only connect to one database, timed by pytest itself (the
session's startup and template excluded: --durations of setup and teardown).
Run: .venv/bin/python -m benchmarks.testing_overhead [N] [seconds of work per test]
(ABSURD_TEST_DSN: a server). The next test's database is made while a test runs, so
tests that last longer than a CREATE DATABASE pay almost nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = """
import time, psycopg, pytest

@pytest.mark.parametrize("i", range({n}))
def test_own_database(absurd_dsn, i):
    with psycopg.connect(absurd_dsn) as c:
        c.execute("select absurd.current_time()")
    time.sleep({work})
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    work = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_overhead.py"
        path.write_text(TESTS.format(n=n, work=work))
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", tmp,
             "--durations=0", "--durations-min=0", str(path)],
            capture_output=True, text=True, cwd=tmp, env=os.environ.copy(), timeout=600,
        )  # fmt: skip
    rows = re.findall(
        r"([\d.]+)s (setup|teardown|call)\s+test_overhead.py::test_own_database\[(\d+)\]",
        proc.stdout,
    )
    if not rows:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(1)
    per: dict[str, dict[str, float]] = {}
    for seconds, phase, index in rows:
        per.setdefault(index, {})[phase] = float(seconds)
    # the first test pays the session's server and template, the last one its end
    last = str(n - 1)
    fixture = sorted(
        v.get("setup", 0) + v.get("teardown", 0) for k, v in per.items() if k not in ("0", last)
    )
    median = fixture[len(fixture) // 2]
    mean = sum(fixture) / len(fixture)
    print(
        f"{len(fixture)} tests of {work * 1000:.0f} ms work: fixture setup+teardown per test:"
        f" median {median * 1000:.1f} ms, mean {mean * 1000:.1f} ms,"
        f" max {fixture[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
