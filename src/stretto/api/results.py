"""What frontends show about a run besides its status: its result, a task's diff, a plan check,
and waiting until a run ends or needs the person.

Shared by the MCP server, the HTTP task server and the terminal UI, so each stays a thin adapter.
Values are plain dataclasses with ``to_dict()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stretto.api.runs import RunHandle
from stretto.engine.events import EventReader
from stretto.engine.journal import Record
from stretto.engine.outcomes import log_tail
from stretto.engine.status import RunStatus
from stretto.errors import InputError, RunError, UsageError

#: How much of a failing task's logs a result carries.
TAIL = 1500


@dataclass
class TaskResult:
    """One task at the end (or so far)."""

    id: str
    state: str
    attempts: int
    agent: str | None = None
    commit: str | None = None
    reason: str = ""
    cost_usd: float = 0.0
    log_tail: str = ""


@dataclass
class RunResult:
    """What a run achieved: landed work with commits, failures with reasons and log tails."""

    run_id: str
    state: str
    over: bool
    target: str
    head: str | None
    landed: list[TaskResult] = field(default_factory=list)
    failed: list[TaskResult] = field(default_factory=list)
    other: list[TaskResult] = field(default_factory=list)
    cost_usd: float = 0.0
    wall_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    next_step: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        return asdict(self)


def run_result(handle: RunHandle) -> RunResult:
    """The run's result so far, from its journal (and its attempts' logs for failures)."""
    status = handle.status()
    wall = None
    if status.finished is not None:
        wall = round(status.finished - status.started, 3)
    result = RunResult(
        status.run_id,
        status.state,
        status.over,
        status.target,
        status.head,
        cost_usd=round(status.cost_usd, 6),
        wall_seconds=wall,
        notes=list(status.notes),
        next_step=_next_step(status),
    )
    for task in status.tasks.values():
        item = TaskResult(
            task.id,
            task.state,
            task.attempts,
            task.agent,
            task.commit,
            task.reason,
            round(task.cost_usd, 6),
        )
        if task.state == "landed":
            result.landed.append(item)
        elif task.state in ("failed", "cancelled"):
            item.log_tail = _tail(handle.run_dir, task.id, task.attempts)
            result.failed.append(item)
        else:
            result.other.append(item)
    return result


def _tail(run_dir: Path, task: str, attempt: int) -> str:
    folder = run_dir / "tasks" / task / str(attempt)
    parts = [log_tail(folder / "agent.log", TAIL)]
    for gate in sorted((folder / "gates").glob("*.log")):
        parts.append(f"--- gate {gate.stem} ---\n{log_tail(gate, TAIL)}")
    return "\n".join(p for p in parts if p.strip())[-TAIL * 2 :]


def _next_step(status: RunStatus) -> str:
    rid = status.run_id
    if status.state == "finished":
        return "nothing: every task landed"
    if status.resumable:
        return f"`stretto resume {rid}` goes on with it"
    if status.state == "failed":
        return f"`stretto log TASK --run {rid}` shows why a task failed; fix and run again"
    if status.state == "paused":
        return f"`stretto unpause {rid}` lets new attempts start"
    return "wait: it is still running"


def task_diff(handle: RunHandle, task: str, *, limit: int = 200_000) -> str:
    """The change a task made: its landed merge (against the target before it), else its last
    attempt's branch or worktree against the attempt's base."""
    from stretto.git import run_git

    status = handle.status()
    if task not in status.tasks:
        known = ", ".join(status.tasks)
        raise UsageError(f"no task '{task}' in run {status.run_id}; its tasks: {known}")
    info = status.tasks[task]
    repo = handle.repo
    if info.commit:
        out = run_git(["diff", f"{info.commit}^1", info.commit], repo, check=False).stdout
        return _cut(out, limit)
    started = _last_attempt(handle.records(), task)
    if started is None:
        raise RunError(f"task '{task}' has not started in run {status.run_id}: no diff yet")
    base, branch = str(started.fields["base"]), str(started.fields["branch"])
    workspace = Path(str(started.fields["workspace"]))
    if workspace.is_dir():  # still being worked on: what is in its worktree now
        out = run_git(["diff", base], workspace, check=False).stdout
    else:
        out = run_git(["diff", base, branch], repo, check=False).stdout
    return _cut(out, limit)


def _last_attempt(records: Sequence[Record], task: str) -> Record | None:
    found = None
    for record in records:
        if record.type == "attempt_started" and record.fields.get("task") == task:
            found = record
    return found


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n... ({len(text) - limit} more characters)\n"


@dataclass
class PlanCheck:
    """A plan checked without running it: its problems, or its schedule and cost."""

    ok: bool
    problems: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    schedule: dict[str, Any] = field(default_factory=dict)
    schedule_text: str = ""
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        return asdict(self)


def save_plan_text(repo: Path | str, text: str) -> Path:
    """Validate plan YAML given as text, then keep it in ``.stretto/plans/`` (0600) so a run can
    be made of it. Raises PlanError (file ``plan.yaml``, line, column, fix) if it is invalid."""

    from stretto.engine.runs import new_run_id
    from stretto.files import private_dir, write_atomic
    from stretto.plans.plan import parse_plan
    from stretto.project.scaffold import state_dir

    parse_plan(text, "plan.yaml")  # located errors name the text's own lines
    folder = private_dir(state_dir(Path(repo)) / "plans")
    path = folder / f"{new_run_id()}.yaml"
    write_atomic(path, text.encode(), mode=0o600)
    return path


def check_plan(repo: Path | str, plan: str, *, max_agents: int | None = None) -> PlanCheck:
    """A plan (a path, or YAML text if it has a newline) checked: its problems, each with file,
    line and fix; or its steps, the dry run's schedule and the cost estimate."""
    from stretto.api.project import dry_run, render_dry_run

    path = Path(plan) if "\n" not in plan else None
    try:
        if path is None:
            path = save_plan_text(repo, plan)
        elif not path.is_absolute():
            path = Path(repo) / path
        report = dry_run(repo, path, max_agents=max_agents)
    except InputError as error:
        return PlanCheck(
            False, [d.to_dict() for d in error.diagnostics] or [{"message": error.message}]
        )
    return PlanCheck(
        True,
        summary=report.plan.summary(),
        schedule=report.to_dict(),
        schedule_text=render_dry_run(report),
        path=str(path),
    )


def needs_attention(record: Record) -> str | None:
    """Why ``record`` needs the person now (a task failed, the budget or a provider's credit
    ran out, an internal error), or None."""
    f = record.fields
    if record.type == "task_finished" and f.get("status") in ("failed", "cancelled"):
        return f"task {f.get('task')} {f.get('status')}: {f.get('reason')}"
    if record.type == "decision" and f.get("action") in ("stop_budget", "out_of_credit"):
        return str(f.get("reason") or f.get("action"))
    if record.type == "internal_error":
        return f"internal error in task {f.get('task')}: {f.get('error')}"
    if record.type == "run_finished":
        return f"the run ended: {f.get('status')}"
    return None


@dataclass
class WaitResult:
    """What :func:`wait_for_news` saw: the status then, the records since ``after_seq``, and why
    it returned."""

    status: RunStatus
    events: list[Record]
    reason: str  # ended | attention | timeout
    attention: list[str] = field(default_factory=list)
    next_seq: int = 0
    truncated: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        return {
            "status": self.status.to_dict(),
            "events": [r.to_dict() for r in self.events],
            "reason": self.reason,
            "attention": self.attention,
            "next_seq": self.next_seq,
            "truncated": self.truncated,
        }


async def wait_for_news(
    handle: RunHandle,
    after_seq: int = 0,
    timeout: float = 30.0,
    *,
    max_events: int = 200,
    on_tick: Callable[[float, RunStatus | None], Any] | None = None,
    poll: float = 0.05,
) -> WaitResult:
    """Wait at most ``timeout`` seconds until the run ends (or stops unfinished, its engine
    gone: ``stretto resume`` goes on) or something needs the person; return the status and the
    records after ``after_seq`` (at most ``max_events``, the newest kept; ``next_seq`` is where
    to go on). ``on_tick(elapsed, None)`` is awaited about once a second meanwhile (a frontend
    sends progress from it)."""
    import asyncio

    reader = EventReader(handle.run_dir, after_seq)
    seen: list[Record] = []
    attention: list[str] = []
    started = time.monotonic()
    last_tick = started
    reason = "timeout"
    while True:
        batch = await asyncio.to_thread(reader.read_new)
        seen.extend(batch)
        attention.extend(a for r in batch if (a := needs_attention(r)))
        if reader.finished():
            reason = "ended"
            break
        if reader.interrupted():  # its engine is gone: nothing more happens until a resume
            attention.append(
                f"the run stopped before it finished (its engine is gone): `stretto resume "
                f"{handle.run_id}` goes on with it"
            )
            reason = "ended"
            break
        if attention:
            reason = "attention"
            break
        now = time.monotonic()
        if now - started >= timeout:
            break
        if on_tick is not None and now - last_tick >= 1.0:
            last_tick = now
            await on_tick(now - started, None)
        await asyncio.sleep(poll)
    status = await asyncio.to_thread(handle.status)
    truncated = max(0, len(seen) - max_events)
    kept = seen[truncated:]
    return WaitResult(status, kept, reason, attention, reader.last_seq, truncated)


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values of this process's environment variables whose names say they are secrets (API
    keys, tokens, passwords), longest first; short values (< 8 characters) are not secrets."""
    import os

    from stretto.process import secret_values as found

    return found(os.environ if environ is None else environ)


def redact_secrets(value: Any, secrets: Sequence[str] | None = None) -> Any:
    """``value`` (text, or lists and dicts of them) with every secret of the environment
    replaced by ``***``: what a frontend shows must never carry the user's keys."""
    secrets = secret_values() if secrets is None else secrets
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, list | tuple):
        return [redact_secrets(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: redact_secrets(v, secrets) for k, v in value.items()}
    return value
