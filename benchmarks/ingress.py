"""absurd.ingress: POST -> task resumed, and verified webhook deliveries per second.

1. Latency. N tasks each create a promise, hand out its capability URL and suspend on
   it. One at a time, a client POSTs to a URL and waits until the task's handler is
   past ``await_promise``: the time from the POST to that point (HTTP, token check, the
   settlement's commit, the NOTIFY, the idle worker's claim and the replay). The worker
   polls only every 60 s: every wake-up is the notification's. Targets: p50 <= 10 ms,
   p99 <= 30 ms.
2. Throughput. C client threads POST Stripe-signed deliveries (unique event ids, the
   ``emit`` action) for D seconds; each 202 is a committed delivery record and event.

The ingress server runs as its own process (``absurdctl ingress``, one uvicorn
worker), the worker and the clients in this one; PostgreSQL is the embedded server
(or ``ABSURD_BENCH_DSN``). The machine's load average is printed with the figures.

Run: .venv/bin/python -m benchmarks.ingress [--quick]
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from absurd import Absurd, schema

SECRET = "k1=benchmark-capability-secret-01"
STRIPE = "whsec_benchmark_stripe_secret"
QUEUE = "bench_ingress"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(dsn: str, port: int, config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ABSURD_INGRESS_SECRET": SECRET}
    proc = subprocess.Popen(
        [sys.executable, "-m", "absurd.cli", "ingress", "-d", dsn, "--port", str(port),
         "--config", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/_healthz")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("ingress did not start")
        time.sleep(0.1)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def latency(dsn: str, port: int, n: int) -> dict[str, Any]:
    app = Absurd(dsn, QUEUE, ingress_url=f"http://127.0.0.1:{port}", ingress_secrets=[SECRET])
    urls: dict[int, str] = {}
    resumed: dict[int, float] = {}
    done = threading.Condition()

    @app.register_task("wait")
    def wait(params: Any, ctx: Any) -> Any:
        handle = ctx.promise("p", timeout=3600)
        ctx.step("url", lambda: urls.setdefault(params["i"], handle.url) and None)
        ctx.await_promise(handle)
        with done:
            resumed.setdefault(params["i"], time.perf_counter())
            done.notify_all()

    worker = threading.Thread(
        target=app.start_worker,
        kwargs={"concurrency": 4, "poll_interval": 60, "handle_signals": False},
        daemon=True,
    )
    worker.start()
    for i in range(n):
        app.spawn("wait", {"i": i})
    deadline = time.monotonic() + 120
    while len(urls) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # every run suspended
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    samples: list[float] = []
    answered: list[float] = []
    for i in range(n):
        path = urlsplit(urls[i]).path
        start = time.perf_counter()
        conn.request("POST", path, b'{"ok": true}', {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        answered.append((time.perf_counter() - start) * 1000)
        assert response.status == 202, response.status
        with done:
            done.wait_for(lambda i=i: i in resumed, timeout=10)  # type: ignore[misc]
        samples.append((resumed[i] - start) * 1000)
        time.sleep(0.02)  # idle again
    app.stop_worker()
    worker.join(30)
    app.close()
    return {"n": n, "p50_ms": pct(samples, 0.5), "p99_ms": pct(samples, 0.99),
            "max_ms": max(samples), "http_202_p50_ms": pct(answered, 0.5),
            "http_202_p99_ms": pct(answered, 0.99)}  # fmt: skip


def throughput(port: int, clients: int, seconds: float, server_pid: int) -> dict[str, Any]:
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < stop:
            body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "data": {"object": {"id": "pi_1"}}})
            t = int(time.time())
            sig = hmac.new(STRIPE.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
            headers = {"Stripe-Signature": f"t={t},v1={sig}", "Content-Type": "application/json"}
            conn.request("POST", "/hooks/stripe", body.encode(), headers)
            response = conn.getresponse()
            response.read()
            assert response.status == 202, response.status
            counts[k] += 1

    cpu0, wall0, own0 = cpu_seconds(server_pid), time.monotonic(), cpu_seconds(os.getpid())
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - wall0
    cpu = cpu_seconds(server_pid) - cpu0
    own = cpu_seconds(os.getpid()) - own0
    total = sum(counts)
    return {"clients": clients, "seconds": round(wall, 1), "deliveries": total,
            "per_second": total / wall, "server_cpu_share": cpu / wall,
            "clients_cpu_share": own / wall}  # fmt: skip


def main() -> None:
    quick = "--quick" in sys.argv
    clients = int(os.environ.get("BENCH_CLIENTS", "8"))
    n, seconds = (100, 5.0) if quick else (1000, 20.0)
    server = None
    dsn = os.environ.get("ABSURD_BENCH_DSN")
    if dsn is None:
        from absurd.embedded import start_embedded

        server = start_embedded()
        dsn = server.dsn
    try:
        with psycopg.connect(dsn, autocommit=True) as c:
            schema.migrate(c)
            c.execute("select absurd.create_queue(%s)", (QUEUE,))
            version = c.execute("show server_version").fetchone()
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "ingress.json"
            config.write_text(json.dumps({"sources": {"stripe": {
                "verifier": "stripe", "secrets": [STRIPE], "queue": QUEUE,
                "emit": "payment:{data.object.id}"}}}))  # fmt: skip
            port = free_port()
            proc = serve(dsn, port, config)
            try:
                lat = latency(dsn, port, n)
                rate = throughput(port, clients, seconds, proc.pid)
            finally:
                proc.terminate()
                proc.wait(15)
        print(json.dumps({"postgres": version[0] if version else "?",
                          "cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                          "latency": lat, "throughput": rate}, indent=2))  # fmt: skip
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
