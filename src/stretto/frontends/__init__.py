"""Frontends: the CLI and its views (later the terminal UI, the MCP and HTTP servers).

Each is a thin adapter of :mod:`stretto.api` in its framework's idiom. May import
:mod:`stretto.api` and the base modules ``stretto.errors`` and ``stretto`` (the version) only;
an import contract checks it in CI.
"""
