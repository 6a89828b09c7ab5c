"""What work costs: a plan's estimate before it runs (``--dry-run``), and the spend after
(``stretto cost``), both read from the ledger and the routing policy.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stretto.errors import RunError
from stretto.options import RunOptions
from stretto.plans.plan import Plan
from stretto.routing.ledger import Entry, Ledger, render_cost, summarize, totals


@dataclass(frozen=True, slots=True)
class TaskCost:
    """One task's estimate: its first attempt, and every allowed attempt escalated."""

    task: str
    route: tuple[str, ...]  # arm keys, attempt by attempt (all escalations)
    low: float | None  # the first attempt lands (None: a price is unknown)
    high: float | None  # every attempt runs, each retry escalated


@dataclass
class PlanCost:
    """The estimated cost of a plan, per task and in total, as a range."""

    tasks: list[TaskCost]
    budget: float | None
    unknown: list[str] = field(default_factory=list)  # arms whose price is unknown

    @property
    def low(self) -> float:
        """The cheapest path: every task lands on its first attempt."""
        return sum(t.low or 0.0 for t in self.tasks)

    @property
    def high(self) -> float:
        """Every task uses all its attempts, each retry on a stronger arm."""
        return sum(t.high or 0.0 for t in self.tasks)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``--dry-run --json``)."""
        return {
            "low_usd": round(self.low, 6),
            "high_usd": round(self.high, 6),
            "budget_usd": self.budget,
            "unknown_prices": self.unknown,
            "tasks": [
                {"task": t.task, "route": list(t.route), "low_usd": t.low, "high_usd": t.high}
                for t in self.tasks
            ],
        }

    def lines(self) -> list[str]:
        """Text for the dry run."""
        width = max((len(t.task) for t in self.tasks), default=8)
        out = []
        for t in self.tasks:
            out.append(
                f"{t.task:<{width}}  {_usd(t.low)} .. {_usd(t.high)}  {' -> '.join(t.route)}"
            )
        out.append(f"{'total':<{width}}  {_usd(self.low)} .. {_usd(self.high)}")
        if self.budget is not None:
            verdict = "fits" if self.high <= self.budget else "may not fit"
            if self.low > self.budget:
                verdict = "does not fit"
            out.append(f"budget ${self.budget:.2f}: the plan {verdict}")
        if self.unknown:
            out.append(
                f"unknown price for {', '.join(self.unknown)}: not counted above; add "
                '[prices."MODEL"] input = ..., output = ... (USD per million tokens) '
                "to stretto.toml"
            )
        return out


def _usd(value: float | None) -> str:
    return "     ?" if value is None else f"${value:.2f}"


def estimate_plan(repo: Path, plan: Plan, options: RunOptions) -> PlanCost | None:
    """Each task's cost range with the routing it would get; None if nothing would cost money.

    The route is the router's (or the step's agent and model without ``[[router.arms]]``), with
    the policy as it is now: attempt 1, then each retry as if the one before had failed.
    """
    from stretto.routing.dispatch import Dispatch

    dispatch = Dispatch(repo, "dry-run", options)
    rows: list[TaskCost] = []
    unknown: set[str] = set()
    anything = dispatch.policy is not None
    for task in plan.tasks:
        failed = None
        keys: list[str] = []
        low: float | None = None
        high: float | None = 0.0
        for attempt in range(1, task.max_attempts + 1):
            route = dispatch.choose(task, attempt, failed)
            keys.append(route.arm.key if route.tier else route.agent)
            if route.model or route.agent != "shell":
                anything = True
            if route.estimate is None:
                unknown.add(route.arm.key)
            elif attempt == 1:
                low = route.estimate
            high = None if high is None or route.estimate is None else high + route.estimate
            failed = route.arm
        rows.append(TaskCost(task.id, tuple(keys), low, high))
    if not anything:
        return None
    return PlanCost(rows, options.budget, sorted(unknown))


@dataclass
class CostReport:
    """``stretto cost``: spend grouped one way, with the totals and unpriced entries."""

    by: str
    scope: str  # "run <id>" or "all runs"
    rows: list[dict[str, Any]]
    total: dict[str, Any]
    entries: int

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``--json``)."""
        return {"by": self.by, "scope": self.scope, "rows": self.rows, "total": self.total}

    def lines(self) -> list[str]:
        """Text for the terminal."""
        if not self.entries:
            return [f"no spend recorded yet ({self.scope})"]
        return render_cost(self.rows, self.total, self.by, title=f"spend, {self.scope}")


def cost_report(
    repo: Path,
    *,
    run_id: str | None = None,
    by: str | None = None,
    landed_in: Callable[[str], Collection[tuple[str, int]]] | None = None,
) -> CostReport:
    """Spend so far from ``.stretto/ledger.jsonl``: one run (a prefix is enough), or all.

    ``landed_in(run_id)`` gives the ``(task, attempt)`` pairs that landed in a run (from its
    journal); without it, no attempt counts as landed.
    """
    ledger = Ledger.for_repo(repo)
    entries: list[Entry] = ledger.entries()
    scope = "all runs"
    if run_id is not None:
        ids = sorted({e.run_id for e in entries if e.run_id.startswith(run_id)})
        if not ids:
            raise RunError(f"no spend recorded for a run '{run_id}'; `stretto runs` lists them")
        if len(ids) > 1:
            raise RunError(f"'{run_id}' matches several runs ({', '.join(ids)}); give more of it")
        entries = [e for e in entries if e.run_id == ids[0]]
        scope = f"run {ids[0]}"
    grouping = by or ("task" if run_id else "run")
    landed = {
        (run, task, attempt)
        for run in sorted({e.run_id for e in entries})
        for task, attempt in (landed_in(run) if landed_in else ())
    }
    return CostReport(
        grouping,
        scope,
        summarize(entries, grouping, landed),
        totals(entries, landed),
        len(entries),
    )
