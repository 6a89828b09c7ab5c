"""A compact, deterministic summary of a repository, for the planning agent.

The planner (:mod:`~stretto.planning.planner`) shows the model what it needs to cut a goal into
steps that
own real files, in a few kilobytes however large the repository:

* the tracked files (``git ls-files``) as a tree trimmed to :data:`TREE_LINES` lines: folders are
  opened shallowest first while the budget allows, the rest shown as one line with their file
  count (``src/legacy/  (240 files: 200 .py, 40 .html)``);
* languages by file extension;
* the test, lint and type commands: the gates configured in ``stretto.toml`` (or
  ``[tool.stretto]``), else what ``stretto init`` would detect;
* the head of the README;
* the context files agents are shown (``AGENTS.md``, ``CLAUDE.md``, …), which the plan lists as
  its ``context_files``.

Only tracked files count: agents work in worktrees checked out from commits, where untracked
files do not exist.
"""

from __future__ import annotations

import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from stretto.git import current_branch, rev_parse, run_git, toplevel

TREE_LINES = 200
FILES_PER_DIR = 40
README_LINES = 40
TEXT_LIMIT = 3_000  # characters of the README and of each context file
CONTEXT_LIMIT = 8_000  # characters of all context files together

#: Files agents read as standing instructions, in the order they are listed.
CONTEXT_NAMES = (
    "AGENTS.md",
    "CLAUDE.md",
    "GEMINI.md",
    "CONVENTIONS.md",
    ".cursorrules",
    ".github/copilot-instructions.md",
)
README_NAMES = ("README.md", "README.rst", "README.txt", "README", "readme.md", "Readme.md")

LANGUAGES = {
    ".py": "Python",
    ".pyi": "Python",
    ".ts": "TypeScript",
    ".tsx": "TypeScript",
    ".js": "JavaScript",
    ".jsx": "JavaScript",
    ".mjs": "JavaScript",
    ".cjs": "JavaScript",
    ".go": "Go",
    ".rs": "Rust",
    ".java": "Java",
    ".kt": "Kotlin",
    ".scala": "Scala",
    ".rb": "Ruby",
    ".php": "PHP",
    ".c": "C",
    ".h": "C/C++ header",
    ".cc": "C++",
    ".cpp": "C++",
    ".hpp": "C++",
    ".cs": "C#",
    ".swift": "Swift",
    ".m": "Objective-C",
    ".ex": "Elixir",
    ".exs": "Elixir",
    ".erl": "Erlang",
    ".hs": "Haskell",
    ".ml": "OCaml",
    ".clj": "Clojure",
    ".lua": "Lua",
    ".r": "R",
    ".jl": "Julia",
    ".dart": "Dart",
    ".vue": "Vue",
    ".svelte": "Svelte",
    ".sh": "Shell",
    ".bash": "Shell",
    ".sql": "SQL",
    ".html": "HTML",
    ".css": "CSS",
    ".scss": "SCSS",
    ".md": "Markdown",
    ".rst": "reStructuredText",
    ".yaml": "YAML",
    ".yml": "YAML",
    ".toml": "TOML",
    ".json": "JSON",
    ".tf": "Terraform",
    ".proto": "Protocol Buffers",
}


@dataclass(frozen=True, slots=True)
class RepoFacts:
    """What the summary is made of (see :func:`collect`)."""

    name: str
    branch: str | None
    head: str | None
    files: tuple[str, ...]
    tree: tuple[str, ...]
    languages: tuple[tuple[str, int], ...]
    commands: dict[str, str] = field(default_factory=dict)
    commands_source: str = ""
    readme: tuple[str, str] | None = None  # (path, head)
    context: tuple[tuple[str, str], ...] = ()  # (path, head) of each context file

    @property
    def context_files(self) -> tuple[str, ...]:
        """Paths of the context files found."""
        return tuple(path for path, _ in self.context)


def tracked_files(repo: Path) -> list[str]:
    """Repository-relative paths of the files git tracks, sorted."""
    out = run_git(["ls-files", "-z"], repo).stdout
    return sorted({path for path in out.split("\0") if path})


def trimmed_tree(
    files: Sequence[str], max_lines: int = TREE_LINES, per_dir: int = FILES_PER_DIR
) -> list[str]:
    """The file list as full paths, with folders collapsed into one line until it fits.

    Folders are opened breadth-first (shallowest, then by name) while the total stays within
    ``max_lines``; a folder left closed shows as ``path/  (N files: …)``. An open folder lists at
    most ``per_dir`` of its own files, then ``path/… (N more files)``.
    """
    own: dict[str, list[str]] = {"": []}
    subdirs: dict[str, set[str]] = {"": set()}
    below: Counter[str] = Counter()
    exts: dict[str, Counter[str]] = {}
    for path in files:
        parts = path.split("/")
        parent = ""
        for segment in parts[:-1]:
            folder = f"{parent}/{segment}" if parent else segment
            subdirs.setdefault(parent, set()).add(folder)
            subdirs.setdefault(folder, set())
            own.setdefault(folder, [])
            below[folder] += 1
            exts.setdefault(folder, Counter())[PurePosixPath(path).suffix or "(none)"] += 1
            parent = folder
        own[parent].append(path)

    def cost(folder: str) -> int:
        listed = len(own[folder])
        return min(listed, per_dir) + (listed > per_dir) + len(subdirs[folder])

    opened = {""}
    total = cost("")
    queue = sorted(subdirs[""])
    while queue:
        folder = queue.pop(0)
        extra = cost(folder) - 1  # its one collapsed line becomes its contents
        if total + extra <= max_lines:
            opened.add(folder)
            total += extra
            queue.extend(sorted(subdirs[folder]))

    lines: list[str] = []

    def render(folder: str) -> None:
        listed = sorted(own[folder])
        lines.extend(listed[:per_dir])
        if len(listed) > per_dir:
            lines.append(f"{folder}/… ({len(listed) - per_dir} more files)")
        for sub in sorted(subdirs[folder]):
            if sub in opened:
                render(sub)
            else:
                top = ", ".join(f"{n} {ext}" for ext, n in exts[sub].most_common(3))
                count = below[sub]
                lines.append(f"{sub}/  ({count} file{'s' if count != 1 else ''}: {top})")

    render("")
    return lines


def languages(files: Sequence[str]) -> list[tuple[str, int]]:
    """(language, number of files), most files first; unknown extensions are left out."""
    counts: Counter[str] = Counter()
    for path in files:
        language = LANGUAGES.get(PurePosixPath(path).suffix.lower())
        if language:
            counts[language] += 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _head(path: Path, lines: int = README_LINES, limit: int = TEXT_LIMIT) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    head = "\n".join(text.splitlines()[:lines])[:limit]
    return head + ("\n[…]" if len(head) < len(text.rstrip()) else "")


def configured_gates(repo: Path) -> dict[str, str]:
    """The ``[gates]`` of ``stretto.toml`` (else ``[tool.stretto.gates]``), name -> command."""
    for name, keys in (
        ("stretto.toml", ("gates",)),
        ("pyproject.toml", ("tool", "stretto", "gates")),
    ):
        try:
            data: Any = tomllib.loads((repo / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
        for key in keys:
            data = data.get(key) if isinstance(data, dict) else None
        if not isinstance(data, dict):
            continue
        gates = {}
        for gate, value in data.items():
            command = value.get("command") if isinstance(value, dict) else value
            if isinstance(command, str) and command.strip():
                gates[str(gate)] = command
        if gates:
            return gates
    return {}


def collect(repo: Path) -> RepoFacts:
    """Gather the facts of the summary from the repository containing ``repo``."""
    top = toplevel(repo)
    files = tracked_files(top)
    commands = configured_gates(top)
    source = "configured in stretto.toml"
    if not commands:
        from stretto.project.scaffold import detect_gates

        commands, source = detect_gates(top), "detected"
    readme = next((name for name in README_NAMES if name in files), None)
    context: list[tuple[str, str]] = []
    budget = CONTEXT_LIMIT
    for name in CONTEXT_NAMES:
        if name in files and budget > 0:
            text = _head(top / name, lines=200, limit=min(TEXT_LIMIT, budget))
            budget -= len(text)
            context.append((name, text))
    head = rev_parse(top, "HEAD")
    return RepoFacts(
        name=top.name,
        branch=current_branch(top),
        head=head[:12] if head else None,
        files=tuple(files),
        tree=tuple(trimmed_tree(files)),
        languages=tuple(languages(files)),
        commands=commands,
        commands_source=source,
        readme=(readme, _head(top / readme)) if readme else None,
        context=tuple(context),
    )


def render(facts: RepoFacts) -> str:
    """The summary as Markdown."""
    where = f"branch {facts.branch}" if facts.branch else "a detached HEAD"
    if facts.head:
        where += f" at {facts.head}"
    count = len(facts.files)
    parts = [
        f"Repository: {facts.name}, {where}, {count} tracked file{'s' if count != 1 else ''}.",
        "",
        "## Languages (by number of files)",
        ", ".join(f"{name} {n}" for name, n in facts.languages) or "none recognized",
        "",
        "## Test, lint and type commands",
    ]
    if facts.commands:
        parts += [
            f"- {name}: `{cmd}` ({facts.commands_source})" for name, cmd in facts.commands.items()
        ]
    else:
        parts.append("none detected")
    parts += ["", "## Files (tracked by git; closed folders show their file counts)", *facts.tree]
    if facts.readme:
        parts += ["", f"## {facts.readme[0]} (head)", "```", facts.readme[1], "```"]
    if facts.context:
        parts += ["", "## Context files (every agent is shown these)"]
        for path, text in facts.context:
            parts += ["", f"### {path}", "```", text, "```"]
    return "\n".join(parts) + "\n"


def repo_summary(repo: Path) -> str:
    """A compact Markdown summary of the repository containing ``repo``, for a planning prompt.

    Raises:
        RepoError: ``repo`` is not inside a git work tree.
    """
    return render(collect(repo))
