"""Views of the spend ledger and budget decisions: pure functions over entries and dollars.

:func:`summarize` and :func:`totals` return plain dicts (``stretto cost --json`` dumps them as
they are); :func:`render_cost` turns them into the text table of ``stretto cost``. Entries of
unknown price are never folded into the dollars as $0: each row counts them in ``unknown`` and
the table lists them with the fix. :func:`check_budget` decides whether the next attempt fits
the run budget and the daily cap. Re-exported by :mod:`stretto.routing.ledger`; this module imports
nothing from it at run time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stretto.routing.ledger import Entry

GROUPS = ("task", "model", "agent", "day", "run")
NO_MODEL = "(no model)"


def utc_day(ts: float) -> str:
    """The UTC calendar day of a Unix time, ``YYYY-MM-DD``."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()


def _group_key(by: str) -> Callable[[Entry], str]:
    keys: dict[str, Callable[[Entry], str]] = {
        "task": lambda e: e.task or f"({e.kind})",
        "model": lambda e: e.model or NO_MODEL,
        "agent": lambda e: e.agent,
        "day": lambda e: utc_day(e.ts),
        "run": lambda e: e.run_id,
    }
    if by not in keys:
        raise ValueError(f"cannot group spend by {by!r}; choose one of {', '.join(GROUPS)}")
    return keys[by]


Landed = Collection[tuple[str, str, int]]
"""The attempts that landed, ``(run_id, task, attempt)``, read from the runs' journals (the
ledger's ``outcome`` is the agent's own verdict, e.g. ``success``, not whether work landed)."""


def _row(key: str, entries: Sequence[Entry], landed: Landed = ()) -> dict[str, Any]:
    unknown: dict[str, int] = {}
    for e in entries:
        if e.cost_usd is None:
            name = e.model or NO_MODEL
            unknown[name] = unknown.get(name, 0) + 1
    local = [e for e in entries if e.source == "local"]
    return {
        "key": key,
        "attempts": len(entries),
        # on a local model server ([local.NAME]): $0, their agents' time instead
        "local": len(local),
        "local_seconds": round(sum(e.seconds or 0.0 for e in local), 3),
        "landed": sum(
            e.kind == "attempt" and (e.run_id, e.task, e.attempt) in landed for e in entries
        ),
        "input_tokens": sum(e.tokens.input for e in entries),
        "cached_tokens": sum(e.tokens.cached for e in entries),
        "cache_write_tokens": sum(e.tokens.cache_write for e in entries),
        "output_tokens": sum(e.tokens.output for e in entries),
        "cost_usd": round(sum(e.cost_usd or 0.0 for e in entries), 6),
        "unknown": sum(unknown.values()),
        "unknown_models": dict(sorted(unknown.items())),
        # what budgets counted for them: each at its provider's top known price
        "unknown_bound_usd": round(
            sum(e.bound_usd or 0.0 for e in entries if e.cost_usd is None), 6
        ),
    }


def summarize(entries: Sequence[Entry], by: str, landed: Landed = ()) -> list[dict[str, Any]]:
    """One row per task, model, agent, UTC day or run (``by``), costliest first, then by key.

    Each row: ``key``, ``attempts`` (entries, planning calls included), ``landed``, token sums
    (``input_tokens``: uncached, ``cached_tokens``, ``cache_write_tokens``, ``output_tokens``),
    ``cost_usd`` (the sum of known costs), ``unknown`` (entries of unknown price, not in
    ``cost_usd``) and ``unknown_models`` (model -> such entries). Planning calls group under
    task ``(plan)`` / ``(split)``; entries without a model under ``(no model)``.

    Raises:
        ValueError: ``by`` is not one of task, model, agent, day, run.
    """
    key_of = _group_key(by)
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(key_of(entry), []).append(entry)
    rows = [_row(key, group, landed) for key, group in groups.items()]
    return sorted(rows, key=lambda row: (-row["cost_usd"], row["key"]))


def totals(entries: Sequence[Entry], landed: Landed = ()) -> dict[str, Any]:
    """The row of all ``entries`` (key ``total``), plus ``runs``: how many runs they span."""
    return {**_row("total", entries, landed), "runs": len({e.run_id for e in entries})}


def _usd(value: float) -> str:
    return f"${value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"${value:.4f}"


def _count(n: int) -> str:
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def _cost_cell(row: dict[str, Any]) -> str:
    if row["unknown"] and row["unknown"] == row["attempts"]:
        return "?"
    local = row.get("local", 0)
    if local and local == row["attempts"]:
        return "local $0"
    marks = (" +?" if row["unknown"] else "") + (f" ({local} local)" if local else "")
    return _usd(row["cost_usd"]) + marks


def render_cost(
    rows: Sequence[dict[str, Any]], totals: dict[str, Any], by: str, *, title: str
) -> list[str]:
    """The ``stretto cost`` table as lines, from :func:`summarize` rows and :func:`totals`.

    Token columns: ``input`` is uncached input plus cache writes, ``cached`` the cache reads.
    A cost marked ``+?`` (or ``?``) leaves out entries of unknown price; they are listed after
    the table, each model with the ``[prices."MODEL"]`` table that would price it.
    """
    if not totals["attempts"]:
        return [title, "no spend recorded yet"]
    head = (by, "attempts", "landed", "input", "cached", "output", "cost")
    table = [head] + [
        (
            str(row["key"]),
            str(row["attempts"]),
            str(row["landed"]),
            _count(row["input_tokens"] + row["cache_write_tokens"]),
            _count(row["cached_tokens"]),
            _count(row["output_tokens"]),
            _cost_cell(row),
        )
        for row in [*rows, totals]
    ]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    out = [title, line(table[0])]
    out += [line(cells) for cells in table[1:-1]]
    out += ["-" * len(line(table[0])), line(table[-1])]
    if totals.get("local"):
        n, seconds = totals["local"], totals.get("local_seconds", 0.0)
        out.append(
            f"{n} attempt{'s' if n != 1 else ''} ran on local model servers: $0, "
            f"{seconds:,.1f} s of agent time, not counted by budgets"
        )
    return out + _unknown_notes(totals["unknown_models"], totals.get("unknown_bound_usd", 0.0))


def _unknown_notes(unknown_models: dict[str, int], bound: float) -> list[str]:
    notes: list[str] = []
    named = [model for model in unknown_models if model != NO_MODEL]
    for model, n in unknown_models.items():
        what = f"{n} attempt{'s' if n != 1 else ''} of unknown price"
        source = "no model named" if model == NO_MODEL else f"model {model}"
        notes.append(f"+ {what} ({source}): not in the dollars above")
    if unknown_models:
        notes.append(
            f"  budgets counted them at {_usd(bound)}: each at its provider's most expensive "
            "known price (none where the provider has no known price)"
        )
    if NO_MODEL in unknown_models:
        notes.append("  to price attempts with no model named, set the step's or the agent's model")
    if named:
        notes.append("  to count them, add their prices to stretto.toml (USD per million tokens):")
        for model in named:
            notes += [f'    [prices."{model}"]', "    input = ...", "    output = ..."]
    return notes


# --- budgets --------------------------------------------------------------------------------------

_EPSILON = 1e-9  # dollars: float sums are compared with this slack


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """Whether the next attempt may start, and why (``reason`` is ready to show the user).

    ``left`` is the smaller of what remains of the run budget and of the daily cap, after what
    running attempts reserved; None when neither is set.
    """

    allowed: bool
    estimate: float | None
    left: float | None
    reason: str


def check_budget(
    *,
    estimate: float | None,
    run_spent: float,
    run_budget: float | None,
    day_spent: float,
    daily_cap: float | None,
    reserved: float = 0.0,
) -> BudgetCheck:
    """Decide, before a spawn, whether an attempt estimated at ``estimate`` fits the budgets.

    Args:
        estimate: the attempt's estimated cost (:func:`estimate_attempt_cost`); None if unknown.
        run_spent: dollars this run has spent so far (:meth:`Ledger.spent` with ``run_id``).
        run_budget: the run's budget; None for no limit.
        day_spent: dollars spent today, UTC, across runs (:meth:`Ledger.spent` with ``day``).
        daily_cap: the daily cap; None for no limit.
        reserved: the estimates of attempts still running, not yet in the ledger.

    Returns:
        Refused when the estimate exceeds what is left of either limit, or (for an unknown
        estimate) when nothing is left; an unknown estimate is otherwise allowed, with a reason
        that says so for the runner to warn about.
    """
    limits = [
        (name, limit, spent)
        for name, limit, spent in (
            ("budget", run_budget, run_spent),
            ("daily cap", daily_cap, day_spent),
        )
        if limit is not None
    ]
    if not limits:
        return BudgetCheck(True, estimate, None, "no budget set")
    held = f" (+ {_usd(reserved)} reserved by running attempts)" if reserved > 0 else ""
    left = min(limit - spent - reserved for _, limit, spent in limits)
    for name, limit, spent in limits:
        room = limit - spent - reserved
        today = " today (UTC)" if name == "daily cap" else ""
        spent_text = f"{_usd(spent)} of {_usd(limit)} spent{today}{held}"
        if estimate is None and room <= _EPSILON:
            return BudgetCheck(False, None, left, f"{name} reached: {spent_text}")
        if estimate is not None and estimate > room + _EPSILON:
            why = f"{name} reached: {spent_text}, next attempt estimated {_usd(estimate)}"
            return BudgetCheck(False, estimate, left, why)
    if estimate is None:
        why = f"estimate unknown (no price for the model); {_usd(left)} left, attempt unchecked"
        return BudgetCheck(True, None, left, why)
    return BudgetCheck(
        True, estimate, left, f"next attempt estimated {_usd(estimate)}, {_usd(left)} left"
    )
