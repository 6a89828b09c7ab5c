"""From a goal to landed work, and splitting a task that keeps failing, end to end.

The planner is the real Claude Code CLI (pinned by scripts/install-agents; missing, these tests
fail) driven by the scripted model server; the work is done by shell agents in real worktrees.
stretto's own model calls are counted from the journal (``planner_call`` records) and checked
against the requests the model server saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from _invariants import check_invariants
from stretto.engine.journal import read_journal
from stretto.frontends.cli import main
from stretto.routing.ledger import Ledger
from stretto.testing.fakemodel import FakeModelServer, Step, ToolCall
from stretto.testing.repo import git, make_repo

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".tools" / "npm" / "node_modules" / ".bin"

# The work: each task writes its id into the files it owns. Task 'big' writes a broken a.txt,
# which its gate refuses, every time; the steps a split makes of it do not.
AGENT = """\
for f in $STRETTO_OWNED_FILES; do
    text="$STRETTO_TASK_ID"
    if [ "$STRETTO_TASK_ID" = big ]; then text=broken; fi
    echo "$text" > "$f"
done
"""

CONFIG = """\
default_agent = "shell"
env = ["ANTHROPIC_*"]

[agents.shell]
command = "bash {agent}"

[agents.claude]
max_retries = 0

[planner]
agent = "claude"
model = "fake-model"
timeout = 120
"""


def step(sid: str, goal: str, files: list[str], **kw: Any) -> dict[str, Any]:
    return {
        "id": sid,
        "title": "",
        "goal": goal,
        "description": "",
        "role": "backend",
        "complexity": "low",
        "files": files,
        "outputs": [],
        "depends_on": [],
        "gates": [],
        **kw,
    }


def answer(*steps: dict[str, Any]) -> Step:
    """Claude Code answers a planning call through the StructuredOutput tool (--json-schema)."""
    data = {"name": "rate-limit", "stages": [{"name": "work", "depends_on": [], "steps": steps}]}
    return Step(tool_calls=[ToolCall("StructuredOutput", data)])


GOOD = answer(
    step("limiter", "Add the rate limiter", ["limiter.txt"], outputs=["limiter.txt"]),
    step("docs", "Document it", ["docs.txt"], outputs=["docs.txt"], depends_on=["limiter"]),
)
INVALID = answer(step("limiter", "Add it", ["limiter.txt"], depends_on=["nothing-here"]))


@pytest.fixture(scope="module", autouse=True)
def claude_installed() -> None:
    assert (BIN / "claude").exists(), f"{BIN / 'claude'} is missing: run scripts/install-agents"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    agent = tmp_path / "agent.sh"
    agent.write_text(AGENT)
    path = make_repo(
        tmp_path / "repo",
        {"README.md": "# api\n", "stretto.toml": CONFIG.format(agent=agent)},
    )
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
    monkeypatch.chdir(path)
    return path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def records(repo: Path, run_id: str) -> list[Any]:
    return read_journal(repo / ".stretto" / "runs" / run_id / "journal.jsonl")


def only_run(repo: Path) -> str:
    [run_id] = os.listdir(repo / ".stretto" / "runs")
    return run_id


def test_goal_plans_with_one_call_shows_the_plan_and_lands(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeModelServer([GOOD]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.env()["ANTHROPIC_BASE_URL"])
        result = invoke("-g", "Add rate limiting middleware", "--yes", "--plain")
        generate = [r for r in server.requests if r.endpoint == "generate"]
    assert result.exit_code == 0, result.output
    assert "stage work" in result.output
    assert "limiter  [backend, low]" in result.output
    assert "owns: limiter.txt" in result.output
    assert "1 planning call" in result.output
    assert "2 of 2 task(s) landed" in result.output
    assert git(repo, "show", "main:limiter.txt") == "limiter\n"
    assert git(repo, "show", "main:docs.txt") == "docs\n"
    run_id = only_run(repo)
    journal = records(repo, run_id)
    assert [r.fields["call"] for r in journal if r.type == "planner_call"] == ["plan"]
    assert len(generate) == 1  # one model request: the plan; scheduling made none
    finished = journal[-1]
    assert finished.type == "run_finished" and finished.fields["planner_calls"] == 1
    saved = repo / ".stretto" / "runs" / run_id / "plan.yaml"
    assert "limiter" in saved.read_text()
    [entry] = [e for e in Ledger.for_repo(repo).entries() if e.kind == "plan"]
    assert (entry.run_id, entry.agent) == (run_id, "claude")


def test_plan_only_saves_a_plan_that_runs_later(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeModelServer([GOOD]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.env()["ANTHROPIC_BASE_URL"])
        result = invoke("plan", "Add rate limiting middleware", "--plan-only")
    assert result.exit_code == 0, result.output
    [line] = [ln for ln in result.output.splitlines() if ln.startswith("run it later with: ")]
    plan_path = Path(line.split("stretto run ", 1)[1])
    assert plan_path.is_file() and plan_path.parent.parent.name == "runs"
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", "HEAD")  # nothing ran
    assert not (plan_path.parent / "journal.jsonl").exists()
    later = invoke("run", str(plan_path), "--plain")
    assert later.exit_code == 0, later.output
    assert git(repo, "show", "main:docs.txt") == "docs\n"


def test_a_detached_goal_is_planned_and_run_by_its_engine(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stretto import api

    with FakeModelServer([GOOD]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.env()["ANTHROPIC_BASE_URL"])
        result = invoke("run", "--detach", "-g", "Add rate limiting middleware", "--json")
        assert result.exit_code == 0, result.output
        out = json.loads(result.output)
        handle = api.open_run(repo, out["run_id"])
        assert handle.status().state in ("planning", "running", "finished")
        final = handle.wait(timeout=120)
        generate = [r for r in server.requests if r.endpoint == "generate"]
    log = (handle.run_dir / "engine.log").read_text()
    assert final.state == "finished", (final.to_dict(), log)
    assert final.goal == "Add rate limiting middleware"
    assert len(generate) == 1
    types = [r.type for r in handle.records()]
    assert types[:3] == ["goal", "run_started", "planner_call"]  # as a foreground -g
    assert git(repo, "show", "main:docs.txt") == "docs\n"


def test_a_detached_goal_whose_plan_stays_invalid_ends_failed_with_the_reason(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stretto import api

    head = git(repo, "rev-parse", "main")
    with FakeModelServer([INVALID, INVALID]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.env()["ANTHROPIC_BASE_URL"])
        result = invoke("-g", "Add rate limiting middleware", "--detach")
        assert result.exit_code == 0, result.output
        assert "plans the goal, then runs it" in result.output
        run_id = result.output.split()[1]
        final = api.open_run(repo, run_id).wait(timeout=120)
    assert final.state == "failed"
    assert any("planning failed" in note for note in final.notes), final.notes
    assert git(repo, "rev-parse", "main") == head


def test_without_yes_and_without_a_terminal_nothing_runs(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = git(repo, "rev-parse", "main")
    with FakeModelServer([GOOD]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.env()["ANTHROPIC_BASE_URL"])
        result = invoke("-g", "Add rate limiting middleware")
    assert result.exit_code == 1
    assert "pass --yes to run without asking" in result.output
    assert git(repo, "rev-parse", "main") == head


def test_an_answer_that_stays_invalid_is_shown_and_nothing_runs(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = git(repo, "rev-parse", "main")
    with FakeModelServer([INVALID, INVALID]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.env()["ANTHROPIC_BASE_URL"])
        result = invoke("-g", "Add rate limiting middleware", "--yes")
        generate = [r for r in server.requests if r.endpoint == "generate"]
    assert result.exit_code == 2, result.output
    assert "nothing-here" in result.output  # the error names what came back
    assert len(generate) == 2  # the plan, then one repair; never a third
    assert git(repo, "rev-parse", "main") == head
    run_id = only_run(repo)
    assert not (repo / ".stretto" / "runs" / run_id / "journal.jsonl").exists()
    assert git(repo, "branch", "--list", "stretto/*") == ""
    kinds = [e.kind for e in Ledger.for_repo(repo).entries()]
    assert kinds == ["plan", "plan"]  # both calls are paid for, and recorded


def test_no_planner_is_a_clear_error(repo: Path) -> None:
    toml = repo / "stretto.toml"
    toml.write_text(toml.read_text().replace('agent = "claude"\nmodel', "model"))
    result = invoke("-g", "anything", "--yes")
    assert result.exit_code == 2
    assert "--planner claude" in result.output
    assert not (repo / ".stretto" / "runs").exists()


# --------------------------------------------------------------------------- splitting

SPLIT_PLAN = """\
name: split
stages:
  - name: work
    steps:
      - id: big
        goal: Write a and b
        files: [a.txt, b.txt]
        max_attempts: 2
        gates: ["! grep -q broken a.txt"]
  - name: after
    depends_on: [work]
    steps:
      - {id: after, goal: Use a and b, files: [c.txt]}
"""

SPLIT = Step(  # a split answer is {"steps": [...]}, steps as in a plan
    tool_calls=[
        ToolCall(
            "StructuredOutput",
            {
                "steps": [
                    step("a", "Write a", ["a.txt"]),
                    step("b", "Write b", ["b.txt"], depends_on=["a"]),
                ]
            },
        )
    ]
)


def split_plan(repo: Path) -> Path:
    path = repo.parent / "plan.yaml"
    path.write_text(SPLIT_PLAN)
    return path


def test_a_task_that_keeps_failing_is_split_and_lands(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeModelServer([SPLIT]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.env()["ANTHROPIC_BASE_URL"])
        result = invoke("run", str(split_plan(repo)), "--plain")
        generate = [r for r in server.requests if r.endpoint == "generate"]
    assert result.exit_code == 0, result.output
    assert len(generate) == 1  # one planning call for one split, none for scheduling
    assert "split   big: asking the planner for smaller steps" in result.output
    assert "split   big -> big.a, big.b" in result.output
    body = json.dumps(generate[0].body)
    assert "gates failed" in body  # the failure logs were context
    assert git(repo, "show", "main:a.txt") == "big.a\n"
    assert git(repo, "show", "main:b.txt") == "big.b\n"
    assert git(repo, "show", "main:c.txt") == "after\n"
    run_id = only_run(repo)
    journal = records(repo, run_id)
    [split] = [r for r in journal if r.type == "split"]
    assert split.fields["children"] == ["big.a", "big.b"]
    assert [r.fields["call"] for r in journal if r.type == "planner_call"] == ["split"]
    status = json.loads(invoke("status", "--json").output)
    states = {t["id"]: t["state"] for t in status["tasks"]}
    assert states == {"big": "split", "after": "landed", "big.a": "landed", "big.b": "landed"}
    # 'after' waited for both halves.
    landed = [r.fields["task"] for r in journal if r.type == "merged"]
    assert landed.index("after") > max(landed.index("big.a"), landed.index("big.b"))


def test_split_depth_zero_means_no_split(repo: Path) -> None:
    toml = repo / "stretto.toml"
    toml.write_text(toml.read_text() + "split_depth = 0\n")
    result = invoke("run", str(split_plan(repo)), "--plain")
    assert result.exit_code == 1
    status = json.loads(invoke("status", "--json").output)
    assert {t["id"]: t["state"] for t in status["tasks"]} == {"big": "failed", "after": "skipped"}


@pytest.mark.parametrize("point", ["after-split", "after-intent:split"])
def test_resume_after_a_crash_between_the_split_and_its_steps_makes_no_second_call(
    repo: Path, point: str
) -> None:
    """Killed after the split's answer was journaled (resume replays it), or after its intent
    and before the call (resume makes the one call): either way one planning call in all."""
    with FakeModelServer([SPLIT]) as server:
        env = {
            **os.environ,
            "ANTHROPIC_BASE_URL": server.env()["ANTHROPIC_BASE_URL"],
            "STRETTO_CRASHPOINT": point,
        }
        crashed = subprocess.run(
            [sys.executable, "-m", "stretto", "run", str(split_plan(repo)), "--plain"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert crashed.returncode == -9, crashed.stdout + crashed.stderr
        env.pop("STRETTO_CRASHPOINT")
        resumed = subprocess.run(
            [sys.executable, "-m", "stretto", "resume", "--plain"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        generate = [r for r in server.requests if r.endpoint == "generate"]
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(generate) == 1  # the split was replayed from the journal, or made once
    journal = records(repo, only_run(repo))
    assert sum(1 for r in journal if r.type == "planner_call") == 1
    assert git(repo, "show", "main:a.txt") == "big.a\n"
    assert git(repo, "show", "main:c.txt") == "after\n"
    check_invariants(repo, only_run(repo), tasks={"big.a", "big.b", "after"})


def test_the_mcp_stretto_plan_tool_plans_a_goal_with_one_call(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio
    from mcp import ClientSession, StdioServerParameters, stdio_client

    with FakeModelServer([GOOD]) as server:
        env = {
            **{k: os.environ[k] for k in ("PATH", "HOME", "ANTHROPIC_API_KEY")},
            "ANTHROPIC_BASE_URL": server.env()["ANTHROPIC_BASE_URL"],
        }
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "stretto", "mcp", "--repo", str(repo)], env=env
        )

        async def plan() -> Any:
            async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
                await s.initialize()
                return await s.call_tool("stretto_plan", {"goal": "Add rate limiting"})

        result = anyio.run(plan)
        generate = [r for r in server.requests if r.endpoint == "generate"]
    assert not result.is_error, result.content
    out = result.structured_content
    out = out.get("result", out)
    assert len(generate) == 1  # one planning call
    assert out["ok"] and Path(out["plan_path"]).is_file()
    summary = json.dumps(out["summary"])
    assert "limiter" in summary and "docs" in summary and "schedule_text" in out
    assert "sk-ant-fake" not in json.dumps(out)
    assert git(repo, "rev-parse", "main") == git(repo, "rev-parse", "HEAD")  # nothing ran
