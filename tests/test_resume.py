"""Crash safety: kill stretto with SIGKILL at named points, resume, and check the guarantees.

After every resume, the checks of ``tests/_invariants.py`` (shared with the fault suite in
``tests/faults/``): every task landed once, the target only moved forward to this run's merge
commits, nothing left behind (process, worktree, branch, lock), the journal folds and says the
run finished, ``git fsck`` is clean and the user's checkout matches the target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _invariants import check_invariants, only_run
from stretto.engine.journal import read_journal
from stretto.testing.repo import make_repo

PLAN = """\
name: crashy
max_agents: 2
stages:
  - name: build
    steps:
      - {id: a, goal: A, files: [a.txt], command: "sleep 0.3; echo a > a.txt"}
      - {id: b, goal: B, files: [b.txt], command: "sleep 0.6; echo b > b.txt"}
      - {id: c, goal: C, files: [c.txt], command: "sleep 0.3; echo c > c.txt"}
  - name: finish
    depends_on: [build]
    steps:
      - {id: d, goal: D, files: [d.txt], command: "cat a.txt b.txt c.txt > d.txt"}
"""

CONFIG = """\
target = "main"
[gates]
present = "test -n \\"$(ls *.txt)\\""
"""

TASKS = {"a", "b", "c", "d"}


def stretto(repo: Path, *args: str, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STRETTO_CRASHPOINT"}
    if crash:
        env["STRETTO_CRASHPOINT"] = crash
    return subprocess.run(
        [sys.executable, "-m", "stretto", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo", {"README.md": "hi\n", "stretto.toml": CONFIG})
    (tmp_path / "plan.yaml").write_text(PLAN)
    return repo


def check(repo: Path) -> None:
    check_invariants(repo, only_run(repo), tasks=TASKS)
    assert (repo / "d.txt").read_text() == "a\nb\nc\n"


def test_crash_free_run_lands_everything(repo: Path) -> None:
    result = stretto(repo, "run", "../plan.yaml", "--plain")
    assert result.returncode == 0, result.stdout + result.stderr
    check(repo)


CRASH_POINTS = [
    "after-intent:workspace",  # during spawn: before the worktree exists
    "after-intent:spawn",  # during spawn: worktree made, agent not started
    "after-spawn",  # while agents run (they outlive stretto: resume must end them)
    "after-spawn@3",
    "after-agent",  # agent done, work not committed yet
    "after-intent:gates-attempt",  # during gates
    "after-verified",  # verified, not merged
    "after-intent:merge",
    "after-merge",  # merge commit made, target not advanced
    "after-intent:gates-merge",
    "after-intent:advance",  # between merge and ref update
    "after-intent:advance@3",
    "after-advance",  # ref moved, nothing recorded after
    "journal-write-torn@7",
    "journal-write-torn@40",
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_resume_after_crash(repo: Path, point: str) -> None:
    crashed = stretto(repo, "run", "../plan.yaml", "--plain", crash=point)
    assert crashed.returncode == -9, (point, crashed.returncode, crashed.stdout, crashed.stderr)
    run = only_run(repo)
    status = stretto(repo, "status", "--json")
    assert json.loads(status.stdout)["state"] == "interrupted"
    resumed = stretto(repo, "resume", "--plain")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check(repo)
    records = read_journal(repo / ".stretto" / "runs" / run / "journal.jsonl")
    assert any(r.type == "journal_reopened" for r in records)


def test_double_fault_crash_during_resume(repo: Path) -> None:
    crashed = stretto(repo, "run", "../plan.yaml", "--plain", crash="after-spawn@2")
    assert crashed.returncode == -9
    again = stretto(repo, "resume", "--plain", crash="after-intent:advance")
    assert again.returncode == -9, again.stdout + again.stderr
    resumed = stretto(repo, "resume", "--plain")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check(repo)


def test_resume_refuses_while_the_run_is_live(repo: Path, tmp_path: Path) -> None:
    slow = PLAN.replace("sleep 0.3; echo a", "sleep 5; echo a")
    (tmp_path / "plan.yaml").write_text(slow)
    with subprocess.Popen(
        [sys.executable, "-m", "stretto", "run", "../plan.yaml", "--plain"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "start" in line:
                break
        second = stretto(repo, "resume", "--plain")
        assert second.returncode == 1, second.stdout + second.stderr
        assert "already being driven by another stretto process" in second.stderr
        proc.stdout.read()
        assert proc.wait(timeout=60) == 0
