"""Starting ``stretto`` as a real process and watching its run, for the fault tests."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from faults.driver import stretto_env
from stretto.engine.journal import Record, read_journal


def runs(repo: Path) -> list[Path]:
    root = repo / ".stretto" / "runs"
    return [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []


def stretto(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stretto", *args],
        cwd=repo,
        env=env or stretto_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"stretto hung (killed after {timeout}s):\n{out}\n{err}") from None
    return proc.returncode, out + err


def records(repo: Path) -> list[Record]:
    """The records of the repository's (first) run so far; [] before it has a journal."""
    found = runs(repo)
    try:
        return read_journal(found[0] / "journal.jsonl") if found else []
    except Exception:
        return []


def merged(repo: Path) -> int:
    return sum(1 for r in records(repo) if r.type == "merged")


def wait_for_landings(repo: Path, proc: subprocess.Popen[str], count: int) -> None:
    deadline = time.monotonic() + 60
    while merged(repo) < count:
        assert proc.poll() is None, finish(proc)
        assert time.monotonic() < deadline, "no landing in 60 s"
        time.sleep(0.05)


def wait_for(
    repo: Path, proc: subprocess.Popen[str], ready: Callable[[list[Record]], bool], what: str
) -> list[Record]:
    """Wait until ``ready(records)`` while ``proc`` lives; return the records."""
    deadline = time.monotonic() + 60
    while not ready(found := records(repo)):
        assert proc.poll() is None, (what, finish(proc))
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return found
