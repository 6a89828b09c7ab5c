"""Plan files: load, validate (with file:line:column errors) and resolve into frozen values.

A plan is YAML: stages of steps (see docs/plan-format.md). Loading happens in three passes, all
before any effect, and every problem found is reported, not just the first:

1. YAML syntax and duplicate keys (:mod:`stretto.plans.yamlsource`);
2. structure and types with pydantic-core (untrusted input: no unknown keys, strict types;
   :mod:`stretto.plans.schema`);
3. meaning: ids, references with close-match suggestions, cycles, owned paths
   (:mod:`stretto.plans.resolve`).

This module owns the values and the entry points: the result is a :class:`Plan` of frozen
:class:`Stage` and :class:`Task` values with every dependency resolved to step ids, ready for
:class:`~stretto.plans.graph.TaskGraph`; :func:`load_plan` and :func:`parse_plan` run the
passes and :func:`plan_json_schema` describes the format for editors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stretto.errors import Diagnostic, PlanError
from stretto.inputfiles import decode_utf8, read_input
from stretto.plans import paths
from stretto.plans.resolve import (
    owned_files,
    plan_problems,
    resolve_references,
    step_outputs,
    step_problems,
    step_timeout,
    task_cycle,
)
from stretto.plans.schema import plan_schema, plan_validator, validation_problems
from stretto.plans.yamlsource import (
    Located,
    Path_,
    describe,
    format_path,
    load_located,
    paused_gc,
)

DEFAULT_MAX_ATTEMPTS = 3
#: The largest plan file read: a 10,000-step plan is about 2.4 MB, a 100,000-step one 24 MB.
MAX_PLAN_BYTES = 64 * 1024 * 1024
#: A task with no ``files`` owns this when the plan says ``unowned: everything`` (the default).
EVERYTHING = paths.EVERYTHING_PATTERN


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
    #: Where each key and value of the file is, for errors found later (an unknown agent).
    located: Located | None = field(default=None, repr=False, compare=False)

    def task(self, task_id: str) -> Task:
        """The task with this id."""
        return self.by_id[task_id]

    def diagnostic(self, task_id: str | None, tail: Path_, message: str) -> Diagnostic:
        """A problem at key ``tail`` (``("agent",)``, ``("files", 0)``) of step ``task_id``,
        or of the plan itself when ``task_id`` is None, located in the plan file."""
        path: Path_ = tail
        for s_index, stage in enumerate(self.stages if task_id is not None else ()):
            if task_id in stage.task_ids:
                path = ("stages", s_index, "steps", stage.task_ids.index(task_id), *tail)
        if self.located is None:
            return Diagnostic(self.source, 0, 0, format_path(path), message)
        return self.located.diagnostic(path, message)

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


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of a plan file, for editors."""
    from stretto.schemas import json_schema

    schema = json_schema(plan_schema())
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


# --------------------------------------------------------------------------- loading


def load_plan(path: Path | str) -> Plan:
    """Read, validate and resolve a plan file.

    Raises:
        PlanError: with every problem found, each located by file:line:column and field.
    """
    path = Path(path)
    raw = read_input(path, MAX_PLAN_BYTES, PlanError, what="plan")
    text = decode_utf8(raw, str(path), PlanError)
    digest = hashlib.sha256(raw).hexdigest()
    del raw  # 24 MB for a 100,000-step plan, not needed while it is parsed
    return parse_plan(text, str(path), digest=digest)


def parse_plan(text: str, file: str = "<plan>", *, digest: str | None = None) -> Plan:
    """Validate and resolve plan YAML given as text (``file`` is only used in messages)."""
    # The cyclic collector would walk every value of a large plan again and again while they
    # pile up (none of them forms a cycle): a third of validating 100,000 steps.
    with paused_gc():
        return _parse_plan(text, file, digest)


def _parse_plan(text: str, file: str, digest: str | None) -> Plan:
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
                    (), f"a plan must be a mapping with 'stages:', got {describe(data)}"
                ),
            ]
        )
    from stretto.schemas import ValidationError

    try:
        model: Any = plan_validator().validate_python(data)
    except ValidationError as error:
        found = problems + validation_problems(error, located)
        raise PlanError(sorted(found, key=lambda d: (d.line, d.column))) from None
    # The model has what resolution needs; the plan keeps `located` for its positions only.
    located.data = data = None
    resolved, more = _resolve(model, located, digest)
    problems += more
    if problems or resolved is None:
        raise PlanError(sorted(problems, key=lambda d: (d.line, d.column)))
    return resolved


def _resolve(model: Any, located: Located, digest: str) -> tuple[Plan | None, list[Diagnostic]]:
    """Meaning checks and resolution; returns the plan, or None with the problems."""
    refs, problems = resolve_references(model, located)
    if refs is None:
        return None, problems
    ids, explicit_of = refs.ids, refs.explicit_of

    # Steps (the second pass over them: every stage's sinks were needed first).
    tasks: list[Task] = []
    stage_values: list[Stage] = []
    for s_index, stage in enumerate(model.stages):
        stage_wait = [t for dep in refs.stage_deps[stage.name] for t in refs.sinks_of.get(dep, ())]
        # One tuple shared by the stage's steps that wait for nothing else (most of them).
        only_stage_wait = tuple(dict.fromkeys(stage_wait))
        for t_index, step in enumerate(stage.steps):
            task_id = ids[s_index][t_index]
            base: Path_ = ("stages", s_index, "steps", t_index)
            problems.extend(step_problems(step, base, located))
            files = owned_files(step, base, located, problems)
            timeout = step_timeout(step, base, located, problems)
            if files is not None:
                lease = files
            else:
                lease = (EVERYTHING,) if model.unowned == "everything" else ()
            label = (step.title or step.goal).strip()
            tasks.append(
                Task(
                    id=task_id,
                    goal=step.goal.strip(),
                    title=label.splitlines()[0][:80].replace("\t", " ") if label else task_id,
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
                    outputs=step_outputs(step, base, located, problems),
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
                depends_on=tuple(refs.stage_deps[stage.name]),
                task_ids=tuple(ids[s_index]),
            )
        )

    problems.extend(plan_problems(model, located))
    if not problems:
        cycle = task_cycle(model, ids, tasks, located)
        if cycle:
            problems.append(cycle)
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
            located=located,
        ),
        [],
    )
