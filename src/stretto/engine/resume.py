"""``stretto resume``: finish a run after stretto itself was killed at any moment.

The rule (shared/docs/DURABILITY.md): look at the world instead of trusting the journal.

1. Take the run's lock (a second ``resume`` beside a live one is refused) and repair a torn
   last journal line.
2. End every process that carries the run's token (agents and gates of the dead generation);
   none of them is adopted, their attempts are retried without counting as failures.
3. Settle open intents: a target advance whose ref already moved is done; one whose ref is still
   at the old commit is redone (its merge had passed the gates); everything else is marked
   interrupted.
4. Read the target's history: a task whose trailers are there has landed, whatever the
   journal says (the trailer is the idempotency key, so nothing is merged twice).
5. A task verified but not landed goes straight back to the merge queue with its recorded
   commit: verified work is never redone or lost.
6. Worktrees and branches of attempts that died are removed; the rest runs as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stretto.engine import merge as merging
from stretto.engine.additions import added_in
from stretto.engine.journal import JOURNAL_NAME, Journal, Record, open_intents, read_journal
from stretto.engine.outcomes import RunSummary, TaskReport
from stretto.engine.runner import Runner, Sink
from stretto.engine.runs import resolve_run, saved_plan
from stretto.engine.workspace import Workspace, branch_name, remove_workspace, worktrees_root
from stretto.errors import RunError
from stretto.git import rev_parse
from stretto.options import RunOptions
from stretto.process import kill_token


@dataclass
class Recovered:
    """What the journal says about each task, before looking at the world."""

    attempts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    finished: dict[str, str] = field(default_factory=dict)  # task -> landed|failed|skipped
    verified: dict[str, tuple[int, str, str]] = field(default_factory=dict)  # attempt, commit, tree
    spawned: dict[str, set[int]] = field(default_factory=dict)
    ended: dict[str, set[int]] = field(default_factory=dict)  # attempts that failed or landed
    limits: dict[str, int] = field(default_factory=dict)  # task -> attempts allowed (retry)
    partial: set[tuple[str, int]] = field(default_factory=set)  # attempts whose branch is kept
    paused: bool = False
    budget: float | None = None  # set by a control command
    max_agents: int | None = None  # set by a control command
    has_budget: bool = False


#: Run statuses that left tasks undone for ``stretto resume`` to take up.
RESUMABLE = ("budget_reached", "out_of_credit", "interrupted", "cancelled")


def _left_undone(fields: Mapping[str, Any]) -> bool:
    """A ``task_finished`` record of a task left for resume (budget spent, no credit)."""
    return bool(fields.get("budget") or fields.get("resumable"))


def recover(records: list[Record]) -> Recovered:
    """Fold the journal into per-task facts."""
    out = Recovered()
    for rec in records:
        f = rec.fields
        if rec.type == "control" and f.get("ok"):
            _replay_control(out, f)
            continue
        if rec.type == "partial_kept":
            out.partial.add((str(f.get("task")), int(f.get("attempt", 0))))
            continue
        task = f.get("task")
        if not isinstance(task, str):
            continue
        if rec.type == "decision" and f.get("action") == "spawn":
            out.attempts[task] = max(out.attempts.get(task, 0), int(f["attempt"]))
            out.spawned.setdefault(task, set()).add(int(f["attempt"]))
        elif rec.type == "decision" and f.get("action") in ("retry", "give_up"):
            if f.get("counted", True):
                out.failures[task] = out.failures.get(task, 0) + 1
            out.ended.setdefault(task, set()).add(int(f.get("attempt", out.attempts.get(task, 0))))
        elif rec.type == "verified":
            out.verified[task] = (int(f["attempt"]), str(f["commit"]), str(f.get("tree", "")))
        elif rec.type == "task_finished" and not _left_undone(f):
            out.finished[task] = str(f["status"])
    for task, ended in out.ended.items():
        # A verified attempt that then failed (conflict, merge gates) is not pending.
        if task in out.verified and out.verified[task][0] in ended:
            del out.verified[task]
    return out


def _replay_control(out: Recovered, f: Mapping[str, Any]) -> None:
    """The lasting effect of a journaled control command (cancel of a task is a
    ``task_finished`` record of its own)."""
    action = f.get("action")
    if action in ("pause", "unpause"):
        out.paused = action == "pause"
    elif action == "budget":
        out.budget, out.has_budget = f.get("budget"), True
    elif action == "parallelism":
        out.max_agents = f.get("max_agents")
    elif action == "retry":
        task = str(f.get("task"))
        for name in (task, *f.get("revived", ())):
            out.finished.pop(name, None)
        if isinstance(f.get("limit"), int):
            out.limits[task] = int(f["limit"])


def resume_run(
    cwd: Path,
    run_id: str | None = None,
    *,
    sink: Sink | None = None,
    max_agents: int | None = None,
    budget: float | None = None,
    cluster: str | None = None,
) -> RunSummary:
    """Finish an interrupted run (default: the latest), or go on with one that hit its budget
    (``cluster``: on another Dask scheduler than the run's own, this time)."""
    from stretto.git import toplevel

    repo = toplevel(cwd)
    run_dir = resolve_run(repo, run_id)
    records = read_journal(run_dir / JOURNAL_NAME)
    done = [r for r in records if r.type == "run_finished"]
    if done and done[-1].fields.get("status") in RESUMABLE:
        done = [
            r for r in records if r.type == "run_finished" and r.ts > done[-1].ts
        ]  # it stopped at its budget or a provider's credit: going on is what resume is for
    if done:
        raise RunError(
            f"run {run_dir.name} already finished ({done[-1].fields.get('status')}); "
            "nothing to resume. Start a new run with `stretto run PLAN`"
        )
    if not any(r.type == "run_started" for r in records):
        raise RunError(
            f"run {run_dir.name} was stopped before it started (its journal has no run_started "
            "record), so nothing of it ran and there is nothing to resume. Start it again with "
            "`stretto run PLAN`; `stretto clean` removes its directory"
        )
    journal = Journal.open(run_dir)
    try:
        history = list(journal.history)
        start = next((r for r in history if r.type == "run_started"), None)
        if start is None:
            raise RunError(f"run {run_dir.name} has no run_started record; it cannot be resumed")
        plan = saved_plan(run_dir)
        options = RunOptions.from_dict(start.fields["options"])
        facts = recover(history)
        if facts.has_budget:
            options = RunOptions.from_dict({**options.to_dict(), "budget": facts.budget})
        if facts.max_agents and not max_agents:
            options = RunOptions.from_dict({**options.to_dict(), "max_agents": facts.max_agents})
        if max_agents:
            options = RunOptions.from_dict({**options.to_dict(), "max_agents": max_agents})
        if budget is not None:
            options = RunOptions.from_dict({**options.to_dict(), "budget": budget})
        if cluster:
            options = RunOptions.from_dict({**options.to_dict(), "cluster": cluster})
        run = str(start.fields["run_id"])
        killed = kill_token(run)
        runner = Runner(repo, plan, options, journal, run, sink=sink)
        runner.record("resume_started", killed=killed, generation=journal.gen, budget=budget)
        runner.dispatch.restore(history)
        journal.sync()
        _settle_intents(repo, runner, history, options.target)
        runner.paused = facts.paused
        for rec in history:  # splits replay from their journaled answer: no second call
            added = added_in(rec)  # added tasks, from their journaled form, in the same order
            if added:
                runner.apply_add(added)
            elif rec.type == "split" and rec.fields.get("task") in runner.plan.by_id:
                from stretto.planning.splitting import child_tasks

                parent = runner.plan.task(rec.fields["task"])
                children = child_tasks(parent, rec.fields["plan"], set(runner.plan.by_id))
                runner.apply_split(parent.id, children, record=parent.id not in facts.finished)
        landed = merging.landed_tasks(repo, options.target, run)
        for rec in history:
            if (
                rec.type == "task_finished"
                and rec.fields.get("task") in runner.plan.by_id
                and not _left_undone(rec.fields)
            ):
                f = rec.fields
                runner.reports[f["task"]] = TaskReport(
                    f["task"],
                    f["status"],
                    int(f.get("attempts", 0)),
                    f.get("reason", ""),
                    f.get("commit"),
                )
        merged_seen = {r.fields.get("task") for r in journal_records(journal) if r.type == "merged"}
        for task, commits in landed.items():
            if task in runner.plan.by_id and task not in merged_seen:
                advance = next(
                    (
                        r
                        for r in reversed(history)
                        if r.type == "advance"
                        and r.kind == "intent"
                        and r.fields.get("new") == commits[0]
                    ),
                    None,
                )
                runner.record(
                    "merged",
                    task=task,
                    attempt=facts.attempts.get(task, 0),
                    commit=commits[0],
                    old=advance.fields.get("old") if advance else None,
                    new=commits[0],
                    resumed=True,
                )
            if task in runner.plan.by_id and facts.finished.get(task) != "landed":
                facts.finished[task] = "landed"
                runner.record(
                    "task_finished",
                    task=task,
                    status="landed",
                    reason="found on target at resume",
                    attempts=facts.attempts.get(task, 0),
                    commit=commits[0],
                )
                runner.reports[task] = TaskReport(
                    task, "landed", facts.attempts.get(task, 0), "", commits[0]
                )
        pending_merge = {
            task: facts.verified[task]
            for task in facts.verified
            if task not in facts.finished and task in runner.plan.by_id
        }
        _remove_dead_attempts(repo, run, facts, pending_merge)
        facts.finished = {t: s for t, s in facts.finished.items() if s != "split"}
        runner.schedule.max_attempts.update(facts.limits)
        runner.schedule.restore(
            landed={t for t, s in facts.finished.items() if s == "landed"},
            failed={t for t, s in facts.finished.items() if s in ("failed", "cancelled")},
            skipped={t for t, s in facts.finished.items() if s == "skipped"},
            attempts=facts.attempts,
            failures=facts.failures,
        )
        runner.resumed_merges = pending_merge
        runner.queue.synced_at = _checkout_position(repo, options.target, history, start)
        return asyncio.run(runner.run())
    finally:
        journal.close()


def _checkout_position(repo: Path, target: str, history: list[Record], start: Record) -> str | None:
    """Which commit the user's checkout of the target is at, looking at its files.

    A crash can fall between updating the checkout and journaling it, so the journal's last
    ``checkout_synced`` is only a hint: the recent landings and the run's base are tried too.
    """
    synced = [str(r.fields["commit"]) for r in history if r.type == "checkout_synced"]
    hint = synced[-1] if synced else start.fields.get("base")
    checkout = merging.find_checkout(repo, target, repo / ".stretto")
    if checkout is None:
        return hint
    landed = [
        str(r.fields["new"])
        for r in history
        if r.type in ("merged", "advance") and r.kind in ("event", "intent") and r.fields.get("new")
    ]
    candidates = [*reversed(landed[-20:]), *reversed(synced[-5:]), start.fields.get("base")]
    for commit in dict.fromkeys(c for c in candidates if c):
        if merging.checkout_matches(checkout, commit):
            return commit
    return hint


def journal_records(journal: Journal) -> list[Record]:
    """Everything in the journal so far (history plus what this generation wrote)."""
    return read_journal(journal.path)


def _settle_intents(repo: Path, runner: Runner, history: list[Record], target: str) -> None:
    journal = runner.journal
    for intent in open_intents(history):
        f = intent.fields
        if intent.type == "advance":
            state = merging.reconcile_advance(repo, target, str(f["new"]), str(f["old"]))
            if state == "redo" and merging.advance(
                repo,
                target,
                str(f["new"]),
                str(f["old"]),
                f"stretto: land {f.get('task')} (resumed)",
            ):
                state = "done"
            if state == "done":
                journal.done(intent, resumed=True)
                runner.record(
                    "merged",
                    task=f.get("task"),
                    attempt=f.get("attempt"),
                    commit=f["new"],
                    old=f["old"],
                    new=f["new"],
                    resumed=True,
                )
                continue
            journal.fail(intent, "target moved before the interrupted advance; merging again")
        else:
            journal.fail(intent, "interrupted (stretto stopped before this finished)")


def _remove_dead_attempts(
    repo: Path, run: str, facts: Recovered, pending_merge: dict[str, tuple[int, str, str]]
) -> None:
    """Remove worktrees and branches of attempts that will not continue."""
    root = worktrees_root(repo)
    for task, numbers in facts.spawned.items():
        for attempt in numbers:
            keep_branch = task in pending_merge and pending_merge[task][0] == attempt
            keep_branch = keep_branch or (task, attempt) in facts.partial
            landed = facts.finished.get(task) == "landed" and attempt == max(numbers)
            if attempt in facts.ended.get(task, set()) and not landed:
                continue  # failed attempts are kept for inspection until `stretto clean`
            branch = branch_name(run, task, attempt)
            tip = rev_parse(repo, f"refs/heads/{branch}")
            ws = Workspace(root / f"{run}-{task}-{attempt}", branch, tip or "", run, task, attempt)
            with contextlib.suppress(Exception):
                remove_workspace(
                    repo, ws, delete_branch=bool(tip) and not keep_branch, expected_sha=tip
                )
