"""Ollama's native API: ``POST /api/chat`` (NDJSON stream or JSON), ``/api/tags``, ``/api/show``.

What aider (LiteLLM's ``ollama_chat/`` models) and other Ollama clients call. The shapes follow
Ollama's API reference: a streamed chat answer is one JSON object a line
(``application/x-ndjson``), each carrying a ``message`` piece and ``done: false``, then a last
one with ``done: true``, ``done_reason`` and the token counts (``prompt_eval_count``,
``eval_count``). Tool calls carry their arguments as an object, not a JSON string. Errors are
``{"error": "..."}``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from stretto.testing.fakemodel.protocols import (
    JSON,
    Api,
    Reply,
    Turn,
    dumps,
    json_reply,
    pieces,
    retry_headers,
)
from stretto.testing.fakemodel.selection import Role

NDJSON_HEADERS = (("Content-Type", "application/x-ndjson"),)
CONTEXT_LENGTH = 32768
VERSION = "0.12.0"  # what GET /api/version answers


def ollama_error(status: int, message: str, retry_after: float | None) -> Reply:
    """``{"error": "..."}``, as Ollama sends for every failure."""
    return json_reply(status, {"error": message}, retry_headers(retry_after))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _tag(model: str) -> str:
    """Ollama names carry a tag; a bare name means ``:latest``."""
    return model if ":" in model else f"{model}:latest"


def ollama_tags(models: tuple[str, ...]) -> JSON:
    """``GET /api/tags``: the models pulled on this "server" (the script's models)."""
    return {
        "models": [
            {
                "name": _tag(model),
                "model": _tag(model),
                "modified_at": "2026-01-01T00:00:00Z",
                "size": 4_683_087_332,
                "digest": hashlib.sha256(model.encode()).hexdigest(),
                "details": {
                    "format": "gguf",
                    "family": "llama",
                    "parameter_size": "7B",
                    "quantization_level": "Q4_K_M",
                },
            }
            for model in models
        ]
    }


def known_model(name: str, models: tuple[str, ...]) -> bool:
    """Whether ``name`` (with or without its tag) is one of ``models``."""
    return _tag(name) in {_tag(m) for m in models}


def ollama_show(model: str) -> JSON:
    """``POST /api/show``: what LiteLLM reads for the context window and tool support."""
    return {
        "modelfile": f"FROM {model}\n",
        "parameters": "",
        "template": "{{ .System }}{{ .Prompt }}{{ if .Tools }}tools{{ end }}",
        "details": {"format": "gguf", "family": "llama", "parameter_size": "7B"},
        "model_info": {"general.architecture": "llama", "llama.context_length": CONTEXT_LENGTH},
        "capabilities": ["completion", "tools"],
    }


class OllamaChat(Api):
    """``POST /api/chat``: streamed (the default in Ollama) unless ``"stream": false``."""

    name = "ollama"

    def roles(self, body: JSON) -> list[Role]:
        roles = []
        for message in body.get("messages") or []:
            role = message.get("role") if isinstance(message, dict) else None
            if role == "user":
                roles.append(Role.USER)
            elif role == "assistant":
                roles.append(Role.ASSISTANT)
            elif role == "tool":
                roles.append(Role.TOOL)
            else:
                roles.append(Role.OTHER)
        return roles

    def has_tools(self, body: JSON) -> bool:
        return bool(body.get("tools"))

    def json_mode(self, body: JSON) -> bool:
        fmt = body.get("format")
        return fmt == "json" or isinstance(fmt, dict)

    def stream(self, body: JSON) -> bool:
        return body.get("stream") is not False  # Ollama streams unless told not to

    def error(self, status: int, message: str, retry_after: float | None) -> Reply:
        return ollama_error(status, message, retry_after)

    def render(self, turn: Turn) -> Reply:
        calls = [
            {"function": {"name": call.name, "arguments": call.function_arguments()}}
            for call in turn.tool_calls
        ]
        last: JSON = {
            "model": turn.model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": "" if turn.stream else turn.text or ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 1_000_000,
            "load_duration": 1000,
            "prompt_eval_count": turn.tokens.input,
            "prompt_eval_duration": 1000,
            "eval_count": turn.tokens.output,
            "eval_duration": 1000,
        }
        if not turn.stream:
            if calls:
                last["message"]["tool_calls"] = calls
            return json_reply(200, last)
        chunks = [
            dumps(
                {
                    "model": turn.model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": piece},
                    "done": False,
                }
            ).encode()
            + b"\n"
            for piece in (pieces(turn.text) if turn.text else [])
        ]
        if calls:
            message = {"role": "assistant", "content": "", "tool_calls": calls}
            chunks.append(
                dumps(
                    {"model": turn.model, "created_at": _now(), "message": message, "done": False}
                ).encode()
                + b"\n"
            )
        chunks.append(dumps(last).encode() + b"\n")
        return Reply(200, NDJSON_HEADERS, chunks=tuple(chunks))
