"""Merge strategies side by side: serial (today's queue), bors-like batches, a Zuul-like
speculative queue and stretto's merge train, on the same labelled branches.

A synthetic repository's verified branches arrive at a steady rate. Each is labelled:

* ``good``: passes alone and with any other good branch;
* ``textual``: conflicts (``git merge-tree``) with the target: found by the pre-check, free;
* ``pair``: textual conflict with one earlier branch (the second of the two goes back once the
  first has landed; while the first is still in the train it is parked, not sent back);
* ``semantic``: merges cleanly but breaks the tests together with one earlier branch; only the
  merged tree's gate catches it (the later one of the two is the one to send back);
* ``bad``: fails the gate on any tree that holds it.

Every gate run on a tree that holds no fault still fails with probability ``f`` (flaky; drawn
from a seeded hash of the tree and its run count, so every strategy meets the same flakes).

Strategies (all with the free conflict pre-check, so they differ only in what they test):

* ``serial``: one branch at a time on the target; a failure sends it back (today's queue);
* ``bors``: every queued branch (up to 16) in one batch; a failing batch is bisected, halves
  tested one after the other; a failing single branch goes back;
* ``zuul``: one branch per item, each tested on the items ahead of it; window starts at 2,
  +1 per landing, halved per failure, capped at the lanes; a failing item's followers are
  restarted without it;
* ``train``: :class:`stretto.engine.train_policy.TrainPolicy`, the engine's own decision code,
  with a (tree, gate) result cache and one flaky retry.

Two clocks: ``--mode sim`` (default) gives every gate run ``--gate-s`` simulated seconds (300:
a 5-minute suite), so the sweep of p and f runs in seconds; ``--mode real`` runs each gate as a
real CPU-burning process (``--real-gate-s`` CPU seconds, a pool of ``--lanes`` workers) on the
wall clock, at a smaller scale, to confirm the simulated figures. Printed per strategy and (p,
f): landings per minute, p50/p95 minutes from verified to landed, gate CPU-seconds per landing,
good branches wrongly sent back, bad ones landed, minutes the target was red, and landings on a
tree that never passed (must be 0).

    python benchmarks/bench_merge.py [--branches N] [--lanes 4] [--rate 12] [--mode sim|real]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

from _common import machine, table, verdict
from _merge_sim import STRATEGIES, Branch, Env, Repo, scenario

# ---------------------------------------------------------------------- running


@dataclass
class Figures:
    strategy: str
    p: float
    f: float
    per_min: float
    p50: float
    p95: float
    cpu_per_landing: float
    good_back: int
    good: int
    bad_landed: int
    red_min: float
    untested: int
    landed: int
    extra: dict[str, float] = field(default_factory=dict)


def measure(
    name: str, branches: list[Branch], p: float, f: float, args: argparse.Namespace
) -> Figures:
    repo = Repo(branches, f, args.seed)
    gate_s = args.real_gate_s if args.mode == "real" else args.gate_s
    env = Env(repo, gate_s, real=args.mode == "real", lanes=args.lanes)
    strategy = STRATEGIES[name](env, args.lanes)
    env.run(strategy, branches)
    waits = sorted(env.landed[b] - env.arrived[b] for b in env.landed)
    span = max(env.landed.values(), default=0.0) or 1.0
    good = [b.id for b in branches if b.label == "good"]
    # A semantic branch whose partner was sent back is good on the target it meets.
    bad_landed = sum(1 for b in branches if b.label == "bad" and b.id in env.landed)
    lost = set(env.arrived) - set(env.landed) - set(env.sent_back)
    assert not lost, f"{name}: branches neither landed nor sent back: {sorted(lost)[:5]}"
    return Figures(
        name,
        p,
        f,
        len(env.landed) / (span / 60),
        statistics.median(waits) / 60 if waits else 0.0,
        waits[int(0.95 * (len(waits) - 1))] / 60 if waits else 0.0,
        env.cpu / max(1, len(env.landed)),
        sum(1 for b in good if b in env.sent_back),
        len(good),
        bad_landed,
        env.red / 60,
        env.untested,
        len(env.landed),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("sim", "real"), default="sim")
    parser.add_argument("--branches", type=int, default=None)
    parser.add_argument("--lanes", type=int, default=4)
    parser.add_argument("--gate-s", type=float, default=300.0, help="simulated gate seconds")
    parser.add_argument("--real-gate-s", type=float, default=0.3, help="real gate CPU seconds")
    parser.add_argument("--rate", type=float, default=12.0, help="branches verified per gate time")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--seeds", type=int, default=3, help="scenarios averaged per cell")
    args = parser.parse_args()
    real = args.mode == "real"
    if args.branches is None:
        args.branches = 24 if real else 300
    ps = [0.0, 0.05, 0.25] if real else [0.0, 0.02, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30]
    fs = [0.02] if real else [0.0, 0.02, 0.05]
    seeds = 1 if real else args.seeds
    gate = args.real_gate_s if real else args.gate_s
    print(machine())
    print(
        f"mode {args.mode}: {args.branches} branches, one verified every {gate / args.rate:g} s, "
        f"gate {gate:g} {'CPU' if real else 'simulated'} s, {args.lanes} lanes, "
        f"{seeds} seed(s) per cell"
    )
    started = time.monotonic()
    rows = []
    results: dict[tuple[str, float, float], Figures] = {}
    for f in fs:
        for p in ps:
            cell: dict[str, list[Figures]] = {name: [] for name in STRATEGIES}
            for k in range(seeds):
                branches = scenario(args.branches, p, args.seed + k, gate / args.rate)
                for name in STRATEGIES:
                    cell[name].append(measure(name, branches, p, f, args))
                    if real:
                        print(f"  measured {name} p={p:.0%} f={f:.0%}", file=sys.stderr, flush=True)
            for name, runs in cell.items():
                mean = Figures(
                    name,
                    p,
                    f,
                    statistics.mean(r.per_min for r in runs),
                    statistics.mean(r.p50 for r in runs),
                    statistics.mean(r.p95 for r in runs),
                    statistics.mean(r.cpu_per_landing for r in runs),
                    sum(r.good_back for r in runs),
                    sum(r.good for r in runs),
                    sum(r.bad_landed for r in runs),
                    sum(r.red_min for r in runs) / len(runs),
                    sum(r.untested for r in runs),
                    sum(r.landed for r in runs),
                )
                results[(name, p, f)] = mean
                serial = results[("serial", p, f)].per_min
                rows.append(
                    [
                        name,
                        f"{p:.0%}",
                        f"{f:.0%}",
                        f"{mean.per_min * (gate / 60 if real else 1):.2f}",
                        f"{mean.per_min / max(1e-9, serial):.1f}x",
                        f"{mean.p50 * (1 if not real else 60):.1f}",
                        f"{mean.p95 * (1 if not real else 60):.1f}",
                        f"{mean.cpu_per_landing:.{2 if real else 1}f}",
                        f"{mean.good_back}/{mean.good}",
                        mean.bad_landed,
                        f"{mean.red_min:.1f}",
                        mean.untested,
                    ]
                )
    unit = "per gate-length" if real else "/min"
    lat = "s" if real else "min"
    print(
        table(
            [
                "strategy",
                "p",
                "f",
                f"landed {unit}",
                "vs serial",
                f"p50 {lat}",
                f"p95 {lat}",
                "gate CPU-s/landing",
                "good sent back",
                "bad landed",
                "red min",
                "untested",
            ],
            rows,
        )
    )
    print(f"({time.monotonic() - started:.1f} s wall)")
    ok = True
    lanes_ok = all(
        results[("train", p, f)].per_min >= 5 * results[("serial", p, f)].per_min
        for (name, p, f) in results
        if name == "train" and p <= 0.05
    )
    ok &= verdict(f"train >= 5x serial landings at p <= 5% with {args.lanes} lanes", lanes_ok)
    worst = min(
        results[("train", p, f)].per_min / max(1e-9, results[("zuul", p, f)].per_min)
        for (name, p, f) in results
        if name == "train" and p <= 0.25
    )
    ok &= verdict(
        f"train >= 0.85x the Zuul-like queue at every p <= 25% (worst {worst:.2f}x)", worst >= 0.85
    )
    flaky = [r for (name, p, f), r in results.items() if name == "train" and abs(f - 0.02) < 1e-9]
    back = sum(r.good_back for r in flaky) / max(1, sum(r.good for r in flaky))
    ok &= verdict(
        f"train sends back <= 0.5% of good branches at f = 2% ({back:.2%})", back <= 0.005
    )
    bad = sum(r.bad_landed for (name, _, _), r in results.items() if name == "train")
    ok &= verdict(f"train lands 0 bad branches ({bad})", bad == 0)
    untested = sum(r.untested for r in results.values())
    ok &= verdict(f"no strategy lands an untested tree ({untested})", untested == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    sys.exit(main())
