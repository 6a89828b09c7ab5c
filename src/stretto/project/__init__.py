"""The project around runs: ``stretto init`` (writing stretto.toml, detecting gates, keeping
``.stretto/`` out of git), ``stretto doctor`` and ``stretto agents``, and the demo repository.

May import :mod:`stretto.agents`, :mod:`stretto.testing`, :mod:`stretto.plans` and the base
modules.
"""
