"""The Dask side of cluster runs: the client, the choice of worker, the task on the worker.

Imported only for ``stretto run --cluster`` / ``[cluster] scheduler``, ``stretto cluster`` and
``stretto clean --cluster``: a local run never imports Dask.

* :class:`DaskCluster` connects an asynchronous :class:`distributed.Client` on the engine's own
  event loop, picks the least busy worker for each attempt (its ``agents`` resource, else its
  thread count, is its number of slots), sends the base commit as a bundle incremental against
  the bases that worker already got, and watches the workers: a worker that leaves while it
  runs an attempt raises :class:`~stretto.engine.backend.WorkerLost`, a scheduler that stops
  answering raises :class:`~stretto.engine.backend.ClusterLost`.
* :func:`on_worker` is the Dask task: it runs :func:`stretto.engine.worker_attempt.run_job` in
  ``<worker local directory>/stretto``, streams output lines to the engine with
  ``Worker.log_event`` (the engine subscribes to the run's topic) and ends the agent when the
  engine no longer wants the result (cancelled, or the engine's client went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed import Client, get_worker
from distributed.worker import thread_state  # type: ignore[attr-defined]

from stretto.engine.backend import ClusterLost, WorkerLost
from stretto.engine.bundles import make_bundle
from stretto.engine.worker_attempt import run_job, sweep
from stretto.errors import RunError

POLL_SECONDS = 0.5  # how often the engine looks at the cluster's workers
LOST_AFTER = 6.0  # seconds the scheduler may not answer before the run stops
CONNECT_TIMEOUT = 10.0
CLEAN_TIMEOUT = 4.0  # `stretto clean --cluster`: a scheduler that is down is said at once


def worker_home() -> Path:
    """Where a worker keeps its clones and attempts: ``stretto/`` in the directory given to
    ``dask worker --local-directory`` (Dask's own ``dask-scratch-space/worker-*`` below it is
    new at every start; the clones should outlive a restart)."""
    local = Path(get_worker().local_directory)
    if local.parent.name == "dask-scratch-space":
        local = local.parent.parent
    return local / "stretto"


def on_worker(job: dict[str, Any]) -> dict[str, Any]:
    """The Dask task of one attempt (runs in a worker's thread)."""
    worker = get_worker()
    key = thread_state.key

    def publish(msg: dict[str, Any]) -> None:
        worker.log_event(job["topic"], {**msg, "worker": worker.address})

    def cancelled() -> bool:
        state = worker.state.tasks.get(key)
        return state is None or state.state in ("cancelled", "released", "forgotten")

    return run_job(
        job, home=worker_home(), worker=worker.address, publish=publish, cancelled=cancelled
    )


def sweep_on_worker(run_id: str | None) -> dict[str, Any]:
    """End a finished run's leftovers (or, without ``run_id``, those of dead workers) on this
    worker's machine; the worker's address and what was removed."""
    done: dict[str, Any] = dict(sweep(worker_home(), run_id))
    done["worker"] = get_worker().address
    done["pid"] = os.getpid()
    return done


class _TaskFailed(Exception):
    """The attempt's Dask task raised on the worker (a bug, or the worker's environment)."""


class DaskCluster:
    """One run's connection to a Dask scheduler; see the module docstring."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.client: Any = None
        self.workers: dict[str, dict[str, Any]] = {}  # address -> identity (resources...)
        self.busy: dict[str, int] = {}  # address -> attempts this run has on it
        self.haves: dict[str, list[str]] = {}  # address -> base commits it already got
        self.listeners: dict[str, Callable[[str, dict[str, Any]], None]] = {}
        self.lost: str | None = None
        self.workers_lost: set[str] = set()  # workers that left while running our attempts
        self.unfit: dict[str, set[str]] = {}  # agent -> workers found without its CLI
        self.topic: str | None = None
        self._watch: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def connect(self) -> None:
        """Connect, or raise a RunError that says how to fix the address."""
        try:
            self.client = await Client(  # type: ignore[no-untyped-call]
                self.address, asynchronous=True, timeout=CONNECT_TIMEOUT, set_as_default=False
            )
        except (OSError, TimeoutError, ValueError) as error:
            raise RunError(
                f"cannot reach the Dask scheduler at {self.address} ({error}); start one "
                "(`stretto cluster local`, or `dask scheduler`) or fix --cluster / [cluster] "
                "scheduler in stretto.toml; `stretto resume` goes on once it is up"
            ) from None
        await self._refresh()
        self._watch = asyncio.create_task(self._watch_workers())

    async def _refresh(self) -> None:
        info = await asyncio.wait_for(self.client.scheduler.identity(), LOST_AFTER)
        self.workers = dict(info.get("workers") or {})
        self._changed.set()
        self._changed = asyncio.Event()

    async def _watch_workers(self) -> None:
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                await self._refresh()
                failing_since = None
            except asyncio.CancelledError:
                raise
            except Exception as error:
                now = loop.time()
                failing_since = failing_since or now
                if now - failing_since >= LOST_AFTER or self.client.status == "closed":
                    self.lost = f"the scheduler at {self.address} stopped answering ({error!r})"
                    self._changed.set()
                    return

    def slots(self, address: str) -> int:
        info = self.workers.get(address) or {}
        agents = (info.get("resources") or {}).get("agents")
        return max(1, int(agents if agents is not None else info.get("nthreads") or 1))

    def pick(self, avoid: set[str]) -> str | None:
        """The least busy live worker (fewest of this run's attempts per slot), by address."""
        choices = [a for a in self.workers if a not in avoid]
        if not choices:
            return None
        return min(choices, key=lambda a: (self.busy.get(a, 0) / self.slots(a), a))

    def _on_topic(self, event: tuple[float, dict[str, Any]]) -> None:
        msg = event[1]
        listener = self.listeners.get(str(msg.get("key")))
        if listener is not None:
            listener(str(msg.get("worker")), msg)

    async def execute(
        self, repo: Path, job: dict[str, Any], on_event: Callable[[str, dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Run ``job`` on a worker (bundle, task, watch); its result dict."""
        if self.topic != job["topic"]:
            self.topic = job["topic"]
            self.client.subscribe_topic(job["topic"], self._on_topic)
        loop = asyncio.get_running_loop()
        waited = 0.0
        if self.workers and all(a in self.unfit.get(job["agent"], ()) for a in self.workers):
            self.unfit.pop(job["agent"], None)  # every worker lacks it: say so again, counted
        if self.client.status in ("closing", "closed"):
            raise ClusterLost(f"the client lost the scheduler at {self.address}")
        while (address := self.pick(self.unfit.get(job["agent"], set()))) is None:
            if self.lost is not None or waited > LOST_AFTER * 5:
                raise ClusterLost(self.lost or f"no worker joined the scheduler at {self.address}")
            await asyncio.sleep(POLL_SECONDS)
            waited += POLL_SECONDS
        # Counted busy at once, before the bundle is made: attempts started together (the
        # first wave of a run) each see the others' choices and spread over the workers.
        self.busy[address] = self.busy.get(address, 0) + 1
        try:
            haves = self.haves.setdefault(address, [])
            name = str(job["bundle_ref"]).rsplit("/", 1)[-1]
            bundle = await loop.run_in_executor(None, make_bundle, repo, job["base"], haves, name)
            self.listeners[job["key"]] = on_event
            result = await self._on(address, {**job, "bundle": bundle})
            if result.get("need_full"):  # the worker lost its clone: send the base whole
                haves.clear()
                bundle = await loop.run_in_executor(None, make_bundle, repo, job["base"], [], name)
                result = await self._on(address, {**job, "bundle": bundle})
        finally:
            self.busy[address] -= 1
            self.listeners.pop(job["key"], None)
        if "error" not in result and job["base"] not in haves:
            haves.append(job["base"])
        return result

    async def _on(self, address: str, job: dict[str, Any]) -> dict[str, Any]:
        try:
            return await self._submit(address, job)
        except _TaskFailed as failed:
            return {"worker": address, "error": str(failed)}

    async def _submit(self, address: str, job: dict[str, Any]) -> dict[str, Any]:
        info = self.workers.get(address) or {}
        resources = {"agents": 1} if "agents" in (info.get("resources") or {}) else None
        try:
            future = self.client.submit(
                on_worker,
                job,
                key=f"{job['key']}-{os.urandom(4).hex()}",
                workers=[address],
                allow_other_workers=False,
                resources=resources,
                pure=False,
            )
        except Exception as error:  # a closed client: the scheduler is gone
            raise ClusterLost(f"{type(error).__name__}: {error}") from None
        waiting = asyncio.ensure_future(future)
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=POLL_SECONDS)
                if done:
                    break
                if self.lost is not None:
                    raise ClusterLost(self.lost)
                if address not in self.workers:
                    self.workers_lost.add(address)
                    raise WorkerLost(address)
            return dict(waiting.result())
        except (ClusterLost, WorkerLost, asyncio.CancelledError):
            waiting.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(future.cancel(), 2.0)
            raise
        except Exception as error:
            raise await self._why_failed(address, error) from None

    async def _why_failed(self, address: str, error: Exception) -> Exception:
        """What a failed task means: the scheduler gone (ClusterLost), its worker gone or the
        task dropped (WorkerLost: not the attempt's fault), else the task's own error."""
        name = type(error).__name__
        dropped = name in ("KilledWorker", "FutureCancelledError", "CancelledError")
        if dropped or isinstance(error, OSError | TimeoutError):
            try:
                await self._refresh()
            except Exception as again:
                return ClusterLost(f"the scheduler at {self.address} is unreachable ({again!r})")
            if self.client.status != "running":
                return ClusterLost(f"the client lost the scheduler at {self.address}")
            self.workers_lost.add(address)
            return WorkerLost(address)
        return _TaskFailed(f"{name}: {error}")

    async def close(self) -> None:
        """End this run's leftovers on every worker's machine, then disconnect.

        Every attempt that ended on a live worker cleaned up after itself; a worker that died
        left its agent and worktree (and the record naming them): the live workers of each
        machine end those, and, when one of this run's workers was lost, also every process
        still carrying the run's token there (a scan of /proc: only then)."""
        if self._watch is not None:
            self._watch.cancel()
        if self.client is None:
            return
        if self.lost is None and self.topic is not None:
            run_id = self.topic.removeprefix("stretto-") if self.workers_lost else None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.run(sweep_on_worker, run_id), 15)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), 5)


def clean_cluster(address: str) -> list[dict[str, Any]]:
    """``stretto clean --cluster``: on every worker, end what dead workers' attempts left."""
    try:
        client = Client(address, timeout=CLEAN_TIMEOUT, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as error:
        raise RunError(f"cannot reach the Dask scheduler at {address} ({error})") from None
    try:
        return list(client.run(sweep_on_worker, None).values())
    finally:
        client.close()  # type: ignore[no-untyped-call]
