"""Per-provider back-off: a rate-limited provider gets fewer agents, others keep working."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from stretto.engine.providers import provider_of
from stretto.frontends.cli import main
from stretto.testing.repo import git, make_repo

CONFIG = """\
max_agents = 4
[agents.shell]
provider = "acme"
[agents.beta]
adapter = "shell"
provider = "other"
"""

# acme's first attempts are refused with a rate limit; the retries work.
ACME = (
    'if [ "$STRETTO_ATTEMPT" = 1 ]; then '
    'echo \'STRETTO_EVENT {"kind": "rate_limit"}\'; exit 1; fi; '
    'sleep 0.3; echo "$STRETTO_TASK_ID" > "$STRETTO_TASK_ID.txt"'
)
BETA = 'sleep 0.3; echo "$STRETTO_TASK_ID" > "$STRETTO_TASK_ID.txt"'


def step(task: str, command: str, extra: str) -> str:
    return (
        f"      - id: {task}\n        goal: write {task}.txt\n        files: [{task}.txt]\n"
        f"{extra}        command: |\n          {command}\n"
    )


def plan_text() -> str:
    acme = [step(f"a{i}", ACME, "        max_attempts: 1\n") for i in range(4)]
    beta = [step(f"b{i}", BETA, "        agent: beta\n") for i in range(3)]
    return "max_agents: 4\nstages:\n  - name: s\n    steps:\n" + "".join(acme + beta)


def test_rate_limited_provider_backs_off_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "repo", {"stretto.toml": CONFIG})
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text())
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["run", str(plan), "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    decisions = [r for r in records if r.get("type") == "decision"]
    backoffs = [d for d in decisions if d["action"] == "backoff" and "provider" in d]
    waits = [d for d in decisions if d["action"] == "retry" and "wait" in d]
    # no delay was named: each first retry of an acme task waits 1-2 s (issue 21), not 0
    assert waits and all(1.0 <= d["wait"] <= 2.0 for d in waits)
    recovers = [d for d in decisions if d["action"] == "recover"]
    assert backoffs and all(d["provider"] == "acme" for d in backoffs)
    assert backoffs[0]["limit"] < backoffs[0]["was"] == 4
    assert any(d["provider"] == "acme" for d in recovers)
    # Rate limits used up no attempt: max_attempts is 1, yet every acme task landed.
    for i in range(4):
        assert git(repo, "show", f"main:a{i}.txt") == f"a{i}\n"
    for i in range(3):
        assert git(repo, "show", f"main:b{i}.txt") == f"b{i}\n"
    # The other provider was never backed off.
    assert not [d for d in backoffs if d["provider"] == "other"]
    # After the first back-off, acme never had more agents at once than its limit allowed.
    first = records.index(backoffs[0])
    limit, running, peak = backoffs[0]["limit"], set(), 0
    for rec in records[first + 1 :]:
        if rec.get("type") == "decision" and rec.get("provider") == "acme":
            limit = max(limit, rec["limit"])
        if rec.get("type") == "attempt_started" and rec["task"].startswith("a"):
            running.add(rec["task"])
            peak = max(peak, len(running))
        if rec.get("type") == "attempt_finished" and rec["task"].startswith("a"):
            running.discard(rec["task"])
    assert peak <= limit


def test_provider_of() -> None:
    assert provider_of("claude", {}) == "anthropic"
    assert provider_of("gemini", {}) == "google"
    assert provider_of("shell", {}) is None
    assert provider_of("mine", {"mine": {"adapter": "codex"}}) == "openai"
    assert provider_of("claude", {"claude": {"provider": "gateway"}}) == "gateway"
