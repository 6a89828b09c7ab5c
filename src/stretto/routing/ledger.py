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
* ``none``: the agent reported neither tokens nor dollars (a shell script): $0.

Agents count cached tokens differently; :meth:`Tokens.from_usage` brings them to one shape.
Summaries, the ``stretto cost`` table and budget checks live in :mod:`stretto.routing.costview`
(re-exported here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
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
SOURCES = frozenset({"reported", "priced", "unknown", "none"})
SCRIPT_AGENTS = frozenset({"shell"})  # agents that call no model unless they say so
_NO_PRICES: Mapping[str, ModelPrice] = MappingProxyType({})


@dataclasses.dataclass(frozen=True, slots=True)
class ModelPrice:
    """A user's price for a model, in USD per million tokens (``[prices."MODEL"]``).

    ``cached`` (cache reads) defaults to the input price; cache writes are priced as input.
    """

    input: float
    output: float
    cached: float | None = None


def model_prices(table: Mapping[str, Mapping[str, float | None]]) -> dict[str, ModelPrice]:
    """``{"my-model": {"input": 1.0, "output": 2.0}}`` (the config's ``prices``) as ModelPrices."""
    return {
        name: ModelPrice(
            float(p["input"] or 0), float(p["output"] or 0), _maybe_float(p.get("cached"))
        )
        for name, p in table.items()
    }


def _maybe_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclasses.dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts of one agent call, in one shape whatever the agent reported.

    ``input`` is the uncached input; ``cached`` the cache reads and ``cache_write`` the cache
    writes, each counted in neither of the others.
    """

    input: int = 0
    output: int = 0
    cached: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        """Every token counted, input (cached or not) and output."""
        return self.input + self.output + self.cached + self.cache_write

    @classmethod
    def from_usage(cls, usage: Mapping[str, int], agent_kind: str) -> Tokens:
        """Normalize an adapter's usage counts (``AgentResult.usage``).

        Conventions by adapter (``agent_kind``):

        * ``claude``: ``input_tokens`` excludes ``cached_tokens`` (reads) and
          ``cache_creation_tokens`` (writes), as the Anthropic API counts;
        * ``codex``, ``opencode``, ``qwen``: ``input_tokens`` includes ``cached_input_tokens``
          (OpenAI's convention); ``reasoning_output_tokens`` is part of ``output_tokens``;
        * ``gemini``: ``input_tokens`` (the prompt) includes ``cached_tokens``;
        * ``aider``: ``input_tokens`` ("sent") includes ``cached_input_tokens`` and
          ``cache_creation_input_tokens`` (stretto runs aider through LiteLLM's OpenAI route);
        * anything else (``shell``, ``command``, plugins): ``cached_tokens``,
          ``cache_creation_tokens``, ``cache_creation_input_tokens`` and ``cache_write_tokens``
          are separate from ``input_tokens``; ``cached_input_tokens`` is included in it.

        Missing, negative and non-integer counts are 0; an included part larger than the whole
        (aider rounds its counts) leaves 0 uncached input rather than a negative count.
        """
        total_in, output = _count(usage, "input_tokens"), _count(usage, "output_tokens")
        if agent_kind in ("codex", "opencode", "qwen"):
            cached, write, inside = _count(usage, "cached_input_tokens"), 0, True
        elif agent_kind == "gemini":
            cached, write, inside = _count(usage, "cached_tokens"), 0, True
        elif agent_kind == "aider":
            cached = _count(usage, "cached_input_tokens")
            write, inside = _count(usage, "cache_creation_input_tokens"), True
        else:
            included = _count(usage, "cached_input_tokens")
            write = sum(
                _count(usage, key)
                for key in ("cache_creation_tokens", "cache_creation_input_tokens")
            ) or _count(usage, "cache_write_tokens")
            separate = _count(usage, "cached_tokens") or _count(usage, "cache_read_tokens")
            total_in = max(total_in - included, 0)
            cached, inside = separate + included, False
        uncached = max(total_in - cached - write, 0) if inside else total_in
        return cls(uncached, output, cached, write)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tokens:
        """Counts as written by :meth:`Entry.to_dict`; ValueError if one is not a count."""
        values = {f.name: data.get(f.name, 0) for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"tokens.{key} must be a whole number >= 0, got {value!r}")
        return cls(**values)


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
            bound_usd=_maybe_float(get("bound_usd", int, float, optional=True)),
        )


# --- prices -------------------------------------------------------------------------------------


def _user_price(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    if model in prices:
        return prices[model]
    folded = model.casefold()
    return next((p for name, p in prices.items() if name.casefold() == folded), None)


# Probes of 1,000 tokens each (far below any long-context tier): none, input, output, cache read
# and cache write (genai-prices counts cache reads and writes inside ``input_tokens``).
_PROBE = 1000
_PROBES: tuple[dict[str, int], ...] = (
    {},
    {"input_tokens": _PROBE},
    {"output_tokens": _PROBE},
    {"input_tokens": _PROBE, "cache_read_tokens": _PROBE},
    {"input_tokens": _PROBE, "cache_write_tokens": _PROBE},
)


@functools.lru_cache(maxsize=256)
def _bundled_rates(model: str, provider: str | None) -> tuple[float, ...] | None:
    """USD per token (input, output, cache read, cache write) from genai-prices' bundled table.

    Rates are measured on small probes: an attempt's usage sums many requests, so pricing the
    sum at once would wrongly cross the long-context tiers (e.g. above 200k input tokens) that
    apply per request. Long-context requests are therefore priced at base rates. The bundled
    table is the only source: genai-prices' updater (which fetches over HTTP) is never started.
    """
    try:
        import genai_prices  # ~0.4 s to import: only when a price is needed
    except ImportError:  # not installed: every model is unknown, so flagged rather than $0
        return None

    calc, usage = genai_prices.calc_price, genai_prices.Usage
    for ref, prov in [(model, provider), *([(model, "litellm")] if "/" in model else [])]:
        try:
            base, *probes = [
                float(calc(usage(**counts), ref, provider_id=prov).total_price)
                for counts in _PROBES
            ]
        except LookupError:
            continue
        return tuple((price - base) / _PROBE for price in probes)
    return None


@functools.lru_cache(maxsize=16)
def ceiling_rates(provider: str | None) -> tuple[str, tuple[float, ...]] | None:
    """The most expensive model of ``provider`` in genai-prices' bundled table (by input plus
    output price per token) and its rates, as :func:`_bundled_rates` gives them; None when the
    table knows no model of that provider (or no provider is given)."""
    if not provider:
        return None
    try:
        from genai_prices import data
    except ImportError:
        return None
    best: tuple[str, tuple[float, ...]] | None = None
    for known in data.providers:
        if known.id != provider:
            continue
        for model in known.models:
            rates = None if model.deprecated else _bundled_rates(model.id, provider)
            if rates is not None and (best is None or rates[0] + rates[1] > sum(best[1][:2])):
                best = (model.id, rates)
    return best


def ceiling_price(tokens: Tokens, provider: str | None) -> float | None:
    """``tokens`` priced as ``provider``'s most expensive known model (:func:`ceiling_rates`)."""
    ceiling = ceiling_rates(provider)
    if ceiling is None:
        return None
    counts = (tokens.input, tokens.output, tokens.cached, tokens.cache_write)
    return round(sum(n * rate for n, rate in zip(counts, ceiling[1], strict=True)), 9)


def price_tokens(
    model: str | None,
    tokens: Tokens,
    *,
    prices: Mapping[str, ModelPrice] = _NO_PRICES,
    provider: str | None = None,
) -> float | None:
    """What ``tokens`` cost on ``model``, in USD; None if the model's price is unknown.

    Args:
        model: the model name as the agent was told it; None for an unnamed model.
        tokens: the counts to price.
        prices: the user's prices, which win over the bundled table (exact name first, then
            case-insensitively).
        provider: a genai-prices provider id (``anthropic``, ``openai``, ``google``, …) to look
            the model up in; None lets genai-prices pick by model name. A ``vendor/model`` name
            is also tried as LiteLLM spells it.

    Returns:
        The cost, rounded to a billionth of a dollar; 0.0 for no tokens at all, whatever the
        model.
    """
    if tokens.total == 0:
        return 0.0
    if model is None:
        return None
    user = _user_price(model, prices)
    if user is not None:
        cached = user.input if user.cached is None else user.cached
        per_mtok = (
            (tokens.input + tokens.cache_write) * user.input
            + tokens.output * user.output
            + tokens.cached * cached
        )
        return round(per_mtok / 1_000_000, 9)
    rates = _bundled_rates(model, provider)
    if rates is None:
        return None
    counts = (tokens.input, tokens.output, tokens.cached, tokens.cache_write)
    return round(sum(n * rate for n, rate in zip(counts, rates, strict=True)), 9)


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
    prices: Mapping[str, ModelPrice] = _NO_PRICES,
    provider: str | None = None,
    ts: float | None = None,
    complexity: str | None = None,
) -> Entry:
    """The ledger entry for one finished agent call, its cost settled (see the module doc).

    A reported cost that is negative or not finite is ignored (the tokens are priced instead).
    ``provider`` (genai-prices' id: ``openai``, ``anthropic``, ``google``) looks the model up
    there and, for an unknown price, sets ``bound_usd`` from that provider's top price.
    """
    tokens = Tokens.from_usage(usage, agent_kind)
    bound: float | None = None
    cost: float | None
    if reported_cost is not None and math.isfinite(reported_cost) and reported_cost >= 0:
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
    prices: Mapping[str, ModelPrice] = _NO_PRICES,
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
