"""Rate-limit back-off and the limits of a runaway attempt, against the real pinned CLIs (issue 21).

Each test runs ``stretto run`` in a throwaway repository with one real CLI talking to the
scripted model server, then reads the journal and the server's request log:

* a provider that answers 429 without a delay (codex shows none) gets exponential back-off with
  jitter, not the next attempt at once (12 codex attempts in 3.3 s before);
* a delay the provider states in words ("Please try again in 3s") is waited, not Claude Code's
  own half-second retry delay;
* a model that never stops calling tools is stopped at ``[attempt] max_turns``, with an outcome
  (``over_limit``) and a reason of its own;
* ``[attempt] timeout`` bounds every attempt of the run (it was 30 minutes, with no setting).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from _support import NPM_BIN, WRITE_TASK_FILE, committed_project, path_with, require_cli, setenv_all
from click.testing import CliRunner, Result

from stretto.engine.journal import Record, read_journal
from stretto.engine.runs import resolve_run
from stretto.testing.fakemodel import FakeModelServer, HttpError, Script, Step, ToolCall
from stretto.testing.fakemodel.server import LoggedRequest
from stretto.testing.repo import IDENTITY

PLAN = """\
name: one
stages:
  - name: work
    steps:
      - {{id: alpha, goal: write alpha.txt, files: [alpha.txt], agent: {agent}, max_attempts: 1}}
"""
ENV = 'env = ["OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"]\n'
CODEX = f'[agents.codex]\ncommand = "{NPM_BIN / "codex"}"\nmodel = "fake-model"\n'
CLAUDE = (
    f'[agents.claude]\ncommand = "{NPM_BIN / "claude"}"\nmodel = "fake-model"\n'
    'allowed_tools = ["Bash"]\nmax_retries = 0\n'
)


def run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent: str, config: str, script: Script
) -> tuple[Result, list[Record], list[LoggedRequest]]:
    """``stretto run`` of a one-step plan for ``agent``; the journal and the model calls."""
    from stretto.frontends.cli import main

    require_cli(NPM_BIN / agent)
    project = committed_project(tmp_path, PLAN.format(agent=agent), ENV + config)
    (tmp_path / "home").mkdir()
    with FakeModelServer(script) as server:
        monkeypatch.chdir(project)
        monkeypatch.setenv("OPENAI_BASE_URL", server.env()["OPENAI_BASE_URL"])
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake")
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("PATH", path_with(NPM_BIN))
        setenv_all(monkeypatch, IDENTITY)
        result = CliRunner().invoke(main, ["run", "plan.yaml", "--plain"], catch_exceptions=False)
        calls = [r for r in server.requests if r.endpoint == "generate"]
    return result, read_journal(resolve_run(project, None) / "journal.jsonl"), calls


def waits(records: list[Record]) -> list[float]:
    """The back-off waits the runner decided after rate-limited attempts, in order."""
    return [
        float(r.fields["wait"])
        for r in records
        if r.type == "decision"
        and r.fields.get("action") in ("retry", "give_up")
        and "wait" in r.fields
    ]


def gap(first: LoggedRequest, second: LoggedRequest) -> float:
    """Seconds between two requests the server saw."""
    return (
        datetime.fromisoformat(second.time) - datetime.fromisoformat(first.time)
    ).total_seconds()


@pytest.mark.timeout(90)
def test_no_stated_delay_means_exponential_backoff_with_jitter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Codex reports a 429 as "exceeded retry limit, last status: 429" with no delay. The first
    rate-limited attempt waits 1-2 s (2 s with equal jitter) before the next, which is the one
    that counts once ``max_rate_limited = 1`` is used up."""
    config = CODEX + "[attempt]\nmax_rate_limited = 1\n"
    body = {"error": {"message": "Rate limit reached.", "type": "requests", "code": "rate_limit"}}
    script = Script.from_steps([Step(http_error=HttpError(429, body=body))])
    result, records, calls = run(tmp_path, monkeypatch, "codex", config, script)
    assert result.exit_code == 1, result.output
    assert [r.status for r in calls] == [429, 429]
    (wait,) = waits(records)
    assert 1.0 <= wait <= 2.0
    assert gap(calls[0], calls[1]) >= 1.0  # it started at once before (0.2-0.3 s apart)
    assert "gave up after 1 failed attempt; last: agent codex: rate_limited" in result.output


@pytest.mark.timeout(90)
def test_a_delay_stated_in_words_is_waited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Anthropic says "Please try again in 3s" with no Retry-After header; Claude Code's own
    retry would wait about 0.5 s. stretto waits the provider's 3 s (plus up to 10%)."""
    body = {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Slow down. Please try again in 3s."},
    }
    first = Step(
        tool_calls=[ToolCall("Bash", {"command": WRITE_TASK_FILE})],
        http_error=HttpError(429, body=body, times=1),
    )
    script = Script.from_steps([first, Step(text="Wrote it.")])
    result, records, calls = run(tmp_path, monkeypatch, "claude", CLAUDE, script)
    assert result.exit_code == 0, result.output
    assert [r.status for r in calls] == [429, 200, 200]
    (wait,) = waits(records)
    assert 3.0 <= wait <= 3.3
    assert gap(calls[0], calls[1]) >= 3.0


@pytest.mark.timeout(90)
def test_a_looping_agent_is_stopped_at_its_turn_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model calls a tool forever (every reply past the script's end is the same call);
    ``[attempt] max_turns = 4`` stops Claude Code at its fifth reply, while it runs."""
    loop = Step(tool_calls=[ToolCall("Bash", {"command": "true"})])
    script = Script.from_steps([loop], past_end=loop)
    config = CLAUDE + "[attempt]\nmax_turns = 4\ntimeout = 60\n"
    result, records, calls = run(tmp_path, monkeypatch, "claude", config, script)
    assert result.exit_code == 1, result.output
    assert 5 <= len(calls) <= 6  # stopped at the line that showed the fifth reply
    (finished,) = [r for r in records if r.type == "attempt_finished"]
    assert finished.fields["outcome"] == "over_limit"
    reason = "stopped: made 5 model calls, over the limit of 4 ([attempt] max_turns)"
    assert finished.fields["reason"] == reason
    assert f"agent claude: over_limit ({reason})" in result.output
    assert finished.fields["duration"] < 30


@pytest.mark.timeout(60)
def test_a_config_wide_timeout_bounds_every_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[attempt] timeout = 3``: a model that never answers costs 3 s, not 30 minutes."""
    config = CODEX + "[attempt]\ntimeout = 3\n"
    result, records, calls = run(
        tmp_path, monkeypatch, "codex", config, Script.from_steps([Step(hang=True)])
    )
    assert result.exit_code == 1, result.output
    (finished,) = [r for r in records if r.type == "attempt_finished"]
    assert finished.fields["outcome"] == "timed_out"
    assert 3.0 <= finished.fields["duration"] < 10
    assert len(calls) == 1
