"""Test helpers for runs on a loopback Dask cluster (tests/test_cluster*.py).

One loopback cluster for the module: a plain ``dask scheduler`` and separate ``dask worker``
processes, each with its own directory, started under bubblewrap with the folder holding every
test repository masked by an empty tmpfs, so the workers can get the code only through the
bundles stretto sends (checked below). Everything is real: ``python -m stretto`` in
subprocesses, shell agents, SIGKILL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stretto.api.cluster import LocalCluster, start_local_cluster
from stretto.engine.journal import Record, read_journal
from stretto.testing.repo import git, make_repo

WORKER_CRED = "worker-own-credential-7f3a"
CLIENT_CRED = "client-secret-never-sent-91c2"

PLAN = """\
name: three
stages:
  - name: work
    steps:
      - {id: alpha, goal: write alpha, files: [alpha.txt], command: "echo alpha > alpha.txt"}
      - {id: beta, goal: write beta, files: [beta.txt], command: "echo beta > beta.txt"}
  - name: more
    steps:
      - id: gamma
        goal: extend alpha
        files: [alpha.txt]
        command: "echo gamma >> alpha.txt"
        gates: ["grep -q gamma alpha.txt"]
"""

FILES = {"README.md": "cluster test\n", "src/app.py": "print('hi')\n", "plan.yaml": PLAN}


def _bwrap_prefix(hidden: Path) -> list[str]:
    return ["bwrap", "--bind", "/", "/", "--dev-bind", "/dev", "/dev", "--tmpfs", str(hidden), "--"]


def running_cluster(
    tmp_path_factory: pytest.TempPathFactory, repos: Path
) -> Iterator[LocalCluster]:
    """For a module fixture: 2 workers x 2 slots, ``repos`` hidden from them."""
    if shutil.which("bwrap") is None:
        pytest.fail("bubblewrap is needed to hide the repositories from the workers")
    env = {**os.environ, "STRETTO_TEST_CRED": WORKER_CRED}
    old = dict(os.environ)
    os.environ.update(env)  # the workers' own environment (their "credentials")
    try:
        running = start_local_cluster(
            2,
            2,
            directory=tmp_path_factory.mktemp("cluster"),
            worker_prefix=_bwrap_prefix(repos),
        )
    finally:
        os.environ.clear()
        os.environ.update(old)
    yield running
    running.stop(grace=3)


def _repo(repos: Path, name: str, files: dict[str, str] | None = None) -> Path:
    repo = make_repo(repos / name, files or FILES)
    (repo / "stretto.toml").write_text('env = ["STRETTO_TEST_CRED"]\n')
    git(repo, "add", "stretto.toml")
    git(repo, "commit", "-q", "-m", "config")
    return repo


def _stretto(repo: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "STRETTO_TEST_CRED": CLIENT_CRED}
    return subprocess.run(
        [sys.executable, "-m", "stretto", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _journal(repo: Path) -> list[Record]:
    (run_dir,) = (repo / ".stretto" / "runs").iterdir()
    return read_journal(run_dir / "journal.jsonl")


def _wait_for(repo: Path, kind: str, timeout: float = 40) -> Record:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = repo / ".stretto" / "runs"
        # the run's directory exists a moment before its journal does
        if runs.is_dir() and any((run / "journal.jsonl").exists() for run in runs.iterdir()):
            found = [r for r in _journal(repo) if r.type == kind]
            if found:
                return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {kind} record within {timeout}s")


def _merges(repo: Path, task: str) -> int:
    log = git(repo, "log", "--format=%B%x00", "main")
    return sum(1 for body in log.split("\0") if f"Stretto-Task: {task}" in body)


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every test repository lives in (hidden from the workers)."""
    return tmp_path_factory.mktemp("repos")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, repos: Path) -> Iterator[LocalCluster]:
    """A module's loopback cluster (see :func:`running_cluster`)."""
    yield from running_cluster(tmp_path_factory, repos)


def _engine(repo: Path, address: str, **popen: Any) -> subprocess.Popen[Any]:
    """``stretto run --plain --cluster ADDRESS plan.yaml`` in ``repo``, in the background."""
    command = [sys.executable, "-m", "stretto", "run", "--plain", "--cluster", address, "plan.yaml"]
    return subprocess.Popen(command, cwd=repo, **popen)
