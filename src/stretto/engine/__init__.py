"""The engine: carries a run out, and is the only place with effects on the repository.

Owns the runner loop (:mod:`~stretto.engine.runner`, the only concurrency), the attempt
lifecycle (:mod:`~stretto.engine.attempt`: worktree, prompt, agent, commit, gates), workspaces
(:mod:`~stretto.engine.workspace`, their setup commands and sparse checkouts),
gates, the merge queue, the journal, resume and clean, control commands
(:mod:`~stretto.engine.control`), detached engines (:mod:`~stretto.engine.detach`), reading
runs and their events (:mod:`~stretto.engine.runs`, :mod:`~stretto.engine.events`), and
planning from a goal for a run (:mod:`~stretto.engine.goal`).

May import :mod:`stretto.routing`, :mod:`stretto.planning`, :mod:`stretto.project`,
:mod:`stretto.schedule`, :mod:`stretto.agents`, :mod:`stretto.plans` and the base modules.
Frontends never import it: they go through :mod:`stretto.api`.
"""
