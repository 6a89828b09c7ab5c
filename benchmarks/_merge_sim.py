"""The synthetic repository, the clocks and the four merge strategies of bench_merge.py.

Serial, bors-like and Zuul-like are written here as plain baselines; the train runs the engine's
own :class:`stretto.engine.train_policy.TrainPolicy` behind the same small executor the engine
has (merge, (tree, gate) cache, flaky retest). See ``bench_merge.py`` for what is measured.
"""

from __future__ import annotations

import heapq
import random
import time
import zlib
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass

from stretto.engine.train_policy import (
    Build,
    Cancel,
    Land,
    Reject,
    TrainPolicy,
    TrainSettings,
)

Tree = frozenset[str]


# ---------------------------------------------------------------------- the scenario


@dataclass(frozen=True)
class Branch:
    id: str
    label: str  # good | textual | pair | semantic | bad
    partner: str | None = None  # the earlier branch a pair / semantic branch clashes with
    arrives: float = 0.0


def scenario(n: int, p: float, seed: int, interval: float) -> list[Branch]:
    """``n`` branches; a share ``p`` is faulty (bad, semantic, textual, pair in 2:1:1:1)."""
    rng = random.Random(seed)
    out: list[Branch] = []
    for i in range(n):
        name = f"b{i:04d}"
        label, partner = "good", None
        if rng.random() < p:
            label = rng.choice(["bad", "bad", "semantic", "textual", "pair"])
            if label in ("semantic", "pair"):
                earlier = [b.id for b in out[-12:] if b.label == "good"]
                if earlier:
                    partner = rng.choice(earlier)
                else:
                    label = "bad"
        out.append(Branch(name, label, partner, i * interval))
    return out


class Repo:
    """The synthetic repository: which trees conflict, and what the gate says of a tree."""

    def __init__(self, branches: list[Branch], f: float, seed: int) -> None:
        self.by_id = {b.id: b for b in branches}
        self.f = f
        self.seed = seed
        self.runs: dict[Tree, int] = {}

    def conflicts(self, tree: Tree, branch: str) -> bool:
        b = self.by_id[branch]
        return b.label == "textual" or (b.label == "pair" and b.partner in tree)

    def broken(self, tree: Tree) -> bool:
        """Whether the tree's tests really fail (not a flake)."""
        for name in tree:
            b = self.by_id[name]
            if b.label == "bad" or (b.label == "semantic" and b.partner in tree):
                return True
        return False

    def verdict(self, tree: Tree) -> bool:
        """One gate run's verdict on ``tree`` (passed?), flakes included."""
        n = self.runs.get(tree, 0)
        self.runs[tree] = n + 1
        if self.broken(tree):
            return False
        key = f"{self.seed}:{','.join(sorted(tree))}:{n}".encode()
        return (zlib.crc32(key) % 1_000_000) / 1_000_000 >= self.f

    def faulty(self, branch: str) -> bool:
        return self.by_id[branch].label != "good"


# ---------------------------------------------------------------------- clocks


def burn(seconds: float, passed: bool) -> tuple[bool, float]:
    """A gate that costs real CPU: spin until ``seconds`` of this process's CPU time."""
    start = time.process_time()
    x = 0
    while time.process_time() - start < seconds:
        for i in range(2000):
            x = (x * 31 + i) % 1_000_003
    return passed, time.process_time() - start


class Env:
    """The clock, the gate runner and the tally one strategy runs against."""

    def __init__(self, repo: Repo, gate_s: float, *, real: bool, lanes: int) -> None:
        self.repo = repo
        self.gate_s = gate_s
        self.real = real
        self.t0 = time.monotonic()
        self.sim_now = 0.0
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = 0
        self.pool = ProcessPoolExecutor(lanes) if real else None
        self.futures: dict[Future[tuple[bool, float]], tuple[int, Callable[[bool], None]]] = {}
        self.running: dict[int, tuple[float, Future[tuple[bool, float]] | None]] = {}
        self.cancelled: set[int] = set()
        self.cpu = 0.0
        self.target: Tree = frozenset()
        self.passed_trees: set[Tree] = set()
        self.arrived: dict[str, float] = {}
        self.landed: dict[str, float] = {}
        self.sent_back: dict[str, str] = {}
        self.red_since: float | None = None
        self.red = 0.0
        self.untested = 0
        self.max_running = 0

    @property
    def now(self) -> float:
        return time.monotonic() - self.t0 if self.real else self.sim_now

    def at(self, when: float, job: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, self.seq, job))

    def gate(self, tree: Tree, done: Callable[[bool], None]) -> int:
        """Start a gate run on ``tree``; ``done(passed)`` is called when it ends."""
        self.seq += 1
        handle = self.seq
        passed = self.repo.verdict(tree)
        if self.pool is not None:
            future = self.pool.submit(burn, self.gate_s, passed)
            self.futures[future] = (handle, lambda ok: self._ended(handle, tree, ok, done))
            self.running[handle] = (self.now, future)
        else:
            self.running[handle] = (self.now, None)
            self.at(self.now + self.gate_s, lambda: self._ended(handle, tree, passed, done))
        self.max_running = max(self.max_running, len(self.running))
        return handle

    def _ended(self, handle: int, tree: Tree, passed: bool, done: Callable[[bool], None]) -> None:
        if handle not in self.running:
            return  # cancelled
        start, _ = self.running.pop(handle)
        if not self.real:
            self.cpu += self.now - start
        if passed:
            self.passed_trees.add(tree)
        done(passed)

    def cancel(self, handle: int) -> None:
        if handle in self.running:
            start, future = self.running.pop(handle)
            if future is None:
                self.cpu += self.now - start
            # a real gate already running finishes (its CPU is counted), its verdict unused

    def land(self, tree: Tree, branches: list[str]) -> None:
        if tree not in self.passed_trees:
            self.untested += 1
        self.target = tree
        for b in branches:
            self.landed[b] = self.now
        if self.repo.broken(tree) and self.red_since is None:
            self.red_since = self.now

    def send_back(self, branch: str, why: str) -> None:
        self.sent_back[branch] = why

    def run(self, strategy: Strategy, branches: list[Branch]) -> None:
        for b in branches:
            self.at(b.arrives, lambda b=b: self._arrive(strategy, b))
        while self.events or self.futures:
            if self.real:
                self._step_real()
            else:
                when, _, job = heapq.heappop(self.events)
                self.sim_now = when
                job()
            strategy.pump()
        if self.red_since is not None:
            self.red += self.now - self.red_since
        if self.pool is not None:
            self.pool.shutdown()

    def _arrive(self, strategy: Strategy, b: Branch) -> None:
        self.arrived[b.id] = self.now
        strategy.add(b.id)

    def _step_real(self) -> None:
        due = self.events[0][0] - self.now if self.events else None
        if self.futures:
            done, _ = wait(list(self.futures), timeout=due, return_when=FIRST_COMPLETED)
            for future in done:
                _, callback = self.futures.pop(future)
                passed, cpu = future.result()
                self.cpu += cpu
                callback(passed)
            if done:
                return
        elif due is not None and due > 0:
            time.sleep(due)
        if self.events and self.events[0][0] <= self.now:
            _, _, job = heapq.heappop(self.events)
            job()


class Strategy:
    def __init__(self, env: Env, lanes: int) -> None:
        self.env = env
        self.repo = env.repo
        self.lanes = lanes

    def add(self, branch: str) -> None:
        raise NotImplementedError

    def pump(self) -> None:
        """Start whatever can start now."""

    def merge(self, base: Tree, branch: str) -> Tree | None:
        return None if self.repo.conflicts(base, branch) else base | {branch}


# ---------------------------------------------------------------------- serial and bors


class Serial(Strategy):
    def __init__(self, env: Env, lanes: int) -> None:
        super().__init__(env, lanes)
        self.line: list[str] = []
        self.busy = False

    def add(self, branch: str) -> None:
        self.line.append(branch)

    def pump(self) -> None:
        while self.line and not self.busy:
            branch = self.line.pop(0)
            tree = self.merge(self.env.target, branch)
            if tree is None:
                self.env.send_back(branch, "conflict")
                continue
            self.busy = True
            self.env.gate(tree, lambda ok, b=branch, t=tree: self._done(b, t, ok))

    def _done(self, branch: str, tree: Tree, ok: bool) -> None:
        self.busy = False
        if ok:
            self.env.land(tree, [branch])
        else:
            self.env.send_back(branch, "gates")


class Bors(Strategy):
    """Batches of everything queued; a failing batch is bisected, one half at a time."""

    MAX = 16

    def __init__(self, env: Env, lanes: int) -> None:
        super().__init__(env, lanes)
        self.line: list[str] = []
        self.stack: list[list[str]] = []  # halves still to test, next first
        self.busy = False

    def add(self, branch: str) -> None:
        self.line.append(branch)

    def pump(self) -> None:
        while not self.busy and (self.stack or self.line):
            if self.stack:
                batch = self.stack.pop(0)
            else:
                batch, self.line = self.line[: self.MAX], self.line[self.MAX :]
            tree, kept = self.env.target, []
            for branch in batch:
                merged = self.merge(tree, branch)
                if merged is None:
                    if self.repo.conflicts(self.env.target, branch):
                        self.env.send_back(branch, "conflict")
                    else:
                        self.line.insert(0, branch)  # conflicts within the batch: later
                    continue
                tree, kept = merged, [*kept, branch]
            if not kept:
                continue
            self.busy = True
            self.env.gate(tree, lambda ok, k=kept, t=tree: self._done(k, t, ok))

    def _done(self, batch: list[str], tree: Tree, ok: bool) -> None:
        self.busy = False
        if ok:
            self.env.land(tree, batch)
        elif len(batch) == 1:
            self.env.send_back(batch[0], "gates")
        else:
            half = len(batch) // 2
            self.stack[:0] = [batch[:half], batch[half:]]


# ---------------------------------------------------------------------- Zuul-like


@dataclass
class Item:
    branch: str
    tree: Tree | None = None
    handle: int | None = None
    state: str = "wait"  # wait | testing | passed | failed


class Zuul(Strategy):
    """Speculative: each item tested on the items ahead; window +1 / halved, cap = lanes."""

    def __init__(self, env: Env, lanes: int) -> None:
        super().__init__(env, lanes)
        self.items: list[Item] = []
        self.window = 2

    def add(self, branch: str) -> None:
        self.items.append(Item(branch))

    def _base(self, index: int) -> Tree:
        tree = self.env.target
        for item in self.items[:index]:
            if item.state != "failed" and item.tree is not None:
                tree = item.tree
        return tree

    def pump(self) -> None:
        changed = True
        while changed:
            changed = False
            while self.items and self.items[0].state in ("passed", "failed"):
                head = self.items.pop(0)
                if head.state == "passed" and head.tree is not None:
                    self.env.land(head.tree, [head.branch])
                    self.window = min(self.lanes, self.window + 1)
                else:
                    self.env.send_back(head.branch, "gates")
                    self.window = max(1, self.window // 2)
                changed = True
            active = 0
            for index, item in enumerate(self.items):
                if item.state == "failed":
                    continue
                if active >= self.window:
                    break
                active += 1
                if item.state != "wait":
                    continue
                base = self._base(index)
                tree = self.merge(base, item.branch)
                if tree is None:
                    if self.repo.conflicts(self.env.target, item.branch):
                        self.items.remove(item)
                        self.env.send_back(item.branch, "conflict")
                        changed = True
                        break
                    continue  # conflicts with an item ahead: waits for it
                item.tree, item.state = tree, "testing"
                item.handle = self.env.gate(tree, lambda ok, it=item: self._done(it, ok))

    def _done(self, item: Item, ok: bool) -> None:
        if ok:
            item.state = "passed"
            return
        item.state = "failed"
        index = self.items.index(item)
        for other in self.items[index + 1 :]:  # restart the followers without it
            if other.handle is not None:
                self.env.cancel(other.handle)
            other.tree, other.handle = None, None
            if other.state != "failed":
                other.state = "wait"


# ---------------------------------------------------------------------- the train


class Train(Strategy):
    """The engine's TrainPolicy, executed against the synthetic repository, with the
    (tree, gate) result cache and flaky detection of :mod:`stretto.engine.train`."""

    def __init__(self, env: Env, lanes: int, max_batch: int = 8) -> None:
        super().__init__(env, lanes)
        self.policy = TrainPolicy(TrainSettings(max_batch=max_batch, max_lanes=lanes))
        self.trees: dict[int, Tree] = {}
        self.handles: dict[int, int] = {}
        self.cache: dict[Tree, bool] = {}
        self.flaky = 0
        self.busy = False

    def add(self, branch: str) -> None:
        self.policy.add(branch)

    def pump(self) -> None:
        if self.busy:
            return
        self.busy = True
        try:
            while True:
                actions = self.policy.decide()
                if not actions:
                    return
                for action in actions:
                    self._do(action)
        finally:
            self.busy = False

    def _do(self, action: object) -> None:
        if isinstance(action, Reject):
            self.env.send_back(action.branch, action.why)
        elif isinstance(action, Cancel):
            handle = self.handles.pop(action.car, None)
            if handle is not None:
                self.env.cancel(handle)
            self.trees.pop(action.car, None)
        elif isinstance(action, Land):
            tree = self.trees[action.cars[-1]]
            self.env.land(tree, list(action.branches))
            for car in action.cars:
                self.trees.pop(car, None)
        elif isinstance(action, Build):
            self._build(action)

    def _build(self, action: Build) -> None:
        car = action.car
        if not self.policy.has_car(car):
            return  # dropped since (a cached failure ahead of it cancelled it)
        if not action.retest:
            parent = self.policy.parent(car)
            base = self.env.target if parent is None else self.trees[parent]
            tree = base
            for branch in action.branches:
                merged = self.merge(tree, branch)
                if merged is None:
                    self.policy.conflicted(
                        car, branch, with_target=self.repo.conflicts(self.env.target, branch)
                    )
                    continue
                tree = merged
            if tree == base:
                return  # every branch conflicted: the car is gone
            self.trees[car] = tree
            if tree in self.cache:  # the same tree is never tested twice
                if self.cache[tree]:
                    self.policy.passed(car)
                else:
                    self.policy.failed(car)
                return
        tree = self.trees[car]
        self.handles[car] = self.env.gate(tree, lambda ok: self._done(car, tree, ok, action.retest))

    def _done(self, car: int, tree: Tree, ok: bool, retest: bool) -> None:
        self.handles.pop(car, None)
        if retest and ok:
            self.flaky += 1  # failed, then passed on the same tree
        self.cache[tree] = ok
        if ok:
            self.policy.passed(car)
        else:
            self.policy.failed(car)


STRATEGIES: dict[str, Callable[[Env, int], Strategy]] = {
    "serial": Serial,
    "bors": Bors,
    "zuul": Zuul,
    "train": Train,
}
