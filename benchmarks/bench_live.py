"""Figures of ``stretto live`` (the Textual UI): how fast a record reaches the screen, what the
UI costs in CPU, and how fast it attaches to a long finished run.

1. Record-to-screen latency (target p95 <= 100 ms) and the UI process's CPU (target <= 25% of
   one core) while 50 agents run and the journal grows by 200 records a second in total. A
   writer process holds the run's lock and journals through the engine's own ``Journal``: 50
   ``attempt_started``, then gate results, warnings, decisions, attempts finishing and starting
   again on random tasks, 200 a second, while each of the 50 agents' ``agent.log`` gets a line
   every 0.25 s (the table shows each running agent's latest line). ``stretto live`` runs in a
   real terminal (tmux, 160x48) and times each record when the screen update that shows it has
   been written to the terminal (``App._display``): latency = that moment minus the record's
   ``ts``. A record that changes nothing on the screen (no widget asked to be repainted when
   the UI took it in: a passed gate, a note) is shown as soon as it is taken in; it used to be
   timed at whatever paint came next, up to the once-a-second redraw. Both kinds are printed
   apart and together; the target is on all of them. CPU =
   the UI process's user + system seconds over the measured window. Side by side, in this
   process, ``RunHandle.events(follow=True)`` on the same journal: the floor a reader pays.
2. Attaching to a finished run of 100,000 records (2,000 tasks, 50 records each) until its
   table is on the screen (target <= 1.5 s), as a fresh process (imports included), interleaved
   with ``stretto status RUN`` on the same journal (medians of several rounds).

Run: .venv/bin/python benchmarks/bench_live.py [--quick] [--attach-only] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

STARTED = time.time()  # the attach figure counts from here (before the imports below)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PYTHON, STRETTO, child_env, machine, median, quartiles, table, target  # noqa: E402
from stretto.engine.journal import Journal  # noqa: E402
from stretto.testing.repo import make_repo  # noqa: E402

AGENTS = 50
RATE = 200.0
TYPES = ("gate_result", "warning", "decision", "gate_result", "warning")


def plan_text(tasks: list[str]) -> str:
    steps = "\n".join(
        f"      - {{id: {t}, goal: g, files: [{t}.txt], command: 'true'}}" for t in tasks
    )
    return f"name: bench\nstages:\n  - name: s\n    steps:\n{steps}\n"


def started_record(journal: Journal, tasks: list[str]) -> None:
    journal.append(
        "run_started",
        run_id=journal.run_dir.name,
        plan="bench",
        tasks=tasks,
        pid=os.getpid(),
        options={"target": "main", "budget": 50.0, "max_agents": AGENTS},
    )


def attempt(journal: Journal, task: str, n: int) -> None:
    journal.append(
        "attempt_started", task=task, attempt=n, agent="shell", model=None, tier=None,
        workspace=f"/nowhere/{task}", branch=f"stretto/{task}", base="0" * 40, pid=1,
    )  # fmt: skip
    (journal.run_dir / "tasks" / task / str(n)).mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------------------- the writer


def write(run_dir: Path, seconds: float, rate: float) -> None:
    """Be the engine of a run of 50 busy agents for ``seconds``, then finish it."""
    tasks = [f"t{i:02d}" for i in range(AGENTS)]
    (run_dir.parent).mkdir(parents=True, exist_ok=True)
    journal = Journal.create(run_dir)
    (run_dir / "plan.yaml").write_text(plan_text(tasks))
    started_record(journal, tasks)
    attempts = dict.fromkeys(tasks, 1)
    for task in tasks:
        attempt(journal, task, 1)
    logs = {t: (run_dir / "tasks" / t / "1" / "agent.log").open("a") for t in tasks}
    rng = random.Random(7)
    interval = 1.0 / rate
    due = time.monotonic()
    end = due + seconds
    next_log = due
    n = 0
    while time.monotonic() < end:
        task = rng.choice(tasks)
        n += 1
        if n % 40 == 0:  # an attempt ends and the next one starts
            journal.append("attempt_finished", task=task, attempt=attempts[task],
                           outcome="failed", duration=3.0, usage={"input": 900, "output": 80},
                           cost_usd=0.002, reason="exit 1")  # fmt: skip
            attempts[task] += 1
            attempt(journal, task, attempts[task])
            logs[task].close()
            path = run_dir / "tasks" / task / str(attempts[task]) / "agent.log"
            logs[task] = path.open("a")
        else:
            kind = TYPES[n % len(TYPES)]
            if kind == "gate_result":
                journal.append(kind, task=task, stage="attempt", gate="lint", passed=True,
                               summary=f"ok {n}", duration=0.1)  # fmt: skip
            elif kind == "decision":
                journal.append(kind, action="wait", task=task, reason="capacity", holders=[],
                               conflict=None)  # fmt: skip
            else:
                journal.append(kind, task=task, message=f"note {n}")
        now = time.monotonic()
        if now >= next_log:  # each agent prints a line every 0.25 s
            for t, handle in logs.items():
                handle.write(f"{t} working on step {n}\n")
                handle.flush()
            next_log += 0.25
        due += interval
        if due > now:
            time.sleep(due - now)
    for handle in logs.values():
        handle.close()
    journal.append("run_finished", status="finished", head=None, notes=[])
    journal.close()


# ---------------------------------------------------------------------------- the UI side


def screen_changed(app: Any) -> bool:
    """Whether anything on the screen waits to be repainted (Textual's own dirty flags, set
    synchronously by ``refresh``; the paint that clears them comes later on the event loop)."""
    screen = app.screen
    if screen._dirty_widgets or screen._layout_required or screen._repaint_required:
        return True
    return any(
        w._repaint_required or w._layout_required for w in screen.walk_children(with_self=False)
    )


def ui(repo: Path, run_id: str, seconds: float, out: Path, warmup: float) -> None:
    """Run ``stretto live`` here (in the terminal tmux gives it) and time each record drawn."""
    from stretto import api
    from stretto.frontends.live import LiveApp

    latencies: list[float] = []
    window: dict[str, float] = {}

    def cpu() -> float:
        use = resource.getrusage(resource.RUSAGE_SELF)
        return use.ru_utime + use.ru_stime

    pending: list[Any] = []
    unchanged: list[float] = []

    def probe(records: list[Any]) -> None:  # the widgets took them in
        if time.time() - STARTED < warmup:
            return
        if screen_changed(app):  # the next paint written to the terminal shows them
            pending.extend(records)
        else:  # nothing on the screen changes: it shows them already
            now = time.time()
            unchanged.extend(now - r.ts for r in records)

    app = LiveApp(api.open_run(repo, run_id), probe=probe)
    display = app._display

    def painted(screen: Any, renderable: Any) -> None:
        display(screen, renderable)  # the update written to the terminal
        if pending and renderable is not None:
            now = time.time()
            if not window:
                window.update(wall=time.monotonic(), cpu=cpu())
            latencies.extend(now - r.ts for r in pending)
            pending.clear()

    app._display = painted  # type: ignore[method-assign]

    def done() -> None:
        window["wall"] = time.monotonic() - window.get("wall", time.monotonic())
        window["cpu"] = cpu() - window.get("cpu", cpu())
        app.exit()

    app.call_later(lambda: app.set_timer(seconds, done))
    app.run(headless=os.environ.get("BENCH_HEADLESS") == "1")
    out.write_text(json.dumps({"latencies": latencies, "unchanged": unchanged, **window}))


def attach(repo: Path, run_id: str) -> None:
    """Open ``stretto live`` on a finished run; print the seconds until its table was drawn."""
    from stretto import api
    from stretto.frontends.live import LiveApp

    app = LiveApp(api.open_run(repo, run_id))
    shown: list[float] = []

    def drawn() -> None:
        shown.append(time.time() - STARTED)
        app.exit()

    app.call_later(lambda: app.call_after_refresh(drawn))
    app.run(headless=True)
    rows = len(app.shown)
    print(json.dumps({"seconds": shown[0], "rows": rows}))


# ---------------------------------------------------------------------------- orchestration


def follower(run_dir: Path, out: list[float], warmup_until: float) -> None:
    from stretto.engine.events import follow

    for record in follow(run_dir, 0, follow=True, timeout=600):
        now = time.time()
        if now >= warmup_until:
            out.append(now - record.ts)


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def live_load(root: Path, seconds: float) -> dict[str, Any]:
    repo = make_repo(root / "load", {"README.md": "# b\n"})
    run_id = "20260101-000000-000-load"
    run_dir = repo / ".stretto" / "runs" / run_id
    env = child_env()
    writer = subprocess.Popen(
        [PYTHON, __file__, "--write", str(run_dir), "--seconds", str(seconds + 6)], env=env
    )
    deadline = time.monotonic() + 10
    while not (run_dir / "journal.jsonl").exists():
        assert time.monotonic() < deadline, "the writer did not start"
        time.sleep(0.02)
    base: list[float] = []
    warmup = 3.0
    thread = threading.Thread(
        target=follower, args=(run_dir, base, time.time() + warmup), daemon=True
    )
    thread.start()
    out = root / "ui.json"
    socket = f"bench-live-{os.getpid()}"
    command = (
        f"{PYTHON} {__file__} --ui {repo} {run_id} --seconds {seconds + warmup} "
        f"--warmup {warmup} --out {out}"
    )
    subprocess.run(
        ["tmux", "-L", socket, "new-session", "-d", "-x", "160", "-y", "48", command],
        env={**env, "TERM": "xterm-256color"}, check=True,
    )  # fmt: skip
    deadline = time.monotonic() + seconds + 60
    while not out.exists():
        assert time.monotonic() < deadline, "the UI did not finish"
        time.sleep(0.2)
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
    writer.wait(timeout=60)
    thread.join(timeout=30)
    got = json.loads(out.read_text())
    return {
        "ui": got["latencies"], "unchanged": got["unchanged"], "cpu": got["cpu"],
        "wall": got["wall"], "follow": base,
    }  # fmt: skip


def big_run(root: Path, records: int, tasks_n: int) -> tuple[Path, str]:
    repo = make_repo(root / "big", {"README.md": "# b\n"})
    run_id = "20260101-000000-000-big"
    run_dir = repo / ".stretto" / "runs" / run_id
    tasks = [f"task-{i:04d}" for i in range(tasks_n)]
    journal = Journal.create(run_dir)
    (run_dir / "plan.yaml").write_text(plan_text(tasks))
    started_record(journal, tasks)
    per_task = (records - 2) // tasks_n
    for i, task in enumerate(tasks):
        attempt(journal, task, 1)
        for k in range(per_task - 5):
            journal.append("warning", task=task, message=f"note {k}")
        journal.append("attempt_finished", task=task, attempt=1, outcome="success",
                       duration=30.0, usage={"input": 9000, "output": 800}, cost_usd=0.01,
                       reason="")  # fmt: skip
        journal.append("gate_result", task=task, stage="attempt", gate="tests", passed=True,
                       summary="ok", duration=1.0)  # fmt: skip
        journal.append("verified", task=task)
        status = "failed" if i % 50 == 7 else "landed"
        journal.append("task_finished", task=task, status=status, attempts=1,
                       reason="gave up" if status == "failed" else "",
                       commit=None if status == "failed" else f"{i:040x}")  # fmt: skip
    while journal.last_seq < records - 1:
        journal.append("warning", message="pad")
    journal.append("run_finished", status="failed", head=None, notes=[])
    journal.close()
    return repo, run_id


def attach_figures(repo: Path, run_id: str, rounds: int) -> dict[str, list[float]]:
    env = child_env()
    out: dict[str, list[float]] = {
        "live": [], "live_wall": [], "status": [], "live_cpu": [], "status_cpu": [],
    }  # fmt: skip

    def children_cpu() -> float:
        use = resource.getrusage(resource.RUSAGE_CHILDREN)
        return use.ru_utime + use.ru_stime

    for round_ in range(rounds + 1):
        order = ["live", "status"] if round_ % 2 == 0 else ["status", "live"]
        for name in order:
            cpu = children_cpu()
            start = time.perf_counter()
            if name == "live":
                done = subprocess.run(
                    [PYTHON, __file__, "--attach", str(repo), run_id],
                    capture_output=True, text=True, env=env, check=True,
                )  # fmt: skip
                wall = time.perf_counter() - start
                shown = json.loads(done.stdout.strip().splitlines()[-1])
                if round_:
                    out["live"].append(shown["seconds"])
                    out["live_wall"].append(wall)
                    out["live_cpu"].append(children_cpu() - cpu)
            else:
                subprocess.run(
                    [STRETTO, "status", run_id], cwd=repo, capture_output=True, env=env,
                    check=True,
                )  # fmt: skip
                if round_:
                    out["status"].append(time.perf_counter() - start)
                    out["status_cpu"].append(children_cpu() - cpu)
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", type=Path)
    parser.add_argument("--ui", nargs=2)
    parser.add_argument("--attach", nargs=2)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--attach-only", action="store_true", help="Only figure 2.")
    args = parser.parse_args()
    if args.write:
        write(args.write, args.seconds, RATE)
        return 0
    if args.ui:
        ui(Path(args.ui[0]), args.ui[1], args.seconds, args.out, args.warmup)
        return 0
    if args.attach:
        attach(Path(args.attach[0]), args.attach[1])
        return 0
    if not shutil.which("tmux"):
        print("tmux is needed (scripts/install-system installs it)", file=sys.stderr)
        return 2
    seconds = 10.0 if args.quick else 30.0
    rounds = 3 if args.quick else 7
    print(machine())
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        root = Path(tmp)
        load: dict[str, Any] = {}
        if not args.attach_only:
            load = live_load(root, seconds)
        repo, run_id = big_run(root, 100_000, 2_000)
        attach_t = attach_figures(repo, run_id, rounds)
    ok = []
    if not args.attach_only:
        ok += report_load(load, seconds)
    ok += report_attach(attach_t, rounds)
    if args.json:
        print(json.dumps({"load": load, "attach": attach_t}))
    return 0 if all(ok) else 1


def report_load(load: dict[str, Any], seconds: float) -> list[bool]:
    painted, unchanged, base = load["ui"], load["unchanged"], load["follow"]
    every = painted + unchanged
    cpu_share = load["cpu"] / load["wall"] if load["wall"] else float("nan")
    print(f"\n1. {AGENTS} agents, {RATE:.0f} records/s for {seconds:.0f} s "
          f"({len(every)} records taken in after the warm-up)")  # fmt: skip
    rows = (
        ("live: every record", every),
        ("live: records that change the screen (painted)", painted),
        ("live: records that change nothing (taken in)", unchanged),
        ("events(follow=True)", base),
    )
    print(table(
        ["reader", "records", "p50", "p95", "p99", "max"],
        [[name, len(v), *(f"{p(v, q) * 1000:.1f} ms" for q in (0.5, 0.95, 0.99, 1.0))]
         for name, v in rows if v],
    ))  # fmt: skip
    print(
        f"UI CPU: {load['cpu']:.2f} s over {load['wall']:.1f} s = {cpu_share * 100:.1f}% of a core"
    )
    return [
        target("record to screen p95", 100, p(every, 0.95)),
        target("record to screen p95, records that change it", 100, p(painted, 0.95)),
        target("UI CPU share of a core", 25, cpu_share, unit="%", scale=100),
    ]


def report_attach(attach_t: dict[str, list[float]], rounds: int) -> list[bool]:
    lo, hi = quartiles(attach_t["live"])
    print(f"\n2. attach to a finished run of 100,000 records (2,000 tasks), {rounds} rounds")
    print(table(
        ["command", "median", "quartiles"],
        [["stretto live: table drawn", f"{median(attach_t['live']):.3f} s", f"{lo:.3f}-{hi:.3f} s"],
         ["stretto live: process wall (incl. exit)", f"{median(attach_t['live_wall']):.3f} s", ""],
         ["stretto status", f"{median(attach_t['status']):.3f} s", ""],
         ["CPU: stretto live (to its exit)", f"{median(attach_t['live_cpu']):.3f} s", ""],
         ["CPU: stretto status", f"{median(attach_t['status_cpu']):.3f} s", ""]],
    ))  # fmt: skip
    return [target("attach to 100k records", 1.5, median(attach_t["live"]), unit="s", scale=1)]


if __name__ == "__main__":
    sys.exit(main())
