"""The plugin under pytest-xdist: two tests with the same queue name, run at the same
time in two worker processes, each see only their own database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

USER_TESTS = """
import os, time
from pathlib import Path
from absurd import Absurd
from absurd.testing import run_until_idle

OUT = Path(os.environ["OUT"])

def both(name, absurd_dsn, absurd_clock):
    app = Absurd(absurd_dsn, "shared")
    app.create_queue()
    @app.register_task("hello")
    def hello(params, ctx):
        return ctx.step("say", lambda: params)
    app.spawn("hello", name)
    (OUT / f"{name}.ready").write_text(os.environ["PYTEST_XDIST_WORKER"])
    deadline = time.monotonic() + 30
    while len(list(OUT.glob("*.ready"))) < 2:  # both queues exist at the same time
        assert time.monotonic() < deadline
        time.sleep(0.02)
    ran = run_until_idle(app)
    assert [r.result for r in ran] == [name]
    (OUT / f"{name}.db").write_text(app.db.listen_dsn())
    app.close()

def test_one(absurd_dsn, absurd_clock):
    both("one", absurd_dsn, absurd_clock)

def test_two(absurd_dsn, absurd_clock):
    both("two", absurd_dsn, absurd_clock)
"""


def test_two_tests_with_one_queue_name_do_not_see_each_other(
    tmp_path: Path, absurd_server_dsn: str
) -> None:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "ABSURD_TEST_DSN": absurd_server_dsn}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(tmp_path / "test_user.py")],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
    workers = {(out / f"{n}.ready").read_text() for n in ("one", "two")}
    assert len(workers) == 2, "the two tests ran in one process"
    assert (out / "one.db").read_text() != (out / "two.db").read_text()
