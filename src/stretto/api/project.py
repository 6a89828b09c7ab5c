"""The API's calls around runs: plans, the dry run, goals, costs, logs, clean, setup, doctor.

Thin wrappers, so that frontends import :mod:`stretto.api` only. Each takes the directory the
user is in (``cwd``) where the repository matters, and returns a value with ``to_dict()`` and,
where a terminal wants it, ``lines()`` / ``render()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stretto.errors import StrettoError


def _top(cwd: Path | str) -> Path:
    from stretto.git import toplevel

    return toplevel(Path(cwd))


def load_plan(path: Path | str) -> Any:
    """A plan file, validated (PlanError with file:line:column diagnostics otherwise)."""
    from stretto.plans.plan import load_plan as load

    return load(path)


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of a plan file."""
    from stretto.plans.plan import plan_json_schema as schema

    return schema()


def init_project(repo: Path, *, force: bool = False) -> Any:
    """Write a commented stretto.toml and keep ``.stretto/`` out of git."""
    from stretto.project.scaffold import init_project as init

    return init(repo, force=force)


def configured_agents(cwd: Path | str) -> int | None:
    """``max_agents`` from stretto.toml when ``cwd`` is in a configured repository."""
    from stretto.config import load_config
    from stretto.errors import RepoError

    try:
        config = load_config(Path(cwd))
    except RepoError:
        return None
    return config.max_agents if config.path is not None else None


def agent_settings(cwd: Path | str) -> Mapping[str, Mapping[str, Any]]:
    """``[agents.*]`` of stretto.toml, or nothing outside a (well-configured) repository."""
    try:
        from stretto.config import load_config

        return load_config(Path(cwd)).agents
    except StrettoError:
        return {}


def dry_run(
    cwd: Path | str,
    plan_file: Path,
    *,
    max_agents: int | None = None,
    budget: float | None = None,
    offline: bool = False,
) -> Any:
    """The schedule a plan would get (waves, lease waits, critical path) and its cost range.
    ``offline``: first check the run could go ``--offline`` (raises as the run would)."""
    from stretto.schedule.dryrun import dry_run as make

    if offline:
        from stretto.engine.runs import prepare_run

        prepare_run(Path(cwd), plan_file, max_agents=max_agents, budget=budget, offline=True)

    plan = load_plan(plan_file)
    report = make(plan, max_agents=max_agents, configured=configured_agents(cwd))
    report.costs = plan_costs(cwd, plan, budget)
    return report


def render_dry_run(report: Any, *, color: bool = False) -> str:
    """The dry run as text."""
    from stretto.schedule.dryrun import render_text

    return render_text(report, color=color)


def plan_costs(cwd: Path | str, plan: Any, budget: float | None) -> Any:
    """The dry run's cost estimate, when the repository routes or prices its agents."""
    try:
        from stretto.config import load_config

        repo = _top(cwd)
        config = load_config(repo)
    except StrettoError:
        return None

    def kind(agent: str) -> str:
        return str(config.agents.get(agent, {}).get("adapter") or agent)

    scripts = all(kind(t.agent or config.default_agent) == "shell" for t in plan.tasks)
    if not config.router.arms and scripts and not any(t.model for t in plan.tasks):
        return None  # scripts cost nothing: no estimate (and no import of the run machinery)
    from stretto.engine.runs import options_for
    from stretto.routing.spending import estimate_plan

    return estimate_plan(repo, plan, options_for(config, plan, budget=budget))


def plan_goal(
    cwd: Path | str,
    goal: str,
    *,
    planner: str | None = None,
    max_agents: int | None = None,
    budget: float | None = None,
) -> Any:
    """Plan ``goal`` with one model call; the plan is saved in its run's directory, not run."""
    from stretto.engine.goal import plan_goal as plan

    return plan(Path(cwd), goal, planner=planner, max_agents=max_agents, budget=budget)


def render_plan(planned: Any) -> list[str]:
    """A planned goal as a tree of stages and steps, then the estimate."""
    from stretto.engine.goal import render_plan as render

    return render(planned)


def cost_report(cwd: Path | str, *, run_id: str | None = None, by: str | None = None) -> Any:
    """What runs cost, from the ledger: one run (a prefix is enough), or all."""
    from stretto.engine.journal import read_journal
    from stretto.engine.runs import runs_root
    from stretto.routing.spending import cost_report as report

    top = _top(cwd)

    def landed_in(run: str) -> set[tuple[str, int]]:
        path = runs_root(top) / run / "journal.jsonl"
        if not path.is_file():
            return set()  # a run whose folder was removed: its landings are not known
        return {
            (str(r.fields.get("task")), int(r.fields.get("attempt") or 0))
            for r in read_journal(path)
            if r.type == "merged"
        }

    return report(top, run_id=run_id, by=by, landed_in=landed_in)


def explain_task(cwd: Path | str, task: str, *, run_id: str | None = None) -> Any:
    """Why each attempt of ``task`` ran on its agent and model."""
    from stretto.api.runs import open_run
    from stretto.routing.explain import explain_task as explain

    handle = open_run(cwd, run_id)
    return explain(handle.records(), handle.run_id, task)


def task_log(
    cwd: Path | str, task: str, *, run_id: str | None = None, attempt: int | None = None
) -> tuple[Path, str]:
    """The agent log of a task's attempt (default: its last), then its gate logs."""
    from stretto.engine.runs import task_log as log

    return log(_top(cwd), task, run_id=run_id, attempt=attempt)


def clean(cwd: Path | str, *, everything: bool = False) -> Any:
    """Remove worktrees, branches and processes left by runs that are not running."""
    from stretto.engine.cleanup import clean_repo

    return clean_repo(_top(cwd), everything=everything)


def build_demo_repo(path: Path) -> tuple[Path, Path]:
    """The demo's throwaway repository and its plan file."""
    from stretto.project.demo import build_demo_repo as build

    return build(path)


def serve_fake_model(args: Sequence[str]) -> int:
    """``stretto fake-model serve ...``: serve a script on 127.0.0.1 until interrupted."""
    from stretto.testing.fakemodel import serve_main

    return serve_main(list(args))


def describe_agents(cwd: Path | str) -> list[Any]:
    """Each agent adapter, whether its CLI is installed, and its version."""
    from stretto.project.doctor import describe_agents as describe

    return describe(agent_settings(cwd))


def run_checks(cwd: Path | str) -> list[Any]:
    """``stretto doctor``: what stands in the way, and how to fix it."""
    from stretto.project.doctor import run_checks as checks

    return checks(Path(cwd))


def server_token(cwd: Path | str, name: str = "mcp") -> tuple[str, Path]:
    """The bearer token of a local server (``mcp``, ``serve``) for this repository: made on
    first use (32 random bytes, hex) in ``.stretto/<name>-token``, 0600. Returns (token, file)."""
    import os
    import secrets

    from stretto.project.scaffold import state_dir

    repo = _top(cwd)
    path = repo / ".stretto" / f"{name}-token"
    if path.is_file():
        return path.read_text().strip(), path
    state_dir(repo)
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    return token, path


def repo_root(cwd: Path | str) -> Path:
    """The top level of the repository ``cwd`` is in (RepoError outside one)."""
    return _top(cwd)
