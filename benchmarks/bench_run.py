"""Figures of real runs (issue 3): shell agents in real worktrees through the merge queue.

1. 12 independent one-file tasks, 12 agents: wall time of the whole `stretto run` command
   (target <= 5 s), next to the same plan with 1 agent and to a plain serial shell loop doing the
   same work with git by hand.
2. A 200-task random DAG of sleeping agents (0.5-3 s), 16 agents: makespan over the lower bound
   max(critical path, total work / 16) (target <= 1.15).
3. Orchestrator RSS with 50 agents running at once (target <= 150 MB).
4. Time from launching `stretto run` to the first agent process running (target <= 0.5 s),
   next to `python -c pass` and `stretto --help`.

Run: .venv/bin/python benchmarks/bench_run.py [--quick]
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, STRETTO, child_env, machine, median, table, target, time_commands
from stretto.testing.repo import make_repo

CONFIG = 'target = "main"\ndefault_agent = "shell"\n'


def new_repo(root: Path, name: str) -> Path:
    return make_repo(root / name, {"README.md": "bench\n", "stretto.toml": CONFIG})


def run_stretto(repo: Path, plan: Path, *extra: str) -> tuple[float, dict[str, object]]:
    start = time.perf_counter()
    result = subprocess.run(
        [STRETTO, "run", str(plan), "--json", *extra],
        cwd=repo,
        env=child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else {}
    if result.returncode != 0:
        raise SystemExit(f"stretto run failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return wall, summary


# --------------------------------------------------------------------------- 1. twelve tasks


def twelve_plan(agents: int) -> str:
    steps = "\n".join(
        f"      - {{id: t{i}, goal: 'write f{i}', files: [f{i}.txt], "
        f"command: 'echo {i} > f{i}.txt'}}"
        for i in range(12)
    )
    return f"max_agents: {agents}\nstages:\n  - name: s\n    steps:\n{steps}\n"


SERIAL_LOOP = """
set -e
for i in $(seq 0 11); do
  git worktree add -q -b manual/$i .wt/$i main
  (cd .wt/$i && echo $i > f$i.txt && git add -A && git commit -qm "f$i")
  git merge -q --no-ff --no-edit manual/$i
  git worktree remove --force .wt/$i
done
"""


def bench_twelve(root: Path, rounds: int) -> bool:
    walls: dict[str, list[float]] = {
        "stretto, 12 agents": [],
        "stretto, 1 agent": [],
        "bash loop": [],
    }
    landed = []
    for r in range(rounds):
        for agents in (12, 1):
            repo = new_repo(root, f"twelve-{agents}-{r}")
            plan = root / f"twelve-{agents}-{r}.yaml"
            plan.write_text(twelve_plan(agents))
            wall, summary = run_stretto(repo, plan)
            walls[f"stretto, {agents} agent{'s' if agents > 1 else ''}"].append(wall)
            if agents == 12:
                landed.append(summary.get("landed"))
        repo = new_repo(root, f"loop-{r}")
        (repo / ".git" / "info" / "exclude").write_text(".wt/\n")
        start = time.perf_counter()
        subprocess.run(["bash", "-c", SERIAL_LOOP], cwd=repo, check=True, env=child_env())
        walls["bash loop"].append(time.perf_counter() - start)
    base = median(walls["stretto, 12 agents"])
    print("\n1. Twelve one-file tasks (whole command, median of", rounds, "rounds)")
    print(
        table(
            ["variant", "median s", "ratio to stretto x12"],
            [[k, f"{median(v):.2f}", f"{median(v) / base:.2f}"] for k, v in walls.items()],
        )
    )
    print(f"landed per round (12 agents): {landed}")
    ok = all(n == 12 for n in landed)
    print(f"TARGET all 12 land: {'OK' if ok else 'MISSED'}")
    return target("12 tasks wall", 5, base, "s", 1) and ok


# --------------------------------------------------------------------------- 2. 200-task DAG

SLEEP = {"low": (0.5, 1.0), "medium": (1.0, 2.0), "high": (2.0, 3.0)}


def dag_plan(seed: int, n: int = 200) -> tuple[str, float, float]:
    rnd = random.Random(seed)
    lines = ["max_agents: 16", "stages:", "  - name: all", "    steps:"]
    duration: dict[int, float] = {}
    deps: dict[int, list[int]] = {}
    for i in range(n):
        complexity = rnd.choice(["low", "low", "medium", "medium", "high"])
        lo, hi = SLEEP[complexity]
        duration[i] = round(rnd.uniform(lo, hi), 2)
        pool = list(range(max(0, i - 30), i))
        deps[i] = sorted(rnd.sample(pool, min(len(pool), rnd.choice([0, 1, 1, 2, 3]))))
        dep_list = ", ".join(f"t{d}" for d in deps[i])
        lines.append(
            f"      - {{id: t{i}, goal: 'task {i}', complexity: {complexity}, files: [f{i}.txt], "
            f"depends_on: [{dep_list}], command: 'sleep {duration[i]}; echo {i} > f{i}.txt'}}"
        )
    finish: dict[int, float] = {}
    for i in range(n):
        finish[i] = duration[i] + max((finish[d] for d in deps[i]), default=0.0)
    critical = max(finish.values())
    return "\n".join(lines) + "\n", critical, sum(duration.values())


def bench_dag(root: Path, rounds: int) -> bool:
    rows = []
    ratios = []
    for r in range(rounds):
        text, critical, work = dag_plan(seed=r)
        repo = new_repo(root, f"dag-{r}")
        plan = root / f"dag-{r}.yaml"
        plan.write_text(text)
        wall, summary = run_stretto(repo, plan)
        makespan = float(summary["wall_seconds"])  # type: ignore[arg-type]
        bound = max(critical, work / 16)
        ratios.append(makespan / bound)
        rows.append(
            [
                r,
                f"{critical:.1f}",
                f"{work / 16:.1f}",
                f"{makespan:.1f}",
                f"{wall:.1f}",
                f"{makespan / bound:.3f}",
                summary.get("landed"),
            ]
        )
    print("\n2. 200-task random DAG, sleeping shell agents, 16 agents")
    print(
        table(
            ["seed", "critical s", "work/16 s", "makespan s", "command s", "ratio", "landed"], rows
        )
    )
    value = median(ratios)
    ok = value <= 1.15
    print(f"TARGET makespan / lower bound <= 1.15: {value:.3f}  {'OK' if ok else 'MISSED'}")
    return ok


# --------------------------------------------------------------------------- 3. RSS


def bench_rss(root: Path) -> bool:
    steps = "\n".join(
        f"      - {{id: t{i}, goal: 'hold {i}', files: [f{i}.txt], "
        f"command: 'sleep 6; echo {i} > f{i}.txt'}}"
        for i in range(50)
    )
    plan = root / "rss.yaml"
    plan.write_text(f"max_agents: 50\nstages:\n  - name: s\n    steps:\n{steps}\n")
    repo = new_repo(root, "rss")
    proc = subprocess.Popen(
        [STRETTO, "run", str(plan), "--plain"],
        cwd=repo,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    peak = 0
    peak_running = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            break
        rss_kb = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])
        try:
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        except OSError:
            children = []
        running = len(children)
        peak = max(peak, rss_kb)
        peak_running = max(peak_running, running)
        time.sleep(0.1)
    assert proc.stdout is not None
    proc.stdout.read()
    proc.stdout.close()
    print("\n3. Orchestrator memory with 50 agents running")
    print(f"peak agent processes at once: {peak_running}")
    print(f"peak RSS of the stretto process: {peak / 1024:.1f} MB")
    return target("RSS with 50 agents", 150, peak / 1024, "MB", 1)


# --------------------------------------------------------------------------- 4. first agent


def first_agent_plan(stamp: Path) -> str:
    """One shell step whose agent writes the time it started (epoch seconds) to ``stamp``."""
    return (
        "stages:\n  - name: s\n    steps:\n"
        "      - {id: t, goal: g, files: [x.txt], "
        f"command: 'date +%s.%N > {stamp}; echo > x.txt'}}\n"
    )


def bench_first_agent(root: Path, rounds: int) -> bool:
    plan = root / "first.yaml"
    stamp = root / "stamp"
    plan.write_text(first_agent_plan(stamp))
    delays = []
    for r in range(rounds):
        repo = new_repo(root, f"first-{r}")
        start = time.time()
        subprocess.run(
            [STRETTO, "run", str(plan), "--plain"],
            cwd=repo,
            env=child_env(),
            capture_output=True,
            check=True,
        )
        delays.append(float(stamp.read_text()) - start)
    floors = time_commands(
        {"python -c pass": [PYTHON, "-c", "pass"], "stretto --help": [STRETTO, "--help"]}, rounds
    )
    first = median(delays)
    print("\n4. From launching `stretto run` to the first agent running (median of", rounds, ")")
    rows = [["stretto run -> first agent", f"{first * 1000:.0f}", "1.00"]]
    rows += [[k, f"{median(v) * 1000:.0f}", f"{median(v) / first:.2f}"] for k, v in floors.items()]
    print(table(["what", "median ms", "ratio"], rows))
    return target("first agent", 500, first)


def main() -> None:
    quick = "--quick" in sys.argv
    print(machine())
    results = []
    with tempfile.TemporaryDirectory(prefix="stretto-bench-") as tmp:
        root = Path(tmp)
        results.append(bench_first_agent(root, 5 if quick else 10))
        results.append(bench_twelve(root, 2 if quick else 5))
        results.append(bench_rss(root))
        results.append(bench_dag(root, 1 if quick else 3))
    print("\nall targets met" if all(results) else "\nsome targets MISSED")


if __name__ == "__main__":
    main()
