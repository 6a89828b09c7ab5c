"""The plan format as a pydantic-core schema, and its validation errors as located Diagnostics.

Pass 2 of loading a plan (:func:`~stretto.plans.plan.parse_plan`): structure and types, checked
by pydantic-core as untrusted input (no unknown keys, strict types). The schema is built on
first use and pydantic-core imported only then (it is slow to import); each validation error
becomes a :class:`~stretto.errors.Diagnostic` at the file:line:column of what the file has, in
words that give the fix (unknown keys with a close match and the keys allowed there, missing
keys with an example, "expected X, got Y").
"""

from __future__ import annotations

import difflib
import functools
from typing import TYPE_CHECKING, Any

from stretto.errors import Diagnostic
from stretto.plans.yamlsource import Located, Path_, describe

if TYPE_CHECKING:
    from pydantic_core import SchemaValidator

COMPLEXITIES = ("low", "medium", "high")


@functools.cache
def plan_schema() -> Any:
    """The core schema of the plan format (built on first use: pydantic-core is slow to
    import). Steps, stages and the plan validate into plain objects with attribute access."""
    from pydantic_core import core_schema as core

    from stretto.schemas import Node, at_least, field, literal, model

    class Step(Node):
        """One step: a goal an agent works on, with what it owns and what it waits for."""

    class Stage(Node):
        """A group of steps that may run in parallel."""

    class PlanNode(Node):
        """A stretto plan: stages of steps for coding agents."""

    text = core.str_schema()
    texts = core.list_schema(text)

    def maybe(schema: Any, description: str) -> Any:
        return field(core.nullable_schema(schema), None, description=description)

    step = model(
        Step,
        {
            "goal": field(text, description="What the agent must achieve (becomes the prompt)."),
            "id": maybe(text, "Unique step id; generated from the title or goal when omitted."),
            "title": maybe(text, "Short label shown in views and logs."),
            "description": maybe(text, "More detail for the agent."),
            "role": field(text, "general", description="Free-form role (backend, qa, docs, …)."),
            "complexity": field(
                literal(COMPLEXITIES),
                "medium",
                description="Estimated difficulty; drives ordering and routing.",
            ),
            "files": maybe(
                texts,
                "Owned files/folders/globs, relative to the repo root. Steps whose owned "
                "files overlap never run at once.",
            ),
            "depends_on": field(
                texts, factory=list, description="Step ids (from any stage) this step waits for."
            ),
            "agent": maybe(text, "Pin the agent (CLI) for this step."),
            "model": maybe(text, "Pin the model for this step."),
            "gates": field(
                texts, factory=list, description="Extra verification commands; each must exit 0."
            ),
            "outputs": field(
                texts,
                factory=list,
                description="Files the step must leave in place (checked by the files_exist gate).",
            ),
            "timeout": maybe(
                core.union_schema([core.int_schema(), core.float_schema(), text]),
                "Time limit per attempt: seconds, or '90s', '15m', '1h'.",
            ),
            "command": maybe(text, "Shell command, for `agent: shell`."),
            "max_attempts": maybe(
                core.int_schema(ge=1, le=20), "Attempts before the step fails (default 3)."
            ),
        },
        title="Step",
    )
    stage = model(
        Stage,
        {
            "name": field(text, description="Unique stage name."),
            "depends_on": field(
                texts, factory=list, description="Stage names that must land first."
            ),
            "steps": field(core.list_schema(step), description="The steps of this stage."),
        },
        title="Stage",
    )
    return model(
        PlanNode,
        {
            "name": maybe(text, "Name shown in views and logs."),
            "budget": maybe(
                at_least(0, core.union_schema([core.int_schema(), core.float_schema()])),
                "Spend limit in USD.",
            ),
            "max_agents": maybe(core.int_schema(ge=1, le=1000), "Agents at once."),
            "target": maybe(text, "Branch verified work lands on."),
            "context_files": field(
                texts, factory=list, description="Files every agent is shown as context."
            ),
            "unowned": field(
                literal(("everything", "nothing")),
                "everything",
                description="What a step without `files` owns: everything (it runs alone) or "
                "nothing (it runs beside anything).",
            ),
            "stages": field(core.list_schema(stage), description="The stages, in order."),
        },
        title="stretto plan",
    )


@functools.cache
def plan_validator() -> SchemaValidator:
    """The validator of :func:`plan_schema` (built once)."""
    from stretto.schemas import build

    return build(plan_schema())


_KEYS = {
    "plan": (
        "name",
        "budget",
        "max_agents",
        "target",
        "context_files",
        "unowned",
        "stages",
    ),
    "stage": ("name", "depends_on", "steps"),
    "step": (
        "goal",
        "id",
        "title",
        "description",
        "role",
        "complexity",
        "files",
        "depends_on",
        "agent",
        "model",
        "gates",
        "outputs",
        "timeout",
        "command",
        "max_attempts",
    ),
}

_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "int_from_float": "a whole number",
}


_FIELD_TYPES = {
    "timeout": "seconds (600) or a duration such as '90s', '15m', '1h'",
    "budget": "an amount in USD such as 5 or 12.5",
}


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else describe(value)


def suggest(word: str, options: list[str] | tuple[str, ...]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``options``, or ``""`` when none is close."""
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _scope_of(path: Path_) -> str:
    depth = len([p for p in path if isinstance(p, int)])
    return {0: "plan", 1: "stage", 2: "step"}.get(depth, "step")


def validation_problems(error: Any, located: Located) -> list[Diagnostic]:
    """The located Diagnostics of a pydantic-core ``ValidationError``, one per location."""
    problems: list[Diagnostic] = []
    for item in error.errors(include_url=False):
        loc: Path_ = tuple(item["loc"])
        kind = item["type"]
        value = item.get("input")
        if kind != "missing":
            # Union members add a tag ('int', 'str', …) to the location: keep what the file has.
            while loc and loc not in located.values:
                loc = loc[:-1]
        field_name = loc[-1] if loc else ""
        if (kind in _TYPE_WORDS or kind.endswith("_type")) and field_name in _FIELD_TYPES:
            problems.append(
                located.diagnostic(
                    loc, f"expected {_FIELD_TYPES[field_name]}, got {describe(value)}"
                )
            )
        elif kind == "extra_forbidden":
            key = str(loc[-1])
            scope = _scope_of(loc[:-1])
            allowed = _KEYS[scope]
            message = f"unknown key '{key}'{suggest(key, allowed)}; a {scope} may have: " + (
                ", ".join(allowed)
            )
            problems.append(located.diagnostic(loc, message, key=True))
        elif kind == "missing":
            key = str(loc[-1])
            scope = _scope_of(loc[:-1])
            hint = {
                "goal": 'say what the agent must achieve, e.g. goal: "Add a /health endpoint"',
                "steps": "list the stage's steps under 'steps:'",
                "stages": "a plan lists its work under 'stages:' (see docs/plan-format.md)",
                "name": "give the stage a unique name",
            }.get(key, f"add '{key}:'")
            problems.append(
                located.diagnostic(
                    loc[:-1], f"missing required key '{key}' in this {scope}; {hint}"
                )
            )
        elif kind == "literal_error" and loc and loc[-1] == "complexity" and value is None:
            problems.append(
                located.diagnostic(loc, f"empty complexity; use one of: {', '.join(COMPLEXITIES)}")
            )
        elif kind == "literal_error" and loc and loc[-1] == "complexity":
            word = str(value)
            problems.append(
                located.diagnostic(
                    loc,
                    f"unknown complexity '{word}'{suggest(word, COMPLEXITIES)}; "
                    f"use one of: {', '.join(COMPLEXITIES)}",
                )
            )
        elif kind == "literal_error" and loc and loc[-1] == "unowned":
            problems.append(
                located.diagnostic(
                    loc,
                    f"unknown value {_shown(value)}; use 'everything' or 'nothing'",
                )
            )
        elif kind in _TYPE_WORDS:
            problems.append(
                located.diagnostic(loc, f"expected {_TYPE_WORDS[kind]}, got {describe(value)}")
            )
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            hint = f"; give {_FIELD_TYPES[str(field_name)]}" if field_name in _FIELD_TYPES else ""
            problems.append(located.diagnostic(loc, f"{item['msg'].lower()}, got {value!r}{hint}"))
        elif kind == "finite_number":
            hint = _FIELD_TYPES.get(str(field_name), "a number")
            problems.append(located.diagnostic(loc, f"expected {hint}, got {value!r}"))
        else:
            problems.append(located.diagnostic(loc, item["msg"]))
    # Union members produce one error each for the same location; keep the first per location.
    seen: set[tuple[int, int, str]] = set()
    unique = []
    for problem in problems:
        where = (problem.line, problem.column, problem.field)
        if where not in seen:
            seen.add(where)
            unique.append(problem)
    return unique
