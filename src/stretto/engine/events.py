"""Reading a run's journal as a stream of events: every record once, in order, while it grows.

:class:`EventReader` keeps a byte offset into ``journal.jsonl`` and consumes only whole lines,
so a record being written (or torn by a crash) is never delivered half: it is read again, whole,
once its newline is there, or never, if ``stretto resume`` cuts it off and writes the next
record in its place. Seq numbers must follow each other; anything else is damage, reported with
file:line as :func:`stretto.engine.journal.read_journal` does.

:func:`follow` and :func:`afollow` poll the file (a ``stat`` every few milliseconds, no lock)
and end when the run ends: a ``run_finished`` record has been read, nothing follows it, and no
engine holds the run's lock. A run whose engine died without finishing is waited for (``stretto
resume`` continues it, and seq keeps counting); ``on_idle`` hears about it once.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from stretto.engine.journal import (
    JOURNAL_NAME,
    LOCK_NAME,
    Record,
    is_live,
    parse_lines,
    parse_record,
)
from stretto.errors import RunError

POLL = 0.01  # seconds between looks at the journal while following


class EventReader:
    """Incremental, lock-free reader of one run's journal.

    Args:
        run_dir: the run directory.
        after_seq: deliver only records with a greater seq.
    """

    def __init__(self, run_dir: Path, after_seq: int = 0) -> None:
        self.run_dir = run_dir
        self.path = run_dir / JOURNAL_NAME
        self.after_seq = after_seq
        self.offset = 0  # bytes consumed: always just after a newline
        self.line = 0  # lines consumed (for error messages)
        self.last_seq = 0  # seq of the last record read (delivered or not)
        self.ended = False  # the last record read is a run_finished

    @classmethod
    def at_end(cls, run_dir: Path) -> EventReader:
        """A reader that starts after the last whole record now in the journal (reads only its
        tail), for waiting on what comes next without parsing what came before."""
        reader = cls(run_dir)
        path = reader.path
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            block, end = b"", size
            while end > 0:  # find the last two newlines: the last whole line lies between
                start = max(0, end - 65536)
                handle.seek(start)
                block = handle.read(end - start) + block
                end = start
                if block.count(b"\n") >= 2 or end == 0:
                    break
        whole = block.rfind(b"\n") + 1
        if whole == 0:
            return reader  # no whole record yet: read from the start
        reader.offset = size - len(block) + whole
        last = block[: whole - 1].rsplit(b"\n", 1)[-1]
        try:
            reader.last_seq = parse_record(last).seq
        except ValueError as exc:
            raise RunError(f"{path}: journal is damaged at its end: {exc}") from None
        reader.after_seq = reader.last_seq
        reader.line = -1  # unknown: not counted from the start
        return reader

    def read_new(self) -> list[Record]:
        """The whole records written since the last call (those after ``after_seq``)."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise RunError(f"no journal at {self.path}; is this a stretto run directory?") from None
        size = info.st_size
        if size == self.offset:
            return []  # everything there was read (a partial tail is re-read on every look)
        if size < self.offset:  # a torn tail we never consumed was cut off: read on from there
            self.offset = min(self.offset, size)
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        whole = data.rfind(b"\n") + 1
        out: list[Record] = []
        kept = (self.line, self.last_seq, self.ended)
        try:
            self._parse(data[:whole], out)
        except RunError:  # nothing of this read counts: the next one says the same line again
            self.line, self.last_seq, self.ended = kept
            raise
        self.offset += whole
        return out

    def _parse(self, data: bytes, out: list[Record]) -> None:
        records, damage = parse_lines(data)
        line, last, after = self.line, self.last_seq, self.after_seq
        for record in records:
            line += 1
            if record.seq != last + 1:
                self.line = line
                raise RunError(
                    f"{self.path}:{line}: journal is damaged: seq {record.seq} where "
                    f"{last + 1} was expected"
                )
            last = record.seq
            if last > after:
                out.append(record)
        if records:
            self.line, self.last_seq = line, last
            self.ended = records[-1].type == "run_finished"
        if damage is not None:
            raise RunError(f"{self.path}:{line + 1}: journal is damaged: {damage}")

    def finished(self) -> bool:
        """Whether the run is over: its last record is ``run_finished`` and no engine runs it."""
        return self.ended and not is_live(self.run_dir)

    def interrupted(self) -> bool:
        """Whether no engine drives the run although it has not finished (resume goes on)."""
        return not self.ended and (self.run_dir / LOCK_NAME).exists() and not is_live(self.run_dir)


def follow(
    run_dir: Path,
    after_seq: int = 0,
    *,
    follow: bool = True,
    poll: float = POLL,
    timeout: float | None = None,
    on_idle: Callable[[str], None] | None = None,
) -> Iterator[Record]:
    """Every record after ``after_seq``, in order, each once; with ``follow``, new ones as they
    are written, until the run ends (or ``timeout`` seconds pass)."""
    reader = EventReader(run_dir, after_seq)
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    while True:
        batch = reader.read_new()
        yield from batch
        if not follow:
            return
        if not batch:
            if reader.finished():
                yield from reader.read_new()  # anything written after the last look
                return
            if on_idle is not None and not told and reader.interrupted():
                told = True
                on_idle(
                    f"run {run_dir.name} is not running (interrupted); waiting for it to resume"
                )
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(poll)


async def afollow(
    run_dir: Path,
    after_seq: int = 0,
    *,
    follow: bool = True,
    poll: float = POLL,
    timeout: float | None = None,
) -> AsyncIterator[Record]:
    """:func:`follow` for asyncio frontends (the MCP and HTTP servers): sleeps without
    blocking the loop."""
    import asyncio

    reader = EventReader(run_dir, after_seq)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        batch = reader.read_new()
        for record in batch:
            yield record
        if not follow:
            return
        if not batch:
            if reader.finished():
                for record in reader.read_new():
                    yield record
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            await asyncio.sleep(poll)
