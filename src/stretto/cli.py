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
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
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
) -> None:
    from stretto.goal import plan_goal, render_plan

    if not as_json:
        click.echo("planning (one model call)...", err=True)
    planned = plan_goal(Path.cwd(), goal, planner=planner, max_agents=max_agents, budget=budget)
    if as_json:
        click.echo(json.dumps({"type": "plan", **planned.to_dict()}))
    else:
        click.echo("\n".join(render_plan(planned)))
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
    from stretto.runs import start_run

    view = _view(as_json, plain)
    summary = _drive(
        view,
        lambda: start_run(
            planned.repo,
            planned.plan,
            planned.options,
            sink=view,
            run_id=planned.run_id,
            preamble=planned.preamble(),
        ),
        planned.run_id,
    )
    _finish(summary, view, as_json)


@main.command("plan")
@click.argument("goal")
@_goal_options
def plan_command(goal: str, **options: Any) -> None:
    """Plan GOAL with one model call and show the plan; run it if you say so."""
    _plan_and_run(goal, **options)


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
    from stretto.scaffold import init_project

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


def _configured_agents() -> int | None:
    """``max_agents`` from stretto.toml when the current directory is in a configured repo."""
    from stretto.config import load_config
    from stretto.errors import RepoError

    try:
        config = load_config(Path.cwd())
    except RepoError:
        return None
    return config.max_agents if config.path is not None else None


def _view(as_json: bool, plain: bool) -> Any:
    from stretto.view import JsonView, LiveView, PlainView

    if as_json:
        return JsonView()
    if plain or not sys.stdout.isatty():
        return PlainView()
    return LiveView()


def _drive(view: Any, start: Callable[[], Any], run_id: str | None) -> Any:
    """Return ``start()`` (a run feeding ``view``); on Ctrl-C, say how to go on and exit 130."""
    try:
        return start()
    except KeyboardInterrupt:
        view.close()
        which = f" {run_id}" if run_id else ""
        click.echo(
            f"\ninterrupted: run{which} stopped before its end; `stretto resume{which}` "
            "finishes it, `stretto clean` removes what it left",
            err=True,
        )
        sys.exit(130)
    except BaseException:
        view.close()
        raise


def _finish(summary: Any, view: Any, as_json: bool) -> None:
    from stretto.view import render_summary

    view.close()
    if as_json:
        click.echo(json.dumps({"type": "summary", **summary.to_dict()}))
    else:
        click.echo("")
        click.echo(render_summary(summary))
    if summary.status != "finished":
        sys.exit(1)


@main.command()
@click.argument("plan_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Validate and show the schedule; run nothing.")
@click.option("--max-agents", type=click.IntRange(min=1), help="Agents running at once.")
@click.option("--json", "as_json", is_flag=True, help="Print events (or the dry run) as JSON.")
@click.option("--plain", is_flag=True, help="Plain timestamped lines even on a terminal.")
@click.option(
    "--budget",
    type=click.FloatRange(min=0),
    help="Spend limit for this run in USD (overrides the plan's and stretto.toml's).",
)
@_reports_errors
def run(
    plan_file: Path,
    dry_run: bool,
    max_agents: int | None,
    as_json: bool,
    plain: bool,
    budget: float | None,
) -> None:
    """Run PLAN_FILE: agents in parallel worktrees, gates, merge queue.

    Exit status: 0 when every task landed, 1 when some did not (or the budget was reached),
    2 for invalid input.
    """
    if dry_run:
        from stretto.dryrun import dry_run as make_dry_run
        from stretto.dryrun import render_text
        from stretto.plan import load_plan

        plan = load_plan(plan_file)
        report = make_dry_run(plan, max_agents=max_agents, configured=_configured_agents())
        report.costs = _plan_costs(plan, budget)
        if as_json:
            click.echo(json.dumps(report.to_dict()))  # compact: large plans give megabytes
        else:
            click.echo(render_text(report, color=sys.stdout.isatty()))
        return
    from stretto.runs import new_run_id, prepare_run, start_run

    repo, plan, options = prepare_run(Path.cwd(), plan_file, max_agents=max_agents, budget=budget)
    view = _view(as_json, plain)
    run_id = new_run_id()
    summary = _drive(view, lambda: start_run(repo, plan, options, sink=view, run_id=run_id), run_id)
    _finish(summary, view, as_json)


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
@_reports_errors
def resume(
    run_id: str | None, max_agents: int | None, as_json: bool, plain: bool, budget: float | None
) -> None:
    """Finish an interrupted run (default: the latest), or one that reached its budget."""
    from stretto.resume import resume_run

    view = _view(as_json, plain)
    summary = _drive(
        view,
        lambda: resume_run(Path.cwd(), run_id, sink=view, max_agents=max_agents, budget=budget),
        run_id,
    )
    _finish(summary, view, as_json)


def _plan_costs(plan: Any, budget: float | None) -> Any:
    """The dry run's cost estimate, when the repository routes or prices its agents."""
    from stretto.git import toplevel

    try:
        from stretto.config import load_config

        repo = toplevel(Path.cwd())
        config = load_config(repo)
    except StrettoError:
        return None

    def kind(agent: str) -> str:
        return str(config.agents.get(agent, {}).get("adapter") or agent)

    scripts = all(kind(t.agent or config.default_agent) == "shell" for t in plan.tasks)
    if not config.router.arms and scripts and not any(t.model for t in plan.tasks):
        return None  # scripts cost nothing: no estimate (and no import of the run machinery)
    from stretto.runs import options_for
    from stretto.spending import estimate_plan

    return estimate_plan(repo, plan, options_for(config, plan, budget=budget))


@main.command()
@click.option("--run", "run_id", help="Only this run (a unique prefix is enough).")
@click.option(
    "--by",
    type=click.Choice(["task", "model", "agent", "day", "run"]),
    default=None,
    help="Group the spend (default: by task for one run, by run across runs).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the spend as JSON.")
@_reports_errors
def cost(run_id: str | None, by: str | None, as_json: bool) -> None:
    """Show what agents and planning calls cost: this run, or across runs."""
    from stretto.git import toplevel
    from stretto.spending import cost_report

    report = cost_report(toplevel(Path.cwd()), run_id=run_id, by=by)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo("\n".join(report.lines()))


@main.command()
@click.argument("task")
@click.option("--run", "run_id", help="Run id (default: the latest).")
@click.option("--json", "as_json", is_flag=True, help="Print the routing decisions as JSON.")
@_reports_errors
def explain(task: str, run_id: str | None, as_json: bool) -> None:
    """Show why each attempt of TASK ran on its agent and model (features, estimates, rule)."""
    from stretto.explain import explain_task
    from stretto.git import toplevel

    report = explain_task(toplevel(Path.cwd()), task, run_id=run_id)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo("\n".join(report.lines()))


@main.command()
@click.argument("run_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@_reports_errors
def status(run_id: str | None, as_json: bool) -> None:
    """Show the state of a run (default: the latest) and of each of its tasks."""
    from stretto.git import toplevel
    from stretto.runs import run_status

    state = run_status(toplevel(Path.cwd()), run_id)
    if as_json:
        click.echo(json.dumps(state.to_dict(), indent=2))
        return
    counts = ", ".join(f"{n} {k}" for k, n in sorted(state.counts().items()))
    click.echo(f"run {state.run_id}: {state.state} ({state.plan}; target {state.target}; {counts})")
    width = max((len(t) for t in state.tasks), default=8)
    for task in state.tasks.values():
        reason = f"  {task.reason}" if task.reason else ""
        click.echo(f"  {task.state:<11} {task.id:<{width}}  attempts {task.attempts}{reason}")
    if state.state == "interrupted":
        click.echo(f"this run was interrupted; finish it with `stretto resume {state.run_id}`")
    elif state.state == "budget_reached":
        click.echo(
            f"this run stopped at its budget; go on with `stretto resume {state.run_id} "
            "--budget USD` (`stretto cost --run` shows the spend)"
        )
    elif state.state == "out_of_credit":
        click.echo(
            "this run stopped because a provider is out of credit; top the account up, then "
            f"`stretto resume {state.run_id}`"
        )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@_reports_errors
def runs(as_json: bool) -> None:
    """List the runs in this repository."""
    import time as _time

    from stretto.git import toplevel
    from stretto.runs import list_run_ids, run_status

    repo = toplevel(Path.cwd())
    states = [run_status(repo, run_id) for run_id in list_run_ids(repo)]
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in states], indent=2))
        return
    if not states:
        click.echo("no runs yet; start one with `stretto run PLAN`")
    for state in states:
        when = _time.strftime("%Y-%m-%d %H:%M", _time.localtime(state.started))
        counts = state.counts()
        click.echo(
            f"{state.run_id}  {when}  {state.state:<11}  {counts.get('landed', 0)}/"
            f"{len(state.tasks)} landed  {state.plan}"
        )


@main.command()
@click.argument("task")
@click.option("--run", "run_id", help="Run id (default: the latest).")
@click.option("--attempt", type=click.IntRange(min=1), help="Attempt number (default: the last).")
@_reports_errors
def log(task: str, run_id: str | None, attempt: int | None) -> None:
    """Print a task's agent log and gate logs."""
    from stretto.git import toplevel
    from stretto.runs import task_log

    path, text = task_log(toplevel(Path.cwd()), task, run_id=run_id, attempt=attempt)
    click.echo(f"==> {path}")
    click.echo(text, nl=False)


@main.command()
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Also drop verified, unlanded work of interrupted runs.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
@_reports_errors
def clean(everything: bool, as_json: bool) -> None:
    """Remove worktrees, branches and processes left by runs that are not running."""
    from stretto.cleanup import clean_repo
    from stretto.git import toplevel

    report = clean_repo(toplevel(Path.cwd()), everything=everything)
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

    from stretto.demo import build_demo_repo
    from stretto.runs import new_run_id, prepare_run, start_run

    base = directory or Path(tempfile.mkdtemp(prefix="stretto-demo-"))
    repo, plan_file = build_demo_repo(base / "calc" if directory is None else directory)
    if not as_json:
        click.echo(f"demo repository: {repo}\nplan: {plan_file}\n")
    _, plan, options = prepare_run(repo, plan_file)
    view = _view(as_json, plain)
    run_id = new_run_id()
    summary = _drive(view, lambda: start_run(repo, plan, options, sink=view, run_id=run_id), run_id)
    if not as_json:
        view.close()
        from stretto.view import render_summary

        click.echo("")
        click.echo(render_summary(summary))
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
    _finish(summary, view, as_json)


@main.group(name="fake-model")
def fake_model() -> None:
    """The scripted model server: drive real agent CLIs offline (see docs/fake-model.md)."""


@fake_model.command(
    name="serve", context_settings={"ignore_unknown_options": True, "help_option_names": []}
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@_reports_errors
def fake_model_serve(args: tuple[str, ...]) -> None:
    """Serve a script on 127.0.0.1: serve --script FILE [--port N] [--log FILE]."""
    from stretto.testing.fakemodel import serve_main

    sys.exit(serve_main(list(args)))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the agents as JSON.")
@_reports_errors
def agents(as_json: bool) -> None:
    """List agent adapters, whether each CLI is installed, and its version."""
    from stretto.doctor import describe_agents

    settings: dict[str, Any] = {}
    try:
        from stretto.config import load_config

        settings = load_config(Path.cwd()).agents
    except StrettoError:
        pass  # outside a repository, or a broken config: list with defaults
    infos = describe_agents(settings)
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    width = max(len(i.name) for i in infos)
    for info in infos:
        if info.path:
            click.echo(f"  ok    {info.name:<{width}}  {info.version or '?'}  ({info.path})")
        else:
            click.echo(f"  --    {info.name:<{width}}  {info.problem}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@_reports_errors
def doctor(as_json: bool) -> None:
    """Check git, the repository, config, agents and gates; say how to fix each problem."""
    from stretto.doctor import run_checks

    checks = run_checks(Path.cwd())
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
