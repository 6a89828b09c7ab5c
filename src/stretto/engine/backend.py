"""Where an attempt runs: the backend interface, and the local backend.

The runner, the scheduler, the journal, the router, the ledger and the merge queue stay in the
engine process and never ask where an attempt ran: :class:`~stretto.engine.attempt.Attempts`
hands each routed attempt to its backend and gets an
:class:`~stretto.engine.outcomes.AttemptEnd` back (after the merge queue, which is always
here).

* :class:`LocalBackend` (the default): a worktree of the repository and the agent as a child
  process of this engine (:meth:`Attempts.run_here`).
* :class:`~stretto.engine.remote_attempt.RemoteBackend` over
  :class:`~stretto.engine.dask_backend.DaskCluster`: the agent and the attempt's gates run on
  a Dask worker; chosen with ``stretto run --cluster ADDRESS`` or ``[cluster] scheduler``.
  Its modules are imported only then (:func:`stretto.engine.remote_attempt.open_backend`), so
  a local run never imports Dask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from stretto.engine.attempt import Attempts
    from stretto.engine.outcomes import AttemptEnd
    from stretto.plans.plan import Task
    from stretto.routing.dispatch import Route


class ClusterLost(Exception):
    """The cluster's scheduler (or the network to it) is gone: the run stops, resumably."""


class WorkerLost(Exception):
    """The worker running an attempt left the cluster (killed, crashed, cut off)."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.address = address


class Backend(Protocol):
    """Runs routed attempts somewhere and says how each ended."""

    name: str

    async def start(self) -> None:
        """Get ready (connect); raise a :class:`~stretto.errors.StrettoError` that says why not."""

    async def run(self, attempts: Attempts, task: Task, attempt: int, route: Route) -> AttemptEnd:
        """Run one attempt to its end (landed through the merge queue, or why not)."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (connections; leftovers of the run on workers)."""


class LocalBackend:
    """Today's path: a worktree here and the agent as a child process."""

    name = "local"

    async def start(self) -> None:
        return None

    async def run(self, attempts: Attempts, task: Task, attempt: int, route: Route) -> AttemptEnd:
        return await attempts.run_here(task, attempt, route)

    async def close(self) -> None:
        return None
