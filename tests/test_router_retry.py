"""The give-up rule's retry model: the failed attempt against its own arm's mean cost, the
repository, the optimism for what few retries cannot tell, and old policy files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stretto.routing.arms import Arm, RouterConfig
from stretto.routing.choice import render_choice
from stretto.routing.features import FailedAttempt, TaskContext, features, repo_bucket
from stretto.routing.linucb import RETRY_FEATURES, cost_vs_mean, retry_vector
from stretto.routing.router import MIN_RETRIES, Policy

FAST = Arm("codex", "gpt-5", "fast")
STRONG = Arm("claude", "claude-sonnet-4-5", "strong")


def context(cost: float | None = None, repo: str = "acme/app") -> TaskContext:
    """A medium task in ``repo``; with ``cost``, the retry after FAST failed at that cost."""
    failed = None if cost is None else FailedAttempt(FAST.key, 60, 2_000_000, cost)
    attempt = 1 if failed is None else 2
    return TaskContext("medium", "general", None, attempt, 150_000, repo, "go", failed)


def policy(fast_mean: float = 1.0) -> Policy:
    """No warm-up, $100 a landed task; FAST's attempts have cost ``fast_mean`` on average."""
    config = RouterConfig(arms=(FAST, STRONG), warmup=0, cost_ceiling=20.0, landed_value_usd=100)
    p = Policy.fresh(config)
    for _ in range(4):
        p.update(FAST, context(), 0.0, fast_mean, landed=False)
    return p


def retries(p: Policy, n: int, failed_cost: float, landed_every: int, repo: str = "acme/app"):
    """``n`` retries on STRONG at $10 after FAST failed at ``failed_cost``; every
    ``landed_every``-th lands (0: none)."""
    for i in range(n):
        hit = landed_every > 0 and i % landed_every == 0
        p.update(STRONG, context(failed_cost, repo), 0.5 if hit else 0.0, 10.0, landed=hit)


def test_the_failed_attempts_cost_is_weighed_against_its_own_arms_mean() -> None:
    assert cost_vs_mean(2.0, 2.0) == 0.5 and cost_vs_mean(4.0, 2.0) == 0.75
    assert cost_vs_mean(1.0, 2.0) == 0.25 and cost_vs_mean(0.5, 2.0) == 0.0
    assert cost_vs_mean(100.0, 2.0) == 1.0 and cost_vs_mean(0.01, 2.0) == 0.0
    assert cost_vs_mean(None, 2.0) == cost_vs_mean(1.0, None) == cost_vs_mean(0.0, 2.0) == 0.5
    x = features(context(3.0))
    z = dict(zip(RETRY_FEATURES, retry_vector(list(x.values()), 0.75), strict=True))
    assert z["failed_cost_vs_mean"] == 0.75 and "failed_cost" not in z
    assert z["bias"] == 1.0 and z["lang_go"] == 1.0 and z[f"repo_{repo_bucket('acme/app')}"] == 1
    assert (z["failed_turns"], z["failed_tokens"]) == (x["failed_turns"], x["failed_tokens"])
    # the same failure is long for a cheap arm and short for a dear one
    cheap, dear = policy(fast_mean=1.0), policy(fast_mean=12.0)
    assert cheap._retry_vector(context(3.0), list(x.values()))[3] > 0.5
    assert dear._retry_vector(context(3.0), list(x.values()))[3] < 0.5


def test_a_failure_long_for_its_arm_is_given_up_and_a_short_one_retried() -> None:
    p = policy(fast_mean=1.0)
    retries(p, 40, failed_cost=4.0, landed_every=0)  # long failures: never rescued
    retries(p, 40, failed_cost=0.25, landed_every=2)  # short ones: half rescued
    long = p.choose(context(4.0), failed=FAST)
    assert long.rule == "give-up" and "would not pay" in long.reason, long.reason
    short = p.choose(context(0.25), failed=FAST)
    assert short.rule == "retry-stronger" and "worth it" in short.reason, short.reason
    # the same cost after a dearer arm's failures is not long: the ratio, not the dollars
    dear = policy(fast_mean=16.0)
    retries(dear, 40, failed_cost=64.0, landed_every=0)
    retries(dear, 40, failed_cost=4.0, landed_every=2)
    assert dear.choose(context(4.0), failed=FAST).rule == "retry-stronger"


def test_few_failed_retries_are_retried_on_optimism_many_are_given_up() -> None:
    p = policy()
    retries(p, 12, failed_cost=1.0, landed_every=12)  # 1 of 12 landed, at $10 each
    z = p._retry_vector(context(1.0), list(features(context(1.0)).values()))
    figures = p._retry_figures(STRONG, z)
    assert figures is not None and MIN_RETRIES < 12
    chance, optimism, cost = figures
    assert chance * 100 < 10.0 == cost <= (chance + optimism) * 100  # greedy would give up
    young = p.choose(context(1.0), failed=FAST)
    assert young.rule == "retry-stronger", young.reason
    assert "for what its retries cannot tell" in young.reason and "worth it" in young.reason
    retries(p, 200, failed_cost=1.0, landed_every=0)
    old = p.choose(context(1.0), failed=FAST)
    assert old.rule == "give-up", old.reason
    lines = render_choice(old.to_dict())
    assert lines[0].startswith("attempt 2: given up instead of a retry on claude/claude-sonnet")
    assert "give up: a retry on claude/claude-sonnet-4-5 would not pay" in lines[1]
    # a repository with no retries yet is unsure again: retried, on optimism
    fresh_repo = p.choose(context(1.0, repo="other/repo"), failed=FAST)
    assert fresh_repo.rule == "retry-stronger", fresh_repo.reason
    assert "for what its retries cannot tell" in fresh_repo.reason


def test_a_repository_whose_retries_land_keeps_them_where_others_are_given_up() -> None:
    p = policy()
    retries(p, 60, failed_cost=1.0, landed_every=0, repo="hopeless/repo")
    retries(p, 30, failed_cost=1.0, landed_every=2, repo="good/repo")
    assert p.choose(context(1.0, repo="hopeless/repo"), failed=FAST).rule == "give-up"
    assert p.choose(context(1.0, repo="good/repo"), failed=FAST).rule == "retry-stronger"


def test_a_policy_saved_over_other_retry_features_keeps_its_bandit(tmp_path: Path) -> None:
    p = policy()
    retries(p, 40, failed_cost=4.0, landed_every=0)
    path = tmp_path / "policy.json"
    p.save(path)
    data = json.loads(path.read_text())
    for arm in data["arms"].values():  # as a file saved before the retry features changed
        k = 7
        arm["retry_features"] = ["bias", "failed_turns", "failed_tokens", "failed_cost"]
        arm["retry_a_inverse"] = [[float(i == j) for j in range(k)] for i in range(k)]
        arm["retry_b_landed"] = arm["retry_b_cost"] = [0.0] * k
    path.write_text(json.dumps(data))
    again = Policy.load(path, p.config)
    arms = again.to_dict()["arms"]
    assert arms[STRONG.key]["retries"] == 0 and arms[STRONG.key]["pulls"] == 40
    assert arms[STRONG.key]["b"] == p.to_dict()["arms"][STRONG.key]["b"]
    assert arms[STRONG.key]["retry_features"] == list(RETRY_FEATURES)
    assert "too few retries learned" in again.choose(context(4.0), failed=FAST).reason


HOPELESS = """\
#!/bin/bash
echo 'STRETTO_EVENT {"kind": "usage", "input_tokens": 100000, "output_tokens": 10000}'
for step in 1 2 3; do echo 'STRETTO_EVENT {"kind": "tool", "name": "edit"}'; done
echo "no model can do $STRETTO_TASK_ID"
exit 1
"""

# cheap-1: 100k in x $1/M + 10k out x $2/M = $0.12 an attempt; pro-1: ten times that, $1.20.
RUN_CONFIG = """\
[agents.cheap]
adapter = "shell"
command = "bash {agent}"

[agents.pro]
adapter = "shell"
command = "bash {agent}"

[router]
warmup = 0
cost_ceiling = 2.0
landed_value_usd = 2.0

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


def test_stretto_run_gives_up_a_retry_that_does_not_pay_and_explain_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy whose strong arm's retries never landed (as earlier runs would leave it): the
    cheap arm fails, the retry on the strong arm is weighed and given up, and ``stretto
    explain`` shows the chance, the optimism, the landed value and the expected cost."""
    from click.testing import CliRunner

    from stretto.frontends.cli import main
    from stretto.routing.dispatch import POLICY_FILE
    from stretto.testing.repo import make_repo

    agent = tmp_path / "hopeless.sh"
    agent.write_text(HOPELESS)
    repo = make_repo(
        tmp_path / "repo",
        {"stretto.toml": RUN_CONFIG.format(agent=agent), "main.py": "print('hi')\n"},
    )
    monkeypatch.chdir(repo)
    cheap, pro = Arm("cheap", "cheap-1", "fast"), Arm("pro", "pro-1", "strong")
    config = RouterConfig(arms=(cheap, pro), warmup=0, cost_ceiling=2.0, landed_value_usd=2.0)
    learned = Policy.fresh(config)
    for n in range(20):  # the cheap arm lands first attempts; the strong arm's retries never do
        first = TaskContext("medium", "general", (f"f{n}.py",), 1, 120_000, "repo", "python")
        learned.update(cheap, first, 0.9, 0.12, landed=True)
        failed = FailedAttempt(cheap.key, 3, 110_000, 0.12)
        retry = TaskContext(
            "medium", "general", (f"f{n}.py",), 2, 120_000, "repo", "python", failed
        )
        learned.update(pro, retry, 0.0, 1.2, landed=False)
    learned.save(repo / POLICY_FILE)
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "name: p\nstages:\n  - name: work\n    steps:\n"
        "      - {id: job, goal: do it, complexity: medium, files: [job.py]}\n"
    )
    result = CliRunner().invoke(main, ["run", str(plan), "--plain"])
    assert result.exit_code != 0, result.output  # the task failed
    explained = CliRunner().invoke(main, ["explain", "job"])
    assert explained.exit_code == 0, explained.output
    text = explained.output
    assert "attempt 1: cheap/cheap-1 (fast)" in text, text
    assert "attempt 2: not started: the router gave the task up" in text
    assert "give up: a retry on pro/pro-1 would not pay:" in text
    assert "for what its retries cannot tell) x $2.00" in text and "expected cost $1.20" in text
    assert "failed attempt: cheap/cheap-1, 3 turns, 110,000 tokens, cost $0.1200" in text
