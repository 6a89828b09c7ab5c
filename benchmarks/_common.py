"""Helpers shared by the benchmark scripts: timing, medians, tables and target lines.

The machine these run on is shared and noisy, so every figure is a median over repeated runs,
and each is measured in the same process, interleaved, with what it is compared to.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PYTHON = sys.executable
STRETTO = str(VENV_BIN / "stretto")


def child_env() -> dict[str, str]:
    """The environment for timed children: as a user's shell, so bytecode caches get written.

    Some sandboxes export PYTHONDONTWRITEBYTECODE=1; with an editable install that means
    stretto's own modules are recompiled on every start, which no installed copy ever does.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


#: CPU seconds (user + system) of each timed command or call, by name.
CPU_TIMES: dict[str, list[float]] = {}
#: Peak resident memory (bytes) of each timed command, by name.
MAX_RSS: dict[str, list[int]] = {}


def time_commands(
    commands: dict[str, Sequence[str]], repeat: int, *, warmup: int = 2, cwd: Path | None = None
) -> dict[str, list[float]]:
    """Wall seconds of each command, run ``repeat`` times each, interleaved round by round.

    The order rotates every round so no command always runs right after the same neighbour.
    The CPU seconds (user + system) of each run are kept too, in :data:`CPU_TIMES`: on a busy
    machine they move much less than wall time, so they show what a change did.
    """
    env = child_env()
    names = list(commands)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        CPU_TIMES[name] = []
        MAX_RSS[name] = []
    for round_ in range(warmup + repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            child = subprocess.Popen(
                commands[name],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
            )
            _, status, usage = os.wait4(child.pid, 0)  # this child's own CPU time and peak RSS
            elapsed = time.perf_counter() - start
            child.returncode = os.waitstatus_to_exitcode(status)
            if child.returncode:
                raise subprocess.CalledProcessError(child.returncode, commands[name])
            if round_ >= warmup:
                times[name].append(elapsed)
                CPU_TIMES[name].append(usage.ru_utime + usage.ru_stime)
                MAX_RSS[name].append(usage.ru_maxrss * 1024)  # Linux reports KiB
    return times


def time_calls(
    calls: dict[str, Callable[[], object]],
    repeat: int,
    *,
    warmup: int = 1,
    before: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, interleaved round by round like :func:`time_commands`.

    ``before`` runs (untimed) before every call, e.g. to clear caches. CPU seconds of this
    process during each call are added to :data:`CPU_TIMES`.
    """
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            if before is not None:
                before()
            cpu = time.process_time()
            start = time.perf_counter()
            calls[name]()
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu
            if round_ >= warmup:
                times[name].append(elapsed)
                CPU_TIMES.setdefault(name, []).append(cpu)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """First and third quartile (the spread quoted beside a median)."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table, first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        out = [row[0].ljust(widths[0])]
        out += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def target(name: str, limit: float, value: float, unit: str = "ms", scale: float = 1000) -> bool:
    """Print ``TARGET name <= limit unit: value unit  OK`` (or MISSED); return whether met."""
    shown = value * scale
    ok = shown <= limit
    figure = f"{shown:.0f}" if shown >= 100 else f"{shown:.3g}"
    print(f"TARGET {name} <= {limit:g} {unit}: {figure} {unit}  {'OK' if ok else 'MISSED'}")
    return ok


def verdict(label: str, ok: bool) -> bool:
    """Print ``TARGET label  OK`` (or MISSED) for a target that is not a time limit."""
    print(f"TARGET {label}  {'OK' if ok else 'MISSED'}")
    return ok


def machine() -> str:
    """One line naming the machine: cores, load, Python."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores "
        f"(load {load:.2f}), Python {platform.python_version()} ({sys.executable})"
    )
