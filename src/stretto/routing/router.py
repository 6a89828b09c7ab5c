"""The router's policy: what it has learned about the arms, how it learns, where it is kept.

:class:`Policy` holds one LinUCB model per arm (:mod:`~stretto.routing.linucb`) and the number
of attempts learned. :meth:`Policy.choose` turns an attempt's context into a
:class:`~stretto.routing.choice.Choice` by the rules of
:func:`~stretto.routing.choice.choose_arm` (a static cascade during warm-up, then the highest
upper confidence bound on ``landed x (1 - cost / cost_ceiling)``, :func:`reward`).
:meth:`Policy.update` learns from one attempt (``credit = "attempt"``, the default) and
:meth:`Policy.credit_task` from a finished task (``credit = "task"``: a first attempt learns
whether the task landed and what all its attempts cost). Pure but for the policy file, loaded
and saved atomically (:func:`update_policy_task` and :func:`update_policy` hold a lock).
Guide: docs/routing.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from stretto.errors import RunError
from stretto.files import write_atomic
from stretto.routing.arms import Arm, RouterConfig
from stretto.routing.choice import Choice, choose_arm
from stretto.routing.features import FEATURE_NAMES, TaskContext, features
from stretto.routing.linucb import ArmState, cost_vs_mean, parse_state, retry_vector

POLICY_FORMAT = "stretto-router-policy"
#: Retries an arm's retry model learns before the give-up rule weighs it at all: a floor
#: against a model of one or two retries; the optimism below keeps retrying where the model
#: is unsure (in the replay of docs/routing.md a floor of 0 and of 5 chose alike).
MIN_RETRIES = 5
#: Standard errors of the retry model's chance added to it before the give-up rule weighs it:
#: a retry given up teaches nothing, so a context whose chance is unsure is retried until
#: its retries say otherwise (0: greedy, which stops retrying for good after unlucky first
#: retries; 1: almost never gives up; docs/routing.md).
RETRY_OPTIMISM = 0.5


class PolicyError(RunError):
    """The router's policy file cannot be used; deleting it starts learning afresh."""


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


class Policy:
    """The router's learned state for the configured arms; mutable, persisted as JSON.

    Attributes:
        config: the router configuration the policy serves.
        completed: attempts learned from, across runs (warm-up ends at ``config.warmup``): one
            per :meth:`update`, so with task credit one per task (its first attempt), or one
            per attempt that taught its arm with ``retries``.
        credited: what the latest :meth:`credit_task` learned (not saved; for the journal).
    """

    def __init__(self, config: RouterConfig, states: dict[str, ArmState], completed: int) -> None:
        self.config = config
        self.completed = completed
        self.credited: list[dict[str, Any]] = []
        self._states = states  # by arm key; arms no longer configured are kept, unused
        for arm in config.arms:
            self._states.setdefault(arm.key, ArmState.fresh())

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
            states = {str(k): parse_state(k, v) for k, v in dict(data["arms"]).items()}
        except FileNotFoundError:
            return cls.fresh(config)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # JSON and Unicode errors too
            why = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            raise PolicyError(
                f"{path}: the router policy cannot be used ({why}). Delete it to start learning "
                f"afresh (rm {path}); routing then begins again with the warm-up cascade"
            ) from exc
        return cls(config, states, completed)

    def arm_state(self, arm: Arm) -> ArmState | None:
        """What the policy has learned about ``arm`` (None: not an arm it knows)."""
        return self._states.get(arm.key)

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
        x, hit = list(features(ctx).values()), reward > 0 if landed is None else landed
        if ctx.attempt > 1:  # before the mean cost takes this attempt in: a fair ratio
            state.learn_retry(self._retry_vector(ctx, x), hit, cost_usd)
        state.learn(x, reward, hit)
        state.pulls += 1
        state.successes += int(hit)
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
        from that attempt on (:func:`task_rewards`); by default retries teach the bandit nothing
        (only the give-up rule's retry model, whether they landed and what they cost), since
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
            elif why == "a retry":  # the give-up rule's retry model learns from it all the same
                hit = landed and n == len(attempts)
                z = self._retry_vector(ctx, list(features(ctx).values()))
                self._states[arm.key].learn_retry(z, hit, cost)
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
        tried: Collection[str] = (),
    ) -> Choice:
        """The arm for this attempt of a task, with the rule and the figures behind it.

        Args:
            ctx: the attempt's context.
            pinned_agent: the step's ``agent``: only that agent's arms are considered.
            pinned_model: the step's ``model``: only arms with that model are considered.
            failed: the arm whose attempt of this task failed last (None on a first attempt).
            unavailable: agents that cannot take work now (their provider is out of credit):
                their arms are left out while any other arm the pins allow remains.
            tried: keys of the arms whose attempts of this task failed (``failed`` among them):
                a retry goes to one of them only when every arm has failed the task.

        After warm-up, with ``landed_value_usd`` configured, a retry whose arm's estimated
        chance to land here times that value is below the arm's mean cost is not made: the
        choice's rule is ``give-up`` (its arm is the one the retry would have taken).

        Both pinned gives that arm. A pin that matches no configured arm is obeyed as given:
        ``Arm(agent, model, tier)`` with the tier of a configured arm of that model, else
        balanced; a model pinned alone runs on the first configured arm's agent. Otherwise the
        cascade, bandit and retry rules run within the arms the pins allow.

        Raises:
            ValueError: no arm is configured and no agent is pinned.
        """
        x = features(ctx)
        vector = list(x.values())
        alpha = self.config.alpha
        stats = {a.key: self._capped(a, vector, alpha) for a in self.config.arms}
        z = self._retry_vector(ctx, vector)
        landing = {a.key: self._retry_figures(a, z) for a in self.config.arms}
        return choose_arm(
            self.config,
            self.completed,
            ctx,
            x,
            stats,
            pinned_agent=pinned_agent,
            pinned_model=pinned_model,
            failed=failed,
            unavailable=unavailable,
            landing=landing,
            tried=tried,
        )

    def _capped(self, arm: Arm, x: list[float], alpha: float) -> tuple[float, float]:
        """The arm's estimate and bound, the bound cut so that ``mean + bound`` stays within
        the most the arm can earn here: the reward of a landing at its mean cost,
        ``1 - mean cost / ceiling``, times (with attempt credit) its chance to land, the
        estimate plus the same bound, at most 1. Optimism only about what is possible; no cap
        before a priced attempt."""
        state = self._states[arm.key]
        mean, bound = state.estimate(x, alpha)
        cost = state.mean_cost
        if cost is None:
            return mean, bound
        best = 1.0 - min(1.0, cost / self.config.cost_ceiling)
        if self.config.credit == "attempt":  # a task's reward may come from a later attempt
            best *= min(1.0, state.landing(x) + bound)
        return mean, max(0.0, min(bound, best - mean))

    def _retry_vector(self, ctx: TaskContext, x: list[float]) -> list[float]:
        """The retry model's inputs for ``ctx``: the failed attempt's cost is weighed against
        the mean cost of its own arm (an arm the policy has not priced: 1/2, average)."""
        failed = ctx.failed
        state = self._states.get(failed.arm) if failed else None
        mean = state.mean_cost if state else None
        return retry_vector(x, cost_vs_mean(failed.cost_usd if failed else None, mean))

    def _retry_figures(self, arm: Arm, z: list[float]) -> tuple[float, float, float | None] | None:
        """A retry on ``arm`` here (``z`` a retry vector): its estimated chance to land, the
        optimism added to it (:data:`RETRY_OPTIMISM` standard errors) and its cost, by the
        arm's retry model; None while that model has learned fewer than :data:`MIN_RETRIES`
        retries."""
        state = self._states[arm.key]
        if state.retries < MIN_RETRIES:
            return None
        chance = state.retry_landing(z)
        # a landed-or-not outcome's standard deviation, at least 0.2: a chance estimated at
        # (or clamped to) 0 from a few retries is not certain
        error = math.sqrt(max(chance * (1.0 - chance), 0.04)) * state.retry_spread(z)
        return chance, min(1.0 - chance, RETRY_OPTIMISM * error), state.retry_cost(z)


def _json(value: Any, depth: int = 0) -> str:
    """Indented JSON with every list on one line (a matrix: one row a line); NaN refused."""
    pad, end = " " * (depth + 1), "\n" + " " * depth
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(k)}: {_json(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + end + "}"
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return "[\n" + ",\n".join(pad + _json(v) for v in value) + end + "]"
    return json.dumps(value, allow_nan=False)


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
