"""``stretto mcp``: an MCP server, so an IDE agent hands stretto a goal or a plan, then follows
and steers the run.

Each tool is a typed function (the SDK turns its signature into the input schema and its
return type into the output schema) around one :mod:`stretto.api` call. Runs are always started
detached: they go on when the client or this server restarts, and a new server finds them by
run id. No tool blocks longer than ``stretto_wait``'s ``timeout`` (at most 50 s, under the 60 s
most clients allow a call), and that one sends progress notifications while it waits.

The server acts on the repository it was started for and those named with ``--allow-repo``;
anything else is refused. Results never carry the values of the environment's secrets. Over
HTTP (:func:`http_app`) it binds 127.0.0.1, wants a bearer token, and checks Host and Origin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from pydantic import BaseModel, Field

from stretto import __version__, api
from stretto.errors import StrettoError
from stretto.frontends.http_guard import ASGI, BearerAndHost

MAX_WAIT = 50.0  # seconds: most MCP clients give up on a call after about 60

INSTRUCTIONS = """\
stretto runs many CLI coding agents on one repository at once, each in its own git worktree, and
lands only work that passed its gates. Typical use: stretto_plan a goal (or check a plan), then
stretto_run it: that returns a run_id at once. Then loop on stretto_wait(run_id, after_seq)
until it says the run ended, passing back the next_seq it returned; stretto_result says what
landed. stretto_cancel / stretto_retry steer a running run."""


class Started(BaseModel):
    """A run that was started (detached)."""

    run_id: str
    state: str
    repo: str
    follow: str = Field(description="what to call next")


class Waited(BaseModel):
    """What stretto_wait saw."""

    reason: str = Field(description="ended | attention | timeout")
    state: str
    over: bool
    attention: list[str]
    events: list[dict[str, Any]] = Field(description="journal records after after_seq")
    next_seq: int = Field(description="pass as after_seq to the next stretto_wait")
    truncated: int = Field(description="older records left out of events (see stretto_events)")
    status: dict[str, Any]


class Events(BaseModel):
    """Journal records of a run."""

    events: list[dict[str, Any]]
    next_seq: int


class Controlled(BaseModel):
    """What the engine did with a control command."""

    applied: bool
    ok: bool
    message: str
    seq: int
    details: dict[str, Any]


class Text(BaseModel):
    """A log or a diff."""

    text: str


class Listing(BaseModel):
    """Several items."""

    items: list[dict[str, Any]]


def _fail(error: StrettoError) -> ToolError:
    # An InputError's message is already its diagnostics (file:line:column: field: fix), one a
    # line, then the summary.
    return ToolError(error.message)


class Stretto:
    """The repositories a server may act on, and the calls its tools make."""

    def __init__(self, repo: Path, allowed: Sequence[Path] = ()) -> None:
        self.repo = repo.resolve()
        self.allowed = [self.repo, *(p.resolve() for p in allowed)]
        self._secrets: list[str] | None = None  # on the first result, not before `initialize`

    def repo_for(self, repo: str | None) -> Path:
        """The repository a call names (default: the server's), if it is allowed."""
        if not repo:
            return self.repo
        path = Path(repo).expanduser()
        path = (path if path.is_absolute() else self.repo / path).resolve()
        if not any(path == root or path.is_relative_to(root) for root in self.allowed):
            allowed = ", ".join(str(p) for p in self.allowed)
            raise ToolError(
                f"repository {path} is not one this server may act on ({allowed}); start the "
                f"server with --allow-repo {path} to allow it"
            )
        return path

    def clean(self, value: Any) -> Any:
        """``value`` without the environment's secrets."""
        if self._secrets is None:
            self._secrets = api.secret_values()
        return api.redact_secrets(value, self._secrets)

    def run(self, run_id: str, repo: str | None) -> Any:
        """The run ``run_id`` of an allowed repository."""
        return api.open_run(self.repo_for(repo), run_id)


async def call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking API call off the event loop, turning stretto's errors into tool errors."""
    try:
        return await asyncio.to_thread(func, *args, **kwargs)
    except StrettoError as error:
        raise _fail(error) from None


def build_server(repo: Path, allowed: Sequence[Path] = ()) -> MCPServer:
    """The MCP server for ``repo`` (and the ``allowed`` others)."""
    ctx = Stretto(repo, allowed)
    server = MCPServer(
        "stretto", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )

    def tool(func: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``func`` as a tool; its docstring, on one line, is the description."""
        description = " ".join((func.__doc__ or "").split())
        server.tool(description=description)(func)
        return func

    @tool
    async def stretto_plan(
        goal: str | None = None,
        plan: str | None = None,
        max_agents: int | None = None,
        repo: str | None = None,
    ) -> dict[str, Any]:
        """Show what stretto would run. With `goal`: one planning model call turns it into a
        plan (saved; pass its path to stretto_run). With `plan` (YAML text or a path): its
        validation errors with file, line and fix, or its steps, schedule and cost estimate."""
        where = ctx.repo_for(repo)
        if (goal is None) == (plan is None):
            raise ToolError("give a goal or a plan (YAML text or a path), one of them")
        if goal is not None:
            planned = await call(api.plan_goal, where, goal, max_agents=max_agents)
            check = await call(api.check_plan, where, str(planned.plan_path))
            out = {"plan_path": str(planned.plan_path), **planned.to_dict(), **check.to_dict()}
            return dict(ctx.clean(out))
        return dict(ctx.clean((await call(api.check_plan, where, plan)).to_dict()))

    @tool
    async def stretto_run(
        plan: str | None = None,
        goal: str | None = None,
        max_agents: int | None = None,
        budget: float | None = None,
        target: str | None = None,
        agent: str | None = None,
        repo: str | None = None,
        offline: bool = False,
    ) -> Started:
        """Start a run of a plan (YAML text or a path) or of a goal (planned first, with one
        model call) and return its run_id at once; the run goes on in the background, past
        restarts of this server. Options: max_agents (agents at once), budget (USD), target
        (branch), agent (for steps that name none), offline (only agents on local model
        servers; a plan naming a hosted agent is refused)."""
        where = ctx.repo_for(repo)
        if (goal is None) == (plan is None):
            raise ToolError("give a plan (YAML text or a path) or a goal, one of them")
        options = api.RunOptions(
            max_agents=max_agents, budget=budget, target=target, agent=agent, offline=offline
        )
        what: Any
        if goal is not None:
            what = api.Goal(goal)
        elif "\n" in str(plan):
            what = await call(api.save_plan_text, where, plan)
        else:
            what = where / str(plan)
        handle = await call(api.start_run, where, what, options, detach=True)
        state = (await call(handle.status)).state
        follow = f"stretto_wait(run_id={handle.run_id!r}, after_seq=0)"
        return Started(run_id=handle.run_id, state=state, repo=str(where), follow=follow)

    @tool
    async def stretto_wait(
        run_id: str, context: Context, after_seq: int = 0, timeout: float = 30.0,
        repo: str | None = None,
    ) -> Waited:  # fmt: skip
        """Wait at most `timeout` seconds (default 30, at most 50) until the run ends or needs
        attention (a task failed, the budget or a provider's credit ran out); returns its status
        and the journal records after `after_seq`. Call again with after_seq=next_seq until
        reason is 'ended' (state 'interrupted': its engine stopped, `stretto resume` goes on);
        nothing is missed between calls."""
        handle = await call(ctx.run, run_id, repo)
        limit = max(0.0, min(timeout, MAX_WAIT))

        async def tick(elapsed: float, _: object) -> None:
            await context.report_progress(elapsed, limit, f"run {run_id}: waiting")

        try:
            seen = await api.wait_for_news(handle, after_seq, limit, on_tick=tick)
        except StrettoError as error:
            raise _fail(error) from None
        data = seen.to_dict()
        return Waited(
            reason=seen.reason,
            state=seen.status.state,
            over=seen.status.over,
            attention=ctx.clean(seen.attention),
            events=ctx.clean(data["events"]),
            next_seq=seen.next_seq,
            truncated=seen.truncated,
            status=ctx.clean(data["status"]),
        )

    @tool
    async def stretto_status(run_id: str | None = None, repo: str | None = None) -> dict[str, Any]:
        """The state of a run (default: the latest): each task's state, attempts, agent,
        reason; budget, spend, whether it is paused."""
        handle = await call(api.open_run, ctx.repo_for(repo), run_id)
        return dict(ctx.clean((await call(handle.status)).to_dict()))

    @tool
    async def stretto_events(
        run_id: str, after_seq: int = 0, limit: int = 200, repo: str | None = None
    ) -> Events:
        """The run's journal records after `after_seq` (at most `limit`), oldest first."""
        handle = await call(ctx.run, run_id, repo)

        def read() -> list[dict[str, Any]]:
            records = []
            for record in handle.events(after_seq=after_seq):
                records.append(record.to_dict())
                if len(records) >= max(1, limit):
                    break
            return records

        records = await call(read)
        last = records[-1]["seq"] if records else after_seq
        return Events(events=ctx.clean(records), next_seq=last)

    @tool
    async def stretto_result(run_id: str, repo: str | None = None) -> dict[str, Any]:
        """What the run achieved: landed tasks with their commits, failed ones with reasons and
        log tails, cost, wall time, and the next step."""
        handle = await call(ctx.run, run_id, repo)
        return dict(ctx.clean((await call(api.run_result, handle)).to_dict()))

    @tool
    async def stretto_logs(
        run_id: str, task: str, attempt: int | None = None, repo: str | None = None
    ) -> Text:
        """A task's agent log and gate logs (its last attempt, or `attempt`)."""
        where = ctx.repo_for(repo)
        _, text = await call(api.task_log, where, task, run_id=run_id, attempt=attempt)
        return Text(text=ctx.clean(text)[-200_000:])  # cut after: no half secret is left

    @tool
    async def stretto_diff(run_id: str, task: str, repo: str | None = None) -> Text:
        """The change a task made: what landed, or its last attempt's work so far."""
        handle = await call(ctx.run, run_id, repo)
        return Text(text=ctx.clean(await call(api.task_diff, handle, task)))

    @tool
    async def stretto_cancel(
        run_id: str, task: str | None = None, repo: str | None = None
    ) -> Controlled:
        """Cancel the run (running agents stopped, verified work kept; `stretto resume` goes
        on), or only `task` (its dependents are skipped)."""
        handle = await call(ctx.run, run_id, repo)
        result = await call(handle.cancel, task, source="mcp")
        return _controlled(result)

    @tool
    async def stretto_retry(run_id: str, task: str, repo: str | None = None) -> Controlled:
        """Give a failed (given-up or cancelled) task of a running run another attempt now."""
        handle = await call(ctx.run, run_id, repo)
        return _controlled(await call(handle.retry, task, source="mcp"))

    @tool
    async def stretto_add(run_id: str, steps: str, repo: str | None = None) -> Controlled:
        """Add tasks to a running run: `steps` is YAML of one plan step (goal, files,
        depends_on...) or a list of steps, checked like a plan's (errors name line and field);
        `depends_on` may name the run's tasks. `details.tasks` are the new tasks' ids."""
        handle = await call(ctx.run, run_id, repo)
        result = await call(handle.add_tasks, steps, file="<steps>", source="mcp")
        return _controlled(result)

    @tool
    async def stretto_runs(repo: str | None = None) -> Listing:
        """Every run in the repository, oldest first, with its state and task counts."""
        states = await call(api.list_runs, ctx.repo_for(repo))
        items = [
            {k: v for k, v in s.to_dict().items() if k != "tasks"} for s in states
        ]  # fmt: skip
        return Listing(items=ctx.clean(items))

    @tool
    async def stretto_doctor(repo: str | None = None) -> Listing:
        """What stands in the way of running agents here (git, config, agent CLIs, gates), and
        how to fix each problem."""
        checks = await call(api.run_checks, ctx.repo_for(repo))
        return Listing(items=ctx.clean([c.to_dict() for c in checks]))

    @server.resource(
        "stretto://runs/{run_id}/summary", mime_type="application/json", name="run summary"
    )
    def run_summary(run_id: str) -> dict[str, Any]:
        try:
            return dict(ctx.clean(api.run_result(ctx.run(run_id, None)).to_dict()))
        except StrettoError as error:
            raise ResourceNotFoundError(error.message) from None

    @server.resource("stretto://runs/{run_id}/tasks/{task}/log", mime_type="text/plain")
    def task_log(run_id: str, task: str) -> str:
        try:
            _, text = api.task_log(ctx.repo, task, run_id=run_id)
        except StrettoError as error:
            raise ResourceNotFoundError(error.message) from None
        return str(ctx.clean(text))[-200_000:]

    return server


def _controlled(result: Any) -> Controlled:
    return Controlled(
        applied=result.applied,
        ok=result.ok,
        message=result.message,
        seq=result.seq,
        details=dict(result.fields),
    )


# --------------------------------------------------------------------------- HTTP


def http_app(server: MCPServer, token: str, port: int) -> ASGI:
    """The streamable HTTP app at ``/mcp``, behind :class:`BearerAndHost`."""
    from mcp.server.transport_security import TransportSecuritySettings

    hosts = [f"127.0.0.1:{port}", f"localhost:{port}"]
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=hosts,
            allowed_origins=[f"http://{h}" for h in hosts],
        ),
    )
    return BearerAndHost(app, token, hosts)


def serve(
    repo: Path,
    *,
    transport: str = "stdio",
    port: int = 8765,
    token: str | None = None,
    allowed: Sequence[Path] = (),
) -> None:
    """Serve until the client goes (stdio) or the process is stopped (HTTP)."""
    server = build_server(repo, allowed)
    if transport == "stdio":
        server.run("stdio")
        return
    import uvicorn

    if not token:
        raise ValueError("an HTTP server needs a token")
    uvicorn.run(http_app(server, token, port), host="127.0.0.1", port=port, log_level="warning")
