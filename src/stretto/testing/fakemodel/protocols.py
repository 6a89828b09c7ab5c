"""What every provider protocol shares: the reply value, SSE framing, usage, and the Api contract.

A protocol module turns a request body into :class:`~stretto.testing.fakemodel.selection.Role`
values and rule facts, and renders a chosen :class:`Turn` (or an error) as a :class:`Reply`: plain
values the server writes out. Nothing here touches a socket.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from stretto.testing.fakemodel.script import ToolCall, Usage
from stretto.testing.fakemodel.selection import Role

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: a whole body, or ``chunks`` streamed one by one (chunked encoding)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    chunks: tuple[bytes, ...] | None = None

    def json(self) -> Any:
        """The body parsed as JSON (for tests and logs)."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts to report, all resolved to numbers."""

    input: int
    output: int
    cached: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output


@dataclass(frozen=True, slots=True)
class Turn:
    """The assistant turn to send: what a step says, resolved for one request."""

    text: str | None
    tool_calls: Sequence[ToolCall]
    tokens: Tokens
    model: str
    serial: int  # the server's request number; makes ids unique
    stream: bool
    options: JSON = field(default_factory=dict)  # protocol-specific request options


def estimate_tokens(text: str) -> int:
    """A stable fake count: about four characters a token, at least one."""
    return max(1, len(text) // 4)


def resolve_tokens(
    usage: Usage | None, body: str, text: str | None, calls: Sequence[ToolCall]
) -> Tokens:
    """Scripted counts where given, estimates from the request and the reply elsewhere."""
    usage = usage or Usage()
    reply = (text or "") + "".join(json.dumps(call.function_arguments()) for call in calls)
    return Tokens(
        input=usage.input_tokens if usage.input_tokens is not None else estimate_tokens(body),
        output=usage.output_tokens if usage.output_tokens is not None else estimate_tokens(reply),
        cached=usage.cached_tokens or 0,
    )


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_reply(status: int, value: Any, headers: Sequence[tuple[str, str]] = ()) -> Reply:
    return Reply(
        status,
        (("Content-Type", "application/json"), *headers),
        body=dumps(value).encode(),
    )


SSE_HEADERS = (("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"))


def sse(data: Any, event: str | None = None, *, crlf: bool = False) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is already a string."""
    payload = data if isinstance(data, str) else dumps(data)
    end = "\r\n" if crlf else "\n"
    head = f"event: {event}{end}" if event else ""
    return f"{head}data: {payload}{end}{end}".encode()


def pieces(text: str, parts: int = 3) -> list[str]:
    """Split ``text`` into up to ``parts`` deltas, so clients exercise their concatenation."""
    if len(text) < parts * 2:
        return [text]
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


def error_message(status: int) -> str:
    return {
        400: "Bad request (scripted error from stretto's fake model server)",
        401: "Invalid API key (scripted error)",
        403: "Permission denied (scripted error)",
        404: "Not found (scripted error)",
        429: "Rate limit reached (scripted error); retry later",
        500: "Internal server error (scripted error)",
        503: "Service unavailable (scripted error)",
        529: "Overloaded (scripted error)",
    }.get(status, f"HTTP {status} (scripted error)")


class Api(ABC):
    """One provider protocol: read its requests, write its replies."""

    name: ClassVar[str]
    """The protocol's name in match rules and the request log."""

    @abstractmethod
    def roles(self, body: JSON) -> list[Role]:
        """The conversation in ``body`` as a sequence of roles."""

    @abstractmethod
    def has_tools(self, body: JSON) -> bool:
        """Whether the request offers the model any tools."""

    @abstractmethod
    def json_mode(self, body: JSON) -> bool:
        """Whether the request asks for JSON output (a JSON object or schema)."""

    @abstractmethod
    def render(self, turn: Turn) -> Reply:
        """The reply carrying ``turn``, streamed when ``turn.stream``."""

    @abstractmethod
    def error(self, status: int, message: str, retry_after: float | None) -> Reply:
        """An error reply in the protocol's own shape."""

    def stream(self, body: JSON) -> bool:
        """Whether the client asked for a stream (Gemini decides by URL instead)."""
        return body.get("stream") is True

    def options(self, body: JSON) -> JSON:
        """Request options that change the reply's shape."""
        return {}


def retry_headers(retry_after: float | None) -> tuple[tuple[str, str], ...]:
    """``Retry-After`` in whole seconds (rounded up) plus ``retry-after-ms`` for OpenAI's SDKs."""
    if retry_after is None:
        return ()
    seconds = int(-(-retry_after // 1))
    return (("Retry-After", str(seconds)), ("retry-after-ms", str(int(retry_after * 1000))))
