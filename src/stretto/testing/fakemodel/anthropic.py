"""The Anthropic Messages protocol (Claude Code): ``POST …/v1/messages`` and ``count_tokens``."""

from __future__ import annotations

from stretto.testing.fakemodel.protocols import (
    JSON,
    SSE_HEADERS,
    Api,
    Reply,
    Tokens,
    Turn,
    dumps,
    json_reply,
    pieces,
    retry_headers,
    sse,
)
from stretto.testing.fakemodel.selection import Role

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_models(models: tuple[str, ...]) -> JSON:
    """``GET /v1/models`` with an ``anthropic-version`` header."""
    data = [
        {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
        for m in models
    ]
    return {"data": data, "has_more": False, "first_id": models[0], "last_id": models[-1]}


class Messages(Api):
    """Content blocks ``text`` and ``tool_use``; SSE ``message_start`` … ``message_stop``."""

    name = "anthropic"

    def roles(self, body: JSON) -> list[Role]:
        roles = []
        for message in body.get("messages") or []:
            role = message.get("role") if isinstance(message, dict) else None
            if role == "assistant":
                roles.append(Role.ASSISTANT)
            elif role == "user":
                content = message.get("content")
                blocks = content if isinstance(content, list) else []
                tool = any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks)
                roles.append(Role.TOOL if tool else Role.USER)
            else:
                roles.append(Role.OTHER)
        return roles

    def has_tools(self, body: JSON) -> bool:
        return bool(body.get("tools"))

    def json_mode(self, body: JSON) -> bool:
        fmt = body.get("output_format")
        return isinstance(fmt, dict) and fmt.get("type") == "json_schema"

    def error(self, status: int, message: str, retry_after: float | None) -> Reply:
        kind = _ERROR_TYPES.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
        headers = (("request-id", "req_fake"), *retry_headers(retry_after))
        return json_reply(status, body, headers)

    @staticmethod
    def usage(tokens: Tokens, output: int) -> JSON:
        return {
            "input_tokens": tokens.input,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": tokens.cached,
            "output_tokens": output,
        }

    def blocks(self, turn: Turn) -> list[JSON]:
        blocks: list[JSON] = [{"type": "text", "text": turn.text}] if turn.text else []
        for index, call in enumerate(turn.tool_calls):
            blocks.append(
                {
                    "type": "tool_use",
                    "id": call.id or f"toolu_fake{turn.serial:04d}x{index}",
                    "name": call.name,
                    "input": call.function_arguments(),
                }
            )
        return blocks

    def render(self, turn: Turn) -> Reply:
        blocks = self.blocks(turn)
        stop = "tool_use" if turn.tool_calls else "end_turn"
        message: JSON = {
            "id": f"msg_fake{turn.serial:04d}",
            "type": "message",
            "role": "assistant",
            "model": turn.model,
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": self.usage(turn.tokens, turn.tokens.output),
        }
        headers = (("request-id", f"req_fake{turn.serial:04d}"),)
        if not turn.stream:
            return json_reply(200, message, headers)
        start = {**message, "content": [], "stop_reason": None, "usage": self.usage(turn.tokens, 1)}
        events: list[tuple[str, JSON]] = [("message_start", {"message": start}), ("ping", {})]
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                events.append(
                    (
                        "content_block_start",
                        {"index": index, "content_block": {"type": "text", "text": ""}},
                    )
                )
                for piece in pieces(block["text"]):
                    events.append(
                        (
                            "content_block_delta",
                            {"index": index, "delta": {"type": "text_delta", "text": piece}},
                        )
                    )
            else:
                opened = {**block, "input": {}}
                events.append(("content_block_start", {"index": index, "content_block": opened}))
                for piece in ["", *pieces(dumps(block["input"]), 2)]:
                    delta = {"type": "input_json_delta", "partial_json": piece}
                    events.append(("content_block_delta", {"index": index, "delta": delta}))
            events.append(("content_block_stop", {"index": index}))
        ending: JSON = {"stop_reason": stop, "stop_sequence": None}
        events.append(
            (
                "message_delta",
                {"delta": ending, "usage": self.usage(turn.tokens, turn.tokens.output)},
            )
        )
        events.append(("message_stop", {}))
        chunks = tuple(sse({"type": kind, **data}, kind) for kind, data in events)
        return Reply(200, (*SSE_HEADERS, *headers), chunks=chunks)
