"""``stretto live`` driven by Textual's Pilot against real runs of shell agents.

A detached engine runs the plan (``python -m stretto run --detach``); the app attaches, the
test presses keys as a person would, and the run's journal must show each command, sent by
``live``, with the engine's answer on screen. A finished run replayed shows the same table as
``stretto status``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _engines import stop_engines
from stretto import api
from stretto.engine.journal import Record, is_live, read_journal
from stretto.frontends.live import LiveApp
from stretto.testing.repo import make_repo

STRETTO = [sys.executable, "-m", "stretto"]


def cli(repo: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STRETTO, *args], cwd=repo, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    path = make_repo(tmp_path / "repo", {"README.md": "# test\n"})
    yield path
    stop_engines(path)


def detach(repo: Path, text: str) -> api.RunHandle:
    plan = repo.parent / "plan.yaml"
    plan.write_text(text)
    done = cli(repo, "run", "--detach", "--json", str(plan))
    assert done.returncode == 0, done.stderr
    return api.open_run(repo, json.loads(done.stdout)["run_id"])


def records(handle: api.RunHandle) -> list[Record]:
    return read_journal(handle.run_dir / "journal.jsonl")


def has(handle: api.RunHandle, type_: str, **fields: object) -> bool:
    return any(
        r.type == type_ and all(r.fields.get(k) == v for k, v in fields.items())
        for r in records(handle)
    )


async def until(pilot: Any, check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def table_rows(app: LiveApp) -> dict[str, list[str]]:
    from stretto.frontends.live_widgets import TaskTable

    table = app.main.query_one("#tasks", TaskTable)
    return {key: list(cells) for key, cells in table.rows}


def said(app: LiveApp) -> str:
    return app.last_said


HELD = """\
name: steer
stages:
  - name: work
    steps:
      - id: flaky
        goal: fails once
        files: [f.txt]
        max_attempts: 1
        command: >-
          echo trying $STRETTO_ATTEMPT; if [ "$STRETTO_ATTEMPT" = 1 ]; then exit 3; fi;
          echo f > f.txt
      - {id: after, goal: after, files: [x.txt], depends_on: [flaky], command: "echo x > x.txt"}
      - id: held
        goal: held until the test says go
        files: [h.txt]
        command: "echo waiting for go; while [ ! -e GO ]; do sleep 0.05; done; echo h > h.txt"
      - id: keeper
        goal: keeps the run going
        files: [k.txt]
        command: "while [ ! -e GO ]; do sleep 0.05; done; echo k > k.txt"
"""


def test_attach_retry_pause_budget_parallel_cancel_and_detach(repo: Path) -> None:
    handle = detach(repo, HELD.replace("-e GO", f"-e {repo.parent / 'go'}"))
    wait = time.monotonic() + 60
    while not has(handle, "task_finished", task="flaky", status="failed"):
        assert time.monotonic() < wait, "flaky never failed"
        time.sleep(0.05)

    async def drive() -> None:
        app = LiveApp(handle)
        async with app.run_test(size=(120, 36)) as pilot:
            await until(pilot, lambda: "flaky" in app.shown, "the table")
            rows = table_rows(app)
            assert app.shown[0] == "flaky" and rows["flaky"][:3] == ["!!", "failed", "flaky"]
            assert rows["held"][1] == "running" and rows["held"][8] == "waiting for go"
            assert rows["after"][1:3] == ["pending", "after"]  # why it waits:
            assert rows["after"][8] == "dependency: flaky", rows["after"]
            # The failing task is selected (attention first): retry it.
            assert app.selected == "flaky"
            await pilot.press("r")
            await until(pilot, lambda: has(handle, "control", action="retry", task="flaky"), "r")
            await until(pilot, lambda: "retry flaky: " in said(app) and "sent" not in said(app),
                        "the retry's answer")  # fmt: skip
            assert "one more attempt" in said(app), said(app)
            await pilot.press("p")
            await until(pilot, lambda: has(handle, "control", action="pause", ok=True), "pause")
            await until(pilot, lambda: "paused" in app.snap.status.state, "the paused header")  # type: ignore[union-attr]
            await pilot.press("b")
            await pilot.pause(0.2)
            await pilot.press("ctrl+a", "ctrl+k", *"abc", "enter")  # refused in the dialog
            await pilot.pause(0.2)
            assert not has(handle, "control", action="budget")
            await pilot.press("ctrl+a", "ctrl+k", *"7.5", "enter")
            await until(pilot, lambda: has(handle, "control", action="budget", value=7.5), "b")
            before = app.snap.status.max_agents  # type: ignore[union-attr]
            assert before is not None
            await pilot.press("plus")
            await until(
                pilot,
                lambda: has(handle, "control", action="parallelism", value=float(before + 1)),
                "+",
            )
            await pilot.press("u")
            await until(pilot, lambda: has(handle, "control", action="unpause", ok=True), "u")
            # Filter to the held task, select it, cancel it (with a confirmation).
            await pilot.press("slash", *"held", "enter")
            await until(pilot, lambda: app.shown == ["held"], "the filter")
            assert app.selected == "held"
            await pilot.press("w")  # its worktree path, shown and copied
            worktree = app.snap.rows[[r.id for r in app.snap.rows].index("held")].worktree  # type: ignore[union-attr]
            assert worktree and Path(worktree).is_dir()
            await until(pilot, lambda: worktree in said(app), "the worktree path")
            assert app.clipboard == worktree
            await pilot.press("c")
            await pilot.pause(0.2)
            await pilot.press("n")  # declined: nothing is sent
            await pilot.pause(0.3)
            assert not has(handle, "control", action="cancel")
            await pilot.press("c")
            await pilot.pause(0.2)
            await pilot.press("y")
            await until(pilot, lambda: has(handle, "control", action="cancel", task="held"), "c")
            await until(pilot, lambda: "cancel held: " in said(app) and "sent" not in said(app),
                        "the cancel's answer")  # fmt: skip
            await pilot.press("escape")
            await until(pilot, lambda: len(app.shown) == 4, "the filter cleared")
            await pilot.press("q")
        assert app.return_code in (0, None)

    asyncio.run(drive())
    assert is_live(handle.run_dir)  # q detached: the engine goes on (keeper still waits)
    controls = [r.fields for r in records(handle) if r.type == "control"]
    assert [c["action"] for c in controls] == [
        "retry", "pause", "budget", "parallelism", "unpause", "cancel",
    ]  # fmt: skip
    assert all(c["ok"] and c["source"]["frontend"] == "live" for c in controls), controls
    (repo.parent / "go").touch()
    final = handle.wait(timeout=60)
    states = {t.id: t.state for t in final.tasks.values()}
    assert states == {
        "flaky": "landed", "after": "landed", "held": "cancelled", "keeper": "landed",
    }  # fmt: skip
    assert final.budget == 7.5


def test_stop_asks_first_and_a_stopped_run_says_why_commands_fail(repo: Path) -> None:
    handle = detach(repo, HELD.replace("-e GO", f"-e {repo.parent / 'go'}"))
    wait = time.monotonic() + 60
    while not has(handle, "attempt_started", task="held"):
        assert time.monotonic() < wait
        time.sleep(0.05)

    async def drive() -> None:
        app = LiveApp(handle)
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: "held" in app.shown, "the table")
            await pilot.press("s")
            await pilot.pause(0.2)
            await pilot.press("escape")  # declined
            await pilot.pause(0.3)
            assert not has(handle, "control", action="cancel")
            await pilot.press("s")
            await pilot.pause(0.2)
            await pilot.press("y")
            await until(pilot, lambda: has(handle, "control", action="cancel", task=None), "stop")
            await until(pilot, lambda: bool(app.snap and app.snap.status.over), "the run over")
            await pilot.press("p")  # the run is over: the API's error is shown
            await until(pilot, lambda: "not running" in said(app), "the error")
            assert f"`stretto resume {handle.run_id}`" in said(app)
            await pilot.press("q")

    asyncio.run(drive())
    assert handle.status().state == "cancelled"


def test_diff_log_and_gates_of_a_finished_run_and_its_replay_matches_status(repo: Path) -> None:
    plan = repo.parent / "plan.yaml"
    plan.write_text(
        HELD.replace("-e GO", "-e /").replace("max_attempts: 1", "max_attempts: 2")  # nothing waits
    )
    done = cli(repo, "run", "--plain", str(plan))
    assert done.returncode == 0, done.stdout + done.stderr
    handle = api.open_run(repo)
    status_out = cli(repo, "status").stdout.splitlines()
    wanted = {}
    for line in status_out[1:]:
        state, task, _, attempts, *reason = line.split(maxsplit=4)
        wanted[task] = (state, attempts, reason[0] if reason else "")

    async def drive() -> None:
        app = LiveApp(handle)
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, lambda: len(app.shown) == 4, "the table")
            got = {r.id: (r.state, str(r.attempts), r.reason) for r in app.snap.rows}  # type: ignore[union-attr]
            assert got == wanted  # the same final table as `stretto status`
            header = str(app.main.query_one("#header").render())
            assert f"run {handle.run_id}: 4/4 landed" in header and "finished" in header
            assert app.selected == "flaky"
            log = app.main.query_one("#log-view")
            await until(pilot, lambda: "trying 2" in "\n".join(log.lines), "the agent log")  # type: ignore[attr-defined]
            await pilot.press("tab")  # focus the tabs, then move right to diff
            await pilot.press("right")
            await until(pilot, lambda: app.main.query_one("#tabs").active == "diff", "diff tab")  # type: ignore[attr-defined]
            diff = app.main.query_one("#diff-view")
            await until(pilot, lambda: "+f" in "\n".join(diff.lines), "the diff")  # type: ignore[attr-defined]
            await pilot.press("right", "right", "right")  # gates, explain, events
            view = app.main.query_one("#events-view")
            await until(pilot, lambda: "landed  flaky" in "\n".join(view.lines), "events")  # type: ignore[attr-defined]
            assert "attempt_started" in "\n".join(view.lines)  # type: ignore[attr-defined]
            explain = "\n".join(app.main.query_one("#explain-view").lines)  # type: ignore[attr-defined]
            assert "attempt 2: shell" in explain and "action=retry" in explain, explain
            await pilot.press("q")

    asyncio.run(drive())
