"""The bad-input corpus (issue 19): every malformed or hostile plan and config in
``tests/corpus/`` goes through the real CLI (``python -m stretto run``, a subprocess, in a real
git repository) and must end with exit 2, a message naming file:line, the field and the fix, no
traceback, and not one byte changed on disk (the repository, its ``.git`` and ``.stretto``).

What each case must say is in ``tests/corpus/EXPECTED.yaml``; files too big to commit are made
here (``generate:``). A symlink leading out of the repository (``escape``) and a canary that any
executed shell metacharacter would create (``CANARY``) are part of every repository.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from stretto.testing.repo import git, make_repo

CORPUS = Path(__file__).parent / "corpus"
INDEX = yaml.safe_load((CORPUS / "EXPECTED.yaml").read_text())
CASES: list[dict[str, Any]] = INDEX["cases"]
OK_PLAN = (
    "stages:\n  - name: build\n    steps:\n      - id: hello\n        goal: write hello.txt\n"
    "        files: [hello.txt]\n        command: echo hi > hello.txt\n"
)
#: Cases run at once, each a subprocess in its own copy of the repository.
WORKERS = 3
STEP = "  - name: s{i}\n    steps:\n      - {{id: t{i}, goal: g, files: [f{i}.py]}}\n"


def _huge_plan(path: Path) -> None:
    """A plan file over the size limit (65 MiB of valid YAML)."""
    with path.open("w") as out:
        out.write("stages:\n")
        i = 0
        while out.tell() < 65 * 1024 * 1024:
            out.write("".join(STEP.format(i=i + k) for k in range(1000)))
            i += 1000


def _megabyte_goal(path: Path) -> None:
    path.write_text(
        f'stages:\n  - name: s\n    steps:\n      - id: big\n        goal: "{"x" * 1_000_000}"\n'
    )


def _deep_block_nesting(path: Path) -> None:
    """1,200 levels of block mappings (each line indented one more space)."""
    path.write_text("".join(f"{' ' * i}k{i}:\n" for i in range(1200)) + " " * 1200 + "x\n")


def _huge_config(path: Path) -> None:
    path.write_text("# filler\n" * 600_000 + "max_agents = 2\n")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _link_to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _dangling_link(path: Path) -> None:
    path.symlink_to(path.parent / "gone.toml")


GENERATORS: dict[str, Callable[[Path], None]] = {
    "link-to-dev-zero": _link_to_dev_zero,
    "dangling-link": _dangling_link,
    "huge-plan": _huge_plan,
    "megabyte-goal": _megabyte_goal,
    "deep-block-nesting": _deep_block_nesting,
    "huge-config": _huge_config,
    "fifo": _fifo,
}


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` (``.git`` and ``.stretto`` included): kind, mode, content."""
    seen: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            rel = str(path.relative_to(root))
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                seen[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                seen[rel] = ("dir", stat.S_IMODE(info.st_mode))
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                seen[rel] = ("file", stat.S_IMODE(info.st_mode), digest)
            else:
                seen[rel] = ("other", info.st_mode)
    return seen


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository every case starts from a copy of; ``escape`` links out of it."""
    base = tmp_path_factory.mktemp("template")
    repo = make_repo(base / "repo", {"README.md": "# corpus\n", "src/app.py": "x = 1\n"})
    (repo / "escape").symlink_to(base.parent / "outside", target_is_directory=True)
    git(repo, "add", "escape")
    git(repo, "commit", "-qm", "a link out of the repository")
    return repo


@pytest.fixture(scope="module")
def tally() -> Iterator[dict[str, int]]:
    counts = {"tried": 0, "clear": 0}
    started = time.monotonic()
    yield counts
    took = time.monotonic() - started
    line = f"bad inputs with a clear error: {counts['clear']}/{counts['tried']} ({took:.1f}s)"
    print(f"\n{line}")
    record = os.environ.get("STRETTO_CORPUS_RECORD")
    if record:
        Path(record).write_text(line + "\n")


def _source(case: dict[str, Any], folder: Path) -> Path:
    """The case's file, copied (or generated) into ``folder``."""
    if "generate" in case:
        path = folder / case["name"]
        GENERATORS[case["generate"]](path)
        return path
    source = CORPUS / case["file"]
    path = folder / source.name
    shutil.copyfile(source, path)
    return path


def _ids(case: dict[str, Any]) -> str:
    return str(case.get("file") or case["name"])


@dataclass
class Outcome:
    """What running one case did."""

    code: int
    stdout: str
    stderr: str
    changed: list[str]  # entries added, removed or altered under the case's directory
    canaries: list[Path]


def _attempt(case: dict[str, Any], template: Path, base: Path) -> Outcome:
    """Run ``case`` through ``python -m stretto`` in a fresh copy of ``template`` under ``base``."""
    repo = base / "repo"
    shutil.copytree(template, repo, symlinks=True)
    (base / "outside").mkdir()
    home, inputs = base / "home", base / "inputs"
    home.mkdir()
    inputs.mkdir()
    plan = Path(case["path"]) if "path" in case else _source(case, inputs)
    if case.get("as"):  # a config: installed in the repository, then a valid plan is run
        shutil.move(plan, repo / case["as"])
        plan = inputs / "plan.yaml"
        plan.write_text(OK_PLAN)
    before = snapshot(base)
    env = {
        **os.environ,
        "HOME": str(home),
        "PYTHONPATH": str(Path(__file__).parents[1] / "src"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    command = case.get("command", ["run", "{plan}", "--plain"])
    args = [arg.replace("{plan}", str(plan)) for arg in command]
    result = subprocess.run(
        [sys.executable, "-m", "stretto", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=60,
        check=False,
    )
    after = snapshot(base)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    canaries = list(base.rglob("CANARY"))
    return Outcome(result.returncode, result.stdout, result.stderr, changed, canaries)


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Outcome]]]:
    """The selected cases, started at once on a few threads (each is its own subprocess)."""
    wanted = [
        item.callspec.params["case"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is sys.modules[__name__]
        and "case" in getattr(item, "callspec", SimpleNamespace(params={})).params
    ]
    with ThreadPoolExecutor(WORKERS) as pool:
        yield {
            _ids(case): pool.submit(_attempt, case, template, tmp_path_factory.mktemp("case"))
            for case in wanted
        }


def test_the_corpus_is_big_and_every_file_is_indexed() -> None:
    files = {str(p.relative_to(CORPUS)) for p in CORPUS.rglob("*") if p.is_file()}
    files.discard("EXPECTED.yaml")
    indexed = {case["file"] for case in CASES if "file" in case}
    assert files == indexed, "every corpus file has one entry in EXPECTED.yaml, and vice versa"
    assert len(CASES) >= 60
    for case in CASES:
        assert case["exit"] == 2 and case["says"], case
        assert ":" in case["where"], f"{_ids(case)}: 'where' names file:line"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_bad_input_is_a_clear_error_and_changes_nothing(
    case: dict[str, Any], outcomes: dict[str, Future[Outcome]], tally: dict[str, int]
) -> None:
    tally["tried"] += 1
    done = outcomes[_ids(case)].result()
    output = done.stdout + done.stderr
    assert not done.changed, f"{_ids(case)} changed {done.changed[:10]}:\n{output}"
    assert not done.canaries, "a shell metacharacter was executed"
    assert "Traceback" not in output, output
    assert done.code == case["exit"], output
    for part in [case["where"], case.get("field", ""), *case["says"]]:
        assert part in done.stderr, f"{_ids(case)}: {part!r} missing from:\n{done.stderr}"
    tally["clear"] += 1


def test_shell_metacharacters_in_a_plan_that_runs_never_execute(
    template: Path, tmp_path: Path
) -> None:
    """A valid plan whose every text is a shell injection attempt runs to its end: the texts
    reach the agent as data ($STRETTO_GOAL), and no canary appears anywhere."""
    repo = tmp_path / "repo"
    shutil.copytree(template, repo, symlinks=True)
    bait = "$(touch CANARY) `touch CANARY` ; touch CANARY && touch CANARY | touch CANARY"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"name: '{bait}'\nstages:\n  - name: '{bait}'\n    steps:\n"
        f"      - title: '{bait}'\n        goal: '{bait} > CANARY'\n"
        f"        description: '{bait}'\n        role: '{bait}'\n"
        "        files: [goal.txt]\n"
        '        command: printf %s "$STRETTO_GOAL" > goal.txt\n'
    )
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(CORPUS.parents[1] / "src")}
    for args in (["validate"], ["run", "--dry-run"], ["run", "--plain"]):
        result = subprocess.run(
            [sys.executable, "-m", "stretto", *args, str(plan)],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert git(repo, "show", "main:goal.txt") == f"{bait} > CANARY"
    assert not list(tmp_path.rglob("CANARY"))


def test_inputs_at_the_edge_of_the_new_checks_are_still_accepted(
    template: Path, tmp_path: Path
) -> None:
    """The checks added for the corpus refuse only what they must: a symlink that stays inside
    the repository, a shell step whose command comes from [agents.shell], a UTF-8 BOM in
    stretto.toml, the longest timeout and a zero budget all pass."""
    from stretto.engine.runs import prepare_run

    repo = tmp_path / "repo"
    shutil.copytree(template, repo, symlinks=True)
    (repo / "lib").symlink_to("src", target_is_directory=True)
    (repo / "stretto.toml").write_text(
        '\ufeff[agents.shell]\ncommand = "true"\n'
        '[gates]\nslow = { command = "true", timeout = 604800 }\n'
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "budget: 0\nstages:\n  - name: s\n    steps:\n"
        "      - {id: a, goal: g, files: [lib/app.py, escape2/x.py], timeout: 168h}\n"
    )
    _, loaded, options = prepare_run(repo, plan)
    assert loaded.tasks[0].timeout == 604800 and loaded.budget == 0
    assert options.gates[0].timeout == 604800
