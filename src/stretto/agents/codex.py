"""The ``codex`` agent: OpenAI's Codex CLI, driven with ``codex exec --json``.

Each attempt gets its own ``CODEX_HOME`` (``<attempt log dir>/codex-home``) holding a generated
``config.toml``: one model provider (``base_url`` from ``base_url`` in ``[agents.codex]`` or
``$OPENAI_BASE_URL``, the key read from ``$OPENAI_API_KEY`` or the variable named by
``env_key``), the Responses wire API, no retries inside the CLI (stretto retries attempts
itself), approval ``never``, sandbox ``workspace-write``, and analytics, plugins and the update
check off. The user's own ``~/.codex`` is never read or written.

Settings (``[agents.codex]`` in stretto.toml), all optional::

    command = "codex"                  # or a path, or a list: ["npx", "@openai/codex"]
    model = "gpt-5.1-codex"            # when the step names neither a model nor a tier
    models = {fast = "...", balanced = "...", strong = "..."}   # tier -> model name
    base_url = "https://gateway.example/v1"                     # else $OPENAI_BASE_URL
    env_key = "OPENAI_API_KEY"         # the variable holding the key (allow-list it in `env`)
    request_max_retries = 0
    local = "ollama"                   # a [local.NAME] server: a custom provider whose
                                       # base_url is its OpenAI-compatible /v1 base

A step's ``model:`` may be a model name or a tier name; without one, the step's complexity
picks the tier (low: fast, medium: balanced, high: strong) when ``models`` has it.

Codex reports tokens (``turn.completed.usage``) but no dollars: the cost stays ``None``.

Planning (:class:`~stretto.agents.base.Planner`) runs, in the repository root, with its own
``CODEX_HOME`` in the call's work folder::

    codex exec --json --ephemeral --skip-git-repo-check -s read-only -C REPO
        --output-schema WORK/plan-schema.json -        (the prompt on stdin)

The read-only sandbox refuses every write (patches and shell commands alike); the schema goes
to the model as a strict ``json_schema`` response format, and the answer is the last
``agent_message``. The model is ``model`` (or a tier), else ``model`` in settings, else the
``strong`` tier, else the default.
"""

from __future__ import annotations

import json
import re
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
)
from stretto.agents.settings import default_model, local_openai, resolve_command, setting_str
from stretto.errors import UsageError

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_ENV_KEY = "OPENAI_API_KEY"
DEFAULT_MODEL = "gpt-5.1-codex"
MAX_PROMPT_ARG = 100_000  # bytes; longer prompts go through stdin
COMPLEXITY_TIER = {"low": "fast", "medium": "balanced", "high": "strong"}
USAGE_KEYS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens")

_RATE_LIMIT = re.compile(r"\b429\b|too many requests|rate[ _-]?limit", re.IGNORECASE)
_RETRY_AFTER = re.compile(
    r"(?:retry[ -]after|try again in)\D{0,5}(\d+(?:\.\d+)?)\s*(ms|s|sec|seconds)?", re.IGNORECASE
)
_TIMEOUT = re.compile(r"timed? ?out|timeout", re.IGNORECASE)


def _toml(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML escapes)."""
    return json.dumps(value, ensure_ascii=False)


class CodexAdapter:
    """Runs ``codex exec --json --ephemeral -s workspace-write PROMPT`` in the worktree."""

    name = "codex"

    # ------------------------------------------------------------------ build

    def build(self, ctx: AttemptContext) -> Launch:
        settings = ctx.settings
        argv0 = self._command(settings, ctx.env.get("PATH"))
        env_key = _setting_str(settings, "env_key") or DEFAULT_ENV_KEY
        base_url = (
            _setting_str(settings, "base_url") or ctx.env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        )
        retries = settings.get("request_max_retries", 0)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise UsageError(
                f"[agents.codex] request_max_retries: expected a whole number >= 0, got {retries!r}"
            )
        home = ctx.log_dir / "codex-home"
        home.mkdir(parents=True, exist_ok=True)
        model = self.model_for(ctx)
        keys = dict(ctx.env)
        base_url = local_openai(settings, keys, env_key) or base_url
        (home / "config.toml").write_text(config_toml(model, base_url, env_key, retries))
        # Codex 0.171 refuses to set up its sandbox helper (``codex-linux-sandbox``) when
        # CODEX_HOME is under the temporary folder, and every shell command then fails with
        # "bwrap: execvp codex-linux-sandbox: No such file or directory": a repository under
        # /tmp would have a codex that cannot run a command. A temporary folder of its own,
        # beside (not above) CODEX_HOME, avoids that.
        tmp = ctx.log_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**keys, "CODEX_HOME": str(home), "TMPDIR": str(tmp), "NO_COLOR": "1"}
        argv = [
            *argv0,
            "exec",
            "--json",
            "--ephemeral",
            "--skip-git-repo-check",
            "-s",
            "workspace-write",
            "-C",
            str(ctx.workspace),
        ]
        if len(ctx.prompt.encode()) < MAX_PROMPT_ARG:
            return Launch([*argv, "--", ctx.prompt], env, ctx.workspace, model=model)
        # Too long for one argument (Linux caps each at 128 KiB): codex reads "-" from stdin.
        return Launch([*argv, "-"], env, ctx.workspace, stdin=ctx.prompt, model=model)

    @staticmethod
    def model_for(ctx: AttemptContext) -> str:
        """The model name: the step's model (or tier), the complexity's tier, then defaults."""
        tiers = ctx.settings.get("models") or {}
        if not isinstance(tiers, Mapping):
            raise UsageError(
                "[agents.codex] models: expected a table like "
                '{fast = "...", balanced = "...", strong = "..."}'
            )
        if ctx.model:
            return str(tiers.get(ctx.model, ctx.model))
        tier = COMPLEXITY_TIER.get(getattr(ctx.task, "complexity", ""), "balanced")
        _setting_str(ctx.settings, "model")  # checks its type
        chosen = tiers.get(tier) or default_model(ctx.settings, DEFAULT_MODEL)
        return str(chosen)

    @staticmethod
    def _command(settings: Mapping[str, Any], path: str | None) -> list[str]:
        return resolve_command(
            "codex", settings, path, what="the Codex CLI", install="'npm install -g @openai/codex'"
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
        env_key = _setting_str(settings, "env_key") or DEFAULT_ENV_KEY
        keys = dict(env)
        base_url = (
            local_openai(settings, keys, env_key)
            or _setting_str(settings, "base_url")
            or env.get("OPENAI_BASE_URL")
        )
        retries = settings.get("request_max_retries", 0)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise UsageError(
                f"[agents.codex] request_max_retries: expected a whole number >= 0, got {retries!r}"
            )
        tiers = settings.get("models") or {}
        if not isinstance(tiers, Mapping):
            raise UsageError(
                "[agents.codex] models: expected a table like "
                '{fast = "...", balanced = "...", strong = "..."}'
            )
        wanted = model or _setting_str(settings, "model")
        strongest = tiers.get("strong") or default_model(settings, DEFAULT_MODEL)
        chosen = tiers.get(wanted, wanted) if wanted else strongest
        home = work_dir / "codex-home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            config_toml(str(chosen), base_url or DEFAULT_BASE_URL, env_key, retries)
        )
        schema_file = work_dir / "plan-schema.json"
        schema_file.write_text(json.dumps(schema, indent=2))
        argv = [
            *argv0,
            "exec",
            "--json",
            "--ephemeral",
            "--skip-git-repo-check",
            "-s",
            "read-only",
            "-C",
            str(cwd),
            "--output-schema",
            str(schema_file),
            "-",
        ]
        planning_env = {**keys, "CODEX_HOME": str(home), "NO_COLOR": "1"}
        return Launch(argv=argv, env=planning_env, cwd=cwd, stdin=prompt)

    def plan_reply(self, stdout: str, exit_code: int | None) -> PlanReply:
        events = [e for line in stdout.splitlines() for e in self.parse_line(line, "stdout")]
        result = self.decide(exit_code, False, events)
        texts = [str(e.data["text"]) for e in events if e.kind == "text" and "level" not in e.data]
        text = texts[-1] if texts else ""
        error = None if result.outcome is Outcome.SUCCESS else (result.reason or "codex failed")
        return PlanReply(text, result.usage, None, error)

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
        if kind == "item.completed" and isinstance(event.get("item"), dict):
            return _item_events(event["item"])
        if kind == "turn.completed":
            raw = event.get("usage")
            usage: dict[str, Any] = raw if isinstance(raw, dict) else {}
            counts = {key: usage[key] for key in USAGE_KEYS if isinstance(usage.get(key), int)}
            return (AgentEvent("usage", counts), AgentEvent("turn", {"completed": True}))
        if kind in ("error", "turn.failed"):
            error = event.get("error") if kind == "turn.failed" else event
            message = error.get("message", "") if isinstance(error, dict) else str(error)
            return (_error_event(str(message), kind),)
        return ()

    # ------------------------------------------------------------------ decide

    def decide(
        self, exit_code: int | None, timed_out: bool, events: Sequence[AgentEvent]
    ) -> AgentResult:
        usage: dict[str, int] = {}
        completed = False
        errors: list[AgentEvent] = []
        limit: AgentEvent | None = None
        no_credit: AgentEvent | None = None
        for event in events:
            if event.kind == "usage":
                for key, value in event.data.items():
                    usage[key] = usage.get(key, 0) + int(value)
            elif event.kind == "turn":
                completed = True
            elif event.kind == "rate_limit":
                limit = event
            elif event.kind == "out_of_credit":
                no_credit = event
            elif event.kind == "error":
                errors.append(event)
        if timed_out:
            return AgentResult(Outcome.TIMED_OUT, exit_code, "timed out", usage=usage)
        if no_credit is not None:
            message = str(no_credit.data.get("message", ""))
            return AgentResult(Outcome.OUT_OF_CREDIT, exit_code, message, usage=usage)
        if limit is not None:
            after = limit.data.get("retry_after")
            return AgentResult(
                Outcome.RATE_LIMITED,
                exit_code,
                f"rate limited: {limit.data.get('message', '')}".strip(),
                after if isinstance(after, float) else None,
                usage,
            )
        if errors:
            last = errors[-1]
            message = str(last.data.get("message", ""))
            if last.data.get("timed_out"):
                return AgentResult(Outcome.TIMED_OUT, exit_code, message, usage=usage)
            return AgentResult(Outcome.API_ERROR, exit_code, message, usage=usage)
        if exit_code == 0 and completed:
            return AgentResult(Outcome.SUCCESS, 0, usage=usage)
        if exit_code == 0:
            return AgentResult(
                Outcome.FAILED, 0, "codex exited without completing a turn", None, usage
            )
        return AgentResult(
            Outcome.FAILED, exit_code, f"codex exited with status {exit_code}", None, usage
        )


def config_toml(model: str, base_url: str, env_key: str, retries: int) -> str:
    """The ``config.toml`` written to the attempt's ``CODEX_HOME``."""
    return "\n".join(
        [
            f"model = {_toml(model)}",
            'model_provider = "stretto"',
            'approval_policy = "never"',
            'sandbox_mode = "workspace-write"',
            "check_for_update_on_startup = false",
            "",
            "[model_providers.stretto]",
            'name = "stretto"',
            f"base_url = {_toml(base_url)}",
            f"env_key = {_toml(env_key)}",
            'wire_api = "responses"',
            f"request_max_retries = {retries}",
            f"stream_max_retries = {retries}",
            "",
            "[analytics]",
            "enabled = false",
            "",
            "[features]",
            "plugins = false",
            "",
        ]
    )


def _setting_str(settings: Mapping[str, Any], key: str) -> str | None:
    return setting_str("codex", settings, key)


def _item_events(item: dict[str, Any]) -> tuple[AgentEvent, ...]:
    kind = item.get("type")
    if kind == "agent_message":
        return (AgentEvent("text", {"text": str(item.get("text", ""))}),)
    if kind == "command_execution":
        data = {"name": "shell", "command": item.get("command"), "exit_code": item.get("exit_code")}
        return (AgentEvent("tool", data),)
    if kind == "file_change":
        raw = item.get("changes")
        changes: list[Any] = raw if isinstance(raw, list) else []
        return tuple(
            AgentEvent("file", {"path": change.get("path"), "change": change.get("kind")})
            for change in changes
            if isinstance(change, dict)
        )
    if kind == "error":  # a warning inside the turn (e.g. unknown model metadata); not fatal
        return (AgentEvent("text", {"text": str(item.get("message", "")), "level": "warning"}),)
    if isinstance(kind, str) and kind.endswith("_call"):
        return (AgentEvent("tool", {"name": kind}),)
    return ()


def _error_event(message: str, source: str) -> AgentEvent:
    """A fatal error from codex, classified: rate limit, timeout, or an API error."""
    detail = message
    try:
        body = json.loads(message)
    except json.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        # The provider's JSON error body, as codex passes it on: show its words, not the JSON.
        error = body["error"]
        detail = " ".join(str(error.get(k) or "") for k in ("type", "code", "message")).strip()
        kind = str(error.get("type") or error.get("code") or "").strip()
        text = str(error.get("message") or "").strip() or detail
        message = f"{kind}: {text}" if kind and not text.startswith(kind) else text
    if OUT_OF_CREDIT.search(detail):
        return AgentEvent("out_of_credit", {"message": message})
    if _RATE_LIMIT.search(detail):
        match = _RETRY_AFTER.search(detail)
        after: float | None = None
        if match:
            after = float(match.group(1)) / (1000 if match.group(2) == "ms" else 1)
        return AgentEvent("rate_limit", {"message": message, "retry_after": after})
    data: dict[str, Any] = {"message": message, "source": source}
    if _TIMEOUT.search(detail):
        data["timed_out"] = True
    return AgentEvent("error", data)
