"""What the router knows about an attempt before it starts, as numbers it can learn over.

An attempt's :class:`TaskContext` (complexity, role, owned files, attempt number, token
estimate, repository, language, and on a retry what the failed attempt used) becomes the
vector of :data:`FEATURE_NAMES`, each in [0, 1] (:func:`features`): the complexity, how many
files and top-level directories it owns, the role's fixed bucket (:func:`role_bucket`), the
estimated tokens (:func:`estimate_tokens`), whether it is a retry, the language's bucket, the
repository's bucket (:func:`repo_bucket`, a CRC-32 of its name) and the failed attempt's
turns, tokens and cost on a log scale. Pure and deterministic: no Python ``hash()``, the same
numbers in every process.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

COMPLEXITIES = ("low", "medium", "high")
#: The feature vector, in order; each feature lies in [0, 1] (see :func:`features`).
# fmt: off
LANGUAGES = ("python", "javascript", "typescript", "go", "rust", "java")
REPO_BUCKETS = 16
FEATURE_NAMES = (
    "bias", "complexity_medium", "complexity_high", "files", "spread", "undeclared",
    "role_backend", "role_frontend", "role_qa", "role_docs", "tokens", "retry",
    *(f"lang_{name}" for name in LANGUAGES),
    *(f"repo_{n}" for n in range(REPO_BUCKETS)),
    "failed_turns", "failed_tokens", "failed_cost",
)
# fmt: on
#: File extensions of each language in :data:`LANGUAGES` (see :func:`language_of`).
EXTENSIONS: Mapping[str, str] = MappingProxyType(
    {
        ".py": "python",
        ".js": "javascript",
        ".jsx": "javascript",
        ".mjs": "javascript",
        ".ts": "typescript",
        ".tsx": "typescript",
        ".go": "go",
        ".rs": "rust",
        ".java": "java",
    }
)  # fmt: skip
#: Token budget of one attempt on one file, by complexity (see :func:`estimate_tokens`).
BASE_TOKENS: Mapping[str, int] = MappingProxyType(
    {"low": 30_000, "medium": 120_000, "high": 400_000}
)
GLOB_WEIGHT = 4  # a glob pattern counts as this many files
_ROLE_WORDS = (
    ("backend", frozenset({"backend", "api", "server", "database", "db"})),
    ("frontend", frozenset({"frontend", "ui", "web", "client"})),
    ("qa", frozenset({"qa", "test", "tests", "testing"})),
    ("docs", frozenset({"docs", "doc", "documentation", "writer"})),
)


@dataclass(frozen=True, slots=True)
class FailedAttempt:
    """What the previous, failed attempt of the task used (what the ledger booked)."""

    arm: str  # its arm's key
    turns: int | None  # agent steps (tool calls), None if unknown
    tokens: int | None  # tokens sent and received, None if unknown
    cost_usd: float | None  # None if unpriced


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What the router knows about an attempt before it starts."""

    complexity: str  # low | medium | high
    role: str
    files: tuple[str, ...] | None  # owned file patterns (None = undeclared)
    attempt: int  # 1-based
    est_tokens: int  # estimated token budget of the attempt
    repo: str = ""  # the repository's name ("" unknown)
    language: str = ""  # its main language, lower case ("" unknown)
    failed: FailedAttempt | None = None  # the previous attempt, on a retry


def language_of(paths: tuple[str, ...] | list[str]) -> str:
    """The language most of ``paths`` are written in, by extension ("" when none is known;
    ties go to the first in :data:`LANGUAGES`)."""
    counts: dict[str, int] = {}
    for path in paths:
        name = EXTENSIONS.get("." + path.rsplit(".", 1)[-1].lower()) if "." in path else None
        if name:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return ""
    return max(LANGUAGES, key=lambda name: (counts.get(name, 0), -LANGUAGES.index(name)))


def repo_bucket(repo: str) -> int | None:
    """The repository's feature bucket: CRC-32 of its name mod :data:`REPO_BUCKETS` (None: no
    name). Distinct repositories may share a bucket; each one always has the same."""
    return zlib.crc32(repo.encode()) % REPO_BUCKETS if repo else None


def _log_scale(value: float | None, low: float, decades: float) -> float:
    """``log10(value / low) / decades`` clamped to [0, 1]; 0 when unknown."""
    if value is None or value <= low:
        return 0.0
    return min(1.0, math.log10(value / low) / decades)


def role_bucket(role: str) -> str:
    """The role's bucket: backend, frontend, qa, docs, or general for any other role."""
    words = set(re.split(r"[^a-z0-9]+", role.lower()))
    return next((bucket for bucket, aliases in _ROLE_WORDS if words & aliases), "general")


def _scope(files: tuple[str, ...]) -> tuple[int, int]:
    """Weighted file count (a glob counts :data:`GLOB_WEIGHT`) and distinct top-level dirs."""
    count = sum(GLOB_WEIGHT if any(c in p for c in "*?[") else 1 for p in files)
    tops = {p.strip("/").split("/", 1)[0] if "/" in p.strip("/") else "." for p in files}
    return count, len(tops)


def estimate_tokens(complexity: str, files: tuple[str, ...] | None) -> int:
    """Token budget of one attempt: :data:`BASE_TOKENS` (low 30k, medium 120k, high 400k).

    Each owned file beyond the first adds 10% (a glob counts as four files), up to double;
    undeclared files add 25%.
    """
    scale = 1.25 if files is None else min(2.0, 1.0 + 0.1 * max(0, _scope(files)[0] - 1))
    return round(BASE_TOKENS[complexity] * scale)


def features(ctx: TaskContext) -> dict[str, float]:
    """The named feature vector of ``ctx``, in :data:`FEATURE_NAMES` order."""
    if ctx.complexity not in COMPLEXITIES:
        raise ValueError(f"complexity must be one of {COMPLEXITIES}, got {ctx.complexity!r}")
    count, tops = _scope(ctx.files or ())
    bucket = role_bucket(ctx.role)
    bucket_of_repo, failed = repo_bucket(ctx.repo), ctx.failed
    return {
        "bias": 1.0,
        "complexity_medium": float(ctx.complexity == "medium"),
        "complexity_high": float(ctx.complexity == "high"),
        "files": min(1.0, math.log2(1 + count) / 5),  # 1 file: 0.2, 3: 0.4, 31 or more: 1
        "spread": min(1.0, max(0, tops - 1) / 3),  # top-level dirs beyond one; 4 or more: 1
        "undeclared": float(ctx.files is None),
        **{f"role_{name}": float(bucket == name) for name, _ in _ROLE_WORDS},
        "tokens": min(1.0, max(0.0, math.log10(max(ctx.est_tokens, 1) / 10_000) / 2)),
        "retry": min(ctx.attempt - 1, 2) / 2,  # 0 on a first attempt, 1 from the third
        **{f"lang_{name}": float(ctx.language == name) for name in LANGUAGES},
        **{f"repo_{n}": float(bucket_of_repo == n) for n in range(REPO_BUCKETS)},
        # the failed attempt, 0 on a first one: 1 step 0.04, 250 steps 1; 10k tokens 0,
        # 10M tokens 1; $0.01 0, $100 1
        "failed_turns": min(1.0, math.log2(1 + failed.turns) / 8)
        if failed and failed.turns
        else 0.0,
        "failed_tokens": _log_scale(failed.tokens if failed else None, 1e4, 3),
        "failed_cost": _log_scale(failed.cost_usd if failed else None, 0.01, 4),
    }
