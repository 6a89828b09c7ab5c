"""The CLI commands that read a run and change nothing: ``status``, ``runs``, ``log``,
``cost`` and ``explain``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stretto import api


def register(main: click.Group, reports_errors: Callable[[Any], Any]) -> None:
    """Add the commands to the ``stretto`` group."""

    @main.command()
    @click.option("--run", "run_id", help="Only this run (a unique prefix is enough).")
    @click.option(
        "--by",
        type=click.Choice(["task", "model", "agent", "day", "run"]),
        default=None,
        help="Group the spend (default: by task for one run, by run across runs).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the spend as JSON.")
    @reports_errors
    def cost(run_id: str | None, by: str | None, as_json: bool) -> None:
        """Show what agents and planning calls cost: this run, or across runs."""
        report = api.cost_report(Path.cwd(), run_id=run_id, by=by)
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2))
            return
        click.echo("\n".join(report.lines()))

    @main.command()
    @click.argument("task")
    @click.option("--run", "run_id", help="Run id (default: the latest).")
    @click.option("--json", "as_json", is_flag=True, help="Print the routing decisions as JSON.")
    @reports_errors
    def explain(task: str, run_id: str | None, as_json: bool) -> None:
        """Show why each attempt of TASK ran on its agent and model (features, estimates, rule)."""
        report = api.explain_task(Path.cwd(), task, run_id=run_id)
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2))
            return
        click.echo("\n".join(report.lines()))

    @main.command()
    @click.argument("run_id", required=False)
    @click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
    @reports_errors
    def status(run_id: str | None, as_json: bool) -> None:
        """Show the state of a run (default: the latest) and of each of its tasks."""
        state = api.open_run(Path.cwd(), run_id).status()
        if as_json:
            click.echo(json.dumps(state.to_dict(), indent=2))
            return
        from stretto.frontends.view import status_lines

        click.echo("\n".join(status_lines(state)))
        rid = state.run_id
        if state.state == "interrupted":
            click.echo(f"this run was interrupted; finish it with `stretto resume {rid}`")
        elif state.state == "cancelled":
            click.echo(f"this run was cancelled; go on with `stretto resume {rid}`")
        elif state.state == "paused":
            click.echo(f"this run is paused: no new attempts start; `stretto unpause {rid}`")
        elif state.state == "budget_reached":
            click.echo(
                f"this run stopped at its budget; go on with `stretto resume {rid} "
                "--budget USD` (`stretto cost --run` shows the spend)"
            )
        elif state.state == "out_of_credit":
            click.echo(
                "this run stopped because a provider is out of credit; top the account up, then "
                f"`stretto resume {rid}`"
            )

    @main.command()
    @click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
    @reports_errors
    def runs(as_json: bool) -> None:
        """List the runs in this repository."""
        import time as _time

        states = api.list_runs(Path.cwd())
        if as_json:
            click.echo(json.dumps([s.to_dict() for s in states], indent=2))
            return
        if not states:
            click.echo("no runs yet; start one with `stretto run PLAN`")
        for state in states:
            when = _time.strftime("%Y-%m-%d %H:%M", _time.localtime(state.started))
            if state.state == "damaged":
                click.echo(f"{state.run_id}  {when}  damaged      {'; '.join(state.notes)}")
                continue
            counts = state.counts()
            click.echo(
                f"{state.run_id}  {when}  {state.state:<11}  {counts.get('landed', 0)}/"
                f"{len(state.tasks)} landed  {state.plan}"
            )

    @main.command()
    @click.argument("task")
    @click.option("--run", "run_id", help="Run id (default: the latest).")
    @click.option(
        "--attempt", type=click.IntRange(min=1), help="Attempt number (default: the last)."
    )
    @reports_errors
    def log(task: str, run_id: str | None, attempt: int | None) -> None:
        """Print a task's agent log and gate logs."""
        path, text = api.task_log(Path.cwd(), task, run_id=run_id, attempt=attempt)
        click.echo(f"==> {path}")
        click.echo(text, nl=False)
