"""Figures of ``stretto serve`` under load, on this machine only (bounded).

One server process (``stretto serve`` on 127.0.0.1) and one detached run started through it: 40
shell steps that print for a few seconds each, 20 agents at once. While it runs:

1. SSE delivery: 50 followers (threads of one process, one connection each) read
   ``/runs/{id}/events`` as Server-Sent Events; latency = the time a record arrives minus its
   ``ts`` (the engine stamps it right before writing the line). Target (issue 15): p95 <= 100 ms.
2. ``GET /runs/{id}``: an open-loop load of 200 requests a second (a request is due every 5 ms,
   whatever the previous ones did; at most 32 in flight) for 10 s; latency = response complete
   minus due time. Target: p95 <= 20 ms.

Every process started here is ended before the script returns.

Run: .venv/bin/python benchmarks/bench_serve.py [--followers 50] [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import PYTHON, machine, table, target
from stretto.testing.repo import make_repo

STEPS, AGENTS = 40, 20


def plan() -> str:
    lines = ["name: bench-serve", "stages:", "  - name: s", "    steps:"]
    for i in range(STEPS):
        command = f"for k in $(seq 12); do echo tick $k; sleep 0.25; done; echo {i} > f{i}.txt"
        lines.append(f"      - {{id: t{i}, goal: g, files: [f{i}.txt], command: '{command}'}}")
    return "\n".join(lines) + "\n"


def p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def follow_all(port: int, token: str, run_id: str, count: int, out: Path) -> None:
    """``count`` SSE followers of the run, one thread and connection each, to its end; writes
    each record's write-to-delivery latency (records written after the follower connected)."""
    latencies: list[list[float]] = [[] for _ in range(count)]

    def follow(index: int) -> None:
        connected = time.time()  # records older than this were not written "live"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request(
            "GET",
            f"/runs/{run_id}/events",
            headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
        )
        response = conn.getresponse()
        while True:
            line = response.readline()
            if not line or line.startswith(b"event: end"):
                break
            if line.startswith(b"data: "):
                now, written = time.time(), json.loads(line[6:])["ts"]
                if written >= connected:
                    latencies[index].append(now - written)
        conn.close()

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    out.write_text(json.dumps([x for row in latencies for x in row]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--followers", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--follow", nargs=5, help=argparse.SUPPRESS)  # the followers' process
    args = parser.parse_args()
    if args.follow:
        port, token, run_id, count, out = args.follow
        follow_all(int(port), token, run_id, int(count), Path(out))
        return 0
    print(machine())
    base = Path(tempfile.mkdtemp(prefix="stretto-bench-serve-"))
    repo = make_repo(base / "repo", {"README.md": "# b\n", "stretto.toml": 'target = "main"\n'})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    server = subprocess.Popen(
        [PYTHON, "-m", "stretto", "serve", "--port", str(port)],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    run_id = ""
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        token = (repo / ".stretto" / "serve-token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}

        def call(method: str, path: str, body: object = None) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            headers = dict(auth)
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            out = response.status, response.read()
            conn.close()
            return out

        status, body = call("POST", "/runs", {"plan": plan(), "max_agents": AGENTS})
        assert status == 201, body
        run_id = json.loads(body)["run_id"]
        # The followers run in a process of their own: 50 threads parsing events in this
        # process would hold its interpreter lock and delay the GET load's own timing.
        sse_out = base / "sse.json"
        followers = subprocess.Popen(
            [PYTHON, __file__, "--follow", str(port), token, run_id, str(args.followers),
             str(sse_out)], env=env,
        )  # fmt: skip
        while True:  # measure while agents run
            status, body = call("GET", f"/runs/{run_id}")
            if sum(t["state"] == "running" for t in json.loads(body)["tasks"]) >= AGENTS // 2:
                break
            time.sleep(0.2)
        gets: list[float] = []
        interval, count = 1.0 / args.rate, int(args.seconds * args.rate)
        start = time.perf_counter()
        lock = threading.Lock()

        def one(due: float) -> None:
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            call("GET", f"/runs/{run_id}")
            with lock:
                gets.append(time.perf_counter() - due)

        server_cpu = cpu_seconds(server.pid)
        with ThreadPoolExecutor(max_workers=32) as pool:
            for i in range(count):
                pool.submit(one, start + i * interval)
        achieved = count / (time.perf_counter() - start)
        window = time.perf_counter() - start
        server_cpu = cpu_seconds(server.pid) - server_cpu
        followers.wait(timeout=300)
        live = json.loads(sse_out.read_text())  # records written after connecting
        print(
            f"\nrun {run_id}: {STEPS} steps, {AGENTS} agents; {args.followers} followers "
            f"received {len(live)} records written while they followed"
        )
        rows = [
            ["SSE write-to-delivery", len(live), f"{p(live, 0.5) * 1000:.1f} ms",
             f"{p(live, 0.95) * 1000:.1f} ms", f"{p(live, 1.0) * 1000:.1f} ms"],
            [f"GET /runs/{{id}} at {args.rate:.0f}/s ({achieved:.0f}/s achieved)", len(gets),
             f"{statistics.median(gets) * 1000:.1f} ms", f"{p(gets, 0.95) * 1000:.1f} ms",
             f"{max(gets) * 1000:.1f} ms"],
        ]  # fmt: skip
        print(table(["figure", "n", "p50", "p95", "max"], rows))
        print(
            f"server process CPU while the GETs ran: {server_cpu:.2f} s over {window:.1f} s "
            f"({server_cpu / window * 100:.0f}% of a core); load now {os.getloadavg()[0]:.1f}"
        )
        ok = target("SSE p95 write-to-delivery, 50 followers, 20 agents", 100, p(live, 0.95))
        ok &= target(f"GET /runs/{{id}} p95 at {args.rate:.0f}/s", 20, p(gets, 0.95))
        return 0 if ok else 1
    finally:
        if run_id:
            subprocess.run(
                [PYTHON, "-m", "stretto", "cancel", run_id], cwd=repo, capture_output=True
            )
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        time.sleep(1)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
