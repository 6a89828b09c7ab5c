"""The append-only, crash-safe event log of a run (``.stretto/runs/<id>/journal.jsonl``).

One JSON line per record, written with one ``os.write`` on an ``O_APPEND`` descriptor, so a crash
can only tear the last line::

    {"seq": 7, "gen": 1, "ts": 1767225600.12, "kind": "intent", "type": "merge", ...fields}

``seq`` counts from 1 over the whole file; ``gen`` is 0 for the process that created the journal
and +1 for each :meth:`Journal.open`; ``kind`` is ``intent`` (fsynced *before* its effect),
``done`` / ``fail`` (its completion, with ``"of":`` the intent's seq) or ``event``.
See shared/docs/DURABILITY.md. One writer at a time: :class:`Journal` holds a ``flock`` on
``<run>/.lock`` (the kernel drops it when the process dies; descriptors are not inherited by
agents, PEP 446). Readers use :func:`read_journal`, which takes no lock. A line's
:class:`Record` and its parsing live in :mod:`stretto.engine.records` (re-exported here).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn, Self, TypeAlias, TypeVar

from stretto.engine.records import (  # a journal line and its parsing (records.py)
    _HEADER,
    KINDS,
    Kind,
    _Damage,
    _is_int,
    _parse,
)
from stretto.engine.records import Record as Record
from stretto.engine.records import parse_lines as parse_lines
from stretto.engine.records import parse_record as parse_record
from stretto.errors import RunError, StorageError
from stretto.files import STORAGE_ERRNOS, fsync_dir, storage_fault

JOURNAL_NAME = "journal.jsonl"
LOCK_NAME = ".lock"
CRASHPOINT_ENV = "STRETTO_CRASHPOINT"
TORN_WRITE = "journal-write-torn"
FULL_DISK = "journal-write-enospc"  # a fault, not a crash: the write fails with ENOSPC


S = TypeVar("S")
Redact: TypeAlias = Callable[[str], str] | None


_hits: dict[str, int] = {}


def _crash_due(name: str) -> bool:
    spec = os.environ.get(CRASHPOINT_ENV, "")
    target, at, nth = spec.rpartition("@")
    if not (at and nth.isdigit()):
        target, nth = spec, "1"
    if not spec or target != name:
        return False
    _hits[name] = _hits.get(name, 0) + 1
    return _hits[name] == int(nth)


def _die() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)  # not reached: SIGKILL to ourselves ends the process before kill() returns


def crashpoint(name: str) -> None:
    """Kill this process with SIGKILL if ``STRETTO_CRASHPOINT`` selects ``name`` here.

    ``STRETTO_CRASHPOINT=name`` fires the first time ``name`` is reached in this process;
    ``name@N`` fires the Nth time (1-based). No cleanup code runs, as in a real crash. The point
    ``journal-write-torn`` is reached inside every :meth:`Journal.append`: it writes the first
    half of the record, then kills the process. ``journal-write-enospc`` is no crash: that write
    fails as on a full disk (for tests where no small filesystem can be mounted).
    """
    if _crash_due(name):
        _die()


def is_live(run_dir: Path) -> bool:
    """Whether a stretto engine holds the run's lock right now."""
    lock = run_dir / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):  # no lock; or a stray file, not a run
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _follows(record: Record, prev: Record | None, intents: Mapping[int, str]) -> str | None:
    """Why ``record`` cannot follow ``prev`` in a journal (None if it can)."""
    want_seq, min_gen = (prev.seq + 1, prev.gen) if prev else (1, 0)
    if record.seq != want_seq:
        return f"seq {record.seq} where {want_seq} was expected"
    if record.gen < min_gen:
        return f"gen {record.gen} is older than the previous record's gen {min_gen}"
    if record.kind in ("done", "fail"):
        of = record.fields.get("of")
        if not _is_int(of) or of not in intents:
            return f"{record.kind} record whose 'of' ({of!r}) is not the seq of an earlier intent"
        if intents[of] != record.type:
            return f"{record.kind} of type {record.type!r} for intent {of} of type {intents[of]!r}"
    return None


def _load(path: Path) -> tuple[list[Record], int]:
    """Parse a journal; return its records and the byte length of its intact part.

    A last line without its newline is a torn write and is left out; any other damage raises.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"no journal at {path}; is this a stretto run directory?") from None
    except OSError as exc:
        raise RunError(f"cannot read journal {path}: {exc.strerror}") from None
    intact = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
    intents: dict[int, str] = {}
    prev: Record | None = None
    records, damage = parse_lines(data[:intact])
    for lineno, record in enumerate(records, start=1):
        problem = _follows(record, prev, intents)
        if problem:
            raise _damaged(path, lineno, problem)
        if record.kind == "intent":
            intents[record.seq] = record.type
        prev = record
    if damage is not None:
        raise _damaged(path, len(records) + 1, damage)
    return records, intact


def _damaged(path: Path, lineno: int, problem: str) -> RunError:
    return RunError(
        f"{path}:{lineno}: journal is damaged: {problem}. Only a torn last line can be"
        " repaired, so resume refuses to continue; inspect that line, or move the file"
        " aside to abandon the run"
    )


def read_journal(path: Path) -> list[Record]:
    """Read every complete record of a journal, without locking (safe while a run is live).

    Args:
        path: the ``journal.jsonl`` file.

    Returns:
        The records in seq order; a torn last line (a write in progress, or cut by a crash) is
        ignored.

    Raises:
        RunError: the file is missing, or damaged anywhere but its last line (names file:line).
    """
    return _load(path)[0]


def open_intents(records: Iterable[Record]) -> list[Record]:
    """The intents, in seq order, that have neither a ``done`` nor a ``fail`` record."""
    pending: dict[int, Record] = {}
    for record in records:
        if record.kind == "intent":
            pending[record.seq] = record
        elif record.of is not None:
            pending.pop(record.of, None)
    return list(pending.values())


def fold(records: Iterable[Record], reducer: Callable[[S, Record], S], initial: S) -> S:
    """State from events: ``reducer(...reducer(reducer(initial, r1), r2)..., rN)``."""
    return functools.reduce(reducer, records, initial)


def name_holder(lock_fd: int, pid: int) -> None:
    """Write ``pid`` into the run's lock file (whose writer lock ``lock_fd`` holds), unless it
    is there already: readers never see it empty (a detached engine adopting its lock names the
    pid its starter wrote a moment before)."""
    text = f"{pid}\n".encode()
    if os.pread(lock_fd, 64, 0) != text:
        os.pwrite(lock_fd, text, 0)
        os.ftruncate(lock_fd, len(text))


def _lock(run_dir: Path) -> int:
    """Take the run's writer lock and record our pid in it; RunError if someone holds it."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _cannot_write(exc, run_dir / LOCK_NAME) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise RunError(
            f"run {run_dir.name} is already being driven by another stretto process (pid"
            f" {holder}); wait for it to finish, or stop it and resume"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise RunError(f"cannot lock run {run_dir.name} ({run_dir}): {exc.strerror}") from None
    try:
        name_holder(fd, os.getpid())
    except OSError as exc:
        os.close(fd)
        raise _cannot_write(exc, run_dir / LOCK_NAME) from None
    return fd


def _cannot_write(exc: OSError, path: Path) -> RunError:
    """The error for a run file that could not be written (a StorageError for a full disk)."""
    why = exc.strerror or str(exc)
    message = (
        f"cannot write {path}: {why}. Free space on that disk (or make it writable), then try again"
    )
    if storage_fault(exc) is not None:
        return StorageError(message, reason=why, path=str(path))
    return RunError(message)


class Journal:
    """The single writer of one run's journal; get one from :meth:`create` or :meth:`open`.

    Attributes:
        run_dir: the run directory; ``run_dir.name`` is the run id.
        path: the journal file.
        gen: this writer's generation.
        history: the records that were in the journal when this writer opened it.
    """

    def __init__(
        self, run_dir: Path, fds: tuple[int, int], history: list[Record], gen: int, redact: Redact
    ) -> None:
        self.run_dir = run_dir
        self.path = run_dir / JOURNAL_NAME
        self.gen = gen
        self.history: tuple[Record, ...] = tuple(history)
        self._fd: int | None = fds[0]
        self._lock_fd = fds[1]
        self._size = os.fstat(fds[0]).st_size
        self._last: Record | None = history[-1] if history else None
        self._intents = {r.seq: r.type for r in history if r.kind == "intent"}
        self._redact = redact
        self._dirty = False
        self._broken: str | None = None
        self._broken_reason = ""
        self._mutex = threading.Lock()

    @classmethod
    def create(cls, run_dir: Path, *, redact: Redact = None) -> Journal:
        """Start a new run's journal (generation 0) in ``run_dir``, creating the directory.

        Args:
            run_dir: the run directory; created with its parents if missing.
            redact: applied to each serialized line before it is written (hide secrets).

        Raises:
            RunError: the run already has a journal, or another process holds its lock.
        """
        return cls._start(run_dir, redact, new=True)

    @classmethod
    def open(cls, run_dir: Path, *, redact: Redact = None) -> Journal:
        """Reopen a run's journal to continue writing it (resume), as the next generation.

        Takes the lock, truncates a torn last line, loads the records into :attr:`history` and
        appends a fsynced ``journal_reopened`` event carrying the new ``gen``.

        Raises:
            RunError: no journal, damage before the last line (then nothing is changed), or
                another live process holds the lock.
        """
        return cls._start(run_dir, redact, new=False)

    @classmethod
    def _start(cls, run_dir: Path, redact: Redact, *, new: bool) -> Journal:
        path = run_dir / JOURNAL_NAME
        exists = f"run {run_dir.name} already has a journal at {path}; resume it instead"
        if new and path.exists():
            raise RunError(exists)
        if not new and not path.is_file():
            raise RunError(f"no journal at {path}; is {run_dir} a stretto run directory?")
        try:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                run_dir.mkdir(mode=0o700)  # a run's files are its user's alone
        except OSError as exc:
            raise _cannot_write(exc, run_dir) from None
        lock_fd = _lock(run_dir)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        history: list[Record] = []
        intact = 0
        try:
            if new:
                fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
                os.fsync(fd)
                fsync_dir(run_dir)
                fsync_dir(run_dir.parent)
            else:
                history, intact = _load(path)
                fd = os.open(path, flags)
        except BaseException as exc:
            os.close(lock_fd)
            if isinstance(exc, FileExistsError):
                raise RunError(exists) from None
            if isinstance(exc, OSError):
                raise _cannot_write(exc, path) from None
            raise
        if new:
            return cls(run_dir, (fd, lock_fd), history, 0, redact)
        torn = os.fstat(fd).st_size - intact
        try:
            os.ftruncate(fd, intact)  # drop a torn last line
        except OSError as exc:
            os.close(fd)
            os.close(lock_fd)
            raise _cannot_write(exc, path) from None
        gen = history[-1].gen + 1 if history else 1
        journal = cls(run_dir, (fd, lock_fd), history, gen, redact)
        try:
            journal.append("journal_reopened", sync=True, pid=os.getpid(), torn_bytes_dropped=torn)
        except BaseException:
            journal.close()
            raise
        return journal

    @classmethod
    def adopt(cls, run_dir: Path, fd: int, lock_fd: int, *, redact: Redact = None) -> Journal:
        """Go on writing a journal whose descriptors were handed over by the process that
        created it (a detached engine): same generation, and its lock was never released.

        Raises:
            RunError: the journal is damaged, or ``lock_fd`` does not hold the run's lock.
        """
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours already: a no-op
        except OSError as exc:
            raise RunError(f"run {run_dir.name}: the handed-over lock is not held: {exc}") from None
        history, _ = _load(run_dir / JOURNAL_NAME)
        name_holder(lock_fd, os.getpid())
        gen = history[-1].gen if history else 0
        return cls(run_dir, (fd, lock_fd), history, gen, redact)

    def detach_fds(self) -> tuple[int, int]:
        """The journal's and lock's descriptors, for :meth:`adopt` in a child process."""
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed")
        return self._fd, self._lock_fd

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._fd is None

    @property
    def last_seq(self) -> int:
        """The seq of the last record written (0 for an empty journal)."""
        return self._last.seq if self._last else 0

    def append(
        self, type: str, *, kind: Kind = "event", sync: bool | None = None, **fields: Any
    ) -> Record:
        """Write one record and return it as it now reads from the file.

        Args:
            type: what happened, e.g. ``"merge"`` or ``"attempt_started"``.
            kind: ``intent`` records are always fsynced before returning, so the caller may then
                perform the effect; others reach the page cache (which survives a killed
                process) and are fsynced only with ``sync=True`` or by :meth:`sync`.
            sync: force (True) an fsync; None chooses by kind.
            **fields: JSON-serializable values; ``done`` / ``fail`` need ``of`` (see :meth:`done`).

        Raises:
            ValueError: a bad kind or field, or a redact hook that broke the line.
            RunError: the write failed (disk full, I/O error); the journal refuses further
                writes and the run must be resumed.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}, not {kind!r}")
        if kind == "intent" and sync is False:
            raise ValueError("intent records are always fsynced; do not pass sync=False")
        if reserved := set(_HEADER).intersection(fields):
            raise ValueError(f"field names {sorted(reserved)} are reserved for the header")
        with self._mutex:
            fd = self._writable()
            of = fields.get("of")
            if kind in ("done", "fail") and (not _is_int(of) or self._intents.get(of) != type):
                raise ValueError(f"{kind} record needs 'of': the seq of an earlier {type!r} intent")
            head = {"seq": self.last_seq + 1, "gen": self.gen, "ts": time.time(), "kind": kind}
            obj = {**head, "type": type, **fields}
            line = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            line = self._redact(line) if self._redact else line
            try:
                record = _parse(line.encode("utf-8"))
            except _Damage as exc:
                raise ValueError(f"refusing to write journal record {type!r}: {exc}") from None
            written = list(record.to_dict().items())
            if "\n" in line or written[:5] != list(obj.items())[:5] or len(written) != len(obj):
                raise ValueError(f"the redact hook changed the structure of record {type!r}")
            self._write(fd, (line + "\n").encode("utf-8"), sync=sync or kind == "intent")
            self._last = record
            if kind == "intent":
                self._intents[record.seq] = type
            return record

    def intent(self, type: str, **fields: Any) -> Record:
        """Record, fsynced, that the effect ``type`` is about to be performed."""
        return self.append(type, kind="intent", **fields)

    def done(self, intent: Record, *, sync: bool | None = None, **fields: Any) -> Record:
        """Record that ``intent``'s effect completed (``"of": intent.seq``)."""
        return self.append(intent.type, kind="done", sync=sync, of=self._of(intent), **fields)

    def fail(
        self, intent: Record, reason: str, *, sync: bool | None = None, **fields: Any
    ) -> Record:
        """Record that ``intent``'s effect failed, and why."""
        of = self._of(intent)
        return self.append(intent.type, kind="fail", sync=sync, of=of, reason=reason, **fields)

    def sync(self) -> None:
        """fsync every record written so far."""
        with self._mutex:
            fd = self._writable()
            if self._dirty:
                self._write(fd, b"", sync=True)

    flush = sync

    def close(self) -> None:
        """fsync, close the journal and release the lock. Safe to call twice."""
        with self._mutex:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
            try:
                if self._dirty and self._broken is None:
                    os.fsync(fd)
            finally:
                os.close(fd)
                os.close(self._lock_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _of(intent: Record) -> int:
        if intent.kind != "intent":
            raise ValueError(f"record {intent.seq} is a {intent.kind} record, not an intent")
        return intent.seq

    def _writable(self) -> int:
        if self._fd is None:
            raise ValueError(f"journal {self.path} is closed")
        if self._broken is not None:
            raise self._broken_error()
        return self._fd

    def _broken_error(self) -> RunError:
        reason = self._broken_reason
        if reason in {os.strerror(n) for n in STORAGE_ERRNOS}:
            return StorageError(str(self._broken), reason=reason, path=str(self.path))
        return RunError(str(self._broken))

    def _write(self, fd: int, data: bytes, *, sync: bool) -> None:
        if data and _crash_due(TORN_WRITE):
            os.write(fd, data[: len(data) // 2])
            _die()
        start = self._size
        try:
            if data and _crash_due(FULL_DISK):  # tests where no small disk can be mounted
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            view = memoryview(data)
            while view:  # a short write is only possible when the disk fills up
                view = view[os.write(fd, view) :]
            self._size += len(data)
            self._dirty = self._dirty or bool(data)
            if sync:
                os.fsync(fd)
                self._dirty = False
        except OSError as exc:
            # After a failed write or fsync the file's tail is unknown: cut it back to the last
            # whole record and stop writing (retrying an fsync can silently lose data).
            self._broken = (
                f"writing journal {self.path} failed ({exc.strerror}); the run stopped. Free"
                " space on that disk (or fix the cause), then `stretto resume"
                f" {self.run_dir.name}`"
            )
            self._broken_reason = exc.strerror or str(exc)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise self._broken_error() from None
