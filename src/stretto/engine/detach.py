"""Detached engines: a run that goes on without the terminal (or server) that started it.

The starting process validates everything, creates the run (directory, inbox, journal, its
first records) and then hands the journal over: the engine is a new process in its own session
(``setsid``: no controlling terminal, so no SIGHUP when the terminal closes, and outside the
shell's process group, so killing the shell leaves it alone), started with
``posix_spawn`` and given the journal's and the lock's open descriptors. The run's lock is
therefore never released between the two: a reader never sees the run as interrupted. The
engine's stdout and stderr go to ``runs/<id>/engine.log``.

``python -m stretto.engine.detach --repo R --run-dir D --fds J,L`` is the engine's entry point;
it is not meant to be typed by people.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stretto.engine.journal import Journal, name_holder

ENGINE_LOG = "engine.log"


def spawn_engine(repo: Path, journal: Journal, *, planning: dict[str, Any] | None = None) -> int:
    """Start a detached engine that takes over ``journal`` (closed here); return its pid.

    Args:
        repo: the repository.
        journal: the run's open journal; this process stops being its writer.
        planning: for a goal, what :func:`stretto.engine.goal.plan_goal` needs besides the goal
            (planner, max_agents, budget); the engine plans first, then runs.
    """
    run_dir = journal.run_dir
    jfd, lfd = journal.detach_fds()
    log = os.open(
        run_dir / ENGINE_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
    )
    argv = [
        sys.executable,
        "-m",
        "stretto.engine.detach",
        "--repo",
        str(repo),
        "--run-dir",
        str(run_dir),
        "--fds",
        f"{jfd},{lfd}",
    ]
    if planning is not None:
        argv += ["--planning", json.dumps(planning)]
    for fd in (jfd, lfd):
        os.set_inheritable(fd, True)
    try:
        pid = os.posix_spawn(
            sys.executable,
            argv,
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
            setsid=True,
        )
    finally:
        for fd in (jfd, lfd):
            os.set_inheritable(fd, False)
        os.close(log)
    name_holder(lfd, pid)  # the lock names its holder: the engine from now on
    journal.close()  # our descriptors only: the engine's copies keep the lock
    # Reap it when it ends, in a long-lived caller (an MCP or HTTP server); a CLI that exits
    # first leaves that to init.
    threading.Thread(target=_reap, args=(pid,), daemon=True, name=f"reap-{pid}").start()
    return pid


def start_detached_goal(
    cwd: Path,
    goal: str,
    *,
    planner: str | None = None,
    max_agents: int | None = None,
    budget: float | None = None,
) -> tuple[str, Path, int]:
    """Check what planning needs, create the run with its goal, and hand it to a detached
    engine that plans (one model call) and then runs the plan. Returns (run id, run
    directory, engine pid) at once."""
    from stretto.engine.control import make_inbox
    from stretto.engine.goal import check_goal
    from stretto.engine.runs import new_run_id, runs_root
    from stretto.project.scaffold import state_dir

    repo, config, _ = check_goal(cwd, goal, planner)
    run_id = new_run_id()
    state_dir(repo)
    journal = Journal.create(runs_root(repo) / run_id)
    try:
        make_inbox(journal.run_dir)
        journal.append(
            "goal", sync=True, goal=goal, run_id=run_id, target=config.target, pid=os.getpid()
        )
    except BaseException:
        journal.close()
        raise
    planning = {"planner": planner, "max_agents": max_agents, "budget": budget}
    pid = spawn_engine(repo, journal, planning=planning)
    return run_id, journal.run_dir, pid


def plan_and_create(
    repo: Path, journal: Journal, planning: dict[str, Any]
) -> tuple[Any, Any, Journal] | None:
    """In a detached engine: plan the journaled goal, then journal the run's start.

    Returns (plan, options, journal), or None when planning failed (then the journal ends with
    a failed ``run_finished`` naming why, and is closed).
    """
    from stretto.engine.goal import plan_goal
    from stretto.engine.runs import create_run
    from stretto.errors import StrettoError

    goal = next(str(r.fields["goal"]) for r in journal.history if r.type == "goal")
    try:
        planned = plan_goal(
            repo,
            goal,
            planner=planning.get("planner"),
            max_agents=planning.get("max_agents"),
            budget=planning.get("budget"),
            run_id=journal.run_dir.name,
        )
    except StrettoError as error:
        journal.append(
            "run_finished",
            sync=True,
            status="failed",
            landed=0,
            failed=0,
            skipped=0,
            notes=[f"planning failed: {error.message}"],
            head=None,
        )
        journal.close()
        print(f"error: planning failed: {error.message}", flush=True)
        return None
    preamble = [item for item in planned.preamble() if item[0] != "goal"]
    journal = create_run(
        repo,
        planned.plan,
        planned.options,
        run_id=planned.run_id,
        preamble=preamble,
        journal=journal,
    )
    return planned.plan, planned.options, journal


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def main(argv: Sequence[str] | None = None) -> int:
    """The detached engine: adopt the journal, plan a goal if there is one, run to the end."""
    parser = argparse.ArgumentParser(prog="stretto-engine")
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--fds", required=True)
    parser.add_argument("--planning")
    args = parser.parse_args(argv)
    jfd, lfd = (int(part) for part in args.fds.split(","))
    for fd in (jfd, lfd):
        os.set_inheritable(fd, False)  # agents must not inherit the run's lock
    journal = Journal.adopt(args.run_dir, jfd, lfd)
    from stretto.engine.runs import drive_run, saved_plan
    from stretto.options import RunOptions

    start = next((r for r in journal.history if r.type == "run_started"), None)
    if start is None:
        planned = plan_and_create(args.repo, journal, json.loads(args.planning or "{}"))
        if planned is None:
            return 1  # the planning failure is journaled (run_finished, with the reason)
        plan, options, journal = planned
    else:
        plan = saved_plan(args.run_dir)
        options = RunOptions.from_dict(start.fields["options"])
    summary = drive_run(args.repo, plan, options, journal)
    print(json.dumps({"type": "summary", **summary.to_dict()}), flush=True)
    write_report(args.repo, args.run_dir)
    return 0 if summary.status == "finished" else 1


def write_report(repo: Path, run_dir: Path, timeout: float = 300.0) -> None:
    """Write the run's ``report.html`` with ``stretto report``, in a child process: the report
    is a frontend, which the engine does not import. Its output goes to engine.log; a failure
    there leaves the run's outcome as it is."""
    import subprocess

    argv = [sys.executable, "-m", "stretto", "report", run_dir.name]
    argv += ["-o", str(run_dir / "report.html")]
    try:
        subprocess.run(argv, cwd=repo, stdin=subprocess.DEVNULL, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"could not write the run's report: {error}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
