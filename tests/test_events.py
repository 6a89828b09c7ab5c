"""Reading a run's journal as a stream of events (EventReader, follow, afollow), and the parts of
the journal they rely on (parse_record, is_live, Journal.adopt), against real files and locks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stretto.engine.events import EventReader, afollow, follow
from stretto.engine.journal import (
    JOURNAL_NAME,
    LOCK_NAME,
    Journal,
    Record,
    is_live,
    parse_record,
    read_journal,
)
from stretto.errors import RunError

POLL = 0.005


def raw_line(seq: int, *, gen: int = 0, type: str = "step", **fields: object) -> bytes:
    """A well-formed journal line (with its newline), as Journal.append would write it."""
    obj = {"seq": seq, "gen": gen, "ts": 1767225600.5, "kind": "event", "type": type, **fields}
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def append_raw(run_dir: Path, data: bytes) -> None:
    with (run_dir / JOURNAL_NAME).open("ab") as handle:
        handle.write(data)


def seqs(records: list[Record]) -> list[int]:
    return [r.seq for r in records]


def journal_with(run_dir: Path, n: int) -> Journal:
    """A journal created in ``run_dir`` holding ``n`` step records (left open)."""
    journal = Journal.create(run_dir)
    for i in range(n):
        journal.append("step", i=i)
    return journal


def finished_run(run_dir: Path, n: int) -> list[Record]:
    """A closed run: ``n`` steps then run_finished. Returns its records."""
    with journal_with(run_dir, n) as journal:
        journal.append("run_finished", outcome="ok")
    return read_journal(run_dir / JOURNAL_NAME)


class Follower:
    """Runs ``follow`` in a thread, collecting what it yields (and any exception)."""

    def __init__(self, run_dir: Path, **kwargs: object) -> None:
        self.records: list[Record] = []
        self.error: BaseException | None = None
        self.elapsed: float | None = None
        self._thread = threading.Thread(target=self._run, args=(run_dir, kwargs), daemon=True)
        self._thread.start()

    def _run(self, run_dir: Path, kwargs: dict[str, object]) -> None:
        start = time.monotonic()
        try:
            for record in follow(run_dir, **kwargs):  # type: ignore[arg-type]
                self.records.append(record)
        except BaseException as exc:
            self.error = exc
        self.elapsed = time.monotonic() - start

    def join(self, timeout: float = 10.0) -> list[Record]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "follow did not end"
        if self.error is not None:
            raise self.error
        return self.records

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(POLL)


# --------------------------------------------------------------------------- EventReader


def test_a_torn_last_line_is_never_delivered_half(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    journal = journal_with(run_dir, 3)
    reader = EventReader(run_dir)
    assert seqs(reader.read_new()) == [1, 2, 3]

    line = raw_line(4, marker="whole")
    append_raw(run_dir, line[: len(line) // 2])
    assert reader.read_new() == []  # half a line: nothing yet
    assert reader.read_new() == []  # and still nothing on a second look
    assert reader.last_seq == 3

    append_raw(run_dir, line[len(line) // 2 :])
    [record] = reader.read_new()
    assert (record.seq, record.type, dict(record.fields)) == (4, "step", {"marker": "whole"})
    assert reader.read_new() == []
    assert reader.offset == (run_dir / JOURNAL_NAME).stat().st_size
    journal.close()


def test_each_record_is_delivered_once_in_seq_order_as_the_file_grows(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    journal = Journal.create(run_dir)
    reader = EventReader(run_dir)
    assert reader.read_new() == []  # an empty journal
    delivered: list[Record] = []
    for i in range(10):
        journal.append("step", i=i)
        if i % 3 == 0:
            delivered += reader.read_new()
    delivered += reader.read_new()
    journal.close()
    assert seqs(delivered) == list(range(1, 11))
    assert delivered == read_journal(run_dir / JOURNAL_NAME)


def test_a_reader_refuses_a_directory_without_a_journal(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no journal at"):
        EventReader(tmp_path).read_new()
    with pytest.raises(RunError, match="no journal at"):
        list(follow(tmp_path, follow=False))


def test_a_torn_tail_replaced_by_a_record_of_the_same_length_is_delivered(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    journal_with(run_dir, 3).close()
    torn = raw_line(4, pad="x" * 300)[:200]  # a crash left 200 bytes of record 4
    append_raw(run_dir, torn)
    reader = EventReader(run_dir)
    assert seqs(reader.read_new()) == [1, 2, 3]

    def same_length(line: str) -> str:
        # JSON whitespace before the closing brace: the record is unchanged, only longer.
        return line[:-1] + " " * (len(torn) - 1 - len(line)) + "}"

    size = (run_dir / JOURNAL_NAME).stat().st_size
    with Journal.open(run_dir, redact=same_length) as journal:
        assert (run_dir / JOURNAL_NAME).stat().st_size == size  # the precondition of the bug
        assert journal.history[-1].seq == 3
        assert [(r.seq, r.type) for r in reader.read_new()] == [(4, "journal_reopened")]


# --------------------------------------------------------------------------- follow


def test_following_across_a_resume_delivers_every_record_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    journal_with(run_dir, 4).close()  # the engine is gone ...
    torn = raw_line(5, marker="torn", pad="t" * 100)
    append_raw(run_dir, torn[:60])  # ... and its last write was torn
    idle: list[str] = []
    follower = Follower(run_dir, after_seq=0, follow=True, poll=POLL, on_idle=idle.append)
    wait_for(lambda: len(follower.records) == 4)
    wait_for(lambda: bool(idle))
    assert follower.alive  # an interrupted run is waited for, not ended
    assert idle == [f"run {run_dir.name} is not running (interrupted); waiting for it to resume"]

    journal = Journal.open(run_dir)  # cuts the torn tail, appends journal_reopened (gen 1)
    for i in range(5):
        journal.append("step", i=i)
        time.sleep(POLL)
    time.sleep(0.05)
    assert follower.alive  # still running: not finished
    journal.append("run_finished", outcome="ok")
    journal.close()

    records = follower.join()
    expected = read_journal(run_dir / JOURNAL_NAME)
    assert records == expected
    assert seqs(records) == list(range(1, len(expected) + 1))
    assert len(records) == 4 + 1 + 5 + 1
    reopened = records[4]
    assert (reopened.seq, reopened.gen, reopened.type) == (5, 1, "journal_reopened")
    assert reopened.fields["torn_bytes_dropped"] == 60
    assert [r.gen for r in records] == [0] * 4 + [1] * 7
    assert all("marker" not in r.fields for r in records)  # none of the torn bytes
    assert records[-1].type == "run_finished"
    assert idle == [idle[0]]  # told once


def test_after_seq_skips_earlier_records_and_no_follow_stops(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    journal = journal_with(run_dir, 6)  # live, not finished: follow=False must not wait
    start = time.monotonic()
    assert seqs(list(follow(run_dir, after_seq=2, follow=False))) == [3, 4, 5, 6]
    assert seqs(list(follow(run_dir, after_seq=0, follow=False))) == [1, 2, 3, 4, 5, 6]
    assert list(follow(run_dir, after_seq=6, follow=False)) == []
    assert list(follow(run_dir, after_seq=99, follow=False)) == []
    assert time.monotonic() - start < 5

    reader = EventReader(run_dir, after_seq=4)
    assert seqs(reader.read_new()) == [5, 6]
    assert reader.last_seq == 6  # the skipped records were read (and checked) all the same
    journal.append("step", i=6)
    assert seqs(reader.read_new()) == [7]
    journal.append("run_finished")
    journal.close()

    records = list(follow(run_dir, after_seq=3, poll=POLL, timeout=10))
    assert records == read_journal(run_dir / JOURNAL_NAME)[3:]


def test_follow_ends_when_the_run_finished_and_nobody_holds_its_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    expected = finished_run(run_dir, 3)
    assert not is_live(run_dir)
    start = time.monotonic()
    records = list(follow(run_dir, poll=POLL, timeout=30))
    assert time.monotonic() - start < 5  # ended by the finish, long before the timeout
    assert records == expected
    assert records[-1].type == "run_finished"


def test_follow_keeps_waiting_while_the_finished_run_still_holds_its_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    journal = journal_with(run_dir, 2)
    journal.append("run_finished", outcome="ok")
    assert is_live(run_dir)

    # The last record is run_finished, but an engine still holds the lock: only the timeout
    # ends the follow, after every record was delivered.
    start = time.monotonic()
    records = list(follow(run_dir, poll=POLL, timeout=0.3))
    elapsed = time.monotonic() - start
    assert elapsed >= 0.3
    assert seqs(records) == [1, 2, 3] and records[-1].type == "run_finished"

    # A follower without a timeout ends once the lock is released.
    follower = Follower(run_dir, poll=POLL)
    wait_for(lambda: len(follower.records) == 3)
    time.sleep(0.1)
    assert follower.alive
    journal.close()
    assert follower.join() == records


def test_follow_waits_for_an_interrupted_run_until_its_timeout(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    journal_with(run_dir, 2).close()  # not finished, nobody holds the lock
    assert not is_live(run_dir)
    idle: list[str] = []
    start = time.monotonic()
    records = list(follow(run_dir, poll=POLL, timeout=0.3, on_idle=idle.append))
    assert time.monotonic() - start >= 0.3
    assert seqs(records) == [1, 2]
    assert len(idle) == 1 and "interrupted" in idle[0]
    assert EventReader(run_dir).interrupted()


def test_records_written_after_run_finished_while_live_are_delivered(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    journal = journal_with(run_dir, 1)
    journal.append("run_finished", outcome="ok")
    follower = Follower(run_dir, poll=POLL)
    wait_for(lambda: len(follower.records) == 2)
    journal.append("cleanup", removed=3)  # the run is not over while its engine writes
    wait_for(lambda: len(follower.records) == 3)
    journal.append("run_finished", outcome="ok")
    journal.close()
    records = follower.join()
    assert records == read_journal(run_dir / JOURNAL_NAME)
    assert [r.type for r in records] == ["step", "run_finished", "cleanup", "run_finished"]


# --------------------------------------------------------------------------- afollow


async def _collect(run_dir: Path, **kwargs: object) -> list[Record]:
    return [record async for record in afollow(run_dir, **kwargs)]  # type: ignore[arg-type]


def test_afollow_delivers_what_follow_delivers(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    expected = finished_run(run_dir, 5)
    assert list(follow(run_dir, poll=POLL, timeout=10)) == expected
    assert asyncio.run(_collect(run_dir, poll=POLL, timeout=10)) == expected
    assert asyncio.run(_collect(run_dir, after_seq=3, follow=False)) == expected[3:]
    assert asyncio.run(_collect(run_dir, after_seq=3, follow=False)) == list(
        follow(run_dir, after_seq=3, follow=False)
    )


def test_afollow_follows_a_live_run_without_blocking_the_loop(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    journal = journal_with(run_dir, 2)

    async def write() -> None:
        # Runs on the same event loop as the follower: it only progresses if afollow yields.
        for i in range(5):
            await asyncio.sleep(POLL)
            journal.append("step", i=i)
        await asyncio.sleep(0.05)
        journal.append("run_finished", outcome="ok")
        journal.close()

    async def main() -> list[Record]:
        follower = asyncio.create_task(_collect(run_dir, poll=POLL))
        await asyncio.wait_for(write(), 10)
        return await asyncio.wait_for(follower, 10)

    records = asyncio.run(main())
    assert records == read_journal(run_dir / JOURNAL_NAME)
    assert seqs(records) == list(range(1, 9))
    assert list(follow(run_dir, poll=POLL, timeout=10)) == records


def test_afollow_times_out_on_a_live_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with journal_with(run_dir, 2):
        start = time.monotonic()
        records = asyncio.run(_collect(run_dir, poll=POLL, timeout=0.2))
        assert time.monotonic() - start >= 0.2
    assert seqs(records) == [1, 2]


# --------------------------------------------------------------------------- damage


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"this is not json\n", "not a JSON line"),
        (raw_line(7), "seq 7 where 3 was expected"),
        (b'{"gen":0,"seq":3,"ts":1.0,"kind":"event","type":"x"}\n', "not a record"),
    ],
    ids=["garbage", "seq-gap", "header-order"],
)
def test_a_damaged_line_in_the_middle_is_reported_with_file_and_line(
    tmp_path: Path, bad: bytes, message: str
) -> None:
    run_dir = tmp_path / "run"
    path = run_dir / JOURNAL_NAME
    run_dir.mkdir()
    path.write_bytes(raw_line(1) + raw_line(2) + bad + raw_line(4) + raw_line(5))
    where = re.escape(f"{path}:3:")
    with pytest.raises(RunError, match=f"{where} journal is damaged: .*{re.escape(message)}"):
        EventReader(run_dir).read_new()
    with pytest.raises(RunError, match=where):
        list(follow(run_dir, follow=False))
    with pytest.raises(RunError, match=where):
        asyncio.run(_collect(run_dir, follow=False))
    with pytest.raises(RunError, match=where):
        read_journal(path)  # the same line as the journal's own reader names


def test_damage_after_records_already_read_names_its_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    journal_with(run_dir, 2).close()
    reader = EventReader(run_dir)
    assert seqs(reader.read_new()) == [1, 2]
    append_raw(run_dir, raw_line(3) + b"{oops}\n")
    path = run_dir / JOURNAL_NAME
    with pytest.raises(RunError, match=re.escape(f"{path}:4: journal is damaged")):
        reader.read_new()


def test_parse_record_reads_a_line_and_rejects_what_is_not_one() -> None:
    record = parse_record(raw_line(3, gen=2, type="merge", task="a")[:-1])
    assert (record.seq, record.gen, record.kind, record.type) == (3, 2, "event", "merge")
    assert dict(record.fields) == {"task": "a"}
    assert record.to_dict() == json.loads(raw_line(3, gen=2, type="merge", task="a"))
    for bad in (b"", b"[1, 2]", b"not json", b'{"seq": -1, "gen": 0, "ts": 1, "kind": "event"}'):
        with pytest.raises(ValueError):
            parse_record(bad)
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_record(b'{"seq":1,"gen":0,"ts":NaN,"kind":"event","type":"x"}')


# --------------------------------------------------------------------------- liveness, adopt


def test_is_live_while_a_journal_is_open(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert not is_live(run_dir)  # no lock file at all
    journal = Journal.create(run_dir)
    assert is_live(run_dir)
    journal.close()
    assert not is_live(run_dir)
    assert (run_dir / LOCK_NAME).exists()  # the lock file stays; its flock is what counts
    with Journal.open(run_dir):
        assert is_live(run_dir)
    assert not is_live(run_dir)


@pytest.fixture
def fds() -> Iterator[list[int]]:
    """Descriptors a test opened by hand; closed at the end unless the test closed them."""
    opened: list[int] = []
    yield opened
    for fd in opened:
        with contextlib.suppress(OSError):
            os.close(fd)


def test_adopt_continues_a_handed_over_journal(tmp_path: Path, fds: list[int]) -> None:
    run_dir = tmp_path / "run"
    journal = journal_with(run_dir, 3)
    journal_fd, lock_fd = journal.detach_fds()
    dup_fd, dup_lock = os.dup(journal_fd), os.dup(lock_fd)
    fds += [dup_fd, dup_lock]
    journal.close()
    with pytest.raises(ValueError, match="closed"):
        journal.detach_fds()
    assert is_live(run_dir)  # the duplicated lock descriptor still holds the flock
    with pytest.raises(RunError, match="already being driven"):
        Journal.open(run_dir)

    adopted = Journal.adopt(run_dir, dup_fd, dup_lock)
    fds.clear()  # the adopted journal owns them now
    assert adopted.gen == journal.gen == 0
    assert adopted.last_seq == 3
    assert seqs(list(adopted.history)) == [1, 2, 3]
    record = adopted.append("step", i=3)
    assert (record.seq, record.gen) == (4, 0)
    adopted.append("run_finished", outcome="ok")
    assert (run_dir / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert is_live(run_dir)
    adopted.close()
    assert not is_live(run_dir)

    records = read_journal(run_dir / JOURNAL_NAME)
    assert seqs(records) == [1, 2, 3, 4, 5] and {r.gen for r in records} == {0}
    assert list(follow(run_dir, poll=POLL, timeout=10)) == records


def test_adopt_refuses_a_lock_descriptor_that_does_not_hold_the_lock(
    tmp_path: Path, fds: list[int]
) -> None:
    run_dir = tmp_path / "run"
    with journal_with(run_dir, 1):
        other_lock = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CLOEXEC)
        fds.append(other_lock)
        other_fd = os.open(run_dir / JOURNAL_NAME, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        fds.append(other_fd)
        with pytest.raises(RunError, match="handed-over lock is not held"):
            Journal.adopt(run_dir, other_fd, other_lock)
    assert seqs(read_journal(run_dir / JOURNAL_NAME)) == [1]  # nothing was written


def test_a_reader_at_the_end_delivers_only_what_comes_next(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    journal = journal_with(run_dir, 2000)
    append_raw(run_dir, raw_line(2001, pad="x" * 100)[:50])  # a record being written
    reader = EventReader.at_end(run_dir)
    assert (reader.last_seq, reader.read_new()) == (2000, [])
    size = (run_dir / JOURNAL_NAME).stat().st_size
    assert reader.offset == size - 50  # only the torn tail is left to read
    with (run_dir / JOURNAL_NAME).open("r+b") as handle:
        handle.truncate(size - 50)  # as resume cuts a torn tail
    journal.append("after", n=1)
    journal.append("after", n=2)
    assert [(r.seq, r.fields["n"]) for r in reader.read_new()] == [(2001, 1), (2002, 2)]
    journal.close()
    empty = tmp_path / "empty"
    Journal.create(empty).close()
    fresh = EventReader.at_end(empty)
    assert (fresh.offset, fresh.last_seq, fresh.read_new()) == (0, 0, [])
