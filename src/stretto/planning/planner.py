"""From a goal to a plan, and from a failing task to smaller steps: stretto's own model calls.

:func:`plan_from_goal` makes one call to a planning agent (an adapter that implements
:class:`~stretto.agents.base.Planner`: claude, codex, gemini). The agent sees the goal, a compact
summary of the repository (:mod:`stretto.planning.repo_summary`) and the JSON Schema of its
answer, and answers with a task graph, which becomes plan YAML validated by
:func:`~stretto.plans.plan.parse_plan` exactly like a hand-written plan. An invalid answer gets
ONE repair call (the answer and the
problems found); a second invalid answer raises :class:`PlanningError`. :func:`split_task` does
the same for a task that keeps failing: new steps that cover its goal within its files.

Each call runs the CLI read-only in the repository root (it may read files to plan better),
through :func:`stretto.process.run_process` (own process group, timeout, log). Prompt, answer,
log and candidate YAML are kept under ``out_dir/planner/`` (``1-plan.prompt.md``,
``1-plan.reply.json``, ``1-plan.log``, ``1-plan.plan.yaml``, then ``2-repair.*``), and each call
is described by a :class:`PlannerCall`. Both functions are synchronous (they run an event loop):
from async code, call them in a thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from stretto.agents.base import Planner
from stretto.errors import Diagnostic, InputError, PlanError, RunError, UsageError
from stretto.git import toplevel
from stretto.planning.planner_format import (
    answer_to_plan,
    clean_step,
    json_object,
    plan_prompt,
    plan_schema,
    repair_prompt,
    split_prompt,
    split_schema,
    to_yaml,
    trim,
)
from stretto.planning.repo_summary import RepoFacts, collect, render, repo_summary
from stretto.plans import paths
from stretto.plans.plan import Plan, Task, load_plan, parse_plan
from stretto.process import allowed_env, run_process, secret_values

__all__ = [
    "PlanResult",
    "PlannerAgentError",
    "PlannerCall",
    "PlanningError",
    "SplitResult",
    "SplittingError",
    "plan_from_goal",
    "repo_summary",
    "split_task",
]

T = TypeVar("T")
ANSWER_SHOWN = 2_000  # characters of a bad answer shown in an error


@dataclass(frozen=True)
class PlannerCall:
    """One model call stretto made itself (through a planning agent), for the journal and ledger.

    ``kind``: ``plan``, ``repair``, ``split`` or ``split-repair``. ``model``: the one the CLI
    reports, else the one asked for. ``error``: why the CLI gave no answer, if it did not.
    """

    kind: str
    agent: str
    model: str | None
    prompt_file: Path
    reply_file: Path
    usage: Mapping[str, int]
    cost_usd: float | None
    duration: float
    exit_code: int | None
    log_file: Path | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (for the journal and ``--json``)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("prompt_file", "reply_file", "log_file"):
            data[name] = str(data[name]) if data[name] is not None else None
        return {**data, "usage": dict(self.usage), "duration": round(self.duration, 3)}


@dataclass(frozen=True)
class PlanResult:
    """A validated plan made from a goal; ``yaml_text`` is what was written to ``plan.yaml``."""

    plan: Plan
    yaml_text: str
    calls: tuple[PlannerCall, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SplitResult:
    """The steps that replace a failing task (plan step mappings, ids ``<task>.<id>``), and the
    plan YAML of just those steps, as validated."""

    steps: tuple[dict[str, Any], ...]
    yaml_text: str
    calls: tuple[PlannerCall, ...]


class PlanningError(InputError):
    """The planning agent's answer was not a valid plan, even after one repair call (exit 2).

    ``answer`` is the last answer and ``calls`` the calls made; the diagnostics point into the
    plan YAML made from the answer, kept beside the prompts.
    """

    what = "plan"
    hint = "Try again, use another --planner, or write the plan yourself (docs/plan-format.md)"

    def __init__(
        self, diagnostics: Sequence[Diagnostic], *, answer: str, calls: Sequence[PlannerCall]
    ) -> None:
        self.answer = answer
        self.calls = tuple(calls)
        super().__init__(list(diagnostics))
        agent = self.calls[-1].agent if self.calls else "the planner"
        folder = self.calls[-1].prompt_file.parent if self.calls else "out_dir"
        self.message = "\n".join(
            [
                f"{agent}'s answer is not a valid {self.what}, even after a repair call "
                f"({len(self.calls)} calls made):",
                *(str(d) for d in self.diagnostics),
                "what came back:",
                trim(answer.strip() or "(nothing)", ANSWER_SHOWN),
                f"nothing was done; the prompts and answers are in {folder}. {self.hint}",
            ]
        )
        self.args = (self.message,)


class SplittingError(PlanningError):
    """The planning agent's split of a failing task was invalid, even after one repair call."""

    what = "split"
    hint = "The task stays failed; split it by hand in the plan, or give it more attempts"


class PlannerAgentError(RunError):
    """The planning agent gave no answer: its CLI failed, timed out or could not start."""

    def __init__(self, message: str, calls: Sequence[PlannerCall]) -> None:
        super().__init__(message)
        self.calls = tuple(calls)


# --------------------------------------------------------------------------- calls


def planner_for(agent: str, settings: Mapping[str, Any]) -> Planner:
    """The adapter for ``agent``, if it can plan.

    Raises:
        UsageError: unknown agent, or one without a planning mode (naming those that have one).
    """
    from stretto.agents import BUILTIN, get_adapter

    adapter = get_adapter(agent, settings)
    if isinstance(adapter, Planner):
        return adapter
    able = [name for name in BUILTIN if isinstance(get_adapter(name), Planner)]
    raise UsageError(
        f"agent '{agent}' cannot plan (it has no read-only mode with a structured answer); "
        f"use --planner with one of: {', '.join(able)}, or set agent under [planner]"
    )


@dataclass
class _Session:
    """The calls of one planning conversation: the ask, and at most one repair."""

    repo: Path
    agent: str
    settings: Mapping[str, Any]
    model: str | None
    env: Mapping[str, str] | None
    timeout: float
    folder: Path
    calls: list[PlannerCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.adapter = planner_for(self.agent, self.settings)
        self.env = allowed_env(os.environ) if self.env is None else self.env

    def ask(self, kind: str, prompt: str, schema: Mapping[str, Any]) -> str:
        """Run one call and return its answer text.

        Raises:
            PlannerAgentError: the CLI failed, timed out or gave no answer.
        """
        stem = f"{len(self.calls) + 1}-{kind}"
        prompt_file, reply_file, log_file = (
            self.folder / f"{stem}{suffix}" for suffix in (".prompt.md", ".reply.json", ".log")
        )
        lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        with tempfile.TemporaryDirectory(prefix="stretto-planner-") as work:
            launch = self.adapter.plan_launch(
                prompt,
                schema,
                cwd=self.repo,
                env=self.env or {},
                model=self.model,
                settings=self.settings,
                work_dir=Path(work),
            )  # raises UsageError (a missing CLI, a bad setting) before anything is written
            self.folder.mkdir(parents=True, exist_ok=True)
            prompt_file.write_text(prompt)
            finished = asyncio.run(
                run_process(
                    list(launch.argv),
                    cwd=launch.cwd,
                    env=launch.env,
                    log_path=log_file,
                    secrets=secret_values(launch.env),
                    timeout=self.timeout,
                    stdin=launch.stdin,
                    on_line=lambda line, stream: lines[stream].append(line),
                )
            )
        reply = self.adapter.plan_reply("\n".join(lines["stdout"]), finished.exit_code)
        answer = json_object(reply.text)
        reply_file.write_text(json.dumps(answer, indent=2) if answer else reply.text)
        error = f"no answer within {self.timeout:g} s" if finished.timed_out else reply.error
        model = reply.model or self.model or self.settings.get("model")
        self.calls.append(
            PlannerCall(
                kind,
                self.agent,
                str(model) if model else None,
                prompt_file,
                reply_file,
                dict(reply.usage),
                reply.cost_usd,
                finished.duration,
                finished.exit_code,
                log_file,
                error,
            )
        )
        if error is not None:
            stderr = "\n".join(line for line in lines["stderr"][-8:] if line.strip())
            hint = "; raise timeout under [planner]" if finished.timed_out else ""
            raise PlannerAgentError(
                f"the planning agent ({self.agent}) failed: {error}{hint}"
                + (f"\n{trim(stderr, 1500)}" if stderr else "")
                + f"\nnothing was done; its output is in {log_file}",
                self.calls,
            )
        return reply.text

    def converse(
        self,
        kind: str,
        prompt: str,
        schema: Mapping[str, Any],
        check: Callable[[dict[str, Any], Path], tuple[T | None, list[Diagnostic]]],
        error: type[PlanningError],
    ) -> T:
        """Ask; on an invalid answer, ask once more with the problems; then give up."""
        text = self.ask(kind, prompt, schema)
        for repairs_left in (1, 0):
            answer = json_object(text)
            stem = self.folder / f"{len(self.calls)}-{self.calls[-1].kind}"
            if answer is None:
                what = "nothing" if not text.strip() else "text that holds no JSON object"
                message = f"the answer is {what}; answer with one JSON object"
                result, problems = None, [Diagnostic(str(stem) + ".reply.json", 0, 0, "", message)]
            else:
                result, problems = check(answer, Path(f"{stem}.plan.yaml"))
            if result is not None:
                return result
            if not repairs_left:
                raise error(problems, answer=text, calls=self.calls)
            repair_kind = "repair" if kind == "plan" else f"{kind}-repair"
            text = self.ask(repair_kind, repair_prompt(prompt, text, problems), schema)
        raise AssertionError("unreachable")


def owned_file_warnings(plan: Plan, facts: RepoFacts, repo: Path) -> list[str]:
    """Warnings for steps that own no files, and for owned paths that neither exist nor are
    declared as the step's outputs (globs are not checked)."""
    known = set(facts.files)
    known.update(
        path.rsplit("/", n)[0] for path in facts.files for n in range(1, path.count("/") + 1)
    )
    warnings = []
    for task in plan.tasks:
        if task.files is None:
            warnings.append(
                f"step '{task.id}' lists no owned files: it owns the whole repository and runs "
                "alone"
            )
        for pattern in task.files or ():
            if not paths.is_literal(pattern) or pattern in task.outputs or pattern in known:
                continue
            if not (repo / pattern).exists():
                warnings.append(
                    f"step '{task.id}' owns '{pattern}', which does not exist and is not among "
                    "its outputs; if the step creates it, add it to outputs, else fix the path"
                )
    return warnings


def plan_from_goal(
    repo: Path,
    goal: str,
    *,
    agent: str,
    settings: Mapping[str, Any],
    model: str | None = None,
    out_dir: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    plan_name: str | None = None,
) -> PlanResult:
    """Turn a goal into a validated plan with one call to a planning agent (two if repaired).

    Writes each call's files under ``out_dir/planner/`` and the plan to ``out_dir/plan.yaml``.

    Args:
        repo: Any directory in the repository.
        goal: What the user wants done, in their words.
        agent: The planning agent (``[planner] agent`` or ``--planner``).
        settings: That agent's ``[agents.NAME]`` table.
        model: Model or tier for the call (else the agent's ``model``, else its strong tier).
        env: The agent's environment (default: this process's allow-listed variables).
        timeout: Seconds per call.
        plan_name: The plan's name (default: the planner's, else the goal's first line).

    Raises:
        UsageError: an empty goal, or an agent that cannot plan.
        PlanningError: the answer was invalid twice; no plan.yaml was written.
        PlannerAgentError: the agent's CLI failed or timed out.
    """
    if not goal.strip():
        raise UsageError("empty goal; say what you want done, e.g. -g 'Add a /health endpoint'")
    top = toplevel(repo)
    facts = collect(top)
    session = _Session(top, agent, settings, model, env, timeout, out_dir / "planner")
    header = [f"Planned by stretto with {agent} from the goal:", *goal.strip().splitlines()]
    header.append("Checked like a hand-written plan (docs/plan-format.md); edit it freely.")

    def check(answer: dict[str, Any], candidate: Path) -> tuple[str | None, list[Diagnostic]]:
        given = answer.get("name")
        name = plan_name or (given.strip() if isinstance(given, str) else "")
        name = name or goal.strip().splitlines()[0][:60]
        text = to_yaml(answer_to_plan(answer, name=name, context_files=facts.context_files), header)
        candidate.write_text(text)
        try:
            parse_plan(text, str(candidate))
        except PlanError as error:
            return None, list(error.diagnostics)
        return text, []

    schema = plan_schema()
    prompt = plan_prompt(goal, render(facts), schema)
    yaml_text = session.converse("plan", prompt, schema, check, PlanningError)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plan.yaml").write_text(yaml_text)
    plan = load_plan(out_dir / "plan.yaml")
    warnings = tuple(owned_file_warnings(plan, facts, top))
    return PlanResult(plan, yaml_text, tuple(session.calls), warnings)


# --------------------------------------------------------------------------- splitting


def _names_files(pattern: str) -> bool:
    return "." in pattern.rsplit("/", 1)[-1][1:]


def within(pattern: str, parents: Sequence[str]) -> bool:
    """Whether everything ``pattern`` owns is owned by one of ``parents`` (all normalized).

    Exact for literal paths; for globs, conservative: the same pattern, a parent folder holding
    the glob's literal start, or a parent without ``**`` whose segments match the glob's text.
    """
    if paths.EVERYTHING_PATTERN in parents or pattern in parents:
        return True
    if paths.is_literal(pattern):
        probe = pattern if _names_files(pattern) else f"{pattern}/x"
        return any(paths.owns(p, pattern) and paths.owns(p, probe) for p in parents)
    start: list[str] = []
    for segment in pattern.split("/"):
        if not paths.is_literal(segment):
            break
        start.append(segment)
    anchor = "/".join(start)
    for parent in parents:
        base = parent.removesuffix("/**")
        folder = paths.is_literal(base) and not _names_files(base)
        if folder and (anchor == base or anchor.startswith(base + "/")):
            return True
        if "**" in parent or "**" in pattern or parent.count("/") != pattern.count("/"):
            continue
        if paths.owns(parent, pattern) and (_names_files(pattern) or not _names_files(parent)):
            return True
    return False


Problem = tuple[tuple[str | int, ...], str]  # (path in the split plan, message)


def split_steps(answer: Mapping[str, Any], task: Task) -> tuple[list[Any], list[Problem]]:
    """The answer's steps with ids ``<task>.<id>``, dependencies renamed and missing files
    inherited from the task; and the problems plan validation cannot see."""
    raw = answer.get("steps")
    if not isinstance(raw, list):
        return [], [((), "the answer has no 'steps' list; answer with {\"steps\": [...]}")]
    problems: list[Problem] = []
    if len(raw) < 2:
        problems.append((("stages", 0, "steps"), "a split needs at least two steps"))
    renamed: dict[str, str] = {}
    for step in raw:
        sid = step.get("id") if isinstance(step, dict) else None
        sid = sid.strip() if isinstance(sid, str) else ""
        if sid:
            renamed[sid] = sid if sid.startswith(task.id + ".") else f"{task.id}.{sid}"
    steps: list[Any] = []
    for index, raw_step in enumerate(raw):
        if not isinstance(raw_step, dict):
            steps.append(raw_step)
            continue
        step = dict(raw_step)
        sid = step.get("id")
        step["id"] = renamed.get(sid.strip(), "") if isinstance(sid, str) else ""
        step["id"] = step["id"] or f"{task.id}.{index + 1}"
        if isinstance(step.get("depends_on"), list):
            step["depends_on"] = [
                renamed.get(d, d) if isinstance(d, str) else d for d in step["depends_on"]
            ]
        if not step.get("files") and task.files is not None:
            step["files"] = list(task.files)
        for f_index, pattern in enumerate(step.get("files") or ()):
            if not isinstance(pattern, str) or paths.problem(pattern):
                continue  # the plan's own validation reports it
            if not within(paths.normalize(pattern), task.lease):
                owned = ", ".join(task.files or ()) or "no files"
                problems.append(
                    (
                        ("stages", 0, "steps", index, "files", f_index),
                        f"'{pattern}' is outside the files of '{task.id}' ({owned}); a new "
                        "step may only own files the failing step owns",
                    )
                )
        steps.append(clean_step(step))
    return steps, problems


def split_task(
    repo: Path,
    task: Task,
    failures: Sequence[str],
    *,
    agent: str,
    settings: Mapping[str, Any],
    model: str | None = None,
    out_dir: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    existing_ids: Collection[str],
) -> SplitResult:
    """Split a failing task into smaller steps with one planning call (two if repaired).

    The steps cover the task's goal; each owns a subset of its files (one that names none gets
    them all), depends only on other new steps, and has an id ``<task>.<id>`` not in
    ``existing_ids``. They are validated as a plan of their own (``yaml_text``, also written to
    ``out_dir/split.yaml``). ``failures`` are the failed attempts' logs (tails are shown).

    Raises:
        SplittingError: the answer was invalid twice.
        PlannerAgentError: the agent's CLI failed or timed out.
    """
    from stretto.plans.yamlsource import load_located

    top = toplevel(repo)
    session = _Session(top, agent, settings, model, env, timeout, out_dir / "planner")
    unowned = "nothing" if task.files is None and not task.lease else "everything"

    def check(
        answer: dict[str, Any], candidate: Path
    ) -> tuple[SplitResult | None, list[Diagnostic]]:
        steps, extra = split_steps(answer, task)
        stage = {"name": f"{task.id}-split", "steps": steps}
        data = {"name": f"split of {task.id}", "unowned": unowned, "stages": [stage]}
        text = to_yaml(data, [f"Steps that replace '{task.id}', planned by stretto with {agent}."])
        candidate.write_text(text)
        located = load_located(text, str(candidate))[0]
        problems = [located.diagnostic(where, message) for where, message in extra]
        for index, step in enumerate(steps):
            if isinstance(step, dict) and step.get("id") in existing_ids:
                problems.append(
                    located.diagnostic(
                        ("stages", 0, "steps", index, "id"),
                        f"id '{step['id']}' is already taken in the plan; choose another",
                    )
                )
        try:
            parse_plan(text, str(candidate))
        except PlanError as error:
            problems += error.diagnostics
        if problems:
            return None, sorted(problems, key=lambda d: (d.line, d.column))
        return SplitResult(tuple(steps), text, ()), []

    schema = split_schema()
    prompt = split_prompt(task, failures, render(collect(top)), schema)
    result = session.converse("split", prompt, schema, check, SplittingError)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "split.yaml").write_text(result.yaml_text)
    return SplitResult(result.steps, result.yaml_text, tuple(session.calls))
