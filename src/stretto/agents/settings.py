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
from stretto.localmodels import PLACEHOLDER_KEY, server_of


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


def local_openai(settings: Mapping[str, Any], env: dict[str, str], env_key: str) -> str | None:
    """For an agent on a local model server (``local = "NAME"``): the server's OpenAI-compatible
    ``/v1`` base URL, with a placeholder key put in ``env[env_key]`` when it holds none (local
    servers ignore keys; the OpenAI SDKs refuse to start without one). None for other agents.
    """
    server = server_of(settings)
    if server is None:
        return None
    if not env.get(env_key):
        env[env_key] = PLACEHOLDER_KEY
    return server.openai_url


def default_model(settings: Mapping[str, Any], fallback: str) -> str:
    """The agent's ``model`` setting, else its local server's first model, else ``fallback``."""
    server = server_of(settings)
    local_first = server.models[0] if server is not None and server.models else None
    value = settings.get("model")
    return value if isinstance(value, str) and value else local_first or fallback
