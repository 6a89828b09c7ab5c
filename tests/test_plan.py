"""Plan files: the seed format, generated ids, and every validation error located."""

from __future__ import annotations

from pathlib import Path

import pytest

from stretto.errors import PlanError
from stretto.plans.plan import load_plan, parse_plan
from stretto.plans.resolve import slugify

SEED = """\
stages:
  - name: backend
    steps:
      - goal: "Add rate limiting middleware"
        role: backend
        complexity: medium
      - goal: "Integration tests for rate limiter"
        role: qa
        complexity: low
  - name: docs
    depends_on: [backend]
    steps:
      - goal: "Document rate limiting in OpenAPI spec"
        role: docs
        complexity: low
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(PlanError) as caught:
        parse_plan(text, "plan.yaml")
    assert caught.value.exit_code == 2
    return [str(d) for d in caught.value.diagnostics]


def test_seed_plan_loads_as_written() -> None:
    plan = parse_plan(SEED, "plan.yaml")
    assert [t.id for t in plan.tasks] == [
        "add-rate-limiting-middleware",
        "integration-tests-for-rate-limiter",
        "document-rate-limiting-in-openapi-spec",
    ]
    middleware, tests, docs = plan.tasks
    assert (middleware.role, middleware.complexity, middleware.stage) == (
        "backend",
        "medium",
        "backend",
    )
    assert middleware.depends_on == () and tests.depends_on == ()
    # The docs stage waits for every step of the backend stage.
    assert set(docs.depends_on) == {middleware.id, tests.id}
    # No files declared: each step owns everything.
    assert middleware.files is None and middleware.lease == ("**",)


def test_ids_are_stable_and_unique() -> None:
    text = """\
stages:
  - name: s
    steps:
      - goal: Fix the bug
      - goal: Fix the bug
      - {id: fix-the-bug-2, goal: explicit}
      - goal: "!!!"
"""
    first = [t.id for t in parse_plan(text).tasks]
    second = [t.id for t in parse_plan(text).tasks]
    assert first == second == ["fix-the-bug", "fix-the-bug-3", "fix-the-bug-2", "step"]


def test_slugify_truncates_at_a_word() -> None:
    slug = slugify("Implement the entire authentication subsystem with OAuth2 and refresh tokens")
    assert len(slug) <= 48 and not slug.endswith("-")
    assert slug.startswith("implement-the-entire-authentication")


def test_all_fields() -> None:
    text = """\
name: Full
budget: 12.5
max_agents: 6
target: develop
context_files: [README.md, docs/]
unowned: nothing
stages:
  - name: one
    steps:
      - id: a
        title: Short title
        goal: The goal
        description: More words
        role: backend
        complexity: high
        files: ["src/**/*.py", ./lib/]
        agent: claude
        model: opus
        gates: ["pytest -q tests/test_a.py"]
        timeout: 15m
        max_attempts: 5
      - id: b
        goal: B
  - name: two
    steps:
      - id: c
        goal: C
        depends_on: [a]
"""
    plan = parse_plan(text)
    a, b, c = plan.tasks
    assert (plan.name, plan.budget, plan.max_agents, plan.target) == ("Full", 12.5, 6, "develop")
    assert plan.context_files == ("README.md", "docs/**")
    assert a.files == ("src/**/*.py", "lib/**") and a.lease == a.files
    assert (a.agent, a.model, a.gates, a.timeout, a.max_attempts) == (
        "claude",
        "opus",
        ("pytest -q tests/test_a.py",),
        900.0,
        5,
    )
    assert a.title == "Short title" and a.description == "More words"
    assert b.lease == ()  # unowned: nothing
    assert c.depends_on == ("a",)


def test_stage_may_depend_on_a_later_stage() -> None:
    text = """\
stages:
  - name: docs
    depends_on: [code]
    steps: [{id: d, goal: D}]
  - name: code
    steps: [{id: c1, goal: C1}, {id: c2, goal: C2, depends_on: [c1]}]
"""
    plan = parse_plan(text)
    # Waiting for stage 'code' is waiting for its sink c2 (c1 is covered through c2).
    assert plan.task("d").depends_on == ("c2",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "stages:\n  - name: a\n    steps:\n      - goal: x\n     bad: 1\n",
            "plan.yaml:5:6: YAML syntax error",
        ),
        ("stages:\n\t- x\n", "plan.yaml:2:1: YAML syntax error"),
        ("", "plan.yaml:1:1: the plan is empty"),
        ("stages: []\n", "plan.yaml:1:9: stages: the plan has no steps"),
        ("- a\n- b\n", "a plan must be a mapping"),
        (
            "stages:\n  - name: a\n    steps:\n      - goal: x\n        gaol: y\n",
            "plan.yaml:5:9: stages[0].steps[0].gaol: unknown key 'gaol' (did you mean 'goal'?)",
        ),
        (
            "stagse:\n  - name: a\n",
            "plan.yaml:1:1: stagse: unknown key 'stagse' (did you mean 'stages'?)",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - goal: [x]\n",
            "plan.yaml:4:15: stages[0].steps[0].goal: expected a string, got a list",
        ),
        (
            "max_agents: '4'\nstages:\n  - name: a\n    steps: [{goal: x}]\n",
            "plan.yaml:1:13: max_agents: expected an integer, got a string ('4')",
        ),
        (
            "max_agents: 0\nstages:\n  - name: a\n    steps: [{goal: x}]\n",
            "plan.yaml:1:13: max_agents: input should be greater than or equal to 1",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - role: qa\n",
            "plan.yaml:4:9: stages[0].steps[0]: missing required key 'goal'",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - goal: x\n        complexity: hihg\n",
            "stages[0].steps[0].complexity: unknown complexity 'hihg' (did you mean 'high'?)",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - goal: x\n        role: ''\n",
            "plan.yaml:5:15: stages[0].steps[0].role: empty role",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - {id: m, goal: x}\n"
            "      - {id: m, goal: y}\n",
            "plan.yaml:5:14: stages[0].steps[1].id: duplicate id 'm' (first used on line 4)",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - {id: models, goal: x}\n"
            "      - {id: api, goal: y, depends_on: [modles]}\n",
            "plan.yaml:5:41: stages[0].steps[1].depends_on[0]: unknown step 'modles' "
            "(did you mean 'models'?)",
        ),
        (
            "stages:\n  - name: backend\n    steps: [{goal: x}]\n  - name: docs\n"
            "    depends_on: [bakend]\n    steps: [{goal: y}]\n",
            "plan.yaml:5:18: stages[1].depends_on[0]: unknown stage 'bakend' "
            "(did you mean 'backend'?)",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - {id: x, goal: X, depends_on: [z]}\n"
            "      - {id: y, goal: Y, depends_on: [x]}\n"
            "      - {id: z, goal: Z, depends_on: [y]}\n",
            "dependency cycle: x -> z -> y -> x",
        ),
        (
            "stages:\n  - name: a\n    depends_on: [b]\n    steps: [{goal: A}]\n"
            "  - name: b\n    depends_on: [a]\n    steps: [{goal: B}]\n",
            "stage dependency cycle: a -> b -> a",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - goal: x\n        files: [../x]\n",
            "plan.yaml:5:17: stages[0].steps[0].files[0]: '../x' escapes the repository",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - goal: x\n        files: [/etc/x]\n",
            "stages[0].steps[0].files[0]: '/etc/x' is absolute",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - goal: x\n        timeout: soon\n",
            "stages[0].steps[0].timeout: invalid timeout 'soon'",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - goal: x\n        goal: y\n",
            "plan.yaml:5:9: stages[0].steps[0].goal: duplicate key 'goal'",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - {id: 'bad id', goal: x}\n",
            "stages[0].steps[0].id: invalid id 'bad id'",
        ),
        (
            "stages:\n  - name: a\n    steps: [{goal: x}]\n  - name: a\n    steps: [{goal: y}]\n",
            "plan.yaml:4:11: stages[1].name: duplicate stage name 'a'",
        ),
        (
            "unowned: some\nstages:\n  - name: a\n    steps: [{goal: x}]\n",
            "plan.yaml:1:10: unowned: unknown value 'some'",
        ),
        (
            "budget: -0.5\nstages:\n  - name: a\n    steps: [{goal: x}]\n",
            "plan.yaml:1:9: budget: input should be greater than or equal to 0, got -0.5",
        ),
        (
            "budget: .nan\nstages:\n  - name: a\n    steps: [{goal: x}]\n",
            "plan.yaml:1:9: budget: input should be greater than or equal to 0, got nan",
        ),
        (
            "budget: 'x'\nstages:\n  - name: a\n    steps: [{goal: x}]\n",
            "plan.yaml:1:9: budget: expected an amount in USD such as 5 or 12.5, got a string",
        ),
        (
            "stages:\n  - name: a\n    steps: [{goal: !custom x}]\n",
            "plan.yaml:3:20: stages[0].steps[0].goal: YAML cannot read this value: could not "
            "determine a constructor for the tag '!custom'; remove the tag or quote the value",
        ),
        (
            "stages:\n  - name: a\n    steps:\n      - <<: [1]\n        goal: x\n",
            "plan.yaml:4:14: stages[0].steps[0]: '<<' merges a mapping into this one",
        ),
    ],
)
def test_errors_are_located_and_explained(text: str, expected: str) -> None:
    messages = errors_of(text)
    assert any(expected in message for message in messages), messages


def test_every_problem_is_reported_at_once() -> None:
    text = """\
stages:
  - name: backend
    steps:
      - {id: models, goal: x, files: [../a]}
      - {id: models, goal: y, depends_on: [modles]}
  - name: docs
    depends_on: [bakend]
    steps: [{goal: d, role: ""}]
"""
    messages = errors_of(text)
    assert len(messages) == 5, messages
    # Sorted by position in the file.
    lines = [int(m.split(":")[1]) for m in messages]
    assert lines == sorted(lines)


def test_load_plan_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="file not found"):
        load_plan(tmp_path / "nope.yaml")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PlanError, match="not UTF-8"):
        load_plan(bad)


def test_digest_changes_with_content(tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text(SEED)
    first = load_plan(one)
    one.write_text(SEED + "\n# comment\n")
    assert load_plan(one).digest != first.digest
    assert first.name == "one"


def test_big_plan_validates(tmp_path: Path) -> None:
    steps = "\n".join(
        f"      - {{id: t{i}, goal: 'task {i}', files: [src/m{i}.py], "
        f"depends_on: [{f't{i - 1}' if i else ''}]}}"
        for i in range(500)
    )
    plan = parse_plan(f"stages:\n  - name: s\n    steps:\n{steps}\n")
    assert len(plan.tasks) == 500
    assert plan.task("t499").depends_on == ("t498",)


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("yes", "a boolean (true)"),
        ("Off", "a boolean (false)"),
        ("~", "nothing (null)"),
        ("12", "a number (12)"),
        ("-3.5", "a number (-3.5)"),
        (".inf", "a number (inf)"),
        ("0x1f", "a number (31)"),
    ],
)
def test_yaml_typing_of_plain_scalars_is_unchanged(value: str, got: str) -> None:
    """The fast path for plain scalars keeps YAML 1.1's typing of everything it could type."""
    messages = errors_of(f"stages:\n  - name: a\n    steps:\n      - goal: {value}\n")
    assert any(f"expected a string, got {got}" in m for m in messages), messages


def test_plain_words_stay_strings() -> None:
    plan = parse_plan("stages:\n  - name: a\n    steps:\n      - goal: Write the docs\n")
    assert plan.tasks[0].goal == "Write the docs"


def test_yaml_merge_keys_share_step_settings() -> None:
    """``<<: *anchor`` copies an anchored mapping's keys; a step's own keys win, and a problem in
    a merged value is reported where the value is written (the anchor)."""
    text = (
        "stages:\n"
        "  - name: a\n"
        "    steps:\n"
        "      - &api {goal: one, role: backend, complexity: high, files: [src/api.py]}\n"
        "      - <<: *api\n"
        "        goal: two\n"
        "        files: [src/other.py]\n"
        "      - <<: [*api, {agent: claude}]\n"
        "        goal: three\n"
    )
    plan = parse_plan(text, "plan.yaml")

    one, two, three = plan.tasks
    assert (one.goal, one.files) == ("one", ("src/api.py",))
    assert (two.goal, two.role, two.complexity) == ("two", "backend", "high")
    assert two.files == ("src/other.py",)
    assert (three.role, three.agent, three.files) == ("backend", "claude", ("src/api.py",))
    wrong = "unknown complexity 'hihg' (did you mean 'high'?); use one of: low, medium, high"
    assert errors_of(text.replace("complexity: high", "complexity: hihg")) == [
        f"plan.yaml:4:53: stages[0].steps[{n}].complexity: {wrong}" for n in range(3)
    ]
