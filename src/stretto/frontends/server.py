"""``stretto serve``: the run API over HTTP, for CI jobs, chat bots and other machines.

A starlette app behind one guard (:class:`stretto.frontends.http_guard.BearerAndHost`: bearer
token, Host and Origin). Every endpoint is a few lines around one :mod:`stretto.api` call, run in
a worker thread so the event loop never blocks on a journal read. Runs started here are detached
(they outlive the server), and the server finds every run of the repository, whoever started
it. Resources, in the OpenAPI document at ``/openapi.json``:

    GET  /runs                           every run's status
    POST /runs                           start a run: {"plan": PATH or YAML} or {"goal": TEXT}
    GET  /runs/{run}                     its status
    GET  /runs/{run}/events              its records: JSON, or Server-Sent Events (resumable)
    POST /runs/{run}/control             {"action": cancel|retry|pause|unpause|budget|parallelism}
    POST /runs/{run}/tasks               add tasks: {"steps": YAML of one plan step or a list}
    GET  /runs/{run}/tasks/{task}        one task's status
    GET  /runs/{run}/tasks/{task}/log    its attempt's agent and gate logs (text)
    GET  /runs/{run}/tasks/{task}/diff   the change it made (text)
    GET  /runs/{run}/report              the HTML report; /trace: Chrome trace events
    GET  /metrics                        Prometheus metrics
    GET  /                               the live dashboard (the page asks for the token)

Errors are JSON ``{"error": class, "message": ..., "diagnostics": [...]}``: 404 unknown run or
task, 422 invalid plan (file, line, field, fix), 409 a command the run cannot take now, 400
other bad input.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from stretto import __version__, api
from stretto.errors import (
    ControlError,
    InputError,
    StrettoError,
    UnknownRunError,
    UsageError,
)
from stretto.frontends.http_guard import ASGI, BearerAndHost

Handler = Callable[[Request], Any]
MAX_EVENTS = 1000  # records per JSON page of /events


def _error(error: StrettoError) -> JSONResponse:
    status = 400
    if isinstance(error, UnknownRunError):
        status = 404
    elif isinstance(error, InputError):
        status = 422
    elif isinstance(error, ControlError):
        status = 409
    body: dict[str, Any] = {"error": type(error).__name__, "message": error.message}
    if isinstance(error, InputError):
        body["diagnostics"] = [d.to_dict() for d in error.diagnostics]
    return JSONResponse(api.redact_secrets(body), status_code=status)


class NoSuchTask(UsageError):
    """A task that the run does not have (404)."""


def build_app(repo: Path, token: str, hosts: list[str] | None) -> ASGI:
    """The app for ``repo``: ``hosts`` are the Host values it answers (None: any)."""

    handles: dict[str, api.RunHandle] = {}  # an id (or prefix) as asked -> its run
    hubs: dict[str, Hub] = {}  # run id -> the one reader of its journal for SSE followers

    def handle(run_id: str) -> api.RunHandle:
        found = handles.get(run_id)
        if found is None:  # opening a run runs git; a server answers the same ids often
            found = api.open_run(repo, run_id)
            if found.run_id == run_id:  # a prefix may name another run once more runs exist
                handles[run_id] = found
        return found

    def hub(found: api.RunHandle) -> Hub:
        live = hubs.get(found.run_id)
        if live is None or live.done:
            live = hubs[found.run_id] = Hub(found)
        return live

    def endpoint(func: Callable[..., Awaitable[Response]]) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await func(request, **request.path_params)
            except NoSuchTask as error:
                return JSONResponse(
                    {"error": "UnknownTask", "message": error.message}, status_code=404
                )
            except StrettoError as error:
                return _error(error)

        return wrapped

    async def runs(request: Request) -> Response:
        states = await run_in_threadpool(api.list_runs, repo)
        return JSONResponse([s.to_dict() for s in states])

    async def start(request: Request) -> Response:
        body = await _json(request)
        options = api.RunOptions(
            max_agents=_number(body, "max_agents", int),
            budget=_number(body, "budget", float),
            target=_text(body, "target"),
            offline=_flag(body, "offline"),
        )
        plan, goal = _text(body, "plan"), _text(body, "goal")
        if (plan is None) == (goal is None):
            raise UsageError("give 'plan' (a path in the repository, or plan YAML) or 'goal'")

        def begin() -> api.RunHandle:
            what: Any = api.Goal(goal) if goal is not None else plan
            if plan is not None and "\n" in plan:
                what = api.save_plan_text(repo, plan)  # validated first: 422 with its lines
            elif plan is not None and not Path(plan).is_absolute():
                what = repo / plan
            return api.start_run(repo, what, options, detach=True)

        started = await run_in_threadpool(begin)
        return JSONResponse(
            {"run_id": started.run_id, "pid": started.pid, "url": f"/runs/{started.run_id}"},
            status_code=201,
        )

    made: dict[str, tuple[tuple[int, bool], bytes]] = {}  # run id -> (version, its status)

    def status_body(run_id: str) -> bytes:
        found = handle(run_id)
        version = found.version()  # what is new in the journal, folded; no status built
        kept = made.get(found.run_id)
        if kept is not None and kept[0] == version:
            return kept[1]  # nothing happened since: the same answer, encoded once
        state = found.status()
        body = json.dumps(state.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()
        made[found.run_id] = ((state.last_seq, state.live), body)
        return body

    async def status(request: Request, run_id: str) -> Response:
        if run_id in made:  # folded before: only what is new is read (a stat, a small read)
            body = status_body(run_id)
        else:  # the first fold reads the whole journal: not on the event loop
            body = await run_in_threadpool(status_body, run_id)
        return Response(body, media_type="application/json")

    def known(run_id: str, task: str) -> tuple[api.RunHandle, Any]:
        found = handle(run_id)
        state = found.status()
        if task not in state.tasks:
            raise NoSuchTask(f"no task '{task}' in run {state.run_id}")
        return found, state.tasks[task]

    async def task(request: Request, run_id: str, task: str) -> Response:
        _, info = await run_in_threadpool(known, run_id, task)
        return JSONResponse(dict(info.__dict__))

    async def log(request: Request, run_id: str, task: str) -> Response:
        attempt = request.query_params.get("attempt")
        if attempt is not None and not attempt.isdigit():
            raise UsageError(f"attempt must be a whole number, not {attempt!r}")
        found, _ = await run_in_threadpool(known, run_id, task)
        _, text = await run_in_threadpool(
            lambda: api.task_log(
                repo, task, run_id=found.run_id, attempt=int(attempt) if attempt else None
            )
        )
        return PlainTextResponse(api.redact_secrets(text))

    async def diff(request: Request, run_id: str, task: str) -> Response:
        found, _ = await run_in_threadpool(known, run_id, task)
        text = await run_in_threadpool(api.task_diff, found, task)
        return PlainTextResponse(api.redact_secrets(text))

    async def control(request: Request, run_id: str) -> Response:
        body = await _json(request)
        action = _text(body, "action")
        if action is None:
            raise UsageError("'action' is needed: cancel, retry, pause, unpause, budget, ...")
        value = _number(body, "value", float)
        found = handle(run_id)
        result = await api.AsyncRunHandle(found).command(
            action, task=_text(body, "task"), value=value, source="http"
        )
        return JSONResponse(result.to_dict())

    async def add(request: Request, run_id: str) -> Response:
        body = await _json(request)
        steps = _text(body, "steps")
        if steps is None:
            raise UsageError("'steps' is needed: YAML of one plan step, or a list of steps")
        name = _text(body, "file") or "<steps>"
        result = await api.AsyncRunHandle(handle(run_id)).add_tasks(steps, file=name, source="http")
        return JSONResponse(result.to_dict(), status_code=201 if result.ok else 202)

    async def events(request: Request, run_id: str) -> Response:
        found = handle(run_id)
        after = _after(request)
        if "text/event-stream" not in request.headers.get("accept", ""):
            records = await run_in_threadpool(
                lambda: list(found.events(after, follow=False))[:MAX_EVENTS]
            )
            next_seq = records[-1].seq if records else after
            body = {"events": [r.to_dict() for r in records], "next_seq": next_seq}
            return JSONResponse(api.redact_secrets(body))
        return StreamingResponse(
            hub(found).follow(after),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def report(request: Request, run_id: str) -> Response:
        from stretto.frontends.report_html import render_report

        data = await run_in_threadpool(lambda: api.run_report(handle(run_id)))
        return Response(render_report(data), media_type="text/html; charset=utf-8")

    async def trace(request: Request, run_id: str) -> Response:
        from stretto.frontends.trace import trace_events

        data = await run_in_threadpool(lambda: api.run_report(handle(run_id)))
        return JSONResponse(trace_events(data))

    async def metrics(request: Request) -> Response:
        states = await run_in_threadpool(api.list_runs, repo)
        return PlainTextResponse(_metrics(states), media_type="text/plain; version=0.0.4")

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def dashboard(request: Request) -> Response:
        page = resources.files("stretto.frontends").joinpath("dashboard.html").read_text()
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"cache-control": "no-store"})  # fmt: skip

    routes = [
        Route("/runs", endpoint(runs), methods=["GET"]),
        Route("/runs", endpoint(start), methods=["POST"]),
        Route("/runs/{run_id}", endpoint(status), methods=["GET"]),
        Route("/runs/{run_id}/events", endpoint(events), methods=["GET"]),
        Route("/runs/{run_id}/control", endpoint(control), methods=["POST"]),
        Route("/runs/{run_id}/tasks", endpoint(add), methods=["POST"]),
        Route("/runs/{run_id}/tasks/{task}", endpoint(task), methods=["GET"]),
        Route("/runs/{run_id}/tasks/{task}/log", endpoint(log), methods=["GET"]),
        Route("/runs/{run_id}/tasks/{task}/diff", endpoint(diff), methods=["GET"]),
        Route("/runs/{run_id}/report", endpoint(report), methods=["GET"]),
        Route("/runs/{run_id}/trace", endpoint(trace), methods=["GET"]),
        Route("/metrics", endpoint(metrics), methods=["GET"]),
        Route("/openapi.json", endpoint(openapi), methods=["GET"]),
        Route("/", endpoint(dashboard), methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    hint = b"`stretto serve` prints where the token is"
    return BearerAndHost(app, token, hosts, hint=hint, public=["/"])


class Hub:
    """The one reader of a run's journal for all its SSE followers: each record is read, redacted
    and encoded once, kept (so a follower can start after any seq) and handed to every
    follower's queue, a batch at a time (the records of one read go out in one write). It ends
    when the run ends."""

    def __init__(self, found: api.RunHandle) -> None:
        import asyncio

        self.found = found
        self.frames: list[bytes] = []  # frames[i] is the record with seq i + 1
        self.queues: set[asyncio.Queue[list[tuple[int, bytes]] | None]] = set()
        self.done = False
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        secrets = await run_in_threadpool(api.secret_values)
        try:
            async for batch in api.AsyncRunHandle(self.found).batches(0):
                out = []
                for record in batch:
                    data = json.dumps(api.redact_secrets(record.to_dict(), secrets))
                    frame = f"id: {record.seq}\nevent: {record.type}\ndata: {data}\n\n"
                    out.append((record.seq, frame.encode()))
                self.frames.extend(frame for _, frame in out)
                for queue in self.queues:
                    queue.put_nowait(out)
        except StrettoError:  # a damaged journal: followers get the end; status says why
            pass
        finally:
            self.done = True
            for queue in self.queues:
                queue.put_nowait(None)

    async def follow(self, after: int) -> AsyncIterator[bytes]:
        """Every record after seq ``after`` as an SSE frame, then an ``end`` event."""
        import asyncio

        queue: asyncio.Queue[list[tuple[int, bytes]] | None] = asyncio.Queue()
        backlog = self.frames[after:]  # taken and subscribed with no await between: no gap
        self.queues.add(queue)
        try:
            if self.done:
                queue.put_nowait(None)
            if backlog:
                yield b"".join(backlog)
            while (batch := await queue.get()) is not None:
                # the hub may not have read up to ``after`` yet: skip what was asked past
                chunk = b"".join(frame for seq, frame in batch if seq > after)
                if chunk:
                    yield chunk
            yield b"event: end\ndata: {}\n\n"
        finally:
            self.queues.discard(queue)


def _after(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    try:
        after = int(raw)
    except ValueError:
        raise UsageError(f"Last-Event-ID / after must be a record's seq, not {raw!r}") from None
    if after < 0:
        raise UsageError("Last-Event-ID / after must be >= 0")
    return after


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise UsageError("the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise UsageError("the request body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise UsageError(f"'{key}' must be a non-empty string")
    return value


def _flag(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"'{key}' must be true or false")
    return value


def _number(body: dict[str, Any], key: str, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UsageError(f"'{key}' must be a non-negative number")
    if kind is int and (value != int(value) or value < 1):
        raise UsageError(f"'{key}' must be a whole number >= 1")
    return kind(value)


def _metrics(states: list[Any]) -> str:
    """Prometheus text: runs by state, tasks by state, attempts, spend."""
    runs: dict[str, int] = {}
    tasks: dict[str, int] = {}
    attempts, spend, live = 0, 0.0, 0
    for state in states:
        runs[state.state] = runs.get(state.state, 0) + 1
        live += bool(state.live)
        spend += state.cost_usd
        for name, count in state.counts().items():
            tasks[name] = tasks.get(name, 0) + count
        attempts += sum(t.attempts for t in state.tasks.values())
    lines = [
        "# HELP stretto_runs Runs of this repository by state.",
        "# TYPE stretto_runs gauge",
        *(f'stretto_runs{{state="{k}"}} {v}' for k, v in sorted(runs.items())),
        "# HELP stretto_runs_live Runs an engine drives now.",
        "# TYPE stretto_runs_live gauge",
        f"stretto_runs_live {live}",
        "# HELP stretto_tasks Tasks of every run by state.",
        "# TYPE stretto_tasks gauge",
        *(f'stretto_tasks{{state="{k}"}} {v}' for k, v in sorted(tasks.items())),
        "# HELP stretto_attempts_total Attempts started, every run.",
        "# TYPE stretto_attempts_total counter",
        f"stretto_attempts_total {attempts}",
        "# HELP stretto_spend_usd_total Spend of every run in USD.",
        "# TYPE stretto_spend_usd_total counter",
        f"stretto_spend_usd_total {spend:.6f}",
    ]
    return "\n".join(lines) + "\n"


def _op(summary: str, *, body: bool = False, params: tuple[str, ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "OK"}}}
    if params:
        op["parameters"] = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in params
        ]
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return op


_RUN = ("run_id",)
_TASK = ("run_id", "task")
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "stretto task server", "version": __version__},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/runs": {
            "get": _op("Every run of the repository, oldest first"),
            "post": _op("Start a detached run of a plan (path or YAML) or a goal", body=True),
        },
        "/runs/{run_id}": {"get": _op("A run's status", params=_RUN)},
        "/runs/{run_id}/events": {
            "get": _op("Records after ?after= or Last-Event-ID; SSE with Accept", params=_RUN)
        },
        "/runs/{run_id}/control": {
            "post": _op("Steer the run (cancel, retry, pause...)", body=True, params=_RUN)
        },
        "/runs/{run_id}/tasks": {
            "post": _op("Add tasks: {steps: YAML of plan steps}", body=True, params=_RUN)
        },
        "/runs/{run_id}/tasks/{task}": {"get": _op("A task's status", params=_TASK)},
        "/runs/{run_id}/tasks/{task}/log": {"get": _op("A task's logs", params=_TASK)},
        "/runs/{run_id}/tasks/{task}/diff": {"get": _op("A task's change", params=_TASK)},
        "/runs/{run_id}/report": {"get": _op("The run's HTML report", params=_RUN)},
        "/runs/{run_id}/trace": {"get": _op("The run as Chrome trace events", params=_RUN)},
        "/metrics": {"get": _op("Prometheus metrics")},
    },
}


def serve(repo: Path, *, port: int, token: str, allow_remote: bool = False) -> None:
    """Serve until the process is stopped: 127.0.0.1 only, unless ``allow_remote``."""
    import uvicorn

    hosts = None if allow_remote else [f"127.0.0.1:{port}", f"localhost:{port}"]
    host = "0.0.0.0" if allow_remote else "127.0.0.1"
    uvicorn.run(build_app(repo, token, hosts), host=host, port=port, log_level="warning")
