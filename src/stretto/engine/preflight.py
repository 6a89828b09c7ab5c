"""Checks of a plan against the repository and the configuration, before a run's first effect.

The plan loader (:mod:`stretto.plans`) is pure: it cannot know which agents exist or where a
path of the repository leads. These checks can. Each problem is located in the file that caused
it (the plan's step, or the key of ``stretto.toml``) and raised as an input error: exit 2, and
nothing written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stretto.config import Config, config_diagnostic
from stretto.errors import ConfigError, Diagnostic, PlanError, UsageError
from stretto.git import branch_tips, current_branch, git_common_dir, rev_parse
from stretto.options import RunOptions
from stretto.plans.plan import Plan


def check_agents(plan: Plan, options: RunOptions, config: Config | None = None) -> None:
    """Every agent the plan names must exist and be configured well enough to start.

    Raises:
        PlanError: a step names an unknown agent, or runs the shell agent without a command.
        ConfigError: ``default_agent`` or a ``[[router.arms]]`` agent is unknown (with ``config``).
        UsageError: as above, where the name came from no file (``--agent``); or
            ``[sandbox] enabled`` where the sandbox cannot run.
    """
    from stretto.agents import get_adapter

    named = {task.agent or options.default_agent for task in plan.tasks}
    named |= {arm.agent for arm in options.router.arms}
    for name in sorted(named):
        settings = options.agent_settings.get(name)
        try:
            get_adapter(name, settings)  # unknown agent: UsageError listing the known ones
        except UsageError as error:
            _raise_located(plan, options, config, name, error.message)
            raise
        if (settings or {}).get("adapter") == "command" and not (settings or {}).get("command"):
            raise UsageError(
                f"agent '{name}' uses the command adapter but [agents.{name}] has no command; "
                'add e.g. command = ["mytool", "--prompt", "{prompt}"]'
            )
    _check_shell_commands(
        plan, options.default_agent, options.agent_settings, routed=bool(options.router.arms)
    )
    if options.sandbox.enabled and options.cluster:
        raise UsageError(
            "[sandbox] enabled = true is not supported with a cluster yet: attempts on Dask "
            "workers run without bubblewrap; turn the sandbox off, or run without --cluster"
        )
    if options.sandbox.enabled:
        from stretto.sandbox import unavailable

        problem = unavailable()
        if problem is not None:
            raise UsageError(f"[sandbox] enabled = true, but {problem}")


def check_offline(plan: Plan, options: RunOptions, config: Config | None = None) -> None:
    """With ``--offline``, every agent the run may use must stay on this machine: it uses a
    local model server (``local = "NAME"``) or calls no model (``shell``). The router's arms
    were already cut to the local ones (:func:`stretto.engine.runs.options_for`); a step pinned
    to a hosted agent, a hosted default agent, or no local arm at all is refused.

    Raises:
        PlanError: a step names an agent that would reach the network (located at its line).
        ConfigError: ``default_agent`` or every ``[[router.arms]]`` agent would (with ``config``).
        UsageError: as above, where the name came from no file (``--agent``).
    """
    from stretto.agents import provider_of
    from stretto.localmodels import offline_ok

    if not options.offline:
        return
    settings = options.agent_settings

    def why(agent: str) -> str:
        provider = provider_of(agent, settings)
        reaches = f"provider {provider}" if provider else "a model of its own choosing"
        return (
            f"--offline: agent '{agent}' would reach the network ({reaches}); declare a local "
            f'model server ([local.NAME] with kind = "ollama" or "openai") and set '
            f'local = "NAME" in [agents.{agent}], or run without --offline (docs/local-models.md)'
        )

    routed = bool(options.router.arms)
    if routed and not any(offline_ok(arm.agent, settings) for arm in options.router.arms):
        message = (
            "--offline: no [[router.arms]] agent uses a local model server; add an arm whose "
            'agent has local = "NAME" (docs/local-models.md), or run without --offline'
        )
        where = config_diagnostic(config, ("router", "arms"), message) if config else None
        raise ConfigError([where]) if where else UsageError(message)
    problems = [
        plan.diagnostic(task.id, ("agent",), why(task.agent))
        for task in plan.tasks
        if task.agent and not offline_ok(task.agent, settings)
    ]
    if problems:
        raise PlanError(problems)
    unpinned = any(not task.agent for task in plan.tasks)
    default = options.default_agent
    if unpinned and not routed and not offline_ok(default, settings):
        where = None
        if config is not None and default == config.default_agent:
            where = config_diagnostic(config, ("default_agent",), why(default))
        raise ConfigError([where]) if where else UsageError(why(default))


def _raise_located(
    plan: Plan, options: RunOptions, config: Config | None, name: str, message: str
) -> None:
    """Raise the problem with agent ``name`` at the first place that names it, if a file does."""
    for task in plan.tasks:
        if task.agent == name:
            raise PlanError([plan.diagnostic(task.id, ("agent",), message)])
    if config is None:
        return
    where: Diagnostic | None = None
    if name == options.default_agent == config.default_agent:
        where = config_diagnostic(config, ("default_agent",), message)
    for index, arm in enumerate(config.router.arms):
        if where is None and arm.agent == name:
            where = config_diagnostic(config, ("router", "arms", str(index), "agent"), message)
    if where is not None:
        raise ConfigError([where])


def _check_shell_commands(
    plan: Plan, default_agent: str, settings: Mapping[str, Mapping[str, Any]], *, routed: bool
) -> None:
    """A step run by the shell agent needs a command: its own, or ``[agents.shell] command``.
    With ``[[router.arms]]`` (``routed``), a step that names no agent goes to an arm instead."""
    problems = []
    for task in plan.tasks:
        if routed and task.agent is None:
            continue
        name = task.agent or default_agent
        table = settings.get(name) or {}
        if (table.get("adapter") or name) != "shell" or task.command or table.get("command"):
            continue
        fix = (
            "add 'command: ...' to the step (the shell agent runs it), name another agent "
            f"with 'agent:', or set a default command under [agents.{name}] in stretto.toml"
        )
        where = ("agent",) if task.agent else ()
        problems.append(plan.diagnostic(task.id, where, f"step '{task.id}' has no command; {fix}"))
    if problems:
        raise PlanError(problems)


def check_paths(repo: Path, plan: Plan) -> None:
    """Owned files and outputs must not lead out of the repository through a symlink.

    An agent that writes ``escape/notes.md`` where ``escape`` links to a folder elsewhere
    writes outside its worktree, and git sees no change to land.

    Raises:
        PlanError: naming each such path, its link and where the link leads.
    """
    top = Path(os.path.realpath(repo))
    problems = []
    for task in plan.tasks:
        for key, patterns in (("files", task.files or ()), ("outputs", task.outputs)):
            for index, pattern in enumerate(patterns):
                escape = _escaping_link(top, pattern)
                if escape is not None:
                    link, leads_to = escape
                    problems.append(
                        plan.diagnostic(
                            task.id,
                            (key, index),
                            f"'{pattern}' goes through the symlink '{link}', which leads out "
                            f"of the repository (to {leads_to}); name files inside it",
                        )
                    )
    if problems:
        raise PlanError(problems)


def _escaping_link(top: Path, pattern: str) -> tuple[str, str] | None:
    """The first symlink on ``pattern``'s literal leading segments that leads out of ``top``."""
    current = top
    walked: list[str] = []
    for segment in pattern.split("/"):
        if not segment or any(c in segment for c in "*?["):
            break
        walked.append(segment)
        current = current / segment
        if current.is_symlink():
            real = Path(os.path.realpath(current))
            if real != top and top not in real.parents:
                return "/".join(walked), str(real)
        elif not current.exists():
            break
    return None


def check_target(repo: Path, plan: Plan, options: RunOptions, config: Config) -> None:
    """The target branch must exist, have a commit and not be locked: every worktree forks from
    its head and every landing moves it. A missing one is located where it was named.

    Raises:
        PlanError, ConfigError: the plan's or stretto.toml's ``target`` names no branch.
        UsageError: the branch came from elsewhere (the command line, the current branch), the
            repository has no commit yet, or the branch's ref is locked (a ``.lock`` file a
            crashed git left behind).
    """
    target = options.target
    if rev_parse(repo, f"refs/heads/{target}") is not None:
        lock = git_common_dir(repo) / "refs" / "heads" / f"{target}.lock"
        if lock.exists():
            raise UsageError(
                f"the target branch '{target}' is locked: {lock} exists, so no landing could "
                "move it. If a git command is running, wait for it and retry; if none is, a "
                "crashed one left the file behind: remove it, then retry"
            )
        return
    branches = sorted(branch_tips(repo))
    if not branches:
        raise UsageError(
            f"{repo} has no commit yet, and stretto lands work on top of the target branch's "
            'head; make a first commit (`git commit --allow-empty -m "initial commit"`), '
            "then retry"
        )
    detached = (
        " (HEAD is detached, so the target defaulted to 'main')"
        if current_branch(repo) is None
        else ""
    )
    shown = ", ".join(branches[:8]) + (", ..." if len(branches) > 8 else "")
    fix = f"create it (`git branch {target}`), or name an existing branch"
    message = (
        f"target branch '{target}' does not exist in {repo}{detached}; its branches: {shown}; {fix}"
    )
    if plan.target == target:
        raise PlanError([plan.diagnostic(None, ("target",), message)])
    located = config_diagnostic(config, ("target",), message)
    if located is not None and located.line and config.target == target:  # written in the file
        raise ConfigError([located])
    raise UsageError(
        f"{message}, or set 'target' in the plan or stretto.toml"
        if plan.target is None
        else message
    )
