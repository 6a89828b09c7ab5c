"""Test helper: the guarantees a run keeps however it was interrupted (shared/docs/DURABILITY.md).

:func:`run_problems` checks a run that has ended (after any number of crashes and resumes);
:func:`midway_problems` is the cheaper part that must hold at every moment, even right after a
``kill -9``. Each problem is a :class:`Problem` whose ``kind`` is what the fault suite counts:

* ``lost``: a task that passed its gates (or the plan's whole list, once the run finished) is
  not on the target;
* ``duplicated``: a task's ``Stretto-Task`` trailer is on the target more than once;
* ``orphaned``: a process carrying the run's token, a worktree, a ``stretto/`` branch, a held
  lock or a stale ``.lock`` file is left;
* ``history``: the target moved backwards, or to a commit the run never journaled;
* ``journal``: the journal does not read or fold, or does not say the run finished;
* ``repo``: ``git fsck`` fails, or the user's checkout differs from the target.
"""

from __future__ import annotations

import itertools
import subprocess
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from stretto.engine.journal import JOURNAL_NAME, Record, is_live, read_journal
from stretto.engine.status import fold_status
from stretto.errors import RunError
from stretto.process import processes_with_token
from stretto.testing.repo import git

KINDS = ("lost", "duplicated", "orphaned", "history", "journal", "repo")


@dataclass(frozen=True)
class Problem:
    """One broken guarantee."""

    kind: str
    what: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.what}"


def run_dir(repo: Path, run_id: str) -> Path:
    return repo / ".stretto" / "runs" / run_id


def only_run(repo: Path) -> str:
    """The id of the repository's one run."""
    runs = [p.name for p in (repo / ".stretto" / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def trailers(repo: Path, target: str = "main") -> Counter[str]:
    """How often each task's ``Stretto-Task`` trailer is in the target's history."""
    log = git(repo, "log", "--format=%(trailers:key=Stretto-Task,valueonly)", target)
    return Counter(line.strip() for line in log.splitlines() if line.strip())


def _records(repo: Path, run_id: str) -> tuple[list[Record], list[Problem]]:
    try:
        return read_journal(run_dir(repo, run_id) / JOURNAL_NAME), []
    except RunError as error:
        return [], [Problem("journal", error.message)]


def midway_problems(repo: Path, run_id: str, target: str = "main") -> list[Problem]:
    """What must hold at every moment, even right after a ``kill -9`` of the engine."""
    records, problems = _records(repo, run_id)
    problems += [
        Problem("duplicated", f"task {task} is on {target} {count} times")
        for task, count in trailers(repo, target).items()
        if count > 1
    ]
    problems += _history_problems(repo, records, target)
    return problems


def _history_problems(repo: Path, records: list[Record], target: str) -> list[Problem]:
    """The target only moved forward, and only to commits the run journaled (an ``advance``
    intent is fsynced before the ref moves)."""
    journaled = {r.fields.get("new") for r in records if r.type in ("advance", "merged")}
    reflog = git(repo, "reflog", "--format=%H", target).split()
    problems = []
    for commit in reflog[:-1]:  # the last entry is where the target was before the run
        if commit not in journaled:
            problems.append(Problem("history", f"{target} moved to {commit}, never journaled"))
    for newer, older in itertools.pairwise(reflog):
        forward = subprocess.run(
            ["git", "merge-base", "--is-ancestor", older, newer], cwd=repo, check=False
        )
        if forward.returncode != 0:
            problems.append(Problem("history", f"{target} moved back from {older} to {newer}"))
    return problems


def run_problems(
    repo: Path, run_id: str, *, tasks: Collection[str], target: str = "main"
) -> list[Problem]:
    """Everything a run that ended must satisfy; ``tasks`` are those that must have landed."""
    problems = midway_problems(repo, run_id, target)
    records, _ = _records(repo, run_id)
    on_target = trailers(repo, target)
    verified = {str(r.fields["task"]) for r in records if r.type == "verified"}
    for task in sorted((set(tasks) | verified) - set(on_target)):
        why = "passed its gates but" if task in verified else "is in the plan but"
        problems.append(Problem("lost", f"task {task} {why} is not on {target}"))
    # Nothing left behind.
    for pid in processes_with_token(run_id):
        problems.append(Problem("orphaned", f"process {pid} still carries the run's token"))
    kept = _failed_attempts(records)
    for name, attempt in leftovers(repo, run_id).items():
        if attempt is None or attempt not in kept:
            problems.append(Problem("orphaned", f"left behind: {name}"))
    if is_live(run_dir(repo, run_id)):
        problems.append(Problem("orphaned", "the run's lock is still held"))
    for lock in (repo / ".git").glob("**/*.lock"):
        problems.append(Problem("orphaned", f"stale git lock file {lock}"))
    # The journal folds and says the run finished.
    if records:
        try:
            status = fold_status(records, live=False)
        except RunError as error:
            problems.append(Problem("journal", f"does not fold: {error.message}"))
        else:
            if status.state != "finished":
                problems.append(Problem("journal", f"the run is {status.state}, not finished"))
        last = records[-1]
        if last.type != "run_finished" or last.fields.get("status") != "finished":
            problems.append(Problem("journal", f"last record is {last.type} {dict(last.fields)}"))
    # The repository is sound and the user's checkout is the target.
    fsck = subprocess.run(
        ["git", "fsck", "--no-progress"], cwd=repo, capture_output=True, text=True, check=False
    )
    if fsck.returncode != 0:
        problems.append(Problem("repo", f"git fsck: {fsck.stdout}{fsck.stderr}"))
    if git(repo, "status", "--porcelain", "--untracked-files=no"):
        problems.append(Problem("repo", f"the checkout differs from {target}"))
    return problems


def leftovers(repo: Path, run_id: str) -> dict[str, tuple[str, int] | None]:
    """Worktrees (paths) and ``stretto/`` branches the run left in ``repo``, each with the
    (task, attempt) it belongs to (None: the integration worktree, or not an attempt's)."""
    found: dict[str, tuple[str, int] | None] = {}

    def attempt_of(name: str) -> tuple[str, int] | None:
        task, _, number = name.rpartition("-")
        return (task, int(number)) if task and number.isdigit() else None

    for line in git(repo, "worktree", "list", "--porcelain").splitlines():
        path = line.removeprefix("worktree ")
        if line.startswith("worktree ") and path != str(repo):
            found[path] = attempt_of(Path(path).name.removeprefix(f"{run_id}-"))
    for path in (repo / ".stretto" / "worktrees").glob("*"):
        found.setdefault(str(path), attempt_of(path.name.removeprefix(f"{run_id}-")))
    if (repo / ".stretto" / "integration" / run_id).exists():
        found.setdefault(str(repo / ".stretto" / "integration" / run_id), None)
    refs = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/stretto/")
    for branch in refs.split():
        parts = branch.split("/")
        ok = len(parts) == 4 and parts[3].isdigit()
        found[branch] = (parts[2], int(parts[3])) if ok else None
    return found


def _failed_attempts(records: list[Record]) -> set[tuple[str, int]]:
    """Attempts the journal says failed, or were stopped with their unfinished work kept:
    their worktree and branch stay for inspection until ``stretto clean`` (docs/running.md)."""
    return {
        (str(r.fields.get("task")), int(r.fields.get("attempt", 0)))
        for r in records
        if r.type == "partial_kept"
        or (r.type == "decision" and r.fields.get("action") in ("retry", "give_up"))
    }


def check_invariants(repo: Path, run_id: str, *, tasks: Collection[str]) -> None:
    """Assert :func:`run_problems` finds nothing."""
    problems = run_problems(repo, run_id, tasks=tasks)
    assert not problems, "\n".join(map(str, problems))
