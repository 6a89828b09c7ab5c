"""The CLI commands that watch and steer a run from any terminal: ``events``, ``cancel``,
``retry``, ``pause``, ``unpause``, ``budget`` and ``parallelism``.

Each is a few lines around one :mod:`stretto.api` call. A command to a run that is not running
(finished, interrupted) or about an unknown task exits 2 and says what exists and how to go on.
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


def _json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(func)


def _wait_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--wait",
        type=click.FloatRange(min=0),
        default=10.0,
        show_default=True,
        help="Seconds to wait for the engine to apply it (it is never lost meanwhile).",
    )(func)


def _report(result: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    if not result.applied:
        click.echo(f"{result.action}: {result.message}")
        return
    extra = ""
    if result.fields.get("revived"):
        extra = f" (waiting for it again: {', '.join(result.fields['revived'])})"
    if result.fields.get("skipped"):
        extra = f" (skipped with it: {', '.join(result.fields['skipped'])})"
    click.echo(f"{result.action}: {result.message}{extra}")


def _split(args: tuple[str, ...], what: str) -> tuple[str | None, str]:
    """``[RUN] VALUE`` -> (run, value)."""
    if len(args) == 1:
        return None, args[0]
    if len(args) == 2:
        return args[0], args[1]
    raise UsageError(f"expected [RUN] {what}")


def register(main: click.Group, reports_errors: Callable[[Any], Any]) -> None:
    """Add the commands to the ``stretto`` group."""

    @main.command()
    @click.argument("run_id", required=False)
    @click.option("--after", type=click.IntRange(min=0), default=0, help="Only records after SEQ.")
    @click.option("--follow", "-f", is_flag=True, help="Keep printing new records until it ends.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per record.")
    @reports_errors
    def events(run_id: str | None, after: int, follow: bool, as_json: bool) -> None:
        """Print a run's journal records (default: the latest run), each once, in order.

        With --follow, new records appear as they are written, across a resume, until the run
        ends. `--after SEQ` goes on from where an earlier reader stopped.
        """
        from stretto.frontends.view import event_line

        handle = api.open_run(Path.cwd(), run_id)

        def idle(message: str) -> None:
            click.echo(f"{message}: `stretto resume {handle.run_id}` (Ctrl-C to stop)", err=True)

        try:
            for record in handle.events(after_seq=after, follow=follow, on_idle=idle):
                if as_json:
                    line = json.dumps(record.to_dict(), ensure_ascii=False)
                else:
                    line = event_line(record)
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:  # `stretto events | head`
            sys.exit(0)

    @main.command()
    @click.argument("run_id", required=False)
    @click.option("--task", "-t", help="Cancel only this task (its dependents are skipped).")
    @_wait_option
    @_json_option
    @reports_errors
    def cancel(run_id: str | None, task: str | None, wait: float, as_json: bool) -> None:
        """Cancel a running run (agents stopped, verified work kept for `stretto resume`), or
        one of its tasks with --task."""
        result = api.open_run(Path.cwd(), run_id).cancel(task, wait=wait, source="cli")
        _report(result, as_json)

    @main.command()
    @click.argument("args", nargs=-1, required=True, metavar="[RUN] TASK")
    @_wait_option
    @_json_option
    @reports_errors
    def retry(args: tuple[str, ...], wait: float, as_json: bool) -> None:
        """Give a failed (or given-up, or cancelled) TASK of a running run another attempt now."""
        run_id, task = _split(args, "TASK")
        result = api.open_run(Path.cwd(), run_id).retry(task, wait=wait, source="cli")
        _report(result, as_json)

    @main.command()
    @click.argument("run_id", required=False)
    @_wait_option
    @_json_option
    @reports_errors
    def pause(run_id: str | None, wait: float, as_json: bool) -> None:
        """Start no new attempts in a run; running ones finish."""
        _report(api.open_run(Path.cwd(), run_id).pause(wait=wait, source="cli"), as_json)

    @main.command()
    @click.argument("run_id", required=False)
    @_wait_option
    @_json_option
    @reports_errors
    def unpause(run_id: str | None, wait: float, as_json: bool) -> None:
        """Let a paused run start attempts again."""
        _report(api.open_run(Path.cwd(), run_id).unpause(wait=wait, source="cli"), as_json)

    @main.command()
    @click.argument("args", nargs=-1, required=True, metavar="[RUN] USD")
    @_wait_option
    @_json_option
    @reports_errors
    def budget(args: tuple[str, ...], wait: float, as_json: bool) -> None:
        """Set a running run's spend limit to USD (more room lets stopped work go on)."""
        run_id, text = _split(args, "USD")
        usd = _number(text, "USD", minimum=0)
        result = api.open_run(Path.cwd(), run_id).set_budget(usd, wait=wait, source="cli")
        _report(result, as_json)

    @main.command()
    @click.argument("args", nargs=-1, required=True, metavar="[RUN] AGENTS")
    @_wait_option
    @_json_option
    @reports_errors
    def parallelism(args: tuple[str, ...], wait: float, as_json: bool) -> None:
        """Set how many agents a running run may run at once."""
        run_id, text = _split(args, "AGENTS")
        agents = _number(text, "AGENTS", minimum=1)
        if agents != int(agents):
            raise UsageError(f"AGENTS must be a whole number, not {text!r}")
        handle = api.open_run(Path.cwd(), run_id)
        _report(handle.set_parallelism(int(agents), wait=wait, source="cli"), as_json)


def _number(text: str, what: str, *, minimum: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number, not {text!r}") from None
    if not value >= minimum or value != value or value in (float("inf"),):
        raise UsageError(f"{what} must be {minimum:g} or more, not {text!r}")
    return value
