"""What a run prints while it runs and when it ends, fed by the same events as the journal.

Three renderers, chosen by the CLI:

* :class:`LiveView` on a terminal: finished work scrolls by above a block that is redrawn in
  place, one line per running agent (task, agent, elapsed time, state) and a progress bar;
* :class:`PlainView` without a terminal: timestamped lines, one per notable event;
* :class:`JsonView` with ``--json``: every journal record as one JSON line.

Each writes to ``out``, by default the ``sys.stdout`` of the moment it is made (not of import
time: click's ``CliRunner`` and pytest swap it).
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from stretto.api import Record, RunStatus, RunSummary


def _task_line(rec: Record) -> str | None:
    f = rec.fields
    t = rec.type
    if t == "run_started":
        options = f["options"]
        return (
            f"run {f['run_id']} started: {f['plan']} ({len(f['tasks'])} tasks, "
            f"target {options['target']}, {options['max_agents']} agents)"
        )
    if t == "attempt_started":
        model = f"/{f['model']}" if f.get("model") else ""
        return f"start   {f['task']} (attempt {f['attempt']}, {f['agent']}{model}, pid {f['pid']})"
    if t == "split_call" and rec.kind == "intent":
        return f"split   {f['task']}: asking the planner for smaller steps"
    if t == "split":
        return f"split   {f['task']} -> {', '.join(f['children'])}"
    if t == "decision" and f.get("action") == "stop_budget":
        return f"budget  {f['reason']}: no new attempts start"
    if t == "decision" and f.get("action") == "out_of_credit":
        return (
            f"credit  {f['provider']} is out of credit ({f['reason']}): nothing more starts there"
        )
    if t == "decision" and f.get("action") == "wait" and f.get("reason") == "lease":
        holders = ", ".join(f.get("holders") or [])
        return f"wait    {f['task']}: its files overlap those of {holders}"
    if t == "attempt_finished" and f["outcome"] != "success":
        reason = f.get("reason") or ""
        return f"agent   {f['task']} attempt {f['attempt']}: {f['outcome']} {reason}".rstrip()
    if t == "gate_result" and not f["passed"]:
        return f"gate    {f['task']} {f['gate']} failed: {f['summary']}"
    if t == "merge_refused":
        return f"refused {f['task']}: {f['reason']}"
    if t == "merged":
        return f"merged  {f['task']} -> {str(f['new'])[:12]}"
    if t == "decision" and f.get("action") == "retry":
        return f"retry   {f['task']} (failure {f['failures']} of {f['limit']})"
    if t == "task_finished":
        reason = f" ({f['reason']})" if f.get("reason") else ""
        return f"{f['status']:<7} {f['task']}{reason}"
    if t == "resume_started":
        killed = f.get("killed") or []
        return f"resumed; ended {len(killed)} leftover process(es)"
    if t == "control":
        target = f" {f['task']}" if f.get("task") else ""
        value = f" {f['value']:g}" if isinstance(f.get("value"), int | float) else ""
        said = f.get("result") if f.get("ok") else f"refused: {f.get('error')}"
        return f"control {f['action']}{target}{value}: {said}"
    if t == "stop_requested":
        return f"stop    {f.get('reason')}: ending running agents"
    if t == "partial_kept":
        return f"kept    {f['task']}: unfinished work on branch {f['branch']}"
    if t == "goal" and "run_id" in f:
        return f"run {f['run_id']}: planning the goal (one model call)"
    return None


def event_line(rec: Record) -> str:
    """One line for any record (``stretto events``): seq, time, type, what it says."""
    stamp = time.strftime("%H:%M:%S", time.localtime(rec.ts))
    text = _task_line(rec)
    if text is None:
        shown = []
        for key, value in rec.fields.items():
            if isinstance(value, str | int | float | bool) or value is None:
                shown.append(f"{key}={value}")
        text = " ".join(shown)
        if len(text) > 160:
            text = text[:157] + "..."
    kind = "" if rec.kind == "event" else f"[{rec.kind}] "
    return f"{rec.seq:>6} {stamp} {rec.type:<16} {kind}{text}".rstrip()


class JsonView:
    """One JSON object per journal record."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout

    def __call__(self, rec: Record) -> None:
        self.out.write(json.dumps(rec.to_dict(), ensure_ascii=False) + "\n")
        self.out.flush()

    def close(self) -> None:
        """Nothing to tidy up."""


class PlainView:
    """Timestamped lines for notable events (for logs and CI)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout

    def __call__(self, rec: Record) -> None:
        line = _task_line(rec)
        if line:
            stamp = time.strftime("%H:%M:%S", time.localtime(rec.ts))
            self.out.write(f"{stamp} {line}\n")
            self.out.flush()

    def close(self) -> None:
        """Nothing to tidy up."""


class LiveView:
    """A redrawn block of running agents and a progress bar, with events scrolling above."""

    def __init__(self, out: TextIO | None = None, refresh: float = 0.25) -> None:
        self.out = out if out is not None else sys.stdout
        self.lock = threading.Lock()
        self.running: dict[str, dict[str, Any]] = {}
        self.total = 0
        self.finished = 0
        self.drawn = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._tick, args=(refresh,), daemon=True)
        self.thread.start()

    def __call__(self, rec: Record) -> None:
        f = rec.fields
        with self.lock:
            if rec.type == "run_started":
                self.total = len(f["tasks"])
            elif rec.type == "attempt_started":
                self.running[f["task"]] = {
                    "agent": f["agent"],
                    "attempt": f["attempt"],
                    "since": rec.ts,
                    "state": "agent",
                }
            elif rec.type == "attempt_finished" and f["task"] in self.running:
                self.running[f["task"]]["state"] = "gates"
            elif rec.type == "verified" and f["task"] in self.running:
                self.running[f["task"]]["state"] = "merge queue"
            elif rec.type == "decision" and f.get("action") in ("retry", "give_up"):
                self.running.pop(f["task"], None)
            elif rec.type == "task_finished":
                self.running.pop(f["task"], None)
                self.finished += 1
            line = _task_line(rec)
            self._clear()
            if line:
                stamp = time.strftime("%H:%M:%S", time.localtime(rec.ts))
                self.out.write(f"{stamp} {line}\n")
            self._draw()

    def _tick(self, refresh: float) -> None:
        while not self.stop.wait(refresh):
            with self.lock:
                self._clear()
                self._draw()

    def _clear(self) -> None:
        if self.drawn:
            self.out.write(f"\033[{self.drawn}F\033[J")
            self.drawn = 0

    def _draw(self) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        fit = max(1, width - 1)  # a line that wraps would break the cursor-up count of _clear
        now = time.time()
        lines = []
        for task, info in sorted(self.running.items(), key=lambda kv: kv[1]["since"]):
            elapsed = now - info["since"]
            text = (
                f"  {task[:40]:<40} {info['agent']:<10} "
                f"{elapsed:6.1f}s  {info['state']} (attempt {info['attempt']})"
            )[:fit]
            # Colour after cutting, so that a narrow terminal never gets half an escape code.
            lines.append(f"{text[:2]}\033[36m{text[2:42]}\033[0m{text[42:]}")
        if self.total:
            bar_width = max(10, min(40, width - 30))
            done = int(bar_width * self.finished / self.total)
            bar = (
                f"  [{'#' * done}{'.' * (bar_width - done)}] {self.finished}/{self.total} tasks, "
                f"{len(self.running)} running"
            )
            lines.append(bar[:fit])
        for line in lines:
            self.out.write(line + "\n")
        self.drawn = len(lines)
        self.out.flush()

    def close(self) -> None:
        """Stop redrawing and leave the screen clean."""
        self.stop.set()
        self.thread.join(timeout=1)
        with self.lock:
            self._clear()
            self.out.flush()


def status_lines(state: RunStatus) -> list[str]:
    """``stretto status``'s table: the run's line, then one line per task (state, id,
    attempts, reason or why it waits). ``stretto live`` shows the same rows."""
    counts = ", ".join(f"{n} {k}" for k, n in sorted(state.counts().items()))
    extra: list[str] = []
    if state.over:
        pass  # what it ended with is in the counts and the notes
    elif state.budget is not None:
        extra.append(f"${state.cost_usd:.2f} of ${state.budget:.2f}")
    if state.max_agents and not state.over:
        extra.append(f"{state.max_agents} agents")
    more = f"; {', '.join(extra)}" if extra else ""
    lines = [
        f"run {state.run_id}: {state.state} ({state.plan}; target {state.target}; {counts}{more})"
    ]
    width = max((len(t) for t in state.tasks), default=8)
    for task in state.tasks.values():
        reason = f"  {task.reason}" if task.reason else ""
        if not reason and task.waiting_for and task.state in ("pending", "retrying", "merging"):
            reason = f"  waiting: {task.waiting_for}"
        if task.worker:
            reason = f"  on {task.worker}{reason}"
        lines.append(f"  {task.state:<11} {task.id:<{width}}  attempts {task.attempts}{reason}")
    head = train_line(state)
    if head and state.train:
        lines.append(head)
        for car in state.train["cars"]:
            lines.append(f"  car {car['car']} {car['state']:<8} {', '.join(car['branches'])}")
    return lines


def train_line(state: RunStatus) -> str:
    """The merge train in one line (its cars, batch size, lanes, failure rate), or "" when no
    train runs; ``stretto status`` and ``stretto live``'s header show it."""
    train = state.train
    if not train or not train.get("cars") or state.over:
        return ""
    return (
        f"merge train: {len(train['cars'])} car(s), up to {train.get('batch')} branch(es) "
        f"a car, {train.get('lanes')} lane(s), failure rate {train.get('failure_rate')}"
    )


def render_summary(summary: RunSummary, *, serial_hint: bool = True) -> str:
    """The end-of-run summary: each task's outcome, wall time, time saved by parallelism."""
    lines = [f"run {summary.run_id}: {summary.status}"]
    width = max((len(t.task) for t in summary.tasks), default=10)
    for task in summary.tasks:
        mark = {"landed": "ok  ", "failed": "FAIL", "skipped": "skip", "cancelled": "cncl"}.get(
            task.status, task.status
        )
        extra = f" {task.commit[:12]}" if task.commit else ""
        reason = f"  {task.reason}" if task.reason and task.status != "landed" else ""
        lines.append(f"  {mark} {task.task:<{width}}  attempts {task.attempts}{extra}{reason}")
    landed = summary.landed
    lines.append(
        f"{landed} of {len(summary.tasks)} task(s) landed on '{summary.target}'"
        + (f" (now at {summary.head[:12]})" if summary.head else "")
    )
    if serial_hint and summary.wall > 0:
        ratio = summary.agent_seconds / summary.wall if summary.wall else 0
        saved = max(0.0, summary.agent_seconds - summary.wall)
        lines.append(
            f"wall time {summary.wall:.1f}s; agents ran {summary.agent_seconds:.1f}s in total "
            f"({ratio:.1f}x parallel, {saved:.1f}s saved over running them one by one)"
        )
    if summary.cost_usd or summary.budget is not None or summary.unpriced:
        spent = f"cost ${summary.cost_usd:.4f}"
        if summary.budget is not None:
            spent += f" of a ${summary.budget:.2f} budget"
        if summary.unpriced:
            spent += f" (with {summary.unpriced} attempt(s) of unknown price at their top price)"
        lines.append(spent + "; `stretto cost` breaks it down")
    lines.extend(summary.notes)
    return "\n".join(lines)
