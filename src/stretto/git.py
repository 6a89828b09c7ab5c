"""A thin, typed wrapper around the ``git`` command line.

Every git call stretto makes goes through :func:`run_git`, which

* passes ``-c core.quotepath=off`` so non-ASCII paths come back verbatim;
* passes ``-c core.hooksPath=/dev/null``, so stretto's own git commands (worktrees, its
  bookkeeping commits, checkouts, merges, ref updates) never run the repository's hooks: a
  failing ``pre-commit``, ``prepare-commit-msg`` or ``post-checkout`` hook cannot block them, and
  nothing a hook does happens behind the user's back. Agents run git themselves, so their own
  commits do run the hooks;
* sets ``GIT_TERMINAL_PROMPT=0`` (never hang on a credential prompt) and ``LC_ALL=C`` (stable,
  parseable messages);
* drops the variables that redirect git to another repository (``GIT_DIR``, ``GIT_WORK_TREE``,
  ``GIT_INDEX_FILE``, …), so stretto started from inside a git hook still works on ``cwd``;
* raises :class:`GitCommandError` (a :class:`~stretto.errors.RepoError`) naming the command, the
  directory and git's own message when a checked command fails.

Output is decoded as UTF-8 with ``surrogateescape``, so a path that is not valid UTF-8 still
round-trips through :class:`pathlib.Path`.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stretto.errors import NotARepositoryError, RepoError

#: Variables that would make git operate on some repository other than ``cwd``.
_REDIRECTING_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_COMMON_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


#: ``-c`` settings in front of every git command stretto runs (see the module docstring).
_FIXED_CONFIG = ("-c", "core.quotepath=off", "-c", f"core.hooksPath={os.devnull}")


@dataclass(frozen=True, slots=True)
class GitResult:
    """What one git command returned."""

    returncode: int
    stdout: str
    stderr: str


class GitCommandError(RepoError):
    """A git command failed; carries ``command``, ``cwd``, ``returncode`` and git's ``stderr``."""

    def __init__(self, args: Sequence[str], cwd: Path, returncode: int, stderr: str) -> None:
        self.command = ["git", *args]
        self.cwd = cwd
        self.returncode = returncode
        self.stderr = stderr
        detail = stderr.strip() or "(no message from git)"
        super().__init__(
            f"`git {' '.join(args)}` failed with exit status {returncode} in {cwd}:\n{detail}"
        )


def without_git_redirects(env: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of ``env`` without the variables that point git at another repository.

    Use it for any child process that may run git in a directory of stretto's choosing (setup
    commands, agents): a ``GIT_DIR`` inherited from a hook would otherwise win over the cwd.
    """
    return {k: v for k, v in env.items() if k not in _REDIRECTING_ENV}


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the environment git runs with: ours, minus redirections, plus fixed settings.

    Args:
        extra: Variables to set on top (they win over everything else).
    """
    env = without_git_redirects(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    if extra:
        env.update(extra)
    return env


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    check: bool = True,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> GitResult:
    """Run ``git <args>`` in ``cwd`` and return its exit status and output.

    Args:
        args: Arguments after ``git`` (``-c core.quotepath=off -c core.hooksPath=/dev/null`` is
            always added in front).
        cwd: Directory to run in.
        check: Raise :class:`GitCommandError` when git exits non-zero.
        input: Text fed to git's standard input (standard input is empty otherwise).
        env: Extra environment variables for this call.
        timeout: Seconds before the command is killed and :class:`~stretto.errors.RepoError`
            raised; ``None`` waits forever.

    Returns:
        The exit status and the decoded standard output and error.

    Raises:
        GitCommandError: ``check`` is true and git failed.
        RepoError: git is not installed, ``cwd`` does not exist, or the timeout passed.
    """
    argv = ["git", *_FIXED_CONFIG, *args]
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="surrogateescape",
            env=git_env(env),
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as error:
        if not cwd.is_dir():
            raise RepoError(f"directory {cwd} does not exist") from error
        raise RepoError("git is not installed or not on PATH; install git and retry") from error
    except NotADirectoryError as error:
        raise RepoError(f"{cwd} is not a directory") from error
    except subprocess.TimeoutExpired as error:
        raise RepoError(
            f"`git {' '.join(args)}` did not finish within {timeout} s in {cwd}"
        ) from error
    result = GitResult(proc.returncode, proc.stdout, proc.stderr)
    if check and result.returncode != 0:
        raise GitCommandError(list(args), cwd, result.returncode, result.stderr)
    return result


def rev_parse(cwd: Path, rev: str) -> str | None:
    """Return the full object id ``rev`` names, or ``None`` when it names nothing.

    Args:
        cwd: A directory inside the repository.
        rev: Any revision git understands (``HEAD``, ``main``, ``abc123^{commit}``, …).
    """
    result = run_git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", rev], cwd, check=False
    )
    sha = result.stdout.strip()
    return sha if result.returncode == 0 and sha else None


def toplevel(cwd: Path) -> Path:
    """Return the top directory of the working tree that contains ``cwd``.

    Raises:
        NotARepositoryError: ``cwd`` is not inside a git working tree (with the fix: ``git
            init``), or is inside a bare repository.
    """
    key = os.path.abspath(cwd)
    if key in _TOPLEVELS:  # a work tree's top does not move while stretto runs
        return _TOPLEVELS[key]
    result = run_git(["rev-parse", "--show-toplevel"], cwd, check=False)
    if result.returncode != 0:
        if "not a git repository" in result.stderr:
            raise NotARepositoryError(
                f"{cwd} is not a git repository; run `git init` there first (and make a first "
                "commit), or run stretto inside a repository"
            )
        if "must be run in a work tree" in result.stderr:
            raise NotARepositoryError(
                f"{cwd} is a bare repository; stretto needs a working tree (clone it)"
            )
        raise GitCommandError(
            ["rev-parse", "--show-toplevel"], cwd, result.returncode, result.stderr
        )
    top = Path(result.stdout.rstrip("\n"))
    _TOPLEVELS[key] = top
    return top


_TOPLEVELS: dict[str, Path] = {}


def git_common_dir(cwd: Path) -> Path:
    """Return the absolute git directory shared by all worktrees of the repository at ``cwd``."""
    out = run_git(["rev-parse", "--git-common-dir"], cwd).stdout.rstrip("\n")
    return (cwd / out).resolve()


def git_dir(cwd: Path) -> Path:
    """Return the absolute git directory of the worktree at ``cwd`` (its own, for a linked one)."""
    out = run_git(["rev-parse", "--git-dir"], cwd).stdout.rstrip("\n")
    return (cwd / out).resolve()


def current_branch(cwd: Path) -> str | None:
    """Return the short name of the branch checked out at ``cwd``, or ``None`` when detached.

    An unborn branch (a fresh ``git init`` without commits) is still returned by name.
    """
    result = run_git(["symbolic-ref", "--quiet", "HEAD"], cwd, check=False)
    ref = result.stdout.strip()
    if result.returncode != 0 or not ref:
        return None
    return ref.removeprefix("refs/heads/")


def is_clean(cwd: Path) -> bool:
    """Tell whether the working tree at ``cwd`` has no staged or unstaged changes to tracked files.

    Untracked files do **not** make a checkout dirty: a fast-forward never overwrites them unless
    the new commit adds the same path, and git itself refuses that case. Tracked modifications,
    staged changes and changed submodules do. Runs with ``--no-optional-locks`` so that asking
    never rewrites the user's index.
    """
    result = run_git(["--no-optional-locks", "status", "--porcelain", "--untracked-files=no"], cwd)
    return result.stdout.strip() == ""


def update_ref_cas(cwd: Path, ref: str, new: str, old: str | None, message: str) -> bool:
    """Move ``ref`` to ``new`` only if it currently points at ``old`` (compare-and-swap).

    Runs ``git update-ref -m <message> <ref> <new> <old>``, which git applies atomically under
    the ref's lock. While another git process holds that lock (``<ref>.lock`` exists), it tries
    again for about a second and a half before giving up.

    Args:
        cwd: A directory inside the repository.
        ref: The full ref name, e.g. ``refs/heads/main``.
        new: The object id to store.
        old: The object id the ref must hold now; ``None`` means the ref must not exist yet.
        message: The reflog message.

    Returns:
        ``True`` when the ref was moved; ``False`` when it did not hold ``old``.

    Raises:
        ValueError: ``ref`` is not a full ref name.
        GitCommandError: The update failed for another reason (e.g. ``new`` does not exist).
    """
    if not ref.startswith("refs/"):
        raise ValueError(
            f"update_ref_cas needs a full ref name such as refs/heads/main, not {ref!r}"
        )
    args = ["update-ref", "-m", message, ref, new, old if old is not None else ""]
    for pause in (0.05, 0.1, 0.2, 0.4, 0.8, 0.0):
        result = run_git(args, cwd, check=False)
        if result.returncode == 0:
            return True
        if "cannot lock ref" not in result.stderr or "is at" in result.stderr:
            break
        time.sleep(pause)  # another git process holds the ref's lock for a moment
    current = rev_parse(cwd, ref)
    if current != (rev_parse(cwd, old) if old is not None else None):
        return False
    raise GitCommandError(args, cwd, result.returncode, result.stderr)


@dataclass(frozen=True, slots=True)
class WorktreeEntry:
    """One record of ``git worktree list --porcelain``."""

    path: Path
    head: str | None  # None for a worktree on an unborn branch
    branch: str | None  # short name; None when detached or bare
    bare: bool = False
    locked: str | None = None  # the lock reason ("" when locked without one); None when unlocked
    prunable: bool = False  # the directory is gone; ``git worktree prune`` would drop it


def list_worktrees(cwd: Path) -> list[WorktreeEntry]:
    """Return every worktree registered in the repository at ``cwd``, the main one first."""
    out = run_git(["worktree", "list", "--porcelain"], cwd).stdout
    entries: list[WorktreeEntry] = []
    for block in out.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value
        if "worktree" not in fields:
            continue
        branch = fields.get("branch")
        entries.append(
            WorktreeEntry(
                path=Path(fields["worktree"]),
                head=fields.get("HEAD") or None,
                branch=branch.removeprefix("refs/heads/") if branch else None,
                bare="bare" in fields,
                locked=fields.get("locked"),
                prunable="prunable" in fields,
            )
        )
    return entries


def is_ancestor(cwd: Path, ancestor: str, rev: str) -> bool:
    """Tell whether commit ``ancestor`` is reachable from ``rev`` (a commit is its own ancestor)."""
    return run_git(["merge-base", "--is-ancestor", ancestor, rev], cwd, check=False).returncode == 0


def branch_tips(cwd: Path, prefix: str = "") -> dict[str, str]:
    """Return ``{short branch name: commit id}`` for the branches whose name starts with ``prefix``.

    ``prefix`` is matched as git's ``for-each-ref`` does: ``"stretto/"`` selects everything under
    ``refs/heads/stretto/``.
    """
    fmt = "--format=%(refname)%00%(objectname)"
    out = run_git(["for-each-ref", fmt, f"refs/heads/{prefix}"], cwd).stdout
    tips: dict[str, str] = {}
    for line in out.splitlines():
        ref, _, sha = line.partition("\0")
        tips[ref.removeprefix("refs/heads/")] = sha
    return tips


def ignored_paths(cwd: Path, paths: Sequence[str]) -> set[str]:
    """Return those of ``paths`` (relative to ``cwd``) that ``.gitignore`` or excludes ignore.

    Paths are looked at as they are on disk: a symlink is a file even if it points at a directory.
    """
    if not paths:
        return set()
    stdin = "".join(f"{p}\0" for p in paths)
    result = run_git(["check-ignore", "-z", "--stdin"], cwd, check=False, input=stdin)
    if result.returncode not in (0, 1):
        raise GitCommandError(
            ["check-ignore", "-z", "--stdin"], cwd, result.returncode, result.stderr
        )
    return {p for p in result.stdout.split("\0") if p}


def is_tracked(cwd: Path, path: str) -> bool:
    """Tell whether the index at ``cwd`` tracks ``path`` or anything under it (taken literally)."""
    return run_git(["ls-files", "-z", "--", f":(literal){path}"], cwd).stdout != ""


#: The identity stretto commits with when the user has none configured (docs/agents.md).
STRETTO_IDENTITY = ("stretto", "stretto@localhost")


def user_identity(cwd: Path) -> tuple[str, str]:
    """The git identity (name, email) the user commits with in ``cwd``, as git resolves it from
    the user's own configuration (``~/.gitconfig``, the repository's, ``GIT_AUTHOR_*``); parts
    git cannot resolve come from :data:`STRETTO_IDENTITY`."""
    found: list[str] = []
    for key, fallback in zip(("user.name", "user.email"), STRETTO_IDENTITY, strict=True):
        value = run_git(["config", "--get", key], cwd, check=False).stdout.strip()
        found.append(value or fallback)
    return found[0], found[1]


def identity_env(identity: tuple[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """Variables that give every git command a child runs ``user.name`` and ``user.email``
    without writing any config file (``GIT_CONFIG_COUNT``, git 2.31+), added after any such
    settings ``env`` already carries.

    An agent with a ``HOME`` of its own (aider) cannot see ``~/.gitconfig``; aider then writes
    a made-up identity into the repository's shared ``.git/config`` (and two at once race on
    its lock). With these variables it sees one and writes nothing.
    """
    try:
        start = int(env.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        start = 0
    out = {"GIT_CONFIG_COUNT": str(start + 2)}
    for offset, (key, value) in enumerate(zip(("user.name", "user.email"), identity, strict=True)):
        out[f"GIT_CONFIG_KEY_{start + offset}"] = key
        out[f"GIT_CONFIG_VALUE_{start + offset}"] = value
    return out
