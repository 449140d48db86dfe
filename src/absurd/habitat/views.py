"""Habitat's HTML pages and form actions.

A page rendered with the header ``X-Habitat-Fragment: 1`` returns only its live part
(the ``#live`` element), which ``habitat.js`` polls to refresh lists in place.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import quote, unquote, urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from absurd.habitat import actions, flow, store
from absurd.habitat.auth import CSRF_COOKIE, SESSION_COOKIE, SESSION_SECONDS, Auth
from absurd.habitat.state import Habitat, habitat_of
from absurd.habitat.store import BadInput, Conn, Row

PAGE_SIZE = 25
#: Flash messages after an action, by code: a link cannot make Habitat show other text.
MESSAGES = {
    "cancelled": "Task cancelled.",
    "retried": "Retried in place (new run).",
    "retried-new": "Retried as a new task.",
    "emitted": "Event emitted.",
    "spawned": "Task spawned.",
    "paused": "Schedule paused.",
    "resumed": "Schedule resumed.",
    "triggered": "Schedule triggered: its task was spawned.",
    "resolved": "Promise resolved.",
    "rejected": "Promise rejected.",
    "promise-duplicate": "The promise was already settled so: nothing changed.",
    "promise-not-applied": "Not applied: the promise was already settled otherwise.",
    **flow.MESSAGES,
}
#: The schedule actions and the flash message each leaves.
SCHEDULE_ACTIONS = {"pause": "paused", "resume": "resumed", "trigger": "triggered"}
#: The promise actions and the flash message each leaves when it applies.
PROMISE_ACTIONS = {"resolve": "resolved", "reject": "rejected"}


def root(request: Request) -> str:
    """The URL prefix Habitat is served under ('' or '/habitat', no trailing slash)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def is_writer(request: Request) -> bool:
    auth = habitat_of(request).auth
    return auth.check_session(request.cookies.get(SESSION_COOKIE)) or auth.check_header(
        request.headers.get("authorization")
    )


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    habitat = habitat_of(request)
    nonce = request.cookies.get(CSRF_COOKIE)
    fresh = not nonce or len(nonce) > 64
    if fresh:
        nonce = Auth.new_csrf_nonce()
    assert nonce is not None
    context.update(
        base=root(request),
        auth=habitat.auth,
        writer=is_writer(request),
        csrf=habitat.auth.csrf_token(nonce),
        fragment=request.headers.get("x-habitat-fragment") == "1",
        current=request.url.path[len(root(request)) :] or "/",
        here=(request.url.path[len(root(request)) :] or "/")
        + (f"?{request.url.query}" if request.url.query else ""),
        message=MESSAGES.get(request.query_params.get("msg", "")),
        request_query=str(request.url.query),
    )
    html = habitat.templates.get_template(template).render(context)
    # Live data and per-browser CSRF tokens: never cached; fragments differ from pages.
    headers = {"Cache-Control": "no-store", "Vary": "X-Habitat-Fragment, Cookie"}
    response = HTMLResponse(html, status_code=status, headers=headers)
    if fresh:
        response.set_cookie(
            CSRF_COOKIE, nonce, httponly=True, samesite="strict", path=root(request) or "/"
        )
    return response


def bad_request(
    request: Request, message: str, status: int = 400, code: str | None = None
) -> HTMLResponse:
    """The error page; ``code`` is the engine's AB code when the engine refused."""
    return render(request, "error.html", status=status, error=message, code=code)


def _arg(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value not in (None, "") else None


def int_arg(request: Request, name: str, default: int) -> int:
    value = _arg(request, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise BadInput(f"{name} must be an integer, got {value!r}") from None


def _link(request: Request, path: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{root(request)}{path}" + (f"?{query}" if query else "")


def _page_links(request: Request, path: str, cursor: str | None, paged: bool) -> dict[str, Any]:
    """Keyset paging: ``next_link`` (this query, next cursor) and ``first_link``
    (this query from the start; only when the page was reached by a cursor)."""
    params = {k: v for k, v in request.query_params.items() if k != "cursor"}
    return {
        "next_link": _link(request, path, **params, cursor=cursor) if cursor else None,
        "first_link": _link(request, path, **params) if paged else None,
    }


# -- pages ----------------------------------------------------------------------------


def _overview(conn: Conn, habitat: Habitat) -> tuple[dt.datetime, list[Row]]:
    at = store.now(conn)
    out = []
    for queue in habitat.queues.names(conn):
        metrics = store.queue_metrics(conn, queue, at)
        metrics["queue_name"] = queue
        metrics["chart"] = [
            {"minute": r["minute"].isoformat(), "finished": r["finished"]}
            for r in store.queue_throughput(conn, queue, at)
        ]
        out.append(metrics)
    return at, out


async def overview(request: Request) -> Response:
    habitat = habitat_of(request)
    at, queues = await habitat.run(_overview, habitat)
    totals = {
        k: sum(q[k] for q in queues)
        for k in ("pending", "visible", "running", "sleeping", "failed", "completed_last_minute")
    }
    return render(request, "overview.html", now=at, queues=queues, totals=totals)


def _run_filter(request: Request) -> store.RunFilter:
    f = store.RunFilter(
        queue=_arg(request, "queue"),
        state=_arg(request, "state") or _arg(request, "status"),
        task_name=_arg(request, "task_name") or _arg(request, "taskName"),
        params=_arg(request, "params"),
        after=store.parse_time(_arg(request, "after"), "after"),
        before=store.parse_time(_arg(request, "before"), "before"),
        cursor=_arg(request, "cursor"),
        limit=int_arg(request, "perPage", PAGE_SIZE),
    )
    f.validate()
    return f


async def tasks(request: Request) -> Response:
    habitat = habitat_of(request)
    try:
        search = _arg(request, "q")
        if search:
            found = await _search(habitat, search)
            if found is None:
                return bad_request(request, f"No task or run with id {search!r}", status=404)
            queue, task_id = found
            return RedirectResponse(_link(request, f"/tasks/{task_id}", queue=queue), 303)
        f = _run_filter(request)
        page, names = await habitat.run(store.run_page_across, habitat.queues, f)
    except BadInput as exc:
        return bad_request(request, str(exc))
    return render(
        request,
        "tasks.html",
        runs=page.items,
        filters=f,
        queue_names=names,
        states=store.STATES,
        **_page_links(request, "/tasks", store.format_cursor(page.next_key), bool(f.cursor)),
        windowed=page.windowed,
        window=store.SCAN_WINDOW,
        name_exact=f.task_name is not None and not page.windowed,
        name_cap=store.NAME_EXACT_CAP,
        request_after=_arg(request, "after"),
        request_before=_arg(request, "before"),
    )


async def _search(habitat: Habitat, text: str) -> tuple[str, uuid.UUID] | None:
    some_id = store.parse_uuid(text, "search")

    def find(conn: Conn) -> tuple[str, uuid.UUID] | None:
        return store.find_task(conn, habitat.queues.names(conn), some_id, some_id)

    return await habitat.run(find)


def timeline(runs: list[Row], now: dt.datetime) -> list[Row]:
    """Bars for the attempts chart: offsets and widths in per mille of the time span."""
    spans = []
    for run in runs:
        start = run["started_at"] or run["created_at"]
        end = (
            run["completed_at"] or run["failed_at"] or (now if run["state"] == "running" else start)
        )
        spans.append((run, start, max(end, start)))
    if not spans:
        return []
    lo = min(s for _, s, _ in spans)
    hi = max(e for _, _, e in spans)
    total = max((hi - lo).total_seconds(), 0.001)
    bars = []
    for i, (run, start, end) in enumerate(spans):
        x = (start - lo).total_seconds() / total * 1000
        width = max((end - start).total_seconds() / total * 1000, 4)
        bars.append(
            {
                "y": i * 26 + 4,
                "x": round(min(x, 996), 1),
                "width": round(min(width, 1000 - x), 1),
                "run": run,
                "seconds": (end - start).total_seconds(),
            }
        )
    return bars


async def task_detail(request: Request) -> Response:
    habitat = habitat_of(request)
    try:
        task_id = store.parse_uuid(request.path_params["task_id"], "task id")
        assert task_id is not None
        queue = _arg(request, "queue")

        def load(conn: Conn) -> tuple[Row | None, dt.datetime]:
            q = queue
            if q is None:
                found = store.find_task(conn, habitat.queues.names(conn), task_id, None)
                if found is None:
                    return None, store.now(conn)
                q = found[0]
            else:
                habitat.queues.require(conn, q)
            task = store.task_detail(conn, q, task_id)
            if task is not None:
                task["explanation"] = flow.explain(conn, q, task_id)
            return task, store.now(conn)

        task, at = await habitat.run(load)
    except BadInput as exc:
        return bad_request(request, str(exc))
    if task is None:
        return bad_request(request, f"Task {task_id} not found", status=404)
    return render(
        request,
        "task.html",
        task=task,
        bars=timeline(task["runs"], at),
        now=at,
        stream_list_cap=store.STREAM_LIST_CAP,
        stream_chunk_cap=store.STREAM_CHUNK_CAP,
    )


async def events(request: Request) -> Response:
    habitat = habitat_of(request)
    try:
        queue = _arg(request, "queue")
        name = _arg(request, "event_name") or _arg(request, "eventName")
        after = store.parse_time(_arg(request, "after"), "after")
        before = store.parse_time(_arg(request, "before"), "before")
        cursor = _arg(request, "cursor")

        def load(conn: Conn) -> tuple[store.Page, list[str]]:
            names = habitat.queues.names(conn)
            queues = [habitat.queues.require(conn, queue)] if queue else names
            pages = []
            for q in queues:
                page = store.event_page(
                    conn, q, name_prefix=name, after=after, before=before, cursor=cursor
                )
                for item in page.items:
                    item["queue_name"] = q
                pages.append(page)
            return store.merge_pages(pages, 50, store.event_key), names

        page, names = await habitat.run(load)
    except BadInput as exc:
        return bad_request(request, str(exc))
    return render(
        request,
        "events.html",
        events=page.items,
        queue_names=names,
        queue=queue,
        event_name=name,
        after=_arg(request, "after"),
        before=_arg(request, "before"),
        **_page_links(request, "/events", store.format_cursor(page.next_key), bool(cursor)),
    )


def _queues(conn: Conn, habitat: Habitat) -> list[Row]:
    return store.queues_with_metrics(conn, habitat.queues)[1]


async def queues(request: Request) -> Response:
    habitat = habitat_of(request)
    return render(request, "queues.html", queues=await habitat.run(_queues, habitat))


async def queue_detail(request: Request) -> Response:
    """One queue: its counts and policy, and its flow control (keys, limits, forms)."""
    habitat = habitat_of(request)
    name = request.path_params["queue"]

    def load(conn: Conn) -> tuple[Row, Row]:
        habitat.queues.require(conn, name)
        row = next(q for q in habitat.queues.get(conn) if q["queue_name"] == name)
        metrics = store.queue_metrics(conn, name, store.now(conn))
        return {**row, **metrics}, flow.queue_flow(conn, name)

    try:
        queue, flows = await habitat.run(load)
    except BadInput as exc:
        return bad_request(request, str(exc), status=404)
    return render(request, "queue.html", queue=queue, flow=flows)


#: Claims listed per queue on the Workers page (soonest-expiring first).
WORKER_CLAIMS = 200


def _workers(conn: Conn, habitat: Habitat) -> tuple[dt.datetime, list[Row]]:
    at = store.now(conn)
    claims: list[Row] = []
    for queue in habitat.queues.names(conn):
        for claim in store.worker_claims(conn, queue, WORKER_CLAIMS):
            claim["queue_name"] = queue
            claims.append(claim)
    workers: dict[str, list[Row]] = {}
    for claim in claims:
        workers.setdefault(claim["claimed_by"] or "?", []).append(claim)
    grouped = [
        {"worker": w, "claims": c, "queues": sorted({x["queue_name"] for x in c})}
        for w, c in sorted(workers.items())
    ]
    return at, grouped


async def workers(request: Request) -> Response:
    habitat = habitat_of(request)
    at, grouped = await habitat.run(_workers, habitat)
    return render(request, "workers.html", workers=grouped, now=at, cap=WORKER_CLAIMS)


# -- schedules --------------------------------------------------------------------


def schedule_path(queue: str, name: str) -> str:
    """The schedule's page: both parts percent-encoded, slashes included."""
    return f"/schedules/{quote(queue, safe='')}/{quote(name, safe='')}"


def schedule_key(request: Request) -> tuple[str, str]:
    """(queue, schedule name) of /schedules/{queue}/{name} (and /api/schedules/...).

    Read from the raw path: the first segment after the route's prefix is the queue,
    the rest the name, each percent-decoded once, so an encoded slash stays inside its
    part and a slash typed by hand belongs to the name.
    """
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        text = raw.decode("latin-1")
        at = text.find("/schedules/", len(root(request)))
        rest = text[at + len("/schedules/") :].split("/", 1) if at >= 0 else []
        if len(rest) == 2:
            return unquote(rest[0], errors="strict"), unquote(rest[1], errors="strict")
    return request.path_params["queue"], request.path_params["name"]


async def schedules(request: Request) -> Response:
    habitat = habitat_of(request)
    queue = _arg(request, "queue")
    cursor = _arg(request, "cursor")
    try:

        def load(conn: Conn) -> tuple[list[Row], tuple[str, str] | None, list[str]]:
            found, key = store.schedule_page(conn, habitat.queues, queue, cursor)
            return found, key, habitat.queues.names(conn)

        found, key, names = await habitat.run(load)
    except BadInput as exc:
        return bad_request(request, str(exc))
    return render(
        request,
        "schedules.html",
        schedules=found,
        queue=queue,
        queue_names=names,
        **_page_links(request, "/schedules", store.format_schedule_cursor(key), bool(cursor)),
    )


async def schedule_detail(request: Request) -> Response:
    habitat = habitat_of(request)
    try:
        queue, name = schedule_key(request)

        def load(conn: Conn) -> tuple[Row | None, dt.datetime]:
            habitat.queues.require(conn, queue)
            return store.schedule_detail(conn, queue, name), store.now(conn)

        schedule, at = await habitat.run(load)
    except (BadInput, UnicodeDecodeError) as exc:
        return bad_request(request, str(exc))
    if schedule is None:
        message = f"Schedule {name!r} not found in queue {queue!r}"
        return bad_request(request, message, 404, code="AB021")
    return render(request, "schedule.html", s=schedule, now=at, fire_cap=store.FIRE_CAP)


# -- login ----------------------------------------------------------------------------


async def login_form(request: Request) -> Response:
    return render(request, "login.html", next=_arg(request, "next") or "/")


def _safe_next(value: str | None) -> str:
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


async def login(request: Request) -> Response:
    habitat = habitat_of(request)
    form = await request.form()
    if not _csrf_ok(request, form):
        return bad_request(request, "The form expired (CSRF check failed); reload and retry.", 403)
    if not habitat.auth.writable:
        return bad_request(request, "Habitat is read-only: no credential is configured.", 403)
    token = str(form.get("token") or "")
    user, password = str(form.get("username") or ""), str(form.get("password") or "")
    if not (
        (token and habitat.auth.check_token(token))
        or (user and habitat.auth.check_basic(user, password))
    ):
        return render(request, "login.html", status=401, next=form.get("next"), failed=True)
    target = root(request) + _safe_next(str(form.get("next") or "/"))
    response = RedirectResponse(target, 303)
    response.set_cookie(
        SESSION_COOKIE,
        habitat.auth.new_session(),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=root(request) or "/",
    )
    return response


async def logout(request: Request) -> Response:
    form = await request.form()
    if not _csrf_ok(request, form):
        return bad_request(request, "The form expired (CSRF check failed); reload and retry.", 403)
    response = RedirectResponse(root(request) + "/", 303)
    response.delete_cookie(SESSION_COOKIE, path=root(request) or "/")
    return response


# -- actions --------------------------------------------------------------------------


def _csrf_ok(request: Request, form: FormData) -> bool:
    submitted = form.get("csrf")
    return habitat_of(request).auth.check_csrf(
        request.cookies.get(CSRF_COOKIE), submitted if isinstance(submitted, str) else None
    )


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value.strip() else None


async def action(request: Request) -> Response:
    """POST /actions/{name}: retry, cancel, emit, spawn, the schedule and promise actions
    (CSRF-checked, credential needed)."""
    habitat = habitat_of(request)
    form = await request.form()
    if not habitat.auth.writable:
        return bad_request(request, "Habitat is read-only: no credential is configured.", 403)
    if not _csrf_ok(request, form):
        return bad_request(request, "The form expired (CSRF check failed); reload and retry.", 403)
    if not is_writer(request):
        return bad_request(request, "Log in to change anything.", 401)
    name = request.path_params["name"]
    try:
        known = ("retry", "cancel", "emit", "spawn", *SCHEDULE_ACTIONS, *PROMISE_ACTIONS)
        if name not in known and name not in flow.FLOW_ACTIONS:
            raise BadInput(f"unknown action {name!r}")
        queue = _field(form, "queue")

        def apply(conn: Conn) -> tuple[str, dict[str, Any]]:
            q = habitat.queues.require(conn, queue)
            if name in SCHEDULE_ACTIONS:
                return _schedule_action(conn, name, q, form)
            if name in PROMISE_ACTIONS:
                return _promise_action(conn, name, q, form)
            if name in flow.FLOW_ACTIONS:
                return flow.apply(conn, name, q, form)
            if name in ("retry", "cancel"):
                task_id = actions.require_uuid(_field(form, "task_id"), "task id")
                if name == "cancel":
                    actions.cancel(conn, q, task_id)
                    return f"/tasks/{task_id}", {"queue": q, "msg": "cancelled"}
                spawn_new = _field(form, "mode") == "new"
                row = actions.retry(
                    conn,
                    q,
                    task_id,
                    spawn_new=spawn_new,
                    max_attempts=actions.optional_int(_field(form, "max_attempts"), "max attempts")
                    if spawn_new
                    else None,
                    extra_attempts=None
                    if spawn_new
                    else actions.optional_int(_field(form, "extra_attempts"), "extra attempts"),
                )
                code = "retried-new" if spawn_new else "retried"
                return f"/tasks/{row['task_id']}", {"queue": q, "msg": code}
            if name == "emit":
                event = actions.require_text(_field(form, "event_name"), "event name")
                payload = actions.parse_json(_field(form, "payload"), "payload")
                actions.emit(conn, q, event, payload)
                return "/events", {"queue": q, "msg": "emitted"}
            task_name = actions.require_text(_field(form, "task_name"), "task name")
            params = actions.parse_json(_field(form, "params"), "params")
            headers = actions.parse_json(_field(form, "headers"), "headers", object_only=True)
            max_attempts = actions.optional_int(_field(form, "max_attempts"), "max attempts")
            row = actions.spawn(
                conn, q, task_name, params, headers=headers, max_attempts=max_attempts
            )
            return f"/tasks/{row['task_id']}", {"queue": q, "msg": "spawned"}

        path, params = await habitat.run(apply)
    except BadInput as exc:
        return bad_request(request, str(exc), code=exc.code)
    return RedirectResponse(_link(request, path, **params), 303)


def _schedule_action(
    conn: Conn, name: str, queue: str, form: FormData
) -> tuple[str, dict[str, Any]]:
    """pause (with an optional note), resume or trigger; back to the schedule's page."""
    schedule = actions.require_text(_field(form, "schedule"), "schedule name")
    if name == "pause":
        actions.pause_schedule(conn, queue, schedule, _field(form, "note"))
    elif name == "resume":
        actions.resume_schedule(conn, queue, schedule)
    else:
        actions.trigger_schedule(conn, queue, schedule)
    return schedule_path(queue, schedule), {"msg": SCHEDULE_ACTIONS[name]}


def _promise_action(
    conn: Conn, name: str, queue: str, form: FormData
) -> tuple[str, dict[str, Any]]:
    """resolve (a JSON value) or reject (a JSON error); back to the task's page."""
    task_id = actions.require_uuid(_field(form, "task_id"), "task id")
    promise_id = actions.require_uuid(_field(form, "promise_id"), "promise id")
    what = "error" if name == "reject" else "payload"
    text = _field(form, "payload")
    if text is None:
        raise BadInput(f"a JSON {what} is required")
    payload = actions.parse_json(text, what)
    row = actions.settle_promise(conn, queue, promise_id, payload, reject=name == "reject")
    code = {"applied": PROMISE_ACTIONS[name], "duplicate": "promise-duplicate"}
    return f"/tasks/{task_id}", {
        "queue": queue,
        "msg": code.get(row["outcome"], "promise-not-applied"),
    }
