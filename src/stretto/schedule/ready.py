"""The ready tasks in the order the scheduler considers them (pure).

:class:`ReadyOrder` keeps the keys (longest remaining critical path first, then plan order,
then id) of the tasks that could start, sorted, and apart the keys of those among them that own
no files: while a task that owns everything runs, only those can start, and
:meth:`~stretto.schedule.scheduler.Schedule.decide` looks at them alone instead of walking every
ready task (on a wide plan, thousands at every decision).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

#: A ready task's place in the order: (minus its remaining critical path, plan index, id).
Key = tuple[float, int, str]


class ReadyOrder:
    """Sorted keys of the ready tasks, and of those that own no files."""

    __slots__ = ("free", "keys")

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.free: list[Key] = []  # the keys of the tasks that own no files

    def reset(self, keys: Iterable[Key], owns_files: Callable[[str], bool]) -> None:
        """Hold exactly ``keys``."""
        self.keys = sorted(keys)
        self.free = [key for key in self.keys if not owns_files(key[2])]

    def add(self, key: Key, owns_files: bool) -> None:
        bisect.insort(self.keys, key)
        if not owns_files:
            bisect.insort(self.free, key)

    def discard(self, key: Key) -> bool:
        """Take ``key`` out; whether it was there."""
        keys = self.keys
        index = bisect.bisect_left(keys, key)
        if index == len(keys) or keys[index] != key:
            return False
        del keys[index]
        free = self.free
        index = bisect.bisect_left(free, key)
        if index < len(free) and free[index] == key:
            del free[index]
        return True

    def owners_before(self, key: Key | None) -> int:
        """How many ready tasks that own files come before ``key`` (None: all of them)."""
        if key is None:
            return len(self.keys) - len(self.free)
        return bisect.bisect_left(self.keys, key) - bisect.bisect_left(self.free, key)
