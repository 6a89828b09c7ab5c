"""Published figures that the calibrated world of simulate.py (``--world swe-bench``) is fitted to.

Every number here is copied from a public source, named beside it, and nothing else in that
world is chosen after seeing a router result. docs/routing.md says how each is used.
"""

from __future__ import annotations

from dataclasses import dataclass

# SWE-bench Verified's human time-to-fix annotations over its 500 tasks (OpenAI), as counted in
# https://jatinganhotra.dev/blog/swe-agents/2025/04/15/swe-bench-verified-easy-medium-hard.html
# "<15 min" 194, "15 min - 1 hour" 261, "1-4 hours" 42, ">4 hours" 3. Easy, medium and hard
# (the last two together) become the plan's low, medium and high complexity.
DIFFICULTY_MIX = {"low": 194 / 500, "medium": 261 / 500, "high": 45 / 500}


@dataclass(frozen=True, slots=True)
class PublishedAgent:
    agent: str
    model: str
    tier: str  # by price: the cheapest is fast, the dearest strong, the others balanced
    resolved: float  # share of SWE-bench Verified's 500 tasks resolved in one attempt
    usd_per_task: float  # mean API cost of one attempt


# Coding-agent CLIs run as shipped on SWE-bench Verified (500 tasks, one attempt each):
# https://whatsthebestcodeagent.com (leaderboard: accuracy, cost per task).
AGENTS = (
    PublishedAgent("cursor", "grok-code-fast-1", "fast", 0.506, 0.038),
    PublishedAgent("codex", "gpt-5", "balanced", 0.574, 0.126),
    PublishedAgent("gemini", "gemini-2.5-pro", "balanced", 0.424, 0.403),
    PublishedAgent("claude", "claude-sonnet-4-5", "strong", 0.640, 1.193),
)

# A second attempt on the same task with the same model, by another route: Claude Haiku 4.5 on
# SWE-bench Verified resolves 66.6% with its best single policy and 74.6% when either of two
# policies may resolve a task ("Matching Frontier Code Agents with Lightweight Models via
# Multi-Model Consultation", https://sciety.org/articles/activity/10.32388/qg4n5o).
RETRY_ONE = 0.666
RETRY_TWO = 0.746
