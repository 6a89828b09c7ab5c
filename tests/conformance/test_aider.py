"""Conformance of the ``aider`` adapter against the real aider and the scripted model server.

Nothing is mocked: the pinned aider from ``.tools/aider`` (``scripts/install-agents``) runs in a
real git repository, talks to :class:`FakeModelServer` on 127.0.0.1 through LiteLLM's OpenAI
client, and its output goes through the adapter's ``parse_line`` and ``decide`` exactly as the
runner feeds them. aider's venv is named by ``command`` in the settings rather than put on PATH,
so its ``python`` never shadows anyone else's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from _support import (
    AIDER,
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
    proxy_env,
    repo_context,
    require_cli,
    run_attempt,
    two_task_plan,
)
from click.testing import CliRunner

import stretto.agents
from stretto.agents import AgentResult, Outcome
from stretto.agents.aider import AiderAdapter
from stretto.plans.plan import Task
from stretto.process import processes_with_token
from stretto.testing.fakemodel import FakeModelServer, HttpError, Script, Step, Usage
from stretto.testing.fakemodel.script import Match, Rule
from stretto.testing.repo import git

TASK = make_task(agent="aider")
METADATA = {
    "max_input_tokens": 128000,
    "max_output_tokens": 4096,
    "input_cost_per_token": 1e-6,
    "output_cost_per_token": 2e-6,
}


@pytest.fixture(scope="module", autouse=True)
def aider_installed() -> None:
    require_cli(AIDER)


def whole(path: str, content: str, usage: Usage | None = None) -> Step:
    """A reply in aider's ``whole`` edit format: the file name, then the whole file fenced."""
    return Step(text=f"{path}\n```\n{content}```\n", usage=usage)


def run_aider(
    repo: Path,
    server: FakeModelServer,
    *,
    timeout: float = 30.0,
    extra_env: Mapping[str, str] | None = None,
    prompt: str = "Do the task.",
    task: Task = TASK,
    **settings: Any,
) -> Ran:
    settings = {
        "command": str(AIDER),
        "edit_format": "whole",
        "model_metadata": METADATA,
        **settings,
    }
    ctx = repo_context(
        repo,
        server,
        task,
        timeout=timeout,
        extra_env=extra_env,
        prompt=prompt,
        settings={k: v for k, v in settings.items() if v is not None},
        bin_dir=None,  # aider is named by ``command``: its venv stays off PATH
    )
    return run_attempt(AiderAdapter(), ctx)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return greet_repo(tmp_path)


@dataclass
class Created:
    run: Ran
    repo: Path
    generated: int


@pytest.fixture(scope="module")
def created(tmp_path_factory: pytest.TempPathFactory) -> Created:
    """One real run shared by checks 1 and 5 (each aider start costs ~5 s of imports)."""
    repo = greet_repo(tmp_path_factory.mktemp("created"))
    with FakeModelServer([whole("hello.py", "print('hi')\n", usage=Usage(1200, 40, 0))]) as server:
        run = run_aider(repo, server, prompt="Create hello.py")
        generated = generate_requests(server)
    return Created(run, repo, len(generated))


def test_creates_a_new_file(created: Created) -> None:
    run, repo = created.run, created.repo
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert (repo / "hello.py").read_text() == "print('hi')\n"
    assert {"path": "hello.py", "change": "edit"} in kinds(run.events, "file")
    assert "hello.py" in git(repo, "status", "--porcelain")
    assert git(repo, "log", "--oneline").count("\n") == 1  # aider committed nothing
    assert created.generated == 1  # no commit-message request


def test_edits_an_existing_file_in_diff_format(repo: Path) -> None:
    reply = "greet.py\n```\n<<<<<<< SEARCH\nprint('hello')\n=======\nprint('hello, world')\n>>>>>>> REPLACE\n```\n"  # noqa: E501
    task = replace(TASK, files=("greet.py",), lease=("greet.py",))
    with FakeModelServer([Step(text=reply)]) as server:
        run = run_aider(repo, server, task=task, edit_format="diff")
        body = str(server.requests[0].body)
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert (repo / "greet.py").read_text() == "print('hello, world')\n"
    assert {"path": "greet.py", "change": "edit"} in kinds(run.events, "file")
    assert "print('hello')" in body  # the declared file was added to the chat


def test_an_edit_that_does_not_apply_is_a_failure(repo: Path) -> None:
    reply = "greet.py\n```\n<<<<<<< SEARCH\nnot in the file\n=======\nx\n>>>>>>> REPLACE\n```\n"
    with FakeModelServer([Step(text=reply)]) as server:
        run = run_aider(repo, server, edit_format="diff")
    assert run.result.exit_code == 0  # aider's trap: exit 0 although nothing applied
    assert run.result.outcome is Outcome.FAILED, run.result.reason
    assert (repo / "greet.py").read_text() == "print('hello')\n"


def test_http_400_is_an_api_error(repo: Path) -> None:
    with FakeModelServer([Step(http_error=HttpError(400))]) as server:
        run = run_aider(repo, server)
        statuses = [r.status for r in generate_requests(server)]
    assert run.result.exit_code == 0  # aider's trap
    assert run.result.outcome is Outcome.API_ERROR
    assert "BadRequestError" in run.result.reason and "Bad request" in run.result.reason
    assert statuses == [400]


def test_http_429_is_rate_limited(repo: Path) -> None:
    # aider retries a 429 for about a minute; the attempt's timeout ends it first. aider needs
    # several seconds to start (importing litellm), more on a busy machine: leave it room to
    # reach its first request before the timeout.
    with FakeModelServer([Step(http_error=HttpError(429, retry_after=0.1))]) as server:
        run = run_aider(repo, server, timeout=20.0)
        assert generate_requests(server), "aider never reached the model server"

        assert processes_with_token(run.token) == []
    assert run.result.outcome is Outcome.RATE_LIMITED, run.result.reason
    assert not run.result.outcome.counts_as_failure


def test_tokens_and_dollars_match_the_scripted_usage(created: Created) -> None:
    result = created.run.result
    assert result.usage == {"input_tokens": 1200, "output_tokens": 40}
    # 1200 x $1e-6 + 40 x $2e-6 = $0.00128, which aider prints as $0.0013
    assert result.cost_usd == pytest.approx(0.00128, abs=0.00005)


def test_a_hang_is_killed_at_the_timeout(repo: Path) -> None:
    with FakeModelServer([Step(hang=True)]) as server:
        run = run_aider(repo, server, timeout=5.0)
        assert run.result.outcome is Outcome.TIMED_OUT
        assert processes_with_token(run.token) == []
    assert run.duration < 15


def test_reaches_no_address_but_the_scripted_server(repo: Path) -> None:
    # No model metadata: aider would download LiteLLM's price list if the adapter let it.
    with FakeModelServer([whole("net.txt", "ok\n")]) as server, RecordingProxy() as proxy:
        no_proxy = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        extra_env = {**proxy_env(proxy.url), **no_proxy}
        run = run_aider(repo, server, model_metadata=None, extra_env=extra_env)
        requests = list(server.requests)
    seen = proxy.seen
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert (repo / "net.txt").read_text() == "ok\n"
    assert seen == [], f"aider tried to reach something besides the scripted server: {seen!r}"
    assert [(r.endpoint, r.step) for r in requests] == [("generate", 0)]


E2E_PLAN = two_task_plan("aider-pair", "aider", "create")
E2E_CONFIG = (
    'env = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]\n\n[agents.aider]\n'
    f'command = "{AIDER}"\nmodel = "fake-model"\nedit_format = "whole"\n'
)


def test_stretto_run_with_two_aider_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two aider attempts start together in a repository whose git identity is only in the
    user's ``~/.gitconfig``. Issue 21: aider, with a ``HOME`` of its own, saw no identity and
    wrote ``Your Name`` into the shared ``.git/config`` (two at once raced on its lock); the
    config must be byte-identical after the run."""
    from stretto.frontends.cli import main

    monkeypatch.setitem(stretto.agents.BUILTIN, "aider", "stretto.agents.aider:AiderAdapter")
    project = committed_project(tmp_path, E2E_PLAN, E2E_CONFIG)
    config = identity_in_home_only(project, tmp_path / "user-home")
    # Both tasks share one session; a rule per task answers with that task's file.
    rules = [
        Rule(Match(body_contains=f"create {name}.txt"), whole(f"{name}.txt", f"{name}\n"))
        for name in ("alpha", "beta")
    ]
    script = Script.from_steps([Step(text="No idea.")], rules=rules)
    with FakeModelServer(script) as server:
        monkeypatch.chdir(project)
        monkeypatch.setenv("OPENAI_BASE_URL", server.env()["OPENAI_BASE_URL"])
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
        no_identity_env(monkeypatch)
        result = CliRunner().invoke(main, ["run", "plan.yaml"], catch_exceptions=False)
        generated = generate_requests(server)
    assert result.exit_code == 0, result.output
    assert git(project, "show", "HEAD:alpha.txt") == "alpha\n"
    assert git(project, "show", "HEAD:beta.txt") == "beta\n"
    assert len(generated) == 2
    assert (project / ".git" / "config").read_bytes() == config
    logs = list((project / ".stretto" / "runs").glob("*/tasks/*/*/agent.log"))
    assert len(logs) == 2 and not any("Update git name" in p.read_text() for p in logs)


def test_model_comes_from_the_step_then_the_tier_map(tmp_path: Path) -> None:
    tiers = {"fast": "mini", "balanced": "mid", "strong": "anthropic/big"}

    def model(step_model: str | None, complexity: str, **settings: object) -> str:
        ctx = bare_context(replace(TASK, complexity=complexity), tmp_path, step_model, settings)
        return AiderAdapter.model_for(ctx)

    assert model("gpt-x", "low", models=tiers) == "openai/gpt-x"
    assert model("strong", "low", models=tiers) == "anthropic/big"
    assert model(None, "low", models=tiers) == "openai/mini"
    assert model(None, "medium", model="fixed", provider="openrouter") == "openrouter/fixed"


def test_output_lines_are_classified() -> None:
    adapter = AiderAdapter()

    def decide(*lines: str, exit_code: int = 0, timed_out: bool = False) -> AgentResult:
        events = [event for line in lines for event in adapter.parse_line(line, "stdout")]
        return adapter.decide(exit_code, timed_out, events)

    tokens = "Tokens: 2.4k sent, 1.0k cache hit, 46 received. Cost: $0.01 message, $0.03 session."
    done = decide(tokens, "Applied edit to a.py")
    assert done.outcome is Outcome.SUCCESS
    assert done.usage == {"input_tokens": 2400, "cached_input_tokens": 1000, "output_tokens": 46}
    assert done.cost_usd == 0.03
    limited = decide("litellm.RateLimitError: RateLimitError: OpenAIException - slow down")
    assert limited.outcome is Outcome.RATE_LIMITED
    # What aider 0.86.2 prints for OpenAI's insufficient_quota 429 (probed against the server).
    quota = "You exceeded your current quota, please check your plan and billing details."
    no_credit = decide(
        f"litellm.RateLimitError: RateLimitError: OpenAIException - {quota}",
        "The API provider has rate limited you. Try again later or check your quotas.",
    )
    assert no_credit.outcome is Outcome.OUT_OF_CREDIT
    assert quota in no_credit.reason
    plain = decide(
        "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached",
        "The API provider has rate limited you. Try again later or check your quotas.",
    )
    assert plain.outcome is Outcome.RATE_LIMITED
    retried = decide(
        "litellm.InternalServerError: OpenAIException - boom",
        "Retrying in 0.2 seconds...",
        tokens,
        "Applied edit to a.py",
    )
    assert retried.outcome is Outcome.SUCCESS
    assert decide("litellm.Timeout: Connection timed out").outcome is Outcome.TIMED_OUT
    assert decide("Aider v0.86.2").outcome is Outcome.FAILED  # no reply at all
    assert decide(tokens, exit_code=1).outcome is Outcome.FAILED
