"""Drive one run of a plan to its end through a seeded series of ``kill -9``s and resumes.

A *campaign* starts ``stretto run`` and, for each fault in its list, lets the engine (the first
run or a ``stretto resume``) go until the fault hits: a named crash point (the engine kills
itself there, see :func:`stretto.engine.journal.crashpoint`) or a timer (this driver sends
SIGKILL after a seeded delay, wherever the engine is). Then it resumes, with the next fault.
When the faults are used up, one last resume must finish the run. Nothing but SIGKILL ends an
engine early, so no cleanup code of stretto ever runs in between.

After every kill the invariants that hold at all times are checked (``midway_problems`` of
``tests/_invariants.py``); after the run, all of them (``run_problems``).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from _invariants import KINDS, Problem, leftovers, midway_problems, run_problems
from stretto.engine.journal import CRASHPOINT_ENV, JOURNAL_NAME, TORN_WRITE, read_journal

SRC = Path(__file__).resolve().parents[2] / "src" / "stretto"
#: Values of the placeholders in crash point names built with an f-string.
PLACEHOLDERS = {"stage": ("attempt", "merge")}
#: Crash points this suite cannot reach without a planning model, and where they are tested.
NEEDS_A_PLANNER = {
    point: "a split needs a planning model: tests/test_goal.py::test_resume_after_a_crash_"
    "between_the_split_and_its_steps_makes_no_second_call kills a run there"
    for point in ("after-intent:split", "after-split")
}
#: Crash points that fire only when a control command arrives: the driver sends one.
NEEDS_A_COMMAND = {"after-control"}
#: Crash points only ``stretto run`` reaches (before there is a run to resume): faults first.
ONLY_AT_START = {"after-journal-created"}


def crash_points() -> list[str]:
    """Every named crash point in stretto's source (``crashpoint("...")`` calls, f-strings
    expanded with :data:`PLACEHOLDERS`) and the torn journal write."""
    found = {TORN_WRITE}
    for path in sorted(SRC.rglob("*.py")):
        for name in re.findall(r'crashpoint\(f?"([^"]+)"\)', path.read_text()):
            holes = re.findall(r"\{(\w+)\}", name)
            if not holes:
                found.add(name)
                continue
            assert len(holes) == 1 and holes[0] in PLACEHOLDERS, (
                f"{path}: crash point {name!r}: add its placeholder's values to PLACEHOLDERS"
            )
            found |= {name.replace("{" + holes[0] + "}", v) for v in PLACEHOLDERS[holes[0]]}
    return sorted(found)


@dataclass(frozen=True)
class Fault:
    """A named crash point (``name`` or ``name@N``) or a SIGKILL after ``delay`` seconds."""

    point: str | None = None
    delay: float = 0.0

    def __str__(self) -> str:
        return self.point or f"kill after {self.delay:.2f}s"


def seeded_faults(rng: random.Random, count: int, low: float, high: float) -> list[Fault]:
    return [Fault(delay=round(rng.uniform(low, high), 3)) for _ in range(count)]


@dataclass
class Tally:
    """What the campaigns did and found (the suite's printed summary)."""

    tried: int = 0  # engines killed (by a crash point or the timer)
    missed: int = 0  # faults that did not hit (the engine finished first)
    survived: int = 0  # kills in campaigns that ended with every invariant kept
    runs: int = 0
    engines: int = 0  # engine processes started (runs and resumes)
    fired: Counter[str] = field(default_factory=Counter)  # crash point -> times it killed
    problems: Counter[str] = field(default_factory=Counter)  # Problem.kind -> count
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Tally) -> None:
        for name in ("tried", "missed", "survived", "runs", "engines"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.fired.update(other.fired)
        self.problems.update(other.problems)
        self.details += other.details
        self.seconds += other.seconds

    def summary(self) -> str:
        counts = ", ".join(f"{kind} {self.problems.get(kind, 0)}" for kind in KINDS)
        return (
            f"kills tried {self.tried}, survived {self.survived} ({self.missed} faults missed: "
            f"the engine ended first) in {self.runs} runs / {self.engines} engine starts, "
            f"{self.seconds:.1f}s; problems: {counts}; crash points fired: "
            + ", ".join(f"{k} x{v}" for k, v in sorted(self.fired.items()))
        )


def stretto_env(point: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != CRASHPOINT_ENV}
    if point:
        env[CRASHPOINT_ENV] = point
    return env


def _run_dirs(repo: Path) -> list[Path]:
    root = repo / ".stretto" / "runs"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _started(run_dir: Path) -> bool:
    """Whether the run got as far as its ``run_started`` record."""
    try:
        return any(r.type == "run_started" for r in read_journal(run_dir / JOURNAL_NAME))
    except Exception:
        return False


def _finished(repo: Path) -> bool:
    """Whether the run's journal already ends with ``run_finished`` (status finished): a kill
    that lands after that record, while the engine exits, leaves nothing to resume."""
    for run_dir in _run_dirs(repo):
        try:
            records = read_journal(run_dir / JOURNAL_NAME)
        except Exception:
            continue
        if records and records[-1].type == "run_finished":
            return records[-1].fields.get("status") == "finished"
    return False


def _send_command_when_ready(repo: Path, proc: subprocess.Popen[str]) -> None:
    """Send a harmless control command (parallelism 3, as configured) once the run's inbox
    exists, so that the ``after-control`` crash point is reached."""
    from stretto.engine.control import inbox_path, send

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        dirs = [d for d in _run_dirs(repo) if inbox_path(d).is_dir() and _started(d)]
        if dirs:
            send(dirs[-1], "parallelism", value=3)
            return
        time.sleep(0.02)


class Campaign:
    """One run of ``plan`` in ``repo`` through ``faults``; see the module docstring."""

    def __init__(
        self,
        repo: Path,
        plan: Path,
        tasks: list[str],
        log: Path,
        check_tree: Callable[[Path], list[str]] | None = None,
    ) -> None:
        self.check_tree = check_tree
        self.repo = repo
        self.plan = plan
        self.tasks = tasks
        self.log = log
        self.tally = Tally(runs=1)

    def _engine(self, fault: Fault | None) -> tuple[int, str]:
        """Start the next engine (a run, or a resume of the run); return its exit status."""
        started = [d for d in _run_dirs(self.repo) if _started(d)]
        args = ["resume", "--plain"] if started else ["run", str(self.plan), "--plain"]
        point = fault.point if fault else None
        self.tally.engines += 1
        with self.log.open("a") as out:
            out.write(f"\n=== stretto {' '.join(args)}  [{fault or 'no fault'}]\n")
            out.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "stretto", *args],
                cwd=self.repo,
                env=stretto_env(point),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                if point and point.split("@")[0] in NEEDS_A_COMMAND:
                    _send_command_when_ready(self.repo, proc)
                if fault is not None and fault.point is None:
                    try:
                        proc.wait(timeout=fault.delay)
                    except subprocess.TimeoutExpired:
                        proc.send_signal(signal.SIGKILL)
                code = proc.wait(timeout=180)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            out.write(f"=== exit {code}\n")
        return code, " ".join(args)

    def run(self, faults: list[Fault]) -> Tally:
        begin = time.monotonic()
        tally = self.tally
        queue: list[Fault | None] = [*faults, None]
        finished = False
        while queue and not finished:
            fault = queue.pop(0)
            code, what = self._engine(fault)
            if code == -signal.SIGKILL:
                tally.tried += 1
                tally.fired[fault.point.split("@")[0] if fault and fault.point else "timer"] += 1
                self._note(self._midway(), f"after {fault} of `{what}`")
                self._unstarted()
                if _finished(self.repo):  # killed on its way out, after the run had ended
                    finished = True
                    continue
                if not queue:
                    queue.append(None)  # a kill nobody asked for: resume once more
                continue
            if fault is not None:
                tally.missed += 1
            if code == 0:
                finished = True
            else:
                self._note([Problem("journal", f"`stretto {what}` exited {code}")], str(fault))
                break
        runs = [d for d in _run_dirs(self.repo) if _started(d)]
        if len(runs) != 1:
            self._note([Problem("journal", f"{len(runs)} runs started, not 1")], "at the end")
        else:
            self._note(run_problems(self.repo, runs[0].name, tasks=self.tasks), "at the end")
            self._clean(runs[0].name)
        if self.check_tree is not None:
            lost = [Problem("lost", what) for what in self.check_tree(self.repo)]
            self._note(lost, "in the target's files")
        if not tally.problems:
            tally.survived = tally.tried
        tally.seconds = time.monotonic() - begin
        return tally

    def _clean(self, run_id: str) -> None:
        """``stretto clean`` removes the failed attempts' worktrees and branches kept for
        inspection; then nothing of the run is left."""
        done = subprocess.run(
            [sys.executable, "-m", "stretto", "clean"],
            cwd=self.repo,
            env=stretto_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        problems = [Problem("orphaned", f"`stretto clean` failed: {done.stderr}")] * bool(
            done.returncode
        )
        left = [
            *leftovers(self.repo, run_id),
            *(d for d in _run_dirs(self.repo) if not _started(d)),
        ]
        problems += [Problem("orphaned", f"left after `stretto clean`: {name}") for name in left]
        self._note(problems, "after clean")

    def _unstarted(self) -> None:
        """Killed before its first record: resume says nothing ran and to start again."""
        if not _run_dirs(self.repo) or any(_started(d) for d in _run_dirs(self.repo)):
            return
        done = subprocess.run(
            [sys.executable, "-m", "stretto", "resume", "--plain"],
            cwd=self.repo,
            env=stretto_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 1 or "Start it again with `stretto run PLAN`" not in done.stderr:
            what = f"resume of a run that never started: exit {done.returncode}: {done.stderr}"
            self._note([Problem("journal", what)], "after a kill before the first record")

    def _midway(self) -> list[Problem]:
        runs = [d for d in _run_dirs(self.repo) if _started(d)]
        return midway_problems(self.repo, runs[-1].name) if runs else []

    def _note(self, problems: list[Problem], when: str) -> None:
        for problem in problems:
            self.tally.problems[problem.kind] += 1
            self.tally.details.append(f"{self.repo.parent.name} {when}: {problem}")
