"""Runs on a Dask cluster: attempts on workers, the merge queue here.

A loopback cluster for the module (tests/_cluster.py): a plain ``dask scheduler`` and separate
``dask worker`` processes, each with its own directory, under bubblewrap with the folder of
every test repository masked by an empty tmpfs, so workers get code only through bundles.
Faults (killed workers, engine, scheduler) are in test_cluster_faults.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _cluster import (
    CLIENT_CRED,
    WORKER_CRED,
    _engine,
    _journal,
    _merges,
    _repo,
    _stretto,
    _wait_for,
    cluster,
    repos,
)
from stretto.api.cluster import LocalCluster, worker_pids
from stretto.process import processes_with_token
from stretto.testing.repo import git

__all__ = ["cluster", "repos"]  # the module fixtures of tests/_cluster.py


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


def test_agent_output_streams_back_while_it_runs(cluster: LocalCluster, repos: Path) -> None:
    plan = """\
stages:
  - name: work
    steps:
      - {id: talk, goal: x, files: [t.txt], command: "echo streamed-early; sleep 6; echo x > t.txt"}
"""
    repo = _repo(repos, "stream", {"README.md": "x\n", "plan.yaml": plan})
    engine = _engine(repo, cluster.address, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        started = _wait_for(repo, "attempt_started")
        (run_dir,) = (repo / ".stretto" / "runs").iterdir()
        log = run_dir / "tasks" / "talk" / "1" / "agent.log"
        deadline = started.ts + 4  # the agent sleeps 6 s after the line
        while time.time() < deadline:
            if log.is_file() and b"streamed-early" in log.read_bytes():
                break
            time.sleep(0.05)
        seen = time.time()
        assert log.is_file() and b"streamed-early" in log.read_bytes()
        assert not [r for r in _journal(repo) if r.type == "attempt_finished"]
        assert seen - started.ts < 4
        assert engine.wait(timeout=40) == 0
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()


def test_attempt_limits_stop_an_agent_on_a_worker(cluster: LocalCluster, repos: Path) -> None:
    """``[attempt] max_tokens``: judged here on the streamed output; the worker ends the agent."""
    loop = (
        "while true; do "
        'echo \'STRETTO_EVENT {"kind": "usage", "input_tokens": 1000, "output_tokens": 100}\'; '
        "sleep 0.05; done"
    )
    plan = (
        "stages:\n  - name: s\n    steps:\n      - id: a\n        goal: g\n"
        "        files: [a.txt]\n        max_attempts: 1\n        command: |\n"
        f"          {loop}\n"
    )
    repo = _repo(repos, "limits", {"README.md": "x\n", "plan.yaml": plan})
    (repo / "stretto.toml").write_text("[attempt]\nmax_tokens = 5000\ntimeout = 60\n")
    git(repo, "commit", "-q", "-am", "limits")
    started = time.monotonic()
    ran = _stretto(repo, "run", "--plain", "--cluster", cluster.address, "plan.yaml")
    assert time.monotonic() - started < 40, ran.stdout
    assert ran.returncode == 1, ran.stdout + ran.stderr
    (finished,) = [r.fields for r in _journal(repo) if r.type == "attempt_finished"]
    assert finished["outcome"] == "over_limit"
    assert "over the limit of 5,000 ([attempt] max_tokens)" in str(finished["reason"])
    run_id = str(next(r for r in _journal(repo) if r.type == "run_started").fields["run_id"])
    deadline = time.monotonic() + 10  # the worker ended the loop
    while processes_with_token(run_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_with_token(run_id)


def test_a_cancelled_remote_attempt_is_booked(cluster: LocalCluster, repos: Path) -> None:
    """`stretto cancel --task` ends the agent on its worker; what it used is in the ledger."""
    usage = 'echo \'STRETTO_EVENT {"kind": "usage", "input_tokens": 1000, "output_tokens": 100}\''
    plan = (
        "stages:\n  - name: s\n    steps:\n      - id: a\n        goal: g\n"
        f"        files: [a.txt]\n        command: |\n          {usage}; sleep 60\n"
    )
    repo = _repo(repos, "cancel", {"README.md": "x\n", "plan.yaml": plan})
    command = ["run", "--plain", "--cluster", cluster.address, "plan.yaml"]
    with subprocess.Popen(
        [sys.executable, "-m", "stretto", *command],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as engine:
        try:
            _wait_for(repo, "attempt_started")
            (run_dir,) = (repo / ".stretto" / "runs").iterdir()
            log = run_dir / "tasks" / "a" / "1" / "agent.log"
            deadline = time.monotonic() + 20  # the usage line has streamed in
            while b"usage" not in (log.read_bytes() if log.is_file() else b""):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            cancelled = _stretto(repo, "cancel", run_dir.name, "--task", "a")
            assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
            assert engine.wait(timeout=40) == 1
        finally:
            if engine.poll() is None:
                engine.kill()
                engine.wait()
    lines = (repo / ".stretto" / "ledger.jsonl").read_text().splitlines()
    ledger = [json.loads(line) for line in lines]
    (entry,) = [e for e in ledger if e.get("task") == "a"]
    assert entry["outcome"] == "stopped", entry
    assert entry["tokens"]["input"] == 1000, entry
    deadline = time.monotonic() + 10
    while processes_with_token(run_dir.name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_with_token(run_dir.name)


def test_the_first_wave_spreads_over_the_workers_and_each_clones_once(
    cluster: LocalCluster, repos: Path
) -> None:
    """A run's first attempts start together: they spread over the workers (each picks the
    least busy, counting the others picked in the same moment), and the two that arrive at a
    worker with no clone of this repository yet make it once between them (two `git init` in
    one directory used to fail one of them, retried later)."""
    steps = "\n".join(
        f"      - {{id: w{i}, goal: g, files: [w{i}.txt], command: 'sleep 1; echo {i} > w{i}.txt'}}"
        for i in range(4)
    )
    plan = f"stages:\n  - name: s\n    steps:\n{steps}\n"
    repo = _repo(repos, "wave", {"README.md": "x\n", "plan.yaml": plan})
    ran = _stretto(repo, "run", "--plain", "--max-agents", "4", "--cluster", cluster.address,
                   "plan.yaml")  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    records = _journal(repo)
    assert not [r for r in records if r.kind == "fail"], [
        r.fields for r in records if r.kind == "fail"
    ]
    started = [r for r in records if r.type == "attempt_started"]
    assert len(started) == 4  # each task's first attempt, none retried
    per_worker = Counter(str(r.fields["worker"]) for r in started)
    assert sorted(per_worker.values()) == [2, 2], per_worker
