"""``stretto cluster local``: a loopback Dask cluster to try ``stretto run --cluster`` on.

Dask is imported only when the command runs (``stretto --help`` stays fast).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stretto.api import cluster as clusters


def register(main: click.Group, reports_errors: Callable[[Any], Any]) -> None:
    """Add the ``cluster`` group to the ``stretto`` group."""

    @main.group()
    def cluster() -> None:
        """Dask clusters that run attempts (`stretto run --cluster ADDRESS`; docs/cluster.md)."""

    @cluster.command("local")
    @click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True)
    @click.option(
        "--slots",
        type=click.IntRange(1, 64),
        default=4,
        show_default=True,
        help="Agents each worker runs at once (its `agents` resource).",
    )
    @click.option("--port", type=click.IntRange(0, 65535), default=0, help="Scheduler port.")
    @click.option(
        "--dir",
        "directory",
        type=click.Path(path_type=Path, file_okay=False),
        help="Where the workers keep their clones (default: a new temp directory).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the address as JSON.")
    @reports_errors
    def local(workers: int, slots: int, port: int, directory: Path | None, as_json: bool) -> None:
        """Start a scheduler on 127.0.0.1 and WORKERS separate `dask worker` processes, print
        the address, and run until Ctrl-C (which stops them all)."""
        running = clusters.start_local_cluster(workers, slots, directory=directory, port=port)
        stopping: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda n, _f: stopping.append(n))
        try:
            if as_json:
                click.echo(json.dumps(running.to_dict()))
            else:
                click.echo(f"cluster at {running.address}: {workers} worker(s) x {slots} slot(s)")
                click.echo(f"  run on it:  stretto run --cluster {running.address} PLAN")
                click.echo(f"  workers' directories and logs: {running.directory}")
                click.echo("  Ctrl-C stops it")
            while not stopping:
                if running.scheduler.poll() is not None:
                    raise click.ClickException("the scheduler exited; see scheduler.log")
                time.sleep(0.2)
        finally:
            running.stop()
        if not as_json:
            click.echo("cluster stopped")

    @cluster.command("clean")
    @click.argument("address")
    @click.option("--json", "as_json", is_flag=True, help="Print what was removed as JSON.")
    @reports_errors
    def clean(address: str, as_json: bool) -> None:
        """End agents and remove worktrees that attempts of dead workers left on ADDRESS's
        workers (also `stretto clean --cluster ADDRESS`)."""
        show_clean(address, as_json)


def show_clean(address: str, as_json: bool) -> None:
    """Clean the workers of ``address`` and say what was removed."""
    done = clusters.clean_cluster(address)
    if as_json:
        click.echo(json.dumps({"cluster": address, "workers": done}, indent=2))
        return
    for item in done:
        click.echo(
            f"{item['worker']}: {len(item['processes'])} process(es) ended, "
            f"{len(item['worktrees'])} worktree(s) removed"
        )
