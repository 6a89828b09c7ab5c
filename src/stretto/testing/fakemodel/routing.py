"""Which endpoint a request is for, from its method, path and headers (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

_SESSION = re.compile(r"^/s/(?P<name>[^/]+)(?P<rest>/.*)?$")
_GEMINI = re.compile(
    r"/models/(?P<model>[^:]+):(?P<action>generateContent|streamGenerateContent|countTokens)$"
)
_MODEL = re.compile(r"/models/(?P<model>[^/:]+)$")


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes.

    ``endpoint`` is one of ``generate``, ``count_tokens``, ``models``, ``model``, ``version``,
    ``head`` or ``unknown``; ``protocol`` is ``chat``, ``responses``, ``anthropic``, ``gemini``,
    ``ollama`` (``/api/chat``, ``/api/tags``, ``/api/show``, ``/api/version``), ``openai`` (the
    model list both OpenAI protocols share) or ``None``.
    """

    session: str
    endpoint: str
    protocol: str | None = None
    model: str | None = None
    stream: bool = False  # Gemini: the URL asked for a stream
    sse: bool = False  # Gemini: ...?alt=sse


def route(method: str, target: str, headers: Mapping[str, str]) -> Route:
    """Route ``method target``; ``/s/<session>/…`` selects a session, else ``default``.

    ``headers`` must have lower-case names.
    """
    url = urlsplit(target)
    path = url.path
    session = "default"
    prefixed = _SESSION.match(path)
    if prefixed:
        session, path = prefixed["name"], prefixed["rest"] or "/"
    path = path.rstrip("/") or "/"
    if method == "HEAD":
        return Route(session, "head")
    if method == "POST":
        if path.endswith("/api/chat"):
            return Route(session, "generate", "ollama")
        if path.endswith("/api/show"):
            return Route(session, "model", "ollama")
        if path.endswith("/chat/completions"):
            return Route(session, "generate", "chat")
        if path.endswith("/responses"):
            return Route(session, "generate", "responses")
        if path.endswith("/messages/count_tokens"):
            return Route(session, "count_tokens", "anthropic")
        if path.endswith("/messages"):
            return Route(session, "generate", "anthropic")
        gemini = _GEMINI.search(path)
        if gemini:
            action = gemini["action"]
            endpoint = "count_tokens" if action == "countTokens" else "generate"
            sse = "sse" in parse_qs(url.query).get("alt", [])
            stream = action == "streamGenerateContent"
            return Route(session, endpoint, "gemini", gemini["model"], stream, sse)
    if method == "GET":
        if path.endswith("/api/tags"):
            return Route(session, "models", "ollama")
        if path.endswith("/api/version"):
            return Route(session, "version", "ollama")
        style = _list_style(path, url.query, headers)
        if path.endswith("/models"):
            return Route(session, "models", style)
        single = _MODEL.search(path)
        if single:
            return Route(session, "model", style, single["model"])
    return Route(session, "unknown")


def _list_style(path: str, query: str, headers: Mapping[str, str]) -> str:
    if "/v1beta/" in path or "/v1alpha/" in path or "x-goog-api-key" in headers:
        return "gemini"
    if "key" in parse_qs(query):
        return "gemini"
    if "anthropic-version" in headers:
        return "anthropic"
    return "openai"
