"""Runs through the API once they exist: open, list, status, events, control (starting them is
:mod:`stretto.api.starting`).

See :mod:`stretto.api` and docs/api.md. Everything here is a thin layer over the engine: a
:class:`RunHandle` reads the run's journal for its status and events, and its control methods
drop a command in the run's inbox (:mod:`stretto.engine.control`) and wait for the engine to
journal what it did with it.
"""

from __future__ import annotations

import difflib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stretto.engine import control
from stretto.engine.events import EventReader, afollow
from stretto.engine.events import follow as follow_journal
from stretto.engine.journal import JOURNAL_NAME, Record, is_live, read_journal
from stretto.engine.outcomes import RunSummary
from stretto.engine.runs import list_run_ids, new_run_id, resolve_run, runs_root
from stretto.engine.status import RunStatus, StatusFold, fold_status
from stretto.errors import ControlError, RunError

if TYPE_CHECKING:  # the plan module loads when a plan is started: readers never need it
    pass

Sink = Callable[[Record], None]

__all__ = [
    "AsyncRunHandle",
    "ControlResult",
    "RunHandle",
    "list_runs",
    "new_run_id",
    "open_run",
]


@dataclass(frozen=True)
class ControlResult:
    """What the engine did with a control command.

    Attributes:
        command: the command's id.
        action: cancel, retry, pause, unpause, budget, parallelism.
        applied: False while the engine has not journaled it yet (``wait`` ran out); it stays
            in the inbox and will be applied once, by this engine or by ``stretto resume``.
        ok: whether the engine applied it (False: refused; ``message`` says why).
        message: the engine's words.
        seq: the journal seq of its ``control`` record (0 while not applied).
        fields: the record's result fields (e.g. ``revived`` tasks of a retry).
    """

    command: str
    action: str
    applied: bool
    ok: bool
    message: str
    seq: int = 0
    fields: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``--json``)."""
        return {
            "command": self.command,
            "action": self.action,
            "applied": self.applied,
            "ok": self.ok,
            "message": self.message,
            "seq": self.seq,
            **self.fields,
        }


class RunHandle:
    """One run: its status, its events, and control. Cheap to make; holds no lock.

    Attributes:
        repo: the repository's top level.
        run_id: the run's id.
        run_dir: ``.stretto/runs/<run_id>``.
        summary: for a run driven here to its end (``start_run(detach=False)``), its summary.
        pid: for a run started detached by this process, the engine's pid.
    """

    def __init__(
        self,
        repo: Path,
        run_dir: Path,
        *,
        summary: RunSummary | None = None,
        pid: int | None = None,
    ) -> None:
        self.repo = repo
        self.run_dir = run_dir
        self.run_id = run_dir.name
        self.summary = summary
        self.pid = pid
        self._fold: tuple[EventReader, StatusFold] | None = None  # status(), read as it grows
        self._folding = threading.Lock()

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"

    # ------------------------------------------------------------------ reading

    def records(self) -> list[Record]:
        """Every complete record of the journal so far."""
        return read_journal(self.run_dir / JOURNAL_NAME)

    def status(self) -> RunStatus:
        """The run's state: the fold of its journal, and whether an engine drives it now.

        A handle folds each record once: a later call reads only what was written since (a
        server answering many status requests of a long run does not read it all again)."""
        live = is_live(self.run_dir)  # before reading: a run seen over is read to its end
        with self._folding:
            if self._fold is None:
                self._fold = (EventReader(self.run_dir), StatusFold())
            reader, fold = self._fold
            fold.feed(reader.read_new())
            return fold.result(live=live)

    def version(self) -> tuple[int, bool]:
        """(seq of the last record, live): :meth:`status` is the same while this is, so a
        server can keep what it made of it (folds what is new, builds no status)."""
        live = is_live(self.run_dir)
        with self._folding:
            if self._fold is None:
                self._fold = (EventReader(self.run_dir), StatusFold())
            reader, fold = self._fold
            fold.feed(reader.read_new())
            return fold.last_seq, live

    def live(self) -> bool:
        """Whether an engine process drives the run right now."""
        return is_live(self.run_dir)

    def wait(self, timeout: float | None = None, *, poll: float = 0.05) -> RunStatus:
        """Block until the run is over (or interrupted: no engine, not finished), or until
        ``timeout`` seconds pass; return its status then. Reads only what is new while it
        waits."""
        deadline = None if timeout is None else time.monotonic() + timeout
        reader = EventReader(self.run_dir)
        while True:
            reader.read_new()
            if reader.finished() or reader.interrupted():
                return self.status()
            if deadline is not None and time.monotonic() >= deadline:
                return self.status()
            time.sleep(poll)

    def events(
        self,
        after_seq: int = 0,
        follow: bool = False,
        *,
        timeout: float | None = None,
        on_idle: Callable[[str], None] | None = None,
    ) -> Iterator[Record]:
        """Every journal record after ``after_seq``, in order, each exactly once; with
        ``follow``, new ones as they are written (across a resume: seq keeps counting) until
        the run ends, or ``timeout`` seconds pass. A torn last line is never delivered."""
        return follow_journal(
            self.run_dir, after_seq, follow=follow, timeout=timeout, on_idle=on_idle
        )

    # ------------------------------------------------------------------ control

    def cancel(self, task: str | None = None, **how: Any) -> ControlResult:
        """Cancel the run (agents stopped, verified work kept for ``stretto resume``), or one
        task (its attempt stopped; it ends as cancelled, its dependents are skipped)."""
        return self.command("cancel", task=task, **how)

    def retry(self, task: str, **how: Any) -> ControlResult:
        """Give a failed (given-up or cancelled) task another attempt now; the tasks skipped
        because of it wait for it again."""
        return self.command("retry", task=task, **how)

    def pause(self, **how: Any) -> ControlResult:
        """Start no new attempts; running ones finish."""
        return self.command("pause", **how)

    def unpause(self, **how: Any) -> ControlResult:
        """Start attempts again after :meth:`pause`."""
        return self.command("unpause", **how)

    def set_budget(self, usd: float, **how: Any) -> ControlResult:
        """A new spend limit for the run, in USD (room again lets stopped work go on)."""
        return self.command("budget", value=usd, **how)

    def set_parallelism(self, agents: int, **how: Any) -> ControlResult:
        """How many agents may run at once from now on."""
        return self.command("parallelism", value=agents, **how)

    def add_tasks(
        self, steps: str, *, file: str = "<steps>", wait: float = 10.0, source: str = "api"
    ) -> ControlResult:
        """Add tasks to the running run: ``steps`` is YAML holding one plan step or a list of
        them (docs/plan-format.md), checked like a plan's before anything is sent; the engine
        checks them again and schedules them. ``result.fields["tasks"]`` are their ids.

        Raises:
            PlanError: a bad step (file:line:column, field, fix); nothing was added.
            ControlError: the run is not running, or the engine refused the steps.
        """
        from stretto.api.additions import check_against_run

        state = self.status()
        check_command(state, "add", None, None)
        check_against_run(self.run_dir, state, steps, file)
        reader = EventReader.at_end(self.run_dir)
        sent = control.send(
            self.run_dir, "add", steps=steps, file=file, source={"frontend": source}
        )
        return _outcome(sent, _answers(reader, wait), raising=True)

    def command(
        self,
        action: str,
        *,
        task: str | None = None,
        value: float | None = None,
        wait: float = 10.0,
        source: str = "api",
    ) -> ControlResult:
        """Send one control command and wait up to ``wait`` seconds for the engine to apply it.

        Raises:
            ControlError: the run is not running (finished, or interrupted: says how to
                resume), the task is unknown, or the engine refused the command.
        """
        if action == "add":
            raise ControlError(_ADD_HOW)
        check_command(self.status(), action, task, value)
        reader = EventReader.at_end(self.run_dir)  # the engine's answer comes after this
        sent = control.send(
            self.run_dir, action, task=task, value=value, source={"frontend": source}
        )
        return _outcome(sent, _answers(reader, wait), raising=True)


_ADD_HOW = (
    "adding tasks takes steps: `stretto add [RUN] FILE`, RunHandle.add_tasks(steps), or "
    'POST /runs/{id}/tasks with {"steps": YAML}'
)


def check_command(status: RunStatus, action: str, task: str | None, value: float | None) -> None:
    """What can be checked before a command is sent (the engine checks again)."""
    if action not in control.ACTIONS:
        raise ControlError(f"unknown command {action!r}; one of: {', '.join(control.ACTIONS)}")
    if status.over:
        how = (
            f"; `stretto resume {status.run_id}` goes on with it"
            if status.resumable
            else "; nothing to control. Start a new run with `stretto run PLAN`"
        )
        raise ControlError(f"run {status.run_id} is not running (it {status.state}){how}")
    if not status.live:
        raise ControlError(
            f"run {status.run_id} is not running (interrupted: no engine drives it); "
            f"`stretto resume {status.run_id}` goes on with it, and applies commands sent meanwhile"
        )
    if control.ACTIONS[action] == "task" and not task:
        raise ControlError(f"{action} needs a task; the run's tasks: {', '.join(status.tasks)}")
    if task is not None and task not in status.tasks:
        close = difflib.get_close_matches(task, list(status.tasks), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ControlError(
            f"no task '{task}' in run {status.run_id}{hint}; its tasks: {', '.join(status.tasks)}"
        )
    if control.ACTIONS[action] == "value" and value is None:
        raise ControlError(f"{action} needs a number")


def _answers(reader: EventReader, timeout: float, poll: float = 0.005) -> Iterator[Record]:
    """New records from ``reader`` until ``timeout`` seconds pass (or the run ends)."""
    deadline = time.monotonic() + timeout
    while True:
        batch = reader.read_new()
        yield from batch
        if not batch:
            if reader.finished() or time.monotonic() >= deadline:
                return
            time.sleep(poll)


def _outcome(sent: control.Command, records: Any, *, raising: bool) -> ControlResult:
    for record in records:
        if record.type == "control" and record.fields.get("id") == sent.id:
            return _result(sent, record, raising=raising)
    return ControlResult(
        sent.id,
        sent.action,
        False,
        False,
        "sent; the engine has not applied it yet (it will, once: `stretto events` shows it)",
    )


def _result(sent: control.Command, record: Record, *, raising: bool) -> ControlResult:
    f = record.fields
    skip = {"id", "action", "task", "value", "source", "sent", "ok", "result", "error"}
    skip |= {"steps", "file", "added", "diagnostics"}
    ok = bool(f.get("ok"))
    message = str(f.get("result") if ok else f.get("error"))
    if not ok and raising and f.get("diagnostics"):  # steps the engine found bad
        from stretto.errors import Diagnostic, PlanError

        raise PlanError([Diagnostic(**d) for d in f["diagnostics"]])
    if not ok and raising:
        raise ControlError(f"{sent.action} refused by the engine: {message}")
    extra = {k: v for k, v in f.items() if k not in skip}
    return ControlResult(sent.id, sent.action, True, ok, message, record.seq, extra)


class AsyncRunHandle:
    """:class:`RunHandle` for asyncio frontends (the MCP and HTTP servers): the same calls,
    awaitable, never blocking the loop for longer than a file read."""

    def __init__(self, handle: RunHandle) -> None:
        self.sync = handle
        self.run_id = handle.run_id
        self.run_dir = handle.run_dir

    async def status(self) -> RunStatus:
        """See :meth:`RunHandle.status`."""
        import asyncio

        return await asyncio.to_thread(self.sync.status)

    async def wait(self, timeout: float | None = None, *, poll: float = 0.05) -> RunStatus:
        """See :meth:`RunHandle.wait`."""
        import asyncio

        deadline = None if timeout is None else time.monotonic() + timeout
        reader = EventReader(self.run_dir)
        while True:
            await asyncio.to_thread(reader.read_new)
            if reader.finished() or reader.interrupted():
                return await self.status()
            if deadline is not None and time.monotonic() >= deadline:
                return await self.status()
            await asyncio.sleep(poll)

    def events(
        self, after_seq: int = 0, follow: bool = False, *, timeout: float | None = None
    ) -> AsyncIterator[Record]:
        """See :meth:`RunHandle.events`."""
        return afollow(self.run_dir, after_seq, follow=follow, timeout=timeout)

    async def command(
        self,
        action: str,
        *,
        task: str | None = None,
        value: float | None = None,
        wait: float = 10.0,
        source: str = "api",
    ) -> ControlResult:
        """See :meth:`RunHandle.command`."""
        import asyncio

        if action == "add":
            raise ControlError(_ADD_HOW)
        check_command(await self.status(), action, task, value)
        reader = await asyncio.to_thread(EventReader.at_end, self.run_dir)
        sent = await asyncio.to_thread(
            control.send, self.run_dir, action, task=task, value=value, source={"frontend": source}
        )
        deadline = time.monotonic() + wait
        while True:
            for record in reader.read_new():
                if record.type == "control" and record.fields.get("id") == sent.id:
                    return _result(sent, record, raising=True)
            if reader.finished() or time.monotonic() >= deadline:
                return _outcome(sent, [], raising=True)
            await asyncio.sleep(0.005)

    async def batches(self, after_seq: int = 0) -> AsyncIterator[list[Record]]:
        """:meth:`events` with ``follow``, a read at a time: the records written since the
        last look come together (a server sends them in one write), until the run ends."""
        import asyncio

        from stretto.engine.events import POLL

        reader = EventReader(self.run_dir, after_seq)
        while True:
            batch = reader.read_new()  # a stat when nothing is new; small reads otherwise
            if batch:
                yield batch
            elif reader.finished():
                last = reader.read_new()  # anything written after the last look
                if last:
                    yield last
                return
            else:
                await asyncio.sleep(POLL)

    async def add_tasks(
        self, steps: str, *, file: str = "<steps>", wait: float = 10.0, source: str = "api"
    ) -> ControlResult:
        """See :meth:`RunHandle.add_tasks`."""
        import asyncio

        from stretto.api.additions import check_against_run

        state = await self.status()
        check_command(state, "add", None, None)
        await asyncio.to_thread(check_against_run, self.run_dir, state, steps, file)
        reader = await asyncio.to_thread(EventReader.at_end, self.run_dir)
        sent = await asyncio.to_thread(
            control.send, self.run_dir, "add", steps=steps, file=file, source={"frontend": source}
        )
        return await self._answer(sent, reader, wait)

    async def _answer(
        self, sent: control.Command, reader: EventReader, wait: float
    ) -> ControlResult:
        import asyncio

        deadline = time.monotonic() + wait
        while True:
            for record in await asyncio.to_thread(reader.read_new):
                if record.type == "control" and record.fields.get("id") == sent.id:
                    return _result(sent, record, raising=True)
            if reader.finished() or time.monotonic() >= deadline:
                return _outcome(sent, [], raising=True)
            await asyncio.sleep(0.005)

    async def cancel(self, task: str | None = None, **how: Any) -> ControlResult:
        """See :meth:`RunHandle.cancel`."""
        return await self.command("cancel", task=task, **how)

    async def retry(self, task: str, **how: Any) -> ControlResult:
        """See :meth:`RunHandle.retry`."""
        return await self.command("retry", task=task, **how)

    async def pause(self, **how: Any) -> ControlResult:
        """See :meth:`RunHandle.pause`."""
        return await self.command("pause", **how)

    async def unpause(self, **how: Any) -> ControlResult:
        """See :meth:`RunHandle.unpause`."""
        return await self.command("unpause", **how)

    async def set_budget(self, usd: float, **how: Any) -> ControlResult:
        """See :meth:`RunHandle.set_budget`."""
        return await self.command("budget", value=usd, **how)

    async def set_parallelism(self, agents: int, **how: Any) -> ControlResult:
        """See :meth:`RunHandle.set_parallelism`."""
        return await self.command("parallelism", value=agents, **how)


# --------------------------------------------------------------------------- entry points


def _toplevel(repo: Path | str) -> Path:
    from stretto.git import toplevel

    return toplevel(Path(repo))


def open_run(repo: Path | str, run_id: str | None = None) -> RunHandle:
    """The run ``run_id`` (a unique prefix is enough), or the latest run.

    Raises:
        UnknownRunError: no such run (exit 2 in the CLI).
        RunError: no runs yet.
    """
    top = _toplevel(repo)
    return RunHandle(top, resolve_run(top, run_id))


def list_runs(repo: Path | str) -> list[RunStatus]:
    """Every run in the repository, oldest first. A run whose journal cannot be read (killed
    before its first record, or damaged) is listed with state ``damaged`` and the reason in
    its notes, instead of hiding every other run."""
    top = _toplevel(repo)
    out = []
    for run_id in list_run_ids(top):
        run_dir = runs_root(top) / run_id
        try:
            out.append(fold_status(read_journal(run_dir / JOURNAL_NAME), live=is_live(run_dir)))
        except RunError as error:
            out.append(_damaged(run_dir, error.message))
    return out


def _damaged(run_dir: Path, why: str) -> RunStatus:
    try:
        started = os.stat(run_dir).st_mtime
    except OSError:
        started = 0.0
    return RunStatus(
        run_dir.name, "damaged", "?", "?", started, None, {}, 0, notes=[why],
        live=is_live(run_dir),
    )  # fmt: skip
