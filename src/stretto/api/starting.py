"""Starting runs through the API: :func:`start_run` (here or detached, a plan or a
:class:`Goal`), :func:`run_planned` and :func:`resume_run`; split from :mod:`stretto.api.runs`,
which opens, follows and steers runs once they exist.

Everything is checked before any effect: a bad plan raises and writes nothing (docs/api.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stretto.api.runs import RunHandle, Sink, _toplevel
from stretto.engine.runs import runs_root
from stretto.errors import UsageError

if TYPE_CHECKING:  # the plan module loads when a plan is started: readers never need it
    from stretto.plans.plan import Plan

__all__ = ["Goal", "RunOptions", "resume_run", "run_planned", "run_planned_detached", "start_run"]


@dataclass(frozen=True)
class Goal:
    """A free-form goal for :func:`start_run`: planned with one model call, then run."""

    text: str


@dataclass(frozen=True)
class RunOptions:
    """What a caller may set for one run; ``None`` keeps stretto.toml's (or the plan's) value.

    Attributes:
        max_agents: agents running at once.
        budget: spend limit for the run, in USD.
        planner: the agent that plans a :class:`Goal` (default: ``[planner] agent``).
        target: the branch verified work lands on (default: the plan's, else stretto.toml's).
        agent: the agent of steps that name none (default: ``default_agent``).
        offline: only agents on local model servers (or calling no model) may run; a plan
            that names another is refused before anything happens (docs/local-models.md).
        cluster: a Dask scheduler's address: attempts run on its workers (default:
            ``[cluster] scheduler``, else here).
    """

    max_agents: int | None = None
    budget: float | None = None
    planner: str | None = None
    target: str | None = None
    agent: str | None = None
    offline: bool = False
    cluster: str | None = None


def start_run(
    repo: Path | str,
    plan_or_goal: Path | str | Plan | Goal,
    options: RunOptions | None = None,
    *,
    detach: bool = False,
    sink: Sink | None = None,
    run_id: str | None = None,
) -> RunHandle:
    """Start a run of a plan (a file, or a loaded :class:`~stretto.plans.plan.Plan`) or of a
    :class:`Goal`.

    Everything is checked before any effect: the repository, stretto.toml, the plan, the
    target branch, the agents; a problem raises (InputError, UsageError, RepoError) and writes
    nothing. With ``detach=True`` the run goes on in its own engine process (it survives the
    caller, its terminal and its shell) and this returns at once; a goal is then planned by
    that engine. Otherwise the run is driven here to its end (``sink`` sees every record as it
    is journaled) and the handle carries its :attr:`~RunHandle.summary`.
    """
    from stretto.engine import runs as engine_runs

    options = options or RunOptions()
    top = _toplevel(repo)
    if isinstance(plan_or_goal, Goal) and options.offline:
        raise UsageError(
            "--offline takes a plan, not a goal, for now: plan the goal first with a local "
            "planner (stretto plan GOAL --planner AGENT --plan-only, where AGENT has "
            'local = "NAME"), then run the plan with --offline'
        )
    if isinstance(plan_or_goal, Goal):
        return _start_goal(top, plan_or_goal, options, detach=detach, sink=sink)
    from stretto.plans.plan import Plan

    if isinstance(plan_or_goal, Plan):
        plan, run_options = plan_or_goal, _options_for(top, plan_or_goal, options)
    else:
        _, plan, run_options = engine_runs.prepare_run(
            top,
            Path(plan_or_goal),
            max_agents=options.max_agents,
            budget=options.budget,
            target=options.target,
            agent=options.agent,
            offline=options.offline,
            cluster=options.cluster,
        )
    run_id = run_id or engine_runs.new_run_id()
    if detach:
        from stretto.engine.detach import spawn_engine

        journal = engine_runs.create_run(top, plan, run_options, run_id=run_id)
        pid = spawn_engine(top, journal)
        return RunHandle(top, journal.run_dir, pid=pid)
    summary = engine_runs.start_run(top, plan, run_options, sink=sink, run_id=run_id)
    return RunHandle(top, runs_root(top) / run_id, summary=summary)


def _options_for(repo: Path, plan: Plan, options: RunOptions) -> Any:
    from stretto.config import load_config
    from stretto.engine.preflight import check_offline, check_target
    from stretto.engine.runs import check_agents, options_for

    config = load_config(repo)
    run_options = options_for(
        config,
        plan,
        max_agents=options.max_agents,
        budget=options.budget,
        target=options.target,
        agent=options.agent,
        offline=options.offline,
        cluster=options.cluster,
    )
    check_target(repo, plan, run_options, config)
    check_agents(plan, run_options)
    check_offline(plan, run_options, config)
    return run_options


def _start_goal(
    repo: Path, goal: Goal, options: RunOptions, *, detach: bool, sink: Sink | None
) -> RunHandle:
    from stretto.engine.detach import start_detached_goal
    from stretto.engine.goal import plan_goal

    if detach:
        _, run_dir, pid = start_detached_goal(
            repo,
            goal.text,
            planner=options.planner,
            max_agents=options.max_agents,
            budget=options.budget,
        )
        return RunHandle(repo, run_dir, pid=pid)
    planned = plan_goal(
        repo, goal.text, planner=options.planner, max_agents=options.max_agents,
        budget=options.budget,
    )  # fmt: skip
    return run_planned(planned, sink=sink)


def run_planned(planned: Any, *, sink: Sink | None = None) -> RunHandle:
    """Run a planned goal here, to its end, under the run id it was planned for."""
    from stretto.engine.runs import start_run

    summary = start_run(
        planned.repo,
        planned.plan,
        planned.options,
        sink=sink,
        run_id=planned.run_id,
        preamble=planned.preamble(),
    )
    return RunHandle(planned.repo, runs_root(planned.repo) / planned.run_id, summary=summary)


def run_planned_detached(planned: Any) -> RunHandle:
    """Hand a planned goal to a detached engine; returns its handle at once."""
    from stretto.engine.detach import spawn_engine
    from stretto.engine.runs import create_run

    journal = create_run(
        planned.repo,
        planned.plan,
        planned.options,
        run_id=planned.run_id,
        preamble=planned.preamble(),
    )
    pid = spawn_engine(planned.repo, journal)
    return RunHandle(planned.repo, journal.run_dir, pid=pid)


def resume_run(
    repo: Path | str,
    run_id: str | None = None,
    *,
    sink: Sink | None = None,
    max_agents: int | None = None,
    budget: float | None = None,
    cluster: str | None = None,
) -> RunHandle:
    """Go on with an interrupted, cancelled or stopped run (default: the latest), here, to its
    end; commands sent while it was down are applied once. ``cluster``: another Dask
    scheduler's address than the one the run started with (for this resume)."""
    from stretto.engine.resume import resume_run as engine_resume

    top = _toplevel(repo)
    summary = engine_resume(
        top, run_id, sink=sink, max_agents=max_agents, budget=budget, cluster=cluster
    )
    return RunHandle(top, runs_root(top) / summary.run_id, summary=summary)
