"""Splitting a task that keeps failing into smaller ones (pure: text in, tasks out).

The planning call itself is :func:`~stretto.planning.planner.split_task`; this module turns its
answer
(a small plan of steps, each owning a subset of the parent's files) into tasks that take the
parent's place in the run: same stage, the parent's dependencies plus their own siblings', and
the parent's pins and limits. The runner journals the answer's text, so ``stretto resume`` and a
replay rebuild the same tasks from the journal without a second call.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from stretto.errors import PlanError
from stretto.plans.graph import estimate_minutes
from stretto.plans.paths import any_overlap
from stretto.plans.plan import Task, parse_plan
from stretto.schedule.scheduler import SplitChild


class SplitRefused(ValueError):
    """The split's answer cannot replace the task (the reason is the message)."""


def child_tasks(
    parent: Task, yaml_text: str, existing: Collection[str], *, source: str = "split"
) -> list[Task]:
    """The tasks a split answer describes, ready to replace ``parent``.

    Raises:
        SplitRefused: the answer is not a valid plan, is empty, reuses a task id, or gives a
            step files its parent did not own.
    """
    try:
        sub = parse_plan(yaml_text, source)
    except PlanError as error:
        raise SplitRefused(f"the split is not a valid plan: {error.message}") from None
    if not sub.tasks:
        raise SplitRefused("the split has no steps")
    if len(sub.tasks) == 1 and sub.tasks[0].goal.strip() == parent.goal.strip():
        raise SplitRefused("the split only repeats the task")
    clash = sorted({t.id for t in sub.tasks} & set(existing))
    if clash:
        raise SplitRefused(f"the split reuses task id(s) {', '.join(clash)}")
    own = {t.id for t in sub.tasks}
    out: list[Task] = []
    for index, task in enumerate(sub.tasks):
        if parent.files is not None:
            outside = [p for p in task.lease if not any(_within(p, mine) for mine in parent.lease)]
            if outside or not task.lease:
                what = ", ".join(outside) if outside else "everything"
                raise SplitRefused(
                    f"step '{task.id}' owns {what}, outside the files of '{parent.id}'"
                )
        internal = tuple(d for d in task.depends_on if d in own)
        outputs = tuple(
            o for o in parent.outputs if any(any_overlap((o,), (p,)) for p in task.lease)
        )
        out.append(
            replace(
                task,
                stage=parent.stage,
                depends_on=parent.depends_on + internal,
                explicit_deps=internal,
                agent=task.agent or parent.agent,
                model=task.model or parent.model,
                outputs=tuple(dict.fromkeys((*task.outputs, *outputs))),
                max_attempts=parent.max_attempts,
                timeout=task.timeout or parent.timeout,
                command=task.command or parent.command,
                order=parent.order,
                line=index,
            )
        )
    return out


def _within(pattern: str, owned: str) -> bool:
    """Whether everything ``pattern`` names is inside what ``owned`` names (conservatively)."""
    if pattern == owned or owned == "**":
        return True
    if owned.endswith("/**"):
        return pattern.startswith(owned[:-2])
    return False


def split_children(parent: Task, children: Sequence[Task]) -> list[SplitChild]:
    """The scheduler's view of the children."""
    internal = {c.id for c in children}
    return [
        SplitChild(
            c.id,
            tuple(d for d in c.depends_on if d in internal),
            c.lease,
            c.max_attempts,
            estimate_minutes(c),
        )
        for c in children
    ]
