"""What every part of a running engine shares: the run's identity, options, journal and helpers.

The runner loop, the attempt lifecycle (:mod:`stretto.engine.attempt`), the merge queue and
splitting each get one :class:`RunContext` instead of reaching into each other. It records
events (journal first, then the sink that feeds a view), runs blocking git calls in a thread
pool, builds the environment agents and gates get, and runs a list of gates with their intent.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stretto.engine.gates import Gate, GateInput, Verdict, run_gates
from stretto.engine.journal import Journal, Record, crashpoint
from stretto.engine.workspace import Workspace, port_base
from stretto.git import identity_env, rev_parse, user_identity
from stretto.options import RunOptions
from stretto.plans.plan import Task
from stretto.process import DEFAULT_ALLOW, TOKEN_VAR, allowed_env
from stretto.sandbox import Sandbox

Sink = Callable[[Record], None]


class RunContext:
    """One run's shared services; see the module docstring.

    Attributes:
        repo: the repository's top level.
        run_id: the run's id (also the token every process of the run carries).
        run_dir: ``.stretto/runs/<run_id>``.
        options: the run's options; control commands (budget, parallelism) replace them.
        journal: the run's journal (this process is its single writer).
        planner_calls: model calls stretto itself made in this run (planning, splits).
    """

    def __init__(
        self,
        repo: Path,
        run_id: str,
        options: RunOptions,
        journal: Journal,
        *,
        sink: Sink | None = None,
    ) -> None:
        self.repo = repo
        self.run_id = run_id
        self.run_dir = journal.run_dir
        self.options = options
        self.journal = journal
        self.sink = sink
        self.planner_calls = 0
        self._identity: tuple[str, str] | None = None
        self.pool = ThreadPoolExecutor(max_workers=max(8, options.max_agents * 2))
        self.slots: dict[str, int] = {}  # task -> agent slot (port range) while it runs

    @property
    def sandbox(self) -> Sandbox | None:
        """The sandbox agents and command gates run in (``[sandbox]``), or None."""
        if not self.options.sandbox.enabled:
            return None
        return Sandbox(self.options.sandbox, self.repo)

    def record(self, type_: str, **fields: Any) -> Record:
        """Append an event to the journal and hand it to the sink."""
        rec = self.journal.append(type_, **fields)
        if self.sink:
            self.sink(rec)
        return rec

    def intent(self, type_: str, **fields: Any) -> Record:
        """Append (and fsync) an intent before its effect."""
        rec = self.journal.intent(type_, **fields)
        if self.sink:
            self.sink(rec)
        return rec

    async def blocking(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking call (git) in the pool, so the loop stays responsive."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, lambda: func(*args, **kwargs))

    def attempt_dir(self, task: str, attempt: int) -> Path:
        """``runs/<id>/tasks/<task>/<attempt>/``."""
        return self.run_dir / "tasks" / task / str(attempt)

    def target_head(self) -> str:
        """The current commit of the target branch."""
        head = rev_parse(self.repo, f"refs/heads/{self.options.target}")
        if head is None:
            raise RuntimeError(f"target branch {self.options.target!r} disappeared")
        return head

    def slot(self, task: str) -> int:
        """The lowest free agent slot, taken by ``task`` (it picks the attempt's port range)."""
        if task in self.slots:
            return self.slots[task]
        used = set(self.slots.values())
        slot = next(i for i in range(len(used) + 1) if i not in used)
        self.slots[task] = slot
        return slot

    def env(
        self, task: Task, attempt: int, ws: Workspace | None = None, prompt: Path | None = None
    ) -> dict[str, str]:
        """The allow-listed environment of an agent or gate working on ``task``.

        It names the user's git identity (or ``stretto <stretto@localhost>``, as stretto's own
        commits do, when the user has none), so an agent's ``git commit`` works and no agent
        writes an identity into the repository's config.
        """
        env = allowed_env(os.environ, (*DEFAULT_ALLOW, *self.options.env_allow))
        env.update(
            {
                TOKEN_VAR: self.run_id,
                "STRETTO_RUN_ID": self.run_id,
                "STRETTO_TASK_ID": task.id,
                "STRETTO_ATTEMPT": str(attempt),
                "STRETTO_GOAL": task.goal,
                "STRETTO_ROLE": task.role,
                "STRETTO_COMPLEXITY": task.complexity,
                "STRETTO_OWNED_FILES": "\n".join(task.files or ()),
                "STRETTO_TARGET": self.options.target,
            }
        )
        # The user's git identity through the environment: no agent needs to write one into
        # the repository's config (aider does when it sees none), and any commit it makes is
        # the user's (or stretto's, when the user has none).
        if self._identity is None:
            self._identity = user_identity(self.repo)
        env.update(identity_env(self._identity, env))
        if ws is not None:
            env["STRETTO_WORKSPACE"] = str(ws.path)
            env["STRETTO_PORT_BASE"] = str(port_base(self.slot(task.id)))
        if prompt is not None:
            env["STRETTO_PROMPT_FILE"] = str(prompt)
        return env

    async def gated(
        self,
        task: str,
        attempt: int,
        stage: str,
        commit: str,
        gates: list[tuple[str, Gate]],
        inp: GateInput,
    ) -> list[Verdict]:
        """Run ``gates`` on ``commit`` (intent first), journal each verdict, return them."""
        if not gates:
            return []
        intent = self.intent(
            "gates",
            task=task,
            attempt=attempt,
            stage=stage,
            commit=commit,
            gates=[name for name, _ in gates],
        )
        crashpoint(f"after-intent:gates-{stage}")
        verdicts = await run_gates(gates, inp)
        for verdict in verdicts:
            self.record("gate_result", task=task, attempt=attempt, stage=stage, **verdict.to_dict())
        self.journal.done(intent, passed=all(v.passed for v in verdicts))
        return verdicts

    async def housekeeping(self, job: Any, task: str, what: str) -> None:
        """Run ``job`` (after a landing); a failure is reported, never a task failure."""
        try:
            await job
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.record(
                "warning", task=task, message=f"{what} failed: {type(error).__name__}: {error}"
            )
