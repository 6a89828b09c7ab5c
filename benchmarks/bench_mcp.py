"""Figures of ``stretto mcp`` (issue 13), each side by side with a minimal server on the same SDK.

1. Start-up: from launching the server to its answer to ``initialize`` over stdio (target: within
   150 ms of the minimal server). Each round starts ``stretto mcp --repo R`` (the console script,
   as ``stretto mcp config`` tells clients to) and a minimal server (this SDK's ``MCPServer`` with
   one trivial tool, written to a temporary file) as fresh processes, in rotating order, writes
   the ``initialize`` request to the server's stdin at once and times the first line it answers
   (raw JSON-RPC over the pipes: no client library in the timing). The target is on the median
   of the rounds' own differences (the two ran back to back). For reference, measured the
   same way (to the first line they print): a bare ``python`` and one that imports the SDK
   first. Then, in one process per round, where the start-up goes phase by phase (SDK import,
   logging set-up, stretto's modules, the repository, the run API, the tools' schemas) next to
   the minimal server's one tool.
2. ``stretto_status`` round trips (target: p95 <= 50 ms): one stdio session with each server
   through the SDK's client, a repository with one finished run of two shell steps, and many
   calls alternating between ``stretto_status(run_id)`` and the minimal server's trivial tool
   (the floor: the SDK and the pipes). Beside them, the same status read in this process
   (``api.open_run(repo, run_id).status()``), which is what the tool does between the pipes.
3. ``stretto --help`` next to ``python -c pass`` as fresh processes (medians, ratio), and next to
   the last commit before the MCP server (a temporary worktree, run as ``python -m stretto
   --help`` with its ``src`` first on ``PYTHONPATH``, like this tree's). The server must not make
   ``--help`` slower: side by side the two differ by less than this machine's noise, so the
   target is on what is certain, the modules ``--help`` loads now and did not before, and their
   own import time (``-X importtime``, median). No package of the SDK's side may load for
   ``--help``, ``stretto mcp --help`` or ``stretto mcp config``.

Run: .venv/bin/python benchmarks/bench_mcp.py [--quick] [--json] [--before REF | --no-before]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from _common import (
    CPU_TIMES,
    PYTHON,
    ROOT,
    STRETTO,
    child_env,
    machine,
    median,
    quartiles,
    table,
    target,
    time_commands,
    verdict,
)
from stretto import api
from stretto.testing.repo import make_repo

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # the detached engine inherits this environment

START_TARGET_MS = 150  # stretto mcp start-up minus the minimal server's
STATUS_P95_MS = 50
HELP_MS = 150  # bench_startup.py's target
ADDED_IMPORT_MS = 5  # what the MCP server may add to --help: the import of its modules

MINIMAL_SERVER = '''\
"""The smallest useful MCP server on the SDK stretto uses: one trivial tool, stdio."""
from mcp.server.mcpserver import MCPServer

server = MCPServer("minimal", log_level="WARNING")


@server.tool()
def ping(text: str = "") -> str:
    """Answer with the text."""
    return text


server.run("stdio")
'''

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "bench_mcp", "version": "0"},
    },
}

PLAN = """\
stages:
  - name: work
    steps:
      - {id: alpha, goal: write alpha, files: [a.txt], agent: shell, command: echo a > a.txt}
      - {id: beta, goal: write beta, files: [b.txt], agent: shell, command: echo b > b.txt}
"""

HELP_PROBE = """
import contextlib, io, json, sys
from stretto.frontends.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(sys.argv[1:], prog_name="stretto")
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""
#: Packages of the SDK's side: none of them should load to print help or a config snippet.
SDK_SIDE = {"mcp", "httpx2", "httpx", "uvicorn", "starlette", "anyio", "pydantic", "rich"}


def p95(values: Sequence[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def spread(values: Sequence[float]) -> dict[str, float]:
    q1, q3 = quartiles(values)
    return {
        "n": len(values),
        "p50": median(values),
        "q1": q1,
        "q3": q3,
        "p95": p95(values),
        "max": max(values),
    }


# --------------------------------------------------------------------------- 1. start-up


def time_to_line(
    argv: Sequence[str], cwd: Path, request: bytes = b"", timeout: float = 30
) -> tuple[float, float]:
    """Seconds from launching ``argv`` (``request`` written to its stdin at once) to the first
    line it writes, and the CPU seconds of the whole process (it exits when stdin closes)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    out = proc.stdout
    if request:
        proc.stdin.write(request)
        proc.stdin.flush()
    line: list[bytes] = []
    reader = threading.Thread(target=lambda: line.append(out.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    elapsed = time.perf_counter() - start
    proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    out.close()
    if not line or (request and b'"result"' not in line[0]):
        raise RuntimeError(f"{' '.join(argv)}: no answer within {timeout} s: {line}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def bench_start(repo: Path, minimal: Path, rounds: int, warmup: int = 2) -> dict[str, Any]:
    hello = json.dumps(INITIALIZE).encode() + b"\n"
    measures: dict[str, Callable[[], tuple[float, float]]] = {
        "stretto mcp": lambda: time_to_line([STRETTO, "mcp", "--repo", str(repo)], repo, hello),
        "minimal server": lambda: time_to_line([PYTHON, str(minimal)], repo, hello),
        "python: print": lambda: time_to_line([PYTHON, "-c", "print()"], repo),
        "python: import the SDK, print": lambda: time_to_line(
            [PYTHON, "-c", "import mcp.server.mcpserver; print()"], repo
        ),
    }
    names = list(measures)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup + rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed, used = measures[name]()
            if round_ >= warmup:
                wall[name].append(elapsed)
                cpu[name].append(used)
    return {"rounds": rounds, "wall": wall, "cpu": cpu}


PHASES = """
import json, sys, time
from pathlib import Path
repo = Path(sys.argv[1])
t = [time.perf_counter()]
from mcp.server.mcpserver import MCPServer
t.append(time.perf_counter())
MCPServer("first", log_level="WARNING")
t.append(time.perf_counter())
from stretto.frontends import cli, mcp_server
t.append(time.perf_counter())
top = cli.api.repo_root(repo)
t.append(time.perf_counter())
mcp_server.Stretto(top)
t.append(time.perf_counter())
mcp_server.build_server(top)
t.append(time.perf_counter())
server = MCPServer("minimal", log_level="WARNING")
@server.tool()
def ping(text: str = "") -> str:
    return text
t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
PHASE_NAMES = (
    ("import the SDK (mcp.server.mcpserver)", "both"),
    ("first MCPServer(): logging set-up (imports rich)", "both"),
    ("import stretto's CLI and mcp_server", "stretto"),
    ("api.repo_root(): git rev-parse", "stretto"),
    ("Stretto(): the run API's modules (engine, plans, YAML, config)", "stretto"),
    ("build_server(): MCPServer() and 12 tools' schemas", "stretto"),
    ("MCPServer() and 1 tool's schema", "minimal"),
)


def bench_phases(repo: Path, rounds: int) -> dict[str, list[float]]:
    """Where a server's start-up goes, in one process per round (medians taken later)."""
    times: dict[str, list[float]] = {name: [] for name, _ in PHASE_NAMES}
    for _ in range(rounds):
        out = subprocess.run(
            [PYTHON, "-c", PHASES, str(repo)],
            env=child_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for (name, _), value in zip(PHASE_NAMES, json.loads(out), strict=True):
            times[name].append(value)
    return times


def paired_gaps(start: dict[str, Any]) -> list[float]:
    """stretto mcp minus the minimal server, round by round (each pair ran back to back)."""
    pairs = zip(start["wall"]["stretto mcp"], start["wall"]["minimal server"], strict=True)
    return [ours - theirs for ours, theirs in pairs]


def start_gap(start: dict[str, Any]) -> float:
    """The start-up figure the target is on: the median of the rounds' own differences, which
    a machine whose speed drifts from round to round disturbs less than a difference of
    medians."""
    return median(paired_gaps(start))


def show_start(start: dict[str, Any], phases: dict[str, list[float]]) -> None:
    base = median(start["wall"]["minimal server"])
    rows = []
    for name, values in start["wall"].items():
        q1, q3 = quartiles(values)
        rows.append(
            [
                name,
                f"{median(values) * 1000:.0f}",
                f"{q1 * 1000:.0f}-{q3 * 1000:.0f}",
                f"{median(start['cpu'][name]) * 1000:.0f}",
                f"{(median(values) - base) * 1000:+.0f}",
                f"{median(values) / base:.2f}",
            ]
        )
    print(
        f"\n1. Launch to the first line over stdio (the servers: their answer to initialize), "
        f"fresh processes, {start['rounds']} rounds interleaved; medians (CPU: to exit)"
    )
    print(table(["process", "wall ms", "IQR ms", "CPU ms", "vs minimal ms", "ratio"], rows))
    gap = median(start["wall"]["stretto mcp"]) - base
    gap_cpu = median(start["cpu"]["stretto mcp"]) - median(start["cpu"]["minimal server"])
    q1, q3 = quartiles(paired_gaps(start))
    print(
        f"stretto mcp - minimal server: difference of the medians {gap * 1000:+.0f} ms (CPU "
        f"{gap_cpu * 1000:+.0f} ms); median of the {start['rounds']} rounds' own differences "
        f"{start_gap(start) * 1000:+.0f} ms (IQR {q1 * 1000:+.0f} to {q3 * 1000:+.0f})"
    )
    print(f"\nWhere start-up goes, in one process (medians of {len(next(iter(phases.values())))})")
    rows = [[name, who, f"{median(phases[name]) * 1000:.1f}"] for name, who in PHASE_NAMES]
    print(table(["phase", "paid by", "ms"], rows))
    extra = sum(median(phases[name]) for name, who in PHASE_NAMES if who == "stretto")
    own = median(phases[PHASE_NAMES[-1][0]])
    print(f"stretto's own phases: {extra * 1000:.0f} ms, the minimal server's: {own * 1000:.0f} ms")


# --------------------------------------------------------------------------- 2. round trips


def finished_run(root: Path) -> tuple[Path, str]:
    """A repository with one finished run of two shell steps, and that run's id."""
    repo = make_repo(root / "status", {"README.md": "bench\n"})
    plan = root / "status.yaml"
    plan.write_text(PLAN)
    handle = api.start_run(repo, plan, api.RunOptions(), detach=True)
    state = handle.wait(timeout=120)
    deadline = time.monotonic() + 30
    while handle.live() and time.monotonic() < deadline:
        time.sleep(0.02)
    if state.state != "finished":
        raise RuntimeError(f"the run to read ended {state.state}, not finished")
    return repo, handle.run_id


async def round_trips(repo: Path, run_id: str, minimal: Path, calls: int) -> dict[str, list[float]]:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    env = child_env()
    servers = {
        "stretto_status": StdioServerParameters(
            command=STRETTO, args=["mcp", "--repo", str(repo)], env=env, cwd=repo
        ),
        "minimal: ping": StdioServerParameters(command=PYTHON, args=[str(minimal)], env=env),
    }
    requests = {
        "stretto_status": ("stretto_status", {"run_id": run_id}),
        "minimal: ping": ("ping", {"text": "x"}),
    }
    times: dict[str, list[float]] = {name: [] for name in servers}
    async with contextlib.AsyncExitStack() as stack:
        sessions = {}
        for name, params in servers.items():
            read, write = await stack.enter_async_context(stdio_client(params))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            sessions[name] = session
        names = list(sessions)
        warmup = 10
        for i in range(warmup + calls):
            for name in names if i % 2 == 0 else names[::-1]:
                tool, arguments = requests[name]
                start = time.perf_counter()
                result = await sessions[name].call_tool(tool, arguments)
                elapsed = time.perf_counter() - start
                if result.is_error:
                    raise RuntimeError(f"{tool}: {result.content}")
                if i >= warmup:
                    times[name].append(elapsed)
        status = await sessions["stretto_status"].call_tool("stretto_status", {"run_id": run_id})
        assert status.structured_content is not None
        assert status.structured_content["state"] == "finished", status.structured_content
    return times


def in_process(repo: Path, run_id: str, calls: int) -> list[float]:
    times = []
    for i in range(10 + calls):
        start = time.perf_counter()
        api.open_run(repo, run_id).status()
        if i >= 10:
            times.append(time.perf_counter() - start)
    return times


def bench_status(root: Path, minimal: Path, calls: int) -> dict[str, Any]:
    import anyio

    repo, run_id = finished_run(root)
    series = anyio.run(round_trips, repo, run_id, minimal, calls)
    series["in process: open_run + status()"] = in_process(repo, run_id, calls)
    return {"calls": calls, "run_id": run_id, "series": series}


def show_status(status: dict[str, Any]) -> None:
    floor = spread(status["series"]["minimal: ping"])
    rows = []
    for name, values in status["series"].items():
        f = spread(values)
        rows.append(
            [
                name,
                f["n"],
                f"{f['p50'] * 1000:.2f}",
                f"{f['q1'] * 1000:.2f}-{f['q3'] * 1000:.2f}",
                f"{f['p95'] * 1000:.2f}",
                f"{f['max'] * 1000:.2f}",
                f"{f['p95'] / floor['p95']:.2f}",
            ]
        )
    print(
        "\n2. Tool round trips over stdio through the SDK's client, one session per server, "
        "calls alternating; a run of two shell steps, finished"
    )
    print(table(["call", "n", "p50 ms", "IQR ms", "p95 ms", "max ms", "p95 / ping p95"], rows))


# --------------------------------------------------------------------------- 3. --help


def before_mcp() -> str | None:
    """The last commit without the MCP server (the parent of the one that added it)."""
    added = subprocess.run(
        [
            "git",
            "log",
            "--diff-filter=A",
            "--format=%h",
            "--",
            "src/stretto/frontends/mcp_server.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return f"{added[-1]}~1" if added else None


@contextlib.contextmanager
def worktree(ref: str, root: Path) -> Iterator[Path]:
    path = root / "before"
    subprocess.run(
        ["git", "worktree", "add", "-q", "--detach", str(path), ref], cwd=ROOT, check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, check=False)


def loaded_by(args: Sequence[str], src: Path) -> list[str]:
    """The modules ``stretto ARGS`` loads, run from ``src``."""
    out = subprocess.run(
        [PYTHON, "-c", HELP_PROBE, *args],
        capture_output=True,
        text=True,
        env=dict(child_env(), PYTHONPATH=str(src)),
        check=True,
    ).stdout
    return list(json.loads(out))


def bench_help(root: Path, rounds: int, before: str | None) -> dict[str, Any]:
    src = ROOT / "src"
    commands: dict[str, Sequence[str]] = {
        "python -c pass": [PYTHON, "-c", "pass"],
        "stretto --help": [STRETTO, "--help"],
    }
    loaded: dict[str, list[str]] = {}
    with contextlib.ExitStack() as stack:
        trees = {"now": src}
        if before:  # both trees run alike: `env PYTHONPATH=<src> python -m stretto --help`
            other = stack.enter_context(worktree(before, root)) / "src"
            trees = {f"before ({before})": other, **trees}
            for name, tree in trees.items():
                commands[f"python -m stretto --help, {name}"] = [
                    "env",
                    f"PYTHONPATH={tree}",
                    PYTHON,
                    "-m",
                    "stretto",
                    "--help",
                ]
        times = time_commands(commands, rounds, cwd=root)
        for name, tree in trees.items():
            loaded[f"stretto --help, {name}"] = loaded_by(["--help"], tree)
        added: list[str] = []
        if before:
            old, new = (set(loaded[f"stretto --help, {name}"]) for name in trees)
            added = sorted(new - old)
        added_import = import_self_times(src, added, rounds=9)
        loaded["stretto mcp --help"] = loaded_by(["mcp", "--help"], src)
        config = ["mcp", "config", "--client", "claude-code", "--repo", str(root)]
        loaded["stretto mcp config --client claude-code"] = loaded_by(config, src)
    cpu = {name: CPU_TIMES[name] for name in commands}
    return {
        "rounds": rounds,
        "before": before,
        "wall": times,
        "cpu": cpu,
        "loaded": loaded,
        "added": added,
        "added_import": added_import,
    }


def import_self_times(src: Path, modules: Sequence[str], rounds: int) -> dict[str, float]:
    """Median seconds each of ``modules`` takes to import itself (``-X importtime``'s self
    column: without the modules it imports) when ``stretto --help`` runs from ``src``."""
    times: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(rounds if modules else 0):
        err = subprocess.run(
            [PYTHON, "-X", "importtime", "-c", HELP_PROBE, "--help"],
            capture_output=True,
            text=True,
            env=dict(child_env(), PYTHONPATH=str(src)),
            check=True,
        ).stderr
        for line in err.splitlines():
            if line.startswith("import time:") and line.count("|") == 2:
                self_us, _, name = (part.strip() for part in line[12:].split("|"))
                if name in times:
                    times[name].append(int(self_us) / 1e6)
    return {name: median(values) for name, values in times.items() if values}


def sdk_part(modules: Sequence[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & SDK_SIDE)


def show_help(helped: dict[str, Any]) -> None:
    floor = median(helped["wall"]["python -c pass"])
    cpu_floor = median(helped["cpu"]["python -c pass"])
    rows = []
    for name, values in helped["wall"].items():
        q1, q3 = quartiles(values)
        cpu = median(helped["cpu"][name])
        rows.append(
            [
                name,
                f"{median(values) * 1000:.1f}",
                f"{q1 * 1000:.1f}-{q3 * 1000:.1f}",
                f"{(median(values) - floor) * 1000:+.1f}",
                f"{median(values) / floor:.2f}",
                f"{cpu * 1000:.1f}",
                f"{cpu / cpu_floor:.2f}",
            ]
        )
    print(
        f"\n3. Fresh processes, {helped['rounds']} rounds interleaved, bytecode cache warm; medians"
    )
    print(table(["command", "wall ms", "IQR ms", "vs python", "ratio", "CPU ms", "ratio"], rows))
    loaded = helped["loaded"]
    if helped["before"]:
        old, new = (
            set(loaded[f"stretto --help, {n}"]) for n in (f"before ({helped['before']})", "now")
        )
        added = ", ".join(
            f"{name} ({seconds * 1000:.2f} ms to import itself)"
            for name, seconds in helped["added_import"].items()
        )
        print(
            f"modules loaded by --help: {len(old)} before, {len(new)} now (added: "
            f"{added or 'none'}; gone: {', '.join(sorted(old - new)) or 'none'})"
        )
    for what, modules in loaded.items():
        if what.startswith("stretto --help, before"):
            continue
        sdk = ", ".join(sdk_part(modules)) or "none"
        print(f"SDK-side packages loaded by `{what.split(',')[0]}`: {sdk}")


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--before",
        help="the version to compare --help with (default: the last commit without the server)",
    )
    which.add_argument("--no-before", action="store_true", help="skip that comparison")
    args = parser.parse_args()
    rounds, calls, help_rounds = (8, 150, 15) if args.quick else (30, 500, 30)
    before = None if args.no_before else (args.before or before_mcp())
    if not args.json:
        print(machine())
    with tempfile.TemporaryDirectory(prefix="stretto-bench-mcp-") as tmp:
        root = Path(tmp)
        minimal = root / "minimal_server.py"
        minimal.write_text(MINIMAL_SERVER)
        repo = make_repo(root / "start", {"README.md": "bench\n"})
        start = bench_start(repo, minimal, rounds)
        phases = bench_phases(repo, max(5, rounds // 2))
        status = bench_status(root, minimal, calls)
        helped = bench_help(root, help_rounds, before)

    gap = start_gap(start)
    status_p95 = p95(status["series"]["stretto_status"])
    help_now = median(helped["wall"]["stretto --help"])
    help_ratio = None
    added_ms = sum(helped["added_import"].values()) * 1000
    if before:
        now, then = (
            median(helped["wall"][f"python -m stretto --help, {name}"])
            for name in ("now", f"before ({before})")
        )
        help_ratio = now / then
    sdk_in_help = sdk_part(helped["loaded"]["stretto --help, now"])
    ok = {
        f"stretto mcp start - minimal server start <= {START_TARGET_MS} ms": gap * 1000
        <= START_TARGET_MS,
        f"stretto_status p95 <= {STATUS_P95_MS} ms": status_p95 * 1000 <= STATUS_P95_MS,
        f"--help <= {HELP_MS} ms": help_now * 1000 <= HELP_MS,
        "--help loads no part of the SDK": "mcp" not in sdk_in_help,
    }
    if before:
        ok[f"what the server adds to --help imports in <= {ADDED_IMPORT_MS} ms"] = (
            added_ms <= ADDED_IMPORT_MS
        )
    if args.json:
        figures = {
            "machine": machine(),
            "start": {
                name: {"wall": spread(values), "cpu_p50": median(start["cpu"][name])}
                for name, values in start["wall"].items()
            },
            "start_gap": gap,
            "start_gaps": paired_gaps(start),
            "start_phases": {name: median(values) for name, values in phases.items()},
            "status": {name: spread(values) for name, values in status["series"].items()},
            "help": {
                "wall": {name: spread(values) for name, values in helped["wall"].items()},
                "cpu_p50": {name: median(values) for name, values in helped["cpu"].items()},
                "before": before,
                "wall_ratio_to_before": help_ratio,
                "added_modules": helped["added"],
                "added_import": helped["added_import"],
                "sdk_loaded": {k: sdk_part(v) for k, v in helped["loaded"].items()},
            },
            "targets": ok,
        }
        print(json.dumps(figures, indent=2))
        return 0 if all(ok.values()) else 1
    show_start(start, phases)
    show_status(status)
    show_help(helped)
    print()
    target("stretto mcp start - minimal server start", START_TARGET_MS, gap)
    target("stretto_status p95", STATUS_P95_MS, status_p95)
    target("help", HELP_MS, help_now)
    if before and help_ratio is not None:
        print(
            f"--help now / before ({before}), side by side: {help_ratio:.3f} (wall medians; "
            "this machine's noise is about +-10%)"
        )
        target(
            f"--help no slower than {before}: import of the {len(helped['added'])} module(s) "
            "it gained",
            ADDED_IMPORT_MS,
            added_ms / 1000,
        )
    verdict(
        f"--help loads no part of the SDK (loads: {', '.join(sdk_in_help) or 'none of it'})",
        "mcp" not in sdk_in_help,
    )
    print("\nall targets met" if all(ok.values()) else "\nsome targets MISSED")
    return 0 if all(ok.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
