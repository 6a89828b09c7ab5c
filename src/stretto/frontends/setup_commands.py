"""The CLI commands that check plans and set things up: ``validate``, ``schema``, ``init``,
``agents``, ``doctor`` and ``fake-model serve``; each a few lines around one :mod:`stretto.api`
call.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stretto import api


def register(main: click.Group, reports_errors: Callable[[Any], Any]) -> None:
    """Add the commands to the ``stretto`` group."""

    @main.command()
    @click.argument("plan_file", type=click.Path(path_type=Path, dir_okay=False))
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @reports_errors
    def validate(plan_file: Path, as_json: bool) -> None:
        """Check PLAN_FILE; exit 0 if valid, 2 with located errors if not."""
        plan = api.load_plan(plan_file)
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
        click.echo(json.dumps(api.plan_json_schema(), indent=2))

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
    @reports_errors
    def init(force: bool, repo: Path, as_json: bool) -> None:
        """Write a commented stretto.toml and keep .stretto/ out of git."""
        result = api.init_project(repo, force=force)
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
        for server in result.local:
            models = ", ".join(server.models[:4]) or "no models yet"
            click.echo(
                f"  local model server: {server.what} at {server.base_url} ({models}); "
                f"declared as [local.{server.name}], see docs/local-models.md"
            )

    @main.group(name="fake-model")
    def fake_model() -> None:
        """The scripted model server: drive real agent CLIs offline (see docs/fake-model.md)."""

    @fake_model.command(
        name="serve", context_settings={"ignore_unknown_options": True, "help_option_names": []}
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    @reports_errors
    def fake_model_serve(args: tuple[str, ...]) -> None:
        """Serve a script on 127.0.0.1: serve --script FILE [--port N] [--log FILE]."""
        sys.exit(api.serve_fake_model(args))

    @main.command()
    @click.option("--json", "as_json", is_flag=True, help="Print the agents as JSON.")
    @reports_errors
    def agents(as_json: bool) -> None:
        """List agent adapters, whether each CLI is installed, and its version."""
        infos = api.describe_agents(Path.cwd())
        if as_json:
            click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
            return
        width = max(len(i.name) for i in infos)
        for info in infos:
            if info.path:
                click.echo(f"  ok    {info.name:<{width}}  {info.version or '?'}  ({info.path})")
            else:
                click.echo(f"  --    {info.name:<{width}}  {info.problem}")
            if info.local:
                click.echo(f"        {'':<{width}}  local model server: {info.local}")

    @main.command()
    @click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
    @reports_errors
    def doctor(as_json: bool) -> None:
        """Check git, the repository, config, agents and gates; say how to fix each problem."""
        checks = api.run_checks(Path.cwd())
        failed = any(c.status == "fail" for c in checks)
        if as_json:
            click.echo(
                json.dumps({"ok": not failed, "checks": [c.to_dict() for c in checks]}, indent=2)
            )
        else:
            for check in checks:
                mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[check.status]
                click.echo(f"  {mark}  {check.name}: {check.detail}")
                if check.fix:
                    click.echo(f"        fix: {check.fix}")
        if failed:
            sys.exit(1)
