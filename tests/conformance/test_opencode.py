"""Conformance of the ``opencode`` adapter against the real opencode CLI and the fake model.

Nothing is mocked: the pinned CLI from ``.tools/npm`` (``scripts/install-agents``) runs in a
real git repository, talks to :class:`FakeModelServer` on 127.0.0.1, and its output goes through
the adapter's ``parse_line`` and ``decide`` exactly as the runner feeds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from _support import (
    NPM_BIN,
    WRITE_TASK_FILE,
    Ran,
    RecordingProxy,
    bare_context,
    committed_project,
    generate_requests,
    greet_repo,
    identity_in_home_only,
    kinds,
    make_task,
    no_identity_env,
    path_with,
    proxy_env,
    repo_context,
    require_cli,
    run_attempt,
    two_task_plan,
)
from click.testing import CliRunner

from stretto.agents import AgentResult, Outcome
from stretto.agents.opencode import OpencodeAdapter
from stretto.process import processes_with_token
from stretto.testing.fakemodel import FakeModelServer, HttpError, Step, ToolCall, Usage
from stretto.testing.repo import git

OPENCODE = NPM_BIN / "opencode"
TASK = make_task(agent="opencode")


@pytest.fixture(scope="module", autouse=True)
def opencode_installed() -> None:
    require_cli(OPENCODE)


def write_step(path: Path, content: str, usage: Usage | None = None) -> Step:
    """A step that calls opencode's ``write`` tool (camelCase arguments)."""
    return Step(
        tool_calls=[ToolCall("write", {"filePath": str(path), "content": content})], usage=usage
    )


def run_opencode(
    repo: Path,
    server: FakeModelServer,
    *,
    timeout: float = 60.0,
    extra_env: Mapping[str, str] | None = None,
    prompt: str = "Do the task.",
    settings: Mapping[str, object] | None = None,
) -> Ran:
    ctx = repo_context(
        repo, server, TASK, timeout=timeout, extra_env=extra_env, prompt=prompt, settings=settings
    )
    return run_attempt(OpencodeAdapter(), ctx)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return greet_repo(tmp_path)


def test_creates_a_new_file(repo: Path) -> None:
    script = [write_step(repo / "hello.py", "print('hi')\n"), Step(text="Created hello.py.")]
    with FakeModelServer(script) as server:
        run = run_opencode(repo, server, prompt="Create hello.py")
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert (repo / "hello.py").read_text() == "print('hi')\n"
    assert {"path": str(repo / "hello.py"), "change": "add"} in kinds(run.events, "file")
    assert {"text": "Created hello.py."} in kinds(run.events, "text")
    assert "hello.py" in git(repo, "status", "--porcelain")


def test_a_long_prompt_goes_through_stdin(repo: Path) -> None:
    with FakeModelServer([Step(text="Read it.")]) as server:
        run = run_opencode(repo, server, prompt="Do the task.\n" + "x" * 200_000)
        body = server.requests[0].body
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert "x" * 200_000 in str(body)


def test_edits_an_existing_file(repo: Path) -> None:
    path = str(repo / "greet.py")
    script = [
        # opencode refuses to edit a file the session has not read.
        Step(tool_calls=[ToolCall("read", {"filePath": path})]),
        Step(
            tool_calls=[
                ToolCall(
                    "edit",
                    {"filePath": path, "oldString": "'hello'", "newString": "'hello, world'"},
                )
            ]
        ),
        Step(text="Edited greet.py."),
    ]
    with FakeModelServer(script) as server:
        run = run_opencode(repo, server)
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert (repo / "greet.py").read_text() == "print('hello, world')\n"
    assert {"path": path, "change": "update"} in kinds(run.events, "file")


def test_http_400_is_an_api_error(repo: Path) -> None:
    with FakeModelServer([Step(http_error=HttpError(400))]) as server:
        run = run_opencode(repo, server)
        statuses = [r.status for r in generate_requests(server)]
    assert run.result.outcome is Outcome.API_ERROR, run.result.reason
    assert "HTTP 400" in run.result.reason and "Bad request" in run.result.reason
    assert run.result.exit_code == 1
    assert statuses == [400]


def test_http_429_is_rate_limited(repo: Path) -> None:
    # opencode retries a 429 itself (honouring retry-after) before giving up: keep the wait short.
    with FakeModelServer([Step(http_error=HttpError(429, retry_after=0.2))]) as server:
        run = run_opencode(repo, server)
    assert run.result.outcome is Outcome.RATE_LIMITED, run.result.reason
    assert run.result.retry_after == 0.2
    assert not run.result.outcome.counts_as_failure


def test_tokens_and_dollars_match_the_scripted_usage(repo: Path) -> None:
    script = [
        write_step(repo / "a.txt", "a\n", usage=Usage(1200, 40, 1000)),
        Step(text="Done.", usage=Usage(1500, 25, 1100)),
    ]
    prices = {"input": 2.0, "output": 10.0, "cache_read": 0.5}  # USD per million tokens
    with FakeModelServer(script) as server:
        run = run_opencode(repo, server, settings={"cost": prices})
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert run.result.usage["input_tokens"] == 2700
    assert run.result.usage["cached_input_tokens"] == 2100
    assert run.result.usage["output_tokens"] == 65
    uncached, cached, output = 2700 - 2100, 2100, 65
    expected = (uncached * 2.0 + cached * 0.5 + output * 10.0) / 1_000_000
    assert run.result.cost_usd == pytest.approx(expected)


def test_no_prices_means_no_dollars(repo: Path) -> None:
    with FakeModelServer([Step(text="Done.", usage=Usage(100, 5, 0))]) as server:
        run = run_opencode(repo, server)
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert run.result.usage["input_tokens"] == 100
    assert run.result.cost_usd is None


def test_a_write_outside_the_worktree_is_permission_denied(repo: Path) -> None:
    outside = repo.parent / "outside.txt"
    with FakeModelServer([write_step(outside, "no\n"), Step(text="Done.")]) as server:
        run = run_opencode(repo, server)
    assert run.result.outcome is Outcome.PERMISSION_DENIED, run.result.reason
    assert run.result.exit_code == 0  # opencode itself reports success
    assert not outside.exists()


def test_a_hang_is_killed_at_the_timeout(repo: Path) -> None:
    with FakeModelServer([Step(hang=True)]) as server:
        run = run_opencode(repo, server, timeout=8.0)
        assert run.result.outcome is Outcome.TIMED_OUT
        assert processes_with_token(run.token) == []
    assert run.duration < 25


def test_reaches_no_address_but_the_scripted_server(repo: Path) -> None:
    script = [write_step(repo / "net.txt", "ok\n"), Step(text="Done.")]
    with FakeModelServer(script) as server, RecordingProxy() as proxy:
        no_proxy = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        run = run_opencode(repo, server, extra_env={**proxy_env(proxy.url), **no_proxy})
        requests = list(server.requests)
    seen = proxy.seen
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert (repo / "net.txt").read_text() == "ok\n"
    # Without the seeded config folder opencode would `CONNECT registry.npmjs.org:443` here.
    assert seen == [], f"opencode tried to reach something besides the scripted server: {seen!r}"
    assert [(r.endpoint, r.step) for r in requests] == [("generate", 0), ("generate", 1)]


E2E_PLAN = two_task_plan("opencode-pair", "opencode", "create")
E2E_CONFIG = (
    'env = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]\n\n[agents.opencode]\nmodel = "fake-model"\n'
)


def test_stretto_run_with_two_opencode_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stretto.agents
    from stretto.frontends.cli import main

    monkeypatch.setitem(
        stretto.agents.BUILTIN, "opencode", "stretto.agents.opencode:OpencodeAdapter"
    )
    project = committed_project(tmp_path, E2E_PLAN, E2E_CONFIG)
    config = identity_in_home_only(project, tmp_path / "user-home")  # and none in the repo
    # Both tasks share one session (each conversation starts at step 0), so the scripted command
    # writes the file named after the task it runs in.
    args = {"command": WRITE_TASK_FILE, "description": "write the file"}
    script = [Step(tool_calls=[ToolCall("bash", args)]), Step(text="Done.")]
    with FakeModelServer(script) as server:
        monkeypatch.chdir(project)
        monkeypatch.setenv("OPENAI_BASE_URL", server.env()["OPENAI_BASE_URL"])
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        monkeypatch.setenv("PATH", path_with(NPM_BIN))
        monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
        no_identity_env(monkeypatch)
        result = CliRunner().invoke(main, ["run", "plan.yaml"], catch_exceptions=False)
        generated = generate_requests(server)
    assert result.exit_code == 0, result.output
    assert git(project, "show", "HEAD:alpha.txt") == "alpha\n"
    assert git(project, "show", "HEAD:beta.txt") == "beta\n"
    assert len(generated) == 4
    assert (project / ".git" / "config").read_bytes() == config


def test_model_comes_from_the_step_then_the_tier_map(tmp_path: Path) -> None:
    tiers = {"fast": "mini", "balanced": "mid", "strong": "big"}

    def model(step_model: str | None, complexity: str, **settings: object) -> str:
        ctx = bare_context(replace(TASK, complexity=complexity), tmp_path, step_model, settings)
        return OpencodeAdapter.model_for(ctx)

    assert model("gpt-x", "low", models=tiers) == "gpt-x"
    assert model("strong", "low", models=tiers) == "big"
    assert model(None, "low", models=tiers) == "mini"
    assert model(None, "high", models=tiers, model="fixed") == "big"
    assert model(None, "medium", model="fixed") == "fixed"


def test_the_generated_config_keeps_the_key_out_of_the_file(tmp_path: Path) -> None:
    env = {"PATH": str(NPM_BIN), "OPENAI_API_KEY": "sk-secret", "OPENAI_BASE_URL": "http://gw/v1"}
    settings = {"env_key": "OPENAI_API_KEY"}
    ctx = bare_context(TASK, tmp_path, "m", settings, env=env, log_dir=tmp_path / "log")
    launch = OpencodeAdapter().build(ctx)
    config = Path(launch.env["OPENCODE_CONFIG"]).read_text()
    assert "sk-secret" not in config
    assert "{env:OPENAI_API_KEY}" in config and "http://gw/v1" in config
    assert launch.env["HOME"].startswith(str(tmp_path / "log"))
    assert list(launch.argv)[-2:] == ["--", "p"]


def test_errors_are_classified_from_opencode_events() -> None:
    adapter = OpencodeAdapter()

    def decide(*lines: str, exit_code: int = 1) -> AgentResult:
        events = [event for line in lines for event in adapter.parse_line(line, "stdout")]
        return adapter.decide(exit_code, False, events)

    limited = decide(
        '{"type":"error","error":{"name":"APIError","data":{"message":"slow down",'
        '"statusCode":429,"responseHeaders":{"retry-after":"3"}}}}'
    )
    assert limited.outcome is Outcome.RATE_LIMITED
    assert limited.retry_after == 3.0
    # What opencode prints for OpenAI's insufficient_quota 429 (probed against the server).
    body = (
        '{\\"error\\":{\\"message\\":\\"You exceeded your current quota\\",'
        '\\"type\\":\\"insufficient_quota\\",\\"code\\":\\"insufficient_quota\\"}}'
    )
    no_credit = decide(
        '{"type":"error","error":{"name":"APIError","data":{"message":"You exceeded your '
        'current quota, please check your plan and billing details.","statusCode":429,'
        f'"isRetryable":true,"responseHeaders":{{}},"responseBody":"{body}"}}}}}}'
    )
    assert no_credit.outcome is Outcome.OUT_OF_CREDIT
    assert "exceeded your current quota" in no_credit.reason
    server = decide('{"type":"error","error":{"name":"APIError","data":{"statusCode":500}}}')
    assert server.outcome is Outcome.API_ERROR
    own = decide('{"type":"error","error":{"name":"UnknownError","data":{"message":"boom"}}}')
    assert own.outcome is Outcome.FAILED and "boom" in own.reason
    denied = decide(
        '{"type":"tool_use","part":{"tool":"write","state":{"status":"error",'
        '"error":"The user rejected permission to use this specific tool call."}}}',
        '{"type":"step_finish","part":{"reason":"stop","tokens":{"input":1,"output":1}}}',
        exit_code=0,
    )
    assert denied.outcome is Outcome.PERMISSION_DENIED
    assert decide("not json", exit_code=0).outcome is Outcome.FAILED
