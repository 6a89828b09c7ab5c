"""Spending limits in the runner: the budget reached, a provider out of credit.

:class:`Spending` is the part of :class:`~stretto.engine.runner.Runner` that stops new work
when money runs out: it notices a spent budget (run or daily) and, with ``on_exceed = "stop"``,
ends the agents that are running; it marks a provider out of credit; and it leaves the tasks
that can no longer start as skipped, resumably. The runner's loop stays the only place that
starts or ends attempts.
"""

from __future__ import annotations

import asyncio
from typing import Any

from stretto.engine.attempt import Attempts
from stretto.engine.journal import Record
from stretto.engine.outcomes import TaskReport
from stretto.engine.providers import ProviderLimits
from stretto.options import RunOptions
from stretto.plans.plan import Plan
from stretto.routing.dispatch import Dispatch
from stretto.schedule.scheduler import Schedule


class Spending:
    """Budget and credit stops for the runner (a mixin: the runner owns the state)."""

    plan: Plan
    schedule: Schedule
    attempts: Attempts
    dispatch: Dispatch
    providers: ProviderLimits
    active: dict[str, asyncio.Task[None]]
    budget_stop: str | None
    reports: dict[str, TaskReport]
    options: RunOptions

    def record(self, type_: str, **fields: Any) -> Record:
        raise NotImplementedError

    def _check_budget(self) -> None:
        if self.budget_stop is None and self.dispatch.exceeded():
            self._stop_for_budget()

    def _stop_for_budget(self) -> None:
        """The budget is spent: start nothing new; with on_exceed = "stop", end running agents."""
        spent, budget = self.dispatch.run_spent, self.options.budget
        over_run = budget is not None and spent >= budget
        over_day = (
            self.options.daily_cap is not None and self.dispatch.day_spent >= self.options.daily_cap
        )
        if self.dispatch.unbounded is not None and not (over_run or over_day):
            self.budget_stop = f"budget cannot be kept: {self.dispatch.unbounded}"
        elif over_run:
            self.budget_stop = f"budget reached: ${spent:.2f} of the ${budget:.2f} run budget spent"
        else:
            self.budget_stop = (
                f"budget reached: ${self.dispatch.day_spent:.2f} of the "
                f"${self.options.daily_cap:.2f} daily cap spent"
            )
        self.record("decision", action="stop_budget", reason=self.budget_stop)
        if self.options.on_exceed == "stop":
            for task in sorted(self.attempts.in_agent):
                route = self.dispatch.routes.get(task)
                if route is not None and self.dispatch.local_server(route.agent):
                    continue  # a local model costs nothing: budgets leave it be
                self.attempts.stopping[task] = self.budget_stop
                self.active[task].cancel()

    def _leave_undone(self, reason: str, **flag: bool) -> None:
        """The tasks that cannot start now (budget spent, provider out of credit), marked so
        that ``stretto resume`` takes them up again (``budget=True`` or ``resumable=True``)."""
        for task in self.plan.tasks:
            if not self.schedule.state[task.id].finished:
                attempts = self.schedule.attempts[task.id]
                self.reports[task.id] = TaskReport(task.id, "skipped", attempts, reason)
                self.record(
                    "task_finished",
                    task=task.id,
                    status="skipped",
                    reason=reason,
                    attempts=attempts,
                    commit=None,
                    **flag,
                )

    def _out_of_credit(self, task: str, reason: str) -> None:
        """``task``'s provider said the account has no credit left: start nothing more there."""
        route = self.dispatch.routes.get(task)
        agent = route.agent if route is not None else self.options.default_agent
        key = self.providers.out_of_credit(agent, reason)
        if key is not None:
            self.record("decision", action="out_of_credit", provider=key, task=task, reason=reason)
