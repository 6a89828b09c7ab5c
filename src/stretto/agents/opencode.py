"""The ``opencode`` agent: opencode (``opencode-ai``), driven with ``opencode run --format json``.

Each attempt runs::

    opencode run --format json --title "stretto TASK" -m stretto/MODEL -- PROMPT

in the attempt's worktree, with a generated ``opencode.json`` (``OPENCODE_CONFIG``) and its own
``HOME`` and ``XDG_*`` folders under the attempt's log folder, so the user's own opencode config,
logins and sessions are never read or written. The generated config defines one provider,
``stretto``, using the OpenAI-compatible SDK bundled with opencode: ``baseURL`` from
``base_url`` in ``[agents.opencode]`` or ``$OPENAI_BASE_URL``, the key read by opencode itself
from ``$OPENAI_API_KEY`` (or the variable named by ``env_key``; the key is never written to
disk). Edits and shell commands are allowed, anything outside the worktree, web fetches and
questions are denied; auto-update, model-list fetches, sharing, LSP downloads, default plugins
and Claude Code compatibility are off. ``--title`` skips opencode's title-generation request.

opencode installs ``@opencode-ai/plugin`` into each config folder in the background unless that
folder already has ``node_modules`` and a ``package-lock.json`` listing it. The attempt's config
folder is seeded with both (the plugin is never needed: stretto loads no plugins), so opencode
reaches no address but the model endpoint.

Settings (``[agents.opencode]`` in stretto.toml), all optional::

    command = "opencode"               # or a path, or a list of strings
    model = "qwen2.5-coder"            # when the step names neither a model nor a tier
    models = {fast = "...", balanced = "...", strong = "..."}   # tier -> model name
    base_url = "http://127.0.0.1:8000/v1"                       # else $OPENAI_BASE_URL
    env_key = "OPENAI_API_KEY"         # the variable holding the key (allow-list it in `env`)
    cost = {input = 3.0, output = 15.0, cache_read = 0.3}       # USD per million tokens
    context = 128000                   # the model's context window, in tokens
    local = "ollama"                   # a [local.NAME] server: its OpenAI-compatible /v1 base

``cost`` makes opencode report dollars in its ``step_finish`` events; without it the cost stays
``None``.
"""

from __future__ import annotations

import json
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

PROVIDER = "stretto"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_ENV_KEY = "OPENAI_API_KEY"
DEFAULT_MODEL = "gpt-4.1"
PLUGIN_VERSION = "1.18.33"  # what the seeded package-lock.json claims; opencode only checks names
COMPLEXITY_TIER = {"low": "fast", "medium": "balanced", "high": "strong"}
MAX_PROMPT_ARG = 100_000  # bytes; longer prompts go through stdin

QUIET_ENV = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "OPENCODE_DISABLE_TERMINAL_TITLE": "1",
    "NO_COLOR": "1",
}
"""No update checks, model-list downloads, plugins, sharing or other background traffic."""

FILE_TOOLS = {"write": "add", "edit": "update", "patch": "update", "multiedit": "update"}
DENIAL_MARKERS = ("prevents you from using", "rejected permission", "permission denied")
COST_KEYS = {"input": "input", "output": "output", "cache_read": "cache_read"}


class OpencodeAdapter:
    """Runs ``opencode run --format json -m stretto/MODEL PROMPT`` in the worktree."""

    name = "opencode"

    # ------------------------------------------------------------------ build

    def build(self, ctx: AttemptContext) -> Launch:
        settings = ctx.settings
        argv0 = _command(settings, ctx.env.get("PATH"))
        env_key = _setting_str(settings, "env_key") or DEFAULT_ENV_KEY
        base_url = (
            _setting_str(settings, "base_url") or ctx.env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        )
        model = self.model_for(ctx)
        root = ctx.log_dir / "opencode"
        home = root / "home"
        xdg = {
            "XDG_CONFIG_HOME": home / ".config",
            "XDG_DATA_HOME": home / ".local" / "share",
            "XDG_CACHE_HOME": home / ".cache",
            "XDG_STATE_HOME": home / ".local" / "state",
        }
        config_dir = xdg["XDG_CONFIG_HOME"] / "opencode"
        (config_dir / "node_modules").mkdir(parents=True, exist_ok=True)
        lock = {"packages": {"": {"dependencies": {"@opencode-ai/plugin": PLUGIN_VERSION}}}}
        (config_dir / "package-lock.json").write_text(json.dumps(lock) + "\n")
        for path in xdg.values():
            path.mkdir(parents=True, exist_ok=True)
        env = dict(ctx.env)
        base_url = local_openai(settings, env, env_key) or base_url
        config_file = root / "opencode.json"
        config = config_json(model, base_url, env_key, settings)
        config_file.write_text(json.dumps(config, indent=2) + "\n")
        env = {
            **env,
            **QUIET_ENV,
            "HOME": str(home),
            **{key: str(path) for key, path in xdg.items()},
            "OPENCODE_CONFIG": str(config_file),
        }
        argv = [
            *argv0,
            "run",
            "--format",
            "json",
            "--title",
            f"stretto {getattr(ctx.task, 'id', 'task')}",
            "-m",
            f"{PROVIDER}/{model}",
        ]
        if len(ctx.prompt.encode()) < MAX_PROMPT_ARG:
            return Launch([*argv, "--", ctx.prompt], env, ctx.workspace, model=model)
        # Too long for one argument (Linux caps each at 128 KiB): opencode appends piped stdin.
        return Launch(argv, env, ctx.workspace, stdin=ctx.prompt, model=model)

    @staticmethod
    def model_for(ctx: AttemptContext) -> str:
        """The model name: the step's model (or tier), the complexity's tier, then defaults."""
        tiers = ctx.settings.get("models") or {}
        if not isinstance(tiers, Mapping):
            raise UsageError(
                "[agents.opencode] models: expected a table like "
                '{fast = "...", balanced = "...", strong = "..."}'
            )
        if ctx.model:
            chosen = str(tiers.get(ctx.model, ctx.model))
        else:
            tier = COMPLEXITY_TIER.get(getattr(ctx.task, "complexity", ""), "balanced")
            _setting_str(ctx.settings, "model")  # checks its type
            chosen = str(tiers.get(tier) or default_model(ctx.settings, DEFAULT_MODEL))
        return chosen.removeprefix(f"{PROVIDER}/")

    # ------------------------------------------------------------------ parse

    def parse_line(self, line: str, stream: str) -> Sequence[AgentEvent]:
        if stream != "stdout" or not line.startswith("{"):
            return ()
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            return ()
        if not isinstance(event, dict):
            return ()
        kind = event.get("type")
        part = event.get("part") if isinstance(event.get("part"), dict) else {}
        assert isinstance(part, dict)
        if kind == "text":
            return (AgentEvent("text", {"text": str(part.get("text", ""))}),)
        if kind == "tool_use":
            return _tool_events(part)
        if kind == "step_finish":  # one model call finished
            return (AgentEvent("call"), *_finish_events(part))
        if kind == "error":
            return (_error_event(event.get("error")),)
        return ()

    # ------------------------------------------------------------------ decide

    def decide(
        self, exit_code: int | None, timed_out: bool, events: Sequence[AgentEvent]
    ) -> AgentResult:
        usage: dict[str, int] = {}
        cost = 0.0
        finished = False
        errors: list[AgentEvent] = []
        denials: list[AgentEvent] = []
        limit: AgentEvent | None = None
        no_credit: AgentEvent | None = None
        for event in events:
            if event.kind == "usage":
                for key, value in event.data.items():
                    usage[key] = usage.get(key, 0) + int(value)
            elif event.kind == "cost":
                cost += float(event.data.get("usd", 0.0))
            elif event.kind == "turn":
                finished = True
            elif event.kind == "rate_limit":
                limit = event
            elif event.kind == "out_of_credit":
                no_credit = event
            elif event.kind == "error":
                errors.append(event)
            elif event.kind == "permission_denied":
                denials.append(event)
        dollars = cost if cost > 0 else None
        if timed_out:
            return AgentResult(Outcome.TIMED_OUT, exit_code, "timed out", None, usage, dollars)
        if no_credit is not None:
            message = str(no_credit.data.get("message", ""))
            return AgentResult(Outcome.OUT_OF_CREDIT, exit_code, message, None, usage, dollars)
        if limit is not None:
            after = limit.data.get("retry_after")
            return AgentResult(
                Outcome.RATE_LIMITED,
                exit_code,
                f"rate limited: {limit.data.get('message', '')}".strip(),
                after if isinstance(after, float) else None,
                usage,
                dollars,
            )
        if errors:
            last = errors[-1].data
            message = str(last.get("message", ""))
            outcome = Outcome.API_ERROR if last.get("api") else Outcome.FAILED
            return AgentResult(outcome, exit_code, message, None, usage, dollars)
        if denials:
            denied = "; ".join(str(d.data.get("message", "")) for d in denials)
            return AgentResult(
                Outcome.PERMISSION_DENIED, exit_code, f"denied: {denied}", None, usage, dollars
            )
        if exit_code == 0 and finished:
            return AgentResult(Outcome.SUCCESS, 0, "", None, usage, dollars)
        if exit_code == 0:
            return AgentResult(
                Outcome.FAILED, 0, "opencode exited without finishing a step", None, usage, dollars
            )
        return AgentResult(
            Outcome.FAILED, exit_code, f"opencode exited with status {exit_code}", None, usage
        )


def config_json(
    model: str, base_url: str, env_key: str, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``opencode.json`` written for one attempt."""
    entry: dict[str, Any] = {"name": model}
    cost = settings.get("cost")
    if cost is not None:
        if not isinstance(cost, Mapping) or not all(
            key in COST_KEYS and isinstance(value, int | float) and not isinstance(value, bool)
            for key, value in cost.items()
        ):
            raise UsageError(
                "[agents.opencode] cost: expected a table of USD per million tokens like "
                "{input = 3.0, output = 15.0, cache_read = 0.3}"
            )
        entry["cost"] = {COST_KEYS[key]: float(value) for key, value in cost.items()}
    context = settings.get("context")
    if context is not None:
        if not isinstance(context, int) or isinstance(context, bool) or context <= 0:
            raise UsageError(f"[agents.opencode] context: expected a whole number, got {context!r}")
        entry["limit"] = {"context": context, "output": min(context, 32_000)}
    return {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "stretto",
                "options": {"baseURL": base_url, "apiKey": f"{{env:{env_key}}}"},
                "models": {model: entry},
            }
        },
        "model": f"{PROVIDER}/{model}",
        "small_model": f"{PROVIDER}/{model}",
        "enabled_providers": [PROVIDER],
        "autoupdate": False,
        "share": "disabled",
        "permission": {
            "edit": "allow",
            "bash": "allow",
            "webfetch": "deny",
            "external_directory": "deny",
        },
    }


def _command(settings: Mapping[str, Any], path: str | None) -> list[str]:
    return resolve_command(
        "opencode", settings, path, what="opencode", install="'npm install -g opencode-ai'"
    )


def _setting_str(settings: Mapping[str, Any], key: str) -> str | None:
    return setting_str("opencode", settings, key)


def _tool_events(part: Mapping[str, Any]) -> tuple[AgentEvent, ...]:
    tool = str(part.get("tool", ""))
    raw_state = part.get("state")
    state: Mapping[str, Any] = raw_state if isinstance(raw_state, Mapping) else {}
    raw_input = state.get("input")
    args: Mapping[str, Any] = raw_input if isinstance(raw_input, Mapping) else {}
    status = state.get("status")
    events = [AgentEvent("tool", {"name": tool, "status": status, "title": state.get("title")})]
    if status == "error":
        error = str(state.get("error", ""))
        if any(marker in error.lower() for marker in DENIAL_MARKERS):
            # The message goes on to list every permission rule: keep its first sentence.
            first = error.split(". ", 1)[0]
            events.append(AgentEvent("permission_denied", {"tool": tool, "message": first}))
        return tuple(events)
    path = args.get("filePath")
    if status == "completed" and tool in FILE_TOOLS and isinstance(path, str):
        raw_meta = state.get("metadata")
        meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
        change = "update" if tool == "write" and meta.get("exists") else FILE_TOOLS[tool]
        events.append(AgentEvent("file", {"path": path, "change": change}))
    return tuple(events)


def _finish_events(part: Mapping[str, Any]) -> tuple[AgentEvent, ...]:
    raw = part.get("tokens")
    tokens: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    raw_cache = tokens.get("cache")
    cache: Mapping[str, Any] = raw_cache if isinstance(raw_cache, Mapping) else {}

    def count(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    read, write = count(cache.get("read")), count(cache.get("write"))
    usage = {
        # opencode reports input without the cached part; stretto counts the whole prompt
        # (OpenAI's convention, as codex reports it) and the cached share separately.
        "input_tokens": count(tokens.get("input")) + read + write,
        "cached_input_tokens": read,
        "output_tokens": count(tokens.get("output")),
        "reasoning_output_tokens": count(tokens.get("reasoning")),
    }
    events = [AgentEvent("usage", usage)]
    cost = part.get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        events.append(AgentEvent("cost", {"usd": float(cost)}))
    if part.get("reason") not in ("tool-calls", "tool_calls"):
        events.append(AgentEvent("turn", {"completed": True, "reason": part.get("reason")}))
    return tuple(events)


def _error_event(error: Any) -> AgentEvent:
    """opencode's ``error`` event, classified: rate limit, API error, or its own failure."""
    if not isinstance(error, Mapping):
        return AgentEvent("error", {"message": str(error)})
    raw = error.get("data")
    data: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    name = str(error.get("name", ""))
    message = str(data.get("message") or name or "opencode reported an error")
    status = data.get("statusCode")
    if OUT_OF_CREDIT.search(f"{message} {data.get('responseBody') or ''}"):
        return AgentEvent("out_of_credit", {"message": message})
    if status == 429:
        raw_headers = data.get("responseHeaders")
        headers: Mapping[str, Any] = raw_headers if isinstance(raw_headers, Mapping) else {}
        return AgentEvent("rate_limit", {"message": message, "retry_after": _retry_after(headers)})
    api = name == "APIError" or isinstance(status, int)
    reason = f"HTTP {status}: {message}" if isinstance(status, int) else f"{name}: {message}"
    return AgentEvent("error", {"message": reason, "status": status, "api": api, "name": name})


def _retry_after(headers: Mapping[str, Any]) -> float | None:
    lowered = {str(key).lower(): value for key, value in headers.items()}
    for key, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(lowered[key]) / scale
        except (KeyError, TypeError, ValueError):
            continue
    return None
