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

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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

    def wrap(self, argv: Sequence[str], worktree: Path, private_tmp: Path) -> list[str]:
        """``argv`` under bubblewrap, working in ``worktree``; see :func:`wrap`."""
        return wrap(
            argv, worktree=worktree, private_tmp=private_tmp, settings=self.settings, top=self.top
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
    worktree: Path, private_tmp: Path, settings: SandboxSettings, top: Path
) -> list[Path]:
    """Every path the process may write to (each exists), in mount order."""
    paths = [worktree.resolve(), private_tmp]
    own, common, branch = _git_dirs(worktree)
    if own is not None:
        paths.append(own)
    if common is not None:
        paths.append(common / "objects")
        if branch is not None:
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


def wrap(
    argv: Sequence[str],
    *,
    worktree: Path,
    private_tmp: Path,
    settings: SandboxSettings,
    top: Path,
) -> list[str]:
    """``argv`` run under bubblewrap as the module docstring describes.

    Args:
        argv: The command.
        worktree: The worktree it works in (writable, with what a commit there writes).
        private_tmp: An empty directory of its own, mounted at ``/tmp``.
        settings: The ``[sandbox]`` settings.
        top: The repository's top (relative ``writable`` paths start there).
    """
    program = bwrap() or "bwrap"
    private_tmp.mkdir(parents=True, exist_ok=True)
    args = [program, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    args += ["--bind", str(private_tmp), "/tmp"]
    real_top = top.resolve()
    if real_top.is_relative_to("/tmp"):  # the private /tmp hid it: show it again, read-only
        args += ["--ro-bind", str(real_top), str(real_top)]
    for path in writable_paths(worktree, private_tmp, settings, top):
        if path != private_tmp:
            args += ["--bind", str(path), str(path)]
    args += ["--setenv", "TMPDIR", "/tmp", "--chdir", str(worktree.resolve())]
    args += ["--unshare-pid", "--unshare-ipc", "--new-session", "--die-with-parent"]
    if not settings.network:
        args.append("--unshare-net")
    return [*args, "--", *argv]
