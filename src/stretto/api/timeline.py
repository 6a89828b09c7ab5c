"""A run's attempts on agent slots over time, and its waits, folded from its journal (pure).

Slots are not journaled: an attempt occupies a slot from its ``spawn`` decision until it is
verified (then it waits in the merge queue without a slot) or ends (its task's next decision),
and attempts are packed on the lowest free slot in start order, so the number of slots is the
most agents that ran at once. The time a verified attempt waits to land is packed apart, on
rows of the merge queue. Times are seconds from the run's start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from stretto.engine.journal import Record


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


def timeline(
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
