"""The values a run trades in: how an attempt ended, each task's end, and the run's summary."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOG_TAIL = 3_000


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended, for the main loop."""

    landed: bool
    counts: bool = True  # whether a failure uses up one of the task's attempts
    reason: str = ""
    log: str = ""
    commit: str | None = None
    retry_after: float | None = None  # seconds the provider asked us to wait (rate limits)
    rate_limited: bool = False  # the provider refused for rate reasons, for now
    out_of_credit: str | None = None  # what the provider said: the account has no credit left
    children: tuple[Any, ...] = ()  # a split: the tasks (stretto.plans.plan.Task) that replace it


@dataclass
class TaskReport:
    """The end state of one task, for the summary."""

    task: str
    status: str
    attempts: int
    reason: str = ""
    commit: str | None = None


@dataclass
class RunSummary:
    """What a run achieved."""

    run_id: str
    status: str  # finished | failed | budget_reached | out_of_credit | interrupted | cancelled
    tasks: list[TaskReport]
    wall: float
    agent_seconds: float
    target: str
    head: str | None
    notes: list[str] = field(default_factory=list)
    cost_usd: float = 0.0  # what this run's attempts and planning calls cost, as budgets count it
    unpriced: int = 0  # attempts of unknown price (in cost_usd at their provider's top price)
    budget: float | None = None
    signal: int | None = None  # the signal that stopped the run (status "interrupted")

    @property
    def landed(self) -> int:
        """Number of tasks that landed."""
        return sum(1 for t in self.tasks if t.status == "landed")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``--json``)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "landed": self.landed,
            "failed": sum(1 for t in self.tasks if t.status == "failed"),
            "skipped": sum(1 for t in self.tasks if t.status == "skipped"),
            "wall_seconds": round(self.wall, 3),
            "agent_seconds": round(self.agent_seconds, 3),
            "target": self.target,
            "head": self.head,
            "tasks": [t.__dict__ for t in self.tasks],
            "notes": self.notes,
            "cost_usd": round(self.cost_usd, 6),
            "unpriced_attempts": self.unpriced,
            "budget_usd": self.budget,
        }


def log_tail(path: Path, limit: int = LOG_TAIL) -> str:
    """The last ``limit`` bytes of a log, as text (empty if it cannot be read)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
