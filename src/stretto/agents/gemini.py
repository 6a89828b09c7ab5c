"""The ``gemini`` agent: Google's Gemini CLI (``@google/gemini-cli``), run non-interactively.

Each attempt runs::

    gemini -p "" --output-format stream-json --yolo -m MODEL

in the attempt's worktree, with the prompt on stdin (the CLI reads piped stdin as the prompt; an
empty ``-p`` only makes the mode explicit), ``GEMINI_CLI_HOME`` set to a folder under the
attempt's log folder, and ``GEMINI_CLI_NO_RELAUNCH=true`` (no second Node process). That home
holds a generated ``.gemini/settings.json``: API-key auth (without it the CLI exits 41), folder
trust, telemetry, usage statistics and auto-update off, and ``general.maxAttempts`` (the CLI's
own attempts per model request; default 2, since stretto backs off rate-limited providers
itself). The user's own ``~/.gemini`` is never read or written.

``-m`` is always passed: without it the CLI first makes an extra "router" request to pick a
model.

Settings (``[agents.gemini]`` in stretto.toml), all optional:

* ``command``: the CLI to run (a string or a list; default ``gemini`` on PATH);
* ``model``: the model when the step names none; ``models``: a tier map (default
  ``{fast = "gemini-2.5-flash-lite", balanced = "gemini-2.5-flash", strong = "gemini-2.5-pro"}``);
  a step's ``model:`` may be a tier or a model name; without one, the step's complexity picks the
  tier (low: fast, medium: balanced, high: strong);
* ``base_url`` / ``api_key_env``: the endpoint and the name of the variable holding the key, when
  ``GOOGLE_GEMINI_BASE_URL`` / ``GEMINI_API_KEY`` are not passed through ``env = [...]``;
* ``max_attempts``: the CLI's own attempts per request (1-10, default 2);
* ``args``: extra arguments.

Gemini CLI prints one JSON object per line (``init``, ``message``, ``tool_use``,
``tool_result``, ``result``). When the provider answers with an error, the CLI writes it to
stderr and exits with the HTTP status modulo 256 (144 for 400, 173 for 429, 244 for 500), so
:meth:`GeminiAdapter.decide` reads the status from the exit code and the stderr lines. Tokens come
from ``result.stats``; Gemini CLI reports no dollars.

Planning (:class:`~stretto.agents.base.Planner`) runs, in the repository root::

    gemini -p "" --output-format json --approval-mode default -m MODEL   (prompt on stdin)

In headless mode the default approval mode offers the model no tool that needs a confirmation
(no ``write_file``, ``replace`` or ``run_shell_command``), so the call can read but not write.
Gemini CLI has no flag for a response schema: the schema is in the prompt, and the answer is the
``response`` text of the JSON output. The model is ``model`` (or a tier), else ``model`` in
settings, else the ``strong`` tier.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stretto.agents.base import (
    AgentEvent,
    AgentResult,
    AttemptContext,
    Launch,
    Outcome,
    PlanReply,
)
from stretto.agents.settings import resolve_command, setting_str
from stretto.errors import UsageError

DEFAULT_MODELS = {
    "fast": "gemini-2.5-flash-lite",
    "balanced": "gemini-2.5-flash",
    "strong": "gemini-2.5-pro",
}
COMPLEXITY_TIER = {"low": "fast", "medium": "balanced", "high": "strong"}
DEFAULT_MAX_ATTEMPTS = 2
FILE_TOOLS = ("write_file", "replace", "edit")
EXIT_AUTH = 41  # FatalAuthenticationError: no usable credentials
QUIET_ENV = {"GEMINI_CLI_NO_RELAUNCH": "true", "NO_COLOR": "1"}

_STATUS_LINE = re.compile(r"^\s*status:\s*(\d{3})\b")
_CODE_JSON = re.compile(r'"code"\s*:\s*(\d{3})\b')
_RETRY_AFTER = re.compile(
    r"retry after (\d+(?:\.\d+)?)\s*(ms|s)\b|retryDelayMs:\s*(\d+(?:\.\d+)?)", re.IGNORECASE
)
_RATE_LIMIT = re.compile(
    r"\b429\b|rate limit|RESOURCE_EXHAUSTED|quota|too many requests", re.IGNORECASE
)


def settings_json(max_attempts: int) -> str:
    """The ``settings.json`` written to ``$GEMINI_CLI_HOME/.gemini/``."""
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
        "telemetry": {"enabled": False},
        "privacy": {"usageStatisticsEnabled": False},
        "general": {
            "enableAutoUpdate": False,
            "enableAutoUpdateNotification": False,
            "maxAttempts": max_attempts,
        },
    }
    return json.dumps(settings, indent=2) + "\n"


def status_from_exit(exit_code: int | None) -> int | None:
    """The HTTP status behind an exit code (Gemini CLI exits with the status mod 256)."""
    if exit_code is not None and 144 <= exit_code <= 255:
        return exit_code + 256  # 400-511; lower codes are the CLI's own (41, 42, 52, 53, ...)
    return None


class GeminiAdapter:
    """Drives Gemini CLI headless and reads its ``stream-json`` output and stderr."""

    name = "gemini"

    def __init__(self) -> None:
        # tool_id -> (tool, path) of file tools waiting for their tool_result: a file counts as
        # changed only when the tool succeeded (the runner makes one adapter per attempt).
        self._pending: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------------ build

    def build(self, ctx: AttemptContext) -> Launch:
        settings = ctx.settings
        argv0 = self._command(settings, ctx.env.get("PATH"))
        attempts = settings.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 10:
            raise UsageError(
                f"[agents.gemini] max_attempts: expected a whole number from 1 to 10, "
                f"got {attempts!r}"
            )
        home = ctx.log_dir / "gemini-home"
        (home / ".gemini").mkdir(parents=True, exist_ok=True)
        (home / ".gemini" / "settings.json").write_text(settings_json(attempts))

        env = {**ctx.env, **QUIET_ENV, "GEMINI_CLI_HOME": str(home)}
        base_url = _setting_str(settings, "base_url")
        if base_url:
            env["GOOGLE_GEMINI_BASE_URL"] = base_url
        key_var = _setting_str(settings, "api_key_env")
        if key_var:
            key = ctx.env.get(key_var) or os.environ.get(key_var)
            if not key:
                raise UsageError(
                    f"[agents.gemini] api_key_env = '{key_var}', but ${key_var} is not set: "
                    "export it before running stretto"
                )
            env["GEMINI_API_KEY"] = key
        argv = [
            *argv0,
            "-p",
            "",
            "--output-format",
            "stream-json",
            "--yolo",
            "-m",
            model := self.model_for(ctx),
            *(str(arg) for arg in settings.get("args") or ()),
        ]
        return Launch(argv=argv, env=env, cwd=ctx.workspace, stdin=ctx.prompt, model=model)

    @staticmethod
    def model_for(ctx: AttemptContext) -> str:
        """The step's model (or tier), else ``model`` in settings, else the complexity's tier."""
        raw = ctx.settings.get("models") or {}
        if not isinstance(raw, Mapping):
            raise UsageError(
                "[agents.gemini] models: expected a table like "
                '{fast = "...", balanced = "...", strong = "..."}'
            )
        tiers = {**DEFAULT_MODELS, **raw}
        wanted = ctx.model or _setting_str(ctx.settings, "model")
        if wanted:
            return str(tiers.get(wanted, wanted))
        tier = COMPLEXITY_TIER.get(getattr(ctx.task, "complexity", ""), "balanced")
        return str(tiers[tier])

    @staticmethod
    def _command(settings: Mapping[str, Any], path: str | None) -> list[str]:
        return resolve_command(
            "gemini",
            settings,
            path,
            what="Gemini CLI",
            install="'npm install -g @google/gemini-cli'",
        )

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
        argv0 = self._command(settings, env.get("PATH"))
        attempts = settings.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
        if not isinstance(attempts, int) or isinstance(attempts, bool) or not 1 <= attempts <= 10:
            raise UsageError(
                f"[agents.gemini] max_attempts: expected a whole number from 1 to 10, "
                f"got {attempts!r}"
            )
        raw = settings.get("models") or {}
        if not isinstance(raw, Mapping):
            raise UsageError(
                "[agents.gemini] models: expected a table like "
                '{fast = "...", balanced = "...", strong = "..."}'
            )
        tiers = {**DEFAULT_MODELS, **raw}
        wanted = model or _setting_str(settings, "model") or "strong"
        home = work_dir / "gemini-home"
        (home / ".gemini").mkdir(parents=True, exist_ok=True)
        (home / ".gemini" / "settings.json").write_text(settings_json(attempts))
        planning_env = {**env, **QUIET_ENV, "GEMINI_CLI_HOME": str(home)}
        base_url = _setting_str(settings, "base_url")
        if base_url:
            planning_env["GOOGLE_GEMINI_BASE_URL"] = base_url
        key_var = _setting_str(settings, "api_key_env")
        if key_var:
            key = env.get(key_var) or os.environ.get(key_var)
            if not key:
                raise UsageError(
                    f"[agents.gemini] api_key_env = '{key_var}', but ${key_var} is not set: "
                    "export it before running stretto"
                )
            planning_env["GEMINI_API_KEY"] = key
        argv = [
            *argv0,
            "-p",
            "",
            "--output-format",
            "json",
            "--approval-mode",
            "default",
            "-m",
            str(tiers.get(wanted, wanted)),
        ]
        return Launch(argv=argv, env=planning_env, cwd=cwd, stdin=prompt)

    def plan_reply(self, stdout: str, exit_code: int | None) -> PlanReply:
        start = stdout.find("{")
        try:
            data = json.loads(stdout[start:]) if start >= 0 else None
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            status = status_from_exit(exit_code)
            detail = f" (HTTP {status})" if status else ""
            return PlanReply("", error=f"gemini exited with status {exit_code}{detail}, no answer")
        usage: dict[str, int] = {}
        stats = data.get("stats")
        models = stats.get("models") if isinstance(stats, dict) else None
        if not isinstance(models, dict):
            models = {}
        for entry in models.values():
            tokens = entry.get("tokens") if isinstance(entry, dict) else None
            for ours, theirs in (  # like attempts: input includes cached; thoughts are output
                ("input_tokens", "prompt"),
                ("output_tokens", "candidates"),
                ("output_tokens", "thoughts"),
                ("cached_tokens", "cached"),
            ):
                value = tokens.get(theirs) if isinstance(tokens, dict) else None
                if isinstance(value, int):
                    usage[ours] = usage.get(ours, 0) + value
        used = next(iter(models), None)
        text = data.get("response")
        error = data.get("error")
        message = None
        if error is not None or exit_code != 0:
            why = error.get("message") if isinstance(error, dict) else error
            message = f"gemini failed ({why or 'no message'}), status {exit_code}"
        return PlanReply(text if isinstance(text, str) else "", usage, None, message, used)

    # ------------------------------------------------------------------ parse

    def parse_line(self, line: str, stream: str) -> Sequence[AgentEvent]:
        if stream == "stderr":
            return _stderr_events(line)
        if not line.startswith("{"):
            return ()
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return ()
        if not isinstance(event, dict):
            return ()
        kind = event.get("type")
        if kind == "init" and event.get("model"):  # the model the CLI runs on
            return (AgentEvent("model", {"name": str(event["model"])}),)
        if kind == "message" and event.get("role") == "assistant":
            text = event.get("content")
            if isinstance(text, str) and text:
                return (AgentEvent("text", {"text": text, "delta": bool(event.get("delta"))}),)
        elif kind == "tool_use":
            return self._tool_use(event)
        elif kind == "tool_result" and event.get("status") == "success":
            pending = self._pending.pop(str(event.get("tool_id")), None)
            if pending is not None:
                return (AgentEvent("file", {"path": pending[1], "tool": pending[0]}),)
        elif kind == "tool_result" and event.get("status") == "error":
            self._pending.pop(str(event.get("tool_id")), None)
            raw = event.get("error")
            message = raw.get("message", "") if isinstance(raw, dict) else str(raw or "")
            data = {"text": f"tool failed: {message}", "level": "warning"}
            return (AgentEvent("text", data),)
        elif kind == "result":
            return _result_events(event)
        return ()

    def _tool_use(self, event: Mapping[str, Any]) -> Sequence[AgentEvent]:
        name = str(event.get("tool_name", ""))
        raw = event.get("parameters")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        path = params.get("file_path")
        if name in FILE_TOOLS and isinstance(path, str) and path:
            self._pending[str(event.get("tool_id"))] = (name, path)
        return (AgentEvent("tool", {"name": name, "input": params, "id": event.get("tool_id")}),)

    # ------------------------------------------------------------------ decide

    def decide(
        self, exit_code: int | None, timed_out: bool, events: Sequence[AgentEvent]
    ) -> AgentResult:
        usage: dict[str, int] = {}
        result: Mapping[str, Any] | None = None
        statuses: list[int] = []
        messages: list[str] = []
        retry_after: float | None = None
        no_credit: str | None = None
        for event in events:
            if event.kind == "usage":
                for key, value in event.data.items():
                    if isinstance(value, int):
                        usage[key] = usage.get(key, 0) + value
            elif event.kind == "out_of_credit":
                no_credit = str(event.data.get("message") or "the quota is used up")
            elif event.kind == "result":
                result = event.data
            elif event.kind == "rate_limit" and event.data.get("retry_after") is not None:
                retry_after = float(event.data["retry_after"])
            elif event.kind == "error":
                if isinstance(event.data.get("status"), int):
                    statuses.append(event.data["status"])
                if event.data.get("message"):
                    messages.append(str(event.data["message"]))

        def end(outcome: Outcome, reason: str = "", after: float | None = None) -> AgentResult:
            return AgentResult(outcome, exit_code, reason, after, usage)

        if timed_out:
            return end(Outcome.TIMED_OUT, "timed out")
        if exit_code == 0 and result is not None and result.get("status") == "success":
            return end(Outcome.SUCCESS)
        if no_credit is not None:
            return end(Outcome.OUT_OF_CREDIT, no_credit)
        status = status_from_exit(exit_code) or (statuses[-1] if statuses else None)
        reason = str(result.get("message") or "") if result is not None else ""
        reason = reason or (messages[-1] if messages else "")
        if status == 429 or (status is None and _RATE_LIMIT.search(reason)):
            return end(Outcome.RATE_LIMITED, _label(429, reason or "rate limited"), retry_after)
        if status is not None:
            return end(Outcome.API_ERROR, _label(status, reason))
        if exit_code == EXIT_AUTH:
            return end(Outcome.API_ERROR, reason or "gemini could not authenticate (exit 41)")
        if result is not None and "API Error" in reason:
            return end(Outcome.API_ERROR, reason)
        if result is None:
            return end(Outcome.FAILED, f"gemini exited with status {exit_code} and no result")
        return end(
            Outcome.FAILED,
            reason or f"gemini ended with {result.get('status')}, status {exit_code}",
        )


def _label(status: int, reason: str) -> str:
    return f"HTTP {status}: {reason}" if reason else f"HTTP {status}"


def _setting_str(settings: Mapping[str, Any], key: str) -> str | None:
    return setting_str("gemini", settings, key)


def _result_events(event: Mapping[str, Any]) -> Sequence[AgentEvent]:
    events = []
    raw = event.get("stats")
    stats: dict[str, Any] = raw if isinstance(raw, dict) else {}
    counts = {
        "input_tokens": stats.get("input_tokens"),
        "output_tokens": stats.get("output_tokens"),
        "cached_tokens": stats.get("cached"),
    }
    usage = {key: value for key, value in counts.items() if isinstance(value, int)}
    if usage:
        events.append(AgentEvent("usage", usage))
    message = ""
    error = event.get("error")
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        events.extend(_classify(message))
    events.append(AgentEvent("result", {"status": event.get("status"), "message": message}))
    return events


def _stderr_events(line: str) -> Sequence[AgentEvent]:
    """Errors Gemini CLI writes to stderr: a ``status: 429`` line, a JSON body, a retry hint."""
    if "TerminalQuotaError" in line:  # Gemini CLI's word for a used-up (daily) quota
        return (
            AgentEvent("out_of_credit", {"message": line.split("TerminalQuotaError:")[-1].strip()}),
        )
    match = _STATUS_LINE.match(line)
    if match:
        return (AgentEvent("error", {"status": int(match.group(1))}),)
    if "retry after" in line.lower() or "retryDelayMs" in line or '"code"' in line:
        return _classify(line)
    return ()


def _classify(message: str) -> Sequence[AgentEvent]:
    events = []
    code = _CODE_JSON.search(message)
    status = int(code.group(1)) if code else None
    hint = _RETRY_AFTER.search(message)
    if hint:
        if hint.group(3) is not None:
            after = float(hint.group(3)) / 1000
        else:
            after = float(hint.group(1)) / (1000 if hint.group(2).lower() == "ms" else 1)
        events.append(AgentEvent("rate_limit", {"retry_after": after, "message": message}))
        status = status or 429
    if status is not None:
        events.append(AgentEvent("error", {"status": status, "message": message.strip()}))
    return events
