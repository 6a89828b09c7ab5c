"""Planning: a goal to a validated plan, and a failing task to smaller steps.

Everything is real but the model's replies: the CLIs pinned by scripts/install-agents (a missing
one fails these tests, it does not skip them), real git repositories, real processes, and the
scripted model server on 127.0.0.1. stretto's own model calls are counted from the PlannerCall
records; that the CLI was really driven, and how, from the server's request log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from stretto.errors import InputError, UsageError
from stretto.planning.planner import (
    PlannerAgentError,
    PlanningError,
    SplittingError,
    owned_file_warnings,
    plan_from_goal,
    split_task,
    within,
)
from stretto.planning.planner_format import answer_to_plan, json_object, plan_schema, split_schema
from stretto.planning.repo_summary import TREE_LINES, collect, repo_summary, trimmed_tree
from stretto.plans.plan import Task, load_plan, parse_plan
from stretto.testing.fakemodel import (
    FakeModelServer,
    HttpError,
    LoggedRequest,
    Match,
    Rule,
    Script,
    Step,
    ToolCall,
)
from stretto.testing.repo import IDENTITY, git, make_repo

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / ".tools" / "npm" / "node_modules" / ".bin"
CLIS = ("claude", "codex", "gemini")
MODEL = {"claude": "fake-model", "codex": "fake-model", "gemini": "gemini-2.5-flash"}
SETTINGS: dict[str, dict[str, Any]] = {"claude": {"max_retries": 0}, "codex": {}, "gemini": {}}
REPAIR = Match(body_contains="previous answer could not be used")
GOAL = "Add a /health endpoint that reports the version, with tests and docs"

FILES = {
    "README.md": "# demo\n\nA tiny web app.\n",
    "AGENTS.md": "Use type hints everywhere.\n",
    "pyproject.toml": '[project]\nname = "demo"\n\n[tool.pytest.ini_options]\n\n[tool.ruff]\n',
    "src/app/__init__.py": "",
    "src/app/api.py": "def index():\n    return 'hi'\n",
    "tests/test_api.py": "def test_index():\n    pass\n",
}


@pytest.fixture(scope="module", autouse=True)
def clis_installed() -> None:
    for name in CLIS:
        assert (BIN / name).exists(), (
            f"{BIN / name} is missing: run scripts/install-agents (these tests fail, they do not "
            "skip, without the real CLIs)"
        )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    return make_repo(tmp_path / "repo", FILES)


def env_for(server: FakeModelServer, tmp_path: Path) -> dict[str, str]:
    urls = server.env()
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path / "tmp"),
        "LANG": "C.UTF-8",
        "ANTHROPIC_BASE_URL": urls["ANTHROPIC_BASE_URL"],
        "ANTHROPIC_API_KEY": "sk-ant-fake",
        "OPENAI_BASE_URL": urls["OPENAI_BASE_URL"],
        "OPENAI_API_KEY": "sk-fake",
        "GOOGLE_GEMINI_BASE_URL": urls["GOOGLE_GEMINI_BASE_URL"],
        "GEMINI_API_KEY": "fake",
        **IDENTITY,
    }


def answer(cli: str, data: Mapping[str, Any]) -> Step:
    """The model's answer as each CLI takes it: Claude Code through its StructuredOutput tool
    (what --json-schema makes it offer), the others as the reply text."""
    if cli == "claude":
        return Step(tool_calls=[ToolCall("StructuredOutput", dict(data))])
    return Step(text=json.dumps(data))


def step(sid: str, goal: str, **kw: Any) -> dict[str, Any]:
    """A step of an answer, every key present as the schema requires."""
    base: dict[str, Any] = {
        "id": sid,
        "title": "",
        "goal": goal,
        "description": "",
        "role": "backend",
        "complexity": "low",
        "files": [],
        "outputs": [],
        "depends_on": [],
        "gates": [],
    }
    return {**base, **kw}


def plan_answer(*steps: dict[str, Any], name: str = "health") -> dict[str, Any]:
    return {"name": name, "stages": [{"name": "work", "depends_on": [], "steps": list(steps)}]}


GOOD = plan_answer(
    step(
        "health",
        "Add GET /health returning the version",
        files=["src/app/api.py", "src/app/health.py"],
        outputs=["src/app/health.py"],
    ),
    step(
        "tests",
        "Test GET /health",
        role="qa",
        files=["tests/test_health.py"],
        outputs=["tests/test_health.py"],
        depends_on=["health"],
    ),
    step("docs", "Document /health", role="docs", files=["docs/health.md"]),
)
BROKEN = plan_answer(
    step("health", "Add GET /health", files=["src/app/api.py"]),
    step("tests", "Test it", files=["tests/test_health.py"], depends_on=["helth"]),
)
STILL_BROKEN = plan_answer(
    step("health", "Add GET /health", files=["/etc/passwd"]),
    step("tests", "Test it", depends_on=["tests"]),
)


def generate(server: FakeModelServer) -> list[LoggedRequest]:
    return [r for r in server.requests if r.endpoint == "generate"]


def snapshot(repo: Path) -> tuple[str, str]:
    return git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain", "--ignored")


def run_plan(
    cli: str, repo: Path, script: Script | list[Step], tmp_path: Path, **kw: Any
) -> tuple[Any, FakeModelServer]:
    with FakeModelServer(script) as server:
        result = plan_from_goal(
            repo,
            GOAL,
            agent=cli,
            settings=SETTINGS[cli],
            model=MODEL[cli],
            out_dir=tmp_path / "run",
            env=env_for(server, tmp_path),
            timeout=kw.pop("timeout", 60),
            **kw,
        )
    return result, server


def assert_driven(cli: str, server: FakeModelServer, calls: int) -> None:
    """Exactly what each CLI sends for ``calls`` planning calls, and that it was read-only."""
    requests = server.requests
    if cli == "claude":
        # Claude Code checks its base URL (HEAD /), then one streamed Messages request; the
        # StructuredOutput tool call ends the session. No token counting, no title request.
        assert [(r.method, r.endpoint) for r in requests] == [
            ("HEAD", "head"),
            ("POST", "generate"),
        ] * calls
    else:
        assert [(r.method, r.endpoint) for r in requests] == [("POST", "generate")] * calls
    for request in generate(server):
        body = request.body
        assert GOAL in json.dumps(body)
        assert "src/app/api.py" in json.dumps(body)  # the repository summary
        if cli == "claude":
            tools = {tool["name"]: tool for tool in body["tools"]}
            assert set(tools) == {"Read", "Glob", "Grep", "StructuredOutput"}
            assert body["model"] == "fake-model"
        elif cli == "codex":
            assert request.path == "/v1/responses"
            fmt = body["text"]["format"]
            assert fmt["type"] == "json_schema" and fmt["strict"] is True
            assert fmt["schema"] == plan_schema()
            assert '"sandbox_mode":"read-only"' in json.dumps(body["client_metadata"]).replace(
                "\\", ""
            )
        else:
            assert "gemini-2.5-flash:streamGenerateContent" in request.path
            names = {f["name"] for t in body["tools"] for f in t.get("functionDeclarations", [])}
            assert "read_file" in names
            assert not names & {"write_file", "replace", "run_shell_command"}


# --------------------------------------------------------------------------- repo summary


def test_trimmed_tree_opens_shallow_folders_first_and_counts_the_rest() -> None:
    files = [f"vendor/lib/m{i:03}.js" for i in range(300)]
    files += ["README.md", "src/app/api.py", "src/app/models.py", "src/app/templates/a.html"]
    lines = trimmed_tree(sorted(files), max_lines=9, per_dir=5)
    assert lines == [
        "README.md",
        "src/app/api.py",
        "src/app/models.py",
        "src/app/templates/a.html",
        "vendor/lib/  (300 files: 300 .js)",
    ]
    big = trimmed_tree(sorted(files))
    assert len(big) <= TREE_LINES
    assert "vendor/lib/… (260 more files)" in big
    assert "vendor/lib/m039.js" in big and "vendor/lib/m040.js" not in big


def test_repo_summary_of_a_repository(tmp_path: Path) -> None:
    readme = "# Shop\n" + "".join(f"line {n}\n" for n in range(2, 100))
    files = {
        **FILES,
        "README.md": readme,
        "CLAUDE.md": "Run the tests before you finish.\n",
        "web/src/App.tsx": "export {}\n",
        "web/src/main.ts": "export {}\n",
        **{f"data/fixtures/f{i}.json": "{}\n" for i in range(400)},
    }
    repo = make_repo(tmp_path / "repo", files)
    (repo / "untracked.py").write_text("x = 1\n")
    text = repo_summary(repo / "src")  # any folder of the repository will do
    assert text.startswith("Repository: repo, branch main at ")
    assert f"{len(files)} tracked files." in text.splitlines()[0]
    assert "JSON 400, Markdown 3, Python 3, TypeScript 2, TOML 1" in text
    assert "- tests: `pytest -q` (detected)" in text
    assert "- lint: `ruff check` (detected)" in text
    assert "data/fixtures/… (360 more files)" in text
    assert "web/src/App.tsx" in text and "src/app/api.py" in text
    assert "untracked.py" not in text
    assert "line 40\n" in text and "line 41\n" not in text and "[…]" in text
    assert "### AGENTS.md\n```\nUse type hints everywhere." in text
    assert "### CLAUDE.md\n```\nRun the tests before you finish." in text


def test_repo_summary_prefers_configured_gates(tmp_path: Path) -> None:
    config = '[gates]\ntests = "make check"\nslow = { command = "pytest -m slow" }\n'
    repo = make_repo(tmp_path / "repo", {**FILES, "stretto.toml": config})
    text = repo_summary(repo)
    assert "- tests: `make check` (configured in stretto.toml)" in text
    assert "- slow: `pytest -m slow` (configured in stretto.toml)" in text
    assert "pytest -q" not in text


# --------------------------------------------------------------------------- pure parts


def test_answers_are_found_in_fences_and_prose() -> None:
    assert json_object('{"a": 1}') == {"a": 1}
    assert json_object('```json\n{"a": 1}\n```') == {"a": 1}
    assert json_object('Here is the plan:\n{"a": {"b": 2}}\nGood luck.') == {"a": {"b": 2}}
    assert json_object("[1, 2]") is None
    assert json_object("I could not make a plan.") is None


def test_answer_to_plan_keeps_what_the_schema_does_not_know() -> None:
    data = answer_to_plan(
        {
            "name": "x",
            "budget": 3,
            "stages": [{"name": "s", "depends_on": [], "steps": [step("a", "g")]}],
        },
        name="mine",
        context_files=["AGENTS.md"],
    )
    assert data == {
        "name": "mine",
        "context_files": ["AGENTS.md"],
        "budget": 3,
        "stages": [
            {
                "name": "s",
                "steps": [{"id": "a", "goal": "g", "role": "backend", "complexity": "low"}],
            }
        ],
    }


def test_owned_file_warnings(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    (repo / "local.cfg").write_text("on disk, not tracked\n")
    text = """\
stages:
  - name: s
    steps:
      - {id: a, goal: g, files: [src, src/app, src/app/api.py, local.cfg, "lib/*.py", docs/]}
      - {id: b, goal: g, files: [src/app/new.py, src/app/typo.py], outputs: [src/app/new.py]}
      - {id: c, goal: g}
"""
    warnings = owned_file_warnings(parse_plan(text), collect(repo), repo)
    assert warnings == [
        "step 'b' owns 'src/app/typo.py', which does not exist and is not among its outputs; "
        "if the step creates it, add it to outputs, else fix the path",
        "step 'c' lists no owned files: it owns the whole repository and runs alone",
    ]


@pytest.mark.parametrize(
    ("pattern", "parents", "inside"),
    [
        ("src/a.py", ("src/a.py", "tests/x.py"), True),
        ("src/b.py", ("src/a.py",), False),
        ("src/api/x.py", ("src/api",), True),
        ("src/api", ("src/api/*.py",), False),
        ("src/api/*.py", ("src/api",), True),
        ("src/api/*.py", ("src/api/**",), True),
        ("src/api/v*.py", ("src/api/*.py",), True),
        ("src/*.py", ("src/api/*.py",), False),
        ("src/**/x.py", ("src/*/x.py",), False),
        ("anything/at/all.md", ("**",), True),
        ("README.md", (), False),
    ],
)
def test_within(pattern: str, parents: tuple[str, ...], inside: bool) -> None:
    assert within(pattern, parents) is inside


def test_schemas_are_strict() -> None:
    """Every object lists all its keys as required and allows no others (OpenAI strict mode)."""

    def objects(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            found = [node] if node.get("type") == "object" else []
            return found + [o for v in node.values() for o in objects(v)]
        if isinstance(node, list):
            return [o for v in node for o in objects(v)]
        return []

    for schema in (plan_schema(), split_schema()):
        for obj in objects(schema):
            assert obj["additionalProperties"] is False
            assert obj["required"] == list(obj["properties"])


def test_an_agent_without_a_planning_mode_is_refused(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"agent .aider. cannot plan.*claude, codex, gemini"):
        plan_from_goal(repo, GOAL, agent="aider", settings={}, out_dir=tmp_path / "run")
    with pytest.raises(UsageError, match="empty goal"):
        plan_from_goal(repo, "  ", agent="claude", settings={}, out_dir=tmp_path / "run")
    with pytest.raises(UsageError, match=r"Claude Code .* was not found"):
        plan_from_goal(
            repo,
            GOAL,
            agent="claude",
            settings={"command": str(tmp_path / "no-such-claude")},
            out_dir=tmp_path / "run",
        )
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- with the real CLIs


@pytest.mark.parametrize("cli", CLIS)
def test_a_good_plan_in_one_call(cli: str, repo: Path, tmp_path: Path) -> None:
    before = snapshot(repo)
    result, server = run_plan(cli, repo, [answer(cli, GOOD)], tmp_path)
    assert_driven(cli, server, calls=1)
    assert snapshot(repo) == before

    assert [(c.kind, c.agent, c.exit_code, c.error) for c in result.calls] == [
        ("plan", cli, 0, None)
    ]
    call = result.calls[0]
    assert call.model == MODEL[cli]
    assert call.usage["output_tokens"] > 0
    assert (call.cost_usd is not None) == (cli == "claude")  # only Claude Code reports dollars
    assert call.prompt_file == tmp_path / "run" / "planner" / "1-plan.prompt.md"
    assert GOAL in call.prompt_file.read_text()
    assert json.loads(call.reply_file.read_text()) == GOOD
    assert call.log_file is not None and call.log_file.exists()
    record = json.loads(json.dumps(call.to_dict()))  # journal-ready
    assert record["kind"] == "plan" and record["prompt_file"] == str(call.prompt_file)

    plan = result.plan
    assert [t.id for t in plan.tasks] == ["health", "tests", "docs"]
    assert plan.task("tests").depends_on == ("health",)
    assert plan.task("health").files == ("src/app/api.py", "src/app/health.py")
    assert plan.name == "health"
    assert plan.context_files == ("AGENTS.md",)
    written = tmp_path / "run" / "plan.yaml"
    assert written.read_text() == result.yaml_text
    assert plan.source == str(written)
    assert load_plan(written).summary() == plan.summary()
    assert result.yaml_text.startswith(f"# Planned by stretto with {cli} from the goal:\n# {GOAL}")
    # docs/health.md does not exist and is not an output; the declared new files are fine.
    assert result.warnings == (
        "step 'docs' owns 'docs/health.md', which does not exist and is not among its outputs; "
        "if the step creates it, add it to outputs, else fix the path",
    )


@pytest.mark.parametrize("cli", CLIS)
def test_planning_cannot_change_the_repository(cli: str, repo: Path, tmp_path: Path) -> None:
    """The model tries to write a file before answering: the CLI's read-only mode stops it."""
    target = repo / "pwned.txt"
    attempt = {
        "claude": ToolCall("Write", {"file_path": str(target), "content": "x\n"}),
        "codex": ToolCall(
            "exec_command",
            {"cmd": "echo x > pwned.txt; printf '%s' x >> src/app/api.py"},
        ),
        "gemini": ToolCall("write_file", {"file_path": str(target), "content": "x\n"}),
    }[cli]
    before = snapshot(repo)
    result, server = run_plan(cli, repo, [Step(tool_calls=[attempt]), answer(cli, GOOD)], tmp_path)
    assert snapshot(repo) == before
    assert not target.exists()
    assert len(result.calls) == 1
    assert [r.step for r in generate(server)] == [0, 1]
    refusal = {  # what the CLI told the model about its attempt
        "claude": "No such tool available: Write",  # plan mode offers no tool that writes
        "codex": "pwned.txt: Read-only file system",  # the read-only sandbox
        "gemini": "not found. Did you mean one of",  # headless default mode: no write tools
    }[cli]
    assert refusal in json.dumps(generate(server)[1].body)
    assert [t.id for t in result.plan.tasks] == ["health", "tests", "docs"]


def test_a_malformed_plan_is_repaired_on_the_second_call(repo: Path, tmp_path: Path) -> None:
    script = Script.from_steps(
        [answer("codex", BROKEN)], rules=[Rule(REPAIR, answer("codex", GOOD))]
    )
    result, server = run_plan("codex", repo, script, tmp_path)
    assert [c.kind for c in result.calls] == ["plan", "repair"]
    assert [(r.step, r.rule) for r in generate(server)] == [(0, None), (None, "rules[0]")]
    repair = result.calls[1].prompt_file.read_text()
    assert repair.startswith(result.calls[0].prompt_file.read_text().rstrip())
    assert "stages[0].steps[1].depends_on[0]: unknown step 'helth' (did you mean 'health'?)" in (
        repair
    )
    assert '"helth"' in repair  # the previous answer is shown
    first = tmp_path / "run" / "planner" / "1-plan.plan.yaml"
    assert "helth" in first.read_text()
    assert [t.id for t in result.plan.tasks] == ["health", "tests", "docs"]


def test_a_prose_answer_is_repaired(repo: Path, tmp_path: Path) -> None:
    script = Script.from_steps(
        [Step(text="I would add an endpoint and then test it.")],
        rules=[Rule(REPAIR, answer("codex", GOOD))],
    )
    result, _ = run_plan("codex", repo, script, tmp_path)
    assert [c.kind for c in result.calls] == ["plan", "repair"]
    assert "the answer is text that holds no JSON object" in result.calls[1].prompt_file.read_text()


def test_a_plan_that_stays_invalid_is_refused(repo: Path, tmp_path: Path) -> None:
    script = Script.from_steps(
        [answer("codex", BROKEN)], rules=[Rule(REPAIR, answer("codex", STILL_BROKEN))]
    )
    with FakeModelServer(script) as server, pytest.raises(PlanningError) as caught:
        plan_from_goal(
            repo,
            GOAL,
            agent="codex",
            settings={},
            model="fake-model",
            out_dir=tmp_path / "run",
            env=env_for(server, tmp_path),
            timeout=60,
        )
    error = caught.value
    assert isinstance(error, InputError) and error.exit_code == 2
    assert [c.kind for c in error.calls] == ["plan", "repair"]
    assert len(generate(server)) == 2
    message = str(error)
    assert message.startswith("codex's answer is not a valid plan, even after a repair call")
    candidate = tmp_path / "run" / "planner" / "2-repair.plan.yaml"
    assert f"{candidate}:" in message
    assert "'/etc/passwd' is absolute" in message
    assert "step 'tests' cannot depend on itself" in message
    assert "what came back:" in message and '"/etc/passwd"' in message
    assert json.loads(error.answer) == STILL_BROKEN
    assert not (tmp_path / "run" / "plan.yaml").exists()


def test_an_api_error_is_not_repaired(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(PlannerAgentError) as caught:
        run_plan("codex", repo, [Step(http_error=HttpError(500))], tmp_path)
    error = caught.value
    assert error.exit_code == 1
    assert [(c.kind, c.exit_code) for c in error.calls] == [("plan", 1)]
    assert "the planning agent (codex) failed:" in str(error)
    assert str(tmp_path / "run" / "planner" / "1-plan.log") in str(error)


def test_a_hung_planner_is_stopped_at_the_timeout(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(PlannerAgentError, match="no answer within 3 s") as caught:
        run_plan("codex", repo, [Step(hang=True)], tmp_path, timeout=3)
    assert caught.value.calls[0].exit_code is None
    assert caught.value.calls[0].duration < 15


# --------------------------------------------------------------------------- splitting


def failing_task() -> Task:
    text = """\
stages:
  - name: work
    steps:
      - id: api
        goal: Add the /orders API with its tests
        role: backend
        complexity: high
        files: [src/app/api.py, src/app/orders.py, tests/test_orders.py]
        outputs: [src/app/orders.py]
"""
    return parse_plan(text, "plan.yaml").task("api")


FAILURES = ["attempt 1\n" + "noise\n" * 2000 + "E   AssertionError: orders is empty\n"]


def run_split(
    cli: str, repo: Path, script: Script | list[Step], tmp_path: Path
) -> tuple[Any, FakeModelServer]:
    with FakeModelServer(script) as server:
        result = split_task(
            repo,
            failing_task(),
            FAILURES,
            agent=cli,
            settings=SETTINGS[cli],
            model=MODEL[cli],
            out_dir=tmp_path / "split",
            env=env_for(server, tmp_path),
            timeout=60,
            existing_ids={"api", "docs", "api.x"},
        )
    return result, server


SPLIT = {
    "steps": [
        step(
            "model",
            "Add the Order model",
            files=["src/app/orders.py"],
            outputs=["src/app/orders.py"],
        ),
        step("routes", "Add the /orders routes", files=["src/app/api.py"], depends_on=["model"]),
        step(
            "tests",
            "Test /orders",
            role="qa",
            files=["tests/test_orders.py"],
            depends_on=["routes"],
        ),
    ]
}
OUTSIDE = {
    "steps": [
        step("model", "Add the Order model", files=["src/app/orders.py"]),
        step("docs", "Document /orders", files=["README.md"], depends_on=["model"]),
    ]
}


def test_a_split_returns_valid_sub_steps(repo: Path, tmp_path: Path) -> None:
    before = snapshot(repo)
    result, server = run_split("claude", repo, [answer("claude", SPLIT)], tmp_path)
    assert snapshot(repo) == before
    assert [(c.kind, c.exit_code) for c in result.calls] == [("split", 0)]
    assert [(r.method, r.endpoint) for r in server.requests] == [
        ("HEAD", "head"),
        ("POST", "generate"),
    ]
    tools = {t["name"]: t for t in generate(server)[0].body["tools"]}
    assert set(tools) == {"Read", "Glob", "Grep", "StructuredOutput"}
    prompt = result.calls[0].prompt_file.read_text()
    assert "E   AssertionError: orders is empty" in prompt
    assert "characters trimmed" in prompt  # the log's tail, not all of it
    assert [s["id"] for s in result.steps] == ["api.model", "api.routes", "api.tests"]
    assert [s.get("depends_on") for s in result.steps] == [None, ["api.model"], ["api.routes"]]
    assert [s["files"] for s in result.steps] == [
        ["src/app/orders.py"],
        ["src/app/api.py"],
        ["tests/test_orders.py"],
    ]
    assert result.steps[0]["outputs"] == ["src/app/orders.py"]
    plan = parse_plan(result.yaml_text)
    assert [t.id for t in plan.tasks] == ["api.model", "api.routes", "api.tests"]
    assert (tmp_path / "split" / "split.yaml").read_text() == result.yaml_text


def test_a_split_step_without_files_inherits_the_task_files(repo: Path, tmp_path: Path) -> None:
    split = {"steps": [step("1", "First half"), step("2", "Second half", depends_on=["1"])]}
    result, _ = run_split("codex", repo, [answer("codex", split)], tmp_path)
    files = ["src/app/api.py", "src/app/orders.py", "tests/test_orders.py"]
    assert [(s["id"], s["files"]) for s in result.steps] == [("api.1", files), ("api.2", files)]


def test_a_split_outside_the_task_files_is_repaired(repo: Path, tmp_path: Path) -> None:
    script = Script.from_steps(
        [answer("codex", OUTSIDE)], rules=[Rule(REPAIR, answer("codex", SPLIT))]
    )
    result, server = run_split("codex", repo, script, tmp_path)
    assert [c.kind for c in result.calls] == ["split", "split-repair"]
    assert len(generate(server)) == 2
    repair = result.calls[1].prompt_file.read_text()
    assert "stages[0].steps[1].files[0]: 'README.md' is outside the files of 'api'" in repair
    assert [s["id"] for s in result.steps] == ["api.model", "api.routes", "api.tests"]


def test_a_split_that_stays_outside_is_refused(repo: Path, tmp_path: Path) -> None:
    taken = {
        "steps": [step("docs", "x", files=["src/app/api.py"]), step("x", "y", files=["README.md"])]
    }
    script = Script.from_steps(
        [answer("codex", OUTSIDE)], rules=[Rule(REPAIR, answer("codex", taken))]
    )
    with pytest.raises(SplittingError) as caught:
        run_split("codex", repo, script, tmp_path)
    error = caught.value
    assert error.exit_code == 2 and isinstance(error, PlanningError)
    assert [c.kind for c in error.calls] == ["split", "split-repair"]
    message = str(error)
    assert message.startswith("codex's answer is not a valid split, even after a repair call")
    assert "'README.md' is outside the files of 'api'" in message
    assert "id 'api.x' is already taken in the plan; choose another" in message
    assert "'api.docs'" not in message  # 'docs' became 'api.docs', which is free
    assert not (tmp_path / "split" / "split.yaml").exists()
