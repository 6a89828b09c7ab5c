"""SIGTERM and Ctrl-C (SIGINT) in the middle of a run and of its resume, a crash while resume
settles the previous crash, and a torn journal line, on the fault suite's generated plan.

A signal stops the run cleanly: agents ended, unfinished work committed on its branch, the
journal closed with an ``interrupted`` record, how to resume printed, exit 128 + signal. A
kill -9 inside ``resume`` (or inside a journal write) leaves a journal the next resume repairs.
After the last resume the run satisfies every invariant of ``tests/_invariants.py``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from _invariants import check_invariants, midway_problems, only_run
from faults.driver import stretto_env
from faults.engines import finish, records, runs, stretto, wait_for, wait_for_landings
from faults.plangen import CONFIG, Expected, make_plan
from stretto.engine.journal import JOURNAL_NAME, TORN_WRITE, Record, read_journal
from stretto.process import processes_with_token
from stretto.testing.repo import make_repo


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Expected]:
    text, expected = make_plan(11, tmp_path, tasks=16)
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    repo = make_repo(tmp_path / "repo", {"README.md": "signals\n", "stretto.toml": CONFIG})
    return repo, plan, expected


def key(record: Record) -> tuple[str, int]:
    return record.fields["task"], record.fields["attempt"]


def agents_running(gen: int) -> Callable[[list[Record]], bool]:
    """A check: an agent of generation ``gen`` started and has not finished."""

    def ready(found: list[Record]) -> bool:
        started = {
            (r.fields["task"], r.fields["attempt"])
            for r in found
            if r.gen == gen and r.type == "attempt_started"
        }
        ended = {
            (r.fields["task"], r.fields["attempt"]) for r in found if r.type == "attempt_finished"
        }
        return bool(started - ended)

    return ready


def assert_interrupted(repo: Path, code: int, output: str, sig: int) -> None:
    run = only_run(repo)
    assert code == 128 + sig, output
    assert "Traceback" not in output, output
    assert f"interrupted: run {run} stopped before its end" in output, output
    assert f"`stretto resume {run}` finishes it" in output, output
    assert processes_with_token(run) == []  # the agents were ended on the way out
    last = records(repo)[-1]
    assert last.type == "run_finished" and last.fields["status"] == "interrupted", last
    assert last.fields["signal"] == sig
    assert midway_problems(repo, run) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_and_mid_resume_stops_cleanly_and_resume_finishes(
    setup: tuple[Path, Path, Expected], sig: signal.Signals
) -> None:
    repo, plan, expected = setup
    proc = stretto(repo, "run", str(plan), "--plain")
    wait_for_landings(repo, proc, 2)
    wait_for(repo, proc, agents_running(0), "an agent at work")
    proc.send_signal(sig)
    assert_interrupted(repo, *finish(proc), sig)
    # The same signal to the resumed engine, while its own agents work.
    proc = stretto(repo, "resume", "--plain")
    gen = wait_for(repo, proc, lambda f: f[-1].type != "run_finished", "the resume")[-1].gen
    wait_for(repo, proc, agents_running(gen), "an agent of the resume at work")
    proc.send_signal(sig)
    assert_interrupted(repo, *finish(proc), sig)
    code, output = finish(stretto(repo, "resume", "--plain"))
    assert code == 0, output
    check_invariants(repo, only_run(repo), tasks=expected.tasks)
    assert expected.check_tree(repo) == []


def test_a_crash_inside_resume_and_a_torn_journal_line_are_repaired_by_the_next_resume(
    setup: tuple[Path, Path, Expected],
) -> None:
    repo, plan, expected = setup
    # The run dies in the middle of writing its 30th record: half a line is left.
    code, output = finish(
        stretto(repo, "run", str(plan), "--plain", env=stretto_env(f"{TORN_WRITE}@30"))
    )
    assert code == -9, output
    journal = repo / ".stretto" / "runs" / only_run(repo) / JOURNAL_NAME
    assert not journal.read_bytes().endswith(b"\n")  # torn
    assert len(read_journal(journal)) == 29  # readers skip the torn line
    status = finish(stretto(repo, "status"))
    assert status[0] == 0 and "interrupted" in status[1], status
    # The first resume dies while it settles that crash: after reopening the journal (torn
    # line cut), before it has started any agent.
    code, output = finish(stretto(repo, "resume", "--plain", env=stretto_env(f"{TORN_WRITE}@3")))
    assert code == -9, output
    reopened = [r for r in read_journal(journal) if r.type == "journal_reopened"]
    assert reopened[0].fields["torn_bytes_dropped"] > 0
    assert not journal.read_bytes().endswith(b"\n")  # torn again, inside resume
    # The second dies at a merge; the third finishes.
    code, output = finish(
        stretto(repo, "resume", "--plain", env=stretto_env("after-intent:merge@2"))
    )
    assert code == -9, output
    assert midway_problems(repo, only_run(repo)) == []
    code, output = finish(stretto(repo, "resume", "--plain"))
    assert code == 0, output
    check_invariants(repo, only_run(repo), tasks=expected.tasks)
    assert expected.check_tree(repo) == []
    assert len([r for r in read_journal(journal) if r.type == "journal_reopened"]) == 3


def test_a_run_killed_before_its_first_record_says_to_start_again_and_clean_removes_it(
    setup: tuple[Path, Path, Expected],
) -> None:
    repo, plan, expected = setup
    at_start = stretto_env("after-journal-created")
    code, output = finish(stretto(repo, "run", str(plan), "--plain", env=at_start))
    assert code == -9, output
    [empty] = runs(repo)
    assert (empty / JOURNAL_NAME).read_bytes() == b""
    code, output = finish(stretto(repo, "resume", "--plain"))
    assert code == 1 and "Traceback" not in output, output
    assert "was stopped before it started" in output, output
    assert "Start it again with `stretto run PLAN`" in output, output
    assert (empty / JOURNAL_NAME).read_bytes() == b""  # resume changed nothing
    code, output = finish(stretto(repo, "runs"))
    assert code == 0 and "damaged" in output, output
    code, output = finish(stretto(repo, "clean"))
    assert code == 0 and f"removed run {empty.name}" in output, output
    assert runs(repo) == []
    code, output = finish(stretto(repo, "run", str(plan), "--plain"))
    assert code == 0, output
    check_invariants(repo, only_run(repo), tasks=expected.tasks)
