"""The Gemini protocol (Gemini CLI): ``models/<m>:generateContent``, ``:streamGenerateContent``
(SSE with ``alt=sse``, else a JSON array) and ``:countTokens``."""

from __future__ import annotations

from stretto.testing.fakemodel.protocols import (
    JSON,
    SSE_HEADERS,
    Api,
    Reply,
    Tokens,
    Turn,
    json_reply,
    pieces,
    sse,
)
from stretto.testing.fakemodel.selection import Role

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def gemini_model(model_id: str) -> JSON:
    return {
        "name": f"models/{model_id}",
        "version": "001",
        "displayName": model_id,
        "description": "stretto fake model",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    }


def gemini_models(models: tuple[str, ...]) -> JSON:
    """``GET /v1beta/models``."""
    return {"models": [gemini_model(m) for m in models]}


class Gemini(Api):
    """``candidates[0].content.parts`` with ``text`` or ``functionCall{name, args}``."""

    name = "gemini"

    def roles(self, body: JSON) -> list[Role]:
        roles = []
        for content in body.get("contents") or []:
            if not isinstance(content, dict):
                continue
            parts = content.get("parts")
            parts = parts if isinstance(parts, list) else []
            if content.get("role") == "model":
                roles.append(Role.ASSISTANT)
            elif any(isinstance(p, dict) and "functionResponse" in p for p in parts):
                roles.append(Role.TOOL)
            else:
                roles.append(Role.USER)
        return roles

    def has_tools(self, body: JSON) -> bool:
        tools = body.get("tools")
        return isinstance(tools, list) and any(
            isinstance(t, dict) and any(t.values()) for t in tools
        )

    def json_mode(self, body: JSON) -> bool:
        config = body.get("generationConfig") or body.get("generation_config") or {}
        if not isinstance(config, dict):
            return False
        return config.get("responseMimeType") == "application/json" or any(
            key in config for key in ("responseSchema", "responseJsonSchema")
        )

    def stream(self, body: JSON) -> bool:
        return False  # decided by the URL: :streamGenerateContent

    def error(self, status: int, message: str, retry_after: float | None) -> Reply:
        error: JSON = {
            "code": status,
            "message": message,
            "status": _STATUS_NAMES.get(status, "UNKNOWN"),
        }
        headers: tuple[tuple[str, str], ...] = ()
        if retry_after is not None:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after:g}s",
                }
            ]
            headers = (("Retry-After", str(int(-(-retry_after // 1)))),)
        return json_reply(status, {"error": error}, headers)

    @staticmethod
    def usage(tokens: Tokens) -> JSON:
        usage: JSON = {
            "promptTokenCount": tokens.input,
            "candidatesTokenCount": tokens.output,
            "totalTokenCount": tokens.total,
        }
        if tokens.cached:
            usage["cachedContentTokenCount"] = tokens.cached
        return usage

    def _chunk(self, turn: Turn, parts: list[JSON], last: bool) -> JSON:
        candidate: JSON = {"content": {"parts": parts, "role": "model"}, "index": 0}
        chunk: JSON = {"candidates": [candidate]}
        if last:
            candidate["finishReason"] = "STOP"
            chunk["usageMetadata"] = self.usage(turn.tokens)
        chunk["modelVersion"] = turn.model
        chunk["responseId"] = f"fake{turn.serial:04d}"
        return chunk

    def render(self, turn: Turn) -> Reply:
        calls: list[JSON] = [
            {"functionCall": {"name": call.name, "args": call.function_arguments()}}
            for call in turn.tool_calls
        ]
        if not turn.stream:
            text = [{"text": turn.text}] if turn.text else []
            return json_reply(200, self._chunk(turn, [*text, *calls], last=True))
        texts: list[JSON] = [{"text": piece} for piece in pieces(turn.text)] if turn.text else []
        parts = [[part] for part in texts]
        if calls:
            parts.append(calls)  # function calls arrive whole, in the last chunk
        chunks = [self._chunk(turn, p, last=i == len(parts) - 1) for i, p in enumerate(parts)]
        if not turn.options.get("sse"):
            return json_reply(200, chunks)
        return Reply(200, SSE_HEADERS, chunks=tuple(sse(c, crlf=True) for c in chunks))
