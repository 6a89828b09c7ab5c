"""Conformance of the ``claude`` adapter against the real Claude Code CLI and the fake model.

Everything is real: the CLI pinned by scripts/install-agents, a git worktree in tmp_path,
:func:`stretto.process.run_process`, and the scripted model server on 127.0.0.1. Only the
model's replies are scripted. A missing CLI fails these tests (it does not skip them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from _support import (
    NPM_BIN,
    WRITE_TASK_FILE,
    Ran,
    RecordingProxy,
    generate_requests,
    identity_in_home_only,
    kinds,
    make_task,
    no_identity_env,
    path_with,
    proxy_env,
    require_cli,
    run_attempt,
    two_task_plan,
)

from stretto.agents.base import AttemptContext, Outcome, reported_model
from stretto.agents.claude import ClaudeAdapter, resolve_model
from stretto.process import TOKEN_VAR, processes_with_token
from stretto.testing.fakemodel import FakeModelServer, HttpError, Step, ToolCall, Usage
from stretto.testing.repo import git, make_repo

CLAUDE = NPM_BIN / "claude"


@pytest.fixture(scope="module")
def claude_bin() -> Path:
    return require_cli(CLAUDE)


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "repo", {"greet.py": "print('hello')\n", "README.md": "demo\n"})
    tree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "attempt-1", str(tree))
    return tree


def context(
    worktree: Path,
    server: FakeModelServer,
    *,
    extra_env: Mapping[str, str] = {},
    settings: Mapping[str, Any] | None = None,
    timeout: float | None = 60,
    model: str | None = "fake-model",
) -> AttemptContext:
    log_dir = worktree.parent / "attempt"
    log_dir.mkdir(exist_ok=True)
    prompt = "Do the task.\n" + "Context line. " * 2000  # long: goes through stdin, not argv
    (log_dir / "prompt.md").write_text(prompt)
    env = {
        "PATH": path_with(NPM_BIN),
        "HOME": str(worktree.parent / "home"),
        "ANTHROPIC_BASE_URL": server.url,
        "ANTHROPIC_API_KEY": "sk-ant-fake",
        TOKEN_VAR: "claude-conformance-" + worktree.parent.name,
        **extra_env,
    }
    task = make_task(id="t1", title="do it", role="", complexity="simple", stage="s1", lease=())
    return AttemptContext(
        task=task,
        attempt=1,
        run_id="r1",
        workspace=worktree,
        prompt=prompt,
        prompt_file=log_dir / "prompt.md",
        log_dir=log_dir,
        env=env,
        model=model,
        timeout=timeout,
        settings=settings if settings is not None else {"max_retries": 0},
    )


def run(ctx: AttemptContext) -> Ran:
    return run_attempt(ClaudeAdapter(), ctx)


# ----------------------------------------------------------------------------- the command


def test_build_uses_stdin_own_config_and_quiet_env(tmp_path: Path) -> None:
    with FakeModelServer([Step(text="x")]) as server:
        ctx = context(tmp_path / "wt", server, settings={"models": {"fast": "claude-haiku-x"}})
    launch = ClaudeAdapter().build(ctx)
    # found on the agents' PATH, made absolute (agents run in their worktree)
    assert launch.argv[:2] == [str(CLAUDE), "-p"]
    assert ctx.prompt not in launch.argv and launch.stdin == ctx.prompt
    assert "--model" in launch.argv and "fake-model" in launch.argv
    assert launch.env["CLAUDE_CONFIG_DIR"].startswith(str(ctx.log_dir))
    for var in (
        "DISABLE_TELEMETRY",
        "DISABLE_AUTOUPDATER",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    ):
        assert launch.env[var] == "1"
    assert launch.env["ANTHROPIC_BASE_URL"] == ctx.env["ANTHROPIC_BASE_URL"]
    assert launch.cwd == ctx.workspace


def test_model_tiers_and_settings(tmp_path: Path) -> None:
    with FakeModelServer([Step(text="x")]) as server:
        base = context(tmp_path / "wt", server, model=None, settings={})
    from dataclasses import replace

    assert resolve_model(base) == "sonnet"  # complexity "simple" is no tier's: balanced
    assert resolve_model(replace(base, task=replace(base.task, complexity="high"))) == "opus"
    assert resolve_model(replace(base, model="fast")) == "haiku"
    assert resolve_model(replace(base, model="strong", settings={"models": {"strong": "m-x"}})) == (
        "m-x"
    )
    assert resolve_model(replace(base, settings={"model": "claude-sonnet-9"})) == "claude-sonnet-9"
    assert resolve_model(replace(base, model="claude-opus-7")) == "claude-opus-7"


# ------------------------------------------------------------------------ against the CLI


def test_creates_a_new_file(claude_bin: Path, worktree: Path) -> None:
    target = worktree / "hello.py"
    script = [
        Step(tool_calls=[ToolCall("Write", {"file_path": str(target), "content": "print(1)\n"})]),
        Step(text="Created hello.py."),
    ]
    with FakeModelServer(script) as server:
        ran = run(context(worktree, server))
        steps = [r.step for r in generate_requests(server)]
    assert ran.result.outcome is Outcome.SUCCESS, ran.log[-3000:]
    assert target.read_text() == "print(1)\n"
    assert steps == [0, 1]
    assert {"path": str(target), "tool": "Write"} in kinds(ran.events, "file")
    assert {"text": "Created hello.py."} in kinds(ran.events, "text")


def test_no_model_named_means_the_complexity_tier(claude_bin: Path, worktree: Path) -> None:
    """Issue 21: with no model, Claude Code asked for its own default (its strongest model); the
    step's complexity picks the tier instead, as for gemini, and the attempt records the model
    Claude Code reports having used."""
    from dataclasses import replace

    with FakeModelServer([Step(text="Nothing to do.")]) as server:
        ctx = context(worktree, server, model=None)
        ran = run(replace(ctx, task=replace(ctx.task, complexity="low")))
        asked = [r.body.get("model") for r in generate_requests(server)]
    assert ran.result.outcome is Outcome.SUCCESS, ran.log[-3000:]
    assert len(asked) == 1 and "haiku" in str(asked[0]), asked
    assert reported_model(ran.events) == asked[0]


def test_edits_an_existing_file(claude_bin: Path, worktree: Path) -> None:
    target = worktree / "greet.py"
    script = [
        Step(tool_calls=[ToolCall("Read", {"file_path": str(target)})]),
        Step(
            tool_calls=[
                ToolCall(
                    "Edit",
                    {"file_path": str(target), "old_string": "hello", "new_string": "goodbye"},
                )
            ]
        ),
        Step(text="Edited greet.py."),
    ]
    with FakeModelServer(script) as server:
        ran = run(context(worktree, server))
    assert ran.result.outcome is Outcome.SUCCESS, ran.log[-3000:]
    assert target.read_text() == "print('goodbye')\n"
    assert [d["name"] for d in kinds(ran.events, "tool")] == ["Read", "Edit"]
    assert kinds(ran.events, "file") == [{"path": str(target), "tool": "Edit"}]


def test_http_400_is_an_api_error(claude_bin: Path, worktree: Path) -> None:
    with FakeModelServer([Step(http_error=HttpError(400))]) as server:
        ran = run(context(worktree, server))
    assert ran.result.outcome is Outcome.API_ERROR, ran.log[-3000:]
    assert ran.exit_code == 1
    assert "400" in ran.result.reason
    assert ran.result.outcome.counts_as_failure


ANTHROPIC_NO_CREDIT = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "Your credit balance is too low to access the Anthropic API. Please go to "
        "Plans & Billing to upgrade or purchase credits.",
    },
}


def test_out_of_credit_is_not_the_tasks_fault(claude_bin: Path, worktree: Path) -> None:
    """Claude Code tags a billing refusal ``billing_error``: not an API error that uses up one
    of the task's attempts, but the provider out of credit."""
    with FakeModelServer([Step(http_error=HttpError(400, body=ANTHROPIC_NO_CREDIT))]) as server:
        ran = run(context(worktree, server))
        assert len(generate_requests(server)) == 1
    assert ran.result.outcome is Outcome.OUT_OF_CREDIT, ran.log[-3000:]
    assert "credit balance is too low" in ran.result.reason.lower()
    assert not ran.result.outcome.counts_as_failure


def test_http_429_is_rate_limited_with_retry_after(claude_bin: Path, worktree: Path) -> None:
    # One retry of the CLI's own, so it reports the server's Retry-After (api_retry event).
    script = [Step(http_error=HttpError(429, retry_after=1))]
    with FakeModelServer(script) as server:
        ran = run(context(worktree, server, settings={"max_retries": 1}))
        statuses = [r.status for r in generate_requests(server)]
    assert ran.result.outcome is Outcome.RATE_LIMITED, ran.log[-3000:]
    assert ran.result.retry_after == pytest.approx(1.0)
    assert not ran.result.outcome.counts_as_failure
    assert statuses == [429, 429]


def test_429_without_retries(claude_bin: Path, worktree: Path) -> None:
    with FakeModelServer([Step(http_error=HttpError(429, retry_after=30))]) as server:
        ran = run(context(worktree, server))
        assert len(generate_requests(server)) == 1
    assert ran.result.outcome is Outcome.RATE_LIMITED, ran.log[-3000:]


def test_tokens_and_dollars_match_the_script(claude_bin: Path, worktree: Path) -> None:
    target = worktree / "hello.py"
    script = [
        Step(
            tool_calls=[ToolCall("Write", {"file_path": str(target), "content": "x = 1\n"})],
            usage=Usage(input_tokens=1000, output_tokens=50, cached_tokens=600),
        ),
        Step(text="Done.", usage=Usage(input_tokens=1200, output_tokens=10, cached_tokens=900)),
    ]
    with FakeModelServer(script) as server:
        ran = run(context(worktree, server))
    assert ran.result.outcome is Outcome.SUCCESS, ran.log[-3000:]
    # Claude Code sums the turns and keeps cache reads apart from input_tokens.
    assert ran.result.usage["input_tokens"] == 2200
    assert ran.result.usage["output_tokens"] == 60
    assert ran.result.usage["cached_tokens"] == 1500
    reported = [
        json.loads(line)["total_cost_usd"]
        for line in ran.log.splitlines()
        if line.startswith('{"type":"result"')
    ]
    assert ran.result.cost_usd is not None and ran.result.cost_usd > 0
    assert reported == [ran.result.cost_usd]


def test_permission_denied_despite_exit_0(claude_bin: Path, worktree: Path) -> None:
    """acceptEdits covers the worktree only: a write elsewhere is denied, and claude exits 0."""
    outside = worktree.parent / "outside.txt"
    script = [
        Step(tool_calls=[ToolCall("Write", {"file_path": str(outside), "content": "no\n"})]),
        Step(text="Could not write it."),
    ]
    with FakeModelServer(script) as server:
        ran = run(context(worktree, server))
    assert ran.exit_code == 0
    assert ran.result.outcome is Outcome.PERMISSION_DENIED, ran.log[-3000:]
    assert "Write" in ran.result.reason
    assert not outside.exists()


def test_a_hang_is_killed_at_the_timeout(claude_bin: Path, worktree: Path) -> None:
    with FakeModelServer([Step(hang=True)]) as server:
        ctx = context(worktree, server, timeout=4)
        ran = run(ctx)
        assert processes_with_token(ctx.env[TOKEN_VAR]) == []
        assert [r.status for r in generate_requests(server)] == [None]  # it was waiting on us
    assert ran.result.outcome is Outcome.TIMED_OUT
    assert ran.exit_code is None
    assert ran.duration < 15


def test_reaches_no_address_but_the_server(claude_bin: Path, worktree: Path) -> None:
    """Every route but loopback goes through a proxy that forwards nothing and records all.

    The run still works, the model server saw every model request, and the proxy shows what
    else the CLI tried to reach (nothing, with non-essential traffic off).
    """
    target = worktree / "hello.py"
    script = [
        Step(tool_calls=[ToolCall("Write", {"file_path": str(target), "content": "ok\n"})]),
        Step(text="Done."),
    ]
    with FakeModelServer(script) as server, RecordingProxy() as proxy:
        extra_env = {**proxy_env(proxy.url), "NO_PROXY": "127.0.0.1,localhost"}
        ran = run(context(worktree, server, extra_env=extra_env))
        seen = [(r.method, r.endpoint, r.status) for r in server.requests]
    assert ran.result.outcome is Outcome.SUCCESS, ran.log[-3000:]
    assert target.read_text() == "ok\n"
    assert [s for s in seen if s[1] == "generate"] == [("POST", "generate", 200)] * 2
    assert proxy.seen == []
    assert "ECONNREFUSED" not in ran.log


# --------------------------------------------------------------------------- end to end

E2E_PLAN = two_task_plan("two", "claude", "write")

E2E_CONFIG = f"""\
env = ["ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"]
[agents.claude]
command = "{CLAUDE}"
model = "fake-model"
allowed_tools = ["Bash"]
max_retries = 0
"""


def test_stretto_run_two_claude_tasks_land(
    claude_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stretto run`` with two claude steps in parallel, both landing on main; the user's git
    identity is in ``~/.gitconfig`` only, and the repository's config is left byte-identical."""
    from click.testing import CliRunner

    from stretto import agents
    from stretto.frontends.cli import main

    monkeypatch.setitem(agents.BUILTIN, "claude", "stretto.agents.claude:ClaudeAdapter")
    repo = make_repo(tmp_path / "repo", {"README.md": "# demo\n", "stretto.toml": E2E_CONFIG})
    plan = tmp_path / "plan.yaml"
    plan.write_text(E2E_PLAN)
    home = tmp_path / "home"  # Claude's Bash sources the user's shell rc files; keep them out
    config = identity_in_home_only(repo, home)
    # Each agent writes $STRETTO_TASK_ID.txt, so one script serves both conversations.
    script = [
        Step(tool_calls=[ToolCall("Bash", {"command": WRITE_TASK_FILE})]),
        Step(text="Wrote it."),
    ]
    with FakeModelServer(script) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
        monkeypatch.setenv("HOME", str(home))
        no_identity_env(monkeypatch)
        monkeypatch.chdir(repo)
        result = CliRunner().invoke(main, ["run", str(plan), "--plain"])
        steps = sorted(r.step for r in generate_requests(server))
    assert result.exit_code == 0, result.output
    assert "2 of 2 task(s) landed" in result.output
    assert steps == [0, 0, 1, 1]
    assert git(repo, "show", "main:alpha.txt") == "alpha\n"
    assert git(repo, "show", "main:beta.txt") == "beta\n"
    assert (repo / ".git" / "config").read_bytes() == config
