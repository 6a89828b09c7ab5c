"""Runs on a Dask cluster: attempts on workers, the merge queue here.

One loopback cluster for the module: a plain ``dask scheduler`` and separate ``dask worker``
processes, each with its own directory, started under bubblewrap with the folder holding every
test repository masked by an empty tmpfs, so the workers can get the code only through the
bundles stretto sends (checked below). Everything is real: ``python -m stretto`` in
subprocesses, shell agents, SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stretto.api.cluster import LocalCluster, start_local_cluster, start_worker, worker_pids
from stretto.engine.journal import Record, read_journal
from stretto.process import processes_with_token
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


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder every test repository lives in (hidden from the workers)."""
    return tmp_path_factory.mktemp("repos")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, repos: Path) -> Iterator[LocalCluster]:
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
    running.stop()


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
        if runs.is_dir() and any(runs.iterdir()):
            found = [r for r in _journal(repo) if r.type == kind]
            if found:
                return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no {kind} record within {timeout}s")


def _merges(repo: Path, task: str) -> int:
    log = git(repo, "log", "--format=%B%x00", "main")
    return sum(1 for body in log.split("\0") if f"Stretto-Task: {task}" in body)


def test_workers_cannot_see_the_repositories(cluster: LocalCluster, repos: Path) -> None:
    _repo(repos, "visible")
    from distributed import Client

    with Client(cluster.address, timeout=10, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        seen = client.run(os.listdir, str(repos))
    assert len(seen) == 2 and all(listing == [] for listing in seen.values())
    assert os.listdir(repos)  # while here the repository is there


def test_plan_lands_as_it_does_locally(cluster: LocalCluster, repos: Path) -> None:
    here, there = _repo(repos, "local"), _repo(repos, "remote")
    ran_here = _stretto(here, "run", "--plain", "plan.yaml")
    assert ran_here.returncode == 0, ran_here.stdout + ran_here.stderr
    ran_there = _stretto(there, "run", "--plain", "--cluster", cluster.address, "plan.yaml")
    assert ran_there.returncode == 0, ran_there.stdout + ran_there.stderr
    tree = "main^{tree}"
    assert git(here, "rev-parse", tree) == git(there, "rev-parse", tree)
    records = _journal(there)
    started = [r for r in records if r.type == "attempt_started"]
    workers = set(pids := worker_pids(cluster.address))
    assert len(started) == 3 and {r.fields["worker"] for r in started} <= workers
    assert all(r.fields["pid"] for r in started) and pids
    gates = [r for r in records if r.type == "gate_result" and r.fields["gate"] == "step-1"]
    assert gates and gates[0].fields["passed"] and Path(str(gates[0].fields["log"])).is_file()
    for task in ("alpha", "beta", "gamma"):
        assert _merges(there, task) == 1
    assert not git(there, "branch", "--list", "stretto/*").strip()  # fetched, landed, deleted
    status = _stretto(there, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert any(w in status.stdout for w in workers), status.stdout


def test_workers_use_their_own_credentials(cluster: LocalCluster, repos: Path) -> None:
    plan = """\
stages:
  - name: work
    steps:
      - {id: cred, goal: x, files: [cred.txt], command: "echo $STRETTO_TEST_CRED > cred.txt"}
"""
    repo = _repo(repos, "cred", {"README.md": "x\n", "plan.yaml": plan})
    ran = _stretto(repo, "run", "--plain", "--cluster", cluster.address, "plan.yaml")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert git(repo, "show", "main:cred.txt").strip() == WORKER_CRED
    kept = [p for p in (repo / ".stretto").rglob("*") if p.is_file()]
    assert not any(CLIENT_CRED.encode() in p.read_bytes() for p in kept)
    for home in cluster.directory.rglob("*"):
        if home.is_file():
            assert CLIENT_CRED.encode() not in home.read_bytes(), home


def test_worker_without_the_agents_cli_is_named(cluster: LocalCluster, repos: Path) -> None:
    plan = """\
stages:
  - name: work
    steps:
      - {id: lonely, goal: x, files: [x.txt], agent: ghost, max_attempts: 1}
"""
    repo = _repo(repos, "nocli", {"README.md": "x\n", "plan.yaml": plan})
    (repo / "stretto.toml").write_text(
        '[agents.ghost]\nadapter = "command"\ncommand = ["ghost-agent-cli", "{prompt}"]\n'
    )
    git(repo, "commit", "-q", "-am", "ghost agent")
    ran = _stretto(repo, "run", "--plain", "--cluster", cluster.address, "plan.yaml")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "has no `ghost-agent-cli` on its PATH" in ran.stdout
    assert "tcp://127.0.0.1:" in ran.stdout
    unfit = [r for r in _journal(repo) if r.type == "worker_unfit"]
    assert unfit and str(unfit[0].fields["worker"]).startswith("tcp://")


def test_local_run_imports_no_dask(repos: Path) -> None:
    repo = _repo(repos, "nodask")
    ran = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stretto", "run", "--plain", "plan.yaml"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in ran.stderr.splitlines() if "|" in line}
    assert "stretto.engine.runner" in imported  # the run did import the engine
    assert not {m for m in imported if m.split(".")[0] in ("dask", "distributed")}


def test_orchestrator_killed_and_resumed(cluster: LocalCluster, repos: Path) -> None:
    plan = PLAN.replace(
        'command: "echo alpha > alpha.txt"', 'command: "sleep 3; echo alpha > alpha.txt"'
    )
    repo = _repo(repos, "resumed", {**FILES, "plan.yaml": plan})
    engine = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stretto",
            "run",
            "--plain",
            "--cluster",
            cluster.address,
            "plan.yaml",
        ],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(repo, "attempt_started")
        engine.send_signal(signal.SIGKILL)
    finally:
        engine.wait()
    run_id = next(r for r in _journal(repo) if r.type == "run_started").fields["run_id"]
    resumed = _stretto(repo, "resume", str(run_id))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for task in ("alpha", "beta", "gamma"):
        assert _merges(repo, task) == 1, task
    assert git(repo, "show", "main:alpha.txt").split() == ["alpha", "gamma"]
    deadline = time.monotonic() + 10  # the engine's old attempt is ended on its worker
    while processes_with_token(str(run_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_with_token(str(run_id))


def test_worker_killed_mid_attempt(cluster: LocalCluster, repos: Path) -> None:
    plan = """\
stages:
  - name: work
    steps:
      - id: slow
        goal: x
        files: [slow.txt]
        max_attempts: 1
        command: 'if [ "$STRETTO_ATTEMPT" = 1 ]; then sleep 60; fi; echo done > slow.txt'
"""
    repo = _repo(repos, "killed", {"README.md": "x\n", "plan.yaml": plan})
    pids = worker_pids(cluster.address)
    engine = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stretto",
            "run",
            "--json",
            "--cluster",
            cluster.address,
            "plan.yaml",
        ],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        started = _wait_for(repo, "attempt_started")
        victim = str(started.fields["worker"])
        os.kill(pids[victim], signal.SIGKILL)
        out, err = engine.communicate(timeout=60)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    assert engine.returncode == 0, out[-3000:] + err[-3000:]
    records = _journal(repo)
    lost = [r for r in records if r.type == "attempt_lost"]
    assert [r.fields["worker"] for r in lost] == [victim]
    second = [r for r in records if r.type == "attempt_started"][-1]
    assert second.fields["attempt"] == 2 and second.fields["worker"] != victim
    retry = [r for r in records if r.type == "decision" and r.fields.get("action") == "retry"]
    assert retry and retry[0].fields["counted"] is False  # max_attempts 1, and it still landed
    assert _merges(repo, "slow") == 1
    run_id = str(records[0].fields.get("run_id") or records[1].fields["run_id"])
    assert not processes_with_token(run_id)  # the dead worker's agent was ended at the run's end
    leftovers = [p for p in cluster.directory.rglob("*") if p.name.startswith(f"{run_id}-")]
    assert not leftovers
    # the cluster gets a worker back for what follows
    start_worker(cluster, "worker-2", 2, prefix=_bwrap_prefix(repos))


def test_cluster_address_is_checked(repos: Path) -> None:
    repo = _repo(repos, "badaddr")
    (repo / "stretto.toml").write_text('[cluster]\nscheduler = "build-1:8786"\n')
    ran = _stretto(repo, "run", "plan.yaml")
    assert ran.returncode == 2
    assert "stretto.toml" in ran.stderr and "cluster.scheduler" in ran.stderr
    assert not (repo / ".stretto" / "runs").exists()
    unreachable = _stretto(repo, "clean", "--cluster", "tcp://127.0.0.1:9")
    assert unreachable.returncode != 0 and "cannot reach" in unreachable.stderr
    assert json.loads(_stretto(repo, "clean", "--json").stdout) is not None
