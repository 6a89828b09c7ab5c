"""Dry run of a 2,000-step plan, end to end: ``stretto run --dry-run plan.yaml``.

A realistic plan is generated (seeded) into a temporary directory: 40 stages of 50 steps, each
stage working in one area of a source tree, steps owning 1-3 files or globs (a few own nothing
declared, so everything), stages waiting for earlier stages, some steps waiting for steps of
other stages by id; about half the steps have an id, the rest get one generated from their title
or goal. Then, interleaved, as fresh processes (median of ``--repeat`` runs):

* ``python -c pass`` (the floor: starting an interpreter);
* ``stretto validate plan.yaml`` (read, check and resolve the plan; print one line);
* ``stretto run --dry-run plan.yaml`` and the same with ``--json``;
* a probe process that runs the same pipeline step by step and reports how long each step took,
  imports included (YAML load, pydantic-core validation, resolution, graph, simulation, rendering).

    .venv/bin/python benchmarks/bench_dryrun.py [--repeat 15] [--keep DIR] [--stages 40]
        [--baseline TREE] [--warmup 2] [--no-json] [--no-probe]

``--baseline TREE`` (another checkout, e.g. ``git worktree add /tmp/base main``) also runs
``validate`` and the dry runs from ``TREE/src``, interleaved with this tree's, and prints CPU
seconds and peak RSS side by side as ratios; both trees are then started the same way
(``python -c`` with the tree's ``src`` first on ``sys.path``). ``--warmup``, ``--no-json`` and
``--no-probe`` keep a 100,000-step comparison affordable (one unfolded dry run there took
minutes and gigabytes).

``--stages 200`` makes the 10,000-step plan and ``--stages 2000`` the 100,000-step one of issue 16
(targets: validate and dry run each <= 5 s and <= 400 MB peak RSS at 100,000 steps); the peak
resident memory of every command is printed beside its time.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import overload

from _common import (
    CPU_TIMES,
    MAX_RSS,
    PYTHON,
    ROOT,
    STRETTO,
    child_env,
    machine,
    median,
    ms,
    quartiles,
    table,
    target,
    time_commands,
)

TARGET_MS = 1000
STAGES, STEPS = 40, 50
AREAS = ["api", "auth", "billing", "search", "storage", "events", "admin", "reports"]
VERBS = ["Add", "Refactor", "Fix", "Test", "Document", "Speed up", "Harden", "Split"]
THINGS = ["handler", "model", "schema", "client", "cache", "validator", "job", "view", "query"]


def make_plan(seed: int = 2026) -> tuple[str, int]:
    """A plan of STAGES x STEPS steps as YAML text, and how many steps it has."""
    rng = random.Random(seed)
    lines = ["name: benchmark plan", "max_agents: 8", "target: main", "stages:"]
    explicit: list[str] = []  # ids of the steps that have one, in file order
    count = 0
    for s in range(STAGES):
        other = _Prefix(explicit, len(explicit))  # those of earlier stages
        area = AREAS[s % len(AREAS)]
        pkg = f"src/app/{area}{s // len(AREAS)}"
        lines.append(f"  - name: {area}-{s:02d}")
        earlier = list(range(s))
        stage_deps = []
        if earlier and rng.random() < 0.8:
            stage_deps = sorted(set(rng.sample(earlier[-6:], min(len(earlier[-6:]), 2))))
        if stage_deps:
            names = ", ".join(f"{AREAS[d % len(AREAS)]}-{d:02d}" for d in stage_deps)
            lines.append(f"    depends_on: [{names}]")
        lines.append("    steps:")
        mine: list[str] = []
        for t in range(STEPS):
            count += 1
            verb, thing = rng.choice(VERBS), rng.choice(THINGS)
            goal = f"{verb} the {area} {thing} number {t} so that it handles the edge cases"
            lines.append(f'      - goal: "{goal}"')
            if rng.random() < 0.5:
                step_id = f"{area}{s:02d}-{thing}-{t:02d}"
                lines.append(f"        id: {step_id}")
                explicit.append(step_id)
                mine.append(step_id)
            if rng.random() < 0.3:
                lines.append(f'        title: "{verb} {area} {thing} {t}"')
            lines.append(f"        role: {rng.choice(['backend', 'qa', 'docs', 'frontend'])}")
            lines.append(f"        complexity: {rng.choice(['low', 'medium', 'medium', 'high'])}")
            roll = rng.random()
            if roll < 0.02:
                pass  # no files: owns everything
            elif roll < 0.08:
                lines.append(f'        files: ["{pkg}/{thing}s/**"]')
            elif roll < 0.11:
                lines.append('        files: ["docs/*.md"]')
            else:
                owned = {f"{pkg}/{thing}s/{thing}{rng.randint(0, 24)}.py"}
                if rng.random() < 0.5:
                    owned.add(f"tests/{area}/test_{thing}{rng.randint(0, 24)}.py")
                if rng.random() < 0.1:
                    owned.add(f"{pkg}/__init__.py")
                lines.append(f"        files: [{', '.join(sorted(owned))}]")
            deps = []
            if mine[:-1] and rng.random() < 0.15:
                deps.append(rng.choice(mine[:-1]))
            if other and rng.random() < 0.08:
                deps.append(rng.choice(other))
            if deps:
                lines.append(f"        depends_on: [{', '.join(dict.fromkeys(deps))}]")
            if rng.random() < 0.1:
                lines.append(f"        timeout: {rng.choice(['15m', '1h', 900])}")
    return "\n".join(lines) + "\n", count


def set_size(stages: int) -> None:
    """Generate plans of ``stages`` stages of 50 steps from now on."""
    global STAGES
    STAGES = stages


class _Prefix(Sequence[str]):
    """The first ``length`` items of a list, without a copy (``rng.choice`` needs a sequence)."""

    def __init__(self, items: list[str], length: int) -> None:
        self.items, self.length = items, length

    def __len__(self) -> int:
        return self.length

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return self.items[: self.length][index]
        if not -self.length <= index < self.length:
            raise IndexError(index)
        return self.items[index % self.length]


PROBE = """
import json, sys, time
marks = [("start", time.perf_counter())]
def mark(name):
    marks.append((name, time.perf_counter()))
import stretto.frontends.cli
mark("import cli (click)")
from stretto.plans import plan as plan_mod
from stretto.plans.schema import plan_validator
from stretto.schedule.dryrun import DryRun, render_text
from stretto.plans.graph import TaskGraph
from stretto.schedule.simulate import simulate
from stretto.plans.yamlsource import load_located
mark("import plan, dryrun, yaml")
path = sys.argv[1]
raw = open(path, "rb").read()
located, problems = load_located(raw.decode(), path)
assert not problems
mark("read + YAML load")
validator = plan_validator()
mark("import pydantic-core + build the validator")
model = validator.validate_python(located.data)
mark("validation")
plan, problems = plan_mod._resolve(model, located, "digest")
assert plan is not None and not problems
mark("resolution")
from pathlib import Path
from stretto import api
configured = api.configured_agents(Path.cwd())
mark("config lookup (stretto.toml, git)")
graph = TaskGraph.from_plan(plan)
mark("graph")
agents = plan.max_agents or configured or 4
leases = {task.id: task.lease for task in plan.tasks}
attempts = {task.id: task.max_attempts for task in plan.tasks}
sim = simulate(graph, leases, agents, max_attempts=attempts)
report = DryRun(plan=plan, graph=graph, max_agents=agents, simulation=sim)
mark("simulation")
text = render_text(report)
mark("render text")
payload = json.dumps(report.to_dict(), indent=2)
mark("render JSON")
print(json.dumps([[b[0], b[1] - a[1]] for a, b in zip(marks, marks[1:])]))
print(json.dumps({"tasks": len(plan.tasks), "events": len(sim.events),
                  "decisions": sim.decisions, "text": len(text), "json": len(payload)}))
"""


def launcher(src: Path) -> list[str]:
    """``stretto`` run from the tree ``src`` (first on ``sys.path``), as the entry point does."""
    code = (
        f"import sys; sys.path.insert(0, {str(src)!r}); sys.argv[0] = 'stretto'; "
        "from stretto.frontends.cli import main; sys.exit(main())"
    )
    return [PYTHON, "-c", code]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per command (>= 10)")
    parser.add_argument("--keep", type=Path, help="write the plan here instead of a temp dir")
    parser.add_argument("--stages", type=int, default=STAGES, help="stages of 50 steps")
    parser.add_argument("--baseline", type=Path, help="a checkout to compare with (its src/)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--no-json", action="store_true", help="leave out run --dry-run --json")
    parser.add_argument("--no-probe", action="store_true", help="leave out the step-by-step probe")
    args = parser.parse_args()
    set_size(args.stages)
    print(f"machine: {machine()}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        plan_file = folder / "plan.yaml"
        text, steps = make_plan()
        plan_file.write_text(text)
        probe_file = folder / "probe.py"
        probe_file.write_text(PROBE)
        # Users run stretto inside their repository; the dry run looks for stretto.toml there.
        subprocess.run(["git", "init", "-q", str(folder)], check=True)

        out = subprocess.run(
            [PYTHON, str(probe_file), str(plan_file)],
            cwd=folder,
            capture_output=True,
            text=True,
            env=child_env(),
            check=True,
        ).stdout.splitlines()
        facts = json.loads(out[1])
        print(
            f"plan: {steps} steps in {STAGES} stages, {len(text) // 1024} KiB of YAML, "
            f"{text.count('id: ')} explicit ids; dry run: {facts['decisions']} decide calls, "
            f"{facts['events']} events, {facts['text'] // 1024} KiB text, "
            f"{facts['json'] // 1024} KiB JSON"
        )

        stretto = [STRETTO]
        if args.baseline:
            stretto = launcher(ROOT / "src")
        variants = {
            "stretto validate": ["validate", str(plan_file)],
            "stretto run --dry-run": ["run", "--dry-run", str(plan_file)],
        }
        if not args.no_json:
            json_run = ["run", "--dry-run", "--json", str(plan_file)]
            variants["stretto run --dry-run --json"] = json_run
        commands: dict[str, list[str]] = {"python -c pass": [PYTHON, "-c", "pass"]}
        for name, rest in variants.items():
            commands[name] = [*stretto, *rest]
            if args.baseline:
                commands[f"{name} (baseline)"] = [*launcher(args.baseline / "src"), *rest]
        times = time_commands(commands, args.repeat, warmup=args.warmup, cwd=folder)
        floor = median(times["python -c pass"])
        validate = median(times["stretto validate"])
        rows = []
        for name, values in times.items():
            mid = median(values)
            q1, q3 = quartiles(values)
            rows.append(
                [
                    name,
                    ms(mid),
                    f"{ms(q1)}-{ms(q3)}",
                    f"{mid / floor:.1f}x",
                    f"{mid / validate:.2f}x",
                    ms(median(CPU_TIMES[name])),
                    f"{median(MAX_RSS[name]) / 2**20:.0f} MB",
                ]
            )
        print(f"\n{args.repeat} runs each, interleaved; medians")
        print(
            table(
                ["command", "wall", "wall IQR", "vs python", "vs validate", "CPU", "peak RSS"], rows
            )
        )

        if args.baseline:
            rows = []
            for name in variants:
                before, after = f"{name} (baseline)", name
                cpu0, cpu1 = median(CPU_TIMES[before]), median(CPU_TIMES[after])
                rss0, rss1 = median(MAX_RSS[before]) / 2**20, median(MAX_RSS[after]) / 2**20
                rows.append(
                    [
                        name,
                        f"{cpu0:.2f} s",
                        f"{cpu1:.2f} s",
                        f"{cpu1 / cpu0:.2f}",
                        f"{rss0:.0f} MB",
                        f"{rss1:.0f} MB",
                        f"{rss1 / rss0:.2f}",
                    ]
                )
            print(f"\nagainst the baseline {args.baseline}: CPU seconds and peak RSS, medians")
            print(
                table(
                    ["command", "CPU base", "CPU now", "ratio", "RSS base", "RSS now", "ratio"],
                    rows,
                )
            )

        steps_times: dict[str, list[float]] = defaultdict(list)
        for _ in range(0 if args.no_probe else args.repeat):
            out = subprocess.run(
                [PYTHON, str(probe_file), str(plan_file)],
                cwd=folder,
                capture_output=True,
                text=True,
                env=child_env(),
                check=True,
            ).stdout.splitlines()
            for name, seconds in json.loads(out[0]):
                steps_times[name].append(seconds)
        if steps_times:
            total = sum(median(v) for v in steps_times.values())
            rows = [
                [name, ms(median(v)), f"{median(v) / total:.0%}"] for name, v in steps_times.items()
            ]
            rows.append(["sum (after interpreter start)", ms(total), "100%"])
            print(f"\nin one process, step by step (median of {args.repeat} probe runs)")
            print(table(["step", "median", "share"], rows))
        print()
        if steps > 2000:  # issue 16: plans of cluster size
            limit = TARGET_MS * 5
            for name in ("stretto validate", "stretto run --dry-run"):  # this tree's
                target(f"{name} {steps} steps", limit, median(times[name]))
                target(f"{name} {steps} steps, CPU", limit, median(CPU_TIMES[name]))
                peak = median(MAX_RSS[name]) / 2**20
                target(f"{name} {steps} steps, peak RSS", 400, peak, unit="MB", scale=1)
            return
        target(f"dry run {steps} steps", TARGET_MS, median(times["stretto run --dry-run"]))
        if args.no_json:
            return
        target(
            f"dry run --json {steps} steps",
            TARGET_MS,
            median(times["stretto run --dry-run --json"]),
        )


if __name__ == "__main__":
    main()
