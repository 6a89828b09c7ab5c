"""The journal against real files and real processes that are SIGKILLed mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stretto.engine.journal import (
    CRASHPOINT_ENV,
    JOURNAL_NAME,
    Journal,
    Record,
    fold,
    open_intents,
    read_journal,
)
from stretto.errors import RunError

KILLED = -signal.SIGKILL


def child(
    code: str, *args: object, crash: str | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """Start a Python child running ``code`` with ``args`` in sys.argv[1:]."""
    env = {k: v for k, v in os.environ.items() if k != CRASHPOINT_ENV}
    if crash is not None:
        env[CRASHPOINT_ENV] = crash
    argv = [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]
    return subprocess.Popen(argv, env=env, text=True, stdout=subprocess.PIPE, **popen)


def run_child(code: str, *args: object, crash: str | None = None) -> tuple[int, str]:
    proc = child(code, *args, crash=crash, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, KILLED), err
    return proc.returncode, out


WRITER = """
    import sys
    from pathlib import Path
    from stretto.engine.journal import Journal, crashpoint
    journal = Journal.create(Path(sys.argv[1]))
    for i in range(int(sys.argv[2])):
        kind = "intent" if i % 2 else "event"
        journal.append("step", kind=kind, i=i, payload="x" * 3000)
        print(i, flush=True)
    journal.close()
"""


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def test_records_are_compact_json_lines_with_the_header_first(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "run") as journal:
        written = journal.append("note", text="héllo ✓", n=[1, 2])
    raw = (tmp_path / "run" / JOURNAL_NAME).read_text(encoding="utf-8")
    assert raw.endswith("\n") and raw.count("\n") == 1
    assert raw.startswith('{"seq":1,"gen":0,"ts":')
    assert '"kind":"event","type":"note","text":"héllo ✓","n":[1,2]}' in raw
    assert list(json.loads(raw)) == ["seq", "gen", "ts", "kind", "type", "text", "n"]
    assert read_journal(tmp_path / "run" / JOURNAL_NAME) == [written]
    assert written.to_dict() == json.loads(raw)


def test_create_refuses_an_existing_journal_and_changes_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Journal.create(run) as journal:
        journal.append("run_started")
    before = (run / JOURNAL_NAME).read_bytes()
    with pytest.raises(RunError, match=r"run run already has a journal .* resume it"):
        Journal.create(run)
    assert (run / JOURNAL_NAME).read_bytes() == before


def test_open_and_read_refuse_a_missing_journal(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no journal at"):
        Journal.open(tmp_path / "nope")
    with pytest.raises(RunError, match="no journal at"):
        read_journal(tmp_path / "nope" / JOURNAL_NAME)
    assert not (tmp_path / "nope").exists()


def test_each_reopen_is_a_new_generation_and_seq_continues(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Journal.create(run) as journal:
        assert journal.gen == 0
        journal.append("a")
        journal.append("b")
    for gen in (1, 2):
        with Journal.open(run) as journal:
            assert journal.gen == gen
            assert journal.history[-1].seq == journal.last_seq - 1
            journal.append("c")
    records = read_journal(run / JOURNAL_NAME)
    assert [r.seq for r in records] == list(range(1, 7))
    assert [(r.gen, r.type) for r in records] == [
        (0, "a"),
        (0, "b"),
        (1, "journal_reopened"),
        (1, "c"),
        (2, "journal_reopened"),
        (2, "c"),
    ]
    reopened = [r for r in records if r.type == "journal_reopened"]
    assert [r.fields["torn_bytes_dropped"] for r in reopened] == [0, 0]


def test_reopening_an_empty_journal_starts_generation_one(tmp_path: Path) -> None:
    Journal.create(tmp_path / "run").close()
    with Journal.open(tmp_path / "run") as journal:
        assert journal.gen == 1
        assert journal.history == ()
    [record] = read_journal(tmp_path / "run" / JOURNAL_NAME)
    assert (record.seq, record.gen, record.type) == (1, 1, "journal_reopened")


def test_crashpoint_fires_on_the_selected_occurrence(tmp_path: Path) -> None:
    code = """
        from stretto.engine.journal import crashpoint
        for i in range(1, 6):
            print(i, flush=True)
            crashpoint("after-intent:merge")
    """
    assert run_child(code, crash="after-intent:merge@3") == (KILLED, "1\n2\n3\n")
    assert run_child(code, crash="after-intent:merge") == (KILLED, "1\n")
    assert run_child(code, crash="after-intent:spawn") == (0, "1\n2\n3\n4\n5\n")
    assert run_child(code) == (0, "1\n2\n3\n4\n5\n")


def test_an_intent_survives_sigkill_and_stays_open(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = """
        import sys
        from pathlib import Path
        from stretto.engine.journal import Journal, crashpoint
        journal = Journal.create(Path(sys.argv[1]))
        spawn = journal.intent("spawn", task="api", token="t1")
        journal.done(spawn, pid=4242)
        merge = journal.intent("merge", task="api", base="abc")
        crashpoint("after-intent:merge")
        journal.done(merge)
    """
    assert run_child(code, run, crash="after-intent:merge")[0] == KILLED
    records = read_journal(run / JOURNAL_NAME)
    assert [(r.kind, r.type) for r in records] == [
        ("intent", "spawn"),
        ("done", "spawn"),
        ("intent", "merge"),
    ]
    [pending] = open_intents(records)
    assert pending.type == "merge" and dict(pending.fields) == {"task": "api", "base": "abc"}
    with Journal.open(run) as journal:  # the kernel dropped the dead writer's lock
        assert open_intents(journal.history) == [pending]
        assert journal.done(pending, sha="def").fields == {"of": 3, "sha": "def"}
    assert open_intents(read_journal(run / JOURNAL_NAME)) == []


@pytest.mark.parametrize("nth", [1, 2, 4])
def test_a_torn_last_line_is_ignored_by_readers_and_cut_by_open(tmp_path: Path, nth: int) -> None:
    run = tmp_path / "run"
    path = run / JOURNAL_NAME
    returncode, out = run_child(WRITER, run, 5, crash=f"journal-write-torn@{nth}")
    assert returncode == KILLED
    assert out.split() == [str(i) for i in range(nth - 1)]
    torn = lines(path)[-1]
    assert torn and not path.read_bytes().endswith(b"\n")  # half a record, no newline
    with pytest.raises(json.JSONDecodeError):
        json.loads(torn)

    assert [r.fields["i"] for r in read_journal(path)] == list(range(nth - 1))
    with Journal.open(run) as journal:
        assert len(journal.history) == nth - 1
        assert journal.gen == 1
        journal.append("after", ok=True)
    records = read_journal(path)
    assert [r.seq for r in records] == list(range(1, nth + 2))
    assert records[-2].type == "journal_reopened"
    assert records[-2].fields["torn_bytes_dropped"] == len(torn)
    assert (records[-1].gen, records[-1].type) == (1, "after")
    assert all(json.loads(line) for line in lines(path)[:-1]) and lines(path)[-1] == b""


def test_a_crash_while_resuming_leaves_a_journal_resume_can_open(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert run_child(WRITER, run, 3)[0] == 0
    resume = """
        import sys
        from pathlib import Path
        from stretto.engine.journal import Journal
        Journal.open(Path(sys.argv[1]))
    """
    assert run_child(resume, run, crash="journal-write-torn")[0] == KILLED
    assert len(read_journal(run / JOURNAL_NAME)) == 3
    with Journal.open(run) as journal:
        # the killed resume left nothing durable, so its generation number is reused
        assert journal.gen == 1
        assert journal.last_seq == 4
    assert [r.type for r in read_journal(run / JOURNAL_NAME)][-1] == "journal_reopened"


def _damage_garbage(path: Path) -> int:
    data = lines(path)
    data[1] = b"this is not json"
    path.write_bytes(b"\n".join(data))
    return 2


def _damage_seq_gap(path: Path) -> int:
    data = lines(path)
    del data[1]
    path.write_bytes(b"\n".join(data))
    return 2


def _damage_done_without_intent(path: Path) -> int:
    data = lines(path)
    record = json.loads(data[2])
    record.update(kind="done", of=99)
    data[2] = json.dumps(record).encode()
    path.write_bytes(b"\n".join(data))
    return 3


def _damage_complete_last_line(path: Path) -> int:
    with path.open("ab") as f:
        f.write(b'{"seq": 5, "oops"}\n')  # a whole line (newline included) is not a torn write
    return 5


@pytest.mark.parametrize(
    "damage",
    [_damage_garbage, _damage_seq_gap, _damage_done_without_intent, _damage_complete_last_line],
)
def test_damage_before_the_last_line_is_refused_with_file_and_line(
    tmp_path: Path, damage: Any
) -> None:
    run = tmp_path / "run"
    path = run / JOURNAL_NAME
    assert run_child(WRITER, run, 4)[0] == 0
    lineno = damage(path)
    before = path.read_bytes()
    expected = (
        rf"{re.escape(str(path))}:{lineno}: journal is damaged: .* resume refuses to continue"
    )
    with pytest.raises(RunError, match=expected):
        read_journal(path)
    for _ in range(2):  # a refused open releases the lock, so the second sees the same damage
        with pytest.raises(RunError, match=expected):
            Journal.open(run)
    assert path.read_bytes() == before


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path: Path) -> None:
    run = tmp_path / "run-42"
    holder = """
        import sys
        from pathlib import Path
        from stretto.engine.journal import Journal
        journal = Journal.create(Path(sys.argv[1]))
        journal.append("run_started")
        print("ready", flush=True)
        sys.stdin.read()
    """
    proc = child(holder, run, stdin=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        message = f"run run-42 is already being driven by another stretto process (pid {proc.pid})"
        with pytest.raises(RunError) as refused:
            Journal.open(run)
        assert str(refused.value).startswith(message)
        assert [r.type for r in read_journal(run / JOURNAL_NAME)] == ["run_started"]
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == KILLED
    with Journal.open(run) as journal:
        assert journal.gen == 1
        assert [r.type for r in journal.history] == ["run_started"]


def test_a_second_writer_in_the_same_process_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with Journal.create(run) as journal:
        with pytest.raises(RunError, match=rf"already being driven .*\(pid {os.getpid()}\)"):
            Journal.open(run)
        journal.append("still_writing")
    with Journal.open(run) as journal:
        assert journal.history[-1].type == "still_writing"


def test_intents_are_fsynced_before_append_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    journal = Journal.create(tmp_path / "run")
    inode = os.stat(journal.path).st_ino
    monkeypatch.setattr(os, "fsync", spy)
    with journal:
        intent = journal.intent("merge", base="abc")
        assert synced == [inode]
        assert read_journal(journal.path) == [intent]
        event = journal.append("progress")
        assert synced == [inode]  # events reach the page cache only
        assert read_journal(journal.path)[-1] == event
        journal.sync()
        assert synced == [inode, inode]
        journal.flush()  # nothing new to sync
        assert synced == [inode, inode]
        journal.done(intent, sync=True)
        assert synced == [inode] * 3
        with pytest.raises(ValueError, match="always fsynced"):
            journal.append("merge", kind="intent", sync=False)


def test_open_intents_done_and_fail(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "run") as journal:
        a = journal.intent("worktree", task="a")
        b = journal.intent("worktree", task="b")
        c = journal.intent("gate", task="c")
        journal.done(a)
        failed = journal.fail(b, "branch exists", branch="stretto/b")
        assert (failed.kind, failed.of, failed.type) == ("fail", b.seq, "worktree")
        assert failed.fields == {"of": b.seq, "reason": "branch exists", "branch": "stretto/b"}
        with pytest.raises(ValueError, match="not an intent"):
            journal.done(failed)
        with pytest.raises(ValueError, match="seq of an earlier 'merge' intent"):
            journal.append("merge", kind="done", of=a.seq)
        with pytest.raises(ValueError, match="needs 'of'"):
            journal.append("gate", kind="fail")
        with pytest.raises(ValueError, match="reserved"):
            journal.append("x", seq=1)
        with pytest.raises(ValueError, match="kind must be one of"):
            journal.append("x", kind="maybe")  # type: ignore[arg-type]
    records = read_journal(tmp_path / "run" / JOURNAL_NAME)
    assert open_intents(records) == [c]
    assert len(records) == 5  # refused appends wrote nothing


def test_redact_hides_secrets_and_cannot_break_the_line(tmp_path: Path) -> None:
    def redact(line: str) -> str:
        return line.replace("s3cret", "[redacted]")

    run = tmp_path / "run"
    with Journal.create(run, redact=redact) as journal:
        record = journal.append("agent_event", text="token=s3cret")
        assert record.fields["text"] == "token=[redacted]"
    assert b"s3cret" not in (run / JOURNAL_NAME).read_bytes()

    def breaks(line: str) -> str:
        return line.replace('"type":"x"', '"tipe":"x"')

    with pytest.raises(ValueError, match="refusing to write journal record 'journal_reopened'"):
        Journal.open(run, redact=lambda line: "")
    with Journal.open(run, redact=breaks) as journal:  # the refused open released the lock
        with pytest.raises(ValueError, match="refusing to write journal record 'x'"):
            journal.append("x")
        journal.append("y")
    types = [r.type for r in read_journal(run / JOURNAL_NAME)]
    assert types == ["agent_event", "journal_reopened", "y"]


def test_fold_builds_state_from_events(tmp_path: Path) -> None:
    with Journal.create(tmp_path / "run") as journal:
        for task in ("a", "b", "a"):
            journal.append("attempt_started", task=task)

    def count(state: dict[str, int], record: Record) -> dict[str, int]:
        task = record.fields["task"]
        return {**state, task: state.get(task, 0) + 1}

    empty: dict[str, int] = {}
    assert fold(read_journal(journal.path), count, empty) == {"a": 2, "b": 1}


def test_a_closed_journal_refuses_writes_and_releases_its_lock(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path / "run")
    journal.close()
    journal.close()
    assert journal.closed
    with pytest.raises(ValueError, match="is closed"):
        journal.append("late")
    with Journal.open(tmp_path / "run") as reopened:
        assert not reopened.closed


def test_a_failed_write_stops_the_journal_and_leaves_it_well_formed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    code = """
        import resource, signal, sys
        from pathlib import Path
        from stretto.errors import RunError
        from stretto.engine.journal import Journal
        journal = Journal.create(Path(sys.argv[1]))
        journal.append("small")
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        limit = journal.path.stat().st_size + 1000
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        for attempt in range(2):
            try:
                journal.append("big", payload="x" * 5000)
            except RunError as exc:
                print(exc, flush=True)
        journal.close()
    """
    returncode, out = run_child(code, run)
    assert returncode == 0
    first, second = out.splitlines()
    assert "writing journal" in first and "`stretto resume run`" in first
    assert second == first  # no further writes once a write failed
    assert [r.type for r in read_journal(run / JOURNAL_NAME)] == ["small"]
    assert (run / JOURNAL_NAME).read_bytes().endswith(b"\n")  # the partial record was cut


def test_readers_see_a_consistent_prefix_while_a_writer_appends(tmp_path: Path) -> None:
    run = tmp_path / "run"
    total = 1500
    code = """
        import sys
        from pathlib import Path
        from stretto.engine.journal import Journal
        journal = Journal.create(Path(sys.argv[1]))
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(int(sys.argv[2])):
            # up to ~5 pages: a reader may catch a record half copied into the page cache
            journal.append("agent_event", i=i, text="y" * (i * 37 % 20000), sync=i % 50 == 0)
        journal.close()
    """
    proc = child(code, run, total, stdin=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == "ready\n"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    seen = [0]
    while seen[-1] < total:
        assert proc.poll() in (None, 0)
        records = read_journal(run / JOURNAL_NAME)
        assert [r.seq for r in records] == list(range(1, len(records) + 1))
        assert all(r.fields["i"] == r.seq - 1 for r in records)
        assert len(records) >= seen[-1]
        seen.append(len(records))
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert seen[-1] == total
    assert any(0 < n < total for n in seen), "the reader never overlapped the writer"
