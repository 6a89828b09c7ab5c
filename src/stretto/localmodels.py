"""Local model servers: ``[local.NAME]`` in stretto.toml, and the agents that use one.

A local server is an Ollama server or any OpenAI-compatible one (llama.cpp's ``llama-server``,
vLLM, LM Studio) on this machine or the local network. It is declared once::

    [local.ollama]
    kind = "ollama"                      # or "openai"
    base_url = "http://127.0.0.1:11434"  # default per kind (Ollama: 11434; openai: 8080/v1)
    models = ["qwen2.5-coder:7b"]        # what doctor checks is there
    max_parallel = 1                     # model calls at once (default 1 for ollama, 4 otherwise)

and an agent profile refers to it with ``local = "ollama"`` in its ``[agents.NAME]`` table. When
the configuration is loaded, that table gains the resolved server under :data:`SERVER_KEY`, so
the adapters (and the journal's copy of the run's options) see one self-contained table.

A local agent's attempts cost $0 (the ledger marks them ``local``; budgets ignore them), its
provider is ``local:NAME`` (so the scheduler's per-provider pool keeps at most ``max_parallel``
of them running), and ``stretto run --offline`` allows only agents like it. Guide:
docs/local-models.md.

A base module: plain values, no I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

KINDS = ("ollama", "openai")
Kind = Literal["ollama", "openai"]
SERVER_KEY = "local_server"
"""The key under which an agent's table carries its resolved server (set by stretto only)."""
PROVIDER_PREFIX = "local:"
DEFAULT_BASE_URL = {"ollama": "http://127.0.0.1:11434", "openai": "http://127.0.0.1:8080/v1"}
DEFAULT_MAX_PARALLEL = {"ollama": 1, "openai": 4}
#: The key a local OpenAI-compatible server is given when the agent needs one and none is set:
#: those servers ignore it, but the OpenAI SDKs refuse to start without a key.
PLACEHOLDER_KEY = "sk-local"
#: Agents that call no model at all: allowed in an --offline run.
NO_MODEL_AGENTS = frozenset({"shell"})


@dataclass(frozen=True, slots=True)
class LocalServer:
    """One ``[local.NAME]`` table.

    Attributes:
        name: The table's name, which agents refer to (``local = "NAME"``).
        kind: ``ollama`` (Ollama's own API, ``/api/chat``) or ``openai`` (``/v1/chat/completions``).
        base_url: The server's address: Ollama's root, or the OpenAI-compatible ``…/v1`` base.
        models: The models the project uses there (doctor checks each is present).
        max_parallel: Model calls the server takes at once: agents using it that may run at once.
    """

    name: str
    kind: Kind
    base_url: str
    models: tuple[str, ...] = ()
    max_parallel: int = 1

    @property
    def provider(self) -> str:
        """``local:NAME``: the provider its agents' requests go to."""
        return f"{PROVIDER_PREFIX}{self.name}"

    @property
    def openai_url(self) -> str:
        """The OpenAI-compatible ``/v1`` base (Ollama serves one beside its own API)."""
        base = self.base_url.rstrip("/")
        if self.kind == "ollama" and not base.endswith("/v1"):
            return f"{base}/v1"
        return base

    @property
    def ollama_url(self) -> str:
        """Ollama's own root (``…/api/chat`` is under it); a ``/v1`` suffix is dropped."""
        return self.base_url.rstrip("/").removesuffix("/v1")

    def to_dict(self) -> dict[str, Any]:
        """Plain data: what an agent's table carries under :data:`SERVER_KEY`."""
        return {
            "name": self.name,
            "kind": self.kind,
            "base_url": self.base_url,
            "models": list(self.models),
            "max_parallel": self.max_parallel,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LocalServer:
        """Inverse of :meth:`to_dict`."""
        kind = data.get("kind", "openai")
        return cls(
            name=str(data["name"]),
            kind="ollama" if kind == "ollama" else "openai",
            base_url=str(data["base_url"]),
            models=tuple(str(m) for m in data.get("models") or ()),
            max_parallel=int(data.get("max_parallel") or 1),
        )


def server_of(settings: Mapping[str, Any] | None) -> LocalServer | None:
    """The local server an agent's ``[agents.NAME]`` table uses (resolved at load), if any."""
    raw = (settings or {}).get(SERVER_KEY)
    return LocalServer.from_dict(raw) if isinstance(raw, Mapping) else None


def is_local_provider(provider: str | None) -> bool:
    """Whether a provider name (:func:`stretto.agents.provider_of`) is a local server's."""
    return bool(provider) and str(provider).startswith(PROVIDER_PREFIX)


def offline_ok(agent: str, settings: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether ``agent`` may run in an ``--offline`` run: it uses a local server, or it is a
    script agent that calls no model (``shell``)."""
    table = settings.get(agent, {})
    if server_of(table) is not None:
        return True
    kind = str(table.get("adapter") or agent)
    return kind in NO_MODEL_AGENTS and not table.get("provider")


def with_servers(
    agents: Mapping[str, Mapping[str, Any]], servers: Mapping[str, LocalServer]
) -> dict[str, dict[str, Any]]:
    """The agents' tables, each that names ``local = "NAME"`` given its server under
    :data:`SERVER_KEY` (the names were checked when the file was validated)."""
    out: dict[str, dict[str, Any]] = {}
    for name, table in agents.items():
        resolved = dict(table)
        local = table.get("local")
        if isinstance(local, str) and local in servers:
            resolved[SERVER_KEY] = servers[local].to_dict()
        out[name] = resolved
    return out


def checked_base_url(value: str) -> str:
    """``base_url`` of a ``[local.NAME]`` table: an http(s) URL, without a trailing ``/``.

    Raises:
        ValueError: not an http(s) URL (the config loader reports it at its line).
    """
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError(
            f"{value!r} is not an http(s) URL; write e.g. "
            'base_url = "http://127.0.0.1:11434" (Ollama) or "http://127.0.0.1:8080/v1"'
        )
    return value.rstrip("/")


def reference_problems(
    agents: Mapping[str, Mapping[str, Any]], servers: Mapping[str, LocalServer]
) -> list[tuple[tuple[str, ...], str]]:
    """``(key path, message)`` for each ``[agents.X]`` table whose ``local`` names no declared
    ``[local.NAME]``, or that sets :data:`SERVER_KEY` itself."""
    problems: list[tuple[tuple[str, ...], str]] = []
    for agent, table in agents.items():
        local = table.get("local")
        if SERVER_KEY in table:
            message = f'{SERVER_KEY} is set by stretto; write local = "NAME" naming a [local.NAME]'
            problems.append((("agents", agent, SERVER_KEY), message))
        elif local is not None and (not isinstance(local, str) or local not in servers):
            declared = ", ".join(sorted(servers)) or "none"
            close = difflib.get_close_matches(str(local), list(servers), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            name = local if isinstance(local, str) else "ollama"
            problems.append(
                (
                    ("agents", agent, "local"),
                    f"unknown local server {local!r}{hint}; declared: {declared}. Add a table "
                    f'such as [local.{name}] with kind = "ollama" (or "openai") and base_url',
                )
            )
    return problems
