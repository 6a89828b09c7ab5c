"""The adapter contract every agent CLI implements, and the values it trades in.

An adapter is a small object with three jobs (STYLE.md rule 3):

* :meth:`Adapter.build` turns an :class:`AttemptContext` into a :class:`Launch` (argv,
  environment, optional stdin) that runs the CLI non-interactively in the attempt's worktree;
* :meth:`Adapter.parse_line` turns one line of the CLI's output into :class:`AgentEvent` values
  (text, tool use, usage, cost, rate limit, error) while it runs;
* :meth:`Adapter.decide` looks at the exit status and the events and says honestly how the
  attempt ended (:class:`Outcome`): many CLIs exit 0 on failure, so the exit code alone is not
  enough.

Running the process (process group, timeout, logs) is not the adapter's business: see
:mod:`stretto.process`.

An adapter whose CLI has a non-interactive, read-only mode with a structured answer may also
implement :class:`Planner` (``plan_launch`` and ``plan_reply``);
:mod:`stretto.planning.planner` uses it for the one planning call that turns a goal into a plan.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from stretto.plans.plan import Task


class Outcome(enum.Enum):
    """How an attempt's agent ended, as far as the agent itself is concerned."""

    SUCCESS = "success"
    """The agent finished its work normally (gates still judge the result)."""
    FAILED = "failed"
    """The agent exited with an error of its own or did not do the work."""
    API_ERROR = "api_error"
    """The model provider answered with an error (bad request, server error, auth)."""
    RATE_LIMITED = "rate_limited"
    """The provider refused for rate reasons, for now; not the task's fault."""
    OUT_OF_CREDIT = "out_of_credit"
    """The provider refused because the account has no credit or quota left: nothing will run
    there until it is topped up (or its quota resets). Not the task's fault."""
    PERMISSION_DENIED = "permission_denied"
    """The agent was not allowed to make the edits it wanted."""
    TIMED_OUT = "timed_out"
    """The attempt hit its time limit and its process group was killed."""
    OVER_LIMIT = "over_limit"
    """The agent passed one of the attempt's limits (model calls, tokens or dollars, counted
    from what it streamed: ``[attempt]`` in stretto.toml) and stretto stopped it."""
    STOPPED = "stopped"
    """stretto stopped the attempt (the run was stopped or interrupted)."""

    @property
    def counts_as_failure(self) -> bool:
        """Whether this outcome uses up one of the task's attempts."""
        return self not in (Outcome.RATE_LIMITED, Outcome.OUT_OF_CREDIT, Outcome.STOPPED)


#: What providers and CLIs say when the account has no credit or quota left (as opposed to a
#: rate limit): Claude Code's ``billing_error`` and Anthropic's "credit balance is too low",
#: OpenAI's ``insufficient_quota`` (codex: "Quota exceeded. Check your plan and billing
#: details."), Gemini CLI's ``TerminalQuotaError`` (a daily quota used up).
OUT_OF_CREDIT = re.compile(
    r"billing_error|credit balance is too low|insufficient_quota|exceeded your current quota"
    r"|quota exceeded\. check your plan|TerminalQuotaError|exhausted your daily quota",
    re.IGNORECASE,
)


_STATED_DELAY = re.compile(
    r"(?:try again|retry|retrying)(?: after| in)?\s*:?\s*(\d+(?:\.\d+)?)\s*"
    r"(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)\b",
    re.IGNORECASE,
)


def delay_in_text(text: str) -> float | None:
    """Seconds a provider asked for in words ("Please try again in 3s", "retry after 20
    seconds", "try again in 1m"), the last such phrase in ``text``; None if it names none."""
    found = _STATED_DELAY.findall(text or "")
    if not found:
        return None
    number, unit = found[-1]
    scale = 0.001 if unit.lower().startswith("ms") or unit.lower().startswith("milli") else 1.0
    if unit.lower().startswith("m") and not unit.lower().startswith(("ms", "milli")):
        scale = 60.0
    return float(number) * scale


@dataclass(frozen=True, slots=True)
class AttemptContext:
    """Everything an adapter may use to build its command."""

    task: Task
    attempt: int
    run_id: str
    workspace: Path
    prompt: str
    prompt_file: Path
    log_dir: Path
    env: Mapping[str, str]  # the allow-listed environment, with STRETTO_* variables added
    model: str | None = None
    timeout: float | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)  # the agent's table in config


@dataclass(frozen=True, slots=True)
class Launch:
    """A process to start: argv, environment and working directory."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    stdin: str | None = None
    model: str | None = None  # the model the adapter told the CLI to use (None: the CLI's own)


@dataclass(frozen=True, slots=True)
class AgentEvent:
    """Something the agent reported while it ran."""

    kind: str  # text | tool | file | usage | cost | call | model | rate_limit | error
    data: Mapping[str, Any] = field(default_factory=dict)


def reported_model(events: Sequence[AgentEvent]) -> str | None:
    """The model the CLI said it used (the last ``model`` event's ``name``), if it said."""
    for event in reversed(events):
        if event.kind == "model" and event.data.get("name"):
            return str(event.data["name"])
    return None


def used_model(events: Sequence[AgentEvent], launch: Launch, fallback: str | None) -> str | None:
    """The model an attempt ran on, for the ledger and the journal: what the CLI reported, else
    what the adapter told it (its default included), else ``fallback`` (the route's model)."""
    return reported_model(events) or launch.model or fallback


@dataclass(frozen=True, slots=True)
class AgentResult:
    """The adapter's verdict on a finished agent process."""

    outcome: Outcome
    exit_code: int | None
    reason: str = ""
    retry_after: float | None = None
    usage: Mapping[str, int] = field(default_factory=dict)
    cost_usd: float | None = None


@runtime_checkable
class Adapter(Protocol):
    """What an agent adapter implements. Built-ins and plugins register the same way."""

    name: str

    def build(self, ctx: AttemptContext) -> Launch:
        """The process that runs the agent for this attempt."""
        ...

    def parse_line(self, line: str, stream: str) -> Sequence[AgentEvent]:
        """Events in one line of output (``stream`` is "stdout" or "stderr")."""
        ...

    def decide(
        self, exit_code: int | None, timed_out: bool, events: Sequence[AgentEvent]
    ) -> AgentResult:
        """How the attempt ended, from the exit status and everything parsed."""
        ...


@dataclass(frozen=True, slots=True)
class PlanReply:
    """What a planning call answered, read from the CLI's output by :meth:`Planner.plan_reply`.

    ``text`` is the answer (JSON text, not yet checked); ``error`` is set when the CLI itself
    failed (API error, crash, no result), in which case ``text`` is usually empty. ``model`` is
    the model the CLI reports having used, when it says.
    """

    text: str
    usage: Mapping[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    error: str | None = None
    model: str | None = None


@runtime_checkable
class Planner(Protocol):
    """Optional: an adapter that can make one read-only planning call with a structured answer.

    The call must not change any file: adapters use their CLI's read-only or plan mode.
    """

    name: str

    def plan_launch(
        self,
        prompt: str,
        schema: Mapping[str, Any],
        *,
        cwd: Path,
        env: Mapping[str, str],
        model: str | None,
        settings: Mapping[str, Any],
        work_dir: Path,
    ) -> Launch:
        """The process that asks the CLI for an answer matching the JSON ``schema``.

        ``work_dir`` is an empty folder for the call's own files (config home, schema file);
        ``settings`` is the agent's ``[agents.NAME]`` table; ``model`` a model or tier name.
        """
        ...

    def plan_reply(self, stdout: str, exit_code: int | None) -> PlanReply:
        """The answer in the finished process's standard output."""
        ...
