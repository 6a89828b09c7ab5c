"""Routing and money: which agent and model an attempt gets, and what it cost.

Owns the router (:mod:`~stretto.routing.router`: the learned policy; static cascade, then
LinUCB, by the rules of :mod:`~stretto.routing.choice` over :mod:`~stretto.routing.features`,
one :mod:`~stretto.routing.linucb` model per arm of :mod:`~stretto.routing.arms`), dispatch of
an attempt to an arm with its budget check (:mod:`~stretto.routing.dispatch`), prices and the
ledger (:mod:`~stretto.routing.ledger`, :mod:`~stretto.routing.costview`), and the read-only
views behind ``stretto cost``, the dry run's estimate and ``stretto explain``.

May import :mod:`stretto.plans`, :mod:`stretto.schedule`, :mod:`stretto.agents` and the base
modules; never the engine (it is handed journal records, not run directories).
"""
