"""Figures of the Dask backend (issue 16), side by side with the local backend in one run.

A loopback cluster on this machine: a plain ``dask scheduler`` and 2 separate ``dask worker``
processes with 4 agent slots each (``--resources agents=4``), started once.

1. Per-attempt overhead of the cluster path in a 1,000-file repository: the same plan of
   one-file tasks run one at a time (``--max-agents 1``) locally and on the cluster, interleaved;
   overhead = (cluster wall - local wall) / tasks. Beside it, the parts measured alone: the base
   bundle out (first time whole, then incremental), the base into a worker's clone, the
   branch bundle back and fetched here, and event delivery (a worker's ``log_event`` to the
   engine's handler). Target <= 0.3 s.
2. A 40-task plan of 2 s agents (``sleep 2``, independent) on 2 workers x 4 slots
   (``--max-agents 8``): makespan (the run's own ``wall``) over its lower bound
   max(critical path 2 s, 40 x 2 s / 8 slots) = 10 s; target <= 1.3x. The same plan with 8
   local agents beside it.

Run: .venv/bin/python benchmarks/bench_cluster.py [--quick] [--makespan-only]
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import STRETTO, child_env, machine, median, table, target
from stretto.api.cluster import start_local_cluster
from stretto.engine.bundles import make_bundle
from stretto.engine.remote_attempt import fetch_branch
from stretto.engine.worker_attempt import bundle_branch, clone_of, receive_base
from stretto.testing.repo import git, make_repo

CONFIG = 'target = "main"\ndefault_agent = "shell"\n'


def big_repo(root: Path, name: str, files: int = 1000) -> Path:
    content = {f"src/pkg{i // 50}/mod{i}.py": f"VALUE = {i}\n" * 20 for i in range(files)}
    return make_repo(root / name, {"README.md": "bench\n", "stretto.toml": CONFIG, **content})


def one_at_a_time_plan(path: Path, tasks: int, tag: str) -> Path:
    steps = "\n".join(
        f'      - {{id: t{i}, goal: x, files: [{tag}{i}.txt], command: "echo {i} > {tag}{i}.txt"}}'
        for i in range(tasks)
    )
    path.write_text(f"name: overhead\nstages:\n  - name: work\n    steps:\n{steps}\n")
    return path


def sleepy_plan(path: Path, tasks: int, seconds: float) -> Path:
    steps = "\n".join(
        f'      - {{id: s{i}, goal: x, files: [s{i}.txt], command: "sleep {seconds}; '
        f'echo {i} > s{i}.txt"}}'
        for i in range(tasks)
    )
    path.write_text(f"name: makespan\nstages:\n  - name: work\n    steps:\n{steps}\n")
    return path


def run_wall(repo: Path, plan: Path, *extra: str) -> float:
    """The run's own wall time (run_finished), after checking that every task landed."""
    return run_records(repo, plan, *extra)[-1]["wall"]


def attempt_times(records: list[dict]) -> tuple[list[float], float, float, float]:
    """Per landed task, seconds from its spawn decision to its landing (task_finished), in
    order; the run's start to the first spawn; the last landing to the run's end; and the
    makespan from the first spawn to the last landing."""
    spawned: dict[str, float] = {}
    took: list[float] = []
    for r in records:
        if r.get("type") == "decision" and r.get("action") == "spawn":
            spawned.setdefault(str(r["task"]), float(r["ts"]))
        if r.get("type") == "task_finished" and r.get("status") == "landed":
            took.append(float(r["ts"]) - spawned[str(r["task"])])
    start = float(next(r["ts"] for r in records if r.get("type") == "run_started"))
    end = float(next(r["ts"] for r in records if r.get("type") == "run_finished"))
    first = min(spawned.values())
    last = max(float(r["ts"]) for r in records if r.get("type") == "task_finished")
    return took, first - start, end - last, last - first


def merge_seconds(records: list[dict]) -> list[float]:
    """Per landing, seconds from its merge intent to its ``merged`` record: the merge queue
    lands them one after another at worst, so 40 of these in a row bound the makespan too."""
    began: dict[str, float] = {}
    took = []
    for r in records:
        if r.get("type") == "merge" and r.get("kind") == "intent":
            began[str(r["task"])] = float(r["ts"])
        elif r.get("type") == "merged" and str(r.get("task")) in began:
            took.append(float(r["ts"]) - began.pop(str(r["task"])))
    return took


def run_records(repo: Path, plan: Path, *extra: str) -> list[dict]:
    """The run's journal records (its --json output), after checking that every task landed."""
    result = subprocess.run(
        [STRETTO, "run", str(plan), "--json", *extra],
        cwd=repo,
        env=child_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"run failed in {repo}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return [r for r in records if r.get("type") != "summary"]


def parts(root: Path, repo: Path) -> dict[str, list[float]]:
    """The cluster path's steps, each timed alone on this machine."""
    times: dict[str, list[float]] = {k: [] for k in ("full", "incr", "in", "back")}
    worker_home = root / "parts-worker"
    clone = clone_of(worker_home, "bench")
    haves: list[str] = []
    for i in range(5):
        base = git(repo, "rev-parse", "main").strip()
        start = time.perf_counter()
        bundle = make_bundle(repo, base, haves, f"bench-{i}")
        times["full" if not haves else "incr"].append(time.perf_counter() - start)
        start = time.perf_counter()
        assert receive_base(clone, base, bundle, f"refs/stretto/bundle/bench-{i}") is None
        times["in"].append(time.perf_counter() - start)
        haves.append(base)
        # the worker's work: one commit on a branch, bundled back and fetched here
        branch = f"stretto/bench/t/{i}"
        git(clone, "branch", "-f", branch, base)
        wt = worker_home / f"wt{i}"
        git(clone, "worktree", "add", "-q", str(wt), branch)
        (wt / f"new{i}.txt").write_text("x\n")
        git(wt, "add", "-A")
        git(wt, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "w")
        head = git(wt, "rev-parse", "HEAD").strip()
        start = time.perf_counter()
        fetch_branch(repo, bundle_branch(clone, branch, base), branch, head)
        times["back"].append(time.perf_counter() - start)
        git(repo, "branch", "-D", "-q", branch)
        # the target moves on between attempts (a landing)
        (repo / f"landed{i}.txt").write_text("y\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", f"land {i}")
    times["full"] = times["full"] or [0.0]
    return times


def event_latency(address: str, count: int = 50) -> list[float]:
    """Seconds from a worker's ``log_event`` to the engine's handler (same machine clock)."""
    from distributed import Client, get_worker

    def emit(n: int) -> None:
        worker = get_worker()
        for i in range(n):
            worker.log_event("bench-latency", {"sent": time.time(), "i": i})
            time.sleep(0.02)

    async def measure() -> list[float]:
        got: list[float] = []
        async with Client(address, asynchronous=True) as client:  # type: ignore[no-untyped-call]
            client.subscribe_topic(
                "bench-latency", lambda ev: got.append(time.time() - ev[1]["sent"])
            )
            await asyncio.sleep(0.5)
            await client.submit(emit, count, pure=False)
            await asyncio.sleep(1.0)
        return got

    return asyncio.run(measure())


def main() -> None:
    quick = "--quick" in sys.argv
    makespan_only = "--makespan-only" in sys.argv  # figure 2 alone
    rounds, tasks = (1, 4) if quick else (3, 8)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        cluster = start_local_cluster(2, 4, directory=root / "cluster")
        print(f"cluster {cluster.address}: 2 workers x 4 slots, up in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        try:
            if not makespan_only:
                overhead_figures(root, cluster.address, rounds, tasks)
            makespan_figures(root, cluster.address, quick)
        finally:
            cluster.stop()


def overhead_figures(root: Path, address: str, rounds: int, tasks: int) -> None:
    """Figure 1: the cluster path's overhead per attempt, and its parts."""
    local_repo, remote_repo = big_repo(root, "local"), big_repo(root, "remote")
    per: dict[str, list[float]] = {"local": [], "cluster": []}
    cold: dict[str, list[float]] = {"local": [], "cluster": []}
    fixed: dict[str, list[tuple[float, float]]] = {"local": [], "cluster": []}
    for r in range(rounds):  # interleaved: local, cluster, local, cluster...
        plan = one_at_a_time_plan(root / f"plan-o{r}.yaml", tasks, f"r{r}_")
        for name, repo, extra in (
            ("local", local_repo, ()),
            ("cluster", remote_repo, ("--cluster", address)),
        ):
            records = run_records(repo, plan, "--max-agents", "1", *extra)
            took, before, after, _ = attempt_times(records)
            cold[name].append(took[0])
            per[name].extend(took[1:])
            fixed[name].append((before, after))
    overhead = median(per["cluster"]) - median(per["local"])
    steps = parts(root, big_repo(root, "parts"))
    latency = event_latency(address)
    print("\n1. one attempt at a time, 1,000-file repository, shell agent writing one file")
    n, r_ = str(len(per["local"])), str(rounds)
    p95 = sorted(latency)[max(0, int(len(latency) * 0.95) - 1)]

    def fix(name: str, k: int) -> str:
        return f"{median([f[k] for f in fixed[name]]):.2f} s"

    rows = [
        ["local: attempt, spawn to landed", f"{median(per['local']):.3f} s", n],
        ["cluster: attempt, spawn to landed", f"{median(per['cluster']):.3f} s", n],
        ["overhead of the cluster path per attempt", f"{overhead:.3f} s", "difference"],
        ["  base bundle out, incremental", f"{median(steps['incr']):.3f} s", "4"],
        ["  base into the worker's clone", f"{median(steps['in']):.3f} s", "5"],
        ["  branch bundle back, fetched here", f"{median(steps['back']):.3f} s", "5"],
        ["  event delivery, p50", f"{median(latency) * 1000:.1f} ms", str(len(latency))],
        ["  event delivery, p95", f"{p95 * 1000:.1f} ms", ""],
        ["first attempt of a run, local", f"{median(cold['local']):.2f} s", r_],
        ["first attempt of a run, cluster", f"{median(cold['cluster']):.2f} s", r_],
        ["  base bundle out, whole repo", f"{median(steps['full']):.3f} s", "1"],
        ["run start to first spawn, local", fix("local", 0), r_],
        ["run start to first spawn, cluster", fix("cluster", 0), r_],
        ["last landing to run end, local", fix("local", 1), r_],
        ["last landing to run end, cluster", fix("cluster", 1), r_],
    ]
    print(table(["figure", "value", "samples"], rows))
    target("cluster overhead per attempt", 0.3, overhead, "s", 1)


def makespan_figures(root: Path, address: str, quick: bool) -> None:
    """Figure 2: 40 independent 2 s agents on 2 workers x 4 slots, and on 8 local agents."""
    print("\n2. 40 independent 2 s agents, 8 at once: 2 workers x 4 slots vs 8 local agents")
    sleepy = sleepy_plan(root / "plan-s.yaml", 40, 2)
    bound = max(2.0, 40 * 2.0 / 8)
    walls: dict[str, list[float]] = {"local": [], "cluster": []}
    spans: dict[str, list[float]] = {"local": [], "cluster": []}
    merging: list[float] = []
    for k in range(1 if quick else 2):
        for name, extra in (("local", ()), ("cluster", ("--cluster", address))):
            small = big_repo(root, f"s{name}{k}", 10)
            records = run_records(small, sleepy, "--max-agents", "8", *extra)
            walls[name].append(float(records[-1]["wall"]))
            spans[name].append(attempt_times(records)[3])
            merging.extend(merge_seconds(records))
    rows = []
    for name, label in (("local", "local, 8 agents"), ("cluster", "cluster, 2 x 4 slots")):
        wall, span = median(walls[name]), median(spans[name])
        rows.append([label, f"{wall:.2f} s", f"{wall / bound:.2f}x", f"{span:.2f} s",
                     f"{span / bound:.2f}x", len(walls[name])])  # fmt: skip
    header = [
        "backend",
        "run wall",
        "/ 10 s",
        "first spawn to last landing",
        "/ 10 s",
        "runs",
    ]
    print(table(header, rows))
    target("cluster run wall / lower bound", 1.3, median(walls["cluster"]) / bound, "x", 1)
    serial = 40 * median(merging)
    print(
        f"a landing takes {median(merging):.3f} s here (median; 40 one after another: "
        f"{serial:.1f} s, under the bound), and an attempt waiting to land holds no agent slot"
    )


if __name__ == "__main__":
    main()
