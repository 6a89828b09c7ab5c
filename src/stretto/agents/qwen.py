"""The ``qwen`` agent: Qwen Code (``@qwen-code/qwen-code``), a Gemini CLI fork speaking OpenAI.

Each attempt runs::

    qwen --output-format stream-json --yolo --auth-type openai -m MODEL

in the attempt's worktree with the prompt on stdin (no length limit, nothing in ``ps``), and its
own ``QWEN_HOME`` (``<attempt>/qwen-home``) holding a generated ``settings.json``: OpenAI
authentication, folder trust, telemetry, usage statistics and auto-update off, and no retries
inside the OpenAI client (Qwen Code still makes up to 7 attempts itself on 429 and 5xx, with
backoff). The user's own ``~/.qwen`` is never read or written.

The endpoint and key are the usual OpenAI variables: ``OPENAI_BASE_URL`` (or ``base_url`` in
``[agents.qwen]``) and ``OPENAI_API_KEY`` (or the variable named by ``env_key``); the model goes
in ``OPENAI_MODEL`` and ``-m``.

Settings (``[agents.qwen]`` in stretto.toml), all optional::

    command = "qwen"                   # or a path, or a list of strings
    model = "qwen3-coder-plus"         # when the step names neither a model nor a tier
    models = {fast = "...", balanced = "...", strong = "..."}   # tier -> model name
    base_url = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"   # else $OPENAI_BASE_URL
    env_key = "DASHSCOPE_API_KEY"      # the variable holding the key (default OPENAI_API_KEY)
    local = "vllm"                     # a [local.NAME] server: its OpenAI-compatible /v1 base

Qwen Code's ``stream-json`` output follows Claude Code's (``assistant`` messages with ``text``
and ``tool_use`` blocks, then one ``result``). The trap: an API error ends with exit status 0 and
``"is_error": false``; the error only shows as a final text ``[API Error: 400 ...]``, which the
adapter reads. It reports tokens but no dollars.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from stretto.agents.base import (
    OUT_OF_CREDIT,
    AgentEvent,
    AgentResult,
    AttemptContext,
    Launch,
    Outcome,
)
from stretto.agents.settings import default_model, local_openai, resolve_command, setting_str
from stretto.errors import UsageError

DEFAULT_BASE_URL = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1"
DEFAULT_ENV_KEY = "OPENAI_API_KEY"
DEFAULT_MODEL = "qwen3-coder-plus"
COMPLEXITY_TIER = {"low": "fast", "medium": "balanced", "high": "strong"}
FILE_TOOLS = {"write_file": "write", "edit": "update", "replace": "update"}

QUIET_ENV = {
    "QWEN_CODE_NO_RELAUNCH": "true",
    "QWEN_TELEMETRY_ENABLED": "false",
    "QWEN_DISABLE_AUTO_TITLE": "1",
    "NO_COLOR": "1",
}

_API_ERROR = re.compile(r"\s*\[API Error: ([^\n]*)\]")  # then maybe a hint on the next line
_STATUS = re.compile(r"\b([45]\d\d)\b")
_RATE_LIMIT = re.compile(r"\b429\b|too many requests|rate[ _-]?limit|quota", re.IGNORECASE)
_RETRY_AFTER = re.compile(
    r"(?:retry[ -]after|try again in)\D{0,5}(\d+(?:\.\d+)?)\s*(ms|s|sec|seconds)?", re.IGNORECASE
)


class QwenAdapter:
    """Runs ``qwen --output-format stream-json --yolo`` with the prompt on stdin."""

    name = "qwen"

    # ------------------------------------------------------------------ build

    def build(self, ctx: AttemptContext) -> Launch:
        settings = ctx.settings
        argv0 = _command(settings, ctx.env.get("PATH"))
        env_key = _setting_str(settings, "env_key") or DEFAULT_ENV_KEY
        base_url = (
            _setting_str(settings, "base_url") or ctx.env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        )
        model = self.model_for(ctx)
        home = ctx.log_dir / "qwen-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "settings.json").write_text(json.dumps(settings_json(model), indent=2) + "\n")
        keys = dict(ctx.env)
        base_url = local_openai(settings, keys, env_key) or base_url
        env = {
            **ctx.env,
            **QUIET_ENV,
            "QWEN_HOME": str(home),
            "QWEN_CODE_TRUSTED_FOLDERS_PATH": str(home / "trustedFolders.json"),
            "OPENAI_BASE_URL": base_url,
            "OPENAI_MODEL": model,
        }
        key = keys.get(env_key)
        if key:
            env["OPENAI_API_KEY"] = key
        argv = [
            *argv0,
            "--output-format",
            "stream-json",
            "--yolo",
            "--auth-type",
            "openai",
            "-m",
            model,
        ]
        return Launch(argv=argv, env=env, cwd=ctx.workspace, stdin=ctx.prompt, model=model)

    @staticmethod
    def model_for(ctx: AttemptContext) -> str:
        """The model name: the step's model (or tier), the complexity's tier, then defaults."""
        tiers = ctx.settings.get("models") or {}
        if not isinstance(tiers, Mapping):
            raise UsageError(
                "[agents.qwen] models: expected a table like "
                '{fast = "...", balanced = "...", strong = "..."}'
            )
        if ctx.model:
            return str(tiers.get(ctx.model, ctx.model))
        tier = COMPLEXITY_TIER.get(getattr(ctx.task, "complexity", ""), "balanced")
        _setting_str(ctx.settings, "model")  # checks its type
        return str(tiers.get(tier) or default_model(ctx.settings, DEFAULT_MODEL))

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
        if kind == "system" and message.get("subtype") == "init" and message.get("model"):
            return (AgentEvent("model", {"name": str(message["model"])}),)
        if kind == "assistant":
            return _assistant_events(message.get("message"))
        if kind == "user":
            return _tool_result_events(message.get("message"))
        if kind == "result":
            return _result_events(message)
        return ()

    # ------------------------------------------------------------------ decide

    def decide(
        self, exit_code: int | None, timed_out: bool, events: Sequence[AgentEvent]
    ) -> AgentResult:
        usage: dict[str, int] = {}
        result: Mapping[str, Any] | None = None
        errors: list[AgentEvent] = []
        limit: AgentEvent | None = None
        no_credit: AgentEvent | None = None
        for event in events:
            if event.kind == "usage":
                usage = {key: int(value) for key, value in event.data.items()}
            elif event.kind == "result":
                result = event.data
            elif event.kind == "rate_limit":
                limit = event
            elif event.kind == "out_of_credit":
                no_credit = event
            elif event.kind == "error":
                errors.append(event)

        def end(outcome: Outcome, reason: str = "", after: float | None = None) -> AgentResult:
            return AgentResult(outcome, exit_code, reason, after, usage)

        if timed_out:
            return end(Outcome.TIMED_OUT, "timed out")
        if no_credit is not None:
            return end(Outcome.OUT_OF_CREDIT, str(no_credit.data.get("message", "")))
        if limit is not None:
            after = limit.data.get("retry_after")
            message = str(limit.data.get("message", ""))
            return end(Outcome.RATE_LIMITED, f"rate limited: {message}".strip(), after)
        if errors:
            return end(Outcome.API_ERROR, str(errors[-1].data.get("message", "")))
        if result is None:
            return end(Outcome.FAILED, f"qwen exited with status {exit_code} and no result")
        denied = result.get("permission_denials") or []
        if denied:
            return end(
                Outcome.PERMISSION_DENIED, "qwen was not allowed to use: " + ", ".join(denied)
            )
        if result.get("is_error") or result.get("subtype") != "success" or exit_code != 0:
            text = str(result.get("text") or result.get("subtype") or "error")
            return end(Outcome.FAILED, f"qwen ended with {text!r}, status {exit_code}")
        return end(Outcome.SUCCESS)


def settings_json(model: str) -> dict[str, Any]:
    """The ``settings.json`` written to the attempt's ``QWEN_HOME``."""
    return {
        "security": {"auth": {"selectedType": "openai"}, "folderTrust": {"enabled": False}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"enableAutoUpdate": False, "disableAutoUpdate": True},
        "model": {"name": model, "generationConfig": {"maxRetries": 0}},
    }


def _command(settings: Mapping[str, Any], path: str | None) -> list[str]:
    return resolve_command(
        "qwen", settings, path, what="Qwen Code", install="'npm install -g @qwen-code/qwen-code'"
    )


def _setting_str(settings: Mapping[str, Any], key: str) -> str | None:
    return setting_str("qwen", settings, key)


def _assistant_events(message: Any) -> Sequence[AgentEvent]:
    if not isinstance(message, dict):
        return ()
    events: list[AgentEvent] = []
    for block in message.get("content") or ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and block.get("text"):
            text = str(block["text"])
            error = _api_error(text)
            events.append(error if error is not None else AgentEvent("text", {"text": text}))
        elif block.get("type") == "tool_use":
            name = str(block.get("name", ""))
            raw = block.get("input")
            tool_input: dict[str, Any] = raw if isinstance(raw, dict) else {}
            events.append(AgentEvent("tool", {"name": name, "input": tool_input}))
            path = tool_input.get("file_path")
            if name in FILE_TOOLS and isinstance(path, str):
                events.append(AgentEvent("file", {"path": path, "tool": name}))
    return events


def _tool_result_events(message: Any) -> Sequence[AgentEvent]:
    """Failed tool calls (an edit of a file not read first, a bad path): not fatal by themselves."""
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return ()
    return [
        AgentEvent(
            "tool", {"error": str(block.get("content", ""))[:500], "id": block.get("tool_use_id")}
        )
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("is_error")
    ]


def _result_events(message: Mapping[str, Any]) -> Sequence[AgentEvent]:
    events: list[AgentEvent] = []
    raw = message.get("usage")
    if isinstance(raw, dict):
        counts = {
            "input_tokens": raw.get("input_tokens"),  # the whole prompt, cached part included
            "cached_input_tokens": raw.get("cache_read_input_tokens"),
            "output_tokens": raw.get("output_tokens"),
        }
        events.append(AgentEvent("usage", {k: v for k, v in counts.items() if isinstance(v, int)}))
    text = message.get("result") if isinstance(message.get("result"), str) else ""
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
                "permission_denials": denials,
                "text": text,
            },
        )
    )
    return events


def _api_error(text: str) -> AgentEvent | None:
    """``[API Error: 429 ...]``, the text Qwen Code ends with when the provider refused."""
    match = _API_ERROR.match(text)
    if match is None:
        return None
    detail = match.group(1)
    status_match = _STATUS.search(detail)
    status = int(status_match.group(1)) if status_match else None
    if OUT_OF_CREDIT.search(detail):
        return AgentEvent("out_of_credit", {"message": detail})
    if status == 429 or _RATE_LIMIT.search(detail):
        after_match = _RETRY_AFTER.search(detail)
        after: float | None = None
        if after_match:
            scale = 1000 if after_match.group(2) == "ms" else 1
            after = float(after_match.group(1)) / scale
        return AgentEvent("rate_limit", {"message": detail, "retry_after": after})
    reason = detail if status is None or str(status) in detail[:4] else f"HTTP {status}: {detail}"
    return AgentEvent("error", {"message": reason, "status": status})
