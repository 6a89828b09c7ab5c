"""``stretto trace``: a run in Chrome's trace-event format, for Perfetto and chrome://tracing.

One process (the run); one thread per agent slot (``tid`` = slot + 1), named with metadata
events, plus one thread per row of the merge queue (``tid`` from 2001) and one per row of waits
(``tid`` from 1001). Every attempt is a complete event (``ph: "X"``, category ``attempt``) on
its slot until it was verified, with its segments there (worktree, agent, its gates, back-off)
nested inside it as complete events of their own category; a verified attempt's wait to land
is a complete event of category ``landing`` on a merge-queue row, with its merge and
post-merge gates nested inside. Times are microseconds
from the run's start. See the format's description, "Trace Event Format" (Google, 2016).
"""

from __future__ import annotations

from typing import Any

PID = 1
WAIT_TID = 1001
LANDING_TID = 2001


def _us(seconds: float) -> float:
    return round(seconds * 1_000_000, 1)


def _nested(
    a: Any,
    cat: str,
    name: str,
    start: float,
    end: float,
    tid: int,
    args: dict[str, Any],
    segments: list[Any],
) -> list[dict[str, Any]]:
    """A complete event from ``start`` to ``end`` on ``tid``, and ``segments`` inside it."""
    out: list[dict[str, Any]] = [
        {"name": name, "cat": cat, "ph": "X", "ts": _us(start), "dur": _us(end - start),
         "pid": PID, "tid": tid, "args": args},
    ]  # fmt: skip
    for seg in segments:
        s_start, s_end = max(seg.start, start), min(seg.end, end)
        out.append(
            {
                "name": seg.label or seg.kind,
                "cat": seg.kind,
                "ph": "X",
                "ts": _us(s_start),
                "dur": _us(max(s_end - s_start, 0.0)),
                "pid": PID,
                "tid": tid,
                "args": {"task": a.task, "attempt": a.attempt, "ok": seg.ok},
            }
        )
    return out


def trace_events(report: Any) -> dict[str, Any]:
    """The trace of ``report`` (a :class:`stretto.api.RunReport`) as a JSON-ready object."""
    events: list[dict[str, Any]] = [
        _meta("process_name", 0, f"stretto run {report.run_id} ({report.plan})"),
    ]
    for slot in range(report.slots):
        events.append(_meta("thread_name", slot + 1, f"slot {slot + 1}"))
        events.append(_meta("thread_sort_index", slot + 1, slot + 1, key="sort_index"))
    for row in range(report.landing_rows):
        events.append(_meta("thread_name", LANDING_TID + row, f"landing {row + 1}"))
        events.append(_meta("thread_sort_index", LANDING_TID + row, 500 + row, key="sort_index"))
    for a in report.attempts:
        args = {
            "task": a.task,
            "attempt": a.attempt,
            "agent": a.agent,
            "model": a.model,
            "tier": a.tier,
            "outcome": a.outcome,
            "reason": a.reason,
            "tokens": dict(a.tokens),
            "cost_usd": a.cost_usd,
        }
        events += _nested(a, "attempt", f"{a.task} #{a.attempt}", a.start, a.slot_end,
                          a.slot + 1, args, a.on_slot())  # fmt: skip
        if a.landing_row is not None:
            events += _nested(a, "landing", f"{a.task} #{a.attempt} lands", a.slot_end, a.end,
                              LANDING_TID + a.landing_row, {"task": a.task, "attempt": a.attempt,
                              "outcome": a.outcome}, a.landing())  # fmt: skip
    rows: list[float] = []
    for wait in sorted(report.waits, key=lambda w: w.start):
        row = next((i for i, end in enumerate(rows) if end <= wait.start), len(rows))
        if row == len(rows):
            rows.append(0.0)
            events.append(_meta("thread_name", WAIT_TID + row, f"waiting {row + 1}"))
        rows[row] = wait.end
        events.append(
            {
                "name": f"{wait.task} waits",
                "cat": "wait",
                "ph": "X",
                "ts": _us(wait.start),
                "dur": _us(wait.end - wait.start),
                "pid": PID,
                "tid": WAIT_TID + row,
                "args": {"task": wait.task, "reason": wait.reason, "holders": wait.holders},
            }
        )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "run_id": report.run_id,
            "plan": report.plan,
            "state": report.state,
            "started_unix": report.started,
            "wall_seconds": report.wall,
            "cost_usd": report.cost_usd,
        },
    }


def _meta(name: str, tid: int, value: Any, *, key: str = "name") -> dict[str, Any]:
    return {"name": name, "ph": "M", "pid": PID, "tid": tid, "args": {key: value}}
