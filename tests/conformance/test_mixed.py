"""One plan, three real agent CLIs in parallel: 6 tasks, all landing through the merge queue.

Claude Code, Codex and Gemini CLI each take two tasks; one scripted model server drives all
three, a session (URL prefix) per CLI. Each agent's shell tool writes ``$STRETTO_TASK_ID.txt``,
so one script serves both conversations of a CLI.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _support import (
    NPM_BIN,
    OPENAI_NO_CREDIT,
    WRITE_TASK_FILE,
    path_with,
    require_cli,
    setenv_all,
)
from click.testing import CliRunner

from stretto.frontends.cli import main
from stretto.testing.fakemodel import FakeModelServer, Script, Session, Step, ToolCall
from stretto.testing.repo import IDENTITY, git, make_repo

PLAN = """\
name: three clis
max_agents: 6
stages:
  - name: work
    steps:
""" + "".join(
    f"      - {{id: {task}, goal: write {task}.txt, files: [{task}.txt], agent: {agent}}}\n"
    for agent in ("claude", "codex", "gemini")
    for task in (f"{agent}-a", f"{agent}-b")
)

CONFIG = f"""\
env = ["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_KEY",
       "GOOGLE_GEMINI_BASE_URL", "GEMINI_API_KEY"]
[agents.claude]
command = "{NPM_BIN / "claude"}"
model = "fake-model"
allowed_tools = ["Bash"]
max_retries = 0
[agents.codex]
command = "{NPM_BIN / "codex"}"
model = "fake-model"
[agents.gemini]
command = "{NPM_BIN / "gemini"}"
model = "gemini-2.5-flash"
"""


def session(tool: str, key: str) -> Session:
    return Session([Step(tool_calls=[ToolCall(tool, {key: WRITE_TASK_FILE})]), Step(text="Done.")])


@pytest.mark.timeout(240)
def test_six_tasks_three_clis_in_parallel_all_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("claude", "codex", "gemini"):
        require_cli(NPM_BIN / name)
    repo = make_repo(tmp_path / "repo", {"README.md": "# three\n", "stretto.toml": CONFIG})
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    home = tmp_path / "home"  # agents' shells must not read the real HOME's start-up files
    home.mkdir()
    script = Script(
        {
            "claude": session("Bash", "command"),
            "codex": session("exec_command", "cmd"),
            "gemini": session("run_shell_command", "command"),
        }
    )
    with FakeModelServer(script) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.env("claude")["ANTHROPIC_BASE_URL"])
        monkeypatch.setenv("OPENAI_BASE_URL", server.env("codex")["OPENAI_BASE_URL"])
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.env("gemini")["GOOGLE_GEMINI_BASE_URL"])
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        monkeypatch.setenv("GEMINI_API_KEY", "fake")
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("PATH", path_with(NPM_BIN))
        setenv_all(monkeypatch, IDENTITY)
        monkeypatch.chdir(repo)
        result = CliRunner().invoke(main, ["run", str(plan), "--plain"])
        sessions = {r.session for r in server.requests}
    assert result.exit_code == 0, result.output
    assert "6 of 6 task(s) landed" in result.output
    assert {"claude", "codex", "gemini"} <= sessions
    log = git(repo, "log", "--format=%(trailers:key=Stretto-Task,valueonly)", "main")
    landed = sorted(line.strip() for line in log.splitlines() if line.strip())
    assert landed == sorted(f"{a}-{s}" for a in ("claude", "codex", "gemini") for s in "ab")
    for task in landed:
        assert git(repo, "show", f"main:{task}.txt") == f"{task}\n"


ROUTED = (
    CONFIG
    + """
[router]
warmup = 50
[[router.arms]]
agent = "codex"
model = "fake-model"
tier = "fast"
[[router.arms]]
agent = "claude"
model = "fake-model"
tier = "strong"
"""
)


@pytest.mark.timeout(180)
def test_routing_goes_around_a_provider_out_of_credit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cascade starts the task on codex, whose account is out of credit: that costs the task
    no attempt, and its next attempt goes to the only arm left, claude, which lands it."""
    from stretto.engine.journal import read_journal
    from stretto.engine.runs import resolve_run
    from stretto.testing.fakemodel import HttpError

    for name in ("claude", "codex"):
        require_cli(NPM_BIN / name)
    repo = make_repo(tmp_path / "repo", {"README.md": "# routed\n", "stretto.toml": ROUTED})
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "stages:\n  - name: work\n    steps:\n"
        "      - {id: one, goal: write one.txt, files: [one.txt], complexity: low}\n"
    )
    (tmp_path / "home").mkdir()
    refuse = Step(http_error=HttpError(429, body=OPENAI_NO_CREDIT))
    script = Script({"claude": session("Bash", "command"), "codex": Session([refuse])})
    with FakeModelServer(script) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.env("claude")["ANTHROPIC_BASE_URL"])
        monkeypatch.setenv("OPENAI_BASE_URL", server.env("codex")["OPENAI_BASE_URL"])
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("PATH", path_with(NPM_BIN))
        setenv_all(monkeypatch, IDENTITY)
        monkeypatch.chdir(repo)
        result = CliRunner().invoke(main, ["run", str(plan), "--plain"])
        codex_calls = [r for r in server.requests if r.session == "codex" and r.status == 429]
    assert result.exit_code == 0, result.output
    assert git(repo, "show", "main:one.txt") == "one\n"
    assert len(codex_calls) == 1
    records = read_journal(resolve_run(repo, None) / "journal.jsonl")
    routes = [(r.fields["attempt"], r.fields["agent"]) for r in records if r.type == "route"]
    assert routes == [(1, "codex"), (2, "claude")]
    second = next(r for r in records if r.type == "route" and r.fields["attempt"] == 2)
    notes = {e["agent"]: e["note"] for e in second.fields["choice"]["estimates"]}
    assert notes["codex"] == "codex is out of credit"
    credit = [r for r in records if r.type == "decision" and r.fields["action"] == "out_of_credit"]
    assert [r.fields["provider"] for r in credit] == ["openai"]
    finished = [r for r in records if r.type == "attempt_finished"]
    assert [r.fields["outcome"] for r in finished] == ["out_of_credit", "success"]
