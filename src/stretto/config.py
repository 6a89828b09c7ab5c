"""Project configuration: ``stretto init`` writes ``stretto.toml``; :func:`load_config` reads it.

The file is untrusted input, so it is checked with pydantic-core (imported only while validating,
to keep start-up cheap; see :mod:`stretto.schemas`) and handed on as frozen dataclasses. Every
problem becomes a located :class:`~stretto.errors.Diagnostic`, e.g.
``stretto.toml:3:1: max_agnets: unknown key 'max_agnets' (did you mean 'max_agents'?)``.

Schema (every key optional; ``stretto init`` writes it with a comment on each key)::

    target = "main"        # branch that verified work lands on; default: the current branch
    max_agents = 4         # agents running at once, >= 1
    default_agent = "shell"
    [gates]                # name ([A-Za-z0-9_-]+) -> "command", or a table:
    slow = { command = "pytest -m slow", timeout = 1800, when = "merge" }  # attempt|merge|both
    scope = "refuse"       # or "warn": changes outside a step's owned files
    env = ["MY_TOKEN"]     # extra variables agents and gates may see
    [workspace]            # link = ["frontend/node_modules"], setup = ["npm ci"], sparse = true
    [agents.shell]         # per-agent settings, e.g. command = "./agent.sh"
    [router]               # warmup, alpha, cost_ceiling, min_tier, credit, landed_value_usd;
                           # [[router.arms]] agent/model/tier
    [budget]               # run = 5.0 (USD per run), daily = 20.0, on_exceed = "finish" | "stop"
    [prices."my-model"]    # input = 1.0, output = 2.0, cached = 0.1 (USD per million tokens)
    [planner]              # agent = "claude", model, timeout, split_depth
    [sandbox]              # enabled = true (bubblewrap), writable = ["~/.m2"], network = true
    [attempt]              # timeout = 1800, max_cost, max_tokens, max_turns, max_rate_limited
    [merge]                # strategy = "train" | "serial", max_batch = 8, max_lanes = 4,
                           # flaky_retries = 1 (docs/merging.md)
    [local.ollama]         # a local model server: kind = "ollama" | "openai", base_url,
                           # models = [...], max_parallel; agents use it with local = "ollama"
    [cluster]              # scheduler = "tcp://build-1:8786": attempts on Dask workers

Writing the file (``stretto init``, gate detection) lives in :mod:`stretto.project.scaffold`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from stretto.config_errors import describe, locate
from stretto.config_errors import message as message_for
from stretto.config_schema import (  # re-exported: the schema's limits and defaults
    DEFAULT_AGENT as DEFAULT_AGENT,
)
from stretto.config_schema import (
    DEFAULT_ATTEMPT_TIMEOUT as DEFAULT_ATTEMPT_TIMEOUT,
)
from stretto.config_schema import (
    DEFAULT_GATE_TIMEOUT as DEFAULT_GATE_TIMEOUT,
)
from stretto.config_schema import (
    DEFAULT_MAX_AGENTS as DEFAULT_MAX_AGENTS,
)
from stretto.config_schema import (
    DEFAULT_MAX_RATE_LIMITED as DEFAULT_MAX_RATE_LIMITED,
)
from stretto.config_schema import (
    TIERS as TIERS,
)
from stretto.config_schema import (
    config_validator,
)
from stretto.errors import ConfigError, Diagnostic
from stretto.git import current_branch, toplevel
from stretto.inputfiles import decode_utf8, read_input
from stretto.localmodels import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_PARALLEL,
    LocalServer,
    reference_problems,
    with_servers,
)
from stretto.sandbox import SandboxSettings

CONFIG_FILE = "stretto.toml"
FALLBACK_TARGET = "main"
#: The largest config file read (stretto.toml, or a pyproject.toml holding [tool.stretto]).
MAX_CONFIG_BYTES = 4 * 1024 * 1024
GateWhen = Literal["attempt", "merge", "both"]
_EXCLUDE_LINE = ".stretto/"


@dataclass(frozen=True, slots=True)
class GateConfig:
    """One gate: a command that must exit 0 for work to land.

    Attributes:
        name: The gate's name, the key under ``[gates]``.
        command: Shell command run in the workspace under test.
        timeout: Seconds before the gate is stopped and counts as failed.
        when: ``"attempt"`` (each attempt's worktree), ``"merge"`` (the merged tree before the
            target moves) or ``"both"``.
    """

    name: str
    command: str
    timeout: int = DEFAULT_GATE_TIMEOUT
    when: GateWhen = "attempt"

    def to_dict(self) -> dict[str, object]:
        """Return the gate as JSON-ready values."""
        return {"command": self.command, "timeout": self.timeout, "when": self.when}


Tier = Literal["fast", "balanced", "strong"]


@dataclass(frozen=True, slots=True)
class ArmConfig:
    """One routing arm: an agent, optionally a model, and its tier (fast < balanced < strong)."""

    agent: str
    model: str | None
    tier: Tier


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """``[router]``: the arms to choose from and how the bandit learns (see docs/routing.md)."""

    arms: tuple[ArmConfig, ...] = ()
    warmup: int = 50
    alpha: float = 1.0
    cost_ceiling: float = 1.0
    min_tier: tuple[tuple[str, str], ...] = (
        ("low", "fast"),
        ("medium", "fast"),
        ("high", "balanced"),
    )
    credit: Literal["task", "attempt"] = "attempt"
    landed_value_usd: float | None = None  # unset: the router never gives a task up

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the journal's copy of a run's options)."""
        return {
            "arms": [{"agent": a.agent, "model": a.model, "tier": a.tier} for a in self.arms],
            "landed_value_usd": self.landed_value_usd,
            "warmup": self.warmup,
            "alpha": self.alpha,
            "cost_ceiling": self.cost_ceiling,
            "min_tier": dict(self.min_tier),
            "credit": self.credit,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouterSettings:
        """From :meth:`to_dict`'s data or a validated ``[router]`` table; what is missing
        defaults (``min_tier`` entry by entry)."""
        default = cls()
        arms = tuple(ArmConfig(a["agent"], a.get("model"), a["tier"]) for a in data.get("arms", ()))
        return cls(
            arms=arms,
            warmup=data.get("warmup", default.warmup),
            alpha=data.get("alpha", default.alpha),
            cost_ceiling=data.get("cost_ceiling", default.cost_ceiling),
            min_tier=tuple({**dict(default.min_tier), **data.get("min_tier", {})}.items()),
            credit=data.get("credit", default.credit),
            landed_value_usd=data.get("landed_value_usd", default.landed_value_usd),
        )


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """``[budget]``: USD limits. ``on_exceed``: let running attempts ``finish`` or ``stop`` them."""

    run: float | None = None
    daily: float | None = None
    on_exceed: Literal["finish", "stop"] = "finish"


@dataclass(frozen=True, slots=True)
class MergeSettings:
    """``[merge]``: how verified work lands (docs/merging.md).

    Attributes:
        strategy: ``"train"`` (the default: cars of branches tested in lanes at once; see
            :mod:`stretto.engine.train_policy`) or ``"serial"`` (one attempt at a time, gates
            on each merged tree).
        max_batch: The most branches in one car of the train.
        max_lanes: The most cars whose gates run at once.
        flaky_retries: How often a one-branch car that fails is tested again on the same tree
            before its branch is sent back.
    """

    strategy: Literal["serial", "train"] = "train"
    max_batch: int = 8
    max_lanes: int = 4
    flaky_retries: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the journal."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MergeSettings:
        """Inverse of :meth:`to_dict`; a journal from before ``[merge]`` means serial."""
        return cls(**data) if data else cls(strategy="serial")


@dataclass(frozen=True, slots=True)
class AttemptSettings:
    """``[attempt]``: limits of every attempt, enforced while its agent runs (docs/agents.md).

    Attributes:
        timeout: Seconds before an agent is stopped (``timed_out``); a step's ``timeout`` wins.
        max_cost: USD one attempt may spend (reported dollars, else its tokens priced).
        max_tokens: Tokens (input, cached and output) one attempt may use.
        max_turns: Model calls one attempt may make.
        max_rate_limited: Rate-limited attempts of a task that do not count as its failures;
            the next ones do, so a provider that refuses forever cannot keep a task alive.
    """

    timeout: int = DEFAULT_ATTEMPT_TIMEOUT
    max_cost: float | None = None
    max_tokens: int | None = None
    max_turns: int | None = None
    max_rate_limited: int = DEFAULT_MAX_RATE_LIMITED


@dataclass(frozen=True, slots=True)
class PlannerSettings:
    """``[planner]``: which agent turns a goal into a plan, and how deep failing tasks split."""

    agent: str | None = None
    model: str | None = None
    timeout: int = 600
    split_depth: int = 1


@dataclass(frozen=True, slots=True)
class Config:
    """A project's validated configuration.

    Attributes:
        target: Branch that verified work lands on.
        max_agents: How many agents may run at once.
        default_agent: Agent used for tasks that do not name one.
        gates: Gates in the order the file lists them.
        path: The file the settings came from; ``None`` when defaults were used.
        scope: What the scope gate does with changes outside a task's owned files:
            ``"refuse"`` (the attempt fails) or ``"warn"``.
        link_dirs: ``[workspace] link``: extra directories linked into each worktree
            (``node_modules``, ``.venv`` and ``venv`` are linked automatically).
        setup: ``[workspace] setup``: commands run in each new worktree before its agent.
        sparse: ``[workspace] sparse``: ``None`` (``false``, the default) checks out every file
            in an attempt's worktree; otherwise only the top-level files, the directories of
            the task's owned files and these extra paths (``true`` gives none).
        env_allow: ``env``: extra environment variables passed to agents and gates
            (a trailing ``*`` matches a prefix).
        agents: ``[agents.NAME]`` tables: settings for each agent adapter.
        router: ``[router]``: routing arms and bandit settings.
        budget: ``[budget]``: spend limits per run and per day.
        prices: ``[prices."MODEL"]``: USD per million tokens (input, output, cached) for models
            the bundled price table does not know, or to override it.
        planner: ``[planner]``: the planning agent for ``stretto -g``.
        sandbox: ``[sandbox]``: run agents and command gates under bubblewrap (docs/sandbox.md).
        attempt: ``[attempt]``: the timeout and limits of every attempt.
        merge: ``[merge]``: serial queue or merge train, and the train's sizes.
        local: ``[local.NAME]``: local model servers (Ollama, OpenAI-compatible) that agents
            refer to with ``local = "NAME"`` (docs/local-models.md).
        cluster: ``[cluster] scheduler``: a Dask scheduler's address; attempts run on its
            workers (docs/cluster.md). ``None``: here.
    """

    target: str
    max_agents: int = DEFAULT_MAX_AGENTS
    default_agent: str = DEFAULT_AGENT
    gates: tuple[GateConfig, ...] = ()
    path: Path | None = None
    scope: Literal["refuse", "warn"] = "refuse"
    link_dirs: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    sparse: tuple[str, ...] | None = None
    env_allow: tuple[str, ...] = ()
    agents: dict[str, dict[str, Any]] = field(default_factory=dict)
    router: RouterSettings = RouterSettings()
    budget: BudgetSettings = BudgetSettings()
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    planner: PlannerSettings = PlannerSettings()
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    attempt: AttemptSettings = AttemptSettings()
    merge: MergeSettings = MergeSettings()
    local: dict[str, LocalServer] = field(default_factory=dict)
    cluster: str | None = None

    def to_dict(self) -> dict[str, object]:
        """Return the configuration as JSON-ready values."""
        gates = {gate.name: gate.to_dict() for gate in self.gates}
        local = {name: server.to_dict() for name, server in self.local.items()}
        path = str(self.path) if self.path else None
        return {**asdict(self), "gates": gates, "path": path, "local": local}


# --- git and files --------------------------------------------------------------------------------


def _current_branch(top: Path) -> str:
    return current_branch(top) or FALLBACK_TARGET


# What `git check-ref-format --branch` refuses (and `@`, which `git branch` refuses).


def _toml_str(value: str) -> str:
    out = value.replace("\\", "\\\\").replace('"', '\\"')
    out = re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m.group()):04x}", out)
    return f'"{out}"'


def _table(data: object, *keys: str) -> dict[str, Any] | None:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else None


# --- loading --------------------------------------------------------------------------------------


def _problem(file: Path, message: str, line: int = 0, column: int = 0) -> ConfigError:
    return ConfigError([Diagnostic(str(file), line, column, "", message)])


_TOML_HINTS = {
    "nvalid value": '; strings need quotes, e.g. "pytest -q"',
    "llegal character '\\n'": "; a string is not closed on its line: add its closing quote",
    "llegal character": "; remove it, or write it as an escape (\\u0000) inside a string",
    "annot overwrite a value": "; a key is given twice: keep one of them",
    "twice": "; a table is given twice: merge the two into one",
}


def _parse(path: Path) -> tuple[str, dict[str, Any]]:
    raw = read_input(path, MAX_CONFIG_BYTES, ConfigError, what="config")
    text = decode_utf8(raw, str(path), ConfigError)
    try:
        return text, tomllib.loads(text)
    except RecursionError:
        message = "not valid TOML: arrays or tables nested too deeply; flatten them"
        raise _problem(path, message, 1, 1) from None
    except tomllib.TOMLDecodeError as error:
        detail = str(error)
        where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", detail)
        end = (text.count("\n") + 1, len(text.rsplit("\n", 1)[-1]) + 1)  # "at end of document"
        line, column = (int(where[1]), int(where[2])) if where else end
        detail = detail[: where.start()] if where else detail.replace(" (at end of document)", "")
        hint = next((h for k, h in _TOML_HINTS.items() if k in detail), "")
        message = f"not valid TOML: {detail[:1].lower()}{detail[1:]}{hint}"
        raise _problem(path, message, line, column) from None


def load_config(repo: Path) -> Config:
    """Read and validate the configuration of the repository containing ``repo``.

    The settings come from ``stretto.toml`` at the top of the work tree; without one, from the
    ``[tool.stretto]`` table of ``pyproject.toml``; without either, defaults. A missing ``target``
    means the current branch (``main`` when HEAD is detached).

    Args:
        repo: Any directory inside a git work tree.

    Returns:
        The validated configuration, with ``path`` naming the file it came from.

    Raises:
        RepoError: ``repo`` is not inside a git work tree.
        ConfigError: The file is unreadable, not TOML, or breaks the schema; every problem is
            listed with its file, line, column and field.
    """
    top = toplevel(repo)
    path = top / CONFIG_FILE
    if path.is_symlink() or path.exists():  # a dangling link is an error, not no config
        text, data = _parse(path)
        return _validated(path, text, (), data, top)
    path = top / "pyproject.toml"
    if path.is_file():
        text, pyproject = _parse(path)
        section = _table(pyproject, "tool")
        if section is not None and "stretto" in section:
            return _validated(path, text, ("tool", "stretto"), section["stretto"], top)
    return Config(target=_current_branch(top))


def config_diagnostic(config: Config, loc: tuple[str, ...], message: str) -> Diagnostic | None:
    """A problem with the key at ``loc`` (``("default_agent",)``) of the file ``config`` came
    from, located there; None when the settings are defaults (no file)."""
    if config.path is None:
        return None
    prefix = ("tool", "stretto") if config.path.name == "pyproject.toml" else ()
    try:
        text = config.path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        text = ""
    line, column = locate(text, prefix + loc)
    return Diagnostic(str(config.path), line, column, ".".join(prefix + loc), message)


def _validated(path: Path, text: str, prefix: tuple[str, ...], data: object, top: Path) -> Config:
    from stretto.schemas import ValidationError

    if not isinstance(data, dict):  # only possible for tool.stretto in pyproject.toml
        line, column = locate(text, prefix)
        message = f"must be a table, not {describe(data)}; write [tool.stretto] and keys under it"
        raise ConfigError([Diagnostic(str(path), line, column, ".".join(prefix), message)])
    try:
        values = config_validator().validate_python(data)
    except ValidationError as error:
        diagnostics = []
        for item in error.errors():
            loc = tuple(str(p) for p in item["loc"] if p != "[key]")
            line, column = locate(text, prefix + loc)
            message = message_for(item, loc, TIERS)
            diagnostics.append(Diagnostic(str(path), line, column, ".".join(prefix + loc), message))
        raise ConfigError(sorted(diagnostics, key=lambda d: (d.line, d.column))) from None
    gates = tuple(GateConfig(name=name, **gate) for name, gate in values["gates"].items())
    servers = {
        name: LocalServer(
            name,
            table["kind"],
            table["base_url"] or DEFAULT_BASE_URL[table["kind"]],
            tuple(table["models"]),
            table["max_parallel"] or DEFAULT_MAX_PARALLEL[table["kind"]],
        )
        for name, table in values["local"].items()
    }
    problems = [
        Diagnostic(str(path), *locate(text, prefix + loc), ".".join(prefix + loc), message)
        for loc, message in reference_problems(values["agents"], servers)
    ]
    if problems:
        raise ConfigError(problems)
    return Config(
        target=values["target"] or _current_branch(top),
        max_agents=values["max_agents"],
        default_agent=values["default_agent"],
        gates=gates,
        path=path,
        scope=values["scope"],
        link_dirs=tuple(values["workspace"]["link"]),
        setup=tuple(values["workspace"]["setup"]),
        sparse=values["workspace"]["sparse"],
        env_allow=tuple(values["env"]),
        agents=with_servers(values["agents"], servers),
        router=RouterSettings.from_dict(values["router"]),
        budget=BudgetSettings(**values["budget"]),
        prices={k: v for k, v in values["prices"].items()},
        planner=PlannerSettings(**values["planner"]),
        sandbox=SandboxSettings(
            values["sandbox"]["enabled"],
            tuple(values["sandbox"]["writable"]),
            values["sandbox"]["network"],
        ),
        attempt=AttemptSettings(**values["attempt"]),
        merge=MergeSettings(**values["merge"]),
        local=servers,
        cluster=values["cluster"]["scheduler"],
    )
