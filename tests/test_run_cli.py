"""The command line of runs: run, status, runs, log, clean, resume, demo and the live view.

Everything here runs for real: git repositories in tmp_path, shell agents, and (where a real
process or terminal matters) ``python -m stretto`` in a subprocess, killed with SIGKILL or run
under a pseudo-terminal.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from stretto.engine.journal import Record, read_journal
from stretto.frontends.cli import main
from stretto.process import kill_token, processes_with_token
from stretto.testing.repo import git, make_repo

STAMP = re.compile(r"^\d\d:\d\d:\d\d ")

TWO_TASKS = """\
name: two
stages:
  - name: work
    steps:
      - {id: alpha, goal: write alpha, files: [alpha.txt], command: "echo alpha > alpha.txt"}
      - {id: beta, goal: write beta, files: [beta.txt], command: "echo beta > beta.txt"}
"""

# One task lands, one agent fails, one passes its agent but fails its own gate.
MIXED = """\
name: mixed
stages:
  - name: work
    steps:
      - {id: good, goal: write good, files: [good.txt], command: "echo good > good.txt"}
      - id: crash
        goal: crash
        files: [crash.txt]
        max_attempts: 1
        command: "echo 'crash is about to fail'; exit 3"
      - id: gated
        goal: fail a gate
        files: [gated.txt]
        max_attempts: 1
        command: "echo wrong > gated.txt"
        gates: ["grep -q right gated.txt"]
"""

BAD_PLAN = """\
stages:
  - name: work
    steps:
      - {id: models, goal: x, command: "true"}
      - {id: api, goal: y, command: "true", depends_on: [modles]}
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh repository with one commit on main, as the current directory."""
    path = make_repo(tmp_path / "repo", {"README.md": "# test\n"})
    monkeypatch.chdir(path)
    return path


def plan_file(repo: Path, text: str, name: str = "plan.yaml") -> Path:
    """Write a plan beside (not inside) the repository, so the checkout stays clean."""
    path = repo.parent / name
    path.write_text(text)
    return path


def branches(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()


def worktrees(repo: Path) -> list[str]:
    listing = git(repo, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in listing.splitlines() if line.startswith("worktree ")]


def trailer_tasks(repo: Path) -> list[str]:
    out = git(repo, "log", "main", "--format=%(trailers:key=Stretto-Task,valueonly)")
    return [line.strip() for line in out.splitlines() if line.strip()]


def run_ids(repo: Path) -> list[str]:
    root = repo / ".stretto" / "runs"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def assert_nothing_written(repo: Path) -> None:
    assert not (repo / ".stretto").exists()
    assert branches(repo) == ["main"]
    assert worktrees(repo) == [str(repo)]
    assert git(repo, "status", "--porcelain", "--ignored") == ""


# --------------------------------------------------------------------------- stretto run


def test_run_plain_all_landed_exit_0(repo: Path) -> None:
    result = invoke("run", str(plan_file(repo, TWO_TASKS)), "--plain")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    events, _, summary = result.stdout.partition("\n\n")
    lines = events.splitlines()
    assert lines and all(STAMP.match(line) for line in lines), lines
    assert "started: two (2 tasks, target main" in lines[0]
    assert any(re.search(r"merged  alpha -> [0-9a-f]{12}$", line) for line in lines)
    assert any(line.endswith("landed  beta") for line in lines)
    [run_id] = run_ids(repo)
    assert summary.startswith(f"run {run_id}: finished\n")
    assert "2 of 2 task(s) landed on 'main'" in summary
    assert "\x1b[" not in result.stdout  # --plain: no terminal codes
    assert sorted(trailer_tasks(repo)) == ["alpha", "beta"]
    assert git(repo, "show", "main:alpha.txt") == "alpha\n"
    # Landed work leaves nothing behind.
    assert branches(repo) == ["main"]
    assert worktrees(repo) == [str(repo)]


def test_run_failure_exit_1_and_summary_says_why(repo: Path) -> None:
    # No --plain: CliRunner's stdout is not a terminal, so the plain view is chosen anyway.
    result = invoke("run", str(plan_file(repo, MIXED)))
    assert result.exit_code == 1, result.output
    assert "\x1b[" not in result.stdout
    summary = result.stdout.split("\n\n", 1)[1]
    assert summary.splitlines()[0].endswith(": failed")
    assert re.search(r"^  ok   good +attempts 1 [0-9a-f]{12}$", summary, re.M), summary
    assert re.search(
        r"^  FAIL crash +attempts 1 +gave up after 1 failed attempt; last: agent shell: failed "
        r"\(command exited with status 3\)$",
        summary,
        re.M,
    ), summary
    assert re.search(r"^  FAIL gated .*gates failed: step-1: ", summary, re.M), summary
    assert "1 of 3 task(s) landed on 'main'" in summary
    assert trailer_tasks(repo) == ["good"]


def test_run_json_every_line_is_a_record_and_the_last_is_the_summary(repo: Path) -> None:
    plan = TWO_TASKS.replace(
        '"echo alpha > alpha.txt"}', '"echo alpha > alpha.txt", gates: ["test -s alpha.txt"]}'
    )
    result = invoke("run", str(plan_file(repo, plan)), "--json")
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]  # each line is JSON
    records, summary = objects[:-1], objects[-1]
    types = {r["type"] for r in records}
    for expected in (
        "run_started",
        "attempt_started",
        "gate_result",
        "merged",
        "task_finished",
        "run_finished",
    ):
        assert expected in types, expected
    assert records[0]["type"] == "run_started" and records[-1]["type"] == "run_finished"
    seqs = [r["seq"] for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    gate = next(r for r in records if r["type"] == "gate_result" and r["gate"] == "step-1")
    assert gate["task"] == "alpha" and gate["passed"] is True
    assert summary["type"] == "summary" and summary["status"] == "finished"
    assert summary["run_id"] == records[0]["run_id"] == run_ids(repo)[0]
    assert summary["landed"] == 2 and summary["failed"] == 0
    assert {t["task"]: t["status"] for t in summary["tasks"]} == {
        "alpha": "landed",
        "beta": "landed",
    }


# --------------------------------------------------------------------------- refused runs


def test_invalid_plan_exit_2_and_nothing_written(repo: Path) -> None:
    plan = plan_file(repo, BAD_PLAN)
    result = invoke("run", str(plan), "--plain")
    assert result.exit_code == 2
    assert f"{plan}:5:" in result.stderr and "unknown step 'modles'" in result.stderr
    assert "(did you mean 'models'?)" in result.stderr
    assert result.stdout == ""
    assert_nothing_written(repo)
    as_json = invoke("run", str(plan), "--json")
    assert as_json.exit_code == 2
    payload = json.loads(as_json.stdout)
    assert payload["ok"] is False and payload["error"] == "PlanError"
    assert payload["diagnostics"][0]["field"] == "stages[0].steps[1].depends_on[0]"
    assert_nothing_written(repo)


def test_missing_target_branch_is_a_clear_error(repo: Path) -> None:
    plan = plan_file(repo, "target: release\n" + TWO_TASKS)
    result = invoke("run", str(plan), "--plain")
    assert result.exit_code == 2  # bad input, as the docs say (issue 19)
    assert "target branch 'release' does not exist" in result.stderr
    assert "git branch release" in result.stderr  # the fix
    assert result.stdout == ""
    assert_nothing_written(repo)


@pytest.mark.parametrize(
    ("toml", "where", "what"),
    [
        ('max_agents = "four"\n', ":1:1: max_agents:", "must be an integer"),
        ("target = 'main'\nmax_agents = four\n", ":2:14:", "not valid TOML"),
    ],
)
def test_invalid_config_exit_2_with_file_and_line(
    repo: Path, toml: str, where: str, what: str
) -> None:
    config = repo / "stretto.toml"
    config.write_text(toml)
    git(repo, "add", "stretto.toml")
    git(repo, "commit", "-qm", "config")
    result = invoke("run", str(plan_file(repo, TWO_TASKS)), "--plain")
    assert result.exit_code == 2
    assert f"{config}{where}" in result.stderr and what in result.stderr
    assert "nothing was done" in result.stderr
    assert_nothing_written(repo)


# --------------------------------------------------------------------------- status, runs, log


def test_status_after_a_run_text_and_json(repo: Path) -> None:
    assert invoke("run", str(plan_file(repo, MIXED)), "--plain").exit_code == 1
    [run_id] = run_ids(repo)
    text = invoke("status")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == f"run {run_id}: failed (mixed; target main; 2 failed, 1 landed)"
    assert re.match(r"^  landed +good +attempts 1$", lines[1])
    assert re.match(r"^  failed +crash +attempts 1 +gave up .*exited with status 3\)$", lines[2])
    assert re.match(r"^  failed +gated +attempts 1 +gave up .*gates failed: step-1", lines[3])
    as_json = invoke("status", "--json", run_id[:12])  # a unique prefix is enough
    assert as_json.exit_code == 0
    state = json.loads(as_json.stdout)
    assert state["run_id"] == run_id and state["state"] == "failed"
    assert state["counts"] == {"landed": 1, "failed": 2}
    tasks = {t["id"]: t for t in state["tasks"]}
    assert (
        tasks["good"]["state"] == "landed"
        and tasks["good"]["commit"] == git(repo, "rev-parse", "main").strip()
    )
    assert tasks["crash"]["attempts"] == 1 and "status 3" in tasks["crash"]["reason"]
    failed_gates = [g for g in tasks["gated"]["gates"] if not g["passed"]]
    assert [g["gate"] for g in failed_gates] == ["step-1"]


def test_runs_lists_every_run(repo: Path) -> None:
    assert invoke("run", str(plan_file(repo, MIXED)), "--plain").exit_code == 1
    assert invoke("run", str(plan_file(repo, TWO_TASKS, "two.yaml")), "--plain").exit_code == 0
    first, second = run_ids(repo)
    text = invoke("runs")
    assert text.exit_code == 0
    lines = text.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(first) and re.search(r"failed +1/3 landed +mixed$", lines[0])
    assert lines[1].startswith(second) and re.search(r"finished +2/2 landed +two$", lines[1])
    listed = json.loads(invoke("runs", "--json").stdout)
    assert [(r["run_id"], r["state"]) for r in listed] == [
        (first, "failed"),
        (second, "finished"),
    ]


def test_log_prints_the_agent_log_and_gate_logs(repo: Path) -> None:
    plan = """\
stages:
  - name: work
    steps:
      - id: flaky
        goal: pass on the second try
        files: [n.txt]
        command: "echo \\"agent attempt $STRETTO_ATTEMPT here\\"; echo $STRETTO_ATTEMPT > n.txt"
        gates: ["echo checking n.txt; grep -qx 2 n.txt"]
"""
    assert invoke("run", str(plan_file(repo, plan)), "--plain").exit_code == 0
    [run_id] = run_ids(repo)
    first = invoke("log", "flaky", "--attempt", "1")
    assert first.exit_code == 0, first.output
    folder = repo / ".stretto" / "runs" / run_id / "tasks" / "flaky"
    assert first.stdout.startswith(f"==> {folder / '1' / 'agent.log'}\n")
    assert "agent attempt 1 here" in first.stdout
    gate = first.stdout.split("--- gate step-1 ---\n", 1)[1]
    assert "checking n.txt" in gate
    assert "--- gate scope ---" in first.stdout
    last = invoke("log", "flaky")  # default: the last attempt
    assert last.exit_code == 0
    assert last.stdout.startswith(f"==> {folder / '2' / 'agent.log'}\n")
    assert "agent attempt 2 here" in last.stdout and "attempt 1" not in last.stdout
    missing = invoke("log", "flaky", "--attempt", "7")
    assert missing.exit_code == 1
    assert "task 'flaky' has no attempt 7" in missing.stderr
    assert "its attempts: 1, 2" in missing.stderr


def test_log_of_unknown_or_never_started_task_lists_the_tasks(repo: Path) -> None:
    plan = """\
stages:
  - name: work
    steps:
      - {id: base, goal: x, files: [b.txt], max_attempts: 1, command: "exit 1"}
      - {id: docs, goal: y, files: [d.txt], depends_on: [base], command: "echo d > d.txt"}
"""
    assert invoke("run", str(plan_file(repo, plan)), "--plain").exit_code == 1
    [run_id] = run_ids(repo)
    unknown = invoke("log", "bsae")
    assert unknown.exit_code == 1
    assert f"no task 'bsae' in run {run_id} (did you mean 'base'?)" in unknown.stderr
    assert "its tasks: base, docs" in unknown.stderr  # every task, not only those with logs
    skipped = invoke("log", "docs")
    assert skipped.exit_code == 1
    assert "task 'docs' never started" in skipped.stderr
    assert "dependency 'base' did not land" in skipped.stderr


def test_status_log_and_runs_without_any_run(repo: Path) -> None:
    status = invoke("status")
    assert status.exit_code == 1
    assert "error: no runs yet" in status.stderr and "stretto run PLAN" in status.stderr
    as_json = invoke("status", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["error"] == "RunError"
    log = invoke("log", "anything")
    assert log.exit_code == 1 and "no runs yet" in log.stderr
    runs = invoke("runs")
    assert runs.exit_code == 0 and "no runs yet" in runs.stdout
    assert json.loads(invoke("runs", "--json").stdout) == []
    assert not (repo / ".stretto").exists()


# --------------------------------------------------------------------------- clean


def test_clean_removes_the_worktree_and_branch_of_a_failed_task(repo: Path) -> None:
    plan = """\
stages:
  - name: work
    steps:
      - {id: ok, goal: x, files: [ok.txt], command: "echo ok > ok.txt"}
      - {id: broken, goal: y, files: [no.txt], max_attempts: 1, command: "echo n > no.txt; exit 1"}
"""
    assert invoke("run", str(plan_file(repo, plan)), "--plain").exit_code == 1
    [run_id] = run_ids(repo)
    kept = repo / ".stretto" / "worktrees" / f"{run_id}-broken-1"
    branch = f"stretto/{run_id}/broken/1"
    # A failed attempt is kept for inspection until `stretto clean`.
    assert str(kept) in worktrees(repo) and branch in branches(repo)
    result = invoke("clean")
    assert result.exit_code == 0, result.output
    assert f"removed worktree {kept}" in result.stdout.splitlines()
    assert f"deleted branch {branch}" in result.stdout.splitlines()
    assert not kept.exists()
    assert branches(repo) == ["main"] and worktrees(repo) == [str(repo)]
    assert trailer_tasks(repo) == ["ok"]  # the landed work is untouched
    again = invoke("clean")
    assert again.exit_code == 0 and again.stdout.strip() == "nothing to clean"


def test_clean_json(repo: Path) -> None:
    assert invoke("run", str(plan_file(repo, MIXED)), "--plain").exit_code == 1
    [run_id] = run_ids(repo)
    result = invoke("clean", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert sorted(report["deleted_branches"]) == [
        f"stretto/{run_id}/crash/1",
        f"stretto/{run_id}/gated/1",
    ]
    assert sorted(Path(p).name for p in report["removed_worktrees"]) == [
        f"{run_id}-crash-1",
        f"{run_id}-gated-1",
    ]
    assert report["killed"] == {} and report["live_runs"] == [] and report["kept_branches"] == []
    assert branches(repo) == ["main"]


# --------------------------------------------------------------------------- killed runs


def journal_of(repo: Path) -> list[Record]:
    ids = run_ids(repo)
    if not ids or not (repo / ".stretto" / "runs" / ids[-1] / "journal.jsonl").exists():
        return []
    return read_journal(repo / ".stretto" / "runs" / ids[-1] / "journal.jsonl")


def wait_for(
    repo: Path, proc: subprocess.Popen[bytes], ready: Callable[[list[Record]], bool]
) -> list[Record]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = journal_of(repo)
        if ready(records):
            return records
        assert proc.poll() is None, "stretto ended before the run got where the test needs it"
        time.sleep(0.05)
    raise AssertionError(f"timed out; journal: {[r.type for r in journal_of(repo)]}")


def has(records: list[Record], type_: str, task: str) -> bool:
    return any(r.type == type_ and r.fields.get("task") == task for r in records)


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_stretto(repo: Path, plan: Path) -> subprocess.Popen[bytes]:
    log = (repo.parent / "stretto-out.log").open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "stretto", "run", str(plan), "--plain"],
            cwd=repo,
            stdout=log,
            stderr=subprocess.STDOUT,
            # A shell that starts us in the background ignores SIGINT for its children, and
            # Python keeps an ignored SIGINT: give stretto the default, as a terminal would.
            preexec_fn=default_sigint,
        )
    finally:
        log.close()


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


SLOW = """\
stages:
  - name: work
    steps:
      - {id: slow, goal: x, files: [s.txt], command: "sleep 30; echo s > s.txt"}
"""


def test_clean_ends_the_agents_of_a_killed_run(repo: Path) -> None:
    proc = start_stretto(repo, plan_file(repo, SLOW))
    run_id = ""
    try:
        records = wait_for(repo, proc, lambda rs: has(rs, "attempt_started", "slow"))
        run_id = str(records[0].fields["run_id"])
        live = json.loads(invoke("status", "--json").stdout)
        assert live["state"] == "running"
        assert {t["id"]: t["state"] for t in live["tasks"]} == {"slow": "running"}
        # A live run is never touched.
        during = json.loads(invoke("clean", "--json").stdout)
        assert during["live_runs"] == [run_id] and during["killed"] == {}
        assert processes_with_token(run_id)
        sigkill(proc)
        orphans = processes_with_token(run_id)
        assert orphans, "the agent should outlive a SIGKILLed stretto (it has its own session)"
        status = invoke("status")
        assert status.stdout.startswith(f"run {run_id}: interrupted")
        assert re.search(r"^  interrupted +slow +attempts 1$", status.stdout, re.M), status.stdout
        assert f"stretto resume {run_id}" in status.stdout
        worktree = repo / ".stretto" / "worktrees" / f"{run_id}-slow-1"
        assert worktree.is_dir()
        cleaned = invoke("clean")
        assert cleaned.exit_code == 0, cleaned.output
        assert f"leftover process(es) of run {run_id}" in cleaned.stdout
        assert processes_with_token(run_id) == []
        assert f"removed worktree {worktree}" in cleaned.stdout
        assert f"deleted branch stretto/{run_id}/slow/1" in cleaned.stdout
        assert not worktree.exists() and branches(repo) == ["main"]
        assert invoke("status").stdout.startswith(f"run {run_id}: interrupted")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if run_id:
            kill_token(run_id, grace=0.5)


def test_ctrl_c_ends_the_agents_and_says_how_to_resume(repo: Path) -> None:
    proc = start_stretto(repo, plan_file(repo, SLOW))
    run_id = ""
    try:
        records = wait_for(repo, proc, lambda rs: has(rs, "attempt_started", "slow"))
        run_id = str(records[0].fields["run_id"])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
        out = (repo.parent / "stretto-out.log").read_text()
        assert f"interrupted: run {run_id} stopped" in out
        assert f"`stretto resume {run_id}` finishes it" in out
        assert "Traceback" not in out
        assert processes_with_token(run_id) == []  # stretto ended its agent on the way out
        assert invoke("status").stdout.startswith(f"run {run_id}: interrupted")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if run_id:
            kill_token(run_id, grace=0.5)


RESUMABLE = """\
name: resumable
stages:
  - name: work
    steps:
      - {id: quick, goal: x, files: [q.txt], command: "echo q > q.txt"}
      - id: slow
        goal: y
        files: [s.txt]
        command: 'if [ "$STRETTO_ATTEMPT" = 1 ]; then sleep 5; fi; echo s > s.txt'
      - {id: after, goal: z, files: [a.txt], depends_on: [slow], command: "echo a > a.txt"}
"""


def interrupted_run(repo: Path) -> str:
    """Start RESUMABLE, SIGKILL stretto once quick landed and slow's agent runs; its run id.

    Only slow's first attempt sleeps, so the run cannot end before the kill and resume is quick.
    """
    proc = start_stretto(repo, plan_file(repo, RESUMABLE))
    try:
        records = wait_for(
            repo,
            proc,
            lambda rs: has(rs, "task_finished", "quick") and has(rs, "attempt_started", "slow"),
        )
        sigkill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return str(records[0].fields["run_id"])


ONE_TASK = """\
stages:
  - name: work
    steps:
      - {id: one, goal: x, files: [one.txt], command: "echo 1 > one.txt"}
"""


def crash_after_verified(repo: Path) -> str:
    """Run ONE_TASK with stretto killing itself right after the task was verified; the run id."""
    env = {**os.environ, "STRETTO_CRASHPOINT": "after-verified"}
    result = subprocess.run(
        [sys.executable, "-m", "stretto", "run", str(plan_file(repo, ONE_TASK)), "--plain"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    [run_id] = run_ids(repo)
    return run_id


def test_clean_keeps_verified_work_that_resume_then_lands(repo: Path) -> None:
    run_id = crash_after_verified(repo)
    branch = f"stretto/{run_id}/one/1"
    cleaned = invoke("clean")
    assert cleaned.exit_code == 0
    assert f"kept branch {branch} (verified work of an interrupted run; --all drops it)" in (
        cleaned.stdout
    )
    assert branch in branches(repo)
    result = invoke("resume", "--plain")
    assert result.exit_code == 0, result.output
    assert "1 of 1 task(s) landed on 'main'" in result.stdout
    assert trailer_tasks(repo) == ["one"]
    assert git(repo, "show", "main:one.txt") == "1\n"
    assert branches(repo) == ["main"]


def test_resume_of_verified_work_does_not_count_an_extra_attempt(repo: Path) -> None:
    crash_after_verified(repo)
    result = invoke("resume", "--json")
    assert result.exit_code == 0, result.output
    assert "Stretto-Attempt: 1" in git(repo, "log", "-1", "main", "--format=%B")
    state = json.loads(invoke("status", "--json").stdout)
    assert [(t["id"], t["state"], t["attempts"]) for t in state["tasks"]] == [("one", "landed", 1)]


def test_resume_of_a_finished_run_is_a_clear_error(repo: Path) -> None:
    assert invoke("run", str(plan_file(repo, TWO_TASKS)), "--plain").exit_code == 0
    [run_id] = run_ids(repo)
    result = invoke("resume", "--plain")
    assert result.exit_code == 1
    assert f"run {run_id} already finished (finished); nothing to resume" in result.stderr
    assert "stretto run PLAN" in result.stderr
    assert sorted(trailer_tasks(repo)) == ["alpha", "beta"]


def test_resume_finishes_an_interrupted_run(repo: Path) -> None:
    run_id = interrupted_run(repo)
    assert invoke("status").stdout.startswith(f"run {run_id}: interrupted")
    assert trailer_tasks(repo) == ["quick"]
    result = invoke("resume", "--plain")
    assert result.exit_code == 0, result.output
    assert f"run {run_id}: finished" in result.stdout
    assert "3 of 3 task(s) landed on 'main'" in result.stdout
    tasks = trailer_tasks(repo)
    assert sorted(tasks) == ["after", "quick", "slow"]  # each landed exactly once
    assert processes_with_token(run_id) == []  # the orphaned agent was ended
    state = json.loads(invoke("status", "--json").stdout)
    assert state["state"] == "finished" and state["generations"] == 2
    assert {t["id"]: t["state"] for t in state["tasks"]} == dict.fromkeys(
        ("quick", "slow", "after"), "landed"
    )
    assert git(repo, "show", "main:s.txt") == "s\n"
    assert branches(repo) == ["main"]


def test_resume_summary_keeps_tasks_landed_before_the_crash(repo: Path) -> None:
    run_id = interrupted_run(repo)
    landed = git(repo, "rev-parse", "main").strip()
    result = invoke("resume", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["run_id"] == run_id
    quick = next(t for t in summary["tasks"] if t["task"] == "quick")
    assert (quick["status"], quick["attempts"], quick["commit"]) == ("landed", 1, landed)


def test_resume_json_shows_the_resume_started_record(repo: Path) -> None:
    interrupted_run(repo)
    result = invoke("resume", "--json")
    assert result.exit_code == 0, result.output
    types = [json.loads(line)["type"] for line in result.stdout.splitlines()]
    assert "resume_started" in types
    journal = journal_of(repo)
    resumed = next(r for r in journal if r.type == "resume_started")
    assert resumed.fields["killed"]  # the orphaned agent of slow


# --------------------------------------------------------------------------- demo


def test_demo_plain(tmp_path: Path) -> None:
    started = time.monotonic()
    result = invoke("demo", "--dir", str(tmp_path / "calc"), "--plain")
    elapsed = time.monotonic() - started
    print(f"stretto demo took {elapsed:.1f}s")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "8 of 8 task(s) landed on 'main'" in out
    assert re.search(r"^  ok   div +attempts 2 [0-9a-f]{12}$", out, re.M), out
    assert re.search(r"gate +div tests failed: .*FAILED \(failures=1\)", out)
    log = out.split("git log of main:\n", 1)[1]
    assert "stretto: Add true division (div)" in log and "initial" in log
    assert f"cd {tmp_path / 'calc'} && stretto status" in out
    assert elapsed < 60


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine\n")
    result = invoke("demo", "--dir", str(used), "--plain")
    assert result.exit_code == 2
    assert f"{used} is not empty" in result.stderr and "new or empty directory" in result.stderr
    assert sorted(p.name for p in used.iterdir()) == ["notes.txt"]  # no repository made there


# --------------------------------------------------------------------------- live view


def run_under_pty(repo: Path, args: list[str], timeout: float = 30) -> tuple[int, str]:
    """Run ``python -m stretto ARGS`` with a 100x30 pseudo-terminal as stdout and stderr."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stretto", *args],
        cwd=repo,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
        env={**env, "TERM": "xterm"},
    )
    os.close(terminal)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_live_view_on_a_terminal(repo: Path) -> None:
    plan = """\
name: live
stages:
  - name: work
    steps:
      - {id: one, goal: x, files: [one.txt], command: "sleep 1; echo 1 > one.txt"}
      - {id: two, goal: y, files: [two.txt], command: "sleep 1; echo 2 > two.txt"}
"""
    code, out = run_under_pty(repo, ["run", str(plan_file(repo, plan))])
    assert code == 0, out
    assert "tasks, " in out and " running" in out  # the progress bar
    assert re.search(r"\] 0/2 tasks, 2 running", out)
    assert re.search(r"\x1b\[\d+F\x1b\[J", out)  # the block is redrawn in place
    assert "\x1b[36mone" in out  # one line per running agent
    # The block is cleared for good before the summary, which comes last.
    summary = out.rsplit("\x1b[J", 1)[1]
    assert "\x1b[" not in summary
    assert re.search(r"^run \S+: finished\r?$", summary, re.M), summary
    assert "2 of 2 task(s) landed on 'main'" in summary
    assert sorted(trailer_tasks(repo)) == ["one", "two"]


def test_live_view_cuts_lines_to_a_narrow_terminal_but_never_a_colour_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stretto.frontends.view import LiveView

    monkeypatch.setenv("COLUMNS", "30")
    out = io.StringIO()
    view = LiveView(out, refresh=60)
    now = time.time()
    started = {"run_id": "r", "plan": "p", "tasks": ["a-long-task-name"]}
    options = {"target": "main", "max_agents": 1}
    view(Record(1, 0, now, "event", "run_started", {**started, "options": options}))
    attempt = {"task": "a-long-task-name", "attempt": 1, "agent": "shell", "pid": 1}
    view(Record(2, 0, now, "event", "attempt_started", attempt))
    view.close()
    # The last block drawn before close() cleared it (below the event line that scrolled by).
    lines = [line for line in out.getvalue().split("\x1b[J")[-2].splitlines() if line[:2] == "  "]
    assert len(lines) == 2 and "a-long-task-name" in lines[0] and "0/1 tasks" in lines[1]
    for line in lines:
        visible = re.sub(r"\x1b\[[0-9;]*m", "", line)
        assert "\x1b" not in visible, repr(line)  # no escape code was cut in half
        assert len(visible) <= 29, repr(line)
    assert lines[0].count("\x1b[36m") == lines[0].count("\x1b[0m") == 1
