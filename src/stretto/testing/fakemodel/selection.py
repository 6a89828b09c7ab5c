"""Which reply a request gets: pure decisions over plain values, no HTTP.

The server stays stateless: a request's position in its conversation is read from the messages
it carries. Each protocol module reduces its message list to a sequence of :class:`Role` values;
:func:`step_index` counts the assistant turns after the last genuine user message, and
:func:`choose` checks the match rules, then picks that step (or the past-the-end reply).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from stretto.testing.fakemodel.script import Match, Script, Session, Step


class Role(Enum):
    """What one entry of a conversation is, for counting turns."""

    USER = "user"
    """A genuine user message: it carries no tool results."""
    TOOL = "tool"
    """Tool results (an OpenAI ``tool`` message, a user message with ``tool_result`` blocks, …)."""
    ASSISTANT = "assistant"
    """Model output: a message, a tool call, reasoning."""
    OTHER = "other"
    """System or developer instructions; ignored."""


def step_index(roles: Sequence[Role]) -> int:
    """The number of assistant turns after the last genuine user message.

    Consecutive assistant entries form one turn (the Responses API sends a turn's message and its
    function calls as separate items), so ``user, assistant, tool, assistant, tool`` is 2.
    """
    start = 0
    for index, role in enumerate(roles):
        if role is Role.USER:
            start = index + 1
    turns = 0
    previous: Role | None = None
    for role in roles[start:]:
        if role is Role.OTHER:
            continue
        if role is Role.ASSISTANT and previous is not Role.ASSISTANT:
            turns += 1
        previous = role
    return turns


@dataclass(frozen=True, slots=True)
class Facts:
    """What match rules can look at in a request."""

    protocol: str
    model: str
    has_tools: bool
    json_mode: bool
    body: str  # the raw request body, as text


def matches(match: Match, facts: Facts) -> bool:
    """True when every condition given in ``match`` holds for the request."""
    if match.no_tools is not None and match.no_tools == facts.has_tools:
        return False
    if match.json_mode is not None and match.json_mode != facts.json_mode:
        return False
    if match.body_contains is not None and match.body_contains.lower() not in facts.body.lower():
        return False
    if match.protocol is not None and facts.protocol not in match.protocol:
        return False
    return match.model is None or match.model == facts.model


@dataclass(frozen=True, slots=True)
class Choice:
    """The reply chosen for a request, and why (for the request log)."""

    step: Step
    key: str  # names the step or rule, e.g. "sessions.default.steps[2]"; keys failure counters
    index: int | None = None  # the step number, when a step (or past the end) was chosen
    rule: str | None = None  # e.g. "rules[0]", when a rule was chosen
    past_end: bool = False


DONE = Step(text="done")


def choose(
    script: Script, name: str, session: Session, facts: Facts, roles: Sequence[Role]
) -> Choice:
    """Pick the reply: the first matching rule (session rules, then the script's), else step k."""
    scoped = [(f"sessions.{name}.rules[{i}]", rule) for i, rule in enumerate(session.rules)]
    scoped += [(f"rules[{i}]", rule) for i, rule in enumerate(script.rules)]
    for label, rule in scoped:
        if matches(rule.when, facts):
            return Choice(step=rule.reply, key=label, rule=label)
    index = step_index(roles)
    if index < len(session.steps):
        return Choice(step=session.steps[index], key=f"sessions.{name}.steps[{index}]", index=index)
    return Choice(
        step=_past_end(session, script),
        key=f"sessions.{name}.past_end",
        index=index,
        past_end=True,
    )


def _past_end(session: Session, script: Script) -> Step:
    setting: str | Step = session.past_end if session.past_end is not None else script.past_end
    if isinstance(setting, Step):
        return setting
    if setting == "last_text" and session.steps and session.steps[-1].text:
        return Step(text=session.steps[-1].text)
    return DONE
