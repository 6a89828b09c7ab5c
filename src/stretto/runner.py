"""The runner: the one event loop that carries out the scheduler's actions and records events.

For each :class:`~stretto.scheduler.Spawn` it runs an attempt as a coroutine: worktree, prompt,
agent process, commit, gates, then the merge queue (one landing at a time). Every step writes
to the journal first (an *intent* before each effect, fsynced), so ``stretto resume`` can finish
the run after a crash at any point (see :mod:`stretto.resume`). Events go to the journal and
to a sink (the terminal view, ``--json`` output) in the same form.

This is the only module with concurrency. Blocking git calls run in a thread pool sized for the
number of agents, so the loop stays responsive.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stretto import merge as merging
from stretto import prompt as prompting
from stretto.agents import AgentEvent, AttemptContext, Outcome, get_adapter
from stretto.dispatch import Dispatch, Route
from stretto.git import rev_parse
from stretto.graph import TaskGraph
from stretto.journal import Journal, Record, crashpoint
from stretto.merge_queue import MergeQueue
from stretto.plan import Plan, Task
from stretto.process import TOKEN_VAR, allowed_env, run_process, write_pid_file
from stretto.providers import ProviderLimits
from stretto.runtypes import AttemptEnd, RunOptions, RunSummary, TaskReport, log_tail
from stretto.scheduler import Capacity, GiveUp, Schedule, Skip, Spawn, Wait
from stretto.splits import Splits
from stretto.verify import (
    Gate,
    GateInput,
    Verdict,
    command_gate,
    files_exist,
    no_deleted_tests,
    run_gates,
    scope_gate,
)
from stretto.workspace import (
    Workspace,
    changed_files,
    commit_all,
    create_workspace,
    port_base,
    remove_workspace,
    worktrees_root,
)

Sink = Callable[[Record], None]
MAX_UNCOUNTED = 10  # rate-limited attempts of one task before they start to count as failures
MAX_BACKOFF = 600.0  # never wait longer than this for a provider's retry-after


class Runner:
    """Drives one run to its end; see the module docstring."""

    def __init__(
        self,
        repo: Path,
        plan: Plan,
        options: RunOptions,
        journal: Journal,
        run_id: str,
        *,
        sink: Sink | None = None,
    ) -> None:
        self.repo = repo
        self.plan = plan
        self.options = options
        self.journal = journal
        self.run_id = run_id
        self.run_dir = journal.run_dir
        self.sink = sink
        self.graph = TaskGraph.from_plan(plan)
        self.dispatch = Dispatch(repo, run_id, options)
        self.providers = ProviderLimits(plan, options, self.dispatch.routes)
        self.schedule = Schedule(
            self.graph,
            {t.id: t.lease for t in plan.tasks},
            pools=self.providers.pools(),
            max_attempts={t.id: t.max_attempts for t in plan.tasks},
        )
        self.budget_stop: str | None = None  # why no new attempt may start
        self.held: set[str] = set()  # tasks that could start now, but only on such a provider
        self.in_agent: set[str] = set()  # tasks whose agent process is running
        self.stopping: set[str] = set()  # tasks whose attempt was stopped at the budget
        self.active: dict[str, asyncio.Task[None]] = {}
        self.ended: asyncio.Queue[tuple[str, AttemptEnd]] = asyncio.Queue()
        self.failures: dict[str, prompting.Failure] = {}
        self.reports: dict[str, TaskReport] = {}
        self.waiting: dict[str, tuple[str, ...]] = {}
        self.slots: dict[str, int] = {}
        self.agent_seconds = 0.0
        self.notes: list[str] = []
        self.pool = ThreadPoolExecutor(max_workers=max(8, options.max_agents * 2))
        self.context = prompting.read_context(repo, plan.context_files)
        self.queue = MergeQueue(self)
        self.resumed_merges: dict[str, tuple[int, str, str]] = {}  # task -> attempt, commit, tree
        self.cleanups: list[asyncio.Task[None]] = []
        self.not_before: dict[str, float] = {}  # task -> monotonic time before which not to start
        self.uncounted: dict[str, int] = {}  # task -> failures that were not its fault
        self.cost_of: dict[str, float | None] = {}  # task -> cost of its last finished agent
        self.planner_calls = 0  # model calls stretto itself made in this run
        self.splits = Splits(self)

    # ------------------------------------------------------------------ plumbing

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
        """Run a blocking call (git) in the pool."""
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

    # ------------------------------------------------------------------ main loop

    async def run(self) -> RunSummary:
        """Run every task to an end: landed, failed or skipped."""
        started = time.monotonic()
        if self.queue.synced_at is None:
            self.queue.synced_at = await self.blocking(self.target_head)
        try:
            await self._loop()
            await asyncio.gather(*self.cleanups)
            await self.queue.finish()
        finally:
            for job in self.active.values():
                job.cancel()
            if self.active:
                await asyncio.gather(*self.active.values(), return_exceptions=True)
            self.pool.shutdown(wait=False)
        wall = time.monotonic() - started
        tasks = [
            self.reports.get(t.id) or TaskReport(t.id, self.schedule.state[t.id].value, 0)
            for t in self.plan.tasks
        ]  # split tasks, then the tasks that replaced them
        failed = any(t.status not in ("landed", "split") for t in tasks)
        status = "failed" if failed else "finished"
        if self.budget_stop is not None and failed:
            status = "budget_reached"
            how = f"stretto resume {self.run_id} --budget USD"
            if "daily" in self.budget_stop:
                how = f"raise [budget] daily in stretto.toml, then stretto resume {self.run_id}"
            self.notes.append(f"{self.budget_stop}; to go on: {how}")
        elif self.providers.no_credit and failed:
            status = "out_of_credit"
            self.notes.append(
                f"{self.providers.credit_stop()}; top up the account (or wait for its quota to "
                f"reset), then `stretto resume {self.run_id}`"
            )
        if self.dispatch.unpriced:
            self.notes.append(
                f"{self.dispatch.unpriced} attempt(s) used a model with no known price; "
                "their cost is not counted (`stretto cost` lists them)"
            )
        if self.queue.stale_checkout:
            self.notes.append(
                merging.catch_up_hint(self.options.target, *self.queue.stale_checkout)
            )
        head = rev_parse(self.repo, f"refs/heads/{self.options.target}")
        self.record(
            "run_finished",
            status=status,
            landed=sum(1 for t in tasks if t.status == "landed"),
            split=sum(1 for t in tasks if t.status == "split"),
            planner_calls=self.planner_calls,
            failed=sum(1 for t in tasks if t.status == "failed"),
            skipped=sum(1 for t in tasks if t.status == "skipped"),
            wall=round(wall, 3),
            agent_seconds=round(self.agent_seconds, 3),
            head=head,
            notes=self.notes,
            cost_usd=round(self.dispatch.run_spent, 6),
            unpriced=self.dispatch.unpriced,
            budget=self.options.budget,
        )
        self.journal.sync()
        return RunSummary(
            self.run_id,
            status,
            tasks,
            wall,
            self.agent_seconds,
            self.options.target,
            head,
            self.notes,
            self.dispatch.run_spent,
            self.dispatch.unpriced,
            self.options.budget,
        )

    async def _loop(self) -> None:
        sched = self.schedule
        for task, (attempt, commit, tree) in self.resumed_merges.items():
            sched.started(task)  # back into the merge queue: the attempt already ran
            sched.attempts[task] = attempt
            self.active[task] = asyncio.create_task(
                self.guard(task, self._land_only(task, attempt, commit, tree))
            )
        while not sched.done:
            self.held.clear()
            in_use = self.providers.in_use(self.active)
            free = Capacity(self.options.max_agents - len(self.active), self.providers.free(in_use))
            actions = sched.decide(free)
            for action in actions:
                if isinstance(action, Spawn):
                    if self.budget_stop is None:
                        self._route_and_spawn(action, in_use)
                elif isinstance(action, Wait):
                    self._note_wait(action)
                elif isinstance(action, GiveUp) and self.splits.allowed(action.task):
                    self.splits.start(action.task)
                elif isinstance(action, GiveUp):
                    self.credit_failed(action.task)
                    reason = self.failures.get(action.task)
                    why = f"gave up after {action.failures} failed attempts"
                    if reason:
                        why += f"; last: {reason.reason}"
                    self.finish(action.task, "failed", why)
                    sched.gave_up(action.task)
                elif isinstance(action, Skip):
                    self.finish(
                        action.task, "skipped", f"dependency '{action.because}' did not land"
                    )
                    sched.skipped(action.task)
            if sched.done:
                break
            if not self.active:
                if self.budget_stop is not None:
                    self._leave_undone(self.budget_stop, budget=True)
                    break
                if any(isinstance(a, GiveUp | Skip) for a in actions):
                    continue
                if self.held:
                    self._leave_undone(self.providers.credit_stop(), resumable=True)
                    break
                raise RuntimeError("scheduler stalled: nothing running and nothing can start")
            task, end = await self.ended.get()
            self.active.pop(task, None)
            if task in self.splits.running:
                self.splits.end(task, end)
                continue
            if end.out_of_credit is not None:
                self._out_of_credit(task, end.out_of_credit)
            change = self.providers.adjust(task, end, self.active)
            if change is not None:
                self.record("decision", **asdict(change), task=task)
            if end.counts or end.landed:
                await self._learn(task, end)
            if self.dispatch.exceeded() and self.budget_stop is None:
                self._stop_for_budget()
            if end.landed:
                self.finish(task, "landed", "", end.commit)
                sched.landed(task)
            elif task in self.stopping:
                sched.attempt_failed(task, counts=False)
            else:
                attempt = sched.attempts[task]
                self.failures[task] = prompting.Failure(attempt, end.reason, end.log)
                if end.counts:
                    self.splits.failure_log.setdefault(task, []).append(
                        f"attempt {attempt}: {end.reason}\n{end.log}"
                    )
                if end.retry_after:
                    self.not_before[task] = time.monotonic() + min(end.retry_after, MAX_BACKOFF)
                sched.attempt_failed(task, counts=end.counts)
                exhausted = sched.failures[task] >= sched.limit(task)
                self.record(
                    "decision",
                    action="give_up" if exhausted else "retry",
                    task=task,
                    attempt=attempt,
                    failures=sched.failures[task],
                    limit=sched.limit(task),
                    counted=end.counts,
                )
                strongest = end.counts and self.splits.at_strongest(task)
                if not exhausted and strongest and self.splits.allowed(task):
                    self.splits.start(task)  # no stronger arm is left to escalate to

    def _route_and_spawn(self, action: Spawn, in_use: dict[str, int]) -> None:
        """Choose the attempt's arm, check the budget, then start it (or stop for the budget)."""
        task = self.plan.task(action.task)
        attempt = self.schedule.attempts[action.task] + 1
        route = self.dispatch.route(task, attempt, self.providers.unavailable())
        broke = self.providers.broke(route.agent)
        if broke is not None:
            self.held.add(task.id)
            self._note_wait(Wait(task.id, "out_of_credit", pool=broke))
            return
        full = self.providers.admit(task.id, in_use)
        if full is not None:
            self._note_wait(Wait(task.id, "capacity", pool=full))
            return
        if self.dispatch.limited:
            check = self.dispatch.admit(route)
            if not check.allowed:
                self.budget_stop = check.reason
                self.record(
                    "decision",
                    action="stop_budget",
                    task=task.id,
                    attempt=attempt,
                    reason=check.reason,
                    estimate_usd=check.estimate,
                    left_usd=check.left,
                )
                return
            if check.estimate is None and check.reason:  # an unknown price: say so
                self.record("warning", task=task.id, message=check.reason)
        self.dispatch.reserve(task.id, route)
        self._spawn(action, route)

    def _spawn(self, action: Spawn, route: Route) -> None:
        attempt = self.schedule.started(action.task)
        self.waiting.pop(action.task, None)
        self.record(
            "decision",
            action="spawn",
            task=action.task,
            attempt=attempt,
            retry=action.retry,
            critical_minutes=action.critical,
            running=sorted(self.active),
        )
        self.record("route", task=action.task, attempt=attempt, **route.to_dict())
        self.active[action.task] = asyncio.create_task(
            self.guard(action.task, self._attempt(self.plan.task(action.task), attempt, route))
        )

    async def _learn(self, task: str, end: AttemptEnd) -> None:
        """The bandit learns from a judged attempt (landed, or a failure that counts)."""
        if task not in self.cost_of:
            return  # the agent never ran (e.g. the worktree could not be made): nothing to learn
        cost = self.cost_of.pop(task)
        try:
            learned = await self.blocking(self.dispatch.learn, task, end.landed, cost)
        except Exception as error:  # the policy is advice: a failure to save it stops nothing
            self.record("warning", task=task, message=f"router policy not updated: {error}")
            return
        for record in learned:
            self.record("learned", task=task, **record)

    def _stop_for_budget(self) -> None:
        """The budget is spent: start nothing new; with on_exceed = "stop", end running agents."""
        spent, budget = self.dispatch.run_spent, self.options.budget
        limit = f"${spent:.2f} of the ${budget:.2f} run budget" if budget is not None else ""
        if not limit:
            limit = f"${self.dispatch.day_spent:.2f} of the ${self.options.daily_cap:.2f} daily cap"
        self.budget_stop = f"budget reached: {limit} spent"
        self.record("decision", action="stop_budget", reason=self.budget_stop)
        if self.options.on_exceed == "stop":
            for task in sorted(self.in_agent):
                self.stopping.add(task)
                self.active[task].cancel()

    def _leave_undone(self, reason: str, **flag: bool) -> None:
        """The tasks that cannot start now (budget spent, provider out of credit), marked so
        that ``stretto resume`` takes them up again (``budget=True`` or ``resumable=True``)."""
        for task in self.plan.tasks:
            if not self.schedule.state[task.id].finished:
                self.reports[task.id] = TaskReport(
                    task.id, "skipped", self.schedule.attempts[task.id], reason
                )
                self.record(
                    "task_finished",
                    task=task.id,
                    status="skipped",
                    reason=reason,
                    attempts=self.schedule.attempts[task.id],
                    commit=None,
                    **flag,
                )

    def _out_of_credit(self, task: str, reason: str) -> None:
        """``task``'s provider said the account has no credit left: start nothing more there."""
        route = self.dispatch.routes.get(task)
        agent = route.agent if route is not None else self.options.default_agent
        key = self.providers.out_of_credit(agent, reason)
        if key is not None:
            self.record("decision", action="out_of_credit", provider=key, task=task, reason=reason)

    def _note_wait(self, action: Wait) -> None:
        key = action.holders or ((action.pool,) if action.pool else ())
        if self.waiting.get(action.task) == key:
            return
        self.waiting[action.task] = key
        self.record(
            "decision",
            action="wait",
            task=action.task,
            reason=action.reason,
            holders=list(action.holders),
            conflict=list(action.conflict) if action.conflict else None,
        )

    def finish(self, task: str, status: str, reason: str, commit: str | None = None) -> None:
        attempts = self.schedule.attempts[task]
        self.reports[task] = TaskReport(task, status, attempts, reason, commit)
        self.record(
            "task_finished",
            task=task,
            status=status,
            reason=reason,
            attempts=attempts,
            commit=commit,
        )

    async def guard(self, task: str, job: Any) -> None:
        try:
            end = await job
        except asyncio.CancelledError:
            if task not in self.stopping:
                raise
            end = AttemptEnd(False, False, f"stopped: {self.budget_stop}")
        except Exception as error:  # a bug or an environment problem: fail the attempt, loudly
            import traceback

            self.record(
                "internal_error",
                task=task,
                error=f"{type(error).__name__}: {error}",
                traceback=traceback.format_exc(limit=8),
            )
            end = AttemptEnd(False, True, f"internal error: {type(error).__name__}: {error}")
        await self.ended.put((task, end))

    def credit_failed(self, task: str) -> None:
        """A task ends without landing: its attempts teach the router that."""
        try:
            learned = self.dispatch.task_failed(task)
        except Exception as error:  # the policy is advice: a failure to save it stops nothing
            self.record("warning", task=task, message=f"router policy not updated: {error}")
            return
        for record in learned:
            self.record("learned", task=task, **record)

    # ------------------------------------------------------------------ one attempt

    def _slot(self, task: str) -> int:
        used = set(self.slots.values())
        slot = next(i for i in range(len(used) + 1) if i not in used)
        self.slots[task] = slot
        return slot

    async def _attempt(self, task: Task, attempt: int, route: Route) -> AttemptEnd:
        folder = self.attempt_dir(task.id, attempt)
        folder.mkdir(parents=True, exist_ok=True)
        wait = self.not_before.pop(task.id, 0.0) - time.monotonic()
        if wait > 0:
            self.record(
                "decision", action="backoff", task=task.id, attempt=attempt, seconds=round(wait, 3)
            )
            await asyncio.sleep(wait)
        base = self.queue.expected_head or await self.blocking(self.target_head)
        branch_intent = self.intent(
            "workspace",
            task=task.id,
            attempt=attempt,
            base=base,
        )
        crashpoint("after-intent:workspace")
        try:
            ws: Workspace = await self.blocking(
                create_workspace,
                self.repo,
                self.run_id,
                task.id,
                attempt,
                base,
                link_dirs=self.options.link_dirs,
                setup=self.options.setup,
                setup_env=self._env(task, attempt, None, None),
            )
        except Exception as error:
            self.journal.fail(branch_intent, str(error))
            return AttemptEnd(False, True, f"workspace setup failed: {error}")
        self.journal.done(branch_intent, path=str(ws.path), branch=ws.branch)
        try:
            return await self._in_workspace(task, attempt, ws, folder, route)
        finally:
            self.slots.pop(task.id, None)

    async def _in_workspace(
        self, task: Task, attempt: int, ws: Workspace, folder: Path, route: Route
    ) -> AttemptEnd:
        agent_name = route.agent
        adapter = get_adapter(agent_name, self.options.agent_settings.get(agent_name))
        gates = self._attempt_gates(task)
        failure = self.failures.get(task.id)
        text = prompting.build_prompt(
            task,
            attempt=attempt,
            gates=[name for name, _ in gates],
            context=self.context,
            failure=failure,
        )
        prompt_file = folder / "prompt.md"
        prompt_file.write_text(text)
        env = self._env(task, attempt, ws, prompt_file)
        if route.model:
            env["STRETTO_MODEL"] = route.model
        ctx = AttemptContext(
            task=task,
            attempt=attempt,
            run_id=self.run_id,
            workspace=ws.path,
            prompt=text,
            prompt_file=prompt_file,
            log_dir=folder,
            env=env,
            model=route.model,
            timeout=task.timeout or self.options.agent_timeout,
            settings=self.options.agent_settings.get(agent_name, {}),
        )
        launch = adapter.build(ctx)
        events: list[AgentEvent] = []

        def on_line(line: str, stream: str) -> None:
            events.extend(adapter.parse_line(line, stream))

        def on_start(pid: int) -> None:
            write_pid_file(folder / "pid.json", pid, self.run_id)
            self.record(
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

        if self.budget_stop is not None and self.options.on_exceed == "stop":
            self.stopping.add(task.id)  # the budget ran out while its worktree was being made
            return AttemptEnd(False, False, f"stopped: {self.budget_stop}")
        spawn = self.intent("spawn", task=task.id, attempt=attempt, agent=agent_name)
        crashpoint("after-intent:spawn")
        self.in_agent.add(task.id)
        try:
            finished = await run_process(
                list(launch.argv),
                cwd=launch.cwd,
                env=launch.env,
                log_path=folder / "agent.log",
                timeout=ctx.timeout,
                stdin=launch.stdin,
                on_line=on_line,
                on_start=on_start,
            )
        except asyncio.CancelledError:
            if task.id in self.stopping:  # stopped at the budget: what it used is still spent
                result = adapter.decide(None, False, events)
                self.dispatch.book(task, attempt, route, result.usage, result.cost_usd, "stopped")
            raise
        finally:
            self.in_agent.discard(task.id)
        self.agent_seconds += finished.duration
        result = adapter.decide(finished.exit_code, finished.timed_out, events)
        entry = self.dispatch.book(
            task, attempt, route, result.usage, result.cost_usd, result.outcome.value
        )
        self.cost_of[task.id] = entry.cost_usd
        if self.budget_stop is None and self.dispatch.exceeded():
            self._stop_for_budget()  # now, not after this attempt's gates and merge
        self.journal.done(spawn, exit_code=finished.exit_code)
        crashpoint("after-agent")
        head = await self.blocking(
            commit_all, ws, f"stretto: work of {agent_name} on {task.id} (attempt {attempt})"
        )
        self.record(
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
        changed = await self.blocking(changed_files, ws)
        inp = GateInput(ws.path, task, changed, folder / "gates", env)
        verdicts = await self._gated(task.id, attempt, "attempt", head, gates, inp)
        failed = [v for v in verdicts if not v.passed]
        if failed:
            return AttemptEnd(
                False,
                True,
                "gates failed: " + "; ".join(f"{v.gate}: {v.summary}" for v in failed),
                "\n".join(log_tail(v.log, 1500) for v in failed if v.log),
            )
        tree = merging.tree_of(self.repo, head) or ""
        self.record("verified", task=task.id, attempt=attempt, commit=head, tree=tree)
        crashpoint("after-verified")
        end = await self.queue.land(task, attempt, head, tree, env)
        if end.landed:
            # Off the critical path: dependents need not wait for the worktree to go.
            self.cleanups.append(
                asyncio.create_task(
                    self._after_landing(self._cleanup(ws, head), task.id, "removing the worktree")
                )
            )
        return end

    async def _land_only(self, task_id: str, attempt: int, commit: str, tree: str) -> AttemptEnd:
        """Resume: land an attempt that was verified before the crash."""
        task = self.plan.task(task_id)
        env = self._env(task, attempt, None, None)
        end = await self.queue.land(task, attempt, commit, tree, env)
        if end.landed:
            from stretto.workspace import branch_name

            path = worktrees_root(self.repo) / f"{self.run_id}-{task_id}-{attempt}"
            ws = Workspace(
                path,
                branch_name(self.run_id, task_id, attempt),
                commit,
                self.run_id,
                task_id,
                attempt,
            )
            await self._after_landing(self._cleanup(ws, commit), task_id, "removing the worktree")
        return end

    async def _cleanup(self, ws: Workspace, head: str) -> None:
        intent = self.intent("cleanup", task=ws.task_id, attempt=ws.attempt, branch=ws.branch)
        await self.blocking(remove_workspace, self.repo, ws, delete_branch=True, expected_sha=head)
        self.journal.done(intent)

    def agent_env(self, task: Task) -> dict[str, str]:
        """The environment agents get, for a call about ``task`` outside an attempt."""
        return self._env(task, 0, None, None)

    def _env(
        self, task: Task, attempt: int, ws: Workspace | None, prompt: Path | None
    ) -> dict[str, str]:
        env = allowed_env(os.environ, (*_default_allow(), *self.options.env_allow))
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
        if ws is not None:
            env["STRETTO_WORKSPACE"] = str(ws.path)
            env["STRETTO_PORT_BASE"] = str(port_base(self._slot(task.id)))
        if prompt is not None:
            env["STRETTO_PROMPT_FILE"] = str(prompt)
        return env

    # ------------------------------------------------------------------ gates

    def _attempt_gates(self, task: Task) -> list[tuple[str, Gate]]:
        gates: list[tuple[str, Gate]] = [
            ("scope", scope_gate(self.options.scope)),
            ("no_deleted_tests", no_deleted_tests),
        ]
        if task.outputs:
            gates.insert(0, ("files_exist", files_exist))
        for gate in self.options.gates:
            if gate.when in ("attempt", "both"):
                gates.append((gate.name, command_gate(gate.name, gate.command, gate.timeout)))
        for index, command in enumerate(task.gates, 1):
            name = f"step-{index}"
            gates.append((name, command_gate(name, command)))
        return gates

    async def _gated(
        self,
        task: str,
        attempt: int,
        stage: str,
        commit: str,
        gates: list[tuple[str, Gate]],
        inp: GateInput,
    ) -> list[Verdict]:
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

    async def _after_landing(self, job: Any, task: str, what: str) -> None:
        """Housekeeping after a landing: a failure is reported, never turned into a task failure."""
        try:
            await job
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.record(
                "warning", task=task, message=f"{what} failed: {type(error).__name__}: {error}"
            )


def _default_allow() -> tuple[str, ...]:
    from stretto.process import DEFAULT_ALLOW

    return DEFAULT_ALLOW
