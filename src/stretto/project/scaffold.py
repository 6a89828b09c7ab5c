"""``stretto init``: detect a repository's test/lint/type commands and write ``stretto.toml``.

The written file is commented key by key, lists the detected gates (and, commented out, what was
found but left out), and loads with :func:`stretto.config.load_config`. ``.stretto/`` is added to
the repository's ``info/exclude`` so stretto's state never shows in ``git status``.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stretto.config import (
    _EXCLUDE_LINE,
    CONFIG_FILE,
    DEFAULT_AGENT,
    DEFAULT_MAX_AGENTS,
    _current_branch,
    _table,
    _toml_str,
)
from stretto.errors import RepoError, UsageError
from stretto.files import private_dir, write_atomic
from stretto.git import run_git, toplevel
from stretto.project.localcheck import Found, detect_local


@dataclass(frozen=True, slots=True)
class InitResult:
    """What :func:`init_project` did.

    Attributes:
        config_path: The ``stretto.toml`` written.
        target: Target branch written to it.
        max_agents: ``max_agents`` written to it.
        default_agent: ``default_agent`` written to it.
        gates: Detected gates written to it, name -> command.
        excluded: Whether ``.stretto/`` was added to ``exclude_path`` (False: already there).
        exclude_path: The repository's ``info/exclude`` file.
        local: Local model servers that answered on their default loopback port, declared as
            ``[local.NAME]`` in the file (with a commented agent profile for each).
    """

    config_path: Path
    target: str
    max_agents: int
    default_agent: str
    gates: dict[str, str] = field(default_factory=dict)
    excluded: bool = False
    exclude_path: Path = Path()
    local: tuple[Found, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """Return the result as JSON-ready values (with ``"ok": true``, as the CLI prints)."""
        paths = {"config_path": str(self.config_path), "exclude_path": str(self.exclude_path)}
        local = [server.to_dict() for server in self.local]
        return {"ok": True, **asdict(self), **paths, "local": local}


# --- detecting gates ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Found:
    kind: str  # "tests" | "lint" | "types": the gate's name unless one of its kind came first
    alias: str  # the name used when the kind's name is taken
    command: str
    reason: str


_KINDS = ("tests", "lint", "types")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
    except OSError:
        return None


def _ini_section(text: str | None, name: str) -> str | None:
    """Body of ``[name]`` in an INI file, or None when the section is absent."""
    if text is None:
        return None
    pattern = rf"^[ \t]*\[[ \t]*{re.escape(name)}[ \t]*\][^\n]*\n?(.*?)(?=^[ \t]*\[|\Z)"
    match = re.search(pattern, text, re.M | re.S)
    return match.group(1) if match else None


def _pytest_reason(top: Path, pyproject: dict[str, Any], setup_cfg: str | None) -> str | None:
    if _table(pyproject, "tool", "pytest", "ini_options") is not None:
        return "[tool.pytest.ini_options] in pyproject.toml"
    if _table(pyproject, "tool", "pytest") is not None:
        return "[tool.pytest] in pyproject.toml"
    if (top / "pytest.ini").is_file():
        return "pytest.ini"
    if _ini_section(setup_cfg, "tool:pytest") is not None:
        return "[tool:pytest] in setup.cfg"
    if _ini_section(_read(top / "tox.ini"), "pytest") is not None:
        return "[pytest] in tox.ini"
    if (top / "conftest.py").is_file():
        return "conftest.py"
    if _has_test_files(top / "tests"):
        return "test_*.py files in tests/"
    return None


def _python_gates(top: Path) -> list[_Found]:
    try:
        pyproject: dict[str, Any] = tomllib.loads(_read(top / "pyproject.toml") or "")
    except tomllib.TOMLDecodeError:
        pyproject = {}
    setup_cfg = _read(top / "setup.cfg")
    found: list[_Found] = []
    pytest_reason = _pytest_reason(top, pyproject, setup_cfg)
    if pytest_reason:
        found.append(_Found("tests", "pytest", "pytest -q", pytest_reason))

    ruff_file = next((n for n in ("ruff.toml", ".ruff.toml") if (top / n).is_file()), None)
    if _table(pyproject, "tool", "ruff") is not None:
        found.append(_Found("lint", "ruff", "ruff check", "[tool.ruff] in pyproject.toml"))
    elif ruff_file:
        found.append(_Found("lint", "ruff", "ruff check", ruff_file))

    # Plain `mypy` when the config names its files, else `mypy .` (mypy needs a target).
    mypy_tool = _table(pyproject, "tool", "mypy")
    mypy_ini = next((n for n in ("mypy.ini", ".mypy.ini") if (top / n).is_file()), None)
    if mypy_tool is not None:
        command = "mypy" if "files" in mypy_tool else "mypy ."
        found.append(_Found("types", "mypy", command, "[tool.mypy] in pyproject.toml"))
    elif mypy_ini or _ini_section(setup_cfg, "mypy") is not None:
        body = _ini_section(_read(top / mypy_ini) if mypy_ini else setup_cfg, "mypy") or ""
        command = "mypy" if re.search(r"^[ \t]*files[ \t]*[=:]", body, re.M) else "mypy ."
        found.append(_Found("types", "mypy", command, mypy_ini or "[mypy] in setup.cfg"))
    return found


def _has_test_files(tests: Path) -> bool:
    if not tests.is_dir():
        return False
    return any(p.is_file() for pattern in ("test_*.py", "*_test.py") for p in tests.rglob(pattern))


def _other_gates(top: Path) -> list[_Found]:
    found: list[_Found] = []
    try:
        package = json.loads(_read(top / "package.json") or "{}")
    except json.JSONDecodeError:
        package = {}
    scripts = _table(package, "scripts") or {}
    test = scripts.get("test")
    if isinstance(test, str) and test.strip() and "no test specified" not in test:
        found.append(_Found("tests", "npm-test", "npm test", "scripts.test in package.json"))
    if isinstance(scripts.get("lint"), str):
        found.append(_Found("lint", "npm-lint", "npm run lint", "scripts.lint in package.json"))
    if (top / "tsconfig.json").is_file():
        found.append(_Found("types", "tsc", "npx tsc --noEmit", "tsconfig.json"))
    if (top / "Cargo.toml").is_file():
        found.append(_Found("tests", "cargo-test", "cargo test", "Cargo.toml"))
    if (top / "go.mod").is_file():
        found.append(_Found("tests", "go-test", "go test ./...", "go.mod"))
    return found


_MAKE_TEST_RE = re.compile(r"^(?:[^\s:=#]+[ \t]+)*test(?:[ \t]+[^\s:=#]+)*[ \t]*:(?!=)", re.M)


def _make_test(top: Path) -> _Found | None:
    for name in ("GNUmakefile", "makefile", "Makefile"):
        text = _read(top / name)
        if text and _MAKE_TEST_RE.search(text):
            return _Found("tests", "make-test", "make test", f"a test target in {name}")
    return None


def _detect(top: Path) -> tuple[dict[str, _Found], list[_Found]]:
    """Gates found in ``top`` by name, and ones left out (a Makefile's ``test`` beside a runner)."""
    found = _python_gates(top) + _other_gates(top)
    left_out: list[_Found] = []
    make = _make_test(top)
    if make and any(f.kind == "tests" for f in found):
        left_out.append(make)  # it most likely wraps the runner found; running both wastes time
    elif make:
        found.append(make)
    named: dict[str, _Found] = {}
    for item in sorted(found, key=lambda f: _KINDS.index(f.kind)):
        named[item.alias if item.kind in named else item.kind] = item
    return named, left_out


def detect_gates(repo: Path) -> dict[str, str]:
    """Guess gate commands from the files at the top of a repository.

    Args:
        repo: A directory; only files directly in it (and ``tests/``) are looked at.

    Returns:
        Gate name -> command, e.g. ``{"tests": "pytest -q", "lint": "ruff check"}``. The first
        gate of each kind is called ``tests``, ``lint`` or ``types``; later ones are named after
        their tool (``npm-test``, ``tsc``, …).
    """
    return {name: found.command for name, found in _detect(repo)[0].items()}


_TABLE_EXAMPLE = (
    '# slow = { command = "pytest -m slow", timeout = 1800, when = "merge" }  # table form'
)
_EXAMPLES = {
    "tests": ('tests = "pytest -q"', 'example; or "npm test", "cargo test", "go test ./..."'),
    "lint": ('lint = "ruff check"', 'example; or "npm run lint"'),
    "types": ('types = "mypy ."', 'example; or "npx tsc --noEmit"'),
}


def _render(target: str, gates: dict[str, _Found], left_out: list[_Found]) -> str:
    rows: list[tuple[str, str]] = [
        (f"{name} = {_toml_str(f.command)}", f"found {f.reason}") for name, f in gates.items()
    ]
    kinds = {f.kind for f in gates.values()}
    for f in left_out:
        note = f"found {f.reason}; off, as it likely runs the tests above"
        rows.append((f"# {f.alias} = {_toml_str(f.command)}", note))
    rows += [(f"# {line}", note) for kind, (line, note) in _EXAMPLES.items() if kind not in kinds]
    width = max(len(code) for code, _ in rows) + 2
    gate_lines = "\n".join([*(f"{code:<{width}}# {note}" for code, note in rows), _TABLE_EXAMPLE])
    return f"""\
# stretto.toml: how stretto runs coding agents on this repository (written by `stretto init`).
# Every key is optional; delete one to get its default.

# Branch that verified work lands on. stretto only moves it forward, to a tree that passed the
# gates, and never touches your uncommitted changes.
target = {_toml_str(target)}

# How many agents may work at once, each in its own git worktree (at least 1).
max_agents = {DEFAULT_MAX_AGENTS}

# Agent for tasks that do not name one; "shell" runs the task's command as given.
default_agent = {_toml_str(DEFAULT_AGENT)}

# What the scope gate does with changes outside a step's owned files: "refuse" (the attempt
# fails) or "warn".
# scope = "refuse"

# Environment variables agents and gates may see beyond the default allow-list (PATH, HOME,
# locale, TLS and git identity settings); a trailing * matches a prefix.
# env = ["MY_SERVICE_TOKEN", "AWS_*"]

# Gates: commands that must exit 0 before work lands, run in the workspace under test.
# A gate is `name = "command"` or `name = {{ command = "...", timeout = 600, when = "..." }}`
# where timeout is in seconds (default 600) and when is "attempt" (each attempt's worktree, the
# default), "merge" (the merged tree, before the target branch moves) or "both".
[gates]
{gate_lines}

# Each attempt's worktree: node_modules, .venv and venv of this checkout are linked in; list more
# here. Setup commands run in each new worktree before its agent (they must be idempotent).
# [workspace]
# link = ["frontend/node_modules"]
# setup = ["npm ci --prefer-offline"]
# sparse = ["tests"]   # a huge repository: worktrees hold each task's folders plus these

# Limits of every attempt, checked while its agent runs (docs/agents.md): the timeout in seconds
# (a step's `timeout` wins), model calls, tokens and USD per attempt, and how many rate-limited
# attempts of a task do not count as its failures.
# [attempt]
# timeout = 1800
# max_turns = 200
# max_tokens = 2000000
# max_cost = 2.0
# max_rate_limited = 10

# Settings per agent. For the shell agent: the command of steps that do not give one.
# [agents.shell]
# command = "./scripts/agent.sh"
"""


def _add_exclude(top: Path) -> tuple[bool, Path]:
    found = run_git(["rev-parse", "--git-path", "info/exclude"], top).stdout.strip()
    path = (top / found).resolve()
    data = path.read_bytes() if path.is_file() else b""  # bytes: keep any encoding as it is
    present = {b".stretto", b".stretto/", b"/.stretto", b"/.stretto/"}
    if any(line.strip() in present for line in data.splitlines()):
        return False, path
    path.parent.mkdir(parents=True, exist_ok=True)
    separator = b"\n" if data and not data.endswith(b"\n") else b""
    write_atomic(path, data + separator + _EXCLUDE_LINE.encode() + b"\n")
    return True, path


def ensure_excluded(repo: Path) -> bool:
    """Add ``.stretto/`` to the repository's ``info/exclude`` unless it is there; True if added."""
    return _add_exclude(toplevel(repo))[0]


def state_dir(repo: Path) -> Path:
    """The repository's ``.stretto/`` folder, made ready for a run's files: kept out of git
    (``info/exclude``, before the folder exists, so it never shows in ``git status``) and private
    to its user (0700: runs, logs, worktrees, the ledger and tokens; an existing folder is
    tightened). Returns its path."""
    ensure_excluded(repo)
    return private_dir(toplevel(repo) / ".stretto")


def init_project(repo: Path, *, force: bool = False) -> InitResult:
    """Write a commented ``stretto.toml`` at the top of ``repo`` and keep ``.stretto/`` out of git.

    The target is the current branch (``main`` when HEAD is detached); gates are detected from the
    repository's files (see :func:`detect_gates`). ``.stretto/`` is added to the repository's
    ``info/exclude`` (shared by all its worktrees) unless already there. A local model server
    answering on its default loopback port (Ollama, llama.cpp, vLLM, LM Studio; see
    :func:`stretto.project.localcheck.detect_local`) is declared as ``[local.NAME]``.

    Args:
        repo: Any directory inside a git work tree.
        force: Overwrite an existing ``stretto.toml``.

    Returns:
        What was written.

    Raises:
        RepoError: ``repo`` is not inside a git work tree, or a file could not be written.
        UsageError: ``stretto.toml`` exists and ``force`` is false; nothing was written.
    """
    top = toplevel(repo)
    config_path = top / CONFIG_FILE
    if config_path.exists() and not force:
        raise UsageError(f"{config_path} already exists; use --force to overwrite it")
    target = _current_branch(top)
    gates, left_out = _detect(top)
    local = tuple(detect_local())
    try:
        write_atomic(config_path, (_render(target, gates, left_out) + _local_text(local)).encode())
        excluded, exclude_path = _add_exclude(top)
    except OSError as error:
        raise RepoError(
            f"cannot write {error.filename}: {error.strerror}; check permissions"
        ) from None
    return InitResult(
        config_path=config_path,
        target=target,
        max_agents=DEFAULT_MAX_AGENTS,
        default_agent=DEFAULT_AGENT,
        gates={name: f.command for name, f in gates.items()},
        excluded=excluded,
        exclude_path=exclude_path,
        local=local,
    )


#: The agent each kind of local server is offered with in the written file.
_LOCAL_AGENT = {"ollama": "aider", "openai": "opencode"}


def _local_text(found: tuple[Found, ...]) -> str:
    """``[local.NAME]`` tables for the servers found, each with a commented agent profile."""
    if not found:
        return (
            "\n# A local model server (Ollama, llama.cpp, vLLM, LM Studio): attempts on it cost\n"
            "# $0 and `stretto run --offline` uses only such agents (docs/local-models.md).\n"
            '# [local.ollama]\n# kind = "ollama"\n# base_url = "http://127.0.0.1:11434"\n'
            '# models = ["qwen2.5-coder:7b"]\n# max_parallel = 1\n'
        )
    out = []
    for server in found:
        models = ", ".join(_toml_str(m) for m in server.models[:8])
        agent = _LOCAL_AGENT[server.kind]
        first = _toml_str(server.models[0]) if server.models else '"MODEL"'
        out.append(
            f"""
# {server.what} answered at {server.base_url} when `stretto init` ran: a local model server.
# Attempts on it cost $0; `stretto run --offline` uses only such agents (docs/local-models.md).
[local.{server.name}]
kind = {_toml_str(server.kind)}
base_url = {_toml_str(server.base_url)}
models = [{models}]
max_parallel = {1 if server.kind == "ollama" else 4}   # model calls it serves at once

# An agent on it: name `agent: {agent}-local` in a step, or make it a router arm.
# [agents.{agent}-local]
# adapter = "{agent}"
# local = "{server.name}"
# model = {first}
"""
        )
    return "".join(out)
