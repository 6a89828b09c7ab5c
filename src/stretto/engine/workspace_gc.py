"""Listing and garbage-collecting stretto's worktrees and branches (``stretto clean``).

Everything under ``.stretto/worktrees`` and every ``stretto/*`` branch, whatever state a crash
left it in, attributed to its run, task and attempt; and the removal of what the caller does not
keep, with branches deleted by compare-and-swap so one that gained commits is never dropped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from stretto.engine.workspace import (
    BRANCH_PREFIX,
    _delete_branch,
    _discard,
    _entry_at,
    _is_under,
    _top_and_root,
    parse_branch,
    worktree_lock,
)
from stretto.git import WorktreeEntry, branch_tips, list_worktrees


@dataclass(frozen=True, slots=True)
class WorkspaceInfo:
    """What :func:`list_workspaces` found: a worktree, a stray directory or a lone branch."""

    path: Path | None  # directory under the worktrees root; None for a branch without one
    branch: str | None  # short name; None for a directory that cannot be attributed
    head: str | None  # the branch tip, else the worktree's HEAD
    registered: bool  # git knows the worktree
    exists: bool  # the directory is on disk
    locked: bool
    prunable: bool  # registered, but its directory is gone
    checked_out_elsewhere: Path | None  # the branch's checkout outside the worktrees root
    run_id: str | None
    task_id: str | None
    attempt: int | None


@dataclass(frozen=True, slots=True)
class GcReport:
    """What :func:`collect_garbage` did."""

    pruned: tuple[Path, ...]  # registrations whose directory was already gone
    removed_worktrees: tuple[Path, ...]
    removed_dirs: tuple[Path, ...]  # directories git did not know
    deleted_branches: tuple[str, ...]
    kept_branches: tuple[str, ...]
    skipped_branches: tuple[str, ...]  # checked out outside the root, or moved meanwhile


def list_workspaces(repo: Path) -> list[WorkspaceInfo]:
    """List the worktrees and directories under the worktrees root and every ``stretto/*`` branch.

    A directory belongs to the branch git has checked out there, else to the branch its name
    follows from (``<run>-<task>-<attempt>``). Sorted by branch, then path.
    """
    top, root = _top_and_root(repo)
    with worktree_lock(top):
        return _list_workspaces(top, root)


def _list_workspaces(top: Path, root: Path) -> list[WorkspaceInfo]:
    entries = list_worktrees(top)
    tips = branch_tips(top, BRANCH_PREFIX)
    by_dir_name = {"{}-{}-{}".format(*p): b for b in tips if (p := parse_branch(b)) is not None}
    outside = {
        e.branch: e.path for e in entries if e.branch in tips and not _is_under(e.path, root)
    }
    paths = {os.path.realpath(e.path): e.path for e in entries if _is_under(e.path, root)}
    for child in root.iterdir() if root.is_dir() else ():
        paths.setdefault(os.path.realpath(child), child)
    infos: list[WorkspaceInfo] = []
    for path in paths.values():
        entry = _entry_at(entries, path)
        owner = entry.branch if entry and entry.branch else by_dir_name.get(path.name)
        infos.append(_info(path, owner, entry, tips, outside))
    claimed = {info.branch for info in infos}
    infos += [_info(None, b, None, tips, outside) for b in tips if b not in claimed]
    return sorted(infos, key=lambda i: (i.branch or "", str(i.path or "")))


def _info(
    path: Path | None,
    branch: str | None,
    entry: WorktreeEntry | None,
    tips: Mapping[str, str],
    outside: Mapping[str, Path],
) -> WorkspaceInfo:
    parsed = parse_branch(branch) if branch else None
    return WorkspaceInfo(
        path=path,
        branch=branch,
        head=tips.get(branch or "") or (entry.head if entry else None),
        registered=entry is not None,
        exists=path is not None and os.path.lexists(path),
        locked=entry is not None and entry.locked is not None,
        prunable=entry is not None and entry.prunable,
        checked_out_elsewhere=outside.get(branch) if branch else None,
        run_id=parsed[0] if parsed else None,
        task_id=parsed[1] if parsed else None,
        attempt=parsed[2] if parsed else None,
    )


def collect_garbage(repo: Path, *, keep: Callable[[str], bool]) -> GcReport:
    """Remove the worktrees, stray directories and ``stretto/*`` branches that ``keep`` rejects.

    First drops registrations under the worktrees root whose directory is gone (a ``git worktree
    prune`` limited to stretto's own: the user's worktrees elsewhere are never pruned). Then each
    item of :func:`list_workspaces` whose branch ``keep`` rejects (an item without a branch is
    never kept) loses its worktree or directory and its ``stretto/*`` branch, deleted by
    compare-and-swap. A branch checked out outside the root is never deleted. Must not run while
    a run creates workspaces: the caller holds the run lock.

    Args:
        repo: Any directory in the repository.
        keep: Called with a short branch name; true keeps the branch and its worktree.
    """
    top, root = _top_and_root(repo)
    with worktree_lock(top):
        return _collect_garbage(top, root, keep)


def _collect_garbage(top: Path, root: Path, keep: Callable[[str], bool]) -> GcReport:
    pruned = [e.path for e in list_worktrees(top) if e.prunable and _is_under(e.path, root)]
    for path in pruned:
        _discard(top, root, path, registered=True)
    worktrees: list[Path] = []
    dirs: list[Path] = []
    deleted: list[str] = []
    kept: list[str] = []
    skipped: list[str] = []
    for info in _list_workspaces(top, root):
        if info.branch is not None and keep(info.branch):
            kept.append(info.branch)
            continue
        if info.path is not None and (info.registered or info.exists):
            _discard(top, root, info.path, registered=info.registered)
            (worktrees if info.registered else dirs).append(info.path)
        if info.branch is None or not info.branch.startswith(BRANCH_PREFIX) or info.head is None:
            continue
        if info.checked_out_elsewhere is None and _delete_branch(top, info.branch, info.head):
            deleted.append(info.branch)
        else:
            skipped.append(info.branch)
    return GcReport(
        tuple(pruned), tuple(worktrees), tuple(dirs), tuple(deleted), tuple(kept), tuple(skipped)
    )
