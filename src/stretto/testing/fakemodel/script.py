"""Scripts for the fake model server: sessions of steps, match rules, and loading them.

A script is plain data. Each *session* is a list of *steps*; a step is one model reply (text
and/or tool calls) or an injected failure (an HTTP error, a hang). *Rules* answer side requests
(title generation, commit messages, a router's JSON-mode call) without consuming a step. Scripts
come from YAML or JSON files (:func:`load_script`, :func:`parse_script`) or are built in Python::

    Script.from_steps([Step(tool_calls=[ToolCall("write", {"path": "a.txt"})]), Step(text="ok")])

Files are validated strictly: every problem is reported as a :class:`~stretto.errors.Diagnostic`
naming file:line:column, the field and the fix, inside one :class:`ScriptError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from stretto.errors import InputError

PROTOCOLS = ("chat", "responses", "anthropic", "gemini", "ollama")
"""Protocol names used by match rules and the request log."""

PastEnd = Literal["done", "last_text"]
SESSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ScriptError(InputError):
    """The fake model script is invalid."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call in a reply.

    ``custom=True`` makes it a Responses API ``custom_tool_call`` whose ``input`` is a raw string
    (codex's freeform ``apply_patch``); other protocols receive it as a function call with the
    arguments ``{"input": input}``.
    """

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    custom: bool = False
    input: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a tool call needs a name")
        if self.custom and self.input is None:
            raise ValueError(f"custom tool call {self.name!r} needs input (a string)")
        if not self.custom and self.input is not None:
            raise ValueError(f"tool call {self.name!r}: input is only for custom=True")

    def function_arguments(self) -> dict[str, Any]:
        """The arguments as a function call carries them (custom calls wrap their input)."""
        if self.custom:
            return {"input": self.input}
        return dict(self.arguments)


@dataclass(frozen=True, slots=True)
class Usage:
    """Fake token counts to report; ``None`` means "estimate from the request and reply"."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class HttpError:
    """An injected HTTP failure.

    ``body`` replaces the protocol's usual error JSON; ``retry_after`` (seconds) sets the
    ``Retry-After`` header; ``times`` limits the failure to the first N requests that reach this
    step, after which the step's reply is sent (``None``: fail every time).
    """

    status: int
    body: str | Mapping[str, Any] | None = None
    retry_after: float | None = None
    times: int | None = None

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"http_error status must be 400-599, got {self.status}")


@dataclass(frozen=True, slots=True)
class Step:
    """One model reply, or a failure injected in its place.

    Args:
        text: the assistant's text.
        tool_calls: tool calls, rendered per protocol (OpenAI ``tool_calls``, Responses
            ``function_call``/``custom_tool_call``, Anthropic ``tool_use``, Gemini
            ``functionCall``).
        usage: token counts to report instead of estimates.
        http_error: answer with this HTTP error instead.
        hang: accept the request and never answer (until the server stops).
        delay: seconds to wait before answering.
    """

    text: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    usage: Usage | None = None
    http_error: HttpError | None = None
    hang: bool = False
    delay: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))
        if self.delay < 0:
            raise ValueError("delay must be >= 0")


@dataclass(frozen=True, slots=True)
class Match:
    """Conditions of a rule; every condition given must hold (``None``: not checked)."""

    no_tools: bool | None = None
    json_mode: bool | None = None
    body_contains: str | None = None
    protocol: tuple[str, ...] | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """Answer requests matching ``when`` with ``reply``, without consuming a step."""

    when: Match
    reply: Step


@dataclass(frozen=True, slots=True)
class Session:
    """The steps one agent walks through; rules here are checked before the script's own."""

    steps: Sequence[Step]
    rules: Sequence[Rule] = ()
    past_end: PastEnd | Step | None = None  # None: the script's setting

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "rules", tuple(self.rules))


@dataclass(frozen=True, slots=True)
class Script:
    """Sessions by name (URL prefix ``/s/<name>``; no prefix means ``default``), global rules,
    what to answer past the end of a session, and the model ids the model lists show."""

    sessions: Mapping[str, Session]
    rules: Sequence[Rule] = ()
    past_end: PastEnd | Step = "done"
    models: Sequence[str] = ("fake-model",)
    source: str = "<script>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sessions", dict(self.sessions))
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "models", tuple(self.models))
        for name in self.sessions:
            if not SESSION_NAME.match(name):
                raise ValueError(f"session name {name!r}: use letters, digits, '.', '_', '-'")

    @classmethod
    def from_steps(cls, steps: Iterable[Step], **options: Any) -> Script:
        """A script with one session, ``default``, made of ``steps``."""
        return cls(sessions={"default": Session(tuple(steps))}, **options)
