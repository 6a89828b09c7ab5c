"""The runner's side of splitting a task that keeps failing.

When a task is given up (its attempts are used up) or fails on the strongest arm the router
has, and ``[planner] split_depth`` allows it, one planning call
(:func:`stretto.planner.split_task`) asks for smaller steps. The answer is journaled (a fsynced
``split`` record) before it is used; :func:`stretto.splitting.child_tasks` turns it into tasks,
and :meth:`Splits.apply` puts them in the parent's place in the plan and the schedule. Resume
calls :meth:`Splits.apply` with the journaled answer, so a split is never paid for twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from stretto.journal import crashpoint
from stretto.runtypes import AttemptEnd

if TYPE_CHECKING:
    from stretto.plan import Task
    from stretto.runner import Runner


class Splits:
    """Splitting for one run: which tasks may split, the calls under way, how deep each is."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.failure_log: dict[str, list[str]] = {}  # task -> its counted failures, as context
        self.running: set[str] = set()  # tasks whose split call is under way
        self.depth: dict[str, int] = {}  # task -> how many splits made it (0: from the plan)

    def allowed(self, task: str) -> bool:
        """Whether a planner is configured and the task is not split as deep as allowed."""
        planner = self.runner.options.planner
        return bool(planner.agent) and self.depth.get(task, 0) < planner.split_depth

    def at_strongest(self, task: str) -> bool:
        """Whether the task's last attempt failed on the strongest configured tier."""
        route = self.runner.dispatch.routes.get(task)
        arms = self.runner.options.router.arms
        if route is None or not arms or route.tier is None:
            return False
        from stretto.config import TIERS

        top = max(TIERS.index(a.tier) for a in arms)
        return TIERS.index(route.tier) >= top

    def start(self, task: str) -> None:
        """Begin splitting ``task``: it holds its lease while the planner answers."""
        runner = self.runner
        runner.credit_failed(task)
        runner.schedule.splitting(task)
        self.running.add(task)
        runner.active[task] = asyncio.create_task(runner.guard(task, self._call(task)))

    async def _call(self, task_id: str) -> AttemptEnd:
        """One planning call; its answer is journaled before it is used."""
        from stretto.errors import StrettoError
        from stretto.planner import split_task
        from stretto.splitting import SplitRefused, child_tasks

        runner = self.runner
        task = runner.plan.task(task_id)
        planner = runner.options.planner
        logs = self.failure_log.get(task_id, [])
        depth = self.depth.get(task_id, 0) + 1
        intent = runner.intent("split_call", task=task_id, depth=depth, failures=len(logs))
        crashpoint("after-intent:split")
        try:
            result = await runner.blocking(
                split_task,
                runner.repo,
                task,
                logs,
                agent=str(planner.agent),
                settings=runner.options.agent_settings.get(str(planner.agent), {}),
                model=planner.model,
                out_dir=runner.run_dir / "tasks" / task_id / "split",
                env=runner.agent_env(task),
                timeout=planner.timeout,
                existing_ids=set(runner.plan.by_id),
            )
        except StrettoError as error:
            self.book_calls(task_id, getattr(error, "calls", ()), "split")
            runner.journal.fail(intent, error.message)
            return AttemptEnd(False, True, f"split refused: {error.message}")
        self.book_calls(task_id, result.calls, "split")
        try:
            children = child_tasks(task, result.yaml_text, set(runner.plan.by_id))
        except SplitRefused as error:
            runner.journal.fail(intent, str(error))
            return AttemptEnd(False, True, f"split refused: {error}")
        runner.record(
            "split",
            sync=True,  # before the answer is used: resume replays it, never asks twice
            task=task_id,
            depth=depth,
            children=[c.id for c in children],
            plan=result.yaml_text,
        )
        runner.journal.done(intent)
        crashpoint("after-split")
        return AttemptEnd(False, False, "split", children=tuple(children))

    def book_calls(self, task: str, calls: Any, kind: str) -> None:
        """Journal and book the planning calls stretto made (their tokens and dollars)."""
        from stretto.dispatch import adapter_kind, planner_call_entry, planner_call_record

        runner = self.runner
        for call in calls:
            runner.planner_calls += 1
            entry = planner_call_entry(
                call,
                run_id=runner.run_id,
                task=task,
                number=runner.planner_calls,
                kind=kind,
                agent_kind=adapter_kind(call.agent, runner.options),
                prices=runner.dispatch.prices,
            )
            runner.dispatch.add(entry)
            runner.record("planner_call", **planner_call_record(call, entry))

    def end(self, task: str, end: AttemptEnd) -> None:
        """The split call ended: apply its steps, or fail the task with the reason."""
        self.running.discard(task)
        if end.children:
            self.apply(task, list(end.children))
            return
        self.runner.finish(task, "failed", end.reason)
        self.runner.schedule.gave_up(task)

    def apply(self, parent_id: str, children: list[Task], *, record: bool = True) -> None:
        """Put ``children`` in the place of ``parent_id`` (live, or rebuilt by resume)."""
        from stretto.splitting import split_children

        runner = self.runner
        parent = runner.plan.task(parent_id)
        position = runner.plan.tasks.index(parent) + 1
        tasks = (*runner.plan.tasks[:position], *children, *runner.plan.tasks[position:])
        by_id = {**runner.plan.by_id, **{c.id: c for c in children}}
        runner.plan = replace(runner.plan, tasks=tasks, by_id=by_id)
        for child in children:  # their provider's limit is checked at spawn, from the route
            self.depth[child.id] = self.depth.get(parent_id, 0) + 1
        runner.schedule.split(parent_id, split_children(parent, children))
        if record:
            ids = ", ".join(c.id for c in children)
            runner.finish(parent_id, "split", f"split into {ids}")
