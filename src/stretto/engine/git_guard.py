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
import stat
from collections.abc import Mapping
from pathlib import Path

from stretto.git import git_common_dir

GUARDED_FILE = "config"
GUARDED_DIR = "hooks"
MAX_FILE = 1 << 20  # bigger files are compared by size and time only
MAX_ENTRIES = 2000  # a hooks directory bigger than this is compared by its first entries

Snapshot = Mapping[str, tuple[bytes, int]]
"""Path relative to the common git directory -> (content, mode). A symlink's content is
``symlink:<target>``, a directory's ``dir:``; links are never followed."""


def common_dir(repo: Path) -> Path:
    """The repository's common git directory (``.git``)."""
    return git_common_dir(repo)


def _entry(path: Path) -> tuple[bytes, int] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    mode = info.st_mode & 0o7777
    if stat.S_ISLNK(info.st_mode):
        return b"symlink:" + os.readlink(path).encode(), mode
    if stat.S_ISDIR(info.st_mode):
        return b"dir:", mode
    if info.st_size > MAX_FILE or not stat.S_ISREG(info.st_mode):
        return f"large:{info.st_size}:{info.st_mtime_ns}".encode(), mode
    try:
        return path.read_bytes(), mode
    except OSError:
        return None


def snapshot(common: Path) -> dict[str, tuple[bytes, int]]:
    """The guarded files as they are now (a symlinked ``hooks`` is one entry, not walked)."""
    found: dict[str, tuple[bytes, int]] = {}
    for name in (GUARDED_FILE, GUARDED_DIR):
        entry = _entry(common / name)
        if entry is not None:
            found[name] = entry
    if found.get(GUARDED_DIR, (b"",))[0] != b"dir:":
        return found
    count = 0
    for folder, dirs, files in os.walk(common / GUARDED_DIR):  # never follows links
        dirs.sort()
        for name in sorted(dirs) + sorted(files):
            path = Path(folder) / name
            entry = _entry(path)
            if entry is not None:
                found[path.relative_to(common).as_posix()] = entry
            count += 1
            if count >= MAX_ENTRIES:
                return found
    return found


def _inside(common: Path, path: Path) -> bool:
    """Whether every directory between ``common`` and ``path`` is a real one (no symlink):
    then changing ``path`` cannot reach outside the git directory."""
    parent = path.parent
    while parent != common:
        if parent.is_symlink() or not parent.is_relative_to(common):
            return False
        parent = parent.parent
    return True


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path)


def _put(path: Path, entry: tuple[bytes, int]) -> None:
    data, mode = entry
    if data.startswith(b"large:"):
        return  # not copied (over MAX_FILE): reported, left as it is
    if os.path.lexists(path):
        _remove(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if data == b"dir:":
        path.mkdir(mode=mode or 0o755)
    elif data.startswith(b"symlink:"):
        os.symlink(data[len(b"symlink:") :].decode(), path)
    else:
        tmp = path.with_name(f".{path.name}.stretto-restore")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)


def restore(common: Path, before: Snapshot, keep: Path) -> tuple[list[str], int]:
    """Put the guarded files back as ``before`` had them.

    Every changed or added file is first copied to ``keep`` (same relative path; a symlink as
    a symlink). Nothing is ever followed through a symlink: a ``hooks`` directory replaced by
    a link is unlinked and rebuilt, never emptied through it.

    Returns:
        What had changed (sorted), and when the latest change was made (ns since the epoch,
        from the files' or their directory's modification time; 0 when nothing changed).
    """
    now = snapshot(common)
    changed = sorted(name for name in set(now) | set(before) if now.get(name) != before.get(name))
    when = 0
    for name in changed:
        path = common / name
        with contextlib.suppress(OSError):
            when = max(when, (path if os.path.lexists(path) else path.parent).lstat().st_mtime_ns)
        if name in now and now[name][0] != b"dir:" and _inside(common, path):
            copy = keep / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.copy2(path, copy, follow_symlinks=False)
    for name in (GUARDED_FILE, GUARDED_DIR):  # the top entries first: a link is undone
        if now.get(name) != before.get(name):
            path = common / name
            if name in before:
                if not (before[name][0] == b"dir:" and now.get(name, (b"",))[0] == b"dir:"):
                    _put(path, before[name])
            elif os.path.lexists(path):
                _remove(path)
    now = snapshot(common)
    for name in sorted(set(now) | set(before), key=lambda n: (n.count("/"), n)):
        if now.get(name) == before.get(name) or name in (GUARDED_FILE, GUARDED_DIR):
            continue
        path = common / name
        if not _inside(common, path):
            continue
        if name in before:
            _put(path, before[name])
        elif os.path.lexists(path):
            _remove(path)
    return changed, when
