"""The options of one run: stretto.toml, overridden by the plan, overridden by the command line.

A base module: the engine, routing and the API all read it; it imports only :mod:`stretto.config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stretto.config import (
    AttemptSettings,
    GateConfig,
    MergeSettings,
    PlannerSettings,
    RouterSettings,
)
from stretto.sandbox import SandboxSettings


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
    sparse: tuple[str, ...] | None = None  # None: full worktrees; else extra paths of sparse ones
    env_allow: tuple[str, ...] = ()
    agent_settings: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    agent_timeout: float = 1800.0  # [attempt] timeout; a step's timeout wins
    limits: AttemptSettings = field(default_factory=AttemptSettings)  # [attempt]
    router: RouterSettings = field(default_factory=RouterSettings)
    budget: float | None = None  # USD for this run: --budget, else the plan's, else [budget] run
    daily_cap: float | None = None  # USD per UTC day across runs ([budget] daily)
    on_exceed: str = "finish"  # finish | stop: what happens to running attempts at the budget
    prices: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)
    planner: PlannerSettings = field(default_factory=PlannerSettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    merge: MergeSettings = field(default_factory=MergeSettings)  # [merge]
    offline: bool = False  # --offline: only agents on local model servers (or no model at all)
    cluster: str | None = None  # a Dask scheduler's address: attempts run on its workers

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
            "sparse": list(self.sparse) if self.sparse is not None else None,
            "env_allow": list(self.env_allow),
            "agent_settings": {k: dict(v) for k, v in self.agent_settings.items()},
            "agent_timeout": self.agent_timeout,
            "limits": {
                "timeout": self.limits.timeout,
                "max_cost": self.limits.max_cost,
                "max_tokens": self.limits.max_tokens,
                "max_turns": self.limits.max_turns,
                "max_rate_limited": self.limits.max_rate_limited,
            },
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
            "sandbox": self.sandbox.to_dict(),
            "merge": self.merge.to_dict(),
            "offline": self.offline,
            "cluster": self.cluster,
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
            sparse=tuple(data["sparse"]) if data.get("sparse") is not None else None,
            env_allow=tuple(data["env_allow"]),
            agent_settings=data["agent_settings"],
            agent_timeout=data["agent_timeout"],
            limits=AttemptSettings(**data.get("limits") or {}),  # older journals: defaults
            router=RouterSettings.from_dict(data.get("router") or {}),
            budget=data.get("budget"),
            daily_cap=data.get("daily_cap"),
            on_exceed=data.get("on_exceed", "finish"),
            prices=data.get("prices", {}),
            planner=PlannerSettings(**data["planner"])
            if data.get("planner")
            else PlannerSettings(),
            sandbox=SandboxSettings.from_dict(data.get("sandbox")),
            merge=MergeSettings.from_dict(data.get("merge")),
            offline=bool(data.get("offline", False)),
            cluster=data.get("cluster"),
        )
