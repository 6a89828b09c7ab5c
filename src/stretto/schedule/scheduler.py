"""The scheduler: which task runs next, decided by plain Python and never by a model (pure).

:class:`Schedule` is the state of a run as far as scheduling cares (each task's lifecycle state,
attempt and failure counts, the file leases held by running tasks), kept up to date by folding
in what happened (:meth:`Schedule.started`, :meth:`Schedule.landed`, …: one call per journaled
event). :meth:`Schedule.decide` is a pure function of that state, the free capacity and any
leases held outside the run: it returns a list of actions and changes nothing. The same state
and inputs always give the same actions.

Rules, in order:

1. A task whose attempts are used up is given up (:class:`GiveUp`); its dependents are skipped
   (:class:`Skip`), transitively.
2. Ready tasks (all dependencies landed) are considered by longest remaining critical path
   first, then plan order, then id.
3. A task starts (:class:`Spawn`) when a slot is free overall and in each of its pools (agent,
   provider), and its lease overlaps no lease held by a running task, by a task started in this
   same decision, or by someone outside the run. Otherwise it waits (:class:`Wait`), and the
   wait says on whom.

The state is updated incrementally, so one decision costs time in the number of *ready and
running* tasks it looks at, never in the number of finished ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stretto.plans.graph import TaskGraph
from stretto.plans.paths import EVERYTHING_PATTERN, any_overlap, reach
from stretto.schedule.actions import (
    ALL_EVERYTHING_OWNERS,
    ALL_FILE_OWNERS,
    Action,
    Capacity,
    GiveUp,
    Skip,
    Spawn,
    SplitChild,
    TaskState,
    Wait,
)
from stretto.schedule.ready import Key, ReadyOrder

__all__ = [  # the actions and states are the scheduler's words: importable from here too
    "ALL_EVERYTHING_OWNERS",
    "ALL_FILE_OWNERS",
    "Action",
    "Capacity",
    "GiveUp",
    "Schedule",
    "SchedulingError",
    "Skip",
    "Spawn",
    "SplitChild",
    "TaskState",
    "Wait",
]


class SchedulingError(RuntimeError):
    """An event that does not fit the task's state (a bug in the caller, not in user input)."""


class Schedule:
    """Scheduling state of one run, folded from events; :meth:`decide` reads it purely.

    Args:
        graph: the task graph.
        leases: task id -> normalized owned-file patterns it holds while running.
        pools: task id -> capacity pools it draws from (e.g. ``("agent:shell",)``).
        max_attempts: task id -> counted failures after which it is given up (default 3).
    """

    def __init__(
        self,
        graph: TaskGraph,
        leases: Mapping[str, tuple[str, ...]],
        *,
        pools: Mapping[str, tuple[str, ...]] | None = None,
        max_attempts: Mapping[str, int] | None = None,
        default_max_attempts: int = 3,
    ) -> None:
        self.graph = graph
        self.leases = dict(leases)
        self.pools = pools or {}
        self.max_attempts = dict(max_attempts or {})
        self.default_max_attempts = default_max_attempts
        self.state: dict[str, TaskState] = {}
        self.attempts: dict[str, int] = dict.fromkeys(graph.order, 0)
        self.failures: dict[str, int] = dict.fromkeys(graph.order, 0)
        self.running: dict[str, tuple[str, ...]] = {}
        self._missing = {task: len(graph.deps[task]) for task in graph.order}
        self._ready = ReadyOrder()
        self._give_up: list[str] = []
        self._skip: list[tuple[str, str]] = []
        self.finished = 0
        keys = []
        for task in graph.order:
            if self._missing[task] == 0:
                self.state[task] = TaskState.READY
                keys.append(self._key(task))
            else:
                self.state[task] = TaskState.WAITING
        self._ready.reset(keys, self._owns_files)

    # ------------------------------------------------------------------ folding in events

    def _key(self, task: str) -> Key:
        return (-self.graph.critical[task], self.graph.index[task], task)

    def _owns_files(self, task: str) -> bool:
        return bool(self.leases.get(task))

    def _add_ready(self, task: str) -> None:
        self._ready.add(self._key(task), self._owns_files(task))

    def _expect(self, task: str, *states: TaskState) -> None:
        if self.state.get(task) not in states:
            wanted = " or ".join(s.value for s in states)
            raise SchedulingError(f"task {task!r} is {self.state.get(task)}, expected {wanted}")

    def started(self, task: str) -> int:
        """An attempt of a ready task began; returns its attempt number (1-based)."""
        self._expect(task, TaskState.READY)
        self._ready.discard(self._key(task))
        self.state[task] = TaskState.RUNNING
        self.attempts[task] += 1
        self.running[task] = self.leases.get(task, ())
        return self.attempts[task]

    def landed(self, task: str) -> list[str]:
        """A running task's work was merged; returns the tasks this made ready."""
        self._expect(task, TaskState.RUNNING)
        del self.running[task]
        self.state[task] = TaskState.LANDED
        self.finished += 1
        now_ready = []
        missing, state = self._missing, self.state  # locals: this loop runs once per edge
        for child in self.graph.dependents[task]:
            missing[child] -= 1
            if missing[child] == 0 and state[child] is TaskState.WAITING:
                state[child] = TaskState.READY
                self._add_ready(child)
                now_ready.append(child)
        return now_ready

    def attempt_failed(self, task: str, *, counts: bool = True) -> None:
        """A running attempt ended without landing.

        ``counts=False`` for failures that are not the task's fault (a provider's rate limit,
        a stopped run): the task is retried without using up an attempt.
        """
        self._expect(task, TaskState.RUNNING)
        del self.running[task]
        if counts:
            self.failures[task] += 1
        self.state[task] = TaskState.READY
        if self.failures[task] >= self.limit(task):
            self._give_up.append(task)
        else:
            self._add_ready(task)

    def gave_up(self, task: str) -> list[str]:
        """The task failed for good; returns its dependents that will now be skipped."""
        if self.state.get(task) is TaskState.READY and task not in self._give_up:
            self._ready.discard(self._key(task))
        self._expect(task, TaskState.READY, TaskState.RUNNING)
        self.running.pop(task, None)
        if task in self._give_up:
            self._give_up.remove(task)
        self.state[task] = TaskState.FAILED
        self.finished += 1
        return self._mark_skips(task)

    def skipped(self, task: str) -> list[str]:
        """The task was skipped; returns its dependents that will now be skipped too."""
        self._expect(task, TaskState.WAITING, TaskState.READY)
        self._skip = [(t, b) for t, b in self._skip if t != task]
        self.state[task] = TaskState.SKIPPED
        self.finished += 1
        return self._mark_skips(task)

    def _mark_skips(self, task: str) -> list[str]:
        queued = {t for t, _ in self._skip}
        new = []
        for child in self.graph.dependents[task]:
            if not self.state[child].finished and child not in queued:
                self._skip.append((child, task))
                new.append(child)
        return new

    def cancel(self, task: str) -> list[str]:
        """The person ended a task that has not finished: it counts as failed, so its
        dependents are skipped; returns them."""
        state = self.state.get(task)
        if state is None or state.finished:
            raise SchedulingError(f"task {task!r} is {state}, it cannot be cancelled")
        if state is TaskState.READY:
            self._unready(task)
        self.running.pop(task, None)
        self._skip = [(t, b) for t, b in self._skip if t != task]  # it ends as cancelled
        self.state[task] = TaskState.FAILED
        self.finished += 1
        return self._mark_skips(task)

    def revive(self, task: str) -> list[str]:
        """A failed task gets one more attempt (``stretto retry``): it is ready again (or
        waiting, if a dependency has not landed), and so is every task skipped because of it.
        Returns those dependents."""
        self._expect(task, TaskState.FAILED)
        self.max_attempts[task] = self.failures[task] + 1
        revived: list[str] = []
        gone = (TaskState.FAILED, TaskState.SKIPPED)
        todo = [task]
        while todo:
            current = todo.pop(0)
            self.finished -= 1
            self._skip = [(t, b) for t, b in self._skip if b != current and t != current]
            missing = sum(
                1 for d in self.graph.deps[current] if self.state[d] is not TaskState.LANDED
            )
            self._missing[current] = missing
            if missing == 0:
                self.state[current] = TaskState.READY
                self._add_ready(current)
            else:
                self.state[current] = TaskState.WAITING
            for child in self.graph.dependents[current]:
                if self.state[child] is not TaskState.SKIPPED or child in revived:
                    continue
                if any(self.state[d] in gone for d in self.graph.deps[child]):
                    continue  # another of its dependencies still failed: it stays skipped
                revived.append(child)
                todo.append(child)
        # A skip owed to another dependency that failed too must not be lost with the ones
        # owed to the revived task.
        queued = {t for t, _ in self._skip}
        for name in self.graph.order:
            if self.state[name] is TaskState.WAITING and name not in queued:
                blocker = next((d for d in self.graph.deps[name] if self.state[d] in gone), None)
                if blocker is not None:
                    self._skip.append((name, blocker))
        return revived

    def splitting(self, task: str) -> None:
        """A ready task (usually one given up on) is being split: it holds its lease meanwhile."""
        self._expect(task, TaskState.READY)
        self._unready(task)
        self.state[task] = TaskState.RUNNING
        self.running[task] = self.leases.get(task, ())

    def _unready(self, task: str) -> None:
        if task in self._give_up:
            self._give_up.remove(task)
            return
        self._ready.discard(self._key(task))

    def split(self, parent: str, children: Sequence[SplitChild]) -> list[str]:
        """Replace ``parent`` by ``children``; returns the children that are ready now.

        Each child waits for the parent's dependencies and for the siblings it names; every
        task that waited for the parent waits for all the children instead. The parent ends
        in :attr:`TaskState.SPLIT`. Works on a live schedule (parent running its split) and on
        a fresh one being rebuilt from a journal (parent ready or waiting).
        """
        self._expect(parent, TaskState.RUNNING, TaskState.READY, TaskState.WAITING)
        graph = self.graph
        ids = [child.id for child in children]
        clash = next((i for i in ids if i in graph.index), None)
        if clash is not None or len(set(ids)) != len(ids):
            raise SchedulingError(f"split of {parent!r}: task id {clash!r} is already taken")
        order: list[str] = []
        for task in graph.order:
            order.append(task)
            if task == parent:
                order.extend(ids)
        deps: dict[str, tuple[str, ...]] = {}
        for task in graph.order:
            mine = graph.deps[task]
            if parent in mine:
                mine = tuple(d for d in mine if d != parent) + tuple(ids)
            deps[task] = mine
        for child in children:
            deps[child.id] = graph.deps[parent] + tuple(child.depends_on)
        duration = {**graph.duration, **{c.id: c.minutes for c in children}}
        self.graph = TaskGraph.build(order, deps, duration)
        if self.state[parent] is TaskState.RUNNING:
            del self.running[parent]
        elif self.state[parent] is TaskState.READY:
            self._unready(parent)
        self.state[parent] = TaskState.SPLIT
        self.finished += 1
        for child in children:
            self.leases[child.id] = child.lease
            self.max_attempts[child.id] = child.max_attempts
            self.attempts[child.id] = self.failures[child.id] = 0
            self.state[child.id] = TaskState.WAITING
        # Keys (critical paths) changed: recount what each open task waits for, re-sort.
        landed = TaskState.LANDED
        ready: list[str] = []
        keys = []
        for task in self.graph.order:
            state = self.state[task]
            if state in (TaskState.WAITING, TaskState.READY):
                missing = sum(1 for d in self.graph.deps[task] if self.state[d] is not landed)
                self._missing[task] = missing
                if missing == 0:
                    if state is TaskState.WAITING:
                        ready.append(task)
                    self.state[task] = TaskState.READY
                    if task not in self._give_up:
                        keys.append(self._key(task))
                else:
                    self.state[task] = TaskState.WAITING
        self._ready.reset(keys, self._owns_files)
        return ready

    def add(self, tasks: Sequence[SplitChild]) -> list[str]:
        """New tasks join the run (``stretto add``); returns the ones ready now.

        Each waits for the tasks named in its ``depends_on``: tasks already in the schedule or
        added with it (validated by :mod:`stretto.plans.additions`). Nothing waits for them.
        One waiting for a task that failed or was skipped is skipped in turn. Works on a live
        schedule and on a fresh one being rebuilt from a journal.
        """
        graph = self.graph
        ids = [task.id for task in tasks]
        clash = next((i for i in ids if i in graph.index), None)
        if clash is not None or len(set(ids)) != len(ids):
            raise SchedulingError(f"added task id {clash!r} is already taken")
        known = set(graph.index) | set(ids)
        for task in tasks:
            unknown = [d for d in task.depends_on if d not in known]
            if unknown:
                raise SchedulingError(f"added task {task.id!r} waits for unknown {unknown}")
        deps = {name: graph.deps[name] for name in graph.order}
        deps.update({task.id: tuple(task.depends_on) for task in tasks})
        duration = {**graph.duration, **{task.id: task.minutes for task in tasks}}
        self.graph = TaskGraph.build([*graph.order, *ids], deps, duration)
        for task in tasks:
            self.leases[task.id] = task.lease
            self.max_attempts[task.id] = task.max_attempts
            self.attempts[task.id] = self.failures[task.id] = 0
            self.state[task.id] = TaskState.WAITING
        # Critical paths changed: recount what each open task waits for, re-sort the ready.
        ready: list[str] = []
        keys = []
        gone = (TaskState.FAILED, TaskState.SKIPPED)
        queued = {t for t, _ in self._skip}
        for name in self.graph.order:
            state = self.state[name]
            if state not in (TaskState.WAITING, TaskState.READY):
                continue
            missing = sum(1 for d in self.graph.deps[name] if self.state[d] is not TaskState.LANDED)
            self._missing[name] = missing
            if missing == 0:
                if state is TaskState.WAITING:
                    ready.append(name)
                self.state[name] = TaskState.READY
                if name not in self._give_up:
                    keys.append(self._key(name))
            elif name in ids and name not in queued:
                blocker = next((d for d in self.graph.deps[name] if self.state[d] in gone), None)
                if blocker is not None:
                    self._skip.append((name, blocker))
        self._ready.reset(keys, self._owns_files)
        return ready

    def restore(
        self,
        *,
        landed: set[str],
        failed: set[str],
        skipped: set[str],
        attempts: Mapping[str, int],
        failures: Mapping[str, int],
    ) -> None:
        """Put a fresh schedule into the state a journal describes (used by resume).

        Tasks not named are left ready or waiting as their dependencies say; attempt and
        failure counts carry over, so numbering continues and limits still hold.
        """
        for task in self.graph.topo:
            self.attempts[task] = attempts.get(task, 0)
            self.failures[task] = failures.get(task, 0)
            if task in landed:
                if self.state[task] is TaskState.WAITING:
                    raise SchedulingError(f"task {task!r} landed before its dependencies")
                self.state[task] = TaskState.READY
                self._ready.discard(self._key(task))
                self.state[task] = TaskState.RUNNING
                self.running[task] = ()
                self.landed(task)
            elif task in failed or task in skipped:
                if self.state[task] is TaskState.READY:
                    self._ready.discard(self._key(task))
                self.state[task] = TaskState.FAILED if task in failed else TaskState.SKIPPED
                self.finished += 1
        gone = (TaskState.FAILED, TaskState.SKIPPED)
        for task in self.graph.topo:
            blocker = next((d for d in self.graph.deps[task] if self.state[d] in gone), None)
            if self.state[task] is TaskState.WAITING and blocker is not None:
                self._skip.append((task, blocker))
            elif self.state[task] is TaskState.READY and self.failures[task] >= self.limit(task):
                self._ready.discard(self._key(task))
                self._give_up.append(task)

    # ------------------------------------------------------------------ reading

    def limit(self, task: str) -> int:
        """Counted failures after which ``task`` is given up."""
        return self.max_attempts.get(task, self.default_max_attempts)

    @property
    def done(self) -> bool:
        """Whether every task has finished (landed, failed or skipped)."""
        return self.finished == len(self.graph.order)

    def ready(self) -> list[str]:
        """Ready tasks in the order they would be considered."""
        return [task for _, _, task in self._ready.keys]

    def counts(self) -> dict[str, int]:
        """Number of tasks per state."""
        out = {state.value: 0 for state in TaskState}
        for state in self.state.values():
            out[state.value] += 1
        return out

    def decide(
        self,
        free: Capacity,
        held: Mapping[str, tuple[str, ...]] | None = None,
        *,
        summary: bool = False,
    ) -> list[Action]:
        """What to do now. Pure: reads the state, changes nothing.

        Args:
            free: free slots overall and per pool.
            held: leases held outside this run (holder name -> patterns); they block too.
            summary: say once per call, not once per task, that the ready tasks owning files
                wait for a task that owns everything (:data:`ALL_FILE_OWNERS`) and that the
                ready tasks owning everything wait for whoever holds anything
                (:data:`ALL_EVERYTHING_OWNERS`): the dry run of a wide plan spent most of its
                time on those waits. The same tasks start either way.
        """
        actions: list[Action] = []
        for task in self._give_up:
            actions.append(GiveUp(task, self.failures[task], self.limit(task)))
        for task, because in self._skip:
            actions.append(Skip(task, because))
        total = free.total
        if total <= 0 or not self._ready.keys:
            return actions
        pools = dict(free.pools)
        holders: list[tuple[str, tuple[str, ...]]] = list((held or {}).items())
        holders.extend(self.running.items())
        everything = next((h for h, lease in holders if EVERYTHING_PATTERN in lease), None)
        if summary and everything is not None:
            return actions + self._decide_beside(everything, total, pools)
        # Where all holders reach, as two sets: most ready tasks are cleared by two set
        # operations, and only holders whose reach meets the task's get an exact check.
        reaches = [reach(tuple(theirs)) for _, theirs in holders]
        anchors: set[str] = set().union(*(r.anchors for r in reaches))
        prefixes: set[str] = set().union(*(r.prefixes for r in reaches))
        order = self.graph.index
        ranks = [(order.get(holder, -1), holder) for holder, _ in holders]  # how waits list them
        everyone: tuple[str, ...] | None = None  # who blocks a '**' lease, once per change
        summed: dict[str, int] = {}  # summary: the holder that owns everything -> tasks it blocks
        wide = 0  # summary: ready tasks owning everything that wait for whoever holds anything
        for _, _, task in self._ready.keys:
            if total <= 0:
                break
            lease = self.leases.get(task, ())
            if lease and everything is not None:
                if summary:
                    summed[everything] = summed.get(everything, 0) + 1
                else:
                    conflict = (lease[0], EVERYTHING_PATTERN)
                    actions.append(Wait(task, "lease", (everything,), conflict))
                continue
            task_pools = self.pools.get(task, ())
            if task_pools:
                full = _full_pool(task_pools, pools)
                if full is not None:
                    actions.append(Wait(task, "capacity", pool=full))
                    continue
            if summary and EVERYTHING_PATTERN in lease and (anchors or prefixes):
                wide += 1  # it owns everything and someone holds something: it waits
                continue
            mine = reach(tuple(lease))
            if not (mine.anchors.isdisjoint(prefixes) and anchors.isdisjoint(mine.prefixes)):
                if EVERYTHING_PATTERN in lease:
                    # '**' overlaps every pattern: whoever holds anything blocks it.
                    if everyone is None:
                        found = [
                            rank for rank, (_, theirs) in zip(ranks, holders, strict=True) if theirs
                        ]
                        everyone = tuple(holder for _, holder in sorted(found))
                    blocking = everyone
                    first = any_overlap(lease, next(theirs for _, theirs in holders if theirs))
                else:
                    found = []
                    first = None
                    for (_, theirs), their_reach, rank in zip(holders, reaches, ranks, strict=True):
                        if not mine.may_overlap(their_reach):
                            continue
                        pair = any_overlap(lease, theirs)
                        if pair is not None:
                            found.append(rank)
                            first = first or pair
                    blocking = tuple(holder for _, holder in sorted(found))
                if blocking:
                    actions.append(Wait(task, "lease", blocking, first))
                    continue
            actions.append(self._spawn(task, task_pools, pools))
            total -= 1
            if lease:
                holders.append((task, lease))
                reaches.append(mine)
                ranks.append((order.get(task, -1), task))
                everyone = None
                anchors |= mine.anchors
                prefixes |= mine.prefixes
                if EVERYTHING_PATTERN in lease:
                    everything = task
        conflict = (EVERYTHING_PATTERN, EVERYTHING_PATTERN)
        for holder, count in summed.items():
            actions.append(Wait(ALL_FILE_OWNERS, "lease", (holder,), conflict, count=count))
        if wide:
            actions.append(Wait(ALL_EVERYTHING_OWNERS, "lease", (), conflict, count=wide))
        return actions

    def _spawn(self, task: str, task_pools: Sequence[str], pools: dict[str, int]) -> Spawn:
        """Start ``task`` in this decision: each of its pools has a slot less."""
        for pool in task_pools:
            if pool in pools:
                pools[pool] -= 1
        retry = self.failures[task] > 0
        return Spawn(task, self.attempts[task] + 1, retry, self.graph.critical[task])

    def _decide_beside(self, everything: str, total: int, pools: dict[str, int]) -> list[Action]:
        """``decide(summary=True)`` while ``everything`` (a task that owns everything) runs:
        only tasks that own no files can start, so they alone are looked at, in order; one
        ``Wait`` stands for the tasks owning files that the full walk would have met first."""
        actions: list[Action] = []
        last: Key | None = None  # the last task looked at
        for key in self._ready.free:
            if total <= 0:
                break
            task, last = key[2], key
            task_pools = self.pools.get(task, ())
            full = _full_pool(task_pools, pools)
            if full is not None:
                actions.append(Wait(task, "capacity", pool=full))
                continue
            actions.append(self._spawn(task, task_pools, pools))
            total -= 1
        # Out of slots: the full walk stopped right after the last task started; else it met
        # every ready task.
        count = self._ready.owners_before(last if total <= 0 else None)
        if count:
            conflict = (EVERYTHING_PATTERN, EVERYTHING_PATTERN)
            actions.append(Wait(ALL_FILE_OWNERS, "lease", (everything,), conflict, count=count))
        return actions


def _full_pool(task_pools: Sequence[str], pools: Mapping[str, int]) -> str | None:
    """The first of ``task_pools`` with no slot left (a pool not in ``pools`` is unlimited)."""
    return next((p for p in task_pools if pools.get(p, 1) <= 0), None)
