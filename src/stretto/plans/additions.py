"""Steps added to a running run: validated exactly like a plan's steps (pure).

``stretto add``, ``POST /runs/{id}/tasks`` and the run API take YAML holding one step (a mapping
with ``goal:``) or a list of steps, written as in a plan (docs/plan-format.md). They go through
the plan's own passes (YAML with positions, the schema, ids, references, owned files, cycles),
so the errors are the plan's, naming the file's line and column, the field and the fix. How:
the steps are placed, as a stage of their own, after one stub step per task the run already has
(so ``depends_on`` may name any of them, generated ids avoid theirs, and a misspelt name gets
its "did you mean"), and every position is mapped back to the user's text.

Added tasks wait for the tasks they name in ``depends_on`` and nothing else. A task that
already ended without landing (failed, cancelled, skipped, split) cannot be waited for: the
error says so and what to do instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from stretto.errors import Diagnostic, PlanError
from stretto.plans.plan import Plan, Task, _resolve
from stretto.plans.schema import plan_validator, validation_problems
from stretto.plans.yamlsource import Located, Path_, describe, load_located

#: The stage added tasks belong to (in the report's graph).
ADDED_STAGE = "added"
#: The most steps one addition may hold.
MAX_ADDED = 1000
#: The largest addition read, in bytes.
MAX_ADDED_BYTES = 1024 * 1024
_STUBS = "run"  # the stage of the stub steps that stand for the run's tasks
#: Task states (:class:`~stretto.engine.status.TaskStatus` words) an added task cannot wait for.
_DEAD = {
    "failed": "failed",
    "cancelled": "was cancelled",
    "skipped": "was skipped",
    "split": "was split into smaller tasks",
}


@dataclass(frozen=True)
class Addition:
    """Validated added steps.

    Attributes:
        tasks: the new tasks, in the order given.
        plan: a plan holding them (for later checks that locate errors, such as unknown
            agents: use :meth:`relocate` on what they raise).
        single: whether the text held one step (a mapping) rather than a list.
    """

    tasks: tuple[Task, ...]
    plan: Plan
    single: bool

    def relocate(self, error: PlanError) -> PlanError:
        """``error`` (raised about :attr:`plan`) with fields named as in the user's text."""
        return PlanError([_user_diagnostic(d, self.single) for d in error.diagnostics])


def parse_added_steps(
    text: str,
    file: str,
    existing: Mapping[str, str],
    *,
    unowned: str = "everything",
) -> Addition:
    """Validate ``text`` (one step, or a list of steps) against a run whose tasks are
    ``existing`` (id -> state: pending, running, landed, failed, ...).

    Raises:
        PlanError: every problem found, each with the line and column in ``text``, the field
            (``goal``, ``[1].depends_on[0]``) and the fix; nothing is added then.
    """
    if len(text.encode()) > MAX_ADDED_BYTES:
        raise PlanError(
            [
                Diagnostic(
                    file,
                    1,
                    1,
                    "",
                    f"more than {MAX_ADDED_BYTES:,} bytes of steps; add them in parts",
                )
            ]
        )
    located, problems = load_located(text, file)
    data = located.data
    if problems and data is None:
        raise PlanError(problems)
    single = isinstance(data, dict)
    steps = [data] if single else data
    if data is None or data == {} or data == []:
        raise PlanError(
            [
                *problems,
                _say(file, "no steps; give one step (a mapping with 'goal:') or a list of steps"),
            ]
        )
    if not isinstance(steps, list):
        raise PlanError(
            [
                *problems,
                _say(
                    file,
                    "expected a step (a mapping with 'goal:') or a list of steps, "
                    f"got {describe(data)}",
                ),
            ]
        )
    if len(steps) > MAX_ADDED:
        raise PlanError(
            [*problems, _say(file, f"{len(steps):,} steps; add at most {MAX_ADDED:,} at once")]
        )
    if problems:  # duplicate keys
        raise PlanError([_user_diagnostic(d, single) for d in problems])
    base: Path_ = ("stages", 1, "steps")
    mapped = Located(None, file)
    for source, target in ((located.values, mapped.values), (located.keys, mapped.keys)):
        for path, position in source.items():
            target[(*base, 0, *path) if single else (*base, *path)] = position
    for path in ((), ("stages",), ("stages", 1)):
        mapped.values[path] = (1, 1)
    clash = []
    for index, step in enumerate(steps):
        step_id = step.get("id") if isinstance(step, dict) else None
        if isinstance(step_id, str) and step_id in existing:
            at = (*base, index, "id")
            clash.append(
                mapped.diagnostic(
                    at,
                    f"id '{step_id}' is already a task of this run; choose another id "
                    "(or leave 'id' out for a new one)",
                )
            )
    if clash:
        raise PlanError([_user_diagnostic(d, single) for d in clash])
    stubs = [{"id": task_id, "goal": "-"} for task_id in existing]
    mapped.data = {
        "unowned": unowned,
        "stages": [{"name": _STUBS, "steps": stubs}, {"name": ADDED_STAGE, "steps": steps}],
    }
    if not stubs:  # a run always has tasks; a stage may not be empty
        mapped.data["stages"][0]["steps"] = [{"id": "stub", "goal": "-"}]
    from stretto.schemas import ValidationError

    try:
        model: Any = plan_validator().validate_python(mapped.data)
    except ValidationError as error:
        found = validation_problems(error, mapped)
        raise PlanError(sorted((_user_diagnostic(d, single) for d in found), key=_where)) from None
    digest = hashlib.sha256(text.encode()).hexdigest()
    plan, found = _resolve(model, mapped, digest)
    found = [d for d in found if d.field.startswith("stages[1]") or not d.field]
    if plan is None or found:
        raise PlanError(sorted((_user_diagnostic(d, single) for d in found), key=_where))
    tasks = [t for t in plan.tasks if t.stage == ADDED_STAGE]
    dead = []
    for index, task in enumerate(tasks):
        for d_index, dep in enumerate(task.explicit_deps):
            why = _DEAD.get(existing.get(dep, ""))
            if why is not None:
                at = (*base, index, "depends_on", d_index)
                fix = (
                    "depend on the tasks that replaced it"
                    if existing[dep] == "split"
                    else f"retry it first (`stretto retry {dep}`) or drop the dependency"
                )
                dead.append(
                    mapped.diagnostic(
                        at,
                        f"task '{dep}' {why}; an added task waiting for it would never "
                        f"start: {fix}",
                    )
                )
    if dead:
        raise PlanError([_user_diagnostic(d, single) for d in dead])
    order = len(existing)
    tasks = [replace(t, order=order + i, depends_on=t.explicit_deps) for i, t in enumerate(tasks)]
    stage = plan.stages[1]
    added_plan = replace(
        plan,
        stages=(replace(plan.stages[0], task_ids=()), stage),
        tasks=tuple(tasks),
        by_id={t.id: t for t in tasks},
    )
    return Addition(tuple(tasks), added_plan, single)


def _say(file: str, message: str) -> Diagnostic:
    return Diagnostic(file, 1, 1, "", message)


def _where(d: Diagnostic) -> tuple[int, int]:
    return (d.line, d.column)


def _user_diagnostic(d: Diagnostic, single: bool) -> Diagnostic:
    """A diagnostic about the synthetic plan, with the field as the user's text has it."""
    field = d.field
    prefix = "stages[1].steps"
    if field.startswith(prefix):
        rest = field[len(prefix) :]
        if single and rest.startswith("[0]"):
            rest = rest[3:].lstrip(".")
        field = rest.lstrip(".") if not rest.startswith("[") else rest
    elif field.startswith("stages") or field in ("unowned",):
        field = ""
    message = d.message.replace("in this stage", "in this list").replace(
        "a stage needs at least one step", "give at least one step"
    )
    return Diagnostic(d.file, d.line, d.column, field, message)


# --------------------------------------------------------------------------- journal form


def task_record(task: Task) -> dict[str, Any]:
    """Everything of ``task`` as plain data (journaled with the ``add`` command)."""
    out: dict[str, Any] = {}
    for f in fields(Task):
        value = getattr(task, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def task_from_record(data: Mapping[str, Any]) -> Task:
    """Inverse of :func:`task_record`."""
    names = {f.name for f in fields(Task)}
    values: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names
    }
    return Task(**values)


def added_task_ids(tasks: Sequence[Task]) -> list[str]:
    """Their ids, in order."""
    return [t.id for t in tasks]
