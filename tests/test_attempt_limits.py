"""``[attempt]`` limits and rate-limit waits (issue 21), with shell agents that report usage the
way model CLIs do, in real runs; the real-CLI versions are in tests/conformance/test_limits.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from stretto.agents.base import delay_in_text
from stretto.engine.journal import read_journal
from stretto.engine.runs import resolve_run
from stretto.frontends.cli import main
from stretto.schedule.backoff import CAP, MAX_STATED, rate_limit_wait
from stretto.testing.repo import make_repo

# A runaway agent: one model call's worth of usage (and dollars) a line, forever.
LOOP = (
    "while true; do "
    'echo \'STRETTO_EVENT {"kind": "usage", "input_tokens": 1000, "output_tokens": 100}\'; '
    "sleep 0.05; done"
)


def run_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, attempt: str) -> tuple[str, dict]:
    config = f'[prices."m-1"]\ninput = 10.0\noutput = 50.0\n[attempt]\n{attempt}'
    repo = make_repo(tmp_path / "repo", {"stretto.toml": config})
    script = tmp_path / "loop.sh"
    script.write_text(LOOP + "\n")
    plan = tmp_path / "plan.yaml"
    step = (
        f"{{id: a, goal: g, files: [a.txt], model: m-1, max_attempts: 1, command: bash {script}}}"
    )
    plan.write_text(f"stages:\n  - name: s\n    steps:\n      - {step}\n")
    monkeypatch.chdir(repo)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["run", str(plan), "--plain"])
    assert time.monotonic() - started < 30, result.output
    records = read_journal(resolve_run(repo, None) / "journal.jsonl")
    (finished,) = [r.fields for r in records if r.type == "attempt_finished"]
    return result.output, dict(finished)


def test_max_tokens_stops_the_agent_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output, finished = run_loop(tmp_path, monkeypatch, "max_tokens = 5000\ntimeout = 60\n")
    assert finished["outcome"] == "over_limit"
    assert finished["reason"] == (
        "stopped: used 5,500 tokens, over the limit of 5,000 ([attempt] max_tokens)"
    )
    assert finished["usage"] == {"input_tokens": 5000, "output_tokens": 500}
    assert "agent shell: over_limit (stopped: used 5,500 tokens" in output


def test_max_cost_stops_the_agent_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # each line: 1000 x $10/M + 100 x $50/M = $0.015; the third line passes $0.04
    output, finished = run_loop(tmp_path, monkeypatch, "max_cost = 0.04\ntimeout = 60\n")
    assert finished["outcome"] == "over_limit"
    assert (
        finished["reason"] == "stopped: spent $0.0450, over the limit of $0.04 ([attempt] max_cost)"
    )
    assert finished["cost_usd"] == pytest.approx(0.045)
    assert "over_limit" in output


def test_attempt_settings_are_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(
        tmp_path / "repo", {"stretto.toml": "[attempt]\nmax_turns = 0\nmax_trns = 3\n"}
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text("stages:\n  - name: s\n    steps:\n      - {id: a, goal: g, command: 'true'}\n")
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["run", str(plan)])
    assert result.exit_code == 2
    assert "stretto.toml:2:1: attempt.max_turns: must be at least 1" in result.output
    assert (
        "stretto.toml:3:1: attempt.max_trns: unknown key 'max_trns' (did you mean " in result.output
    )


def test_rate_limit_waits() -> None:
    # a stated delay is waited, plus up to 10%, capped
    assert 3.0 <= rate_limit_wait(3.0, 1, "r/t/1") <= 3.3
    assert MAX_STATED <= rate_limit_wait(9999.0, 1, "r/t/1") <= MAX_STATED * 1.1
    # no delay: 2 s doubled per rate-limited attempt in a row, at most CAP, with equal jitter
    for streak, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (7, CAP), (30, CAP)]:
        waits = [rate_limit_wait(None, streak, f"r/t/{n}") for n in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 40  # jitter: tasks refused together come back apart
    assert rate_limit_wait(None, 3, "r/t/4") == rate_limit_wait(None, 3, "r/t/4")  # replayable


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Rate limit reached. Please try again in 3s.", 3.0),
        ("Please try again in 6.5s. Visit https://...", 6.5),
        ("retry after 20 seconds", 20.0),
        ("try again in 1m", 60.0),
        ("Please try again in 250ms", 0.25),
        ("Suggested retry after 2s.", 2.0),
        ("exceeded retry limit, last status: 429 Too Many Requests", None),
        ("", None),
    ],
)
def test_delay_in_text(text: str, seconds: float | None) -> None:
    assert delay_in_text(text) == seconds
