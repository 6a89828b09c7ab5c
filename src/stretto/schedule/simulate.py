"""A discrete-event simulation of a run, driven by the real scheduler (pure).

The dry run, the property tests and the scheduling benchmarks all use it: attempts take their
estimated (or given) durations, succeed or fail as a given function says, and the same
:class:`~stretto.schedule.scheduler.Schedule` that drives real runs decides what starts when.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from stretto.plans.graph import TaskGraph
from stretto.schedule.scheduler import (
    ALL_EVERYTHING_OWNERS,
    ALL_FILE_OWNERS,
    Capacity,
    GiveUp,
    Schedule,
    Skip,
    Spawn,
    Wait,
)

#: (task, attempt) -> whether that attempt lands.
Outcome = Callable[[str, int], bool]


@dataclass(frozen=True, slots=True)
class SimEvent:
    """Something that happened at ``time`` (minutes from the start)."""

    time: float
    kind: str  # start | land | fail | give_up | skip | wait
    task: str
    attempt: int = 0
    holders: tuple[str, ...] = ()
    conflict: tuple[str, str] | None = None
    reason: str = ""
    count: int = 0  # a summary wait (task "*"): how many tasks owning files it stands for

    def to_dict(self) -> dict[str, object]:
        """Plain data (for ``--json``)."""
        out: dict[str, object] = {"time": self.time, "kind": self.kind, "task": self.task}
        if self.attempt:
            out["attempt"] = self.attempt
        if self.holders:
            out["holders"] = list(self.holders)
        if self.conflict:
            out["conflict"] = list(self.conflict)
        if self.reason:
            out["reason"] = self.reason
        if self.count:
            out["count"] = self.count
        return out


@dataclass
class Simulation:
    """The outcome of a simulated run."""

    events: list[SimEvent] = field(default_factory=list)
    makespan: float = 0.0
    peak: int = 0
    decisions: int = 0
    landed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    busy: float = 0.0  # total agent-minutes spent, failed attempts included


def simulate(
    graph: TaskGraph,
    leases: Mapping[str, tuple[str, ...]],
    max_agents: int,
    *,
    duration: Mapping[str, float] | None = None,
    outcome: Outcome | None = None,
    max_attempts: Mapping[str, int] | None = None,
    pools: Mapping[str, tuple[str, ...]] | None = None,
    pool_limits: Mapping[str, int] | None = None,
    record_waits: bool = True,
    summary: bool = False,
) -> Simulation:
    """Run the plan in simulated time with ``max_agents`` slots.

    Args:
        graph: the task graph.
        leases: task -> owned patterns.
        max_agents: agents running at once.
        duration: minutes per attempt (default: the graph's estimates).
        outcome: whether an attempt lands (default: every attempt lands).
        max_attempts: per-task failure limit (default 3).
        pools: task -> capacity pools; ``pool_limits``: pool -> slots.
        record_waits: record a ``wait`` event when a ready task starts waiting, and when the kind
            of its reason changes (a file lease, a full pool): once per episode, naming who held
            it up first, not again each time other holders take their place.
        summary: while a task that owns everything runs, one ``wait`` event (task ``"*"``,
            with ``count``) stands for the ready tasks owning files that wait for it (see
            :meth:`Schedule.decide`); the schedule is the same.
    """
    schedule = Schedule(graph, leases, pools=pools, max_attempts=max_attempts)
    minutes = duration or graph.duration
    lands = outcome or (lambda task, attempt: True)
    limits = dict(pool_limits or {})
    sim = Simulation()
    now = 0.0
    running: list[tuple[float, int, str, int]] = []  # (end, seq, task, attempt)
    seq = 0
    in_use: dict[str, int] = dict.fromkeys(limits, 0)
    last_wait: dict[str, tuple[str, tuple[str | None, ...]]] = {}
    summed_for: tuple[str, ...] = ()  # the holder the last summary wait named
    wide_now = False  # the last decision had steps owning everything waiting
    while not schedule.done:
        free = Capacity(
            max_agents - len(running),
            {pool: limit - in_use[pool] for pool, limit in limits.items()},
        )
        actions = schedule.decide(free, summary=summary)
        sim.decisions += 1
        wide_before, wide_now = wide_now, False
        for action in actions:
            if isinstance(action, Spawn):
                attempt = schedule.started(action.task)
                end = now + minutes[action.task]
                heapq.heappush(running, (end, seq, action.task, attempt))
                seq += 1
                for pool in schedule.pools.get(action.task, ()):
                    if pool in in_use:
                        in_use[pool] += 1
                last_wait.pop(action.task, None)
                sim.events.append(SimEvent(now, "start", action.task, attempt))
            elif isinstance(action, Wait) and action.task == ALL_EVERYTHING_OWNERS:
                wide_now = True
                if record_waits and not wide_before:  # said when they start to wait
                    sim.events.append(
                        SimEvent(now, "wait", ALL_EVERYTHING_OWNERS, conflict=action.conflict,
                                 reason="lease", count=action.count)
                    )  # fmt: skip
            elif isinstance(action, Wait) and action.task == ALL_FILE_OWNERS:
                if record_waits and summed_for != action.holders:
                    summed_for = action.holders
                    sim.events.append(
                        SimEvent(now, "wait", ALL_FILE_OWNERS, holders=action.holders,
                                 conflict=action.conflict, reason="lease", count=action.count)
                    )  # fmt: skip
            elif isinstance(action, Wait):
                if record_waits:
                    # Once per episode and kind of reason: a task that waits for a lease while
                    # its holders come and go (steps that own everything, one after another)
                    # is said to wait once, naming the first; listing every change made the
                    # dry run of a wide plan quadratic (millions of lines at 100,000 steps).
                    key = (action.reason, (action.pool,) if action.pool else ())
                    if last_wait.get(action.task) != key:
                        last_wait[action.task] = key
                        sim.events.append(
                            SimEvent(
                                now,
                                "wait",
                                action.task,
                                holders=action.holders,
                                conflict=action.conflict,
                                reason=action.reason if not action.pool else f"pool {action.pool}",
                            )
                        )
            elif isinstance(action, GiveUp):
                schedule.gave_up(action.task)
                sim.failed.append(action.task)
                n = action.failures
                why = f"{n} failed attempt{'' if n == 1 else 's'}"
                sim.events.append(SimEvent(now, "give_up", action.task, reason=why))
            elif isinstance(action, Skip):
                schedule.skipped(action.task)
                sim.skipped.append(action.task)
                sim.events.append(
                    SimEvent(now, "skip", action.task, reason=f"{action.because} failed")
                )
        sim.peak = max(sim.peak, len(running))
        if schedule.done:
            break
        if not running:
            if any(isinstance(a, (GiveUp, Skip)) for a in actions):
                continue
            raise RuntimeError("simulation stalled: nothing running and nothing can start")
        # Finish every attempt that ends at the next instant, then decide again.
        now = running[0][0]
        while running and running[0][0] == now:
            _, _, task, attempt = heapq.heappop(running)
            sim.busy += minutes[task]
            for pool in schedule.pools.get(task, ()):
                if pool in in_use:
                    in_use[pool] -= 1
            if lands(task, attempt):
                schedule.landed(task)
                sim.landed.append(task)
                sim.events.append(SimEvent(now, "land", task, attempt))
            else:
                schedule.attempt_failed(task)
                sim.events.append(SimEvent(now, "fail", task, attempt))
    sim.makespan = now
    return sim
