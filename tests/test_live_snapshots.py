"""Snapshot tests of ``stretto live`` (pytest-textual-snapshot): the main screen at 80x24 and
160x48, in colour and with ``NO_COLOR``, the attention state, and each detail tab.

The run is written to disk with fixed times and ids (tests/_live_runs.py) and the app's clock
is fixed, so every machine draws the same screen. The reviewed SVGs live in
tests/__snapshots__/test_live_snapshots/; after a deliberate change of the screen, look at the
new ones and accept them with ``pytest tests/test_live_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _live_runs import NOW, engine_lock, write_run
from stretto import api
from stretto.frontends.live import LiveApp
from stretto.testing.repo import make_repo


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveApp]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    repo = make_repo(tmp_path / "repo", {"README.md": "# shop\n"})
    run_dir = write_run(repo)
    with engine_lock(run_dir):
        yield LiveApp(api.open_run(repo, run_dir.name), clock=lambda: NOW)
    monkeypatch.delenv("TZ")
    time.tzset()


async def settle(pilot: Any) -> None:
    await pilot.pause(0.3)


def tab(name: str) -> Callable[[Any], Any]:
    async def run_before(pilot: Any) -> None:
        await pilot.pause(0.3)
        pilot.app.main.query_one("#tabs").active = name
        await pilot.pause(0.3)

    return run_before


def test_main_screen_80x24_attention_first(app: LiveApp, snap_compare: Any) -> None:
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)
    rows = [(r.id, r.group) for r in app.snap.rows]  # type: ignore[union-attr]
    assert rows[:2] == [("models", 0), ("cache", 0)]  # needs you: first
    assert [r for r, g in rows if g == 1] == ["ui", "cli"]


def test_main_screen_160x48(app: LiveApp, snap_compare: Any) -> None:
    assert snap_compare(app, terminal_size=(160, 48), run_before=settle)


def test_main_screen_without_colour(
    app: LiveApp, snap_compare: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    plain = LiveApp(app.handle, clock=lambda: NOW)
    assert plain.no_color
    assert snap_compare(plain, terminal_size=(80, 24), run_before=settle)


@pytest.mark.parametrize("name", ["gates", "explain", "events", "timeline"])
def test_detail_tab(app: LiveApp, snap_compare: Any, name: str) -> None:
    assert snap_compare(app, terminal_size=(100, 32), run_before=tab(name))


def test_filter_and_a_running_task_log(app: LiveApp, snap_compare: Any) -> None:
    async def run_before(pilot: Any) -> None:
        await pilot.pause(0.3)
        await pilot.press("slash", *"ui")
        await pilot.press("enter")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(100, 32), run_before=run_before)


def test_a_click_selects_a_row_and_keys_move_the_cursor(app: LiveApp, snap_compare: Any) -> None:
    async def run_before(pilot: Any) -> None:
        await pilot.pause(0.3)
        assert app.selected == "models"
        await pilot.click("#tasks", offset=(10, 3))  # the header line, then models, cache, ui
        await pilot.pause(0.2)
        assert app.selected == "ui"
        await pilot.press("down", "down")
        await pilot.pause(0.2)
        assert app.selected == "tests"
        await pilot.press("end")
        await pilot.pause(0.2)
        assert app.selected == "api"
        await pilot.press("home", "down")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
    assert app.selected == "cache"
