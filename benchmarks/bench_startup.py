"""Start-up: wall time of ``stretto --help`` next to a bare ``python -c pass``.

Each command runs as a fresh process, interleaved with the others round by round, and the figure
is the median. Beside the time, the modules that ``--help`` loads are listed, to show that
nothing heavy (pydantic, YAML, the scheduler, an HTTP stack) is imported to print help.

    .venv/bin/python benchmarks/bench_startup.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import subprocess

from _common import (
    CPU_TIMES,
    PYTHON,
    STRETTO,
    child_env,
    machine,
    median,
    ms,
    quartiles,
    table,
    target,
    time_commands,
    verdict,
)

TARGET_MS = 150
#: Top-level packages that must not load for ``--help`` (style guide, point 12).
HEAVY = ("pydantic", "pydantic_core", "yaml", "_yaml", "textual", "mcp", "httpx", "anyio", "rich")

PROBE = """
import contextlib, io, sys
base = set(sys.modules)
from stretto.frontends.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"], prog_name="stretto")
    except SystemExit:
        pass
print(len(base), len(sys.modules))
for name in sorted(set(sys.modules) - base):
    print(name)
"""


def imported_modules() -> tuple[int, int, list[str]]:
    """Modules in ``sys.modules`` before stretto is imported, after ``--help``, and the new ones."""
    out = subprocess.run(
        [PYTHON, "-c", PROBE], capture_output=True, text=True, env=child_env(), check=True
    ).stdout.split()
    return int(out[0]), int(out[1]), out[2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=30, help="timed runs per command (>= 10)")
    args = parser.parse_args()

    print(f"machine: {machine()}")
    commands = {
        "python -c pass": [PYTHON, "-c", "pass"],
        "python -c 'import click'": [PYTHON, "-c", "import click"],
        "stretto --help": [STRETTO, "--help"],
        "python -m stretto --help": [PYTHON, "-m", "stretto", "--help"],
        "stretto --version": [STRETTO, "--version"],
    }
    times = time_commands(commands, args.repeat)
    floor = median(times["python -c pass"])
    cpu_floor = median(CPU_TIMES["python -c pass"])
    rows = []
    for name, values in times.items():
        mid = median(values)
        q1, q3 = quartiles(values)
        cpu = median(CPU_TIMES[name])
        rows.append(
            [
                name,
                ms(mid),
                f"{ms(q1)}-{ms(q3)}",
                f"+{ms(mid - floor)}",
                f"{mid / floor:.2f}x",
                ms(cpu),
                f"{cpu / cpu_floor:.2f}x",
            ]
        )
    print(f"\n{args.repeat} runs each, interleaved, bytecode cache warm; medians")
    print(table(["command", "wall", "wall IQR", "vs python", "ratio", "CPU", "ratio"], rows))

    before, after, new = imported_modules()
    stretto_mods = [m for m in new if m.split(".")[0] == "stretto"]
    heavy = sorted({m.split(".")[0] for m in new} & set(HEAVY))
    print(
        f"\nmodules: {before} before stretto is imported, {after} after `stretto --help` "
        f"(+{len(new)}: {len([m for m in new if m.split('.')[0] == 'click'])} click, "
        f"{len(stretto_mods)} stretto: {', '.join(stretto_mods)})"
    )
    print(f"heavy packages loaded by --help: {', '.join(heavy) if heavy else 'none'}")
    print("comparison from the issue (not measured here): bernstein 3.23.0 --help takes 3.3 s\n")

    target("help", TARGET_MS, median(times["stretto --help"]))
    target("python -m stretto --help", TARGET_MS, median(times["python -m stretto --help"]))
    verdict(f"help loads no heavy package: {', '.join(heavy) or 'none'}", not heavy)


if __name__ == "__main__":
    main()
