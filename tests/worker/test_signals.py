"""A worker embedded in a host application honours the application's signal
handlers: on SIGTERM the worker stops gracefully AND the application's handler
runs; once the worker has stopped, the application's handler is back."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import pytest

from absurd import _signals
from absurd._async import _compat
from tests.worker.conftest import Db, Flavour, wait_for

SCRIPT = Path(__file__).with_name("signal_host.py")


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_host_handler_runs_and_is_restored(
    flavour: Flavour, app_dsn: str, queue: str, db: Db, tmp_path: Path
) -> None:
    log = tmp_path / "host.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--flavour", flavour.name, "--dsn", app_dsn,
             "--queue", queue],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        # The worker is at work: tasks the producer spawned complete.
        wait_for(lambda: db.count("completed") >= 5, 30, "tasks to complete", interval=0.1)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    output = log.read_text()
    assert code == 0, output
    lines = output.splitlines()
    assert "app handler" in lines, output  # the application's handler ran
    assert "producer stopped" in lines, output  # ... and so its producer stopped
    assert "restored" in lines, output  # its handler is back after the worker
    assert took < 5.0, f"exit took {took:.2f}s:\n{output}"
    # Drained: nothing left running or claimed.
    assert db.count("running") == 0, db.states()


def test_handlers_chain_and_restore() -> None:
    """In-process: the worker's handler stops the worker, then calls the one that
    was there; restore() puts that one back, SIG_DFL stays SIG_DFL."""
    calls: list[str] = []

    def app(signum: int, frame: FrameType | None) -> None:
        calls.append(f"app {signum}")

    old_term = signal.signal(signal.SIGTERM, app)
    old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        restore = _signals.install(lambda: calls.append("stop"))
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # default: the worker stops, no KeyboardInterrupt
        wait_for(lambda: len(calls) >= 3, 5, "the handlers to run")
        assert calls == ["stop", f"app {int(signal.SIGTERM)}", "stop"]
        restore()
        assert signal.getsignal(signal.SIGTERM) is app
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def test_restore_keeps_a_handler_installed_meanwhile() -> None:
    old = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        restore = _signals.install(lambda: None)

        def later(signum: int, frame: FrameType | None) -> None:
            pass

        signal.signal(signal.SIGTERM, later)
        restore()
        assert signal.getsignal(signal.SIGTERM) is later
    finally:
        signal.signal(signal.SIGTERM, old)


def test_async_app_handler_from_the_loop_still_runs() -> None:
    """An asyncio application's ``loop.add_signal_handler`` handler runs along with
    the async worker's stop, and is still the loop's after restore()."""
    calls: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: calls.append("app"))
        try:
            restore = _compat.install_signal_handlers(lambda: calls.append("stop"))
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):
                if len(calls) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert sorted(calls) == ["app", "stop"]
            restore()
            calls.clear()
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):
                if calls:
                    break
                await asyncio.sleep(0.01)
            assert calls == ["app"]
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    old = signal.getsignal(signal.SIGTERM)
    try:
        asyncio.run(main())
    finally:
        signal.signal(signal.SIGTERM, old)


def test_asyncio_run_sigint_handler_is_not_chained() -> None:
    """Under ``asyncio.run``, SIGINT stops the async worker gracefully: asyncio's
    own handler (which would cancel the main task) is not chained, and is back
    after restore()."""
    calls: list[str] = []

    async def main() -> None:
        before = signal.getsignal(signal.SIGINT)
        restore = _compat.install_signal_handlers(lambda: calls.append("stop"))
        os.kill(os.getpid(), signal.SIGINT)  # cancelled here if asyncio's handler ran
        for _ in range(100):
            if calls:
                break
            await asyncio.sleep(0.01)
        restore()
        assert signal.getsignal(signal.SIGINT) is before

    asyncio.run(main())
    assert calls == ["stop"]
