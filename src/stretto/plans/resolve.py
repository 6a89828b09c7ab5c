"""The meaning of a validated plan: step ids, references, cycles and owned paths, checked.

Pass 3 of loading a plan (:func:`~stretto.plans.plan.parse_plan`), on what the schema
(:mod:`~stretto.plans.schema`) let through: stage names and step ids are unique and well
formed (ids generated from a title or goal where omitted); every stage and step a
``depends_on`` names exists (else a close match is suggested) and nothing waits for itself or,
through others, for itself again; owned files, outputs and context files are paths inside the
repository; timeouts, branch names and texts are usable. Each problem is a located
:class:`~stretto.errors.Diagnostic`; what resolves becomes plain data for
:class:`~stretto.plans.plan.Plan` to be built from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stretto.errors import Diagnostic
from stretto.plans import paths
from stretto.plans.schema import suggest
from stretto.plans.yamlsource import Located, Path_, format_path

if TYPE_CHECKING:
    from stretto.plans.plan import Task

#: C0 and C1 control characters (tab, newline and carriage return are allowed in goals only).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr)?\s*$")
_DURATION_UNITS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


@dataclass(frozen=True, slots=True)
class References:
    """What the steps and stages of a plan are called and wait for, resolved to ids."""

    ids: list[list[str]]  # each stage's step ids, in file order (generated where omitted)
    stage_deps: dict[str, list[str]]  # by stage name: the known stages it depends on
    explicit_of: dict[str, list[str]]  # by step id: the known steps its depends_on names
    sinks_of: dict[str, list[str]]  # by stage name: its steps no other step of it waits for


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
        return float(value) if 0 < value < math.inf else None
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
            return seconds if seconds > 0 else None
    return None


def resolve_references(model: Any, located: Located) -> tuple[References | None, list[Diagnostic]]:
    """Check stage names, step ids and every ``depends_on``, and resolve them to ids.

    Returns the references with the problems found; None when the plan has no steps at all.
    """
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
        elif _CONTROL.search(stage.name):
            problems.append(say(at, "the stage name contains a control character; remove it"))
        elif stage.name in stage_names:
            first = located.where(("stages", stage_names[stage.name], "name"))[0]
            problems.append(
                say(
                    at,
                    f"duplicate stage name '{stage.name}' (first used on line {first}); "
                    "give each stage a unique name",
                )
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
                hint = suggest(dep, list(stage_names))
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
                    hint = suggest(dep, all_ids)
                    if not hint and dep in stage_names:
                        hint = (
                            f"; '{dep}' is a stage: put it in this stage's depends_on, "
                            "or name step ids"
                        )
                    if not hint:
                        shown = ", ".join(all_ids[:10]) + (", …" if len(all_ids) > 10 else "")
                        hint = f"; name a step of this plan: {shown}"
                    problems.append(say(at, f"unknown step '{dep}'{hint}"))
                elif dep not in explicit_deps:
                    explicit_deps.append(dep)
                    if dep in in_stage:
                        depended_on_in_stage.add(dep)
            explicit_of[task_id] = explicit_deps
        # Waiting for a stage means waiting for its steps that no other step of it waits for.
        sinks_of[stage.name] = [t for t in ids[s_index] if t not in depended_on_in_stage]

    return References(ids, stage_deps, explicit_of, sinks_of), problems


#: The longest time limit a step may have (a week); longer ones overflow the clocks they use.
MAX_TIMEOUT = 7 * 24 * 3600

#: The longest goal, description or title a step may have, in bytes (a value in an agent's
#: environment or argument list may not exceed 128 KiB on Linux).
MAX_TEXT = 65_536


def step_problems(step: Any, base: Path_, located: Located) -> list[Diagnostic]:
    """Empty goals, roles, names and gate commands of the step at ``base``."""
    problems = []
    if not step.goal.strip():
        problems.append(
            located.diagnostic((*base, "goal"), "empty goal; say what the agent must achieve")
        )
    for name in ("goal", "description", "title", "role"):
        value = getattr(step, name, None)
        bad = _CONTROL.search(value) if isinstance(value, str) else None
        if bad and (name in ("title", "role") or bad.group() not in "\t\n\r"):
            problems.append(
                located.diagnostic(
                    (*base, name),
                    f"{name} contains the control character U+{ord(bad.group()):04X} (terminals "
                    "act on it: an escape sequence can rewrite what views show); remove it",
                )
            )
    for name in ("goal", "description", "title"):
        value = getattr(step, name, None)
        size = len(value.encode()) if isinstance(value, str) else 0
        if size > MAX_TEXT:
            problems.append(
                located.diagnostic(
                    (*base, name),
                    f"{name} is {size:,} bytes; at most {MAX_TEXT:,}: agents get it in their "
                    "environment and command line, which the system limits to 128 KiB a value. "
                    "Put the long text in a file and name it under 'context_files:'",
                )
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
            problems.append(
                located.diagnostic(
                    (*base, "gates", g_index), "empty gate command; give one, or remove the entry"
                )
            )
    return problems


def step_timeout(
    step: Any, base: Path_, located: Located, problems: list[Diagnostic]
) -> float | None:
    """The step's time limit per attempt in seconds (None: none); an invalid one is a problem."""
    timeout = None
    if step.timeout is not None:
        timeout = parse_duration(step.timeout)
        if timeout is not None and timeout > MAX_TIMEOUT:
            problems.append(
                located.diagnostic(
                    (*base, "timeout"),
                    f"timeout {step.timeout!r} is longer than a week; give at most "
                    f"{MAX_TIMEOUT} seconds ('168h'), or leave it out for no limit",
                )
            )
            return None
        if timeout is None:
            problems.append(
                located.diagnostic(
                    (*base, "timeout"),
                    f"invalid timeout {step.timeout!r}; use seconds (600) or a "
                    "duration such as '90s', '15m', '1h'",
                )
            )
    return timeout


def step_outputs(
    step: Any, base: Path_, located: Located, problems: list[Diagnostic]
) -> tuple[str, ...]:
    """The step's outputs, normalized; a glob or a path outside the repository is a problem."""
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


def owned_files(
    step: Any, base: Path_, located: Located, problems: list[Diagnostic]
) -> tuple[str, ...] | None:
    """The step's owned patterns, normalized (None: it declares none); bad ones are problems."""
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


def plan_problems(model: Any, located: Located) -> list[Diagnostic]:
    """Problems of the plan's own keys: its context files, target branch and name."""
    problems: list[Diagnostic] = []
    say = located.diagnostic
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
    elif model.name is not None and _CONTROL.search(model.name):
        problems.append(say(("name",), "the name contains a control character; remove it"))
    return problems


def task_cycle(
    model: Any, ids: list[list[str]], tasks: Sequence[Task], located: Located
) -> Diagnostic | None:
    """A dependency cycle among the resolved ``tasks``, located at its first step; None if none."""
    from stretto.plans.graph import find_cycle

    edges = {task.id: task.depends_on for task in tasks}
    task_cycle = find_cycle([task.id for task in tasks], edges)
    if not task_cycle:
        return None
    by_id = {task.id: task for task in tasks}
    first_task = by_id[task_cycle[0]]
    line = first_task.line
    return Diagnostic(
        located.file,
        line,
        located.where(_path_of(model, ids, first_task.id))[1],
        format_step_path(model, ids, first_task.id),
        f"dependency cycle: {' -> '.join(task_cycle)} (each waits for the next); "
        "remove one of these dependencies",
    )


def _path_of(model: Any, ids: list[list[str]], task_id: str) -> Path_:
    for s_index, row in enumerate(ids):
        if task_id in row:
            return ("stages", s_index, "steps", row.index(task_id))
    return ()


def format_step_path(model: Any, ids: list[list[str]], task_id: str) -> str:
    return format_path(_path_of(model, ids, task_id))


def _stage_cycle(model: Any, stage_deps: dict[str, list[str]]) -> list[str] | None:
    from stretto.plans.graph import find_cycle

    return find_cycle([stage.name for stage in model.stages], stage_deps)


def _plausible_branch(name: str) -> bool:
    return bool(re.match(r"^[A-Za-z0-9._/-]+$", name)) and not (
        name.startswith(("/", "-", "."))
        or name.endswith(("/", ".lock", "."))
        or ".." in name
        or "//" in name
    )
