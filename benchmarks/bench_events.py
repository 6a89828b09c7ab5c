"""Figures of the run API (stretto.api): following a run's events, steering it, detaching.

1. Write-to-delivery latency of ``RunHandle.events(follow=True)`` (target p95 <= 100 ms) while
   20 shell agents run: one detached run of a plan of shell steps that each print for a few
   seconds, ``max_agents=20``. Latency = the time a record reaches the follower minus its ``ts``
   (which the engine stamps right before writing the line). Side by side, in the same process
   and run, a direct reader: a plain loop that tails journal.jsonl with the same 10 ms sleep
   (like ``tail -f``), timed the same way. Only records written after both readers started count.
2. Control latency (target p95 <= 250 ms) in the same run, once 20 agents run: pause, unpause,
   set_parallelism(19), set_parallelism(20), over and over, with a random pause between calls.
   Latency = the ``control`` record's ``ts`` minus the command's ``sent``; the wall time of the
   API call (status read, send, wait for the record) is shown too, and the direct reader's
   latency above is the floor they are compared with.
3. ``stretto run --detach PLAN`` wall time as a fresh process (target <= 0.5 s) for a one-step
   plan, interleaved with ``stretto validate PLAN`` and ``python -c pass`` (medians, ratios).
   Each detached run is waited for (untimed) before the next command, so none pile up.

Every engine started here is waited for (cancelled first if still running) before the script
ends; the repositories live in a temporary directory, removed afterwards.

Run: .venv/bin/python benchmarks/bench_events.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import PYTHON, STRETTO, child_env, machine, median, quartiles, table, target
from stretto import api
from stretto.errors import ControlError
from stretto.testing.repo import make_repo

CONFIG = 'target = "main"\ndefault_agent = "shell"\n'
AGENTS = 20
TAIL_POLL = 0.01  # the direct reader's sleep: stretto.engine.events.POLL, so only overhead differs
TINY = """stages:
  - name: s
    steps:
      - {id: t, goal: g, files: [x.txt], command: 'date +%s%N > x.txt'}
"""

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # detached engines inherit this environment
ENGINE_PIDS: set[int] = set()


def new_repo(root: Path, name: str) -> Path:
    return make_repo(root / name, {"README.md": "bench\n", "stretto.toml": CONFIG})


def busy_plan(steps: int, seed: int) -> str:
    """Shell steps that print a line every 0.25 s for 4-8 s, then write their file."""
    rnd = random.Random(seed)
    lines = ["stages:", "  - name: busy", "    steps:"]
    for i in range(steps):
        ticks = rnd.randint(16, 32)
        command = f"for k in $(seq {ticks}); do echo tick $k; sleep 0.25; done; echo {i} > f{i}.txt"
        lines.append(
            f"      - {{id: t{i}, goal: 'busy {i}', files: [f{i}.txt], command: '{command}'}}"
        )
    return "\n".join(lines) + "\n"


def p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def engine_pid(run_dir: Path) -> int | None:
    try:
        return int((run_dir / ".lock").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def running(pid: int) -> bool:
    """Whether ``pid`` is still a detached engine (a zombie's cmdline is empty; a reused pid's
    is not an engine's)."""
    try:
        return b"stretto.engine.detach" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def finish(handle: api.RunHandle, timeout: float = 120) -> str:
    """Wait for the run to end (cancel it if it will not), then for its engine to exit."""
    ENGINE_PIDS.update(p for p in (handle.pid, engine_pid(handle.run_dir)) if p)
    state = handle.wait(timeout=timeout)
    if not state.over and handle.live():
        with contextlib.suppress(ControlError):
            handle.cancel()
        state = handle.wait(timeout=60)
    deadline = time.monotonic() + 10
    while any(running(p) for p in ENGINE_PIDS) and time.monotonic() < deadline:
        time.sleep(0.02)
    return state.state


# --------------------------------------------------------------------------- 1-2. live run


def api_reader(handle: api.RunHandle, out: dict[str, Any], full: threading.Event) -> None:
    out["start"] = time.time()
    for record in handle.events(follow=True):
        out["lat"].append((record.ts, time.time() - record.ts))
        if record.type in ("attempt_started", "attempt_finished"):
            out["running"] += 1 if record.type == "attempt_started" else -1
            out["peak"] = max(out["peak"], out["running"])
            if out["running"] >= AGENTS:
                full.set()
    full.set()  # the run ended: stop waiting for agents


def tail_reader(path: Path, out: dict[str, Any], stop: threading.Event) -> None:
    out["start"] = time.time()
    rest = b""
    with path.open("rb") as journal:
        while not stop.is_set():
            chunk = journal.read()
            if not chunk:
                time.sleep(TAIL_POLL)
                continue
            *lines, rest = (rest + chunk).split(b"\n")
            for line in lines:
                record = json.loads(line)
                out["lat"].append((record["ts"], time.time() - record["ts"]))
                if record["type"] == "run_finished":
                    return


def bench_live(root: Path, steps: int, commands: int) -> dict[str, Any]:
    repo = new_repo(root, "live")
    plan = root / "busy.yaml"
    plan.write_text(busy_plan(steps, seed=1))
    rnd = random.Random(2)
    follow: dict[str, Any] = {"lat": [], "running": 0, "peak": 0}
    direct: dict[str, Any] = {"lat": []}
    full, stop = threading.Event(), threading.Event()
    handle = api.start_run(repo, plan, api.RunOptions(max_agents=AGENTS), detach=True)
    threads = [
        threading.Thread(target=api_reader, args=(handle, follow, full), daemon=True),
        threading.Thread(
            target=tail_reader, args=(handle.run_dir / "journal.jsonl", direct, stop), daemon=True
        ),
    ]
    try:
        for thread in threads:
            thread.start()
        full.wait(timeout=120)
        calls = [
            handle.pause,
            handle.unpause,
            lambda: handle.set_parallelism(AGENTS - 1),
            lambda: handle.set_parallelism(AGENTS),
        ]
        walls, sent, agents = [], set(), []
        for i in range(commands):
            agents.append(follow["running"])
            start = time.perf_counter()
            try:
                result = calls[i % len(calls)]()
            except ControlError as error:  # the run ended first
                print(f"control stopped after {i} commands: {error}", file=sys.stderr)
                break
            walls.append(time.perf_counter() - start)
            sent.add(result.command)
            time.sleep(rnd.uniform(0.02, 0.08))
        state = finish(handle)
    finally:
        if handle.live():  # an error or Ctrl-C above: cancel the run
            finish(handle, timeout=0)
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    control = [
        r.ts - r.fields["sent"]
        for r in handle.records()
        if r.type == "control" and r.fields.get("id") in sent
    ]
    cutoff = max(follow["start"], direct["start"])
    series = {
        "follow": [lat for ts, lat in follow["lat"] if ts > cutoff],
        "direct": [lat for ts, lat in direct["lat"] if ts > cutoff],
        "control": control,
        "control_call": walls,
    }
    return {
        "steps": steps,
        "state": state,
        "peak_agents": follow["peak"],
        "agents_at_commands": {"min": min(agents, default=0), "median": median(agents or [0])},
        "series": series,
        "figures": {name: figures(values) for name, values in series.items()},
    }


def figures(values: list[float]) -> dict[str, float]:
    q1, q3 = quartiles(values)
    return {
        "n": len(values),
        "p50": median(values),
        "q1": q1,
        "q3": q3,
        "p95": p95(values),
        "max": max(values),
    }


def show_live(live: dict[str, Any]) -> None:
    f = live["figures"]
    floor = f["direct"]["p95"]
    names = {
        "follow": "follow: RunHandle.events(follow=True)",
        "direct": f"direct reader: tail journal.jsonl, {TAIL_POLL * 1000:.0f} ms sleep",
        "control": "control: command sent -> journaled",
        "control_call": "control: API call, wall",
    }
    rows = [
        [
            label,
            f[key]["n"],
            f"{f[key]['p50'] * 1000:.1f}",
            f"{f[key]['q1'] * 1000:.1f}-{f[key]['q3'] * 1000:.1f}",
            f"{f[key]['p95'] * 1000:.1f}",
            f"{f[key]['max'] * 1000:.1f}",
            f"{f[key]['p95'] / floor:.2f}",
        ]
        for key, label in names.items()
    ]
    at = live["agents_at_commands"]
    print(
        f"\n1-2. One detached run of {live['steps']} shell steps, max_agents {AGENTS} (ended "
        f"{live['state']}); peak agents running {live['peak_agents']}, at each command: "
        f"min {at['min']}, median {at['median']:g}"
    )
    print(table(["latency", "n", "p50 ms", "IQR ms", "p95 ms", "max ms", "p95 / direct p95"], rows))
    print(f"follow / direct reader, p50: {f['follow']['p50'] / f['direct']['p50']:.2f}x")


# --------------------------------------------------------------------------- 3. --detach


def bench_detach(root: Path, rounds: int, warmup: int = 1) -> dict[str, Any]:
    """Interleaved like _common.time_commands, but each detached run is waited for, untimed."""
    repo = new_repo(root, "detach")
    plan = root / "tiny.yaml"
    plan.write_text(TINY)
    commands = {
        "stretto run --detach": [STRETTO, "run", "--detach", str(plan)],
        "stretto validate": [STRETTO, "validate", str(plan)],
        "python -c pass": [PYTHON, "-c", "pass"],
    }
    names = list(commands)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    states = []
    for round_ in range(warmup + rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run(
                commands[name], cwd=repo, env=child_env(), stdout=subprocess.DEVNULL, check=True
            )
            elapsed = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if name == "stretto run --detach":
                states.append(finish(api.open_run(repo)))
            if round_ >= warmup:
                wall[name].append(elapsed)
                cpu[name].append(
                    after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
                )
    return {"rounds": rounds, "states": states, "wall": wall, "cpu": cpu}


def show_detach(detach: dict[str, Any]) -> None:
    base = median(detach["wall"]["stretto run --detach"])
    rows = []
    for name, values in detach["wall"].items():
        q1, q3 = quartiles(values)
        rows.append(
            [
                name,
                f"{median(values) * 1000:.0f}",
                f"{q1 * 1000:.0f}-{q3 * 1000:.0f}",
                f"{median(detach['cpu'][name]) * 1000:.0f}",
                f"{median(values) / base:.2f}",
            ]
        )
    print(f"\n3. Fresh processes, one-step plan, {detach['rounds']} rounds interleaved; medians")
    print(table(["command", "wall ms", "IQR ms", "CPU ms", "ratio to --detach"], rows))
    print(f"detached runs ended: {dict(Counter(detach['states']))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run, fewer rounds")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    steps, commands, rounds = (30, 20, 5) if args.quick else (60, 48, 15)
    if not args.json:
        print(machine())
    with tempfile.TemporaryDirectory(prefix="stretto-bench-") as tmp:
        root = Path(tmp)
        try:
            live = bench_live(root, steps, commands)
            detach = bench_detach(root, rounds)
        finally:  # also after Ctrl-C or an error: stop every run still going, wait for it
            for repo in (root / "live", root / "detach"):
                for status in api.list_runs(repo) if repo.is_dir() else []:
                    if status.live:
                        finish(api.open_run(repo, status.run_id), timeout=0)
            if left := [pid for pid in ENGINE_PIDS if running(pid)]:
                print(f"engines still running: {left}", file=sys.stderr)
    f = live["figures"]
    detach_wall = median(detach["wall"]["stretto run --detach"])
    ok = {
        "follow p95 <= 100 ms": f["follow"]["p95"] <= 0.1,
        "control p95 <= 250 ms": f["control"]["p95"] <= 0.25,
        "run --detach <= 0.5 s": detach_wall <= 0.5,
    }
    if args.json:
        del live["series"]
        print(
            json.dumps(
                {"machine": machine(), "live": live, "detach": detach, "targets": ok}, indent=2
            )
        )
        return
    show_live(live)
    show_detach(detach)
    print()
    target("follow p95", 100, f["follow"]["p95"])
    target("control p95", 250, f["control"]["p95"])
    target("run --detach", 500, detach_wall)
    print("\nall targets met" if all(ok.values()) else "\nsome targets MISSED")


if __name__ == "__main__":
    main()
