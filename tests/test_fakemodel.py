"""The scripted model server over real HTTP on 127.0.0.1: protocols, scripts, rules, failures."""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from stretto.errors import UsageError
from stretto.testing.fakemodel import (
    FakeModelServer,
    HttpError,
    Match,
    Rule,
    Script,
    ScriptError,
    Session,
    Step,
    ToolCall,
    Usage,
    parse_script,
    serve_main,
)
from stretto.testing.fakemodel.selection import Role, step_index

ROOT = Path(__file__).resolve().parents[1]
WRITE = ToolCall("write_file", {"file_path": "/tmp/a.txt", "content": "hello\n"})


# --------------------------------------------------------------------------- HTTP helpers


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[tuple[str | None, Any]]:
        """Parse a server-sent event stream into (event name, data) pairs."""
        text = self.body.decode().replace("\r\n", "\n")
        events: list[tuple[str | None, Any]] = []
        for block in text.split("\n\n"):
            if not block.strip():
                continue
            name = None
            data = []
            for line in block.split("\n"):
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: "):
                    data.append(line[len("data: ") :])
            payload = "\n".join(data)
            events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
        return events

    def data(self) -> list[Any]:
        return [data for _, data in self.events()]


def request(
    url: str,
    path: str,
    body: Any = None,
    *,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5,
) -> Answer:
    """One request over a fresh HTTP/1.1 connection; the whole answer, any status."""
    match = re.match(r"http://([^:/]+):(\d+)(.*)$", url)
    assert match, url
    host, port, prefix = match.group(1), int(match.group(2)), match.group(3)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        raw = (
            json.dumps(body).encode() if body is not None and not isinstance(body, bytes) else body
        )
        sent = {"Content-Type": "application/json", **(headers or {})}
        connection.request(
            method or ("POST" if body is not None else "GET"), prefix + path, raw, sent
        )
        response = connection.getresponse()
        return Answer(
            response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        )
    finally:
        connection.close()


def chat(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": messages, **extra}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


@pytest.fixture
def two_steps() -> Script:
    return Script.from_steps(
        [
            Step(text="Writing the file.", tool_calls=[WRITE]),
            Step(text="Wrote /tmp/a.txt."),
        ]
    )


# ------------------------------------------------------------------------ OpenAI Chat Completions


def test_chat_completions_plain_reply_with_tool_call_and_usage(two_steps: Script) -> None:
    script = Script.from_steps(
        [Step(text="Writing.", tool_calls=[WRITE], usage=Usage(120, 30, 100))]
    )
    with FakeModelServer(script) as server:
        answer = request(server.url, "/v1/chat/completions", chat([user("make a.txt")]))
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake-model"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Writing."
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "write_file"
    assert json.loads(call["function"]["arguments"]) == dict(WRITE.arguments)
    assert body["usage"] == {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def test_chat_completions_stream_deltas_tool_calls_usage_and_done(two_steps: Script) -> None:
    body = chat([user("make a.txt")], stream=True, stream_options={"include_usage": True})
    with FakeModelServer(two_steps) as server:
        answer = request(server.url, "/v1/chat/completions", body)
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/event-stream"
    assert answer.headers["transfer-encoding"] == "chunked"
    data = answer.data()
    assert data[-1] == "[DONE]"
    chunks = data[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    text = "".join(d.get("content") or "" for d in deltas)
    assert text == "Writing the file."
    assert sum(1 for d in deltas if d.get("content")) > 1, "text should arrive in several deltas"
    call_deltas = [t for d in deltas for t in d.get("tool_calls", [])]
    assert call_deltas[0]["id"].startswith("call_") and call_deltas[0]["type"] == "function"
    assert call_deltas[0]["function"]["name"] == "write_file"
    arguments = "".join(t["function"].get("arguments", "") for t in call_deltas)
    assert json.loads(arguments) == dict(WRITE.arguments)
    finishing = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finishing] == ["tool_calls"]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] == (
        usage_chunk["usage"]["prompt_tokens"] + usage_chunk["usage"]["completion_tokens"]
    )


def test_chat_completions_stream_without_include_usage_has_no_usage_chunk() -> None:
    with FakeModelServer([Step(text="hi")]) as server:
        answer = request(server.url, "/v1/chat/completions", chat([user("x")], stream=True))
    chunks = answer.data()[:-1]
    assert not any("usage" in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


# --------------------------------------------------------------------------- OpenAI Responses


def test_responses_stream_items_function_and_custom_tool_calls() -> None:
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hello\n*** End Patch\n"
    step = Step(
        text="Patching.",
        tool_calls=[
            ToolCall("exec_command", {"cmd": "ls"}),
            ToolCall("apply_patch", custom=True, input=patch, id="call_patch"),
        ],
        usage=Usage(input_tokens=500, output_tokens=40, cached_tokens=256),
    )
    body = {
        "model": "fake-model",
        "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
        ],
        "stream": True,
        "tools": [{"type": "function", "name": "exec_command"}],
    }
    with FakeModelServer([step]) as server:
        answer = request(server.url, "/v1/responses", body)
    assert answer.status == 200
    events = answer.events()
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert names[0] == "response.created" and names[-1] == "response.completed"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    added = [d["item"]["type"] for n, d in events if n == "response.output_item.added"]
    assert added == ["message", "function_call", "custom_tool_call"]
    text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    assert text == "Patching."
    patch_deltas = "".join(
        d["delta"] for n, d in events if n == "response.custom_tool_call_input.delta"
    )
    assert patch_deltas == patch
    done = [d["item"] for n, d in events if n == "response.output_item.done"]
    assert done[0]["content"][0] == {"type": "output_text", "text": "Patching.", "annotations": []}
    assert done[1]["type"] == "function_call" and done[1]["name"] == "exec_command"
    assert json.loads(done[1]["arguments"]) == {"cmd": "ls"}
    assert done[1]["call_id"].startswith("call_")
    assert done[2] == {
        "type": "custom_tool_call",
        "id": done[2]["id"],
        "call_id": "call_patch",
        "name": "apply_patch",
        "input": patch,
        "status": "completed",
    }
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed"
    assert completed["output"] == done
    assert completed["usage"] == {
        "input_tokens": 500,
        "input_tokens_details": {"cached_tokens": 256},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 540,
    }


def test_responses_plain_reply() -> None:
    with FakeModelServer([Step(text="ok")]) as server:
        answer = request(server.url, "/v1/responses", {"model": "m", "input": "hello"})
    body = answer.json()
    assert body["object"] == "response" and body["status"] == "completed"
    assert body["model"] == "m"
    assert body["output"][0]["content"][0]["text"] == "ok"


# --------------------------------------------------------------------------- Anthropic Messages


def test_anthropic_stream_text_and_tool_use() -> None:
    step = Step(text="I'll write it.", tool_calls=[WRITE], usage=Usage(900, 55, 800))
    body = {
        "model": "claude-x",
        "max_tokens": 100,
        "messages": [user("write a.txt")],
        "stream": True,
        "tools": [{"name": "Write", "input_schema": {}}],
    }
    with FakeModelServer([step]) as server:
        answer = request(server.url, "/v1/messages?beta=true", body)
    assert answer.status == 200
    events = answer.events()
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["model"] == "claude-x"
    assert start["usage"]["input_tokens"] == 900
    assert start["usage"]["cache_read_input_tokens"] == 800
    blocks = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [b["type"] for b in blocks] == ["text", "tool_use"]
    assert blocks[1]["name"] == "write_file" and blocks[1]["id"].startswith("toolu_")
    text = "".join(
        d["delta"]["text"] for n, d in events if n == "content_block_delta" and d["index"] == 0
    )
    assert text == "I'll write it."
    partial = "".join(
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(partial) == dict(WRITE.arguments)
    assert names.count("content_block_stop") == 2
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] == 55


def test_anthropic_plain_count_tokens_and_head() -> None:
    with FakeModelServer([Step(text="Done.")]) as server:
        head = request(server.url, "/", method="HEAD")
        plain = request(server.url, "/v1/messages", {"model": "c", "messages": [user("hi")]})
        count = request(server.url, "/v1/messages/count_tokens", {"model": "c", "messages": []})
        endpoints = [r.endpoint for r in server.requests]
    assert head.status == 200 and head.body == b""
    message = plain.json()
    assert message["type"] == "message" and message["stop_reason"] == "end_turn"
    assert message["content"] == [{"type": "text", "text": "Done."}]
    assert set(message["usage"]) >= {"input_tokens", "output_tokens", "cache_read_input_tokens"}
    assert count.status == 200 and count.json()["input_tokens"] >= 1
    assert endpoints == ["head", "generate", "count_tokens"]


# --------------------------------------------------------------------------- Gemini


def test_gemini_stream_sse_generate_json_array_and_count_tokens() -> None:
    step = Step(text="Writing now.", tool_calls=[WRITE], usage=Usage(70, 9))
    body = {"contents": [{"role": "user", "parts": [{"text": "write a.txt"}]}]}
    base = "/v1beta/models/gemini-2.5-flash"
    with FakeModelServer([step]) as server:
        sse = request(server.url, f"{base}:streamGenerateContent?alt=sse", body)
        plain = request(server.url, f"{base}:generateContent", body)
        array = request(server.url, f"{base}:streamGenerateContent", body)
        count = request(server.url, f"{base}:countTokens", body)
    assert sse.headers["content-type"] == "text/event-stream"
    assert b"\r\n\r\n" in sse.body
    chunks = sse.data()
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert "".join(p.get("text", "") for p in parts) == "Writing now."
    assert [p["functionCall"] for p in parts if "functionCall" in p] == [
        {"name": "write_file", "args": dict(WRITE.arguments)}
    ]
    assert all(c["candidates"][0]["content"]["role"] == "model" for c in chunks)
    assert [c["candidates"][0].get("finishReason") for c in chunks][-1] == "STOP"
    assert chunks[-1]["usageMetadata"] == {
        "promptTokenCount": 70,
        "candidatesTokenCount": 9,
        "totalTokenCount": 79,
    }
    assert chunks[-1]["modelVersion"] == "gemini-2.5-flash"
    whole = plain.json()["candidates"][0]["content"]["parts"]
    assert whole == [
        {"text": "Writing now."},
        {"functionCall": {"name": "write_file", "args": dict(WRITE.arguments)}},
    ]
    assert (
        isinstance(array.json(), list)
        and array.json()[-1]["usageMetadata"]["totalTokenCount"] == 79
    )
    assert count.json()["totalTokens"] >= 1


def test_model_lists_in_each_style() -> None:
    script = Script.from_steps([Step(text="x")], models=["fake-model", "fake-large"])
    with FakeModelServer(script) as server:
        openai = request(server.url, "/v1/models").json()
        one = request(server.url, "/v1/models/fake-large").json()
        gemini = request(server.url, "/v1beta/models").json()
        anthropic = request(server.url, "/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert openai["object"] == "list"
    assert [m["id"] for m in openai["data"]] == ["fake-model", "fake-large"]
    assert one["id"] == "fake-large" and one["object"] == "model"
    assert [m["name"] for m in gemini["models"]] == ["models/fake-model", "models/fake-large"]
    assert "generateContent" in gemini["models"][0]["supportedGenerationMethods"]
    assert [m["id"] for m in anthropic.json()["data"]] == ["fake-model", "fake-large"]


# --------------------------------------------------------------------------- step selection


def test_step_index_counts_assistant_turns_after_the_last_genuine_user_message() -> None:
    U, T, A, S = Role.USER, Role.TOOL, Role.ASSISTANT, Role.OTHER
    assert step_index([]) == 0
    assert step_index([S, U]) == 0
    assert step_index([S, U, A, T]) == 1
    assert step_index([U, A, T, A, T]) == 2
    assert step_index([U, A, A, T]) == 1, "a turn's items (message, calls) are one turn"
    assert step_index([U, A, T, U]) == 0, "a new user message starts over"
    assert step_index([U, A, U, A, T, S, A, T]) == 2


CONVERSATIONS: dict[str, tuple[str, Any, Any]] = {
    # protocol: (path, first request, the same conversation after one tool round)
    "chat": (
        "/v1/chat/completions",
        chat([{"role": "system", "content": "sys"}, user("go")]),
        chat(
            [
                {"role": "system", "content": "sys"},
                user("go"),
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "type": "function"}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
            ]
        ),
    ),
    "responses": (
        "/v1/responses",
        {
            "model": "m",
            "input": [{"type": "message", "role": "developer", "content": "d"}, user("go")],
        },
        {
            "model": "m",
            "input": [
                user("go"),
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "w"}],
                },
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
        },
    ),
    "anthropic": (
        "/v1/messages",
        {"model": "c", "messages": [user("go")]},
        {
            "model": "c",
            "messages": [
                user("go"),
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "W", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                        {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                    ],
                },
            ],
        },
    ),
    "gemini": (
        "/v1beta/models/g:generateContent",
        {"contents": [{"role": "user", "parts": [{"text": "go"}]}]},
        {
            "contents": [
                {"role": "user", "parts": [{"text": "go"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]},
            ]
        },
    ),
}


def _reply_text(protocol: str, answer: Answer) -> str:
    body = answer.json()
    if protocol == "chat":
        return str(body["choices"][0]["message"]["content"])
    if protocol == "responses":
        return str(body["output"][0]["content"][0]["text"])
    if protocol == "anthropic":
        return str(body["content"][0]["text"])
    return str(body["candidates"][0]["content"]["parts"][0]["text"])


@pytest.mark.parametrize("protocol", list(CONVERSATIONS))
def test_step_selection_over_a_multi_turn_conversation(protocol: str) -> None:
    path, first, second = CONVERSATIONS[protocol]
    script = Script.from_steps([Step(text="step one"), Step(text="step two")])
    with FakeModelServer(script) as server:
        assert _reply_text(protocol, request(server.url, path, first)) == "step one"
        assert _reply_text(protocol, request(server.url, path, second)) == "step two"
        # stateless: asking again gives the same answer, and past the end comes "done"
        assert _reply_text(protocol, request(server.url, path, first)) == "step one"
        beyond = json.loads(json.dumps(second))
        key = {
            "chat": "messages",
            "responses": "input",
            "anthropic": "messages",
            "gemini": "contents",
        }
        beyond[key[protocol]] += second[key[protocol]][-2:]
        assert _reply_text(protocol, request(server.url, path, beyond)) == "done"
        logged = [(r.step, r.past_end, r.protocol) for r in server.requests]
    assert logged == [
        (0, False, protocol),
        (1, False, protocol),
        (0, False, protocol),
        (2, True, protocol),
    ]


def test_past_end_last_text_and_custom_step() -> None:
    script = Script(
        sessions={
            "a": Session([Step(text="first"), Step(text="final words")], past_end="last_text"),
            "b": Session([Step(text="only")]),
        },
        past_end=Step(text="script over"),
    )
    after_two = chat([user("x"), {"role": "assistant", "content": "1"}, user("y")])
    after_two["messages"] = [user("x")] + [
        {"role": "assistant", "content": "1"},
        {"role": "tool", "content": ""},
    ] * 3
    with FakeModelServer(script) as server:
        a = request(server.session_url("a"), "/v1/chat/completions", after_two).json()
        b = request(server.session_url("b"), "/v1/chat/completions", after_two).json()
    assert a["choices"][0]["message"]["content"] == "final words"
    assert b["choices"][0]["message"]["content"] == "script over"


# --------------------------------------------------------------------------- sessions


def test_sessions_by_url_prefix_concurrently_from_threads() -> None:
    script = Script(
        sessions={
            "default": Session([Step(text="default says hi")]),
            "alpha": Session([Step(text="alpha one"), Step(text="alpha two")]),
            "beta": Session([Step(text="beta one", delay=0.05), Step(text="beta two")]),
        }
    )
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def agent(server: FakeModelServer, name: str) -> None:
        try:
            seen = []
            messages = [user("go")]
            for _ in range(3):
                body = request(
                    server.session_url(name), "/v1/chat/completions", chat(messages)
                ).json()
                text = body["choices"][0]["message"]["content"]
                seen.append(text)
                messages += [
                    {"role": "assistant", "content": text},
                    {"role": "tool", "content": "r"},
                ]
            results[name] = seen
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    with FakeModelServer(script) as server:
        threads = [threading.Thread(target=agent, args=(server, n)) for n in ("alpha", "beta") * 1]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        plain = request(server.url, "/v1/chat/completions", chat([user("go")])).json()
        missing = request(server.url, "/s/gamma/v1/chat/completions", chat([user("go")]))
        sessions = sorted({r.session for r in server.requests})
    assert not errors
    assert results == {
        "alpha": ["alpha one", "alpha two", "done"],
        "beta": ["beta one", "beta two", "done"],
    }
    assert plain["choices"][0]["message"]["content"] == "default says hi"
    assert missing.status == 404
    message = missing.json()["error"]["message"]
    assert "no session 'gamma'" in message and "alpha, beta, default" in message
    assert sessions == ["alpha", "beta", "default", "gamma"]


def test_env_gives_each_cli_its_base_url() -> None:
    script = Script(
        sessions={"default": Session([Step(text="a")]), "w1": Session([Step(text="b")])}
    )
    with FakeModelServer(script) as server:
        env = server.env("w1")
        base = f"http://127.0.0.1:{server.port}"
        assert server.url == base
        assert env["OPENAI_BASE_URL"] == f"{base}/s/w1/v1"
        assert env["ANTHROPIC_BASE_URL"] == f"{base}/s/w1"
        assert env["GOOGLE_GEMINI_BASE_URL"] == f"{base}/s/w1"
        assert server.env()["OPENAI_BASE_URL"] == f"{base}/v1"
        # the Anthropic SDK appends /v1/messages to ANTHROPIC_BASE_URL
        answer = request(
            env["ANTHROPIC_BASE_URL"], "/v1/messages", {"model": "c", "messages": [user("x")]}
        )
        assert answer.json()["content"][0]["text"] == "b"


# --------------------------------------------------------------------------- match rules


def test_match_rules_answer_side_requests_without_consuming_steps() -> None:
    script = Script(
        sessions={"default": Session([Step(text="main step 0"), Step(text="main step 1")])},
        rules=[
            Rule(Match(body_contains="commit message"), Step(text="Add a.txt")),
            Rule(Match(json_mode=True), Step(text='{"complexity_score": 10}')),
            Rule(Match(protocol=("anthropic",), no_tools=True), Step(text="claude side")),
            Rule(Match(no_tools=True), Step(text="A title")),
        ],
    )
    tools = {"tools": [{"type": "function", "function": {"name": "write"}}]}
    with FakeModelServer(script) as server:
        post = request
        title = post(server.url, "/v1/chat/completions", chat([user("Generate a title")]))
        commit = post(
            server.url,
            "/v1/chat/completions",
            chat([user("Write a Git Commit Message for this diff")], **tools),
        )
        router = post(
            server.url,
            "/v1beta/models/g:generateContent",
            {
                "contents": [{"role": "user", "parts": [{"text": "route"}]}],
                "generationConfig": {"responseMimeType": "application/json"},
            },
        )
        json_chat = post(
            server.url,
            "/v1/chat/completions",
            chat([user("x")], response_format={"type": "json_object"}, **tools),
        )
        claude = post(server.url, "/v1/messages", {"model": "c", "messages": [user("x")]})
        main = post(server.url, "/v1/chat/completions", chat([user("do it")], **tools))
        rules = [(r.rule, r.step) for r in server.requests]
    assert title.json()["choices"][0]["message"]["content"] == "A title"
    assert commit.json()["choices"][0]["message"]["content"] == "Add a.txt"
    assert (
        router.json()["candidates"][0]["content"]["parts"][0]["text"] == '{"complexity_score": 10}'
    )
    assert json_chat.json()["choices"][0]["message"]["content"] == '{"complexity_score": 10}'
    assert claude.json()["content"][0]["text"] == "claude side"
    assert main.json()["choices"][0]["message"]["content"] == "main step 0"
    assert rules == [
        ("rules[3]", None),
        ("rules[0]", None),
        ("rules[1]", None),
        ("rules[1]", None),
        ("rules[2]", None),
        (None, 0),
    ]


def test_session_rules_come_before_script_rules() -> None:
    text = """
rules:
  - when: {no_tools: true}
    reply: global title
sessions:
  special:
    rules:
      - when: {no_tools: true, model: small-model}
        reply: {text: special title}
    steps: [main]
"""
    script = parse_script(text, "rules.yaml")
    with FakeModelServer(script) as server:
        url = server.session_url("special")
        small = request(
            url, "/v1/chat/completions", {"model": "small-model", "messages": [user("t")]}
        )
        other = request(
            url, "/v1/chat/completions", {"model": "big-model", "messages": [user("t")]}
        )
        rules = [r.rule for r in server.requests]
    assert small.json()["choices"][0]["message"]["content"] == "special title"
    assert other.json()["choices"][0]["message"]["content"] == "global title"
    assert rules == ["sessions.special.rules[0]", "rules[0]"]


# --------------------------------------------------------------------------- injected failures


def test_http_errors_400_429_retry_after_and_500_per_protocol() -> None:
    script = Script(
        sessions={
            "bad": Session([Step(http_error=HttpError(400))]),
            "limited": Session([Step(http_error=HttpError(429, retry_after=2.5))]),
            "broken": Session([Step(http_error=HttpError(500))]),
        }
    )
    with FakeModelServer(script) as server:
        bad = request(server.session_url("bad"), "/v1/chat/completions", chat([user("x")]))
        limited = request(
            server.session_url("limited"),
            "/v1/messages",
            {"model": "c", "messages": [user("x")], "stream": True},
        )
        gemini_limited = request(
            server.session_url("limited"),
            "/v1beta/models/g:streamGenerateContent?alt=sse",
            {"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
        )
        broken = request(
            server.session_url("broken"),
            "/v1/responses",
            {"model": "m", "input": "x", "stream": True},
        )
        statuses = [r.status for r in server.requests]
    assert bad.status == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert "scripted" in bad.json()["error"]["message"]
    assert limited.status == 429
    assert limited.headers["retry-after"] == "3"
    assert limited.headers["retry-after-ms"] == "2500"
    assert limited.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": limited.json()["error"]["message"]},
    }
    assert gemini_limited.status == 429
    error = gemini_limited.json()["error"]
    assert error["code"] == 429 and error["status"] == "RESOURCE_EXHAUSTED"
    assert error["details"][0]["retryDelay"] == "2.5s"
    assert broken.status == 500 and broken.json()["error"]["type"] == "server_error"
    assert statuses == [400, 429, 429, 500]


def test_http_error_times_then_reply_and_custom_body() -> None:
    text = """
steps:
  - text: after the failures
    http_error: {status: 429, times: 2, body: {"error": {"message": "slow down"}}}
"""
    script = parse_script(text, "retry.yaml")
    with FakeModelServer(script) as server:
        answers = [request(server.url, "/v1/chat/completions", chat([user("x")])) for _ in range(3)]
    assert [a.status for a in answers] == [429, 429, 200]
    assert answers[0].json() == {"error": {"message": "slow down"}}
    assert "retry-after" not in answers[0].headers
    assert answers[2].json()["choices"][0]["message"]["content"] == "after the failures"


def test_hang_times_the_client_out_and_the_server_still_stops_cleanly() -> None:
    server = FakeModelServer([Step(hang=True)]).start()
    before = threading.active_count()
    with pytest.raises(TimeoutError):
        request(server.url, "/v1/chat/completions", chat([user("x")], stream=True), timeout=0.5)
    # a second client waiting on the hang while the server stops sees its connection closed
    holder = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    raw = json.dumps(chat([user("x")])).encode()
    holder.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(raw)}\r\n\r\n".encode()
        + raw
    )
    deadline = time.monotonic() + 5
    while len(server.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    assert holder.recv(100) == b"", "the hung request ends with the connection closed, no answer"
    holder.close()
    assert [r.status for r in server.requests] == [None, None]
    assert threading.active_count() <= before
    assert not any(t.name == "fake-model" for t in threading.enumerate())
    server.stop()  # stopping twice is harmless


def test_delay_postpones_the_answer() -> None:
    with FakeModelServer([Step(text="late", delay=0.3)]) as server:
        started = time.monotonic()
        answer = request(server.url, "/v1/chat/completions", chat([user("x")]))
        elapsed = time.monotonic() - started
    assert answer.status == 200 and elapsed >= 0.3


# --------------------------------------------------------------------------- the request log


def test_request_log_file_has_every_request_without_secrets(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "requests.jsonl"
    script = Script(sessions={"default": Session([Step(text="x")]), "w": Session([Step(text="y")])})
    with FakeModelServer(script, log_path=log) as server:
        request(
            server.url,
            "/v1/chat/completions",
            chat([user("x")]),
            headers={"Authorization": "Bearer sk-secret", "X-Custom": "kept"},
        )
        request(
            server.session_url("w"),
            "/v1beta/models/g:generateContent?key=AIzaSECRET",
            {"contents": [{"role": "user", "parts": [{"text": "x"}]}]},
            headers={"x-goog-api-key": "AIzaSECRET"},
        )
        request(
            server.url,
            "/v1/messages",
            {"model": "c", "messages": []},
            headers={"x-api-key": "sk-ant-SECRET"},
        )
        request(server.url, "/nope", {"a": 1})
        gzipped = gzip.compress(json.dumps(chat([user("zipped")])).encode())
        request(server.url, "/v1/chat/completions", gzipped, headers={"Content-Encoding": "gzip"})
        in_memory = [r.to_dict() for r in server.requests]
    text = log.read_text()
    assert "SECRET" not in text and "sk-secret" not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert records == in_memory
    assert len(records) == 5
    first = records[0]
    assert set(first) >= {"time", "method", "path", "session", "protocol", "headers", "body"}
    assert first["method"] == "POST" and first["path"] == "/v1/chat/completions"
    assert first["session"] == "default" and first["protocol"] == "chat"
    assert first["headers"]["authorization"] == "<redacted>"
    assert first["headers"]["x-custom"] == "kept"
    assert first["body"]["messages"] == [user("x")]
    assert first["status"] == 200 and first["step"] == 0
    assert records[1]["session"] == "w" and records[1]["protocol"] == "gemini"
    assert records[1]["path"].endswith("key=%3Credacted%3E") or "redacted" in records[1]["path"]
    assert records[2]["headers"]["x-api-key"] == "<redacted>"
    assert records[3]["endpoint"] == "unknown" and records[3]["status"] == 404
    assert records[4]["body"]["messages"] == [user("zipped")]
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", first["time"])


def test_malformed_requests_get_errors_in_the_protocols_shape() -> None:
    with FakeModelServer([Step(text="x")]) as server:
        not_json = request(server.url, "/v1/messages", b"{oops", headers={})
        zstd = request(
            server.url, "/v1/chat/completions", b"\x28\xb5", headers={"Content-Encoding": "zstd"}
        )
        gemini = request(server.url, "/v1beta/models/g:generateContent", [1, 2])
    assert not_json.status == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    assert "must be a JSON object" in not_json.json()["error"]["message"]
    assert zstd.status == 415 and "send it uncompressed" in zstd.json()["error"]["message"]
    assert gemini.status == 400 and gemini.json()["error"]["status"] == "INVALID_ARGUMENT"


# --------------------------------------------------------------------------- binding


def test_refuses_any_host_but_loopback_and_a_busy_port() -> None:
    for host in ("0.0.0.0", "localhost", "192.168.1.5", "::1"):
        with pytest.raises(UsageError, match=r"listens on 127\.0\.0\.1 only"):
            FakeModelServer([Step(text="x")], host=host)
    with FakeModelServer([Step(text="x")]) as server:
        bound = socket.getaddrinfo("127.0.0.1", server.port)[0][4][0]
        assert bound == "127.0.0.1"
        with pytest.raises(
            UsageError, match=r"cannot listen on 127\.0\.0\.1:\d+.*pick another port"
        ):
            FakeModelServer([Step(text="x")], port=server.port).start()


# --------------------------------------------------------------------------- bad scripts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "steps:\n  - txt: hello\n",
            "bad.yaml:2:5: steps[0].txt: unknown key 'txt' in this step (did you mean 'text'?)",
        ),
        (
            "sessions:\n  a:\n    - tool_calls:\n        - arguments: {x: 1}\n",
            "bad.yaml:4:11: sessions.a[0].tool_calls[0]: missing tool name",
        ),
        (
            "steps: [hi]\nrules:\n  - when: {protocol: antropic}\n    reply: x\n",
            "bad.yaml:3:22: rules[0].when.protocol: unknown protocol 'antropic' "
            "(did you mean 'anthropic'?)",
        ),
        (
            "steps:\n  - http_error: {status: 200}\n",
            "bad.yaml:2:26: steps[0].http_error.status: expected an HTTP error status 400-599",
        ),
        ("steps:\n  - {}\n", "bad.yaml:2:5: steps[0]: empty step"),
        (
            "steps:\n  - text: x\n    http_error: 500\n",
            "steps[0].http_error: this step always fails",
        ),
        (
            "steps:\n  - tool_calls: [{name: apply_patch, custom: true}]\n",
            "steps[0].tool_calls[0]: a custom tool call needs 'input:'",
        ),
        (
            "steps:\n  - delay: -1\n    text: x\n",
            "steps[0].delay: expected a number of seconds >= 0",
        ),
        ("steps:\n  - text: [x\n", "bad.yaml:3:1: YAML syntax error"),
        ("sessions: {}\n", "no sessions"),
        ("past_end: finished\nsteps: [x]\n", "past_end: expected 'done', 'last_text' or a step"),
        (
            "sessions:\n  'a b': [x]\n",
            "sessions.a b: a session name may hold letters, digits",
        ),
    ],
)
def test_bad_scripts_are_reported_with_file_line_field_and_fix(text: str, expected: str) -> None:
    with pytest.raises(ScriptError) as caught:
        parse_script(text, "bad.yaml")
    assert expected in str(caught.value)
    assert caught.value.exit_code == 2
    assert caught.value.diagnostics


def test_json_scripts_and_several_problems_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"steps": [{"text": "x", "usage": {"input_tokens": -1}}, {"hang": "yes"}]}')
    with pytest.raises(ScriptError) as caught:
        from stretto.testing.fakemodel import load_script

        load_script(path)
    messages = [d.message for d in caught.value.diagnostics]
    assert any("expected a whole number >= 0" in m for m in messages)
    assert any("expected true or false" in m for m in messages)
    path.write_text('{"steps": [')
    with pytest.raises(ScriptError, match=r"s\.json:1:12: JSON syntax error"):
        load_script(path)
    with pytest.raises(ScriptError, match="file not found"):
        load_script(tmp_path / "missing.yaml")


def test_docs_example_script_is_valid() -> None:
    doc = (ROOT / "docs" / "fake-model.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    assert blocks, "docs/fake-model.md should show a YAML script"
    for block in blocks:
        script = parse_script(block, "docs/fake-model.md")
        assert script.sessions


# --------------------------------------------------------------------------- the serve command


def test_serve_main_reports_a_bad_script(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("steps:\n  - txt: x\n")
    assert serve_main(["serve", "--script", str(path)]) == 2
    assert "unknown key 'txt'" in capsys.readouterr().err


def test_serve_command_prints_base_urls_and_serves_until_interrupted(tmp_path: Path) -> None:
    script = tmp_path / "s.yaml"
    script.write_text("sessions:\n  default: [hello from the script]\n  w1: [w1 here]\n")
    log = tmp_path / "req.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "stretto.testing.fakemodel", "serve"]
    command += ["--script", str(script), "--log", str(log)]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A background shell ignores SIGINT for its children; restore the default for the server.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
            assert match, first
            url = match.group(1)
            lines = [first]
            while "Ctrl-C" not in lines[-1] and lines[-1]:
                lines.append(process.stdout.readline())
            shown = "".join(lines)
            assert f"OPENAI_BASE_URL={url}/v1 " in shown
            assert f"ANTHROPIC_BASE_URL={url} " in shown
            assert f"GOOGLE_GEMINI_BASE_URL={url} " in shown
            assert f"{url}/s/w1/v1" in shown
            answer = request(url, "/v1/chat/completions", chat([user("x")]))
            assert answer.json()["choices"][0]["message"]["content"] == "hello from the script"
            process.send_signal(signal.SIGINT)
            assert process.wait(10) == 0
            assert process.stderr is not None
            assert "stopped after 1 requests" in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
    assert json.loads(log.read_text().splitlines()[0])["protocol"] == "chat"
