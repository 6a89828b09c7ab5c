"""The ``aider`` agent: aider (PyPI ``aider-chat``), run once with ``--message``.

Each attempt runs::

    aider --model openai/MODEL --edit-format FORMAT --yes-always --no-auto-commits ... \\
          --message PROMPT            (or --message-file PROMPT_FILE for a long prompt)

in the attempt's worktree, with its own ``HOME`` (``<attempt log dir>/aider-home``, so the
user's ``~/.aider*`` files and caches are neither read nor written), analytics, update checks,
release notes, history files, fancy terminal output and the repository map off, and
``LITELLM_LOCAL_MODEL_COST_MAP=True`` so LiteLLM does not download its price list. aider does
not commit (stretto does): ``--no-auto-commits --no-dirty-commits``. The step's declared
``files`` that exist are added to the chat (``--file``), since aider only sees the files it is
given (or, with ``map_tokens`` above 0, its repository map).

Settings (``[agents.aider]`` in stretto.toml), all optional::

    command = "aider"                  # or a path, or a list
    model = "gpt-4.1"                  # when the step names neither a model nor a tier
    models = {fast = "...", balanced = "...", strong = "..."}   # tier -> model name
    provider = "openai"                # LiteLLM prefix added to a name without one
    base_url = "https://gateway.example/v1"                     # else $OPENAI_BASE_URL
    env_key = "OPENAI_API_KEY"         # the variable holding the key (allow-list it in `env`)
    edit_format = "diff"               # whole | diff | udiff | ...; default: aider's choice
    map_tokens = 0                     # the repository map's size (0: off)
    model_metadata = {max_input_tokens = 128000, input_cost_per_token = 2e-6, ...}
    args = ["--lint-cmd", "..."]       # extra arguments
    local = "ollama"                   # a [local.NAME] server: Ollama (ollama_chat/MODEL,
                                       # OLLAMA_API_BASE) or OpenAI-compatible (openai/MODEL)

aider prints plain text and exits 0 even when the provider refused or no edit applied, so the
outcome comes from its output: ``litellm.*Error`` lines (and aider's own explanations of them),
``Applied edit to FILE`` lines, edit-format failures, and the ``Tokens: … Cost: …`` line written
after every model reply (parsed for tokens and dollars; aider rounds counts of 1,000 and more to
0.1k, so the numbers are approximate).
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
)
from stretto.agents.settings import default_model, resolve_command, setting_str
from stretto.errors import UsageError
from stretto.localmodels import PLACEHOLDER_KEY, server_of

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_ENV_KEY = "OPENAI_API_KEY"
DEFAULT_MODEL = "gpt-4.1"
DEFAULT_PROVIDER = "openai"
MAX_PROMPT_ARG = 100_000  # bytes; longer prompts go through --message-file
COMPLEXITY_TIER = {"low": "fast", "medium": "balanced", "high": "strong"}

QUIET_ARGS = (
    "--yes-always",
    "--no-check-update",
    "--analytics-disable",
    "--no-show-model-warnings",
    "--no-show-release-notes",
    "--no-pretty",
    "--no-fancy-input",
    "--no-stream",
    "--no-gitignore",
    "--no-auto-commits",
    "--no-dirty-commits",
    "--no-auto-lint",
    "--no-auto-test",
    "--no-suggest-shell-commands",
    "--no-detect-urls",
    "--chat-history-file",
    "/dev/null",
    "--input-history-file",
    "/dev/null",
    "--llm-history-file",
    "/dev/null",
)

_TOKENS = re.compile(r"^Tokens: (?P<body>.*?)\.(?: Cost: (?P<cost>.*))?$")
_COUNT = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<k>k?) (?P<what>sent|received|cache write|cache hit)")
_SESSION_COST = re.compile(r"\$(\d+(?:\.\d+)?) session")
_MESSAGE_COST = re.compile(r"\$(\d+(?:\.\d+)?) message")
_APPLIED = re.compile(r"^Applied edit to (?P<path>.+)$")
_LITELLM_ERROR = re.compile(r"^litellm\.(?P<kind>\w+):\s*(?P<message>.*)$")
_RETRYING = re.compile(r"^Retrying in (\d+(?:\.\d+)?) seconds")
_EDIT_FAILED = re.compile(
    r"SEARCH/REPLACE blocks? failed to match|did not conform to the edit format|"
    r"^Unable to (?:write|create|edit)|^Skipping edits to|Only \d+ reflections allowed",
    re.IGNORECASE,
)
_RATE_LIMIT = re.compile(r"RateLimitError|\b429\b|rate[ _-]?limit|quota", re.IGNORECASE)
_TIMEOUT = re.compile(r"Timeout|timed? ?out", re.IGNORECASE)


class AiderAdapter:
    """Runs aider once per attempt with ``--message`` and reads its plain-text output."""

    name = "aider"

    # ------------------------------------------------------------------ build

    def build(self, ctx: AttemptContext) -> Launch:
        settings = ctx.settings
        argv0 = self._command(settings, ctx.env.get("PATH"))
        env_key = _setting_str(settings, "env_key") or DEFAULT_ENV_KEY
        base_url = (
            _setting_str(settings, "base_url") or ctx.env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        )
        home = ctx.log_dir / "aider-home"
        home.mkdir(parents=True, exist_ok=True)
        # aider downloads LiteLLM's price list into ~/.aider/caches when its cache is empty; a
        # fresh, non-empty cache stops that (LiteLLM's bundled copy answers instead).
        caches = home / ".aider" / "caches"
        caches.mkdir(parents=True, exist_ok=True)
        (caches / "model_prices_and_context_window.json").write_text('{"stretto": {}}\n')
        model = self.model_for(ctx)
        argv = [*argv0, "--model", model, *QUIET_ARGS]
        edit_format = _setting_str(settings, "edit_format")
        if edit_format:
            argv += ["--edit-format", edit_format]
        map_tokens = settings.get("map_tokens", 0)
        if not isinstance(map_tokens, int) or isinstance(map_tokens, bool) or map_tokens < 0:
            raise UsageError(
                f"[agents.aider] map_tokens: expected a whole number >= 0, got {map_tokens!r}"
            )
        argv += ["--map-tokens", str(map_tokens)]
        metadata = settings.get("model_metadata")
        if metadata is not None:
            if not isinstance(metadata, Mapping):
                raise UsageError(
                    "[agents.aider] model_metadata: expected a table like "
                    "{max_input_tokens = 128000, input_cost_per_token = 2e-6, "
                    "output_cost_per_token = 8e-6}"
                )
            meta_file = home / "model-metadata.json"
            bare = model.split("/", 1)[1] if "/" in model else model
            meta = {"litellm_provider": model.split("/", 1)[0], "mode": "chat", **metadata}
            meta_file.write_text(json.dumps({model: meta, bare: meta}, indent=2))
            argv += ["--model-metadata-file", str(meta_file)]
        for path in _existing_files(ctx.workspace, getattr(ctx.task, "files", None)):
            argv += ["--file", path]
        argv += [str(arg) for arg in settings.get("args") or ()]

        env = {
            **ctx.env,
            "HOME": str(home),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "OPENAI_API_BASE": base_url,
            "NO_COLOR": "1",
            "TERM": "dumb",
            "COLUMNS": "4000",  # aider wraps its messages at the terminal width
        }
        key = ctx.env.get(env_key)
        if key:
            env["OPENAI_API_KEY"] = key
        server = server_of(settings)
        if server is not None and server.kind == "ollama":
            env["OLLAMA_API_BASE"] = server.ollama_url  # LiteLLM's ollama_chat/ models
        elif server is not None:
            env["OPENAI_API_BASE"] = server.openai_url
            env.setdefault("OPENAI_API_KEY", PLACEHOLDER_KEY)  # local servers ignore keys
        if len(ctx.prompt.encode()) < MAX_PROMPT_ARG:
            argv += ["--message", ctx.prompt]
        else:  # Linux caps one argument at 128 KiB
            prompt_file = home / "prompt.md"
            prompt_file.write_text(ctx.prompt)
            argv += ["--message-file", str(prompt_file)]
        return Launch(argv=argv, env=env, cwd=ctx.workspace, model=model)

    @staticmethod
    def model_for(ctx: AttemptContext) -> str:
        """``provider/model``: the step's model (or tier), the complexity's tier, then defaults.
        On a local server the provider is ``ollama_chat`` (Ollama) or ``openai``, and the
        default model is the server's first."""
        tiers = ctx.settings.get("models") or {}
        if not isinstance(tiers, Mapping):
            raise UsageError(
                "[agents.aider] models: expected a table like "
                '{fast = "...", balanced = "...", strong = "..."}'
            )
        if ctx.model:
            chosen = str(tiers.get(ctx.model, ctx.model))
        else:
            tier = COMPLEXITY_TIER.get(getattr(ctx.task, "complexity", ""), "balanced")
            _setting_str(ctx.settings, "model")  # checks its type
            chosen = str(tiers.get(tier) or default_model(ctx.settings, DEFAULT_MODEL))
        server = server_of(ctx.settings)
        if server is not None:  # a local model's name may hold a "/" (hf.co/org/model)
            prefix = "ollama_chat" if server.kind == "ollama" else "openai"
            known = ("ollama_chat/", "ollama/", "openai/")
            return chosen if chosen.startswith(known) else f"{prefix}/{chosen}"
        if "/" in chosen:
            return chosen
        provider = _setting_str(ctx.settings, "provider") or DEFAULT_PROVIDER
        return f"{provider}/{chosen}"

    @staticmethod
    def _command(settings: Mapping[str, Any], path: str | None) -> list[str]:
        return resolve_command(
            "aider",
            settings,
            path,
            what="aider",
            install="'pipx install aider-chat' (or 'uv tool install aider-chat')",
            absolute=True,
        )

    # ------------------------------------------------------------------ parse

    def parse_line(self, line: str, stream: str) -> Sequence[AgentEvent]:
        text = line.rstrip()
        if not text:
            return ()
        match = _TOKENS.match(text)
        if match:  # written after each model reply
            return (AgentEvent("call"), *_usage_events(match.group("body"), match.group("cost")))
        match = _APPLIED.match(text)
        if match:
            return (AgentEvent("file", {"path": match.group("path"), "change": "edit"}),)
        match = _LITELLM_ERROR.match(text)
        if match:
            return (_error_event(match.group("kind"), match.group("message")),)
        match = _RETRYING.match(text)
        if match:
            return (AgentEvent("retry", {"delay": float(match.group(1))}),)
        if _EDIT_FAILED.search(text):
            return (AgentEvent("edit_failed", {"message": text}),)
        if stream == "stdout":
            return (AgentEvent("text", {"text": text}),)
        return ()

    # ------------------------------------------------------------------ decide

    def decide(
        self, exit_code: int | None, timed_out: bool, events: Sequence[AgentEvent]
    ) -> AgentResult:
        usage: dict[str, int] = {}
        cost: float | None = None
        # The last thing that happened decides: an error followed by a reply that applied an
        # edit (aider retried) is not a failure.
        last: AgentEvent | None = None
        replied = applied = False
        for event in events:
            if event.kind == "usage":
                for key, value in event.data.items():
                    usage[key] = usage.get(key, 0) + int(value)
                replied = True
                last = event
            elif event.kind == "cost":
                cost = float(event.data["usd"])
            elif event.kind == "file":
                applied = True
                last = event
            elif event.kind in ("error", "rate_limit", "out_of_credit", "edit_failed"):
                last = event
        kind = last.kind if last is not None else None
        message = str(last.data.get("message", "")) if last is not None else ""
        if kind == "out_of_credit":
            return AgentResult(Outcome.OUT_OF_CREDIT, exit_code, message, None, usage, cost)
        if kind == "rate_limit":
            # aider retries a 429 for about a minute; killed at the timeout meanwhile, the
            # provider (not the task) is why the attempt ended.
            return AgentResult(
                Outcome.RATE_LIMITED, exit_code, f"rate limited: {message}", None, usage, cost
            )
        if timed_out:
            return AgentResult(Outcome.TIMED_OUT, exit_code, "timed out", None, usage, cost)
        if kind == "error":
            assert last is not None
            outcome = Outcome.TIMED_OUT if last.data.get("timed_out") else Outcome.API_ERROR
            return AgentResult(outcome, exit_code, message, None, usage, cost)
        if exit_code != 0:
            return AgentResult(
                Outcome.FAILED,
                exit_code,
                f"aider exited with status {exit_code}",
                None,
                usage,
                cost,
            )
        if kind == "edit_failed" and not applied:
            return AgentResult(Outcome.FAILED, 0, f"no edit applied: {message}", None, usage, cost)
        if not replied:
            return AgentResult(Outcome.FAILED, 0, "aider got no reply from the model", None, usage)
        return AgentResult(Outcome.SUCCESS, 0, usage=usage, cost_usd=cost)


def _setting_str(settings: Mapping[str, Any], key: str) -> str | None:
    return setting_str("aider", settings, key)


def _existing_files(workspace: Path, patterns: Sequence[str] | None) -> list[str]:
    """The declared files that exist as plain files (globs and folders are left to the model)."""
    found: list[str] = []
    for pattern in patterns or ():
        if any(ch in pattern for ch in "*?[") or pattern.endswith("/"):
            continue
        if (workspace / pattern).is_file():
            found.append(pattern)
    return found


def _usage_events(body: str, cost: str | None) -> tuple[AgentEvent, ...]:
    """``2.4k sent, 1.0k cache hit, 46 received`` and ``$0.0025 message, $0.01 session``."""
    names = {
        "sent": "input_tokens",
        "received": "output_tokens",
        "cache hit": "cached_input_tokens",
        "cache write": "cache_creation_input_tokens",
    }
    counts: dict[str, int] = {}
    for match in _COUNT.finditer(body):
        value = float(match.group("n")) * (1000 if match.group("k") else 1)
        counts[names[match.group("what")]] = round(value)
    events = [AgentEvent("usage", counts)]
    if cost:
        session = _SESSION_COST.search(cost)
        message = _MESSAGE_COST.search(cost)
        if session:
            data: dict[str, float] = {"usd": float(session.group(1))}
            if message:
                data["message_usd"] = float(message.group(1))
            events.append(AgentEvent("cost", data))
    return tuple(events)


def _error_event(kind: str, message: str) -> AgentEvent:
    """A ``litellm.XxxError: ...`` line, classified: rate limit, timeout, or an API error."""
    full = f"{kind}: {message}"
    if OUT_OF_CREDIT.search(full):
        return AgentEvent("out_of_credit", {"message": full})
    if _RATE_LIMIT.search(kind) or (kind == "APIError" and _RATE_LIMIT.search(message)):
        return AgentEvent("rate_limit", {"message": full})
    data: dict[str, Any] = {"message": full}
    if _TIMEOUT.search(kind):
        data["timed_out"] = True
    return AgentEvent("error", data)
