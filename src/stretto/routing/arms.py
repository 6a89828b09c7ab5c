"""What the router chooses among, and under which settings: arms, tiers and ``[router]``.

An arm is an ``(agent, model)`` pair with a price tier (:data:`TIERS`, cheapest first);
:class:`RouterConfig` is the ``[router]`` table: the arms, the warm-up length, the exploration
weight, the cost that counts as 1.0 in a reward, the cheapest tier allowed per complexity and
what the caller credits (attempts or tasks). Plain frozen values, checked when built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

TIERS = ("fast", "balanced", "strong")
DEFAULT_MIN_TIER: Mapping[str, str] = MappingProxyType(
    {"low": "fast", "medium": "fast", "high": "balanced"}
)
CREDITS = ("task", "attempt")


@dataclass(frozen=True, slots=True)
class Arm:
    """One ``(agent, model)`` pair the router may choose, with its price tier."""

    agent: str
    model: str | None
    tier: str  # one of TIERS

    @property
    def key(self) -> str:
        """``agent/model``, or just ``agent`` when no model is named."""
        return self.agent if self.model is None else f"{self.agent}/{self.model}"

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "model": self.model, "tier": self.tier, "key": self.key}


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """The ``[router]`` table: arms, warm-up length, exploration weight, cost normalization.

    ``credit`` says what the caller teaches: ``"attempt"`` (the default) after every attempt,
    through :meth:`Policy.update`; ``"task"`` when a task ends, through
    :meth:`Policy.credit_task`. The router itself decides the same way in both.
    ``cost_ceiling`` is the USD that counts as cost 1.0 in a reward: of the credited attempts
    together with task credit, of one attempt with attempt credit. ``landed_value_usd`` is
    what one landed task is worth to the user: after warm-up, a retry whose estimated chance
    to land times this value is below its arm's mean cost is not made (the task is given up);
    None never gives up.
    """

    arms: tuple[Arm, ...] = ()
    warmup: int = 50
    alpha: float = 1.0  # exploration weight
    cost_ceiling: float = 1.0  # USD that counts as cost 1.0 in the reward
    min_tier: Mapping[str, str] = field(default_factory=lambda: DEFAULT_MIN_TIER, hash=False)
    credit: Literal["task", "attempt"] = "attempt"  # task credit lands fewer: docs/routing.md
    landed_value_usd: float | None = None

    def __post_init__(self) -> None:
        keys = [arm.key for arm in self.arms]
        if len(set(keys)) != len(keys):
            raise ValueError(f"router arms must be distinct, got {keys}")
        tiers = [arm.tier for arm in self.arms] + list(self.min_tier.values())
        if any(tier not in TIERS for tier in tiers):
            raise ValueError(f"router tiers must be among {TIERS}, got {tiers}")
        if self.warmup < 0 or self.alpha < 0 or not self.cost_ceiling > 0:
            raise ValueError("router warmup and alpha must be >= 0 and cost_ceiling > 0")
        if self.landed_value_usd is not None and not self.landed_value_usd > 0:
            raise ValueError("router landed_value_usd must be > 0 (or unset)")
        if self.credit not in CREDITS:
            raise ValueError(f"router credit must be one of {CREDITS}, got {self.credit!r}")

    @property
    def enabled(self) -> bool:
        """Whether any arm is configured (otherwise the runner does not route)."""
        return bool(self.arms)

    def start_tier(self, complexity: str) -> str:
        """The cheapest tier allowed for ``complexity`` (``min_tier``, else the default)."""
        return self.min_tier.get(complexity, DEFAULT_MIN_TIER[complexity])
