"""Routing policies replayed on recorded outcomes of real agents: landed, cost, cost per landed.

The tasks of ``--data`` (an outcomes CSV, see :mod:`stretto.routing.outcomes` and
``/work/shared/data/swe-bench-pro/README.md``) are fed, in ``--orders`` seeded random orders,
to each policy under the replay rules (recorded outcome and cost per attempt; a re-run of an arm
repeats its result and costs again; at most 3 attempts). The policies:

* ``always_strongest``: the arm that lands the most tasks alone, once;
* ``always_cheapest``: the cheapest arm, once;
* ``cascade_cheap_first`` / ``cascade_strong_first``: every arm once, by price up / down;
* ``best_fixed_per_repo`` (hindsight): per repository, the fixed order of arms with the best
  ``value x landed - cost`` over that repository's tasks, ``value`` as the router's;
* ``oracle``: knows every outcome; the cheapest arm that resolves the task, else nothing;
* ``router``: :class:`stretto.routing.offline.OfflineRouter`, the router of ``stretto run``
  (its code and defaults), learning online from an empty policy in each order. Its settings
  are the arms of the file (tiers by price), ``cost_ceiling`` by the documented rule (twice
  the dearest arm's mean attempt) and ``landed_value_usd`` (``--value``, see docs/routing.md).

Only the oracle may read an outcome before choosing (the replay enforces it). Figures are
medians over the orders, with the min and max. ``--part K/N`` keeps the tasks whose id hashes
to K mod N, ``--repos-part K/N`` the repositories that do (held-out checks); ``--held-out``
replays the whole file and each of :data:`SPLITS` (task halves, repository halves, task
thirds) on its own, the router learning from empty in each, and prints the router against
the baselines per split; ``--svg FILE`` draws cost against landed for every policy.

    .venv/bin/python benchmarks/routing/replay.py --data FILE [--orders 20] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine, table, verdict
from stretto.config import ArmConfig, RouterSettings
from stretto.routing.arms import Arm
from stretto.routing.offline import OfflineRouter
from stretto.routing.outcomes import (
    ReplayPolicy,
    Seen,
    Task,
    TaskView,
    World,
    load_outcomes,
    play,
)

POLICIES = (
    "always_strongest",
    "always_cheapest",
    "cascade_cheap_first",
    "cascade_strong_first",
    "best_fixed_per_repo",
    "oracle",
    "router",
)
DEFAULT_VALUE = 100.0  # USD a landed task is worth to the user in the benchmark (docs/routing.md)
#: The held-out checks of docs/routing.md: (name, ``--part``, ``--repos-part``).
SPLITS = (
    ("whole file", None, None),
    ("tasks 0/2", "0/2", None),
    ("tasks 1/2", "1/2", None),
    ("repos 0/2", None, "0/2"),
    ("repos 1/2", None, "1/2"),
    ("tasks 0/3", "0/3", None),
    ("tasks 1/3", "1/3", None),
    ("tasks 2/3", "2/3", None),
)


class Fixed:
    """The same order of arms for every task (per repository with ``by_repo``)."""

    def __init__(self, plan: Sequence[Arm], by_repo: dict[str, tuple[Arm, ...]] | None = None):
        self.plan, self.by_repo = tuple(plan), by_repo or {}

    def _plan(self, task: TaskView) -> tuple[Arm, ...]:
        return self.by_repo.get(task.repo, self.plan)

    def first(self, task: TaskView) -> Arm | None:
        plan = self._plan(task)
        return plan[0] if plan else None

    def next(self, task: TaskView, attempts: Sequence[Seen]) -> Arm | None:
        plan = self._plan(task)
        return plan[len(attempts)] if len(attempts) < len(plan) else None

    def learn(self, task: TaskView, seen: Seen) -> None:
        pass

    def end(self, task: TaskView, landed: bool) -> None:
        pass


class Oracle(Fixed):
    """Knows every outcome: the cheapest arm that resolves the task, else no attempt."""

    def __init__(self, world: World) -> None:
        super().__init__(sorted(world.arms, key=lambda a: world.mean_cost[a.key]))

    def first(self, task: TaskView) -> Arm | None:
        able = [a for a in self.plan if task.recorded(a).resolved]
        return min(able, key=lambda a: task.recorded(a).cost_usd) if able else None

    def next(self, task: TaskView, attempts: Sequence[Seen]) -> Arm | None:
        return None


def best_fixed_per_repo(world: World, value: float) -> Fixed:
    """Per repository, in hindsight: the order of distinct arms (or none) with the best
    ``value x landed - cost`` on that repository's tasks."""
    plans = [()] + [
        p for n in range(1, len(world.arms) + 1) for p in itertools.permutations(world.arms, n)
    ]
    by_repo: dict[str, tuple[Arm, ...]] = {}
    for repo in sorted({t.repo for t in world.tasks}):
        tasks = [t for t in world.tasks if t.repo == repo]

        def worth(plan: tuple[Arm, ...], tasks: list[Task] = tasks) -> float:
            total = 0.0
            for t in tasks:
                for arm in plan:
                    total -= t.outcomes[arm.key].cost_usd
                    if t.outcomes[arm.key].resolved:
                        total += value
                        break
            return total

        by_repo[repo] = max(plans, key=worth)
    return Fixed((), by_repo)


def router_settings(world: World, value: float | None) -> RouterSettings:
    """The ``[router]`` table a user would write for these arms (docs/routing.md): every
    default, ``cost_ceiling`` twice the dearest arm's mean attempt, ``landed_value_usd``."""
    arms = tuple(ArmConfig(a.agent, a.model, a.tier) for a in world.arms)  # type: ignore[arg-type]
    ceiling = 2 * max(world.mean_cost.values())
    extra: dict[str, Any] = {} if value is None else {"landed_value_usd": value}
    return RouterSettings(arms=arms, cost_ceiling=ceiling, **extra)


@dataclass
class Totals:
    landed: list[int]
    cost: list[float]

    def summary(self) -> dict[str, Any]:
        per = [c / n if n else math.inf for c, n in zip(self.cost, self.landed, strict=True)]
        med_landed, med_cost = statistics.median(self.landed), statistics.median(self.cost)
        return {
            "landed": med_landed,
            "cost_usd": round(med_cost, 2),
            "cost_per_landed": round(statistics.median(per), 3),
            "landed_min": min(self.landed),
            "landed_max": max(self.landed),
            "cost_usd_min": round(min(self.cost), 2),
            "cost_usd_max": round(max(self.cost), 2),
        }


def replay(world: World, orders: int, seed: int, value: float | None) -> dict[str, Totals]:
    """Every policy over the same ``orders`` seeded orders of the world's tasks."""
    strongest = world.strongest()
    by_price = sorted(world.arms, key=lambda a: (world.mean_cost[a.key], a.key))
    fixed: dict[str, Callable[[], ReplayPolicy]] = {
        "always_strongest": lambda: Fixed([strongest]),
        "always_cheapest": lambda: Fixed(by_price[:1]),
        "cascade_cheap_first": lambda: Fixed(by_price),
        "cascade_strong_first": lambda: Fixed(by_price[::-1]),
        "best_fixed_per_repo": lambda: best_fixed_per_repo(world, value or DEFAULT_VALUE),
        "oracle": lambda: Oracle(world),
        "router": lambda: OfflineRouter(router_settings(world, value)),
    }
    totals = {name: Totals([], []) for name in POLICIES}
    for order in range(orders):
        tasks = list(world.tasks)
        random.Random(f"{seed}:{order}").shuffle(tasks)
        for name in POLICIES:
            policy = fixed[name]()
            runs = [play(t, policy, oracle=name == "oracle") for t in tasks]
            totals[name].landed.append(sum(r.landed for r in runs))
            totals[name].cost.append(math.fsum(r.cost_usd for r in runs))
    return totals


def part(world: World, spec: str | None, by_repo: bool) -> World:
    """The tasks (or repositories) whose name hashes to K mod N, for ``K/N``."""
    if not spec:
        return world
    k, n = (int(x) for x in spec.split("/"))
    keep = [t for t in world.tasks if zlib.crc32((t.repo if by_repo else t.id).encode()) % n == k]
    return world.subset(keep)


def svg(summary: dict[str, dict[str, Any]], title: str) -> str:
    """Cost (x) against landed (y), one point per policy (median; bars from min to max)."""
    w, h, left, bottom, top, right = 800, 420, 70, 50, 40, 290
    xs = [s[k] for s in summary.values() for k in ("cost_usd_min", "cost_usd_max")]
    ys = [s[k] for s in summary.values() for k in ("landed_min", "landed_max")]
    x0, x1 = 0.0, max(xs) * 1.05
    y0, y1 = min(ys) * 0.9, max(ys) * 1.03

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def py(y: float) -> float:
        return h - bottom - (y - y0) / (y1 - y0) * (h - bottom - top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="13">{title}</text>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#333"/>',
        f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">'
        "cost, USD (median over orders; bars: min-max)</text>",
        f'<text x="16" y="{(top + h - bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(top + h - bottom) / 2})">tasks landed</text>',
    ]
    for i in range(6):
        x = x0 + (x1 - x0) * i / 5
        y = y0 + (y1 - y0) * i / 5
        out.append(
            f'<text x="{px(x):.1f}" y="{h - bottom + 16}" text-anchor="middle">{x:,.0f}</text>'
        )
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.0f}</text>')
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#7f7f7f", "#d62728"]
    for (name, s), colour in zip(summary.items(), colours, strict=False):
        cx, cy = px(s["cost_usd"]), py(s["landed"])
        out.append(
            f'<line x1="{px(s["cost_usd_min"]):.1f}" y1="{cy:.1f}" '
            f'x2="{px(s["cost_usd_max"]):.1f}" y2="{cy:.1f}" stroke="{colour}"/>'
        )
        out.append(
            f'<line x1="{cx:.1f}" y1="{py(s["landed_min"]):.1f}" x2="{cx:.1f}" '
            f'y2="{py(s["landed_max"]):.1f}" stroke="{colour}"/>'
        )
        r = 6 if name == "router" else 4
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{colour}"/>')
        ly = top + 16 * (POLICIES.index(name) + 1)
        out.append(f'<circle cx="{w - right + 16}" cy="{ly - 4}" r="4" fill="{colour}"/>')
        out.append(
            f'<text x="{w - right + 26}" y="{ly}">{name}: {s["landed"]:g}, '
            f"${s['cost_usd']:,.0f}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def targets(summary: dict[str, dict[str, Any]]) -> bool:
    """The issue's targets on the medians: against always_strongest and the cheap-first cascade."""
    r, s, c = (summary[k] for k in ("router", "always_strongest", "cascade_cheap_first"))
    ok = [
        verdict(
            f"router landed >= 1.05x always_strongest: {r['landed']:g} vs "
            f"{1.05 * s['landed']:.1f} ({r['landed'] / s['landed']:.3f}x)",
            r["landed"] >= 1.05 * s["landed"],
        ),
        verdict(
            f"router cost <= 0.75x always_strongest: ${r['cost_usd']:,.0f} vs "
            f"${0.75 * s['cost_usd']:,.0f} ({r['cost_usd'] / s['cost_usd']:.3f}x)",
            r["cost_usd"] <= 0.75 * s["cost_usd"],
        ),
        verdict(
            f"router landed >= 0.95x cascade_cheap_first: {r['landed']:g} vs "
            f"{0.95 * c['landed']:.1f} ({r['landed'] / c['landed']:.3f}x)",
            r["landed"] >= 0.95 * c["landed"],
        ),
        verdict(
            f"router cost <= 0.85x cascade_cheap_first: ${r['cost_usd']:,.0f} vs "
            f"${0.85 * c['cost_usd']:,.0f} ({r['cost_usd'] / c['cost_usd']:.3f}x)",
            r["cost_usd"] <= 0.85 * c["cost_usd"],
        ),
    ]
    return all(ok)


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The router's medians against always_strongest and the cheap-first cascade, and whether
    all four targets hold."""
    r, s, c = (summary[k] for k in ("router", "always_strongest", "cascade_cheap_first"))

    def over(a: float, b: float) -> float:
        return a / b if b else math.inf if a else 1.0

    out: dict[str, Any] = {
        "landed_vs_strongest": over(r["landed"], s["landed"]),
        "cost_vs_strongest": over(r["cost_usd"], s["cost_usd"]),
        "landed_vs_cascade": over(r["landed"], c["landed"]),
        "cost_vs_cascade": over(r["cost_usd"], c["cost_usd"]),
    }
    out["met"] = (
        r["landed"] >= 1.05 * s["landed"]
        and r["cost_usd"] <= 0.75 * s["cost_usd"]
        and r["landed"] >= 0.95 * c["landed"]
        and r["cost_usd"] <= 0.85 * c["cost_usd"]
    )
    return out


def held_out(world: World, orders: int, seed: int, value: float | None, as_json: bool) -> int:
    """Every split of :data:`SPLITS` replayed on its own; 0 when all four targets hold on each
    (a split with no tasks, possible in a small file, is listed and not judged)."""
    results: dict[str, dict[str, Any]] = {}
    for name, tasks, repos in SPLITS:
        sub = part(part(world, tasks, False), repos, True)
        if not sub.tasks:
            results[name] = {"tasks": 0, "met": None}
            continue
        totals = replay(sub, orders, seed, value)
        summary = {p: totals[p].summary() for p in POLICIES}
        results[name] = {"tasks": len(sub.tasks), **ratios(summary), "policies": summary}
    if as_json:
        print(json.dumps({"orders": orders, "seed": seed, "splits": results}))
    else:
        print(f"# {machine()}")
        print(f"# {world.path}: {orders} orders, seed {seed}; router / baseline, medians")
        rows = []
        for name, r in results.items():
            if not r["tasks"]:
                rows.append([name, "0", "-", "-", "-", "-"])
                continue
            router, cascade = r["policies"]["router"], r["policies"]["cascade_cheap_first"]
            rows.append(
                [
                    name,
                    str(r["tasks"]),
                    f"{router['landed']:g} / {cascade['landed']:g} = {r['landed_vs_cascade']:.3f}",
                    f"{r['cost_vs_cascade']:.3f}x",
                    f"{r['landed_vs_strongest']:.2f}x, {r['cost_vs_strongest']:.2f}x",
                    "yes" if r["met"] else "NO",
                ]
            )
        head = ["split", "tasks", "landed vs cascade", "cost vs cascade", "vs strongest", "met"]
        print(table(head, rows))
    return 0 if all(r["met"] is not False for r in results.values()) else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, required=True, help="an outcomes CSV")
    parser.add_argument("--orders", type=int, default=20, help="seeded random task orders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--value", type=float, default=DEFAULT_VALUE, help="landed_value_usd (0: unset)"
    )
    parser.add_argument("--part", help="K/N: only the tasks whose id hashes to K mod N")
    parser.add_argument("--repos-part", help="K/N: only the repositories that hash to K mod N")
    parser.add_argument("--svg", type=Path, help="write the cost-landed picture there")
    parser.add_argument(
        "--held-out", action="store_true", help="the whole file and each held-out split"
    )
    args = parser.parse_args(argv)
    if args.orders < 1:
        parser.error("--orders must be at least 1")
    if args.held_out and (args.part or args.repos_part or args.svg):
        parser.error("--held-out replays its own splits: no --part, --repos-part or --svg")
    from stretto.errors import StrettoError

    try:
        world = load_outcomes(args.data)
    except StrettoError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    if args.held_out:
        return held_out(world, args.orders, args.seed, args.value or None, args.json)
    world = part(part(world, args.part, False), args.repos_part, True)
    started = time.perf_counter()
    totals = replay(world, args.orders, args.seed, args.value or None)
    summary = {name: totals[name].summary() for name in POLICIES}
    if args.svg:
        title = f"{len(world.tasks)} recorded tasks, {args.orders} orders: cost against landed"
        args.svg.write_text(svg(summary, title), encoding="utf-8")
    if args.json:
        print(json.dumps({"tasks": len(world.tasks), "orders": args.orders, "policies": summary}))
        return 0
    print(f"# {machine()}")
    arms = ", ".join(f"{a.key} ({a.tier}, ${world.mean_cost[a.key]:.2f})" for a in world.arms)
    print(
        f"# {args.data}: {len(world.tasks)} tasks ({world.dropped} left out: not every arm ran "
        f"them), arms {arms}; {args.orders} orders, seed {args.seed}, "
        f"{time.perf_counter() - started:.1f} s"
    )
    rows = [
        [
            name,
            f"{s['landed']:g} ({s['landed_min']}-{s['landed_max']})",
            f"{s['cost_usd']:,.0f} ({s['cost_usd_min']:,.0f}-{s['cost_usd_max']:,.0f})",
            f"{s['cost_per_landed']:.2f}",
        ]
        for name, s in summary.items()
    ]
    print(table(["policy", "landed (min-max)", "cost USD (min-max)", "USD per landed"], rows))
    return 0 if targets(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
