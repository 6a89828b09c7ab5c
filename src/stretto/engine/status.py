"""A run's state, folded from its journal: nothing else is trusted or needed.

:func:`fold_status` reads the records in order and keeps, per task, its state, attempts, agent,
gates and reason; for the run, whether it is planning, running, paused, stopping or over (and
how), its budget, parallelism and spend, and the last seq read (so a follower can go on from
there). ``live`` says whether an engine holds the run's lock right now: a run that is not live
and not over was interrupted (``stretto resume`` goes on).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from stretto.engine.journal import Record
from stretto.errors import RunError

#: Run states after which the run will not change unless resumed.
OVER = ("finished", "failed", "budget_reached", "out_of_credit", "interrupted", "cancelled")
#: Of those, the ones ``stretto resume`` takes up again.
RESUMABLE = ("budget_reached", "out_of_credit", "interrupted", "cancelled")

#: Task states of an attempt under way; in a run that stopped without finishing they are dead.
_UNDER_WAY = ("running", "verifying", "merging", "retrying")

#: The record types :class:`StatusFold` reads; it skips every other one (a test checks that
#: each type its code compares against is here).
_FOLDED = frozenset(
    {
        "run_started", "goal", "journal_reopened", "split", "resume_started", "control",
        "stop_requested", "run_finished", "attempt_finished", "planner_call", "train",
        "attempt_started", "gate_result", "verified", "decision", "task_finished",
    }
)  # fmt: skip


@dataclass
class TaskStatus:
    """One task as the journal tells it."""

    id: str
    state: str = "pending"
    attempts: int = 0
    agent: str | None = None
    reason: str = ""
    commit: str | None = None
    started: float | None = None
    gates: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    cost_usd: float = 0.0
    waiting_for: str = ""  # why it waits (lease held by, paused, capacity), when it does
    worker: str | None = None  # the cluster worker of its last attempt (None: ran here)


@dataclass
class RunStatus:
    """A run as the journal tells it."""

    run_id: str
    state: str  # planning | running | paused | stopping | one of OVER
    plan: str
    target: str
    started: float
    finished: float | None
    tasks: dict[str, TaskStatus]
    generations: int
    head: str | None = None
    live: bool = False
    paused: bool = False
    stopping: str = ""  # why the run is being stopped, while it stops
    budget: float | None = None
    max_agents: int | None = None
    cost_usd: float = 0.0
    last_seq: int = 0
    goal: str | None = None
    notes: list[str] = field(default_factory=list)
    pid: int | None = None  # the engine that wrote run_started (or the last resume)
    train: dict[str, Any] | None = None  # the merge train's last state (strategy "train")

    @property
    def over(self) -> bool:
        """Whether the run has ended (finished, failed, stopped...); resumable ones may go on."""
        return self.state in OVER

    @property
    def resumable(self) -> bool:
        """Whether ``stretto resume`` can take the run up again."""
        return self.state in RESUMABLE

    def counts(self) -> dict[str, int]:
        """Tasks per state."""
        out: dict[str, int] = {}
        for task in self.tasks.values():
            out[task.state] = out.get(task.state, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``--json``)."""
        return {
            "run_id": self.run_id,
            "state": self.state,
            "plan": self.plan,
            "target": self.target,
            "started": self.started,
            "finished": self.finished,
            "generations": self.generations,
            "head": self.head,
            "live": self.live,
            "paused": self.paused,
            "budget": self.budget,
            "max_agents": self.max_agents,
            "cost_usd": round(self.cost_usd, 6),
            "last_seq": self.last_seq,
            "goal": self.goal,
            "notes": list(self.notes),
            "counts": self.counts(),
            "train": self.train,
            "tasks": [t.__dict__ for t in self.tasks.values()],
        }


def _started(rec: Record, previous: RunStatus | None) -> RunStatus:
    f = rec.fields
    options = f["options"]
    status = RunStatus(
        f["run_id"],
        "running",
        f["plan"],
        options["target"],
        previous.started if previous else rec.ts,
        None,
        {t: TaskStatus(t) for t in f["tasks"]},
        1,
        budget=options.get("budget"),
        max_agents=options.get("max_agents"),
        goal=previous.goal if previous else None,
        pid=f.get("pid"),
    )
    return status


def _control(status: RunStatus, f: Any) -> None:
    action = f.get("action")
    if action in ("pause", "unpause"):
        status.paused = action == "pause"
    elif action == "budget":
        status.budget = f.get("budget")
    elif action == "parallelism":
        status.max_agents = f.get("max_agents")
    elif action == "cancel" and not f.get("task"):
        status.stopping = "cancelled"
    elif action == "add":
        for name in f.get("tasks") or ():
            status.tasks.setdefault(str(name), TaskStatus(str(name)))
    elif action == "retry":
        for name in (f.get("task"), *f.get("revived", ())):
            task = status.tasks.get(str(name))
            if task is not None:
                task.state, task.reason, task.commit = "retrying", "", None


def fold_status(records: Iterable[Record], *, live: bool) -> RunStatus:
    """The run's state from its journal records.

    Raises:
        RunError: the journal has no ``run_started`` (nor a ``goal`` of a run being planned).
    """
    fold = StatusFold()
    fold.feed(records)
    return fold.result(live=live)


class StatusFold:
    """:func:`fold_status`, one record at a time: feed it records as they are written and ask
    for the result whenever needed (a long-lived reader folds each record once)."""

    def __init__(self) -> None:
        self.status: RunStatus | None = None
        self.last_seq = 0

    def feed(self, records: Iterable[Record]) -> None:
        """Fold ``records`` (the journal's next ones, in order) in."""
        one, folded = self._one, _FOLDED
        for rec in records:
            self.last_seq = rec.seq
            if rec.type in folded:  # any other record changes nothing (most of a journal)
                one(rec)

    def _one(self, rec: Record) -> None:
        status = self.status
        f = rec.fields
        if rec.type == "run_started":
            self.status = _started(rec, status)
            return
        if rec.type == "goal" and status is None:  # a detached `-g`: planning comes first
            self.status = RunStatus(
                str(f.get("run_id", "")), "planning", "(planning)", str(f.get("target", "")),
                rec.ts, None, {}, 1, goal=str(f.get("goal")), pid=f.get("pid"),
            )  # fmt: skip
            return
        if status is None:
            return
        if rec.type == "goal":
            status.goal = str(f.get("goal"))
        elif rec.type == "journal_reopened":
            status.generations += 1
            status.pid = f.get("pid")
        elif rec.type == "split":
            for child in f.get("children", []):
                status.tasks.setdefault(child, TaskStatus(child))
        elif rec.type == "resume_started":
            status.state, status.finished, status.stopping = "running", None, ""
            if f.get("budget") is not None:
                status.budget = f["budget"]
        elif rec.type == "control" and f.get("ok"):
            _control(status, f)
        elif rec.type == "stop_requested":
            status.stopping = str(f.get("status") or "stopping")
        elif rec.type == "run_finished":
            status.state, status.finished, status.head = f["status"], rec.ts, f.get("head")
            status.notes = list(f.get("notes") or [])
            status.stopping = ""
        if (rec.type == "attempt_finished" and isinstance(f.get("cost_usd"), int | float)) or (
            rec.type == "planner_call" and isinstance(f.get("cost_usd"), int | float)
        ):
            status.cost_usd += float(f["cost_usd"])
        if rec.type == "train":
            status.train = {k: v for k, v in f.items() if k != "waits"}
            for name, why in (f.get("waits") or {}).items():
                if name in status.tasks and status.tasks[name].state == "merging":
                    status.tasks[name].waiting_for = f"merge train: {why}"
        task = status.tasks.get(f.get("task", "")) if "task" in f else None
        if task is None:
            return
        if rec.type == "attempt_started":
            task.state, task.attempts, task.agent = "running", f["attempt"], f["agent"]
            task.started, task.gates, task.model = rec.ts, [], f.get("model")
            task.worker = f.get("worker")
            task.waiting_for = ""
        elif rec.type == "attempt_finished" and isinstance(f.get("cost_usd"), int | float):
            task.cost_usd += float(f["cost_usd"])
        elif rec.type == "gate_result":
            task.gates.append({k: f[k] for k in ("stage", "gate", "passed", "summary")})
            if task.state == "running":
                task.state = "verifying"
        elif rec.type == "verified":
            task.state = "merging"
        elif rec.type == "decision" and f.get("action") == "retry":
            task.state = "retrying"
        elif rec.type == "decision" and f.get("action") == "wait":
            holders = ", ".join(f.get("holders") or [])
            task.waiting_for = f"{f.get('reason')}" + (f" ({holders})" if holders else "")
            if f.get("why"):  # a capacity pool's words: a provider's, a local server's
                task.waiting_for = f"{f.get('reason')}: {f['why']}"
        elif rec.type == "task_finished" and (f.get("budget") or f.get("resumable")):
            task.state, task.reason = "skipped", f["reason"]
        elif rec.type == "task_finished":
            task.state, task.reason, task.commit = f["status"], f["reason"], f.get("commit")
            task.attempts = max(task.attempts, f.get("attempts", 0))
            task.waiting_for = ""

    def result(self, *, live: bool) -> RunStatus:
        """The state so far, a copy of its own (``live``: an engine holds the run's lock).

        Raises:
            RunError: no ``run_started`` (nor ``goal``) was fed.
        """
        if self.status is None:
            raise RunError("the journal has no run_started record; it is not a stretto run")
        status = replace(
            self.status,
            tasks={k: replace(t, gates=list(t.gates)) for k, t in self.status.tasks.items()},
            notes=list(self.status.notes),
        )
        status.last_seq = self.last_seq
        status.live = live
        if status.finished is None and status.paused and status.state == "running":
            status.state = "paused"
        if status.stopping and status.finished is None:
            status.state = "stopping"
        if (status.finished is None and not live) or status.state in ("interrupted", "cancelled"):
            if status.finished is None:
                status.state = "interrupted"
            for task in status.tasks.values():
                if task.state in _UNDER_WAY:
                    task.state = "interrupted"  # no process drives it any more; resume retries it
        return status
