"""Command-line frontend: parse arguments, call stretto's Python API, render the result.

This is the only place that maps errors to exit codes. Heavy modules (pydantic, YAML, the
scheduler) are imported inside the commands so that ``stretto --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from stretto import __version__
from stretto.errors import InputError, StrettoError

F = TypeVar("F", bound=Callable[..., Any])


def _reports_errors(func: F) -> F:
    """Turn a StrettoError into its message on stderr (or JSON with --json) and its exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except StrettoError as error:
            if kwargs.get("as_json"):
                payload: dict[str, Any] = {"ok": False, "error": type(error).__name__}
                if isinstance(error, InputError):
                    payload["diagnostics"] = [d.to_dict() for d in error.diagnostics]
                payload["message"] = error.message
                click.echo(json.dumps(payload, indent=2))
            else:
                click.echo(
                    f"error: {error.message}"
                    if not isinstance(error, InputError)
                    else error.message,
                    err=True,
                )
            sys.exit(error.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="stretto")
def main() -> None:
    """Run many CLI coding agents on one repository at once; land only verified work.

    \b
    Typical use:
      stretto init                      write stretto.toml for this repository
      stretto validate plan.yaml        check a plan without doing anything
      stretto run --dry-run plan.yaml   show how stretto would schedule it
    """


@main.command()
@click.argument("plan_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_reports_errors
def validate(plan_file: Path, as_json: bool) -> None:
    """Check PLAN_FILE; exit 0 if valid, 2 with located errors if not."""
    from stretto.plan import load_plan

    plan = load_plan(plan_file)
    if as_json:
        click.echo(json.dumps({"ok": True, "plan": plan.summary()}, indent=2))
    else:
        stages = len(plan.stages)
        click.echo(
            f"{plan_file}: ok ({len(plan.tasks)} step{'s' if len(plan.tasks) != 1 else ''} "
            f"in {stages} stage{'s' if stages != 1 else ''})"
        )


@main.command()
def schema() -> None:
    """Print the JSON Schema of a plan file (for editor completion)."""
    from stretto.plan import plan_json_schema

    click.echo(json.dumps(plan_json_schema(), indent=2))


@main.command()
@click.option("--force", is_flag=True, help="Overwrite an existing stretto.toml.")
@click.option(
    "--path",
    "repo",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("."),
    show_default=True,
    help="Repository to initialise.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@_reports_errors
def init(force: bool, repo: Path, as_json: bool) -> None:
    """Write a commented stretto.toml and keep .stretto/ out of git."""
    from stretto.config import init_project

    result = init_project(repo, force=force)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(f"wrote {result.config_path}")
    click.echo(f"  target branch: {result.target}")
    click.echo(f"  max agents:    {result.max_agents}")
    if result.gates:
        for name, command in result.gates.items():
            click.echo(f"  gate {name}: {command}")
    else:
        click.echo("  no test/lint/type commands detected; add gates to stretto.toml by hand")
    if result.excluded:
        click.echo(f"added .stretto/ to {result.exclude_path}")


@main.command()
@click.argument("plan_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Validate and show the schedule; run nothing.")
@click.option("--max-agents", type=click.IntRange(min=1), help="Agents running at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_reports_errors
def run(plan_file: Path, dry_run: bool, max_agents: int | None, as_json: bool) -> None:
    """Run PLAN_FILE (with --dry-run: only show how it would be scheduled)."""
    from stretto.dryrun import dry_run as make_dry_run
    from stretto.dryrun import render_text
    from stretto.errors import UsageError
    from stretto.plan import load_plan

    if not dry_run:
        raise UsageError("running agents is not implemented yet; use --dry-run")
    plan = load_plan(plan_file)
    report = make_dry_run(plan, max_agents=max_agents)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(render_text(report, color=sys.stdout.isatty()))
