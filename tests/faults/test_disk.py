"""A full disk and a read-only run directory, at the start of a run and in the middle of one.

The repository's ``.stretto`` (journal, logs, worktrees) is a small tmpfs mounted for the test
(this machine runs the suite as root). It is filled with a file mid-run, or before the run, or
remounted read-only. Each time: a clear error naming what filled up, a non-zero exit, no agent
left running, nothing that passed its gates lost; once space is freed, ``stretto resume``
finishes the run. Where mounting is not permitted (not root, no user namespaces), the journal
write fails through the ``journal-write-enospc`` fault instead, and the test output says so.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _invariants import check_invariants, midway_problems, only_run
from faults.driver import stretto_env
from faults.engines import finish, runs, stretto, wait_for_landings
from faults.plangen import CONFIG, Expected, make_plan
from stretto.engine.journal import FULL_DISK, read_journal
from stretto.process import kill_token, processes_with_token
from stretto.testing.repo import git, make_repo

TASKS = 12


class Disk:
    """``repo/.stretto`` on a tmpfs of its own (or None when mounting is not permitted)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"
        path.mkdir(parents=True, exist_ok=True)
        if os.environ.get("STRETTO_FAULT_NO_MOUNT"):  # to try the fallback where mounting works
            self.mounted, self.why_not = False, "STRETTO_FAULT_NO_MOUNT is set"
            return
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        self.mounted = done.returncode == 0
        self.why_not = done.stderr.strip()

    def fill(self) -> None:
        """Write until the disk is full (1 MiB blocks, then 4 KiB ones for what is left)."""
        with self.filler.open("ab", buffering=0) as out:
            for size in (1 << 20, 4096):
                try:
                    while True:
                        out.write(b"\0" * size)
                except OSError as error:
                    assert error.errno == errno.ENOSPC, error

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self, on: bool) -> None:
        """Remount read-only (or writable again). A file still open for writing keeps the
        mount busy (a killed engine's git child exiting a moment later): asked again for up
        to 10 s, then the processes holding files there are named."""
        flag = "ro" if on else "rw"
        deadline = time.monotonic() + 10
        while True:
            done = subprocess.run(
                ["mount", "-o", f"remount,{flag}", str(self.path)], capture_output=True, text=True
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"remount,{flag} failed: {done.stderr}; {self.holders()}")
            time.sleep(0.1)

    def holders(self) -> str:
        """Processes with a file open under the mount (what keeps it busy)."""
        found = []
        for fd_dir in Path("/proc").glob("[0-9]*/fd"):
            try:
                if any(str(os.readlink(fd)).startswith(str(self.path)) for fd in fd_dir.iterdir()):
                    found.append(fd_dir.parent.name)
            except OSError:
                continue
        return f"open there by pids {found}" if found else "no process has a file open there"

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Path, Expected, Disk]]:
    text, expected = make_plan(7, tmp_path, tasks=TASKS)
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    repo = make_repo(tmp_path / "repo", {"README.md": "disk\n", "stretto.toml": CONFIG})
    disk = Disk(repo / ".stretto")
    if not disk.mounted:
        print(f"no tmpfs ({disk.why_not}): the full disk is injected ({FULL_DISK})")
    try:
        yield repo, plan, expected, disk
    finally:
        for pid in processes_with_token(only_run(repo)) if runs(repo) else []:
            os.kill(pid, 9)
        disk.unmount()


def assert_stopped_cleanly(repo: Path, code: int, output: str, reason: str) -> str:
    """The run stopped with a clear error naming the reason and the fix; nothing was lost."""
    run = only_run(repo)
    assert code == 1, output
    assert "Traceback" not in output, output
    assert reason in output, output
    assert f"stretto resume {run}" in output, output
    assert processes_with_token(run) == []
    assert midway_problems(repo, run) == []
    return run


def resume_finishes(repo: Path, expected: Expected) -> None:
    code, output = finish(stretto(repo, "resume", "--plain"))
    assert code == 0, output
    check_invariants(repo, only_run(repo), tasks=expected.tasks)
    assert expected.check_tree(repo) == []


def test_a_disk_that_fills_mid_run_stops_it_with_a_clear_error_and_resume_finishes(
    setup: tuple[Path, Path, Expected, Disk],
) -> None:
    repo, plan, expected, disk = setup
    env = stretto_env(None if disk.mounted else f"{FULL_DISK}@60")
    proc = stretto(repo, "run", str(plan), "--plain", env=env)
    if disk.mounted:
        wait_for_landings(repo, proc, 2)
        disk.fill()
    code, output = finish(proc)
    print(output.splitlines()[-1])
    run = assert_stopped_cleanly(repo, code, output, "No space left on device")
    assert str(repo / ".stretto") in output, output  # names where it filled up
    if disk.mounted:
        # Still full: resume says so, stops again, and breaks nothing.
        code, again = finish(stretto(repo, "resume", "--plain"))
        assert code == 1 and "No space left on device" in again and "Traceback" not in again
        assert processes_with_token(run) == []
        assert midway_problems(repo, run) == []
        disk.free()
    resume_finishes(repo, expected)


def test_a_full_disk_at_the_start_is_a_clear_error_and_leaves_nothing(
    setup: tuple[Path, Path, Expected, Disk],
) -> None:
    repo, plan, expected, disk = setup
    if not disk.mounted:
        env = stretto_env(f"{FULL_DISK}@1")
    else:
        env = stretto_env()
        disk.fill()
    head = git(repo, "rev-parse", "main")
    code, output = finish(stretto(repo, "run", str(plan), "--plain", env=env))
    assert code == 1, output
    assert "Traceback" not in output, output
    assert "No space left on device" in output and "cannot start run" in output, output
    assert "resume" not in output, output  # nothing to resume: start again
    assert runs(repo) == []
    assert git(repo, "rev-parse", "main") == head
    listed = subprocess.run(
        [sys.executable, "-m", "stretto", "runs"], cwd=repo, capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    disk.free()
    code, output = finish(stretto(repo, "run", str(plan), "--plain"))
    assert code == 0, output
    check_invariants(repo, only_run(repo), tasks=expected.tasks)


def test_a_read_only_run_directory_is_a_clear_error_and_loses_nothing(
    setup: tuple[Path, Path, Expected, Disk],
) -> None:
    """At the start of a run, and for ``resume`` of a run killed mid-way: a clear error, exit 1,
    nothing changed; once the directory is writable again, resume finishes the run. (A mount
    cannot turn read-only under a live engine: its open journal keeps it busy.)"""
    repo, plan, expected, disk = setup
    if not disk.mounted:
        pytest.fail(f"cannot mount a tmpfs to make read-only: {disk.why_not}")
    disk.read_only(True)
    code, output = finish(stretto(repo, "run", str(plan), "--plain"))
    assert code == 1 and "Read-only file system" in output and "Traceback" not in output, output
    assert "cannot start run" in output, output
    disk.read_only(False)
    proc = stretto(repo, "run", str(plan), "--plain")
    wait_for_landings(repo, proc, 2)
    proc.kill()
    proc.communicate()
    run = only_run(repo)
    kill_token(run, grace=0.2)  # the dead engine's agents, so the mount is not busy
    head = git(repo, "rev-parse", "main")
    disk.read_only(True)
    code, again = finish(stretto(repo, "resume", "--plain"))
    assert code == 1 and "Read-only file system" in again and "Traceback" not in again, again
    assert str(repo / ".stretto") in again, again
    assert git(repo, "rev-parse", "main") == head
    assert processes_with_token(run) == []
    disk.read_only(False)
    resume_finishes(repo, expected)


def test_a_journal_write_that_fails_as_on_a_full_disk_stops_the_run_the_same_way(
    tmp_path: Path,
) -> None:
    """The fallback where no filesystem can be mounted, run everywhere so it stays true: the
    60th journal write fails with ENOSPC (``journal-write-enospc@60``)."""
    text, expected = make_plan(8, tmp_path, tasks=TASKS)
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    repo = make_repo(tmp_path / "repo", {"README.md": "disk\n", "stretto.toml": CONFIG})
    proc = stretto(repo, "run", str(plan), "--plain", env=stretto_env(f"{FULL_DISK}@60"))
    code, output = finish(proc)
    assert_stopped_cleanly(repo, code, output, "No space left on device")
    assert "journal.jsonl" in output, output
    resume_finishes(repo, expected)


def test_an_agent_whose_start_cannot_be_journaled_is_ended_not_orphaned(tmp_path: Path) -> None:
    """The journal fails exactly at the agent's ``attempt_started`` record (the process already
    runs): stretto ends it before it stops, instead of leaving it running unrecorded."""
    repo = make_repo(tmp_path / "repo", {"README.md": "disk\n"})
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "stages:\n  - name: s\n    steps:\n"
        '      - {id: slow, goal: g, files: [s.txt], command: "sleep 0.5; echo s > s.txt"}\n'
    )
    code, output = finish(stretto(repo, "run", str(plan), "--plain"))  # where is the record?
    assert code == 0, output
    first = only_run(repo)
    [started] = [
        r.seq for r in read_journal(runs(repo)[0] / "journal.jsonl") if r.type == "attempt_started"
    ]
    plan.write_text(plan.read_text().replace("sleep 0.5", "sleep 30"))
    env = stretto_env(f"{FULL_DISK}@{started}")
    code, output = finish(stretto(repo, "run", str(plan), "--plain", env=env))
    [run] = [r.name for r in runs(repo) if r.name != first]
    assert code == 1 and "No space left on device" in output and "Traceback" not in output, output
    assert processes_with_token(run) == []
