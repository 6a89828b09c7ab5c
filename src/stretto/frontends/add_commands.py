"""``stretto add [RUN] FILE|-``: add tasks to a running run (``RunHandle.add_tasks``).

The file (or standard input, with ``-``) holds one plan step or a list of steps, written as in
a plan. A bad step exits 2 with its line, field and fix, and nothing is added.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stretto import api
from stretto.errors import UsageError

#: The largest steps file read (the engine refuses more anyway).
MAX_BYTES = 1024 * 1024


def _read(source: str) -> tuple[str, str]:
    """(text, name for errors) of FILE or ``-``."""
    if source == "-":
        raw = sys.stdin.buffer.read(MAX_BYTES + 1)
        name = "<stdin>"
    else:
        path = Path(source)
        if not path.is_file():
            what = "a folder" if path.is_dir() else "not found"
            raise UsageError(f"{source}: {what}; give a YAML file of steps, or - for stdin")
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
        name = source
    if len(raw) > MAX_BYTES:
        raise UsageError(f"{name}: more than {MAX_BYTES:,} bytes of steps; add them in parts")
    try:
        return raw.decode("utf-8"), name
    except UnicodeDecodeError as error:
        raise UsageError(f"{name}: not UTF-8 text (byte {error.start}); save it as UTF-8") from None


def register(main: click.Group, reports_errors: Callable[[Any], Any]) -> None:
    """Add the command to the ``stretto`` group."""

    @main.command()
    @click.argument("args", nargs=-1, required=True, metavar="[RUN] FILE|-")
    @click.option(
        "--wait",
        type=click.FloatRange(min=0),
        default=10.0,
        show_default=True,
        help="Seconds to wait for the engine to take them (they are never lost meanwhile).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @reports_errors
    def add(args: tuple[str, ...], wait: float, as_json: bool) -> None:
        """Add tasks to a running run (default: the latest): FILE (or - for stdin) holds one
        plan step or a list of steps, as in a plan; depends_on may name the run's tasks.

        \b
        Example:
          printf 'goal: Add a /health endpoint\\nfiles: [src/health.py]\\n' | stretto add -
        """
        if len(args) > 2:
            raise UsageError("expected [RUN] FILE|-")
        run_id, source = (None, args[0]) if len(args) == 1 else args
        text, name = _read(source)
        handle = api.open_run(Path.cwd(), run_id)
        result = handle.add_tasks(text, file=name, wait=wait, source="cli")
        if as_json:
            click.echo(json.dumps({"run_id": handle.run_id, **result.to_dict()}))
        elif not result.applied:
            click.echo(f"add: {result.message}")
        else:
            click.echo(f"{handle.run_id}: {result.message}")
