"""Reading an adapter's ``[agents.NAME]`` settings: the program to run, and string values.

Shared by the CLI adapters so each says the same thing, the same way, when a setting is wrong or
the program is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from typing import Any

from stretto.errors import UsageError


def resolve_command(
    agent: str,
    settings: Mapping[str, Any],
    path: str | None,
    *,
    what: str,
    install: str,
    absolute: bool = False,
) -> list[str]:
    """argv[0..] from ``command`` (a string or a list; default: the agent's own name), resolved
    on the agents' ``PATH``.

    Args:
        agent: the adapter's name (its program's default name and its settings table).
        what: how to call the program in messages ("Gemini CLI").
        install: how to install it ("'npm install -g @google/gemini-cli'").
        absolute: kept for callers; the path is always made absolute, since agents run in
            their worktree: a relative ``command`` (``.tools/npm/node_modules/.bin/codex``) is
            relative to where stretto runs (the repository root).
    """
    raw = settings.get("command", agent)
    parts = [raw] if isinstance(raw, str) else raw
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise UsageError(
            f"[agents.{agent}] command: expected a string or a list of strings, got {raw!r}"
        )
    found = shutil.which(parts[0], path=path)
    if found is None:
        raise UsageError(
            f"{what} ({parts[0]!r}) was not found on the agents' PATH: install it with {install}, "
            f'or set command = "/path/to/{agent}" under [agents.{agent}] in stretto.toml'
        )
    return [os.path.abspath(found), *parts[1:]]


def setting_str(agent: str, settings: Mapping[str, Any], key: str) -> str | None:
    """A non-empty string setting, or None when it is not set."""
    value = settings.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise UsageError(f"[agents.{agent}] {key}: expected a non-empty string, got {value!r}")
    return value
