"""The generic `command` adapter: a CLI configured in stretto.toml, run for real."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from stretto.frontends.cli import main
from stretto.testing.repo import git, make_repo

# A stand-in agent CLI: reads its prompt (argument, stdin or file), writes a file named after
# the task, prints JSON lines with usage and cost, or fails as asked.
FAKE_CLI = """\
import json, os, sys
mode, prompt = sys.argv[1], ""
if mode == "arg":
    prompt = sys.argv[2]
elif mode == "stdin":
    prompt = sys.stdin.read()
else:
    prompt = open(sys.argv[2]).read()
task = os.environ["STRETTO_TASK_ID"]
if "RATE" in os.environ.get("FAKE_FAIL", ""):
    print("Error: 429 Too Many Requests")
    sys.exit(2)
assert "# Task:" in prompt, prompt[:200]
open(task + ".txt", "w").write(task + "\\n")
print(json.dumps({"type": "step", "usage": {"prompt_tokens": 100, "completion_tokens": 7}}))
print(json.dumps({"type": "done", "total_cost_usd": 0.25}))
"""

PLAN = """\
stages:
  - name: s
    steps:
      - {id: one, goal: write one.txt, files: [one.txt], agent: tool-arg}
      - {id: two, goal: write two.txt, files: [two.txt], agent: tool-stdin}
      - {id: three, goal: write three.txt, files: [three.txt], agent: tool-file}
"""


def config(cli: Path, extra: str = "") -> str:
    py = sys.executable
    return f"""\
[agents.tool-arg]
adapter = "command"
command = ["{py}", "{cli}", "arg", "{{prompt}}"]
output = "jsonl"
[agents.tool-stdin]
adapter = "command"
command = "{py} {cli} stdin"
prompt = "stdin"
output = "jsonl"
[agents.tool-file]
adapter = "command"
command = ["{py}", "{cli}", "file", "{{prompt_file}}"]
prompt = "file"
{extra}"""


@pytest.fixture
def cli(tmp_path: Path) -> Path:
    path = tmp_path / "fake_cli.py"
    path.write_text(FAKE_CLI)
    return path


def test_three_ways_to_pass_the_prompt_all_land(
    tmp_path: Path, cli: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo", {"stretto.toml": config(cli)})
    (tmp_path / "plan.yaml").write_text(PLAN)
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["run", "../plan.yaml", "--json"])
    assert result.exit_code == 0, result.output
    for task in ("one", "two", "three"):
        assert git(repo, "show", f"main:{task}.txt") == f"{task}\n"
    records = [json.loads(line) for line in result.stdout.splitlines()]
    finished = {r["task"]: r for r in records if r.get("type") == "attempt_finished"}
    assert finished["one"]["usage"] == {"input_tokens": 100, "output_tokens": 7}
    assert finished["one"]["cost_usd"] == 0.25
    assert finished["three"]["usage"] == {}  # text output: nothing parsed


def test_rate_limit_in_the_output_is_rate_limited(
    tmp_path: Path, cli: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = '[agents.tool-arg.env]\nFAKE_FAIL = "RATE"\n'
    repo = make_repo(tmp_path / "repo", {"stretto.toml": config(cli, "")})
    (repo / "stretto.toml").write_text(
        config(cli).replace(
            'output = "jsonl"\n[agents.tool-stdin]',
            f'output = "jsonl"\n{extra}[agents.tool-stdin]',
            1,
        )
        + "[attempt]\nmax_rate_limited = 2\n"  # back-off waits 1-2 s, then 2-4 s
    )
    git(repo, "commit", "-qam", "config")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "stages:\n  - name: s\n    steps:\n"
        "      - {id: one, goal: g, files: [one.txt], agent: tool-arg, max_attempts: 1}\n"
    )
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["run", str(plan), "--json"])
    records = [json.loads(line) for line in result.stdout.splitlines()]
    outcomes = [r["outcome"] for r in records if r.get("type") == "attempt_finished"]
    # Rate limits do not use up attempts: with max_attempts 1 it is still retried.
    assert outcomes == ["rate_limited"] * 3, outcomes
    assert result.exit_code == 1  # it never succeeds; after 2 uncounted tries it counts


def test_missing_command_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo", {"stretto.toml": '[agents.nope]\nadapter = "command"\n'})
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "stages:\n  - name: s\n    steps:\n      - {goal: g, files: [x], agent: nope}\n"
    )
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["run", str(plan), "--plain"])
    assert result.exit_code == 2  # refused before anything ran
    assert "[agents.nope] has no command" in result.output
    assert not (repo / ".stretto").exists()


def test_unknown_agent_is_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    plan = tmp_path / "plan.yaml"
    plan.write_text("stages:\n  - name: s\n    steps:\n      - {goal: g, agent: cluade}\n")
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["run", str(plan), "--plain"])
    assert result.exit_code == 2
    assert "unknown agent 'cluade'" in result.output and "claude" in result.output
    assert not (repo / ".stretto").exists()


def test_agents_lists_configured_command_agents(
    tmp_path: Path, cli: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo", {"stretto.toml": config(cli)})
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["agents", "--json"])
    infos = {i["name"]: i for i in json.loads(result.stdout)}
    assert infos["tool-arg"]["adapter"] == "command (configured)"
    assert infos["tool-arg"]["installed"] and infos["tool-arg"]["path"] == sys.executable
