"""How far a run has come and what is left of it: the critical-path estimate of time left, why a
task waits, and which agent slot each attempt ran in (pure, from the status fold and the plan).

The estimate of time left is the longest chain of unfinished work along the plan's dependency
edges, each task counted at its estimated minutes (``plans.graph.estimate_minutes``), scaled by
how long the attempts that already finished took against their estimates (so a plan of quick
shell steps is not promised ten minutes a step), minus what a running attempt has already done.
It is an estimate for a person; the scheduler never reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from stretto.engine.journal import Record
from stretto.engine.status import RunStatus
from stretto.plans.graph import TaskGraph

#: Task states that leave nothing to do.
DONE = ("landed", "failed", "skipped", "cancelled", "split")
#: Task states of an attempt under way.
RUNNING = ("running", "verifying", "merging")


def time_left(
    graph: TaskGraph | None,
    status: RunStatus,
    took: Mapping[str, Sequence[float]],
    now: float,
) -> float | None:
    """Seconds left along the critical path of unfinished tasks, or None (no plan, or over).

    Args:
        graph: the run's task graph (None when its plan cannot be read).
        status: the run's status now.
        took: task -> seconds each of its finished attempts took (calibrates the estimates).
        now: the clock (epoch seconds) the running attempts' elapsed time is measured against.
    """
    if graph is None or status.over:
        return None
    estimated = actual = 0.0
    for task, seconds in took.items():
        if task in graph.duration:
            estimated += graph.duration[task] * 60 * len(seconds)
            actual += sum(seconds)
    scale = actual / estimated if estimated > 0 and actual > 0 else 1.0
    left: dict[str, float] = {}
    for task in reversed(graph.topo):  # dependents first: their chains are known
        info = status.tasks.get(task)
        state = info.state if info else "pending"
        own = 0.0
        if state not in DONE:
            own = graph.duration[task] * 60 * scale
            if state in RUNNING and info is not None and info.started is not None:
                own = max(own - (now - info.started), 1.0)
        tail = max((left[d] for d in graph.dependents.get(task, ())), default=0.0)
        left[task] = own + tail
    return max(left.values(), default=0.0)


def why_waiting(graph: TaskGraph | None, status: RunStatus, task: str) -> str:
    """Why a task that has not started (or waits for a retry) is not running: the engine's own
    word when it journaled one (a file lease held by which task, capacity, out of credit), else
    the dependencies that have not landed, else the run being paused; "" when none applies."""
    info = status.tasks.get(task)
    if info is None or info.state not in ("pending", "retrying"):
        return ""
    if status.paused and not status.over:
        return "paused (the run starts no new attempts)"
    if info.waiting_for:
        reason, _, holders = info.waiting_for.partition(" (")
        if reason == "lease" and holders:
            return f"file lease held by {holders.rstrip(')')}"
        return info.waiting_for
    if graph is not None and task in graph.deps:
        open_deps = [
            d for d in graph.deps[task] if status.tasks.get(d) and status.tasks[d].state != "landed"
        ]
        if open_deps:
            return f"dependency: {', '.join(open_deps)}"
    return ""


@dataclass(frozen=True)
class Bar:
    """One attempt on the timeline: which agent slot ran it, from when to when, how it ended."""

    slot: int
    task: str
    attempt: int
    agent: str
    start: float
    end: float | None  # None: still under way
    outcome: str  # success, failed, ... or "running"


def attempt_bars(records: Iterable[Record]) -> list[Bar]:
    """Each attempt's interval, given the lowest agent slot free when it started (slots are the
    drawing's rows: at most as many as agents ran at once)."""
    open_: dict[tuple[str, int], tuple[int, str, float]] = {}
    busy: set[int] = set()
    bars: list[Bar] = []
    for rec in records:
        f = rec.fields
        if rec.type == "attempt_started":
            slot = next(i for i in range(len(busy) + 1) if i not in busy)
            busy.add(slot)
            open_[(str(f["task"]), int(f["attempt"]))] = (slot, str(f["agent"]), rec.ts)
        elif rec.type == "attempt_finished":
            key = (str(f["task"]), int(f["attempt"]))
            if key in open_:
                slot, agent, start = open_.pop(key)
                busy.discard(slot)
                bars.append(Bar(slot, key[0], key[1], agent, start, rec.ts, str(f["outcome"])))
        elif rec.type in ("run_finished", "journal_reopened"):  # what was under way ended
            for (task, attempt), (slot, agent, start) in open_.items():
                bars.append(Bar(slot, task, attempt, agent, start, rec.ts, "interrupted"))
            open_.clear()
            busy.clear()
    for (task, attempt), (slot, agent, start) in open_.items():
        bars.append(Bar(slot, task, attempt, agent, start, None, "running"))
    return sorted(bars, key=lambda b: (b.start, b.slot))
