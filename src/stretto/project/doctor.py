"""``stretto agents`` and ``stretto doctor``: what is installed, and what stands in the way.

Every check returns a :class:`Check` with a status (ok, warn, fail), what was found and, when it
is not ok, how to fix it. Nothing here changes anything.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stretto.agents import available
from stretto.localmodels import server_of

#: The program each built-in adapter runs, and how to install it.
CLI_PROGRAMS: Mapping[str, tuple[str, str]] = {
    "shell": ("bash", "install bash with your system's package manager"),
    "claude": ("claude", "npm install -g @anthropic-ai/claude-code"),
    "codex": ("codex", "npm install -g @openai/codex"),
    "gemini": ("gemini", "npm install -g @google/gemini-cli"),
    "opencode": ("opencode", "npm install -g opencode-ai"),
    "qwen": ("qwen", "npm install -g @qwen-code/qwen-code"),
    "aider": ("aider", "pipx install aider-chat"),
}
MIN_GIT = (2, 38)  # `git merge-tree --write-tree`


@dataclass(frozen=True, slots=True)
class Check:
    """One finding."""

    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        """Plain data (``--json``)."""
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """An adapter and the program behind it."""

    name: str
    adapter: str  # module:Class
    program: str | None
    path: str | None
    version: str | None
    problem: str = ""
    local: str | None = None  # "NAME (kind at URL)": the local model server it is set up for

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``--json``)."""
        return {
            "name": self.name,
            "adapter": self.adapter,
            "program": self.program,
            "path": self.path,
            "version": self.version,
            "installed": self.path is not None,
            "problem": self.problem,
            "local": self.local,
        }


def _version(path: str) -> str | None:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=15, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0][:80] if text else None


def describe_agents(settings: Mapping[str, Mapping[str, Any]] | None = None) -> list[AgentInfo]:
    """Every adapter, whether its program is installed, and its version."""
    settings = settings or {}
    infos = []
    names = dict(available())
    for name, table in settings.items():
        if name not in names and isinstance(table, Mapping) and table.get("adapter"):
            names[name] = f"{table['adapter']} (configured)"
    for name, target in names.items():
        table = settings.get(name, {})
        kind = str(table.get("adapter") or name)  # a profile runs its adapter's program
        server = server_of(table)
        local = f"{server.name} ({server.kind} at {server.base_url})" if server else None
        configured = table.get("command")
        if isinstance(configured, list):
            program: str | None = str(configured[0]) if configured else None
        elif isinstance(configured, str) and kind != "shell":
            program = shlex.split(configured)[0] if configured.strip() else None
        else:
            program = CLI_PROGRAMS.get(kind, (None, ""))[0]
        if program is None:
            problem = "a plugin: see its docs"
            infos.append(AgentInfo(name, target, None, None, None, problem, local))
            continue
        path = shutil.which(program)
        if path is None:
            how = CLI_PROGRAMS.get(kind, ("", "see the adapter's documentation"))[1]
            problem = f"'{program}' not found on PATH; {how}"
            infos.append(AgentInfo(name, target, program, None, None, problem, local))
            continue
        infos.append(AgentInfo(name, target, program, path, _version(path), local=local))
    return infos


def _git_version() -> tuple[int, ...] | None:
    try:
        out = subprocess.run(["git", "--version"], capture_output=True, text=True, check=False)
    except OSError:
        return None
    match = re.search(r"(\d+)\.(\d+)", out.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else None


def sandbox_check(enabled: bool) -> Check:
    """Whether the agent sandbox (bubblewrap) works here; a failure only when it is enabled."""
    from stretto.sandbox import INSTALL_HINT, unavailable

    problem = unavailable()
    state = "enabled" if enabled else "off; enable with [sandbox] enabled = true"
    if problem is None:
        return Check("sandbox", "ok", f"bubblewrap works here ({state})")
    fix = INSTALL_HINT if "not installed" in problem else "see docs/sandbox.md"
    return Check("sandbox", "fail" if enabled else "warn", f"{problem} ({state})", fix)


def run_checks(cwd: Path) -> list[Check]:
    """Everything stretto needs to run in ``cwd``'s repository, checked without side effects."""
    from stretto.config import load_config
    from stretto.errors import ConfigError, RepoError
    from stretto.git import rev_parse, run_git, toplevel

    checks: list[Check] = []
    version = _git_version()
    if version is None:
        checks.append(Check("git", "fail", "git not found", "install git 2.38 or newer"))
        return checks
    shown = ".".join(map(str, version))
    if version < MIN_GIT:
        checks.append(
            Check(
                "git",
                "fail",
                f"git {shown} is too old (merges need `merge-tree --write-tree`)",
                "install git 2.38 or newer",
            )
        )
    else:
        checks.append(Check("git", "ok", f"git {shown}"))
    try:
        repo = toplevel(cwd)
    except RepoError as error:
        checks.append(Check("repository", "fail", error.message, "cd into a git repository"))
        return checks
    checks.append(Check("repository", "ok", str(repo)))
    try:
        config = load_config(repo)
    except ConfigError as error:
        checks.append(Check("config", "fail", error.message, "fix the lines named above"))
        return checks
    where = str(config.path) if config.path else "no stretto.toml (defaults)"
    checks.append(
        Check(
            "config",
            "ok" if config.path else "warn",
            where,
            "" if config.path else "run `stretto init` to write one with detected gates",
        )
    )
    if rev_parse(repo, f"refs/heads/{config.target}") is None:
        checks.append(
            Check(
                "target",
                "fail",
                f"branch '{config.target}' does not exist",
                f"create it (`git branch {config.target}`) or set target in stretto.toml",
            )
        )
    else:
        checks.append(Check("target", "ok", f"branch '{config.target}'"))
    ignored = run_git(["check-ignore", "-q", ".stretto/"], repo, check=False).returncode == 0
    checks.append(
        Check(
            "state directory",
            "ok" if ignored else "warn",
            ".stretto/ is ignored by git" if ignored else ".stretto/ is not ignored yet",
            "" if ignored else "run `stretto init`, or a run adds it to .git/info/exclude",
        )
    )
    for info in describe_agents(config.agents):
        wanted = info.name == config.default_agent
        if info.path:
            checks.append(Check(f"agent {info.name}", "ok", f"{info.path} ({info.version or '?'})"))
        elif wanted:
            checks.append(
                Check(
                    f"agent {info.name}",
                    "fail",
                    f"the default agent is not installed: {info.problem}",
                    info.problem.split("; ", 1)[-1],
                )
            )
    from stretto.project.localcheck import server_findings

    for server in config.local.values():
        checks += [Check(*finding) for finding in server_findings(server, config.agents)]
    for gate in config.gates:
        words = shlex.split(gate.command) if gate.command.strip() else []
        program = words[0] if words else ""
        if program and "/" not in program and shutil.which(program) is None:
            checks.append(
                Check(
                    f"gate {gate.name}",
                    "warn",
                    f"'{program}' is not on PATH here (command: {gate.command})",
                    "install it, or make sure agents' PATH has it",
                )
            )
        else:
            checks.append(Check(f"gate {gate.name}", "ok", gate.command))
    checks.append(sandbox_check(config.sandbox.enabled))
    free = shutil.disk_usage(repo).free
    if free < 1 << 30:
        checks.append(
            Check(
                "disk",
                "warn",
                f"{free >> 20} MB free",
                "each attempt is a worktree: free some space",
            )
        )
    else:
        checks.append(Check("disk", "ok", f"{free >> 30} GB free"))
    if os.environ.get("STRETTO_CRASHPOINT"):
        checks.append(
            Check(
                "environment",
                "warn",
                "STRETTO_CRASHPOINT is set (a test hook)",
                "unset STRETTO_CRASHPOINT",
            )
        )
    return checks
