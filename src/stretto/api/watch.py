"""Watching a run as it goes, for a screen that redraws: what needs the person, what runs, what
waits and why, what it costs and how long is left.

A :class:`RunWatch` reads the run's journal incrementally (each record is parsed and folded
once, however long the run and however often it is asked) and answers with a
:class:`LiveSnapshot`: the header's figures and the tasks as :class:`TaskRow` values, attention
first. It also keeps what a task's detail view needs (its records, its gates, its routing and
scheduling decisions, its worktree, the latest line of its agent). ``stretto live`` draws it;
any other frontend may. Nothing here writes: steering goes through :class:`~stretto.api.RunHandle`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stretto.api.runs import RunHandle
from stretto.engine.events import EventReader
from stretto.engine.journal import Record, is_live
from stretto.engine.outcomes import log_tail
from stretto.engine.progress import RUNNING, Bar, attempt_bars, time_left, why_waiting
from stretto.engine.status import RunStatus, StatusFold
from stretto.plans.graph import TaskGraph
from stretto.plans.yamlsource import paused_gc

#: Row groups, in the order they are listed.
NEEDS_YOU, RUNNING_NOW, WAITING, OTHER, LANDED = range(5)
GROUP_NAMES = ("needs you", "running", "waiting", "done", "landed")

#: The record types :meth:`RunWatch._note` reads beyond filing them by task.
_NOTED = frozenset(
    {
        "run_started", "attempt_started", "attempt_finished", "run_finished",
        "journal_reopened", "decision", "resume_started", "task_finished",
    }
)  # fmt: skip


@dataclass(frozen=True)
class TaskRow:
    """One task as a live table shows it.

    Attributes:
        group: :data:`NEEDS_YOU`, :data:`RUNNING_NOW`, :data:`WAITING`, :data:`OTHER` or
            :data:`LANDED` (the list is sorted by it, then by plan order).
        attention: why it needs the person ("" when it does not).
        elapsed: seconds its current attempt has run (running tasks only).
        tokens: tokens its finished attempts used (in + out), None when none reported.
        detail: the agent's latest line (running), why it waits (waiting), its commit
            (landed), else its reason, as ``stretto status`` gives it.
        reason: ``stretto status``'s reason column (the reason, else ``waiting: ...``).
    """

    id: str
    state: str
    group: int
    attention: str
    agent: str | None
    model: str | None
    attempts: int
    elapsed: float | None
    tokens: int | None
    cost_usd: float
    detail: str
    reason: str
    commit: str | None
    worktree: str | None


@dataclass(frozen=True)
class LiveSnapshot:
    """The run at one moment, ready to draw."""

    status: RunStatus
    rows: list[TaskRow]
    counts: dict[str, int]  # landed, failed, running, waiting, total
    wall: float  # seconds since the run started (to its end, if over)
    left: float | None  # critical-path estimate of seconds left (None: unknown or over)
    providers: dict[str, str]  # provider -> "backing off: 2 agents (was 4)" / "out of credit: ..."
    attention: list[str] = field(default_factory=list)  # what needs the person, one line each


class RunWatch:
    """A run followed as it grows; see the module docstring.

    Args:
        handle: the run.
        clock: epoch seconds now (tests fix it for snapshots).
        log_lines: read the latest agent line of running tasks (off for benchmarks of the
            journal path alone).
    """

    def __init__(
        self, handle: RunHandle, *, clock: Callable[[], float] = time.time, log_lines: bool = True
    ) -> None:
        self.handle = handle
        self.clock = clock
        self.log_lines = log_lines
        self.reader = EventReader(handle.run_dir)
        self.fold = StatusFold()
        self.by_task: dict[str, list[Record]] = {}
        self.took: dict[str, list[float]] = {}
        self.tokens: dict[str, int] = {}
        self.workspace: dict[str, str] = {}
        self.providers: dict[str, str] = {}
        self.credit: dict[str, str] = {}  # task -> the provider out of credit it waits for
        self.undone: dict[str, str] = {}  # task -> why it was left for `stretto resume`
        self.budget_stop = ""
        self.attempt_records: list[Record] = []  # for the timeline
        self.run_started: Record | None = None
        self.graph: TaskGraph | None = None
        self._graph_tried = False
        self._live = False
        from stretto.api.results import secret_values

        self.secrets = secret_values()  # read once: a scan of the environment per line is slow
        self._lines: dict[tuple[str, int], tuple[int, str]] = {}  # (task, attempt) -> size, line

    # ------------------------------------------------------------------ reading

    def poll(self) -> list[Record]:
        """Read and fold what was written since the last call; return those records."""
        self._live = is_live(self.handle.run_dir)  # before reading: a run seen over is read whole
        with paused_gc():  # records form no cycles; a long journal read whole made many passes
            batch = self.reader.read_new()
            self.fold.feed(batch)
            for rec in batch:
                self._note(rec)
        return batch

    def _note(self, rec: Record) -> None:
        f = rec.fields
        task = f.get("task")
        if isinstance(task, str):
            self.by_task.setdefault(task, []).append(rec)
        t = rec.type
        if t not in _NOTED:  # nothing below looks at any other type (most of a journal)
            return
        if t == "run_started":
            self.run_started = rec
            self._graph_tried = False
        elif t == "attempt_started":
            self.undone.pop(str(task), None)
            self.workspace[str(task)] = str(f.get("workspace") or "")
            self.attempt_records.append(rec)
        elif t == "attempt_finished":
            self.attempt_records.append(rec)
            if isinstance(f.get("duration"), int | float):
                self.took.setdefault(str(task), []).append(float(f["duration"]))
            usage = f.get("usage") or {}
            used = sum(
                int(v) for k, v in usage.items() if k in ("input", "output") and isinstance(v, int)
            )
            if used:
                self.tokens[str(task)] = self.tokens.get(str(task), 0) + used
        elif t in ("run_finished", "journal_reopened"):
            self.attempt_records.append(rec)
        elif t == "decision":
            action = f.get("action")
            if action in ("backoff", "recover"):
                provider = str(f.get("provider"))
                if action == "backoff":
                    self.providers[provider] = (
                        f"backing off: {f.get('limit')} agent(s) (was {f.get('was')})"
                    )
                elif not self.providers.get(provider, "").startswith("out of credit"):
                    self.providers.pop(provider, None)
            elif action == "out_of_credit":
                self.providers[str(f.get("provider"))] = f"out of credit: {f.get('reason')}"
                if isinstance(task, str):
                    self.credit[task] = f"{f.get('provider')} is out of credit: {f.get('reason')}"
            elif action == "stop_budget":
                self.budget_stop = str(f.get("reason") or "budget reached")
        elif t == "resume_started":
            self.budget_stop = ""
            self.undone.clear()
        elif t == "task_finished" and (f.get("budget") or f.get("resumable")):
            self.undone[str(task)] = str(f.get("reason") or "")
        elif t == "task_finished":
            self.undone.pop(str(task), None)

    def _graph(self) -> TaskGraph | None:
        if not self._graph_tried and self.run_started is not None:
            self._graph_tried = True
            from stretto.engine.runs import saved_plan
            from stretto.errors import StrettoError

            try:
                self.graph = TaskGraph.from_plan(saved_plan(self.handle.run_dir))
            except (StrettoError, OSError, ValueError):
                self.graph = None  # no estimate of time left; everything else still works
        return self.graph

    # ------------------------------------------------------------------ answers

    def status(self) -> RunStatus:
        """The run's status so far (as :meth:`RunHandle.status` gives it)."""
        return self.fold.result(live=self._live)

    def snapshot(self, now: float | None = None, *, read_logs: bool = True) -> LiveSnapshot:
        """What a screen shows now: header figures and the rows, attention first.

        ``read_logs=False`` keeps the running agents' latest lines as last read (a screen that
        redraws them once a second need not look at 50 logs on every record)."""
        now = self.clock() if now is None else now
        status = self.status()
        graph = None if status.over else self._graph()  # a replay needs no estimate: no parse
        rows = [self._row(status, graph, tid, now, read_logs) for tid in status.tasks]
        order = {tid: i for i, tid in enumerate(status.tasks)}
        rows.sort(key=lambda r: (r.group, order[r.id]))
        states = status.counts()
        counts = {
            "landed": states.get("landed", 0),
            "failed": states.get("failed", 0) + states.get("cancelled", 0),
            "running": sum(states.get(s, 0) for s in RUNNING),
            "waiting": states.get("pending", 0) + states.get("retrying", 0),
            "total": len(status.tasks),
        }
        end = status.finished if status.finished is not None else now
        attention = [f"{r.id}: {r.attention}" for r in rows if r.group == NEEDS_YOU]
        attention += [f"{p}: {said}" for p, said in sorted(self.providers.items())]
        return LiveSnapshot(
            status,
            rows,
            counts,
            max(0.0, end - status.started),
            time_left(graph, status, self.took, now),
            dict(self.providers),
            attention,
        )

    def _row(
        self, status: RunStatus, graph: TaskGraph | None, tid: str, now: float, read_logs: bool
    ) -> TaskRow:
        task = status.tasks[tid]
        waiting = why_waiting(graph, status, tid)
        reason = task.reason  # the reason column of `stretto status`
        if not reason and task.waiting_for and task.state in ("pending", "retrying"):
            reason = f"waiting: {task.waiting_for}"
        attention = ""
        detail = task.reason
        elapsed = None
        if task.state in ("failed", "cancelled"):
            group, attention = NEEDS_YOU, task.reason or task.state
        elif task.state == "skipped" and tid in self.undone:  # budget or credit ran out
            group, attention = NEEDS_YOU, f"left for `stretto resume`: {task.reason}"
        elif task.state in RUNNING:
            group = RUNNING_NOW
            elapsed = max(0.0, now - task.started) if task.started is not None else None
            if not self.log_lines:
                detail = ""
            elif read_logs:
                detail = self.latest_line(tid, task.attempts)
            else:
                detail = self._lines.get((tid, task.attempts), (0, ""))[1]
            if task.state == "merging" and task.waiting_for:  # in the merge train: why it waits
                detail = task.waiting_for
        elif task.state in ("pending", "retrying"):
            group, detail = WAITING, waiting
            refused = [g for g in task.gates if not g.get("passed")]
            if task.waiting_for.startswith("out_of_credit"):
                said = self.credit.get(tid) or f"out of credit ({task.waiting_for})"
                group, attention = NEEDS_YOU, said
            elif self.budget_stop and status.finished is None:
                group, attention = NEEDS_YOU, f"waiting on the budget: {self.budget_stop}"
            elif refused and task.state == "retrying":
                gate = refused[-1]
                group, attention = NEEDS_YOU, f"gate {gate['gate']} refused: {gate['summary']}"
        elif task.state == "landed":
            group, detail = LANDED, (task.commit or "")[:12]
        else:
            group = OTHER
        return TaskRow(
            tid,
            task.state,
            group,
            attention,
            task.agent,
            task.model,
            task.attempts,
            elapsed,
            self.tokens.get(tid),
            task.cost_usd,
            detail,
            reason,
            task.commit,
            self.workspace.get(tid),
        )

    def latest_line(self, task: str, attempt: int) -> str:
        """The last non-empty line the agent of ``task``'s attempt wrote (secrets redacted)."""
        if attempt < 1:
            return ""
        path = self.handle.run_dir / "tasks" / task / str(attempt) / "agent.log"
        try:
            size = path.stat().st_size
        except OSError:
            return ""
        known = self._lines.get((task, attempt))
        if known is not None and known[0] == size:
            return known[1]  # unchanged since the last look: not read again
        from stretto.api.results import redact_secrets

        found = ""
        for line in reversed(log_tail(path, 2048).splitlines()):
            if line.strip():
                found = str(redact_secrets(line.strip(), self.secrets))[:200]
                break
        self._lines[(task, attempt)] = (size, found)
        return found

    def task_records(self, task: str) -> list[Record]:
        """The journal records about ``task``, in order."""
        return list(self.by_task.get(task, ()))

    def gates(self, task: str) -> list[dict[str, Any]]:
        """Each gate verdict of ``task``'s attempts: stage, gate, passed, summary, attempt, and
        the tail of its log."""
        out = []
        attempt = 0
        for rec in self.by_task.get(task, ()):
            if rec.type == "attempt_started":
                attempt = int(rec.fields.get("attempt") or 0)
            elif rec.type == "gate_result":
                f = rec.fields
                stage = str(f.get("stage") or "")
                log = self._gate_log(task, attempt, str(f.get("gate")), stage)
                out.append(
                    {
                        "attempt": attempt,
                        "stage": stage,
                        "gate": f.get("gate"),
                        "passed": bool(f.get("passed")),
                        "summary": f.get("summary") or "",
                        "duration": f.get("duration"),
                        "log": log,
                    }
                )
        return out

    def _gate_log(self, task: str, attempt: int, gate: str, stage: str) -> str:
        folder = self.handle.run_dir / "tasks" / task / str(attempt)
        for kind in ("gates", "merge-gates"):
            path = folder / kind / f"{gate}.log"
            if path.is_file():
                from stretto.api.results import redact_secrets

                return str(redact_secrets(log_tail(path, 4000), self.secrets))
        return ""

    def explain(self, task: str) -> list[str]:
        """Why ``task`` ran where it ran (the router's choices, as ``stretto explain``) and what
        the scheduler decided about it (waits, retries, giving up), in order."""
        from stretto.routing.explain import explain_task

        records = self.by_task.get(task, [])
        head = [self.run_started] if self.run_started is not None else []
        lines = explain_task([*head, *records], self.handle.run_id, task).lines()
        decisions = [r for r in records if r.type in ("decision", "split", "control")]
        if decisions:
            lines += ["", "scheduler and commands:"]
            for rec in decisions:
                f = rec.fields
                shown = " ".join(
                    f"{k}={v}"
                    for k, v in f.items()
                    if k not in ("task", "id", "source", "sent") and v not in (None, [], "")
                )
                stamp = time.strftime("%H:%M:%S", time.localtime(rec.ts))
                lines.append(f"  {stamp} {rec.type}: {shown}")
        status = self.status()
        waiting = why_waiting(self._graph(), status, task)
        if waiting:
            lines += ["", f"waiting now: {waiting}"]
        return lines

    def timeline(self) -> list[Bar]:
        """Each attempt on its agent slot, for a timeline drawing."""
        return attempt_bars(self.attempt_records)
