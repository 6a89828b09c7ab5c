"""Test helper: end every engine and agent a test's repository still has running."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from stretto.engine.journal import LOCK_NAME, is_live
from stretto.process import kill_token


def stop_engines(repo: Path) -> None:
    """SIGKILL the engine of each live run (named in its lock) and end its agents."""
    runs = repo / ".stretto" / "runs"
    for run_dir in runs.iterdir() if runs.is_dir() else []:
        if not run_dir.is_dir():
            continue
        if is_live(run_dir):
            pid = int((run_dir / LOCK_NAME).read_text().strip() or 0)
            if pid and pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
        kill_token(run_dir.name, grace=0.2)
