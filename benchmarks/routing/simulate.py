"""Routing strategies compared in a simulated world: cost, landed rate and regret.

Tasks have a hidden difficulty that follows from their complexity, file count, spread over
top-level directories and role, plus noise that no feature shows. Five arms across two agents
have prices and pass probabilities that fall with difficulty (the strong tier falls slowest).
Every task gets up to three attempts. The strategies face the same tasks and the same dice
(common random numbers), seed by seed, in one process:

* ``strongest``: the strongest arm every time, retries too;
* ``cascade``: the static cascade of :mod:`stretto.routing.choice` (a real ``Policy`` that never
  leaves warm-up and never learns): start at ``min_tier``, escalate one tier per failure;
* ``router``: the real :class:`stretto.routing.router.Policy`, warm-up 50. With ``--credit attempt``
  (the default) it learns after every attempt; with ``--credit task`` when a task ends, through
  ``Policy.credit_task``: the first attempt's arm gets ``landed x (1 - task cost / ceiling)``
  (``--retry-credit tail``: each retry's arm too, with the cost from that attempt on);
* ``oracle`` (a reference, not a contender): knowing the world's true curves and prices, the
  first arm and retry arms (within what the retry rule allows) with the best expected task
  reward ``landed x (1 - total cost / ceiling)``;
* ``oracle-attempt`` (the same, for the per-attempt objective): the first arm with the best
  expected one-attempt reward ``landed x (1 - cost / ceiling)``; retries as the cascade.

Regrets, each the sum over tasks of the best expected value for the task's features minus the
expected value of what the strategy chose (its plan is asked for at the task's start):

* task regret (the objective of task credit): the value of a first arm is the expected task
  reward when the retries after it are the best the retry rule allows;
* whole-plan regret: the same, with the strategy's own retry choices instead of the best ones;
* attempt regret (the objective of attempt credit, as first published): the value of a first
  arm is its expected reward on that one attempt.

``P(lands)`` is each plan's chance to land on the task's true difficulty, without the dice. The
frontier (``--frontier``) is the best P(lands) that any policy choosing plans from the features
can reach at each cost. Expectations are exact up to quadrature: 41 normal points for the hidden
difficulty noise, and for the cost noise 41 points in each attempt's dimension. The world, its
assumptions and the results are in docs/routing.md.

    .venv/bin/python benchmarks/routing/simulate.py [--seeds 10] [--tasks 2000] [--json]
        [--credit attempt] [--retry-credit none] [--alpha 1.0] [--ceiling 2.0] [--warmup 50]
        [--min-tier high=strong] [--cheap-shift 0] [--frontier]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from itertools import product
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, median, table, verdict
from stretto.routing.arms import DEFAULT_MIN_TIER, TIERS, Arm, RouterConfig
from stretto.routing.features import TaskContext, estimate_tokens
from stretto.routing.router import Policy, reward

MAX_ATTEMPTS = 3
CHECKPOINTS = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000)
TARGET_REDUCTION = 0.35
STRATEGIES = ("oracle", "oracle-attempt", "strongest", "cascade", "router")


@dataclass(frozen=True, slots=True)
class ArmModel:
    """The world's truth about one arm (hidden from the router): price and pass curve."""

    arm: Arm
    price: float  # USD per attempt on a medium task, before noise
    center: float  # difficulty at which the pass probability is half of ``top``
    width: float  # how gently the pass probability falls with difficulty
    top: float  # pass probability on the easiest task
    good_at: frozenset[str] = field(default_factory=frozenset)  # roles where center is +0.03


CLAUDE_ROLES = frozenset({"frontend", "docs"})
CODEX_ROLES = frozenset({"backend"})
WORLD: tuple[ArmModel, ...] = (
    ArmModel(Arm("claude", "claude-haiku-4-5", "fast"), 0.05, 0.35, 0.07, 0.95, CLAUDE_ROLES),
    ArmModel(Arm("codex", "gpt-5-mini", "fast"), 0.03, 0.33, 0.07, 0.95, CODEX_ROLES),
    ArmModel(Arm("claude", "claude-sonnet-4-5", "balanced"), 0.25, 0.55, 0.08, 0.97, CLAUDE_ROLES),
    ArmModel(Arm("codex", "gpt-5", "balanced"), 0.18, 0.55, 0.08, 0.97, CODEX_ROLES),
    ArmModel(Arm("claude", "claude-opus-4-1", "strong"), 1.00, 0.80, 0.09, 0.98),
)
ARMS = WORLD  # replaced by main() when --cheap-shift moves the cheaper tiers' curves
STRONGEST = WORLD[-1].arm
STRONGEST_USD = 1.0  # mean cost of one attempt of the strongest arm
COMPLEXITY_WEIGHTS = {"low": 0.4, "medium": 0.4, "high": 0.2}
BASE_DIFFICULTY = {"low": 0.15, "medium": 0.40, "high": 0.65}
FILE_RANGE = {"low": (1, 3), "medium": (1, 6), "high": (2, 12)}
SIZE = {"low": 0.75, "medium": 1.0, "high": 1.3}  # cost scale by complexity (tokens used)
ROLES = {"backend": 0.30, "frontend": 0.25, "qa": 0.15, "docs": 0.10, "general": 0.20}
ROLE_DIFFICULTY = {"backend": 0.04, "frontend": 0.02, "qa": -0.03, "docs": -0.08, "general": 0.0}
HOME = {"backend": "src", "frontend": "web", "qa": "tests", "docs": "docs", "general": "src"}
DIRS = ("src", "web", "tests", "docs", "scripts")
NOISE = 0.08  # sd of the part of the difficulty no feature shows
COST_NOISE = 0.25  # sd of log cost

Context = tuple[str, str, int, int]  # complexity, role, files, top-level dirs


@dataclass(frozen=True, slots=True)
class Task:
    complexity: str
    role: str
    files: tuple[str, ...]
    noise: float  # hidden
    dice: tuple[tuple[float, ...], ...]  # [attempt][arm] uniform: lands when below p
    cost_z: tuple[tuple[float, ...], ...]  # [attempt][arm] standard normal for the cost

    @property
    def context(self) -> Context:
        return self.complexity, self.role, *shape(self.files)


def shape(files: tuple[str, ...]) -> tuple[int, int]:
    return len(files), len({f.split("/")[0] for f in files})


def make_tasks(n: int, seed: int) -> list[Task]:
    rng = random.Random(seed)
    tasks = []
    for _ in range(n):
        cx = rng.choices(list(COMPLEXITY_WEIGHTS), list(COMPLEXITY_WEIGHTS.values()))[0]
        role = rng.choices(list(ROLES), list(ROLES.values()))[0]
        count = rng.randint(*FILE_RANGE[cx])
        dirs = [HOME[role] if rng.random() < 0.7 else rng.choice(DIRS) for _ in range(count)]
        files = tuple(f"{d}/m{k}.py" for k, d in enumerate(dirs))
        dice = tuple(tuple(rng.random() for _ in ARMS) for _ in range(MAX_ATTEMPTS))
        cost_z = tuple(tuple(rng.gauss(0, 1) for _ in ARMS) for _ in range(MAX_ATTEMPTS))
        tasks.append(Task(cx, role, files, rng.gauss(0, NOISE), dice, cost_z))
    return tasks


def difficulty(context: Context) -> float:
    """The part of a task's difficulty that follows from its features (the rest is noise)."""
    cx, role, count, dirs = context
    spread = 0.05 * math.log2(count) + 0.03 * (dirs - 1)
    return BASE_DIFFICULTY[cx] + spread + ROLE_DIFFICULTY[role]


def pass_probability(model: ArmModel, role: str, d: float) -> float:
    center = model.center + (0.03 if role in model.good_at else 0.0)
    return model.top / (1.0 + math.exp((d - center) / model.width))


def cost(model: ArmModel, complexity: str, z: float) -> float:
    """USD of one attempt: price x size, log-normal noise with mean 1."""
    return model.price * SIZE[complexity] * math.exp(COST_NOISE * z - COST_NOISE**2 / 2)


CALIBRATION_SEED = 1_000_000  # the tasks the calibrated world is fitted on (runs use 0, 1, ...)
SHAPE = {"fast": (0.07, 0.95), "balanced": (0.08, 0.97), "strong": (0.09, 0.98)}  # width, top


def calibrated_world() -> dict[str, Any]:
    """The world of ``--world swe-bench``: the assumed world's task model and curve shapes,
    with the complexity mix, the arms, their prices and resolve rates, and the hidden noise
    fitted to the published figures in published.py. Sets the module's world; returns the fit.

    1. Complexities follow SWE-bench Verified's time-to-fix mix.
    2. The hidden noise sd is the one for which a fast-tier curve resolving RETRY_ONE of the
       tasks in one attempt resolves RETRY_TWO in two (attempts independent given the task).
    3. Each agent's curve keeps its tier's width and top; its center is the one at which it
       resolves its published share of the tasks in one attempt.
    4. Each agent's price makes its mean cost per attempt over the mix the published one.
    """
    global ARMS, STRONGEST, STRONGEST_USD, COMPLEXITY_WEIGHTS, NOISE
    from published import AGENTS, DIFFICULTY_MIX, RETRY_ONE, RETRY_TWO

    COMPLEXITY_WEIGHTS = dict(DIFFICULTY_MIX)
    ARMS = tuple(ArmModel(Arm(a.agent, a.model, a.tier), 0, 0, *SHAPE[a.tier]) for a in AGENTS)
    counts: dict[tuple[Context, float], int] = {}
    for task in make_tasks(20_000, CALIBRATION_SEED):
        key = (task.context, difficulty(task.context))
        counts[key] = counts.get(key, 0) + 1
    population = [(role_of(c), d, n / 20_000) for (c, d), n in counts.items()]

    def resolved(model: ArmModel, noise: float, tries: int) -> float:
        return sum(
            share * w * (1 - (1 - pass_probability(model, role, d + noise * z)) ** tries)
            for role, d, share in population
            for z, w in GRID
        )

    def centered(model: ArmModel, noise: float, target: float) -> ArmModel:
        lo, hi = -1.0, 2.0  # resolved() rises with the center
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (
                (mid, hi) if resolved(replace(model, center=mid), noise, 1) < target else (lo, mid)
            )
        return replace(model, center=(lo + hi) / 2)

    probe = ArmModel(Arm("probe", "probe", "fast"), 0, 0, *SHAPE["fast"])
    lo, hi = 0.0, 0.5  # two-attempt rescue falls as the hidden noise grows
    for _ in range(25):
        mid = (lo + hi) / 2
        two = resolved(centered(probe, mid, RETRY_ONE), mid, 2)
        lo, hi = (mid, hi) if two > RETRY_TWO else (lo, mid)
    NOISE = (lo + hi) / 2
    size = sum(w * SIZE[cx] for cx, w in COMPLEXITY_WEIGHTS.items())
    ARMS = tuple(
        replace(centered(m, NOISE, a.resolved), price=a.usd_per_task / size)
        for m, a in zip(ARMS, AGENTS, strict=True)
    )
    STRONGEST, STRONGEST_USD = ARMS[-1].arm, AGENTS[-1].usd_per_task
    return {
        "noise": NOISE,
        "two_attempts": resolved(centered(probe, NOISE, RETRY_ONE), NOISE, 2),
        "arms": [
            {
                "arm": m.arm.key,
                "tier": m.arm.tier,
                "price": m.price,
                "center": m.center,
                "resolved": resolved(m, NOISE, 1),
                "published": a.resolved,
            }
            for m, a in zip(ARMS, AGENTS, strict=True)
        ],
    }


def role_of(context: Context) -> str:
    return context[1]


def _normal_grid(points: int = 41, span: float = 4.0) -> list[tuple[float, float]]:
    zs = [-span + 2 * span * i / (points - 1) for i in range(points)]
    ws = [math.exp(-z * z / 2) for z in zs]
    return [(z, w / sum(ws)) for z, w in zip(zs, ws, strict=True)]


GRID = _normal_grid()


@cache
def expected_reward(context: Context, index: int, ceiling: float) -> float:
    """E[reward] of arm ``index`` on a first attempt in ``context``, over the hidden noise."""
    model = ARMS[index]
    cx, role = context[0], context[1]
    base = difficulty(context)
    quality = sum(w * pass_probability(model, role, base + NOISE * z) for z, w in GRID)
    keep = sum(w * (1 - min(1.0, cost(model, cx, z) / ceiling)) for z, w in GRID)
    return quality * keep


@cache
def retry_arms(index: int) -> tuple[int, ...]:
    """The arms the router's retry rule allows after arm ``index`` failed (by its eligibility)."""
    arms = tuple(m.arm for m in ARMS)
    ctx = TaskContext("medium", "general", ("src/a.py",), 2, 120_000)
    choice = Policy.fresh(RouterConfig(arms=arms)).choose(ctx, failed=arms[index])
    eligible = {e.key for e in choice.estimates if e.eligible}
    return tuple(i for i, a in enumerate(arms) if a.key in eligible)


@cache
def plans(first: int) -> tuple[tuple[int, ...], ...]:
    """Every sequence of ``MAX_ATTEMPTS`` arms from ``first`` on that the retry rule allows."""
    out: list[tuple[int, ...]] = [(first,)]
    for _ in range(MAX_ATTEMPTS - 1):
        out = [(*seq, nxt) for seq in out for nxt in retry_arms(seq[-1])]
    return tuple(out)


@cache
def keep_share(complexity: str, arms: tuple[int, ...], ceiling: float) -> float:
    """E[1 - min(1, total cost / ceiling)] of one attempt on each of ``arms`` (the cost noise)."""
    legs = [[(w, cost(ARMS[i], complexity, z)) for z, w in GRID] for i in arms]
    total = 0.0
    for combo in product(*legs):
        weight, spent = 1.0, 0.0
        for w, c in combo:
            weight *= w
            spent += c
        total += weight * max(0.0, 1.0 - spent / ceiling)
    return total


@cache
def plan_value(context: Context, plan: tuple[int, ...], ceiling: float) -> float:
    """E[landed x (1 - total cost / ceiling)] of a task in ``context`` whose attempts follow
    ``plan`` until one lands: over the hidden noise, and the cost noise of every attempt."""
    cx, role = context[0], context[1]
    base = difficulty(context)
    value = 0.0
    for k in range(1, len(plan) + 1):
        reach_and_land = 0.0  # P(the first k - 1 attempts fail and attempt k lands)
        for z, w in GRID:
            d = base + NOISE * z
            ps = [pass_probability(ARMS[i], role, d) for i in plan[:k]]
            reach_and_land += w * math.prod(1 - p for p in ps[:-1]) * ps[-1]
        value += reach_and_land * keep_share(cx, tuple(sorted(plan[:k])), ceiling)
    return value


@cache
def task_value(context: Context, first: int, ceiling: float) -> tuple[float, tuple[int, ...]]:
    """The best expected task reward after first arm ``first``, and the plan that gets it
    (ties go to the plan listed first, that is the cheaper retries)."""
    scored = [(plan_value(context, plan, ceiling), plan) for plan in plans(first)]
    return max(scored, key=lambda item: item[0])


@cache
def plan_odds(context: Context, plan: tuple[int, ...]) -> tuple[float, float]:
    """P(lands) and expected USD of a task in ``context`` whose attempts follow ``plan``."""
    cx, role = context[0], context[1]
    base = difficulty(context)
    lands = spent = 0.0
    for z, w in GRID:
        d = base + NOISE * z
        reach = 1.0  # P(the attempts so far all failed)
        for i in plan:
            spent += w * reach * ARMS[i].price * SIZE[cx]  # the cost noise has mean 1
            reach *= 1 - pass_probability(ARMS[i], role, d)
        lands += w * (1 - reach)
    return lands, spent


def frontier(tasks: Sequence[Task], target: float) -> dict[str, Any]:
    """The best P(lands) any policy that sees only the features can reach at each cost.

    A policy here picks, for each context, a plan: a first arm and retries within the retry
    rule (the router's choices are of this kind). Maximizing ``P(lands) - lam x E[cost]`` in
    each context gives the points of the efficient frontier, exactly (expectations over the
    hidden noise and dice); mixing two neighbouring points gives the segment between them.
    Returned: points for a range of ``lam``, and the best P(lands) at ``target`` cost saving.
    """
    contexts = [t.context for t in tasks]
    every = [plan for first in range(len(ARMS)) for plan in plans(first)]
    top = len(ARMS) - 1
    strong = tuple(sum(plan_odds(c, (top,) * MAX_ATTEMPTS)[k] for c in contexts) for k in (0, 1))

    def point(lam: float) -> tuple[float, float]:
        lands = spent = 0.0
        for c in contexts:
            odds = [plan_odds(c, plan) for plan in every]
            best = max(odds, key=lambda o: o[0] - lam * o[1])
            lands, spent = lands + best[0], spent + best[1]
        return spent / strong[1], lands / len(contexts)

    lams = [0.0] + [10 ** (k / 8) / 1000 for k in range(0, 33)]  # 0.001 .. 10 per USD
    points = sorted({point(lam) for lam in lams})
    return {
        "strongest_landed": strong[0] / len(contexts),
        "points": [{"cost_ratio": c, "landed": lr} for c, lr in points],
        "landed_at_target": on_frontier(points, 1 - target),
    }


def on_frontier(points: Sequence[tuple[float, float]], ratio: float) -> float:
    """The frontier's P(lands) at cost ``ratio``, on the segment between its points."""
    below = [p for p in points if p[0] <= ratio]
    above = [p for p in points if p[0] > ratio]
    if not below:
        return 0.0
    if not above:
        return max(p[1] for p in below)
    (c0, l0), (c1, l1) = max(below), min(above)
    return l0 + (l1 - l0) * (ratio - c0) / (c1 - c0)


def landing_chance(task: Task, plan: Sequence[int]) -> float:
    """P(the task lands) on its true difficulty when its attempts follow ``plan``."""
    d = difficulty(task.context) + task.noise
    return 1 - math.prod(1 - pass_probability(ARMS[i], task.role, d) for i in plan)


@dataclass
class Outcome:
    landed: int = 0
    cost: float = 0.0
    attempts: int = 0
    landing_chance: float = 0.0  # sum over tasks of P(lands) for the plan at the task's start
    regret: list[float] = field(default_factory=list)  # task regret, cumulative, after each task
    attempt_regret: list[float] = field(default_factory=list)  # the same, attempt objective
    plan_regret: list[float] = field(default_factory=list)  # task regret of the whole plan
    first_tiers: dict[str, int] = field(default_factory=dict)


Chooser = Callable[[TaskContext, Arm | None], Arm]
Attempts = list[tuple[Arm, TaskContext, float | None]]


@dataclass(frozen=True, slots=True)
class Learner:
    """How a strategy learns: after every attempt, or once the task has ended."""

    attempt: Callable[[Arm, TaskContext, float, float, bool], None] | None = None
    task: Callable[[Attempts, bool], None] | None = None


def play(tasks: Sequence[Task], choose: Chooser, learn: Learner, ceiling: float) -> Outcome:
    """Run every task through one strategy; return its totals and cumulative regrets.

    Before a task starts, its plan (the first arm and the retries after failures) is asked of
    the strategy; the plan is followed unless the strategy learns after every attempt, in which
    case each retry is asked again after the update.
    """
    out = Outcome()
    index = {m.arm.key: i for i, m in enumerate(ARMS)}
    regret = attempt_regret = plan_regret = 0.0
    n_arms = range(len(ARMS))
    for task in tasks:
        context = task.context
        d = difficulty(context) + task.noise
        est = estimate_tokens(task.complexity, task.files)
        ctxs = [
            TaskContext(task.complexity, task.role, task.files, k + 1, est)
            for k in range(MAX_ATTEMPTS)
        ]
        plan = [choose(ctxs[0], None)]
        for ctx in ctxs[1:]:
            plan.append(choose(ctx, plan[-1]))
        first = index[plan[0].key]
        best = max(task_value(context, j, ceiling)[0] for j in n_arms)
        regret += best - task_value(context, first, ceiling)[0]
        out.regret.append(regret)
        plan_regret += best - plan_value(context, tuple(index[a.key] for a in plan), ceiling)
        out.plan_regret.append(plan_regret)
        best = max(expected_reward(context, j, ceiling) for j in n_arms)
        attempt_regret += best - expected_reward(context, first, ceiling)
        out.attempt_regret.append(attempt_regret)
        out.first_tiers[plan[0].tier] = out.first_tiers.get(plan[0].tier, 0) + 1
        out.landing_chance += landing_chance(task, [index[a.key] for a in plan])
        done: Attempts = []
        landed = False
        for attempt, ctx in enumerate(ctxs):
            arm = plan[attempt]
            if attempt and learn.attempt is not None:
                arm = choose(ctx, done[-1][0])
            i = index[arm.key]
            spent = cost(ARMS[i], task.complexity, task.cost_z[attempt][i])
            landed = task.dice[attempt][i] < pass_probability(ARMS[i], task.role, d)
            out.cost += spent
            out.attempts += 1
            done.append((arm, ctx, spent))
            if learn.attempt is not None:
                learn.attempt(arm, ctx, reward(landed, spent, ceiling), spent, landed)
            if landed:
                out.landed += 1
                break
        if learn.task is not None:
            learn.task(done, landed)
    return out


def router_config(args: argparse.Namespace) -> RouterConfig:
    """The router's configuration for this benchmark run."""
    overrides = dict(item.split("=", 1) for item in args.min_tier.split(",") if item)
    return RouterConfig(
        arms=tuple(m.arm for m in ARMS),
        warmup=args.warmup,
        alpha=args.alpha,
        cost_ceiling=args.ceiling,
        min_tier={**DEFAULT_MIN_TIER, **overrides},
        credit=args.credit,
    )


def strategies(args: argparse.Namespace) -> dict[str, tuple[Chooser, Learner]]:
    """Fresh strategies for one seed (the router starts from an empty policy)."""
    arms = tuple(m.arm for m in ARMS)
    static = Policy.fresh(RouterConfig(arms=arms, warmup=10**9))
    router = Policy.fresh(router_config(args))
    ceiling = args.ceiling
    retries = args.retry_credit == "tail"

    def learn_attempt(arm: Arm, ctx: TaskContext, r: float, spent: float, landed: bool) -> None:
        router.update(arm, ctx, r, spent, landed=landed)

    def learn_task(attempts: Attempts, landed: bool) -> None:
        router.credit_task(attempts, landed, retries=retries)

    def oracle(ctx: TaskContext, failed: Arm | None) -> Arm:
        context = (ctx.complexity, ctx.role, *shape(ctx.files or ()))
        first = max(range(len(ARMS)), key=lambda j: (task_value(context, j, ceiling)[0], -j))
        return ARMS[task_value(context, first, ceiling)[1][ctx.attempt - 1]].arm

    def oracle_attempt(ctx: TaskContext, failed: Arm | None) -> Arm:
        if failed is not None:
            return static.choose(ctx, failed=failed).arm
        context = (ctx.complexity, ctx.role, *shape(ctx.files or ()))
        best = max(range(len(ARMS)), key=lambda j: expected_reward(context, j, ceiling))
        return ARMS[best].arm

    learner = Learner(task=learn_task) if args.credit == "task" else Learner(learn_attempt)
    return {
        "oracle": (oracle, Learner()),
        "oracle-attempt": (oracle_attempt, Learner()),
        "strongest": (lambda ctx, failed: STRONGEST, Learner()),
        "cascade": (lambda ctx, failed: static.choose(ctx, failed=failed).arm, Learner()),
        "router": (lambda ctx, failed: router.choose(ctx, failed=failed).arm, learner),
    }


def exponent(points: Sequence[tuple[int, float]]) -> float:
    """Least-squares slope of log(regret) on log(tasks): below 1 means sub-linear growth."""
    xs = [math.log(t) for t, _ in points]
    ys = [math.log(max(r, 1e-9)) for _, r in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return float(num / sum((x - mx) ** 2 for x in xs))


def time_choose() -> float:
    """Median seconds of one ``Policy.choose`` with six arms, after 500 updates."""
    arms = (*(m.arm for m in WORLD), Arm("gemini", "gemini-2.5-pro", "strong"))
    policy = Policy.fresh(RouterConfig(arms=arms, warmup=0))
    tasks = make_tasks(500, 99)
    ctxs = [TaskContext(t.complexity, t.role, t.files, 1, 100_000) for t in tasks]
    for i, ctx in enumerate(ctxs):
        policy.update(arms[i % len(arms)], ctx, (i % 7) / 7, 0.1)
    times = []
    for ctx in ctxs:
        start = time.perf_counter()
        policy.choose(ctx)
        times.append(time.perf_counter() - start)
    return float(median(times))


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": median(values), "min": min(values), "max": max(values)}


def regrets(runs: list[Outcome], n: int, attr: str) -> tuple[dict[str, Any], dict[str, float]]:
    """Cumulative regret at each checkpoint, and the fitted exponent, over seeds."""
    marks = [c for c in CHECKPOINTS if c <= n] or [n]
    series = [getattr(r, attr) for r in runs]
    at = {str(c): spread([s[c - 1] for s in series]) for c in marks}
    fits = [exponent([(c, s[c - 1]) for c in marks]) for s in series] if len(marks) > 1 else []
    return at, spread(fits or [1.0])


def summarize(name: str, runs: list[Outcome], n: int) -> dict[str, Any]:
    regret, regret_exponent = regrets(runs, n, "regret")
    attempt_regret, attempt_exponent = regrets(runs, n, "attempt_regret")
    plan_regret, plan_exponent = regrets(runs, n, "plan_regret")
    return {
        "strategy": name,
        "landed_rate": spread([r.landed / n for r in runs]),
        "expected_landed_rate": spread([r.landing_chance / n for r in runs]),
        "total_cost_usd": spread([r.cost for r in runs]),
        "cost_per_landed_usd": spread([r.cost / max(r.landed, 1) for r in runs]),
        "attempts_per_task": spread([r.attempts / n for r in runs]),
        "regret": regret,
        "regret_exponent": regret_exponent,
        "attempt_regret": attempt_regret,
        "attempt_regret_exponent": attempt_exponent,
        "plan_regret": plan_regret,
        "plan_regret_exponent": plan_exponent,
        "first_attempt_tier_share": {
            tier: median([r.first_tiers.get(tier, 0) / n for r in runs])
            for tier in ("fast", "balanced", "strong")
        },
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every strategy on every seed; the report as plain data."""
    started = time.perf_counter()
    runs: dict[str, list[Outcome]] = {name: [] for name in STRATEGIES}
    for seed in range(args.seeds):
        tasks = make_tasks(args.tasks, seed)
        for name, (choose, learn) in strategies(args).items():
            runs[name].append(play(tasks, choose, learn, args.ceiling))
    pairs = list(zip(runs["router"], runs["strongest"], strict=True))
    tasks = [t for seed in range(args.seeds) for t in make_tasks(args.tasks, seed)]
    front = frontier(tasks, TARGET_REDUCTION)
    points = [(p["cost_ratio"], p["landed"]) for p in front["points"]]
    ratio = median([r.cost / s.cost for r, s in pairs])
    router_chance = median([r.landing_chance / args.tasks for r in runs["router"]])
    return {
        "seeds": args.seeds,
        "tasks": args.tasks,
        "credit": args.credit,
        "retry_credit": args.retry_credit if args.credit == "task" else None,
        "alpha": args.alpha,
        "cost_ceiling": args.ceiling,
        "warmup": args.warmup,
        "min_tier": args.min_tier or "default",
        "cheap_shift": args.cheap_shift,
        "world": args.world,
        "calibration": args.calibration,
        "strategies": {name: summarize(name, outs, args.tasks) for name, outs in runs.items()},
        "router_over_strongest_cost": spread([r.cost / s.cost for r, s in pairs]),
        "router_minus_strongest_landed": spread(
            [(r.landed - s.landed) / args.tasks for r, s in pairs]
        ),
        "router_minus_strongest_expected_landed": spread(
            [(r.landing_chance - s.landing_chance) / args.tasks for r, s in pairs]
        ),
        "frontier": {
            "strongest_landed": front["strongest_landed"],
            "landed_at_target": front["landed_at_target"],
            "landed_at_router_cost": on_frontier(points, ratio),
            "router_minus_frontier": router_chance - on_frontier(points, ratio),
        },
        "router_per_seed": [
            {
                "seed": seed,
                "cost_ratio": r.cost / s.cost,
                "landed_minus_strongest": (r.landed - s.landed) / args.tasks,
                "task_regret": r.regret[-1],
                "attempt_regret": r.attempt_regret[-1],
            }
            for seed, (r, s) in enumerate(pairs)
        ],
        "choose_seconds_6_arms": time_choose(),
        "seconds": time.perf_counter() - started,
    }


def cell(s: dict[str, float], fmt: str, scale: float = 1.0) -> str:
    lo, mid, hi = (s[k] * scale for k in ("min", "median", "max"))
    return f"{mid:{fmt}} ({lo:{fmt}}-{hi:{fmt}})"


def show(report: dict[str, Any]) -> None:
    results = report["strategies"]
    print(machine())
    retry = f" (retries: {report['retry_credit']})" if report["credit"] == "task" else ""
    print(
        f"{report['seeds']} seeds x {report['tasks']} tasks, up to {MAX_ATTEMPTS} attempts each; "
        f"router: credit {report['credit']}{retry}, alpha {report['alpha']}, "
        f"cost ceiling ${report['cost_ceiling']:g}, warm-up {report['warmup']}, "
        f"min_tier {report['min_tier']}; cheap-tier shift {report['cheap_shift']:+g}; "
        f"world {report['world']}\n"
    )
    if report["calibration"]:
        fit = report["calibration"]
        rows = [
            [
                a["arm"],
                a["tier"],
                f"${a['price']:.3f}",
                f"{a['center']:.3f}",
                f"{a['resolved']:.1%}",
                f"{a['published']:.1%}",
            ]
            for a in fit["arms"]
        ]
        print(table(["arm", "tier", "price (medium)", "center", "resolves", "published"], rows))
        print(
            f"hidden noise sd {fit['noise']:.3f}: two attempts of a fast curve resolving 66.6% "
            f"resolve {fit['two_attempts']:.1%} (published 74.6%)\n"
        )
    rows = [
        [
            name,
            cell(r["landed_rate"], ".1f", 100),
            cell(r["expected_landed_rate"], ".1f", 100),
            cell(r["total_cost_usd"], ".0f"),
            cell(r["cost_per_landed_usd"], ".3f"),
            f"{r['attempts_per_task']['median']:.2f}",
            " / ".join(f"{r['first_attempt_tier_share'][t]:.0%}" for t in TIERS),
        ]
        for name, r in results.items()
    ]
    header = ["strategy", "landed %", "P(lands) %", "total cost $", "$ per landed", "attempts"]
    print(table([*header, "first f/b/s"], rows))
    print(
        "(median over seeds, min-max in brackets; P(lands): the mean chance to land of the plan "
        "at each task's start, on its true difficulty, without the dice; the oracles are "
        "references, not strategies)\n"
    )
    kinds = (("regret", "task"), ("plan_regret", "whole-plan"), ("attempt_regret", "attempt"))
    for attr, what in kinds:
        marks = list(results["router"][attr])
        regret_rows = [
            [
                name,
                *(
                    f"{r[attr][m]['median']:.1f} ({r[attr][m]['median'] / int(m):.3f}/task)"
                    for m in marks
                ),
                f"{r[attr + '_exponent']['median']:.2f}",
            ]
            for name, r in results.items()
            if name != ("oracle-attempt" if what == "attempt" else "oracle")
        ]
        head = [f"{what} regret", *(f"@{m}" for m in marks), "exponent"]
        print(table(head, regret_rows))
    print("(median over seeds; exponent: slope of log regret on log tasks over the checkpoints)\n")
    ratio, gap = report["router_over_strongest_cost"], report["router_minus_strongest_landed"]
    chance = report["router_minus_strongest_expected_landed"]
    landed = {name: results[name]["landed_rate"]["median"] for name in results}
    print(
        f"router cost / always-strongest cost: {ratio['median']:.3f} "
        f"(seeds {ratio['min']:.3f}-{ratio['max']:.3f}), {1 - ratio['median']:.1%} lower; "
        f"landed {landed['router']:.1%} vs {landed['strongest']:.1%} "
        f"(router minus strongest, per seed: {gap['min']:+.1%} to {gap['max']:+.1%}; "
        f"in P(lands): {chance['median']:+.2%}, {chance['min']:+.2%} to {chance['max']:+.2%})"
    )
    front = report["frontier"]
    print(
        f"frontier (the best P(lands) at a cost, over plans chosen from the features): "
        f"{front['landed_at_router_cost']:.2%} at the router's cost, so the router is "
        f"{front['router_minus_frontier']:+.2%} from it; {front['landed_at_target']:.2%} at "
        f"{TARGET_REDUCTION:.0%} lower cost (always-strongest {front['strongest_landed']:.2%})"
    )
    choose_s = report["choose_seconds_6_arms"]
    print(f"one Policy.choose with 6 arms: {choose_s * 1e6:.0f} us (median of 500)")
    print(f"{report['seconds']:.1f} s in all\n")
    reduction = 1 - ratio["median"]
    verdict(
        f"router cost >= {TARGET_REDUCTION:.0%} below always-strongest: {reduction:.1%}",
        reduction >= TARGET_REDUCTION,
    )
    verdict(
        f"router landed rate >= always-strongest: {landed['router']:.1%} vs "
        f"{landed['strongest']:.1%}",
        landed["router"] >= landed["strongest"],
    )
    own = "regret" if report["credit"] == "task" else "attempt_regret"  # the router's objective
    exp = results["router"][own + "_exponent"]["median"]
    verdict(
        f"router {report['credit']} regret (its objective) grows sub-linearly: fitted exponent "
        f"{exp:.2f} < 1",
        exp < 1,
    )
    verdict(f"one choose with 6 arms <= 1 ms: {choose_s * 1e3:.2f} ms", choose_s <= 1e-3)


def main() -> int:
    global ARMS
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument(
        "--credit",
        choices=("task", "attempt"),
        default=RouterConfig().credit,
        help="router credit: learn when a task ends, or after every attempt",
    )
    parser.add_argument(
        "--retry-credit",
        choices=("tail", "none"),
        default="none",
        help="with task credit: retries learn nothing (none), or their reward-to-go (tail)",
    )
    parser.add_argument(
        "--alpha", type=float, default=RouterConfig().alpha, help="router exploration weight"
    )
    parser.add_argument(
        "--world",
        choices=("assumed", "swe-bench"),
        default="assumed",
        help="assumed: the world as first published; swe-bench: fitted to published SWE-bench "
        "Verified figures of real agent CLIs (benchmarks/routing/published.py)",
    )
    parser.add_argument(
        "--ceiling",
        type=float,
        default=None,
        help="router cost_ceiling, USD (default: twice one attempt of the strongest arm, $2 in "
        "the assumed world)",
    )
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--min-tier", default="", help="router min_tier overrides: high=strong")
    parser.add_argument(
        "--cheap-shift",
        type=float,
        default=0.0,
        help="sensitivity: move the fast and balanced pass curves this far up the difficulty "
        "scale (0.05: cheaper tiers a little better; the published world is 0)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--frontier",
        action="store_true",
        help="print only the efficient frontier of P(lands) against cost (the seeds' tasks)",
    )
    args = parser.parse_args()
    args.calibration = calibrated_world() if args.world == "swe-bench" else None
    if args.ceiling is None:  # the documented rule: twice one attempt of the strongest arm
        args.ceiling = 2.0 if args.calibration is None else 2 * STRONGEST_USD
    shift = args.cheap_shift
    ARMS = tuple(
        replace(m, center=m.center + (shift if m.arm.tier != "strong" else 0.0)) for m in ARMS
    )
    if args.frontier:
        tasks = [t for seed in range(args.seeds) for t in make_tasks(args.tasks, seed)]
        front = frontier(tasks, TARGET_REDUCTION)
        if args.json:
            print(json.dumps(front, indent=2))
            return 0
        shown = {(f"{p['cost_ratio']:.3f}", f"{p['landed']:.2%}"): 0 for p in front["points"]}
        rows = [list(row) for row in shown]
        print(table(["cost / strongest", "P(lands)"], rows))
        print(
            f"always-strongest: P(lands) {front['strongest_landed']:.2%}; the best at "
            f"{TARGET_REDUCTION:.0%} lower cost: {front['landed_at_target']:.2%}"
        )
        return 0
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        show(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
