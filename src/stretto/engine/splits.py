"""The engine's side of splitting a task that keeps failing.

When a task is given up (its attempts are used up) or fails on the strongest arm the router
has, and ``[planner] split_depth`` allows it, one planning call
(:func:`stretto.planning.planner.split_task`) asks for smaller steps. The answer is journaled (a
fsynced ``split`` record) before it is used; :func:`stretto.planning.splitting.child_tasks` turns
it into tasks, and :meth:`Splits.apply` puts them in the parent's place in the plan. The runner
hands the children to its schedule. Resume calls :meth:`Splits.apply` with the journaled answer,
so a split is never paid for twice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from stretto.engine.context import RunContext
from stretto.engine.journal import crashpoint
from stretto.engine.outcomes import AttemptEnd
from stretto.plans.plan import Plan, Task
from stretto.routing.dispatch import Dispatch


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
