"""The runner: the one event loop that carries out the scheduler's actions and records events.

It asks the pure :class:`~stretto.schedule.scheduler.Schedule` what to do, routes each spawn
(:class:`~stretto.routing.dispatch.Dispatch`), starts it as an attempt
(:class:`~stretto.engine.attempt.Attempts`: worktree, prompt, agent, commit, gates, merge
queue), and folds how each attempt ended back into the schedule: landed, retry, give up, split.
Between attempts it applies control commands from the run's inbox and stops cleanly on
SIGINT, SIGTERM and SIGHUP (:class:`~stretto.engine.steering.Steering`). Every step writes to
the journal first, so ``stretto resume`` can finish the run after a crash at any point.

This is the only module with concurrency. Blocking git calls run in the context's thread pool.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from stretto.engine import merge as merging
from stretto.engine import prompt as prompting
from stretto.engine.attempt import Attempts
from stretto.engine.context import RunContext, Sink
from stretto.engine.control import Inbox
from stretto.engine.journal import Journal, Record
from stretto.engine.merge_queue import MergeQueue
from stretto.engine.outcomes import AttemptEnd, RunSummary, TaskReport
from stretto.engine.providers import ProviderLimits
from stretto.engine.spending import Spending
from stretto.engine.splits import Splits, Splitting
from stretto.engine.steering import Steering
from stretto.engine.train import MergeTrain
from stretto.errors import StorageError
from stretto.files import full_disk, storage_fault
from stretto.git import rev_parse
from stretto.localmodels import offline_ok
from stretto.options import RunOptions
from stretto.plans.graph import TaskGraph
from stretto.plans.plan import Plan, Task
from stretto.routing.dispatch import Dispatch, Route
from stretto.schedule.backoff import MAX_STATED, rate_limit_wait
from stretto.schedule.scheduler import Capacity, GiveUp, Schedule, Skip, Spawn, Wait

__all__ = ["MAX_BACKOFF", "Runner", "Sink"]

MAX_BACKOFF = MAX_STATED  # never wait longer than this for a provider's retry-after


class Runner(Steering, Spending, Splitting):
    """Drives one run to its end; see the module docstring."""

    def __init__(
        self,
        repo: Any,
        plan: Plan,
        options: RunOptions,
        journal: Journal,
        run_id: str,
        *,
        sink: Sink | None = None,
    ) -> None:
        self.ctx = RunContext(repo, run_id, options, journal, sink=sink)
        self.repo = repo
        self.run_id = run_id
        self.journal = journal
        self.plan = plan
        self.graph = TaskGraph.from_plan(plan)
        self.dispatch = Dispatch(repo, run_id, options)
        self.providers = ProviderLimits(plan, options, self.dispatch.routes)
        self.schedule = Schedule(
            self.graph,
            {t.id: t.lease for t in plan.tasks},
            pools=self.providers.pools(),
            max_attempts={t.id: t.max_attempts for t in plan.tasks},
        )
        self.queue = (
            MergeTrain(self.ctx) if options.merge.strategy == "train" else MergeQueue(self.ctx)
        )
        refused: list[str] = []
        self.attempts = Attempts(
            self.ctx,
            self.dispatch,
            self.queue,
            prompting.read_context(repo, plan.context_files, refused),
            stop_reason=self._attempt_stop,
            on_spent=self._check_budget,
            on_landing=lambda: self.ended.put_nowait(None),  # a slot is free: decide again
        )
        if options.cluster:  # attempts on a Dask cluster's workers (imports Dask)
            from stretto.engine.remote_attempt import open_backend

            self.attempts.backend = open_backend(options.cluster, self._cluster_lost)
        self.splits = Splits(self.ctx, self.dispatch)
        self.inbox = Inbox(self.ctx.run_dir, journal.history)
        self.budget_stop: str | None = None  # why no new attempt may start
        self.paused = False  # a person paused the run: no new attempts start
        self.stop: tuple[str, str] | None = None  # (status, why) once the run is being stopped
        self.closing = False  # every task ended: the run is finishing (no task may be added)
        self.stop_signal: int | None = None
        self.halted: StorageError | None = None  # why the run had to stop (see halt)
        self.held: set[str] = set()  # tasks that could start now, but only on such a provider
        self.active: dict[str, asyncio.Task[None]] = {}
        self.ended: asyncio.Queue[tuple[str, AttemptEnd] | None] = asyncio.Queue()
        self.cancelled: dict[str, str] = {}  # task -> why a person cancelled it
        self.reports: dict[str, TaskReport] = {}
        self.waiting: dict[str, tuple[str, ...]] = {}
        self.notes: list[str] = []
        self.limited_streak: dict[str, int] = {}  # task -> its rate-limited attempts in a row
        self.resumed_merges: dict[str, tuple[int, str, str]] = {}  # task -> attempt, commit, tree
        for path in refused:
            self.record(
                "warning",
                message=f"context file {path} leads out of the repository (a symlink); it is "
                "not given to agents",
            )

    # ------------------------------------------------------------------ shared with resume

    @property
    def options(self) -> RunOptions:
        """The run's options as they are now (control commands change budget, parallelism)."""
        return self.ctx.options

    @options.setter
    def options(self, options: RunOptions) -> None:
        self.ctx.options = options
        self.dispatch.options = options

    @property
    def planner_calls(self) -> int:
        """Model calls stretto itself made in this run."""
        return self.ctx.planner_calls

    @planner_calls.setter
    def planner_calls(self, value: int) -> None:
        self.ctx.planner_calls = value

    def record(self, type_: str, **fields: Any) -> Record:
        """Append an event to the journal and hand it to the sink."""
        return self.ctx.record(type_, **fields)

    # ------------------------------------------------------------------ main loop

    async def run(self) -> RunSummary:
        """Run every task to an end (landed, failed, skipped) or until the run is stopped."""
        started = time.monotonic()
        if self.queue.synced_at is None:
            self.queue.synced_at = await self.ctx.blocking(self.ctx.target_head)
        loop = asyncio.get_running_loop()
        handled = self._catch_signals(loop)
        await self.attempts.backend.start()  # a cluster that cannot be reached: nothing started
        watcher = asyncio.create_task(self._watch_inbox())
        try:
            self._read_inbox()  # commands sent before the engine started
            await self._loop()
            self.closing = True
            if self.stop is None:
                await asyncio.gather(*self.attempts.cleanups)
                await self.queue.finish()
            else:
                await self._stop_all()
        except Exception as error:
            if storage_fault(error) is None:
                raise
            self.halt(error)  # the agents are ended just below
        finally:
            watcher.cancel()
            for sig in handled:
                loop.remove_signal_handler(sig)
            for job in self.active.values():
                job.cancel()
            if self.active:
                await asyncio.gather(*self.active.values(), return_exceptions=True)
            await self.attempts.backend.close()
            self.ctx.pool.shutdown(wait=False)
        try:
            summary = self._finish_run(time.monotonic() - started)
        except Exception as error:
            if self.halted is None and storage_fault(error) is None:
                raise
            self.halt(error)
        if self.halted is not None:
            raise self.halted
        return summary

    def _finish_run(self, wall: float) -> RunSummary:
        tasks = [
            self.reports.get(t.id) or TaskReport(t.id, self.schedule.state[t.id].value, 0)
            for t in self.plan.tasks
        ]  # split tasks, then the tasks that replaced them
        failed = any(t.status not in ("landed", "split") for t in tasks)
        status = "failed" if failed else "finished"
        if self.stop is not None:
            status, why = self.stop
            self.notes.append(
                f"{why}; `stretto resume {self.run_id}` goes on, `stretto clean` removes "
                "what it left"
            )
        elif self.budget_stop is not None and failed:
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
                f"{self.dispatch.unpriced} attempt(s) used a model with no known price; budgets "
                "counted them at their provider's top known price, if it has one (`stretto cost` "
                "lists them)"
            )
        if self.queue.stale_checkout:
            self.notes.append(
                merging.catch_up_hint(
                    self.options.target,
                    *self.queue.stale_checkout,
                    self.queue.checkout if isinstance(self.queue.checkout, Path) else None,
                )
            )
        head = rev_parse(self.repo, f"refs/heads/{self.options.target}")
        self.record(
            "run_finished",
            status=status,
            landed=sum(1 for t in tasks if t.status == "landed"),
            split=sum(1 for t in tasks if t.status == "split"),
            planner_calls=self.planner_calls,
            failed=sum(1 for t in tasks if t.status in ("failed", "cancelled")),
            skipped=sum(1 for t in tasks if t.status == "skipped"),
            wall=round(wall, 3),
            agent_seconds=round(self.attempts.agent_seconds, 3),
            head=head,
            notes=self.notes,
            cost_usd=round(self.dispatch.run_spent, 6),
            unpriced=self.dispatch.unpriced,
            budget=self.options.budget,
            signal=self.stop_signal,
        )
        self.journal.sync()
        return RunSummary(
            self.run_id,
            status,
            tasks,
            wall,
            self.attempts.agent_seconds,
            self.options.target,
            head,
            self.notes,
            self.dispatch.run_spent,
            self.dispatch.unpriced,
            self.options.budget,
            signal=self.stop_signal,
        )

    async def _loop(self) -> None:
        sched = self.schedule
        for task, (attempt, commit, tree) in self.resumed_merges.items():
            sched.started(task)  # back into the merge queue: the attempt already ran
            sched.attempts[task] = attempt
            job = self.attempts.land_only(self.plan.task(task), attempt, commit, tree)
            self.active[task] = asyncio.create_task(self.guard(task, job))
        while not sched.done and self.stop is None:
            actions = self._decide()
            if sched.done or self.stop is not None:
                break
            if not self.active:
                if self.paused:
                    pass  # wait for a person: unpause, cancel, budget...
                elif self.budget_stop is not None:
                    self._leave_undone(self.budget_stop, budget=True)
                    break
                elif any(isinstance(a, GiveUp | Skip) for a in actions):
                    continue
                elif self.held:
                    self._leave_undone(self.providers.credit_stop(), resumable=True)
                    break
                else:
                    raise RuntimeError("scheduler stalled: nothing running and nothing can start")
            item = await self.ended.get()
            if item is not None:
                await self._attempt_ended(*item)

    def _decide(self) -> list[Any]:
        """One round: ask the schedule, carry out its actions."""
        sched = self.schedule
        self.held.clear()
        # Tasks in the merge queue hold their leases (the schedule knows) but no agent slot.
        agents = [task for task in self.active if task not in self.attempts.landing]
        in_use = self.providers.in_use(agents)
        free = Capacity(self.options.max_agents - len(agents), self.providers.free(in_use))
        actions = sched.decide(free)
        for action in actions:
            if isinstance(action, Spawn):
                if self.paused:
                    self._note_wait(Wait(action.task, "paused"))
                elif self.budget_stop is None or self._free_agent(action.task):
                    self._route_and_spawn(action, in_use)
            elif isinstance(action, Wait):
                self._note_wait(action)
            elif isinstance(action, GiveUp) and self.splits.allowed(action.task):
                self._start_split(action.task)
            elif isinstance(action, GiveUp):
                self.credit_failed(action.task)
                reason = self.attempts.failures.get(action.task)
                n = action.failures
                why = f"gave up after {n} failed attempt{'' if n == 1 else 's'}"
                if reason:
                    why += f"; last: {reason.reason}"
                self.finish(action.task, "failed", why)
                sched.gave_up(action.task)
            elif isinstance(action, Skip):
                self.finish(action.task, "skipped", f"dependency '{action.because}' did not land")
                sched.skipped(action.task)
        return actions

    async def _attempt_ended(self, task: str, end: AttemptEnd) -> None:
        """Fold how an attempt (or a split call) ended into the schedule."""
        sched = self.schedule
        self.active.pop(task, None)
        if task in self.cancelled:
            self.attempts.stopping.pop(task, None)
            self.splits.running.discard(task)
            if end.landed:  # it landed before the cancel could stop it: that stands
                self.cancelled.pop(task)
            else:
                self.finish(task, "cancelled", self.cancelled[task])
                sched.cancel(task)
                return
        if task in self.splits.running:
            self._end_split(task, end)
            return
        if end.out_of_credit is not None:
            self._out_of_credit(task, end.out_of_credit)
        change = self.providers.adjust(task, end, self.active)
        if change is not None:
            self.record("decision", **asdict(change), task=task)
        if end.counts or end.landed:
            await self._learn(task, end)
        self._check_budget()
        if end.landed:
            self.finish(task, "landed", "", end.commit)
            sched.landed(task)
            return
        if task in self.attempts.stopping:
            self.attempts.stopping.pop(task)
            sched.attempt_failed(task, counts=False)
            return
        attempt = sched.attempts[task]
        self.attempts.failures[task] = prompting.Failure(attempt, end.reason, end.log)
        if end.counts:
            self.splits.failure_log.setdefault(task, []).append(
                f"attempt {attempt}: {end.reason}\n{end.log}"
            )
        wait: float | None = None
        if end.rate_limited or end.retry_after:
            streak = self.limited_streak.get(task, 0) + 1 if end.rate_limited else 0
            self.limited_streak[task] = streak
            wait = rate_limit_wait(end.retry_after, streak, f"{self.run_id}/{task}/{attempt}")
            self.attempts.not_before[task] = time.monotonic() + wait
        else:
            self.limited_streak.pop(task, None)
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
            **({} if wait is None or exhausted else {"wait": wait, "stated": end.retry_after}),
        )
        strongest = end.counts and self.splits.at_strongest(task)
        if not exhausted and strongest and self.splits.allowed(task):
            self._start_split(task)  # no stronger arm is left to escalate to

    def _route_and_spawn(self, action: Spawn, in_use: dict[str, int]) -> None:
        """Choose the attempt's arm, check the budget, then start it (or stop for the budget)."""
        task = self.plan.task(action.task)
        attempt = self.schedule.attempts[action.task] + 1
        route = self.dispatch.route(task, attempt, self.providers.unavailable())
        if route.rule == "give-up":  # no retry is worth its cost: the task ends here
            self._router_gave_up(task.id, attempt, route)
            return
        if self.options.offline and not offline_ok(route.agent, self.options.agent_settings):
            # a task added to a running --offline run (preflight checked the plan's)
            why = f"--offline: agent '{route.agent}' would reach the network; nothing was started"
            self.record("decision", action="give_up", task=task.id, attempt=attempt, by="offline")
            self.finish(task.id, "failed", why)
            self.schedule.gave_up(task.id)
            return
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
        self._spawn(action, task, route)

    def _router_gave_up(self, task: str, attempt: int, route: Route) -> None:
        """The router judged that no retry of ``task`` pays: journal its choice (for
        ``stretto explain``), credit the task's attempts and end it as failed."""
        self.record("route", task=task, attempt=attempt, **route.to_dict())
        self.record("decision", action="give_up", task=task, attempt=attempt, by="router")
        self.credit_failed(task)
        last = self.attempts.failures.get(task)
        why = f"the router gave up after {attempt - 1} failed attempt(s): {route.reason}"
        if last:
            why += f"; last: {last.reason}"
        self.finish(task, "failed", why)
        self.schedule.gave_up(task)

    def _spawn(self, action: Spawn, task: Task, route: Route) -> None:
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
        job = self.attempts.run(task, attempt, route)
        self.active[action.task] = asyncio.create_task(self.guard(action.task, job))

    async def _learn(self, task: str, end: AttemptEnd) -> None:
        """The bandit learns from a judged attempt (landed, or a failure that counts)."""
        if task not in self.attempts.cost_of:
            return  # the agent never ran (e.g. the worktree could not be made): nothing to learn
        cost = self.attempts.cost_of.pop(task)
        try:
            learned = await self.ctx.blocking(self.dispatch.learn, task, end.landed, cost)
        except Exception as error:  # the policy is advice: a failure to save it stops nothing
            self.record("warning", task=task, message=f"router policy not updated: {error}")
            return
        for record in learned:
            self.record("learned", task=task, **record)

    def _free_agent(self, task: str) -> bool:
        """Whether ``task``'s agent is fixed (pinned, or the default with no router) and on a
        local model server: it may start after a budget stop, since budgets ignore it."""
        agent = self.providers.fixed_agent(task)
        return agent is not None and self.dispatch.local_server(agent) is not None

    def _attempt_stop(self, agent: str) -> str | None:
        """Why an attempt whose worktree is ready may not start its agent now."""
        if self.stop is not None:
            return self.stop[1]
        free = self.dispatch.local_server(agent) is not None  # budgets ignore local models
        if self.budget_stop is not None and self.options.on_exceed == "stop" and not free:
            return self.budget_stop
        return None

    def _note_wait(self, action: Wait) -> None:
        key = action.holders or ((action.pool,) if action.pool else (action.reason,))
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
            **self._wait_words(action.pool),
        )

    def _wait_words(self, pool: str | None) -> dict[str, str]:
        """``pool`` and ``why`` for a wait on a capacity pool (a provider's, a local server's)."""
        why = self.providers.explain(pool)
        return {"pool": str(pool), "why": why} if pool and why else {}

    def finish(self, task: str, status: str, reason: str, commit: str | None = None) -> None:
        """Record a task's end (landed, failed, skipped, split, cancelled)."""
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
        """Await an attempt (or split call) and queue how it ended, whatever happens in it."""
        try:
            end = await job
        except asyncio.CancelledError:
            if task not in self.attempts.stopping:
                raise
            end = AttemptEnd(False, False, f"stopped: {self.attempts.stopping[task]}")
        except Exception as error:
            end = self._crashed(task, error)
        await self.ended.put((task, end))

    def _crashed(self, task: str, error: Exception) -> AttemptEnd:
        """How an attempt that raised ended: a full or read-only disk (or a journal that can no
        longer be written) stops the whole run, resumably; anything else fails the attempt."""
        if storage_fault(error) is None:  # a bug or an environment problem: fail it, loudly
            import traceback

            try:
                self.record(
                    "internal_error",
                    task=task,
                    error=f"{type(error).__name__}: {error}",
                    traceback=traceback.format_exc(limit=8),
                )
                return AttemptEnd(False, True, f"internal error: {type(error).__name__}: {error}")
            except Exception as again:  # the journal itself failed
                error = again
        self.halt(error)
        return AttemptEnd(False, False, f"stopped: {self.halted}")

    def _cluster_lost(self, why: str) -> None:
        """The cluster's scheduler is gone: stop the run (resumably), as a signal would."""
        if self.stop is None:
            self.record("stop_requested", status="interrupted", reason=why)
        self.request_stop("interrupted", why)

    def halt(self, error: BaseException) -> None:
        """Stop the run because stretto cannot write what it must (disk full, read-only, the
        journal failed): agents end, nothing counts as a task's failure, and the run ends with
        a :class:`StorageError` that names what filled up and says to resume."""
        if self.halted is not None:
            return
        what = storage_fault(error) or f"{type(error).__name__}: {error}"
        if ": /" not in what:  # name the disk that filled up if the error did not
            full = full_disk(self.ctx.run_dir, self.repo)
            what = storage_fault(full) or what if full else what
        self.halted = StorageError(
            f"run {self.run_id} stopped: stretto could not write its files ({what}). Free "
            f"space on that disk (or make it writable), then `stretto resume {self.run_id}` "
            "goes on; work that passed its gates is kept",
            reason=what,
        )
        self.stop = ("interrupted", f"stopped: {what}")
        self.ended.put_nowait(None)

    def credit_failed(self, task: str) -> None:
        """A task ends without landing: its attempts teach the router that."""
        try:
            learned = self.dispatch.task_failed(task)
        except Exception as error:  # the policy is advice: a failure to save it stops nothing
            self.record("warning", task=task, message=f"router policy not updated: {error}")
            return
        for record in learned:
            self.record("learned", task=task, **record)
