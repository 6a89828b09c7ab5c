"""stretto's run API: the one door between frontends and the engine.

The CLI, the terminal UI, the MCP and HTTP servers and the cluster backend import this package
and nothing below it (an import contract checks that in CI). A run is started, opened, followed
and steered here::

    from stretto import api

    run = api.start_run(".", "plan.yaml", detach=True)     # returns at once
    for record in run.events(follow=True):                  # every journal record, once, in order
        print(record.seq, record.type, dict(record.fields))
        if record.type == "attempt_started":
            run.cancel()                                     # agents stopped, work kept
    print(run.status().state)                               # "cancelled": `stretto resume` goes on

Names are loaded on first use, so ``import stretto.api`` costs nothing at start-up. The guide,
with every call and what it raises, is docs/api.md.

May import the engine and everything below it. Frontends import only this package and
:mod:`stretto.errors`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stretto.api.cluster import clean_cluster, start_local_cluster
    from stretto.api.project import (
        agent_settings,
        build_demo_repo,
        clean,
        configured_agents,
        cost_report,
        describe_agents,
        dry_run,
        explain_task,
        init_project,
        load_plan,
        plan_costs,
        plan_goal,
        plan_json_schema,
        render_dry_run,
        render_plan,
        repo_root,
        run_checks,
        serve_fake_model,
        server_token,
        task_log,
    )
    from stretto.api.report import RunReport, run_report
    from stretto.api.results import (
        PlanCheck,
        RunResult,
        TaskResult,
        WaitResult,
        check_plan,
        needs_attention,
        redact_secrets,
        run_result,
        save_plan_text,
        secret_values,
        task_diff,
        wait_for_news,
    )
    from stretto.api.runs import (
        AsyncRunHandle,
        ControlResult,
        RunHandle,
        list_runs,
        new_run_id,
        open_run,
    )
    from stretto.api.starting import (
        Goal,
        RunOptions,
        resume_run,
        run_planned,
        run_planned_detached,
        start_run,
    )
    from stretto.api.watch import LiveSnapshot, RunWatch, TaskRow
    from stretto.engine.journal import Record
    from stretto.engine.outcomes import RunSummary, TaskReport
    from stretto.engine.status import RunStatus, TaskStatus

_WHERE = {
    "stretto.api.runs": (
        "AsyncRunHandle",
        "ControlResult",
        "RunHandle",
        "list_runs",
        "new_run_id",
        "open_run",
    ),
    "stretto.api.starting": (
        "Goal",
        "RunOptions",
        "resume_run",
        "run_planned",
        "run_planned_detached",
        "start_run",
    ),
    "stretto.api.project": (
        "agent_settings",
        "build_demo_repo",
        "clean",
        "configured_agents",
        "cost_report",
        "describe_agents",
        "dry_run",
        "explain_task",
        "init_project",
        "load_plan",
        "plan_costs",
        "plan_goal",
        "plan_json_schema",
        "render_dry_run",
        "render_plan",
        "repo_root",
        "run_checks",
        "serve_fake_model",
        "server_token",
        "task_log",
    ),
    "stretto.api.results": (
        "PlanCheck",
        "RunResult",
        "TaskResult",
        "WaitResult",
        "check_plan",
        "needs_attention",
        "run_result",
        "save_plan_text",
        "task_diff",
        "wait_for_news",
        "redact_secrets",
        "secret_values",
    ),
    "stretto.api.report": ("RunReport", "run_report"),
    "stretto.api.watch": ("LiveSnapshot", "RunWatch", "TaskRow"),
    "stretto.api.cluster": ("clean_cluster", "start_local_cluster"),
    "stretto.engine.journal": ("Record",),
    "stretto.engine.outcomes": ("RunSummary", "TaskReport"),
    "stretto.engine.status": ("RunStatus", "TaskStatus"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [
    "AsyncRunHandle",
    "ControlResult",
    "Goal",
    "LiveSnapshot",
    "PlanCheck",
    "Record",
    "RunHandle",
    "RunOptions",
    "RunReport",
    "RunResult",
    "RunStatus",
    "RunSummary",
    "RunWatch",
    "TaskReport",
    "TaskResult",
    "TaskRow",
    "TaskStatus",
    "WaitResult",
    "agent_settings",
    "build_demo_repo",
    "check_plan",
    "clean",
    "clean_cluster",
    "configured_agents",
    "cost_report",
    "describe_agents",
    "dry_run",
    "explain_task",
    "init_project",
    "list_runs",
    "load_plan",
    "needs_attention",
    "new_run_id",
    "open_run",
    "plan_costs",
    "plan_goal",
    "plan_json_schema",
    "redact_secrets",
    "render_dry_run",
    "render_plan",
    "repo_root",
    "resume_run",
    "run_checks",
    "run_planned",
    "run_planned_detached",
    "run_report",
    "run_result",
    "save_plan_text",
    "secret_values",
    "serve_fake_model",
    "server_token",
    "start_local_cluster",
    "start_run",
    "task_diff",
    "task_log",
    "wait_for_news",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'stretto.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
