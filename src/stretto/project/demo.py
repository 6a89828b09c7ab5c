"""``stretto demo``: a real run on a throwaway repository, with nothing but python3 and git.

The repository is a small Python package (``calc``) with unittest tests. The bundled plan has
8 tasks in 3 stages, all run by the ``shell`` agent (scripts standing in for coding agents):

* five feature tasks run in parallel; two of them (``version`` and ``exports``) own the same
  file, so the scheduler runs them one after the other;
* ``div`` writes a bug on its first attempt, fails the test gate, and passes on the retry (its
  second prompt carries the failure log);
* a docs stage waits for the features, and a release stage waits for everything.

It ends with the summary and the target's git log.
"""

from __future__ import annotations

from pathlib import Path

from stretto.errors import UsageError
from stretto.testing.repo import make_repo

FILES = {
    "README.md": "# calc\n\nA tiny calculator package.\n",
    "calc/__init__.py": '"""calc: a tiny calculator."""\n\nfrom calc.core import add\n',
    "calc/core.py": "def add(a, b):\n    return a + b\n",
    "tests/__init__.py": "",
    "tests/test_core.py": (
        "import unittest\n\nfrom calc.core import add\n\n\n"
        "class AddTest(unittest.TestCase):\n"
        "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n"
    ),
    ".gitignore": "__pycache__/\n",
}

CONFIG = """\
# stretto.toml for the demo repository
target = "main"
max_agents = 4
default_agent = "shell"

[gates]
tests = "python3 -m unittest discover -s tests -t . -q"
"""


def _module(name: str, body: str, test: str) -> str:
    """A shell command that writes calc/<name>.py and tests/test_<name>.py."""
    return (
        "sleep 1\n"
        f"cat > calc/ops_{name}.py <<'EOF'\n{body}EOF\n"
        f"cat > tests/test_{name}.py <<'EOF'\n{test}EOF\n"
    )


def _test(name: str, call: str, expected: str) -> str:
    return (
        f"import unittest\n\nfrom calc.ops_{name} import {name}\n\n\n"
        f"class Test(unittest.TestCase):\n"
        f"    def test_{name}(self):\n        self.assertEqual({call}, {expected})\n"
    )


def _indent(text: str) -> str:
    return "\n".join(("          " + line) if line else "" for line in text.splitlines())


DIV_COMMAND = (
    "sleep 1\n"
    'if [ "$STRETTO_ATTEMPT" = "1" ]; then OP="//"; else OP="/"; fi\n'
    "cat > calc/ops_div.py <<EOF\n"
    "def div(a, b):\n"
    "    if b == 0:\n"
    "        raise ZeroDivisionError('b must not be zero')\n"
    "    return a $OP b\n"
    "EOF\n"
    "cat > tests/test_div.py <<'EOF'\n" + _test("div", "div(7, 2)", "3.5") + "EOF\n"
)

STEPS = {
    "mul": _module("mul", "def mul(a, b):\n    return a * b\n", _test("mul", "mul(3, 4)", "12")),
    "pow": _module(
        "pow", "def pow(a, b):\n    return a ** b\n", _test("pow", "pow(2, 10)", "1024")
    ),
    "div": DIV_COMMAND,
    "version": "sleep 1\nprintf '\\n__version__ = \"1.0.0\"\\n' >> calc/__init__.py\n",
    "exports": "sleep 1\nprintf '\\n__all__ = [\"add\"]\\n' >> calc/__init__.py\n",
    "readme": (
        "sleep 1\ncat >> README.md <<'EOF'\n\n## Operations\n\n"
        "add, mul, div and pow, each in its own module under calc/.\nEOF\n"
    ),
    "changelog": (
        "sleep 1\nprintf '# Changelog\\n\\n## 1.0.0\\n\\n- mul, div, pow\\n' > CHANGELOG.md\n"
    ),
    "release": (
        "sleep 1\n"
        "{ echo '# Release 1.0.0'; echo; ls calc/ops_*.py | sed 's/^/- /'; } > RELEASE.md\n"
    ),
}


def _step(id_: str, goal: str, files: list[str], complexity: str = "low", extra: str = "") -> str:
    return (
        f"      - id: {id_}\n"
        f"        goal: {goal}\n"
        f"        complexity: {complexity}\n"
        f"        files: [{', '.join(files)}]\n"
        f"{extra}"
        f"        command: |\n{_indent(STEPS[id_])}\n"
    )


PLAN = (
    "# The plan `stretto demo` runs: 8 tasks in 3 stages, all with the shell agent.\n"
    "name: calc 1.0\n"
    "stages:\n"
    "  - name: features\n"
    "    steps:\n"
    + _step("mul", "Add multiplication", ["calc/ops_mul.py", "tests/test_mul.py"])
    + _step("div", "Add true division", ["calc/ops_div.py", "tests/test_div.py"], "medium")
    + _step("pow", "Add exponentiation", ["calc/ops_pow.py", "tests/test_pow.py"])
    + _step("version", "Give the package a version", ["calc/__init__.py"])
    + _step("exports", "Declare the public names", ["calc/__init__.py"])
    + "  - name: docs\n"
    "    depends_on: [features]\n"
    "    steps:\n"
    + _step("readme", "Document the operations", ["README.md"])
    + _step(
        "changelog",
        "Start a changelog",
        ["CHANGELOG.md"],
        extra="        outputs: [CHANGELOG.md]\n",
    )
    + "  - name: release\n"
    "    depends_on: [docs]\n"
    "    steps:\n"
    + _step(
        "release",
        "Write the release notes",
        ["RELEASE.md"],
        extra="        outputs: [RELEASE.md]\n",
    )
)


def build_demo_repo(path: Path) -> tuple[Path, Path]:
    """Create the demo repository and its plan; returns (repo, plan file).

    Raises:
        UsageError: ``path`` exists and is not empty (the demo would commit what is there, or
            run a second time on a repository it already changed).
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(
            f"{path} is not empty; give `stretto demo --dir` a new or empty directory, "
            "or leave --dir out to use a temporary one"
        )
    repo = make_repo(path, {**FILES, "stretto.toml": CONFIG})
    plan_dir = path.parent / f"{path.name}-plan"
    plan_dir.mkdir(parents=True, exist_ok=True)
    plan_file = plan_dir / "demo-plan.yaml"
    plan_file.write_text(PLAN)
    return repo, plan_file
