"""Steering a running engine: control commands from the inbox, and stopping on a signal.

:class:`Steering` is the part of :class:`~stretto.engine.runner.Runner` that a person drives
from outside: it reads the run's inbox (:mod:`stretto.engine.control`) every
:data:`CONTROL_POLL` seconds, checks and applies each command (cancel, retry, pause, budget,
parallelism), journals it, and wakes the loop; and it turns SIGINT, SIGTERM and SIGHUP into a
clean stop. The runner's loop stays the only place that starts or ends attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import signal
from dataclasses import replace
from typing import Any

from stretto.engine.attempt import Attempts
from stretto.engine.context import RunContext
from stretto.engine.control import Command, Inbox
from stretto.engine.journal import Record, crashpoint
from stretto.engine.outcomes import AttemptEnd, TaskReport
from stretto.files import storage_fault
from stretto.options import RunOptions
from stretto.plans.plan import Plan, Task
from stretto.routing.dispatch import Dispatch
from stretto.schedule.scheduler import Schedule, TaskState

CONTROL_POLL = 0.02  # seconds between looks at the control inbox
STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}


class Steering:
    """Control commands and signals for the runner (a mixin: the runner owns the state)."""

    ctx: RunContext
    plan: Plan
    schedule: Schedule
    attempts: Attempts
    dispatch: Dispatch
    inbox: Inbox
    active: dict[str, asyncio.Task[None]]
    ended: asyncio.Queue[tuple[str, AttemptEnd] | None]
    stop: tuple[str, str] | None
    stop_signal: int | None
    paused: bool
    budget_stop: str | None
    cancelled: dict[str, str]
    reports: dict[str, TaskReport]
    waiting: dict[str, tuple[str, ...]]
    options: RunOptions
    closing: bool

    def record(self, type_: str, **fields: Any) -> Record:
        raise NotImplementedError

    def finish(self, task: str, status: str, reason: str, commit: str | None = None) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ stopping

    def _catch_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        handled: list[int] = []
        for sig, name in STOP_SIGNALS.items():
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(sig, self._on_signal, sig, name)
                handled.append(sig)
        return handled

    def _on_signal(self, sig: int, name: str) -> None:
        if self.stop is not None:  # a second signal: stop waiting for anything
            for job in self.active.values():
                job.cancel()
            return
        self.stop_signal = sig
        self.request_stop("interrupted", f"stopped by {name}")
        self.record("stop_requested", status="interrupted", reason=f"stopped by {name}")

    def request_stop(self, status: str, why: str) -> None:
        """Stop the run: no new attempts; running agents end; verified work is kept."""
        if self.stop is None:
            self.stop = (status, why)
        self.ended.put_nowait(None)

    async def _stop_all(self) -> None:
        """End every running attempt (agent process groups killed), keeping what is kept."""
        for task, job in self.active.items():
            self.attempts.stopping.setdefault(task, self.stop[1] if self.stop else "stopped")
            job.cancel()
        if self.active:
            await asyncio.gather(*self.active.values(), return_exceptions=True)
        while not self.ended.empty():
            self.ended.get_nowait()
        self.active.clear()

    # ------------------------------------------------------------------ control commands

    def halt(self, error: BaseException) -> None:
        raise NotImplementedError

    async def _watch_inbox(self) -> None:
        while True:
            await asyncio.sleep(CONTROL_POLL)
            try:
                self._read_inbox()
            except Exception as error:
                if storage_fault(error) is None:
                    raise
                self.halt(error)  # the journal cannot be written: the run must stop
                return

    def _read_inbox(self) -> None:
        for command, file, problem in self.inbox.pending():
            if command is None:
                self.record("control_refused", file=file.name, reason=problem, sync=True)
                self.inbox.ack(file)
                continue
            try:
                ok, result = self.apply_command(command)
            except Exception as error:  # never let a command take the engine down
                ok, result = False, {"error": f"{type(error).__name__}: {error}"}
            self.record("control", sync=True, **command.to_dict(), ok=ok, **result)
            crashpoint("after-control")  # journaled, file not yet removed: resume drops it
            self.inbox.ack(file, command.id)
            self.ended.put_nowait(None)  # wake the loop: something may start or stop now

    def apply_command(self, command: Command) -> tuple[bool, dict[str, Any]]:
        """Check and apply one command; return (ok, result fields for the journal)."""
        action, task = command.action, command.task
        if self.stop is not None:
            return False, {"error": f"the run is stopping ({self.stop[1]})"}
        if task is not None and task not in self.plan.by_id:
            return False, {"error": _unknown_task(task, self.plan)}
        if action == "add":
            return self._add_tasks(command)
        if action == "cancel" and task is None:
            self.request_stop("cancelled", "cancelled by `stretto cancel`")
            return True, {"result": "stopping: running agents end, verified work is kept"}
        if action == "cancel":
            return self._cancel_task(str(task))
        if action == "retry":
            return self._retry_task(str(task))
        if action in ("pause", "unpause"):
            was, self.paused = self.paused, action == "pause"
            if not self.paused:
                self.waiting = {t: k for t, k in self.waiting.items() if k != ("paused",)}
            state = "paused" if self.paused else "running"
            return True, {"result": f"{state}" + (" (already)" if was == self.paused else "")}
        value = command.value
        if action == "budget":
            if value is None or value < 0:
                return False, {"error": "a budget is a number of USD, 0 or more"}
            self.options = replace(self.options, budget=value)
            if self.budget_stop is not None and not self.dispatch.exceeded():
                self.budget_stop = None  # room again: new attempts may start
            return True, {"result": f"run budget ${value:.2f}", "budget": value}
        if action == "parallelism":
            if value is None or value < 1 or value != int(value):
                return False, {"error": "parallelism is a whole number of agents, 1 or more"}
            self.options = replace(self.options, max_agents=int(value))
            return True, {"result": f"{int(value)} agents at once", "max_agents": int(value)}
        return False, {"error": f"unknown command {action!r}"}

    def _add_tasks(self, command: Command) -> tuple[bool, dict[str, Any]]:
        """Validate the steps against the live plan, then give them to the schedule."""
        from stretto.engine.additions import addition_result, check_addition
        from stretto.errors import PlanError, UsageError

        if self.closing:
            return False, {"error": "every task has ended and the run is finishing; add the "
                           "steps to a new run (`stretto run PLAN`)"}  # fmt: skip
        existing = {
            t: (self.reports[t].status if t in self.reports else self.schedule.state[t].value)
            for t in self.plan.by_id
        }
        try:
            addition = check_addition(
                command.steps or "",
                command.file or "<steps>",
                existing,
                unowned=self.plan.unowned,
                options=self.options,
            )
        except PlanError as error:
            return False, {
                "error": error.message,
                "diagnostics": [d.to_dict() for d in error.diagnostics],
            }
        except UsageError as error:
            return False, {"error": error.message}
        self.apply_add(list(addition.tasks))
        return True, addition_result(addition.tasks)

    def apply_add(self, tasks: list[Task]) -> None:
        """Put added tasks in the plan and the schedule (live, or rebuilt by resume)."""
        from stretto.engine.additions import schedule_view, with_tasks

        self.plan = with_tasks(self.plan, tasks)
        self.schedule.add(schedule_view(tasks))

    def _cancel_task(self, task: str) -> tuple[bool, dict[str, Any]]:
        state = self.schedule.state[task]
        if state.finished:
            return False, {"error": f"task '{task}' already ended ({state.value})"}
        why = "cancelled by `stretto cancel --task`"
        if task in self.active:
            self.cancelled[task] = why
            self.attempts.stopping[task] = why
            self.active[task].cancel()
            return True, {"result": "stopping its attempt"}
        self.finish(task, "cancelled", why)
        skipped = self.schedule.cancel(task)
        return True, {"result": "cancelled", "skipped": skipped}

    def _retry_task(self, task: str) -> tuple[bool, dict[str, Any]]:
        state = self.schedule.state[task]
        if state is not TaskState.FAILED:
            return False, {
                "error": f"task '{task}' is {state.value}; retry applies to a task that failed "
                "or was given up (or cancelled)"
            }
        revived = self.schedule.revive(task)
        for name in (task, *revived):
            self.reports.pop(name, None)
            self.cancelled.pop(name, None)
        self.attempts.uncounted.pop(task, None)
        limit = self.schedule.limit(task)
        return True, {"result": "one more attempt", "revived": revived, "limit": limit}


def _unknown_task(task: str, plan: Plan) -> str:
    known = list(plan.by_id)
    close = difflib.get_close_matches(task, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"no task '{task}' in this run{hint}; its tasks: {', '.join(known)}"
