"""``stretto run --dry-run``: how a plan would be scheduled, without running anything.

The plan's graph is run through :func:`~stretto.schedule.simulate.simulate`, with estimated
durations and
every attempt landing; the report says which tasks run together, which wait for a file lease
and on whom, the critical path, and the estimated makespan against running everything serially.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stretto.plans.graph import ESTIMATED_MINUTES, TaskGraph
from stretto.plans.paths import EVERYTHING_PATTERN
from stretto.plans.plan import Plan
from stretto.plans.yamlsource import paused_gc
from stretto.schedule.simulate import SimEvent, Simulation, simulate

DEFAULT_MAX_AGENTS = 4
#: Plans with more steps than this have their waits on steps that own everything summed up (one
#: line per run of such a step, not one per waiting step): on a wide plan of 100,000 steps the
#: lines one by one were millions, most of the dry run's time and memory.
SUM_UP_ABOVE = 500


@dataclass
class DryRun:
    """Everything the dry run found out, as data; :func:`render_text` draws it."""

    plan: Plan
    graph: TaskGraph
    max_agents: int
    simulation: Simulation
    costs: Any = None  # a stretto.routing.spending.PlanCost when agents are routed or priced

    @property
    def serial(self) -> float:
        """Estimated minutes if the tasks ran one at a time."""
        return self.graph.serial_minutes()

    @property
    def speedup(self) -> float:
        """Serial time over estimated makespan."""
        return self.serial / self.simulation.makespan if self.simulation.makespan else 1.0

    def batches(self) -> list[tuple[float, list[str]]]:
        """Tasks grouped by the simulated minute they start."""
        out: list[tuple[float, list[str]]] = []
        for event in self.simulation.events:
            if event.kind != "start":
                continue
            if out and out[-1][0] == event.time:
                out[-1][1].append(event.task)
            else:
                out.append((event.time, [event.task]))
        return out

    def waits(self) -> list[SimEvent]:
        """Every time a ready task started to wait (once per episode and kind of reason), with
        whom it waited for first; while a step that owns everything runs, one wait (task
        ``"*"``, with ``count``) stands for the ready steps owning files that wait for it."""
        return [event for event in self.simulation.events if event.kind == "wait"]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (``--json``)."""
        starts = {e.task: e.time for e in self.simulation.events if e.kind == "start"}
        stage_deps = {stage.name: stage.depends_on for stage in self.plan.stages}
        ends = {e.task: e.time for e in self.simulation.events if e.kind == "land"}
        return {
            "ok": True,
            "plan": {
                "name": self.plan.name,
                "source": self.plan.source,
                "digest": self.plan.digest,
                "tasks": len(self.plan.tasks),
                "stages": len(self.plan.stages),
                "unowned": self.plan.unowned,
            },
            "max_agents": self.max_agents,
            "estimated_minutes": dict(ESTIMATED_MINUTES),
            "waves": [list(wave) for wave in self.graph.waves],
            "tasks": [
                {
                    "id": task.id,
                    "stage": task.stage,
                    "role": task.role,
                    "complexity": task.complexity,
                    "lease": list(task.lease),
                    # Explicit step dependencies; the stage's are in `stage_depends_on`
                    # (expanded, a large plan's report would be mostly repeated ids).
                    "depends_on": list(task.explicit_deps),
                    "stage_depends_on": list(stage_deps[task.stage]),
                    "minutes": self.graph.duration[task.id],
                    "critical_path_minutes": self.graph.critical[task.id],
                    "start": starts.get(task.id),
                    "end": ends.get(task.id),
                }
                for task in self.plan.tasks
            ],
            "batches": [{"time": t, "start": tasks} for t, tasks in self.batches()],
            "waits": [event.to_dict() for event in self.waits()],
            "cost": self.costs.to_dict() if self.costs is not None else None,
            "critical_path": self.graph.critical_path(),
            "critical_path_minutes": self.graph.critical_length(),
            "makespan_minutes": self.simulation.makespan,
            "serial_minutes": self.serial,
            "speedup": round(self.speedup, 3),
            "peak_agents": self.simulation.peak,
        }


def dry_run(plan: Plan, *, max_agents: int | None = None, configured: int | None = None) -> DryRun:
    """Simulate ``plan`` with ``max_agents``, else the plan's, else ``configured``, else 4."""
    agents = max_agents or plan.max_agents or configured or DEFAULT_MAX_AGENTS
    with paused_gc():  # the graph and events form no cycles; see paused_gc
        graph = TaskGraph.from_plan(plan)
        leases = {task.id: task.lease for task in plan.tasks}
        attempts = {task.id: task.max_attempts for task in plan.tasks}
        summary = len(plan.tasks) > SUM_UP_ABOVE
        simulation = simulate(graph, leases, agents, max_attempts=attempts, summary=summary)
    return DryRun(plan=plan, graph=graph, max_agents=agents, simulation=simulation)


def _lease_text(lease: tuple[str, ...]) -> str:
    if not lease:
        return "nothing"
    if EVERYTHING_PATTERN in lease:
        return "everything"
    return ", ".join(lease)


def _clock(minutes: float) -> str:
    hours, rest = divmod(round(minutes), 60)
    return f"{hours}:{rest:02d}"


def _span(minutes: float) -> str:
    if minutes < 60:
        return f"{minutes:g}m"
    hours, rest = divmod(round(minutes), 60)
    return f"{hours}h{rest:02d}m"


def render_text(report: DryRun, *, color: bool = False) -> str:
    """The dry run as text for a terminal."""

    def bold(text: str) -> str:
        return f"\033[1m{text}\033[0m" if color else text

    def dim(text: str) -> str:
        return f"\033[2m{text}\033[0m" if color else text

    plan, graph, sim = report.plan, report.graph, report.simulation
    lines: list[str] = []
    n_tasks, n_stages = len(plan.tasks), len(plan.stages)
    lines.append(
        bold(f"stretto dry run: {plan.name}")
        + f"  ({n_tasks} task{'s' * (n_tasks != 1)} in {n_stages} stage{'s' * (n_stages != 1)}, "
        f"{report.max_agents} agent{'s' * (report.max_agents != 1)} at once)"
    )
    lines.append(
        dim("nothing runs; durations are estimates from complexity: ")
        + dim(", ".join(f"{k} {_span(v)}" for k, v in ESTIMATED_MINUTES.items()))
    )
    lines.append("")
    lines.append(bold("Waves") + dim(" (by dependencies only)"))
    for number, wave in enumerate(graph.waves, 1):
        lines.append(f"  {number:>3}  {', '.join(wave)}")
    lines.append("")
    lines.append(bold("Schedule") + dim(f" (simulated with {report.max_agents} agents)"))
    width = max((len(t.id) for t in plan.tasks), default=10)
    for event in sim.events:
        if event.task == "**":  # a summary wait: the steps owning everything
            lines.append(
                f"  {_clock(event.time):>6}  wait   {event.count} step(s) owning everything  "
                "each waits until no step holds any file (it runs alone)"
            )
            continue
        if event.task == "*":  # a summary wait: the steps owning files, while one owns all
            lines.append(
                f"  {_clock(event.time):>6}  wait   {event.count} step(s) owning files  "
                f"file lease: everything (a step without 'files' owns the whole repo), "
                f"held by {', '.join(event.holders)}"
            )
            continue
        task = plan.task(event.task)
        if event.kind == "start":
            detail = f"{task.role}, {task.complexity}, {_span(graph.duration[task.id])}"
            lease = _lease_text(task.lease)
            lines.append(
                f"  {_clock(event.time):>6}  start  {event.task:<{width}}  {dim(detail)}"
                f"  {dim('owns ' + lease)}"
            )
        elif event.kind == "land":
            lines.append(f"  {_clock(event.time):>6}  done   {event.task}")
        elif event.kind == "wait":
            if event.reason == "lease" and event.conflict:
                mine, theirs = event.conflict
                who = ", ".join(event.holders)
                if EVERYTHING_PATTERN in (mine, theirs):
                    what = "everything (a step without 'files' owns the whole repo)"
                else:
                    what = f"'{mine}'" if mine == theirs else f"'{mine}' overlaps '{theirs}'"
                lines.append(
                    f"  {_clock(event.time):>6}  wait   {event.task:<{width}}  "
                    f"file lease: {what}, held by {who}"
                )
            else:
                lines.append(
                    f"  {_clock(event.time):>6}  wait   {event.task:<{width}}  {event.reason} full"
                )
        elif event.kind in ("give_up", "skip", "fail"):
            lines.append(
                f"  {_clock(event.time):>6}  {event.kind:<5}  {event.task}  {event.reason}"
            )
    lines.append("")
    path = graph.critical_path()
    lines.append(
        bold("Critical path") + f" ({_span(graph.critical_length())}): " + " -> ".join(path)
    )
    lines.append(
        bold("Estimated makespan") + f" {_span(sim.makespan)} vs {_span(report.serial)} serial "
        f"({report.speedup:.2f}x); at most {sim.peak} agent{'s' * (sim.peak != 1)} at once"
    )
    if report.costs is not None:
        lines.append("")
        lines.append(bold("Estimated cost") + dim(" (first attempt .. every retry escalated)"))
        lines.extend(f"  {line}" for line in report.costs.lines())
    waits = report.waits()
    lease_waits = [w for w in waits if w.reason == "lease"]
    if lease_waits:
        summed = any(w.task in ("*", "**") for w in lease_waits)
        tip = (
            "tip: steps without 'files' own the whole repository and run alone; "
            "declare owned files to let them run together"
            if summed or any(EVERYTHING_PATTERN in plan.task(w.task).lease for w in lease_waits)
            else ""
        )
        named = {w.task for w in lease_waits if w.task not in ("*", "**")}
        also = "; more waited on steps that own everything (summed up above)" if summed else ""
        lines.append(f"{len(named)} task(s) waited for a file lease at least once{also}")
        if tip:
            lines.append(dim(tip))
    return "\n".join(lines)
