"""stretto.config: `stretto init` and load_config, on real git repositories."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from stretto.config import Config, GateConfig, load_config
from stretto.errors import ConfigError, Diagnostic, RepoError, UsageError
from stretto.frontends.cli import main
from stretto.project.scaffold import detect_gates, init_project


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty git repository on branch main; git never looks above tmp_path."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    return path


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def exclude_lines(repo: Path) -> list[str]:
    return (repo / ".git" / "info" / "exclude").read_text().splitlines()


def diagnostics(repo: Path, text: str, name: str = "stretto.toml") -> list[Diagnostic]:
    (repo / name).write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(repo)
    assert str(caught.value).endswith("nothing was done")
    assert all(d.file == str(repo / name) for d in caught.value.diagnostics)
    return caught.value.diagnostics


# --- stretto init ---------------------------------------------------------------------------------

PYTHON_PROJECT = {
    "pyproject.toml": (
        '[project]\nname = "demo"\n\n[tool.pytest.ini_options]\naddopts = "-q"\n\n'
        '[tool.ruff]\nline-length = 100\n\n[tool.mypy]\nfiles = ["src"]\nstrict = true\n'
    ),
}


def test_init_writes_a_commented_config_that_loads(repo: Path) -> None:
    write(repo, PYTHON_PROJECT)

    result = invoke("init", "--path", str(repo))

    assert result.exit_code == 0, result.output
    config_path = repo / "stretto.toml"
    assert result.stdout.splitlines() == [
        f"wrote {config_path}",
        "  target branch: main",
        "  max agents:    4",
        "  gate tests: pytest -q",
        "  gate lint: ruff check",
        "  gate types: mypy",
        f"added .stretto/ to {repo / '.git' / 'info' / 'exclude'}",
    ]
    text = config_path.read_text()
    assert tomllib.loads(text) == {
        "target": "main",
        "max_agents": 4,
        "default_agent": "shell",
        "gates": {"tests": "pytest -q", "lint": "ruff check", "types": "mypy"},
    }
    for line in text.splitlines():  # every setting carries a comment: above it or on its line
        if line and not line.startswith(("#", "[")):
            above = text.splitlines()[text.splitlines().index(line) - 1]
            assert "#" in line or above.startswith("#"), line
    assert "# found [tool.pytest.ini_options] in pyproject.toml" in text
    assert "# found [tool.mypy] in pyproject.toml" in text
    assert '# slow = { command = "pytest -m slow", timeout = 1800, when = "merge" }' in text
    assert load_config(repo) == Config(
        target="main",
        gates=(
            GateConfig("tests", "pytest -q"),
            GateConfig("lint", "ruff check"),
            GateConfig("types", "mypy"),
        ),
        path=config_path,
    )
    assert exclude_lines(repo)[-1] == ".stretto/"


def test_init_json_output(repo: Path) -> None:
    write(repo, {"go.mod": "module example.com/demo\n"})

    result = invoke("init", "--path", str(repo), "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "ok": True,
        "config_path": str(repo / "stretto.toml"),
        "target": "main",
        "max_agents": 4,
        "default_agent": "shell",
        "gates": {"tests": "go test ./..."},
        "excluded": True,
        "exclude_path": str(repo / ".git" / "info" / "exclude"),
        "local": [],  # no local model server answers here (tests/test_local_models.py)
    }


def test_init_without_detected_gates_writes_examples(repo: Path) -> None:
    result = invoke("init", "--path", str(repo))

    assert result.exit_code == 0, result.output
    assert "no test/lint/type commands detected" in result.stdout
    text = (repo / "stretto.toml").read_text()
    assert '# tests = "pytest -q"' in text
    assert '# lint = "ruff check"' in text
    assert '# types = "mypy ."' in text
    assert tomllib.loads(text)["gates"] == {}
    assert load_config(repo).gates == ()


def test_second_init_refuses_and_changes_nothing(repo: Path) -> None:
    assert invoke("init", "--path", str(repo)).exit_code == 0
    config_path = repo / "stretto.toml"
    config_path.write_text('target = "main"\nmax_agents = 9\n')  # the user's own edits
    exclude_before = exclude_lines(repo)

    result = invoke("init", "--path", str(repo))

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "already exists; use --force" in result.stderr
    assert config_path.read_text() == 'target = "main"\nmax_agents = 9\n'
    assert exclude_lines(repo) == exclude_before


def test_second_init_refusal_as_json(repo: Path) -> None:
    init_project(repo)

    result = invoke("init", "--path", str(repo), "--json")

    assert result.exit_code == 2
    payload = json.loads(result.stdout)
    assert payload["ok"] is False
    assert payload["error"] == "UsageError"
    assert "--force" in payload["message"]


def test_force_overwrites_and_exclude_keeps_one_line(repo: Path) -> None:
    first = invoke("init", "--path", str(repo))
    (repo / "stretto.toml").write_text("max_agents = 9\n")
    write(repo, {"Cargo.toml": '[package]\nname = "demo"\n'})

    second = invoke("init", "--path", str(repo), "--force")

    assert first.exit_code == second.exit_code == 0
    assert "added .stretto/" in first.stdout
    assert "added .stretto/" not in second.stdout
    assert tomllib.loads((repo / "stretto.toml").read_text())["gates"] == {"tests": "cargo test"}
    assert exclude_lines(repo).count(".stretto/") == 1
    assert init_project(repo, force=True).excluded is False


def test_init_refusal_through_the_api(repo: Path) -> None:
    init_project(repo)
    with pytest.raises(UsageError, match="--force"):
        init_project(repo)


def test_exclude_respects_existing_lines_and_missing_info_dir(repo: Path) -> None:
    info = repo / ".git" / "info"
    for child in info.iterdir():
        child.unlink()
    info.rmdir()

    first = init_project(repo)

    assert first.excluded is True
    assert first.exclude_path == info / "exclude"
    assert (info / "exclude").read_text() == ".stretto/\n"

    (info / "exclude").write_text("*.log\n/.stretto")  # the user's own form, no final newline
    assert init_project(repo, force=True).excluded is False
    assert (info / "exclude").read_text() == "*.log\n/.stretto"


def test_exclude_appends_after_a_line_without_newline(repo: Path) -> None:
    exclude = repo / ".git" / "info" / "exclude"
    exclude.write_bytes(b"caf\xe9.log")  # not UTF-8: kept byte for byte

    init_project(repo)

    assert exclude.read_bytes() == b"caf\xe9.log\n.stretto/\n"


def test_init_outside_git_fails_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    plain = tmp_path / "plain"
    plain.mkdir()

    result = invoke("init", "--path", str(plain))

    assert result.exit_code == 2
    assert "is not a git repository; run `git init` there first" in result.stderr
    assert list(plain.iterdir()) == []


def test_init_on_a_missing_directory(tmp_path: Path) -> None:
    result = invoke("init", "--path", str(tmp_path / "nope"), "--json")

    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"] == "RepoError"
    assert not (tmp_path / "nope").exists()


def test_init_from_a_subdirectory_writes_at_the_top(repo: Path) -> None:
    (repo / "src" / "pkg").mkdir(parents=True)

    result = init_project(repo / "src" / "pkg")

    assert result.config_path == repo / "stretto.toml"
    assert result.config_path.is_file()
    assert not (repo / "src" / "pkg" / "stretto.toml").exists()


def test_target_is_the_current_branch(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "release/2.0")

    assert init_project(repo).target == "release/2.0"
    assert load_config(repo).target == "release/2.0"


def test_detached_head_falls_back_to_main(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "trunk")
    git(repo, "commit", "-q", "--allow-empty", "-m", "one")
    git(repo, "checkout", "-q", "--detach")

    assert init_project(repo).target == "main"


def test_init_in_a_linked_worktree(repo: Path) -> None:
    git(repo, "commit", "-q", "--allow-empty", "-m", "one")
    linked = repo.parent / "linked"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(linked))

    result = init_project(linked)

    assert result.config_path == linked / "stretto.toml"
    assert result.target == "feature"
    assert result.exclude_path == repo / ".git" / "info" / "exclude"  # shared by all worktrees
    assert exclude_lines(repo).count(".stretto/") == 1
    assert not (repo / "stretto.toml").exists()


def test_init_writes_atomically_with_normal_permissions(repo: Path, umask_022: None) -> None:
    init_project(repo)
    assert stat.S_IMODE((repo / "stretto.toml").stat().st_mode) == 0o644

    (repo / "stretto.toml").chmod(0o600)
    init_project(repo, force=True)

    assert stat.S_IMODE((repo / "stretto.toml").stat().st_mode) == 0o600  # kept
    leftovers = [p.name for p in [*repo.iterdir(), *(repo / ".git" / "info").iterdir()]]
    assert not [name for name in leftovers if name.endswith(".tmp")]


def test_init_ignores_a_broken_pyproject(repo: Path) -> None:
    write(repo, {"pyproject.toml": "[tool.ruff\n", "conftest.py": ""})

    result = init_project(repo)

    assert result.gates == {"tests": "pytest -q"}
    assert load_config(repo).path == repo / "stretto.toml"  # stretto.toml is read, not pyproject


# --- gate detection -------------------------------------------------------------------------------

DETECTION_CASES = {
    "pyproject pytest ini_options": (
        {"pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n"},
        {"tests": "pytest -q"},
    ),
    "pyproject native tool.pytest": ({"pyproject.toml": "[tool.pytest]\n"}, {"tests": "pytest -q"}),
    "pytest.ini": ({"pytest.ini": "[pytest]\n"}, {"tests": "pytest -q"}),
    "setup.cfg tool:pytest": (
        {"setup.cfg": "[metadata]\nname = x\n\n[tool:pytest]\ntestpaths = tests\n"},
        {"tests": "pytest -q"},
    ),
    "tox.ini pytest": (
        {"tox.ini": "[tox]\nenvlist = py311\n\n[pytest]\naddopts = -q\n"},
        {"tests": "pytest -q"},
    ),
    "tox.ini without pytest": ({"tox.ini": "[tox]\nenvlist = py311\n"}, {}),
    "conftest.py": ({"conftest.py": ""}, {"tests": "pytest -q"}),
    "tests dir": ({"tests/unit/test_models.py": "def test_x(): pass\n"}, {"tests": "pytest -q"}),
    "tests dir without tests": ({"tests/helpers.py": ""}, {}),
    "pyproject ruff": (
        {"pyproject.toml": "[tool.ruff.lint]\nselect = ['E']\n"},
        {"lint": "ruff check"},
    ),
    "ruff.toml": ({"ruff.toml": "line-length = 100\n"}, {"lint": "ruff check"}),
    ".ruff.toml": ({".ruff.toml": ""}, {"lint": "ruff check"}),
    "pyproject mypy": ({"pyproject.toml": "[tool.mypy]\nstrict = true\n"}, {"types": "mypy ."}),
    "pyproject mypy files": (
        {"pyproject.toml": "[tool.mypy]\nfiles = ['src']\n"},
        {"types": "mypy"},
    ),
    "mypy.ini files": ({"mypy.ini": "[mypy]\nfiles = src\n"}, {"types": "mypy"}),
    ".mypy.ini": ({".mypy.ini": "[mypy]\nstrict = True\n"}, {"types": "mypy ."}),
    "setup.cfg mypy": ({"setup.cfg": "[mypy]\nstrict = True\n"}, {"types": "mypy ."}),
    "setup.cfg mypy per-module only": ({"setup.cfg": "[mypy-foo.*]\nignore_errors = True\n"}, {}),
    "package.json test and lint": (
        {"package.json": json.dumps({"scripts": {"test": "vitest run", "lint": "eslint ."}})},
        {"tests": "npm test", "lint": "npm run lint"},
    ),
    "package.json npm default test": (
        {
            "package.json": json.dumps(
                {"scripts": {"test": 'echo "Error: no test specified" && exit 1'}}
            )
        },
        {},
    ),
    "tsconfig.json": ({"tsconfig.json": "{}"}, {"types": "npx tsc --noEmit"}),
    "Cargo.toml": ({"Cargo.toml": "[package]\nname = 'x'\n"}, {"tests": "cargo test"}),
    "go.mod": ({"go.mod": "module example.com/x\n"}, {"tests": "go test ./..."}),
    "Makefile test target": (
        {"Makefile": "build:\n\tcc x.c\n\ntest: build\n\t./x\n"},
        {"tests": "make test"},
    ),
    "Makefile multi-target": (
        {"Makefile": ".PHONY: test\ncheck test:\n\t./t\n"},
        {"tests": "make test"},
    ),
    "Makefile test variable": ({"Makefile": "test := 1\ntests:\n\t./t\n"}, {}),
    "two of a kind": (
        {
            "pyproject.toml": "[tool.mypy]\n",
            "conftest.py": "",
            "package.json": json.dumps({"scripts": {"test": "jest"}}),
            "tsconfig.json": "{}",
        },
        {
            "tests": "pytest -q",
            "npm-test": "npm test",
            "types": "mypy .",
            "tsc": "npx tsc --noEmit",
        },
    ),
}


@pytest.mark.parametrize(("files", "expected"), DETECTION_CASES.values(), ids=DETECTION_CASES)
def test_detection(repo: Path, files: dict[str, str], expected: dict[str, str]) -> None:
    write(repo, files)

    result = init_project(repo)

    assert result.gates == expected
    assert detect_gates(repo) == expected
    assert {g.name: g.command for g in load_config(repo).gates} == expected  # round trip


def test_make_test_beside_a_runner_is_written_commented_out(repo: Path) -> None:
    write(repo, {"conftest.py": "", "Makefile": "test:\n\tpytest\n"})

    result = init_project(repo)

    assert result.gates == {"tests": "pytest -q"}
    text = (repo / "stretto.toml").read_text()
    assert '# make-test = "make test"' in text
    assert "tests" in tomllib.loads(text)["gates"]
    assert "make-test" not in tomllib.loads(text)["gates"]


def test_detection_order_in_the_file_is_tests_lint_types(repo: Path) -> None:
    write(repo, {"tsconfig.json": "{}", "ruff.toml": "", "go.mod": "module x\n"})

    assert list(init_project(repo).gates) == ["tests", "lint", "types"]


# --- load_config ----------------------------------------------------------------------------------


DEFAULT_SECTIONS = {
    "router": {
        "arms": (),
        "warmup": 50,
        "alpha": 1.0,
        "cost_ceiling": 1.0,
        "min_tier": (("low", "fast"), ("medium", "fast"), ("high", "balanced")),
        "credit": "attempt",
        "landed_value_usd": None,
    },
    "budget": {"run": None, "daily": None, "on_exceed": "finish"},
    "prices": {},
    "planner": {"agent": None, "model": None, "timeout": 600, "split_depth": 1},
    "sandbox": {"enabled": False, "writable": (), "network": True},
    "attempt": {
        "timeout": 1800,
        "max_cost": None,
        "max_tokens": None,
        "max_turns": None,
        "max_rate_limited": 10,
    },
    "merge": {"strategy": "train", "max_batch": 8, "max_lanes": 4, "flaky_retries": 1},
    "local": {},
    "cluster": None,
}


def test_defaults_without_any_config(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "dev")

    config = load_config(repo)

    assert config == Config(target="dev", max_agents=4, default_agent="shell", gates=(), path=None)
    assert config.to_dict() == {
        "path": None,
        "target": "dev",
        "max_agents": 4,
        "default_agent": "shell",
        "gates": {},
        "scope": "refuse",
        "link_dirs": (),
        "setup": (),
        "sparse": None,
        "env_allow": (),
        "agents": {},
        **DEFAULT_SECTIONS,
    }


def test_pyproject_without_tool_stretto_gives_defaults(repo: Path) -> None:
    write(repo, {"pyproject.toml": "[project]\nname = 'x'\n"})

    assert load_config(repo).path is None


def test_tool_stretto_in_pyproject(repo: Path) -> None:
    write(
        repo,
        {
            "pyproject.toml": (
                "[project]\nname = 'x'\n\n[tool.stretto]\ntarget = 'trunk'\nmax_agents = 2\n\n"
                "[tool.stretto.gates]\ntests = 'pytest'\n"
                "merge-check = { command = 'make e2e', timeout = 1200, when = 'merge' }\n"
            )
        },
    )

    config = load_config(repo)

    assert config.path == repo / "pyproject.toml"
    assert config.target == "trunk"
    assert config.max_agents == 2
    assert config.default_agent == "shell"
    assert config.gates == (
        GateConfig("tests", "pytest"),
        GateConfig("merge-check", "make e2e", timeout=1200, when="merge"),
    )


def test_stretto_toml_wins_over_pyproject(repo: Path) -> None:
    write(
        repo,
        {"pyproject.toml": "[tool.stretto]\nmax_agents = 2\n", "stretto.toml": "max_agents = 7\n"},
    )

    config = load_config(repo)

    assert config.max_agents == 7
    assert config.path == repo / "stretto.toml"


def test_gate_forms_and_to_dict(repo: Path) -> None:
    write(
        repo,
        {
            "stretto.toml": (
                'target = "main"\ndefault_agent = "claude"\n[gates]\nlint = "ruff check"\n'
                "[gates.e2e]\ncommand = 'npm run e2e'\nwhen = 'both'\n"
            )
        },
    )

    config = load_config(repo)

    assert config.to_dict() == {
        "path": str(repo / "stretto.toml"),
        "target": "main",
        "max_agents": 4,
        "default_agent": "claude",
        "gates": {
            "lint": {"command": "ruff check", "timeout": 600, "when": "attempt"},
            "e2e": {"command": "npm run e2e", "timeout": 600, "when": "both"},
        },
        "scope": "refuse",
        "link_dirs": (),
        "setup": (),
        "sparse": None,
        "env_allow": (),
        "agents": {},
        **DEFAULT_SECTIONS,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_agents = 8  # type: ignore[misc]


def test_syntax_error_is_located(repo: Path) -> None:
    [diag] = diagnostics(repo, 'target = "main"\n\n[gates]\ntests = pytest -q\n')

    assert (diag.line, diag.column, diag.field) == (4, 9, "")
    assert diag.message.startswith("not valid TOML: invalid value")
    assert 'strings need quotes, e.g. "pytest -q"' in diag.message
    assert str(diag).startswith(f"{repo / 'stretto.toml'}:4:9: not valid TOML")


def test_syntax_error_at_end_of_document(repo: Path) -> None:
    [diag] = diagnostics(repo, "max_agents = 4\n[gates")

    assert (diag.line, diag.column) == (2, 7)
    assert diag.message == "not valid TOML: expected ']' at the end of a table declaration"
    assert "(at " not in diag.message


def test_unknown_key_with_suggestion(repo: Path) -> None:
    [diag] = diagnostics(repo, '# comment\ntarget = "main"\n  max_agnets = 3\n')

    assert (diag.line, diag.column, diag.field) == (3, 3, "max_agnets")
    assert diag.message == "unknown key 'max_agnets' (did you mean 'max_agents'?)"


def test_unknown_key_without_a_close_match_lists_known_keys(repo: Path) -> None:
    [diag] = diagnostics(repo, "colour = 'blue'\n")

    assert (
        diag.message == "unknown key 'colour'; known keys: agents, attempt, budget, default_agent, "
        "env, gates, local, max_agents, planner, prices, router, sandbox, scope, target, workspace"
    )


ROUTED = """\
[router]
warmup = 10
min_tier = { high = "strong" }

[[router.arms]]
agent = "claude"
model = "claude-haiku-4-5"
tier = "fast"

[[router.arms]]
agent = "codex"
tier = "strong"

[budget]
run = 5
daily = 20.5
on_exceed = "stop"

[prices."my-model"]
input = 1
output = 2.5

[planner]
agent = "claude"
split_depth = 2
"""


def test_router_budget_prices_and_planner_sections(repo: Path) -> None:
    write(repo, {"stretto.toml": ROUTED})

    config = load_config(repo)

    assert [(a.agent, a.model, a.tier) for a in config.router.arms] == [
        ("claude", "claude-haiku-4-5", "fast"),
        ("codex", None, "strong"),
    ]
    assert config.router.warmup == 10
    assert dict(config.router.min_tier) == {"low": "fast", "medium": "fast", "high": "strong"}
    assert (config.budget.run, config.budget.daily, config.budget.on_exceed) == (5, 20.5, "stop")
    assert config.prices == {"my-model": {"input": 1, "output": 2.5, "cached": None}}
    assert (config.planner.agent, config.planner.split_depth) == ("claude", 2)


def test_router_landed_value_is_read_and_checked(repo: Path) -> None:
    write(
        repo, {"stretto.toml": ROUTED.replace("warmup = 10", "warmup = 10\nlanded_value_usd = 80")}
    )
    assert load_config(repo).router.landed_value_usd == 80
    [diag] = diagnostics(repo, ROUTED.replace("warmup = 10", "landed_value_usd = 0"))
    assert (diag.line, diag.field) == (2, "router.landed_value_usd")
    assert diag.message == "must be more than 0.0, not an integer 0"


def test_errors_in_new_sections_are_located(repo: Path) -> None:
    text = ROUTED.replace('tier = "strong"', 'tier = "strnog"').replace("daily", "dialy")
    text = text.replace("output = 2.5", 'output = "2.5"')
    diags = diagnostics(repo, text)

    assert [(d.line, d.field) for d in diags] == [
        (12, "router.arms.1.tier"),
        (16, "budget.dialy"),
        (21, "prices.my-model.output"),
    ]
    assert diags[0].message.endswith("(did you mean 'strong'?)")
    assert diags[1].message == "unknown key 'dialy' (did you mean 'daily'?)"
    assert diags[2].message == 'must be a number, not a string "2.5"'


def test_wrong_types(repo: Path) -> None:
    diags = diagnostics(repo, 'max_agents = "4"\ndefault_agent = 3\ntarget = true\n')

    assert [(d.line, d.field) for d in diags] == [
        (1, "max_agents"),
        (2, "default_agent"),
        (3, "target"),
    ]
    assert diags[0].message == 'must be an integer, not a string "4"; remove the quotes'
    assert diags[1].message.startswith("must be a string, not an integer 3")
    assert diags[2].message.startswith("must be a string, not a boolean true")


def test_out_of_range_and_empty_values(repo: Path) -> None:
    diags = diagnostics(repo, 'max_agents = 0\ndefault_agent = "  "\n')

    assert diags[0].message == "must be at least 1, not an integer 0"
    assert (diags[1].line, diags[1].field) == (2, "default_agent")
    assert diags[1].message.startswith("must not be empty")


@pytest.mark.parametrize("bad", ["a..b", "-x", "feature/", "x.lock", "has space", "HEAD", ""])
def test_implausible_target_branch(repo: Path, bad: str) -> None:
    [diag] = diagnostics(repo, f'\ntarget = "{bad}"\n')

    assert (diag.line, diag.column, diag.field) == (2, 1, "target")
    assert "is not a valid git branch name" in diag.message


def test_bad_gate_tables_are_all_reported_and_located(repo: Path) -> None:
    text = (
        "[gates]\n"
        'tests = { command = "pytest", timout = 5, when = "merged" }\n'
        '"bad name" = "x"\n'
        "lint = 5\n"
        "types = { timeout = 0 }\n"
        "[gates.e2e]\n"
        'command = ""\n'
    )

    diags = diagnostics(repo, text)

    found = {d.field: (d.line, d.column, d.message) for d in diags}
    assert found["gates.tests.timout"] == (
        2,
        31,
        "unknown key 'timout' (did you mean 'timeout'?)",
    )
    assert found["gates.tests.when"][:2] == (2, 43)
    assert found["gates.tests.when"][2] == (
        "must be 'attempt', 'merge' or 'both', not a string \"merged\" (did you mean 'merge'?)"
    )
    assert found["gates.bad name"][:2] == (3, 1)
    assert "may only use letters, digits, '-' and '_'" in found["gates.bad name"][2]
    assert found["gates.lint"][:2] == (4, 1)
    assert found["gates.lint"][2].startswith("must be a command string or a table")
    assert found["gates.types.command"][:2] == (5, 1)
    assert found["gates.types.command"][2].startswith("missing key 'command'")
    assert found["gates.types.timeout"][:2] == (5, 11)
    assert found["gates.e2e.command"][:2] == (7, 1)
    assert len(diags) == 7
    assert [d.line for d in diags] == sorted(d.line for d in diags)


def test_gates_must_be_a_table(repo: Path) -> None:
    [diag] = diagnostics(repo, 'gates = "pytest"\n')

    assert (diag.line, diag.field) == (1, "gates")
    assert diag.message.startswith("must be a table, not a string")


def test_errors_in_tool_stretto_name_pyproject_lines(repo: Path) -> None:
    text = "[project]\nname = 'x'\n\n[tool.stretto]\nmax_agents = -1\n[tool.stretto.gates]\nt = 1\n"

    diags = diagnostics(repo, text, name="pyproject.toml")

    assert [(d.line, d.field) for d in diags] == [
        (5, "tool.stretto.max_agents"),
        (7, "tool.stretto.gates.t"),
    ]


def test_tool_stretto_must_be_a_table(repo: Path) -> None:
    [diag] = diagnostics(repo, "[tool]\nstretto = 1\n", name="pyproject.toml")

    assert (diag.line, diag.column, diag.field) == (2, 1, "tool.stretto")
    assert diag.message.startswith("must be a table, not an integer 1")


def test_config_that_is_not_utf8(repo: Path) -> None:
    (repo / "stretto.toml").write_bytes(b"target = '\xff'\n")

    with pytest.raises(ConfigError) as caught:
        load_config(repo)

    assert "not UTF-8 text" in caught.value.diagnostics[0].message


def test_load_config_outside_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))

    with pytest.raises(RepoError, match="git init"):
        load_config(tmp_path)


def test_importing_config_does_not_import_pydantic() -> None:
    code = (
        "import sys, stretto.frontends.cli, stretto.config; "
        "print('pydantic' in sys.modules, 'pydantic_core' in sys.modules)"
    )

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert done.stdout.strip() == "False False"


def test_validating_needs_pydantic_core_only(repo: Path) -> None:
    """Loading a config and a plan validates them without importing pydantic itself."""
    write(
        repo,
        {"stretto.toml": ROUTED, "plan.yaml": "stages:\n  - name: s\n    steps: [{goal: g}]\n"},
    )
    code = (
        "import sys; from pathlib import Path\n"
        "from stretto.config import load_config\n"
        "from stretto.plans.plan import load_plan\n"
        f"config = load_config(Path({str(repo)!r}))\n"
        f"plan = load_plan(Path({str(repo / 'plan.yaml')!r}))\n"
        "print(config.router.warmup, len(plan.tasks), 'pydantic' in sys.modules, "
        "'pydantic_core' in sys.modules)\n"
    )

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert done.stdout.split() == ["10", "1", "False", "True"]


def test_workspace_sparse_is_off_true_or_a_list_of_paths(repo: Path) -> None:
    write(repo, {"stretto.toml": "[workspace]\nsparse = true\n"})
    assert load_config(repo).sparse == ()
    write(repo, {"stretto.toml": '[workspace]\nsparse = ["tests", "libs/shared"]\n'})
    assert load_config(repo).sparse == ("tests", "libs/shared")
    write(repo, {"stretto.toml": "[workspace]\nsparse = false\n"})
    assert load_config(repo).sparse is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"yes"', "must be true, false or an array of paths"),
        ('["../outside"]', "'../outside' is not a path inside the repository"),
        ('["/abs"]', "'/abs' is not a path inside the repository"),
        ("[1]", "must be true, false or an array of paths"),
    ],
)
def test_workspace_sparse_errors_are_located(repo: Path, value: str, message: str) -> None:
    [diag] = diagnostics(repo, f"[workspace]\nlink = []\nsparse = {value}\n")

    assert (diag.line, diag.column, diag.field) == (3, 1, "workspace.sparse")
    assert message in diag.message
    assert 'sparse = ["tests", "docs"]' in diag.message  # the fix


def test_cluster_scheduler(repo: Path) -> None:
    (repo / "stretto.toml").write_text('[cluster]\nscheduler = "tls://build-1:8786"\n')
    assert load_config(repo).cluster == "tls://build-1:8786"
    (repo / "stretto.toml").write_text('[cluster]\nscheduler = "build-1"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(repo)
    assert "cluster.scheduler" in str(caught.value) and "tcp://" in str(caught.value)
