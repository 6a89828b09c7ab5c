"""The merge train's decisions: a pure, deterministic state machine (no I/O, no clock).

The train lands verified branches in the order they were verified. It stacks them into **cars**:
a car is one or more branches merged in order on top of the car ahead of it (the first car on
the target's head). The post-merge gates of several cars run at once, one car per **lane**; a
car whose gates passed lands, together with every car ahead of it, as soon as they have all
passed, so the target only ever moves to a commit whose exact tree passed.

What happens when a car fails (:meth:`TrainPolicy.failed`, judged in :meth:`decide`):

* every car behind it is cancelled (its tree contains the failing car's) and its branches go
  back to the front of the queue, in their order. A failing car of one branch is most likely
  that branch's fault, so new cars are built behind it, without it (as a Zuul queue does);
* the car is judged only once every car ahead of it has landed (until then the fault may be
  theirs). A car of several branches is split into up to ``max_lanes`` parts, each on the part
  before it, tested at once; the last part's tree is the failing car's tree, so the executor's
  (tree, gate) cache answers it without a test run. Parts that pass land at once, and the split
  goes on in the part that fails;
* a car of one branch is tested again on the same tree (``flaky_retries`` times) before its
  branch is blamed; a verdict that then passes marks the gate flaky on that tree, the branch
  lands first and the cars built behind it without it are rebuilt;
* a blamed branch goes back to its task (:class:`Reject`), and only that one.

Textual conflicts never cost a test run: the executor merges each branch as its car is built
(``git merge-tree``) and reports a conflict (:meth:`TrainPolicy.conflicted`). A branch that
conflicts with the target itself goes back at once; one that merges on the target but not on the
branches ahead of it is parked until those leave the train (landed or sent back), then tried
again, so a good branch is never sent back for a conflict with one that never lands.

Adaptation: the share of branches sent back for failing gates is tracked (a moving average);
cars hold about ``0.5 / rate`` branches (at most ``max_batch``) and the train is as deep as
the lanes whose speculation is likely to hold (at most ``max_lanes``), so with many failures it
degenerates to one branch per car (a Zuul-like queue) and with none it is a deep train of large
cars. While a car is under way, a free lane waits for a full car rather than start a small one
(branches trickling in would otherwise fill every lane with one-branch cars).

Fairness: branches are taken in verification order and land in that order; only a parked
branch is passed, by at most the branches then in the train (``max_lanes * max_batch``).

The executor (:mod:`stretto.engine.train`, and ``benchmarks/bench_merge.py``) feeds events in
and carries out the actions :meth:`TrainPolicy.decide` returns, in order.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "Build",
    "Cancel",
    "Car",
    "CarState",
    "Land",
    "Reject",
    "TrainPolicy",
    "TrainSettings",
]


class CarState(enum.Enum):
    """Where a car is in its life."""

    NEW = "new"
    """Formed; its merge commits are to be built and its gates run (the next Build)."""
    TESTING = "testing"
    """Its gates are running (or it is waiting for a cached answer)."""
    PASSED = "passed"
    """Its gates passed; it lands once every car ahead has passed too."""
    FAILED = "failed"
    """Its gates failed; judged (retried, split or blamed) once every car ahead has passed,
    since until then the fault may be theirs."""


@dataclass
class Car:
    """One or more branches merged in order on top of the car ahead (or the target)."""

    id: int
    branches: list[str]
    state: CarState = CarState.NEW
    retests: int = 0  # verdicts asked again on the same tree (flaky retries)
    retest: bool = False  # the next Build re-runs the gates that failed, bypassing the cache
    split_of: int | None = None  # the car whose failure this car bisects
    skipped: bool = False  # one branch that failed: the cars behind are built without it

    def to_dict(self) -> dict[str, object]:
        """Plain data for the journal and ``status``."""
        return {
            "car": self.id,
            "branches": list(self.branches),
            "state": self.state.value,
            "retests": self.retests,
            **({"split_of": self.split_of} if self.split_of is not None else {}),
        }


@dataclass(frozen=True, slots=True)
class Build:
    """Merge ``branches`` in order on top of car ``parent`` (None: the target) and run the
    gates of the result; ``retest``: the car's commit exists, ask its failed gates again."""

    car: int
    branches: tuple[str, ...]
    parent: int | None
    retest: bool = False


@dataclass(frozen=True, slots=True)
class Land:
    """Move the target to the commit of the last of ``cars`` (all passed, in order)."""

    cars: tuple[int, ...]
    branches: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop car ``car``'s gates and forget its commit; its branches were put back in line."""

    car: int


@dataclass(frozen=True, slots=True)
class Reject:
    """Send ``branch`` back to its task: ``why`` is ``"gates"`` or ``"conflict"``."""

    branch: str
    why: str
    car: int | None = None


Action = Build | Land | Cancel | Reject


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """``[merge]`` settings the policy uses."""

    max_batch: int = 8
    max_lanes: int = 4
    flaky_retries: int = 1
    adapt: bool = True  # False: always max_batch branches a car and max_lanes cars


@dataclass
class TrainPolicy:
    """The train's state and its decisions; see the module docstring."""

    settings: TrainSettings = field(default_factory=TrainSettings)
    queue: list[str] = field(default_factory=list)  # waiting for a car, in order
    chain: list[Car] = field(default_factory=list)  # cars not landed, first on the target
    parked: dict[str, frozenset[str]] = field(default_factory=dict)  # branch -> waits for these
    order: dict[str, int] = field(default_factory=dict)  # branch -> its place in line
    rate: float = 0.0  # moving average of the share of judged branches sent back
    landed: int = 0
    rejected: int = 0
    next_car: int = 1
    pending: list[Action] = field(default_factory=list)  # actions for the next decide()

    # ------------------------------------------------------------------ inputs

    def add(self, branch: str) -> None:
        """A verified branch joins the line (once; adding it again changes nothing)."""
        if branch in self.order:
            return
        self.order[branch] = len(self.order)
        self.queue.append(branch)

    def passed(self, car_id: int) -> None:
        """Car ``car_id``'s gates passed on its tree."""
        car = self._car(car_id)
        if car is None:
            return
        car.state = CarState.PASSED
        if car.skipped:  # flaky after all: it lands first, so the cars behind are rebuilt on it
            car.skipped = False
            self._cancel_behind(self.chain.index(car))

    def failed(self, car_id: int) -> None:
        """Car ``car_id``'s gates failed: the cars behind it are cancelled at once; the car is
        judged when it reaches the head of the train (:meth:`decide`)."""
        car = self._car(car_id)
        if car is None:
            return
        car.state = CarState.FAILED
        if car.skipped:
            return  # asked again and failed again: the cars behind never held it
        self._cancel_behind(self.chain.index(car))
        # One failing branch is most likely at fault: the train goes on behind it, without
        # it (as a Zuul queue does), while it waits to be judged or is asked again.
        car.skipped = len(car.branches) == 1

    def conflicted(self, car_id: int, branch: str, *, with_target: bool) -> None:
        """Building car ``car_id``, ``branch`` did not merge: on the target itself
        (``with_target``: it goes back) or only on the branches ahead (it is parked)."""
        car = self._car(car_id)
        if car is None or branch not in car.branches:
            return
        index = self.chain.index(car)
        ahead = [b for c in self.chain[:index] for b in c.branches]
        ahead += car.branches[: car.branches.index(branch)]
        car.branches.remove(branch)
        if with_target or not ahead:
            self.pending.append(Reject(branch, "conflict", car.id))
        else:
            self.parked[branch] = frozenset(ahead)
        if not car.branches:
            self.chain.pop(index)

    def reset(self) -> None:
        """The target moved under the train: every car is cancelled and rebuilt."""
        self._cancel_behind(-1)

    def requeue(self, branches: Iterable[str]) -> None:
        """Put branches that were to land back in line, at their place (the landing failed)."""
        for branch in branches:
            if branch not in self.queue:
                self.queue.append(branch)
        self.queue.sort(key=self.order.__getitem__)

    def forget(self, branch: str) -> None:
        """``branch`` left the line for another reason (its task was cancelled)."""
        if branch in self.queue:
            self.queue.remove(branch)
        self.parked.pop(branch, None)
        for index, car in enumerate(self.chain):
            if branch in car.branches:
                self._cancel_behind(index - 1)  # its car and those behind: rebuilt without it
                self.queue.remove(branch)
                return

    # ------------------------------------------------------------------ decisions

    def decide(self) -> list[Action]:
        """What to do now, in order: rejections and cancels, landings, then new builds."""
        actions = self._land()
        if self.chain and self.chain[0].state is CarState.FAILED:
            self._judge_head()
        actions, self.pending = self.pending + actions, []
        self._release_parked()
        if not any(c.state is CarState.FAILED and not c.skipped for c in self.chain):
            self._form_cars()
        for car in self.chain:
            if car.state is CarState.NEW:
                actions.append(Build(car.id, tuple(car.branches), self.parent(car.id), car.retest))
                car.state = CarState.TESTING
                car.retest = False
        return actions

    def parent(self, car_id: int) -> int | None:
        """The car ``car_id`` is built on (None: the target's head)."""
        ahead: int | None = None
        for car in self.chain:
            if car.id == car_id:
                return ahead
            if not car.skipped:
                ahead = car.id
        return None

    def has_car(self, car_id: int) -> bool:
        """Whether car ``car_id`` is still in the train."""
        return self._car(car_id) is not None

    def batch_size(self) -> int:
        """Branches a new car takes: about 0.5 / failure rate, within 1..max_batch."""
        top = self.settings.max_batch
        if not self.settings.adapt or self.rate <= 0.5 / top:
            return top
        return max(1, min(top, math.floor(0.5 / self.rate)))

    def lanes(self) -> int:
        """Cars tested at once: the depth at which the train's speculation likely holds."""
        top = self.settings.max_lanes
        if not self.settings.adapt or self.rate <= 0:
            return top
        hold = (1 - self.rate) ** self.batch_size()  # chance that one car passes
        if hold >= 0.999:
            return top
        depth = 1 + math.floor(math.log(0.25) / math.log(hold)) if hold > 0 else 1
        return max(1, min(top, depth))

    def waiting(self, branch: str) -> str:
        """Why ``branch`` has not landed yet (for ``explain`` and ``status``)."""
        if branch in self.parked:
            ahead = ", ".join(sorted(self.parked[branch]))
            return (
                f"parked: it conflicts with branches ahead of it ({ahead}); "
                "tried again once they leave the train"
            )
        for index, car in enumerate(self.chain):
            if branch in car.branches:
                what = {
                    CarState.NEW: "being built",
                    CarState.TESTING: "gates running",
                    CarState.PASSED: "passed; waits for the cars ahead",
                    CarState.FAILED: "failed; judged once the cars ahead pass",
                }[car.state]
                ahead = f", {index} car(s) ahead" if index else ", first in the train"
                return f"car {car.id} ({what}{ahead})"
        if branch in self.queue:
            place = self.queue.index(branch)
            return f"in line: {place} branch(es) before it wait for a car"
        return "not in the train"

    def snapshot(self) -> dict[str, object]:
        """The train as plain data (journal ``train`` events, ``status``, ``explain``)."""
        return {
            "cars": [car.to_dict() for car in self.chain],
            "queue": list(self.queue),
            "parked": {b: sorted(w) for b, w in self.parked.items()},
            "batch": self.batch_size(),
            "lanes": self.lanes(),
            "failure_rate": round(self.rate, 4),
        }

    @property
    def idle(self) -> bool:
        """Nothing in line, parked or in a car."""
        return not (self.queue or self.chain or self.parked or self.pending)

    # ------------------------------------------------------------------ internals

    def _car(self, car_id: int) -> Car | None:
        return next((c for c in self.chain if c.id == car_id), None)

    def _new_id(self) -> int:
        self.next_car += 1
        return self.next_car - 1

    def _judge_head(self) -> None:
        """The first car failed with every car ahead landed: the fault is in it. One branch:
        ask again (flaky) or blame it; several: split it in parts tested at once."""
        car = self.chain[0]
        if len(car.branches) == 1:
            if car.retests < self.settings.flaky_retries:
                car.retests += 1
                car.retest = True
                car.state = CarState.NEW
                return
            self.chain.pop(0)
            self._judged(1.0)
            self.rejected += 1
            self.pending.append(Reject(car.branches[0], "gates", car.id))
            return
        count = min(len(car.branches), max(2, self.settings.max_lanes))
        size = math.ceil(len(car.branches) / count)
        parts = [car.branches[i : i + size] for i in range(0, len(car.branches), size)]
        self.chain[0:1] = [Car(self._new_id(), part, split_of=car.id) for part in parts]
        self.pending.append(Cancel(car.id))

    def _in_lanes(self) -> int:
        """Cars that hold a lane: all but the failed ones the train goes on without."""
        return sum(not (c.skipped and c.state is CarState.FAILED) for c in self.chain)

    def _judged(self, sent_back: float) -> None:
        self.rate += 0.15 * (sent_back - self.rate)

    def _cancel_behind(self, index: int) -> None:
        """Cancel every car after ``index`` (-1: all) and put their branches back in line."""
        behind = self.chain[index + 1 :]
        del self.chain[index + 1 :]
        for car in behind:
            self.pending.append(Cancel(car.id))
            self.queue.extend(car.branches)
        self.queue.sort(key=self.order.__getitem__)

    def _land(self) -> list[Action]:
        prefix: list[Car] = []
        for car in self.chain:
            if car.state is not CarState.PASSED:
                break
            prefix.append(car)
        if not prefix:
            return []
        del self.chain[: len(prefix)]
        branches = tuple(b for car in prefix for b in car.branches)
        for _ in branches:
            self._judged(0.0)
        self.landed += len(branches)
        return [Land(tuple(car.id for car in prefix), branches)]

    def _release_parked(self) -> None:
        in_train = {b for car in self.chain for b in car.branches}
        for branch, ahead in list(self.parked.items()):
            if not ahead <= in_train:  # one of them left the train: try again
                del self.parked[branch]
                self.queue.append(branch)
        self.queue.sort(key=self.order.__getitem__)

    def _form_cars(self) -> None:
        while self.queue and self._in_lanes() < self.lanes():
            size = self.batch_size()
            if self.chain and len(self.queue) < size:
                break  # a car is under way: a free lane waits for a full car, not a small one
            taken, self.queue = self.queue[:size], self.queue[size:]
            self.chain.append(Car(self._new_id(), taken))
