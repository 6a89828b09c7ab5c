"""Tasks added to a running run (``stretto add``, ``POST /runs/{id}/tasks``): the checks both
sides make, and how the engine folds them in.

The sender (the run API) checks the steps against the run as its journal tells it, so a bad
step is refused at once with its line, field and fix, and nothing is sent. The engine checks
them again against its live plan when it applies the ``add`` command (an id may have been taken
since, by another addition or a split), journals the resolved tasks in the command's
``control`` record, and hands them to its schedule. ``stretto resume`` rebuilds them from that
record, in journal order with splits, so added tasks survive a crash like planned ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from stretto.engine.journal import Record
from stretto.errors import PlanError
from stretto.options import RunOptions
from stretto.plans.additions import Addition, parse_added_steps, task_from_record
from stretto.plans.graph import estimate_minutes
from stretto.plans.plan import Plan, Task
from stretto.schedule.scheduler import SplitChild


def check_addition(
    text: str, file: str, existing: Mapping[str, str], *, unowned: str, options: RunOptions
) -> Addition:
    """Validate added steps like a plan's: the plan passes, then the agents they name.

    Args:
        existing: the run's tasks, id -> state (``pending``, ``running``, ``failed``, ...).

    Raises:
        PlanError: with every problem, located in ``text``.
        UsageError: an agent that cannot start, named by no file.
    """
    from stretto.engine.preflight import check_agents

    addition = parse_added_steps(text, file, existing, unowned=unowned)
    try:
        check_agents(addition.plan, options)
    except PlanError as error:
        raise addition.relocate(error) from None
    return addition


def with_tasks(plan: Plan, tasks: Sequence[Task]) -> Plan:
    """``plan`` with ``tasks`` appended."""
    return replace(
        plan,
        tasks=(*plan.tasks, *tasks),
        by_id={**plan.by_id, **{t.id: t for t in tasks}},
    )


def schedule_view(tasks: Sequence[Task]) -> list[SplitChild]:
    """The scheduler's view of added tasks."""
    return [
        SplitChild(t.id, t.depends_on, t.lease, t.max_attempts, estimate_minutes(t)) for t in tasks
    ]


def added_in(record: Record) -> list[Task] | None:
    """The tasks an applied ``add`` command's ``control`` record added (None: not one)."""
    f = record.fields
    if record.type != "control" or f.get("action") != "add" or not f.get("ok"):
        return None
    return [task_from_record(data) for data in f.get("added") or []]


def addition_result(tasks: Sequence[Task]) -> dict[str, Any]:
    """The journal fields of an applied ``add``."""
    from stretto.plans.additions import task_record

    ids = [t.id for t in tasks]
    return {
        "result": f"added {len(ids)} task{'' if len(ids) == 1 else 's'}: {', '.join(ids)}",
        "tasks": ids,
        "added": [task_record(t) for t in tasks],
    }
