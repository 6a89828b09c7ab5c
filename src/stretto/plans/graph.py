"""The task graph: tasks, dependency edges, critical paths and topological waves (pure).

Built once from a validated :class:`~stretto.plans.plan.Plan`; scheduler and the dry run read it.
Durations are estimates from a task's complexity (see :data:`ESTIMATED_MINUTES`); they order work
(longest remaining critical path first) and feed the dry run's makespan, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stretto.plans.plan import Plan, Task

#: Estimated agent minutes per attempt, by complexity.
ESTIMATED_MINUTES: Mapping[str, float] = {"low": 5.0, "medium": 15.0, "high": 45.0}


def find_cycle(nodes: Sequence[str], edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, c, a]`` (a depends on b …), or None if there is none.

    Iterative three-colour DFS in the order of ``nodes``, so the cycle reported is deterministic.
    """
    # The common case first: when every edge leads to a node listed earlier (or to one not
    # listed, which cannot be on a cycle), ``nodes`` is a topological order and there is none.
    # Nodes often share one tuple of children; each distinct tuple is measured once, in C.
    position = {node: i for i, node in enumerate(nodes)}
    highest: dict[tuple[str, ...], int] = {}
    for i, node in enumerate(nodes):
        children = edges.get(node, ())
        if type(children) is tuple:
            top = highest.get(children)
            if top is None:
                top = highest[children] = max(map(position.get, children, repeat(-1)), default=-1)
        elif type(children) is list:
            top = max(map(position.get, children, repeat(-1)), default=-1)
        else:  # an iterator can be read once: leave it to the search below
            break
        if top >= i:
            break
    else:
        return None
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(nodes, white)
    for root in nodes:
        if colour[root] != white:
            continue
        stack: list[tuple[str, Iterable[str]]] = [(root, iter(edges.get(root, ())))]
        colour[root] = grey
        path = [root]
        while stack:
            node, children = stack[-1]
            advanced = False
            for child in children:
                state = colour.get(child, black)
                if state == grey:
                    return [*path[path.index(child) :], child]
                if state == white:
                    colour[child] = grey
                    path.append(child)
                    stack.append((child, iter(edges.get(child, ()))))
                    advanced = True
                    break
            if not advanced:
                colour[node] = black
                path.pop()
                stack.pop()
    return None


@dataclass(frozen=True)
class TaskGraph:
    """Tasks in plan order with their dependencies, dependents and schedule estimates.

    Attributes:
        order: task ids in plan order (the stable tie-break key).
        deps: task id -> ids it waits for (explicit step dependencies plus its stage's).
        dependents: task id -> ids that wait for it.
        duration: task id -> estimated minutes per attempt.
        critical: task id -> longest path of estimated minutes from the start of this task to
            the end of the plan (its own duration included).
        waves: topological levels: wave 0 has no dependencies, wave k depends on wave k-1.
        topo: a topological order (dependencies first), stable in plan order.
    """

    order: tuple[str, ...]
    deps: Mapping[str, tuple[str, ...]]
    dependents: Mapping[str, tuple[str, ...]]
    duration: Mapping[str, float]
    critical: Mapping[str, float]
    waves: tuple[tuple[str, ...], ...]
    topo: tuple[str, ...]
    index: Mapping[str, int] = field(repr=False)

    @classmethod
    def build(
        cls,
        order: Sequence[str],
        deps: Mapping[str, Sequence[str]],
        duration: Mapping[str, float],
    ) -> TaskGraph:
        """Build from ids in a stable order, their dependencies and estimated durations.

        Raises:
            ValueError: on an unknown dependency or a cycle (plans are validated before this,
                so this only fires for graphs built by hand).
        """
        index = {task: i for i, task in enumerate(order)}
        dependents: dict[str, list[str]] = {task: [] for task in order}
        clean_deps: dict[str, tuple[str, ...]] = {}
        # While every task only waits for tasks listed before it (as plans are usually written),
        # its wave is one more than its dependencies' highest. The steps of a stage usually share
        # one tuple of dependencies: each distinct tuple is cleaned and measured once, in C.
        level: dict[str, int] | None = {} if len(index) == len(order) else None
        seen: dict[tuple[str, ...], tuple[tuple[str, ...], int | None]] = {}
        for task in order:
            raw = deps.get(task, ())
            entry = seen.get(raw) if type(raw) is tuple else None
            if entry is None:
                mine = tuple(dict.fromkeys(raw))
                try:
                    latest = max(map(index.__getitem__, mine), default=-1)
                except KeyError:
                    unknown = next(dep for dep in mine if dep not in index)
                    raise ValueError(f"task {task!r} depends on unknown task {unknown!r}") from None
                wave = None
                if level is not None and latest < index[task]:
                    wave = 1 + max(map(level.__getitem__, mine), default=-1)
                entry = (mine, wave)
                if type(raw) is tuple:
                    seen[raw] = entry
            mine, wave = entry
            for dep in mine:
                dependents[dep].append(task)
            clean_deps[task] = mine
            if level is not None:
                if wave is None:
                    level = None
                else:
                    level[task] = wave
        waves: list[tuple[str, ...]] = []
        topo: list[str] = []
        if level is not None:
            rows: list[list[str]] = []
            for task in order:
                if level[task] == len(rows):
                    rows.append([])
                rows[level[task]].append(task)
            waves = [tuple(row) for row in rows]
            topo = [task for row in rows for task in row]
        else:
            # Kahn's algorithm by waves; within a wave, plan order.
            indegree = {task: len(clean_deps[task]) for task in order}
            current = [task for task in order if indegree[task] == 0]
            while current:
                waves.append(tuple(current))
                topo.extend(current)
                following: list[str] = []
                for task in current:
                    for child in dependents[task]:
                        indegree[child] -= 1
                        if indegree[child] == 0:
                            following.append(child)
                following.sort(key=index.__getitem__)
                current = following
        if len(topo) != len(order):
            cycle = find_cycle(list(order), clean_deps)
            raise ValueError(f"dependency cycle: {' -> '.join(cycle or [])}")
        critical: dict[str, float] = {}
        for task in reversed(topo):
            tail = max(map(critical.__getitem__, dependents[task]), default=0.0)
            critical[task] = duration[task] + tail
        return cls(
            order=tuple(order),
            deps=clean_deps,
            dependents={task: tuple(children) for task, children in dependents.items()},
            duration=dict(duration),
            critical=critical,
            waves=tuple(waves),
            topo=tuple(topo),
            index=index,
        )

    @classmethod
    def from_plan(cls, plan: Plan) -> TaskGraph:
        """The graph of a validated plan, durations estimated from complexity."""
        return cls.build(
            [task.id for task in plan.tasks],
            {task.id: task.depends_on for task in plan.tasks},
            {task.id: estimate_minutes(task) for task in plan.tasks},
        )

    def __len__(self) -> int:
        return len(self.order)

    def critical_path(self) -> list[str]:
        """The longest chain of estimated work from a source to a sink (ties: plan order)."""
        if not self.order:
            return []
        start = min(self.waves[0], key=lambda t: (-self.critical[t], self.index[t]))
        path = [start]
        while self.dependents[path[-1]]:
            children = self.dependents[path[-1]]
            path.append(min(children, key=lambda t: (-self.critical[t], self.index[t])))
        return path

    def critical_length(self) -> float:
        """Estimated minutes along the critical path: a lower bound on any schedule's makespan."""
        return max(self.critical.values(), default=0.0)

    def serial_minutes(self) -> float:
        """Estimated minutes if every task ran one after another."""
        return sum(self.duration.values())


def estimate_minutes(task: Task) -> float:
    """Estimated minutes for one attempt of ``task``, from its complexity."""
    return ESTIMATED_MINUTES[task.complexity]
