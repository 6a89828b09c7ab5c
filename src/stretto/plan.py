"""Plan files: load, validate (with file:line:column errors) and resolve into frozen values.

A plan is YAML: stages of steps (see docs/plan-format.md). Loading happens in three passes, all
before any effect, and every problem found is reported, not just the first:

1. YAML syntax and duplicate keys (:mod:`stretto.yamlsource`);
2. structure and types with pydantic-core (untrusted input: no unknown keys, strict types);
3. meaning: ids, references with close-match suggestions, cycles, owned paths.

The result is a :class:`Plan` of frozen :class:`Stage` and :class:`Task` values with every
dependency resolved to step ids, ready for :class:`~stretto.graph.TaskGraph`.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stretto import paths
from stretto.errors import Diagnostic, PlanError
from stretto.yamlsource import Located, Path_, load_located

if TYPE_CHECKING:
    from pydantic_core import SchemaValidator

COMPLEXITIES = ("low", "medium", "high")
DEFAULT_MAX_ATTEMPTS = 3
#: A task with no ``files`` owns this when the plan says ``unowned: everything`` (the default).
EVERYTHING = paths.EVERYTHING_PATTERN

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$")
_DURATION_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


@dataclass(frozen=True, slots=True)
class Task:
    """One step of a plan, resolved: a unit of work an agent attempts.

    ``files`` is what the plan declared (None: nothing declared); ``lease`` is what the task
    actually holds while it runs: its normalized patterns, everything (``("**",)``) when nothing
    was declared and the plan owns unowned steps as everything, or nothing (``()``).
    """

    id: str
    goal: str
    title: str
    description: str
    role: str
    complexity: str
    stage: str
    files: tuple[str, ...] | None
    lease: tuple[str, ...]
    depends_on: tuple[str, ...]  # all step ids waited for: explicit plus the stage's
    explicit_deps: tuple[str, ...]
    agent: str | None = None
    model: str | None = None
    gates: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    timeout: float | None = None
    command: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    order: int = 0
    line: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for ``--json``)."""
        return {
            "id": self.id,
            "title": self.title,
            "goal": self.goal,
            "description": self.description,
            "role": self.role,
            "complexity": self.complexity,
            "stage": self.stage,
            "files": list(self.files) if self.files is not None else None,
            "lease": list(self.lease),
            "depends_on": list(self.depends_on),
            "agent": self.agent,
            "model": self.model,
            "gates": list(self.gates),
            "outputs": list(self.outputs),
            "timeout": self.timeout,
            "command": self.command,
            "max_attempts": self.max_attempts,
            "line": self.line,
        }


@dataclass(frozen=True, slots=True)
class Stage:
    """A named group of steps; it starts when the stages it depends on have landed."""

    name: str
    depends_on: tuple[str, ...]
    task_ids: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """A validated plan: what to do, in which groups, under which limits."""

    name: str
    source: str
    digest: str
    stages: tuple[Stage, ...]
    tasks: tuple[Task, ...]
    budget: float | None = None
    max_agents: int | None = None
    target: str | None = None
    context_files: tuple[str, ...] = ()
    unowned: str = "everything"
    by_id: dict[str, Task] = field(default_factory=dict, repr=False, compare=False)

    def task(self, task_id: str) -> Task:
        """The task with this id."""
        return self.by_id[task_id]

    def summary(self) -> dict[str, Any]:
        """Plain data describing the plan (for ``--json``)."""
        return {
            "name": self.name,
            "source": self.source,
            "digest": self.digest,
            "budget": self.budget,
            "max_agents": self.max_agents,
            "target": self.target,
            "context_files": list(self.context_files),
            "unowned": self.unowned,
            "stages": [
                {"name": s.name, "depends_on": list(s.depends_on), "steps": list(s.task_ids)}
                for s in self.stages
            ],
            "tasks": [task.to_dict() for task in self.tasks],
        }


# --------------------------------------------------------------------------- the schema


@functools.cache
def _plan_schema() -> Any:
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
def _plan_validator() -> SchemaValidator:
    from stretto.schemas import build

    return build(_plan_schema())


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


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of a plan file, for editors."""
    from stretto.schemas import json_schema

    schema = json_schema(_plan_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def _yaml_type(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else _yaml_type(value)


def _suggest(word: str, options: list[str] | tuple[str, ...]) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _scope_of(path: Path_) -> str:
    depth = len([p for p in path if isinstance(p, int)])
    return {0: "plan", 1: "stage", 2: "step"}.get(depth, "step")


def _pydantic_problems(error: Any, located: Located) -> list[Diagnostic]:
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
                    loc, f"expected {_FIELD_TYPES[field_name]}, got {_yaml_type(value)}"
                )
            )
        elif kind == "extra_forbidden":
            key = str(loc[-1])
            scope = _scope_of(loc[:-1])
            allowed = _KEYS[scope]
            message = f"unknown key '{key}'{_suggest(key, allowed)}; a {scope} may have: " + (
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
                    f"unknown complexity '{word}'{_suggest(word, COMPLEXITIES)}; "
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
                located.diagnostic(loc, f"expected {_TYPE_WORDS[kind]}, got {_yaml_type(value)}")
            )
        elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
            problems.append(located.diagnostic(loc, f"{item['msg'].lower()}, got {value!r}"))
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


def slugify(text: str, limit: int = 48) -> str:
    """A git-ref-safe id from free text: ``"Add rate limiting!"`` -> ``"add-rate-limiting"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(slug) > limit:
        cut = slug[:limit]
        slug = cut.rsplit("-", 1)[0] if "-" in cut[limit // 2 :] else cut
    return slug.strip("-") or "step"


def parse_duration(value: Any) -> float | None:
    """Seconds from ``90``, ``"90s"``, ``"15m"``, ``"1.5h"``; None if not a valid duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            return seconds if seconds > 0 else None
    return None


# --------------------------------------------------------------------------- loading


def load_plan(path: Path | str) -> Plan:
    """Read, validate and resolve a plan file.

    Raises:
        PlanError: with every problem found, each located by file:line:column and field.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PlanError(
            [Diagnostic(str(path), 0, 0, "", "file not found; check the path")]
        ) from None
    except OSError as error:
        raise PlanError(
            [Diagnostic(str(path), 0, 0, "", f"cannot read: {error.strerror}")]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PlanError(
            [Diagnostic(str(path), 0, 0, "", f"not UTF-8 text (byte {error.start}); save as UTF-8")]
        ) from None
    return parse_plan(text, str(path), digest=hashlib.sha256(raw).hexdigest())


def parse_plan(text: str, file: str = "<plan>", *, digest: str | None = None) -> Plan:
    """Validate and resolve plan YAML given as text (``file`` is only used in messages)."""
    if digest is None:
        digest = hashlib.sha256(text.encode()).hexdigest()
    located, problems = load_located(text, file)
    if problems and located.data is None:
        raise PlanError(problems)
    data = located.data
    if data is None or data == {}:
        raise PlanError(
            [
                *problems,
                Diagnostic(
                    file,
                    1,
                    1,
                    "",
                    "the plan is empty; add 'stages:' with at least one step "
                    "(see docs/plan-format.md or run `stretto schema`)",
                ),
            ]
        )
    if not isinstance(data, dict):
        raise PlanError(
            [
                *problems,
                located.diagnostic(
                    (), f"a plan must be a mapping with 'stages:', got {_yaml_type(data)}"
                ),
            ]
        )
    from stretto.schemas import ValidationError

    try:
        model: Any = _plan_validator().validate_python(data)
    except ValidationError as error:
        found = problems + _pydantic_problems(error, located)
        raise PlanError(sorted(found, key=lambda d: (d.line, d.column))) from None
    resolved, more = _resolve(model, located, digest)
    problems += more
    if problems or resolved is None:
        raise PlanError(sorted(problems, key=lambda d: (d.line, d.column)))
    return resolved


def _resolve(model: Any, located: Located, digest: str) -> tuple[Plan | None, list[Diagnostic]]:
    """Meaning checks and resolution; returns the plan, or None with the problems."""
    problems: list[Diagnostic] = []
    say = located.diagnostic

    if not model.stages or not any(stage.steps for stage in model.stages):
        where: Path_ = ("stages",)
        problems.append(say(where, "the plan has no steps; add at least one step to a stage"))
        return None, problems

    # Stage names.
    stage_names: dict[str, int] = {}
    for s_index, stage in enumerate(model.stages):
        at: Path_ = ("stages", s_index, "name")
        if not stage.name.strip():
            problems.append(say(at, "empty stage name; give each stage a unique name"))
        elif stage.name in stage_names:
            first = located.where(("stages", stage_names[stage.name], "name"))[0]
            problems.append(
                say(at, f"duplicate stage name '{stage.name}' (first used on line {first})")
            )
        else:
            stage_names[stage.name] = s_index
        if not stage.steps:
            problems.append(say(("stages", s_index, "steps"), "a stage needs at least one step"))

    # Explicit ids first, so generated ids can avoid them.
    explicit: dict[str, Path_] = {}
    for s_index, stage in enumerate(model.stages):
        for t_index, step in enumerate(stage.steps):
            if step.id is None:
                continue
            at = ("stages", s_index, "steps", t_index, "id")
            if not _ID_RE.match(step.id) or ".." in step.id or step.id.endswith((".lock", ".")):
                problems.append(
                    say(
                        at,
                        f"invalid id {step.id!r}: use letters, digits, '.', '_' and '-', "
                        f"starting with a letter or digit (e.g. '{slugify(step.id)}')",
                    )
                )
            elif step.id in explicit:
                first = located.where(explicit[step.id])[0]
                problems.append(
                    say(
                        at,
                        f"duplicate id '{step.id}' (first used on line {first}); "
                        "ids must be unique",
                    )
                )
            else:
                explicit[step.id] = at

    taken = set(explicit)
    ids: list[list[str]] = []
    for stage in model.stages:
        row: list[str] = []
        for step in stage.steps:
            if step.id is not None:
                row.append(step.id)
                continue
            slug = slugify(step.title or step.goal)
            candidate, n = slug, 2
            while candidate in taken:
                candidate, n = f"{slug}-{n}", n + 1
            taken.add(candidate)
            row.append(candidate)
        ids.append(row)
    all_ids = [task_id for row in ids for task_id in row]
    known_ids = set(all_ids)

    # Stage dependencies.
    stage_deps: dict[str, list[str]] = {}
    for s_index, stage in enumerate(model.stages):
        mine: list[str] = []
        for d_index, dep in enumerate(stage.depends_on):
            at = ("stages", s_index, "depends_on", d_index)
            if dep == stage.name:
                problems.append(say(at, f"stage '{dep}' cannot depend on itself"))
            elif dep not in stage_names:
                hint = _suggest(dep, list(stage_names))
                if not hint and dep in known_ids:
                    hint = f"; '{dep}' is a step: list it in a step's depends_on instead"
                problems.append(say(at, f"unknown stage '{dep}'{hint}"))
            else:
                mine.append(dep)
        stage_deps[stage.name] = mine
    cycle = _stage_cycle(model, stage_deps)
    if cycle:
        first = model.stages[stage_names[cycle[0]]]
        problems.append(
            say(
                ("stages", stage_names[first.name], "depends_on"),
                f"stage dependency cycle: {' -> '.join(cycle)} (each waits for the next); "
                "remove one of these dependencies",
            )
        )

    # Step dependencies (first pass: every stage's sinks are needed before any task is built).
    explicit_of: dict[str, list[str]] = {}
    sinks_of: dict[str, list[str]] = {}
    for s_index, stage in enumerate(model.stages):
        in_stage = set(ids[s_index])
        depended_on_in_stage: set[str] = set()
        for t_index, step in enumerate(stage.steps):
            task_id = ids[s_index][t_index]
            explicit_deps: list[str] = []
            for d_index, dep in enumerate(step.depends_on):
                at = ("stages", s_index, "steps", t_index, "depends_on", d_index)
                if dep == task_id:
                    problems.append(say(at, f"step '{task_id}' cannot depend on itself"))
                elif dep not in known_ids:
                    hint = _suggest(dep, all_ids)
                    if not hint and dep in stage_names:
                        hint = (
                            f"; '{dep}' is a stage: put it in this stage's depends_on, "
                            "or name step ids"
                        )
                    problems.append(say(at, f"unknown step '{dep}'{hint}"))
                elif dep not in explicit_deps:
                    explicit_deps.append(dep)
                    if dep in in_stage:
                        depended_on_in_stage.add(dep)
            explicit_of[task_id] = explicit_deps
        # Waiting for a stage means waiting for its steps that no other step of it waits for.
        sinks_of[stage.name] = [t for t in ids[s_index] if t not in depended_on_in_stage]

    # Steps (second pass).
    tasks: list[Task] = []
    stage_values: list[Stage] = []
    for s_index, stage in enumerate(model.stages):
        stage_wait = [t for dep in stage_deps[stage.name] for t in sinks_of.get(dep, ())]
        # One tuple shared by the stage's steps that wait for nothing else (most of them).
        only_stage_wait = tuple(dict.fromkeys(stage_wait))
        for t_index, step in enumerate(stage.steps):
            task_id = ids[s_index][t_index]
            base: Path_ = ("stages", s_index, "steps", t_index)
            problems.extend(_step_text_problems(step, base, located))
            files = _owned_files(step, base, located, problems)
            timeout = None
            if step.timeout is not None:
                timeout = parse_duration(step.timeout)
                if timeout is None:
                    problems.append(
                        say(
                            (*base, "timeout"),
                            f"invalid timeout {step.timeout!r}; use seconds (600) or a "
                            "duration such as '90s', '15m', '1h'",
                        )
                    )
            if files is not None:
                lease = files
            else:
                lease = (EVERYTHING,) if model.unowned == "everything" else ()
            label = (step.title or step.goal).strip()
            tasks.append(
                Task(
                    id=task_id,
                    goal=step.goal.strip(),
                    title=label.splitlines()[0][:80] if label else task_id,
                    description=(step.description or "").strip(),
                    role=step.role.strip(),
                    complexity=step.complexity,
                    stage=stage.name,
                    files=files,
                    lease=lease,
                    depends_on=(
                        tuple(dict.fromkeys([*explicit_of[task_id], *stage_wait]))
                        if explicit_of[task_id]
                        else only_stage_wait
                    ),
                    explicit_deps=tuple(explicit_of[task_id]),
                    agent=step.agent,
                    model=step.model,
                    gates=tuple(step.gates),
                    outputs=_outputs(step, base, located, problems),
                    timeout=timeout,
                    command=step.command,
                    max_attempts=step.max_attempts or DEFAULT_MAX_ATTEMPTS,
                    order=len(tasks),
                    line=located.where(base)[0],
                )
            )
        stage_values.append(
            Stage(
                name=stage.name,
                depends_on=tuple(stage_deps[stage.name]),
                task_ids=tuple(ids[s_index]),
            )
        )

    for c_index, pattern in enumerate(model.context_files):
        issue = paths.problem(pattern)
        if issue:
            issue = issue.replace(
                "owned files must be inside it", "context files must be inside it"
            )
            issue = issue.replace("owned files are relative", "context files are relative")
            issue = issue.replace(
                "; leave 'files' out to own everything", "; name files or folders"
            )
        if issue:
            problems.append(say(("context_files", c_index), issue))
    if model.target is not None and not _plausible_branch(model.target):
        problems.append(
            say(("target",), f"invalid branch name {model.target!r}; use a name like 'main'")
        )
    if model.name is not None and not model.name.strip():
        problems.append(say(("name",), "empty name; remove the key or fill it"))

    if not problems:
        from stretto.graph import find_cycle

        edges = {task.id: task.depends_on for task in tasks}
        task_cycle = find_cycle([task.id for task in tasks], edges)
        if task_cycle:
            by_id = {task.id: task for task in tasks}
            first_task = by_id[task_cycle[0]]
            line = first_task.line
            problems.append(
                Diagnostic(
                    located.file,
                    line,
                    located.where(_path_of(model, ids, first_task.id))[1],
                    format_step_path(model, ids, first_task.id),
                    f"dependency cycle: {' -> '.join(task_cycle)} (each waits for the next); "
                    "remove one of these dependencies",
                )
            )
    if problems:
        return None, problems
    plan_name = (model.name or "").strip() or Path(located.file).stem
    return (
        Plan(
            name=plan_name,
            source=located.file,
            digest=digest,
            stages=tuple(stage_values),
            tasks=tuple(tasks),
            budget=float(model.budget) if model.budget is not None else None,
            max_agents=model.max_agents,
            target=model.target,
            context_files=tuple(paths.normalize(p) for p in model.context_files),
            unowned=model.unowned,
            by_id={task.id: task for task in tasks},
        ),
        [],
    )


def _step_text_problems(step: Any, base: Path_, located: Located) -> list[Diagnostic]:
    problems = []
    if not step.goal.strip():
        problems.append(
            located.diagnostic((*base, "goal"), "empty goal; say what the agent must achieve")
        )
    if not step.role.strip():
        problems.append(
            located.diagnostic(
                (*base, "role"),
                "empty role; give a role such as backend, qa or docs (or leave the key out)",
            )
        )
    for name in ("agent", "model", "command", "title"):
        value = getattr(step, name)
        if value is not None and not value.strip():
            problems.append(
                located.diagnostic((*base, name), f"empty {name}; remove the key or fill it")
            )
    for g_index, gate in enumerate(step.gates):
        if not gate.strip():
            problems.append(located.diagnostic((*base, "gates", g_index), "empty gate command"))
    return problems


def _outputs(
    step: Any, base: Path_, located: Located, problems: list[Diagnostic]
) -> tuple[str, ...]:
    out: list[str] = []
    for index, path in enumerate(step.outputs):
        issue = paths.problem(path)
        if issue is None and not paths.is_literal(path):
            issue = f"'{path}' is a glob; outputs are exact file paths"
        if issue:
            problems.append(located.diagnostic((*base, "outputs", index), issue))
        else:
            out.append(paths.normalize(path))
    return tuple(dict.fromkeys(out))


def _owned_files(
    step: Any, base: Path_, located: Located, problems: list[Diagnostic]
) -> tuple[str, ...] | None:
    if step.files is None:
        return None
    if not step.files:
        problems.append(
            located.diagnostic(
                (*base, "files"), "empty list; list the owned files, or leave 'files' out"
            )
        )
    normalized: list[str] = []
    for f_index, pattern in enumerate(step.files):
        issue = paths.problem(pattern)
        if issue:
            problems.append(located.diagnostic((*base, "files", f_index), issue))
        else:
            normalized.append(paths.normalize(pattern))
    return tuple(dict.fromkeys(normalized))


def _path_of(model: Any, ids: list[list[str]], task_id: str) -> Path_:
    for s_index, row in enumerate(ids):
        if task_id in row:
            return ("stages", s_index, "steps", row.index(task_id))
    return ()


def format_step_path(model: Any, ids: list[list[str]], task_id: str) -> str:
    from stretto.yamlsource import format_path

    return format_path(_path_of(model, ids, task_id))


def _stage_cycle(model: Any, stage_deps: dict[str, list[str]]) -> list[str] | None:
    from stretto.graph import find_cycle

    return find_cycle([stage.name for stage in model.stages], stage_deps)


def _plausible_branch(name: str) -> bool:
    return bool(re.match(r"^[A-Za-z0-9._/-]+$", name)) and not (
        name.startswith(("/", "-", "."))
        or name.endswith(("/", ".lock", "."))
        or ".." in name
        or "//" in name
    )
