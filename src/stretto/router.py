"""Which agent and model take an attempt: a static cascade while learning, then LinUCB.

Pure decisions: :meth:`Policy.choose` turns an attempt's context into a :class:`Choice` that
names the arm, the rule and every figure behind it; :meth:`Policy.update` learns from one
attempt (``credit = "attempt"``, the default) and :meth:`Policy.credit_task` from a finished
task (``credit = "task"``). The only I/O loads and saves the policy file (atomically;
:func:`update_policy_task` and :func:`update_policy` hold a lock). Arms are ``(agent, model)``
pairs with a tier (:data:`TIERS`); pins are always obeyed. Until ``warmup`` attempts are learned,
a first attempt starts at the cheapest tier allowed for its complexity and each failure escalates
one tier; then disjoint LinUCB over :data:`FEATURE_NAMES` picks it by the highest upper confidence
bound on ``landed x (1 - cost / cost_ceiling)``: the attempt's, or with task credit the whole
task's (a first attempt learns whether the task landed and what all its attempts cost).
Retries go strictly stronger, else to another agent at the same tier, else to the strongest arm
again. Nothing is random; ties break on tier order, then arm key. Guide: docs/routing.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import operator
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from stretto.errors import RunError
from stretto.files import write_atomic

TIERS = ("fast", "balanced", "strong")
COMPLEXITIES = ("low", "medium", "high")
DEFAULT_MIN_TIER: Mapping[str, str] = MappingProxyType(
    {"low": "fast", "medium": "fast", "high": "balanced"}
)
#: The feature vector, in order; each feature lies in [0, 1] (see :func:`features`).
# fmt: off
FEATURE_NAMES = (
    "bias", "complexity_medium", "complexity_high", "files", "spread", "undeclared",
    "role_backend", "role_frontend", "role_qa", "role_docs", "tokens", "retry",
)
# fmt: on
#: Token budget of one attempt on one file, by complexity (see :func:`estimate_tokens`).
BASE_TOKENS: Mapping[str, int] = MappingProxyType(
    {"low": 30_000, "medium": 120_000, "high": 400_000}
)
GLOB_WEIGHT = 4  # a glob pattern counts as this many files
POLICY_FORMAT = "stretto-router-policy"
CREDITS = ("task", "attempt")
_ROLE_WORDS = (
    ("backend", frozenset({"backend", "api", "server", "database", "db"})),
    ("frontend", frozenset({"frontend", "ui", "web", "client"})),
    ("qa", frozenset({"qa", "test", "tests", "testing"})),
    ("docs", frozenset({"docs", "doc", "documentation", "writer"})),
)


class PolicyError(RunError):
    """The router's policy file cannot be used; deleting it starts learning afresh."""


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
    together with task credit, of one attempt with attempt credit.
    """

    arms: tuple[Arm, ...] = ()
    warmup: int = 50
    alpha: float = 1.0  # exploration weight
    cost_ceiling: float = 1.0  # USD that counts as cost 1.0 in the reward
    min_tier: Mapping[str, str] = field(default_factory=lambda: DEFAULT_MIN_TIER, hash=False)
    credit: Literal["task", "attempt"] = "attempt"  # task credit lands fewer: docs/routing.md

    def __post_init__(self) -> None:
        keys = [arm.key for arm in self.arms]
        if len(set(keys)) != len(keys):
            raise ValueError(f"router arms must be distinct, got {keys}")
        tiers = [arm.tier for arm in self.arms] + list(self.min_tier.values())
        if any(tier not in TIERS for tier in tiers):
            raise ValueError(f"router tiers must be among {TIERS}, got {tiers}")
        if self.warmup < 0 or self.alpha < 0 or not self.cost_ceiling > 0:
            raise ValueError("router warmup and alpha must be >= 0 and cost_ceiling > 0")
        if self.credit not in CREDITS:
            raise ValueError(f"router credit must be one of {CREDITS}, got {self.credit!r}")

    @property
    def enabled(self) -> bool:
        """Whether any arm is configured (otherwise the runner does not route)."""
        return bool(self.arms)

    def start_tier(self, complexity: str) -> str:
        """The cheapest tier allowed for ``complexity`` (``min_tier``, else the default)."""
        return self.min_tier.get(complexity, DEFAULT_MIN_TIER[complexity])


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What the router knows about an attempt before it starts."""

    complexity: str  # low | medium | high
    role: str
    files: tuple[str, ...] | None  # owned file patterns (None = undeclared)
    attempt: int  # 1-based
    est_tokens: int  # estimated token budget of the attempt


def role_bucket(role: str) -> str:
    """The role's bucket: backend, frontend, qa, docs, or general for any other role."""
    words = set(re.split(r"[^a-z0-9]+", role.lower()))
    return next((bucket for bucket, aliases in _ROLE_WORDS if words & aliases), "general")


def _scope(files: tuple[str, ...]) -> tuple[int, int]:
    """Weighted file count (a glob counts :data:`GLOB_WEIGHT`) and distinct top-level dirs."""
    count = sum(GLOB_WEIGHT if any(c in p for c in "*?[") else 1 for p in files)
    tops = {p.strip("/").split("/", 1)[0] if "/" in p.strip("/") else "." for p in files}
    return count, len(tops)


def estimate_tokens(complexity: str, files: tuple[str, ...] | None) -> int:
    """Token budget of one attempt: :data:`BASE_TOKENS` (low 30k, medium 120k, high 400k).

    Each owned file beyond the first adds 10% (a glob counts as four files), up to double;
    undeclared files add 25%.
    """
    scale = 1.25 if files is None else min(2.0, 1.0 + 0.1 * max(0, _scope(files)[0] - 1))
    return round(BASE_TOKENS[complexity] * scale)


def features(ctx: TaskContext) -> dict[str, float]:
    """The named feature vector of ``ctx``, in :data:`FEATURE_NAMES` order."""
    if ctx.complexity not in COMPLEXITIES:
        raise ValueError(f"complexity must be one of {COMPLEXITIES}, got {ctx.complexity!r}")
    count, tops = _scope(ctx.files or ())
    bucket = role_bucket(ctx.role)
    return {
        "bias": 1.0,
        "complexity_medium": float(ctx.complexity == "medium"),
        "complexity_high": float(ctx.complexity == "high"),
        "files": min(1.0, math.log2(1 + count) / 5),  # 1 file: 0.2, 3: 0.4, 31 or more: 1
        "spread": min(1.0, max(0, tops - 1) / 3),  # top-level dirs beyond one; 4 or more: 1
        "undeclared": float(ctx.files is None),
        **{f"role_{name}": float(bucket == name) for name, _ in _ROLE_WORDS},
        "tokens": min(1.0, max(0.0, math.log10(max(ctx.est_tokens, 1) / 10_000) / 2)),
        "retry": min(ctx.attempt - 1, 2) / 2,  # 0 on a first attempt, 1 from the third
    }


def reward(landed: bool, cost_usd: float | None, ceiling: float) -> float:
    """``quality x (1 - cost / ceiling)``: 0 unless landed, the cost share clamped to [0, 1].

    An unknown cost (None) counts as 0: the attempt is judged on quality alone.
    """
    if not ceiling > 0:
        raise ValueError(f"cost ceiling must be > 0, got {ceiling}")
    return 1.0 - min(1.0, max(0.0, (cost_usd or 0.0) / ceiling)) if landed else 0.0


def task_rewards(costs: Sequence[float | None], landed: bool, ceiling: float) -> list[float]:
    """Each attempt's reward-to-go in a finished task: ``landed x (1 - cost from it on / ceiling)``.

    ``costs`` are the task's attempts in order; the first attempt is charged the whole task's
    cost, a retry the cost of itself and the attempts after it (what came before is sunk). An
    unknown cost (None) counts as 0, as in :func:`reward`. A task that did not land gives 0s.
    """
    tails = [math.fsum(c or 0.0 for c in costs[i:]) for i in range(len(costs))]
    return [reward(landed, tail, ceiling) for tail in tails]


@dataclass(frozen=True, slots=True)
class ArmEstimate:
    """One arm's figures in a choice, and whether it could have been chosen."""

    arm: Arm
    mean: float  # estimated reward, theta . x
    bound: float  # confidence bound, alpha * sqrt(x' A^-1 x)
    ucb: float  # mean + bound
    eligible: bool
    note: str  # why it is not eligible (or what it was), "" when nothing to say

    @property
    def key(self) -> str:
        return self.arm.key

    @property
    def tier(self) -> str:
        return self.arm.tier

    def to_dict(self) -> dict[str, Any]:
        figures = {"mean": self.mean, "bound": self.bound, "ucb": self.ucb}
        return {**self.arm.to_dict(), **figures, "eligible": self.eligible, "note": self.note}


@dataclass(frozen=True, slots=True)
class Choice:
    """The arm for one attempt, the rule that chose it and everything it was chosen from."""

    arm: Arm
    rule: str  # pinned, cascade-start, cascade-escalate, bandit, retry-{stronger,sibling,same}
    reason: str  # one human sentence
    features: Mapping[str, float]
    estimates: tuple[ArmEstimate, ...]  # every configured arm, by tier then key
    warmup: bool
    context: TaskContext | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (journaled by the runner, rendered by :func:`render_choice`)."""
        ctx = self.context
        return {
            "arm": self.arm.to_dict(),
            "rule": self.rule,
            "reason": self.reason,
            "warmup": self.warmup,
            "attempt": ctx.attempt if ctx else None,
            "context": None if ctx is None else {**asdict(ctx), "files": _listed(ctx.files)},
            "features": dict(self.features),
            "estimates": [e.to_dict() for e in self.estimates],
        }


def _listed(files: tuple[str, ...] | None) -> list[str] | None:
    return None if files is None else list(files)


def _dot(u: Sequence[float], v: Sequence[float]) -> float:
    return math.fsum(map(operator.mul, u, v))


@dataclass(slots=True)
class _ArmState:
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
    def fresh(cls) -> _ArmState:
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


def _tier(arm: Arm) -> int:
    return TIERS.index(arm.tier)


def _rank(arm: Arm) -> tuple[int, str]:
    return _tier(arm), arm.key


class Policy:
    """The router's learned state for the configured arms; mutable, persisted as JSON.

    Attributes:
        config: the router configuration the policy serves.
        completed: attempts learned from, across runs (warm-up ends at ``config.warmup``): one
            per :meth:`update`, so with task credit one per task (its first attempt), or one
            per attempt that taught its arm with ``retries``.
        credited: what the latest :meth:`credit_task` learned (not saved; for the journal).
    """

    def __init__(self, config: RouterConfig, states: dict[str, _ArmState], completed: int) -> None:
        self.config = config
        self.completed = completed
        self.credited: list[dict[str, Any]] = []
        self._states = states  # by arm key; arms no longer configured are kept, unused
        for arm in config.arms:
            self._states.setdefault(arm.key, _ArmState.fresh())

    @classmethod
    def fresh(cls, config: RouterConfig) -> Policy:
        """A policy that has learned nothing: the warm-up cascade comes first."""
        return cls(config, {}, 0)

    @classmethod
    def load(cls, path: Path, config: RouterConfig) -> Policy:
        """The policy saved at ``path``, for ``config``'s arms; a missing file gives a fresh one.

        Arms still configured keep their state and new arms start fresh; the state of arms no
        longer configured stays in the file, unused, in case they come back.

        Raises:
            PolicyError: the file is unreadable, not a policy, or learned over other features.
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != POLICY_FORMAT:
                raise ValueError("it is not a stretto router policy")
            if data.get("features") != list(FEATURE_NAMES):
                raise ValueError(f"it was learned over other features: {data.get('features')}")
            completed = data["completed"]
            if isinstance(completed, bool) or not isinstance(completed, int) or completed < 0:
                raise ValueError("'completed' is not a count")
            states = {str(k): _parse_state(k, v) for k, v in dict(data["arms"]).items()}
        except FileNotFoundError:
            return cls.fresh(config)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # JSON and Unicode errors too
            why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            raise PolicyError(
                f"{path}: the router policy cannot be used ({why}). Delete it to start learning "
                f"afresh (rm {path}); routing then begins again with the warm-up cascade"
            ) from exc
        return cls(config, states, completed)

    def save(self, path: Path) -> None:
        """Write the policy atomically: a temporary file in the same directory, fsync, rename.

        If anything fails, the previous file is left as it was and no temporary file remains.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (_json(self.to_dict()) + "\n").encode(), mode=0o644)

    def to_dict(self) -> dict[str, Any]:
        """The policy file's content: state at full precision, derived figures rounded."""
        configured = {arm.key: arm for arm in self.config.arms}
        return {
            "format": POLICY_FORMAT,
            "version": 1,
            "completed": self.completed,
            "warmup": self.config.warmup,
            "credit": self.config.credit,  # for reading; a file learned either way loads
            "features": list(FEATURE_NAMES),
            "arms": {k: s.to_dict(configured.get(k)) for k, s in sorted(self._states.items())},
        }

    def update(
        self,
        arm: Arm,
        ctx: TaskContext,
        reward: float,
        cost_usd: float | None,
        *,
        landed: bool | None = None,
    ) -> None:
        """Learn from one finished attempt of ``arm`` (``landed=`` defaults to ``reward > 0``).

        An arm that is not configured (a pin outside ``[[router.arms]]``) teaches nothing.
        """
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"reward must be within [0, 1], got {reward}")
        if cost_usd is not None and not 0.0 <= cost_usd < math.inf:
            raise ValueError(f"cost must be a finite amount >= 0, got {cost_usd}")
        if arm.key not in {a.key for a in self.config.arms}:
            return
        state = self._states[arm.key]
        state.learn(list(features(ctx).values()), reward)
        state.pulls += 1
        state.successes += int(reward > 0 if landed is None else landed)
        state.total_reward += reward
        if cost_usd is not None:
            state.cost_total += cost_usd
            state.costed += 1
        self.completed += 1

    def credit_task(
        self,
        attempts: Sequence[tuple[Arm, TaskContext, float | None]],
        landed: bool,
        *,
        skip: Collection[int] = (),
        retries: bool = False,
    ) -> list[dict[str, Any]]:
        """Learn from a finished task: it landed, or it ended without landing.

        ``attempts`` are the task's attempts in order, each with its arm, its context and its
        cost in USD (None if unknown). The first attempt's arm learns, in the first attempt's
        context, ``landed x (1 - the whole task's cost / cost_ceiling)``. With ``retries``, each
        retry's arm also learns, in its own context, its reward-to-go: the same with the cost
        from that attempt on (:func:`task_rewards`); by default retries teach nothing, since
        in the benchmark that lands more tasks (docs/routing.md). ``skip`` names attempts
        (1-based positions) that teach nothing, such as pinned ones; an arm that is not
        configured teaches nothing either. Every attempt's cost counts all the same. Returns
        one record per attempt (also kept in :attr:`credited`).

        Raises:
            ValueError: no attempts, or a cost that is not a finite amount >= 0.
        """
        if not attempts:
            raise ValueError("a task has at least one attempt to credit")
        costs = [cost for _, _, cost in attempts]
        for cost in costs:
            if cost is not None and not 0.0 <= cost < math.inf:
                raise ValueError(f"cost must be a finite amount >= 0, got {cost}")
        rewards = task_rewards(costs, landed, self.config.cost_ceiling)
        configured = {a.key for a in self.config.arms}
        records = []
        for n, ((arm, ctx, cost), value) in enumerate(zip(attempts, rewards, strict=True), 1):
            tail = math.fsum(c or 0.0 for c in costs[n - 1 :])
            why = (
                "skipped"
                if n in skip
                else "not configured"
                if arm.key not in configured
                else "a retry"
                if n > 1 and not retries
                else ""
            )
            if not why:
                self.update(arm, ctx, value, cost, landed=landed and n == len(attempts))
            records.append(
                {
                    "attempt": n,
                    "arm": arm.key,
                    "cost_usd": cost,
                    "credited_cost_usd": round(tail, 6),
                    "reward": round(value, 6),
                    "landed": landed and n == len(attempts),
                    "learned": not why,
                    **({"note": why} if why else {}),
                }
            )
        self.credited = records
        return records

    def choose(
        self,
        ctx: TaskContext,
        *,
        pinned_agent: str | None = None,
        pinned_model: str | None = None,
        failed: Arm | None = None,
        unavailable: Collection[str] = (),
    ) -> Choice:
        """The arm for this attempt of a task, with the rule and the figures behind it.

        Args:
            ctx: the attempt's context.
            pinned_agent: the step's ``agent``: only that agent's arms are considered.
            pinned_model: the step's ``model``: only arms with that model are considered.
            failed: the arm whose attempt of this task failed last (None on a first attempt).
            unavailable: agents that cannot take work now (their provider is out of credit):
                their arms are left out while any other arm the pins allow remains.

        Both pinned gives that arm. A pin that matches no configured arm is obeyed as given:
        ``Arm(agent, model, tier)`` with the tier of a configured arm of that model, else
        balanced; a model pinned alone runs on the first configured arm's agent. Otherwise the
        cascade, bandit and retry rules run within the arms the pins allow.

        Raises:
            ValueError: no arm is configured and no agent is pinned.
        """
        x = features(ctx)
        vector = list(x.values())
        arms = sorted(self.config.arms, key=_rank)
        warm = self.completed < self.config.warmup
        stats = {a.key: self._states[a.key].estimate(vector, self.config.alpha) for a in arms}
        notes: dict[str, str] = {}

        def done(arm: Arm, rule: str, reason: str, eligible: Sequence[Arm]) -> Choice:
            if warm:
                reason += f" (warm-up: {self.completed} of {self.config.warmup} attempts learned)"
            rows = tuple(
                ArmEstimate(
                    a, *stats[a.key], sum(stats[a.key]), a in eligible, notes.get(a.key, "")
                )
                for a in arms
            )
            return Choice(arm, rule, reason, x, rows, warm, ctx)

        pool = arms
        if pinned_agent is not None or pinned_model is not None:
            pool = [a for a in arms if pinned_agent in (None, a.agent)]
            pool = [a for a in pool if pinned_model in (None, a.model)]
            pins = (("agent", pinned_agent), ("model", pinned_model))
            what = " and ".join(f"{kind} {name}" for kind, name in pins if name is not None)
            notes.update({a.key: f"pinned to {what}" for a in arms if a not in pool})
            if not pool or (pinned_agent is not None and pinned_model is not None):
                arm = pool[0] if pool else self._unconfigured(pinned_agent, pinned_model)
                extra = "" if pool else ", which is not a configured arm (nothing is learned)"
                return done(arm, "pinned", f"pinned: the step names {what}{extra}", pool)
        if not pool:
            raise ValueError("no router arms are configured ([[router.arms]] is empty)")
        usable = [a for a in pool if a.agent not in unavailable]
        if usable and len(usable) < len(pool):
            notes.update({a.key: f"{a.agent} is out of credit" for a in pool if a not in usable})
            pool = usable
        if failed is not None:
            return done(*_retry(pool, failed, warm, stats, notes))
        want = TIERS.index(self.config.start_tier(ctx.complexity))
        tiers = sorted({_tier(a) for a in pool})
        start = next((t for t in tiers if t >= want), tiers[-1])
        floor = f"the minimum for complexity {ctx.complexity}"
        allowed = f"{TIERS[start]}, " + (
            f"the cheapest tier allowed for complexity {ctx.complexity}"
            if start == want
            else f"the cheapest tier with an arm at or above {TIERS[want]}, {floor}"
            if start > want
            else f"the strongest tier with an arm ({TIERS[want]} is {floor})"
        )
        if warm:
            eligible = [a for a in pool if _tier(a) == start]
            notes.update({a.key: f"the cascade starts at {TIERS[start]}" for a in pool})
            notes.update({a.key: "" for a in eligible})
            arm = _best(eligible, stats, ucb=True)
            why = f"cascade: start at {allowed}"
            if len(eligible) > 1:
                why += f"; in that tier, {_versus(arm, eligible, stats, ucb=True)}"
            return done(arm, "cascade-start", why, eligible)
        eligible = [a for a in pool if _tier(a) >= start]
        below = f"below {TIERS[start]}, {floor}" + ("" if start == want else " with an arm")
        notes.update({a.key: below for a in pool if a not in eligible})
        arm = _best(eligible, stats, ucb=True)
        return done(arm, "bandit", f"bandit: {_versus(arm, eligible, stats, ucb=True)}", eligible)

    def _unconfigured(self, agent: str | None, model: str | None) -> Arm:
        same_model = [a for a in self.config.arms if model is not None and a.model == model]
        if agent is None:
            if not self.config.arms:
                raise ValueError(f"model {model} is pinned but no router arm names an agent")
            agent = self.config.arms[0].agent
        return Arm(agent, model, same_model[0].tier if same_model else "balanced")


_Stats = Mapping[str, tuple[float, float]]


def _best(cands: Sequence[Arm], stats: _Stats, *, ucb: bool) -> Arm:
    """The arm with the best estimate (or upper bound); ties by tier order, then key."""
    return min(cands, key=lambda a: (-stats[a.key][0] - ucb * stats[a.key][1], *_rank(a)))


def _versus(arm: Arm, cands: Sequence[Arm], stats: _Stats, *, ucb: bool) -> str:
    """``highest upper confidence bound 0.71 vs 0.64 for X`` (or ``best estimate …``)."""
    value = stats[arm.key][0] + ucb * stats[arm.key][1]
    text = f"{'highest upper confidence bound' if ucb else 'best estimate'} {value:.2f}"
    others = [a for a in cands if a != arm]
    if others:
        second = _best(others, stats, ucb=ucb)
        other = stats[second.key][0] + ucb * stats[second.key][1]
        text += f" vs {other:.2f} for {second.key}"
        text += " (a tie, broken by tier order, then key)" if other == value else ""
    return text if others else text + " (the only eligible arm)"


def _retry(
    pool: Sequence[Arm], failed: Arm, warm: bool, stats: _Stats, notes: dict[str, str]
) -> tuple[Arm, str, str, Sequence[Arm]]:
    """The arm for a retry after ``failed``: stronger, else a sibling, else the strongest."""
    level = _tier(failed)
    notes.update({a.key: f"not stronger than the failed arm {failed.key}" for a in pool})
    notes[failed.key] = "the arm that failed"
    stronger = [a for a in pool if _tier(a) > level]
    if stronger:
        nearest = min(_tier(a) for a in stronger)
        tier_arms = [a for a in stronger if _tier(a) == nearest]
        later = f"escalation goes to the cheapest stronger tier, {TIERS[nearest]}"
        notes.update({a.key: later for a in stronger if a not in tier_arms})
        for a in tier_arms:
            notes.pop(a.key)
        if warm:
            arm = _best(tier_arms, stats, ucb=True)
            why = f"cascade: escalate from {failed.tier} to {arm.tier} after a failure of "
            return arm, "cascade-escalate", why + failed.key, tier_arms
        arm = _best(tier_arms, stats, ucb=False)
        why = f"retry: strictly stronger than {failed.key}; in the cheapest stronger tier, "
        return arm, "retry-stronger", why + _versus(arm, tier_arms, stats, ucb=False), tier_arms
    siblings = [a for a in pool if a.tier == failed.tier and a.key != failed.key]
    if siblings:
        other = [a for a in siblings if a.agent != failed.agent] or siblings
        for a in siblings:
            notes[a.key] = "another " + ("agent" if a in other else "model; agents come first")
        arm = _best(other, stats, ucb=False)
        kind = "agent" if arm.agent != failed.agent else "model"
        why = f"retry: no arm is stronger than {failed.key}; {arm.key} is another {kind} at "
        why += f"tier {failed.tier}, {_versus(arm, other, stats, ucb=False)}"
        return arm, "retry-sibling", why, other
    top = max(_tier(a) for a in pool)
    strongest = [a for a in pool if _tier(a) == top]
    arm = _best(strongest, stats, ucb=False)
    why = f"retry: no arm is stronger than {failed.key} and no other arm shares its tier, "
    notes[arm.key] = "the strongest arm" + (", which failed last" if arm == failed else "")
    why += f"so the strongest arm, {arm.key}, " + ("tries again" if arm == failed else "takes it")
    return arm, "retry-same", why, strongest


def _json(value: Any, depth: int = 0) -> str:
    """Indented JSON with every list on one line (a matrix: one row a line); NaN refused."""
    pad, end = " " * (depth + 1), "\n" + " " * depth
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(k)}: {_json(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + end + "}"
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return "[\n" + ",\n".join(pad + _json(v) for v in value) + end + "]"
    return json.dumps(value, allow_nan=False)


def _parse_state(key: object, raw: Any) -> _ArmState:
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
    return _ArmState(a_inv, b, counts[0], counts[1], sums[0], sums[1], counts[2])


def update_policy(
    path: Path,
    config: RouterConfig,
    arm: Arm,
    ctx: TaskContext,
    reward: float,
    cost_usd: float | None,
    *,
    landed: bool | None = None,
) -> Policy:
    """Load, update and save the policy at ``path`` under a lock; return the new policy.

    The lock is an exclusive ``flock`` on the sibling ``<name>.lock`` file: runs that update the
    same policy at once wait for each other, so no update is lost.
    """
    with _locked_policy(path, config) as policy:
        policy.update(arm, ctx, reward, cost_usd, landed=landed)
    return policy


def update_policy_task(
    path: Path,
    config: RouterConfig,
    attempts: Sequence[tuple[Arm, TaskContext, float | None]],
    landed: bool,
    *,
    skip: Collection[int] = (),
    retries: bool = False,
) -> Policy:
    """Load the policy at ``path``, credit a finished task (:meth:`Policy.credit_task`) and save
    it, under the same lock as :func:`update_policy`; return the new policy (what it learned is
    in its ``credited``)."""
    with _locked_policy(path, config) as policy:
        policy.credit_task(attempts, landed, skip=skip, retries=retries)
    return policy


@contextlib.contextmanager
def _locked_policy(path: Path, config: RouterConfig) -> Iterator[Policy]:
    """The policy at ``path``, loaded under an exclusive ``flock`` on ``<name>.lock`` and saved
    when the block ends without an error: concurrent runs wait for each other, no update lost."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:  # flock: released on close
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        policy = Policy.load(path, config)
        yield policy
        policy.save(path)


def render_choice(data: Mapping[str, Any]) -> list[str]:
    """Text lines for ``stretto explain``: the winner, the rule, the features and every arm."""
    arm, ctx = data["arm"], data.get("context")
    head = "" if data.get("attempt") is None else f"attempt {data['attempt']}: "
    lines = [f"{head}{arm['key']} ({arm['tier']}), rule {data['rule']}", f"  why: {data['reason']}"]
    if ctx:
        files = ctx["files"]
        scope = "undeclared" if files is None else f"{len(files)} owned pattern(s)"
        lines.append(
            f"  task: complexity {ctx['complexity']}, role {ctx['role']}, files {scope}, "
            f"~{ctx['est_tokens']:,} tokens"
        )
    lines.append("  features: " + " ".join(f"{k}={v:.3g}" for k, v in data["features"].items()))
    rows = data["estimates"]
    width = max([3, *(len(r["key"]) for r in rows)])
    lines.append(f"  {'arm':<{width}}  {'tier':<8}  {'mean':>6}  {'bound':>6}  {'ucb':>6}  note")
    for r in rows:
        mark = "*" if r["key"] == arm["key"] else " "
        note = r["note"] if r["eligible"] else f"not eligible: {r['note']}"
        figures = f"{r['mean']:>6.3f}  {r['bound']:>6.3f}  {r['ucb']:>6.3f}"
        lines.append(f"{mark} {r['key']:<{width}}  {r['tier']:<8}  {figures}  {note}".rstrip())
    if not any(r["key"] == arm["key"] for r in rows):
        lines.append(f"* {arm['key']}: not a configured arm, so it has no estimate")
    return lines
