"""An Absurd worker (ours or upstream's SDK) in a process of its own.

The parent starts it (:class:`WorkerProcess`, ``multiprocessing`` with the spawn start
method), it registers the benchmark's tasks, tells the parent it is ready, and works
until SIGTERM; with a trace it then sends back what it sent to the server
(:class:`Trace`). ``worker_spec`` says what to run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import multiprocessing as mp
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection as Pipe
from typing import Any

import psycopg

#: The benchmark's tasks: ``steps`` steps returning {"i", "k"}; the time at the handler's
#: start; the time after an awaited event.
TASK_WORK = "drain-work"
TASK_STAMP = "pickup-stamp"
TASK_EVENT = "event-stamp"
SPAWN_OPTIONS = json.dumps({"max_attempts": 5})


def worker_spec(
    flavour: str,
    dsn: str,
    queue: str,
    *,
    mode: str = "async",
    concurrency: int = 1,
    steps: int = 1,
    claim_timeout: int = 60,
    trace: bool | str = False,
) -> dict[str, Any]:
    """What a worker process runs: ``flavour`` "ours" or "upstream", ``mode`` "sync" or
    "async"; ``trace`` True (statement counts and times) or "events" (also the last
    statements with their start time)."""
    return {
        "flavour": flavour,
        "mode": mode,
        "concurrency": concurrency,
        "steps": steps,
        "dsn": dsn,
        "queue": queue,
        "claim_timeout": claim_timeout,
        "trace": trace,
    }


class Trace:
    """Per-statement client timing inside the worker process.

    Wraps ``Cursor.execute`` / ``AsyncCursor.execute`` (every statement both SDKs send goes
    through them) and the connection pool's ``getconn`` (ours only: time spent getting a
    pooled connection). The time of a call includes waiting for the GIL (sync) or for the
    shared connection's lock (upstream), which is the point: it is what the task waits.
    With ``events`` it also keeps the last statements with their start time (wall clock),
    for the breakdown of an idle pickup.
    """

    _NAME = re.compile(r"absurd\.(\w+)\s*\(")

    def __init__(self, events: bool = False) -> None:
        self.calls: dict[str, list[int]] = {}
        self.events: collections.deque[tuple[float, str, float]] | None = (
            collections.deque(maxlen=5000) if events else None
        )

    def add(self, name: str, started: float, ns: int) -> None:
        entry = self.calls.setdefault(name, [0, 0])
        entry[0] += 1
        entry[1] += ns
        if self.events is not None:
            self.events.append((started, name, ns / 1e6))

    def name_of(self, query: Any) -> str:
        text = query if isinstance(query, str) else str(query)
        m = self._NAME.search(text)
        return m.group(1) if m else text.split()[0].lower() if text.split() else "?"

    def install(self) -> None:
        import psycopg_pool

        trace = self
        sync_execute = psycopg.Cursor.execute
        async_execute = psycopg.AsyncCursor.execute

        def execute(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            wall, t = time.time(), time.perf_counter_ns()
            try:
                return sync_execute(cur, query, *args, **kwargs)
            finally:
                trace.add(trace.name_of(query), wall, time.perf_counter_ns() - t)

        async def aexecute(cur: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            wall, t = time.time(), time.perf_counter_ns()
            try:
                return await async_execute(cur, query, *args, **kwargs)
            finally:
                trace.add(trace.name_of(query), wall, time.perf_counter_ns() - t)

        psycopg.Cursor.execute = execute  # type: ignore[method-assign,assignment]
        psycopg.AsyncCursor.execute = aexecute  # type: ignore[method-assign,assignment]

        sync_getconn = psycopg_pool.ConnectionPool.getconn
        async_getconn = psycopg_pool.AsyncConnectionPool.getconn

        def getconn(pool: Any, *args: Any, **kwargs: Any) -> Any:
            wall, t = time.time(), time.perf_counter_ns()
            try:
                return sync_getconn(pool, *args, **kwargs)
            finally:
                trace.add("(pool getconn)", wall, time.perf_counter_ns() - t)

        async def agetconn(pool: Any, *args: Any, **kwargs: Any) -> Any:
            wall, t = time.time(), time.perf_counter_ns()
            try:
                return await async_getconn(pool, *args, **kwargs)
            finally:
                trace.add("(pool getconn)", wall, time.perf_counter_ns() - t)

        psycopg_pool.ConnectionPool.getconn = getconn  # type: ignore[method-assign]
        psycopg_pool.AsyncConnectionPool.getconn = agetconn  # type: ignore[method-assign]

    def report(self, app: Any) -> dict[str, Any]:
        pool = getattr(app, "_pool", None)  # ours: the client's pool, if it has one
        stats = pool.get_stats() if pool is not None and hasattr(pool, "get_stats") else None
        return {
            "calls": self.calls,
            "events": list(self.events) if self.events is not None else None,
            "pool": None if stats is None else {**stats, "max_size": pool.max_size},
        }


def client_class(flavour: str, mode: str) -> Any:
    if flavour == "ours":
        import absurd

        return absurd.Absurd if mode == "sync" else absurd.AsyncAbsurd
    import absurd_sdk  # type: ignore[import-untyped]

    return absurd_sdk.Absurd if mode == "sync" else absurd_sdk.AsyncAbsurd


def _sync_worker(spec: dict[str, Any], pipe: Pipe, trace: Trace | None) -> dict[str, Any] | None:
    app = client_class(spec["flavour"], "sync")(spec["dsn"], queue_name=spec["queue"])
    steps = spec["steps"]

    @app.register_task(TASK_WORK)
    def work(params: Any, ctx: Any) -> Any:
        value = None
        for k in range(steps):
            value = ctx.step(f"step-{k + 1}", lambda k=k: {"i": params["i"], "k": k})
        return value

    @app.register_task(TASK_STAMP)
    def stamp(params: Any, ctx: Any) -> Any:
        return {"t": time.time()}

    @app.register_task(TASK_EVENT)
    def event_stamp(params: Any, ctx: Any) -> Any:
        ctx.await_event(params["event"])
        return {"t": time.time()}

    app.list_queues()  # connected (ours: the pool is open) before the clock starts
    # Ours installs its own SIGTERM handler in start_worker; upstream's worker has none.
    signal.signal(signal.SIGTERM, lambda *_: app.stop_worker())
    pipe.send({"ready": time.time(), "pid": os.getpid()})
    app.start_worker(concurrency=spec["concurrency"], claim_timeout=spec["claim_timeout"])
    report = trace.report(app) if trace is not None else None
    app.close()
    return report


async def _async_worker(
    spec: dict[str, Any], pipe: Pipe, trace: Trace | None
) -> dict[str, Any] | None:
    app = client_class(spec["flavour"], "async")(spec["dsn"], queue_name=spec["queue"])
    steps = spec["steps"]

    @app.register_task(TASK_WORK)
    async def work(params: Any, ctx: Any) -> Any:
        value = None
        for k in range(steps):

            async def compute(k: int = k) -> Any:
                return {"i": params["i"], "k": k}

            value = await ctx.step(f"step-{k + 1}", compute)
        return value

    @app.register_task(TASK_STAMP)
    async def stamp(params: Any, ctx: Any) -> Any:
        return {"t": time.time()}

    @app.register_task(TASK_EVENT)
    async def event_stamp(params: Any, ctx: Any) -> Any:
        await ctx.await_event(params["event"])
        return {"t": time.time()}

    await app.list_queues()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, app.stop_worker)
    pipe.send({"ready": time.time(), "pid": os.getpid()})
    await app.start_worker(concurrency=spec["concurrency"], claim_timeout=spec["claim_timeout"])
    report = trace.report(app) if trace is not None else None
    await app.close()
    return report


#: Set to 1 in a benchmark's environment, its worker processes (ours) run with tracing
#: and worker metrics on (``install_observability``; benchmarks/overhead.py).
OBSERVABILITY_ENV = "ABSURD_BENCH_OBSERVABILITY"


#: With it (a ratio, 0 to 1), the tracer provider samples that share of the traces
#: (``ParentBased(TraceIdRatioBased(ratio))``) instead of recording every span.
TRACE_SAMPLE_ENV = "ABSURD_BENCH_TRACE_SAMPLE"
#: Which worker metrics "on" records: "both" (the default), "otel" or "prometheus".
METRICS_ENV = "ABSURD_BENCH_METRICS"


def install_observability() -> None:
    """The OpenTelemetry SDK as an application would configure it, exporting nowhere:
    spans through a BatchSpanProcessor to an exporter that drops them (every trace,
    or the share ``ABSURD_BENCH_TRACE_SAMPLE`` says), metrics through a reader that
    collects every 10 s into an exporter that drops them; and the worker metrics
    recorded into prometheus_client's registry too (not served). ``ABSURD_BENCH_METRICS``
    keeps only one of the two metrics backends."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from absurd.observability import enable_prometheus

    class DropSpans(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class DropMetrics(MetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kw: Any) -> Any:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kw: Any) -> None:
            pass

    ratio = os.environ.get(TRACE_SAMPLE_ENV)
    if ratio:
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(float(ratio))))
    else:
        provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    trace.set_tracer_provider(provider)
    which = os.environ.get(METRICS_ENV, "both")
    if which in ("both", "otel"):
        reader = PeriodicExportingMetricReader(DropMetrics(), export_interval_millis=10_000)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    if which in ("both", "prometheus"):
        enable_prometheus()


def worker_main(spec: dict[str, Any], pipe: Pipe) -> None:
    """Entry point of the worker process (``multiprocessing``, spawn start method).
    With ``ABSURD_BENCH_WORKER_LOG`` set (the suite does), its stderr goes to that file;
    with ``ABSURD_BENCH_OBSERVABILITY=1``, it traces and records metrics."""
    log_path = os.environ.get("ABSURD_BENCH_WORKER_LOG")
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    if os.environ.get(OBSERVABILITY_ENV) == "1" and spec["flavour"] == "ours":
        install_observability()
    trace = Trace(events=spec.get("trace") == "events") if spec.get("trace") else None
    if trace is not None:
        trace.install()
    report = None
    try:
        if spec["mode"] == "sync":
            report = _sync_worker(spec, pipe, trace)
        else:
            report = asyncio.run(_async_worker(spec, pipe, trace))
    finally:
        pipe.send({"trace": report})
        pipe.close()


class WorkerProcess:
    """One worker in its own process; ``stop()`` sends SIGTERM and collects its trace."""

    def __init__(self, spec: dict[str, Any]) -> None:
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(spec, child), daemon=True)
        self.proc.start()
        child.close()
        try:
            if not self.pipe.poll(60):
                raise RuntimeError("worker process did not start within 60 s")
            msg = self.pipe.recv()
        except (EOFError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(
                f"worker process failed to start (exit code {self.proc.exitcode}): {exc!r}"
            ) from exc
        self.ready_at: float = msg["ready"]
        self.trace: dict[str, Any] | None = None

    def stop(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()  # SIGTERM to this child's pid: a graceful stop
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if self.pipe.poll(0.1):
                    msg = self.pipe.recv()
                    if "trace" in msg:
                        self.trace = msg["trace"]
                        break
            except EOFError:
                break
            if not self.proc.is_alive() and not self.pipe.poll(0):
                break
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.pipe.close()


@contextlib.asynccontextmanager
async def worker_running(
    app: Any, concurrency: int, stop_within: float = 60, **options: Any
) -> AsyncIterator[None]:
    """An async client's worker (ours or upstream's) running in this process's loop; on
    leaving, stopped (``stop_within`` seconds at most) and the client closed."""
    worker = asyncio.ensure_future(app.start_worker(concurrency=concurrency, **options))
    try:
        yield
    finally:
        app.stop_worker()
        try:
            await asyncio.wait_for(worker, stop_within)
        finally:
            await app.close()
