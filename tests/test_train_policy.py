"""The merge train's pure decision core (stretto.engine.train_policy), with plain values.

A small executor below plays the part of git and the gates: a tree is the set of branches merged
on the target, ``bad`` branches fail every tree that holds them, ``pairs`` fail together, and a
list of flakes says which (tree, run) verdicts are wrong. Hypothesis drives random scenarios and
checks the train's promises: nothing lost, nothing landed twice, only passed trees landed, no bad
branch landed, good branches land in the order they were verified, and the same inputs give
the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from stretto.engine.train_policy import (
    Build,
    Cancel,
    Land,
    Reject,
    TrainPolicy,
    TrainSettings,
)

Tree = frozenset[str]


@dataclass
class World:
    bad: set[str] = field(default_factory=set)
    pairs: set[tuple[str, str]] = field(default_factory=set)  # semantic: fail together
    conflicts: set[str] = field(default_factory=set)  # conflict with the target
    flakes: set[tuple[Tree, int]] = field(default_factory=set)  # (tree, run) that fail anyway
    runs: dict[Tree, int] = field(default_factory=dict)

    def verdict(self, tree: Tree) -> bool:
        n = self.runs.get(tree, 0)
        self.runs[tree] = n + 1
        if tree & self.bad or any(a in tree and b in tree for a, b in self.pairs):
            return False
        return (tree, n) not in self.flakes


@dataclass
class Executor:
    """Runs a policy to the end, one gate at a time in car order (deterministic)."""

    world: World
    policy: TrainPolicy
    target: Tree = frozenset()
    trees: dict[int, Tree] = field(default_factory=dict)
    cache: dict[Tree, bool] = field(default_factory=dict)
    running: list[int] = field(default_factory=list)
    landed: list[str] = field(default_factory=list)
    sent_back: dict[str, str] = field(default_factory=dict)
    passed_trees: set[Tree] = field(default_factory=set)
    log: list[object] = field(default_factory=list)
    gate_runs: int = 0

    def pump(self) -> None:
        while actions := self.policy.decide():
            for action in actions:
                self.log.append(action)
                self.do(action)

    def do(self, action: object) -> None:
        if isinstance(action, Reject):
            assert action.branch not in self.sent_back and action.branch not in self.landed
            self.sent_back[action.branch] = action.why
        elif isinstance(action, Cancel):
            self.trees.pop(action.car, None)
            if action.car in self.running:
                self.running.remove(action.car)
        elif isinstance(action, Land):
            tree = self.trees[action.cars[-1]]
            assert tree in self.passed_trees, "landed a tree that never passed"
            assert self.target <= tree
            self.target = tree
            self.landed += action.branches
        elif isinstance(action, Build):
            car = action.car
            if not self.policy.has_car(car):
                return
            if not action.retest:
                parent = self.policy.parent(car)
                tree = self.target if parent is None else self.trees[parent]
                for branch in action.branches:
                    if branch in self.world.conflicts:
                        self.policy.conflicted(car, branch, with_target=True)
                    else:
                        tree = tree | {branch}
                if not self.policy.has_car(car):
                    return
                self.trees[car] = tree
                if tree in self.cache:
                    (self.policy.passed if self.cache[tree] else self.policy.failed)(car)
                    return
            self.running.append(car)

    def finish_one(self) -> None:
        car = self.running.pop(0)
        tree = self.trees[car]
        ok = self.world.verdict(tree)
        self.gate_runs += 1
        self.cache[tree] = ok
        if ok:
            self.passed_trees.add(tree)
            self.policy.passed(car)
        else:
            self.policy.failed(car)

    def run(self, branches: list[str]) -> None:
        for branch in branches:
            self.policy.add(branch)
        self.pump()
        for _ in range(10_000):
            if not self.running:
                break
            self.finish_one()
            self.pump()
        assert not self.running and self.policy.idle, self.policy.snapshot()


def run(world: World, n: int, **settings_: int) -> Executor:
    ex = Executor(world, TrainPolicy(TrainSettings(**settings_)))
    ex.run([f"b{i:02d}" for i in range(n)])
    return ex


def test_all_good_land_in_order_in_few_runs() -> None:
    ex = run(World(), 16, max_batch=8, max_lanes=2)
    assert ex.landed == [f"b{i:02d}" for i in range(16)]
    assert ex.gate_runs == 2  # two cars of eight


def test_one_bad_branch_is_found_and_only_it_goes_back() -> None:
    ex = run(World(bad={"b05"}), 8, max_batch=8, max_lanes=4)
    assert ex.sent_back == {"b05": "gates"}
    assert ex.landed == [f"b{i:02d}" for i in range(8) if i != 5]


def test_semantic_pair_sends_back_the_later_branch() -> None:
    ex = run(World(pairs={("b01", "b06")}), 8, max_batch=8, max_lanes=4)
    assert ex.sent_back == {"b06": "gates"}
    assert "b01" in ex.landed


def test_textual_conflict_goes_back_without_a_test_run() -> None:
    ex = run(World(conflicts={"b02"}), 4, max_batch=4, max_lanes=1)
    assert ex.sent_back == {"b02": "conflict"}
    assert ex.gate_runs == 1


def test_flaky_single_branch_is_retried_once_then_lands() -> None:
    tree = frozenset({"b00"})
    ex = run(World(flakes={(tree, 0)}), 1, max_batch=1, max_lanes=1)
    assert ex.landed == ["b00"] and ex.gate_runs == 2


def test_without_retries_a_flake_sends_a_good_branch_back() -> None:
    tree = frozenset({"b00"})
    ex = run(World(flakes={(tree, 0)}), 1, max_batch=1, max_lanes=1, flaky_retries=0)
    assert ex.sent_back == {"b00": "gates"}


def test_parked_branch_is_tried_again_when_those_ahead_leave() -> None:
    policy = TrainPolicy(TrainSettings(max_batch=2, max_lanes=1))
    for name in ("a", "b"):
        policy.add(name)
    [build] = policy.decide()
    assert isinstance(build, Build) and build.branches == ("a", "b")
    policy.conflicted(build.car, "b", with_target=False)  # conflicts with a only
    assert "parked" in policy.waiting("b")
    policy.passed(build.car)
    actions = policy.decide()
    assert isinstance(actions[0], Land) and actions[0].branches == ("a",)
    assert isinstance(actions[1], Build) and actions[1].branches == ("b",)


def test_batches_shrink_as_failures_rise() -> None:
    policy = TrainPolicy(TrainSettings(max_batch=8, max_lanes=4))
    assert policy.batch_size() == 8 and policy.lanes() == 4
    policy.rate = 0.25
    assert policy.batch_size() == 2 and 1 <= policy.lanes() < 4
    policy.rate = 0.6
    assert policy.batch_size() == 1


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[World, int, dict[str, int]]:
    n = draw(st.integers(1, 24))
    names = [f"b{i:02d}" for i in range(n)]
    bad = set(draw(st.lists(st.sampled_from(names), max_size=4)))
    conflicts = set(draw(st.lists(st.sampled_from(names), max_size=2))) - bad
    pairs = set()
    for a, b in draw(
        st.lists(st.tuples(st.sampled_from(names), st.sampled_from(names)), max_size=2)
    ):
        if a < b:
            pairs.add((a, b))
    knobs = {
        "max_batch": draw(st.integers(1, 8)),
        "max_lanes": draw(st.integers(1, 4)),
        "flaky_retries": draw(st.integers(0, 2)),
    }
    return World(bad=bad, conflicts=conflicts, pairs=pairs), n, knobs


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_promises_hold_in_random_scenarios(case: tuple[World, int, dict[str, int]]) -> None:
    world, n, knobs = case
    ex = run(world, n, **knobs)
    names = [f"b{i:02d}" for i in range(n)]
    assert sorted(ex.landed + list(ex.sent_back)) == names  # nothing lost, nothing twice
    assert not set(ex.landed) & world.bad
    assert not any(a in ex.landed and b in ex.landed for a, b in world.pairs)
    assert ex.landed == sorted(ex.landed)  # landing order is verification order
    for branch, why in ex.sent_back.items():  # only faulty branches go back
        faulty = (
            branch in world.bad
            or branch in world.conflicts
            or any(branch == b and a in ex.landed for a, b in world.pairs)
        )
        assert faulty, (branch, why)
    again = run(World(world.bad, world.pairs, world.conflicts), n, **knobs)
    assert again.log == ex.log  # same inputs, same decisions


def test_a_branch_that_leaves_mid_train_is_rebuilt_around() -> None:
    policy = TrainPolicy(TrainSettings(max_batch=2, max_lanes=2))
    for name in ("a", "b", "c", "d"):
        policy.add(name)
    builds = [a for a in policy.decide() if isinstance(a, Build)]
    assert [b.branches for b in builds] == [("a", "b"), ("c", "d")]
    policy.forget("b")  # its task was cancelled
    actions = policy.decide()
    assert {a.car for a in actions if isinstance(a, Cancel)} == {builds[0].car, builds[1].car}
    rebuilt = [a.branches for a in actions if isinstance(a, Build)]
    assert rebuilt == [("a", "c")]  # d waits for a full car (or an empty train)
    assert policy.queue == ["d"]


def test_a_free_lane_waits_for_a_full_car_while_one_is_under_way() -> None:
    policy = TrainPolicy(TrainSettings(max_batch=4, max_lanes=4))
    policy.add("a")
    [first] = policy.decide()
    assert isinstance(first, Build) and first.branches == ("a",)  # an empty train starts now
    for name in ("b", "c", "d"):
        policy.add(name)
    assert policy.decide() == []  # three queued: not a full car yet
    policy.add("e")
    [second] = policy.decide()
    assert isinstance(second, Build) and second.branches == ("b", "c", "d", "e")
    assert second.parent == first.car
