"""The OpenAI protocols: Chat Completions (aider, opencode, qwen-code) and Responses (codex)."""

from __future__ import annotations

import time

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
from stretto.testing.fakemodel.script import ToolCall
from stretto.testing.fakemodel.selection import Role

_OPENAI_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def openai_error(status: int, message: str, retry_after: float | None) -> Reply:
    """``{"error": {message, type, param, code}}``, as OpenAI and compatible servers send."""
    kind, code = _OPENAI_ERROR_TYPES.get(status, ("server_error", None))
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return json_reply(status, body, retry_headers(retry_after))


def openai_model(model_id: str) -> JSON:
    return {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "stretto"}


def openai_models(models: tuple[str, ...]) -> JSON:
    """``GET /v1/models``."""
    return {"object": "list", "data": [openai_model(m) for m in models]}


def _call_id(call: ToolCall, turn: Turn, index: int) -> str:
    return call.id or f"call_fake{turn.serial:04d}x{index}"


# --------------------------------------------------------------------------- chat completions


class ChatCompletions(Api):
    """``POST …/chat/completions``: one ``choices[0].message``, or ``chat.completion.chunk`` SSE."""

    name = "chat"

    def roles(self, body: JSON) -> list[Role]:
        roles = []
        for message in body.get("messages") or []:
            role = message.get("role") if isinstance(message, dict) else None
            if role == "user":
                roles.append(Role.USER)
            elif role == "assistant":
                roles.append(Role.ASSISTANT)
            elif role in ("tool", "function"):
                roles.append(Role.TOOL)
            else:
                roles.append(Role.OTHER)
        return roles

    def has_tools(self, body: JSON) -> bool:
        return bool(body.get("tools") or body.get("functions"))

    def json_mode(self, body: JSON) -> bool:
        fmt = body.get("response_format")
        return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")

    def options(self, body: JSON) -> JSON:
        stream_options = body.get("stream_options")
        include = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        return {"include_usage": include}

    def error(self, status: int, message: str, retry_after: float | None) -> Reply:
        return openai_error(status, message, retry_after)

    @staticmethod
    def usage(tokens: Tokens) -> JSON:
        return {
            "prompt_tokens": tokens.input,
            "completion_tokens": tokens.output,
            "total_tokens": tokens.total,
            "prompt_tokens_details": {"cached_tokens": tokens.cached},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def render(self, turn: Turn) -> Reply:
        ident = f"chatcmpl-fake{turn.serial:04d}"
        created = int(time.time())
        finish = "tool_calls" if turn.tool_calls else "stop"
        calls: list[JSON] = [
            {
                "id": _call_id(call, turn, index),
                "type": "function",
                "function": {"name": call.name, "arguments": dumps(call.function_arguments())},
            }
            for index, call in enumerate(turn.tool_calls)
        ]
        head = {"id": ident, "created": created, "model": turn.model, "system_fingerprint": None}
        if not turn.stream:
            message: JSON = {"role": "assistant", "content": turn.text, "refusal": None}
            if calls:
                message["tool_calls"] = calls
            choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            body = {
                **head,
                "object": "chat.completion",
                "choices": [choice],
                "usage": self.usage(turn.tokens),
            }
            return json_reply(200, body)

        def chunk(delta: JSON, finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return sse({**head, "object": "chat.completion.chunk", "choices": [choice]})

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += (
            [chunk({"content": piece}) for piece in pieces(turn.text or "")] if turn.text else []
        )
        for index, call in enumerate(calls):
            opening = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            chunks.append(chunk({"tool_calls": [{"index": index, **opening}]}))
            for piece in pieces(call["function"]["arguments"], 2):
                delta = {"index": index, "function": {"arguments": piece}}
                chunks.append(chunk({"tool_calls": [delta]}))
        chunks.append(chunk({}, finish))
        if turn.options.get("include_usage"):
            usage = {
                **head,
                "object": "chat.completion.chunk",
                "choices": [],
                "usage": self.usage(turn.tokens),
            }
            chunks.append(sse(usage))
        chunks.append(sse("[DONE]"))
        return Reply(200, SSE_HEADERS, chunks=tuple(chunks))


# --------------------------------------------------------------------------- responses

_ASSISTANT_ITEMS = ("function_call", "custom_tool_call", "reasoning", "local_shell_call")


class Responses(Api):
    """``POST …/responses``: output items (message, ``function_call``, ``custom_tool_call``),
    streamed as ``response.*`` events ending with ``response.completed``."""

    name = "responses"

    def roles(self, body: JSON) -> list[Role]:
        items = body.get("input")
        if isinstance(items, str):
            return [Role.USER]
        roles = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            kind = item.get("type", "message")
            role = item.get("role")
            if kind == "message" and role == "user":
                roles.append(Role.USER)
            elif kind == "message" and role == "assistant":
                roles.append(Role.ASSISTANT)
            elif kind == "message":
                roles.append(Role.OTHER)
            elif str(kind).endswith("_output"):
                roles.append(Role.TOOL)
            elif kind in _ASSISTANT_ITEMS or str(kind).endswith("_call"):
                roles.append(Role.ASSISTANT)
            else:
                roles.append(Role.OTHER)
        return roles

    def has_tools(self, body: JSON) -> bool:
        return bool(body.get("tools"))

    def json_mode(self, body: JSON) -> bool:
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, dict) else None
        return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")

    def error(self, status: int, message: str, retry_after: float | None) -> Reply:
        return openai_error(status, message, retry_after)

    @staticmethod
    def usage(tokens: Tokens) -> JSON:
        return {
            "input_tokens": tokens.input,
            "input_tokens_details": {"cached_tokens": tokens.cached},
            "output_tokens": tokens.output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens.total,
        }

    def items(self, turn: Turn) -> list[JSON]:
        """The completed output items of ``turn``."""
        items: list[JSON] = []
        if turn.text:
            content = [{"type": "output_text", "text": turn.text, "annotations": []}]
            items.append(
                {
                    "type": "message",
                    "id": f"msg_fake{turn.serial:04d}",
                    "status": "completed",
                    "role": "assistant",
                    "content": content,
                }
            )
        for index, call in enumerate(turn.tool_calls):
            common = {
                "id": f"fc_fake{turn.serial:04d}x{index}",
                "call_id": _call_id(call, turn, index),
            }
            if call.custom:
                items.append(
                    {
                        "type": "custom_tool_call",
                        **common,
                        "name": call.name,
                        "input": call.input,
                        "status": "completed",
                    }
                )
            else:
                arguments = dumps(call.function_arguments())
                items.append(
                    {
                        "type": "function_call",
                        **common,
                        "name": call.name,
                        "arguments": arguments,
                        "status": "completed",
                    }
                )
        return items

    def render(self, turn: Turn) -> Reply:
        items = self.items(turn)
        response: JSON = {
            "id": f"resp_fake{turn.serial:04d}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "model": turn.model,
            "output": [],
            "usage": None,
        }
        done = {
            **response,
            "status": "completed",
            "output": items,
            "usage": self.usage(turn.tokens),
        }
        if not turn.stream:
            return json_reply(200, done)
        events: list[tuple[str, JSON]] = [
            ("response.created", {"response": response}),
            ("response.in_progress", {"response": response}),
        ]
        for index, item in enumerate(items):
            events += _item_events(index, item)
        events.append(("response.completed", {"response": done}))
        chunks = tuple(
            sse({"type": kind, "sequence_number": number, **data}, kind)
            for number, (kind, data) in enumerate(events)
        )
        return Reply(200, SSE_HEADERS, chunks=chunks)


def _item_events(index: int, item: JSON) -> list[tuple[str, JSON]]:
    """``output_item.added``, the item's deltas, ``output_item.done``."""
    where: JSON = {"item_id": item["id"], "output_index": index}
    events: list[tuple[str, JSON]] = []
    if item["type"] == "message":
        text: str = item["content"][0]["text"]
        opened = {**item, "status": "in_progress", "content": []}
        part: JSON = {"type": "output_text", "text": "", "annotations": []}
        events.append(("response.output_item.added", {"output_index": index, "item": opened}))
        events.append(("response.content_part.added", {**where, "content_index": 0, "part": part}))
        for piece in pieces(text):
            events.append(
                ("response.output_text.delta", {**where, "content_index": 0, "delta": piece})
            )
        events.append(("response.output_text.done", {**where, "content_index": 0, "text": text}))
        events.append(
            (
                "response.content_part.done",
                {**where, "content_index": 0, "part": {**part, "text": text}},
            )
        )
    else:
        field, kind = (
            ("input", "custom_tool_call_input")
            if item["type"] == "custom_tool_call"
            else ("arguments", "function_call_arguments")
        )
        value: str = item[field]
        opened = {**item, "status": "in_progress", field: ""}
        events.append(("response.output_item.added", {"output_index": index, "item": opened}))
        for piece in pieces(value, 2):
            events.append((f"response.{kind}.delta", {**where, "delta": piece}))
        events.append((f"response.{kind}.done", {**where, field: value}))
    events.append(("response.output_item.done", {"output_index": index, "item": item}))
    return events
