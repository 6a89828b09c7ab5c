"""The ``shell`` agent: any shell command, run as if it were a coding agent.

A step with ``agent: shell`` runs its ``command:`` (or the ``command`` template of
``[agents.shell]`` in stretto.toml) with ``bash -c`` in the attempt's worktree. The task's
prompt is in the file named by ``$STRETTO_PROMPT_FILE``; ``$STRETTO_TASK_ID``,
``$STRETTO_ATTEMPT``, ``$STRETTO_GOAL`` and friends describe the attempt. This is what the demo
and most tests use, and it lets users run codemods and scripts as agents.

Lines the command prints that start with ``STRETTO_EVENT `` followed by JSON are parsed as
events (``{"kind": "usage", "input_tokens": 10}``), so scripts can report like real agents.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from stretto.agents.base import AgentEvent, AgentResult, AttemptContext, Launch, Outcome
from stretto.errors import UsageError

EVENT_PREFIX = "STRETTO_EVENT "


class ShellAdapter:
    """Runs ``bash -c COMMAND``; exit status 0 is success."""

    name = "shell"

    def build(self, ctx: AttemptContext) -> Launch:
        command = ctx.task.command or ctx.settings.get("command")
        if not command:
            raise UsageError(
                f"step '{ctx.task.id}' uses the shell agent but has no command: add "
                "'command: ...' to the step, or a default under [agents.shell] in stretto.toml"
            )
        return Launch(argv=["bash", "-c", str(command)], env=ctx.env, cwd=ctx.workspace)

    def parse_line(self, line: str, stream: str) -> Sequence[AgentEvent]:
        if not line.startswith(EVENT_PREFIX):
            return ()
        try:
            data = json.loads(line[len(EVENT_PREFIX) :])
        except json.JSONDecodeError:
            return ()
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            return ()
        kind = data.pop("kind")
        return (AgentEvent(kind, data),)

    def decide(
        self, exit_code: int | None, timed_out: bool, events: Sequence[AgentEvent]
    ) -> AgentResult:
        usage: dict[str, int] = {}
        cost: float | None = None
        retry_after: float | None = None
        limited = False
        for event in events:
            if event.kind == "usage":
                for key, value in event.data.items():
                    if isinstance(value, int):
                        usage[key] = usage.get(key, 0) + value
            elif event.kind == "cost" and isinstance(event.data.get("usd"), int | float):
                cost = (cost or 0.0) + float(event.data["usd"])
            elif event.kind == "rate_limit":
                limited = True
                after = event.data.get("retry_after")
                retry_after = float(after) if isinstance(after, int | float) else None
        if timed_out:
            return AgentResult(
                Outcome.TIMED_OUT, exit_code, "timed out", usage=usage, cost_usd=cost
            )
        if limited:
            return AgentResult(
                Outcome.RATE_LIMITED, exit_code, "rate limited", retry_after, usage, cost
            )
        if exit_code == 0:
            return AgentResult(Outcome.SUCCESS, 0, usage=usage, cost_usd=cost)
        return AgentResult(
            Outcome.FAILED, exit_code, f"command exited with status {exit_code}", None, usage, cost
        )
