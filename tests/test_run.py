"""Real runs that try to break stretto's guarantees.

Every test builds a throwaway git repository, writes a plan whose steps are ``bash`` commands run
by the ``shell`` agent, runs it through the Python API (``prepare_run`` / ``start_run``) and then
checks git, the files on disk and the journal. Commands leave evidence in ``OUT``, a directory
outside the repository, so it cannot leak into any commit.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from stretto.engine.journal import Record, read_journal
from stretto.engine.outcomes import RunSummary, TaskReport
from stretto.engine.runs import prepare_run, runs_root, start_run
from stretto.frontends.cli import main
from stretto.process import processes_with_token
from stretto.testing.repo import commit_file, git, make_repo

# Any run could hang on a bug (a busy loop in the event loop, a process never reaped). The
# "signal" method raises inside whatever coroutine runs, where asyncio may swallow it, so a hung
# test ends the session with a stack dump instead of blocking it.
pytestmark = pytest.mark.timeout(60, method="thread")


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config and no inherited repository redirection."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "STRETTO_CRASHPOINT"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- helpers


@dataclass
class Ran:
    """One finished run: its summary, what the sink saw, and the journal on disk."""

    repo: Path
    summary: RunSummary
    seen: list[Record]
    journal: list[Record]

    @property
    def run_id(self) -> str:
        return self.summary.run_id

    @property
    def run_dir(self) -> Path:
        return runs_root(self.repo) / self.run_id

    def task(self, task_id: str) -> TaskReport:
        return next(t for t in self.summary.tasks if t.task == task_id)

    def events(self, type_: str, **match: Any) -> list[Record]:
        """Journal records of ``type_`` (events, intents and their done/fail) matching fields."""
        return [
            r
            for r in self.journal
            if r.type == type_ and all(r.fields.get(k) == v for k, v in match.items())
        ]

    def prompt(self, task_id: str, attempt: int) -> str:
        return (self.run_dir / "tasks" / task_id / str(attempt) / "prompt.md").read_text()


def step(id_: str, command: str, **extra: Any) -> dict[str, Any]:
    """A plan step run by the shell agent."""
    return {"id": id_, "goal": f"do {id_}", "command": command, **extra}


def repo_with(tmp_path: Path, files: dict[str, str] | None = None, config: str = "") -> Path:
    """A repository at ``tmp_path/repo`` with ``files`` and a stretto.toml targeting main."""
    content = {"README.md": "# project\n", "stretto.toml": 'target = "main"\n' + config}
    content.update(files or {})
    return make_repo(tmp_path / "repo", content)


def run_plan(
    repo: Path,
    steps: Iterable[dict[str, Any]],
    *,
    on_record: Callable[[Record], None] | None = None,
    **plan_keys: Any,
) -> Ran:
    """Write a one-stage plan outside the repository, run it, and read its journal back."""
    plan_file = repo.parent / f"plan-{time.monotonic_ns()}.yaml"
    plan = {"name": "test", **plan_keys, "stages": [{"name": "work", "steps": list(steps)}]}
    plan_file.write_text(yaml.safe_dump(plan, sort_keys=False))
    top, loaded, options = prepare_run(repo, plan_file)
    seen: list[Record] = []

    def sink(record: Record) -> None:
        seen.append(record)
        if on_record is not None:
            on_record(record)

    summary = start_run(top, loaded, options, sink=sink)
    journal = read_journal(runs_root(top) / summary.run_id / "journal.jsonl")
    return Ran(top, summary, seen, journal)


def rev(repo: Path, name: str = "refs/heads/main") -> str:
    return git(repo, "rev-parse", name).strip()


def files_at(repo: Path, commit: str = "refs/heads/main") -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", commit).split())


def show(repo: Path, path: str, commit: str = "refs/heads/main") -> str:
    return git(repo, "show", f"{commit}:{path}")


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    result = subprocess.run(
        ["git", "merge-base", "--is-ancestor", older, newer], cwd=repo, capture_output=True
    )
    return result.returncode == 0


def main_reflog(repo: Path) -> list[str]:
    """Commits main pointed at, oldest first."""
    return git(repo, "reflog", "show", "--format=%H", "refs/heads/main").split()[::-1]


def task_trailers(repo: Path) -> list[str]:
    out = git(repo, "log", "main", "--format=%(trailers:key=Stretto-Task,valueonly)")
    return [line.strip() for line in out.splitlines() if line.strip()]


def snapshot(checkout: Path) -> dict[str, Any]:
    """Everything of a checkout a user could notice: HEAD, index, files, status."""
    files = {}
    # os.walk with pruning: stretto creates and removes worktrees under .stretto/ meanwhile, and
    # a recursive glob into them can trip over a directory that vanished mid-walk.
    for folder, dirs, names in os.walk(checkout):
        if Path(folder) == checkout:
            dirs[:] = [d for d in dirs if d not in (".git", ".stretto")]
        for name in names:
            path = Path(folder) / name
            if path.is_file():
                files[path.relative_to(checkout).as_posix()] = path.read_bytes()
    files = dict(sorted(files.items()))
    return {
        "head": git(checkout, "symbolic-ref", "-q", "HEAD").strip(),
        "index": git(checkout, "ls-files", "-s"),
        "status": git(
            checkout, "status", "--porcelain", "--untracked-files=all", "--", ".", ":!.stretto"
        ),
        "files": files,
    }


def q(path: Path) -> str:
    return shlex.quote(str(path))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A directory outside the repository where agents leave evidence."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


# --------------------------------------------------------------------------- guarantee 1


def test_target_and_checkout_do_not_move_while_agents_work(tmp_path: Path, out: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "original\n"})
    base = rev(repo)
    before = snapshot(repo)
    probe = (
        f"git -C {q(repo)} rev-parse refs/heads/main > {q(out)}/main-during.txt\n"
        f"cat {q(repo)}/a.txt > {q(out)}/a-during.txt\n"
    )
    # At every event, main must be the base or the last commit a `merged` record announced, and
    # the user's checkout must be exactly as it was until something landed.
    violations: list[str] = []
    landed: list[str] = []

    def check(record: Record) -> None:
        if record.type == "merged":
            landed.append(record.fields["new"])
        head = rev(repo)
        expected = landed[-1] if landed else base
        if head != expected:
            violations.append(f"{record.type}: main at {head}, expected {expected}")
        if not landed and snapshot(repo) != before:
            violations.append(f"{record.type}: the user's checkout changed before any landing")

    ran = run_plan(
        repo,
        [step("edit", "echo changed > a.txt\nsleep 0.2\n" + probe, files=["a.txt"])],
        on_record=check,
    )

    assert ran.summary.status == "finished"
    assert violations == []
    assert (out / "main-during.txt").read_text().strip() == base
    assert (out / "a-during.txt").read_text() == "original\n"
    [merged] = ran.events("merged")
    assert merged.fields["old"] == base and rev(repo) == merged.fields["new"]
    assert show(repo, "a.txt") == "changed\n"


def test_checkout_of_another_branch_is_never_touched(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "original\n", "b.txt": "b\n"})
    git(repo, "switch", "-q", "-c", "feature")
    feature = commit_file(repo, "f.txt", "feature work\n")
    (repo / "a.txt").write_text("my unstaged edit\n")
    (repo / "b.txt").write_text("my staged edit\n")
    git(repo, "add", "b.txt")
    (repo / "scratch.txt").write_text("untracked\n")
    before = snapshot(repo)
    changes: list[str] = []

    def check(record: Record) -> None:
        if snapshot(repo) != before:
            changes.append(record.type)

    ran = run_plan(
        repo,
        [
            step("one", "echo theirs > a.txt", files=["a.txt"]),
            step("two", "echo theirs > b.txt && echo new > scratch.txt", files=["b.txt", "*.txt"]),
        ],
        on_record=check,
    )

    assert ran.summary.status == "finished", ran.summary.tasks
    assert changes == []
    assert snapshot(repo) == before
    assert rev(repo, "refs/heads/feature") == feature
    assert show(repo, "a.txt") == "theirs\n" and show(repo, "scratch.txt") == "new\n"
    assert ran.summary.notes == []  # nothing to catch up with: main is not checked out here


def test_state_directory_never_shows_in_git_status(tmp_path: Path) -> None:
    # A repository where `stretto init` never ran: .stretto/ is not excluded yet.
    repo = repo_with(tmp_path, {"a.txt": "a\n"})
    noisy: list[str] = []

    def check(record: Record) -> None:
        status = git(repo, "status", "--porcelain", "--untracked-files=all")
        if ".stretto" in status:
            noisy.append(f"{record.type}: {status.strip()}")

    ran = run_plan(repo, [step("a", "echo b > a.txt", files=["a.txt"])], on_record=check)

    assert ran.summary.status == "finished"
    assert noisy == []


# --------------------------------------------------------------------------- guarantee 2


def test_target_moves_forward_only_to_gated_merges(tmp_path: Path) -> None:
    config = '[gates]\nno-bad = "test ! -e bad.txt || { echo bad.txt is forbidden; exit 1; }"\n'
    repo = repo_with(tmp_path, {"a.txt": "a\n"}, config)
    base = rev(repo)

    ran = run_plan(
        repo,
        [
            step("good", "echo good > good.txt", files=["good.txt"]),
            step("also", "echo also > also.txt", files=["also.txt"]),
            step("bad", "echo bad > bad.txt", files=["bad.txt"], max_attempts=2),
        ],
    )

    assert ran.task("good").status == "landed" and ran.task("also").status == "landed"
    bad = ran.task("bad")
    assert bad.status == "failed" and bad.attempts == 2
    assert "no-bad" in bad.reason and "bad.txt is forbidden" in bad.reason
    assert ran.summary.status == "failed"
    # bad.txt is in no commit main ever pointed at, and in none of its history.
    assert git(repo, "log", "--format=%H", "main", "--", "bad.txt") == ""
    assert all("bad.txt" not in files_at(repo, c) for c in main_reflog(repo))
    # Every move of main: forward (old is an ancestor), and announced by a `merged` record whose
    # attempt passed every gate.
    history = main_reflog(repo)
    merged = {r.fields["new"]: r for r in ran.events("merged")}
    assert history[0] == base and set(history[1:]) == set(merged) and len(history) == 3
    for older, newer in itertools.pairwise(history):
        assert is_ancestor(repo, older, newer)
        record = merged[newer]
        assert record.fields["old"] == older
        parents = git(repo, "rev-list", "--parents", "-n1", newer).split()[1:]
        assert parents[0] == older and len(parents) == 2  # a --no-ff merge onto the old head
        verdicts = ran.events("gate_result", task=record.fields["task"])
        assert verdicts and all(v.fields["passed"] for v in verdicts)
        assert {"scope", "no_deleted_tests", "no-bad"} <= {v.fields["gate"] for v in verdicts}
    refused = ran.events("gate_result", task="bad", gate="no-bad")
    assert [v.fields["passed"] for v in refused] == [False, False]
    assert ran.events("merge", task="bad") == []  # never even reached the merge queue


def test_merge_gate_failure_on_merged_tree_never_lands(tmp_path: Path) -> None:
    config = '[gates]\nmerged-ok = { command = "test ! -e poison.txt", when = "merge" }\n'
    repo = repo_with(tmp_path, {"a.txt": "a\n"}, config)

    ran = run_plan(
        repo,
        [
            step("poison", "echo x > poison.txt", files=["poison.txt"], max_attempts=1),
            step("fine", "echo x > fine.txt", files=["fine.txt"]),
        ],
    )

    assert ran.task("fine").status == "landed"
    assert ran.task("poison").status == "failed"
    assert "gates failed on the merged tree" in ran.task("poison").reason
    [refused] = ran.events("merge_refused", task="poison")
    assert "merged-ok" in refused.fields["reason"]
    assert "poison.txt" not in files_at(repo)
    assert git(repo, "log", "--format=%H", "main", "--", "poison.txt") == ""
    # The merge gate judged exactly the commit that then became main (with the merge train,
    # `fine` may also have been tested speculatively behind `poison`: any strategy must have
    # one passing run on the very commit main moved to).
    [merged] = ran.events("merged", task="fine")
    judged = {
        r.seq
        for r in ran.events("gates", stage="merge", commit=merged.fields["new"])
        if r.kind == "intent"
    }
    assert any(r.fields["passed"] for r in ran.events("gates") if r.fields.get("of") in judged)
    assert merged.fields["new"] == rev(repo)


def test_merged_tree_is_rechecked_when_the_target_moved(tmp_path: Path) -> None:
    # `second` passes its own gate on its old base, but not once `first` has landed.
    repo = repo_with(tmp_path, {"a.txt": "a\n"})

    ran = run_plan(
        repo,
        [
            step("first", "echo 1 > first.txt", files=["first.txt"]),
            step(
                "second",
                "sleep 0.5; echo 2 > second.txt",
                files=["second.txt"],
                gates=["test ! -e first.txt || { echo first.txt is there; exit 1; }"],
                max_attempts=2,
            ),
        ],
    )

    assert ran.task("first").status == "landed"
    second = ran.task("second")
    assert second.status == "failed"
    stages = [
        (v.fields["attempt"], v.fields["stage"], v.fields["passed"])
        for v in ran.events("gate_result", task="second", gate="step-1")
    ]
    assert (1, "attempt", True) in stages and (1, "merge", False) in stages
    assert (2, "attempt", False) in stages
    assert "second.txt" not in files_at(repo)


def _commit_during_the_merge(repo: Path, commits: list[str]) -> Callable[[Record], None]:
    """A sink hook: the user commits to main right after stretto computed its merge."""

    def hook(record: Record) -> None:
        if record.type == "merge" and record.kind == "intent" and not commits:
            commits.append(commit_file(repo, "user.txt", "mine\n", "user work"))

    return hook


def test_target_moved_during_the_merge_is_kept(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n"})
    user_commits: list[str] = []

    ran = run_plan(
        repo,
        [step("work", "echo w > work.txt", files=["work.txt"])],
        on_record=_commit_during_the_merge(repo, user_commits),
    )

    assert ran.summary.status == "finished"
    [user] = user_commits
    head = rev(repo)
    assert is_ancestor(repo, user, head)  # the user's commit was not overwritten
    assert {"user.txt", "work.txt"} <= files_at(repo)
    [merged] = ran.events("merged")
    assert merged.fields["old"] == user and merged.fields["new"] == head
    assert [r.fields["reason"] for r in ran.events("advance") if r.kind == "fail"] == [
        "target moved"
    ]
    assert task_trailers(repo) == ["work"]


def test_checkout_follows_a_target_the_user_moved(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n"})

    ran = run_plan(
        repo,
        [step("work", "echo w > work.txt", files=["work.txt"])],
        on_record=_commit_during_the_merge(repo, []),
    )

    assert ran.summary.status == "finished"
    assert (repo / "work.txt").read_text() == "w\n"  # the clean checkout came along
    assert (repo / "user.txt").read_text() == "mine\n"
    assert ran.summary.notes == []


# --------------------------------------------------------------------------- guarantee 1: checkout


def test_clean_checkout_of_the_target_is_fast_forwarded(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n", "b.txt": "b\n"})
    (repo / "notes.txt").write_text("my untracked notes\n")

    ran = run_plan(
        repo,
        [
            step("edit-a", "echo A > a.txt", files=["a.txt"]),
            step("add-c", "mkdir -p sub && echo C > sub/c.txt", files=["sub/**"]),
            step("drop-b", "git rm -q b.txt", files=["b.txt"]),
        ],
    )

    assert ran.summary.status == "finished", ran.summary.tasks
    assert ran.summary.notes == []
    assert git(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    tracked = files_at(repo)
    assert tracked == {"README.md", "stretto.toml", "a.txt", "sub/c.txt"}
    for name in tracked:
        assert (repo / name).read_text() == show(repo, name)
    assert not (repo / "b.txt").exists()
    assert (repo / "notes.txt").read_text() == "my untracked notes\n"
    status = git(repo, "status", "--porcelain", "--untracked-files=all", "--", ".", ":!.stretto")
    assert status == "?? notes.txt\n"


def test_dirty_checkout_is_left_exactly_as_it_was(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n", "b.txt": "b\n"})
    (repo / "a.txt").write_bytes(b"my unstaged edit\r\nno newline at end")
    (repo / "b.txt").write_text("my staged edit\n")
    git(repo, "add", "b.txt")
    before = snapshot(repo)
    del before["status"]  # `git status` compares with main, which moves: that is the point

    ran = run_plan(
        repo,
        [
            step("add-c", "echo C > c.txt", files=["c.txt"]),
            step("add-d", "echo D > d.txt", files=["d.txt"], depends_on=["add-c"]),
        ],
    )

    assert ran.summary.status == "finished"
    after = snapshot(repo)
    del after["status"]
    assert after == before  # HEAD, the index and every file, byte for byte
    assert not (repo / "c.txt").exists() and not (repo / "d.txt").exists()
    assert show(repo, "c.txt") == "C\n" and show(repo, "d.txt") == "D\n"
    [note] = ran.summary.notes
    assert "uncommitted changes" in note
    [finished] = ran.events("run_finished")
    assert finished.fields["notes"] == [note]
    # The note's recipe catches up with both landings and keeps the user's changes.
    recipe = note.split("keep your changes: ", 1)[1]
    subprocess.run(recipe, shell=True, cwd=repo, check=True, capture_output=True)
    assert (repo / "c.txt").read_text() == "C\n" and (repo / "d.txt").read_text() == "D\n"
    assert (repo / "a.txt").read_bytes() == b"my unstaged edit\r\nno newline at end"
    assert git(repo, "diff", "--cached", "--name-only") == "b.txt\n"
    assert git(repo, "diff", "--name-only") == "a.txt\n"
    assert rev(repo, "HEAD") == ran.summary.head


def test_checkout_that_becomes_dirty_mid_run_is_left_alone(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n"})

    edited: list[str] = []

    def edit_after_first(record: Record) -> None:
        # Once the checkout has caught up with the first landing, the user edits a file.
        if not edited and (repo / "x.txt").exists() and snapshot(repo)["status"] == "":
            (repo / "a.txt").write_text("my edit, made while the run went on\n")
            edited.append(record.type)

    ran = run_plan(
        repo,
        [
            step("first", "echo x > x.txt", files=["x.txt"]),
            step("second", "sleep 0.3; echo theirs > a.txt", files=["a.txt"], depends_on=["first"]),
        ],
        on_record=edit_after_first,
    )

    assert ran.summary.status == "finished"
    assert edited, "the checkout never caught up with the first landing"
    assert (repo / "x.txt").read_text() == "x\n"  # the first landing came along
    assert (repo / "a.txt").read_text() == "my edit, made while the run went on\n"
    assert show(repo, "a.txt") == "theirs\n"
    [note] = ran.summary.notes
    [first] = ran.events("merged", task="first")
    assert first.fields["new"][:12] in note and ran.summary.head[:12] in note


def test_checkout_switched_away_from_the_target_mid_run_is_left_alone(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n"})
    switched: list[dict[str, Any]] = []

    def switch_after_first(record: Record) -> None:
        # Once the checkout has caught up with the first landing, the user goes on with other
        # work on a new branch (the second task is still working: it sleeps first).
        if not switched and (repo / "x.txt").exists() and snapshot(repo)["status"] == "":
            git(repo, "switch", "-q", "-c", "feature")
            switched.append(snapshot(repo))

    ran = run_plan(
        repo,
        [
            step("first", "echo x > x.txt", files=["x.txt"]),
            step("second", "sleep 0.3; echo y > y.txt", files=["y.txt"], depends_on=["first"]),
        ],
        on_record=switch_after_first,
    )

    assert ran.summary.status == "finished"
    assert switched, "the checkout never caught up with the first landing"
    assert snapshot(repo) == switched[0]  # then never touched: feature is not the target
    assert not (repo / "y.txt").exists()
    assert show(repo, "y.txt") == "y\n"


def test_untracked_file_in_the_way_is_not_overwritten(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n"})
    (repo / "new.txt").write_text("mine, untracked\n")

    ran = run_plan(repo, [step("add-new", "echo theirs > new.txt", files=["new.txt"])])

    assert ran.task("add-new").status == "landed"
    assert (repo / "new.txt").read_text() == "mine, untracked\n"
    assert show(repo, "new.txt") == "theirs\n"
    assert len(ran.summary.notes) == 1 and ran.summary.head[:12] in ran.summary.notes[0]


# --------------------------------------------------------------------------- guarantee 4: leases


def _intervals(log: Path) -> dict[str, tuple[float, float]]:
    marks: dict[str, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        task, what, when = line.split()
        marks.setdefault(task, {})[what] = float(when)
    return {task: (m["start"], m["end"]) for task, m in marks.items()}


def test_overlapping_owned_files_never_run_at_once(tmp_path: Path, out: Path) -> None:
    repo = repo_with(tmp_path, {"lib/x.py": "x = 1\n", "other.txt": "o\n"})
    log = out / "times.log"

    def timed(write: str) -> str:
        mark = f'echo "$STRETTO_TASK_ID {{}} $(date +%s.%N)" >> {q(log)}\n'
        return mark.format("start") + f"{write}\nsleep 0.4\n" + mark.format("end")

    ran = run_plan(
        repo,
        [
            step("lib-all", timed("echo 2 > lib/all.py"), files=["lib/**"]),
            step("lib-x", timed("echo 'x = 2' > lib/x.py"), files=["lib/x.py"]),
            step("other", timed("echo 2 > other.txt"), files=["other.txt"]),
        ],
    )

    assert ran.summary.status == "finished", ran.summary.tasks
    spans = _intervals(log)
    (a_start, a_end), (x_start, x_end) = spans["lib-all"], spans["lib-x"]
    assert a_end <= x_start or x_end <= a_start, spans  # never at the same time
    o_start, o_end = spans["other"]
    assert o_start < a_end and a_start < o_end, spans  # disjoint files: in parallel
    # The lease is held until the task has landed, not just until its agent exits.
    [finished] = ran.events("task_finished", task="lib-all")
    [started] = ran.events("attempt_started", task="lib-x")
    assert started.ts >= finished.ts
    waits = ran.events("decision", action="wait", task="lib-x")
    assert waits and waits[0].fields["holders"] == ["lib-all"]


# --------------------------------------------------------------------------- gates


def test_scope_gate_refuses_changes_outside_owned_files(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n", "old.txt": "old\n", "c.txt": "c\n"})

    ran = run_plan(
        repo,
        [
            step("outside", "echo A > a.txt && echo B > b.txt", files=["a.txt"], max_attempts=1),
            step("rename", "git mv old.txt new.txt", files=["new.txt"], max_attempts=1),
            step(
                "self-commit",
                "echo D > d.txt && git add d.txt && git commit -qm sneaky && echo C > c.txt",
                files=["c.txt"],
                max_attempts=1,
            ),
        ],
    )

    assert ran.summary.status == "failed"
    for task, culprit in (("outside", "b.txt"), ("rename", "old.txt"), ("self-commit", "d.txt")):
        report = ran.task(task)
        assert report.status == "failed", task
        assert "scope" in report.reason and culprit in report.reason, report.reason
        [verdict] = ran.events("gate_result", task=task, gate="scope")
        assert verdict.fields["passed"] is False and culprit in verdict.fields["summary"]
    assert "a.txt" not in ran.task("outside").reason  # the owned file is not blamed
    assert files_at(repo) == {"README.md", "stretto.toml", "a.txt", "old.txt", "c.txt"}


def test_scope_warn_lands_with_a_warning(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n"}, 'scope = "warn"\n')

    ran = run_plan(repo, [step("outside", "echo A > a.txt && echo B > b.txt", files=["a.txt"])])

    assert ran.task("outside").status == "landed"
    [verdict] = ran.events("gate_result", task="outside", gate="scope")
    assert verdict.fields["passed"] is True and verdict.fields["warning"] is True
    assert "b.txt" in verdict.fields["summary"]
    assert show(repo, "b.txt") == "B\n"


def test_deleting_emptying_or_renaming_away_tests_fails(tmp_path: Path) -> None:
    tests = {f"tests/test_{n}.py": f"def test_{n}():\n    assert True\n" for n in "xyz"}
    repo = repo_with(tmp_path, tests)
    owned = ["tests/**", "fixtures/**"]

    ran = run_plan(
        repo,
        [
            step("delete", "git rm -q tests/test_x.py", files=owned, max_attempts=1),
            step("empty", ": > tests/test_y.py", files=owned, max_attempts=1),
            step(
                "away",
                "mkdir fixtures && git mv tests/test_z.py fixtures/z.py",
                files=owned,
                max_attempts=1,
            ),
            step(
                "add-test",
                "echo 'def test_w(): pass' > tests/test_w.py && echo '# more' >> tests/test_x.py",
                files=owned,
            ),
        ],
    )

    expected = {
        "delete": "deleted: tests/test_x.py",
        "empty": "emptied: tests/test_y.py",
        "away": "renamed away: tests/test_z.py -> fixtures/z.py",
    }
    for task, why in expected.items():
        assert ran.task(task).status == "failed"
        assert why in ran.task(task).reason
    assert ran.task("add-test").status == "landed"
    assert {"tests/test_x.py", "tests/test_y.py", "tests/test_z.py"} <= files_at(repo)
    assert show(repo, "tests/test_y.py").strip() != ""


def test_declared_outputs_must_exist(tmp_path: Path) -> None:
    repo = repo_with(tmp_path)

    ran = run_plan(
        repo,
        [
            step("typo", "echo r > repor.txt", outputs=["report.txt"], max_attempts=1),
            step("right", "echo r > out.txt", outputs=["out.txt"], files=["out.txt"]),
        ],
        unowned="nothing",
    )

    assert ran.task("typo").status == "failed"
    assert "missing outputs: report.txt" in ran.task("typo").reason
    assert ran.task("right").status == "landed"
    [verdict] = ran.events("gate_result", task="right", gate="files_exist")
    assert verdict.fields["passed"] is True
    assert "repor.txt" not in files_at(repo)


def test_step_gates_run_in_the_worktree(tmp_path: Path) -> None:
    repo = repo_with(tmp_path)
    gates = ["grep -q hello greeting.txt", "test -s greeting.txt"]

    ran = run_plan(
        repo,
        [
            step(
                "bye",
                "echo bye > greeting.txt",
                files=["greeting.txt"],
                gates=gates,
                max_attempts=1,
            ),
            step(
                "hello",
                "mkdir hi && echo hello > hi/greeting.txt",
                files=["hi/**"],
                gates=[f"cd hi && {g}" for g in gates],
            ),
        ],
    )

    bye = ran.task("bye")
    assert bye.status == "failed"
    assert "step-1" in bye.reason and "grep -q hello greeting.txt" in bye.reason
    assert "step-2" not in bye.reason
    assert [v.fields["passed"] for v in ran.events("gate_result", task="bye")][-2:] == [
        False,
        True,
    ]
    assert ran.task("hello").status == "landed"
    assert [v.fields["passed"] for v in ran.events("gate_result", task="hello")][-2:] == [
        True,
        True,
    ]


def test_a_gate_that_rewrites_tracked_files_fails(tmp_path: Path) -> None:
    # A "formatter" gate rewrites the file it then passes: the tree it judged is not the tree
    # that would land, so the work must not land as if it had passed.
    config = '[gates]\nfmt = "echo formatted > v.txt"\ncheck = "grep -qx formatted v.txt"\n'
    repo = repo_with(tmp_path, {}, config)

    ran = run_plan(repo, [step("raw", "echo raw > v.txt", files=["v.txt"], max_attempts=1)])

    report = ran.task("raw")
    assert report.status == "failed"
    assert "fmt" in report.reason and "changed tracked files (v.txt)" in report.reason
    # The files were put back, so the next gate judged what would have landed.
    verdicts = {v.fields["gate"]: v.fields["passed"] for v in ran.events("gate_result")}
    assert verdicts["fmt"] is False and verdicts["check"] is False
    assert "v.txt" not in files_at(repo)


def test_a_hanging_gate_times_out_and_fails(tmp_path: Path) -> None:
    config = '[gates]\nhang = { command = "sleep 60 & sleep 60", timeout = 1 }\n'
    repo = repo_with(tmp_path, {}, config)

    ran = run_plan(repo, [step("a", "echo a > a.txt", files=["a.txt"], max_attempts=1)])

    report = ran.task("a")
    assert report.status == "failed" and "timed out after 1s" in report.reason
    [verdict] = ran.events("gate_result", gate="hang")
    assert verdict.fields["passed"] is False and verdict.fields["duration"] < 10
    assert processes_with_token(ran.run_id) == []
    assert "a.txt" not in files_at(repo)


# --------------------------------------------------------------------------- retries


def test_retry_prompt_carries_the_previous_failure(tmp_path: Path, out: Path) -> None:
    repo = repo_with(tmp_path)
    command = (
        'if [ "$STRETTO_ATTEMPT" = 1 ]; then echo broken > v.txt; else echo ok > v.txt; fi\n'
        f'cp "$STRETTO_PROMPT_FILE" {q(out)}/prompt-$STRETTO_ATTEMPT.md\n'
        f'echo "$STRETTO_PROMPT_FILE" > {q(out)}/path-$STRETTO_ATTEMPT.txt\n'
    )
    gate = 'grep -qx ok v.txt || { echo "GATE-SAYS: v.txt holds $(cat v.txt)"; exit 1; }'

    ran = run_plan(repo, [step("fix", command, files=["v.txt"], gates=[gate])])

    report = ran.task("fix")
    assert report.status == "landed" and report.attempts == 2
    first, second = ran.prompt("fix", 1), ran.prompt("fix", 2)
    assert "Previous attempt" not in first
    assert "## Previous attempt 1 failed" in second
    assert "step-1" in second and "GATE-SAYS: v.txt holds broken" in second
    saved = ran.run_dir / "tasks" / "fix" / "2" / "prompt.md"
    assert (out / "path-2.txt").read_text().strip() == str(saved)
    assert (out / "prompt-2.md").read_text() == second  # what the agent read is what was saved
    [retry] = ran.events("decision", action="retry", task="fix")
    assert retry.fields["counted"] is True and retry.fields["failures"] == 1
    assert show(repo, "v.txt") == "ok\n"


def test_retry_limit_fails_the_task_and_skips_its_dependents(tmp_path: Path) -> None:
    repo = repo_with(tmp_path)

    ran = run_plan(
        repo,
        [
            step("flaky", "echo x > x.txt; exit 3", files=["x.txt"], max_attempts=2),
            step("after", "echo y > y.txt", files=["y.txt"], depends_on=["flaky"]),
            step("later", "echo z > z.txt", files=["z.txt"], depends_on=["after"]),
            step("solo", "echo s > s.txt", files=["s.txt"]),
        ],
    )

    assert ran.summary.status == "failed"
    flaky = ran.task("flaky")
    assert flaky.status == "failed" and flaky.attempts == 2
    assert "gave up after 2 failed attempts" in flaky.reason and "status 3" in flaky.reason
    assert len(ran.events("attempt_started", task="flaky")) == 2
    assert ran.task("after").status == "skipped" and "flaky" in ran.task("after").reason
    assert ran.task("later").status == "skipped"
    assert ran.events("attempt_started", task="after") == []
    assert ran.events("attempt_started", task="later") == []
    assert ran.task("solo").status == "landed"
    [finished] = ran.events("run_finished")
    assert finished.fields["status"] == "failed"
    assert (finished.fields["landed"], finished.fields["failed"], finished.fields["skipped"]) == (
        1,
        1,
        2,
    )
    assert "x.txt" not in files_at(repo)


# --------------------------------------------------------------------------- merge conflicts


def test_merge_conflict_is_retried_on_the_new_head(tmp_path: Path, out: Path) -> None:
    repo = repo_with(tmp_path, {"shared.txt": "line 1\nline 2\n"}, 'scope = "warn"\n')

    ran = run_plan(
        repo,
        [
            step("a", "sed -i '1s/.*/from a/' shared.txt && echo a > a.txt", files=["a.txt"]),
            step(
                "b",
                "sleep 0.5\nsed -i '1s/.*/from b/' shared.txt && echo b > b.txt\n"
                f'cp "$STRETTO_PROMPT_FILE" {q(out)}/b-$STRETTO_ATTEMPT.md\n',
                files=["b.txt"],
            ),
        ],
    )

    assert ran.summary.status == "finished", ran.summary.tasks
    assert ran.task("a").attempts == 1 and ran.task("b").attempts == 2
    [refused] = ran.events("merge_refused", task="b")
    assert refused.fields["reason"] == "conflict" and refused.fields["files"] == ["shared.txt"]
    [landed_a] = ran.events("merged", task="a")
    second = [r for r in ran.events("attempt_started", task="b") if r.fields["attempt"] == 2]
    assert second[0].fields["base"] == landed_a.fields["new"]  # rebuilt on the new head
    prompt = (out / "b-2.md").read_text()
    assert "merge conflict" in prompt and "shared.txt" in prompt
    assert sorted(task_trailers(repo)) == ["a", "b"]  # each task merged exactly once
    assert show(repo, "shared.txt") == "from b\nline 2\n"
    assert {"a.txt", "b.txt"} <= files_at(repo)


# --------------------------------------------------------------------------- agent outcomes


def test_rate_limit_does_not_use_up_an_attempt(tmp_path: Path) -> None:
    repo = repo_with(tmp_path)
    command = (
        'if [ "$STRETTO_ATTEMPT" = 1 ]; then\n'
        '  echo \'STRETTO_EVENT {"kind": "rate_limit", "retry_after": 1}\'; exit 3\n'
        "fi\n"
        "echo ok > r.txt\n"
    )

    ran = run_plan(repo, [step("limited", command, files=["r.txt"], max_attempts=1)])

    report = ran.task("limited")
    assert report.status == "landed" and report.attempts == 2
    outcomes = [r.fields["outcome"] for r in ran.events("attempt_finished", task="limited")]
    assert outcomes == ["rate_limited", "success"]
    [retry] = ran.events("decision", action="retry", task="limited")
    assert retry.fields["counted"] is False and retry.fields["failures"] == 0


def test_rate_limited_retry_waits_for_retry_after(tmp_path: Path) -> None:
    repo = repo_with(tmp_path)
    command = (
        'if [ "$STRETTO_ATTEMPT" = 1 ]; then\n'
        '  echo \'STRETTO_EVENT {"kind": "rate_limit", "retry_after": 1.5}\'; exit 3\n'
        "fi\n"
        "echo ok > r.txt\n"
    )

    ran = run_plan(repo, [step("limited", command, files=["r.txt"])])

    assert ran.task("limited").status == "landed"
    finished = ran.events("attempt_finished", task="limited")[0]
    restarted = ran.events("attempt_started", task="limited")[1]
    assert restarted.ts - finished.ts >= 1.5  # the provider asked for 1.5 s of quiet


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    repo = repo_with(tmp_path)
    started = time.monotonic()

    ran = run_plan(
        repo,
        [step("slow", "echo x > x.txt; sleep 60 & sleep 60", timeout=2, max_attempts=1)],
    )

    assert time.monotonic() - started < 15
    assert processes_with_token(ran.run_id) == []
    [finished] = ran.events("attempt_finished", task="slow")
    assert finished.fields["outcome"] == "timed_out"
    assert 2 <= finished.fields["duration"] < 10
    report = ran.task("slow")
    assert report.status == "failed" and "timed_out" in report.reason
    assert "x.txt" not in files_at(repo)


def test_no_agent_process_outlives_its_attempt(tmp_path: Path) -> None:
    # Started in the background, they outlive bash unless stretto ends them: `setsid` leaves the
    # process group, so killing the group is not enough. The sleeps let them get away first.
    escape = "setsid sleep 60 > /dev/null 2>&1 < /dev/null & sleep 0.3"
    repo = repo_with(tmp_path, {}, f'[gates]\nbg = "{escape}"\n')
    leftovers: list[int] = []
    try:
        ran = run_plan(
            repo,
            [
                step(
                    "daemon",
                    f"{escape}\nnohup sleep 60 > /dev/null 2>&1 &\necho x > x.txt\n",
                    files=["x.txt"],
                )
            ],
        )
        leftovers = processes_with_token(ran.run_id)
        assert ran.task("daemon").status == "landed"
    finally:
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert leftovers == []


# --------------------------------------------------------------------------- environment


def _env_file(path: Path) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in path.read_text().split("\0") if "=" in item)
    return dict(pairs)


def test_agents_get_their_variables_and_no_secrets(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SECRET_TOKEN", "hunter2")
    config = f'[gates]\nenv-dump = "env -0 > {out}/gate-$STRETTO_TASK_ID.env"\n'
    repo = repo_with(tmp_path, {}, config)
    command = (
        f"env -0 > {q(out)}/agent-$STRETTO_TASK_ID.env\nsleep 0.3\necho 1 > $STRETTO_TASK_ID.txt"
    )

    ran = run_plan(
        repo, [step(name, command, files=[f"{name}.txt"]) for name in ("p1", "p2", "p3")]
    )

    assert ran.summary.status == "finished", ran.summary.tasks
    starts = ran.events("attempt_started")
    assert max(r.ts for r in starts) < min(r.ts for r in ran.events("attempt_finished"))
    ports = set()
    for name in ("p1", "p2", "p3"):
        env = _env_file(out / f"agent-{name}.env")
        assert env["STRETTO_TASK_ID"] == name and env["STRETTO_ATTEMPT"] == "1"
        assert env["STRETTO_RUN_TOKEN"] == ran.run_id
        assert env["STRETTO_PROMPT_FILE"] == str(ran.run_dir / "tasks" / name / "1" / "prompt.md")
        assert Path(env["STRETTO_PROMPT_FILE"]).read_text().startswith("# Task:")
        ports.add(int(env["STRETTO_PORT_BASE"]))
        assert "MY_SECRET_TOKEN" not in env
        assert "hunter2" not in (out / f"agent-{name}.env").read_text()
        gate_env = _env_file(out / f"gate-{name}.env")
        assert "MY_SECRET_TOKEN" not in gate_env and gate_env["STRETTO_TASK_ID"] == name
    assert len(ports) == 3  # parallel attempts never share a port range
    assert min(ports) >= 1024 and max(ports) - min(ports) >= 2 * 100


def test_env_allow_list_passes_a_chosen_secret(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SECRET_TOKEN", "hunter2")
    monkeypatch.setenv("MY_OTHER_SECRET", "nope")
    repo = repo_with(tmp_path, {}, 'env = ["MY_SECRET_TOKEN"]\n')

    ran = run_plan(repo, [step("s", f"env -0 > {q(out)}/s.env && echo 1 > s.txt")])

    assert ran.summary.status == "finished"
    env = _env_file(out / "s.env")
    assert env["MY_SECRET_TOKEN"] == "hunter2"
    assert "MY_OTHER_SECRET" not in env


def test_setup_commands_get_the_agent_environment(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SECRET_TOKEN", "hunter2")
    repo = repo_with(tmp_path, {}, f'[workspace]\nsetup = ["env -0 > {out}/setup.env"]\n')

    ran = run_plan(repo, [step("s", "echo 1 > s.txt")])

    assert ran.summary.status == "finished"
    env = _env_file(out / "setup.env")
    assert "MY_SECRET_TOKEN" not in env  # the allow-list holds for setup as for agents and gates
    assert env.get("STRETTO_RUN_TOKEN") == ran.run_id  # so a crashed run's setup can be found


# --------------------------------------------------------------------------- workspaces


def _repo_with_node_modules(tmp_path: Path, config: str) -> Path:
    repo = repo_with(tmp_path, {".gitignore": "node_modules/\nbuild/\n"}, config)
    package = repo / "node_modules" / "pkg"
    package.mkdir(parents=True)
    (package / "index.js").write_text("module.exports = 1\n")
    return repo


def test_workspaces_link_heavy_dirs_run_setup_and_are_cleaned_up(tmp_path: Path) -> None:
    config = '[workspace]\nsetup = ["mkdir -p build && echo prepared > build/setup.txt"]\n'
    repo = _repo_with_node_modules(tmp_path, config)

    ran = run_plan(
        repo,
        [
            step(
                "deps",
                "test -L node_modules && test -f node_modules/pkg/index.js\n"
                "cp build/setup.txt got.txt\n",
                files=["got.txt"],
            ),
            step("broken", "echo half > half.txt; exit 1", files=["half.txt"], max_attempts=1),
        ],
    )

    assert ran.task("deps").status == "landed", ran.task("deps").reason
    assert show(repo, "got.txt") == "prepared\n"  # setup ran before the agent
    assert not {"node_modules", "build/setup.txt"} & files_at(repo)
    # The main checkout's node_modules survived the removal of the worktree that linked it.
    assert (repo / "node_modules" / "pkg" / "index.js").read_text() == "module.exports = 1\n"
    assert not (repo / "node_modules").is_symlink()
    worktrees = git(repo, "worktree", "list", "--porcelain")
    branches = git(repo, "branch", "--list", "stretto/*", "--format=%(refname:short)").split()
    root = repo / ".stretto" / "worktrees"
    landed = root / f"{ran.run_id}-deps-1"
    assert not landed.exists() and str(landed) not in worktrees
    assert f"stretto/{ran.run_id}/deps/1" not in branches
    kept = root / f"{ran.run_id}-broken-1"
    assert (kept / "half.txt").read_text() == "half\n" and str(kept) in worktrees
    assert f"stretto/{ran.run_id}/broken/1" in branches
    assert "half.txt" in files_at(repo, f"stretto/{ran.run_id}/broken/1")  # work kept
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    assert status == ""  # no links, state or build output show up for the user


def test_merge_gates_see_linked_dirs(tmp_path: Path) -> None:
    config = '[gates]\ndeps = { command = "test -f node_modules/pkg/index.js", when = "both" }\n'
    repo = _repo_with_node_modules(tmp_path, config)

    ran = run_plan(repo, [step("a", "echo a > a.txt", files=["a.txt"], max_attempts=1)])

    assert ran.task("a").status == "landed", ran.task("a").reason
    stages = {v.fields["stage"]: v.fields["passed"] for v in ran.events("gate_result", gate="deps")}
    assert stages == {"attempt": True, "merge": True}
    assert (repo / "node_modules" / "pkg" / "index.js").is_file()  # removal kept the original


# --------------------------------------------------------------------------- the run's outcome


def test_a_run_where_every_task_failed_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = repo_with(tmp_path)
    base = rev(repo)
    plan_file = tmp_path / "plan.yaml"
    plan = {
        "stages": [
            {
                "name": "s",
                "steps": [
                    step("idle", "echo thinking", max_attempts=1),
                    step("crash", "echo x > x.txt; exit 7", max_attempts=1, files=["x.txt"]),
                ],
            }
        ]
    }
    plan_file.write_text(yaml.safe_dump(plan))
    monkeypatch.chdir(repo)

    result = CliRunner().invoke(main, ["run", "--json", str(plan_file)])

    assert result.exit_code == 1, result.output
    [run_dir] = (repo / ".stretto" / "runs").iterdir()
    journal = read_journal(run_dir / "journal.jsonl")
    [finished] = [r for r in journal if r.type == "run_finished"]
    assert finished.fields["status"] == "failed" and finished.fields["landed"] == 0
    reasons = {r.fields["task"]: r.fields["reason"] for r in journal if r.type == "task_finished"}
    assert "made no changes" in reasons["idle"]
    assert "status 7" in reasons["crash"]
    assert rev(repo) == base
    assert '"status": "failed"' in result.stdout or '"status":"failed"' in result.stdout
