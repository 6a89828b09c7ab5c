"""``stretto clean``: remove what runs that are no longer running left behind.

For every run that no live stretto process drives: end processes still carrying its token
(agents or gates orphaned by a killed stretto), remove its integration worktree, and remove its
attempt worktrees and branches; the directory of a run killed before its first record (nothing
ran) goes too. Verified but unlanded work of an interrupted run is kept (so
``stretto resume`` can still land it) unless ``everything`` is asked for. Runs that are live
are never touched, and neither is a ``stretto/<a>/<b>/<n>`` branch whose ``<a>`` is neither a run
of this repository nor shaped like a run id stretto makes: it is someone else's.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stretto.engine.journal import JOURNAL_NAME, is_live, read_journal
from stretto.engine.merge import integration_path
from stretto.engine.resume import recover
from stretto.engine.runs import GENERATED_RUN_ID, list_run_ids, runs_root
from stretto.engine.workspace import parse_branch, worktree_lock
from stretto.engine.workspace_gc import collect_garbage
from stretto.git import run_git
from stretto.process import kill_token


@dataclass
class CleanReport:
    """What ``stretto clean`` did."""

    killed: dict[str, list[int]] = field(default_factory=dict)
    removed_worktrees: list[str] = field(default_factory=list)
    deleted_branches: list[str] = field(default_factory=list)
    kept_branches: list[str] = field(default_factory=list)
    live_runs: list[str] = field(default_factory=list)
    removed_runs: list[str] = field(default_factory=list)  # runs that never started

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``--json``)."""
        return dict(self.__dict__)

    def render(self) -> str:
        """Human-readable summary."""
        lines = []
        for run, pids in self.killed.items():
            lines.append(f"ended {len(pids)} leftover process(es) of run {run}: {pids}")
        lines += [f"removed worktree {p}" for p in self.removed_worktrees]
        lines += [f"deleted branch {b}" for b in self.deleted_branches]
        lines += [
            f"kept branch {b} (verified work of an interrupted run; --all drops it)"
            for b in self.kept_branches
        ]
        lines += [f"left run {r} alone: it is running" for r in self.live_runs]
        lines += [f"removed run {r}: it was stopped before it started" for r in self.removed_runs]
        return "\n".join(lines) or "nothing to clean"


def clean_repo(repo: Path, *, everything: bool = False) -> CleanReport:
    """Clean up after every run in ``repo`` that is not running; see the module docstring."""
    report = CleanReport()
    live: set[str] = set()
    pending: set[tuple[str, str, int]] = set()
    for run_id in list_run_ids(repo):
        run_dir = runs_root(repo) / run_id
        if is_live(run_dir):
            live.add(run_id)
            report.live_runs.append(run_id)
            continue
        killed = kill_token(run_id)
        if killed:
            report.killed[run_id] = killed
        records = read_journal(run_dir / JOURNAL_NAME)
        if not any(r.type in ("run_started", "goal") for r in records):
            # Killed between creating its journal and its first record: nothing ran.
            shutil.rmtree(run_dir, ignore_errors=True)
            report.removed_runs.append(run_id)
            continue
        if not any(r.type == "run_finished" for r in records) and not everything:
            facts = recover(records)
            for task, (attempt, _commit, _tree) in facts.verified.items():
                if facts.finished.get(task) is None:
                    pending.add((run_id, task, attempt))
        integration = integration_path(repo, run_id)
        lanes = sorted(integration.parent.glob(f"{run_id}-lane-*"))  # the merge train's lanes
        for path in [integration, *lanes]:
            if not path.exists():
                continue
            with worktree_lock(repo):
                run_git(["worktree", "remove", "--force", "--force", str(path)], repo, check=False)
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(path)
            report.removed_worktrees.append(str(path))

    known = set(list_run_ids(repo))

    def keep(branch: str) -> bool:
        parsed = parse_branch(branch)
        if parsed is None:
            return True
        run_id, task, attempt = parsed
        if run_id not in known and not GENERATED_RUN_ID.fullmatch(run_id):
            return True  # not a run of this repository: someone else's branch
        return run_id in live or (run_id, task, attempt) in pending

    gc = collect_garbage(repo, keep=keep)
    report.removed_worktrees += [str(p) for p in (*gc.removed_worktrees, *gc.removed_dirs)]
    report.deleted_branches += list(gc.deleted_branches)
    report.kept_branches += [
        b for b in gc.kept_branches if (parse_branch(b) or ("",))[0] not in live
    ]
    return report
