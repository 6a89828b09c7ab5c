"""A cluster's scheduler lost mid-run: the run stops cleanly (interrupted, resumable), and
`stretto resume --cluster` goes on with another scheduler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _cluster import _bwrap_prefix, _engine, _journal, _merges, _repo, _stretto, _wait_for
from stretto.api.cluster import start_local_cluster, worker_pids
from stretto.process import processes_with_token
from stretto.testing.repo import git


@pytest.fixture
def repos(tmp_path: Path) -> Path:
    return tmp_path / "repos"


def test_scheduler_lost_stops_the_run_and_resume_goes_on(tmp_path: Path, repos: Path) -> None:
    plan = """\
stages:
  - name: work
    steps:
      - id: long
        goal: x
        files: [long.txt]
        command: 'if [ "$STRETTO_ATTEMPT" = 1 ]; then sleep 60; fi; echo done > long.txt'
"""
    repo = _repo(repos, "nosched", {"README.md": "x\n", "plan.yaml": plan})
    first = start_local_cluster(1, 2, directory=tmp_path / "c1", worker_prefix=_bwrap_prefix(repos))
    engine = _engine(
        repo, first.address, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _wait_for(repo, "attempt_started")
        os.killpg(first.scheduler.pid, signal.SIGKILL)
        out, _ = engine.communicate(timeout=40)
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
        first.stop()
    assert engine.returncode != 0
    assert "cluster is lost" in out and "stretto resume" in out, out
    finished = [r for r in _journal(repo) if r.type == "run_finished"]
    assert finished and finished[-1].fields["status"] == "interrupted"
    # a new scheduler elsewhere: `resume --cluster` goes on there (without it, the run's own
    # address is used: test_cluster_faults.py resumes that way)
    second = start_local_cluster(
        1, 2, directory=tmp_path / "c2", worker_prefix=_bwrap_prefix(repos)
    )
    assert second.address != first.address
    try:
        run_id = str(finished[-1].fields.get("run_id") or _journal(repo)[0].fields["run_id"])
        resumed = _stretto(repo, "resume", run_id, "--cluster", second.address)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert git(repo, "show", "main:long.txt").strip() == "done"
        assert _merges(repo, "long") == 1
        deadline = time.monotonic() + 10  # the first worker's agent, orphaned, is ended
        while processes_with_token(run_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not processes_with_token(run_id)
    finally:
        second.stop()


def test_cluster_local_prints_its_address_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    command = ["cluster", "local", "--workers", "1", "--slots", "2", "--json"]
    with subprocess.Popen(
        [sys.executable, "-m", "stretto", *command, "--dir", str(tmp_path / "c")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            assert info["address"].startswith("tcp://127.0.0.1:")
            pids = [info["scheduler_pid"], *info["worker_pids"]]
            assert len(worker_pids(info["address"])) == 1  # the worker has joined
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in pids)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has ended (nobody reaped it yet)


def test_stopping_a_cluster_leaves_no_worker_behind(tmp_path: Path, repos: Path) -> None:
    """Workers under a wrapper (bwrap, as here) whose scheduler is gone are ended by
    `LocalCluster.stop`: their own processes, not only the wrappers started first."""
    cluster = start_local_cluster(
        2, 1, directory=tmp_path / "c", worker_prefix=_bwrap_prefix(repos)
    )
    pids = list(worker_pids(cluster.address).values())  # the workers' own (inside bwrap)
    assert len(pids) == 2 and not set(pids) & {w.pid for w in cluster.workers}
    os.killpg(cluster.scheduler.pid, signal.SIGKILL)  # they lose their scheduler first
    time.sleep(1)
    cluster.stop(grace=2)
    assert [pid for pid in pids if _running(pid)] == []
