"""The absurd.testing plugin's overhead per test: N tests that take ``absurd_dsn``,
create a queue in it (tables to drop when the database is recycled) and optionally
work a while; the fixture's setup and teardown, as pytest times them, per test (the
first test, which starts the session's server and template, and the last, which
ends the session, left out).

Run: .venv/bin/python -m benchmarks.testing_overhead [N] [seconds of work per test]
(ABSURD_TEST_DSN: a server of your own). The next test's database is made ready
while a test runs, so tests that last longer than a recycling pay almost nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TESTS = """
import time, pytest
from absurd import Absurd

@pytest.mark.parametrize("i", range({n}))
def test_own_database(absurd_dsn, i):
    app = Absurd(absurd_dsn, "q")
    app.create_queue()
    app.spawn("t", queue="q")
    app.close()
    time.sleep({work})
"""


#: Records each phase's exact duration (pytest prints them rounded to 10 ms).
CONFTEST = """
import json, os

def pytest_runtest_logreport(report):
    with open(os.environ["DURATIONS"], "a") as out:
        out.write(json.dumps([report.nodeid, report.when, report.duration]) + "\\n")
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    work = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "test_overhead.py"
        path.write_text(TESTS.format(n=n, work=work))
        (Path(tmp) / "conftest.py").write_text(CONFTEST)
        durations = Path(tmp) / "durations.jsonl"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", tmp,
             str(path)],
            capture_output=True, text=True, cwd=tmp, timeout=600,
            env={**os.environ, "DURATIONS": str(durations)},
        )  # fmt: skip
        if proc.returncode != 0 or not durations.exists():
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise SystemExit(1)
        rows = [json.loads(line) for line in durations.read_text().splitlines()]
    per: dict[str, dict[str, float]] = {}
    for nodeid, phase, seconds in rows:
        index = re.search(r"\[(\d+)\]", nodeid)
        assert index is not None
        per.setdefault(index.group(1), {})[phase] = float(seconds)
    # the first test pays the session's server and template, the last one its end
    last = str(n - 1)
    fixture = sorted(
        v.get("setup", 0) + v.get("teardown", 0) for k, v in per.items() if k not in ("0", last)
    )
    median = fixture[len(fixture) // 2]
    mean = sum(fixture) / len(fixture)
    p90 = fixture[len(fixture) * 9 // 10]
    print(
        f"{len(fixture)} tests of {work * 1000:.0f} ms work: fixture setup+teardown per test:"
        f" median {median * 1000:.1f} ms, 90th percentile {p90 * 1000:.1f} ms,"
        f" mean {mean * 1000:.1f} ms,"
        f" max {fixture[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
