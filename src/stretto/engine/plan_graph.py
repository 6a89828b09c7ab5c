"""The saved plan's task graph, kept beside it as JSON so readers need not parse the plan.

The report (and the task server, on every report it serves) needs each task's title, stage and
dependencies. Parsing ``plan.yaml`` again gives them, but costs as much as the rest of a
1,000-task report (YAML with positions, the schema, the resolution, and importing all that).
So :func:`write_plan_graph` saves just the graph as ``plan-graph.json`` when the run is
created, stamped with the digest of the ``plan.yaml`` bytes it was made from, and
:func:`read_plan_graph` reads it back. It is derived data: a missing, damaged or stale file
(another digest) reads as None, and the caller parses the plan as before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stretto.files import write_atomic

if TYPE_CHECKING:
    from stretto.plans.plan import Plan

GRAPH_NAME = "plan-graph.json"


@dataclass(frozen=True, slots=True)
class PlannedTask:
    """What the report shows of a planned task."""

    id: str
    title: str
    stage: str
    depends_on: tuple[str, ...]


def write_plan_graph(run_dir: Path, plan: Plan, plan_bytes: bytes) -> None:
    """Save ``plan``'s graph beside the run's ``plan.yaml`` (whose content is ``plan_bytes``)."""
    deps: dict[tuple[str, ...], int] = {}  # a stage's steps share one list: saved once
    tasks = [[t.id, t.title, t.stage, deps.setdefault(t.depends_on, len(deps))] for t in plan.tasks]
    data = {
        "digest": hashlib.sha256(plan_bytes).hexdigest(),
        "stages": [s.name for s in plan.stages],
        "deps": [list(d) for d in deps],
        "tasks": tasks,
    }
    write_atomic(run_dir / GRAPH_NAME, json.dumps(data, separators=(",", ":")).encode())


def read_plan_graph(run_dir: Path) -> tuple[list[str], dict[str, PlannedTask]] | None:
    """(stages, tasks by id) of the run's plan; None if the file is missing, damaged or was
    not made from the ``plan.yaml`` that is there now."""
    try:
        data = json.loads((run_dir / GRAPH_NAME).read_bytes())
        digest = hashlib.sha256((run_dir / "plan.yaml").read_bytes()).hexdigest()
        if not isinstance(data, dict) or data.get("digest") != digest:
            return None
        stages = [str(s) for s in data["stages"]]
        deps = [tuple(str(d) for d in row) for row in data["deps"]]
        tasks = {
            str(task_id): PlannedTask(str(task_id), str(title), str(stage), deps[index])
            for task_id, title, stage, index in data["tasks"]
        }
        return stages, tasks
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return None
