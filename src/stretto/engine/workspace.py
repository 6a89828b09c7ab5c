"""Workspaces: one git worktree on a disposable branch for every attempt.

Attempt ``<n>`` of task ``<task>`` in run ``<run>`` works in
``<repo>/.stretto/worktrees/<run>-<task>-<n>/`` on branch ``stretto/<run>/<task>/<n>``, forked from
a fixed base commit. Nothing here touches the user's checkout, its index or the target branch.

Every operation is idempotent because ``stretto resume`` repeats whatever a crash interrupted
(shared/docs/DURABILITY.md, rows "create worktree" and "clean up"): :func:`create_workspace`
inspects ``git worktree list --porcelain`` and the branch and repairs any half-made state;
:func:`remove_workspace` deletes the branch only by compare-and-swap against the commit the caller
expects, so a branch that gained commits is never dropped.

Heavy directories (``node_modules``, ``.venv``, ``venv`` and configured extras) that exist,
untracked, in the main checkout are symlinked into each new worktree. They must not show up in
``git status``, and a ``.gitignore`` line ``node_modules/`` does not hide them: a trailing slash
matches directories only, and git sees a symlink as a file. Linked worktrees read the *common*
``info/exclude`` (a per-worktree exclude needs ``extensions.worktreeConfig``, a repository-wide
switch), so each link that is not ignored already is appended there as an anchored pattern
(``/node_modules``), once, under a file lock; ``/.stretto/`` is added the same way. Side effects:
such a pattern also hides an untracked, not-ignored directory of that name in the user's own
``git status``; and the directory is shared, so ``npm install`` in a worktree changes the main
checkout's ``node_modules``. That is the price of cheap worktrees.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from stretto.engine.sparse import ensure_full, sparse_checkout
from stretto.engine.workspace_setup import SETUP_TIMEOUT, run_setup
from stretto.errors import RepoError
from stretto.git import (
    WorktreeEntry,
    current_branch,
    git_common_dir,
    git_dir,
    ignored_paths,
    is_ancestor,
    is_tracked,
    list_worktrees,
    rev_parse,
    run_git,
    toplevel,
)

WORKTREES_DIR = PurePosixPath(".stretto/worktrees")
"""Where worktrees live, relative to the repository's top directory."""
BRANCH_PREFIX = "stretto/"
"""Every branch stretto creates starts with this; stretto never deletes any other branch."""
AUTO_LINK_DIRS = ("node_modules", ".venv", "venv")
"""Top-level directories linked into every worktree when the main checkout has them untracked."""
PORT_BASE = 20000
"""First port of slot 0; see :func:`port_base`."""
PORT_STRIDE = 100
"""Ports reserved per slot."""

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_EXCLUDE_HEADER = "# stretto: its state directory and the directories it links into worktrees"
_COMMIT = ("-c", "commit.gpgsign=false", "commit", "--no-verify", "-q", "--cleanup=whitespace")
_DIFF = ("diff", "--name-status", "-z", "-M", "--no-ext-diff", "--no-textconv")


@dataclass(frozen=True, slots=True)
class Workspace:
    """One attempt's worktree: where it is, its branch and the commit it started from."""

    path: Path
    branch: str
    base: str  # full id of the commit the branch was forked from
    run_id: str
    task_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ChangedFile:
    """A path that differs between a workspace's base and its branch tip.

    ``status``: ``A`` added (copies too), ``M`` modified (type changes too), ``D`` deleted, ``R``
    renamed (``old_path`` set).
    """

    path: str
    status: Literal["A", "M", "D", "R"]
    old_path: str | None = None


def branch_name(run_id: str, task_id: str, attempt: int) -> str:
    """Return ``stretto/<run>/<task>/<attempt>``.

    Raises:
        ValueError: An id is not letters, digits, ``.``, ``_`` and ``-``, or ``attempt < 0``.
    """
    for label, value in (("run id", run_id), ("task id", task_id)):
        if not _ID.fullmatch(value) or ".." in value or value.endswith((".lock", ".")):
            raise ValueError(f"{label} {value!r} must be letters, digits, '.', '_' or '-'")
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, not {attempt}")
    return f"{BRANCH_PREFIX}{run_id}/{task_id}/{attempt}"


def parse_branch(branch: str) -> tuple[str, str, int] | None:
    """Return ``(run_id, task_id, attempt)`` for a name :func:`branch_name` makes, else ``None``."""
    parts = branch.split("/")
    if len(parts) != 4 or f"{parts[0]}/" != BRANCH_PREFIX or not parts[3].isdigit():
        return None
    try:
        branch_name(parts[1], parts[2], int(parts[3]))
    except ValueError:
        return None
    return parts[1], parts[2], int(parts[3])


def worktrees_root(repo: Path) -> Path:
    """Return ``<top of repo>/.stretto/worktrees`` (it may not exist yet)."""
    return _top_and_root(repo)[1]


def port_base(slot: int) -> int:
    """Return the first port of workspace slot ``slot``, for ``STRETTO_PORT_BASE``.

    Slot ``n`` owns ports ``PORT_BASE + n*PORT_STRIDE`` up to, not including, the next slot's, so
    dev servers of parallel attempts do not collide.

    Raises:
        ValueError: The slot is negative or its range would pass port 65535.
    """
    last_slot = (65536 - PORT_BASE) // PORT_STRIDE - 1
    if not 0 <= slot <= last_slot:
        raise ValueError(f"port slot must be between 0 and {last_slot}, not {slot}")
    return PORT_BASE + slot * PORT_STRIDE


def create_workspace(
    repo: Path,
    run_id: str,
    task_id: str,
    attempt: int,
    base: str,
    *,
    link_dirs: Sequence[str] = (),
    setup: Sequence[str] = (),
    setup_timeout: float = SETUP_TIMEOUT,
    setup_env: Mapping[str, str] | None = None,
    sparse: Sequence[str] | None = None,
    adopt: bool = True,
) -> Workspace:
    """Create, or finish creating, one attempt's worktree; safe to call again after a crash.

    Worktree registered on the right branch: kept. Branch without a directory: registration
    dropped, worktree re-added on the existing branch (its commits kept). A directory git does not
    know, or a broken or half-initialised worktree: removed, then redone. Nothing: ``git worktree
    add -b``. Then shared directories are linked and ``setup`` runs, every time, so setup commands
    must be idempotent (as ``npm ci`` and ``uv sync`` are).

    Args:
        repo: Any directory in the repository.
        run_id: The run's id.
        task_id: The task's id.
        attempt: The attempt number.
        base: The revision to fork from.
        link_dirs: Extra paths relative to the top (``frontend/node_modules``) to link if present.
        setup: Shell commands run in order with ``bash -c`` in the worktree.
        setup_timeout: Seconds each setup command may take.
        setup_env: Extra environment variables for the setup commands.
        sparse: ``None`` checks out every file; otherwise the worktree is a cone-mode sparse
            checkout (``git sparse-checkout set --cone``) of these directories: it holds the
            top-level files, the files directly inside each parent of a listed directory and
            everything beneath a listed one.
        adopt: Take over an existing branch of the attempt's name (after a crash it holds this
            attempt's own work). ``False`` for an attempt that has never started: a branch of
            that name with commits beyond ``base`` is someone else's and is refused.

    Returns:
        The workspace, ``base`` resolved to a full commit id.

    Raises:
        ValueError: An id or a link path is malformed.
        RepoError: ``base`` does not exist, or the branch exists but does not contain it, or the
            branch is checked out elsewhere.
        WorkspaceSetupError: A setup command failed.
    """
    branch = branch_name(run_id, task_id, attempt)
    top, root = _top_and_root(repo)
    # A full commit id needs no lookup (the runner passes one); `worktree add` checks it anyway.
    full = re.fullmatch(r"[0-9a-f]{40}", base) is not None
    base_sha = base if full else rev_parse(top, f"{base}^{{commit}}")
    if base_sha is None:
        raise RepoError(f"base commit {base!r} does not exist in {top}")
    path = root / f"{run_id}-{task_id}-{attempt}"
    root.mkdir(parents=True, exist_ok=True)
    fresh = not os.path.lexists(path)  # `worktree add -b` refuses an existing branch anyway
    populate = False
    with worktree_lock(top):
        # The usual case, a new attempt, only registers the worktree inside the lock (one quick
        # git command); its files are checked out after the lock is released. Anything else (a
        # resume after a crash, a half-made worktree) takes the careful path.
        add = ["worktree", "add", "--no-checkout", "--no-track", "-b", branch, str(path), base_sha]
        if fresh and run_git(add, top, check=False).returncode == 0:
            populate = True
            if sparse is not None:  # under the lock: git may write the shared config
                sparse_checkout(path, sparse)
            else:
                ensure_full(path)
        else:
            if not adopt:
                _refuse_foreign(top, branch, base_sha)
            _ensure_worktree(top, root, path, branch, base_sha)
            if sparse is not None:
                sparse_checkout(path, sparse)
            else:
                ensure_full(path)
    if populate:
        run_git(["reset", "--hard", "-q", base_sha], path)
    link_shared_dirs(top, path, [*AUTO_LINK_DIRS, *link_dirs])
    ws = Workspace(path, branch, base_sha, run_id, task_id, attempt)
    run_setup(path, setup, timeout=setup_timeout, env=setup_env)
    return ws


def _ensure_worktree(top: Path, root: Path, path: Path, branch: str, base_sha: str) -> None:
    entries = list_worktrees(top)
    here = _entry_at(entries, path)
    if here is not None:
        if (
            here.branch == branch
            and not here.prunable
            and here.locked != "initializing"  # git's lock while `worktree add` populates
            and (path / ".git").is_file()
        ):
            _check_contains(top, base_sha, branch)
            return
        _discard(top, root, path, registered=True)
    elif os.path.lexists(path):
        _discard(top, root, path, registered=False)
    if rev_parse(top, f"refs/heads/{branch}") is None:
        run_git(["worktree", "add", "--no-track", "-b", branch, str(path), base_sha], top)
        return
    _check_contains(top, base_sha, branch)
    for other in entries:
        if other.branch == branch and not _same(other.path, path):
            if not (other.prunable and _is_under(other.path, root)):
                raise RepoError(
                    f"branch {branch} is checked out at {other.path}; switch that checkout to "
                    "another branch or remove it, then retry"
                )
            _discard(top, root, other.path, registered=True)
    run_git(["worktree", "add", str(path), branch], top)


def _refuse_foreign(top: Path, branch: str, base_sha: str) -> None:
    tip = rev_parse(top, f"refs/heads/{branch}")
    if tip is not None and tip != base_sha:
        raise RepoError(
            f"branch {branch} already exists with commits stretto did not make for this attempt "
            f"(at {tip[:12]}); it is left alone. Rename it (`git branch -m {branch} NEW`) or "
            "start the run under another id"
        )


def _check_contains(top: Path, base_sha: str, branch: str) -> None:
    if not is_ancestor(top, base_sha, f"refs/heads/{branch}"):
        raise RepoError(
            f"branch {branch} already exists but does not contain base commit {base_sha[:12]}; "
            f"delete it (`git branch -D {branch}`) or run `stretto clean`, then retry"
        )


def link_shared_dirs(top: Path, worktree: Path, names: Iterable[str]) -> list[str]:
    """Symlink untracked directories of the main checkout into a worktree; idempotent.

    A path is linked when it is a directory in the main checkout, nothing under it is tracked and
    the worktree has nothing at that path. Every link is then hidden from ``git status``.

    Args:
        top: The main checkout's top directory.
        worktree: The worktree's top directory.
        names: Paths relative to the top, e.g. ``node_modules`` or ``frontend/node_modules``.

    Returns:
        The paths that are links into the main checkout after the call.

    Raises:
        ValueError: A name is absolute or climbs out with ``..``.
    """
    present: list[str] = []
    for name in dict.fromkeys(names):
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or name.startswith("~"):
            raise ValueError(f"link path {name!r} must be relative to the repository top")
        source, target = top / rel, worktree / rel
        if os.path.islink(target) and _same(target, source):
            present.append(rel.as_posix())
        elif source.is_dir() and not os.path.lexists(target) and not is_tracked(top, str(rel)):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source, target, target_is_directory=True)
            present.append(rel.as_posix())
    hidden = ignored_paths(worktree, present) if present else set()
    patterns = [f"/{_escape_pattern(p)}" for p in present if p not in hidden]
    if not _state_dir_ignored(top):
        patterns.append(f"/{WORKTREES_DIR.parts[0]}/")
    if patterns:
        _append_excludes(git_common_dir(worktree) / "info" / "exclude", patterns)
    return present


_IGNORED_STATE: set[Path] = set()


def _state_dir_ignored(top: Path) -> bool:
    """Whether ``.stretto/`` is ignored in ``top`` (remembered once true: it stays so)."""
    if top in _IGNORED_STATE:
        return True
    if ignored_paths(top, [WORKTREES_DIR.parts[0]]):
        _IGNORED_STATE.add(top)
        return True
    return False


def _escape_pattern(path: str) -> str:
    escaped = re.sub(r"([\\*?\[])", r"\\\1", path)
    return escaped[:-1] + "\\ " if escaped.endswith(" ") else escaped


def _append_excludes(exclude: Path, patterns: Sequence[str]) -> None:
    """Append the patterns that ``exclude`` lacks, holding a lock on the file itself."""
    exclude.parent.mkdir(parents=True, exist_ok=True)
    with open(exclude, "a+", encoding="utf-8") as file:
        fcntl.flock(file, fcntl.LOCK_EX)  # released when the file closes
        file.seek(0)
        text = file.read()
        lines = set(text.splitlines())
        new = [p for p in dict.fromkeys(patterns) if p not in lines]
        if new:
            header = [] if _EXCLUDE_HEADER in lines else [_EXCLUDE_HEADER]
            prefix = "\n" if text and not text.endswith("\n") else ""
            file.write(prefix + "\n".join([*header, *new]) + "\n")
            file.flush()
            os.fsync(file.fileno())


def commit_all(ws: Workspace, message: str, *, author: str = "stretto <stretto@localhost>") -> str:
    """Stage everything in the workspace and commit it if anything changed.

    ``git add -A`` honours ``.gitignore`` and the excludes, so linked directories are never
    staged; in a sparse worktree it also stages new files outside the cone (``--sparse``), so
    the scope gate sees every change. This commit is stretto's bookkeeping: like every git
    command of stretto's it runs no hook (:mod:`stretto.git`; checks belong in gates), it turns
    signing off and sets author and committer explicitly, which also makes it work with no git
    identity configured.

    Args:
        ws: The workspace.
        message: The commit message, kept verbatim (``#`` lines included).
        author: ``Name <email>``, used as author and committer.

    Returns:
        The branch tip afterwards: the new commit, or the current one when nothing changed (the
        agent may have committed by itself).

    Raises:
        ValueError: ``author`` is not ``Name <email>``.
        RepoError: The worktree is no longer on its branch, or git failed.
    """
    match = re.fullmatch(r"\s*(.*?)\s*<([^<>]*)>\s*", author)
    if match is None or not match.group(1):
        raise ValueError(f"author must look like 'Name <email>', not {author!r}")
    name, email = match.groups()
    on = current_branch(ws.path)
    if on != ws.branch:
        raise RepoError(
            f"workspace {ws.path} is on {on or 'a detached HEAD'}, not on its branch {ws.branch}, "
            f"so its work would be lost; inspect it, then `git switch {ws.branch}` there"
        )
    run_git(["add", "-A", "--sparse"], ws.path)  # `--sparse`: also paths outside a sparse cone
    if run_git(["diff", "--cached", "--quiet"], ws.path, check=False).returncode != 0:
        identity = {
            f"GIT_{who}_{what}": value
            for who in ("AUTHOR", "COMMITTER")
            for what, value in (("NAME", name), ("EMAIL", email))
        }
        config = ["-c", f"user.name={name}", "-c", f"user.email={email}"]
        run_git([*config, *_COMMIT, "--file=-"], ws.path, input=message, env=identity)
    head = rev_parse(ws.path, "HEAD")
    if head is None:  # pragma: no cover - the branch was forked from a commit
        raise RepoError(f"workspace {ws.path} has no HEAD commit")
    return head


def clear_stale_locks(ws: Workspace) -> list[str]:
    """Remove the lock files an agent left in its worktree's own git directory and on its
    branch (``index.lock``, ``HEAD.lock``, ``<branch>.lock``); return their names.

    Call only when no process of the attempt is left (its agent has ended and every process
    carrying its token is gone): then nobody holds them, and git would refuse to commit.
    """
    own = git_dir(ws.path)
    common = git_common_dir(ws.path)
    candidates = [own / "index.lock", own / "HEAD.lock", common / f"refs/heads/{ws.branch}.lock"]
    removed = []
    for path in candidates:
        if path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path.name)
    return removed


def changed_files(ws: Workspace) -> list[ChangedFile]:
    """Return what differs between ``ws.base`` and the tip of ``ws.branch``, sorted by path.

    Rename detection is on (``-M``): a moved file is one ``R`` entry, not a delete and an add.
    """
    out = run_git([*_DIFF, ws.base, f"refs/heads/{ws.branch}", "--"], ws.path).stdout
    tokens = out.split("\0")
    changes: list[ChangedFile] = []
    i = 0
    while i < len(tokens) and tokens[i]:
        kind = tokens[i][0]
        if kind in "RC":
            old, new = tokens[i + 1], tokens[i + 2]
            changes.append(ChangedFile(new, "R", old) if kind == "R" else ChangedFile(new, "A"))
            i += 3
            continue
        status: Literal["A", "M", "D", "R"] = "A" if kind == "A" else "D" if kind == "D" else "M"
        changes.append(ChangedFile(tokens[i + 1], status))
        i += 2
    return changes


def remove_workspace(
    repo: Path, ws: Workspace, *, delete_branch: bool, expected_sha: str | None = None
) -> bool:
    """Remove a workspace's worktree and, if asked, its branch; safe to call again.

    The branch is deleted with ``git update-ref -d refs/heads/<branch> <expected_sha>``, so a
    branch that no longer points at ``expected_sha`` (it gained commits) is left alone.

    Args:
        repo: Any directory in the repository.
        ws: The workspace.
        delete_branch: Also delete the branch.
        expected_sha: The commit the branch must point at; required with ``delete_branch``.

    Returns:
        ``False`` when the branch delete was refused because the branch moved, else ``True``
        (also when the branch was already gone).

    Raises:
        ValueError: ``delete_branch`` without ``expected_sha``, or a path outside the root.
    """
    if delete_branch and not expected_sha:
        raise ValueError("delete_branch needs expected_sha, the commit the branch must point at")
    top, root = _top_and_root(repo)
    if not _is_under(ws.path, root):
        raise ValueError(f"refusing to remove {ws.path}: it is not under {root}")
    _empty_worktree(ws.path)  # the slow part, outside the lock
    with worktree_lock(top):
        quick = run_git(
            ["worktree", "remove", "--force", "--force", str(ws.path)], top, check=False
        )
        if quick.returncode != 0 or os.path.lexists(ws.path):
            registered = _entry_at(list_worktrees(top), ws.path) is not None
            if registered or os.path.lexists(ws.path):
                _discard(top, root, ws.path, registered=registered)
    if not delete_branch or expected_sha is None:
        return True
    return _delete_branch(top, ws.branch, expected_sha)


def _empty_worktree(path: Path) -> None:
    """Delete a worktree's files but its ``.git`` link, so git's own removal is quick."""
    if not (path / ".git").is_file():
        return
    for child in path.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir() and not child.is_symlink():
            _rmtree(child)
        else:
            with contextlib.suppress(FileNotFoundError):
                child.unlink()


def _delete_branch(top: Path, branch: str, expected_sha: str) -> bool:
    ref = f"refs/heads/{branch}"
    expected = rev_parse(top, expected_sha) or expected_sha
    current = rev_parse(top, ref)
    if current is None:
        return True
    if current != expected:
        return False
    args = ["update-ref", "-m", f"stretto: delete {branch}", "-d", ref, expected]
    return run_git(args, top, check=False).returncode == 0 or rev_parse(top, ref) is None


def _discard(top: Path, root: Path, path: Path, *, registered: bool) -> None:
    """Remove a worktree or stray directory under ``root``, whatever state it is in."""
    if not _is_under(path, root):
        raise ValueError(f"refusing to remove {path}: it is not under {root}")
    remove = ["worktree", "remove", "--force", "--force", str(path)]  # dirty, locked or missing
    if registered:
        run_git(remove, top, check=False)
    if os.path.lexists(path):  # a stray directory, or git refused (it holds submodules, …)
        _rmtree(path)
    if registered and _entry_at(list_worktrees(top), path) is not None:
        run_git(remove, top)


def _rmtree(path: Path) -> None:
    """Delete ``path`` without following symlinks, making read-only directories writable."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return

    def retry(func: Callable[..., Any], failed: str, _error: object) -> None:
        os.chmod(os.path.dirname(failed), stat.S_IRWXU)
        if not os.path.islink(failed) and os.path.isdir(failed):
            os.chmod(failed, stat.S_IRWXU)
        func(failed)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


@contextlib.contextmanager
def worktree_lock(top: Path) -> Iterator[None]:
    """Hold stretto's lock on adding and removing worktrees of the repository at ``top``.

    ``git worktree add`` reads every registered worktree and dies on one that a concurrent
    ``add`` has half written ("failed to read .git/worktrees/<name>/commondir"), so stretto
    changes worktrees one at a time, across threads and processes: an ``flock`` on
    ``.stretto/worktrees.lock``. Anything else in stretto that adds or removes worktrees (the
    merge queue's integration workspace) should hold it too.
    """
    lock_path = top / WORKTREES_DIR.parent / "worktrees.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _top_and_root(repo: Path) -> tuple[Path, Path]:
    top = _real_top(str(repo))
    return top, top / WORKTREES_DIR


@functools.lru_cache(maxsize=64)
def _real_top(repo: str) -> Path:
    # The top of a work tree does not change while stretto runs; asking git once is enough.
    return Path(os.path.realpath(toplevel(Path(repo))))


def _entry_at(entries: Iterable[WorktreeEntry], path: Path) -> WorktreeEntry | None:
    return next((e for e in entries if _same(e.path, path)), None)


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _is_under(path: Path, root: Path) -> bool:
    real, real_root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return real != real_root and real.is_relative_to(real_root)
