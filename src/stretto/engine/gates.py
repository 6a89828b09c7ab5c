"""Gates: binary verdicts on an attempt's work, each with a log (the janitor).

A gate is a plain callable ``(GateInput) -> Verdict`` (STYLE.md rule 4). Built-ins:

* ``files_exist``: every path the step declared in ``outputs`` exists after the attempt;
* ``scope``: every changed file is owned by the step (``files``); refused by default,
  a warning with ``scope = "warn"`` in stretto.toml;
* ``no_deleted_tests``: no test file was deleted, renamed away, or emptied;
* ``config``: stretto's own configuration (``stretto.toml``, which names the gates) is left
  alone unless the step lists it by name in ``files`` (owning everything is not enough): an
  agent must not weaken the gates that judge it;
* command gates from stretto.toml ``[gates]`` and the step's ``gates:`` list: a shell command
  run in the worktree that must exit 0 within its timeout, and leave the tracked files as they
  were (a gate that rewrites them judged a tree that is not the one that would land; the files
  are put back for the gates that follow).

Gates run in order and every one runs (the agent's next attempt should see all that failed).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stretto.engine.workspace import ChangedFile
from stretto.files import storage_fault
from stretto.git import run_git
from stretto.plans import paths
from stretto.plans.paths import EVERYTHING_PATTERN
from stretto.plans.plan import Task
from stretto.process import run_process, secret_values
from stretto.sandbox import Sandbox

DEFAULT_GATE_TIMEOUT = 600.0
_TEST_PATH = re.compile(
    r"(^|/)(tests?|__tests__|spec)/"
    r"|(^|/)test_[^/]*\.py$|_test\.(py|go)$|\.(test|spec)\.[cm]?[jt]sx?$|(^|/)conftest\.py$"
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One gate's binary outcome."""

    gate: str
    passed: bool
    summary: str
    log: Path | None = None
    duration: float = 0.0
    warning: bool = False  # passed, but with something the user should know

    def to_dict(self) -> dict[str, object]:
        """Plain data for the journal and ``--json``."""
        return {
            "gate": self.gate,
            "passed": self.passed,
            "summary": self.summary,
            "log": str(self.log) if self.log else None,
            "duration": round(self.duration, 3),
            "warning": self.warning,
        }


@dataclass(frozen=True, slots=True)
class GateInput:
    """What a gate looks at: the worktree, the task and the files the attempt changed."""

    workspace: Path
    task: Task
    changed: Sequence[ChangedFile]
    log_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    sandbox: Sandbox | None = None  # command gates run the agent's code: in its sandbox too


Gate = Callable[[GateInput], Awaitable[Verdict]]


def is_test_path(path: str) -> bool:
    """Whether ``path`` looks like a test file (tests/, test_*.py, *_test.go, *.spec.ts …)."""
    return bool(_TEST_PATH.search(path))


def _write_log(inp: GateInput, name: str, text: str) -> Path:
    log = inp.log_dir / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    return log


async def files_exist(inp: GateInput) -> Verdict:
    """Every declared output exists in the worktree."""
    missing = [p for p in inp.task.outputs if not (inp.workspace / p).exists()]
    text = "\n".join(f"missing: {p}" for p in missing) or "all declared outputs exist"
    log = _write_log(inp, "files_exist", text + "\n")
    if missing:
        return Verdict("files_exist", False, f"missing outputs: {', '.join(missing)}", log)
    return Verdict("files_exist", True, f"{len(inp.task.outputs)} output(s) present", log)


def scope_gate(mode: str = "refuse") -> Gate:
    """The scope gate: changed files must be owned by the task (``mode``: refuse or warn)."""

    async def scope(inp: GateInput) -> Verdict:
        lease = inp.task.files
        if lease is None or EVERYTHING_PATTERN in lease:
            log = _write_log(
                inp, "scope", "the step declares no owned files: any change is in scope\n"
            )
            return Verdict("scope", True, "no owned files declared", log)
        outside = []
        for change in inp.changed:
            for path in filter(None, (change.path, change.old_path)):
                if not any(paths.owns(pattern, path) for pattern in lease):
                    outside.append(path)
        outside = sorted(set(outside))
        lines = [f"owned: {', '.join(lease)}"]
        lines += [f"outside: {p}" for p in outside] or ["every changed file is owned"]
        log = _write_log(inp, "scope", "\n".join(lines) + "\n")
        if not outside:
            return Verdict("scope", True, f"{len(inp.changed)} changed file(s), all owned", log)
        listed = ", ".join(outside[:5]) + (" …" if len(outside) > 5 else "")
        summary = f"changed files outside the step's owned files: {listed}"
        if mode == "warn":
            return Verdict("scope", True, summary, log, warning=True)
        return Verdict("scope", False, summary, log)

    return scope


async def no_deleted_tests(inp: GateInput) -> Verdict:
    """No test file deleted, renamed to a non-test name, or emptied."""
    bad = []
    for change in inp.changed:
        if change.status == "D" and is_test_path(change.path):
            bad.append(f"deleted: {change.path}")
        elif change.status == "R" and change.old_path and is_test_path(change.old_path):
            if not is_test_path(change.path):
                bad.append(f"renamed away: {change.old_path} -> {change.path}")
        elif change.status in ("M", "A") and is_test_path(change.path):
            target = inp.workspace / change.path
            if target.is_file() and not target.read_bytes().strip():
                bad.append(f"emptied: {change.path}")
    log = _write_log(inp, "no_deleted_tests", "\n".join(bad or ["no test file removed"]) + "\n")
    if bad:
        return Verdict("no_deleted_tests", False, "; ".join(bad[:5]), log)
    return Verdict("no_deleted_tests", True, "no test file removed", log)


PROTECTED_FILES = ("stretto.toml",)
"""Files an attempt may change only when its step names them in ``files``."""


async def config_unchanged(inp: GateInput) -> Verdict:
    """stretto.toml is unchanged unless the step's ``files`` name it exactly."""
    named = set(inp.task.files or ())
    touched = sorted(
        {
            path
            for change in inp.changed
            for path in filter(None, (change.path, change.old_path))
            if path in PROTECTED_FILES and path not in named
        }
    )
    if not touched:
        log = _write_log(inp, "config", "stretto's configuration is unchanged\n")
        return Verdict("config", True, "configuration unchanged", log)
    listed = ", ".join(touched)
    log = _write_log(inp, "config", f"changed: {listed}\n")
    return Verdict(
        "config",
        False,
        f"the attempt changed {listed}, which sets the gates that judge it; a step may change "
        f"it only when its files list it by name (files: [{touched[0]}])",
        log,
    )


def command_gate(name: str, command: str, timeout: float = DEFAULT_GATE_TIMEOUT) -> Gate:
    """A gate that runs ``command`` with bash in the worktree; exit 0 within ``timeout`` passes."""

    async def run(inp: GateInput) -> Verdict:
        log = inp.log_dir / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {command}\n")
        started = time.monotonic()
        before = await asyncio.to_thread(_tracked_changes, inp.workspace)
        finished = await run_process(
            ["bash", "-c", command],
            cwd=inp.workspace,
            env=inp.env,
            log_path=log,
            timeout=timeout,
            secrets=secret_values(inp.env),
            sandbox=inp.sandbox,
        )
        elapsed = time.monotonic() - started
        altered = await asyncio.to_thread(_undo_changes, inp.workspace, before)
        if altered:
            with log.open("a") as handle:
                handle.write(f"\nstretto: the gate changed tracked files: {', '.join(altered)}\n")
        if finished.timed_out:
            return Verdict(name, False, f"'{command}' timed out after {timeout:g}s", log, elapsed)
        if finished.exit_code != 0:
            tail = _tail(log)
            return Verdict(
                name,
                False,
                f"'{command}' exited with status {finished.exit_code}"
                + (f": {tail}" if tail else ""),
                log,
                elapsed,
            )
        if altered:
            listed = ", ".join(altered[:5]) + (" …" if len(altered) > 5 else "")
            return Verdict(
                name,
                False,
                f"'{command}' changed tracked files ({listed}), so what it judged is not what "
                "would land; make the gate only check (e.g. `ruff format --check`, not "
                "`ruff format`)",
                log,
                elapsed,
            )
        return Verdict(name, True, f"'{command}' passed", log, elapsed)

    return run


def _tracked_changes(workspace: Path) -> list[str] | None:
    """Tracked paths that differ from HEAD in the worktree (None if git cannot tell)."""
    result = run_git(
        ["status", "--porcelain", "-z", "--untracked-files=no", "--ignore-submodules"],
        workspace,
        check=False,
    )
    if result.returncode != 0:
        return None
    tokens = result.stdout.split("\0")
    paths, i = [], 0
    while i < len(tokens) and tokens[i]:
        paths.append(tokens[i][3:])
        i += 2 if tokens[i][0] in "RC" else 1  # a rename is followed by its old path
    return sorted(paths)


def _undo_changes(workspace: Path, before: list[str] | None) -> list[str]:
    """Paths a gate changed, put back as they were when the worktree was clean before it."""
    after = _tracked_changes(workspace)
    if before is None or after is None or after == before:
        return []
    altered = sorted(set(after) - set(before)) or after
    if not before:  # gates run on a committed tree: restore it for the gates that follow
        run_git(["reset", "-q", "--hard", "HEAD"], workspace, check=False)
    return altered


def _tail(log: Path, limit: int = 200) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines()[1:] if line.strip()]
    except OSError:
        return ""
    text = lines[-1] if lines else ""
    return text[-limit:]


async def run_gates(gates: Sequence[tuple[str, Gate]], inp: GateInput) -> list[Verdict]:
    """Run every gate in order (all of them, even after a failure) and return the verdicts."""
    verdicts = []
    for name, gate in gates:
        started = time.monotonic()
        try:
            verdict = await gate(inp)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a broken gate is a failed gate, with the reason
            if storage_fault(error) is not None:
                raise  # a full disk is no verdict on the work: the run stops (Runner.halt)
            verdict = Verdict(name, False, f"gate crashed: {type(error).__name__}: {error}")
        if not verdict.duration:
            verdict = Verdict(
                verdict.gate,
                verdict.passed,
                verdict.summary,
                verdict.log,
                time.monotonic() - started,
                verdict.warning,
            )
        verdicts.append(verdict)
    return verdicts


def attempt_gates(
    task: Task, scope: str, configured: Sequence[tuple[str, str, float, str]]
) -> list[tuple[str, Gate]]:
    """The gates an attempt must pass in its own worktree, in order: the built-ins, the
    configured gates that run on attempts (``(name, command, timeout, when)``), the step's own.
    The same list wherever the attempt runs (here, or on a cluster's worker)."""
    gates: list[tuple[str, Gate]] = [
        ("scope", scope_gate(scope)),
        ("no_deleted_tests", no_deleted_tests),
        ("config", config_unchanged),
    ]
    if task.outputs:
        gates.insert(0, ("files_exist", files_exist))
    for name, command, timeout, when in configured:
        if when in ("attempt", "both"):
            gates.append((name, command_gate(name, command, timeout)))
    for index, command in enumerate(task.gates, 1):
        step = f"step-{index}"
        gates.append((step, command_gate(step, command)))
    return gates
