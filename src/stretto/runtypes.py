"""The values a run trades in: its options, how an attempt ended, and the end-of-run summary."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stretto.config import (
    GateConfig,
    PlannerSettings,
    RouterSettings,
)

LOG_TAIL = 3_000


@dataclass(frozen=True)
class RunOptions:
    """How a run behaves; built from stretto.toml, the plan and command-line options."""

    target: str
    max_agents: int = 4
    default_agent: str = "shell"
    gates: tuple[GateConfig, ...] = ()
    scope: str = "refuse"  # refuse | warn
    recheck_merged: bool = True  # re-run command gates on a merged tree that differs
    link_dirs: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    env_allow: tuple[str, ...] = ()
    agent_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    agent_timeout: float = 1800.0
    router: RouterSettings = field(default_factory=RouterSettings)
    budget: float | None = None  # USD for this run: --budget, else the plan's, else [budget] run
    daily_cap: float | None = None  # USD per UTC day across runs ([budget] daily)
    on_exceed: str = "finish"  # finish | stop: what happens to running attempts at the budget
    prices: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    planner: PlannerSettings = field(default_factory=PlannerSettings)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the journal's run_started record."""
        return {
            "target": self.target,
            "max_agents": self.max_agents,
            "default_agent": self.default_agent,
            "gates": [{"name": g.name, **g.to_dict()} for g in self.gates],
            "scope": self.scope,
            "recheck_merged": self.recheck_merged,
            "link_dirs": list(self.link_dirs),
            "setup": list(self.setup),
            "env_allow": list(self.env_allow),
            "agent_settings": {k: dict(v) for k, v in self.agent_settings.items()},
            "agent_timeout": self.agent_timeout,
            "router": self.router.to_dict(),
            "budget": self.budget,
            "daily_cap": self.daily_cap,
            "on_exceed": self.on_exceed,
            "prices": {k: dict(v) for k, v in self.prices.items()},
            "planner": {
                "agent": self.planner.agent,
                "model": self.planner.model,
                "timeout": self.planner.timeout,
                "split_depth": self.planner.split_depth,
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunOptions:
        """Inverse of :meth:`to_dict`."""
        return cls(
            target=data["target"],
            max_agents=data["max_agents"],
            default_agent=data["default_agent"],
            gates=tuple(GateConfig(**g) for g in data["gates"]),
            scope=data["scope"],
            recheck_merged=data["recheck_merged"],
            link_dirs=tuple(data["link_dirs"]),
            setup=tuple(data["setup"]),
            env_allow=tuple(data["env_allow"]),
            agent_settings=data["agent_settings"],
            agent_timeout=data["agent_timeout"],
            router=RouterSettings.from_dict(data.get("router") or {}),
            budget=data.get("budget"),
            daily_cap=data.get("daily_cap"),
            on_exceed=data.get("on_exceed", "finish"),
            prices=data.get("prices", {}),
            planner=PlannerSettings(**data["planner"])
            if data.get("planner")
            else PlannerSettings(),
        )


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
    children: tuple[Any, ...] = ()  # a split: the tasks (stretto.plan.Task) that replace it


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
    status: str  # finished | failed | budget_reached | out_of_credit
    tasks: list[TaskReport]
    wall: float
    agent_seconds: float
    target: str
    head: str | None
    notes: list[str] = field(default_factory=list)
    cost_usd: float = 0.0  # what this run's attempts and planning calls cost (known prices)
    unpriced: int = 0  # attempts whose model has no known price (not in cost_usd)
    budget: float | None = None

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
