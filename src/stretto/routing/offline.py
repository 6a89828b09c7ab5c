"""The router of ``stretto run``, driven offline: the replay of recorded outcomes uses it.

:class:`OfflineRouter` makes the same decisions as :class:`~stretto.routing.dispatch.Dispatch`
(the same ``[router]`` settings through :func:`~stretto.routing.dispatch.router_config`, the
same context of an attempt, :func:`~stretto.routing.dispatch.route_by_policy` for the choice,
:func:`~stretto.routing.dispatch.attempt_reward` or ``Policy.credit_task`` for the lesson),
with the policy kept in memory instead of ``.stretto/router/policy.json`` and no ledger. It is
a :class:`~stretto.routing.outcomes.ReplayPolicy`: each recorded task becomes a plan step
(role ``general`` and complexity ``medium`` unless the file gives them, as a plan's defaults;
no owned files declared) and each attempt's recorded cost is what the ledger would have booked.
"""

from __future__ import annotations

from collections.abc import Sequence

from stretto.config import RouterSettings
from stretto.plans.plan import Task
from stretto.routing.arms import Arm
from stretto.routing.dispatch import (
    Route,
    attempt_context,
    attempt_reward,
    route_by_policy,
    router_config,
)
from stretto.routing.outcomes import Seen, TaskView
from stretto.routing.router import Policy


class OfflineRouter:
    """The product's router over recorded tasks, learning online from an empty policy."""

    def __init__(self, settings: RouterSettings) -> None:
        self.config = router_config(settings)
        if not self.config.enabled:
            raise ValueError("the offline router needs [[router.arms]]")
        self.policy = Policy.fresh(self.config)
        self.routes: dict[str, list[Route]] = {}  # task -> its routes so far
        self.costs: dict[str, list[float | None]] = {}

    def first(self, task: TaskView) -> Arm | None:
        """The arm of the task's first attempt."""
        self.routes[task.id], self.costs[task.id] = [], []
        return self._route(task, None)

    def next(self, task: TaskView, attempts: Sequence[Seen]) -> Arm | None:
        """The arm after the task's attempts failed; None when the router gives the task up."""
        return self._route(task, attempts[-1])

    def learn(self, task: TaskView, seen: Seen) -> None:
        """The attempt was judged: learn as ``stretto run`` does (attempt or task credit)."""
        route = self.routes[task.id][-1]
        self.costs[task.id].append(seen.cost_usd)
        if self.config.credit == "task":
            if seen.landed:
                self._credit(task.id, landed=True)
            return
        value = attempt_reward(self.config, route, seen.landed, seen.cost_usd)
        if value is not None:
            self.policy.update(route.arm, route.context, value, seen.cost_usd, landed=seen.landed)

    def end(self, task: TaskView, landed: bool) -> None:
        """The task ended (landed, out of attempts, or given up)."""
        if self.config.credit == "task" and not landed and self.costs.get(task.id):
            self._credit(task.id, landed=False)
        self.routes.pop(task.id, None)
        self.costs.pop(task.id, None)

    def _credit(self, task: str, *, landed: bool) -> None:
        routes, costs = self.routes[task], self.costs[task]
        attempts = [(r.arm, r.context, c) for r, c in zip(routes, costs, strict=True)]
        skip = [n for n, r in enumerate(routes, 1) if r.rule == "pinned"]
        self.policy.credit_task(attempts, landed, skip=skip)
        costs.clear()
        routes.clear()

    def _route(self, view: TaskView, failed: Seen | None) -> Arm | None:
        task = plan_task(view)
        attempt = 1 if failed is None else failed.attempt + 1
        context = attempt_context(task, attempt)
        arm = None if failed is None else failed.arm
        route = route_by_policy(self.policy, task, context, arm, (), self._price)
        self.routes[view.id].append(route)
        return route.arm

    def _price(self, arm: Arm) -> float | None:
        state = self.policy.arm_state(arm)
        return state.cost_total / state.costed if state and state.costed else None


def plan_task(view: TaskView) -> Task:
    """A recorded task as the plan step ``stretto run`` would be handed (a plan's defaults)."""
    return Task(
        id=view.id,
        goal=f"resolve {view.id}",
        title=view.id,
        description="",
        role=view.role or "general",
        complexity=view.complexity or "medium",
        stage="replay",
        files=None,
        lease=("**",),
        depends_on=(),
        explicit_deps=(),
    )
