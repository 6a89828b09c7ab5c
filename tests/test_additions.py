"""Added steps without a run: their validation (the plan's rules, located in the user's text),
the scheduler taking them in, their journal form, and the saved plan graph (pure, fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stretto.engine.plan_graph import GRAPH_NAME, read_plan_graph, write_plan_graph
from stretto.errors import PlanError
from stretto.plans.additions import parse_added_steps, task_from_record, task_record
from stretto.plans.graph import TaskGraph
from stretto.plans.plan import parse_plan
from stretto.schedule.scheduler import Capacity, Schedule, SchedulingError, Skip, Spawn, SplitChild

RUN = {"models": "landed", "api": "running", "broken": "failed", "old": "split"}


def problems(text: str) -> list[tuple[int, int, str, str]]:
    with pytest.raises(PlanError) as caught:
        parse_added_steps(text, "add.yaml", RUN)
    return [(d.line, d.column, d.field, d.message) for d in caught.value.diagnostics]


def test_one_step_or_a_list_become_tasks_waiting_only_for_what_they_name() -> None:
    [one] = parse_added_steps("goal: Write docs\nfiles: [docs/*.md]\n", "a.yaml", RUN).tasks
    assert (one.id, one.depends_on, one.lease, one.stage) == (
        "write-docs",
        (),
        ("docs/*.md",),
        "added",
    )
    listed = parse_added_steps(
        "- {id: x, goal: g, depends_on: [api]}\n- {goal: Write docs, depends_on: [x, models]}\n",
        "b.yaml",
        {**RUN, "write-docs": "pending"},
    ).tasks
    assert [t.id for t in listed] == ["x", "write-docs-2"]  # a made id avoids the run's ids
    assert [t.depends_on for t in listed] == [("api",), ("x", "models")]
    assert [t.line for t in listed] == [1, 2] and [t.order for t in listed] == [5, 6]


def test_errors_are_the_plans_located_in_the_users_text() -> None:
    assert problems("goal: x\ndepends_on: [apii]\n") == [
        (2, 14, "depends_on[0]", "unknown step 'apii' (did you mean 'api'?)")
    ]
    [(line, _, field, message)] = problems("- {goal: x}\n- {goal: y, max_attempts: 0}\n")
    assert (line, field) == (2, "[1].max_attempts") and "greater than or equal to 1" in message
    [(line, _, field, message)] = problems("goal: x\ndepends_on: [broken]\n")
    assert (line, field) == (2, "depends_on[0]") and "stretto retry broken" in message
    [(_, _, _, message)] = problems("goal: x\ndepends_on: [old]\n")
    assert "was split" in message and "replaced it" in message
    [(line, _, field, _)] = problems("id: models\ngoal: again\n")
    assert (line, field) == (1, "id")
    assert problems("[]")[0][3].startswith("no steps")
    assert problems("goal: a\ngoal: b\n")[0][3].startswith("duplicate key")


def test_the_journal_form_gives_back_the_same_task() -> None:
    [task] = parse_added_steps(
        "goal: g\nfiles: [a.py]\ntimeout: 90s\ngates: ['true']\n", "c.yaml", RUN
    ).tasks
    assert task_from_record(task_record(task)) == task


def test_a_schedule_takes_added_tasks_in_and_orders_them_by_the_new_critical_paths() -> None:
    graph = TaskGraph.build(["a", "b"], {"a": (), "b": ()}, {"a": 1.0, "b": 1.0})
    sched = Schedule(graph, {"a": ("a",), "b": ("b",)})
    assert [s.task for s in sched.decide(Capacity(1)) if isinstance(s, Spawn)] == ["a"]
    sched.started("b")
    ready = sched.add(
        [SplitChild("c", ("b",), ("c",), 2, 5.0), SplitChild("d", (), ("d",), 1, 1.0)]
    )
    assert ready == ["d"] and sched.state["c"].value == "waiting"
    sched.landed("b")
    assert sched.state["c"].value == "ready"
    # c's 5 minutes now come first (critical path first), then plan order.
    assert [s.task for s in sched.decide(Capacity(3)) if isinstance(s, Spawn)] == ["c", "a", "d"]
    with pytest.raises(SchedulingError):
        sched.add([SplitChild("a", (), (), 1, 1.0)])
    with pytest.raises(SchedulingError):
        sched.add([SplitChild("e", ("nope",), (), 1, 1.0)])


def test_an_added_task_waiting_for_a_failed_one_is_skipped() -> None:
    graph = TaskGraph.build(["a"], {"a": ()}, {"a": 1.0})
    sched = Schedule(graph, {"a": ()}, max_attempts={"a": 1})
    sched.started("a")
    sched.attempt_failed("a")
    sched.gave_up("a")
    sched.add([SplitChild("b", ("a",), (), 1, 1.0)])
    assert [x for x in sched.decide(Capacity(1)) if isinstance(x, Skip)] == [Skip("b", "a")]


def test_the_saved_plan_graph_reads_back_and_a_stale_one_is_ignored(tmp_path: Path) -> None:
    text = (
        "name: g\nstages:\n  - name: s1\n    steps:\n      - {id: a, goal: A}\n"
        "      - {id: b, goal: B}\n  - name: s2\n    depends_on: [s1]\n    steps:\n"
        "      - {id: c, goal: C}\n      - {id: d, goal: D, title: Dee}\n"
    )
    (tmp_path / "plan.yaml").write_text(text)
    plan = parse_plan(text, "plan.yaml")
    write_plan_graph(tmp_path, plan, text.encode())
    stages, tasks = read_plan_graph(tmp_path) or ([], {})
    assert stages == ["s1", "s2"]
    assert {t.id: (t.title, t.stage, t.depends_on) for t in tasks.values()} == {
        t.id: (t.title, t.stage, t.depends_on) for t in plan.tasks
    }
    assert tasks["c"].depends_on is tasks["d"].depends_on  # saved once, shared again
    (tmp_path / "plan.yaml").write_text(text + "# edited\n")
    assert read_plan_graph(tmp_path) is None  # another plan.yaml: parse that instead
    (tmp_path / GRAPH_NAME).write_text("{not json")
    assert read_plan_graph(tmp_path) is None
