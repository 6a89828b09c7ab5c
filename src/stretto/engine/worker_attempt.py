"""The part of a cluster attempt that runs on a worker machine (no Dask in here).

:mod:`stretto.engine.dask_backend` calls :func:`run_job` inside a Dask task; it is plain
stretto code, so it is also tested without a cluster. On the worker:

* one cached clone per repository under the worker's own directory
  (``<home>/repos/<repo key>``), created empty and fed only by git bundles: the attempt's base
  commit arrives as a bundle, incremental against the bases this worker already has;
* the attempt runs in a worktree of that clone, like a local one: setup commands, the agent
  (the worker's own CLI and its own credentials: the environment is built from the *worker's*
  variables, the client only names which ones are allowed), stretto's commit, the attempt's gates;
* what goes back: the branch as a bundle (only when the gates passed), the agent's output
  lines, the gates' verdicts and logs, and the facts the engine journals;
* the worktree, its branch and the attempt's scratch folder are removed before returning,
  and a record in ``<home>/../stretto-attempts`` (one folder per machine user) lets
  :func:`sweep` end what a killed worker left behind.

Output lines are handed to ``publish`` while the agent runs (the engine streams them to the
attempt's log); ``cancelled`` is polled, and ends the agent when the engine no longer wants it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stretto.agents import AttemptContext, Outcome, get_adapter, used_model
from stretto.engine import worker_pool
from stretto.engine.gates import GateInput, attempt_gates, run_gates
from stretto.engine.workspace import (
    Workspace,
    branch_name,
    changed_files,
    clear_stale_locks,
    commit_all,
    create_workspace,
    port_base,
    remove_workspace,
)
from stretto.errors import RepoError
from stretto.git import is_ancestor, rev_parse, run_git
from stretto.process import DEFAULT_ALLOW, allowed_env, kill_token, run_process, secret_values

JOB_VERSION = 1
MAX_LINES = 20_000  # output lines sent back at the end (the log keeps its own bounds)
FLUSH_SECONDS = 0.2  # streamed output is sent at least this often while lines arrive
POLL_SECONDS = 0.3  # how often a running agent checks that the engine still wants it

_slots_lock = threading.Lock()
_slots: set[int] = set()


def registry(home: Path) -> Path:
    """Where this machine's workers record running attempts (shared by the workers of one
    machine user, so a live worker can clean up after a dead neighbour)."""
    return Path(tempfile.gettempdir()) / f"stretto-attempts-{os.getuid()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _slot() -> int:
    with _slots_lock:
        slot = next(i for i in range(len(_slots) + 1) if i not in _slots)
        _slots.add(slot)
        return slot


def _free_slot(slot: int) -> None:
    with _slots_lock:
        _slots.discard(slot)


def clone_of(home: Path, repo_key: str) -> Path:
    """The worker's cached clone of a repository (created empty on first use).

    A worker's first attempts of a run arrive together, one per slot: the clone is made once,
    under a lock, in a directory of its own that is renamed into place when it is whole (two
    ``git init`` at once in one directory, or a fetch into a half-made one, fail).
    """
    path = home / "repos" / repo_key
    if (path / ".git" / "HEAD").is_file():
        return path
    with _locked(home / "repos" / f".{repo_key}.lock"):
        if not (path / ".git" / "HEAD").is_file():
            fresh = path.with_name(f".{repo_key}.new-{os.getpid()}")
            shutil.rmtree(fresh, ignore_errors=True)
            fresh.mkdir(parents=True)
            run_git(["init", "-q", "--initial-branch=stretto-cache"], fresh)
            run_git(["config", "gc.auto", "0"], fresh)  # bases are kept by refs; gc on clean
            shutil.rmtree(path, ignore_errors=True)  # what a worker killed mid-init left
            fresh.rename(path)
    return path


def receive_base(clone: Path, base: str, bundle: bytes | None, ref: str) -> str | None:
    """Make ``base`` present in ``clone`` from ``bundle``; None, or why it could not."""
    if rev_parse(clone, f"{base}^{{commit}}") is not None:
        run_git(["update-ref", f"refs/stretto/have/{base}", base], clone)
        return None
    if bundle is None:
        return "missing"
    with tempfile.NamedTemporaryFile(dir=clone / ".git", suffix=".bundle") as file:
        file.write(bundle)
        file.flush()
        fetched = run_git(
            ["fetch", "-q", "--no-tags", file.name, f"+{ref}:refs/stretto/have/{base}"],
            clone,
            check=False,
        )
    if fetched.returncode != 0:
        return "missing" if "prerequisite" in fetched.stderr else fetched.stderr.strip()
    return None


def _record(home: Path, job: dict[str, Any], **fields: Any) -> Path:
    folder = registry(home)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job['key']}.json"
    data = {
        "worker_pid": os.getpid(),
        "run_id": job["run_id"],
        "home": str(home),
        "repo_key": job["repo_key"],
        "task": job["task"].id,
        "attempt": job["attempt"],
        **fields,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(home: Path, run_id: str | None = None) -> dict[str, list[str]]:
    """End what attempts left on this machine: agents of workers that died (and, with
    ``run_id``, every process of that finished run), their worktrees and branches.

    Returns what was removed: ``{"processes": [...], "worktrees": [...]}``.
    """
    done: dict[str, list[str]] = {"processes": [], "worktrees": []}
    folder = registry(home)
    for path in sorted(folder.glob("stretto-*.json")) if folder.is_dir() else []:  # attempts
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        mine = run_id is not None and data.get("run_id") == run_id
        if _alive(int(data.get("worker_pid", 0))) and not mine:
            continue  # a live worker's attempt (of another run): not ours to touch
        pid = data.get("pid")
        if pid and _alive(int(pid)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pid), signal.SIGKILL)
            done["processes"].append(str(pid))
        for killed in kill_token(str(data.get("run_id")), grace=0.5) if mine else []:
            done["processes"].append(str(killed))
        clone = Path(data.get("home", "")) / "repos" / str(data.get("repo_key"))
        ws_path = data.get("workspace")
        if ws_path and (clone / ".git").is_dir():
            branch = branch_name(str(data["run_id"]), str(data["task"]), int(data["attempt"]))
            ws = Workspace(Path(ws_path), branch, "", data["run_id"], data["task"], data["attempt"])
            with contextlib.suppress(Exception):
                remove_workspace(clone, ws, delete_branch=False)
            run_git(["branch", "-D", "-q", branch], clone, check=False)
            done["worktrees"].append(str(ws_path))
        scratch = data.get("scratch")
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
        path.unlink(missing_ok=True)
    if run_id is not None:
        for killed in kill_token(run_id, grace=0.5):
            done["processes"].append(str(killed))
    done["worktrees"].extend(worker_pool.sweep_pools(folder, _alive))
    return done


def run_job(
    job: dict[str, Any],
    *,
    home: Path,
    worker: str,
    publish: Callable[[dict[str, Any]], None],
    cancelled: Callable[[], bool],
) -> dict[str, Any]:
    """Run one attempt described by ``job`` (see :mod:`stretto.engine.remote_attempt`) in
    ``home``; return what the engine needs to journal, judge and land it."""
    if job.get("v") != JOB_VERSION:
        return {"error": f"worker {worker} runs another stretto (job format {job.get('v')!r})"}
    began = time.monotonic()
    sweep(home)  # what a worker that died here left behind
    clone = clone_of(home, str(job["repo_key"]))
    with _locked(clone / ".git" / "stretto-fetch.lock"):
        why = receive_base(clone, str(job["base"]), job.get("bundle"), str(job["bundle_ref"]))
    _TIMES.phases = {"receive": time.monotonic() - began}
    if why == "missing":
        return {"need_full": True, "worker": worker}
    if why is not None:
        return {"error": f"the base commit's bundle could not be read on {worker}: {why}"}
    result = asyncio.run(_attempt(job, home, clone, worker, publish, cancelled))
    result["phases"] = {k: round(v, 3) for k, v in _TIMES.phases.items()}
    return result


class _Phases(threading.local):
    phases: dict[str, float]


_TIMES = _Phases()


def _phase(name: str, since: float) -> float:
    """Note how long ``name`` took on this worker (returned to the engine); now."""
    now = time.monotonic()
    _TIMES.phases[name] = _TIMES.phases.get(name, 0.0) + now - since
    return now


def _env(job: dict[str, Any]) -> dict[str, str]:
    """The agent's environment: the *worker's* own allowed variables, then the run's."""
    env = allowed_env(os.environ, (*DEFAULT_ALLOW, *job["env_allow"]))
    env.update(job["env"])
    return env


async def _attempt(
    job: dict[str, Any],
    home: Path,
    clone: Path,
    worker: str,
    publish: Callable[[dict[str, Any]], None],
    cancelled: Callable[[], bool],
) -> dict[str, Any]:
    task = job["task"]
    attempt = int(job["attempt"])
    run_id = str(job["run_id"])
    scratch = home / "attempts" / str(job["key"])
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    record = _record(home, job, scratch=str(scratch))
    slot = _slot()
    ws: Workspace | None = None
    try:
        env = _env(job)
        branch = branch_name(run_id, task.id, attempt)
        run_git(["branch", "-D", "-q", branch], clone, check=False)  # a cancelled earlier try
        mark = time.monotonic()
        try:
            if job["sparse"] is None:  # the slot's warm worktree: only what differs is written
                ids = (run_id, task.id, attempt)
                ws = worker_pool.checkout(
                    clone, registry(home), slot, ids, str(job["base"]), setup=job["setup"], env=env
                )
            else:
                ws = create_workspace(
                    clone,
                    run_id,
                    task.id,
                    attempt,
                    str(job["base"]),
                    link_dirs=job["link_dirs"],
                    setup=job["setup"],
                    setup_env=env,
                    sparse=job["sparse"],
                    adopt=False,
                )
        except Exception as error:
            return {"worker": worker, "workspace_error": f"{type(error).__name__}: {error}"}
        _phase("workspace", mark)
        _record(home, job, scratch=str(scratch), workspace=str(ws.path))
        prompt_file = scratch / "prompt.md"
        prompt_file.write_text(job["prompt"])
        env.update(
            {
                "STRETTO_WORKSPACE": str(ws.path),
                "STRETTO_PORT_BASE": str(port_base(slot)),
                "STRETTO_PROMPT_FILE": str(prompt_file),
            }
        )
        if job["model"]:
            env["STRETTO_MODEL"] = job["model"]
        adapter = get_adapter(job["agent"], job["settings"])
        actx = AttemptContext(
            task=task,
            attempt=attempt,
            run_id=run_id,
            workspace=ws.path,
            prompt=job["prompt"],
            prompt_file=prompt_file,
            log_dir=scratch,
            env=env,
            model=job["model"],
            timeout=job["timeout"],
            settings=job["settings"],
        )
        launch = adapter.build(actx)
        program = str(launch.argv[0])
        if shutil.which(program, path=launch.env.get("PATH")) is None:
            return {
                "worker": worker,
                "missing_cli": program,
                "host": socket.gethostname(),
            }
        return await _run_agent(
            job, home, ws, scratch, adapter, launch, env, worker, publish, cancelled
        )
    finally:
        # After the result is sent: the engine need not wait for the worktree to go (the
        # record stays until it has, so a sweep can finish the job if this worker dies); the
        # slot is free once it has.
        threading.Thread(
            target=_clean_up, args=(clone, ws, scratch, record, slot), name="stretto-cleanup"
        ).start()


def _clean_up(clone: Path, ws: Workspace | None, scratch: Path, record: Path, slot: int) -> None:
    """Release (warm) or remove (sparse) an attempt's worktree, delete its branch, its
    scratch folder, then its record; free its slot."""
    try:
        if ws is not None and ws.path.parent.name == "pool":
            with contextlib.suppress(Exception):
                worker_pool.release(clone, ws)
        elif ws is not None:
            head = rev_parse(clone, f"refs/heads/{ws.branch}")
            with contextlib.suppress(Exception):
                remove_workspace(clone, ws, delete_branch=bool(head), expected_sha=head)
        shutil.rmtree(scratch, ignore_errors=True)
        record.unlink(missing_ok=True)
    finally:
        _free_slot(slot)


async def _run_agent(
    job: dict[str, Any],
    home: Path,
    ws: Workspace,
    scratch: Path,
    adapter: Any,
    launch: Any,
    env: dict[str, str],
    worker: str,
    publish: Callable[[dict[str, Any]], None],
    cancelled: Callable[[], bool],
) -> dict[str, Any]:
    task = job["task"]
    lines: list[tuple[str, str]] = []
    pending: list[tuple[str, str]] = []
    last = time.monotonic()

    def flush() -> None:
        nonlocal last
        if pending:
            publish({"key": job["key"], "lines": list(pending)})
            pending.clear()
        last = time.monotonic()

    def on_line(line: str, stream: str) -> None:
        if len(lines) < MAX_LINES:
            lines.append((line, stream))
        pending.append((line, stream))
        if time.monotonic() - last >= FLUSH_SECONDS:
            flush()

    def on_start(pid: int) -> None:
        _record(home, job, scratch=str(scratch), workspace=str(ws.path), pid=pid)
        publish({"key": job["key"], "started": pid, "branch": ws.branch, "base": ws.base})

    log = scratch / "agent.log"
    mark = time.monotonic()
    running = asyncio.ensure_future(
        run_process(
            list(launch.argv),
            cwd=launch.cwd,
            env=launch.env,
            log_path=log,
            timeout=job["timeout"],
            stdin=launch.stdin,
            on_line=on_line,
            on_start=on_start,
            secrets=secret_values(launch.env),
        )
    )
    while not running.done():
        await asyncio.wait({running}, timeout=POLL_SECONDS)
        if pending and time.monotonic() - last >= FLUSH_SECONDS:
            flush()
        if not running.done() and cancelled():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            return {"worker": worker, "cancelled": True}
    finished = running.result()
    mark = _phase("agent", mark)
    flush()
    events = [e for line, stream in lines for e in adapter.parse_line(line, stream)]
    result = adapter.decide(finished.exit_code, finished.timed_out, events)
    out: dict[str, Any] = {
        "worker": worker,
        "host": socket.gethostname(),
        "exit_code": finished.exit_code,
        "timed_out": finished.timed_out,
        "duration": finished.duration,
        "lines": lines,
        "log": log.read_bytes() if log.is_file() else b"",
        "model": used_model(events, launch, job["model"]),
        "base": ws.base,
        "branch": ws.branch,
    }
    clear_stale_locks(ws)
    try:
        head = commit_all(
            ws, f"stretto: work of {job['agent']} on {task.id} (attempt {job['attempt']})"
        )
    except RepoError as error:
        out["commit_error"] = error.message
        return out
    mark = _phase("commit", mark)
    out["head"] = head
    out["rewritten"] = head != ws.base and not is_ancestor(ws.path, ws.base, head)
    if result.outcome is not Outcome.SUCCESS or head == ws.base or out["rewritten"]:
        return out
    changed = changed_files(ws)
    inp = GateInput(ws.path, task, changed, scratch / "gates", env, None)
    verdicts = await run_gates(attempt_gates(task, job["scope"], job["gates"]), inp)
    mark = _phase("gates", mark)
    out["verdicts"] = [
        {**v.to_dict(), "log_text": v.log.read_bytes() if v.log and v.log.is_file() else None}
        for v in verdicts
    ]
    if all(v.passed for v in verdicts):
        out["bundle"] = bundle_branch(ws.path, ws.branch, ws.base)
        _phase("bundle", mark)
    return out


def bundle_branch(repo: Path, branch: str, base: str) -> bytes:
    """``branch`` as a git bundle holding only the commits past ``base``."""
    with tempfile.TemporaryDirectory(prefix="stretto-bundle-") as tmp:
        out = Path(tmp) / "out.bundle"
        run_git(["bundle", "create", "-q", str(out), f"refs/heads/{branch}", f"^{base}"], repo)
        return out.read_bytes()
