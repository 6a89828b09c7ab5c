"""The prompt an agent gets for one attempt (pure text assembly).

It holds: the goal and description, the files the task owns (and that changes elsewhere will be
refused), the repository's context files, the gates that will judge the work, and on a retry the
previous attempt's failure with the tail of its log, trimmed so a long log cannot drown the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stretto.plans.paths import EVERYTHING_PATTERN
from stretto.plans.plan import Task

CONTEXT_LIMIT = 20_000  # characters of context files
FAILURE_LIMIT = 4_000  # characters of the previous failure's log


@dataclass(frozen=True, slots=True)
class Failure:
    """Why the previous attempt did not land, for the next prompt."""

    attempt: int
    reason: str
    log: str = ""


def _trim(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"[… {len(text) - limit} characters trimmed …]\n" + text[-limit:]


def read_context(
    root: Path, patterns: Sequence[str], refused: list[str] | None = None
) -> list[tuple[str, str]]:
    """(path, text) of the context files that exist, within :data:`CONTEXT_LIMIT` in total.

    A file that is (or lies under) a symlink leading out of the repository is never read: a
    committed link to ``/proc/self/environ`` or ``~/.ssh`` would paste stretto's secrets into
    every prompt. Such paths are appended to ``refused``.
    """
    out: list[tuple[str, str]] = []
    budget = CONTEXT_LIMIT
    top = root.resolve()
    for pattern in patterns:
        candidates = (
            sorted(root.glob(pattern)) if any(c in pattern for c in "*?[") else [root / pattern]
        )
        for path in candidates:
            if budget <= 0 or not path.is_file():
                continue
            real = path.resolve()
            if not real.is_relative_to(top) or real.is_relative_to(top / ".git"):
                if refused is not None:
                    refused.append(path.relative_to(root).as_posix())
                continue
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            text = text[:budget]
            budget -= len(text)
            out.append((path.relative_to(root).as_posix(), text))
    return out


def build_prompt(
    task: Task,
    *,
    attempt: int,
    gates: Sequence[str],
    context: Sequence[tuple[str, str]] = (),
    failure: Failure | None = None,
) -> str:
    """The Markdown prompt for one attempt of ``task``."""
    parts = [f"# Task: {task.title}", "", task.goal]
    if task.description and task.description != task.goal:
        parts += ["", task.description]
    parts += ["", "## Files you own"]
    if task.files is None or EVERYTHING_PATTERN in task.lease:
        parts.append("This task may change any file in the repository.")
    else:
        parts.append("Change only these files (globs allowed); changes elsewhere are refused:")
        parts += [f"- `{pattern}`" for pattern in task.files]
    if task.outputs:
        parts += ["", "These files must exist when you finish:"]
        parts += [f"- `{path}`" for path in task.outputs]
    if gates:
        parts += ["", "## How your work is checked", "Your work lands only if all of these pass:"]
        parts += [f"- {gate}" for gate in gates]
    parts += [
        "",
        "Work in the current directory (a git worktree). Commit if you like; anything left",
        "uncommitted is committed for you when you exit.",
    ]
    if failure is not None:
        parts += [
            "",
            f"## Previous attempt {failure.attempt} failed",
            failure.reason,
        ]
        if failure.log.strip():
            parts += ["", "```", _trim(failure.log.strip(), FAILURE_LIMIT), "```"]
        parts += ["", "Fix the cause of this failure in this attempt."]
    if context:
        parts += ["", "## Context files"]
        for path, text in context:
            parts += ["", f"### {path}", "```", text.rstrip(), "```"]
    return "\n".join(parts) + "\n"
