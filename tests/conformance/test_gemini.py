"""Conformance of the ``gemini`` adapter against the real Gemini CLI and the scripted model server.

Nothing is mocked: the pinned CLI from ``.tools/npm`` (``scripts/install-agents``) runs in a real
git worktree, talks to :class:`FakeModelServer` on 127.0.0.1 (``GOOGLE_GEMINI_BASE_URL``), and
its output goes through the adapter's ``parse_line`` and ``decide`` exactly as the runner feeds
them. A missing CLI fails these tests (it does not skip them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _support import (
    NPM_BIN,
    WRITE_TASK_FILE,
    Ran,
    RecordingProxy,
    bare_context,
    base_env,
    generate_requests,
    identity_in_home_only,
    kinds,
    make_task,
    no_identity_env,
    proxy_env,
    require_cli,
    run_attempt,
    two_task_plan,
)

from stretto.agents.base import AgentEvent, AgentResult, AttemptContext, Outcome, reported_model
from stretto.agents.gemini import GeminiAdapter
from stretto.plans.plan import Task
from stretto.process import TOKEN_VAR, processes_with_token
from stretto.testing.fakemodel import FakeModelServer, HttpError, Step, ToolCall, Usage
from stretto.testing.repo import git, make_repo

GEMINI = NPM_BIN / "gemini"
MODEL = "gemini-2.5-flash"


@pytest.fixture(scope="module")
def gemini_bin() -> Path:
    return require_cli(GEMINI)


def task(**kw: Any) -> Task:
    fields: dict[str, Any] = dict(id="t1", title="do it", role="", stage="s1", lease=())
    return make_task(**{**fields, "agent": "gemini", **kw})


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
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
    model: str | None = MODEL,
    prompt: str = "Do the task.",
) -> AttemptContext:
    log_dir = worktree.parent / "attempt"
    log_dir.mkdir(exist_ok=True)
    (log_dir / "prompt.md").write_text(prompt)
    tmp = worktree.parent / "tmp"  # where the CLI leaves its gemini-client-error-*.json reports
    tmp.mkdir(exist_ok=True)
    env = {
        **base_env(worktree.parent / "home", "gemini-conformance-" + worktree.parent.name),
        "TMPDIR": str(tmp),
        "GOOGLE_GEMINI_BASE_URL": server.env()["GOOGLE_GEMINI_BASE_URL"],
        "GEMINI_API_KEY": "fake",
        **extra_env,
    }
    return AttemptContext(
        task=task(),
        attempt=1,
        run_id="r1",
        workspace=worktree,
        prompt=prompt,
        prompt_file=log_dir / "prompt.md",
        log_dir=log_dir,
        env=env,
        model=model,
        timeout=timeout,
        settings=settings if settings is not None else {},
    )


def run(ctx: AttemptContext) -> Ran:
    return run_attempt(GeminiAdapter(), ctx)


def text(events: Sequence[AgentEvent]) -> str:
    return "".join(str(d["text"]) for d in kinds(events, "text") if "level" not in d)


# ----------------------------------------------------------------------------- the command


def test_build_uses_stdin_own_home_and_always_a_model(tmp_path: Path) -> None:
    with FakeModelServer([Step(text="x")]) as server:
        ctx = context(tmp_path / "wt", server, model=None, prompt="Fix it.\n" + "x" * 200_000)
    launch = GeminiAdapter().build(ctx)
    assert launch.argv[0] == str(GEMINI.resolve()) or Path(launch.argv[0]).name == "gemini"
    model = "gemini-2.5-flash-lite"  # no model named: the "low" complexity picks the fast tier
    assert launch.argv[1:] == ["-p", "", "--output-format", "stream-json", "--yolo", "-m", model]
    assert launch.stdin == ctx.prompt
    assert launch.cwd == ctx.workspace
    home = Path(launch.env["GEMINI_CLI_HOME"])
    assert home.is_relative_to(ctx.log_dir)
    settings = json.loads((home / ".gemini" / "settings.json").read_text())
    assert settings["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings["security"]["folderTrust"]["enabled"] is False
    assert settings["telemetry"]["enabled"] is False
    assert settings["privacy"]["usageStatisticsEnabled"] is False
    assert settings["general"]["enableAutoUpdate"] is False
    assert launch.env["GEMINI_CLI_NO_RELAUNCH"] == "true"
    assert launch.env["GOOGLE_GEMINI_BASE_URL"] == ctx.env["GOOGLE_GEMINI_BASE_URL"]


def test_endpoint_and_key_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stretto.errors import UsageError

    with FakeModelServer([Step(text="x")]) as server:
        ctx = context(tmp_path / "wt", server)
    monkeypatch.setenv("MY_GEMINI_KEY", "k-123")
    settings = {"base_url": "http://gw.example", "api_key_env": "MY_GEMINI_KEY"}
    launch = GeminiAdapter().build(replace(ctx, settings=settings))
    assert launch.env["GOOGLE_GEMINI_BASE_URL"] == "http://gw.example"
    assert launch.env["GEMINI_API_KEY"] == "k-123"
    monkeypatch.delenv("MY_GEMINI_KEY")
    with pytest.raises(UsageError, match="MY_GEMINI_KEY"):
        GeminiAdapter().build(replace(ctx, settings=settings))
    with pytest.raises(UsageError, match="not found"):
        GeminiAdapter().build(replace(ctx, settings={"command": "no-such-gemini-cli"}))


def test_model_comes_from_the_step_then_settings_then_the_tier(tmp_path: Path) -> None:
    def model(step_model: str | None, complexity: str, **settings: object) -> str:
        ctx = bare_context(task(complexity=complexity), tmp_path, step_model, settings)
        return GeminiAdapter.model_for(ctx)

    assert model("gemini-x", "low") == "gemini-x"
    assert model("fast", "high") == "gemini-2.5-flash-lite"
    assert model("strong", "low", models={"strong": "big"}) == "big"
    assert model(None, "low") == "gemini-2.5-flash-lite"
    assert model(None, "medium") == "gemini-2.5-flash"
    assert model(None, "high") == "gemini-2.5-pro"
    assert model(None, "high", model="fixed") == "fixed"


def test_errors_are_classified_from_stderr_and_the_exit_code() -> None:
    adapter = GeminiAdapter()

    def decide(exit_code: int, *stderr: str) -> AgentResult:
        events = [event for line in stderr for event in adapter.parse_line(line, "stderr")]
        return adapter.decide(exit_code, False, events)

    assert decide(144).outcome is Outcome.API_ERROR  # 400 mod 256
    assert "HTTP 400" in decide(144).reason
    assert decide(244).outcome is Outcome.API_ERROR  # 500
    limited = decide(173, "Suggested retry after 2s.. Max attempts reached", "  status: 429")
    assert limited.outcome is Outcome.RATE_LIMITED
    assert limited.retry_after == 2.0
    assert decide(1, "  retryDelayMs: 1500,", "  status: 429").retry_after == 1.5
    assert decide(1, '_ApiError: {"error":{"code":503,"status":"UNAVAILABLE"}}').outcome is (
        Outcome.API_ERROR
    )
    assert decide(41).outcome is Outcome.API_ERROR
    assert decide(1).outcome is Outcome.FAILED
    assert decide(0).outcome is Outcome.FAILED  # exit 0 without a result is not success


# ------------------------------------------------------------------------ against the CLI


def test_creates_a_new_file(gemini_bin: Path, worktree: Path) -> None:
    target = worktree / "hello.py"
    script = [
        Step(tool_calls=[ToolCall("write_file", {"file_path": str(target), "content": "hi\n"})]),
        Step(text="Created hello.py."),
    ]
    with FakeModelServer(script) as server:
        ran = run(context(worktree, server, prompt="Create hello.py\n" + "Context. " * 20_000))
        requests = generate_requests(server)
    assert ran.result.outcome is Outcome.SUCCESS, ran.log[-3000:]
    assert target.read_text() == "hi\n"
    assert [r.step for r in requests] == [0, 1]
    assert "Context. " * 20_000 in json.dumps(requests[0].body)  # the long prompt, via stdin
    assert {"path": str(target), "tool": "write_file"} in kinds(ran.events, "file")
    assert text(ran.events) == "Created hello.py."
    assert "hello.py" in git(worktree, "status", "--porcelain")
    # the model the CLI says it runs on (its init event) is the one the server was asked for
    model = reported_model(ran.events)
    assert model and f"/models/{model}:" in requests[0].path


def test_edits_an_existing_file(gemini_bin: Path, worktree: Path) -> None:
    target = worktree / "greet.py"
    edit = {
        "file_path": str(target),
        "instruction": "Say goodbye.",  # required by Gemini CLI 0.61's replace tool
        "old_string": "hello",
        "new_string": "goodbye",
    }
    script = [
        Step(tool_calls=[ToolCall("read_file", {"file_path": str(target)})]),
        Step(tool_calls=[ToolCall("replace", edit)]),
        Step(text="Edited greet.py."),
    ]
    with FakeModelServer(script) as server:
        ran = run(context(worktree, server))
    assert ran.result.outcome is Outcome.SUCCESS, ran.log[-3000:]
    assert target.read_text() == "print('goodbye')\n"
    assert [d["name"] for d in kinds(ran.events, "tool")] == ["read_file", "replace"]
    assert kinds(ran.events, "file") == [{"path": str(target), "tool": "replace"}]


def test_a_failed_edit_changes_no_file(gemini_bin: Path, worktree: Path) -> None:
    target = worktree / "greet.py"
    edit = {"file_path": str(target), "instruction": "x", "old_string": "nope", "new_string": "y"}
    script = [Step(tool_calls=[ToolCall("replace", edit)]), Step(text="Could not edit.")]
    with FakeModelServer(script) as server:
        ran = run(context(worktree, server))
    assert ran.result.outcome is Outcome.SUCCESS, ran.log[-3000:]  # the model chose to stop
    assert target.read_text() == "print('hello')\n"
    assert kinds(ran.events, "file") == []
    assert [d for d in kinds(ran.events, "text") if d.get("level") == "warning"]


def test_http_400_is_an_api_error(gemini_bin: Path, worktree: Path) -> None:
    with FakeModelServer([Step(http_error=HttpError(400))]) as server:
        ran = run(context(worktree, server))
        statuses = [r.status for r in generate_requests(server)]
    assert ran.exit_code == 144  # the HTTP status mod 256
    assert ran.result.outcome is Outcome.API_ERROR, ran.log[-3000:]
    assert "HTTP 400" in ran.result.reason and "Bad request" in ran.result.reason
    assert ran.result.outcome.counts_as_failure
    assert statuses == [400]


def google_quota(per: str, retry: str) -> dict[str, Any]:
    """Google's 429 RESOURCE_EXHAUSTED body for a free-tier quota ``per`` Day or Minute."""
    violation = {
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": f"GenerateRequestsPer{per}PerProjectPerModel-FreeTier",
        "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
        "quotaValue": "250",
    }
    return {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota, please check your plan and billing "
            "details.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry},
            ],
        }
    }


def test_a_used_up_daily_quota_is_out_of_credit(gemini_bin: Path, worktree: Path) -> None:
    """Gemini CLI calls a used-up daily quota a TerminalQuotaError; a per-minute one stays a
    rate limit to retry."""
    daily = Step(http_error=HttpError(429, body=google_quota("Day", "32s")))
    with FakeModelServer([daily]) as server:
        ran = run(context(worktree, server))
    assert ran.result.outcome is Outcome.OUT_OF_CREDIT, ran.log[-3000:]
    assert "daily quota" in ran.result.reason
    minute = Step(http_error=HttpError(429, body=google_quota("Minute", "1s")))
    with FakeModelServer([minute]) as server:
        ran = run(context(worktree, server, settings={"max_attempts": 1}))
    assert ran.result.outcome is Outcome.RATE_LIMITED, ran.log[-3000:]


def test_http_429_is_rate_limited_with_retry_after(gemini_bin: Path, worktree: Path) -> None:
    with FakeModelServer([Step(http_error=HttpError(429, retry_after=2))]) as server:
        ran = run(context(worktree, server, settings={"max_attempts": 1}))
        statuses = [r.status for r in generate_requests(server)]
    assert ran.exit_code == 173  # 429 mod 256
    assert ran.result.outcome is Outcome.RATE_LIMITED, ran.log[-3000:]
    assert ran.result.retry_after == pytest.approx(2.0)
    assert not ran.result.outcome.counts_as_failure
    assert statuses == [429]


def test_a_429_retried_by_the_cli_then_answered_is_a_success(
    gemini_bin: Path, worktree: Path
) -> None:
    script = [Step(text="Fine.", http_error=HttpError(429, retry_after=0.1, times=1))]
    with FakeModelServer(script) as server:
        ran = run(context(worktree, server))  # the default: 2 attempts per request
        statuses = [r.status for r in generate_requests(server)]
    assert ran.result.outcome is Outcome.SUCCESS, ran.log[-3000:]
    assert statuses == [429, 200]


def test_tokens_match_the_scripted_usage(gemini_bin: Path, worktree: Path) -> None:
    target = worktree / "a.txt"
    script = [
        Step(
            tool_calls=[ToolCall("write_file", {"file_path": str(target), "content": "a\n"})],
            usage=Usage(input_tokens=1000, output_tokens=50, cached_tokens=600),
        ),
        Step(text="Done.", usage=Usage(input_tokens=1200, output_tokens=10, cached_tokens=900)),
    ]
    with FakeModelServer(script) as server:
        ran = run(context(worktree, server))
    assert ran.result.outcome is Outcome.SUCCESS, ran.log[-3000:]
    # Gemini CLI sums the turns; input_tokens is the whole prompt, cached included.
    assert ran.result.usage == {"input_tokens": 2200, "output_tokens": 60, "cached_tokens": 1500}
    assert ran.result.cost_usd is None


def test_a_hang_is_killed_at_the_timeout(gemini_bin: Path, worktree: Path) -> None:
    with FakeModelServer([Step(hang=True)]) as server:
        ctx = context(worktree, server, timeout=5)
        ran = run(ctx)
        assert processes_with_token(ctx.env[TOKEN_VAR]) == []
        assert [r.status for r in generate_requests(server)] == [None]  # it was waiting on us
    assert ran.result.outcome is Outcome.TIMED_OUT
    assert ran.exit_code is None
    assert ran.duration < 15


def test_reaches_no_address_but_the_server(gemini_bin: Path, worktree: Path) -> None:
    """Every route but loopback goes through a proxy that forwards nothing and records all."""
    target = worktree / "net.txt"
    script = [
        Step(tool_calls=[ToolCall("write_file", {"file_path": str(target), "content": "ok\n"})]),
        Step(text="Done."),
    ]
    with FakeModelServer(script) as server, RecordingProxy() as proxy:
        no_proxy = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        ran = run(context(worktree, server, extra_env={**proxy_env(proxy.url), **no_proxy}))
        seen = [(r.method, r.endpoint, r.status, r.step) for r in server.requests]
    assert ran.result.outcome is Outcome.SUCCESS, ran.log[-3000:]
    assert target.read_text() == "ok\n"
    assert seen == [("POST", "generate", 200, 0), ("POST", "generate", 200, 1)]
    assert proxy.seen == [], f"gemini tried to reach something besides the server: {proxy.seen}"


# --------------------------------------------------------------------------- end to end

E2E_PLAN = two_task_plan("gemini-pair", "gemini", "write")

E2E_CONFIG = f"""\
env = ["GOOGLE_GEMINI_BASE_URL", "GEMINI_API_KEY"]
[agents.gemini]
command = "{GEMINI}"
model = "{MODEL}"
"""


def test_stretto_run_two_gemini_tasks_land(
    gemini_bin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stretto run`` with two gemini steps in parallel, both landing on main; the repository's
    config is left byte-identical (the user's identity is in ``~/.gitconfig`` only)."""
    from click.testing import CliRunner

    from stretto import agents
    from stretto.frontends.cli import main

    monkeypatch.setitem(agents.BUILTIN, "gemini", "stretto.agents.gemini:GeminiAdapter")
    repo = make_repo(tmp_path / "repo", {"README.md": "# demo\n", "stretto.toml": E2E_CONFIG})
    plan = tmp_path / "plan.yaml"
    plan.write_text(E2E_PLAN)
    home = tmp_path / "home"
    config = identity_in_home_only(repo, home)
    # Each agent writes $STRETTO_TASK_ID.txt, so one script serves both conversations.
    script = [
        Step(tool_calls=[ToolCall("run_shell_command", {"command": WRITE_TASK_FILE})]),
        Step(text="Wrote it."),
    ]
    with FakeModelServer(script) as server:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.env()["GOOGLE_GEMINI_BASE_URL"])
        monkeypatch.setenv("GEMINI_API_KEY", "fake")
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
