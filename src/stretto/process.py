"""Child processes: agents and gate commands, each in its own process group.

Every process stretto starts for a run carries ``STRETTO_RUN_TOKEN`` in its environment and
runs in a new session (its own process group), so that

* a timeout kills the whole group (the agent and everything it started): SIGTERM, a grace
  period, then SIGKILL;
* when the process ends (or is killed), whatever it started that escaped its group (``setsid``,
  a daemonizing server) is killed too: each process also carries its own
  ``STRETTO_PROCESS_TOKEN``, inherited by all its descendants, and nothing that carries it may
  outlive the process;
* after a crash of stretto itself, ``stretto resume`` / ``stretto clean`` find leftovers by the
  token in ``/proc/PID/environ`` and end them, never touching a process that does not carry it
  (pids are reused).

Output goes line by line to a log file and to a callback, so adapters can parse it live.
The environment is built from an allow-list: secrets the user did not mean for agents stay out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from stretto.sandbox import Sandbox

TOKEN_VAR = "STRETTO_RUN_TOKEN"
PROCESS_TOKEN_VAR = "STRETTO_PROCESS_TOKEN"
GRACE_SECONDS = 3.0
LOG_HEAD_BYTES = 4 << 20
"""A process's log keeps this much of the start of its output ..."""
LOG_TAIL_BYTES = 256 << 10
"""... and this much of its end; what lies between is left out (and counted)."""
_CHUNK = 1 << 16

#: Variables passed to agents and gates unless the config says otherwise.
DEFAULT_ALLOW = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "LC_*",
    "TERM",
    "TMPDIR",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
)


#: Words in a variable's name that make its value a secret (hidden from logs and results).
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH")


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of the variables in ``env`` whose names say they are secrets (API keys, tokens,
    passwords), longest first; values under 8 characters are not treated as secrets."""
    found = {
        value
        for name, value in env.items()
        if any(word in name.upper() for word in SECRET_WORDS) and len(value) >= 8
    }
    return sorted(found, key=len, reverse=True)


def allowed_env(source: Mapping[str, str], allow: Iterable[str] = DEFAULT_ALLOW) -> dict[str, str]:
    """The variables of ``source`` named by ``allow`` (a trailing ``*`` matches a prefix)."""
    exact = {name for name in allow if not name.endswith("*")}
    prefixes = tuple(name[:-1] for name in allow if name.endswith("*"))
    return {
        key: value
        for key, value in source.items()
        if key in exact or (prefixes and key.startswith(prefixes))
    }


@dataclass(frozen=True, slots=True)
class Finished:
    """How a process ended."""

    exit_code: int | None  # None when killed by a signal we sent
    timed_out: bool
    duration: float
    pid: int
    stopped: str | None = None  # why ``stop`` ended it (the caller's reason), if it did


def _start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def boot_id() -> str:
    """This boot's id (pids and start times are only comparable within one boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def write_pid_file(path: Path, pid: int, token: str) -> dict[str, object]:
    """Record a started process's identity atomically; returns what was written."""
    record: dict[str, object] = {
        "pid": pid,
        "pgid": pid,
        "start_time": _start_time(pid),
        "boot_id": boot_id(),
        "token": token,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    return record


def _environ_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def processes_with_token(token: str, var: str = TOKEN_VAR) -> list[int]:
    """Pids of live processes whose environment carries ``var=token`` (the run token)."""
    needle = f"{var}={token}".encode()
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and _environ_has(int(entry.name), needle):
            found.append(int(entry.name))
    return sorted(found)


def kill_token(token: str, grace: float = GRACE_SECONDS) -> list[int]:
    """End every process carrying ``token`` (their groups: TERM, grace, KILL); returns pids."""
    pids = processes_with_token(token)
    if not pids:
        return []
    groups = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            groups.add(os.getpgid(pid))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 2.0)
        while time.monotonic() < deadline and processes_with_token(token):
            time.sleep(0.05)
        if not processes_with_token(token):
            break
    return pids


def _kill_escaped(marker: str) -> None:
    """SIGKILL every process that still carries this process's own token (escaped its group)."""
    for _ in range(5):  # a process may fork while we kill; a few rounds catch its children
        pids = processes_with_token(marker, PROCESS_TOKEN_VAR)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)


class BoundedLog:
    """A log file that keeps the first :data:`LOG_HEAD_BYTES` and the last
    :data:`LOG_TAIL_BYTES` written to it: an agent printing gigabytes cannot fill the disk, and
    the end of its output (what explains a failure) is still there."""

    def __init__(self, file: BinaryIO, head: int = LOG_HEAD_BYTES, tail: int = LOG_TAIL_BYTES):
        self.file, self.room, self.tail_limit = file, head, tail
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_size = self.dropped = 0

    def write(self, data: bytes) -> None:
        """Append ``data`` (to the file while there is room, then to the kept tail)."""
        if self.room > 0:
            now, data = data[: self.room], data[self.room :]
            self.file.write(now)
            self.room -= len(now)
        if not data:
            return
        self.tail.append(data)
        self.tail_size += len(data)
        while self.tail_size - len(self.tail[0]) >= self.tail_limit:
            self.dropped += len(first := self.tail.popleft())
            self.tail_size -= len(first)

    def __enter__(self) -> BoundedLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Write the kept tail, after a line saying how much was left out."""
        if not self.tail:
            return
        kept = b"".join(self.tail)
        if self.dropped:
            extra = max(0, len(kept) - self.tail_limit)
            self.dropped += extra
            kept = kept[extra:]
            self.file.write(f"\n[stretto: {self.dropped:,} bytes of output left out]\n".encode())
        self.file.write(kept)
        self.tail.clear()


async def _kill_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), grace if sig == signal.SIGTERM else 5.0)
            break
        except TimeoutError:
            continue
    # The leader is gone; make sure nothing else of the group lingers.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def run_process(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    timeout: float | None = None,
    stdin: str | None = None,
    on_line: Callable[[str, str], None] | None = None,
    on_start: Callable[[int], None] | None = None,
    grace: float = GRACE_SECONDS,
    secrets: Sequence[str] = (),
    sandbox: Sandbox | None = None,
    stop: Callable[[], str | None] | None = None,
) -> Finished:
    """Run ``argv`` in its own session, logging both streams to ``log_path`` line by line.

    Args:
        on_line: called with (line, "stdout" | "stderr") for every output line.
        on_start: called with the pid right after the process started.
        timeout: seconds before the whole process group is killed.
        secrets: values replaced by ``***`` in the log and in what ``on_line`` sees (the keys
            the process was given may be printed by it; they must not be kept).
        sandbox: run it under bubblewrap, confined to ``cwd`` (see :mod:`stretto.sandbox`),
            with a private ``/tmp`` that is deleted when it ends.
        stop: asked after every output line; a reason (not None) kills the process group
            then and there (a limit the output showed was passed) and is returned as
            :attr:`Finished.stopped`.

    Raises:
        OSError: the log could not be written (a full disk); raised once the process ended,
            its output having been read to the end all the same.
    """
    if sandbox is not None:
        scratch = Path(tempfile.mkdtemp(prefix="stretto-sandbox-"))
        try:
            return await run_process(
                sandbox.wrap(argv, cwd, scratch, env=env, own_dir=log_path.parent),
                cwd=cwd,
                env=env,
                log_path=log_path,
                timeout=timeout,
                stdin=stdin,
                on_line=on_line,
                on_start=on_start,
                grace=grace,
                secrets=secrets,
                stop=stop,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    hidden = [s.encode() for s in secrets if s]
    started = time.monotonic()
    marker = os.urandom(12).hex()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab", buffering=0) as file, BoundedLog(file) as log:
        creating = asyncio.ensure_future(
            asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env={**env, PROCESS_TOKEN_VAR: marker},
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        )
        try:
            proc = await asyncio.shield(creating)
        except OSError as error:
            log.write(f"stretto: cannot start {argv[0]!r}: {error}\n".encode())
            return Finished(127, False, time.monotonic() - started, 0)
        except asyncio.CancelledError:
            # Cancelled while the process was being started: it must not live on unseen.
            with contextlib.suppress(Exception):
                await _kill_group(await creating, grace)
            _kill_escaped(marker)
            raise
        if on_start:
            try:
                on_start(proc.pid)
            except BaseException:  # e.g. its start could not be journaled (a full disk)
                await _kill_group(proc, grace)
                _kill_escaped(marker)
                raise
        stopped: str | None = None
        stopping = asyncio.Event()

        def feed(line: str, name: str) -> None:
            nonlocal stopped
            if on_line:
                on_line(line, name)
            if stop is not None and stopped is None and (why := stop()) is not None:
                stopped = why
                stopping.set()

        unwritten: list[OSError] = []  # the log could not be written (a full disk)

        async def pump(stream: asyncio.StreamReader | None, name: str) -> None:
            if stream is None:
                return
            pending = b""
            keep = max((len(s) for s in hidden), default=0)  # a secret cut in two by a read
            while True:
                chunk = await stream.read(_CHUNK)
                pending += chunk
                if chunk and len(pending) < _CHUNK and b"\n" not in chunk:
                    continue
                cut = pending.rfind(b"\n") + 1 if chunk else len(pending)
                if not cut and len(pending) >= _CHUNK:  # one very long line: pass it on in parts
                    cut = len(pending) - keep
                raw, pending = pending[:cut], pending[cut:]
                for secret in hidden:
                    raw = raw.replace(secret, b"***")
                if raw:
                    if not unwritten:
                        try:
                            log.write(raw)
                        except OSError as error:  # keep reading, or the process blocks on its pipe
                            unwritten.append(OSError(error.errno, error.strerror, str(log_path)))
                    for line in raw.splitlines():
                        feed(line.decode("utf-8", "replace"), name)
                if not chunk:
                    return

        pumps = asyncio.gather(pump(proc.stdout, "stdout"), pump(proc.stderr, "stderr"))
        timed_out = False
        ended_by: str | None = None  # the stop reason, when that (not the process) ended it
        try:
            if stdin is not None and proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.write(stdin.encode())
                    await proc.stdin.drain()
                proc.stdin.close()
            waiting = asyncio.ensure_future(proc.wait())
            halted = asyncio.ensure_future(stopping.wait())
            try:
                done, _ = await asyncio.wait(
                    {waiting, halted}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                halted.cancel()
            if not done:
                raise TimeoutError
            if waiting not in done:
                ended_by = stopped
                log.write(f"\nstretto: stopped: {stopped}; killing the process group\n".encode())
                await _kill_group(proc, grace)
        except TimeoutError:
            timed_out = True
            with contextlib.suppress(OSError):
                log.write(
                    f"\nstretto: timed out after {timeout:g}s; killing the process group\n".encode()
                )
            await _kill_group(proc, grace)
        except asyncio.CancelledError:
            await _kill_group(proc, grace)
            _kill_escaped(marker)
            pumps.cancel()
            raise
        else:
            # The leader exited; children it left in the group must not outlive the attempt.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        # Nor may those that left the group (setsid, double fork) while keeping the environment.
        await asyncio.to_thread(_kill_escaped, marker)
        try:
            await asyncio.wait_for(pumps, 5.0)
        except TimeoutError:
            pumps.cancel()
        if unwritten:
            raise unwritten[0]  # the caller decides (a full disk stops the run)
        code = proc.returncode
        return Finished(
            None if timed_out or ended_by else code,
            timed_out,
            time.monotonic() - started,
            proc.pid,
            ended_by,
        )
