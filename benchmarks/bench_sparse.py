"""Creating an attempt's worktree in a huge repository, full and sparse (``[workspace] sparse``).

Generates a repository of ``--files`` small files (default 20,000: 200 folders of 100), then
times :func:`stretto.engine.workspace.create_workspace` for one attempt whose task owns one folder
(``dir-007/**``) and ``tests`` is configured: a full checkout (``sparse`` off) against a
cone-mode sparse one, and, as the floor, a plain ``git worktree add --detach`` of the same commit
(what git alone costs for a full checkout), interleaved round by round (the order rotates), each
worktree removed, untimed, before the next. Prints the medians, the full/sparse ratio, and the
number of files each worktree holds.

Run: .venv/bin/python benchmarks/bench_sparse.py [--files 20000] [--repeat 9] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, median, quartiles, table
from stretto.engine.workspace import create_workspace, remove_workspace
from stretto.plans.paths import sparse_dirs
from stretto.testing.repo import git

GIT_ONLY = "git worktree add"

PER_FOLDER = 100


def generate(repo: Path, files: int) -> None:
    """A repository of ``files`` small files in folders of 100, plus tests/, committed."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for n in range(files):
        folder = repo / f"dir-{n // PER_FOLDER:03d}"
        folder.mkdir(exist_ok=True)
        (folder / f"file-{n % PER_FOLDER:03d}.txt").write_text(f"line {n}\n" * 20)
    (repo / "tests").mkdir()
    (repo / "tests" / "test_it.py").write_text("def test_it():\n    assert True\n")
    (repo / "pyproject.toml").write_text("[project]\nname = 'huge'\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "huge")


def count_files(path: Path) -> int:
    return sum(len([n for n in names if n != ".git"]) for _, _, names in os.walk(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("GIT_CONFIG_NOSYSTEM", "1")
    cone = sparse_dirs(["dir-007/**", "tests"])
    assert cone == ("dir-007", "tests"), cone
    modes: dict[str, tuple[str, ...] | None] = {"full": None, "sparse": cone, GIT_ONLY: None}
    with tempfile.TemporaryDirectory(prefix="bench-sparse-") as tmp:
        repo = Path(tmp) / "repo"
        started = time.perf_counter()
        generate(repo, args.files)
        built = time.perf_counter() - started
        times: dict[str, list[float]] = {name: [] for name in modes}
        held: dict[str, int] = {}
        attempt = 0
        for round_ in range(args.repeat + 1):  # round 0 warms the caches, untimed
            shift = round_ % len(modes)
            for name in [*modes][shift:] + [*modes][:shift]:
                attempt += 1
                if name == GIT_ONLY:
                    plain = Path(tmp) / f"plain-{attempt}"
                    start = time.perf_counter()
                    git(repo, "worktree", "add", "-q", "--detach", str(plain), "main")
                    elapsed = time.perf_counter() - start
                    held[name] = count_files(plain)
                    git(repo, "worktree", "remove", "--force", str(plain))
                else:
                    start = time.perf_counter()
                    ws = create_workspace(repo, "bench", "t", attempt, "main", sparse=modes[name])
                    elapsed = time.perf_counter() - start
                    held[name] = count_files(ws.path)
                    remove_workspace(repo, ws, delete_branch=True, expected_sha=ws.base)
                if round_:
                    times[name].append(elapsed)
    full, sparse = median(times["full"]), median(times["sparse"])
    result = {
        "files": args.files,
        "repeat": args.repeat,
        "full_ms": round(full * 1000, 1),
        "sparse_ms": round(sparse * 1000, 1),
        "git_worktree_add_ms": round(median(times[GIT_ONLY]) * 1000, 1),
        "ratio": round(full / sparse, 2),
        "files_full": held["full"],
        "files_sparse": held["sparse"],
        "generate_s": round(built, 1),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(machine())
    print(f"repository: {args.files:,} files in {args.files // PER_FOLDER} folders ({built:.1f} s)")
    rows = []
    for name in modes:
        q1, q3 = quartiles(times[name])
        spread = f"{q1 * 1000:.0f}-{q3 * 1000:.0f} ms"
        rows.append([name, f"{median(times[name]) * 1000:.0f} ms", spread, f"{held[name]:,}"])
    print(table(["worktree", "median", "quartiles", "files checked out"], rows))
    print(f"median ratio full / sparse: {full / sparse:.1f}x over {args.repeat} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
