"""The schema ``stretto.toml`` is checked against (:func:`config_validator`), split from
:mod:`stretto.config`, which loads the file, locates problems and builds the settings.

Built on first use: pydantic-core is slow to import (see :mod:`stretto.schemas`).
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from stretto.localmodels import KINDS, checked_base_url

if TYPE_CHECKING:
    from pydantic_core import SchemaValidator

DEFAULT_MAX_AGENTS = 4

DEFAULT_AGENT = "shell"

DEFAULT_GATE_TIMEOUT = 600

#: The most agents at once, as in a plan; the longest gate or planner timeout (a week).
MAX_AGENTS = 1000
MAX_TIMEOUT = 7 * 24 * 3600

_GATE_NAME = r"^[A-Za-z0-9_-]+$"

TIERS = ("fast", "balanced", "strong")

MERGE_STRATEGIES = ("serial", "train")
DEFAULT_MERGE_STRATEGY = "train"

DEFAULT_ATTEMPT_TIMEOUT = 1800
DEFAULT_MAX_RATE_LIMITED = 10

_BAD_BRANCH = re.compile(
    r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|^[-/.]|/\.|\.lock(/|$)|[/.]$|^@$|^HEAD$"
)


@functools.cache
def config_validator() -> SchemaValidator:
    """The validator of stretto.toml (built on first use: pydantic-core is slow to import)."""
    from pydantic_core import core_schema as core

    from stretto.schemas import build, field, literal, table, validator

    def not_blank(value: str) -> str:
        if not value.strip():
            raise ValueError('must not be empty; give a value such as "shell" or "pytest -q"')
        return value

    def branch(value: str | None) -> str | None:
        if value is not None and (value == "" or _BAD_BRANCH.search(value)):
            fix = 'name a branch, e.g. target = "main" (see `git check-ref-format --help`)'
            raise ValueError(f"{value!r} is not a valid git branch name; {fix}")
        return value

    def sparse_paths(value: Any) -> tuple[str, ...] | None:
        fix = 'write sparse = true, or sparse = ["tests", "docs"] (paths relative to the top)'
        if isinstance(value, bool):
            return () if value else None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"must be true, false or an array of paths; {fix}")
        for path in value:
            parts = PurePosixPath(path).parts
            if not path.strip() or path.startswith(("/", "~")) or ".." in parts:
                raise ValueError(f"{path!r} is not a path inside the repository; {fix}")
        return tuple(value)

    def scheduler(value: str) -> str:
        if not re.fullmatch(r"(tcp|tls|inproc|ucx|ws|wss)://\S+", value):
            raise ValueError(
                f"{value!r} is not a Dask scheduler address; write e.g. "
                'scheduler = "tcp://build-1:8786" (or tls://...)'
            )
        return value

    def command_only(data: Any) -> Any:
        return {"command": data} if isinstance(data, str) else data

    def inside(value: list[str]) -> list[str]:
        for name in value:
            parts = name.replace("\\", "/").split("/")
            if not name.strip() or name.startswith(("/", "~")) or ".." in parts:
                raise ValueError(
                    f"{name!r} is not a path inside the repository; name a directory relative "
                    'to its top, e.g. link = ["frontend/node_modules"]'
                )
        return value

    def finite(table: dict[str, Any]) -> dict[str, Any]:  # the journal stores it as JSON
        def walk(value: Any, where: str) -> None:
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{where} is {value}; give a finite number")
            for key, item in (
                value.items()
                if isinstance(value, dict)
                else enumerate(value if isinstance(value, list) else ())
            ):
                walk(item, f"{where}.{key}" if isinstance(key, str) else f"{where}[{key}]")

        for key, value in table.items():
            walk(value, key)
        return table

    def number(*, ge: float | None = None, gt: float | None = None) -> Any:
        return core.float_schema(allow_inf_nan=False, ge=ge, gt=gt)  # no inf or nan amounts

    text = core.str_schema()
    texts, filled = core.list_schema(text), validator(not_blank, text)
    seconds = core.int_schema(ge=1, le=MAX_TIMEOUT)

    def maybe(schema: Any) -> Any:
        return field(core.nullable_schema(schema), None)

    gate = core.no_info_before_validator_function(
        command_only,
        table(
            {
                "command": field(filled),
                "timeout": field(seconds, DEFAULT_GATE_TIMEOUT),
                "when": field(literal(("attempt", "merge", "both")), "attempt"),
            }
        ),
    )
    arm = table({"agent": field(filled), "model": maybe(text), "tier": field(literal(TIERS))})
    router = table(
        {
            "warmup": field(core.int_schema(ge=0), 50),
            "alpha": field(number(ge=0), 1.0),
            "cost_ceiling": field(number(gt=0), 1.0),
            "min_tier": field(
                core.dict_schema(literal(("low", "medium", "high")), literal(TIERS)), factory=dict
            ),
            "arms": field(core.list_schema(arm), factory=list),
            "credit": field(literal(("task", "attempt")), "attempt"),
            "landed_value_usd": maybe(core.float_schema(gt=0)),
        }
    )
    budget = table(
        {
            "run": maybe(number(ge=0)),
            "daily": maybe(number(ge=0)),
            "on_exceed": field(literal(("finish", "stop")), "finish"),
        }
    )
    price = table(
        {
            "input": field(number(ge=0)),
            "output": field(number(ge=0)),
            "cached": maybe(number(ge=0)),
        }
    )
    planner = table(
        {
            "agent": maybe(text),
            "model": maybe(text),
            "timeout": field(seconds, 600),
            "split_depth": field(core.int_schema(ge=0, le=5), 1),
        }
    )
    workspace = table(
        {
            "link": field(validator(inside, texts), factory=list),
            "setup": field(texts, factory=list),
            "sparse": field(validator(sparse_paths, core.any_schema()), False),
        }
    )
    flag = core.bool_schema(strict=True)
    sandbox = table(
        {
            "enabled": field(flag, False),
            "writable": field(texts, factory=list),
            "network": field(flag, True),
        }
    )
    cluster = table({"scheduler": maybe(validator(scheduler, text))})
    attempt = table(
        {
            "timeout": field(seconds, DEFAULT_ATTEMPT_TIMEOUT),
            "max_cost": maybe(number(gt=0)),
            "max_tokens": maybe(core.int_schema(ge=1)),
            "max_turns": maybe(core.int_schema(ge=1)),
            "max_rate_limited": field(core.int_schema(ge=0), DEFAULT_MAX_RATE_LIMITED),
        }
    )
    merge = table(
        {
            "strategy": field(literal(MERGE_STRATEGIES), DEFAULT_MERGE_STRATEGY),
            "max_batch": field(core.int_schema(ge=1, le=64), 8),
            "max_lanes": field(core.int_schema(ge=1, le=64), 4),
            "flaky_retries": field(core.int_schema(ge=0, le=5), 1),
        }
    )

    local = table(
        {
            "kind": field(literal(KINDS)),
            "base_url": maybe(validator(checked_base_url, text)),
            "models": field(core.list_schema(filled), factory=list),
            "max_parallel": maybe(core.int_schema(ge=1, le=MAX_AGENTS)),
        }
    )
    config = table(
        {
            "merge": field(merge, factory=dict),
            "local": field(
                core.dict_schema(core.str_schema(pattern=_GATE_NAME), local), factory=dict
            ),
            "target": field(validator(branch, core.nullable_schema(text)), None),
            "router": field(router, factory=dict),
            "budget": field(budget, factory=dict),
            "prices": field(core.dict_schema(text, price), factory=dict),
            "planner": field(planner, factory=dict),
            "attempt": field(attempt, factory=dict),
            "scope": field(literal(("refuse", "warn")), "refuse"),
            "env": field(texts, factory=list),
            "workspace": field(workspace, factory=dict),
            "sandbox": field(sandbox, factory=dict),
            "cluster": field(cluster, factory=dict),
            "agents": field(
                core.dict_schema(text, validator(finite, core.dict_schema(text))), factory=dict
            ),
            "max_agents": field(core.int_schema(ge=1, le=MAX_AGENTS), DEFAULT_MAX_AGENTS),
            "default_agent": field(filled, DEFAULT_AGENT),
            "gates": field(
                core.dict_schema(core.str_schema(pattern=_GATE_NAME), gate), factory=dict
            ),
        }
    )
    return build(config)
