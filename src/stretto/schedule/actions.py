"""The scheduler's words (pure): a task's states, the capacity it is given, and the actions
:meth:`~stretto.schedule.scheduler.Schedule.decide` returns."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class TaskState(enum.Enum):
    """Where a task is in its life. Every change is one journaled event."""

    WAITING = "waiting"
    """Some dependency has not landed yet."""
    READY = "ready"
    """Every dependency landed; it starts when a slot and its file lease are free."""
    RUNNING = "running"
    """An attempt is in progress (agent, gates or merge queue); the task holds its lease."""
    LANDED = "landed"
    """Its work was verified and merged into the target."""
    FAILED = "failed"
    """It was given up: attempts exhausted, or an unrecoverable reason."""
    SKIPPED = "skipped"
    """A task it depends on failed or was skipped, so it will not run."""
    SPLIT = "split"
    """It kept failing and was replaced by smaller tasks; its dependents wait for those."""

    @property
    def finished(self) -> bool:
        """Whether the task will not change state again."""
        return self in (TaskState.LANDED, TaskState.FAILED, TaskState.SKIPPED, TaskState.SPLIT)


@dataclass(frozen=True, slots=True)
class SplitChild:
    """A task that replaces part of a split task (see :meth:`Schedule.split`)."""

    id: str
    depends_on: tuple[str, ...]  # siblings it waits for (the parent's dependencies are added)
    lease: tuple[str, ...]
    max_attempts: int
    minutes: float


@dataclass(frozen=True, slots=True)
class Capacity:
    """Free agent slots: overall, and per pool (``agent:claude``, ``provider:anthropic``, …).

    A pool missing from ``pools`` is unlimited.
    """

    total: int
    pools: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start attempt number ``attempt`` of ``task``."""

    task: str
    attempt: int
    retry: bool  # whether an earlier attempt of this task failed
    critical: float  # the task's remaining critical path (minutes), which ordered it


@dataclass(frozen=True, slots=True)
class Wait:
    """``task`` is ready but cannot start now.

    ``reason`` is ``"lease"`` (``holders`` own files overlapping ``conflict``: its pattern and
    theirs) or ``"capacity"`` (``pool`` is full).

    With ``decide(summary=True)``, the ready tasks that own files and wait for a task that owns
    everything are one ``Wait`` whose ``task`` is :data:`ALL_FILE_OWNERS`, and those that own
    everything and wait for whoever holds anything are one whose ``task`` is
    :data:`ALL_EVERYTHING_OWNERS`; ``count`` says how many were looked at.
    """

    task: str
    reason: str
    holders: tuple[str, ...] = ()
    conflict: tuple[str, str] | None = None
    pool: str | None = None
    count: int = 1


#: The ``task`` of a summary :class:`Wait`: every ready task that owns files.
ALL_FILE_OWNERS = "*"
#: The ``task`` of a summary :class:`Wait`: every ready task that owns everything (it waits
#: until no lease is held; ``holders`` is empty: whoever holds anything).
ALL_EVERYTHING_OWNERS = "**"


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Mark ``task`` failed: ``failures`` attempts failed and the limit is ``limit``."""

    task: str
    failures: int
    limit: int


@dataclass(frozen=True, slots=True)
class Skip:
    """Skip ``task`` because ``because`` (a dependency) failed or was skipped."""

    task: str
    because: str


Action = Spawn | Wait | GiveUp | Skip
