"""Sparse worktrees: an attempt checks out only what its task owns (``[workspace] sparse``).

In a huge repository most of the time of a new worktree goes into writing files the agent never
looks at. With ``sparse = true`` (or a list of extra paths) each attempt's worktree is a
cone-mode sparse checkout (``git sparse-checkout set --cone``) holding

* the top-level files (``pyproject.toml``, ``package.json``, the README: cone mode always has
  them) and the files directly inside each parent folder of a listed directory;
* the folders of the task's owned files and declared outputs
  (:func:`stretto.plans.paths.sparse_dirs`);
* the configured extra paths (tests, shared code, build files the gates need).

A task that owns no files, or a pattern that could own a path anywhere (``**/*.py``), gets a full
checkout. The agent can widen its own worktree (``git sparse-checkout add DIR``), and new files
outside the cone are still committed. Gates keep their meaning because every command gate that
judged the sparse worktree runs again on the full merged tree in the integration worktree
before the target moves (see :mod:`stretto.engine.merge_queue`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stretto.git import run_git
from stretto.plans.paths import sparse_dirs
from stretto.plans.plan import Task


def sparse_for(task: Task, extra: Sequence[str] | None) -> tuple[str, ...] | None:
    """The cone directories of ``task``'s worktree, or ``None`` for a full checkout.

    Args:
        task: The task; its owned files and outputs decide.
        extra: ``[workspace] sparse``: ``None`` when sparse worktrees are off, else the paths
            every attempt gets besides the task's own.
    """
    if extra is None or task.files is None:
        return None
    return sparse_dirs([*task.files, *task.outputs, *extra])


def sparse_checkout(path: Path, dirs: Sequence[str]) -> None:
    """Make the worktree at ``path`` a cone-mode sparse checkout of ``dirs``; idempotent.

    ``git sparse-checkout`` keeps the setting per worktree: the first time, git itself turns on
    ``extensions.worktreeConfig`` in the repository's config so that it can, and every other
    worktree (the user's checkout too) stays a full checkout.
    """
    stdin = "".join(f"{d}\n" for d in dirs)
    run_git(["sparse-checkout", "set", "--cone", "--stdin"], path, input=stdin)
