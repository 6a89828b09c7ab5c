"""The planning conversation's format (pure text): the JSON Schema of an answer, the prompts of
a planning, split and repair call, and reading an answer back into plan data and YAML.

The answer schema is the plan format's stages and steps (docs/plan-format.md) with every key
required and no others, as OpenAI's strict structured outputs want; ``""`` and ``[]`` mean "not
set" and are left out of the plan. :mod:`stretto.planning.planner` validates the result with
:func:`~stretto.plans.plan.parse_plan`, which remains the authority.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from stretto.errors import Diagnostic
from stretto.plans.plan import Task

STEP_KEYS: tuple[str, ...] = (
    "id",
    "title",
    "goal",
    "description",
    "role",
    "complexity",
    "files",
    "outputs",
    "depends_on",
    "gates",
)
"""The keys of a step in an answer, in the order a plan file shows them."""
FAILURE_SHOWN = 3_000  # characters of the tail of each failure log shown in a split prompt


def _strings(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "description": description}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    """A strict object schema: every key required, no others (as OpenAI's strict mode wants)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(properties),
        "properties": properties,
    }


_STEP = _object(
    {
        "id": {"type": "string", "description": "Short unique id: a-z, 0-9 and '-'."},
        "title": {"type": "string", "description": "A label of a few words."},
        "goal": {"type": "string", "description": "What the agent must achieve, precisely."},
        "description": {"type": "string", "description": "Approach, constraints; '' if none."},
        "role": {"type": "string", "description": "backend, frontend, qa, docs, infra, …"},
        "complexity": {"type": "string", "enum": ["low", "medium", "high"]},
        "files": _strings("Files, folders or globs the step may change or create."),
        "outputs": _strings("Exact paths of the files the step creates; [] if none."),
        "depends_on": _strings("Ids of the steps that must be finished first."),
        "gates": _strings("Extra check commands for this step only; usually []."),
    }
)


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of a planning answer: the plan format's stages and steps, every key
    required, ``""`` or ``[]`` meaning "not set"."""
    stage = _object(
        {
            "name": {"type": "string", "description": "Unique stage name."},
            "depends_on": _strings("Names of the stages that must be finished first."),
            "steps": {"type": "array", "items": copy.deepcopy(_STEP)},
        }
    )
    name = {"type": "string", "description": "A short name for the plan."}
    return _object({"name": name, "stages": {"type": "array", "items": stage}})


def split_schema() -> dict[str, Any]:
    """The JSON Schema of a split answer: ``{"steps": [...]}``, steps as in a plan."""
    return _object({"steps": {"type": "array", "items": copy.deepcopy(_STEP)}})


def trim(text: str, limit: int, *, tail_only: bool = False) -> str:
    """``text`` cut to about ``limit`` characters: its head and tail, or only its tail."""
    if len(text) <= limit:
        return text
    cut = f"[… {len(text) - limit} characters trimmed …]"
    if tail_only:
        return f"{cut}\n{text[-limit:]}"
    head = limit * 3 // 4
    return f"{text[:head]}\n{cut}\n{text[head - limit :]}"


_INTRO = (
    "You are the planner of stretto, which runs several coding agents on one git repository "
    "at once and lands only work that passes the project's checks. Do not change any file: "
    "read what you need, then answer."
)
_RULES = """\
- Each step is done by one coding agent in its own git worktree, beside other steps.
- A step may change only the files it owns ("files": paths, folders or globs relative to the
  repository root, including files it creates); changes elsewhere are refused. Steps whose
  files overlap never run at the same time: give steps disjoint files where you can.
- List the new files a step creates in its "outputs" as well as in its "files".
- "depends_on" names the steps that must be finished first (no cycles); a stage's
  "depends_on" names stages. Depend only where a step needs another's result.
- complexity: low (a small change), medium, or high (a substantial change).
- The project's own checks run on every step; put commands in "gates" only for a check
  specific to that step.
- Ids are short, unique, lowercase: letters, digits and '-'."""
_ANSWER = (
    "Answer with one JSON object matching this JSON Schema and nothing else. Every key is "
    'required: use "" or [] when there is nothing to say.'
)


def _tail(schema: Mapping[str, Any], summary: str) -> list[str]:
    body = json.dumps(schema)
    answer = ["", "# Answer", "", _ANSWER, "", "```json", body, "```"]
    return [*answer, "", "# The repository", "", summary]


def plan_prompt(goal: str, summary: str, schema: Mapping[str, Any]) -> str:
    """The prompt of a planning call."""
    how = (
        "Cut the goal into steps, grouped in stages. A small goal may be a single step; prefer "
        "a few well-cut steps (often 2 to 8) to many tiny ones."
    )
    parts = [_INTRO, "", "# Goal", "", goal.strip(), "", "# How to plan", "", how, "", _RULES]
    return "\n".join([*parts, *_tail(schema, summary)])


def split_prompt(
    task: Task, failures: Sequence[str], summary: str, schema: Mapping[str, Any]
) -> str:
    """The prompt of a split call: the failing task, its failures, the rules of a split."""
    if task.files is not None:
        owned = ", ".join(task.files)
    else:
        owned = "any file" if task.lease else "none; leave files empty"
    parts = [_INTRO, "", "A step of the plan keeps failing. Split it into smaller steps that"]
    parts += ["together achieve its whole goal.", "", f"# The failing step: {task.id}", ""]
    parts += [task.goal, *(["", task.description] if task.description else []), ""]
    parts += [f"- role: {task.role}; complexity: {task.complexity}", f"- owned files: {owned}"]
    if task.outputs:
        parts.append(f"- files it must leave in place: {', '.join(task.outputs)}")
    if task.gates:
        parts.append(f"- its own checks: {'; '.join(task.gates)}")
    for number, log in enumerate(list(failures)[-3:], 1):
        shown = trim(log.strip(), FAILURE_SHOWN, tail_only=True)
        parts += ["", f"## Failure {number}", "```", shown, "```"]
    parts += [
        "",
        "# How to split",
        "",
        "- 2 to 6 steps, each small enough to succeed alone. Together they leave in place every "
        "file the failing step must (each in the outputs of the step that creates it).",
        f"- Each step owns a subset of the failing step's files ({owned}); a step that lists "
        "no files gets all of them.",
        f'- Use short ids such as "1", "2" or "models"; they become "{task.id}.<id>".',
        "- depends_on names other new steps only.",
        _RULES,
    ]
    return "\n".join([*parts, *_tail(schema, summary)])


def repair_prompt(prompt: str, answer: str, problems: Sequence[Diagnostic]) -> str:
    """The first prompt again, with the answer that could not be used and why."""
    listed = [f"- {d.field}: {d.message}" if d.field else f"- {d.message}" for d in problems]
    return "\n".join(
        [
            prompt.rstrip(),
            "",
            "# Your previous answer could not be used",
            "",
            "```json",
            trim(answer.strip(), 8000),
            "```",
            "",
            "Problems found (a path such as stages[0].steps[1].depends_on[0] points into that "
            "answer):",
            *listed,
            "",
            "Answer again with the complete, corrected JSON object.",
        ]
    )


# --------------------------------------------------------------------------- answers


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in an answer (bare, in a code fence, or amid prose), else None."""
    body = text.strip()
    fence = re.match(r"^```[\w-]*\s*\n(.*?)\n?```\s*$", body, re.S)
    if fence:
        body = fence.group(1)
    for candidate in (body, body[body.find("{") : body.rfind("}") + 1]):
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


class _Dumper(yaml.SafeDumper):
    """Plan YAML as people write it: keys in the order given, nested lists indented, lists of
    strings inline (``files: [a.py, b.py]``), multi-line strings as ``|`` blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value.strip() else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.Node:
    inline = all(isinstance(item, str) and "\n" not in item for item in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=inline)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(list, _represent_list)


def to_yaml(data: Any, header: Sequence[str] = ()) -> str:
    """YAML text of plain data, after ``# `` comment lines."""
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return "".join(f"# {line}".rstrip() + "\n" for line in header) + body


def clean_step(step: Any) -> Any:
    """A step as a plan holds it: known keys first; nulls, empty strings and lists left out."""
    if not isinstance(step, dict):
        return step
    ordered = {key: step[key] for key in STEP_KEYS if key in step}
    ordered.update(step)
    return {
        key: value
        for key, value in ordered.items()
        if not (value is None or value == [] or (value == "" and key != "goal"))
    }


def answer_to_plan(
    answer: Mapping[str, Any], *, name: str, context_files: Sequence[str] = ()
) -> dict[str, Any]:
    """Plan data from a planning answer. Anything beyond the schema is kept as it is, so that
    :func:`~stretto.plans.plan.parse_plan` reports it as it would in a hand-written plan."""
    data: dict[str, Any] = {"name": name}
    if context_files:
        data["context_files"] = list(context_files)
    for key, value in answer.items():
        if key == "stages" and isinstance(value, list):
            value = [_clean_stage(stage) for stage in value]
        if key != "name":
            data[key] = value
    return data


def _clean_stage(stage: Any) -> Any:
    if not isinstance(stage, dict):
        return stage
    out = {k: v for k, v in stage.items() if not (k == "depends_on" and v == [])}
    if isinstance(out.get("steps"), list):
        out["steps"] = [clean_step(step) for step in out["steps"]]
    return out
