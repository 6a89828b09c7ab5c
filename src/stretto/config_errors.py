"""What to say about a stretto.toml the schema refused, and where: the line and column a key
is written at (:func:`locate`), and a message with the fix for each kind of problem
(:func:`message`). Used by :mod:`stretto.config` only.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

_KEY = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER_RE = re.compile(rf"^\s*\[\[?\s*(?P<key>{_DOTTED})\s*\]")
_PAIR_RE = re.compile(rf"^\s*(?P<key>{_DOTTED})\s*=")


def _split_key(dotted: str) -> tuple[str, ...]:
    return tuple(part.strip("\"'") for part in re.findall(_KEY, dotted))


def locate(text: str, loc: tuple[str, ...]) -> tuple[int, int]:
    """Line and column (1-based) where the key at ``loc`` (or its nearest parent) is written."""
    entries: list[tuple[tuple[str, ...], int, int, str, int]] = []  # path, line, column, rest
    header: tuple[str, ...] = ()
    arrays: dict[tuple[str, ...], int] = {}  # [[array.of.tables]] seen so far, for the index
    for number, line in enumerate(text.splitlines(), 1):
        if match := _HEADER_RE.match(line):
            header = _split_key(match["key"])
            if line.lstrip().startswith("[["):
                arrays[header] = arrays.get(header, -1) + 1
                header = (*header, str(arrays[header]))
            entries.append((header, number, line.index("[") + 1, "", 0))
        elif match := _PAIR_RE.match(line):
            path = header + _split_key(match["key"])
            entries.append((path, number, match.start("key") + 1, line[match.end() :], match.end()))
    for size in range(len(loc), 0, -1):
        want = loc[:size]  # the key itself, else a key or table under it, else its parent
        hits = [e for e in entries if e[0] == want] or [e for e in entries if e[0][:size] == want]
        if not hits:
            continue
        path, number, column, rest, offset = hits[0]
        start = 0
        for key in loc[size:] if path == want else ():  # keys inside an inline table
            quoted = "|".join(re.escape(q) for q in (key, f'"{key}"', f"'{key}'"))
            inner = re.compile(rf"(?:^|[{{,\s])(?P<k>{quoted})\s*=").search(rest, start)
            if not inner:
                break
            column, start = offset + inner.start("k") + 1, inner.end()
        return number, column
    return 0, 0


_TOP_KEYS = (
    "agents",
    "attempt",
    "budget",
    "default_agent",
    "env",
    "gates",
    "local",
    "max_agents",
    "planner",
    "prices",
    "router",
    "sandbox",
    "scope",
    "target",
    "workspace",
)
_GATE_KEYS = ("command", "timeout", "when")
_WORKSPACE_KEYS = ("link", "setup", "sparse")
_SECTION_KEYS = {
    "router": (
        "alpha",
        "arms",
        "cost_ceiling",
        "credit",
        "landed_value_usd",
        "min_tier",
        "warmup",
    ),
    "budget": ("daily", "on_exceed", "run"),
    "planner": ("agent", "model", "split_depth", "timeout"),
    "attempt": ("max_cost", "max_rate_limited", "max_tokens", "max_turns", "timeout"),
    "sandbox": ("enabled", "network", "writable"),
}
_ARM_KEYS = ("agent", "model", "tier")
_LOCAL_KEYS = ("base_url", "kind", "max_parallel", "models")
_PRICE_KEYS = ("cached", "input", "output")


def describe(value: object) -> str:
    names = dict(bool="boolean", int="integer", float="float", str="string", dict="table")
    name = names.get(type(value).__name__, "array" if isinstance(value, list) else "date/time")
    shown = f" {json.dumps(value)}" if isinstance(value, bool | int | float | str) else ""
    return f"{'an' if name[0] in 'ai' else 'a'} {name}{shown}"


def message(error: Any, loc: tuple[str, ...], tiers: tuple[str, ...]) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "extra_forbidden":
        allowed: tuple[str, ...] = _TOP_KEYS
        if loc[:1] == ("workspace",):
            allowed = _WORKSPACE_KEYS
        elif loc[:2] == ("router", "arms"):
            allowed = _ARM_KEYS
        elif loc[:1] == ("prices",):
            allowed = _PRICE_KEYS
        elif loc[:1] == ("local",):
            allowed = _LOCAL_KEYS
        elif len(loc) >= 2 and loc[0] in _SECTION_KEYS:
            allowed = _SECTION_KEYS[loc[0]]
        elif len(loc) == 3:
            allowed = _GATE_KEYS
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(allowed)}"
        return f"unknown key {loc[-1]!r}{hint}"
    if kind == "missing" and loc[:1] == ("local",):
        return f'missing key {loc[-1]!r}; add kind = "ollama" (or "openai")'
    if kind == "missing":
        return f'missing key {loc[-1]!r}; add it, e.g. {loc[-1]} = "pytest -q"'
    if kind == "string_pattern_mismatch" and loc[:1] == ("local",):
        return f"local server name {loc[-1]!r} may only use letters, digits, '-' and '_'"
    if kind == "string_pattern_mismatch":
        return f"gate name {loc[-1]!r} may only use letters, digits, '-' and '_'; rename it"
    if kind == "int_type":
        unquote = "; remove the quotes" if isinstance(value, str) and value.isdigit() else ""
        return f"must be an integer, not {describe(value)}{unquote}"
    if kind == "string_type":
        return f"must be a string, not {describe(value)}; put the value in double quotes"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}, not {describe(value)}"
    if kind == "greater_than":
        return f"must be more than {ctx['gt']}, not {describe(value)}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}, not {describe(value)}"
    if kind == "bool_type":
        return f"must be true or false, not {describe(value)}"
    if kind == "float_type":
        return f"must be a number, not {describe(value)}"
    if kind == "finite_number":
        return f"must be a finite number, not {describe(value)}; give an amount such as 2.5"
    if kind == "list_type" and loc[:2] == ("router", "arms"):
        return f"must be an array, not {describe(value)}; write [[router.arms]] tables"
    if kind == "list_type":
        example = {"env": '["MY_TOKEN"]', "link": '["node_modules"]'}.get(loc[-1], '["npm ci"]')
        return f"must be an array, not {describe(value)}; write {loc[-1]} = {example}"
    if kind == "literal_error":
        options = ["refuse", "warn"] if loc == ("scope",) else ["attempt", "merge", "both"]
        if loc[-1:] == ("tier",) or loc[:2] == ("router", "min_tier"):
            options = list(tiers)
        if loc[-1:] == ("on_exceed",):
            options = ["finish", "stop"]
        if loc[-1:] == ("credit",):
            options = ["task", "attempt"]
        if loc[:1] == ("local",):
            options = ["ollama", "openai"]
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"must be {ctx['expected']}, not {describe(value)}{hint}"
    if kind in ("dict_type", "model_type") and loc == ("gates",):
        return f'must be a table, not {describe(value)}; write [gates] then tests = "pytest -q"'
    if kind in ("dict_type", "model_type") and loc[:1] == ("local",):
        return (
            f"must be a table, not {describe(value)}; write [local.ollama] then "
            'kind = "ollama" and base_url = "http://127.0.0.1:11434"'
        )
    if kind in ("dict_type", "model_type"):
        table = '{ command = "pytest -q", timeout = 600 }'
        return f"must be a command string or a table such as {table}, not {describe(value)}"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    return str(error["msg"])
