"""Disjoint LinUCB's model of one arm: ridge regressions over the features, and their bounds.

Each arm keeps ``A^-1`` and ``b`` of a ridge regression ``theta = A^-1 b`` of the reward on
the feature vector (:data:`~stretto.routing.features.FEATURE_NAMES`), starting from the
identity. Learning one reward updates ``A^-1`` by Sherman-Morrison (no solve); an estimate is
``theta . x`` with the confidence bound ``alpha * sqrt(x' A^-1 x)``. Over the same ``A``,
``b_landed`` estimates the arm's chance to land (:meth:`ArmState.landing`), which caps the
bandit's optimism. A second, smaller model learns from the arm's retries only, over
:data:`RETRY_FEATURES` (the failed attempt's turns and tokens, its cost against its own arm's
mean, the language and the repository; :func:`retry_vector`): the chance that a retry on this
arm lands (:meth:`ArmState.retry_landing`), how sure that chance is
(:meth:`ArmState.retry_spread`) and what the retry costs relative to the arm's mean
(:meth:`ArmState.retry_cost`); the give-up rule weighs them. Chances shrink towards 1/2 where
there is little data, costs towards the arm's mean. Sums are
exact (``math.fsum``; zero features are skipped, which changes no sum), so the same lessons
give the same figures everywhere. Also the arm's counters and its form in the policy file
(:meth:`ArmState.to_dict`, :func:`parse_state`).
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

#: Where a chance to land is shrunk to without data: neither written off nor assumed.
LANDED_PRIOR = 0.5
#: What a retry's chance and cost are learned over: the failed attempt (its turns and tokens,
#: and its cost against what its arm's attempts cost on average: a failure that ran long for
#: its arm is rarely rescued), the language and the repository (:func:`retry_vector`).
RETRY_FEATURES = (
    "bias",
    "failed_turns",
    "failed_tokens",
    "failed_cost_vs_mean",
    *(n for n in FEATURE_NAMES if n.startswith(("lang_", "repo_"))),
)
#: Where each retry feature but ``failed_cost_vs_mean`` comes from in the feature vector.
RETRY_INDEX = tuple(FEATURE_NAMES.index(n) if n in FEATURE_NAMES else -1 for n in RETRY_FEATURES)
#: How many doublings of the failed arm's mean cost span ``failed_cost_vs_mean`` each way.
COST_RATIO_DOUBLINGS = 2.0
#: The most a retry's cost may count as, relative to the arm's mean cost: one outlier (or a
#: mean of next to nothing, a tiny first price) must not make the model infinite.
MAX_COST_RATIO = 100.0


def cost_vs_mean(cost_usd: float | None, mean_usd: float | None) -> float:
    """``failed_cost_vs_mean``: 1/2 when the failed attempt cost its arm's mean (or either is
    unknown), 0 at a quarter of the mean or less, 1 at four times or more (log scale)."""
    if not cost_usd or not mean_usd or cost_usd <= 0 or mean_usd <= 0:
        return 0.5
    ratio = math.log2(cost_usd / mean_usd) / (2 * COST_RATIO_DOUBLINGS)
    return min(1.0, max(0.0, 0.5 + ratio))


def retry_vector(x: Sequence[float], cost_ratio: float) -> list[float]:
    """The retry model's inputs (:data:`RETRY_FEATURES`) from a feature vector ``x`` and the
    failed attempt's :func:`cost_vs_mean`."""
    return [cost_ratio if i < 0 else x[i] for i in RETRY_INDEX]


def _dot(u: Sequence[float], v: Sequence[float]) -> float:
    return math.fsum(map(operator.mul, u, v))


def _times(matrix: Sequence[Sequence[float]], x: Sequence[float]) -> list[float]:
    """``matrix . x``, exactly, over the non-zero entries of ``x`` only (sparse contexts)."""
    nz = [(j, v) for j, v in enumerate(x) if v]
    return [math.fsum(row[j] * v for j, v in nz) for row in matrix]


def _identity(d: int) -> list[list[float]]:
    return [[float(i == j) for j in range(d)] for i in range(d)]


def _sherman_morrison(a_inv: list[list[float]], x: Sequence[float]) -> None:
    """``A += x x'`` on ``A^-1``, in place."""
    u = _times(a_inv, x)
    denom = 1.0 + _dot(u, x)
    for ui, row in zip(u, a_inv, strict=True):
        for j, uj in enumerate(u):
            row[j] -= ui * uj / denom


def _add(b: list[float], y: float, x: Sequence[float]) -> list[float]:
    return [bi + y * xi for bi, xi in zip(b, x, strict=True)]


@dataclass(slots=True)
class ArmState:
    """One arm's learned state: ridge regressions ``theta = A^-1 b``, and counters."""

    a_inv: list[list[float]]
    b: list[float]
    pulls: int = 0
    successes: int = 0
    total_reward: float = 0.0
    cost_total: float = 0.0
    costed: int = 0  # pulls with a known cost
    b_landed: list[float] = field(default_factory=list)  # landed - 1/2, over A
    retry_a_inv: list[list[float]] = field(default_factory=list)  # over RETRY_FEATURES
    retry_b_landed: list[float] = field(default_factory=list)  # landed - 1/2
    retry_b_cost: list[float] = field(default_factory=list)  # cost / mean cost - 1
    retries: int = 0  # retries learned by the retry model
    theta: list[float] = field(default_factory=list)
    theta_landed: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        k = len(RETRY_INDEX)
        self.b_landed = self.b_landed or [0.0] * len(self.b)
        self.retry_a_inv = self.retry_a_inv or _identity(k)
        self.retry_b_landed = self.retry_b_landed or [0.0] * k
        self.retry_b_cost = self.retry_b_cost or [0.0] * k
        self._solve()

    def _solve(self) -> None:
        self.theta = [_dot(row, self.b) for row in self.a_inv]
        self.theta_landed = [_dot(row, self.b_landed) for row in self.a_inv]

    @classmethod
    def fresh(cls) -> ArmState:
        d = len(FEATURE_NAMES)
        return cls(_identity(d), [0.0] * d)

    def learn(self, x: Sequence[float], r: float, landed: bool | None = None) -> None:
        """``A += x x'`` by Sherman-Morrison on ``A^-1`` (no solve), ``b += r x`` and
        ``b_landed += (landed - 1/2) x`` (``landed`` defaults to ``r > 0``)."""
        _sherman_morrison(self.a_inv, x)
        hit = float(r > 0 if landed is None else landed)
        self.b = _add(self.b, r, x)
        self.b_landed = _add(self.b_landed, hit - LANDED_PRIOR, x)
        self._solve()

    def learn_retry(self, z: Sequence[float], landed: bool, cost_usd: float | None) -> None:
        """A retry on this arm ended: the retry model learns, over ``z`` (a
        :func:`retry_vector`), whether it landed and (when priced) its cost relative to the
        arm's mean cost so far."""
        _sherman_morrison(self.retry_a_inv, z)
        self.retry_b_landed = _add(self.retry_b_landed, float(landed) - LANDED_PRIOR, z)
        mean = self.mean_cost
        if cost_usd is not None and mean:
            ratio = min(cost_usd / mean, MAX_COST_RATIO)
            self.retry_b_cost = _add(self.retry_b_cost, ratio - 1.0, z)
        self.retries += 1

    def estimate(self, x: Sequence[float], alpha: float) -> tuple[float, float]:
        spread = _dot(_times(self.a_inv, x), x)
        return _dot(self.theta, x), alpha * math.sqrt(max(0.0, spread))

    def landing(self, x: Sequence[float]) -> float:
        """The estimated chance that the arm lands in context ``x``, clamped to [0, 1]."""
        return min(1.0, max(0.0, LANDED_PRIOR + _dot(self.theta_landed, x)))

    def retry_landing(self, z: Sequence[float]) -> float:
        """The retry model's chance that a retry on this arm lands, ``z`` a
        :func:`retry_vector`."""
        theta = [_dot(row, self.retry_b_landed) for row in self.retry_a_inv]
        return min(1.0, max(0.0, LANDED_PRIOR + _dot(theta, z)))

    def retry_spread(self, z: Sequence[float]) -> float:
        """``sqrt(z' A^-1 z)`` of the retry model: how little its retries say about ``z``
        (1 for a context alone before any retry, shrinking about as ``1 / sqrt(n)`` with the
        retries learned there; times a chance's standard deviation it is the chance's
        standard error)."""
        return math.sqrt(max(0.0, _dot(_times(self.retry_a_inv, z), z)))

    def retry_cost(self, z: Sequence[float]) -> float | None:
        """The retry model's cost of a retry on this arm, ``z`` a :func:`retry_vector` (None:
        no priced attempt yet): the mean cost times the learned ratio, at least a tenth of the
        mean."""
        mean = self.mean_cost
        if mean is None:
            return None
        theta = [_dot(row, self.retry_b_cost) for row in self.retry_a_inv]
        return mean * max(0.1, 1.0 + _dot(theta, z))

    @property
    def mean_cost(self) -> float | None:
        """The arm's mean cost of an attempt so far (None: no priced attempt yet)."""
        return self.cost_total / self.costed if self.costed else None

    def to_dict(self, arm: Arm | None) -> dict[str, Any]:
        mean_reward = self.total_reward / self.pulls if self.pulls else None
        mean_cost = self.mean_cost
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
            "b_landed": self.b_landed[:],
            "retries": self.retries,
            "retry_features": list(RETRY_FEATURES),
            "retry_a_inverse": [row[:] for row in self.retry_a_inv],
            "retry_b_landed": self.retry_b_landed[:],
            "retry_b_cost": self.retry_b_cost[:],
        }


def _matrix(raw: Any, d: int, name: str, key: object) -> list[list[float]]:
    rows = [[float(v) for v in row] for row in raw]
    if len(rows) != d or any(len(row) != d for row in rows):
        raise ValueError(f"arms[{key!r}]: {name} must be {d}x{d}")
    return rows


def _vector(raw: Any, d: int, name: str, key: object) -> list[float]:
    values = [float(v) for v in raw]
    if len(values) != d:
        raise ValueError(f"arms[{key!r}]: {name} must have {d} numbers")
    return values


def parse_state(key: object, raw: Any) -> ArmState:
    """One arm's state from the policy file (ValueError, KeyError or TypeError if malformed).

    A retry model learned over other :data:`RETRY_FEATURES` (a file saved before they changed)
    starts afresh; the rest of the arm's state is kept.
    """
    d, k = len(FEATURE_NAMES), len(RETRY_INDEX)
    a_inv = _matrix(raw["a_inverse"], d, "a_inverse", key)
    b, b_landed = (_vector(raw[n], d, n, key) for n in ("b", "b_landed"))
    if raw.get("retry_features") != list(RETRY_FEATURES):
        raw = {**raw, "retries": 0, "retry_a_inverse": _identity(k)}
        raw.update({n: [0.0] * k for n in ("retry_b_landed", "retry_b_cost")})
    retry_a_inv = _matrix(raw["retry_a_inverse"], k, "retry_a_inverse", key)
    retry = [_vector(raw[n], k, n, key) for n in ("retry_b_landed", "retry_b_cost")]
    counts = [int(raw[n]) for n in ("pulls", "successes", "costed_pulls", "retries")]
    sums = [float(raw["total_reward"]), float(raw["cost_total_usd"])]
    numbers = [*sums, *b, *b_landed, *retry[0], *retry[1]]
    numbers += [v for m in (a_inv, retry_a_inv) for row in m for v in row]
    if not all(map(math.isfinite, numbers)):
        raise ValueError(f"arms[{key!r}] holds a number that is not finite")
    if min(counts) < 0:
        raise ValueError(f"arms[{key!r}]: pulls, successes, costed_pulls, retries must be counts")
    return ArmState(
        a_inv,
        b,
        counts[0],
        counts[1],
        sums[0],
        sums[1],
        counts[2],
        b_landed,
        retry_a_inv,
        retry[0],
        retry[1],
        counts[3],
    )
