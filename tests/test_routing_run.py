"""Routing, the cost ledger and budgets in real runs: real git repositories, shell agents that
report tokens like model CLIs do, the real router policy file and the real ledger.

Two shell "arms" stand in for a cheap and a strong model: the same script, told its model in
``$STRETTO_MODEL``; the cheap one fails tasks of high complexity.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from stretto.engine.journal import read_journal
from stretto.frontends.cli import main
from stretto.routing.ledger import Ledger, make_entry
from stretto.testing.repo import git, make_repo

AGENT = """\
#!/bin/bash
file=$(printf '%s\\n' "$STRETTO_OWNED_FILES" | head -1)
usage='{"kind": "usage", "input_tokens": 100000, "output_tokens": 10000}'
echo "STRETTO_EVENT $usage"
if [ "$STRETTO_MODEL" = "cheap-1" ] && [ "$STRETTO_COMPLEXITY" = "high" ]; then
    echo "this is too hard for $STRETTO_MODEL"
    exit 1
fi
echo "$STRETTO_TASK_ID by $STRETTO_MODEL" > "$file"
"""

# cheap-1: 100k in x $1/M + 10k out x $2/M = $0.12 an attempt; pro-1: ten times that, $1.20.
CONFIG = """\
[agents.cheap]
adapter = "shell"
command = "bash {agent}"

[agents.pro]
adapter = "shell"
command = "bash {agent}"

[router]
warmup = {warmup}
cost_ceiling = 2.0
min_tier = {{ high = "fast" }}

[[router.arms]]
agent = "cheap"
model = "cheap-1"
tier = "fast"

[[router.arms]]
agent = "pro"
model = "pro-1"
tier = "strong"

[prices."cheap-1"]
input = 1.0
output = 2.0

[prices."pro-1"]
input = 10.0
output = 20.0
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    agent = tmp_path / "agent.sh"
    agent.write_text(AGENT)
    path = make_repo(
        tmp_path / "repo",
        {"README.md": "# test\n", "stretto.toml": CONFIG.format(agent=agent, warmup=50)},
    )
    monkeypatch.chdir(path)
    return path


def plan(repo: Path, steps: list[str], *, extra: str = "") -> Path:
    path = repo.parent / "plan.yaml"
    body = "\n".join(f"      - {step}" for step in steps)
    path.write_text(f"name: p\n{extra}stages:\n  - name: work\n    steps:\n{body}\n")
    return path


def journal(repo: Path) -> list[dict[str, object]]:
    [run] = sorted((repo / ".stretto" / "runs").iterdir())[-1:]
    return [{"type": r.type, **r.fields} for r in read_journal(run / "journal.jsonl")]


def routes(repo: Path, task: str) -> list[dict[str, object]]:
    return [r for r in journal(repo) if r["type"] == "route" and r["task"] == task]


def test_cascade_escalates_after_a_failure_and_the_ledger_prices_each_attempt(repo: Path) -> None:
    result = invoke(
        "run",
        str(plan(repo, ["{id: hard, goal: hard work, complexity: high, files: [hard.txt]}"])),
        "--plain",
    )
    assert result.exit_code == 0, result.output
    assert git(repo, "show", "main:hard.txt") == "hard by pro-1\n"
    first, second = routes(repo, "hard")
    assert (first["agent"], first["model"], first["rule"]) == ("cheap", "cheap-1", "cascade-start")
    assert (second["agent"], second["model"], second["rule"]) == (
        "pro",
        "pro-1",
        "cascade-escalate",
    )
    entries = Ledger.for_repo(repo).entries()
    assert [(e.model, e.source, round(e.cost_usd or 0, 6)) for e in entries] == [
        ("cheap-1", "priced", 0.12),
        ("pro-1", "priced", 1.2),
    ]
    assert "cost $1.3200" in result.output

    cost = invoke("cost", "--json")
    assert cost.exit_code == 0, cost.output
    data = json.loads(cost.output)
    assert round(data["total"]["cost_usd"], 6) == 1.32

    by_model = invoke("cost", "--by", "model")
    assert by_model.exit_code == 0, by_model.output
    assert "pro-1" in by_model.output and "cheap-1" in by_model.output

    explained = invoke("explain", "hard")
    assert explained.exit_code == 0, explained.output
    text = explained.output
    assert "attempt 1: cheap/cheap-1 (fast)" in text
    assert "attempt 2: pro/pro-1 (strong)" in text
    assert "cascade" in text and "escalate" in text
    data = json.loads(invoke("explain", "hard", "--json").output)
    assert [a["route"]["rule"] for a in data["attempts"]] == ["cascade-start", "cascade-escalate"]
    assert data["attempts"][0]["route"]["choice"]["features"]  # the feature vector is recorded

    missing = invoke("explain", "hrad")
    assert missing.exit_code != 0
    assert "did you mean 'hard'" in missing.output


def test_policy_persists_across_runs_and_learns(repo: Path) -> None:
    steps = [f"{{id: t{i}, goal: task {i}, complexity: low, files: [t{i}.txt]}}" for i in range(3)]
    assert invoke("run", str(plan(repo, steps)), "--plain").exit_code == 0
    policy_file = repo / ".stretto" / "router" / "policy.json"
    first = json.loads(policy_file.read_text())
    assert first["completed"] == 3
    steps = [f"{{id: u{i}, goal: more {i}, complexity: low, files: [u{i}.txt]}}" for i in range(2)]
    assert invoke("run", str(plan(repo, steps)), "--plain").exit_code == 0
    assert json.loads(policy_file.read_text())["completed"] == 5
    # The ledger now holds 3 attempts like these: the estimate is their median cost.
    assert [round(float(str(r["estimate_usd"])), 6) for r in routes(repo, "u0")] == [0.12]
    assert not list(policy_file.parent.glob("*.tmp"))


def test_pins_are_obeyed(repo: Path) -> None:
    steps = ["{id: pinned, goal: x, complexity: low, agent: pro, model: pro-1, files: [p.txt]}"]
    assert invoke("run", str(plan(repo, steps)), "--plain").exit_code == 0
    [route] = routes(repo, "pinned")
    assert (route["agent"], route["model"], route["rule"]) == ("pro", "pro-1", "pinned")


def test_budget_stops_new_attempts_and_resume_with_more_goes_on(repo: Path) -> None:
    steps = [f"{{id: t{i}, goal: task {i}, complexity: low, files: [t{i}.txt]}}" for i in range(5)]
    result = invoke(
        "run", str(plan(repo, steps)), "--plain", "--max-agents", "1", "--budget", "0.3"
    )
    assert result.exit_code == 1, result.output
    assert "budget reached" in result.output
    [run_id] = [p.name for p in (repo / ".stretto" / "runs").iterdir()]
    status = json.loads(invoke("status", "--json").output)
    assert status["state"] == "budget_reached"
    states = {t["id"]: t["state"] for t in status["tasks"]}
    landed = [t for t, s in states.items() if s == "landed"]
    skipped = [t for t, s in states.items() if s == "skipped"]
    assert 1 <= len(landed) < 5 and len(landed) + len(skipped) == 5, states
    spent = Ledger.for_repo(repo).spent(run_id=run_id)
    assert spent <= 0.3 + 0.12 + 1e-9  # at most one attempt beyond what the estimate allowed
    assert any(r.get("action") == "stop_budget" for r in journal(repo))

    again = invoke("resume", run_id, "--plain", "--budget", "10")
    assert again.exit_code == 0, again.output
    status = json.loads(invoke("status", "--json").output)
    assert status["state"] == "finished"
    assert all(t["state"] == "landed" for t in status["tasks"])
    for i in range(5):
        assert git(repo, "show", f"main:t{i}.txt") == f"t{i} by cheap-1\n"


def test_daily_cap_counts_earlier_runs(repo: Path) -> None:
    toml = repo / "stretto.toml"
    toml.write_text(toml.read_text() + "\n[budget]\ndaily = 1.0\n")
    git(repo, "commit", "-qam", "cap")
    earlier = make_entry(
        run_id="earlier",
        task="x",
        attempt=1,
        kind="attempt",
        agent="pro",
        agent_kind="shell",
        model="pro-1",
        tier="strong",
        usage={},
        reported_cost=1.5,
        outcome="success",
    )
    Ledger.for_repo(repo).append(earlier)
    before = git(repo, "rev-parse", "main")
    result = invoke("run", str(plan(repo, ["{id: a, goal: a, files: [a.txt]}"])), "--plain")
    assert result.exit_code == 1, result.output
    assert "daily cap reached" in result.output
    assert "raise [budget] daily" in result.output
    assert git(repo, "rev-parse", "main") == before  # nothing ran, nothing landed


def test_unknown_model_is_flagged_never_free(repo: Path, tmp_path: Path) -> None:
    toml = repo / "stretto.toml"
    toml.write_text(toml.read_text().replace('model = "cheap-1"', 'model = "mystery-9"'))
    git(repo, "commit", "-qam", "mystery")
    result = invoke("run", str(plan(repo, ["{id: a, goal: a, complexity: low, files: [a.txt]}"])))
    assert result.exit_code == 0, result.output
    assert "unknown price" in result.output
    [entry] = Ledger.for_repo(repo).entries()
    assert (entry.model, entry.source, entry.cost_usd) == ("mystery-9", "unknown", None)
    cost = invoke("cost")
    assert "mystery-9" in cost.output
    assert "[prices" in cost.output  # the fix is named
    data = json.loads(invoke("cost", "--json").output)
    assert data["total"]["unknown"] == 1


def test_unknown_price_with_no_bound_stops_a_budgeted_run(repo: Path) -> None:
    """Spend no table can price, on a provider with no known top price (a shell agent has none),
    cannot be kept within a budget: the run stops starting attempts and says why (issue 21)."""
    toml = repo / "stretto.toml"
    text = toml.read_text().replace('model = "cheap-1"', 'model = "mystery-9"')
    toml.write_text("[budget]\nrun = 100.0\n" + text)
    git(repo, "commit", "-qam", "mystery")
    steps = [f"{{id: {t}, goal: {t}, complexity: low, files: [{t}.txt]}}" for t in "ab"]
    result = invoke("run", str(plan(repo, steps, extra="max_agents: 1\n")))
    assert result.exit_code == 1, result.output
    assert "budget cannot be kept: spend of unknown price: cheap (model mystery-9)" in result.output
    assert '[prices."mystery-9"]' in result.output
    assert len(Ledger.for_repo(repo).entries()) == 1  # the second task never started


def test_dry_run_shows_the_cost_range(repo: Path) -> None:
    path = plan(
        repo,
        [
            "{id: easy, goal: a, complexity: low, files: [a.txt]}",
            "{id: hard, goal: b, complexity: high, files: [b.txt]}",
        ],
        extra="budget: 2\n",
    )
    result = invoke("run", "--dry-run", str(path))
    assert result.exit_code == 0, result.output
    assert "Estimated cost" in result.output
    assert "cheap/cheap-1 -> pro/pro-1" in result.output
    data = json.loads(invoke("run", "--dry-run", "--json", str(path)).output)
    cost = data["cost"]
    assert cost["budget_usd"] == 2
    assert 0 < cost["low_usd"] < cost["high_usd"]
    by_task = {t["task"]: t for t in cost["tasks"]}
    assert by_task["easy"]["route"][0] == "cheap/cheap-1"
    assert not (repo / ".stretto" / "runs").exists()  # a dry run writes no run


def test_on_exceed_stop_ends_running_agents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_repo(
        tmp_path / "repo",
        {"README.md": "x\n", "stretto.toml": '[budget]\nrun = 1.0\non_exceed = "stop"\n'},
    )
    monkeypatch.chdir(path)
    spend = 'echo "STRETTO_EVENT {\\"kind\\": \\"cost\\", \\"usd\\": 5}"; echo a > a.txt'
    steps = [
        f"{{id: costly, goal: a, files: [a.txt], command: '{spend}'}}",
        "{id: slow, goal: b, files: [b.txt], command: 'sleep 60; echo b > b.txt'}",
    ]
    plan_path = tmp_path / "plan.yaml"
    body = "\n".join(f"      - {s}" for s in steps)
    plan_path.write_text(f"stages:\n  - name: w\n    steps:\n{body}\n")
    started = time.monotonic()
    result = invoke("run", str(plan_path), "--plain", "--max-agents", "2")
    assert time.monotonic() - started < 40, "the slow agent was not stopped"
    assert result.exit_code == 1, result.output
    status = json.loads(invoke("status", "--json").output)
    assert status["state"] == "budget_reached"
    states = {t["id"]: t["state"] for t in status["tasks"]}
    assert states == {"costly": "landed", "slow": "skipped"}
    assert git(path, "show", "main:a.txt") == "a\n"
    assert not os.path.exists(path / "b.txt")


def test_a_real_cli_on_a_routed_arm_is_priced_from_its_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Codex reports tokens, not dollars: the ledger prices them from the bundled table."""
    from stretto.routing.ledger import price_tokens
    from stretto.testing.fakemodel import FakeModelServer, Step, ToolCall, Usage
    from stretto.testing.repo import IDENTITY

    bin_dir = Path(__file__).resolve().parents[1] / ".tools" / "npm" / "node_modules" / ".bin"
    assert (bin_dir / "codex").exists(), "run scripts/install-agents: the codex CLI is missing"
    config = """\
env = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]

[[router.arms]]
agent = "codex"
model = "gpt-5-mini"
tier = "fast"

[[router.arms]]
agent = "codex"
model = "gpt-5"
tier = "strong"
"""
    project = make_repo(tmp_path / "project", {"README.md": "hi\n", "stretto.toml": config})
    (tmp_path / "home").mkdir()
    cmd = 'echo "$STRETTO_TASK_ID" > "$STRETTO_TASK_ID.txt"'
    usage = Usage(input_tokens=10_000, output_tokens=500, cached_tokens=4_000)
    script = [Step(tool_calls=[ToolCall("exec_command", {"cmd": cmd})], usage=usage), Step("ok")]
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(
        "stages:\n  - name: w\n    steps:\n"
        "      - {id: alpha, goal: write alpha, complexity: low, files: [alpha.txt]}\n"
    )
    with FakeModelServer(script) as server:
        monkeypatch.chdir(project)
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("OPENAI_BASE_URL", server.env()["OPENAI_BASE_URL"])
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        for key, value in IDENTITY.items():
            monkeypatch.setenv(key, value)
        result = invoke("run", str(plan_path), "--plain")
        models = [r.body.get("model") for r in server.requests if r.endpoint == "generate"]
    assert result.exit_code == 0, result.output
    assert git(project, "show", "main:alpha.txt") == "alpha\n"
    assert models and set(models) == {"gpt-5-mini"}  # the router's choice reached the CLI
    [entry] = Ledger.for_repo(project).entries()
    assert (entry.agent, entry.model, entry.tier, entry.source) == (
        "codex",
        "gpt-5-mini",
        "fast",
        "priced",
    )
    assert entry.tokens.cached > 0 and entry.tokens.output > 0
    assert entry.cost_usd == pytest.approx(price_tokens("gpt-5-mini", entry.tokens))
    assert entry.cost_usd is not None and entry.cost_usd > 0
    assert entry.cost_usd < (price_tokens("gpt-5", entry.tokens) or 0)


def test_task_credit_teaches_the_first_arm_the_whole_task_cost(repo: Path) -> None:
    toml = repo / "stretto.toml"
    toml.write_text(toml.read_text().replace("[router]\n", '[router]\ncredit = "task"\n'))
    git(repo, "commit", "-qam", "task credit")
    steps = ["{id: hard, goal: hard work, complexity: high, files: [hard.txt]}"]
    result = invoke("run", str(plan(repo, steps)), "--plain")
    assert result.exit_code == 0, result.output
    learned = [r for r in journal(repo) if r["type"] == "learned"]
    assert [(r["attempt"], r["arm"], r["learned"]) for r in learned] == [
        (1, "cheap/cheap-1", True),  # the first arm learns what the whole task cost
        (2, "pro/pro-1", False),
    ]
    assert learned[0]["reward"] == pytest.approx(1 - (0.12 + 1.2) / 2.0)
    policy = json.loads((repo / ".stretto" / "router" / "policy.json").read_text())
    assert policy["completed"] == 1
    explained = invoke("explain", "hard")
    assert "learned: reward 0.34 for cheap/cheap-1" in explained.output


def test_cost_and_explain_without_a_router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_repo(tmp_path / "repo", {"README.md": "x\n"})
    monkeypatch.chdir(path)
    empty = invoke("cost")
    assert empty.exit_code == 0 and "no spend recorded yet (all runs)" in empty.output
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(
        "stages:\n  - name: w\n    steps:\n"
        "      - {id: a, goal: a, files: [a.txt], command: 'echo a > a.txt'}\n"
    )
    assert invoke("run", str(plan_path), "--plain").exit_code == 0
    explained = invoke("explain", "a")
    assert explained.exit_code == 0, explained.output
    assert "attempt 1: shell" in explained.output
    assert "rule: default: no [[router.arms]] configured" in explained.output
    [entry] = Ledger.for_repo(path).entries()
    assert (entry.agent, entry.source, entry.cost_usd) == ("shell", "none", 0.0)
    missing = invoke("cost", "--run", "nope")
    assert missing.exit_code == 1
    assert "no spend recorded for a run 'nope'" in missing.output


def test_a_damaged_policy_stops_the_run_before_it_starts(repo: Path) -> None:
    policy = repo / ".stretto" / "router" / "policy.json"
    policy.parent.mkdir(parents=True)
    policy.write_text('{"format": "stretto-router-policy", "arms": [')
    result = invoke("run", str(plan(repo, ["{id: a, goal: a, files: [a.txt]}"])), "--plain")
    assert result.exit_code != 0
    assert str(policy) in result.output
    assert "Delete it to start learning afresh" in result.output
    assert not (repo / ".stretto" / "runs").exists()
