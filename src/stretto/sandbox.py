"""The opt-in sandbox: agents (and the command gates that run their code) under bubblewrap.

With ``[sandbox] enabled = true`` in stretto.toml, every agent process and every command gate is
started as ``bwrap ... -- argv``: the whole filesystem is mounted read-only, then made writable
again only where the attempt needs to write:

* the attempt's worktree;
* of the repository's git directory, only what a commit in that worktree writes: the object
  store (``objects/``), the worktree's own administrative directory (``worktrees/<name>/``:
  its HEAD, index and reflog) and the directory of the attempt's own branch under
  ``refs/heads/`` and ``logs/refs/heads/``. Every other ref, the target branch among them,
  ``packed-refs``, ``config``, ``hooks/`` and ``info/`` stay read-only;
* a private, empty ``/tmp`` per process (``TMPDIR=/tmp``);
* the attempt's own homes: the directories of its folder (``.stretto/runs/<run>/tasks/<task>/
  <n>/``) that its environment points into, where adapters keep each CLI's per-attempt
  configuration (``CLAUDE_CONFIG_DIR``, ``CODEX_HOME``, …); the folder itself (prompt, log,
  pid file) stays read-only;
* the agents' own state directories that exist in ``$HOME`` (:data:`AGENT_STATE`: logins,
  sessions, caches), and any path listed in ``writable``.

The process runs in new PID and IPC namespaces (a daemon it leaves behind dies with it, even one
that dropped stretto's token from its environment) and a new session; the network is left as it
is unless ``network = false``. The user's checkout, its untracked files, ``.git/hooks``,
``.git/config`` and stretto's own files are read-only inside. The object store is not protected
(an agent can write, or delete, objects), nor is anything listed in ``writable``, nor the
network. See docs/sandbox.md.

A base module: it only builds argument lists and probes ``bwrap``; :mod:`stretto.engine` wraps
its processes with :func:`wrap`.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stretto.errors import RepoError
from stretto.git import git_common_dir

#: Where agent CLIs keep logins, sessions and caches under $HOME: writable when they exist.
AGENT_STATE = (
    ".claude",
    ".claude.json",
    ".codex",
    ".gemini",
    ".qwen",
    ".config/opencode",
    ".local/share/opencode",
    ".local/state/opencode",
    ".aider",
    ".cache",
    ".npm",
)
INSTALL_HINT = (
    "install bubblewrap (`apt-get install bubblewrap`, or scripts/install-system in a checkout "
    "of stretto), or set enabled = false under [sandbox] in stretto.toml"
)


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    """``[sandbox]`` in stretto.toml.

    Attributes:
        enabled: Run agents and command gates under bubblewrap.
        writable: Extra paths that stay writable (``~`` is the home directory; relative paths
            are relative to the repository's top).
        network: Leave the network as it is (``False``: no network inside, only loopback).
    """

    enabled: bool = False
    writable: tuple[str, ...] = ()
    network: bool = True

    def to_dict(self) -> dict[str, object]:
        """Plain data (the journal's copy of a run's options)."""
        return {"enabled": self.enabled, "writable": list(self.writable), "network": self.network}

    @classmethod
    def from_dict(cls, data: object) -> SandboxSettings:
        """Inverse of :meth:`to_dict`; a run journaled before the sandbox existed has none."""
        if not isinstance(data, dict):
            return cls()
        return cls(
            bool(data.get("enabled", False)),
            tuple(data.get("writable", ())),
            bool(data.get("network", True)),
        )


@dataclass(frozen=True, slots=True)
class Sandbox:
    """The sandbox of one run: its settings and the repository's top directory."""

    settings: SandboxSettings
    top: Path

    def wrap(
        self,
        argv: Sequence[str],
        worktree: Path,
        private_tmp: Path,
        *,
        env: Mapping[str, str] | None = None,
        own_dir: Path | None = None,
    ) -> list[str]:
        """``argv`` under bubblewrap, working in ``worktree``; see :func:`wrap`."""
        return wrap(
            argv,
            worktree=worktree,
            private_tmp=private_tmp,
            settings=self.settings,
            top=self.top,
            extra=homes_in(env or {}, own_dir) if own_dir is not None else (),
            search_path=(env or {}).get("PATH", ""),
        )


def bwrap() -> str | None:
    """The ``bwrap`` program on PATH, or None."""
    return shutil.which("bwrap")


def unavailable() -> str | None:
    """Why the sandbox cannot run here (None: it works): bwrap missing, or refused to start
    (no user namespaces and not setuid)."""
    program = bwrap()
    if program is None:
        return f"bwrap (bubblewrap) is not installed; {INSTALL_HINT}"
    probe = [program, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    probe += ["--unshare-pid", "--die-with-parent", "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap could not be run: {error}"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return (
            f"bwrap is installed but cannot create a sandbox here ({why[0]}); it needs "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) or a "
            "setuid bwrap"
        )
    return None


def homes_in(env: Mapping[str, str], own_dir: Path) -> list[Path]:
    """The directories under ``own_dir`` (the attempt's folder) that ``env`` points into: the
    per-attempt homes adapters give their CLIs (``CLAUDE_CONFIG_DIR``, ``CODEX_HOME``, a
    ``HOME`` of its own, …). Each is the folder's direct subdirectory the path lies in; one that
    does not exist yet is created. A file directly in the folder (the prompt) is not one."""
    root = own_dir.resolve()
    found: list[Path] = []
    for value in env.values():
        if not value.startswith("/"):
            continue
        path = Path(os.path.normpath(value))
        if not path.is_relative_to(root) or path == root:
            continue
        first = root / path.relative_to(root).parts[0]
        if first == path and os.path.lexists(path) and not path.is_dir():
            continue
        if os.path.islink(first):
            continue
        first.mkdir(parents=True, exist_ok=True)
        if first not in found:
            found.append(first)
    return found


@functools.lru_cache(maxsize=16)
def _common_of(top: Path) -> Path | None:
    """The repository's own common git directory, asked of git in the main checkout."""
    try:
        return git_common_dir(top).resolve()
    except RepoError:
        return None


def _git_dirs(worktree: Path) -> tuple[Path | None, Path | None, str | None]:
    """The worktree's own git directory, the common one, and the branch HEAD names."""
    dot_git = worktree / ".git"
    try:
        text = dot_git.read_text().strip() if dot_git.is_file() else ""
    except OSError:
        return None, None, None
    if not text.startswith("gitdir:"):
        return None, None, None
    own = (worktree / text[len("gitdir:") :].strip()).resolve()
    try:
        common = (own / (own / "commondir").read_text().strip()).resolve()
        head = (own / "HEAD").read_text().strip()
    except OSError:
        return own, None, None
    branch = head[len("ref: ") :] if head.startswith("ref: refs/heads/") else None
    return own, common, branch


def writable_paths(
    worktree: Path,
    private_tmp: Path,
    settings: SandboxSettings,
    top: Path,
    extra: Sequence[Path] = (),
) -> list[Path]:
    """Every path the process may write to (each exists), in mount order."""
    paths = [worktree.resolve(), private_tmp, *extra]
    own, common, branch = _git_dirs(worktree)
    # The worktree's `.git` file is the agent's to rewrite: trust it only where it agrees with
    # the repository's own git directory, and only for one of stretto's branches.
    trusted = _common_of(top)
    if common is not None and common == trusted:
        if own is not None and own.is_relative_to(trusted / "worktrees") and own != trusted:
            paths.append(own)
        paths.append(common / "objects")
        if branch is not None and branch.startswith("refs/heads/stretto/") and ".." not in branch:
            parent = str(Path(branch).parent)  # refs/heads/stretto/<run>/<task>
            for base in (common, common / "logs"):
                folder = base / parent
                folder.mkdir(parents=True, exist_ok=True)
                paths.append(folder)
    home = Path(os.path.expanduser("~"))
    for name in AGENT_STATE:
        paths.append(home / name)
    for name in settings.writable:
        path = Path(os.path.expanduser(name))
        paths.append(path if path.is_absolute() else top / path)
    seen: list[Path] = []
    for path in paths:
        if os.path.lexists(path) and path not in seen:
            seen.append(path)
    return seen


def hidden_by_tmp(programs: Sequence[str]) -> list[Path]:
    """The folders right under ``/tmp`` holding these programs or ``PATH`` folders (as given
    and with links resolved), which the private ``/tmp`` would hide: an agent CLI or a tool
    installed in a checkout under ``/tmp`` (``/tmp/ci/.tools/...``) must still run."""
    shown: list[Path] = []
    for given in programs:
        if not given or not os.path.isabs(given):
            continue
        for candidate in (Path(os.path.abspath(given)), Path(os.path.realpath(given))):
            if candidate.is_relative_to("/tmp") and len(candidate.parts) > 2:
                folder = Path(*candidate.parts[:3])
                if folder.is_dir() and folder not in shown:
                    shown.append(folder)
    return shown


def wrap(
    argv: Sequence[str],
    *,
    worktree: Path,
    private_tmp: Path,
    settings: SandboxSettings,
    top: Path,
    extra: Sequence[Path] = (),
    search_path: str = "",
) -> list[str]:
    """``argv`` run under bubblewrap as the module docstring describes.

    Args:
        argv: The command.
        worktree: The worktree it works in (writable, with what a commit there writes).
        private_tmp: An empty directory of its own, mounted at ``/tmp``.
        settings: The ``[sandbox]`` settings.
        top: The repository's top (relative ``writable`` paths start there).
        extra: More writable directories (the attempt's own homes, :func:`homes_in`).
        search_path: The ``PATH`` the command gets: its folders under ``/tmp``, and the program's,
            are shown again read-only (see :func:`hidden_by_tmp`).
    """
    program = bwrap() or "bwrap"
    private_tmp.mkdir(parents=True, exist_ok=True)
    args = [program, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    args += ["--bind", str(private_tmp), "/tmp"]
    for shown in (top.resolve(), Path(os.path.expanduser("~")).resolve()):
        if shown.is_relative_to("/tmp") and shown.is_dir():  # hidden by the private /tmp
            args += ["--ro-bind", str(shown), str(shown)]  # so shown again, read-only
    for shown in hidden_by_tmp([argv[0], *search_path.split(os.pathsep)] if argv else []):
        args += ["--ro-bind", str(shown), str(shown)]
    for path in writable_paths(worktree, private_tmp, settings, top, extra):
        if path != private_tmp:
            args += ["--bind", str(path), str(path)]
    args += ["--setenv", "TMPDIR", "/tmp", "--chdir", str(worktree.resolve())]
    args += ["--unshare-pid", "--unshare-ipc", "--new-session", "--die-with-parent"]
    if not settings.network:
        args.append("--unshare-net")
    return [*args, "--", *argv]
