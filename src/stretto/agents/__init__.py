"""Agent adapters: one module per CLI, found through the ``stretto.agents`` entry-point group.

Built-in adapters register exactly like third-party ones would (``[project.entry-points]`` in
pyproject.toml); :data:`BUILTIN` is the fallback when stretto runs from a source tree that was
not installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from stretto.agents.base import (
    Adapter,
    AgentEvent,
    AgentResult,
    AttemptContext,
    Launch,
    Outcome,
    delay_in_text,
    used_model,
)
from stretto.errors import UsageError
from stretto.localmodels import server_of

__all__ = [
    "BUILTIN",
    "Adapter",
    "AgentEvent",
    "AgentResult",
    "AttemptContext",
    "Launch",
    "Outcome",
    "available",
    "delay_in_text",
    "get_adapter",
    "provider_of",
    "used_model",
]

#: The provider behind each built-in adapter (``provider = "..."`` in [agents.NAME] overrides it).
PROVIDERS = {
    "claude": "anthropic",
    "codex": "openai",
    "aider": "openai",
    "opencode": "openai",
    "qwen": "openai",
    "gemini": "google",
}


def provider_of(agent: str, settings: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Which provider an agent's requests go to: per-provider back-off and the price ceiling
    of unpriced spend (None: none known). An agent on a local server (``local = "NAME"``) goes
    to ``local:NAME``, whatever its ``provider``."""
    table = settings.get(agent, {})
    server = server_of(table)
    if server is not None:
        return server.provider
    if table.get("provider"):
        return str(table["provider"])
    kind = str(table.get("adapter") or agent)
    return PROVIDERS.get(kind)


GROUP = "stretto.agents"
BUILTIN = {
    "shell": "stretto.agents.shell:ShellAdapter",
    "claude": "stretto.agents.claude:ClaudeAdapter",
    "codex": "stretto.agents.codex:CodexAdapter",
    "gemini": "stretto.agents.gemini:GeminiAdapter",
    "aider": "stretto.agents.aider:AiderAdapter",
    "opencode": "stretto.agents.opencode:OpencodeAdapter",
    "qwen": "stretto.agents.qwen:QwenAdapter",
}


def available() -> dict[str, str]:
    """Adapter name -> "module:Class", built-ins first, then plugins."""
    from importlib.metadata import entry_points  # slow to import; only needed for plugins

    found = dict(BUILTIN)
    for entry in entry_points(group=GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def get_adapter(name: str, settings: Mapping[str, Any] | None = None) -> Adapter:
    """An adapter instance by name.

    ``settings`` is the agent's ``[agents.NAME]`` table: ``adapter = "command"`` makes NAME a
    generic command agent (see :mod:`stretto.agents.command`); ``adapter = "claude"`` (any known
    adapter) makes NAME a second profile of it, with its own settings.

    Raises:
        UsageError: for an unknown name, listing the known ones.
    """
    kind = (settings or {}).get("adapter")
    if kind == "command":
        from stretto.agents.command import CommandAdapter

        return CommandAdapter(name)
    lookup = str(kind) if isinstance(kind, str) and kind else name
    known = BUILTIN if lookup in BUILTIN else available()
    target = known.get(lookup)
    if target is None:
        import difflib

        close = difflib.get_close_matches(lookup, list(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(
            f"unknown agent '{lookup}'{hint}; available: {', '.join(sorted(known))}, or any "
            f'name with adapter = "command" in [agents.{name}] (third-party adapters register '
            "in the 'stretto.agents' entry-point group)"
        )
    module_name, _, attr = target.partition(":")
    try:
        adapter = getattr(importlib.import_module(module_name), attr)()
    except (ImportError, AttributeError) as error:
        raise UsageError(
            f"agent '{name}' ({target}) could not be loaded: {error}; check that the package "
            "providing it is installed"
        ) from None
    if not isinstance(adapter, Adapter):
        raise UsageError(f"agent '{name}' ({target}) does not implement the adapter protocol")
    return adapter
