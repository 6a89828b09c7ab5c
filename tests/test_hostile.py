"""Defects found by attacking stretto as a hostile user or agent would (issue 19), each kept as
a regression test: bad input that once blew up, files that leaked secrets, an agent that moved
the target branch itself, the same plan run twice at once.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from _engines import stop_engines
from stretto import api
from stretto.engine.journal import read_journal
from stretto.frontends.cli import main
from stretto.testing.repo import git, make_repo


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = make_repo(tmp_path / "repo", {"README.md": "# test\n"})
    monkeypatch.chdir(path)
    yield path
    stop_engines(path)


def write(repo: Path, name: str, text: str) -> Path:
    path = repo.parent / name
    path.write_text(text)
    return path


def nothing_written(repo: Path) -> bool:
    return not (repo / ".stretto" / "runs").exists()


BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_yaml_alias_bomb_is_a_located_error_not_a_memory_error(repo: Path) -> None:
    plan = write(repo, "bomb.yaml", BOMB)
    assert len(BOMB.encode()) < 500
    started = time.monotonic()
    result = invoke("run", str(plan), "--plain")
    assert result.exit_code == 2, result.output
    assert time.monotonic() - started < 20
    assert f"{plan}:" in result.stderr and "expands to more than 250,000 values" in result.stderr
    assert "MemoryError" not in result.output and "Traceback" not in result.output
    assert nothing_written(repo)


def test_deeply_nested_yaml_is_a_clear_error(repo: Path) -> None:
    plan = write(repo, "deep.yaml", "stages: " + "[" * 3000 + "]" * 3000 + "\n")
    result = invoke("validate", str(plan))
    assert result.exit_code == 2
    assert f"{plan}:1:" in result.stderr and "Traceback" not in result.output


def test_a_megabyte_goal_is_refused_before_anything_runs(repo: Path) -> None:
    goal = "x" * 1_000_000
    plan = write(
        repo,
        "big.yaml",
        f'stages:\n  - name: s\n    steps:\n      - {{id: big, goal: "{goal}", files: [a.txt],'
        ' command: "echo a > a.txt"}\n',
    )
    result = invoke("run", str(plan), "--plain")
    assert result.exit_code == 2
    assert f"{plan}:4:" in result.stderr
    assert "goal is 1,000,000 bytes; at most 65,536" in result.stderr
    assert nothing_written(repo)


def test_a_context_file_linked_out_of_the_repository_is_not_pasted(repo: Path) -> None:
    secret = repo.parent / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE-42\n")
    (repo / "notes.md").symlink_to(secret)
    (repo / "env.md").symlink_to("/proc/self/environ")
    (repo / "ok.md").write_text("fine context\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "context files")
    plan = write(
        repo,
        "plan.yaml",
        "context_files: [notes.md, env.md, ok.md]\nstages:\n  - name: s\n    steps:\n"
        '      - {id: t, goal: g, files: [t.txt], command: "echo t > t.txt"}\n',
    )
    result = invoke("run", str(plan), "--plain")
    assert result.exit_code == 0, result.output
    [status] = api.list_runs(repo)
    run_dir = repo / ".stretto" / "runs" / status.run_id
    prompt = (run_dir / "tasks" / "t" / "1" / "prompt.md").read_text()
    assert "fine context" in prompt
    assert "TOP-SECRET-VALUE-42" not in prompt and "PATH=" not in prompt
    warnings = [r.fields.get("message") for r in read_journal(run_dir / "journal.jsonl")]
    assert any("notes.md leads out of the repository" in str(w) for w in warnings)
    assert any("env.md leads out of the repository" in str(w) for w in warnings)


def test_an_allowed_secret_an_agent_prints_is_not_kept_in_its_log(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_API_KEY", "sk-live-0123456789abcdef")
    (repo / "stretto.toml").write_text('env = ["MY_API_KEY"]\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "config")
    plan = write(
        repo,
        "plan.yaml",
        "stages:\n  - name: s\n    steps:\n      - id: t\n        goal: g\n"
        "        files: [t.txt]\n"
        '        command: "echo using $MY_API_KEY; echo t > t.txt"\n'
        '        gates: ["echo gate sees $MY_API_KEY"]\n',
    )
    result = invoke("run", str(plan), "--plain")
    assert result.exit_code == 0, result.output
    [status] = api.list_runs(repo)
    folder = repo / ".stretto" / "runs" / status.run_id / "tasks" / "t" / "1"
    log = (folder / "agent.log").read_text()
    assert "using ***" in log and "sk-live-0123456789abcdef" not in log
    gate_logs = "".join(p.read_text() for p in (folder / "gates").glob("*.log"))
    assert "gate sees ***" in gate_logs and "sk-live" not in gate_logs


def test_an_agent_that_moves_the_target_itself_is_undone_and_fails(repo: Path) -> None:
    before = git(repo, "rev-parse", "main").strip()
    plan = write(
        repo,
        "plan.yaml",
        "stages:\n  - name: s\n    steps:\n      - id: sneaky\n        goal: g\n"
        "        files: [s.txt]\n        max_attempts: 1\n"
        "        command: 'echo s > s.txt && git add s.txt && git -c user.name=a "
        "-c user.email=a@b commit -qm untested && git update-ref refs/heads/main HEAD'\n"
        '      - {id: honest, goal: h, files: [h.txt], command: "echo h > h.txt"}\n',
    )
    result = invoke("run", str(plan), "--plain")
    assert result.exit_code == 1, result.output
    [status] = api.list_runs(repo)
    assert status.tasks["sneaky"].state == "failed"
    assert "moved the target branch 'main'" in status.tasks["sneaky"].reason
    assert status.tasks["honest"].state == "landed"
    history = git(repo, "log", "--format=%s", "main").splitlines()
    assert "untested" not in history  # the agent's commit never reached the target
    assert git(repo, "merge-base", "--is-ancestor", before, "main") == ""
    records = read_journal(repo / ".stretto" / "runs" / status.run_id / "journal.jsonl")
    assert any(r.type == "target_restored" and r.fields["restored_to"] for r in records)


SLOW = """\
name: slow
stages:
  - name: s
    steps:
      - {id: one, goal: g, files: [o.txt], command: "sleep 4; echo o > o.txt"}
"""


def test_the_same_plan_twice_at_once_is_refused_a_different_one_runs_beside_it(
    repo: Path,
) -> None:
    plan = write(repo, "slow.yaml", SLOW)
    first = api.start_run(repo, plan, detach=True)
    again = invoke("run", str(plan), "--plain")
    assert again.exit_code == 2, again.output
    assert f"run {first.run_id} is already running this plan on 'main'" in again.stderr
    assert f"stretto cancel {first.run_id}" in again.stderr
    other = write(repo, "other.yaml", SLOW.replace("o.txt", "p.txt").replace("one", "two"))
    beside = subprocess.run(
        [sys.executable, "-m", "stretto", "run", str(other), "--plain"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert beside.returncode == 0, beside.stdout + beside.stderr
    assert first.wait(timeout=60).state == "finished"
    merges = git(repo, "log", "--merges", "--format=%s", "main").splitlines()
    assert len(merges) == 2  # one landing per task, no duplicate


def test_a_landing_while_an_agent_has_moved_the_target_never_builds_on_its_commit(
    repo: Path,
) -> None:
    """The agent moves the target and keeps running; meanwhile another task lands. The merge
    queue finds the target moved, sees the agent's own commit there, puts it back and builds on
    the verified head; the agent's attempt fails when it ends."""
    before = git(repo, "rev-parse", "main").strip()
    plan = write(
        repo,
        "plan.yaml",
        "stages:\n  - name: s\n    steps:\n      - id: sneaky\n        goal: g\n"
        "        files: [s.txt]\n        max_attempts: 1\n"
        "        command: 'echo s > s.txt && git add s.txt && git -c user.name=a "
        "-c user.email=a@b commit -qm untested && git update-ref refs/heads/main HEAD "
        "&& sleep 3'\n"
        '      - {id: honest, goal: h, files: [h.txt], command: "sleep 1; echo h > h.txt"}\n',
    )
    result = invoke("run", str(plan), "--plain")
    assert result.exit_code == 1, result.output
    [status] = api.list_runs(repo)
    assert status.tasks["honest"].state == "landed"
    assert status.tasks["sneaky"].state == "failed"
    assert "moved the target branch 'main'" in status.tasks["sneaky"].reason
    history = git(repo, "log", "--format=%s", "main").splitlines()
    assert "untested" not in history  # no landing built on the agent's commit
    assert git(repo, "merge-base", "--is-ancestor", before, "main") == ""
    records = read_journal(repo / ".stretto" / "runs" / status.run_id / "journal.jsonl")
    restored = [r for r in records if r.type == "target_restored"]
    assert restored and restored[0].fields["restored_to"] == before
