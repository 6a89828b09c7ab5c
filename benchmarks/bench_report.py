"""Figures of ``stretto report``: the time to write the HTML report of a 200-task run.

1. A real run (untimed set-up): a 200-step plan of shell steps in 4 stages of 50 (each stage
   waits for the one before it; each step owns its own file), one step in 20 failing its gate
   once before it lands, run with 8 agents through the API. Its journal is what the report reads.
2. ``stretto report RUN -o FILE`` as a fresh process, interleaved with ``stretto status --json
   RUN`` (the same journal folded and printed) and ``python -c pass``: medians and the ratio of
   report to status.
3. In one process: ``api.run_report`` (the journal folded into the report's data) and
   ``render_report`` (the page), next to ``RunHandle.status()``; and the page's size.

Run: .venv/bin/python benchmarks/bench_report.py [--tasks 200] [--repeat 11] [--keep DIR]
(``--reuse DIR`` times a run kept before, e.g. to compare two versions of stretto on it.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import (
    CPU_TIMES,
    PYTHON,
    STRETTO,
    machine,
    median,
    quartiles,
    table,
    target,
    time_calls,
    time_commands,
)
from stretto import api
from stretto.testing.repo import make_repo

STAGES = 4
AGENTS = 8


def plan_text(tasks: int, flag_dir: Path) -> str:
    """``tasks`` shell steps in STAGES stages; every 20th fails its gate on its first attempt."""
    lines = ["name: bench-report", "stages:"]
    per = max(1, tasks // STAGES)
    for stage in range(STAGES):
        lines.append(f"  - name: stage-{stage}")
        if stage:
            lines.append(f"    depends_on: [stage-{stage - 1}]")
        lines.append("    steps:")
        count = per if stage < STAGES - 1 else tasks - per * (STAGES - 1)
        for index in range(count):
            name = f"s{stage}-t{index:03d}"
            lines.append(f"      - id: {name}")
            lines.append(f"        goal: write {name}")
            lines.append(f"        files: [out/{name}.txt]")
            lines.append(f"        command: 'mkdir -p out && echo {name} > out/{name}.txt'")
            if index % 20 == 7:
                flag = flag_dir / name
                lines.append(f"        gates: ['test -f {flag} || {{ touch {flag}; exit 1; }}']")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--keep", type=Path, help="Build the run here and keep it.")
    parser.add_argument(
        "--reuse", type=Path, help="Time the run a --keep DIR holds (no new set-up)."
    )
    args = parser.parse_args()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    print(machine())
    base = args.reuse or args.keep or Path(tempfile.mkdtemp(prefix="stretto-bench-report-"))
    if args.reuse is not None:
        return measure(api.open_run(base / "repo"), base, args)
    try:
        flags = base / "flags"
        flags.mkdir(parents=True, exist_ok=True)
        repo = make_repo(
            base / "repo", {"README.md": "# bench\n", "stretto.toml": 'target = "main"\n'}
        )
        plan = base / "plan.yaml"
        plan.write_text(plan_text(args.tasks, flags))
        print(f"set-up: a real run of {args.tasks} shell steps with {AGENTS} agents ...")
        started = time.perf_counter()
        handle = api.start_run(repo, plan, api.RunOptions(max_agents=AGENTS))
        status = handle.status()
        print(
            f"  {status.state} in {time.perf_counter() - started:.1f}s: {status.counts()}, "
            f"{len(handle.records())} journal records"
        )
        return measure(handle, base, args)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


def measure(handle: api.RunHandle, base: Path, args: argparse.Namespace) -> int:
    """Time ``stretto report`` of the run against ``stretto status --json``."""
    repo, rid = handle.repo, handle.run_id
    out = base / "report.html"
    times = time_commands(
        {
            "python -c pass": [PYTHON, "-c", "pass"],
            "stretto status --json RUN": [STRETTO, "status", "--json", rid],
            "stretto report RUN -o FILE": [STRETTO, "report", rid, "-o", str(out)],
        },
        args.repeat,
        cwd=repo,
    )
    rows = []
    status_med = median(times["stretto status --json RUN"])
    for name, values in times.items():
        q1, q3 = quartiles(values)
        rows.append(
            [
                name,
                f"{median(values) * 1000:.0f} ms",
                f"{q1 * 1000:.0f}-{q3 * 1000:.0f} ms",
                f"{median(CPU_TIMES[name]) * 1000:.0f} ms",
                f"{median(values) / status_med:.2f}x",
            ]
        )
    print(f"\nfresh processes, {args.repeat} runs each, interleaved")
    print(table(["command", "median", "quartiles", "CPU", "ratio to status"], rows))

    from stretto.frontends.report_html import render_report

    data = api.run_report(handle)
    calls = time_calls(
        {
            "handle.status()": handle.status,
            "api.run_report(handle)": lambda: api.run_report(handle),
            "render_report(data)": lambda: render_report(data),
        },
        args.repeat,
    )
    print(f"\nin one process, {args.repeat} calls each")
    print(
        table(
            ["call", "median", "CPU"],
            [
                [n, f"{median(v) * 1000:.1f} ms", f"{median(CPU_TIMES[n]) * 1000:.1f} ms"]
                for n, v in calls.items()
            ],
        )
    )
    size = out.stat().st_size
    print(
        f"\npage: {size / 1024:.0f} KiB for {len(data.attempts)} attempts, {len(data.tasks)} tasks"
    )
    report_med = median(times["stretto report RUN -o FILE"])
    print(f"ratio report / status --json: {report_med / status_med:.2f}")
    ok = target(f"report of a {len(data.tasks)}-task run", 1000, report_med)
    ok &= target("report page size", 2048, size / 1024, unit="KiB", scale=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
