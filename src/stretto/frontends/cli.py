"""Command-line frontend: parse arguments, call :mod:`stretto.api`, render the result.

This is the only place that maps errors to exit codes. It imports nothing of stretto but the
API (whose names load on first use) and the errors, so ``stretto --help`` stays fast. Commands
that steer a running run (``events``, ``cancel``, ``retry``, ...) are in
:mod:`stretto.frontends.control_commands`; ``--help`` lists the commands by section.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from stretto import __version__, api
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
                click.echo(json.dumps(payload))  # one line: --json output is JSON lines
            else:
                click.echo(
                    f"error: {error.message}"
                    if not isinstance(error, InputError)
                    else error.message,
                    err=True,
                )
            sys.exit(error.exit_code)

    return wrapper  # type: ignore[return-value]


def _goal_options(func: F) -> F:
    """The options of ``stretto -g`` and ``stretto plan``."""
    options = [
        click.option("--planner", help="Agent that plans (default: [planner] agent)."),
        click.option("--plan-only", is_flag=True, help="Write and show the plan; run nothing."),
        click.option("--yes", "-y", is_flag=True, help="Run the plan without asking."),
        click.option("--max-agents", type=click.IntRange(min=1), help="Agents running at once."),
        click.option("--budget", type=click.FloatRange(min=0), help="Spend limit in USD."),
        click.option("--json", "as_json", is_flag=True, help="Print the plan and events as JSON."),
        click.option("--plain", is_flag=True, help="Plain timestamped lines even on a terminal."),
        click.option(
            "--detach",
            is_flag=True,
            help="Plan and run in the background (implies --yes); print the run id and return.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


SECTIONS = (
    ("Plan and run", ("run", "plan", "validate", "schema", "resume", "demo")),
    ("Watch and steer a run", ("live", "status", "events", "log", "cancel", "retry", "add",
                               "pause", "unpause", "budget", "parallelism", "runs")),
    ("See a run", ("report", "trace")),
    ("Costs and routing", ("cost", "explain")),
    ("Set up", ("init", "doctor", "agents", "clean", "fake-model")),
    ("Serve", ("mcp", "serve")),
    ("Clusters", ("cluster",)),
)  # fmt: skip


class SectionedGroup(click.Group):
    """A group whose ``--help`` lists commands under headings (``SECTIONS``)."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed: set[str] = set()
        widest = max((len(name) for name in self.list_commands(ctx)), default=0)
        limit = formatter.width - 6 - widest
        for title, names in SECTIONS:
            rows = []
            for name in names:
                command = self.get_command(ctx, name)
                if command is not None and not command.hidden:
                    rows.append((name, command.get_short_help_str(limit=limit)))
                    listed.add(name)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        rest = [n for n in self.list_commands(ctx) if n not in listed]
        rows = [(n, c.get_short_help_str()) for n in rest if (c := self.get_command(ctx, n))]
        if rows:
            with formatter.section("Other commands"):
                formatter.write_dl(rows)


@click.group(
    cls=SectionedGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,
)
@click.version_option(__version__, "-V", "--version", prog_name="stretto")
@click.option("-g", "--goal", help="Plan GOAL with one model call, show the plan, run it.")
@_goal_options
@click.pass_context
def main(ctx: click.Context, /, goal: str | None, **options: Any) -> None:
    """Run many CLI coding agents on one repository at once; land only verified work.

    \b
    Typical use:
      stretto init                      write stretto.toml for this repository
      stretto -g "Add rate limiting"    plan a goal with one model call, then run it
      stretto validate plan.yaml        check a plan without doing anything
      stretto run --dry-run plan.yaml   show how stretto would schedule it
    """
    if goal is None:
        if ctx.invoked_subcommand is None:
            click.echo(ctx.get_help())
        return
    if ctx.invoked_subcommand is not None:
        raise click.UsageError("-g GOAL plans and runs a goal; it takes no other command")
    _plan_and_run(goal, **options)


@_reports_errors
def _plan_and_run(
    goal: str,
    *,
    planner: str | None,
    plan_only: bool,
    yes: bool,
    max_agents: int | None,
    budget: float | None,
    as_json: bool,
    plain: bool,
    detach: bool = False,
) -> None:
    if detach and not plan_only:
        handle = api.start_run(
            Path.cwd(),
            api.Goal(goal),
            api.RunOptions(max_agents=max_agents, budget=budget, planner=planner),
            detach=True,
        )
        _detached(handle, as_json, planning=True)
        return
    if not as_json:
        click.echo("planning (one model call)...", err=True)
    planned = api.plan_goal(Path.cwd(), goal, planner=planner, max_agents=max_agents, budget=budget)
    if as_json:
        click.echo(json.dumps({"type": "plan", **planned.to_dict()}))
    else:
        click.echo("\n".join(api.render_plan(planned)))
    if plan_only:
        if not as_json:
            click.echo(f"run it later with: stretto run {planned.plan_path}")
        return
    if not yes:
        if not sys.stdin.isatty() or as_json:
            click.echo(
                f"not running: pass --yes to run without asking (plan saved: {planned.plan_path})",
                err=True,
            )
            sys.exit(1)
        if not click.confirm("Run this plan?", default=True):
            click.echo(f"not run; the plan is saved: {planned.plan_path}")
            return
    view = _view(as_json, plain)
    handle = _drive(view, lambda: api.run_planned(planned, sink=view), planned.run_id)
    _finish(handle, view, as_json)


@main.command("plan")
@click.argument("goal")
@_goal_options
def plan_command(goal: str, **options: Any) -> None:
    """Plan GOAL with one model call and show the plan; run it if you say so."""
    _plan_and_run(goal, **options)


def _view(as_json: bool, plain: bool) -> Any:
    from stretto.frontends.view import JsonView, LiveView, PlainView

    if as_json:
        return JsonView()
    if plain or not sys.stdout.isatty():
        return PlainView()
    return LiveView()


def _drive(view: Any, start: Callable[[], Any], run_id: str | None) -> Any:
    """Return ``start()`` (a run feeding ``view``); on a second Ctrl-C, say how to go on.

    The engine itself catches Ctrl-C, SIGTERM and SIGHUP: it ends its agents, journals the
    stop and returns a summary with status ``interrupted`` (see :func:`_finish`).
    """
    try:
        return start()
    except KeyboardInterrupt:
        view.close()
        _interrupted(run_id)
        sys.exit(130)
    except BaseException:
        view.close()
        raise


def _interrupted(run_id: str | None) -> None:
    which = f" {run_id}" if run_id else ""
    click.echo(
        f"\ninterrupted: run{which} stopped before its end; `stretto resume{which}` "
        "finishes it, `stretto clean` removes what it left",
        err=True,
    )


def _finish(handle: Any, view: Any, as_json: bool) -> None:
    from stretto.frontends.report_commands import save_report
    from stretto.frontends.view import render_summary

    view.close()
    summary = handle.summary
    report = save_report(handle)
    if as_json:
        click.echo(json.dumps({"type": "summary", **summary.to_dict(), "report": str(report)}))
    elif summary.status != "interrupted":
        click.echo("")
        click.echo(render_summary(summary))
        if report is not None:
            click.echo(f"report: {report}")
    if summary.status == "interrupted":
        _interrupted(summary.run_id)
        sys.exit(128 + (summary.signal or 2))
    if summary.status != "finished":
        sys.exit(1)


def _detached(handle: Any, as_json: bool, *, planning: bool = False) -> None:
    """What a detached start prints: the run id and how to follow and steer it."""
    if as_json:
        out = {"run_id": handle.run_id, "pid": handle.pid, "run_dir": str(handle.run_dir)}
        click.echo(json.dumps({"type": "detached", **out}))
        return
    doing = "plans the goal, then runs it" if planning else "runs"
    rid = handle.run_id
    click.echo(f"run {rid} started in the background (engine pid {handle.pid} {doing})")
    click.echo(f"  follow:  stretto events {rid} --follow")
    click.echo(f"  status:  stretto status {rid}")
    click.echo(f"  steer:   stretto pause|unpause|cancel {rid}; stretto budget {rid} USD")
    click.echo(f"  output:  {handle.run_dir / 'engine.log'}")


@main.command()
@click.argument("plan_file", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option("-g", "--goal", help="Plan GOAL with one model call, then run it (no PLAN_FILE).")
@click.option("--dry-run", is_flag=True, help="Validate and show the schedule; run nothing.")
@click.option(
    "--detach", is_flag=True, help="Run in the background; print the run id and return at once."
)
@click.option(
    "--live",
    is_flag=True,
    help="Run in the background and watch it in `stretto live` (q detaches).",
)
@click.option("--max-agents", type=click.IntRange(min=1), help="Agents running at once.")
@click.option("--json", "as_json", is_flag=True, help="Print events (or the dry run) as JSON.")
@click.option("--plain", is_flag=True, help="Plain timestamped lines even on a terminal.")
@click.option(
    "--budget",
    type=click.FloatRange(min=0),
    help="Spend limit for this run in USD (overrides the plan's and stretto.toml's).",
)
@click.option("--planner", help="Agent that plans a goal (default: [planner] agent).")
@click.option(
    "--offline",
    is_flag=True,
    help="Only agents on local model servers ([local.NAME]); refuse any that would reach the "
    "network.",
)
@click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Run attempts on this Dask scheduler's workers (tcp://host:8786; docs/cluster.md).",
)
@_reports_errors
def run(
    plan_file: Path | None,
    goal: str | None,
    dry_run: bool,
    detach: bool,
    live: bool,
    max_agents: int | None,
    as_json: bool,
    plain: bool,
    budget: float | None,
    planner: str | None,
    offline: bool,
    cluster: str | None,
) -> None:
    """Run PLAN_FILE (or plan and run -g GOAL): agents in parallel worktrees, gates, merge queue.

    With --detach the run goes on in the background, past a closed terminal; follow it with
    `stretto events RUN --follow` and steer it with `stretto pause|cancel|retry|budget`.

    Exit status: 0 when every task landed, 1 when some did not (or the budget was reached),
    2 for invalid input, 128+N when signal N stopped it (Ctrl-C: 130).
    """
    if (plan_file is None) == (goal is None):
        raise click.UsageError("give a PLAN_FILE or -g GOAL (one of them)")
    if cluster is not None and goal is not None:
        raise click.UsageError("--cluster takes a PLAN_FILE (plan the goal first with --plan-only)")
    if live and (dry_run or detach or as_json):
        raise click.UsageError(
            "--live opens the run in a terminal UI: no --dry-run, --detach, --json"
        )
    if live:
        from stretto.frontends.live_commands import check_terminal, open_live

        check_terminal(None)  # before the run starts, not after
        what = api.Goal(goal) if goal is not None else plan_file
        assert what is not None
        options = api.RunOptions(
            max_agents=max_agents, budget=budget, planner=planner, offline=offline, cluster=cluster
        )
        open_live(api.start_run(Path.cwd(), what, options, detach=True))
        return
    if goal is not None:
        if dry_run:
            raise click.UsageError("--dry-run takes a PLAN_FILE; plan a goal with --plan-only")
        if offline:
            raise click.UsageError(
                "--offline takes a PLAN_FILE for now: plan the goal with a local planner "
                "(stretto plan GOAL --planner AGENT --plan-only), then stretto run PLAN --offline"
            )
        _plan_and_run(
            goal, planner=planner, plan_only=False, yes=True, max_agents=max_agents,
            budget=budget, as_json=as_json, plain=plain, detach=detach,
        )  # fmt: skip
        return
    assert plan_file is not None
    if dry_run:
        report = api.dry_run(
            Path.cwd(), plan_file, max_agents=max_agents, budget=budget, offline=offline
        )
        if as_json:
            click.echo(json.dumps(report.to_dict()))  # compact: large plans give megabytes
        else:
            click.echo(api.render_dry_run(report, color=sys.stdout.isatty()))
        return
    options = api.RunOptions(max_agents=max_agents, budget=budget, offline=offline, cluster=cluster)
    if detach:
        _detached(api.start_run(Path.cwd(), plan_file, options, detach=True), as_json)
        return
    view = _view(as_json, plain)
    run_id = _new_run_id()
    handle = _drive(
        view,
        lambda: api.start_run(Path.cwd(), plan_file, options, sink=view, run_id=run_id),
        run_id,
    )
    _finish(handle, view, as_json)


def _new_run_id() -> str:
    return str(api.new_run_id())


@main.command()
@click.argument("run_id", required=False)
@click.option("--max-agents", type=click.IntRange(min=1), help="Agents running at once.")
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines.")
@click.option("--plain", is_flag=True, help="Plain timestamped lines even on a terminal.")
@click.option(
    "--budget",
    type=click.FloatRange(min=0),
    help="New spend limit for the run in USD (to go on after 'budget reached').",
)
@click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Go on with the Dask scheduler at ADDRESS (default: the one the run started with).",
)
@_reports_errors
def resume(
    run_id: str | None,
    max_agents: int | None,
    as_json: bool,
    plain: bool,
    budget: float | None,
    cluster: str | None,
) -> None:
    """Finish an interrupted, cancelled or stopped run (default: the latest)."""
    view = _view(as_json, plain)
    handle = _drive(
        view,
        lambda: api.resume_run(
            Path.cwd(), run_id, sink=view, max_agents=max_agents, budget=budget, cluster=cluster
        ),
        run_id,
    )
    _finish(handle, view, as_json)


@main.command()
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Also drop verified, unlanded work of interrupted runs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@click.option(
    "--cluster",
    metavar="ADDRESS",
    help="Also end agents and remove worktrees of dead workers on this cluster's workers.",
)
@_reports_errors
def clean(everything: bool, as_json: bool, cluster: str | None) -> None:
    """Remove worktrees, branches and processes left by runs that are not running."""
    if cluster is not None:
        cluster_commands.show_clean(cluster, as_json)
    report = api.clean(Path.cwd(), everything=everything)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(report.render())


@main.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where to build the demo repository (default: a new temp directory).",
)
@click.option("--json", "as_json", is_flag=True, help="Print events as JSON lines.")
@click.option("--plain", is_flag=True, help="Plain timestamped lines even on a terminal.")
@_reports_errors
def demo(directory: Path | None, as_json: bool, plain: bool) -> None:
    """Run a real 8-task plan on a throwaway repository (needs only python3 and git)."""
    import subprocess
    import tempfile

    base = directory or Path(tempfile.mkdtemp(prefix="stretto-demo-"))
    repo, plan_file = api.build_demo_repo(base / "calc" if directory is None else directory)
    if not as_json:
        click.echo(f"demo repository: {repo}\nplan: {plan_file}\n")
    view = _view(as_json, plain)
    run_id = _new_run_id()
    handle = _drive(view, lambda: api.start_run(repo, plan_file, sink=view, run_id=run_id), run_id)
    summary = handle.summary
    if not as_json:
        view.close()
        from stretto.frontends.view import render_summary

        click.echo("")
        click.echo(render_summary(summary))
        from stretto.frontends.report_commands import save_report

        report = save_report(handle)
        if report is not None:
            click.echo(f"report: {report}")
        click.echo("\ngit log of main:")
        graph = subprocess.run(
            ["git", "log", "--oneline", "--graph", "-n", "30", "main"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
        )
        click.echo(graph.stdout.rstrip())
        click.echo(f"\nlook around: cd {repo} && stretto status && stretto log div --attempt 1")
        if summary.status != "finished":
            sys.exit(1)
        return
    _finish(handle, view, as_json)


from stretto.frontends import (  # noqa: E402
    add_commands,
    cluster_commands,
    control_commands,
    live_commands,
    mcp_commands,
    read_commands,
    report_commands,
    serve_commands,
    setup_commands,
)

read_commands.register(main, _reports_errors)
control_commands.register(main, _reports_errors)
setup_commands.register(main, _reports_errors)
mcp_commands.register(main, _reports_errors)
report_commands.register(main, _reports_errors)
serve_commands.register(main, _reports_errors)
add_commands.register(main, _reports_errors)
live_commands.register(main, _reports_errors)
cluster_commands.register(main, _reports_errors)
