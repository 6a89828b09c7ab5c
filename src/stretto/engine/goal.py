"""From a goal to a plan: ``stretto -g GOAL`` and ``stretto plan GOAL``.

One call to the planning agent (:func:`~stretto.planning.planner.plan_from_goal`, with at most one
repair
call when its answer is not a valid plan) writes ``.stretto/runs/<id>/plan.yaml``. The calls'
tokens and dollars go to the ledger like any attempt's; the run that follows (if the user says
so) uses the same id, so the plan, the planning calls and the work sit side by side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stretto.config import Config, load_config
from stretto.errors import StrettoError, UsageError
from stretto.git import rev_parse, toplevel
from stretto.options import RunOptions
from stretto.plans.plan import Plan
from stretto.routing.ledger import Entry

#: Adapters that can answer a planning call with structured output.
PLANNERS = ("claude", "codex", "gemini")


@dataclass
class Planned:
    """A plan made from a goal, saved in its run directory, not run yet."""

    repo: Path
    run_id: str
    goal: str
    plan: Plan
    options: RunOptions
    plan_path: Path
    calls: Sequence[Any]  # stretto.planning.planner.PlannerCall
    entries: Sequence[Entry]  # their ledger entries
    warnings: Sequence[str]
    costs: Any = None  # stretto.routing.spending.PlanCost

    def preamble(self) -> list[tuple[str, dict[str, Any]]]:
        """Journal records for the run: the goal and each planning call."""
        from stretto.routing.dispatch import planner_call_record

        out: list[tuple[str, dict[str, Any]]] = [("goal", {"goal": self.goal})]
        for call, entry in zip(self.calls, self.entries, strict=True):
            out.append(("planner_call", planner_call_record(call, entry)))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``--json``)."""
        from stretto.routing.dispatch import planner_call_record

        return {
            "run_id": self.run_id,
            "goal": self.goal,
            "plan_file": str(self.plan_path),
            "plan": self.plan.summary(),
            "planner_calls": [
                planner_call_record(c, e) for c, e in zip(self.calls, self.entries, strict=True)
            ],
            "warnings": list(self.warnings),
            "cost": self.costs.to_dict() if self.costs is not None else None,
        }


def planner_agent(config: Config, override: str | None) -> str:
    """The agent that plans: ``--planner``, else ``[planner] agent``; it must be able to."""
    from stretto.agents import get_adapter

    name = override or config.planner.agent
    if not name:
        raise UsageError(
            "no planning agent: pass --planner claude (or codex, gemini), or set "
            '[planner] agent = "claude" in stretto.toml'
        )
    adapter = get_adapter(name, config.agents.get(name))
    if not hasattr(adapter, "plan_launch"):
        raise UsageError(
            f"agent '{name}' cannot plan (it has no structured-output mode stretto knows); "
            f"use one of: {', '.join(PLANNERS)}"
        )
    return name


def check_goal(cwd: Path, goal: str, planner: str | None) -> tuple[Path, Config, str]:
    """What planning ``goal`` needs, checked before any model call: the repository, its
    config, an agent that can plan, a router policy that loads. Returns them."""
    if not goal.strip():
        raise UsageError(
            'the goal is empty; say what to do, e.g. stretto -g "Add a --verbose flag"'
        )
    repo = toplevel(cwd)
    config = load_config(repo)
    agent = planner_agent(config, planner)
    if config.router.arms:  # a damaged policy would stop the run: say so before paying for a plan
        from stretto.routing.dispatch import POLICY_FILE, router_config
        from stretto.routing.router import Policy

        Policy.load(repo / POLICY_FILE, router_config(config.router))
    if rev_parse(repo, f"refs/heads/{config.target}") is None:
        raise UsageError(
            f"target branch '{config.target}' does not exist in {repo}; create it "
            f"(`git branch {config.target}`), or set 'target' in stretto.toml"
        )
    return repo, config, agent


def plan_goal(
    cwd: Path,
    goal: str,
    *,
    planner: str | None = None,
    max_agents: int | None = None,
    budget: float | None = None,
    run_id: str | None = None,
) -> Planned:
    """Ask the planning agent for a plan for ``goal``; validate it; save it; run nothing.

    ``run_id``: the run the plan is for (a detached ``-g`` made it before planning).

    Raises:
        UsageError: empty goal, or no agent that can plan.
        PlanningError: the answer stayed invalid after one repair call (it is shown).
    """
    from stretto.engine.runs import check_agents, new_run_id, options_for, runs_root
    from stretto.process import DEFAULT_ALLOW, allowed_env
    from stretto.project.scaffold import state_dir

    repo, config, agent = check_goal(cwd, goal, planner)
    run_id = run_id or new_run_id()
    out_dir = runs_root(repo) / run_id
    state_dir(repo)
    env = allowed_env(os.environ, (*DEFAULT_ALLOW, *config.env_allow))
    from stretto.planning.planner import plan_from_goal

    try:
        result = plan_from_goal(
            repo,
            goal,
            agent=agent,
            settings=config.agents.get(agent, {}),
            model=config.planner.model,
            out_dir=out_dir,
            env=env,
            timeout=config.planner.timeout,
        )
    except StrettoError as error:
        _book(repo, run_id, agent, getattr(error, "calls", ()), config)
        raise
    entries = _book(repo, run_id, agent, result.calls, config)
    options = options_for(config, result.plan, max_agents=max_agents, budget=budget)
    if rev_parse(repo, f"refs/heads/{options.target}") is None:
        raise UsageError(
            f"target branch '{options.target}' does not exist; create it or set 'target' in "
            "stretto.toml"
        )
    check_agents(result.plan, options)
    planned = Planned(
        repo,
        run_id,
        goal,
        result.plan,
        options,
        Path(result.plan.source),
        result.calls,
        entries,
        result.warnings,
    )
    from stretto.routing.spending import estimate_plan

    planned.costs = estimate_plan(repo, result.plan, options)
    return planned


def _book(repo: Path, run_id: str, agent: str, calls: Sequence[Any], config: Config) -> list[Entry]:
    """Write the planning calls' ledger entries (they are paid for, valid answer or not)."""
    from stretto.localmodels import server_of
    from stretto.routing.dispatch import planner_call_entry
    from stretto.routing.ledger import Ledger, model_prices

    ledger = Ledger.for_repo(repo)
    kind = str(config.agents.get(agent, {}).get("adapter") or agent)
    local = server_of(config.agents.get(agent))
    entries = []
    for number, call in enumerate(calls, 1):
        entry = planner_call_entry(
            call,
            run_id=run_id,
            task="",
            number=number,
            kind="plan",
            agent_kind=kind,
            prices=model_prices(config.prices),
            local=local.name if local is not None else None,
        )
        ledger.append(entry)
        entries.append(entry)
    return entries


def render_plan(planned: Planned) -> list[str]:
    """The plan as a tree of stages and steps with owned files, then the estimate."""
    plan = planned.plan
    calls = len(planned.calls)
    lines = [
        f"plan for: {planned.goal}",
        f"  {len(plan.tasks)} step(s) in {len(plan.stages)} stage(s); "
        f"{calls} planning call{'s' * (calls != 1)}"
        + (f", ${sum(c.cost_usd or 0 for c in planned.calls):.4f}" if calls else ""),
    ]
    for stage in plan.stages:
        after = f"  (after {', '.join(stage.depends_on)})" if stage.depends_on else ""
        lines.append(f"stage {stage.name}{after}")
        for number, task_id in enumerate(stage.task_ids, 1):
            task = plan.task(task_id)
            last = number == len(stage.task_ids)
            branch, stem = ("└─", "   ") if last else ("├─", "│  ")
            lines.append(f"  {branch} {task.id}  [{task.role}, {task.complexity}]")
            lines.append(f"  {stem}   {task.goal}")
            files = ", ".join(task.files) if task.files else "everything (no files declared)"
            lines.append(f"  {stem}   owns: {files}")
            if task.explicit_deps:
                lines.append(f"  {stem}   after: {', '.join(task.explicit_deps)}")
            if task.gates:
                lines.append(f"  {stem}   gates: {'; '.join(task.gates)}")
    for warning in planned.warnings:
        lines.append(f"warning: {warning}")
    if planned.costs is not None:
        lines.append("estimated cost (first attempt .. every retry escalated):")
        lines.extend(f"  {line}" for line in planned.costs.lines())
    lines.append(f"saved: {planned.plan_path}")
    return lines
