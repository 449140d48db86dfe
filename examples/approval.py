"""An approval workflow: a task asks a human, waits for the answer over HTTP, goes on.

Run it with no arguments (it needs the ``ingress`` extra):

    .venv/bin/python examples/approval.py

It starts an embedded PostgreSQL, installs the schema, serves ``absurd.ingress`` on
a free loopback port, runs a worker in a thread, and walks two deployments through:

1. each task creates a promise (``ctx.promise``): its ``.url`` is a capability URL,
   signed with the ingress secret, that settles this promise and nothing else;
2. the task "sends" the approve and reject links (here: prints them, as an email
   would carry them) in a step, so a replay does not send them twice;
3. it awaits the promise: the run sleeps, holding no worker slot;
4. the approver POSTs to a link (this script does, with urllib, as the approver's
   browser backend or chat bot would); the promise settles and the task resumes:
   approved, it deploys; rejected, the task gets ``PromiseRejected`` and stops.

It exits 1 if a deployment did not end as its approver decided.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import urllib.request
from typing import Any

import psycopg

from absurd import Absurd, PromiseRejected, TaskContext, schema
from absurd.embedded import start_embedded

QUEUE = "approvals"
#: The ingress signing secret (in production: ABSURD_INGRESS_SECRET, from a vault).
SECRET = "k1=example-signing-secret-0123456789"

#: The "emails" sent: (deployment, approve URL, reject URL).
outbox: list[tuple[str, str, str]] = []
_lock = threading.Lock()


def say(text: str) -> None:
    print(text, flush=True)


def build_app(dsn: str, ingress_url: str, secrets: list[str] | None = None) -> Absurd:
    app = Absurd(dsn, QUEUE, ingress_url=ingress_url, ingress_secrets=secrets or [SECRET])

    @app.register_task("deploy")
    def deploy(params: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        release = params["release"]
        approval = ctx.promise("approval", timeout=24 * 3600)

        def send() -> str:
            assert approval.url is not None  # ingress is configured
            with _lock:
                outbox.append((release, approval.url, approval.url + "/reject"))
            say(f"  [task] {release}: approval requested, links sent")
            return approval.url

        ctx.step("send-approval-request", send)
        try:
            decision = ctx.await_promise(approval)
        except PromiseRejected as rejected:
            say(f"  [task] {release}: rejected ({rejected}); nothing deployed")
            return {"release": release, "deployed": False, "reason": str(rejected)}
        by = decision.get("by", "?") if isinstance(decision, dict) else "?"
        ctx.step("deploy", lambda: say(f"  [task] {release}: approved by {by}; deploying"))
        return {"release": release, "deployed": True, "approved_by": by}

    return app


def post(url: str, body: Any) -> int:
    """What the approver's click does: a JSON POST to the capability URL."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


def wait_until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def serve_ingress(dsn: str) -> tuple[str, Any]:
    """absurd.ingress on a free loopback port, in a thread (``absurdctl ingress`` in
    production). Returns its base URL and the server."""
    import uvicorn

    from absurd import ingress

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = ingress.create_app(dsn, secrets=[SECRET])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_until(lambda: server.started, 20, "ingress to start")
    return f"http://127.0.0.1:{port}", server


def main() -> int:
    say("Approval: a task waits for a human's answer over HTTP\n")
    pg = start_embedded()
    app: Absurd | None = None
    http: Any = None
    try:
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            schema.migrate(conn)
        base_url, http = serve_ingress(pg.dsn)
        say(f"1. ingress serves capability URLs at {base_url}/p/...")
        app = build_app(pg.dsn, base_url)
        app.create_queue()
        worker = threading.Thread(
            target=app.start_worker,
            kwargs={"concurrency": 2, "poll_interval": 5, "handle_signals": False},
            daemon=True,
        )
        worker.start()
        tasks = {r: app.spawn("deploy", {"release": r})["task_id"] for r in ("v1.4.0", "v1.5.0")}
        say("2. two deployments wait for approval (no worker slot held)")
        wait_until(lambda: len(outbox) == 2, 20, "the approval requests")
        links = {release: (ok, no) for release, ok, no in outbox}
        say("3. the approver approves v1.4.0 and rejects v1.5.0")
        approved = post(links["v1.4.0"][0], {"by": "ana"})
        rejected = post(links["v1.5.0"][1], {"message": "change freeze"})
        again = post(links["v1.4.0"][0], {"by": "ana"})  # a double click
        say(f"   POST statuses: approve {approved}, reject {rejected}, repeat {again}")
        results = {r: app.await_task_result(t, timeout=20) for r, t in tasks.items()}
        app.stop_worker()
        worker.join(10)
        for release, result in results.items():
            say(f"   {release}: {result.state} -> {result.result}")
        ok = (
            (approved, rejected, again) == (202, 202, 200)
            and results["v1.4.0"].result
            == {"release": "v1.4.0", "deployed": True, "approved_by": "ana"}
            and results["v1.5.0"].result["deployed"] is False
            and len(outbox) == 2
        )
        say("OK: each deployment went as its approver decided" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        if app is not None:
            app.close()
        if http is not None:
            http.should_exit = True
        pg.stop()


if __name__ == "__main__":
    sys.exit(main())
