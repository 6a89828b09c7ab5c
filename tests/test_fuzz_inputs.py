"""Fuzzing the plan and config loaders (issue 19): whatever the bytes, only a clean input error.

Hypothesis feeds the loaders in-process at two levels: raw bytes (random, and valid files with
bytes flipped, cut or inserted) and structure (valid plans and configs with values replaced by
wrong types, keys deleted or unknown ones added, values nested, unicode everywhere). The loaders
may accept the input or raise the errors the CLI turns into exit 2 (:class:`InputError`,
:class:`UsageError`), each with located diagnostics; any other exception is a defect.

Bounded for CI (derandomized, no example database: every run tries the same inputs); set
``STRETTO_FUZZ_EXAMPLES=N`` for N examples per test instead, and ``STRETTO_FUZZ_RECORD=FILE``
to write the figures (examples, seconds, crashes).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stretto.config import Config, load_config
from stretto.errors import InputError, UsageError
from stretto.plans.graph import find_cycle
from stretto.plans.plan import Plan, load_plan, parse_plan
from stretto.testing.repo import make_repo

EXAMPLES = int(os.environ.get("STRETTO_FUZZ_EXAMPLES", "0")) or None
FUZZ = settings(
    max_examples=EXAMPLES or 120,
    derandomize=EXAMPLES is None,  # CI tries the same inputs each time; a soak explores
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FIGURES = {"examples": 0, "accepted": 0, "refused": 0, "crashes": 0}
CLEAN = (InputError, UsageError)

PLAN = {
    "name": "fuzz",
    "budget": 5,
    "max_agents": 2,
    "target": "main",
    "context_files": ["README.md"],
    "unowned": "nothing",
    "stages": [
        {
            "name": "build",
            "steps": [
                {
                    "id": "models",
                    "goal": "Add the models",
                    "files": ["src/models/**"],
                    "complexity": "low",
                    "timeout": 900,
                    "gates": ["pytest -q"],
                    "outputs": ["src/models/__init__.py"],
                },
                {
                    "id": "api",
                    "title": "API",
                    "goal": "Add the API",
                    "depends_on": ["models"],
                    "files": ["src/api.py", "tests/test_api.py"],
                    "agent": "shell",
                    "command": "true",
                    "max_attempts": 2,
                },
            ],
        },
        {
            "name": "docs",
            "depends_on": ["build"],
            "steps": [{"goal": "Document it", "role": "docs", "files": ["docs/"]}],
        },
    ],
}
CONFIG = {
    "target": "main",
    "max_agents": 3,
    "default_agent": "shell",
    "scope": "warn",
    "env": ["MY_TOKEN", "AWS_*"],
    "gates": {"tests": "pytest -q", "lint": {"command": "ruff check", "timeout": 60}},
    "workspace": {"link": ["node_modules"], "setup": ["npm ci"]},
    "agents": {"shell": {"command": "./agent.sh"}},
    "router": {"warmup": 10, "alpha": 0.5, "arms": [{"agent": "shell", "tier": "fast"}]},
    "budget": {"run": 5.0, "daily": 20.0, "on_exceed": "stop"},
    "prices": {"my-model": {"input": 1.0, "output": 2.0}},
    "planner": {"agent": "claude", "timeout": 300, "split_depth": 1},
}
PLAN_TEXT = yaml.safe_dump(PLAN, sort_keys=False)


def toml_value(value: Any) -> str:
    """``value`` written as TOML (inline tables and arrays; nan and inf as TOML has them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (
            f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()
        )
        return "{" + ", ".join(pairs) + "}"
    return json.dumps(str(value))


def toml_text(data: dict[str, Any]) -> str:
    """A config as TOML: scalars at the top, each table as a ``[section]``."""
    lines = [f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in data.items()
             if not isinstance(v, dict)]  # fmt: skip
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{json.dumps(key, ensure_ascii=False)}]")
            lines += [f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(v)}"
                      for k, v in table.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


TOML_TEXT = toml_text(CONFIG)

# ---------------------------------------------------------------------------- strategies

#: Numbers at the edges: limits, one past them, overflows, and what is not a number at all.
EDGE_NUMBERS = [0, -1, 1, 20, 21, 1000, 1001, 604_800, 604_801, 2**63, 10**20, 0.5, -0.0,
                1e308, math.inf, -math.inf, math.nan]  # fmt: skip
scalars = st.one_of(
    st.sampled_from(EDGE_NUMBERS),
    st.sampled_from(EDGE_NUMBERS),
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", " ", "..", "/etc/passwd", "../x", "*", "**", "[", "a/[z-a]", "~", "\x00",
                     "$(touch CANARY)", "main..x", "15m", "-1s", "1e999", "é" * 30, "\ud7ff"]),
)  # fmt: skip


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)


values = st.recursive(scalars, _containers, max_leaves=12)
KEYS = sorted({"goal", "id", "files", "depends_on", "stages", "steps", "name", "timeout",
               "agent", "budget", "max_agents", "gates", "when", "command", "link", "arms",
               "tier", "<<", "router", "prices", "input", "run", "daily", "env", "target",
               "outputs"})  # fmt: skip
keys = st.sampled_from(KEYS) | st.text(max_size=12)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside nested dicts and lists."""
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += _paths(value, (*prefix, index))
    return out


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` after a few edits: a value replaced (wrong type, nested, unicode), a key
    deleted, an unknown or misspelled key added, an element duplicated."""
    data = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 4))):
        numbers = [p for p in _paths(data) if p and _is_number(_get(data, p))]
        if numbers and draw(st.integers(0, 3)) == 0:  # a number at or past its limit
            path = draw(st.sampled_from(numbers))
            _get(data, path[:-1])[path[-1]] = draw(st.sampled_from(EDGE_NUMBERS))
            continue
        path = draw(st.sampled_from(_paths(data)))
        action = draw(
            st.sampled_from(["replace", "retext", "retext", "delete", "add", "nest", "duplicate"])
        )
        if not path:
            if action == "add":
                data[draw(keys)] = draw(values)
            continue
        parent, last = _get(data, path[:-1]), path[-1]
        if action == "replace":
            parent[last] = draw(values)
        elif action == "retext" and isinstance(parent[last], str):  # same type, other text
            parent[last] = draw(st.text(min_size=1, max_size=30) | scalars.filter(_is_text))
        elif action == "delete":
            del parent[last]
        elif action == "nest":
            parent[last] = draw(st.sampled_from([[parent[last]], {"x": parent[last]}]))
        elif action == "duplicate" and isinstance(parent, list):
            parent.append(json.loads(json.dumps(parent[last])))
        elif action == "add" and isinstance(parent[last], dict):
            parent[last][draw(keys)] = draw(values)
    return data


@st.composite
def flipped(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with a few bytes replaced, deleted or inserted."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "delete", "insert"]))
        if action == "insert" or at == len(data):
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif action == "replace":
            data[at] = draw(st.integers(0, 255))
        else:
            del data[at : at + draw(st.integers(1, 20))]
    return bytes(data)


YAML_CHARS = "abcdefgh:-[]{},&*!|>'\"#%@`?\n\n  \t\\0123456789.~<=\x00\x85\ufeff\u2028é"
yaml_soup = st.text(alphabet=YAML_CHARS, max_size=300)
TOML_CHARS = "abcdefgh=[]{},.\"'#\n\n  \t\\0123456789+-_:eEinfa\x00\x7f\ufeffé"
toml_soup = st.text(alphabet=TOML_CHARS, max_size=300)

# ---------------------------------------------------------------------------- the checks


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    started = time.monotonic()
    yield
    took = time.monotonic() - started
    line = (
        f"fuzzing: {FIGURES['examples']} examples in {took:.1f}s ({FIGURES['accepted']} "
        f"accepted, {FIGURES['refused']} refused with a clean error), "
        f"{FIGURES['crashes']} crashes (exceptions other than clean input errors)"
    )
    print(f"\n{line}")
    record = os.environ.get("STRETTO_FUZZ_RECORD")
    if record:
        Path(record).write_text(line + "\n")


def usable_plan(plan: Plan) -> None:
    """What an accepted plan promises the engine: ids safe in branch names, dependencies that
    exist and form no cycle, owned paths inside the repository, finite bounded numbers, and
    values the journal can store as JSON."""
    ids = {task.id for task in plan.tasks}
    assert len(ids) == len(plan.tasks)
    edges = {task.id: task.depends_on for task in plan.tasks}
    assert find_cycle(list(ids), edges) is None
    for task in plan.tasks:
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", task.id) and ".." not in task.id
        assert set(task.depends_on) <= ids - {task.id}
        assert task.goal.strip() and len(task.goal.encode()) <= 65_536
        for path in (*(task.files or ()), *task.outputs, *plan.context_files):
            assert not path.startswith(("/", "~")) and ".." not in path.split("/"), path
        assert task.timeout is None or 0 < task.timeout <= 7 * 24 * 3600
        assert 1 <= task.max_attempts <= 20
        for text in (task.title, task.role, task.stage):  # shown on terminals as they are
            assert not re.search(r"[\x00-\x1f\x7f-\x9f]", text), text
    assert plan.budget is None or 0 <= plan.budget < math.inf
    assert plan.max_agents is None or 1 <= plan.max_agents <= 1000
    json.dumps(plan.summary(), allow_nan=False)


def usable_config(config: Config) -> None:
    """What an accepted config promises: bounded numbers, links inside the repository, and
    values the journal can store as JSON."""
    assert 1 <= config.max_agents <= 1000
    for gate in config.gates:
        assert 1 <= gate.timeout <= 7 * 24 * 3600 and gate.command.strip()
    for link in config.link_dirs:
        assert not link.startswith(("/", "~")) and ".." not in link.split("/"), link
    assert 1 <= config.planner.timeout <= 7 * 24 * 3600
    json.dumps(config.to_dict(), allow_nan=False)


def clean(load: Callable[[], Any], usable: Callable[[Any], None]) -> None:
    """Run ``load``: it may return something ``usable`` or raise a clean input error, whose
    every diagnostic names its file; anything else is counted as a crash and fails the test."""
    FIGURES["examples"] += 1
    try:
        usable(load())
        FIGURES["accepted"] += 1
    except CLEAN as error:
        FIGURES["refused"] += 1
        assert str(error)
        for diagnostic in getattr(error, "diagnostics", []):
            assert diagnostic.file and diagnostic.message, diagnostic
            assert diagnostic.line >= 0 and diagnostic.column >= 0, diagnostic
    except BaseException:  # a crash, or an accepted input the engine could not use
        FIGURES["crashes"] += 1
        raise


def test_the_seeds_are_valid(repo: Path) -> None:
    parse_plan(PLAN_TEXT, "plan.yaml")
    (repo / "stretto.toml").write_text(TOML_TEXT)
    assert load_config(repo).max_agents == 3


@FUZZ
@given(st.binary(max_size=600) | flipped(PLAN_TEXT.encode()))
def test_plan_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    path = _scratch(tmp_path_factory) / "plan.yaml"
    path.write_bytes(raw)
    clean(lambda: load_plan(path), usable_plan)


@FUZZ
@given(yaml_soup)
def test_plan_yaml_soup(text: str) -> None:
    clean(lambda: parse_plan(text, "plan.yaml"), usable_plan)


@FUZZ
@given(mutated(PLAN), st.sampled_from(["block", "flow", "json"]))
def test_plan_structure(data: dict[str, Any], style: str) -> None:
    if style == "json":
        text = json.dumps(data, ensure_ascii=False)
    else:
        text = yaml.safe_dump(
            data, allow_unicode=True, sort_keys=False, default_flow_style=style == "flow"
        )
    clean(lambda: parse_plan(text, "plan.yaml"), usable_plan)


@FUZZ
@given(st.binary(max_size=600) | flipped(TOML_TEXT.encode()))
def test_config_bytes(repo: Path, raw: bytes) -> None:
    (repo / "stretto.toml").write_bytes(raw)
    clean(lambda: load_config(repo), usable_config)


@FUZZ
@given(toml_soup)
def test_config_toml_soup(repo: Path, text: str) -> None:
    (repo / "stretto.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
    clean(lambda: load_config(repo), usable_config)


@FUZZ
@given(mutated(CONFIG))
def test_config_structure(repo: Path, data: dict[str, Any]) -> None:
    (repo / "stretto.toml").write_text(toml_text(data), encoding="utf-8", errors="surrogatepass")
    clean(lambda: load_config(repo), usable_config)


@FUZZ
@given(mutated(CONFIG))
def test_config_in_pyproject(repo: Path, data: dict[str, Any]) -> None:
    body = toml_text(data).replace("\n[", "\n[tool.stretto.")
    text = '[project]\nname = "x"\n[tool.stretto]\n' + body
    (repo / "stretto.toml").unlink(missing_ok=True)
    (repo / "pyproject.toml").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        clean(lambda: load_config(repo), usable_config)
    finally:
        (repo / "pyproject.toml").unlink()


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("fuzz") / "repo", {"README.md": "# fuzz\n"})


_SCRATCH: list[Path] = []


def _scratch(factory: pytest.TempPathFactory) -> Path:
    if not _SCRATCH:
        _SCRATCH.append(factory.mktemp("plans"))
    return _SCRATCH[0]


def test_every_number_at_and_past_its_limits(repo: Path) -> None:
    """Not random: each number of the seed plan and config, set to each edge value in turn."""
    for seed in (PLAN, CONFIG):
        for path in [p for p in _paths(seed) if p and _is_number(_get(seed, p))]:
            for number in EDGE_NUMBERS:
                data = json.loads(json.dumps(seed))
                _get(data, path[:-1])[path[-1]] = number
                if seed is PLAN:
                    text = yaml.safe_dump(data, sort_keys=False)
                    clean(lambda text=text: parse_plan(text, "plan.yaml"), usable_plan)
                else:
                    (repo / "stretto.toml").write_text(toml_text(data))
                    clean(lambda: load_config(repo), usable_config)
