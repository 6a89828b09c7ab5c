"""The ``claude`` agent: Claude Code (``@anthropic-ai/claude-code``), run non-interactively.

Each attempt runs::

    claude -p --output-format stream-json --verbose --permission-mode acceptEdits [--model M]

in the attempt's worktree, with the prompt on stdin (no length limit, nothing in ``ps``), its
own ``CLAUDE_CONFIG_DIR`` under the attempt's log folder, and telemetry, error reporting,
auto-update and other non-essential traffic off. ``acceptEdits`` lets it edit files in the
worktree; anything else (Bash, writes elsewhere) is denied and reported as
``permission_denied``.

Settings (``[agents.claude]`` in stretto.toml), all optional:

* ``command``: the CLI to run (default: ``claude`` on PATH);
* ``model``: the model when the step names none; ``models``: a tier map, e.g.
  ``{fast = "haiku", balanced = "sonnet", strong = "opus"}`` (the default), so a step's
  ``model: fast`` picks a model; any other name is passed as it is;
* ``base_url`` / ``api_key_env``: the endpoint and the name of the variable holding the key,
  when ``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_API_KEY`` are not passed through ``env = [...]``;
* ``max_retries``: the CLI's own retries on API errors (``CLAUDE_CODE_MAX_RETRIES``; default 2,
  since stretto backs off rate-limited providers itself);
* ``permission_mode`` (default ``acceptEdits``), ``allowed_tools`` (a list, e.g. ``["Bash"]``)
  and ``args`` (extra arguments).

Claude Code prints one JSON object per line. The last one, ``{"type": "result", ...}``, says how
the run ended: ``is_error`` with ``api_error_status`` for provider errors (exit 1), and
``permission_denials`` for edits it was not allowed to make, with exit status 0, which is why
the exit status alone is not trusted.

Planning (:class:`~stretto.agents.base.Planner`) runs, in the repository root::

    claude -p --output-format json --json-schema SCHEMA --permission-mode plan
        --tools Read,Glob,Grep --no-session-persistence --model M

read-only twice over: plan mode, and no tool that writes (only Read, Glob and Grep, plus the
``StructuredOutput`` tool Claude Code adds for ``--json-schema``). The answer is the result's
``structured_output`` (validated against the schema by Claude Code itself), else its ``result``
text. The model is ``model``, else ``[agents.claude] model``, else the ``strong`` tier.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stretto.agents.base import (
    OUT_OF_CREDIT,
    AgentEvent,
    AgentResult,
    AttemptContext,
    Launch,
    Outcome,
    PlanReply,
    delay_in_text,
)
from stretto.agents.settings import resolve_command
from stretto.errors import UsageError

DEFAULT_MODELS = {"fast": "haiku", "balanced": "sonnet", "strong": "opus"}
"""Tier -> model alias, understood by Claude Code itself."""

QUIET_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
}
"""No telemetry, error reports, auto-update or other background requests."""

DEFAULT_MAX_RETRIES = 2
FILE_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit")


COMPLEXITY_TIER = {"low": "fast", "medium": "balanced", "high": "strong"}


def resolve_model(ctx: AttemptContext) -> str:
    """The model for this attempt: the step's (a tier or a name), else ``model`` in settings,
    else the tier the step's complexity picks (low: fast, medium: balanced, high: strong), as
    gemini's adapter does; never Claude Code's own default, which is its strongest model."""
    tiers = {**DEFAULT_MODELS, **dict(ctx.settings.get("models") or {})}
    wanted = ctx.model or ctx.settings.get("model")
    if not wanted:
        wanted = COMPLEXITY_TIER.get(getattr(ctx.task, "complexity", ""), "balanced")
    return str(tiers.get(str(wanted), wanted))


class ClaudeAdapter:
    """Drives Claude Code in print mode and reads its ``stream-json`` output."""

    name = "claude"

    def __init__(self) -> None:
        self._replies: set[str] = set()  # ids of the model replies seen (one "call" each)

    def build(self, ctx: AttemptContext) -> Launch:
        settings = ctx.settings
        argv = [
            *resolve_command(
                "claude",
                settings,
                ctx.env.get("PATH"),
                what="Claude Code",
                install="'npm install -g @anthropic-ai/claude-code'",
            ),
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            str(settings.get("permission_mode", "acceptEdits")),
        ]
        model = resolve_model(ctx)
        argv += ["--model", model]
        allowed = settings.get("allowed_tools")
        if allowed:
            argv += ["--allowedTools", ",".join(str(tool) for tool in allowed)]
        argv += [str(arg) for arg in settings.get("args") or ()]

        env = dict(ctx.env)
        env.update(QUIET_ENV)
        env["CLAUDE_CONFIG_DIR"] = str(ctx.log_dir / "claude-config")
        env["CLAUDE_CODE_MAX_RETRIES"] = str(settings.get("max_retries", DEFAULT_MAX_RETRIES))
        if settings.get("base_url"):
            env["ANTHROPIC_BASE_URL"] = str(settings["base_url"])
        key_var = settings.get("api_key_env")
        if key_var:
            key = ctx.env.get(str(key_var)) or os.environ.get(str(key_var))
            if not key:
                raise UsageError(
                    f"[agents.claude] api_key_env = '{key_var}', but ${key_var} is not set: "
                    f"export it before running stretto"
                )
            env["ANTHROPIC_API_KEY"] = key
        return Launch(argv=argv, env=env, cwd=ctx.workspace, stdin=ctx.prompt, model=model)

    # ------------------------------------------------------------------ planning

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
        argv0 = resolve_command(
            "claude",
            settings,
            env.get("PATH"),
            what="Claude Code",
            install="'npm install -g @anthropic-ai/claude-code'",
        )
        tiers = {**DEFAULT_MODELS, **dict(settings.get("models") or {})}
        wanted = str(model or settings.get("model") or "strong")
        argv = [
            *argv0,
            "-p",
            "--output-format",
            "json",
            "--json-schema",
            json.dumps(schema, separators=(",", ":")),
            "--permission-mode",
            "plan",
            "--tools",
            "Read,Glob,Grep",
            "--no-session-persistence",
            "--model",
            str(tiers.get(wanted, wanted)),
        ]
        planning_env = {**env, **QUIET_ENV, "CLAUDE_CONFIG_DIR": str(work_dir / "claude-config")}
        planning_env["CLAUDE_CODE_MAX_RETRIES"] = str(
            settings.get("max_retries", DEFAULT_MAX_RETRIES)
        )
        if settings.get("base_url"):
            planning_env["ANTHROPIC_BASE_URL"] = str(settings["base_url"])
        key_var = settings.get("api_key_env")
        if key_var:
            key = env.get(str(key_var)) or os.environ.get(str(key_var))
            if not key:
                raise UsageError(
                    f"[agents.claude] api_key_env = '{key_var}', but ${key_var} is not set: "
                    f"export it before running stretto"
                )
            planning_env["ANTHROPIC_API_KEY"] = key
        return Launch(argv=argv, env=planning_env, cwd=cwd, stdin=prompt)

    def plan_reply(self, stdout: str, exit_code: int | None) -> PlanReply:
        result: dict[str, Any] | None = None
        for line in reversed(stdout.splitlines()):
            if line.startswith("{"):
                try:
                    candidate = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(candidate, dict) and candidate.get("type") == "result":
                    result = candidate
                    break
        if result is None:
            return PlanReply("", error=f"claude exited with status {exit_code} and no result")
        events = _result_events(result)
        usage = next((dict(e.data) for e in events if e.kind == "usage"), {})
        cost = next((float(e.data["usd"]) for e in events if e.kind == "cost"), None)
        models = result.get("modelUsage")
        used = next(iter(models), None) if isinstance(models, dict) else None
        structured = result.get("structured_output")
        text = str(result.get("result") or "")
        if structured is not None:
            text = json.dumps(structured, ensure_ascii=False)
        error = None
        if result.get("is_error") or exit_code != 0:
            status = result.get("api_error_status")
            label = f"HTTP {status}: " if status else ""
            error = f"claude failed ({label}{text or result.get('subtype')}), status {exit_code}"
        return PlanReply(text, usage, cost, error, used)

    # ------------------------------------------------------------------ parse

    def parse_line(self, line: str, stream: str) -> Sequence[AgentEvent]:
        if stream != "stdout" or not line.startswith("{"):
            return ()
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            return ()
        if not isinstance(message, dict):
            return ()
        kind = message.get("type")
        if kind == "assistant":
            events = [
                *self._call_events(message.get("message")),
                *_assistant_events(message.get("message")),
            ]
            if message.get("error") == "billing_error":  # Claude Code's own word for it
                return (*events, AgentEvent("out_of_credit", {"error": "billing_error"}))
            return events
        if kind == "system" and message.get("subtype") == "api_retry":
            return _retry_events(message)
        if kind == "system" and message.get("subtype") == "init" and message.get("model"):
            return (AgentEvent("model", {"name": str(message["model"])}),)
        if kind == "result":
            return _result_events(message)
        return ()

    def _call_events(self, message: Any) -> tuple[AgentEvent, ...]:
        """One ``call`` per model reply (Claude Code writes a line per content block of a
        reply, each with the reply's id and usage), for the attempt's live limits."""
        if not isinstance(message, dict) or not message.get("id"):
            return ()
        if message["id"] in self._replies:
            return ()
        self._replies.add(str(message["id"]))
        raw = message.get("usage")
        usage = raw if isinstance(raw, dict) else {}
        counts = {
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
            "cached_tokens": usage.get("cache_read_input_tokens"),
            "cache_creation_tokens": usage.get("cache_creation_input_tokens"),
        }
        data = {k: v for k, v in counts.items() if isinstance(v, int)}
        return (AgentEvent("call", {"usage": data}),)

    def decide(
        self, exit_code: int | None, timed_out: bool, events: Sequence[AgentEvent]
    ) -> AgentResult:
        usage: dict[str, int] = {}
        cost: float | None = None
        result: Mapping[str, Any] | None = None
        retry_after: float | None = None
        no_credit = False
        for event in events:
            if event.kind == "usage":
                for key, value in event.data.items():
                    if isinstance(value, int):
                        usage[key] = usage.get(key, 0) + value
            elif event.kind == "out_of_credit":
                no_credit = True
            elif event.kind == "cost":
                cost = (cost or 0.0) + float(event.data["usd"])
            elif event.kind == "rate_limit" and event.data.get("from_provider"):
                retry_after = float(event.data["retry_after"])
            elif event.kind == "result":
                result = event.data

        def end(outcome: Outcome, reason: str = "", after: float | None = None) -> AgentResult:
            return AgentResult(outcome, exit_code, reason, after, usage, cost)

        if timed_out:
            return end(Outcome.TIMED_OUT, "timed out")
        if result is None:
            return end(Outcome.FAILED, f"claude exited with status {exit_code} and no result")
        status = result.get("api_error_status")
        text = str(result.get("text") or "")
        if result.get("is_error") and (no_credit or OUT_OF_CREDIT.search(text)):
            return end(Outcome.OUT_OF_CREDIT, text or "the account is out of credit")
        if status == 429:
            # The provider's delay: stated in its message, else a Retry-After Claude Code
            # followed; never Claude Code's own back-off between its retries.
            stated = delay_in_text(text)
            after = stated if stated is not None else retry_after
            return end(Outcome.RATE_LIMITED, text or "rate limited", after)
        if result.get("is_error"):
            text = str(result.get("text") or result.get("subtype") or "error")
            return end(Outcome.API_ERROR if status else Outcome.FAILED, text)
        denied = result.get("permission_denials") or []
        if denied:
            return end(
                Outcome.PERMISSION_DENIED, "claude was not allowed to use: " + ", ".join(denied)
            )
        if result.get("subtype") != "success" or exit_code != 0:
            return end(
                Outcome.FAILED, f"claude ended with {result.get('subtype')}, status {exit_code}"
            )
        return end(Outcome.SUCCESS)


def _assistant_events(message: Any) -> Sequence[AgentEvent]:
    if not isinstance(message, dict):
        return ()
    events = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and block.get("text"):
            events.append(AgentEvent("text", {"text": block["text"]}))
        elif block.get("type") == "tool_use":
            name = str(block.get("name", ""))
            raw = block.get("input")
            tool_input: dict[str, Any] = raw if isinstance(raw, dict) else {}
            events.append(AgentEvent("tool", {"name": name, "input": tool_input}))
            path = tool_input.get("file_path") or tool_input.get("notebook_path")
            if name in FILE_TOOLS and path:
                events.append(AgentEvent("file", {"path": str(path), "tool": name}))
    return events


def _retry_events(message: Mapping[str, Any]) -> Sequence[AgentEvent]:
    if message.get("error_status") != 429:
        return ()
    raw = message.get("retry_delay_ms")
    delay = float(raw) if isinstance(raw, int | float) else None
    after = delay / 1000 if delay is not None else None
    # Claude Code waits a Retry-After header as is (whole seconds: 7000 ms) and otherwise its own
    # jittered back-off (523.44 ms): only the former is the provider's delay.
    provider = delay is not None and delay.is_integer() and delay >= 1000
    data = {"retry_after": after, "attempt": message.get("attempt"), "from_provider": provider}
    return (AgentEvent("rate_limit", data),)


def _result_events(message: Mapping[str, Any]) -> Sequence[AgentEvent]:
    events = []
    raw = message.get("usage")
    if isinstance(raw, dict):
        counts = {
            "input_tokens": raw.get("input_tokens"),
            "output_tokens": raw.get("output_tokens"),
            "cached_tokens": raw.get("cache_read_input_tokens"),
            "cache_creation_tokens": raw.get("cache_creation_input_tokens"),
        }
        events.append(AgentEvent("usage", {k: v for k, v in counts.items() if isinstance(v, int)}))
    if isinstance(message.get("total_cost_usd"), int | float):
        events.append(AgentEvent("cost", {"usd": float(message["total_cost_usd"])}))
    status = message.get("api_error_status")
    text = message.get("result") if isinstance(message.get("result"), str) else ""
    if message.get("is_error"):
        if status == 429:
            events.append(AgentEvent("rate_limit", {"status": 429, "message": text}))
        events.append(AgentEvent("error", {"status": status, "message": text}))
    denials = [
        str(d.get("tool_name", "?")) if isinstance(d, dict) else str(d)
        for d in message.get("permission_denials") or ()
    ]
    events.append(
        AgentEvent(
            "result",
            {
                "subtype": message.get("subtype"),
                "is_error": bool(message.get("is_error")),
                "api_error_status": status,
                "permission_denials": denials,
                "text": text,
            },
        )
    )
    return events
