"""The ``command`` adapter: any other agent CLI (goose, cursor-agent, amp, crush, …) without code.

Configured in stretto.toml under the name steps use as ``agent:``::

    [agents.goose]
    adapter = "command"
    command = ["goose", "run", "--text", "{prompt}"]   # or one string, split like a shell would
    prompt = "arg"          # how the prompt gets there: arg ({prompt} in command), stdin, file
    output = "text"         # or "jsonl": one JSON object a line, read for usage, cost and errors
    env = { GOOSE_MODE = "auto" }

Placeholders in ``command``: ``{prompt}``, ``{prompt_file}``, ``{model}``, ``{workspace}``,
``{base_url}`` (a local server's address, else empty).

With ``local = "NAME"`` (a ``[local.NAME]`` model server), the command's environment names the
server: ``STRETTO_LOCAL_SERVER`` (its name), ``STRETTO_LOCAL_KIND`` (``ollama`` or ``openai``),
``STRETTO_LOCAL_BASE_URL`` (as declared), ``OPENAI_BASE_URL`` / ``OPENAI_API_BASE`` (its
OpenAI-compatible ``/v1`` base) and, for Ollama, ``OLLAMA_HOST`` and ``OLLAMA_API_BASE``;
``OPENAI_API_KEY`` gets a placeholder when it has none, and ``{model}`` defaults to the
server's first model.
Outcome: a timeout is ``timed_out``; output mentioning HTTP 429 or a rate limit is
``rate_limited``; exit status 0 is ``success``; anything else ``failed``. Lines
``STRETTO_EVENT {json}`` are events, as for the shell agent.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from stretto.agents.base import AgentEvent, AgentResult, AttemptContext, Launch, Outcome
from stretto.agents.settings import default_model
from stretto.agents.shell import ShellAdapter
from stretto.errors import UsageError
from stretto.localmodels import PLACEHOLDER_KEY, LocalServer, server_of

_RATE_LIMIT = re.compile(r"\b429\b|rate[ _-]?limit|too many requests", re.IGNORECASE)
_USAGE_KEYS = {
    "input_tokens": "input_tokens",
    "prompt_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "completion_tokens": "output_tokens",
    "cached_tokens": "cached_tokens",
    "cache_read_input_tokens": "cached_tokens",
}
_COST_KEYS = ("total_cost_usd", "cost_usd", "cost")


class CommandAdapter:
    """A generic adapter configured entirely in stretto.toml (see the module docstring)."""

    def __init__(self, name: str = "command") -> None:
        self.name = name
        self._output = "text"
        self._limited = False

    def build(self, ctx: AttemptContext) -> Launch:
        settings = ctx.settings
        raw = settings.get("command")
        if isinstance(raw, str) and raw.strip():
            parts = shlex.split(raw)
        elif isinstance(raw, list) and raw and all(isinstance(p, str) for p in raw):
            parts = list(raw)
        else:
            raise UsageError(
                f"agent '{self.name}' uses the command adapter but [agents.{self.name}] has no "
                'command; add e.g. command = ["mytool", "--prompt", "{prompt}"]'
            )
        mode = settings.get("prompt") or ("arg" if any("{prompt}" in p for p in parts) else "stdin")
        if mode not in ("arg", "stdin", "file"):
            raise UsageError(
                f'[agents.{self.name}] prompt = {mode!r}: use "arg", "stdin" or "file"'
            )
        self._output = str(settings.get("output", "text"))
        if self._output not in ("text", "jsonl"):
            raise UsageError(
                f'[agents.{self.name}] output = {self._output!r}: use "text" or "jsonl"'
            )
        values = {
            "prompt": ctx.prompt,
            "prompt_file": str(ctx.prompt_file),
            "model": ctx.model or default_model(settings, ""),
            "workspace": str(ctx.workspace),
            "base_url": "",
        }
        server = server_of(settings)
        if server is not None:
            values["base_url"] = server.base_url
        argv = [_fill(part, values) for part in parts]
        extra = settings.get("env") or {}
        if not isinstance(extra, Mapping):
            raise UsageError(f'[agents.{self.name}] env must be a table of NAME = "value"')
        env = {**ctx.env, **(local_env(server, ctx.env) if server else {})}
        env.update({str(k): str(v) for k, v in extra.items()})
        return Launch(
            argv=argv,
            env=env,
            cwd=ctx.workspace,
            stdin=ctx.prompt if mode == "stdin" else None,
            # the model it was told, when the command passes it on
            model=(values["model"] or None) if any("{model}" in str(x) for x in parts) else None,
        )

    def parse_line(self, line: str, stream: str) -> Sequence[AgentEvent]:
        if _RATE_LIMIT.search(line):
            self._limited = True
        events = list(ShellAdapter().parse_line(line, stream))
        if self._output != "jsonl" or not line.lstrip().startswith("{"):
            return events
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            return events
        if not isinstance(data, dict):
            return events
        events.extend(_json_events(data))
        return events

    def decide(
        self, exit_code: int | None, timed_out: bool, events: Sequence[AgentEvent]
    ) -> AgentResult:
        base = ShellAdapter().decide(exit_code, timed_out, events)
        if base.outcome is Outcome.FAILED and self._limited:
            return AgentResult(
                Outcome.RATE_LIMITED, exit_code, "rate limited", None, base.usage, base.cost_usd
            )
        if base.outcome is Outcome.FAILED:
            return AgentResult(
                Outcome.FAILED,
                exit_code,
                f"{self.name} exited with status {exit_code}",
                None,
                base.usage,
                base.cost_usd,
            )
        return base


def local_env(server: LocalServer, env: Mapping[str, str]) -> dict[str, str]:
    """The variables that point a command agent at its local model server."""
    out = {
        "STRETTO_LOCAL_SERVER": server.name,
        "STRETTO_LOCAL_KIND": server.kind,
        "STRETTO_LOCAL_BASE_URL": server.base_url,
        "OPENAI_BASE_URL": server.openai_url,
        "OPENAI_API_BASE": server.openai_url,
        "OPENAI_API_KEY": env.get("OPENAI_API_KEY") or PLACEHOLDER_KEY,
    }
    if server.kind == "ollama":
        out["OLLAMA_HOST"] = out["OLLAMA_API_BASE"] = server.ollama_url
    return out


def _fill(part: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        part = part.replace("{" + key + "}", value)
    return part


def _json_events(data: Mapping[str, Any]) -> list[AgentEvent]:
    events: list[AgentEvent] = []
    usage_source = data.get("usage") if isinstance(data.get("usage"), Mapping) else data
    assert isinstance(usage_source, Mapping)
    usage = {
        ours: int(usage_source[theirs])
        for theirs, ours in _USAGE_KEYS.items()
        if isinstance(usage_source.get(theirs), int) and not isinstance(usage_source[theirs], bool)
    }
    if usage:
        events.append(AgentEvent("usage", usage))
    for key in _COST_KEYS:
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            events.append(AgentEvent("cost", {"usd": float(value)}))
            break
    if data.get("error"):
        events.append(AgentEvent("error", {"message": str(data["error"])[:500]}))
    return events
