"""Faults of cluster runs: a worker SIGKILLed mid-attempt, the engine killed and resumed,
a result delivered again after a crash, workers without the agent's CLI (tests/_cluster.py has
the cluster; the scheduler lost: test_cluster_scheduler.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _cluster import (
    FILES,
    PLAN,
    _bwrap_prefix,
    _engine,
    _journal,
    _merges,
    _repo,
    _stretto,
    _wait_for,
    cluster,
    repos,
)
from stretto.api.cluster import LocalCluster, start_worker, wait_for_workers, worker_pids
from stretto.process import processes_with_token
from stretto.testing.repo import git

__all__ = ["cluster", "repos"]  # the module fixtures of tests/_cluster.py


def test_orchestrator_killed_and_resumed(cluster: LocalCluster, repos: Path) -> None:
    plan = PLAN.replace(
        'command: "echo alpha > alpha.txt"', 'command: "sleep 3; echo alpha > alpha.txt"'
    )
    repo = _repo(repos, "resumed", {**FILES, "plan.yaml": plan})
    engine = _engine(repo, cluster.address, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    assert not leftovers  # scratch folders and records of its attempts
    dead_pool = [p for p in cluster.directory.rglob(f"{pids[victim]}-*") if p.parent.name == "pool"]
    assert not dead_pool  # the dead worker's warm worktree was removed by a live one
    live_pools = [p for p in cluster.directory.rglob("*") if p.parent.name == "pool"]
    assert live_pools  # (the live workers keep theirs: the test above can see a pool)
    registry = Path(tempfile.gettempdir()) / f"stretto-attempts-{os.getuid()}"
    assert not [r for r in registry.glob("*.json") if run_id in r.read_text()]
    # the cluster gets a worker back for what follows
    start_worker(cluster, "worker-2", 2, prefix=_bwrap_prefix(repos))


def test_result_delivered_again_after_a_crash_lands_once(
    cluster: LocalCluster, repos: Path
) -> None:
    repo = _repo(repos, "twice")
    env = {**os.environ, "STRETTO_CRASHPOINT": "after-advance@1"}
    crashed = subprocess.run(
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
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode != 0
    run_id = next(r for r in _journal(repo) if r.type == "run_started").fields["run_id"]
    resumed = _stretto(repo, "resume", str(run_id))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for task in ("alpha", "beta", "gamma"):
        assert _merges(repo, task) == 1, task


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


def test_a_worker_without_the_cli_is_avoided(cluster: LocalCluster, repos: Path) -> None:
    """A third worker has the agent's CLI on its PATH, the two others do not: attempts sent to
    those fail uncounted (max_attempts 1) and the task lands on the one that has it."""
    tools = repos.parent / "tools"
    tools.mkdir()
    cli = tools / "ghost-agent-cli"
    cli.write_text("#!/bin/sh\necho ghost > x.txt\n")
    cli.chmod(0o755)
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    start_worker(cluster, "worker-with-cli", 1, prefix=_bwrap_prefix(repos), env=env)
    wait_for_workers(cluster.address, 3)
    plan = """\
stages:
  - name: work
    steps:
      - {id: lonely, goal: x, files: [x.txt], agent: ghost, max_attempts: 1}
"""
    repo = _repo(repos, "somecli", {"README.md": "x\n", "plan.yaml": plan})
    (repo / "stretto.toml").write_text(
        '[agents.ghost]\nadapter = "command"\ncommand = ["ghost-agent-cli", "{prompt}"]\n'
    )
    git(repo, "commit", "-q", "-am", "ghost agent")
    ran = _stretto(repo, "run", "--plain", "--cluster", cluster.address, "plan.yaml")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert git(repo, "show", "main:x.txt").strip() == "ghost"
    unfit = [r for r in _journal(repo) if r.type == "worker_unfit"]
    assert len(unfit) <= 2 and all(r.fields["others"] >= 1 for r in unfit)
    assert len({r.fields["worker"] for r in unfit}) == len(unfit)  # never the same one twice
