"""What ``stretto live`` shows, below the screen: ``api.RunWatch`` and ``engine.progress`` with
plain values and a run written to disk (tests/_live_runs.py), and the ``live`` command's edges.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from _live_runs import NOW, RUN_ID, T0, engine_lock, write_run
from stretto import api
from stretto.engine.journal import Record
from stretto.engine.progress import attempt_bars, time_left, why_waiting
from stretto.engine.status import RunStatus, TaskStatus
from stretto.plans.graph import TaskGraph
from stretto.testing.repo import make_repo


def graph() -> TaskGraph:
    # a -> b -> c, and d alone; 10 estimated minutes each
    return TaskGraph.build(
        ["a", "b", "c", "d"],
        {"a": [], "b": ["a"], "c": ["b"], "d": []},
        dict.fromkeys("abcd", 10.0),
    )


def status(**states: str) -> RunStatus:
    tasks = {t: TaskStatus(t, state=states.get(t, "pending")) for t in "abcd"}
    return RunStatus("r", "running", "p", "main", T0, None, tasks, 1, live=True)


def test_time_left_follows_the_critical_path_scaled_by_what_attempts_took() -> None:
    g = graph()
    assert time_left(g, status(), {}, NOW) == 30 * 60  # three tasks of 10 minutes in a chain
    done = status(a="landed")
    assert time_left(g, done, {}, NOW) == 20 * 60
    # `a` took 60 s against its 10 estimated minutes: everything is counted at a tenth
    assert time_left(g, done, {"a": [60.0]}, NOW) == pytest.approx(2 * 60)
    running = status(a="landed", b="running")
    running.tasks["b"].started = NOW - 30
    assert time_left(g, running, {"a": [60.0]}, NOW) == pytest.approx(30 + 60)
    over = status(a="landed", b="landed", c="landed", d="landed")
    assert time_left(g, over, {}, NOW) == 0
    over.state, over.finished = "finished", NOW
    assert time_left(g, over, {}, NOW) is None and time_left(None, status(), {}, NOW) is None


def test_why_a_task_waits() -> None:
    g = graph()
    s = status(a="running")
    assert why_waiting(g, s, "b") == "dependency: a"
    assert why_waiting(g, s, "a") == ""  # running: it does not wait
    s.tasks["d"].waiting_for = "lease (a)"
    assert why_waiting(g, s, "d") == "file lease held by a"
    s.tasks["d"].waiting_for = "capacity"
    assert why_waiting(g, s, "d") == "capacity"
    s.paused = True
    assert why_waiting(g, s, "b").startswith("paused")


def rec(seq: int, ts: float, type_: str, **fields: object) -> Record:
    return Record(seq, 0, ts, "event", type_, fields)


def test_attempts_take_the_lowest_free_slot() -> None:
    bars = attempt_bars(
        [
            rec(1, 0, "attempt_started", task="a", attempt=1, agent="x"),
            rec(2, 1, "attempt_started", task="b", attempt=1, agent="x"),
            rec(3, 2, "attempt_finished", task="a", attempt=1, outcome="failed"),
            rec(4, 3, "attempt_started", task="a", attempt=2, agent="y"),
            rec(5, 4, "attempt_started", task="c", attempt=1, agent="x"),
        ]
    )
    assert [(b.task, b.attempt, b.slot, b.outcome) for b in bars] == [
        ("a", 1, 0, "failed"),
        ("b", 1, 1, "running"),
        ("a", 2, 0, "running"),
        ("c", 1, 2, "running"),
    ]


def test_the_watch_of_a_run_on_disk(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# shop\n"})
    run_dir = write_run(repo)
    with engine_lock(run_dir):
        watch = api.RunWatch(api.open_run(repo, RUN_ID), clock=lambda: NOW)
        assert len(watch.poll()) > 20 and watch.poll() == []  # each record read once
        snap = watch.snapshot()
    rows = {r.id: r for r in snap.rows}
    assert [r.id for r in snap.rows] == ["models", "cache", "ui", "cli", "tests", "deploy", "api"]
    assert rows["models"].attention.startswith("gave up after 2 failed attempts")
    assert rows["cache"].attention == "openai is out of credit: insufficient_quota"
    assert rows["ui"].detail == "Editing src/ui/app.py (42 lines)" and rows["ui"].elapsed == 298
    assert rows["tests"].detail == "file lease held by ui"
    assert rows["tests"].reason == "waiting: lease (ui)"  # as `stretto status` says it
    assert rows["deploy"].detail == "dependency: models"
    assert rows["api"].detail == "1f2e3d4c5b6a" and rows["api"].tokens == 15400
    assert snap.counts == {"landed": 1, "failed": 1, "running": 2, "waiting": 3, "total": 7}
    assert snap.providers == {
        "anthropic": "backing off: 1 agent(s) (was 2)",
        "openai": "out of credit: insufficient_quota",
    }
    assert snap.left is not None and snap.left > 0 and snap.wall == 300
    gates = watch.gates("models")
    assert [(g["attempt"], g["passed"]) for g in gates] == [(1, False), (2, False)]
    assert "README.md is not in src/models/**" in gates[1]["log"]
    explained = "\n".join(watch.explain("models"))
    assert "attempt 2: claude/opus" in explained and "action=give_up" in explained
    assert "waiting now: dependency: models" in "\n".join(watch.explain("deploy"))


def test_live_without_a_terminal_says_what_works_there(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# shop\n"})
    write_run(repo)
    done = subprocess.run(
        [sys.executable, "-m", "stretto", "live"],
        cwd=repo, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "stretto live needs a terminal" in done.stderr
    assert f"`stretto events {RUN_ID} --follow`" in done.stderr
    wrong = subprocess.run(
        [sys.executable, "-m", "stretto", "run", "--live", "--json", "plan.yaml"],
        cwd=repo, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert wrong.returncode == 2 and "--live opens the run in a terminal UI" in wrong.stderr
    plan = tmp_path / "plan.yaml"
    plan.write_text("stages:\n  - name: s\n    steps:\n      - {id: t, goal: g, command: 'true'}\n")
    runs = sorted((repo / ".stretto" / "runs").iterdir())
    piped = subprocess.run(
        [sys.executable, "-m", "stretto", "run", "--live", str(plan)],
        cwd=repo, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert piped.returncode == 2 and "stretto run --live needs a terminal" in piped.stderr
    assert sorted((repo / ".stretto" / "runs").iterdir()) == runs  # no run was started
    nothing = subprocess.run(
        [sys.executable, "-m", "stretto", "live", "nosuchrun"],
        cwd=repo, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert nothing.returncode == 2 and "no run 'nosuchrun'" in nothing.stderr


def test_help_does_not_import_textual() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "stretto", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "live" in done.stdout
    imported = [line.split("|")[-1].strip() for line in done.stderr.splitlines()]
    assert not [m for m in imported if m.split(".")[0] in ("textual", "rich")]


def test_a_damaged_journal_is_said_once_and_the_ui_stays_up(tmp_path: Path) -> None:
    import asyncio

    from stretto.frontends.live import LiveApp

    repo = make_repo(tmp_path / "repo", {"README.md": "# shop\n"})
    run_dir = write_run(repo)
    journal = run_dir / "journal.jsonl"
    lines = journal.read_text().splitlines()
    lines[5] = "{not json"
    journal.write_text("\n".join(lines) + "\n")

    async def drive() -> None:
        app = LiveApp(api.open_run(repo, RUN_ID), clock=lambda: NOW)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.5)
            assert app.last_said.startswith("cannot read the run: ")
            assert "journal.jsonl:6: journal is damaged" in app.last_said
            assert len(app._notifications) == 1  # said once, not on every look
            await pilot.press("q")

    asyncio.run(drive())
    # The reader behind it names the same line on every look (it used to count on from the
    # records it had read before the damage: "journal.jsonl:17: seq 1 where 6 was expected").
    from stretto.engine.events import EventReader
    from stretto.errors import RunError

    reader = EventReader(run_dir)
    for _ in range(2):
        with pytest.raises(RunError, match=r"journal\.jsonl:6: journal is damaged: not a JSON"):
            reader.read_new()


def test_a_goal_being_planned_says_so(tmp_path: Path) -> None:
    import json

    from stretto.frontends.live_widgets import header_lines

    repo = make_repo(tmp_path / "repo", {"README.md": "# shop\n"})
    run_dir = repo / ".stretto" / "runs" / RUN_ID
    run_dir.mkdir(parents=True)
    head = {"seq": 1, "gen": 0, "ts": T0, "kind": "event", "type": "goal"}
    goal = {"run_id": RUN_ID, "goal": "add a cache", "target": "main", "pid": 1}
    (run_dir / "journal.jsonl").write_text(json.dumps({**head, **goal}) + "\n")
    (run_dir / ".lock").write_text("1\n")
    with engine_lock(run_dir):
        watch = api.RunWatch(api.open_run(repo, RUN_ID), clock=lambda: NOW)
        watch.poll()
        snap = watch.snapshot()
    assert snap.status.state == "planning" and snap.rows == []
    lines = header_lines(snap)
    assert lines[0] == f"run {RUN_ID}: 0/0 landed · 0 failed · 0 running · 0 waiting"
    assert lines[2] == "planning the goal (one model call): add a cache"


def test_tasks_waiting_on_the_budget_need_the_person(tmp_path: Path) -> None:
    import json

    repo = make_repo(tmp_path / "repo", {"README.md": "# shop\n"})
    run_dir = repo / ".stretto" / "runs" / RUN_ID
    run_dir.mkdir(parents=True)
    records = [
        ("run_started", {"run_id": RUN_ID, "plan": "p", "tasks": ["a", "b", "c"], "pid": 1,
                         "options": {"target": "main", "budget": 0.5, "max_agents": 2}}),
        ("attempt_started", {"task": "a", "attempt": 1, "agent": "claude", "model": "opus",
                             "workspace": "/w/a", "branch": "b", "base": "0", "pid": 2}),
        ("decision", {"action": "stop_budget", "task": "b", "attempt": 1,
                      "reason": "run budget $0.50 reached", "estimate_usd": 0.4, "left_usd": 0.1}),
    ]  # fmt: skip

    def write(extra: list[tuple[str, dict[str, object]]]) -> None:
        lines = []
        for seq, (type_, fields) in enumerate([*records, *extra], start=1):
            head = {"seq": seq, "gen": 0, "ts": T0 + seq, "kind": "event", "type": type_}
            lines.append(json.dumps({**head, **fields}))
        (run_dir / "journal.jsonl").write_text("\n".join(lines) + "\n")

    write([])
    (run_dir / ".lock").write_text("1\n")
    with engine_lock(run_dir):
        watch = api.RunWatch(api.open_run(repo, RUN_ID), clock=lambda: NOW)
        watch.poll()
        rows = {r.id: r for r in watch.snapshot().rows}
    assert rows["b"].attention == "waiting on the budget: run budget $0.50 reached"
    assert rows["a"].attention == "" and rows["a"].state == "running"
    left = "budget reached: run budget $0.50 reached"
    write([
        ("attempt_finished", {"task": "a", "attempt": 1, "outcome": "success", "cost_usd": 0.45,
                              "duration": 30.0, "usage": {"input": 10, "output": 5}}),
        ("task_finished", {"task": "b", "status": "skipped", "reason": left, "attempts": 0,
                           "commit": None, "budget": True}),
        ("task_finished", {"task": "c", "status": "skipped", "attempts": 0, "commit": None,
                           "reason": "dependency 'x' did not land"}),
        ("run_finished", {"status": "budget_reached", "head": None, "notes": []}),
    ])  # fmt: skip
    watch = api.RunWatch(api.open_run(repo, RUN_ID), clock=lambda: NOW)
    watch.poll()
    snap = watch.snapshot()
    rows = {r.id: r for r in snap.rows}
    assert rows["b"].attention == f"left for `stretto resume`: {left}"
    assert rows["c"].attention == "" and rows["c"].group == 3  # skipped by a dependency
    assert snap.status.state == "budget_reached" and snap.left is None


def test_the_merge_train_shows_in_the_header_and_rows(tmp_path: Path) -> None:
    """A task waiting in the merge train says why on its row; the header sums up the train."""
    import json

    from stretto.frontends.live_widgets import header_lines

    repo = make_repo(tmp_path / "repo", {"README.md": "# shop\n"})
    run_dir = repo / ".stretto" / "runs" / RUN_ID
    run_dir.mkdir(parents=True)
    started = {"agent": "claude", "model": "opus", "workspace": "/w", "base": "0", "pid": 2}
    train = {
        "cars": [
            {"car": 1, "state": "testing", "branches": ["a"]},
            {"car": 2, "state": "waiting", "branches": ["b"]},
        ],
        "batch": 2,
        "lanes": 2,
        "failure_rate": 0.0,
        "waits": {"b": "car 2 waits for car 1 ahead to pass"},
    }
    records = [
        ("run_started", {"run_id": RUN_ID, "plan": "p", "tasks": ["a", "b"], "pid": 1,
                         "options": {"target": "main", "max_agents": 2}}),
        ("attempt_started", {"task": "a", "attempt": 1, "branch": "ba", **started}),
        ("attempt_started", {"task": "b", "attempt": 1, "branch": "bb", **started}),
        ("verified", {"task": "a", "attempt": 1, "commit": "1" * 40}),
        ("verified", {"task": "b", "attempt": 1, "commit": "2" * 40}),
        ("train", train),
    ]  # fmt: skip
    lines = []
    for seq, (type_, fields) in enumerate(records, start=1):
        head = {"seq": seq, "gen": 0, "ts": T0 + seq, "kind": "event", "type": type_}
        lines.append(json.dumps({**head, **fields}))
    (run_dir / "journal.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / ".lock").write_text("1\n")
    with engine_lock(run_dir):
        watch = api.RunWatch(api.open_run(repo, RUN_ID), clock=lambda: NOW)
        watch.poll()
        snap = watch.snapshot()
    rows = {r.id: r for r in snap.rows}
    assert rows["b"].detail == "merge train: car 2 waits for car 1 ahead to pass"
    assert "merge train: 2 car(s), up to 2 branch(es) a car, 2 lane(s)" in "\n".join(
        header_lines(snap)
    )


def test_a_growing_log_repaints_itself_without_laying_the_screen_out() -> None:
    """An agent's log gains lines all the time: each must be scrolled to and shown, with the
    scrollbar following, and none may cost a layout of the whole screen (a plain Textual Log
    asks for one on every line; that was most of the UI's paint time under a busy run)."""
    from textual.app import App, ComposeResult
    from textual.screen import Screen
    from textual.widgets import Static

    from stretto.frontends.live_widgets import FollowLog

    layouts: list[int] = []
    real = Screen._refresh_layout

    def counting(self: Screen[Any], *args: Any, **kwargs: Any) -> None:
        layouts.append(1)
        real(self, *args, **kwargs)

    class Holder(App[None]):
        CSS = "FollowLog { height: 6; overflow-y: auto; } Static { height: 1; }"

        def compose(self) -> ComposeResult:
            yield Static("above")
            yield FollowLog(id="log")

    async def drive() -> None:
        app = Holder()
        async with app.run_test(size=(40, 12)) as pilot:
            log = app.query_one(FollowLog)
            log.write_lines(["one", "two"])
            await pilot.pause()
            assert log.max_scroll_y == 0
            log.write_lines([f"line {i}" for i in range(20)])
            await pilot.pause()
            assert log.scroll_y == log.max_scroll_y > 0
            Screen._refresh_layout = counting  # type: ignore[method-assign]
            try:
                for i in range(10):
                    log.write_line(f"more {i}")
                    await pilot.pause()
            finally:
                Screen._refresh_layout = real  # type: ignore[method-assign]
            assert layouts == []
            height = log.scrollable_content_region.height
            assert log.scroll_y == log.max_scroll_y == log.line_count - height
            assert log.vertical_scrollbar.window_virtual_size == log.line_count
            shown = "\n".join(strip.text for strip in app.screen._compositor.render_strips())
            assert "more 9" in shown and "line 0" not in shown

    asyncio.run(drive())
