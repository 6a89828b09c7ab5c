"""Control commands: how a person (or a frontend) steers a running engine from anywhere.

The channel is a command inbox in the run's directory, ``runs/<id>/control/``: a 0700 directory
of the user who owns the run, holding one 0600 JSON file per command. :func:`send` writes a
command atomically (a temporary name, fsync, rename, fsync of the directory), so a command is
either wholly there or not at all. The engine polls the inbox, and for each command, in the
order they were sent:

1. checks and applies it (the runner's :meth:`~stretto.engine.runner.Runner.apply_command`);
2. journals a fsynced ``control`` record with the command's id, its source and its result;
3. then deletes the file.

The journal record is the idempotency key: an engine that starts (or resumes) first drops the
files whose id it finds in the journal, and the effect of those is rebuilt from the journal
itself. So a command is never lost (its file stays until it is journaled) and never applied
twice (it is journaled before its file goes), whichever side crashes. Several senders may write
at once: each file has its own unique name. No TCP: only processes that can write the run's
directory (the user who owns it) can send; the engine also refuses a file owned by another uid.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stretto.engine.journal import Record
from stretto.errors import RunError
from stretto.files import fsync_dir

CONTROL_DIR = "control"

#: Commands and what they take: the task, a number, or nothing.
ACTIONS: Mapping[str, str] = {
    "cancel": "task?",  # the run (agents stopped, work kept for resume), or one task
    "retry": "task",  # a failed or given-up task gets another attempt now
    "pause": "",  # no new attempts start; running ones finish
    "unpause": "",
    "budget": "value",  # a new run budget in USD
    "parallelism": "value",  # agents running at once
    "add": "steps",  # new tasks: plan steps as YAML (stretto.plans.additions)
}


@dataclass(frozen=True)
class Command:
    """One control command, as sent and as journaled.

    Attributes:
        id: unique, and sorts in the order commands were sent.
        action: one of :data:`ACTIONS`.
        task: the task it is about, for ``cancel`` (optional) and ``retry``.
        value: the number, for ``budget`` (USD) and ``parallelism`` (agents).
        source: who sent it: frontend name, pid, user.
        sent: when (epoch seconds).
        steps: for ``add``, the steps as YAML text (one step, or a list of steps).
        file: for ``add``, where the steps came from (named in errors).
    """

    id: str
    action: str
    task: str | None = None
    value: float | None = None
    source: Mapping[str, Any] = field(default_factory=dict)
    sent: float = 0.0
    steps: str | None = None
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the file's content and the journal record's fields)."""
        out = {
            "id": self.id,
            "action": self.action,
            "task": self.task,
            "value": self.value,
            "source": dict(self.source),
            "sent": self.sent,
        }
        if self.steps is not None:
            out.update(steps=self.steps, file=self.file)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Command:
        """Inverse of :meth:`to_dict`; ValueError for anything malformed."""
        action = data.get("action")
        if not isinstance(data.get("id"), str) or action not in ACTIONS:
            raise ValueError(f"not a control command: {dict(data)!r}")
        task = data.get("task")
        value = data.get("value")
        if task is not None and not isinstance(task, str):
            raise ValueError("task must be a string")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError("value must be a number")
        steps, file = data.get("steps"), data.get("file")
        if steps is not None and not isinstance(steps, str):
            raise ValueError("steps must be YAML text")
        if file is not None and not isinstance(file, str):
            raise ValueError("file must be a string")
        source = data.get("source") or {}
        return cls(
            str(data["id"]),
            str(action),
            task,
            None if value is None else float(value),
            dict(source) if isinstance(source, Mapping) else {},
            float(data.get("sent") or 0.0),
            steps,
            file,
        )


def inbox_path(run_dir: Path) -> Path:
    """``runs/<id>/control``."""
    return run_dir / CONTROL_DIR


def make_inbox(run_dir: Path) -> Path:
    """Create the run's inbox (0700), as the engine starts."""
    path = inbox_path(run_dir)
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def new_command_id() -> str:
    """Unique, sortable by send time: ``<ns since epoch>-<pid>-<random>``."""
    return f"{time.time_ns():020d}-{os.getpid()}-{os.urandom(3).hex()}"


def send(
    run_dir: Path,
    action: str,
    *,
    task: str | None = None,
    value: float | None = None,
    source: Mapping[str, Any] | None = None,
    steps: str | None = None,
    file: str | None = None,
) -> Command:
    """Drop a command in the run's inbox, atomically and durably; return it.

    Raises:
        RunError: the inbox is missing (not a run started by this version) or not writable.
    """
    command = Command(
        new_command_id(),
        action,
        task,
        value,
        {"pid": os.getpid(), "uid": os.getuid(), **(source or {})},
        time.time(),
        steps,
        file,
    )
    folder = inbox_path(run_dir)
    try:
        os.stat(folder)
    except FileNotFoundError:
        raise RunError(
            f"run {run_dir.name} has no control inbox ({folder}); it was started by an older "
            "stretto, which cannot be steered"
        ) from None
    except OSError as error:
        raise RunError(
            f"cannot send {action} to run {run_dir.name}: {error.strerror} ({folder}); only the "
            "user who started the run can steer it"
        ) from None
    data = json.dumps(command.to_dict()).encode()
    temp = folder / f".{command.id}.tmp"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, folder / f"{command.id}.json")
        fsync_dir(folder)
    except OSError as error:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise RunError(
            f"cannot send {action} to run {run_dir.name}: {error.strerror} ({folder}); only the "
            "user who started the run can steer it"
        ) from None
    return command


class Inbox:
    """The engine's side of the inbox: pending commands, once each.

    Args:
        run_dir: the run directory.
        history: the journal so far; commands journaled there are done (their files are
            dropped when seen).
    """

    def __init__(self, run_dir: Path, history: Iterable[Record] = ()) -> None:
        self.path = make_inbox(run_dir)
        self.uid = os.getuid()
        self.done: set[str] = {
            str(r.fields.get("id")) for r in history if r.type == "control" and "id" in r.fields
        }

    def pending(self) -> list[tuple[Command | None, Path, str]]:
        """Commands waiting, oldest first: (command, file, problem). A file that is not a
        valid command comes back with ``command=None`` and why, to be journaled and dropped."""
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(self.path)
                if entry.name.endswith(".json") and not entry.name.startswith(".")
            )
        except FileNotFoundError:
            return []
        out: list[tuple[Command | None, Path, str]] = []
        for name in names:
            file = self.path / name
            if name[: -len(".json")] in self.done:
                self.ack(file)  # journaled before a crash: applied already
                continue
            try:
                info = file.stat()
                if info.st_uid != self.uid:
                    out.append((None, file, f"command file owned by uid {info.st_uid} refused"))
                    continue
                command = Command.from_dict(json.loads(file.read_bytes()))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as error:
                out.append((None, file, f"unreadable command {name}: {error}"))
                continue
            out.append((command, file, ""))
        return out

    def ack(self, file: Path, command_id: str | None = None) -> None:
        """The command is journaled: remove its file."""
        if command_id is not None:
            self.done.add(command_id)
        with contextlib.suppress(FileNotFoundError):
            file.unlink()
