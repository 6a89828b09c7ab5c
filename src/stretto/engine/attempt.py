"""One attempt, from worktree to merge queue: the attempt lifecycle.

For an attempt the runner has routed: make the worktree (intent first), write the prompt, run
the agent in its own process group, book its usage, commit what it did, run the attempt's gates,
and hand a verified commit to the merge queue. Every step is journaled through the
:class:`~stretto.engine.context.RunContext`; crash points name the moments the fault tests kill
the engine at. The runner loop owns *when* an attempt starts and what its end means; this module
owns *what happens* in between.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stretto.agents import AgentEvent, AttemptContext, Outcome, get_adapter
from stretto.engine import merge as merging
from stretto.engine import prompt as prompting
from stretto.engine.context import RunContext
from stretto.engine.gates import (
    Gate,
    GateInput,
    command_gate,
    files_exist,
    no_deleted_tests,
    scope_gate,
)
from stretto.engine.journal import crashpoint
from stretto.engine.merge_queue import MergeQueue
from stretto.engine.outcomes import AttemptEnd, log_tail
from stretto.engine.sparse import sparse_for
from stretto.engine.workspace import (
    Workspace,
    branch_name,
    changed_files,
    commit_all,
    create_workspace,
    remove_workspace,
    worktrees_root,
)
from stretto.git import is_ancestor, rev_parse, update_ref_cas
from stretto.plans.plan import Task
from stretto.process import run_process, secret_values, write_pid_file
from stretto.routing.dispatch import Dispatch, Route

MAX_UNCOUNTED = 10  # rate-limited attempts of one task before they start to count as failures


class Attempts:
    """The attempts of one run: running them, and what the runner needs to know about them.

    Args:
        ctx: the run's shared services.
        dispatch: routing, budget and cost bookkeeping (books each agent's usage).
        queue: the merge queue verified commits go to.
        context: the plan's context files, read once (pasted into every prompt).
        stop_reason: why no agent may start now (the budget), or None.
        on_spent: called after an agent's cost is booked (the runner checks the budget).
    """

    def __init__(
        self,
        ctx: RunContext,
        dispatch: Dispatch,
        queue: MergeQueue,
        context: Sequence[tuple[str, str]],
        *,
        stop_reason: Callable[[], str | None],
        on_spent: Callable[[], None],
    ) -> None:
        self.ctx = ctx
        self.dispatch = dispatch
        self.queue = queue
        self.context = context
        self.stop_reason = stop_reason
        self.on_spent = on_spent
        self.in_agent: set[str] = set()  # tasks whose agent process is running
        self.stopping: dict[str, str] = {}  # task -> why its attempt is being stopped
        self.failures: dict[str, prompting.Failure] = {}  # task -> its last failure (prompt)
        self.not_before: dict[str, float] = {}  # task -> monotonic time before which not to start
        self.uncounted: dict[str, int] = {}  # task -> failures that were not its fault
        self.cost_of: dict[str, float | None] = {}  # task -> cost of its last finished agent
        self.cleanups: list[asyncio.Task[None]] = []
        self.agent_seconds = 0.0

    async def run(self, task: Task, attempt: int, route: Route) -> AttemptEnd:
        """Run one attempt of ``task`` on ``route`` to its end (landed, or why not)."""
        ctx = self.ctx
        folder = ctx.attempt_dir(task.id, attempt)
        folder.mkdir(parents=True, exist_ok=True)
        wait = self.not_before.pop(task.id, 0.0) - time.monotonic()
        if wait > 0:
            ctx.record(
                "decision", action="backoff", task=task.id, attempt=attempt, seconds=round(wait, 3)
            )
            await asyncio.sleep(wait)
        base = self.queue.expected_head or await ctx.blocking(ctx.target_head)
        branch_intent = ctx.intent("workspace", task=task.id, attempt=attempt, base=base)
        crashpoint("after-intent:workspace")
        try:
            ws: Workspace = await ctx.blocking(
                create_workspace,
                ctx.repo,
                ctx.run_id,
                task.id,
                attempt,
                base,
                link_dirs=ctx.options.link_dirs,
                setup=ctx.options.setup,
                setup_env=ctx.env(task, attempt),
                sparse=sparse_for(task, ctx.options.sparse),
                adopt=False,  # a new attempt number: an existing branch is someone else's
            )
        except Exception as error:
            ctx.journal.fail(branch_intent, str(error))
            return AttemptEnd(False, True, f"workspace setup failed: {error}")
        ctx.journal.done(branch_intent, path=str(ws.path), branch=ws.branch)
        try:
            return await self._in_workspace(task, attempt, ws, folder, route)
        finally:
            ctx.slots.pop(task.id, None)

    async def _in_workspace(
        self, task: Task, attempt: int, ws: Workspace, folder: Path, route: Route
    ) -> AttemptEnd:
        ctx = self.ctx
        agent_name = route.agent
        adapter = get_adapter(agent_name, ctx.options.agent_settings.get(agent_name))
        gates = self.attempt_gates(task)
        text = prompting.build_prompt(
            task,
            attempt=attempt,
            gates=[name for name, _ in gates],
            context=self.context,
            failure=self.failures.get(task.id),
        )
        prompt_file = folder / "prompt.md"
        prompt_file.write_text(text)
        env = ctx.env(task, attempt, ws, prompt_file)
        if route.model:
            env["STRETTO_MODEL"] = route.model
        actx = AttemptContext(
            task=task,
            attempt=attempt,
            run_id=ctx.run_id,
            workspace=ws.path,
            prompt=text,
            prompt_file=prompt_file,
            log_dir=folder,
            env=env,
            model=route.model,
            timeout=task.timeout or ctx.options.agent_timeout,
            settings=ctx.options.agent_settings.get(agent_name, {}),
        )
        launch = adapter.build(actx)
        events: list[AgentEvent] = []

        def on_line(line: str, stream: str) -> None:
            events.extend(adapter.parse_line(line, stream))

        def on_start(pid: int) -> None:
            write_pid_file(folder / "pid.json", pid, ctx.run_id)
            ctx.record(
                "attempt_started",
                task=task.id,
                attempt=attempt,
                agent=agent_name,
                model=route.model,
                tier=route.tier,
                workspace=str(ws.path),
                branch=ws.branch,
                base=ws.base,
                pid=pid,
            )
            crashpoint("after-spawn")

        stop = self.stop_reason()
        if stop is not None:
            self.stopping[task.id] = stop  # stopped while its worktree was being made
            return AttemptEnd(False, False, f"stopped: {stop}")
        spawn = ctx.intent("spawn", task=task.id, attempt=attempt, agent=agent_name)
        crashpoint("after-intent:spawn")
        self.in_agent.add(task.id)
        try:
            finished = await run_process(
                list(launch.argv),
                cwd=launch.cwd,
                env=launch.env,
                log_path=folder / "agent.log",
                timeout=actx.timeout,
                stdin=launch.stdin,
                on_line=on_line,
                on_start=on_start,
                secrets=secret_values(launch.env),
            )
        except asyncio.CancelledError:
            if task.id in self.stopping:  # stopped (budget, cancel): what it used is still spent
                result = adapter.decide(None, False, events)
                self.dispatch.book(task, attempt, route, result.usage, result.cost_usd, "stopped")
                await asyncio.shield(self._keep_partial(ws, agent_name, task.id, attempt))
            raise
        finally:
            self.in_agent.discard(task.id)
        self.agent_seconds += finished.duration
        result = adapter.decide(finished.exit_code, finished.timed_out, events)
        entry = self.dispatch.book(
            task, attempt, route, result.usage, result.cost_usd, result.outcome.value
        )
        self.cost_of[task.id] = entry.cost_usd
        self.on_spent()  # the budget may stop others now, not after this attempt's gates
        ctx.journal.done(spawn, exit_code=finished.exit_code)
        crashpoint("after-agent")
        tampered = await self._guard_target(ws, task.id, attempt)
        if tampered is not None:
            return AttemptEnd(False, True, tampered, log_tail(folder / "agent.log"))
        head = await ctx.blocking(
            commit_all, ws, f"stretto: work of {agent_name} on {task.id} (attempt {attempt})"
        )
        ctx.record(
            "attempt_finished",
            task=task.id,
            attempt=attempt,
            outcome=result.outcome.value,
            exit_code=finished.exit_code,
            reason=result.reason,
            duration=round(finished.duration, 3),
            usage=dict(result.usage),
            cost_usd=entry.cost_usd,
            cost_source=entry.source,
            reported_cost_usd=result.cost_usd,
            ledger=entry.to_dict(),
            head=head,
        )
        agent_tail = log_tail(folder / "agent.log")
        if result.outcome is not Outcome.SUCCESS:
            counts = result.outcome.counts_as_failure
            if not counts:
                # Not the task's fault, but a task that is refused forever must end sometime.
                self.uncounted[task.id] = self.uncounted.get(task.id, 0) + 1
                counts = self.uncounted[task.id] > MAX_UNCOUNTED
            return AttemptEnd(
                False,
                counts,
                f"agent {agent_name}: {result.outcome.value}"
                + (f" ({result.reason})" if result.reason else ""),
                agent_tail,
                retry_after=result.retry_after,
                rate_limited=result.outcome is Outcome.RATE_LIMITED,
                out_of_credit=(
                    result.reason or "out of credit"
                    if result.outcome is Outcome.OUT_OF_CREDIT
                    else None
                ),
            )
        if head == ws.base:
            return AttemptEnd(False, True, "the agent made no changes", agent_tail)
        changed = await ctx.blocking(changed_files, ws)
        inp = GateInput(ws.path, task, changed, folder / "gates", env)
        verdicts = await ctx.gated(task.id, attempt, "attempt", head, gates, inp)
        failed = [v for v in verdicts if not v.passed]
        if failed:
            return AttemptEnd(
                False,
                True,
                "gates failed: " + "; ".join(f"{v.gate}: {v.summary}" for v in failed),
                "\n".join(log_tail(v.log, 1500) for v in failed if v.log),
            )
        tree = merging.tree_of(ctx.repo, head) or ""
        ctx.record("verified", task=task.id, attempt=attempt, commit=head, tree=tree)
        crashpoint("after-verified")
        end = await self.queue.land(task, attempt, head, tree, env, ws.base)
        if end.landed:
            # Off the critical path: dependents need not wait for the worktree to go.
            self.cleanups.append(
                asyncio.create_task(
                    ctx.housekeeping(self._cleanup(ws, head), task.id, "removing the worktree")
                )
            )
        return end

    async def _guard_target(self, ws: Workspace, task: str, attempt: int) -> str | None:
        """Undo an agent that moved the target branch itself (``git update-ref``, a push to
        the main checkout): only the merge queue may move it, to a tree that passed the gates.
        A target moved by someone else (a person's commit) is left for the queue to build on."""
        ctx = self.ctx
        ref = f"refs/heads/{ctx.options.target}"
        # No lock: a landing of the queue is a merge commit, never an ancestor of this
        # attempt's HEAD, so it cannot be mistaken for the agent's move.
        expected = self.queue.expected_head or ws.base
        head = await ctx.blocking(ctx.target_head)
        if head == expected:
            return None
        mine = await ctx.blocking(rev_parse, ws.path, "HEAD")
        if mine is None or not await ctx.blocking(is_ancestor, ctx.repo, head, mine):
            return None
        if await ctx.blocking(is_ancestor, ctx.repo, head, expected):
            return None  # an older commit of the target: the agent's work starts there
        back = await ctx.blocking(
            update_ref_cas, ctx.repo, ref, expected, head, f"stretto: undo {task}'s move"
        )
        ctx.record(
            "target_restored",
            task=task,
            attempt=attempt,
            moved_to=head,
            restored_to=expected if back else None,
        )
        what = "put it back" if back else f"could not put it back (it is at {head[:12]})"
        return (
            f"the agent moved the target branch '{ctx.options.target}' to its own commit "
            f"{head[:12]}; only verified work may land there, so stretto {what}"
        )

    async def _keep_partial(self, ws: Workspace, agent: str, task: str, attempt: int) -> None:
        """A stopped agent's unfinished work is committed on its branch, for the person to see
        (``git log <branch>``); resume starts the task afresh from the target."""
        try:
            head = await self.ctx.blocking(
                commit_all, ws, f"stretto: unfinished work of {agent} on {task} (stopped)"
            )
        except Exception:  # the work tree may be half-written; the branch is still there
            return
        if head != ws.base:
            self.ctx.record(
                "partial_kept", task=task, attempt=attempt, branch=ws.branch, commit=head
            )

    async def land_only(self, task: Task, attempt: int, commit: str, tree: str) -> AttemptEnd:
        """Resume: land an attempt that was verified before the crash."""
        ctx = self.ctx
        env = ctx.env(task, attempt)
        base = next(  # where the attempt started, from its journaled workspace intent
            (
                str(r.fields["base"])
                for r in ctx.journal.history
                if r.type == "workspace"
                and r.kind == "intent"
                and r.fields.get("task") == task.id
                and r.fields.get("attempt") == attempt
                and r.fields.get("base")
            ),
            None,
        )
        end = await self.queue.land(task, attempt, commit, tree, env, base)
        if end.landed:
            path = worktrees_root(ctx.repo) / f"{ctx.run_id}-{task.id}-{attempt}"
            ws = Workspace(
                path,
                branch_name(ctx.run_id, task.id, attempt),
                commit,
                ctx.run_id,
                task.id,
                attempt,
            )
            await ctx.housekeeping(self._cleanup(ws, commit), task.id, "removing the worktree")
        return end

    async def _cleanup(self, ws: Workspace, head: str) -> None:
        ctx = self.ctx
        intent = ctx.intent("cleanup", task=ws.task_id, attempt=ws.attempt, branch=ws.branch)
        await ctx.blocking(remove_workspace, ctx.repo, ws, delete_branch=True, expected_sha=head)
        ctx.journal.done(intent)

    def attempt_gates(self, task: Task) -> list[tuple[str, Gate]]:
        """The gates an attempt must pass in its own worktree, in order."""
        gates: list[tuple[str, Gate]] = [
            ("scope", scope_gate(self.ctx.options.scope)),
            ("no_deleted_tests", no_deleted_tests),
        ]
        if task.outputs:
            gates.insert(0, ("files_exist", files_exist))
        for gate in self.ctx.options.gates:
            if gate.when in ("attempt", "both"):
                gates.append((gate.name, command_gate(gate.name, gate.command, gate.timeout)))
        for index, command in enumerate(task.gates, 1):
            name = f"step-{index}"
            gates.append((name, command_gate(name, command)))
        return gates
