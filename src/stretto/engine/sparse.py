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

from stretto.git import git_dir, run_git
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


def enable_worktree_config(repo: Path) -> None:
    """Turn on ``extensions.worktreeConfig`` in the repository's config, if it is not on.

    The switch ``git sparse-checkout`` itself flips at the first sparse worktree (so that each
    worktree has its own sparse setting); a run with sparse worktrees flips it before its first
    agent starts, so ``.git/config`` does not change under running agents (the guard of
    :mod:`stretto.engine.git_guard` would take that for an agent's doing).
    """
    if not _flag(repo, "extensions.worktreeConfig"):
        run_git(["config", "--local", "extensions.worktreeConfig", "true"], repo)


def ensure_full(path: Path) -> None:
    """Make the worktree at ``path`` a full checkout if it inherited the user's sparseness.

    ``git worktree add`` copies the sparse-checkout settings of the checkout it runs from, so
    when the user's own checkout is sparse, a new worktree would be sparse too: an agent would
    miss files its task owns, and gates on a merged tree would not see all of it. With
    per-worktree config (``extensions.worktreeConfig``, which ``git sparse-checkout`` turns on)
    ``git sparse-checkout disable`` changes this worktree alone; with the older shared
    ``core.sparseCheckout = true``, this worktree's own pattern file gets ``/*`` (everything)
    and its files are brought back. The user's checkout is never changed.
    """
    if not _flag(path, "core.sparseCheckout"):
        return
    if _flag(path, "extensions.worktreeConfig"):
        run_git(["sparse-checkout", "disable"], path)
        return
    patterns = git_dir(path) / "info" / "sparse-checkout"
    patterns.parent.mkdir(parents=True, exist_ok=True)
    patterns.write_text("/*\n")
    if run_git(["rev-parse", "--verify", "--quiet", "HEAD"], path, check=False).returncode == 0:
        run_git(["-c", "core.sparseCheckoutCone=false", "read-tree", "-mu", "HEAD"], path)


def _flag(path: Path, key: str) -> bool:
    result = run_git(["config", "--bool", "--get", key], path, check=False)
    return result.stdout.strip() == "true"
