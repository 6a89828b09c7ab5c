"""``stretto mcp`` (serve) and ``stretto mcp config`` (the snippet each MCP client needs).

The snippets name this repository and the ``stretto`` that is running now, so the client starts
the same installation. ``--write`` merges the snippet into the client's config file and keeps
everything else in it; a file that cannot be read as JSON (or TOML) is left alone, with the
reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stretto import api
from stretto.errors import UsageError

CLIENTS = ("claude-code", "cursor", "vscode", "claude-desktop", "codex", "gemini")


def stretto_command() -> list[str]:
    """How a client should start this stretto."""
    script = Path(sys.executable).parent / "stretto"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("stretto")
    return [found] if found else [sys.executable, "-m", "stretto"]


def config_file(client: str, repo: Path) -> Path:
    """Where ``client`` reads its MCP servers from (per repository where it can)."""
    home = Path.home()
    return {
        "claude-code": repo / ".mcp.json",
        "cursor": repo / ".cursor" / "mcp.json",
        "vscode": repo / ".vscode" / "mcp.json",
        "claude-desktop": (
            home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
            if sys.platform == "darwin"
            else home / ".config" / "Claude" / "claude_desktop_config.json"
        ),
        "codex": Path(os.environ.get("CODEX_HOME", home / ".codex")) / "config.toml",
        "gemini": repo / ".gemini" / "settings.json",
    }[client]


def snippet(client: str, repo: Path, transport: str, port: int, token: str | None) -> Any:
    """The entry for ``client`` (a dict for JSON clients, TOML text for codex)."""
    command = stretto_command()
    args = [*command[1:], "mcp", "--repo", str(repo)]
    url = f"http://127.0.0.1:{port}/mcp"
    headers = {"Authorization": f"Bearer {token}"}
    if transport == "http" and client in ("claude-desktop", "codex"):
        raise UsageError(f"{client} starts its MCP servers itself: use --transport stdio")
    if client == "codex":
        quoted = ", ".join(json.dumps(a) for a in args)
        return (
            f"[mcp_servers.stretto]\ncommand = {json.dumps(command[0])}\nargs = [{quoted}]\n"
            "required = true  # wait for stretto before the first model request\n"
            'default_tools_approval_mode = "approve"  # `codex exec` cannot ask\n'
        )
    if transport == "http":
        entry: dict[str, Any] = {"url": url, "headers": headers}
        if client in ("claude-code", "vscode"):
            entry = {"type": "http", **entry}
        if client == "gemini":
            entry = {"httpUrl": url, "headers": headers}
    else:
        entry = {"command": command[0], "args": args}
        if client == "vscode":
            entry = {"type": "stdio", **entry}
    key = "servers" if client == "vscode" else "mcpServers"
    return {key: {"stretto": entry}}


def merge_json(path: Path, entry: dict[str, Any]) -> None:
    """Add ``entry`` (``{key: {"stretto": ...}}``) to a JSON config, keeping the rest."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text() or "{}")
        except (OSError, ValueError) as error:
            raise UsageError(f"{path} is not JSON stretto can read ({error}); left alone") from None
        if not isinstance(data, dict):
            raise UsageError(f"{path} does not hold a JSON object; left alone")
    [(key, servers)] = entry.items()
    existing = data.get(key)
    if existing is not None and not isinstance(existing, dict):
        raise UsageError(f"{path}: '{key}' is not an object; left alone")
    data[key] = {**(existing or {}), **servers}
    _write(path, json.dumps(data, indent=2) + "\n")


def merge_toml(path: Path, table: str) -> None:
    """Put the ``[mcp_servers.stretto]`` table in a TOML config, replacing an older one."""
    import tomllib

    text = path.read_text() if path.exists() else ""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path} is not TOML stretto can read ({error}); left alone") from None
    block = re.compile(r"^\[mcp_servers\.stretto\]\n(?:(?!\[).*\n?)*", re.M)
    if block.search(text):
        text = block.sub(table + "\n", text, count=1)
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + table
    tomllib.loads(text)  # still valid
    _write(path, text)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.stretto-tmp")
    temp.write_text(text)
    os.replace(temp, path)


def register(main: click.Group, reports_errors: Callable[[Any], Any]) -> None:
    """Add ``stretto mcp`` and ``stretto mcp config`` to the ``stretto`` group."""

    @main.group(invoke_without_command=True)
    @click.option(
        "--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True
    )
    @click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
    @click.option(
        "--repo",
        type=click.Path(path_type=Path, file_okay=False),
        default=Path("."),
        help="The repository to serve (default: the current one).",
    )
    @click.option(
        "--allow-repo",
        "allow",
        multiple=True,
        type=click.Path(path_type=Path, file_okay=False),
        help="Another repository the tools may act on (repeatable).",
    )
    @click.pass_context
    @reports_errors
    def mcp(
        ctx: click.Context, transport: str, port: int, repo: Path, allow: tuple[Path, ...]
    ) -> None:
        """Serve stretto to IDE agents over MCP: stdio (default), or streamable HTTP on
        127.0.0.1 with a bearer token. `stretto mcp config --client NAME` shows the setup."""
        if ctx.invoked_subcommand is not None:
            return
        top = api.repo_root(repo)
        roots = [api.repo_root(p) for p in allow]
        try:
            from stretto.frontends import mcp_server
        except ImportError as error:
            raise UsageError(
                f"`stretto mcp` needs the MCP SDK ({error}); install it with "
                "`pip install 'stretto[mcp]'`"
            ) from None
        token = None
        if transport == "http":
            token, path = api.server_token(top)
            click.echo(
                f"stretto MCP server on http://127.0.0.1:{port}/mcp for {top} (bearer token in "
                f"{path}; `stretto mcp config` shows the client setup)",
                err=True,
            )
        mcp_server.serve(top, transport=transport, port=port, token=token, allowed=roots)

    @mcp.command("config")
    @click.option("--client", type=click.Choice(CLIENTS), required=True)
    @click.option(
        "--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True
    )
    @click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
    @click.option("--write", is_flag=True, help="Add it to the client's config file.")
    @click.option("--repo", type=click.Path(path_type=Path, file_okay=False), default=Path("."))
    @reports_errors
    def config(client: str, transport: str, port: int, write: bool, repo: Path) -> None:
        """Print the MCP config snippet for CLIENT and this repository (or --write it)."""
        top = api.repo_root(repo)
        token = api.server_token(top)[0] if transport == "http" else None
        entry = snippet(client, top, transport, port, token)
        path = config_file(client, top)
        text = entry if isinstance(entry, str) else json.dumps(entry, indent=2) + "\n"
        if not write:
            click.echo(f"# {client}: add to {path}")
            click.echo(text, nl=False)
            if transport == "http":
                click.echo(f"# then start the server: stretto mcp --transport http --port {port}")
            return
        if isinstance(entry, str):
            merge_toml(path, entry)
        else:
            merge_json(path, entry)
        click.echo(f"wrote the stretto MCP server into {path}")
