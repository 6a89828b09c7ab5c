"""Landing verified work: merge commits, the compare-and-swap of the target, the user's checkout.

The merge queue (in :mod:`stretto.engine.runner`) lands one attempt at a time with these steps:

1. :func:`landed_tasks` — the target's history is the idempotency key: a task whose
   ``Stretto-Run``/``Stretto-Task`` trailers are already there is never merged again;
2. :func:`merge_commit` — the attempt's verified commit is merged (``--no-ff``: always a merge
   commit, with trailers naming run, task and attempt) into the current target head. The merge is
   computed with ``git merge-tree --write-tree`` (no checkout needed; conflicts come back as a
   list of files) and written with ``git commit-tree`` with fixed dates, so redoing it after a
   crash yields the very same commit id;
3. the gates that must judge the merged tree run on it in the integration worktree
   (:func:`checkout_integration`);
4. :func:`advance` moves the target ref with ``git update-ref <ref> <new> <old>``: if anyone
   moved the target meanwhile, nothing happens and the queue rebuilds on the new head;
5. :func:`sync_checkout` brings the user's checkout along when the target is checked out there
   and clean; a dirty checkout is left exactly as it is, and the user is told how to catch up.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stretto.engine.sparse import ensure_full
from stretto.engine.workspace import AUTO_LINK_DIRS, link_shared_dirs, worktree_lock
from stretto.git import git_dir, is_ancestor, list_worktrees, rev_parse, run_git, update_ref_cas

AUTHOR = ("stretto", "stretto@localhost")


@dataclass(frozen=True, slots=True)
class MergeAttempt:
    """The outcome of computing one merge."""

    commit: str | None  # the merge commit, when there was no conflict
    tree: str | None
    conflicts: tuple[str, ...] = ()


def trailers(run_id: str, task_id: str, attempt: int) -> str:
    """The trailer block that marks a merge commit as stretto's landing of a task."""
    return f"Stretto-Run: {run_id}\nStretto-Task: {task_id}\nStretto-Attempt: {attempt}\n"


def landed_tasks(repo: Path, target: str, run_id: str) -> dict[str, list[str]]:
    """Task id -> merge commits in the target's history carrying this run's trailers."""
    out = run_git(
        [
            "log",
            "--fixed-strings",
            f"--grep=Stretto-Run: {run_id}",
            "--format=%H%x1f%(trailers:key=Stretto-Run,valueonly,separator=%x1e)"
            "%x1f%(trailers:key=Stretto-Task,valueonly,separator=%x1e)%x1d",
            f"refs/heads/{target}",
            "--",
        ],
        repo,
        check=False,
    )
    found: dict[str, list[str]] = {}
    for record in out.stdout.split("\x1d"):
        parts = record.strip().split("\x1f")
        if len(parts) != 3:
            continue
        commit, runs, tasks = parts
        if run_id not in runs.split("\x1e"):
            continue
        for task in tasks.split("\x1e"):
            if task:
                found.setdefault(task.strip(), []).append(commit)
    return found


def merge_commit(repo: Path, base: str, branch_sha: str, message: str, date: str) -> MergeAttempt:
    """Merge ``branch_sha`` into ``base`` as a new merge commit, without touching any checkout.

    ``date`` (git's ``@<unix> +0000`` form) is used as author and committer date, so the same
    inputs always give the same commit id.
    """
    result = run_git(
        ["merge-tree", "--write-tree", "--name-only", "--no-messages", base, branch_sha],
        repo,
        check=False,
    )
    lines = result.stdout.splitlines()
    if result.returncode == 1:
        conflicts = tuple(dict.fromkeys(line for line in lines[1:] if line))
        return MergeAttempt(None, None, conflicts)
    if result.returncode != 0 or not lines:
        # Fall back to git's own error by re-running checked.
        run_git(["merge-tree", "--write-tree", base, branch_sha], repo)
        raise AssertionError("unreachable")  # pragma: no cover
    tree = lines[0].strip()
    env = {
        "GIT_AUTHOR_NAME": AUTHOR[0],
        "GIT_AUTHOR_EMAIL": AUTHOR[1],
        "GIT_COMMITTER_NAME": AUTHOR[0],
        "GIT_COMMITTER_EMAIL": AUTHOR[1],
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
    }
    commit = run_git(
        ["commit-tree", tree, "-p", base, "-p", branch_sha, "-F", "-"],
        repo,
        input=message,
        env=env,
    ).stdout.strip()
    return MergeAttempt(commit, tree)


def tree_of(repo: Path, commit: str) -> str | None:
    """The tree id of a commit."""
    return rev_parse(repo, f"{commit}^{{tree}}")


def integration_path(repo: Path, run_id: str) -> Path:
    """The run's integration worktree (outside the attempts' root, so `clean` leaves it)."""
    return repo / ".stretto" / "integration" / run_id


def checkout_integration(
    repo: Path, path: Path, commit: str, *, link_dirs: Sequence[str] = ()
) -> None:
    """Make ``path`` a detached worktree at ``commit`` (created on first use).

    The heavy directories an attempt's worktree gets (``node_modules``, ``.venv``, ``venv`` and
    ``link_dirs``) are linked here too, so gates on the merged tree run as they did on the
    attempt's.
    """
    if not (path / ".git").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with worktree_lock(repo):
            if path.exists():
                shutil.rmtree(path)
            run_git(["worktree", "add", "--detach", "--force", str(path), commit], repo)
            ensure_full(path)  # gates judge the whole merged tree, even if your checkout is sparse
    else:
        run_git(["checkout", "--detach", "--force", commit], path)
        run_git(["clean", "-fdq"], path)  # keeps the links: they are ignored
    link_shared_dirs(repo, path, [*AUTO_LINK_DIRS, *link_dirs])


def advance(repo: Path, target: str, new: str, old: str, message: str) -> bool:
    """Compare-and-swap the target ref from ``old`` to ``new``; False if it was not at ``old``."""
    return update_ref_cas(repo, f"refs/heads/{target}", new, old, message)


def reconcile_advance(repo: Path, target: str, new: str, old: str) -> str:
    """After a crash between intent and done of an advance: what happened to the ref.

    Returns "done" (the ref is at ``new`` or already contains it), "redo" (still at ``old``)
    or "moved" (someone else moved it: rebuild the merge on the new head).
    """
    head = rev_parse(repo, f"refs/heads/{target}")
    if head == new or (head is not None and is_ancestor(repo, new, head)):
        return "done"
    if head == old:
        return "redo"
    return "moved"


def find_checkout(repo: Path, target: str, own_root: Path) -> Path | None:
    """The user's worktree that has ``target`` checked out (not one of stretto's own).

    A worktree whose directory is gone (``prunable``: deleted without ``git worktree remove``)
    has no files to bring along, so it does not count.
    """
    with worktree_lock(repo):
        entries = list_worktrees(repo)
    for entry in entries:
        if entry.branch != target or entry.prunable or not entry.path.is_dir():
            continue
        if not _inside(entry.path, own_root):
            return entry.path
    return None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def checkout_matches(checkout: Path, commit: str, *, refresh: bool = True) -> bool:
    """Whether the checkout's index and tracked files are exactly ``commit``'s tree."""
    if refresh:
        run_git(["update-index", "-q", "--refresh"], checkout, check=False)
    for args in (
        ["diff-index", "--cached", "--quiet", commit, "--"],
        ["diff-index", "--quiet", commit, "--"],
    ):
        if run_git(args, checkout, check=False).returncode != 0:
            return False
    return True


def sync_checkout(checkout: Path, old: str, new: str) -> bool:
    """Fast-forward a checkout whose files are exactly ``old`` to ``new``.

    Uses git's two-way merge (``read-tree -m -u``), which refuses, changing nothing, rather than
    overwrite a file the user modified. Returns whether it moved. A checkout that does not match
    ``old`` (the user has uncommitted changes) is left exactly as it is, and so is one whose
    ``HEAD`` does not contain ``new``: the user switched it to another branch (or detached it)
    since it was found, so the target's files are no business of it any more.
    """
    head = rev_parse(checkout, "HEAD")
    if head is None or not is_ancestor(checkout, new, head):
        return False
    if not checkout_matches(checkout, old):
        return False
    result = run_git(["read-tree", "-m", "-u", old, new], checkout, check=False)
    return result.returncode == 0


def catch_up_hint(target: str, old: str, new: str, checkout: Path | None = None) -> str:
    """How a user whose checkout was left at ``old`` catches up with ``new``.

    Usually the checkout had uncommitted changes; when its index is locked (``index.lock``: a
    git command running there, or one that crashed), the hint says so instead.
    """
    recipe = f"git reset --soft {old[:12]} && git merge --ff-only {new[:12]}"
    lock = git_dir(checkout) / "index.lock" if checkout is not None else None
    if lock is not None and lock.exists():
        return (
            f"your checkout of '{target}' could not be brought along: its index is locked "
            f"({lock} exists: a git command is running there, or a crashed one left the file), "
            f"so its files were left as they were (at {old[:12]}) while '{target}' moved to "
            f"{new[:12]}. Once the lock is gone: {recipe}"
        )
    return (
        f"your checkout of '{target}' had uncommitted changes, so its files were left as they "
        f"were (at {old[:12]}) while '{target}' moved to {new[:12]}. To catch up and keep your "
        f"changes: {recipe}"
    )
