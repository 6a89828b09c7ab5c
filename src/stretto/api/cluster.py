"""Clusters for ``stretto run --cluster``: a loopback one to try it, and cleaning workers.

:func:`start_local_cluster` starts a plain ``dask scheduler`` and ``N`` separate ``dask worker``
processes on this machine (loopback only), each worker with its own local directory and an
``agents`` resource of ``slots``, exactly as docs/cluster.md starts them on several machines.
:func:`clean_cluster` ends, on every worker of a cluster, what attempts of dead workers left.
Dask is imported only when these are called.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stretto.errors import RunError

START_TIMEOUT = 60.0


@dataclass
class LocalCluster:
    """A running loopback cluster: its address, processes and directory."""

    address: str
    directory: Path
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self, grace: float = 10.0) -> None:
        """End the workers, then the scheduler (SIGTERM, then SIGKILL after ``grace`` s).

        Each was started in a process group of its own; what is left of a group after the
        grace is killed too, though the process started first has exited: a worker under a
        wrapper (``worker_prefix``, e.g. bwrap) outlived the wrapper, and a worker closing its
        connections to a scheduler already gone took for ever, so workers were left running.
        """
        procs = [*self.workers, self.scheduler]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        while any(_group_alive(proc.pid) for proc in procs) and time.monotonic() < deadline:
            time.sleep(0.05)  # what is left of a group has the rest of the grace
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "directory": str(self.directory),
            "scheduler_pid": self.scheduler.pid,
            "worker_pids": [w.pid for w in self.workers],
        }


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_argv(
    address: str, directory: Path, slots: int, name: str, *, prefix: Sequence[str] = ()
) -> list[str]:
    """The command of one ``dask worker`` with ``slots`` agent slots in ``directory``."""
    return [
        *prefix,
        sys.executable,
        "-m",
        "distributed.cli.dask_worker",
        address,
        "--nthreads",
        str(slots),
        "--resources",
        f"agents={slots}",
        "--local-directory",
        str(directory),
        "--name",
        name,
        "--no-dashboard",
        "--no-nanny",
    ]


def _log(directory: Path, name: str) -> Any:
    return (directory / f"{name}.log").open("ab")


def start_worker(
    cluster: LocalCluster,
    name: str,
    slots: int,
    *,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start one more ``dask worker`` in ``<directory>/<name>`` (with ``env``: its own
    environment, e.g. another PATH or other credentials)."""
    home = cluster.directory / name
    home.mkdir(parents=True, exist_ok=True)
    with _log(cluster.directory, name) as log:  # the worker keeps its own copy
        proc = subprocess.Popen(
            worker_argv(cluster.address, home, slots, name, prefix=prefix),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else dict(env),
        )
    cluster.workers.append(proc)
    return proc


def start_local_cluster(
    workers: int = 2,
    slots: int = 4,
    *,
    directory: Path | None = None,
    port: int = 0,
    worker_prefix: Sequence[str] = (),
) -> LocalCluster:
    """Start a scheduler on 127.0.0.1 and ``workers`` workers; return once all have joined."""
    base = directory or Path(tempfile.mkdtemp(prefix="stretto-cluster-"))
    base.mkdir(parents=True, exist_ok=True)
    info = base / "scheduler.json"
    info.unlink(missing_ok=True)
    with _log(base, "scheduler") as log:
        scheduler = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
                "--scheduler-file",
                str(info),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    address = None
    while address is None:  # the file appears before it is written: read until it parses
        with contextlib.suppress(OSError, ValueError, KeyError):
            address = str(json.loads(info.read_text())["address"])
        if address is None and (scheduler.poll() is not None or time.monotonic() > deadline):
            scheduler.kill()
            raise RunError(f"the Dask scheduler did not start; see {base / 'scheduler.log'}")
        if address is None:
            time.sleep(0.05)
    cluster = LocalCluster(address, base, scheduler)
    try:
        for index in range(workers):
            start_worker(cluster, f"worker-{index}", slots, prefix=worker_prefix)
        wait_for_workers(address, workers, deadline - time.monotonic())
    except BaseException:
        cluster.stop()
        raise
    return cluster


def worker_pids(address: str) -> dict[str, int]:
    """Each worker's address and process id (as the workers see themselves)."""
    from distributed import Client

    with Client(address, timeout=10, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        return dict(client.run(os.getpid))


def wait_for_workers(address: str, count: int, timeout: float = START_TIMEOUT) -> None:
    """Wait until the scheduler at ``address`` has ``count`` workers."""
    from distributed import Client

    with Client(address, timeout=10, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        try:
            client.wait_for_workers(count, timeout=max(1.0, timeout))
        except TimeoutError:
            raise RunError(
                f"{count} worker(s) did not join {address} in time; see the worker logs"
            ) from None


def clean_cluster(address: str) -> list[dict[str, Any]]:
    """On every worker of ``address``: end agents whose worker died, remove their worktrees."""
    from stretto.engine.dask_backend import clean_cluster as clean

    return clean(address)
