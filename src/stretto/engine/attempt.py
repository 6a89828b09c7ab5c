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
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from stretto.agents import (
    AgentEvent,
    AttemptContext,
    Outcome,
    delay_in_text,
    get_adapter,
    provider_of,
    used_model,
)
from stretto.engine import git_guard
from stretto.engine import merge as merging
from stretto.engine import prompt as prompting
from stretto.engine.backend import Backend, LocalBackend
from stretto.engine.context import RunContext
from stretto.engine.gates import (
    Gate,
    GateInput,
    attempt_gates,
)
from stretto.engine.journal import crashpoint
from stretto.engine.merge_queue import MergeQueue
from stretto.engine.meter import AttemptMeter
from stretto.engine.outcomes import AttemptEnd, log_tail
from stretto.engine.sparse import enable_worktree_config, sparse_for
from stretto.engine.workspace import (
    Workspace,
    branch_name,
    changed_files,
    clear_stale_locks,
    commit_all,
    create_workspace,
    remove_workspace,
    worktrees_root,
)
from stretto.errors import RepoError
from stretto.files import full_disk, storage_fault
from stretto.git import is_ancestor, rev_parse, update_ref_cas
from stretto.localmodels import is_local_provider
from stretto.plans.plan import Task
from stretto.process import run_process, secret_values, write_pid_file
from stretto.routing.dispatch import Dispatch, Route, adapter_kind
from stretto.routing.prices import Tokens, ceiling_price, price_tokens


class Attempts:
    """The attempts of one run: running them, and what the runner needs to know about them.

    Args:
        ctx: the run's shared services.
        dispatch: routing, budget and cost bookkeeping (books each agent's usage).
        queue: the merge queue verified commits go to.
        context: the plan's context files, read once (pasted into every prompt).
        stop_reason: why the named agent may not start now (the budget), or None.
        on_spent: called after an agent's cost is booked (the runner checks the budget).
        on_landing: called when a verified attempt joins the merge queue (its agent slot is
            free from then on: the runner may start another agent).
    """

    def __init__(
        self,
        ctx: RunContext,
        dispatch: Dispatch,
        queue: MergeQueue,
        context: Sequence[tuple[str, str]],
        *,
        stop_reason: Callable[[str], str | None],
        on_spent: Callable[[], None],
        on_landing: Callable[[], None] = lambda: None,
    ) -> None:
        self.ctx = ctx
        self.dispatch = dispatch
        self.queue = queue
        self.context = context
        self.stop_reason = stop_reason
        self.on_spent = on_spent
        self.on_landing = on_landing
        # Verified attempts waiting in the merge queue: their tasks hold their file leases
        # until they land, but no agent runs for them, so they take no agent slot.
        self.landing: set[str] = set()
        self.in_agent: set[str] = set()  # tasks whose agent process is running
        self.stopping: dict[str, str] = {}  # task -> why its attempt is being stopped
        self.failures: dict[str, prompting.Failure] = {}  # task -> its last failure (prompt)
        self.not_before: dict[str, float] = {}  # task -> monotonic time before which not to start
        self.uncounted: dict[str, int] = {}  # task -> failures that were not its fault
        self.cost_of: dict[str, float | None] = {}  # task -> cost of its last finished agent
        self.cleanups: list[asyncio.Task[None]] = []
        self.agent_seconds = 0.0
        self.git_dir = git_guard.common_dir(ctx.repo)
        if ctx.options.sparse is not None:
            # Before the snapshot: git would write it into .git/config at the first sparse
            # worktree, while other agents run, and the guard would blame one of them.
            enable_worktree_config(ctx.repo)
        self.git_files = git_guard.snapshot(self.git_dir)  # hooks and config at the start
        self.running_since: dict[str, int] = {}  # task -> when its agent started (ns)
        self.suspected: dict[str, str] = {}  # task -> why: git files changed while it ran
        self.backend: Backend = LocalBackend()  # the runner sets the run's own

    async def run(self, task: Task, attempt: int, route: Route) -> AttemptEnd:
        """Run one attempt of ``task`` on ``route`` to its end (landed, or why not), on the
        run's backend (here, or a cluster's worker: :mod:`stretto.engine.backend`)."""
        return await self.backend.run(self, task, attempt, route)

    async def run_here(self, task: Task, attempt: int, route: Route) -> AttemptEnd:
        """The local backend: a worktree of the repository, the agent as a child process."""
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
            if storage_fault(error) is not None:
                raise  # not the task's fault: the run stops and resume makes it again
            ctx.journal.fail(branch_intent, str(error))
            return AttemptEnd(False, True, f"workspace setup failed: {error}")
        ctx.journal.done(branch_intent, path=str(ws.path), branch=ws.branch)
        try:
            return await self._in_workspace(task, attempt, ws, folder, route)
        finally:
            ctx.slots.pop(task.id, None)
            self.queue.at_work.pop(task.id, None)
            self.queue.moved_by.pop(task.id, None)

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
        provider = provider_of(agent_name, ctx.options.agent_settings)

        def price(tokens: Tokens) -> float | None:
            model = used_model(events, launch, route.model)
            known = price_tokens(model, tokens, prices=self.dispatch.prices)
            return known if known is not None else ceiling_price(tokens, provider)

        meter = AttemptMeter(
            ctx.options.limits,
            adapter_kind(agent_name, ctx.options),
            price,
            free=is_local_provider(provider),  # a local model server: no max_cost
        )

        def on_line(line: str, stream: str) -> None:
            parsed = adapter.parse_line(line, stream)
            events.extend(parsed)
            meter.add(parsed)

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

        stop = self.stop_reason(agent_name)
        if stop is not None:
            self.stopping[task.id] = stop  # stopped while its worktree was being made
            return AttemptEnd(False, False, f"stopped: {stop}")
        spawn = ctx.intent("spawn", task=task.id, attempt=attempt, agent=agent_name)
        crashpoint("after-intent:spawn")
        self.in_agent.add(task.id)
        self.queue.at_work[task.id] = (attempt, ws.path, ws.base)  # see _guard_target
        started_ns = self.running_since[task.id] = time.time_ns()
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
                sandbox=ctx.sandbox,
                stop=meter.over if meter.active else None,
            )
        except asyncio.CancelledError:
            if task.id in self.stopping:  # stopped (budget, cancel): what it used is still spent
                result = adapter.decide(None, False, events)
                model = used_model(events, launch, route.model)
                self.dispatch.book(
                    task,
                    attempt,
                    route,
                    result.usage,
                    result.cost_usd,
                    "stopped",
                    model=model,
                    seconds=(time.time_ns() - started_ns) / 1e9,
                )
                await asyncio.shield(self._keep_partial(ws, agent_name, task.id, attempt))
            raise
        finally:
            self.in_agent.discard(task.id)
            self.running_since.pop(task.id, None)
        self.agent_seconds += finished.duration
        result = adapter.decide(finished.exit_code, finished.timed_out, events)
        if finished.stopped is not None:  # stretto stopped it at a limit: that is the outcome
            result = dataclasses.replace(
                result, outcome=Outcome.OVER_LIMIT, reason=f"stopped: {finished.stopped}"
            )
        model = used_model(events, launch, route.model)
        turns = sum(1 for event in events if event.kind == "tool") or None
        entry = self.dispatch.book(
            task,
            attempt,
            route,
            result.usage,
            result.cost_usd,
            result.outcome.value,
            model=model,
            turns=turns,
            seconds=finished.duration,
        )
        self.cost_of[task.id] = entry.cost_usd
        self.on_spent()  # the budget may stop others now, not after this attempt's gates
        ctx.journal.done(spawn, exit_code=finished.exit_code)
        crashpoint("after-agent")
        tampered = await self._guard_git_files(task.id, attempt, folder, started_ns)
        if tampered is None:
            tampered = await self._guard_target(ws, task.id, attempt)
        if tampered is not None:
            return AttemptEnd(False, True, tampered, log_tail(folder / "agent.log"))
        stale = await ctx.blocking(clear_stale_locks, ws)
        if stale:
            ctx.record(
                "warning",
                task=task.id,
                message=f"removed lock files the agent left behind: {', '.join(stale)}",
            )
        try:
            head = await ctx.blocking(
                commit_all, ws, f"stretto: work of {agent_name} on {task.id} (attempt {attempt})"
            )
        except RepoError as error:  # left on another branch, a detached HEAD, a broken index
            return AttemptEnd(
                False,
                True,
                f"the agent left its worktree in a state stretto cannot commit: {error.message}",
                log_tail(folder / "agent.log"),
            )
        rewritten = head != ws.base and not await ctx.blocking(is_ancestor, ctx.repo, ws.base, head)
        ctx.record(
            "attempt_finished",
            task=task.id,
            attempt=attempt,
            outcome=result.outcome.value,
            model=model,
            exit_code=finished.exit_code,
            reason=result.reason,
            duration=round(finished.duration, 3),
            usage=dict(result.usage),
            turns=turns,
            cost_usd=entry.cost_usd,
            cost_source=entry.source,
            reported_cost_usd=result.cost_usd,
            ledger=entry.to_dict(),
            head=head,
        )
        agent_tail = log_tail(folder / "agent.log")
        if result.outcome is not Outcome.SUCCESS:
            self._check_disk(ws)
            counts = result.outcome.counts_as_failure
            if not counts:
                # Not the task's fault, but a task that is refused forever must end sometime.
                self.uncounted[task.id] = self.uncounted.get(task.id, 0) + 1
                counts = self.uncounted[task.id] > ctx.options.limits.max_rate_limited
            retry_after = result.retry_after
            if retry_after is None and result.outcome is Outcome.RATE_LIMITED:
                retry_after = delay_in_text(result.reason)  # "Please try again in 3s"
            return AttemptEnd(
                False,
                counts,
                f"agent {agent_name}: {result.outcome.value}"
                + (f" ({result.reason})" if result.reason else ""),
                agent_tail,
                retry_after=retry_after,
                rate_limited=result.outcome is Outcome.RATE_LIMITED,
                out_of_credit=(
                    result.reason or "out of credit"
                    if result.outcome is Outcome.OUT_OF_CREDIT
                    else None
                ),
            )
        if head == ws.base:
            return AttemptEnd(False, True, "the agent made no changes", agent_tail)
        if rewritten:
            return AttemptEnd(
                False,
                True,
                f"the agent rewrote its branch's history: it no longer contains its base commit "
                f"{ws.base[:12]} (a reset, rebase or new root past the base); work must be "
                "new commits on top of the base",
                agent_tail,
            )
        changed = await ctx.blocking(changed_files, ws)
        inp = GateInput(ws.path, task, changed, folder / "gates", env, ctx.sandbox)
        verdicts = await ctx.gated(task.id, attempt, "attempt", head, gates, inp)
        failed = [v for v in verdicts if not v.passed]
        if failed:
            self._check_disk(ws)
            return AttemptEnd(
                False,
                True,
                "gates failed: " + "; ".join(f"{v.gate}: {v.summary}" for v in failed),
                "\n".join(log_tail(v.log, 1500) for v in failed if v.log),
            )
        tree = merging.tree_of(ctx.repo, head) or ""
        ctx.record("verified", task=task.id, attempt=attempt, commit=head, tree=tree)
        crashpoint("after-verified")
        end = await self.land(task, attempt, head, tree, env, ws.base)
        if end.landed:
            # Off the critical path: dependents need not wait for the worktree to go.
            self.cleanups.append(
                asyncio.create_task(
                    ctx.housekeeping(self._cleanup(ws, head), task.id, "removing the worktree")
                )
            )
        return end

    def _check_disk(self, ws: Workspace) -> None:
        """An agent or gate that failed on a full (or read-only) disk says nothing about the
        work: raise the StorageError that stops the run (resume retries it, uncounted)."""
        full = full_disk(ws.path, self.ctx.run_dir)
        if full is not None:
            raise full

    async def _guard_git_files(
        self, task: str, attempt: int, folder: Path, started: int
    ) -> str | None:
        """Put back ``.git/config`` and ``.git/hooks`` if they changed while agents ran (they
        run code the next time anyone runs git); see :mod:`stretto.engine.git_guard`.

        The files are shared by every attempt, so who changed them is judged by when: every
        attempt whose agent was running at the time of the change fails (with agents running
        side by side, stretto cannot tell which one it was), and is retried as usual.
        """
        if task in self.suspected:
            return self.suspected.pop(task)
        keep = folder / "tampered"
        changed, when = await self.ctx.blocking(
            git_guard.restore, self.git_dir, self.git_files, keep
        )
        if not changed:
            return None
        listed = ", ".join(f".git/{name}" for name in changed[:5])
        reason = (
            f"the repository's git files ({listed}), which run code the next time git runs, "
            f"changed while this agent ran; stretto put them back (what was written is in {keep})"
        )
        others = sorted(t for t, since in self.running_since.items() if since <= when)
        self.ctx.record(
            "git_files_restored", task=task, attempt=attempt, files=changed, also_running=others
        )
        for other in others:
            self.suspected[other] = reason
        return reason if started <= when or not others else None

    async def _guard_target(self, ws: Workspace, task: str, attempt: int) -> str | None:
        """Undo an agent that moved the target branch itself (``git update-ref``, a ref file
        written by hand, a push to the main checkout): only the merge queue may move it, and
        only forward, to a tree that passed the gates.

        Put back: a target that now points at a commit of the agent's own branch, and a target
        that no longer contains the commit it was at (rewound or replaced): the target only
        ever moves forward. Left for the queue to build on: a target moved forward to commits
        the agent's branch does not contain (a person's commit; an agent's commit made with
        ``git commit-tree`` looks the same, which only the sandbox prevents).
        """
        ctx = self.ctx
        ref = f"refs/heads/{ctx.options.target}"
        self.queue.at_work.pop(task, None)
        moved = self.queue.moved_by.pop(task, None)
        if moved is not None:  # the merge queue caught the move first and undid it
            return (
                f"the agent moved the target branch '{ctx.options.target}' to its own commit "
                f"{moved[:12]}; only verified work may land there, so stretto put it back"
            )
        # No lock: a landing of the queue moves the target forward, to a merge commit that is
        # never an ancestor of this attempt's HEAD, so it cannot be mistaken for the agent's.
        expected = self.queue.expected_head or ws.base
        head = await ctx.blocking(ctx.target_head)
        if head == expected:
            return None
        if await ctx.blocking(is_ancestor, ctx.repo, expected, head):
            mine = await ctx.blocking(rev_parse, ws.path, "HEAD")
            if mine is None or not await ctx.blocking(is_ancestor, ctx.repo, head, mine):
                return None
            what = f"to its own commit {head[:12]}"
        else:
            now = self.queue.expected_head  # a landing that failed its compare-and-swap
            if now is None and await ctx.blocking(is_ancestor, ctx.repo, ws.base, head):
                return None
            what = f"back or away to {head[:12]}, which does not contain {expected[:12]}"
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
        done = "put it back" if back else f"could not put it back (it is at {head[:12]})"
        return (
            f"the agent moved the target branch '{ctx.options.target}' {what}; only verified "
            f"work may land there, and only forward, so stretto {done}"
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

    async def land(
        self, task: Task, attempt: int, head: str, tree: str, env: dict[str, str], base: str | None
    ) -> AttemptEnd:
        """Hand a verified commit to the merge queue and wait for its verdict; meanwhile the
        task is in :attr:`landing` (it frees its agent slot, keeps its lease)."""
        self.landing.add(task.id)
        self.on_landing()
        try:
            return await self.queue.land(task, attempt, head, tree, env, base)
        finally:
            self.landing.discard(task.id)

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
        end = await self.land(task, attempt, commit, tree, env, base)
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
        configured = [(g.name, g.command, g.timeout, g.when) for g in self.ctx.options.gates]
        return attempt_gates(task, self.ctx.options.scope, configured)
