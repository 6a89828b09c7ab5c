"""Scheduling a 10,000-task random DAG to completion in the pure simulator.

The DAG is seeded and random: each task waits for 0-3 earlier tasks within a window of 200, owns
1-3 patterns drawn from a pool of several hundred paths and globs (``src/mod12/f3.py``,
``src/mod12/**``, ``docs/*.md``; a few tasks own everything), and takes 5, 15 or 45 minutes by
complexity. 16 agents. Printed:

* total time of :func:`stretto.schedule.simulate.simulate` (median of several runs, caches
  cleared before each so every run starts as a fresh process would);
* time per ``Schedule.decide`` call by decile of finished tasks, to show it does not grow as
  tasks finish (last decile / first decile ~ 1), and per call at several DAG sizes;
* the same simulation driven by a naive scheduler that rescans every task on every call
  (defined below, same rules), measured side by side, as a ratio; both must produce the
  identical event list.

    .venv/bin/python benchmarks/bench_scheduler.py [--tasks 10000] [--repeat 7] [--naive-repeat 3]

``--tasks 100000 --naive-repeat 0`` is issue 16's size (the naive baseline would take hours
there, so 0 leaves it out); the table by DAG size then runs 10,000 to 100,000 tasks in one
process, and also gives the time per action returned (a call returns a ``Wait`` for every ready
task it looks at and cannot start, and at 100,000 tasks more of them are ready at once).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import stretto.schedule.simulate
from _common import CPU_TIMES, machine, median, ms, quartiles, table, target, time_calls, verdict
from stretto.plans import paths
from stretto.plans.graph import ESTIMATED_MINUTES, TaskGraph
from stretto.schedule.scheduler import Action, Capacity, Schedule, Spawn, TaskState, Wait
from stretto.schedule.simulate import Simulation, simulate

TARGET_S = 1.0
AGENTS = 16
WINDOW = 200


def make_dag(n: int, seed: int = 2026) -> tuple[TaskGraph, dict[str, tuple[str, ...]]]:
    """A seeded random DAG of ``n`` tasks and their leases (normalized patterns)."""
    rng = random.Random(seed)
    literal = [f"src/mod{m}/f{k}.py" for m in range(40) for k in range(8)]
    literal += [f"src/mod{m}" for m in range(40, 60)]  # whole folders
    literal += [f"tests/test_mod{m}.py" for m in range(60)]
    literal += [f"docs/page{k}.md" for k in range(30)]
    globs = [f"src/mod{m}/**" for m in range(40)] + ["docs/*.md", "tests/**", "src/mod*/f0.py"]
    ids = [f"t{i:05d}" for i in range(n)]
    deps: dict[str, list[str]] = {}
    duration: dict[str, float] = {}
    leases: dict[str, tuple[str, ...]] = {}
    for i, task in enumerate(ids):
        window = range(max(0, i - WINDOW), i)
        deps[task] = [ids[j] for j in rng.sample(window, min(rng.randint(0, 3), len(window)))]
        duration[task] = ESTIMATED_MINUTES[rng.choices(["low", "medium", "high"], [4, 4, 2])[0]]
        if rng.random() < 0.001:
            leases[task] = (paths.EVERYTHING_PATTERN,)
            continue
        owned = rng.sample(literal, rng.randint(1, 3))
        if rng.random() < 0.08:
            owned.append(rng.choice(globs))
        leases[task] = tuple(dict.fromkeys(paths.normalize(p) for p in owned))
    return TaskGraph.build(ids, deps, duration), leases


def clear_caches() -> None:
    """Forget memoized pattern work, so a run costs what it costs in a fresh process."""
    for value in vars(paths).values():
        if hasattr(value, "cache_clear"):
            value.cache_clear()


class NaiveSchedule(Schedule):
    """The baseline: every call rescans all tasks for readiness and checks every holder.

    Same rules and tie-breaks as :class:`Schedule`; only the bookkeeping is naive.
    """

    def decide(
        self, free: Capacity, held: Mapping[str, tuple[str, ...]] | None = None
    ) -> list[Action]:
        actions: list[Action] = []
        total = free.total
        ready = [
            task
            for task in self.graph.order
            if self.state[task] in (TaskState.WAITING, TaskState.READY)
            and task not in self._give_up
            and all(self.state[dep] is TaskState.LANDED for dep in self.graph.deps[task])
        ]
        ready.sort(key=self._key)
        holders = list((held or {}).items()) + list(self.running.items())
        for task in ready:
            if total <= 0:
                break
            lease = self.leases.get(task, ())
            blocking: list[str] = []
            first: tuple[str, str] | None = None
            for holder, theirs in holders:
                pair = paths.any_overlap(lease, theirs)
                if pair is not None:
                    blocking.append(holder)
                    first = first or pair
            if blocking:
                blocking.sort(key=lambda h: (self.graph.index.get(h, -1), h))
                if any(paths.EVERYTHING_PATTERN in theirs for _, theirs in holders):
                    everything = next(h for h, t in holders if paths.EVERYTHING_PATTERN in t)
                    actions.append(Wait(task, "lease", (everything,), (lease[0], "**")))
                else:
                    actions.append(Wait(task, "lease", tuple(blocking), first))
                continue
            actions.append(Spawn(task, self.attempts[task] + 1, False, self.graph.critical[task]))
            total -= 1
            if lease:
                holders.append((task, lease))
        return actions


class TimedSchedule(Schedule):
    """The real scheduler, recording (finished tasks, seconds) for every decide call."""

    log: list[tuple[int, float]] = []

    def decide(
        self, free: Capacity, held: Mapping[str, tuple[str, ...]] | None = None
    ) -> list[Action]:
        start = time.perf_counter()
        actions = super().decide(free, held)
        TimedSchedule.log.append((self.finished, time.perf_counter() - start))
        return actions


class CountingSchedule(Schedule):
    """The real scheduler, counting the actions its decide calls return."""

    actions = 0

    def decide(
        self, free: Capacity, held: Mapping[str, tuple[str, ...]] | None = None
    ) -> list[Action]:
        actions = super().decide(free, held)
        CountingSchedule.actions += len(actions)
        return actions


@contextmanager
def scheduler(cls: type[Schedule]) -> Iterator[None]:
    """Make :func:`simulate` drive ``cls`` instead of :class:`Schedule`."""
    original = stretto.schedule.simulate.Schedule
    stretto.schedule.simulate.Schedule = cls  # type: ignore[misc]
    try:
        yield
    finally:
        stretto.schedule.simulate.Schedule = original  # type: ignore[misc]


def run(graph: TaskGraph, leases: dict[str, tuple[str, ...]]) -> Simulation:
    return simulate(graph, leases, AGENTS)


def run_naive(graph: TaskGraph, leases: dict[str, tuple[str, ...]]) -> Simulation:
    with scheduler(NaiveSchedule):
        return simulate(graph, leases, AGENTS)


def per_decile(n: int, log: list[tuple[int, float]]) -> list[tuple[int, float, float]]:
    """(calls, median, mean) seconds per decide call, by decile of finished tasks."""
    buckets: list[list[float]] = [[] for _ in range(10)]
    for finished, seconds in log:
        buckets[min(9, finished * 10 // n)].append(seconds)
    return [(len(b), median(b) if b else 0.0, sum(b) / len(b) if b else 0.0) for b in buckets]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7, help="timed runs of stretto")
    parser.add_argument("--naive-repeat", type=int, default=3, help="timed runs of the baseline")
    args = parser.parse_args()
    n = args.tasks
    print(f"machine: {machine()}")

    graph, leases = make_dag(n)
    sim = run(graph, leases)
    globbed = sum(1 for lease in leases.values() if not all(map(paths.is_literal, lease)))
    print(
        f"DAG: {n} tasks, {sum(len(d) for d in graph.deps.values())} edges, "
        f"{len({p for lease in leases.values() for p in lease})} distinct patterns, "
        f"{globbed} tasks owning a glob; {AGENTS} agents -> {sim.decisions} decide calls, "
        f"{len(sim.events)} events, peak {sim.peak} agents, makespan {sim.makespan:g} min"
    )

    # Equivalence: the naive baseline must schedule exactly the same way.
    same = True
    if args.naive_repeat:
        clear_caches()
        naive_sim = run_naive(graph, leases)
        same = naive_sim.events == sim.events
        print(f"naive baseline produces the identical event list: {same}")

    # Side by side, interleaved: total simulate() time. The naive scheduler is slow, so it runs
    # fewer rounds; the extra rounds time stretto alone.
    calls: dict[str, Callable[[], object]] = {"stretto": lambda: run(graph, leases)}
    if args.naive_repeat:
        calls["naive rescan"] = lambda: run_naive(graph, leases)
    times = time_calls(calls, args.naive_repeat, warmup=0, before=clear_caches)
    more = time_calls({"stretto": lambda: run(graph, leases)}, args.repeat, before=clear_caches)
    times["stretto"] += more["stretto"]
    fast = median(times["stretto"])
    slow = median(times["naive rescan"]) if args.naive_repeat else float("nan")
    fast_cpu = median(CPU_TIMES["stretto"])
    rows = [
        [
            name,
            len(v),
            ms(median(v)),
            f"{ms(quartiles(v)[0])}-{ms(quartiles(v)[1])}",
            ms(median(CPU_TIMES[name])),
            f"{median(v) / sim.decisions * 1e6:.0f} us",
            f"{median(v) / fast:.2f}x",
        ]
        for name, v in times.items()
    ]
    print("\nsimulate() to completion, medians (caches cleared before each run)")
    print(table(["scheduler", "runs", "wall", "wall IQR", "CPU", "per decide", "vs stretto"], rows))

    # Per decile of finished tasks (real scheduler, instrumented).
    logs: list[list[tuple[int, float]]] = []
    for _ in range(3):
        clear_caches()
        TimedSchedule.log = []
        with scheduler(TimedSchedule):
            run(graph, leases)
        logs.append(TimedSchedule.log)
    deciles = [per_decile(n, log) for log in logs]
    rows = []
    for d in range(10):
        calls = deciles[0][d][0]
        mid = median([run_[d][1] for run_ in deciles])
        mean = median([run_[d][2] for run_ in deciles])
        rows.append(
            [f"{d * 10:>2}-{d * 10 + 10}%", calls, f"{mid * 1e6:.0f} us", f"{mean * 1e6:.0f} us"]
        )
    print("\nSchedule.decide by share of tasks finished (median over 3 instrumented runs)")
    print(table(["finished", "calls", "median", "mean"], rows))
    first = median([run_[0][2] for run_ in deciles])
    last = median([run_[9][2] for run_ in deciles])
    print(f"last decile / first decile (mean per call): {last / first:.2f}")

    # Per call at several sizes: flat in n means the cost does not depend on the plan's size.
    rows = []
    for size in sorted({n // 10, n // 4, n // 2, n}):
        g, lz = make_dag(size)
        name = f"{size} tasks"
        t = median(time_calls({name: lambda g=g, lz=lz: run(g, lz)}, 3, before=clear_caches)[name])
        cpu = median(CPU_TIMES[name])
        CountingSchedule.actions = 0
        with scheduler(CountingSchedule):
            decisions = run(g, lz).decisions
        acts = CountingSchedule.actions
        rows.append(
            [
                size,
                decisions,
                f"{acts / decisions:.1f}",
                ms(t),
                ms(cpu),
                f"{t / decisions * 1e6:.0f} us",
                f"{cpu / decisions * 1e6:.0f} us",
                f"{cpu / acts * 1e6:.1f} us",
                f"{t / size * 1e6:.0f} us",
            ]
        )
    print("\nsimulate() by DAG size (median of 3)")
    print(
        table(
            [
                "tasks",
                "decide calls",
                "actions/call",
                "wall",
                "CPU",
                "wall/decide",
                "CPU/decide",
                "CPU/action",
                "wall/task",
            ],
            rows,
        )
    )
    print()
    if args.naive_repeat:
        print(f"stretto vs naive rescan: {slow / fast:.1f}x faster")
    target(f"scheduler {n} tasks", TARGET_S * 1000, fast)
    target(f"scheduler {n} tasks, CPU time", TARGET_S * 1000, fast_cpu)
    verdict(f"decide time flat (last/first decile <= 1.5): {last / first:.2f}", last / first <= 1.5)
    if args.naive_repeat:
        verdict(f"naive baseline schedules identically: {same}", same)


if __name__ == "__main__":
    main()
