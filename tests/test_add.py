"""Adding tasks to a running run (``stretto add``, ``RunHandle.add_tasks``), with real engines.

The run's agents are held by a ``go`` file, so the run is live while steps are added; then it
goes on and the added tasks land after the tasks they wait for. Bad steps exit 2 with the
plan's own errors (line, field, fix) and change nothing: not the journal, not the inbox. The
engine checks again (steps sent straight to its inbox), and an addition journaled right before
a kill -9 (or sent while the engine was dead) is kept by ``stretto resume``, exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _engines import stop_engines
from stretto import api
from stretto.engine.control import inbox_path, send
from stretto.engine.journal import LOCK_NAME, Record, is_live, read_journal
from stretto.errors import ControlError, PlanError
from stretto.testing.repo import git, make_repo

pytestmark = pytest.mark.timeout(120, method="thread")

STRETTO = [sys.executable, "-m", "stretto"]


def cli(
    repo: Path, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STRETTO, *args], cwd=repo, capture_output=True, text=True, timeout=timeout, input=stdin
    )


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    path = make_repo(tmp_path / "repo", {"README.md": "# test\n"})
    yield path
    stop_engines(path)


def wait_until(check: Callable[[], bool], timeout: float = 40, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


def records(repo: Path, run_id: str) -> list[Record]:
    return read_journal(repo / ".stretto" / "runs" / run_id / "journal.jsonl")


def has(repo: Path, run_id: str, type_: str, **fields: object) -> bool:
    return any(
        r.type == type_ and all(r.fields.get(k) == v for k, v in fields.items())
        for r in records(repo, run_id)
    )


def held_run(repo: Path, go: Path) -> str:
    """A detached run of two tasks whose agents wait for ``go``; returns its id once live."""
    wait = f"while [ ! -e {go} ]; do sleep 0.05; done"
    plan = repo.parent / "plan.yaml"
    plan.write_text(
        "name: held\nstages:\n  - name: work\n    steps:\n"
        f"      - {{id: models, goal: m, files: [m.txt], command: '{wait}; echo m > m.txt'}}\n"
        f"      - {{id: api, goal: a, files: [a.txt], command: '{wait}; echo a > a.txt'}}\n"
    )
    done = cli(repo, "run", "--detach", "--json", str(plan))
    assert done.returncode == 0, done.stderr
    run_id = str(json.loads(done.stdout)["run_id"])
    wait_until(lambda: has(repo, run_id, "attempt_started", task="api"), what="agents")
    return run_id


ADDED = """\
- id: docs
  goal: write the docs once the models landed
  files: [docs.txt]
  depends_on: [models]
  command: "echo d > docs.txt"
- goal: check the docs
  files: [check.txt]
  depends_on: [docs]
  command: "echo c > check.txt"
"""


def test_added_tasks_run_after_what_they_wait_for_and_land(repo: Path) -> None:
    go = repo.parent / "go"
    run_id = held_run(repo, go)
    steps = repo.parent / "more.yaml"
    steps.write_text(ADDED)
    done = cli(repo, "add", run_id, str(steps), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] and out["applied"] and out["run_id"] == run_id
    assert out["tasks"] == ["docs", "check-the-docs"]  # an id made from the goal, as in a plan
    # One step on stdin, with the run taken as the latest; an id of its own.
    single = "goal: a note\nfiles: [note.txt]\ncommand: 'echo n > note.txt'\n"
    done = cli(repo, "add", "-", stdin=single)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{run_id}: added 1 task: a-note"
    status = api.open_run(repo, run_id).status()
    assert list(status.tasks) == ["models", "api", "docs", "check-the-docs", "a-note"]
    assert status.tasks["docs"].state == "pending"
    go.touch()
    final = api.open_run(repo, run_id).wait(timeout=60)
    assert final.state == "finished", final.to_dict()
    assert {t: s.state for t, s in final.tasks.items()} == dict.fromkeys(final.tasks, "landed")
    for name, text in (("docs.txt", "d"), ("check.txt", "c"), ("note.txt", "n")):
        assert git(repo, "show", f"main:{name}").strip() == text
    order = [r.fields["task"] for r in records(repo, run_id) if r.type == "task_finished"]
    assert order.index("models") < order.index("docs") < order.index("check-the-docs")
    starts = {r.fields["task"]: r.seq for r in records(repo, run_id) if r.type == "attempt_started"}
    landed = {r.fields["task"]: r.seq for r in records(repo, run_id) if r.type == "merged"}
    assert starts["docs"] > landed["models"] and starts["check-the-docs"] > landed["docs"]
    report = cli(repo, "report", run_id, "-o", str(repo.parent / "r.html"))
    assert report.returncode == 0, report.stderr
    page = (repo.parent / "r.html").read_text()
    assert "check-the-docs" in page and "added" in page


BAD = [  # (steps, the error's location and words)
    ("- goal: x\n  gaol: y\n", "bad.yaml:2:3: [0].gaol: unknown key 'gaol' (did you mean 'goal'?)"),
    (
        "goal: x\ndepends_on: [modles]\n",
        "bad.yaml:2:14: depends_on[0]: unknown step 'modles' (did you mean 'models'?)",
    ),
    ("id: api\ngoal: again\n", "bad.yaml:1:5: id: id 'api' is already a task of this run"),
    ("- {id: p, goal: x}\n- {id: p, goal: y}\n", "bad.yaml:2:8: [1].id: duplicate id 'p'"),
    ("goal: x\nfiles: [../out]\n", "bad.yaml:2:9: files[0]: '../out' escapes the repository"),
    ("goal: x\nagent: nosuch\n", "bad.yaml:2:8: agent: unknown agent 'nosuch'"),
    ("goal: [x\n", "bad.yaml:2:1: YAML syntax error"),
    ("42\n", "bad.yaml:1:1: expected a step (a mapping with 'goal:') or a list of steps"),
    (
        "- {id: p, goal: x, depends_on: [q]}\n- {id: q, goal: y, depends_on: [p]}\n",
        "dependency cycle: p -> q -> p",
    ),
]


def test_bad_steps_exit_2_with_line_and_field_and_change_nothing(repo: Path) -> None:
    go = repo.parent / "go"
    run_id = held_run(repo, go)
    folder = repo / ".stretto" / "runs" / run_id

    def untouched() -> bool:  # nothing sent: no command waiting or journaled, no task added
        sent = [r for r in records(repo, run_id) if r.type.startswith("control")]
        tasks = list(api.open_run(repo, run_id).status().tasks)
        return not sent and not list(inbox_path(folder).iterdir()) and tasks == ["models", "api"]

    for text, said in BAD:
        bad = repo.parent / "bad.yaml"
        bad.write_text(text)
        done = cli(repo, "add", run_id, str(bad))
        assert done.returncode == 2, (text, done.stdout, done.stderr)
        assert said in done.stderr, (said, done.stderr)
        assert "nothing was done" in done.stderr and "Traceback" not in done.stderr
        assert untouched()
    missing = cli(repo, "add", run_id, str(repo.parent / "nope.yaml"))
    assert missing.returncode == 2 and "nope.yaml: not found" in missing.stderr
    # The engine checks again: steps sent straight to its inbox, bypassing the API's check.
    sneaky = send(folder, "add", steps="id: models\ngoal: clash\n", file="sneaky.yaml")
    wait_until(lambda: has(repo, run_id, "control", id=sneaky.id), what="the engine's answer")
    [answer] = [r for r in records(repo, run_id) if r.fields.get("id") == sneaky.id]
    assert answer.fields["ok"] is False
    assert answer.fields["diagnostics"][0]["field"] == "id"
    assert "already a task of this run" in answer.fields["error"]
    assert list(api.open_run(repo, run_id).status().tasks) == ["models", "api"]
    go.touch()
    final = api.open_run(repo, run_id).wait(timeout=60)
    assert final.state == "finished" and list(final.tasks) == ["models", "api"]


def test_a_dependency_on_a_failed_task_and_runs_not_running_are_refused(repo: Path) -> None:
    plan = repo.parent / "plan.yaml"
    plan.write_text(
        "name: p\nstages:\n  - name: w\n    steps:\n"
        "      - {id: one, goal: g, files: [1.txt], command: 'echo 1 > 1.txt'}\n"
    )
    assert cli(repo, "run", str(plan), "--plain").returncode == 0
    [run] = api.list_runs(repo)
    steps = repo.parent / "s.yaml"
    steps.write_text("goal: late\n")
    done = cli(repo, "add", str(steps))
    assert done.returncode == 2
    assert f"run {run.run_id} is not running (it finished)" in done.stderr
    unknown = cli(repo, "add", "nosuchrun", str(steps))
    assert unknown.returncode == 2 and "no run 'nosuchrun'" in unknown.stderr
    with pytest.raises(ControlError, match="not running"):
        api.open_run(repo, run.run_id).add_tasks("goal: late\n")
    # A live run with a failed task: waiting for it is refused, with what to do instead.
    go = repo.parent / "go"
    wait = f"while [ ! -e {go} ]; do sleep 0.05; done"
    plan.write_text(
        "name: q\nstages:\n  - name: w\n    steps:\n"
        "      - {id: bad, goal: g, files: [b.txt], max_attempts: 1, command: 'exit 3'}\n"
        f"      - {{id: slow, goal: g, files: [s.txt], command: '{wait}; echo s > s.txt'}}\n"
    )
    done = cli(repo, "run", "--detach", "--json", str(plan))
    run_id = json.loads(done.stdout)["run_id"]
    wait_until(lambda: has(repo, run_id, "task_finished", task="bad", status="failed"))
    with pytest.raises(PlanError) as caught:
        api.open_run(repo, run_id).add_tasks("goal: x\ndepends_on: [bad]\n", file="x.yaml")
    [problem] = caught.value.diagnostics
    assert (problem.line, problem.field) == (2, "depends_on[0]")
    assert "task 'bad' failed" in problem.message and "stretto retry bad" in problem.message
    go.touch()
    assert api.open_run(repo, run_id).wait(timeout=60).state == "failed"


@pytest.mark.parametrize("when", ["after-journal", "before-read"])
def test_an_addition_racing_a_kill_is_kept_by_resume_exactly_once(
    repo: Path, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if when == "after-journal":  # journaled (applied in memory), its file not yet removed
        monkeypatch.setenv("STRETTO_CRASHPOINT", "after-control")
    go = repo.parent / "go"
    run_id = held_run(repo, go)
    folder = repo / ".stretto" / "runs" / run_id
    pid = int((folder / LOCK_NAME).read_text().strip())
    if when == "before-read":
        os.kill(pid, signal.SIGKILL)  # dead: the command waits in the inbox for resume
        wait_until(lambda: not is_live(folder), what="the engine to die")
    sent = send(folder, "add", steps=ADDED, file="more.yaml", source={"frontend": "test"})
    wait_until(lambda: not is_live(folder), what="the engine to die")
    monkeypatch.delenv("STRETTO_CRASHPOINT", raising=False)
    assert api.open_run(repo, run_id).status().state == "interrupted"
    go.touch()
    done = cli(repo, "resume", run_id, "--plain")
    assert done.returncode == 0, done.stdout + done.stderr
    applied = [r for r in records(repo, run_id) if r.type == "control"]
    assert [r.fields["id"] for r in applied] == [sent.id] and applied[0].fields["ok"]
    final = api.open_run(repo, run_id).status()
    assert final.state == "finished", final.to_dict()
    assert list(final.tasks) == ["models", "api", "docs", "check-the-docs"]
    assert all(t.state == "landed" for t in final.tasks.values())
    assert git(repo, "show", "main:check.txt").strip() == "c"
    trailers = git(repo, "log", "main", "--format=%(trailers:key=Stretto-Task,valueonly)")
    assert sorted(t for t in trailers.split() if t) == sorted(final.tasks)  # each once
    assert not list(inbox_path(folder).iterdir())


def test_an_added_task_that_landed_before_a_kill_is_not_redone_by_resume(repo: Path) -> None:
    go = repo.parent / "go"
    run_id = held_run(repo, go)
    folder = repo / ".stretto" / "runs" / run_id
    quick = "- {id: quick, goal: q, files: [q.txt], command: 'echo q > q.txt'}\n"
    quick += "- {id: after, goal: a, files: [w.txt], depends_on: [quick, models],"
    quick += " command: 'echo w > w.txt'}\n"
    result = api.open_run(repo, run_id).add_tasks(quick, file="quick.yaml")
    assert result.ok and result.fields["tasks"] == ["quick", "after"]
    wait_until(lambda: has(repo, run_id, "task_finished", task="quick", status="landed"))
    os.kill(int((folder / LOCK_NAME).read_text().strip()), signal.SIGKILL)
    wait_until(lambda: not is_live(folder), what="the engine to die")
    go.touch()
    done = cli(repo, "resume", run_id, "--plain")
    assert done.returncode == 0, done.stdout + done.stderr
    final = api.open_run(repo, run_id).status()
    assert final.state == "finished", final.to_dict()
    assert {t: s.state for t, s in final.tasks.items()} == dict.fromkeys(
        ["models", "api", "quick", "after"], "landed"
    )
    spawned = [
        r
        for r in records(repo, run_id)
        if r.type == "attempt_started" and r.fields["task"] == "quick"
    ]
    assert len(spawned) == 1  # landed before the kill: not attempted again
    trailers = git(repo, "log", "main", "--format=%(trailers:key=Stretto-Task,valueonly)")
    assert sorted(t for t in trailers.split() if t) == ["after", "api", "models", "quick"]
