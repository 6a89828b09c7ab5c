"""The CLI commands that draw a run: ``report`` (one HTML file) and ``trace`` (Chrome trace
events); and :func:`save_report`, which the commands that run a plan call when the run ends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stretto import api
from stretto.errors import StrettoError

REPORT_NAME = "report.html"


def save_report(handle: Any) -> Path | None:
    """Write ``report.html`` into the run's directory; on failure say so on stderr (the run's
    outcome stands) and return None."""
    from stretto.frontends.report_html import write_report

    try:
        return write_report(api.run_report(handle), handle.run_dir / REPORT_NAME)
    except (OSError, StrettoError) as error:
        click.echo(f"warning: could not write the run's report: {error}", err=True)
        return None


def _write(text: str, output: Path) -> None:
    if str(output) == "-":
        click.echo(text, nl=False)
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)


def register(main: click.Group, reports_errors: Callable[[Any], Any]) -> None:
    """Add the commands to the ``stretto`` group."""

    @main.command()
    @click.argument("run_id", required=False)
    @click.option(
        "-o",
        "--output",
        type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
        help="Where to write it (default: .stretto/runs/RUN/report.html; - for stdout).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Write the report's data as JSON.")
    @reports_errors
    def report(run_id: str | None, output: Path | None, as_json: bool) -> None:
        """Write a run's report (default: the latest run): one self-contained HTML file with
        the timeline of attempts, the task graph, costs, routing and failures."""
        from stretto.frontends.report_html import write_report

        handle = api.open_run(Path.cwd(), run_id)
        data = api.run_report(handle)
        if as_json:
            _write(json.dumps(data.to_dict(), indent=2) + "\n", output or Path("-"))
            return
        if output is not None and str(output) == "-":
            from stretto.frontends.report_html import render_report

            _write(render_report(data), output)
            return
        path = write_report(data, output or handle.run_dir / REPORT_NAME)
        click.echo(f"report of run {data.run_id} ({data.state}): {path}")

    @main.command()
    @click.argument("run_id", required=False)
    @click.option(
        "-o",
        "--output",
        type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
        default=Path("trace.json"),
        show_default=True,
        help="Where to write the trace (- for stdout).",
    )
    @reports_errors
    def trace(run_id: str | None, output: Path) -> None:
        """Write a run (default: the latest) as Chrome trace events: open the file in
        https://ui.perfetto.dev or chrome://tracing. One row per agent slot."""
        from stretto.frontends.trace import trace_events

        data = api.run_report(api.open_run(Path.cwd(), run_id))
        _write(json.dumps(trace_events(data)) + "\n", output)
        if str(output) != "-":
            click.echo(f"trace of run {data.run_id}: {output}")
