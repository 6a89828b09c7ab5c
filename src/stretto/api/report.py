"""What a run did, laid out for pictures: attempts on agent slots, the task graph, costs, routes.

:func:`run_report` folds a run's journal (and its saved plan, and its failed attempts' logs) into
a :class:`RunReport`: plain values the HTML report, the trace and the dashboard draw from. Times
are seconds from the run's start. Nothing here renders; :mod:`stretto.frontends.report_html`
and :mod:`stretto.frontends.trace` do.

Slots are not journaled: an attempt occupies a slot from its ``spawn`` decision until it is
verified (then it waits in the merge queue without a slot) or ends (its task's next decision),
and attempts are packed on the lowest free slot in start order, so the number of slots is the
most agents that ran at once. The time a verified attempt waits to land is packed apart, on
rows of the merge queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stretto.api.results import _next_step, _tail, redact_secrets, secret_values
from stretto.api.runs import RunHandle
from stretto.engine.journal import Record
from stretto.engine.status import RunStatus, fold_status
from stretto.errors import RunError

#: Escalating routing rules (a retry on a stronger arm).
ESCALATIONS = ("cascade-escalate", "retry-stronger")


@dataclass
class Segment:
    """One part of an attempt: ``backoff``, ``setup`` (worktree), ``agent``, ``gates`` or
    ``merge``, from ``start`` to ``end`` (seconds from the run's start); ``ok`` None while
    under way or unknown."""

    kind: str
    start: float
    end: float
    ok: bool | None = None
    label: str = ""


@dataclass
class AttemptSpan:
    """One attempt of one task on one slot."""

    task: str
    attempt: int
    slot: int
    start: float
    end: float
    agent: str = ""
    model: str | None = None
    tier: str | None = None
    outcome: str = "running"  # landed | failed | retried | stopped | running | interrupted
    reason: str = ""
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    segments: list[Segment] = field(default_factory=list)
    local: str | None = None  # the local model server it ran on ($0)
    worker: str | None = None  # the cluster worker that ran it (None: this machine)
    released: float | None = None  # verified: its slot was free from then on, while it landed
    landing_row: int | None = None  # the row of the merge queue it waited on (see _pack)

    @property
    def slot_end(self) -> float:
        """When the attempt left its agent slot: verified (then it waits in the merge queue
        without one), else its end."""
        return self.released if self.released is not None else self.end

    def on_slot(self) -> list[Segment]:
        """Its segments while on its agent slot (worktree, agent, its own gates, back-off)."""
        return [seg for seg in self.segments if seg.start < self.slot_end or seg.kind == "agent"]

    def landing(self) -> list[Segment]:
        """Its segments in the merge queue, after it was verified (the merge, its gates)."""
        mine = set(map(id, self.on_slot()))
        return [seg for seg in self.segments if id(seg) not in mine]


@dataclass
class Wait:
    """A task waiting to start (for a file lease, a provider's capacity, ...)."""

    task: str
    start: float
    end: float
    reason: str
    holders: list[str] = field(default_factory=list)


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
    landing_rows: int = 0  # rows of verified attempts waiting to land at once (see _pack)

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
    attempts, waits = _timeline(records, t0, end)
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


# --------------------------------------------------------------------------- timeline


def _timeline(
    records: Sequence[Record], t0: float, run_end: float
) -> tuple[list[AttemptSpan], list[Wait]]:
    """Attempts (with their segments) and waits, from the journal, in start order."""
    spans: dict[tuple[str, int], AttemptSpan] = {}
    current: dict[str, AttemptSpan] = {}  # task -> its attempt under way
    intents: dict[int, tuple[Record, AttemptSpan]] = {}  # seq of an open intent -> span
    waiting: dict[str, Wait] = {}
    waits: list[Wait] = []
    for rec in records:
        f = rec.fields
        at = rec.ts - t0
        task = str(f.get("task") or "")
        if rec.type == "decision" and f.get("action") == "spawn":
            if task in waiting:
                waiting.pop(task).end = at
            new = AttemptSpan(task, int(f.get("attempt") or 0), 0, at, at)
            spans[(task, new.attempt)] = current[task] = new
            continue
        if rec.type == "decision" and f.get("action") == "wait" and task not in waiting:
            wait = Wait(task, at, at, str(f.get("reason") or ""), list(f.get("holders") or []))
            waiting[task] = wait
            waits.append(wait)
            continue
        span = _span_of(rec, spans, current, intents)
        if span is None:
            continue
        span.end = max(span.end, at)
        _apply(rec, at, span, intents)
        if rec.type == "task_finished" or (
            rec.type == "decision" and f.get("action") in ("retry", "give_up")
        ):
            current.pop(task, None)
    for wait in waiting.values():
        wait.end = run_end
    for span in current.values():
        for seg in span.segments:
            if seg.ok is None and seg.end <= seg.start:
                seg.end = run_end
        span.end = max(span.end, run_end) if span.outcome == "running" else span.end
    ordered = sorted(spans.values(), key=lambda s: (s.start, s.task, s.attempt))
    _pack(ordered)
    return ordered, waits


def _span_of(
    rec: Record,
    spans: dict[tuple[str, int], AttemptSpan],
    current: dict[str, AttemptSpan],
    intents: dict[int, tuple[Record, AttemptSpan]],
) -> AttemptSpan | None:
    if rec.of is not None and rec.of in intents:
        return intents[rec.of][1]
    task = rec.fields.get("task")
    if not isinstance(task, str):
        return None
    attempt = rec.fields.get("attempt")
    if isinstance(attempt, int) and (task, attempt) in spans:
        return spans[(task, attempt)]
    return current.get(task)


def _apply(
    rec: Record, at: float, span: AttemptSpan, intents: dict[int, tuple[Record, AttemptSpan]]
) -> None:
    """Fold one record into its attempt."""
    f = rec.fields
    if rec.kind == "intent" and rec.type in ("workspace", "gates", "merge"):
        intents[rec.seq] = (rec, span)
        kind = {"workspace": "setup", "gates": "gates", "merge": "merge"}[rec.type]
        label = f"{f.get('stage')} gates" if rec.type == "gates" else kind
        span.segments.append(Segment(kind, at, at, None, label))
        return
    if rec.kind in ("done", "fail") and rec.of in intents:
        intent, _ = intents.pop(rec.of)
        seg = _open_segment(span, {"workspace": "setup"}.get(intent.type, intent.type))
        if seg is not None:
            seg.end = at
            seg.ok = rec.kind == "done" and f.get("passed", True) is not False
        return
    if rec.type == "decision" and f.get("action") == "backoff":
        seconds = float(f.get("seconds") or 0.0)
        span.segments.append(Segment("backoff", at, at + seconds, True, f"back-off {seconds}s"))
        span.end = max(span.end, at + seconds)
    elif rec.type == "attempt_started":
        span.agent, span.model, span.tier = str(f.get("agent")), f.get("model"), f.get("tier")
        span.worker = f.get("worker")
        span.segments.append(Segment("agent", at, at, None, str(f.get("agent"))))
    elif rec.type == "attempt_finished":
        seg = _open_segment(span, "agent")
        if seg is not None:
            seg.end, seg.ok = at, f.get("outcome") == "success"
            seg.label = f"{span.agent}: {f.get('outcome')}"
        ledger = f.get("ledger") or {}
        span.tokens = dict(ledger.get("tokens") or {})
        cost = f.get("cost_usd")
        span.cost_usd = float(cost) if isinstance(cost, int | float) else None
        span.local = ledger.get("local")
        if f.get("outcome") != "success":
            span.reason = str(f.get("reason") or f.get("outcome"))
            if f.get("outcome") not in ("failed", "timed_out"):
                span.outcome = str(f.get("outcome"))
    elif rec.type == "attempt_lost":
        span.outcome, span.reason = "stopped", f"worker {f.get('worker')} lost"
    elif rec.type == "merge_refused":
        span.reason = str(f.get("reason") or "merge refused")
    elif rec.type == "gate_result" and not f.get("passed"):
        span.reason = span.reason or f"gate {f.get('gate')}: {f.get('summary')}"
    elif rec.type == "verified":
        span.released = at
    elif rec.type == "merged":
        span.outcome = "landed"
    elif rec.type == "decision" and f.get("action") in ("retry", "give_up"):
        if span.outcome == "running":
            span.outcome = "retried" if f["action"] == "retry" else "failed"
    elif rec.type == "task_finished" and span.outcome == "running":
        status = str(f.get("status"))
        span.outcome = {"landed": "landed", "failed": "failed"}.get(status, "stopped")
        span.reason = span.reason or str(f.get("reason") or "")


def _open_segment(span: AttemptSpan, kind: str) -> Segment | None:
    for seg in reversed(span.segments):
        if seg.kind == kind:
            return seg if seg.ok is None else None
    return None


def _pack(spans: list[AttemptSpan]) -> None:
    """Put each attempt on the lowest slot free at its start (spans in start order), and the
    time each verified attempt then waited to land on the lowest free row of the merge queue.

    A verified attempt leaves its agent slot (the engine starts another agent there) and keeps
    its file lease until it lands: its slot is taken until :attr:`AttemptSpan.slot_end`."""
    free_at: list[float] = []
    for span in spans:
        for slot, until in enumerate(free_at):
            if until <= span.start:
                span.slot, free_at[slot] = slot, span.slot_end
                break
        else:
            span.slot = len(free_at)
            free_at.append(span.slot_end)
    rows: list[float] = []
    for span in sorted(spans, key=lambda s: (s.slot_end, s.task, s.attempt)):
        if span.released is None or not span.landing():
            continue
        row = next((i for i, until in enumerate(rows) if until <= span.released), len(rows))
        if row == len(rows):
            rows.append(span.end)
        rows[row] = span.end
        span.landing_row = row


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
