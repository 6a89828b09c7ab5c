"""Warm worktrees on a cluster worker: one per agent slot, reused from attempt to attempt.

A new worktree checks out every file of the repository (seconds for a few thousand files); a
worktree kept from the slot's previous attempt only rewrites what differs from the new base
(``git checkout -f -B <branch> <base>``, then ``git clean -ffdx``: nothing of the previous
attempt is left, ignored files included). Each worker process owns its worktrees
(``<clone>/.stretto/pool/<pid>-<slot>``) and lists them in the machine's attempt registry, so
when it dies a live worker of the same machine removes them (:func:`sweep_pools`).

Sparse checkouts (``[workspace] sparse``) are not pooled: they get a fresh worktree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from stretto.engine.workspace import Workspace, branch_name, worktree_lock
from stretto.engine.workspace_setup import run_setup
from stretto.errors import RepoError
from stretto.git import rev_parse, run_git


def pool_path(clone: Path, slot: int) -> Path:
    """The warm worktree of ``slot`` of this worker process."""
    return clone / ".stretto" / "pool" / f"{os.getpid()}-{slot}"


def checkout(
    clone: Path,
    registry: Path,
    slot: int,
    ids: tuple[str, str, int],
    base: str,
    *,
    setup: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Workspace:
    """The slot's worktree on a new branch ``stretto/<run>/<task>/<attempt>`` at ``base``,
    cleaned of everything else; ``setup`` commands run in it as in a fresh one."""
    run_id, task, attempt = ids
    branch = branch_name(run_id, task, attempt)
    path = pool_path(clone, slot)
    _register(registry, clone, path)
    with worktree_lock(clone):
        warm = (path / ".git").is_file() and rev_parse(path, "HEAD") is not None
        if warm:
            moved = run_git(["checkout", "-q", "-f", "-B", branch, base], path, check=False)
            warm = moved.returncode == 0
        if not warm:
            shutil.rmtree(path, ignore_errors=True)
            run_git(["worktree", "prune"], clone, check=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            run_git(["worktree", "add", "-q", "-f", "-B", branch, str(path), base], clone)
    run_git(["clean", "-q", "-ffdx"], path)
    head = rev_parse(path, "HEAD")
    if head is None:
        raise RepoError(f"the worker's worktree {path} has no HEAD after checking out {base}")
    run_setup(path, setup, env=env)
    return Workspace(path, branch, head, run_id, task, attempt)


def release(clone: Path, ws: Workspace) -> None:
    """Detach the slot's worktree from the attempt's branch and delete the branch (the files
    stay until the slot's next attempt cleans them)."""
    with worktree_lock(clone):
        run_git(["checkout", "-q", "--detach"], ws.path, check=False)
        run_git(["branch", "-D", "-q", ws.branch], clone, check=False)


def _register(registry: Path, clone: Path, path: Path) -> None:
    registry.mkdir(parents=True, exist_ok=True)
    record = registry / f"pool-{path.name}-{clone.name}.json"  # a pool per slot and clone
    if not record.is_file():
        data = {"worker_pid": os.getpid(), "clone": str(clone), "path": str(path)}
        record.write_text(json.dumps(data))


def sweep_pools(registry: Path, alive: Callable[[int], bool]) -> list[str]:
    """Remove the warm worktrees of worker processes that are gone; their paths."""
    removed = []
    for record in sorted(registry.glob("pool-*.json")) if registry.is_dir() else []:
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if alive(int(data.get("worker_pid", 0))):
            continue
        clone, path = Path(data["clone"]), Path(data["path"])
        if (clone / ".git").is_dir():
            with contextlib.suppress(Exception), worktree_lock(clone):
                run_git(["worktree", "remove", "--force", "--force", str(path)], clone, check=False)
                run_git(["worktree", "prune"], clone, check=False)
        shutil.rmtree(path, ignore_errors=True)
        record.unlink(missing_ok=True)
        removed.append(str(path))
    return removed
