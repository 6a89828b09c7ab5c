"""Planning: a free-form goal becomes a plan with one model call; a failing task is split.

Owns the planning call and its one repair (:mod:`~stretto.planning.planner`), the answer format
and prompts, the repository summary the planner sees, and turning a split answer into tasks
(:mod:`~stretto.planning.splitting`).

May import :mod:`stretto.plans`, :mod:`stretto.schedule`, :mod:`stretto.agents`,
:mod:`stretto.project` and the base modules; never the engine or routing.
"""
