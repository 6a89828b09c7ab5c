"""The engine's side of splitting a task that keeps failing.

When a task is given up (its attempts are used up) or fails on the strongest arm the router
has, and ``[planner] split_depth`` allows it, one planning call
(:func:`stretto.planning.planner.split_task`) asks for smaller steps. The answer is journaled (a
fsynced ``split`` record) before it is used; :func:`stretto.planning.splitting.child_tasks` turns
it into tasks, and :meth:`Splits.apply` puts them in the parent's place in the plan. The runner
hands the children to its schedule (:class:`Splitting`, its part of the runner). Resume calls
:meth:`Splits.apply` with the journaled answer, so a split is never paid for twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from stretto.engine.context import RunContext
from stretto.engine.journal import crashpoint
from stretto.engine.outcomes import AttemptEnd
from stretto.plans.plan import Plan, Task
from stretto.routing.dispatch import Dispatch
from stretto.schedule.scheduler import Schedule


class Splits:
    """Splitting for one run: which tasks may split, the calls under way, how deep each is."""

    def __init__(self, ctx: RunContext, dispatch: Dispatch) -> None:
        self.ctx = ctx
        self.dispatch = dispatch
        self.failure_log: dict[str, list[str]] = {}  # task -> its counted failures, as context
        self.running: set[str] = set()  # tasks whose split call is under way
        self.depth: dict[str, int] = {}  # task -> how many splits made it (0: from the plan)

    def allowed(self, task: str) -> bool:
        """Whether a planner is configured and the task is not split as deep as allowed."""
        planner = self.ctx.options.planner
        return bool(planner.agent) and self.depth.get(task, 0) < planner.split_depth

    def at_strongest(self, task: str) -> bool:
        """Whether the task's last attempt failed on the strongest configured tier."""
        route = self.dispatch.routes.get(task)
        arms = self.ctx.options.router.arms
        if route is None or not arms or route.tier is None:
            return False
        from stretto.config import TIERS

        top = max(TIERS.index(a.tier) for a in arms)
        return TIERS.index(route.tier) >= top

    async def call(self, task: Task, existing_ids: set[str]) -> AttemptEnd:
        """One planning call; its answer is journaled before it is used."""
        from stretto.errors import StrettoError
        from stretto.planning.planner import split_task
        from stretto.planning.splitting import SplitRefused, child_tasks

        ctx = self.ctx
        task_id = task.id
        planner = ctx.options.planner
        logs = self.failure_log.get(task_id, [])
        depth = self.depth.get(task_id, 0) + 1
        intent = ctx.intent("split_call", task=task_id, depth=depth, failures=len(logs))
        crashpoint("after-intent:split")
        try:
            result = await ctx.blocking(
                split_task,
                ctx.repo,
                task,
                logs,
                agent=str(planner.agent),
                settings=ctx.options.agent_settings.get(str(planner.agent), {}),
                model=planner.model,
                out_dir=ctx.run_dir / "tasks" / task_id / "split",
                env=ctx.env(task, 0),
                timeout=planner.timeout,
                existing_ids=existing_ids,
            )
        except StrettoError as error:
            self.book_calls(task_id, getattr(error, "calls", ()), "split")
            ctx.journal.fail(intent, error.message)
            return AttemptEnd(False, True, f"split refused: {error.message}")
        self.book_calls(task_id, result.calls, "split")
        try:
            children = child_tasks(task, result.yaml_text, existing_ids)
        except SplitRefused as error:
            ctx.journal.fail(intent, str(error))
            return AttemptEnd(False, True, f"split refused: {error}")
        ctx.record(
            "split",
            sync=True,  # before the answer is used: resume replays it, never asks twice
            task=task_id,
            depth=depth,
            children=[c.id for c in children],
            plan=result.yaml_text,
        )
        ctx.journal.done(intent)
        crashpoint("after-split")
        return AttemptEnd(False, False, "split", children=tuple(children))

    def book_calls(self, task: str, calls: Any, kind: str) -> None:
        """Journal and book the planning calls stretto made (their tokens and dollars)."""
        from stretto.routing.dispatch import adapter_kind, planner_call_entry, planner_call_record

        ctx = self.ctx
        for call in calls:
            ctx.planner_calls += 1
            entry = planner_call_entry(
                call,
                run_id=ctx.run_id,
                task=task,
                number=ctx.planner_calls,
                kind=kind,
                agent_kind=adapter_kind(call.agent, ctx.options),
                prices=self.dispatch.prices,
                local=self.dispatch.local_server(call.agent),
            )
            self.dispatch.add(entry)
            ctx.record("planner_call", **planner_call_record(call, entry))

    def apply(self, plan: Plan, parent_id: str, children: list[Task]) -> tuple[Plan, Any]:
        """``plan`` with ``children`` in the place of ``parent_id``, and the schedule's edit
        (:func:`stretto.planning.splitting.split_children`) for the runner to apply."""
        from stretto.planning.splitting import split_children

        parent = plan.task(parent_id)
        position = plan.tasks.index(parent) + 1
        tasks = (*plan.tasks[:position], *children, *plan.tasks[position:])
        by_id = {**plan.by_id, **{c.id: c for c in children}}
        for child in children:  # their provider's limit is checked at spawn, from the route
            self.depth[child.id] = self.depth.get(parent_id, 0) + 1
        return replace(plan, tasks=tasks, by_id=by_id), split_children(parent, children)


class Splitting:
    """The runner's part in splitting (a mixin: the runner owns the state): start the planning
    call for a task given up on, and put its answer in the task's place."""

    plan: Plan
    schedule: Schedule
    splits: Splits
    active: dict[str, asyncio.Task[None]]

    def credit_failed(self, task: str) -> None:
        raise NotImplementedError

    def finish(self, task: str, status: str, reason: str, commit: str | None = None) -> None:
        raise NotImplementedError

    async def guard(self, task: str, job: Any) -> None:
        raise NotImplementedError

    def _start_split(self, task: str) -> None:
        """Begin splitting ``task``: it holds its lease while the planner answers."""
        self.credit_failed(task)
        self.schedule.splitting(task)
        self.splits.running.add(task)
        job = self.splits.call(self.plan.task(task), set(self.plan.by_id))
        self.active[task] = asyncio.create_task(self.guard(task, job))

    def _end_split(self, task: str, end: AttemptEnd) -> None:
        """The split call ended: apply its steps, or fail the task with the reason."""
        self.splits.running.discard(task)
        if end.children:
            self.apply_split(task, list(end.children))
            return
        self.finish(task, "failed", end.reason)
        self.schedule.gave_up(task)

    def apply_split(self, parent: str, children: list[Task], *, record: bool = True) -> None:
        """Put ``children`` in the place of ``parent`` (live, or rebuilt by resume)."""
        self.plan, edit = self.splits.apply(self.plan, parent, children)
        self.schedule.split(parent, edit)
        if record:
            self.finish(parent, "split", f"split into {', '.join(c.id for c in children)}")
