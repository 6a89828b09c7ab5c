"""Frontends: the CLI and its views, the MCP server (later the terminal UI and the HTTP server).

Each is a thin adapter of :mod:`stretto.api` in its framework's idiom: click commands
(:mod:`~stretto.frontends.cli`, :mod:`~stretto.frontends.control_commands`,
:mod:`~stretto.frontends.setup_commands`, :mod:`~stretto.frontends.mcp_commands`), MCP tools
(:mod:`~stretto.frontends.mcp_server`, which alone imports the MCP SDK). May import
:mod:`stretto.api` and the base modules ``stretto.errors`` and ``stretto`` (the version) only;
an import contract checks it in CI.
"""
