"""``stretto serve``: the HTTP task server (:mod:`stretto.frontends.server`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stretto import api


def register(main: click.Group, reports_errors: Callable[[Any], Any]) -> None:
    """Add the command to the ``stretto`` group."""

    @main.command()
    @click.option("--port", type=click.IntRange(1, 65535), default=8766, show_default=True)
    @click.option(
        "--allow-remote",
        is_flag=True,
        help="Listen on every interface and answer any Host (the token is still needed).",
    )
    @reports_errors
    def serve(port: int, allow_remote: bool) -> None:
        """Serve this repository's runs over HTTP: list, start, follow (SSE), steer them.

        Every request needs the bearer token kept in .stretto/serve-token (made on first start,
        0600). Runs started here are detached: they outlive the server.
        """
        from stretto.frontends.server import serve as run_server

        repo = api.repo_root(Path.cwd())
        token, path = api.server_token(repo, "serve")
        where = "every interface" if allow_remote else "127.0.0.1"
        if allow_remote:
            click.echo(
                "warning: --allow-remote: anyone who can reach this machine and has the token "
                "can start and steer runs",
                err=True,
            )
        click.echo(f"stretto serve: {repo} on {where}, port {port}", err=True)
        click.echo(f"token: {path} (send 'Authorization: Bearer TOKEN')", err=True)
        run_server(repo, port=port, token=token, allow_remote=allow_remote)
