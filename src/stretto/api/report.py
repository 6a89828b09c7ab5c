"""What a run did, laid out for pictures: attempts on agent slots, the task graph, costs, routes.

:func:`run_report` folds a run's journal (and its saved plan, and its failed attempts' logs) into
a :class:`RunReport`: plain values the HTML report, the trace and the dashboard draw from. Times
are seconds from the run's start. Nothing here renders; :mod:`stretto.frontends.report_html`
and :mod:`stretto.frontends.trace` do.

The attempts on their slots and the waits come from :mod:`stretto.api.timeline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stretto.api.results import _next_step, _tail, redact_secrets, secret_values
from stretto.api.runs import RunHandle
from stretto.api.timeline import AttemptSpan, Segment, Wait, timeline
from stretto.engine.journal import Record
from stretto.engine.status import RunStatus, fold_status
from stretto.errors import RunError

__all__ = ["AttemptSpan", "RunReport", "Segment", "Wait", "run_report"]

#: Escalating routing rules (a retry on a stronger arm).
ESCALATIONS = ("cascade-escalate", "retry-stronger")


@dataclass
class TaskNode:
    """One task of the graph."""

    id: str
    title: str
    stage: str
    depends_on: list[str]
    state: str
    attempts: int
    reason: str = ""
    cost_usd: float = 0.0
    split_from: str | None = None
    critical: bool = False
    wave: int = 0
    finished: float | None = None


@dataclass
class Failure:
    """A task that did not land: why, its last attempt's gate verdicts and log tail."""

    task: str
    state: str
    reason: str
    attempts: int
    gates: list[dict[str, Any]] = field(default_factory=list)
    log_tail: str = ""


@dataclass
class RunReport:
    """Everything the report shows about one run. ``to_dict()`` is its JSON."""

    run_id: str
    plan: str
    target: str
    state: str
    started: float  # Unix time
    wall: float  # seconds: to the end, or to the last record of a run still going
    head: str | None
    counts: dict[str, int]
    cost_usd: float
    budget: float | None
    agent_seconds: float
    slots: int
    attempts: list[AttemptSpan]
    waits: list[Wait]
    tasks: list[TaskNode]
    stages: list[str]
    critical_path: list[str]
    cost_by: dict[str, list[dict[str, Any]]]
    routes: list[dict[str, Any]]
    failures: list[Failure]
    left: list[str]
    next_step: str
    notes: list[str] = field(default_factory=list)
    goal: str | None = None
    merge_train: dict[str, Any] | None = None  # strategy "train": cars, landings, cache, flakes
    landing_rows: int = (
        0  # rows of verified attempts waiting to land at once (see stretto.api.timeline)
    )

    @property
    def saved_seconds(self) -> float:
        """How much sooner the run ended than its attempts one after another."""
        return max(0.0, self.agent_seconds - self.wall)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        return {**asdict(self), "saved_seconds": round(self.saved_seconds, 3)}


def run_report(handle: RunHandle) -> RunReport:
    """The report of ``handle``'s run, so far if it is still going.

    Raises:
        RunError: the journal cannot be read or has no ``run_started``.
    """
    records = handle.records()
    status = fold_status(records, live=handle.live())
    if not records:
        raise RunError(f"run {handle.run_id} has no journal records yet")
    t0 = status.started
    end = (status.finished or records[-1].ts) - t0
    attempts, waits = timeline(records, t0, end)
    tasks, stages = _graph(handle.run_dir, records, status)
    critical = _critical_path(tasks)
    for node in tasks:
        node.critical = node.id in critical
    agent_seconds = sum(a.slot_end - a.start for a in attempts)
    left = [t.id for t in tasks if t.state not in ("landed", "split")]
    report = RunReport(
        run_id=status.run_id,
        plan=status.plan,
        target=status.target,
        state=status.state,
        started=t0,
        wall=round(max(end, 0.0), 3),
        head=status.head,
        counts=status.counts(),
        cost_usd=round(status.cost_usd, 6),
        budget=status.budget,
        agent_seconds=round(agent_seconds, 3),
        slots=1 + max((a.slot for a in attempts), default=-1),
        landing_rows=1
        + max((a.landing_row for a in attempts if a.landing_row is not None), default=-1),
        attempts=attempts,
        waits=waits,
        tasks=tasks,
        stages=stages,
        critical_path=critical,
        cost_by=_costs(records),
        routes=_routes(records),
        failures=_failures(handle.run_dir, status),
        left=left,
        next_step=_next_step(status),
        notes=list(status.notes),
        goal=status.goal,
        merge_train=_merge_train(records),
    )
    return _redacted(report)


def _merge_train(records: Sequence[Record]) -> dict[str, Any] | None:
    """The merge train's figures (None when the run used the serial queue)."""
    if not any(r.type == "train" for r in records):
        return None
    cars = {r.fields["car"] for r in records if r.type == "merge" and "car" in r.fields}
    runs = [r for r in records if r.type == "gates" and r.kind == "intent" and "car" in r.fields]
    intents = {r.seq: r for r in records if r.type == "advance" and r.kind == "intent"}
    landings = [
        {
            "tasks": list(intents[r.fields["of"]].fields.get("tasks") or []),
            "cars": list(intents[r.fields["of"]].fields.get("cars") or []),
            "new": intents[r.fields["of"]].fields.get("new"),
        }
        for r in records
        if r.type == "advance" and r.kind == "done" and r.fields.get("of") in intents
    ]
    return {
        "cars": len(cars),
        "gate_runs": len(runs),
        "cached": sum(len(r.fields.get("cached") or ()) for r in runs),
        "flaky": [
            {"gate": r.fields.get("gate"), "tree": r.fields.get("tree")}
            for r in records
            if r.type == "gate_flaky"
        ],
        "sent_back": sorted(
            {str(r.fields.get("task")) for r in records if r.type == "merge_refused"}
        ),
        "landings": landings,
    }


def _redacted(report: RunReport) -> RunReport:
    """``report`` with every secret of this environment replaced by ``***`` in the text that
    came from plans, agents and logs (the journal is redacted as it is written, with the
    engine's environment; this is the reader's)."""
    secrets = secret_values()
    if not secrets:
        return report

    def clean(text: str) -> str:
        return str(redact_secrets(text, secrets))

    for span in report.attempts:
        span.reason = clean(span.reason)
    for wait in report.waits:
        wait.reason = clean(wait.reason)
    for node in report.tasks:
        node.title, node.reason = clean(node.title), clean(node.reason)
    report.routes = redact_secrets(report.routes, secrets)
    report.failures = [
        Failure(
            f.task,
            f.state,
            clean(f.reason),
            f.attempts,
            redact_secrets(f.gates, secrets),
            clean(f.log_tail),
        )
        for f in report.failures
    ]
    report.notes = [clean(n) for n in report.notes]
    report.goal = clean(report.goal) if report.goal else report.goal
    return report


# --------------------------------------------------------------------------- graph


def _graph(
    run_dir: Path, records: Sequence[Record], status: RunStatus
) -> tuple[list[TaskNode], list[str]]:
    """Tasks with their stages and dependencies (from the run's saved plan), and splits."""
    from stretto.engine.plan_graph import read_plan_graph
    from stretto.engine.runs import saved_plan
    from stretto.errors import StrettoError

    graph = read_plan_graph(run_dir)  # saved with the run: no need to parse the plan again
    planned: dict[str, Any]
    if graph is not None:
        stages, planned = graph[0], dict(graph[1])
    else:
        try:
            plan = saved_plan(run_dir)
            planned = {t.id: t for t in plan.tasks}
            stages = [s.name for s in plan.stages]
        except (OSError, StrettoError):  # a run being planned, or a plan file gone
            planned, stages = {}, []
    parent: dict[str, str] = {}
    finished: dict[str, float] = {}
    for rec in records:
        added = None
        if rec.type == "control" and rec.fields.get("action") == "add":
            from stretto.engine.additions import added_in

            added = added_in(rec)  # tasks added to the running run (`stretto add`)
        if added:
            planned.update((t.id, t) for t in added)
            if added[0].stage not in stages:
                stages.append(added[0].stage)
        elif rec.type == "split":
            for child in rec.fields.get("children") or []:
                parent[str(child)] = str(rec.fields.get("task"))
        elif rec.type == "task_finished":
            finished[str(rec.fields.get("task"))] = rec.ts - status.started
    nodes: list[TaskNode] = []
    for task_id, info in status.tasks.items():
        task = planned.get(task_id)
        origin = parent.get(task_id)
        deps = list(task.depends_on) if task else ([origin] if origin else [])
        nodes.append(
            TaskNode(
                task_id,
                task.title if task else task_id,
                task.stage if task else (stages_of(planned, origin) or "split"),
                deps,
                info.state,
                info.attempts,
                info.reason,
                round(info.cost_usd, 6),
                origin,
                finished=finished.get(task_id),
            )
        )
    _waves(nodes)
    return nodes, stages or sorted({n.stage for n in nodes})


def stages_of(planned: dict[str, Any], task: str | None) -> str | None:
    """The stage of ``task`` in the plan, if it is there."""
    found = planned.get(task or "")
    return str(found.stage) if found is not None else None


def _waves(nodes: list[TaskNode]) -> None:
    """Each task's wave: one more than its deepest dependency (0 without any).

    The steps of a stage share their dependencies (the previous stage's last steps: hundreds in
    a big plan), so a wave is worked out once per distinct list of dependencies."""
    by_id = {n.id: n for n in nodes}
    wave_of: dict[tuple[str, ...], int] = {}  # filled once every task in the key is done
    done: set[str] = set()
    seen: set[str] = set()  # expanded once: a cycle (never in a valid plan) cannot loop
    for root in nodes:
        stack = [(root, False)]
        while stack:  # depth first, without recursion: chains may be long
            node, expanded = stack.pop()
            if node.id in done or (not expanded and node.id in seen):
                continue
            seen.add(node.id)
            key = tuple(node.depends_on)
            if expanded or key in wave_of:
                wave = wave_of.get(key)
                if wave is None:
                    deps = [by_id[d].wave for d in key if d in by_id and d != node.id]
                    wave = 1 + max(deps, default=-1)
                    if node.id not in key:  # a task waiting for itself has a wave of its own
                        wave_of[key] = wave
                node.wave = wave
                done.add(node.id)
                continue
            stack.append((node, True))
            stack.extend(
                (by_id[d], False) for d in key if d in by_id and d != node.id and d not in done
            )


def _critical_path(nodes: list[TaskNode]) -> list[str]:
    """The chain of dependencies that ended last: from the last task to finish, back through
    the dependency that finished latest, to a task that waited for none."""
    by_id = {n.id: n for n in nodes}
    done = [n for n in nodes if n.finished is not None and n.state == "landed"]
    if not done:
        return []
    node = max(done, key=lambda n: (n.finished or 0.0, n.id))
    path = [node.id]
    while True:
        deps = [by_id[d] for d in node.depends_on if d in by_id and by_id[d].finished is not None]
        if not deps:
            return path[::-1]
        node = max(deps, key=lambda n: (n.finished or 0.0, n.id))
        path.append(node.id)


# --------------------------------------------------------------------------- costs and routes


def _costs(records: Sequence[Record]) -> dict[str, list[dict[str, Any]]]:
    """Spend by model, agent and task: attempts and planning calls, with tokens."""
    rows: dict[str, dict[str, dict[str, Any]]] = {"model": {}, "agent": {}, "task": {}}
    for rec in records:
        f = rec.fields
        if rec.type not in ("attempt_finished", "planner_call"):
            continue
        ledger = f.get("ledger") or {}
        tokens = ledger.get("tokens") or _usage_tokens(f.get("usage") or {})
        cost = f.get("cost_usd")
        keys = {
            "model": str(f.get("model") or ledger.get("model") or "(no model)"),
            "agent": str(f.get("agent") or ledger.get("agent") or "?"),
            "task": str(f.get("task") or f"({f.get('call') or 'planning'})"),
        }
        for by, key in keys.items():
            row = rows[by].setdefault(
                key,
                dict(key=key, attempts=0, tokens=0, cost_usd=0.0, unpriced=0, local=0),
            )
            row["attempts"] += 1
            row["local"] += 1 if ledger.get("local") else 0
            row["tokens"] += sum(int(v) for v in tokens.values() if isinstance(v, int))
            if isinstance(cost, int | float):
                row["cost_usd"] = round(row["cost_usd"] + float(cost), 6)
            else:
                row["unpriced"] += 1
    return {
        by: sorted(found.values(), key=lambda r: (-r["cost_usd"], -r["tokens"], r["key"]))
        for by, found in rows.items()
    }


def _usage_tokens(usage: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in usage.items() if isinstance(v, int) and "token" in k}


def _routes(records: Sequence[Record]) -> list[dict[str, Any]]:
    """The router's choice for every attempt, escalations marked."""
    out = []
    for rec in records:
        if rec.type != "route":
            continue
        f = rec.fields
        out.append(
            {
                "task": f.get("task"),
                "attempt": f.get("attempt"),
                "agent": f.get("agent"),
                "model": f.get("model"),
                "tier": f.get("tier"),
                "rule": f.get("rule"),
                "reason": f.get("reason"),
                "estimate_usd": f.get("estimate_usd"),
                "escalation": f.get("rule") in ESCALATIONS,
            }
        )
    return out


def _failures(run_dir: Path, status: RunStatus) -> list[Failure]:
    """Tasks that did not land (failed, cancelled, skipped, interrupted), with their last
    attempt's gate verdicts and log tail."""
    out = []
    for task in status.tasks.values():
        if task.state in ("landed", "split", "pending", "running", "verifying", "merging"):
            continue
        tail = ""
        if task.attempts and task.state in ("failed", "cancelled", "interrupted"):
            tail = _tail(run_dir, task.id, task.attempts)
        out.append(
            Failure(
                task.id,
                task.state,
                task.reason,
                task.attempts,
                [dict(g) for g in task.gates],
                tail,
            )
        )
    return out
