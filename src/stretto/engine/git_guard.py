"""The repository's own git files that run code: kept as they were when the run started.

An agent works in a worktree, but the repository's common git directory is within its reach:
a hook it writes (``.git/hooks/post-checkout``) or a setting it adds (``core.fsmonitor``,
``core.hooksPath``, a filter driver, an alias) runs a program of its choosing the next time
the user, or stretto, runs git. So stretto takes a copy of ``.git/config`` and ``.git/hooks/``
when the run starts and, after every agent, compares: anything changed is put back, what the
agent wrote is kept in the attempt's folder (``tampered/``), and the attempt fails.

A person who changes ``.git/config`` while a run is going has the change put back the same way
(it is kept in ``tampered/``, so nothing is lost); change it between runs. The sandbox
(:mod:`stretto.sandbox`) makes these files read-only to agents in the first place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from stretto.git import git_common_dir

GUARDED_FILE = "config"
GUARDED_DIR = "hooks"
MAX_FILE = 1 << 20  # bigger files are compared by size and time only

Snapshot = Mapping[str, tuple[bytes, int]]
"""Path relative to the common git directory -> (content, mode)."""


def common_dir(repo: Path) -> Path:
    """The repository's common git directory (``.git``)."""
    return git_common_dir(repo)


def snapshot(common: Path) -> dict[str, tuple[bytes, int]]:
    """The guarded files as they are now."""
    found: dict[str, tuple[bytes, int]] = {}
    paths = [common / GUARDED_FILE]
    hooks = common / GUARDED_DIR
    if hooks.is_dir():
        paths += sorted(p for p in hooks.rglob("*") if not p.is_dir() or p.is_symlink())
    for path in paths:
        with contextlib.suppress(OSError):
            info = path.lstat()
            if path.is_symlink():
                data = b"symlink:" + os.readlink(path).encode()
            elif info.st_size > MAX_FILE:
                data = f"large:{info.st_size}:{info.st_mtime_ns}".encode()
            else:
                data = path.read_bytes()
            found[path.relative_to(common).as_posix()] = (data, info.st_mode & 0o7777)
    return found


def restore(common: Path, before: Snapshot, keep: Path) -> tuple[list[str], int]:
    """Put the guarded files back as ``before`` had them.

    Every changed or added file is first copied to ``keep`` (same relative path).

    Returns:
        What had changed (sorted), and when the latest change was made (ns since the epoch,
        from the files' or their directory's modification time; 0 when nothing changed).
    """
    now = snapshot(common)
    changed = sorted(name for name in set(now) | set(before) if now.get(name) != before.get(name))
    when = 0
    for name in changed:
        with contextlib.suppress(OSError):
            path = common / name
            when = max(when, (path if os.path.lexists(path) else path.parent).lstat().st_mtime_ns)
    for name in changed:
        path = common / name
        if name in now and os.path.lexists(path):
            copy = keep / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copy2(path, copy, follow_symlinks=False)
        if name not in before:
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        data, mode = before[name]
        if data.startswith(b"large:"):
            continue  # not copied (over MAX_FILE): reported, left as it is
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if data.startswith(b"symlink:"):
            os.symlink(data[len(b"symlink:") :].decode(), path)
            continue
        tmp = path.with_name(f".{path.name}.stretto-restore")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    return changed, when
