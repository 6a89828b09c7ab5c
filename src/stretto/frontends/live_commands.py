"""``stretto live``: watch and steer a run in a terminal UI (:mod:`stretto.frontends.live`).

Textual is imported inside the command, so ``stretto --help`` stays fast. ``stretto run --live``
starts the run detached and opens it here (see :func:`open_live`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stretto import api
from stretto.errors import UsageError


def check_terminal(run_id: str | None) -> None:
    """Raise UsageError unless stdin and stdout are a terminal (before anything is started)."""
    if sys.stdin.isatty() and sys.stdout.isatty():
        return
    if run_id is None:  # `stretto run --live`: nothing has started
        raise UsageError(
            "stretto run --live needs a terminal; without one start the run with --detach and "
            "follow it with `stretto events RUN --follow`"
        )
    raise UsageError(
        f"stretto live needs a terminal; without one follow run {run_id} with "
        f"`stretto events {run_id} --follow` or `stretto status {run_id}`"
    )


def open_live(handle: Any, *, mouse: bool = True) -> None:
    """Show ``handle``'s run until the person presses ``q`` (the run goes on)."""
    check_terminal(handle.run_id)
    from stretto.frontends.live import LiveApp

    LiveApp(handle).run(mouse=mouse)
    status = handle.status()
    if status.over:
        click.echo(f"run {handle.run_id}: {status.state}")
    else:
        click.echo(
            f"detached from run {handle.run_id} ({status.state}); it goes on: "
            f"`stretto live {handle.run_id}` to watch it again"
        )


def register(main: click.Group, reports_errors: Callable[[Any], Any]) -> None:
    """Add the command to the ``stretto`` group."""

    @main.command()
    @click.argument("run_id", required=False)
    @click.option("--no-mouse", is_flag=True, help="Leave the mouse to the terminal.")
    @reports_errors
    def live(run_id: str | None, no_mouse: bool) -> None:
        """Watch and steer a run in a terminal UI (default: the latest run; a finished one is
        replayed). Keys are shown at the bottom; q detaches and the run goes on."""
        handle = api.open_run(Path.cwd(), run_id)
        open_live(handle, mouse=not no_mouse and not os.environ.get("STRETTO_NO_MOUSE"))
