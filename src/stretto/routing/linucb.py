"""Disjoint LinUCB's model of one arm: a ridge regression over the features, and its bound.

Each arm keeps ``A^-1`` and ``b`` of a ridge regression ``theta = A^-1 b`` of the reward on
the feature vector (:data:`~stretto.routing.features.FEATURE_NAMES`), starting from the
identity. Learning one reward updates ``A^-1`` by Sherman-Morrison (no solve); an estimate is
``theta . x`` with the confidence bound ``alpha * sqrt(x' A^-1 x)``. Sums are exact
(``math.fsum``), so the same lessons give the same figures everywhere. Also the arm's counters
and its form in the policy file (:meth:`ArmState.to_dict`, :func:`parse_state`).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stretto.routing.features import FEATURE_NAMES

if TYPE_CHECKING:
    from stretto.routing.arms import Arm


def _dot(u: Sequence[float], v: Sequence[float]) -> float:
    return math.fsum(map(operator.mul, u, v))


@dataclass(slots=True)
class ArmState:
    """One arm's learned state: a ridge regression ``theta = A^-1 b``, and counters."""

    a_inv: list[list[float]]
    b: list[float]
    pulls: int = 0
    successes: int = 0
    total_reward: float = 0.0
    cost_total: float = 0.0
    costed: int = 0  # pulls with a known cost
    theta: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.theta = [_dot(row, self.b) for row in self.a_inv]

    @classmethod
    def fresh(cls) -> ArmState:
        d = len(FEATURE_NAMES)
        return cls([[float(i == j) for j in range(d)] for i in range(d)], [0.0] * d)

    def learn(self, x: Sequence[float], r: float) -> None:
        """``A += x x'`` by Sherman-Morrison on ``A^-1`` (no solve), ``b += r x``."""
        u = [_dot(row, x) for row in self.a_inv]
        denom = 1.0 + _dot(u, x)
        for ui, row in zip(u, self.a_inv, strict=True):
            for j, uj in enumerate(u):
                row[j] -= ui * uj / denom
        self.b = [bi + r * xi for bi, xi in zip(self.b, x, strict=True)]
        self.theta = [_dot(row, self.b) for row in self.a_inv]

    def estimate(self, x: Sequence[float], alpha: float) -> tuple[float, float]:
        spread = _dot([_dot(row, x) for row in self.a_inv], x)
        return _dot(self.theta, x), alpha * math.sqrt(max(0.0, spread))

    def to_dict(self, arm: Arm | None) -> dict[str, Any]:
        mean_reward = self.total_reward / self.pulls if self.pulls else None
        mean_cost = self.cost_total / self.costed if self.costed else None
        return {
            **(arm.to_dict() if arm else {}),
            "configured": arm is not None,
            "pulls": self.pulls,
            "successes": self.successes,
            "total_reward": self.total_reward,
            "mean_reward": None if mean_reward is None else round(mean_reward, 4),
            "mean_cost_usd": None if mean_cost is None else round(mean_cost, 4),
            "cost_total_usd": self.cost_total,
            "costed_pulls": self.costed,
            "theta": {n: round(t, 4) for n, t in zip(FEATURE_NAMES, self.theta, strict=True)},
            "a_inverse": [row[:] for row in self.a_inv],
            "b": self.b[:],
        }


def parse_state(key: object, raw: Any) -> ArmState:
    """One arm's state from the policy file (ValueError, KeyError or TypeError if malformed)."""
    d = len(FEATURE_NAMES)
    a_inv = [[float(v) for v in row] for row in raw["a_inverse"]]
    b = [float(v) for v in raw["b"]]
    counts = [int(raw[k]) for k in ("pulls", "successes", "costed_pulls")]
    sums = [float(raw["total_reward"]), float(raw["cost_total_usd"])]
    if len(a_inv) != d or any(len(row) != d for row in a_inv) or len(b) != d:
        raise ValueError(f"arms[{key!r}]: a_inverse must be {d}x{d} and b of length {d}")
    if not all(map(math.isfinite, [*sums, *b, *(v for row in a_inv for v in row)])):
        raise ValueError(f"arms[{key!r}] holds a number that is not finite")
    if min(counts) < 0:
        raise ValueError(f"arms[{key!r}]: pulls, successes and costed_pulls must be counts")
    return ArmState(a_inv, b, counts[0], counts[1], sums[0], sums[1], counts[2])
