"""The scheduler: property tests over random DAGs, and the rules one by one."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stretto.plans import paths
from stretto.plans.graph import TaskGraph
from stretto.plans.paths import EVERYTHING_PATTERN
from stretto.plans.plan import parse_plan
from stretto.schedule.scheduler import (
    Capacity,
    GiveUp,
    Schedule,
    SchedulingError,
    Skip,
    Spawn,
    SplitChild,
    TaskState,
    Wait,
)
from stretto.schedule.simulate import simulate

# Patterns and a universe of concrete files: two leases conflict exactly when some file of the
# universe is owned by both (checked with paths.owns, independently of paths.overlaps).
PATTERNS = ["src/a.py", "src/b.py", "src/*.py", "docs/**", "docs/x.md", "**/*.md", "tests", "**"]
UNIVERSE = [
    "src/a.py",
    "src/b.py",
    "src/c.py",
    "docs/x.md",
    "docs/y/z.md",
    "README.md",
    "tests/t.py",
]


def conflict(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return any(paths.owns(p, f) and paths.owns(q, f) for p in a for q in b for f in UNIVERSE)


@dataclass
class Case:
    graph: TaskGraph
    leases: dict[str, tuple[str, ...]]
    pools: dict[str, tuple[str, ...]]
    pool_limits: dict[str, int]
    max_agents: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(1, 25))
    ids = [f"t{i}" for i in range(n)]
    deps = {
        task: sorted(set(draw(st.lists(st.sampled_from(ids[:i]), max_size=3)))) if i else []
        for i, task in enumerate(ids)
    }
    duration = {task: float(draw(st.integers(1, 9))) for task in ids}
    leases = {
        task: tuple(draw(st.lists(st.sampled_from(PATTERNS), max_size=2, unique=True)))
        for task in ids
    }
    pools = {task: (f"agent:{draw(st.sampled_from(['a', 'b']))}",) for task in ids}
    limits = {"agent:a": draw(st.integers(1, 3))}
    return Case(
        TaskGraph.build(ids, deps, duration), leases, pools, limits, draw(st.integers(1, 5))
    )


def drive(case: Case, data: st.DataObject, fail_rate: float) -> Schedule:
    """Run the schedule to the end with hypothesis choosing completion order and outcomes."""
    sched = Schedule(case.graph, case.leases, pools=case.pools, max_attempts={})
    replay = Schedule(case.graph, case.leases, pools=case.pools, max_attempts={})
    log: list[tuple[str, str]] = []
    running: list[str] = []
    applied = 0
    for _ in range(10_000):
        in_pool = {p: sum(1 for t in running if p in case.pools[t]) for p in case.pool_limits}
        free = Capacity(
            case.max_agents - len(running),
            {p: case.pool_limits[p] - in_pool[p] for p in case.pool_limits},
        )
        actions = sched.decide(free)
        # Determinism: same state, same answer; an independent replay agrees too.
        assert sched.decide(free) == actions
        assert replay.decide(free) == actions
        for action in actions:
            if isinstance(action, Spawn):
                task = action.task
                assert all(sched.state[d] is TaskState.LANDED for d in case.graph.deps[task])
                for other in running:
                    assert not conflict(case.leases[task], case.leases[other]), (task, other)
                sched.started(task)
                log.append(("started", task))
                running.append(task)
            elif isinstance(action, GiveUp):
                sched.gave_up(action.task)
                log.append(("gave_up", action.task))
            elif isinstance(action, Skip):
                assert sched.state[action.because] in (TaskState.FAILED, TaskState.SKIPPED)
                sched.skipped(action.task)
                log.append(("skipped", action.task))
            else:
                assert isinstance(action, Wait)
        assert len(running) <= case.max_agents
        for pool, limit in case.pool_limits.items():
            assert sum(1 for t in running if pool in case.pools[t]) <= limit
        if sched.done:
            break
        if not running:
            assert any(isinstance(a, (GiveUp, Skip)) for a in actions), "stalled"
        else:
            task = running.pop(data.draw(st.integers(0, len(running) - 1)))
            if fail_rate and data.draw(st.floats(0, 1)) < fail_rate:
                sched.attempt_failed(task)
                log.append(("attempt_failed", task))
            else:
                sched.landed(task)
                log.append(("landed", task))
        # Keep the replay in step by folding in the same events.
        while applied < len(log):
            event, task = log[applied]
            getattr(replay, event)(task)
            applied += 1
    assert sched.done
    return sched


@settings(max_examples=150, deadline=None)
@given(cases(), st.data())
def test_every_task_lands_when_all_succeed(case: Case, data: st.DataObject) -> None:
    sched = drive(case, data, fail_rate=0.0)
    assert all(state is TaskState.LANDED for state in sched.state.values())
    assert all(sched.attempts[t] == 1 for t in case.graph.order)


@settings(max_examples=150, deadline=None)
@given(cases(), st.data())
def test_failures_give_up_and_skip_dependents(case: Case, data: st.DataObject) -> None:
    sched = drive(case, data, fail_rate=0.4)
    for task, state in sched.state.items():
        assert state.finished
        if state is TaskState.FAILED:
            assert sched.failures[task] == sched.limit(task) == 3
        if state is TaskState.SKIPPED:
            assert any(
                sched.state[d] in (TaskState.FAILED, TaskState.SKIPPED)
                for d in case.graph.deps[task]
            )
        if state is TaskState.LANDED:
            assert all(sched.state[d] is TaskState.LANDED for d in case.graph.deps[task])


@settings(max_examples=100, deadline=None)
@given(cases())
def test_simulation_respects_bounds(case: Case) -> None:
    sim = simulate(
        case.graph, case.leases, case.max_agents, pools=case.pools, pool_limits=case.pool_limits
    )
    assert sorted(sim.landed) == sorted(case.graph.order)
    assert sim.peak <= case.max_agents
    # A schedule can never beat the critical path or perfect packing.
    lower = max(case.graph.critical_length(), case.graph.serial_minutes() / case.max_agents)
    assert sim.makespan >= lower - 1e-9
    assert sim.makespan <= case.graph.serial_minutes() + 1e-9
    again = simulate(
        case.graph, case.leases, case.max_agents, pools=case.pools, pool_limits=case.pool_limits
    )
    assert again.events == sim.events


def plan_graph(text: str) -> tuple[TaskGraph, dict[str, tuple[str, ...]]]:
    plan = parse_plan(text)
    return TaskGraph.from_plan(plan), {t.id: t.lease for t in plan.tasks}


def test_longest_critical_path_goes_first() -> None:
    graph, leases = plan_graph(
        """\
unowned: nothing
stages:
  - name: s
    steps:
      - {id: short, goal: s, complexity: low}
      - {id: long, goal: l, complexity: low}
      - {id: tail, goal: t, complexity: high, depends_on: [long]}
"""
    )
    sched = Schedule(graph, leases)
    actions = sched.decide(Capacity(1))
    assert actions == [Spawn("long", 1, False, 50.0)]


def test_overlapping_leases_wait_and_say_on_whom() -> None:
    graph, leases = plan_graph(
        """\
stages:
  - name: s
    steps:
      - {id: api, goal: a, files: [src/api/]}
      - {id: handler, goal: h, files: [src/api/handler.py], complexity: low}
      - {id: docs, goal: d, files: ["docs/**/*.md"], complexity: low}
"""
    )
    sched = Schedule(graph, leases)
    actions = sched.decide(Capacity(4))
    assert actions == [
        Spawn("api", 1, False, 15.0),
        Wait("handler", "lease", ("api",), ("src/api/handler.py", "src/api/**")),
        Spawn("docs", 1, False, 5.0),
    ]


def test_outside_leases_block_too() -> None:
    graph, leases = plan_graph(
        "stages:\n  - name: s\n    steps: [{id: a, goal: a, files: [x.py]}]\n"
    )
    sched = Schedule(graph, leases)
    assert sched.decide(Capacity(1), held={"other-run": ("x.py",)}) == [
        Wait("a", "lease", ("other-run",), ("x.py", "x.py"))
    ]


def test_pool_capacity() -> None:
    graph = TaskGraph.build(["a", "b"], {}, {"a": 2.0, "b": 1.0})
    sched = Schedule(graph, {}, pools={"a": ("agent:claude",), "b": ("agent:claude",)})
    actions = sched.decide(Capacity(2, {"agent:claude": 1}))
    assert actions == [Spawn("a", 1, False, 2.0), Wait("b", "capacity", pool="agent:claude")]


def test_retry_then_give_up_then_skip() -> None:
    graph = TaskGraph.build(["a", "b", "c"], {"b": ["a"], "c": ["b"]}, dict.fromkeys("abc", 1.0))
    sched = Schedule(graph, {}, max_attempts={"a": 2})
    assert sched.decide(Capacity(1)) == [Spawn("a", 1, False, 3.0)]
    sched.started("a")
    sched.attempt_failed("a")
    assert sched.decide(Capacity(1)) == [Spawn("a", 2, True, 3.0)]
    sched.started("a")
    sched.attempt_failed("a", counts=False)  # a rate limit does not use up an attempt
    assert sched.decide(Capacity(1)) == [Spawn("a", 3, True, 3.0)]
    sched.started("a")
    sched.attempt_failed("a")
    assert sched.decide(Capacity(1)) == [GiveUp("a", 2, 2)]
    assert sched.gave_up("a") == ["b"]
    assert sched.decide(Capacity(1)) == [Skip("b", "a")]
    assert sched.skipped("b") == ["c"]
    assert sched.decide(Capacity(1)) == [Skip("c", "b")]
    sched.skipped("c")
    assert sched.done and sched.counts()["failed"] == 1 and sched.counts()["skipped"] == 2


def test_decision_cost_does_not_grow_with_finished_tasks() -> None:
    """A chain of 5,000: every decision looks at one ready task, however many have landed."""
    ids = [f"t{i}" for i in range(5000)]
    graph = TaskGraph.build(
        ids, {ids[i]: [ids[i - 1]] for i in range(1, 5000)}, dict.fromkeys(ids, 1.0)
    )
    sched = Schedule(graph, {})
    for task in ids:
        assert sched.ready() == [task]
        [action] = sched.decide(Capacity(4))
        assert isinstance(action, Spawn)
        sched.started(task)
        sched.landed(task)
    assert sched.done


# --------------------------------------------------------------------------- splitting


def _chain() -> Schedule:
    graph = TaskGraph.build(["a", "b", "c"], {"b": ["a"], "c": ["b"]}, dict.fromkeys("abc", 5.0))
    leases = {"a": ("a.py",), "b": ("b/**",), "c": ("c.py",)}
    return Schedule(graph, leases, max_attempts={"b": 1})


def _children() -> list[SplitChild]:
    return [
        SplitChild("b.1", (), ("b/x.py",), 2, 5.0),
        SplitChild("b.2", ("b.1",), ("b/y.py",), 2, 15.0),
    ]


def test_split_replaces_a_failed_task_and_dependents_wait_for_every_child() -> None:
    sched = _chain()
    sched.started("a")
    sched.landed("a")
    sched.started("b")
    sched.attempt_failed("b")
    assert sched.decide(Capacity(4)) == [GiveUp("b", 1, 1)]
    sched.splitting("b")
    assert sched.decide(Capacity(4)) == []  # it holds its lease while the planner answers
    assert sched.split("b", _children()) == ["b.1"]
    assert sched.state["b"] is TaskState.SPLIT and sched.state["b"].finished
    assert sched.graph.deps["c"] == ("b.1", "b.2")
    assert sched.graph.deps["b.2"] == ("a", "b.1")
    assert sched.limit("b.1") == 2
    assert [a.task for a in sched.decide(Capacity(4)) if isinstance(a, Spawn)] == ["b.1"]
    sched.started("b.1")
    assert sched.landed("b.1") == ["b.2"]
    assert sched.state["c"] is TaskState.WAITING
    sched.started("b.2")
    assert sched.landed("b.2") == ["c"]
    sched.started("c")
    sched.landed("c")
    assert sched.done


def test_split_rebuilt_on_a_fresh_schedule_then_restored() -> None:
    """Resume: the split is applied to a fresh schedule, then the journal's facts."""
    sched = _chain()
    sched.split("b", _children())
    sched.restore(
        landed={"a", "b.1"}, failed=set(), skipped=set(), attempts={"b": 1}, failures={"b": 1}
    )
    assert sched.ready() == ["b.2"]
    assert sched.state["b"] is TaskState.SPLIT
    assert not sched.done


def test_split_refuses_a_taken_id() -> None:
    sched = _chain()
    with pytest.raises(SchedulingError, match="'c' is already taken"):
        sched.split("b", [SplitChild("c", (), ("b/x.py",), 1, 5.0)])
    assert sched.state["b"] is TaskState.WAITING  # nothing changed


# --------------------------------------------------------------------------- cancel and revive


def _graph(deps: dict[str, list[str]]) -> TaskGraph:
    """Tasks in the order named, 1 minute each."""
    return TaskGraph.build(list(deps), deps, dict.fromkeys(deps, 1.0))


def _consistent(sched: Schedule) -> None:
    """The bookkeeping agrees with the task states."""
    states = sched.state
    assert sched.finished == sum(1 for s in states.values() if s.finished)
    assert sched.done == all(s.finished for s in states.values())
    assert set(sched.running) == {t for t, s in states.items() if s is TaskState.RUNNING}
    assert all(states[t] is TaskState.READY for t in sched.ready())
    assert len(sched.ready()) == len(set(sched.ready()))
    assert sum(sched.counts().values()) == len(sched.graph.order)


def _run_out(sched: Schedule, fail: set[str] = frozenset(), rounds: int = 200) -> list[str]:
    """Drive the schedule to the end; attempts of tasks in ``fail`` fail, others land.

    Returns the events folded in, as "started:a", "landed:a", "skipped:b", …
    """
    log: list[str] = []
    for _ in range(rounds):
        _consistent(sched)
        if sched.done:
            return log
        actions = sched.decide(Capacity(4))
        assert actions, "stalled: nothing to do and not done"
        spawned = []
        for action in actions:
            if isinstance(action, Spawn):
                assert sched.started(action.task) == action.attempt
                spawned.append(action.task)
                log.append(f"started:{action.task}")
            elif isinstance(action, GiveUp):
                sched.gave_up(action.task)
                log.append(f"gave_up:{action.task}")
            elif isinstance(action, Skip):
                assert sched.state[action.because] in (TaskState.FAILED, TaskState.SKIPPED)
                sched.skipped(action.task)
                log.append(f"skipped:{action.task}")
        for task in spawned:
            if task in fail:
                sched.attempt_failed(task)
                log.append(f"failed:{task}")
            else:
                sched.landed(task)
                log.append(f"landed:{task}")
    raise AssertionError(f"not done after {rounds} rounds")


def _give_up(sched: Schedule, task: str) -> list[str]:
    """Start ``task`` and fail it until the schedule gives it up; returns the gave_up result."""
    while True:
        sched.started(task)
        sched.attempt_failed(task)
        if GiveUp(task, sched.failures[task], sched.limit(task)) in sched.decide(Capacity(0)):
            return sched.gave_up(task)


def test_cancel_a_ready_task_fails_it_and_skips_its_dependents() -> None:
    sched = Schedule(_graph({"a": [], "b": ["a"], "c": ["b"], "x": []}), {})
    assert sched.cancel("a") == ["b"]
    assert sched.state["a"] is TaskState.FAILED
    assert "a" not in sched.ready()
    _consistent(sched)
    actions = sched.decide(Capacity(4))
    assert Skip("b", "a") in actions
    assert [a.task for a in actions if isinstance(a, Spawn)] == ["x"]
    assert _run_out(sched) == ["skipped:b", "started:x", "landed:x", "skipped:c"]
    assert sched.counts()["failed"] == 1 and sched.counts()["skipped"] == 2
    assert sched.counts()["landed"] == 1


def test_cancel_a_running_task_releases_its_lease() -> None:
    graph = _graph({"a": [], "b": [], "c": ["a"]})
    sched = Schedule(graph, {"a": ("src/x.py",), "b": ("src/*.py",)})
    sched.started("a")
    assert sched.decide(Capacity(4)) == [Wait("b", "lease", ("a",), ("src/*.py", "src/x.py"))]
    assert sched.cancel("a") == ["c"]
    assert "a" not in sched.running
    assert sched.decide(Capacity(4)) == [Skip("c", "a"), Spawn("b", 1, False, 1.0)]
    _run_out(sched)
    assert sched.state == {
        "a": TaskState.FAILED,
        "b": TaskState.LANDED,
        "c": TaskState.SKIPPED,
    }


def test_cancel_a_waiting_task_keeps_it_failed_when_its_dependency_lands() -> None:
    sched = Schedule(_graph({"a": [], "b": ["a"], "c": ["b"]}), {})
    assert sched.cancel("b") == ["c"]
    sched.started("a")
    assert sched.landed("a") == []  # b does not become ready: it was cancelled
    assert sched.state["b"] is TaskState.FAILED
    assert sched.decide(Capacity(4)) == [Skip("c", "b")]
    _run_out(sched)
    assert sched.counts()["landed"] == 1 and sched.counts()["failed"] == 1


def test_cancel_a_task_about_to_be_given_up_does_not_give_it_up_again() -> None:
    sched = Schedule(_graph({"a": [], "b": ["a"]}), {}, max_attempts={"a": 1})
    sched.started("a")
    sched.attempt_failed("a")
    assert sched.decide(Capacity(4)) == [GiveUp("a", 1, 1)]
    assert sched.cancel("a") == ["b"]
    assert sched.decide(Capacity(4)) == [Skip("b", "a")]
    _run_out(sched)
    assert sched.counts()["failed"] == 1 and sched.counts()["skipped"] == 1


def test_cancelling_a_finished_or_unknown_task_is_refused() -> None:
    sched = Schedule(_graph({"a": [], "b": ["a"], "c": []}), {}, max_attempts={"c": 1})
    sched.started("a")
    sched.landed("a")
    _give_up(sched, "c")
    sched.cancel("b")
    before = (dict(sched.state), sched.finished, sched.decide(Capacity(4)))
    for task in ("a", "b", "c"):  # landed, cancelled, given up
        with pytest.raises(SchedulingError, match=f"'{task}' is TaskState.*cannot be cancelled"):
            sched.cancel(task)
    with pytest.raises(SchedulingError, match="'nope' is None"):
        sched.cancel("nope")
    assert (dict(sched.state), sched.finished, sched.decide(Capacity(4))) == before
    assert sched.done


def test_cancel_a_task_whose_skip_is_pending() -> None:
    sched = Schedule(_graph({"a": [], "b": ["a"], "c": ["b"]}), {}, max_attempts={"a": 1})
    assert _give_up(sched, "a") == ["b"]  # Skip("b", "a") is pending
    assert sched.cancel("b") == ["c"]
    assert sched.state["b"] is TaskState.FAILED
    assert sched.decide(Capacity(4)) == [Skip("c", "b")]
    _run_out(sched)


def test_revive_gives_a_failed_task_one_more_attempt_and_unskips_its_dependents() -> None:
    sched = Schedule(_graph({"a": [], "b": ["a"], "c": ["b"], "x": []}), {})
    sched.started("x")
    sched.landed("x")
    assert _give_up(sched, "a") == ["b"]
    _run_out(sched)
    assert sched.done and sched.counts()["skipped"] == 2 and sched.failures["a"] == 3

    assert sched.revive("a") == ["b", "c"]
    assert sched.state["a"] is TaskState.READY
    assert sched.state["b"] is sched.state["c"] is TaskState.WAITING
    assert sched.limit("a") == 4
    assert not sched.done
    _consistent(sched)
    assert sched.counts() == {
        **dict.fromkeys(sched.counts(), 0),
        "landed": 1,
        "ready": 1,
        "waiting": 2,
    }
    assert sched.decide(Capacity(4)) == [Spawn("a", 4, True, 3.0)]
    assert _run_out(sched) == [
        "started:a",
        "landed:a",
        "started:b",
        "landed:b",
        "started:c",
        "landed:c",
    ]
    assert sched.done and sched.counts()["landed"] == 4


def test_a_revived_task_that_fails_again_is_given_up_after_one_attempt() -> None:
    sched = Schedule(_graph({"a": [], "b": ["a"]}), {}, max_attempts={"a": 2})
    _give_up(sched, "a")
    _run_out(sched)
    assert sched.revive("a") == ["b"]
    assert _run_out(sched, fail={"a"}) == ["started:a", "failed:a", "gave_up:a", "skipped:b"]
    assert sched.failures["a"] == 3 and sched.attempts["a"] == 3 and sched.limit("a") == 3
    assert sched.state == {"a": TaskState.FAILED, "b": TaskState.SKIPPED}
    assert sched.done


def test_revive_waits_for_dependencies_that_have_not_landed() -> None:
    sched = Schedule(_graph({"a": [], "b": ["a"], "c": ["b"]}), {})
    sched.cancel("b")  # cancelled while waiting: a has not landed
    assert sched.revive("b") == []  # c was not skipped yet: its Skip was only pending
    assert sched.state["b"] is TaskState.WAITING
    assert sched.limit("b") == 1  # no failures counted: exactly one attempt
    assert sched.decide(Capacity(4)) == [Spawn("a", 1, False, 3.0)]  # no Skip of c any more
    sched.started("a")
    assert sched.landed("a") == ["b"]
    _run_out(sched)
    assert all(s is TaskState.LANDED for s in sched.state.values())


def test_revive_before_a_pending_skip_is_applied_cancels_the_skip() -> None:
    sched = Schedule(_graph({"a": [], "b": ["a"]}), {}, max_attempts={"a": 1})
    assert _give_up(sched, "a") == ["b"]
    assert sched.decide(Capacity(4)) == [Skip("b", "a")]
    assert sched.revive("a") == []
    assert sched.decide(Capacity(4)) == [Spawn("a", 2, True, 2.0)]
    _run_out(sched)
    assert sched.state == {"a": TaskState.LANDED, "b": TaskState.LANDED}


def test_a_dependent_with_another_failed_dependency_stays_skipped() -> None:
    deps: dict[str, list[str]] = {"a": [], "x": [], "d": ["a", "x"], "e": ["d"]}
    sched = Schedule(_graph(deps), {}, max_attempts={"a": 1, "x": 1})
    _give_up(sched, "a")
    _give_up(sched, "x")
    _run_out(sched)
    assert sched.state["d"] is sched.state["e"] is TaskState.SKIPPED

    assert sched.revive("a") == []  # x still failed: d and e stay skipped
    assert sched.state["d"] is sched.state["e"] is TaskState.SKIPPED
    _consistent(sched)
    _run_out(sched)
    assert sched.state["a"] is TaskState.LANDED and sched.state["d"] is TaskState.SKIPPED

    assert sched.revive("x") == ["d", "e"]  # now every dependency of d is back
    _run_out(sched)
    assert all(s is TaskState.LANDED for s in sched.state.values())


def test_revive_through_a_diamond_revives_each_dependent_once() -> None:
    deps: dict[str, list[str]] = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    sched = Schedule(_graph(deps), {}, max_attempts={"a": 1})
    _give_up(sched, "a")
    _run_out(sched)
    assert sched.counts()["skipped"] == 3
    revived = sched.revive("a")
    assert sorted(revived) == ["b", "c", "d"]
    assert sched.finished == 0
    _consistent(sched)
    _run_out(sched)
    assert sched.done and sched.counts()["landed"] == 4


def test_reviving_a_task_that_did_not_fail_is_refused() -> None:
    sched = Schedule(_graph({"a": [], "b": ["a"], "c": []}), {}, max_attempts={"a": 1})
    sched.started("c")
    sched.landed("c")
    _give_up(sched, "a")
    _run_out(sched)
    for task, state in (("b", "skipped"), ("c", "landed")):
        with pytest.raises(SchedulingError, match=f"'{task}' is TaskState.{state.upper()}"):
            sched.revive(task)
    assert sched.done and sched.counts()["skipped"] == 1


def test_revive_keeps_a_pending_skip_owed_to_another_failed_dependency() -> None:
    deps: dict[str, list[str]] = {"a": [], "x": [], "d": ["a", "x"]}
    sched = Schedule(_graph(deps), {}, max_attempts={"a": 1, "x": 1})
    assert _give_up(sched, "a") == ["d"]  # Skip("d", "a") pending
    assert _give_up(sched, "x") == []  # d is already queued
    assert sched.revive("a") == []
    assert Skip("d", "x") in sched.decide(Capacity(4))  # d still cannot run: x failed
    _run_out(sched)


@settings(max_examples=150, deadline=None)
@given(cases())
def test_summary_waits_change_what_is_said_not_what_starts(case: Case) -> None:
    """`decide(summary=True)` (the dry run) says once per decision that the tasks owning files
    wait for a task owning everything, and that the tasks owning everything wait: every start
    and landing is the same as with a wait per task, and the summaries stand for exactly the
    per-task waits they replace."""
    kwargs = {"pools": case.pools, "pool_limits": case.pool_limits}
    full = simulate(case.graph, case.leases, case.max_agents, record_waits=False, **kwargs)
    summed = simulate(
        case.graph, case.leases, case.max_agents, record_waits=False, summary=True, **kwargs
    )
    assert summed.events == full.events and summed.makespan == full.makespan

    # Every decision of a run, both ways: the same non-wait actions, and the summaries stand
    # for exactly the per-task waits they replace.
    def owns_everything(task: str) -> bool:
        return EVERYTHING_PATTERN in case.leases.get(task, ())

    sched = Schedule(case.graph, case.leases, pools=case.pools)
    running: list[str] = []
    while not sched.done:
        in_use = {p: sum(1 for t in running if p in case.pools[t]) for p in case.pool_limits}
        limits = {p: n - in_use[p] for p, n in case.pool_limits.items()}
        free = Capacity(case.max_agents - len(running), limits)
        each, once = sched.decide(free), sched.decide(free, summary=True)
        assert [a for a in each if not isinstance(a, Wait)] == [
            a for a in once if not isinstance(a, Wait)
        ]
        waits = [a for a in each if isinstance(a, Wait)]
        summaries = [a for a in once if isinstance(a, Wait) and a.task in ("*", "**")]
        kept = [a for a in once if isinstance(a, Wait) and a.task not in ("*", "**")]
        replaced = [  # a lease wait: it owns everything, or it waits for a task that does
            a
            for a in waits
            if a.reason == "lease"
            and (owns_everything(a.task) or any(map(owns_everything, a.holders)))
        ]
        assert kept == [a for a in waits if a not in replaced]
        assert sum(a.count for a in summaries) == len(replaced)
        for action in each:
            if isinstance(action, Spawn):
                sched.started(action.task)
                running.append(action.task)
        sched.landed(running.pop(0))
