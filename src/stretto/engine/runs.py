"""Runs on disk: starting one, finding them, and reading their state from the journal.

The Python API behind ``stretto run``, ``status``, ``runs`` and ``log``. A run's state is a fold
of its journal (:func:`fold_status`); nothing else is trusted or needed.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stretto.engine.journal import (
    JOURNAL_NAME,
    Journal,
    crashpoint,
    is_live,
    parse_record,
    read_journal,
)
from stretto.engine.outcomes import RunSummary
from stretto.engine.status import RunStatus, fold_status
from stretto.errors import RunError, StorageError, UnknownRunError, UsageError
from stretto.files import storage_fault, write_atomic
from stretto.git import rev_parse, toplevel
from stretto.options import RunOptions

if TYPE_CHECKING:  # the plan and config modules load on first use: readers never need them
    from stretto.config import Config
    from stretto.engine.context import Sink
    from stretto.plans.plan import Plan

STATE_DIR = ".stretto"


def runs_root(repo: Path) -> Path:
    """``<repo>/.stretto/runs``."""
    return repo / STATE_DIR / "runs"


GENERATED_RUN_ID = re.compile(r"\d{8}-\d{6}-\d{3}-[0-9a-f]{4}")
"""The shape of the run ids :func:`new_run_id` makes."""


def new_run_id() -> str:
    """A unique, ref-safe run id that sorts by start time: ``20261128-054812-347-a3f9``."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}-{int(now * 1000) % 1000:03d}-{os.urandom(2).hex()}"


def options_for(
    config: Config,
    plan: Plan,
    *,
    max_agents: int | None = None,
    budget: float | None = None,
    target: str | None = None,
    agent: str | None = None,
    offline: bool = False,
    cluster: str | None = None,
) -> RunOptions:
    """Run options from config, overridden by the plan, overridden by the caller (the command
    line, an MCP or HTTP request): ``target`` branch, ``agent`` for steps that name none.
    ``offline`` keeps only the router's arms on local model servers (--offline)."""
    if budget is None:
        budget = plan.budget if plan.budget is not None else config.budget.run
    router = config.router
    if offline and router.arms:
        from dataclasses import replace

        from stretto.localmodels import offline_ok

        kept = tuple(a for a in router.arms if offline_ok(a.agent, config.agents))
        router = replace(router, arms=kept) if kept else router  # none: preflight says so
    return RunOptions(
        target=target or plan.target or config.target,
        max_agents=max_agents or plan.max_agents or config.max_agents,
        default_agent=agent or config.default_agent,
        gates=config.gates,
        scope=config.scope,
        link_dirs=config.link_dirs,
        setup=config.setup,
        sparse=config.sparse,
        env_allow=config.env_allow,
        agent_settings=config.agents,
        agent_timeout=float(config.attempt.timeout),
        limits=config.attempt,
        router=router,
        budget=budget,
        daily_cap=config.budget.daily,
        on_exceed=config.budget.on_exceed,
        prices=config.prices,
        planner=config.planner,
        sandbox=config.sandbox,
        merge=config.merge,
        offline=offline,
        cluster=cluster or config.cluster,
    )


def prepare_run(
    cwd: Path,
    plan_file: Path,
    *,
    max_agents: int | None = None,
    budget: float | None = None,
    target: str | None = None,
    agent: str | None = None,
    offline: bool = False,
    cluster: str | None = None,
) -> tuple[Path, Plan, RunOptions]:
    """Validate everything a run needs before any effect: repo, config, plan, target."""
    repo = toplevel(cwd)
    from stretto.config import load_config
    from stretto.plans.plan import load_plan

    config = load_config(repo)
    plan = load_plan(plan_file)
    options = options_for(
        config,
        plan,
        max_agents=max_agents,
        budget=budget,
        target=target,
        agent=agent,
        offline=offline,
        cluster=cluster,
    )
    from stretto.engine.preflight import check_agents, check_offline, check_paths, check_target

    check_target(repo, plan, options, config)
    check_agents(plan, options, config)
    check_offline(plan, options, config)
    check_paths(repo, plan)
    from stretto.routing.dispatch import load_policy

    load_policy(repo, options)  # a damaged policy file stops the run before it starts
    return repo, plan, options


def check_agents(plan: Plan, options: RunOptions) -> None:
    """Every agent the plan names must exist and be configured well enough to start
    (see :func:`stretto.engine.preflight.check_agents`)."""
    from stretto.engine.preflight import check_agents as check

    check(plan, options)


def create_run(
    repo: Path,
    plan: Plan,
    options: RunOptions,
    *,
    run_id: str | None = None,
    preamble: Sequence[tuple[str, dict[str, Any]]] = (),
    sink: Sink | None = None,
    journal: Journal | None = None,
) -> Journal:
    """Create the run's directory (0700), control inbox and journal, and journal its start.

    ``preamble``: records to journal right after ``run_started`` (the goal and the planning
    calls of ``stretto -g``). ``journal``: one created earlier (a detached ``-g`` journals its
    goal first). Returns the open journal; this process is its writer until it closes it or
    hands it to a detached engine.
    """
    run_id = run_id or new_run_id()
    from stretto.engine.control import make_inbox
    from stretto.engine.plan_graph import write_plan_graph
    from stretto.project.scaffold import state_dir

    state_dir(repo)  # private, and never shown by `git status`
    same = running_same_plan(repo, plan, options.target)
    if same is not None:
        raise UsageError(
            f"run {same} is already running this plan on '{options.target}'; a second run "
            "would do every task again. Follow it (`stretto events "
            f"{same} --follow`), or cancel it first (`stretto cancel {same}`)"
        )
    run_dir = runs_root(repo) / run_id
    ours = journal is None  # not one a detached `-g` made (it holds the goal and its cost)
    try:
        journal = journal or Journal.create(run_dir)
    except StorageError as error:
        _remove_unstarted(run_dir)
        raise _cannot_start(run_id, error) from None
    if ours:
        crashpoint("after-journal-created")  # an empty journal: resume says to start again
    try:
        make_inbox(run_dir)
        plan_bytes = Path(plan.source).read_bytes()
        write_atomic(run_dir / "plan.yaml", plan_bytes)
        write_plan_graph(run_dir, plan, plan_bytes)  # for readers: no second parse of the plan
        record = journal.append(
            "run_started",
            sync=True,
            run_id=run_id,
            plan=plan.name,
            plan_source=plan.source,
            plan_digest=plan.digest,
            tasks=[t.id for t in plan.tasks],
            options=options.to_dict(),
            base=rev_parse(repo, f"refs/heads/{options.target}"),
            pid=os.getpid(),
        )
        if sink:
            sink(record)
        for type_, fields in preamble:
            record = journal.append(type_, **fields)
            if sink:
                sink(record)
        journal.sync()
    except BaseException as error:
        journal.close()
        if not isinstance(error, Exception) or storage_fault(error) is None:
            raise
        if ours:
            _remove_unstarted(run_dir)
        raise _cannot_start(run_id, error) from None
    return journal


def _remove_unstarted(run_dir: Path) -> None:
    """Remove the directory of a run that could not start: no agent ran, nothing to resume."""
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)


def _cannot_start(run_id: str, error: Exception) -> StorageError:
    what = storage_fault(error) or str(error)
    return StorageError(
        f"cannot start run {run_id}: stretto could not write its files ({what}). Nothing ran "
        "and nothing was changed; free space on that disk (or make it writable) and start "
        "the run again",
        reason=what,
    )


def running_same_plan(repo: Path, plan: Plan, target: str) -> str | None:
    """The id of a live run of the same plan (same digest) onto the same target, if any."""
    for run_id in list_run_ids(repo):
        run_dir = runs_root(repo) / run_id
        if not is_live(run_dir):
            continue
        try:
            with (run_dir / JOURNAL_NAME).open("rb") as handle:
                first = handle.readline(1 << 20)
            start = parse_record(first.rstrip(b"\n"))
        except (OSError, ValueError):
            continue
        options = start.fields.get("options") or {}
        if (
            start.type == "run_started"
            and start.fields.get("plan_digest") == plan.digest
            and options.get("target") == target
        ):
            return run_id
    return None


def drive_run(
    repo: Path, plan: Plan, options: RunOptions, journal: Journal, *, sink: Sink | None = None
) -> RunSummary:
    """Run a created run (see :func:`create_run`) to its end, then close its journal."""
    import asyncio

    from stretto.engine.runner import Runner

    try:
        records = read_journal(journal.path)
        start = next(r for r in records if r.type == "run_started")
        runner = Runner(repo, plan, options, journal, str(start.fields["run_id"]), sink=sink)
        runner.queue.synced_at = start.fields.get("base")  # no need to ask git again
        runner.planner_calls = sum(1 for r in records if r.type == "planner_call")
        return asyncio.run(runner.run())
    finally:
        journal.close()


def start_run(
    repo: Path,
    plan: Plan,
    options: RunOptions,
    *,
    sink: Sink | None = None,
    run_id: str | None = None,
    preamble: Sequence[tuple[str, dict[str, Any]]] = (),
) -> RunSummary:
    """Create the run's directory and journal, then run the plan to its end, here."""
    journal = create_run(repo, plan, options, run_id=run_id, preamble=preamble, sink=sink)
    return drive_run(repo, plan, options, journal, sink=sink)


# --------------------------------------------------------------------------- reading runs


def list_run_ids(repo: Path) -> list[str]:
    """Run ids in this repository, oldest first."""
    root = runs_root(repo)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / JOURNAL_NAME).is_file())


def resolve_run(repo: Path, run_id: str | None) -> Path:
    """The directory of ``run_id`` (a unique prefix is enough), or of the latest run."""
    ids = list_run_ids(repo)
    if not ids:
        error = UnknownRunError if run_id is not None else RunError
        raise error(f"no runs yet in {repo}; start one with `stretto run PLAN`")
    if run_id is None:
        return runs_root(repo) / ids[-1]
    matches = [i for i in ids if i.startswith(run_id)]
    if len(matches) == 1:
        return runs_root(repo) / matches[0]
    if not matches:
        raise UnknownRunError(f"no run '{run_id}'; `stretto runs` lists them")
    raise UnknownRunError(
        f"'{run_id}' matches several runs ({', '.join(matches)}); give more of it"
    )


def run_status(repo: Path, run_id: str | None = None) -> RunStatus:
    """The state of a run (default: the latest)."""
    run_dir = resolve_run(repo, run_id)
    return fold_status(read_journal(run_dir / JOURNAL_NAME), live=is_live(run_dir))


def task_log(
    repo: Path, task_id: str, *, run_id: str | None = None, attempt: int | None = None
) -> tuple[Path, str]:
    """The agent log of a task's attempt (default: its last) and its text, then its gate logs."""
    run_dir = resolve_run(repo, run_id)
    status = fold_status(read_journal(run_dir / JOURNAL_NAME), live=True)
    if task_id not in status.tasks:
        known = list(status.tasks)
        close = difflib.get_close_matches(task_id, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RunError(
            f"no task '{task_id}' in run {run_dir.name}{hint}; its tasks: {', '.join(known)}"
        )
    folder = run_dir / "tasks" / task_id
    attempts = (
        sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []
    )
    if not attempts:
        task = status.tasks[task_id]
        why = f"{task.state}: {task.reason}" if task.reason else task.state
        raise RunError(f"task '{task_id}' never started in run {run_dir.name} ({why}); no logs")
    number = attempt or attempts[-1]
    if number not in attempts:
        listed = ", ".join(str(n) for n in attempts)
        raise RunError(
            f"task '{task_id}' has no attempt {number} in run {run_dir.name}; "
            f"its attempts: {listed}"
        )
    log = folder / str(number) / "agent.log"
    if not log.is_file():
        raise RunError(
            f"attempt {number} of task '{task_id}' has no agent log: it ended before its agent "
            f"started; `stretto status {run_dir.name}` shows why"
        )
    text = log.read_text(errors="replace")
    for kind, label in (("gates", "gate"), ("merge-gates", "merge gate")):
        for gate in sorted((folder / str(number) / kind).glob("*.log")):
            with contextlib.suppress(OSError):
                text += f"\n--- {label} {gate.stem} ---\n" + gate.read_text(errors="replace")
    return log, text


def saved_plan(run_dir: Path) -> Plan:
    """The plan a run ran, from its own copy."""
    path = run_dir / "plan.yaml"
    from stretto.plans.plan import parse_plan

    return parse_plan(path.read_text(), str(path))
