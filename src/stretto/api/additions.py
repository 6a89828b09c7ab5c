"""Tasks added to a running run, checked from outside its engine (before anything is sent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stretto.engine.additions import check_addition
from stretto.engine.journal import JOURNAL_NAME, parse_record
from stretto.engine.runs import saved_plan
from stretto.errors import ControlError
from stretto.options import RunOptions
from stretto.plans.additions import Addition


def check_against_run(run_dir: Path, status: Any, text: str, file: str) -> Addition:
    """:func:`~stretto.engine.additions.check_addition` against the run's tasks as its journal
    (``status``) tells them, its saved plan's ``unowned`` and its journaled options.

    Raises:
        PlanError: bad steps, located in ``text``.
        ControlError: the run has not started its tasks yet (a goal being planned).
    """
    options: RunOptions | None = None
    with open(run_dir / JOURNAL_NAME, "rb") as journal:
        for line in journal:  # run_started is among the first records
            record = parse_record(line.rstrip(b"\n"))
            if record.type == "run_started":
                options = RunOptions.from_dict(record.fields["options"])
                break
    if options is None:
        raise ControlError(f"run {status.run_id} has not started its tasks yet; add them later")
    existing = {name: task.state for name, task in status.tasks.items()}
    unowned = saved_plan(run_dir).unowned
    return check_addition(text, file, existing, unowned=unowned, options=options)
