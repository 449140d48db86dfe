"""examples/approval.py's workflow, driven over HTTP by this test against the real
ingress server: the test plays the approver, posting to the links the task sent."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest

from tests.ingress.conftest import CAPABILITY_SECRETS, Ingress
from tests.ingress.test_promises import until, worker

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).parents[2]


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "example_approval", ROOT / "examples" / "approval.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_approver_decides_over_http(server: Ingress) -> None:
    approval = example()
    app = approval.build_app(server.dsn, server.url, CAPABILITY_SECRETS)
    app.create_queue()
    try:
        yes = app.spawn("deploy", {"release": "r-yes"})["task_id"]
        no = app.spawn("deploy", {"release": "r-no"})["task_id"]
        with worker(app):
            until(lambda: len(approval.outbox) == 2)
            links = {release: (ok, reject) for release, ok, reject in approval.outbox}
            assert (
                server.post(urlsplit(links["r-no"][1]).path, {"message": "not now"}).status == 202
            )
            assert server.post(urlsplit(links["r-yes"][0]).path, {"by": "bo"}).status == 202
            # A forged link (the approve URL of one used to reject the other) is refused.
            forged = urlsplit(links["r-yes"][0]).path.replace("/p/", "/p/x", 1)
            assert server.post(forged, {}).status == 404
            done = until(
                lambda: all(
                    (r := app.fetch_task_result(t)) is not None and r.state == "completed"
                    for t in (yes, no)
                )
            )
            assert done
        assert app.fetch_task_result(yes).result == {
            "release": "r-yes",
            "deployed": True,
            "approved_by": "bo",
        }
        assert app.fetch_task_result(no).result["deployed"] is False
        assert len(approval.outbox) == 2  # each request sent once
    finally:
        app.close()
