"""The give-up rule's retry model: the failed attempt against its own arm's mean cost, the
repository, the optimism for what few retries cannot tell, and old policy files."""

from __future__ import annotations

import json
from pathlib import Path

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
