"""Two versions of stretto side by side: time to the first agent, and a 2,000-step dry run.

This machine is shared and its speed drifts by tens of percent within an hour, so a figure
measured today cannot be compared with one from this morning. This script runs the working
tree's code and another commit's (checked out into a temporary worktree) alternately, in one
process, and prints the medians and their ratio: a slower machine slows both alike.

    .venv/bin/python benchmarks/bench_versions.py REF [--rounds 12]

REF is any commit, e.g. ``HEAD~3``. Both versions run with this checkout's virtualenv, as
``python -m stretto`` with ``PYTHONPATH`` pointing at their ``src``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import PYTHON, child_env, machine, median, table
from bench_dryrun import make_plan
from bench_run import first_agent_plan, new_repo

ROOT = Path(__file__).resolve().parents[1]


def first_agent(src: Path, work: Path, tag: str) -> float:
    """Seconds from launching ``stretto run`` to its one shell agent writing a timestamp."""
    stamp, plan = work / "stamp", work / "first.yaml"
    if not plan.exists():
        plan.write_text(first_agent_plan(stamp))
    repo = new_repo(work, tag)
    start = time.time()
    run(src, ["run", str(plan), "--plain"], repo)
    return float(stamp.read_text()) - start


def dry_run(src: Path, plan: Path) -> float:
    start = time.perf_counter()
    run(src, ["run", "--dry-run", str(plan)], plan.parent)
    return time.perf_counter() - start


def run(src: Path, args: list[str], cwd: Path) -> None:
    env = dict(child_env(), PYTHONPATH=str(src))
    subprocess.run(
        [PYTHON, "-m", "stretto", *args], cwd=cwd, env=env, capture_output=True, check=True
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("ref", help="the other version: a commit, branch or tag")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        work, other = Path(tmp), Path(tmp) / "other"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(other), args.ref], cwd=ROOT, check=True
        )
        try:
            text, _count = make_plan()
            plan = work / "dry" / "plan.yaml"
            plan.parent.mkdir()
            plan.write_text(text)
            versions = {args.ref: other / "src", "working tree": ROOT / "src"}
            times: dict[tuple[str, str], list[float]] = {}
            for r in range(args.rounds):
                order = list(versions.items()) if r % 2 == 0 else list(versions.items())[::-1]
                for name, src in order:
                    tag = f"{'a' if src == ROOT / 'src' else 'b'}{r}"
                    times.setdefault(("first agent", name), []).append(first_agent(src, work, tag))
                    times.setdefault(("dry run, 2,000 steps", name), []).append(dry_run(src, plan))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False
            )
    rows = []
    for figure in ("first agent", "dry run, 2,000 steps"):
        old, new = (median(times[(figure, name)]) for name in versions)
        rows.append([figure, f"{old * 1000:.0f}", f"{new * 1000:.0f}", f"{new / old:.2f}"])
    print(f"\nmedians of {args.rounds} alternating rounds, ms (python -m stretto)")
    print(table(["figure", args.ref, "working tree", "ratio"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
