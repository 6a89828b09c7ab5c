"""Routing strategies compared in a simulated world: cost, landed rate and regret.

Tasks have a hidden difficulty that follows from their complexity, file count, spread over
top-level directories and role, plus noise that no feature shows. Five arms across two agents
have prices and pass probabilities that fall with difficulty (the strong tier falls slowest).
Every task gets up to three attempts. The strategies face the same tasks and the same dice
(common random numbers), seed by seed, in one process:

* ``strongest``: the strongest arm every time, retries too;
* ``cascade``: the static cascade of :mod:`stretto.router` (a real ``Policy`` that never
  leaves warm-up and never learns): start at ``min_tier``, escalate one tier per failure;
* ``router``: the real :class:`stretto.router.Policy`, warm-up 50, learning from every attempt;
* ``oracle`` (a reference, not a contender): the first arm with the best expected reward given
  the features and the world's true curves and prices; retries as the cascade.

Regret is measured against that per-context oracle: the sum over tasks of the oracle's expected
first-attempt reward minus the expected reward of the arm the strategy chose first. The world,
its assumptions and the results are in docs/routing.md.

    .venv/bin/python benchmarks/routing/simulate.py [--seeds 10] [--tasks 2000] [--json]
        [--alpha 1.0] [--ceiling 2.0] [--warmup 50] [--min-tier high=strong] [--cheap-shift 0]
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, median, table, verdict
from stretto.router import (
    DEFAULT_MIN_TIER,
    Arm,
    Policy,
    RouterConfig,
    TaskContext,
    estimate_tokens,
    reward,
)

MAX_ATTEMPTS = 3
CHECKPOINTS = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000)
TARGET_REDUCTION = 0.35
STRATEGIES = ("oracle", "strongest", "cascade", "router")


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
WORLD = (
    ArmModel(Arm("claude", "claude-haiku-4-5", "fast"), 0.05, 0.35, 0.07, 0.95, CLAUDE_ROLES),
    ArmModel(Arm("codex", "gpt-5-mini", "fast"), 0.03, 0.33, 0.07, 0.95, CODEX_ROLES),
    ArmModel(Arm("claude", "claude-sonnet-4-5", "balanced"), 0.25, 0.55, 0.08, 0.97, CLAUDE_ROLES),
    ArmModel(Arm("codex", "gpt-5", "balanced"), 0.18, 0.55, 0.08, 0.97, CODEX_ROLES),
    ArmModel(Arm("claude", "claude-opus-4-1", "strong"), 1.00, 0.80, 0.09, 0.98),
)
ARMS = WORLD  # replaced by main() when --cheap-shift moves the cheaper tiers' curves
STRONGEST = WORLD[-1].arm
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
        dice = tuple(tuple(rng.random() for _ in WORLD) for _ in range(MAX_ATTEMPTS))
        cost_z = tuple(tuple(rng.gauss(0, 1) for _ in WORLD) for _ in range(MAX_ATTEMPTS))
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


@dataclass
class Outcome:
    landed: int = 0
    cost: float = 0.0
    attempts: int = 0
    regret: list[float] = field(default_factory=list)  # cumulative, after each task
    first_tiers: dict[str, int] = field(default_factory=dict)


Chooser = Callable[[TaskContext, Arm | None], Arm]
Learner = Callable[[Arm, TaskContext, float, float, bool], None]


def play(tasks: Sequence[Task], choose: Chooser, learn: Learner | None, ceiling: float) -> Outcome:
    """Run every task through one strategy; return its totals and cumulative regret."""
    out = Outcome()
    index = {m.arm.key: i for i, m in enumerate(ARMS)}
    total_regret = 0.0
    for task in tasks:
        context = task.context
        d = difficulty(context) + task.noise
        est = estimate_tokens(task.complexity, task.files)
        failed: Arm | None = None
        for attempt in range(MAX_ATTEMPTS):
            ctx = TaskContext(task.complexity, task.role, task.files, attempt + 1, est)
            arm = choose(ctx, failed)
            i = index[arm.key]
            if attempt == 0:
                best = max(expected_reward(context, j, ceiling) for j in range(len(ARMS)))
                total_regret += best - expected_reward(context, i, ceiling)
                out.regret.append(total_regret)
                out.first_tiers[arm.tier] = out.first_tiers.get(arm.tier, 0) + 1
            spent = cost(ARMS[i], task.complexity, task.cost_z[attempt][i])
            landed = task.dice[attempt][i] < pass_probability(ARMS[i], task.role, d)
            out.cost += spent
            out.attempts += 1
            if learn is not None:
                learn(arm, ctx, reward(landed, spent, ceiling), spent, landed)
            if landed:
                out.landed += 1
                break
            failed = arm
    return out


def strategies(args: argparse.Namespace) -> dict[str, tuple[Chooser, Learner | None]]:
    """Fresh strategies for one seed (the router starts from an empty policy)."""
    arms = tuple(m.arm for m in ARMS)
    static = Policy.fresh(RouterConfig(arms=arms, warmup=10**9))
    overrides = dict(item.split("=", 1) for item in args.min_tier.split(",") if item)
    router = Policy.fresh(
        RouterConfig(
            arms=arms,
            warmup=args.warmup,
            alpha=args.alpha,
            cost_ceiling=args.ceiling,
            min_tier={**DEFAULT_MIN_TIER, **overrides},
        )
    )

    def learn(arm: Arm, ctx: TaskContext, r: float, spent: float, landed: bool) -> None:
        router.update(arm, ctx, r, spent, landed=landed)

    def oracle(ctx: TaskContext, failed: Arm | None) -> Arm:
        if failed is not None:
            return static.choose(ctx, failed=failed).arm
        context = (ctx.complexity, ctx.role, *shape(ctx.files or ()))
        best = max(range(len(ARMS)), key=lambda j: expected_reward(context, j, args.ceiling))
        return ARMS[best].arm

    return {
        "oracle": (oracle, None),
        "strongest": (lambda ctx, failed: STRONGEST, None),
        "cascade": (lambda ctx, failed: static.choose(ctx, failed=failed).arm, None),
        "router": (lambda ctx, failed: router.choose(ctx, failed=failed).arm, learn),
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
    return median(times)


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": median(values), "min": min(values), "max": max(values)}


def summarize(name: str, runs: list[Outcome], n: int) -> dict[str, Any]:
    marks = [c for c in CHECKPOINTS if c <= n] or [n]
    return {
        "strategy": name,
        "landed_rate": spread([r.landed / n for r in runs]),
        "total_cost_usd": spread([r.cost for r in runs]),
        "cost_per_landed_usd": spread([r.cost / max(r.landed, 1) for r in runs]),
        "attempts_per_task": spread([r.attempts / n for r in runs]),
        "regret": {str(c): spread([r.regret[c - 1] for r in runs]) for c in marks},
        "regret_exponent": spread(
            [exponent([(c, r.regret[c - 1]) for c in marks]) for r in runs]
            if len(marks) > 1
            else [1.0]
        ),
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
    return {
        "seeds": args.seeds,
        "tasks": args.tasks,
        "alpha": args.alpha,
        "cost_ceiling": args.ceiling,
        "warmup": args.warmup,
        "min_tier": args.min_tier or "default",
        "cheap_shift": args.cheap_shift,
        "strategies": {name: summarize(name, outs, args.tasks) for name, outs in runs.items()},
        "router_over_strongest_cost": spread([r.cost / s.cost for r, s in pairs]),
        "router_minus_strongest_landed": spread(
            [(r.landed - s.landed) / args.tasks for r, s in pairs]
        ),
        "choose_seconds_6_arms": time_choose(),
        "seconds": time.perf_counter() - started,
    }


def cell(s: dict[str, float], fmt: str, scale: float = 1.0) -> str:
    lo, mid, hi = (s[k] * scale for k in ("min", "median", "max"))
    return f"{mid:{fmt}} ({lo:{fmt}}-{hi:{fmt}})"


def show(report: dict[str, Any]) -> None:
    results = report["strategies"]
    print(machine())
    print(
        f"{report['seeds']} seeds x {report['tasks']} tasks, up to {MAX_ATTEMPTS} attempts each; "
        f"router: alpha {report['alpha']}, cost ceiling ${report['cost_ceiling']:g}, "
        f"warm-up {report['warmup']}, min_tier {report['min_tier']}; "
        f"cheap-tier shift {report['cheap_shift']:+g}\n"
    )
    rows = [
        [
            name,
            cell(r["landed_rate"], ".1f", 100),
            cell(r["total_cost_usd"], ".0f"),
            cell(r["cost_per_landed_usd"], ".3f"),
            f"{r['attempts_per_task']['median']:.2f}",
            " / ".join(f"{r['first_attempt_tier_share'][t]:.0%}" for t in TIERS_SHOWN),
        ]
        for name, r in results.items()
    ]
    header = ["strategy", "landed %", "total cost $", "$ per landed", "attempts", "first f/b/s"]
    print(table(header, rows))
    print("(median over seeds, min-max in brackets; oracle is a reference, not a strategy)\n")
    marks = list(results["router"]["regret"])
    regret_rows = [
        [
            name,
            *(
                f"{r['regret'][m]['median']:.1f} ({r['regret'][m]['median'] / int(m):.3f}/task)"
                for m in marks
            ),
            f"{r['regret_exponent']['median']:.2f}",
        ]
        for name, r in results.items()
        if name != "oracle"
    ]
    print(table(["cumulative regret", *(f"@{m}" for m in marks), "exponent"], regret_rows))
    print("(median over seeds; exponent: slope of log regret on log tasks over the checkpoints)\n")
    ratio, gap = report["router_over_strongest_cost"], report["router_minus_strongest_landed"]
    landed = {name: results[name]["landed_rate"]["median"] for name in results}
    print(
        f"router cost / always-strongest cost: {ratio['median']:.3f} "
        f"(seeds {ratio['min']:.3f}-{ratio['max']:.3f}), {1 - ratio['median']:.1%} lower; "
        f"landed {landed['router']:.1%} vs {landed['strongest']:.1%} "
        f"(router minus strongest, per seed: {gap['min']:+.1%} to {gap['max']:+.1%})"
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
    exp = results["router"]["regret_exponent"]["median"]
    verdict(f"router regret grows sub-linearly: fitted exponent {exp:.2f} < 1", exp < 1)
    verdict(f"one choose with 6 arms <= 1 ms: {choose_s * 1e3:.2f} ms", choose_s <= 1e-3)


TIERS_SHOWN = ("fast", "balanced", "strong")


def main() -> int:
    global ARMS
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=1.0, help="router exploration weight")
    parser.add_argument("--ceiling", type=float, default=2.0, help="router cost_ceiling, USD")
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
    args = parser.parse_args()
    shift = args.cheap_shift
    ARMS = tuple(
        replace(m, center=m.center + (shift if m.arm.tier != "strong" else 0.0)) for m in WORLD
    )
    report = measure(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        show(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
