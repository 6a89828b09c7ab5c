"""``stretto explain TASK``: why each attempt of a task ran where it ran, from the journal.

For every attempt: the arm (agent, model, tier), the rule that chose it (pin, cascade step,
bandit, retry escalation), the feature vector (with the repository, language and, on a retry,
what the failed attempt used), every arm's estimate and confidence bound, what the attempt
cost and how it ended; and when the router gave a task up instead of retrying it, why (the
retry's estimated chance to land times the landed value, against its expected cost).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stretto.errors import RunError


@dataclass
class AttemptRoute:
    """One attempt as the journal tells it."""

    attempt: int
    route: dict[str, Any]
    outcome: str = ""
    reason: str = ""
    cost_usd: float | None = None
    cost_source: str = ""
    result: str = ""  # landed | retry | give_up | stopped
    learned: dict[str, Any] | None = None
    worker: str | None = None  # the cluster worker that ran it (None: the engine's machine)


@dataclass
class Explanation:
    """The routing story of one task in one run."""

    run_id: str
    task: str
    status: str
    attempts: list[AttemptRoute] = field(default_factory=list)
    merge: list[str] = field(default_factory=list)  # its way through the merge queue / train
    waits: list[str] = field(default_factory=list)  # why it waited to start, in words

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``--json``)."""
        return {
            "run_id": self.run_id,
            "task": self.task,
            "status": self.status,
            "attempts": [a.__dict__ for a in self.attempts],
            "merge": list(self.merge),
            "waits": list(self.waits),
        }

    def lines(self) -> list[str]:
        """Text for the terminal."""
        from stretto.routing.choice import render_choice

        out = [f"task {self.task} in run {self.run_id}: {self.status}"]
        out += [f"waited: {why}" for why in self.waits]
        if not self.attempts:
            out.append("  no attempt started (it never got an agent)")
        for a in self.attempts:
            r = a.route
            arm = r["agent"] + (f"/{r['model']}" if r.get("model") else "")
            tier = f" ({r['tier']})" if r.get("tier") else ""
            estimate = r.get("estimate_usd")
            est = f", estimated ${estimate:.4f}" if isinstance(estimate, int | float) else ""
            if r["rule"] == "give-up":
                out.append(f"attempt {a.attempt}: not started: the router gave the task up")
                out.append(f"  rule: give-up: {r['reason']}")
                if r.get("choice"):
                    out.extend(f"  {line}" for line in render_choice(r["choice"]))
                continue
            out.append(f"attempt {a.attempt}: {arm}{tier}{est}")
            out.append(f"  rule: {r['rule']}: {r['reason']}")
            if a.worker:
                out.append(f"  ran on worker {a.worker}")
            if r.get("choice"):
                out.extend(f"  {line}" for line in render_choice(r["choice"]))
            cost = f"${a.cost_usd:.4f} ({a.cost_source})" if a.cost_usd is not None else "unknown"
            if a.outcome:
                ended = a.result or a.outcome
                why = f": {a.reason}" if a.reason else ""
                out.append(f"  ended: {ended}{why}; agent {a.outcome}, cost {cost}")
            if a.learned:
                out.append(f"  learned: reward {a.learned['reward']} for {a.learned['arm']}")
        if self.merge:
            out.append("merge:")
            out.extend(f"  {line}" for line in self.merge)
        return out


def explain_task(records: Sequence[Any], run_id: str, task: str) -> Explanation:
    """The routing decisions for ``task``, from the run's journal records."""
    start = next((r for r in records if r.type == "run_started"), None)
    known = list(start.fields.get("tasks", [])) if start else []
    if task not in known:
        close = difflib.get_close_matches(task, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RunError(f"no task '{task}' in run {run_id}{hint}; its tasks: {', '.join(known)}")
    story = Explanation(run_id, task, "pending")
    by_attempt: dict[int, AttemptRoute] = {}
    waits = ""
    for rec in records:
        f = rec.fields
        if rec.type == "train":
            why = (f.get("waits") or {}).get(task)
            if why and why != waits:
                waits = why
                story.merge.append(
                    f"train: {why} (cars of up to {f.get('batch')}, {f.get('lanes')} lanes, "
                    f"failure rate {f.get('failure_rate')})"
                )
            continue
        if rec.type == "gate_flaky" and task in (f.get("tasks") or ()):
            story.merge.append(f"gate {f.get('gate')} was flaky on tree {str(f.get('tree'))[:12]}")
            continue
        if f.get("task") != task:
            continue
        if rec.type == "train_joined":
            story.merge.append(f"attempt {f.get('attempt')}: joined the merge train")
        elif rec.type == "merge_refused":
            files = f" ({', '.join(f['files'])})" if f.get("files") else ""
            story.merge.append(f"attempt {f.get('attempt')}: sent back: {f.get('reason')}{files}")
        elif rec.type == "merged":
            cars = f" with car(s) {f['cars']}" if f.get("cars") else ""
            story.merge.append(
                f"attempt {f.get('attempt')}: landed{cars}; target {str(f.get('old'))[:12]} -> "
                f"{str(f.get('new'))[:12]}"
            )
        attempt = int(f.get("attempt") or 0)
        if rec.type == "route":
            keep = {k: v for k, v in f.items() if k not in ("task", "attempt")}
            by_attempt[attempt] = AttemptRoute(attempt, keep)
            story.attempts.append(by_attempt[attempt])
        elif rec.type in ("attempt_started", "attempt_lost") and attempt in by_attempt:
            by_attempt[attempt].worker = f.get("worker")
            if rec.type == "attempt_lost":
                by_attempt[attempt].outcome = "lost"
                by_attempt[attempt].reason = "its worker left the cluster; not counted"
        elif rec.type == "attempt_finished" and attempt in by_attempt:
            a = by_attempt[attempt]
            a.outcome, a.reason = f.get("outcome", ""), f.get("reason", "")
            a.cost_usd, a.cost_source = f.get("cost_usd"), f.get("cost_source", "")
        elif rec.type == "decision" and f.get("action") == "wait":
            holders = ", ".join(f.get("holders") or [])
            why = f.get("why") or (f"{f.get('reason')}" + (f" ({holders})" if holders else ""))
            if why not in story.waits:
                story.waits.append(str(why))
        elif rec.type == "decision" and f.get("action") in ("retry", "give_up"):
            if attempt in by_attempt:
                by_attempt[attempt].result = str(f["action"])
        elif rec.type == "learned" and story.attempts:
            target = by_attempt.get(attempt, story.attempts[-1])
            target.learned = {"arm": f.get("arm"), "reward": f.get("reward")}
        elif rec.type == "task_finished":
            story.status = str(f.get("status"))
            if f.get("reason"):
                story.status += f" ({f['reason']})"
            if f.get("status") == "landed" and story.attempts:
                story.attempts[-1].result = "landed"
    return story
