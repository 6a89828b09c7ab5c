"""The engine: carries a run out, and is the only place with effects on the repository.

Owns the runner loop (:mod:`~stretto.engine.runner`, the only concurrency), the attempt
lifecycle (:mod:`~stretto.engine.attempt`: worktree, prompt, agent, commit, gates), workspaces
(:mod:`~stretto.engine.workspace`, their setup commands and sparse checkouts),
gates, the merge queue, the journal, resume and clean, control commands
(:mod:`~stretto.engine.control`), detached engines (:mod:`~stretto.engine.detach`), reading
runs and their events (:mod:`~stretto.engine.runs`, :mod:`~stretto.engine.events`),
planning from a goal for a run (:mod:`~stretto.engine.goal`), and where attempts run
(:mod:`~stretto.engine.backend`: here, or on Dask workers through
:mod:`~stretto.engine.remote_attempt`, :mod:`~stretto.engine.dask_backend` (the only module
that imports Dask, and only for a cluster run) and, on the worker,
:mod:`~stretto.engine.worker_attempt` and :mod:`~stretto.engine.worker_pool`).

May import :mod:`stretto.routing`, :mod:`stretto.planning`, :mod:`stretto.project`,
:mod:`stretto.schedule`, :mod:`stretto.agents`, :mod:`stretto.plans` and the base modules.
Frontends never import it: they go through :mod:`stretto.api`.
"""
