"""Tokens and dollars per agent call, kept across runs in ``<repo>/.stretto/ledger.jsonl``.

One JSON line per attempt (or planning call), appended under a ``flock`` and fsynced::

    {"ts": 1767225600.1, "run_id": "r1", "task": "api", "attempt": 1, "kind": "attempt",
     "agent": "claude", "model": "claude-sonnet-4-5", "tier": "balanced", "complexity": "medium",
     "tokens": {"input": 1200, "output": 800, "cached": 50000, "cache_write": 3000},
     "cost_usd": 0.0413, "source": "reported", "outcome": "landed"}

Where a cost comes from (``source``):

* ``reported``: the agent printed dollars itself (Claude Code, aider, opencode): used as-is;
* ``priced``: only tokens were reported; priced from the user's ``[prices."MODEL"]`` table, else
  from the price table bundled with ``genai-prices`` (never updated over the network);
* ``unknown``: tokens for a model neither knows: ``cost_usd`` is None, never a silent $0, and
  ``stretto cost`` lists such entries with the fix. Budgets count such an entry at
  ``bound_usd``: its tokens priced as the most expensive model the bundled table knows for the
  agent's provider (e.g. OpenAI's ``o1-pro``); with no such bound (a provider the table does
  not know), a run with a budget stops starting attempts (see :mod:`stretto.routing.dispatch`);
* ``none``: the agent reported neither tokens nor dollars (a shell script): $0;
* ``local``: the agent ran on a local model server (``local = "NAME"``): $0 whatever it
  reported, ``local`` names the server; budgets never count it.

Each attempt's entry also keeps ``seconds``: how long its agent ran (what a local attempt
costs instead of dollars).

Agents count cached tokens differently; :meth:`Tokens.from_usage` brings them to one shape.
Summaries, the ``stretto cost`` table and budget checks live in :mod:`stretto.routing.costview`,
token counts and pricing in :mod:`stretto.routing.prices` (both re-exported here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stretto.errors import RunError
from stretto.files import fsync_dir
from stretto.routing.costview import (
    BudgetCheck,
    check_budget,
    render_cost,
    summarize,
    totals,
    utc_day,
)
from stretto.routing.prices import (
    NO_PRICES,
    ModelPrice,
    Tokens,
    ceiling_price,
    model_prices,
    price_tokens,
)

__all__ = [
    "LEDGER_FILE",
    "SCRIPT_AGENTS",
    "SOURCES",
    "BudgetCheck",
    "Entry",
    "Ledger",
    "ModelPrice",
    "Tokens",
    "check_budget",
    "estimate_attempt_cost",
    "make_entry",
    "model_prices",
    "price_tokens",
    "render_cost",
    "summarize",
    "totals",
    "utc_day",
]

LEDGER_FILE = "ledger.jsonl"
SOURCES = frozenset({"reported", "priced", "unknown", "none", "local"})
SCRIPT_AGENTS = frozenset({"shell"})  # agents that call no model unless they say so


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One ledger line: what one attempt or planning call consumed and cost.

    ``task`` is "" and ``attempt`` 0 for a planning call (``kind`` "plan" or "split");
    ``cost_usd`` is None exactly when ``source`` is "unknown".
    """

    ts: float
    run_id: str
    task: str
    attempt: int
    kind: str
    agent: str
    model: str | None
    tier: str | None
    tokens: Tokens
    cost_usd: float | None
    source: str
    outcome: str
    complexity: str | None = None
    bound_usd: float | None = None  # unknown price: the tokens at the provider's top price
    local: str | None = None  # the local model server it ran on ([local.NAME]): $0
    seconds: float | None = None  # how long the agent ran

    @property
    def counted_usd(self) -> float:
        """What budgets count: the cost, else (unknown price) its upper bound, else 0."""
        if self.cost_usd is not None:
            return self.cost_usd
        return self.bound_usd or 0.0

    @property
    def key(self) -> tuple[str, str, int, str]:
        """``(run_id, task, attempt, kind)``: an entry written twice counts once (last wins)."""
        return (self.run_id, self.task, self.attempt, self.kind)

    def to_dict(self) -> dict[str, Any]:
        """The entry as the plain dict written to the ledger (``tokens`` a nested dict)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Entry:
        """Read an entry back; unknown keys are ignored (newer stretto versions may add some).

        Raises:
            ValueError: a key is missing or has the wrong type.
        """

        def get(key: str, *types: type, optional: bool = False) -> Any:
            if key not in data and not optional:
                raise ValueError(f"missing key {key!r}")
            value = data.get(key)
            if (value is None and optional) or (
                isinstance(value, types) and not isinstance(value, bool)
            ):
                return value
            names = " or ".join(t.__name__ for t in types)
            raise ValueError(f"{key} must be {names}, got {value!r}")

        ts, cost = get("ts", int, float), get("cost_usd", int, float, optional=True)
        if not math.isfinite(ts) or (cost is not None and not math.isfinite(cost)):
            raise ValueError("ts and cost_usd must be finite numbers")
        source = get("source", str)
        if source not in SOURCES:
            raise ValueError(f"source must be one of {sorted(SOURCES)}, got {source!r}")
        raw_tokens = get("tokens", dict)
        return cls(
            ts=float(ts),
            run_id=get("run_id", str),
            task=get("task", str),
            attempt=get("attempt", int),
            kind=get("kind", str),
            agent=get("agent", str),
            model=get("model", str, optional=True),
            tier=get("tier", str, optional=True),
            tokens=Tokens.from_dict(raw_tokens),
            cost_usd=None if cost is None else float(cost),
            source=source,
            outcome=get("outcome", str),
            complexity=get("complexity", str, optional=True),
            bound_usd=_float_or_none(get("bound_usd", int, float, optional=True)),
            local=get("local", str, optional=True),
            seconds=_float_or_none(get("seconds", int, float, optional=True)),
        )


# --- prices -------------------------------------------------------------------------------------


def make_entry(
    *,
    run_id: str,
    task: str,
    attempt: int,
    kind: str,
    agent: str,
    agent_kind: str,
    model: str | None,
    tier: str | None,
    usage: Mapping[str, int],
    reported_cost: float | None,
    outcome: str,
    prices: Mapping[str, ModelPrice] = NO_PRICES,
    provider: str | None = None,
    ts: float | None = None,
    complexity: str | None = None,
    local: str | None = None,
    seconds: float | None = None,
) -> Entry:
    """The ledger entry for one finished agent call, its cost settled (see the module doc).

    A reported cost that is negative or not finite is ignored (the tokens are priced instead).
    ``provider`` (genai-prices' id: ``openai``, ``anthropic``, ``google``) looks the model up
    there and, for an unknown price, sets ``bound_usd`` from that provider's top price.
    ``local`` (a local server's name) makes the entry cost $0, source ``local``.
    """
    tokens = Tokens.from_usage(usage, agent_kind)
    bound: float | None = None
    cost: float | None
    if local is not None:
        cost, source = 0.0, "local"
    elif reported_cost is not None and math.isfinite(reported_cost) and reported_cost >= 0:
        cost, source = float(reported_cost), "reported"
    elif tokens.total == 0:
        cost, source = 0.0, "none"
    else:
        cost = price_tokens(model, tokens, prices=prices)
        if cost is None and provider is not None:
            cost = price_tokens(model, tokens, prices=prices, provider=provider)
        source = "unknown" if cost is None else "priced"
        if cost is None:
            bound = ceiling_price(tokens, provider)
    return Entry(
        ts=time.time() if ts is None else ts,
        run_id=run_id,
        task=task,
        attempt=attempt,
        kind=kind,
        agent=agent,
        model=model,
        tier=tier,
        tokens=tokens,
        cost_usd=cost,
        source=source,
        outcome=outcome,
        complexity=complexity,
        bound_usd=bound,
        local=local,
        seconds=None if seconds is None else round(seconds, 3),
    )


# --- the file -----------------------------------------------------------------------------------


def _drop_torn_tail(fd: int) -> None:
    """Cut a last line without its newline (a writer died mid-write); the caller holds the lock."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":  # rare: only after a crash, so read it all
        os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)


class Ledger:
    """The spend ledger of a repository: append-only, shared by every run and process."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_repo(cls, repo: Path) -> Ledger:
        """The ledger at ``<repo>/.stretto/ledger.jsonl``."""
        return cls(repo / ".stretto" / LEDGER_FILE)

    def append(self, entry: Entry) -> None:
        """Write ``entry`` as one line, fsynced before returning.

        The line goes out in one ``write`` on an ``O_APPEND`` descriptor while holding an
        exclusive ``flock`` on the file, so concurrent runs never interleave; a torn last line
        left by a crashed writer is cut off first.

        Raises:
            ValueError: the entry does not serialize (e.g. a NaN cost).
            RunError: the write failed (disk full, permissions); the file is left as it was.
        """
        line = json.dumps(
            entry.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        data = (line + "\n").encode("utf-8")
        fd, start = -1, -1
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX)
            _drop_torn_tail(fd)
            start = os.fstat(fd).st_size
            view = memoryview(data)
            while view:  # a short write only happens when the disk fills up
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            if created:
                fsync_dir(self.path.parent)
        except OSError as exc:
            if start >= 0:  # cut back a partial line: the tail after a failed write is unknown
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
            raise RunError(
                f"cannot write the spend ledger {self.path}: {exc.strerror}; check the disk"
                " space and the permissions of that folder"
            ) from None
        finally:
            if fd >= 0:
                os.close(fd)  # also releases the lock

    def entries(self, *, run_id: str | None = None) -> list[Entry]:
        """Every entry (of one run, if ``run_id`` is given), in file order, without locking.

        A last line without its newline (a write in progress, or cut by a crash) is skipped,
        as are blank lines; an entry written twice (same :attr:`Entry.key`) counts once, as
        written last.

        Raises:
            RunError: the file is unreadable, or damaged before its last line (names file:line).
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RunError(f"cannot read the spend ledger {self.path}: {exc.strerror}") from None
        found: dict[tuple[str, str, int, str], Entry] = {}
        lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line.decode("utf-8"))
                if not isinstance(obj, dict):
                    raise ValueError("not a JSON object")
                entry = Entry.from_dict(obj)
            except (UnicodeDecodeError, ValueError) as exc:
                raise RunError(
                    f"{self.path}:{lineno}: spend ledger line is damaged ({exc}); fix or delete"
                    " that line (it is one attempt's record), or move the file aside to start"
                    " the spend history afresh"
                ) from None
            if run_id is None or entry.run_id == run_id:
                found.pop(entry.key, None)
                found[entry.key] = entry
        return list(found.values())

    def spent(self, *, run_id: str | None = None, day: str | None = None) -> float:
        """Known dollars spent (by one run, and/or on one UTC day ``YYYY-MM-DD``).

        Entries of unknown price count 0 here; :meth:`unknown` lists them.
        """
        if day is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            raise ValueError(f"day must be a date like 2026-01-31, got {day!r}")
        return sum(
            e.cost_usd or 0.0
            for e in self.entries(run_id=run_id)
            if day is None or utc_day(e.ts) == day
        )

    def unknown(self, *, run_id: str | None = None) -> list[Entry]:
        """The entries whose price is unknown (tokens of a model with no price)."""
        return [e for e in self.entries(run_id=run_id) if e.source == "unknown"]


# --- estimates and budgets ----------------------------------------------------------------------

# The split assumed for an attempt of ``est_tokens`` tokens, from agent runs where most of the
# context is re-read from the prompt cache: 85% input (half of it cache reads), 15% output.
INPUT_SHARE, CACHED_SHARE_OF_INPUT = 0.85, 0.5
HISTORY_MIN = 3


def past_median(costs: Sequence[float]) -> float | None:
    """The median of past attempts' costs, once there are at least ``HISTORY_MIN`` of them.

    (Not ``statistics.median``: importing ``statistics`` costs every run's start-up ~5 ms.)
    """
    if len(costs) < HISTORY_MIN:
        return None
    ordered = sorted(costs)
    mid = len(ordered) // 2
    return float(ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2)


def estimate_attempt_cost(
    agent: str,
    model: str | None,
    complexity: str,
    est_tokens: int,
    history: Sequence[Entry],
    *,
    prices: Mapping[str, ModelPrice] = NO_PRICES,
    provider: str | None = None,
) -> float | None:
    """What the next attempt will probably cost, in USD, before it starts.

    With at least 3 past attempts of the same agent, model and complexity of known cost in
    ``history``, their median cost. Otherwise ``est_tokens`` priced as 85% input, half of that
    cache reads, and 15% output (e.g. 100,000 tokens: 42,500 uncached input, 42,500 cached,
    15,000 output).

    Returns:
        The estimate; 0.0 for a script agent (``shell``) with no model; None when the model is
        None or its price unknown.
    """
    past = [
        e.cost_usd
        for e in history
        if e.kind == "attempt"
        and e.agent == agent
        and e.model == model
        and e.complexity == complexity
        and e.cost_usd is not None
    ]
    typical = past_median(past)
    if typical is not None:
        return typical
    if model is None:
        return 0.0 if agent in SCRIPT_AGENTS else None
    est = max(est_tokens, 0)
    uncached = cached = round(est * INPUT_SHARE * (1 - CACHED_SHARE_OF_INPUT))
    tokens = Tokens(input=uncached, output=max(est - uncached - cached, 0), cached=cached)
    return price_tokens(model, tokens, prices=prices, provider=provider)
