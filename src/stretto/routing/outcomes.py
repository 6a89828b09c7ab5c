"""Recorded outcomes of real agents, and the rules for replaying them to a routing policy.

An outcomes file (CSV, the columns of SWE-bench Pro's ``outcomes.csv``: ``instance_id, repo,
model, resolved, turns, cost_usd, tokens_in, tokens_out, api_calls``, and optionally
``language``, ``complexity``, ``role``) says, per task and model configuration, whether the
agent's patch resolved the task and what the attempt used. :func:`load_outcomes` reads it
into a :class:`World`:

* **arms** are the priced configurations (a ``cost_usd`` on every row of theirs), one
  ``Arm("swe-agent", <configuration>, tier)`` each, tiers by mean cost per attempt (the
  cheapest ``fast``, the dearest ``strong``);
* **tasks** are those every arm ran; the rest are counted in :attr:`World.dropped`;
* what a policy may **see** of a task before choosing (:class:`TaskView`): its id, repository,
  language, and complexity and role when the file gives them; after an attempt, that attempt
  (:class:`Seen`: landed, turns, tokens, cost). Never another arm's outcome: reading one
  through :meth:`TaskView.recorded` before it was chosen raises :class:`SealedOutcome`;
  only the oracle's view is open.

:func:`play` runs one task under the replay rules: an attempt's outcome and cost are the
recorded ones, at most ``max_attempts`` attempts (stretto's default, 3), and a re-run of an arm
repeats its recorded result and costs again. Pure once loaded; used by
``benchmarks/routing/replay.py`` and :mod:`~stretto.routing.offline`.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from stretto.errors import StrettoError
from stretto.routing.arms import TIERS, Arm

COLUMNS = ("instance_id", "repo", "model", "resolved", "turns", "cost_usd")
OPTIONAL = ("tokens_in", "tokens_out", "api_calls", "language", "complexity", "role")
AGENT = "swe-agent"  # the scaffold every configuration of SWE-bench Pro ran in
MAX_ATTEMPTS = 3  # stretto's default attempts per task (plans.plan.DEFAULT_MAX_ATTEMPTS)
#: Languages of the public SWE-bench Pro repositories (used when the file has no language).
LANGUAGES: Mapping[str, str] = {
    "NodeBB/NodeBB": "javascript",
    "ansible/ansible": "python",
    "element-hq/element": "typescript",
    "element-hq/element-web": "typescript",
    "flipt-io/flipt": "go",
    "future-architect/vuls": "go",
    "gravitational/teleport": "go",
    "internetarchive/openlibrary": "python",
    "navidrome/navidrome": "go",
    "protonmail/webclients": "typescript",
    "qutebrowser/qutebrowser": "python",
    "tutao/tutanota": "typescript",
}


class OutcomesError(StrettoError):
    """An outcomes file that cannot be replayed: the message names file:line, field and fix."""

    exit_code = 2


class SealedOutcome(RuntimeError):
    """A policy read an arm's recorded outcome before choosing that arm: only the oracle may."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """What one configuration did on one task, as recorded."""

    resolved: bool
    turns: int
    cost_usd: float
    tokens_in: int | None = None
    tokens_out: int | None = None
    api_calls: int | None = None

    @property
    def tokens(self) -> int | None:
        """Tokens sent and received, when recorded."""
        if self.tokens_in is None and self.tokens_out is None:
            return None
        return (self.tokens_in or 0) + (self.tokens_out or 0)


@dataclass(frozen=True, slots=True)
class Task:
    """One recorded task: what anyone may know of it, and (private) every arm's outcome."""

    id: str
    repo: str
    language: str
    complexity: str | None
    role: str | None
    outcomes: Mapping[str, Recorded] = field(repr=False)  # by arm key


@dataclass(frozen=True, slots=True)
class World:
    """The arms, the tasks every arm ran, and how many tasks were left out."""

    path: Path
    arms: tuple[Arm, ...]  # cheapest first
    mean_cost: Mapping[str, float]  # mean USD of one attempt, by arm key (the arm's price)
    tasks: tuple[Task, ...]
    dropped: int  # tasks some arm did not run

    def strongest(self) -> Arm:
        """The arm that lands the most tasks alone (ties: the dearer)."""
        return max(self.arms, key=lambda a: (self.landed_alone(a), self.mean_cost[a.key]))

    def landed_alone(self, arm: Arm) -> int:
        return sum(t.outcomes[arm.key].resolved for t in self.tasks)

    def subset(self, keep: Sequence[Task]) -> World:
        """The same arms and prices over ``keep`` (a split for held-out checks)."""
        return World(self.path, self.arms, self.mean_cost, tuple(keep), self.dropped)


@dataclass(frozen=True, slots=True)
class Seen:
    """One attempt as a policy sees it once it ended (and as ``stretto run`` sees it)."""

    arm: Arm
    attempt: int  # 1-based
    landed: bool
    turns: int
    tokens: int | None
    cost_usd: float


class TaskView:
    """A task as a policy may see it: an arm's outcome opens only once that arm was chosen."""

    def __init__(self, task: Task, *, open_all: bool = False) -> None:
        self.id = task.id
        self.repo = task.repo
        self.language = task.language
        self.complexity = task.complexity
        self.role = task.role
        self._task = task
        self._open: set[str] = set(task.outcomes) if open_all else set()

    def recorded(self, arm: Arm) -> Recorded:
        """The recorded outcome of ``arm`` on this task.

        Raises:
            SealedOutcome: ``arm`` has not been chosen for this task yet (and this is not the
                oracle's view).
        """
        if arm.key not in self._open:
            raise SealedOutcome(
                f"task {self.id}: the outcome of {arm.key} was read before it was chosen; "
                "only the oracle may look ahead"
            )
        return self._task.outcomes[arm.key]

    def _reveal(self, arm: Arm) -> Recorded:
        self._open.add(arm.key)
        return self._task.outcomes[arm.key]


class ReplayPolicy(Protocol):
    """A routing policy as the replay drives it."""

    def first(self, task: TaskView) -> Arm | None:
        """The arm of the first attempt (None: do not attempt the task)."""

    def next(self, task: TaskView, attempts: Sequence[Seen]) -> Arm | None:
        """The arm after ``attempts`` all failed (None: give the task up)."""

    def learn(self, task: TaskView, seen: Seen) -> None:
        """One attempt ended: what it did is now known to the policy."""

    def end(self, task: TaskView, landed: bool) -> None:
        """The task ended: it landed, ran out of attempts, or was given up."""


@dataclass(frozen=True, slots=True)
class Played:
    """How one task went under a policy."""

    task: str
    repo: str
    landed: bool
    cost_usd: float
    attempts: tuple[Seen, ...]


def play(
    task: Task, policy: ReplayPolicy, *, max_attempts: int = MAX_ATTEMPTS, oracle: bool = False
) -> Played:
    """Replay ``task`` to ``policy``: recorded outcomes and costs, at most ``max_attempts``
    attempts, a re-run of an arm repeating its recorded result (and cost). Only with ``oracle``
    may the policy read outcomes before choosing."""
    view = TaskView(task, open_all=oracle)
    seen: list[Seen] = []
    arm = policy.first(view)
    while arm is not None:
        if arm.key not in task.outcomes:
            raise ValueError(f"{arm.key} is not an arm of this replay")
        rec = view._reveal(arm)
        attempt = Seen(arm, len(seen) + 1, rec.resolved, rec.turns, rec.tokens, rec.cost_usd)
        seen.append(attempt)
        policy.learn(view, attempt)
        if attempt.landed or len(seen) >= max_attempts:
            break
        arm = policy.next(view, tuple(seen))
    landed = bool(seen) and seen[-1].landed
    policy.end(view, landed)
    return Played(task.id, task.repo, landed, math.fsum(s.cost_usd for s in seen), tuple(seen))


def load_outcomes(path: Path) -> World:
    """Read an outcomes CSV (columns in the module docstring) into a :class:`World`.

    Repositories given as an owner alone (``protonmail``) take the one full name seen with that
    owner elsewhere in the file (``protonmail/webclients``).

    Raises:
        OutcomesError: unreadable file, missing column, bad value (naming file:line and field),
            a task and model given twice, or fewer than one priced configuration.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OutcomesError(f"{path}: cannot read the outcomes file ({exc})") from exc
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise OutcomesError(
            f"{path}:1: missing column(s) {', '.join(missing)}; an outcomes file has the "
            f"header {','.join(COLUMNS + OPTIONAL[:3])}"
        )
    rows: dict[str, dict[str, Recorded]] = {}
    info: dict[str, tuple[str, str, str | None, str | None]] = {}
    priced: set[str] = set()
    seen: set[str] = set()
    for line, row in enumerate(reader, 2):
        where = f"{path}:{line}"
        task, model = (row.get("instance_id") or "").strip(), (row.get("model") or "").strip()
        if not task or not model:
            raise OutcomesError(f"{where}: instance_id and model must not be empty")
        seen.add(task)
        rec = _recorded(row, where)
        if rec is None:  # no cost: not an arm of the replay
            continue
        priced.add(model)
        if model in rows.setdefault(task, {}):
            raise OutcomesError(f"{where}: task {task} and model {model} appear twice; keep one")
        rows[task][model] = rec
        repo = (row.get("repo") or "").strip()
        lang = (row.get("language") or "").strip().lower()
        cx, role = (row.get("complexity") or "").strip() or None, (row.get("role") or "").strip()
        if cx is not None and cx not in ("low", "medium", "high"):
            raise OutcomesError(f"{where}: complexity must be low, medium or high, got {cx!r}")
        info.setdefault(task, (repo, lang, cx, role or None))
    models = sorted(priced)
    if not models:
        raise OutcomesError(
            f"{path}: no configuration has a cost_usd; the arms of a replay are the priced ones"
        )
    full = _full_repos(r for r, _, _, _ in info.values())
    mean = {m: math.fsum(t[m].cost_usd for t in rows.values() if m in t) for m in models}
    count = {m: sum(m in t for t in rows.values()) for m in models}
    mean = {m: mean[m] / count[m] for m in models}
    by_price = sorted(models, key=lambda m: (mean[m], m))
    arms = tuple(Arm(AGENT, m, _tier(i, len(by_price))) for i, m in enumerate(by_price))
    tasks = []
    for task_id in sorted(rows):
        outcomes = rows[task_id]
        if not all(m in outcomes for m in models):
            continue
        repo, lang, cx, role = info[task_id]
        repo = full.get(repo, repo)
        language = lang or LANGUAGES.get(repo, "")
        keyed = {a.key: outcomes[a.model or ""] for a in arms}
        tasks.append(Task(task_id, repo, language, cx, role, keyed))
    if not tasks:
        raise OutcomesError(f"{path}: no task was run by every priced configuration ({models})")
    prices = {a.key: mean[a.model or ""] for a in arms}
    return World(path, arms, prices, tuple(tasks), len(seen) - len(tasks))


def _tier(rank: int, n: int) -> str:
    """Tiers by price rank: the cheapest fast, the dearest strong, the middle balanced."""
    if n == 1 or rank == n - 1:
        return TIERS[-1]
    return TIERS[0] if rank == 0 or rank < n // 3 else TIERS[1]


def _full_repos(repos: Iterable[str]) -> dict[str, str]:
    """Owner -> ``owner/name`` where the file names one repository of that owner in full."""
    names: dict[str, set[str]] = {}
    for repo in repos:
        if "/" in repo:
            names.setdefault(repo.split("/", 1)[0], set()).add(repo)
    return {owner: next(iter(full)) for owner, full in names.items() if len(full) == 1}


def _recorded(row: Mapping[str, str | None], where: str) -> Recorded | None:
    """A row's outcome, or None when it has no cost (an unpriced configuration)."""
    cost_text = (row.get("cost_usd") or "").strip()
    if not cost_text:
        return None

    def number(name: str, required: bool) -> float | None:
        text = (row.get(name) or "").strip()
        if not text:
            if required:
                raise OutcomesError(f"{where}: {name} is empty; give a number")
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 <= value < math.inf:
            raise OutcomesError(f"{where}: {name} must be a number >= 0, got {text!r}")
        return value

    resolved = (row.get("resolved") or "").strip()
    if resolved not in ("0", "1"):
        raise OutcomesError(f"{where}: resolved must be 0 or 1, got {resolved!r}")
    turns, cost = number("turns", True) or 0.0, number("cost_usd", True) or 0.0
    ins, outs, calls = (number(n, False) for n in ("tokens_in", "tokens_out", "api_calls"))
    return Recorded(
        resolved == "1",
        int(turns),
        cost,
        None if ins is None else int(ins),
        None if outs is None else int(outs),
        None if calls is None else int(calls),
    )
