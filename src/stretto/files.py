"""Durable file writes shared by the config, the run directory, the journal, the ledger and the
router policy: replace a file in one step, and make a rename or a new file survive a crash.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from stretto.errors import StorageError


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (a rename or a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data`` in one step: a temporary file beside it, fsync, rename.

    A crash leaves the old file or the new one, never half of either; on an error the old file
    is untouched and no temporary file remains. The file keeps an existing file's permissions,
    else gets ``mode`` (default: 0o666 less the umask).
    """
    with contextlib.suppress(FileNotFoundError):
        mode = stat.S_IMODE(path.stat().st_mode)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        with open(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def private_dir(path: Path) -> Path:
    """Create the folder ``path`` (and missing parents) for its user alone (0700); an existing
    folder is tightened to 0700. Returns ``path``."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


#: errno values that mean the disk cannot take more writes: a run must stop, not fail its tasks.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def storage_fault(error: BaseException) -> str | None:
    """What went wrong if ``error`` comes from a full (or quota-limited, or read-only) disk,
    e.g. ``"No space left on device: /repo/.stretto/runs/x/journal.jsonl"``; None otherwise.

    Recognises an :class:`OSError` with one of :data:`STORAGE_ERRNOS`, a
    :class:`~stretto.errors.StorageError`, and any other error whose message quotes one of their
    descriptions (a git command's stderr).
    """
    if isinstance(error, StorageError):
        return f"{error.reason}: {error.path}" if error.path else error.reason
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        where = f": {error.filename}" if error.filename else ""
        return f"{os.strerror(error.errno)}{where}"
    text = str(error)
    for number in sorted(STORAGE_ERRNOS):
        if os.strerror(number) in text:
            first = text.strip().splitlines()[0][:300] if text.strip() else ""
            return f"{os.strerror(number)} ({first})"
    return None


#: Less free space than this on a disk stretto writes to counts as a full disk.
LOW_SPACE = 64 * 1024


def full_disk(*paths: Path) -> StorageError | None:
    """A :class:`~stretto.errors.StorageError` if the disk holding one of ``paths`` is full
    (under :data:`LOW_SPACE` free) or read-only; None if each has room (or cannot be asked).

    Used when an agent or a gate failed: on a full disk that is no verdict on the work.
    """
    for path in paths:
        try:
            info = os.statvfs(path)
        except OSError:
            continue
        if info.f_flag & os.ST_RDONLY:
            reason = os.strerror(errno.EROFS)
        elif info.f_bavail * info.f_frsize < LOW_SPACE:
            reason = os.strerror(errno.ENOSPC)
        else:
            continue
        return StorageError(f"{reason}: {path}", reason=reason, path=str(path))
    return None
