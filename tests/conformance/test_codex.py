"""Conformance of the ``codex`` adapter against the real Codex CLI and the scripted model server.

Nothing is mocked: the pinned CLI from ``.tools/npm`` (``scripts/install-agents``) runs in a
real git repository, talks to :class:`FakeModelServer` on 127.0.0.1, and its output goes through
the adapter's ``parse_line`` and ``decide`` exactly as the runner feeds them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from _support import (
    NPM_BIN,
    OPENAI_NO_CREDIT,
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
    setenv_all,
    two_task_plan,
)
from click.testing import CliRunner

from stretto.agents import AgentResult, Outcome
from stretto.agents.codex import CodexAdapter
from stretto.process import processes_with_token
from stretto.routing.ledger import Ledger
from stretto.testing.fakemodel import FakeModelServer, HttpError, Step, ToolCall, Usage
from stretto.testing.repo import IDENTITY, git

CODEX = NPM_BIN / "codex"
TASK = make_task(agent="codex")


@pytest.fixture(scope="module", autouse=True)
def codex_installed() -> None:
    require_cli(CODEX)


def patch_step(*lines: str, usage: Usage | None = None) -> Step:
    """A step that runs ``apply_patch`` through codex's ``exec_command`` tool."""
    patch = "\n".join(["*** Begin Patch", *lines, "*** End Patch"])
    cmd = f"apply_patch <<'PATCH'\n{patch}\nPATCH\n"
    return Step(tool_calls=[ToolCall("exec_command", {"cmd": cmd})], usage=usage)


def run_codex(
    repo: Path,
    server: FakeModelServer,
    *,
    timeout: float = 30.0,
    extra_env: Mapping[str, str] | None = None,
    prompt: str = "Do the task.",
) -> Ran:
    ctx = repo_context(repo, server, TASK, timeout=timeout, extra_env=extra_env, prompt=prompt)
    return run_attempt(CodexAdapter(), ctx)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return greet_repo(tmp_path)


def test_creates_a_new_file(repo: Path) -> None:
    script = [patch_step("*** Add File: hello.py", "+print('hi')"), Step(text="Created hello.py.")]
    with FakeModelServer(script) as server:
        run = run_codex(repo, server, prompt="Create hello.py")
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert (repo / "hello.py").read_text() == "print('hi')\n"
    assert {"path": str(repo / "hello.py"), "change": "add"} in kinds(run.events, "file")
    assert {"text": "Created hello.py."} in kinds(run.events, "text")
    assert "hello.py" in git(repo, "status", "--porcelain")


def test_a_long_prompt_goes_through_stdin(repo: Path) -> None:
    with FakeModelServer([Step(text="Read it.")]) as server:
        run = run_codex(repo, server, prompt="Do the task.\n" + "x" * 200_000)
        body = server.requests[0].body
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert "x" * 200_000 in str(body)


def test_edits_an_existing_file(repo: Path) -> None:
    script = [
        patch_step("*** Update File: greet.py", "@@", "-print('hello')", "+print('hello, world')"),
        Step(text="Edited greet.py."),
    ]
    with FakeModelServer(script) as server:
        run = run_codex(repo, server)
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert (repo / "greet.py").read_text() == "print('hello, world')\n"
    assert {"path": str(repo / "greet.py"), "change": "update"} in kinds(run.events, "file")


def test_http_400_is_an_api_error(repo: Path) -> None:
    with FakeModelServer([Step(http_error=HttpError(400))]) as server:
        run = run_codex(repo, server)
        statuses = [r.status for r in generate_requests(server)]
    assert run.result.outcome is Outcome.API_ERROR
    # the provider's message, not the JSON body codex passes on (issue 21)
    assert run.result.reason == (
        "invalid_request_error: Bad request (scripted error from stretto's fake model server)"
    )
    assert statuses == [400]


def test_http_429_is_rate_limited(repo: Path) -> None:
    with FakeModelServer([Step(http_error=HttpError(429, retry_after=2))]) as server:
        run = run_codex(repo, server)
    assert run.result.outcome is Outcome.RATE_LIMITED, run.result.reason
    assert not run.result.outcome.counts_as_failure


def test_insufficient_quota_is_out_of_credit_not_a_rate_limit(repo: Path) -> None:
    """OpenAI answers 429 for both; codex says "Quota exceeded. Check your plan and billing
    details." for an account out of credit, which no retry will fix."""
    with FakeModelServer([Step(http_error=HttpError(429, body=OPENAI_NO_CREDIT))]) as server:
        run = run_codex(repo, server)
        assert len(generate_requests(server)) == 1
    assert run.result.outcome is Outcome.OUT_OF_CREDIT, run.result.reason
    assert "Quota exceeded" in run.result.reason
    assert not run.result.outcome.counts_as_failure


CREDIT_PLAN = """\
name: credit
stages:
  - name: work
    steps:
      - {id: alpha, goal: create alpha.txt, files: [alpha.txt], agent: codex}
      - {id: beta, goal: write beta, files: [beta.txt], agent: shell, command: echo beta > beta.txt}
"""


def test_a_run_stops_using_a_provider_out_of_credit_and_resume_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One refusal is enough: the codex task is not retried ten times, other agents go on, the
    run ends ``out_of_credit`` (exit 1) with the fix, and ``stretto resume`` lands the task."""
    from stretto.engine.runs import run_status
    from stretto.frontends.cli import main

    project = committed_project(tmp_path, CREDIT_PLAN, E2E_CONFIG)
    monkeypatch.chdir(project)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    monkeypatch.setenv("PATH", path_with(NPM_BIN))
    setenv_all(monkeypatch, IDENTITY)
    with FakeModelServer([Step(http_error=HttpError(429, body=OPENAI_NO_CREDIT))]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.env()["OPENAI_BASE_URL"])
        result = CliRunner().invoke(main, ["run", "plan.yaml", "--plain"], catch_exceptions=False)
        refused = generate_requests(server)
    assert result.exit_code == 1, result.output
    assert len(refused) == 1
    state = run_status(project)
    assert state.state == "out_of_credit"
    assert (state.tasks["alpha"].state, state.tasks["beta"].state) == ("skipped", "landed")
    assert "out of credit (openai: Quota exceeded" in state.tasks["alpha"].reason
    assert f"stretto resume {state.run_id}" in result.output
    status = CliRunner().invoke(main, ["status"], catch_exceptions=False)
    assert "a provider is out of credit" in status.output

    script = [Step(tool_calls=[ToolCall("exec_command", {"cmd": WRITE_TASK_FILE})]), Step("Done.")]
    with FakeModelServer(script) as server:  # the account was topped up
        monkeypatch.setenv("OPENAI_BASE_URL", server.env()["OPENAI_BASE_URL"])
        resumed = CliRunner().invoke(main, ["resume", "--plain"], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    assert git(project, "show", "HEAD:alpha.txt") == "alpha\n"
    assert git(project, "show", "HEAD:beta.txt") == "beta\n"
    assert run_status(project).state == "finished"


def test_tokens_match_the_scripted_usage(repo: Path) -> None:
    script = [
        patch_step("*** Add File: a.txt", "+a", usage=Usage(1200, 40, 1000)),
        Step(text="Done.", usage=Usage(1500, 25, 1100)),
    ]
    with FakeModelServer(script) as server:
        run = run_codex(repo, server)
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert run.result.usage["input_tokens"] == 2700
    assert run.result.usage["cached_input_tokens"] == 2100
    assert run.result.usage["output_tokens"] == 65
    assert run.result.cost_usd is None


def test_a_hang_is_killed_at_the_timeout(repo: Path) -> None:
    with FakeModelServer([Step(hang=True)]) as server:
        run = run_codex(repo, server, timeout=3.0)
        assert run.result.outcome is Outcome.TIMED_OUT
        assert processes_with_token(run.token) == []
    assert run.duration < 15


def test_reaches_no_address_but_the_scripted_server(repo: Path) -> None:
    script = [patch_step("*** Add File: net.txt", "+ok"), Step(text="Done.")]
    with FakeModelServer(script) as server, RecordingProxy() as proxy:
        no_proxy = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        run = run_codex(repo, server, extra_env={**proxy_env(proxy.url), **no_proxy})
        requests = list(server.requests)
    seen = proxy.seen
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert (repo / "net.txt").read_text() == "ok\n"
    assert seen == [], f"codex tried to reach something besides the scripted server: {seen!r}"
    assert [(r.endpoint, r.step) for r in requests] == [("generate", 0), ("generate", 1)]


E2E_PLAN = two_task_plan("codex-pair", "codex", "create")
E2E_CONFIG = 'env = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]\n\n[agents.codex]\nmodel = "fake-model"\n'
NO_MODEL_CONFIG = 'env = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]\n'


def test_stretto_run_with_two_codex_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two codex tasks with no model named anywhere land; issue 21: the ledger records the model
    codex was given (its adapter's default, which the server saw), priced, not ``null`` at an
    unknown price; ``stretto cost`` says both landed; the repository's config is untouched."""
    from stretto.frontends.cli import main

    project = committed_project(tmp_path, E2E_PLAN, NO_MODEL_CONFIG)
    config = identity_in_home_only(project, tmp_path / "user-home")
    # Both tasks share one session (each conversation starts at step 0), so the scripted command
    # writes the file named after the task it runs in.
    script = [
        Step(
            tool_calls=[ToolCall("exec_command", {"cmd": WRITE_TASK_FILE})],
            usage=Usage(10_000, 500, 2_000),
        ),
        Step(text="Done.", usage=Usage(11_000, 20, 9_000)),
    ]
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
    asked = {r.body.get("model") for r in generated}
    assert asked == {"gpt-5.1-codex"}
    entries = Ledger.for_repo(project).entries()
    assert [(e.model, e.source) for e in entries] == [("gpt-5.1-codex", "priced")] * 2
    assert all(e.cost_usd and e.cost_usd > 0 for e in entries)
    cost = CliRunner().invoke(main, ["cost", "--json"], catch_exceptions=False)
    total = json.loads(cost.output)["total"]
    assert (total["attempts"], total["landed"], total["unknown"]) == (2, 2, 0)


BUDGET_CONFIG = (
    'max_agents = 1\nenv = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]\n[budget]\nrun = 0.5\n'
    '[agents.codex]\nmodel = "fake-model"\n'
)


def test_spend_of_unknown_price_counts_against_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21: tokens of a model no price table knows counted $0, so a budget never stopped
    them. They now count at OpenAI's most expensive known price: 10,000 input tokens are over
    $1 there, past the $0.50 budget, so the second task never starts."""
    from stretto.engine.runs import run_status
    from stretto.frontends.cli import main

    project = committed_project(tmp_path, E2E_PLAN, BUDGET_CONFIG)
    monkeypatch.chdir(project)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
    monkeypatch.setenv("PATH", path_with(NPM_BIN))
    setenv_all(monkeypatch, IDENTITY)
    script = [Step(text="Nothing to change.", usage=Usage(10_000, 100, 0))]
    with FakeModelServer(script) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.env()["OPENAI_BASE_URL"])
        result = CliRunner().invoke(main, ["run", "plan.yaml", "--plain"], catch_exceptions=False)
        generated = generate_requests(server)
    assert len(generated) == 1, result.output
    assert run_status(project).state == "budget_reached"
    (entry,) = Ledger.for_repo(project).entries()
    assert (entry.model, entry.source, entry.cost_usd) == ("fake-model", "unknown", None)
    assert entry.bound_usd == pytest.approx(10_000 * 150e-6 + 100 * 600e-6)  # o1-pro's price
    assert "budget reached: $1.56 of the $0.50 run budget spent" in result.output
    cost = CliRunner().invoke(main, ["cost"], catch_exceptions=False)
    assert "budgets counted them at $1.56" in cost.output


def test_model_comes_from_the_step_then_the_tier_map(tmp_path: Path) -> None:
    tiers = {"fast": "mini", "balanced": "mid", "strong": "big"}

    def model(step_model: str | None, complexity: str, **settings: object) -> str:
        ctx = bare_context(replace(TASK, complexity=complexity), tmp_path, step_model, settings)
        return CodexAdapter.model_for(ctx)

    assert model("gpt-x", "low", models=tiers) == "gpt-x"
    assert model("strong", "low", models=tiers) == "big"
    assert model(None, "low", models=tiers) == "mini"
    assert model(None, "high", models=tiers, model="fixed") == "big"
    assert model(None, "medium", model="fixed") == "fixed"


def test_errors_are_classified_from_codex_messages() -> None:
    adapter = CodexAdapter()

    def decide(*lines: str) -> AgentResult:
        events = [event for line in lines for event in adapter.parse_line(line, "stdout")]
        return adapter.decide(1, False, events)

    no_credit = decide(
        '{"type":"error","message":"Quota exceeded. Check your plan and billing details."}'
    )
    assert no_credit.outcome is Outcome.OUT_OF_CREDIT
    limited = decide('{"type":"error","message":"Rate limit reached. Please try again in 1.5s."}')
    assert limited.outcome is Outcome.RATE_LIMITED
    assert limited.retry_after == 1.5
    timeout = decide('{"type":"turn.failed","error":{"message":"request timed out"}}')
    assert timeout.outcome is Outcome.TIMED_OUT
    warning = '{"type":"item.completed","item":{"type":"error","message":"metadata"}}'
    assert decide(warning).outcome is Outcome.FAILED
