"""``stretto mcp`` driven the way MCP clients drive it, with real processes.

The official SDK's client talks to ``python -m stretto mcp`` over stdio and over streamable HTTP;
the MCP Inspector CLI (npm, pinned in scripts/install-agents) lists the tools and calls them.
Runs are real: shell-agent plans in throwaway git repositories, detached engines that outlive
the server, and work that lands on ``main``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, InitializeResult, TextContent

from stretto.engine.journal import is_live
from stretto.process import kill_token
from stretto.testing.repo import git, make_repo

ROOT = Path(__file__).resolve().parents[1]
INSPECTOR = ROOT / ".tools" / "npm" / "node_modules" / ".bin" / "mcp-inspector"
STRETTO = [sys.executable, "-m", "stretto"]
SECRET = "sk-test-0123456789abcdef"
TOOLS = {
    "stretto_plan",
    "stretto_run",
    "stretto_wait",
    "stretto_status",
    "stretto_events",
    "stretto_result",
    "stretto_logs",
    "stretto_diff",
    "stretto_cancel",
    "stretto_retry",
    "stretto_add",
    "stretto_runs",
    "stretto_doctor",
}
TYPED = {  # tools whose return type is a model: a schema with named properties
    "stretto_run": {"run_id", "state", "repo", "follow"},
    "stretto_wait": {"reason", "state", "over", "events", "next_seq", "truncated", "status"},
    "stretto_events": {"events", "next_seq"},
    "stretto_logs": {"text"},
    "stretto_diff": {"text"},
    "stretto_cancel": {"applied", "ok", "message", "seq", "details"},
    "stretto_retry": {"applied", "ok", "message", "seq", "details"},
    "stretto_add": {"applied", "ok", "message", "seq", "details"},
    "stretto_runs": {"items"},
    "stretto_doctor": {"items"},
}

THREE = """\
name: three
stages:
  - name: work
    steps:
      - {id: a, goal: write a, files: [a.txt], command: "sleep 3; echo a > a.txt"}
      - {id: b, goal: write b, files: [b.txt], command: "echo b > b.txt"}
      - {id: c, goal: write c, files: [c.txt], depends_on: [a], command: "echo c > c.txt"}
"""

ONE = """\
name: one
stages:
  - name: work
    steps:
      - {id: one, goal: write one, files: [one.txt], command: "echo one > one.txt"}
"""


def held(flag: Path) -> str:
    """A plan whose one step goes on only once ``flag`` exists (at most for 3 minutes)."""
    wait = f"for i in $(seq 1800); do [ -e {flag} ] && break; sleep 0.1; done"
    return f"""\
name: held
stages:
  - name: work
    steps:
      - {{id: held, goal: write held, files: [held.txt], command: "{wait}; echo h > held.txt"}}
"""


BAD = """\
name: bad
stages:
  - name: work
    steps:
      - {id: a, goal: write a, files: [a.txt], command: "echo a > a.txt"}
      - {id: b, goal: write b, files: [b.txt], depends_on: [aa], command: "echo b > b.txt"}
"""

LEAK = f"""\
name: leak
stages:
  - name: work
    steps:
      - id: leak
        goal: print a key
        files: [k.txt]
        max_attempts: 1
        command: "echo {SECRET}; exit 1"
"""


# --------------------------------------------------------------------------- processes


def engine_pids(run_dir: Path) -> list[int]:
    """Pids of the detached engines driving ``run_dir`` (found by their command line: the
    pid in the run's lock names the starting process until the engine has taken over)."""
    return [pid for pid, line in processes() if f"--run-dir {run_dir} " in line]


def stop_engines(repo: Path) -> None:
    """Kill every engine (and its agents) of ``repo``'s runs that is still there."""
    runs = repo / ".stretto" / "runs"
    for run_dir in runs.iterdir() if runs.is_dir() else []:
        for pid in engine_pids(run_dir):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kill_token(run_dir.name, grace=0.2)


@pytest.fixture
def new_repo(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Makes repositories with one commit on main; at the end no engine of theirs is left."""
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(make_repo(tmp_path / name, {"README.md": "# test\n"}).resolve())
        return made[-1]

    yield make
    for repo in made:
        stop_engines(repo)


@pytest.fixture
def repo(new_repo: Callable[[str], Path]) -> Path:
    return new_repo("repo")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME of the test's own, so nothing reads or writes the real one."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def server_env(home: Path) -> dict[str, str]:
    """What a client gives the server it starts: PATH, HOME and a locale (and the tests'
    PYTHONPATH, so a worktree's code is the one served)."""
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "LANG": "C.UTF-8"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def processes() -> Iterator[tuple[int, str]]:
    """(pid, command line) of every process, from /proc."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            yield int(entry.name), line


def children_named(word: str) -> list[int]:
    """Pids of this process's children whose command line has ``word``."""
    found = []
    for pid, line in processes():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and word in line:
            found.append(pid)
    return found


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


# --------------------------------------------------------------------------- the SDK client


@asynccontextmanager
async def stdio_session(
    repo: Path, home: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[ClientSession, InitializeResult]]:
    """An initialized SDK session with ``stretto mcp --repo REPO ARGS`` over stdio, and the
    server's answer to ``initialize``."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "stretto", "mcp", "--repo", str(repo), *args],
        env={**server_env(home), **(env or {})},
        cwd=repo,
    )
    with (home / "server.log").open("a") as errlog:
        async with stdio_client(params, errlog) as (read, write), ClientSession(read, write) as s:
            yield s, await s.initialize()


def text_of(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured result; the tool must not have failed."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None, text_of(result)
    return result.structured_content


async def fails(session: ClientSession, tool: str, **arguments: Any) -> str:
    """The message of a tool error (the call must fail as a tool, not as a protocol error)."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error, result.structured_content
    return text_of(result)


async def wait_to_end(
    session: ClientSession, run_id: str, *, limit: float = 120, seen: list[Any] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[float, int]]]:
    """Loop on stretto_wait as a client does until the run ended. Returns the last answer,
    every event in the order received, and (seconds, progress notifications) per call."""
    events: list[dict[str, Any]] = []
    calls: list[tuple[float, int]] = []
    after = 0
    deadline = time.monotonic() + limit
    while True:
        assert time.monotonic() < deadline, f"run {run_id} did not end in {limit} s"
        progress: list[tuple[float, float | None, str | None]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))  # noqa: B023 (used within the iteration)

        started = time.monotonic()
        result = await session.call_tool(
            "stretto_wait",
            {"run_id": run_id, "after_seq": after, "timeout": 5},
            progress_callback=on_progress,
        )
        calls.append((time.monotonic() - started, len(progress)))
        assert isinstance(result, CallToolResult)
        assert not result.is_error, text_of(result)
        answer = result.structured_content
        assert answer is not None
        if seen is not None:
            seen.append(result)
        assert answer["truncated"] == 0
        batch = answer["events"]
        if batch:
            assert batch[0]["seq"] == after + 1, (after, batch[0])
        assert answer["next_seq"] >= after
        events.extend(batch)
        after = answer["next_seq"]
        if answer["reason"] == "ended":
            return answer, events, calls
        assert answer["reason"] in ("attention", "timeout"), answer


def structured(result: Any) -> dict[str, Any]:
    assert isinstance(result, CallToolResult) and not result.is_error, result
    assert result.structured_content is not None
    return result.structured_content


# --------------------------------------------------------------------------- stdio


def test_stdio_plan_run_wait_result_diff_logs(repo: Path, home: Path) -> None:
    async def scenario() -> None:
        with anyio.fail_after(180):
            async with stdio_session(repo, home) as (session, init):
                assert init.server_info.name == "stretto"
                assert init.instructions and "stretto_wait" in init.instructions
                await session_checks(session)

    async def session_checks(session: ClientSession) -> None:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) >= TOOLS
        for name in TOOLS:
            tool = tools[name]
            assert tool.description and len(tool.description) > 20, name
            assert tool.input_schema["type"] == "object", name
            assert tool.output_schema is not None, name
        for name, fields in TYPED.items():
            schema = tools[name].output_schema
            assert schema is not None and set(schema["properties"]) >= fields, name
        assert set(tools["stretto_wait"].input_schema["required"]) == {"run_id"}
        assert {"after_seq", "timeout"} <= set(tools["stretto_wait"].input_schema["properties"])

        checked = await call(session, "stretto_plan", plan=THREE)
        assert checked["ok"] is True and checked["problems"] == []
        assert checked["schedule"] and "a" in checked["schedule_text"]
        checked = await call(session, "stretto_plan", plan=BAD)
        assert checked["ok"] is False
        [problem] = checked["problems"]
        assert problem["file"].endswith("plan.yaml") and problem["line"] == 6
        assert "aa" in problem["message"]

        started = time.monotonic()
        run = await call(session, "stretto_run", plan=THREE)
        assert time.monotonic() - started < 30  # at once: the run takes longer than this
        run_id = run["run_id"]
        assert run["repo"] == str(repo) and run_id in run["follow"]
        # Tasks added while it runs (`a` sleeps 3 s): a bad step is refused with its place.
        bad = await fails(session, "stretto_add", run_id=run_id, steps="goal: d\ndepends_on: [cc]")
        assert "<steps>:2:14: depends_on[0]: unknown step 'cc' (did you mean 'c'?)" in bad
        step = "{id: d, goal: write d, files: [d.txt], depends_on: [c], command: 'echo d > d.txt'}"
        added = await call(session, "stretto_add", run_id=run_id, steps=step)
        assert added["ok"] and added["details"]["tasks"] == ["d"], added

        end, events, calls = await wait_to_end(session, run_id)
        assert end["state"] == "finished" and end["over"] is True
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
        long_waits = [count for took, count in calls if took > 2]
        assert long_waits, calls  # `a` sleeps 3 s: the first wait lasted about that long
        assert all(count >= 1 for count in long_waits), calls

        result = await call(session, "stretto_result", run_id=run_id)
        assert result["state"] == "finished" and result["failed"] == []
        landed = {t["id"]: t for t in result["landed"]}
        assert set(landed) == {"a", "b", "c", "d"}
        for task in landed.values():
            assert task["commit"] and git(repo, "cat-file", "-t", task["commit"]).strip()
        for name in "abc":
            assert git(repo, "show", f"main:{name}.txt").strip() == name

        diff = await call(session, "stretto_diff", run_id=run_id, task="c")
        assert "+++ b/c.txt" in diff["text"] and "+c" in diff["text"]
        logs = await call(session, "stretto_logs", run_id=run_id, task="a")
        assert isinstance(logs["text"], str) and logs["text"]

        status = await call(session, "stretto_status", run_id=run_id)
        assert status["state"] == "finished"
        page = await call(session, "stretto_events", run_id=run_id, after_seq=0, limit=3)
        assert [e["seq"] for e in page["events"]] == [1, 2, 3] and page["next_seq"] == 3
        runs = await call(session, "stretto_runs")
        assert [r["run_id"] for r in runs["items"]] == [run_id]

        read = await session.read_resource(f"stretto://runs/{run_id}/summary")
        summary = json.loads(read.contents[0].text)  # type: ignore[union-attr]
        assert summary["run_id"] == run_id and summary["state"] == "finished"
        assert {t["id"] for t in summary["landed"]} == {"a", "b", "c", "d"}

    anyio.run(scenario)


def test_errors_are_tool_errors_an_agent_can_act_on(
    new_repo: Callable[[str], Path], home: Path
) -> None:
    repo, other = new_repo("repo"), new_repo("other")

    async def scenario() -> None:
        with anyio.fail_after(180):
            async with stdio_session(repo, home) as (session, _):
                said = await fails(session, "stretto_run", plan=BAD)
                assert "plan.yaml:6:" in said and "unknown step 'aa'" in said, said
                assert "did you mean 'a'" in said and said.count("plan.yaml:6:") == 1, said
                said = await fails(session, "stretto_run", plan=ONE, repo=str(other))
                assert str(other) in said and "--allow-repo" in said, said
                said = await fails(session, "stretto_runs", repo="/")
                assert "--allow-repo" in said, said
                assert not (other / ".stretto" / "runs").exists()

            async with stdio_session(repo, home, "--allow-repo", str(other)) as (session, _):
                run = await call(session, "stretto_run", plan=ONE, repo=str(other))
                assert run["repo"] == str(other)
                answer = await session.call_tool(
                    "stretto_wait", {"run_id": run["run_id"], "timeout": 1}
                )
                assert answer.is_error, "the run is in the other repository, not this one"
                end = structured(
                    await session.call_tool(
                        "stretto_wait", {"run_id": run["run_id"], "repo": str(other), "timeout": 1}
                    )
                )
                while end["reason"] != "ended":
                    end = await call(
                        session,
                        "stretto_wait",
                        run_id=run["run_id"],
                        repo=str(other),
                        after_seq=end["next_seq"],
                        timeout=5,
                    )
                assert end["state"] == "finished"
                assert git(other, "show", "main:one.txt").strip() == "one"
                said = await fails(session, "stretto_cancel", run_id=run["run_id"], repo=str(other))
                assert "not running" in said, said
                said = await fails(session, "stretto_result", run_id="20990101-000000-000-zzzz")
                assert "no runs yet" in said, said  # in this repository: the run was in other

    anyio.run(scenario)


def test_results_never_carry_the_environments_secrets(repo: Path, home: Path) -> None:
    async def scenario() -> None:
        with anyio.fail_after(180):
            env = {"MY_API_KEY": SECRET}
            async with stdio_session(repo, home, env=env) as (session, _):
                checked = await session.call_tool("stretto_plan", {"plan": LEAK})
                run = await call(session, "stretto_run", plan=LEAK)
                waits: list[Any] = []
                end, events, _ = await wait_to_end(session, run["run_id"], seen=waits)
                assert end["state"] == "failed"
                assert any(e["type"] == "task_finished" for e in events)
                logs = await session.call_tool(
                    "stretto_logs", {"run_id": run["run_id"], "task": "leak"}
                )
                assert "***" in structured(logs)["text"]
                result = await session.call_tool("stretto_result", {"run_id": run["run_id"]})
                [failed] = structured(result)["failed"]
                assert failed["id"] == "leak" and "***" in failed["log_tail"]
                summary = await session.read_resource(f"stretto://runs/{run['run_id']}/summary")
                log = await session.read_resource(f"stretto://runs/{run['run_id']}/tasks/leak/log")
                events_page = await session.call_tool("stretto_events", {"run_id": run["run_id"]})
                for shown in [checked, *waits, logs, result, summary, log, events_page]:
                    dumped = shown.model_dump_json()
                    assert SECRET not in dumped, dumped

    anyio.run(scenario)
    # the secret was there to be hidden: the attempt's own log on disk has it
    logs = list((repo / ".stretto" / "runs").glob("*/tasks/leak/*/agent.log"))
    assert logs and any(SECRET in p.read_text() for p in logs), [p.read_text() for p in logs]


def test_a_run_outlives_the_server_and_a_new_server_finds_it(
    repo: Path, home: Path, tmp_path: Path
) -> None:
    flag = tmp_path / "go"

    async def start_and_kill() -> str:
        with anyio.fail_after(120):
            async with stdio_session(repo, home) as (session, _):
                [server] = children_named("stretto")
                run = await call(session, "stretto_run", plan=held(flag))
                status = await call(session, "stretto_status", run_id=run["run_id"])
                assert status["state"] == "running"
                os.kill(server, signal.SIGKILL)  # as a client that restarts its servers
                return str(run["run_id"])

    async def follow(run_id: str) -> dict[str, Any]:
        with anyio.fail_after(120):
            async with stdio_session(repo, home) as (session, _):
                runs = await call(session, "stretto_runs")
                assert [r["run_id"] for r in runs["items"]] == [run_id]
                end, events, _ = await wait_to_end(session, run_id)
                assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
                return end

    run_id = anyio.run(start_and_kill)
    assert children_named("stretto") == []
    assert is_live(repo / ".stretto" / "runs" / run_id), "the engine went with the server"
    flag.touch()  # the step goes on only now that no server is left
    end = anyio.run(follow, run_id)
    assert end["state"] == "finished" and end["reason"] == "ended"
    assert git(repo, "show", "main:held.txt").strip() == "h"


def test_a_wait_on_a_run_whose_engine_died_ends_with_how_to_resume(
    repo: Path, home: Path, tmp_path: Path
) -> None:
    async def scenario() -> None:
        with anyio.fail_after(120):
            async with stdio_session(repo, home) as (session, _):
                run = await call(session, "stretto_run", plan=held(tmp_path / "never"))
                run_id, run_dir = run["run_id"], repo / ".stretto" / "runs" / run["run_id"]
                [engine] = engine_pids(run_dir)
                os.kill(engine, signal.SIGKILL)  # the engine crashes (its agent is left over)
                kill_token(run_id, grace=0.2)
                await anyio.to_thread.run_sync(lambda: wait_until(lambda: not is_live(run_dir)))
                started = time.monotonic()
                end, _, _ = await wait_to_end(session, run_id)
                assert time.monotonic() - started < 4, "it waited as if the run went on"
                assert end["state"] == "interrupted" and end["over"] is True
                assert any(f"stretto resume {run_id}" in a for a in end["attention"]), end

    anyio.run(scenario)


# --------------------------------------------------------------------------- streamable HTTP


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_http_wants_the_token_and_refuses_foreign_hosts_and_origins(repo: Path, home: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    with (home / "http.log").open("w") as log:
        server = subprocess.Popen(
            [*STRETTO, "mcp", "--transport", "http", "--port", str(port)],
            cwd=repo,
            env={**os.environ, "HOME": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    raw = httpx2.Client(trust_env=False, timeout=30)  # loopback: no proxy from the environment
    try:

        def answers() -> bool:
            assert server.poll() is None, (home / "http.log").read_text()
            try:
                return raw.get(url, timeout=5).status_code == 401
            except httpx2.TransportError:
                return False

        wait_until(answers, what="the HTTP server to answer")
        token_file = repo / ".stretto" / "mcp-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32

        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        good = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}
        refused = [
            ({}, 401),
            ({"Authorization": "Bearer " + "0" * len(token)}, 401),
            ({"Authorization": token}, 401),
            ({**good, "Host": "evil.example"}, 421),
            ({**good, "Host": f"evil.example:{port}"}, 421),
            ({**good, "Origin": "http://evil.example"}, 403),
            ({**good, "Origin": f"https://127.0.0.1:{port}"}, 403),
        ]
        for headers, status in refused:
            answer = raw.post(url, json=ping, headers=headers)
            assert answer.status_code == status, (headers, answer.status_code, answer.text)
        assert "stretto mcp config" in raw.post(url, json=ping).text

        async def scenario() -> None:
            with anyio.fail_after(120):
                http = httpx2.AsyncClient(
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Origin": f"http://127.0.0.1:{port}",  # as a browser-based client sends
                    },
                    timeout=httpx2.Timeout(30, read=120),
                    trust_env=False,
                )
                async with (
                    http,
                    streamable_http_client(url, http_client=http) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    init = await session.initialize()
                    assert init.server_info.name == "stretto"
                    tools = {t.name for t in (await session.list_tools()).tools}
                    assert tools >= TOOLS
                    run = await call(session, "stretto_run", plan=ONE)
                    end, events, _ = await wait_to_end(session, run["run_id"])
                    assert end["state"] == "finished"
                    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))

        anyio.run(scenario)
        assert git(repo, "show", "main:one.txt").strip() == "one"
    finally:
        raw.close()
        server.kill()
        server.wait(timeout=30)


# --------------------------------------------------------------------------- stretto mcp config


def config_cli(repo: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home), "CODEX_HOME": str(home / "codex")}
    return subprocess.run(
        [*STRETTO, "mcp", "config", "--repo", str(repo), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def names_this_server(command: str, args: list[str], repo: Path) -> bool:
    line = " ".join([command, *args])
    return f"mcp --repo {repo}" in line and "stretto" in line


def test_config_prints_each_clients_snippet(repo: Path, home: Path) -> None:
    entries = {}
    for client in ("claude-code", "cursor", "vscode", "claude-desktop", "gemini"):
        done = config_cli(repo, home, "--client", client)
        assert done.returncode == 0, done.stderr
        body = "".join(line for line in done.stdout.splitlines(True) if not line.startswith("#"))
        data = json.loads(body)
        [servers] = data.values()
        entries[client] = entry = servers["stretto"]
        assert names_this_server(entry["command"], entry["args"], repo), entry
    assert entries["vscode"]["type"] == "stdio"

    async def start(entry: dict[str, Any]) -> str:  # as the client would, from elsewhere
        params = StdioServerParameters(
            command=entry["command"], args=entry["args"], env=server_env(home), cwd=home
        )
        with anyio.fail_after(60), (home / "server.log").open("a") as errlog:
            async with (
                stdio_client(params, errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                init = await session.initialize()
                assert await call(session, "stretto_runs") == {"items": []}
                return init.server_info.name

    assert anyio.run(start, entries["claude-code"]) == "stretto"
    done = config_cli(repo, home, "--client", "codex")
    assert done.returncode == 0, done.stderr
    entry = tomllib.loads(done.stdout)["mcp_servers"]["stretto"]
    assert names_this_server(entry["command"], entry["args"], repo), entry

    done = config_cli(repo, home, "--client", "claude-code", "--transport", "http", "--port", "9")
    assert done.returncode == 0, done.stderr
    body = "".join(line for line in done.stdout.splitlines(True) if not line.startswith("#"))
    entry = json.loads(body)["mcpServers"]["stretto"]
    token = (repo / ".stretto" / "mcp-token").read_text().strip()
    assert entry["url"] == "http://127.0.0.1:9/mcp"
    assert entry["headers"]["Authorization"] == f"Bearer {token}"

    done = config_cli(repo, home, "--client", "codex", "--transport", "http")
    assert done.returncode == 2 and "--transport stdio" in done.stderr, done


def test_config_write_keeps_what_is_there(repo: Path, home: Path) -> None:
    files = {
        "claude-code": (repo / ".mcp.json", "mcpServers"),
        "cursor": (repo / ".cursor" / "mcp.json", "mcpServers"),
        "vscode": (repo / ".vscode" / "mcp.json", "servers"),
        "claude-desktop": (
            home / ".config" / "Claude" / "claude_desktop_config.json",
            "mcpServers",
        ),
        "gemini": (repo / ".gemini" / "settings.json", "mcpServers"),
    }
    for client, (path, key) in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        other = {"command": "other-server", "args": ["--flag"]}
        path.write_text(json.dumps({key: {"other": other}, "theme": "dark", "n": [1, 2]}))
        for _ in range(2):  # a second write replaces the first
            done = config_cli(repo, home, "--client", client, "--write")
            assert done.returncode == 0, done.stderr
            assert str(path) in done.stdout
        data = json.loads(path.read_text())
        assert data["theme"] == "dark" and data["n"] == [1, 2], client
        assert set(data[key]) == {"other", "stretto"} and data[key]["other"] == other, client
        entry = data[key]["stretto"]
        assert names_this_server(entry["command"], entry["args"], repo), (client, entry)

    codex = home / "codex" / "config.toml"
    codex.parent.mkdir()
    codex.write_text(
        'model = "o4"\n\n[mcp_servers.other]\ncommand = "other-server"\n\n'
        '[profiles.fast]\nmodel = "o4-mini"\n'
    )
    for _ in range(2):
        done = config_cli(repo, home, "--client", "codex", "--write")
        assert done.returncode == 0, done.stderr
    data = tomllib.loads(codex.read_text())
    assert data["model"] == "o4" and data["profiles"] == {"fast": {"model": "o4-mini"}}
    assert set(data["mcp_servers"]) == {"other", "stretto"}
    entry = data["mcp_servers"]["stretto"]
    assert names_this_server(entry["command"], entry["args"], repo), entry

    broken = repo / ".cursor" / "mcp.json"
    broken.write_text('{"mcpServers": {"other": ')
    done = config_cli(repo, home, "--client", "cursor", "--write")
    assert done.returncode == 2, done
    assert str(broken) in done.stderr and "not JSON" in done.stderr, done.stderr
    assert broken.read_text() == '{"mcpServers": {"other": '
    codex.write_text("[mcp_servers\n")
    done = config_cli(repo, home, "--client", "codex", "--write")
    assert done.returncode == 2 and "not TOML" in done.stderr, done
    assert codex.read_text() == "[mcp_servers\n"
    assert sorted(p.name for p in home.iterdir()) == [".config", "codex"]  # nothing else


# --------------------------------------------------------------------------- the MCP Inspector


def inspector(repo: Path, home: Path, *args: str) -> dict[str, Any]:
    """``mcp-inspector --cli`` against ``stretto mcp --repo REPO``: its JSON result."""
    assert INSPECTOR.exists(), (
        f"{INSPECTOR} is missing: run scripts/install-agents (it installs the pinned MCP "
        "Inspector; these tests fail rather than skip without it)"
    )
    command = [str(INSPECTOR), "--cli", "--format", "json", *STRETTO, "mcp", "--repo", str(repo)]
    child = subprocess.Popen(
        [*command, *args],
        cwd=repo,
        env={**os.environ, "HOME": str(home)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the inspector and the server it starts: one group to kill
    )
    try:
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    assert child.returncode == 0, (child.returncode, out, err)
    answer: dict[str, Any] = json.loads(out)["result"]
    return answer


def test_the_mcp_inspector_lists_the_tools_runs_a_plan_and_waits(repo: Path, home: Path) -> None:
    listed = inspector(repo, home, "--method", "tools/list")
    tools = {t["name"]: t for t in listed["tools"]}
    assert set(tools) >= TOOLS
    assert all(tools[name]["description"] and tools[name]["inputSchema"] for name in TOOLS)

    plan_path = repo.parent / "plan.yaml"
    plan_path.write_text(ONE)
    called = [
        "--method",
        "tools/call",
        "--tool-name",
        "stretto_run",
        "--tool-arg",
        f"plan={plan_path}",
    ]
    started = inspector(repo, home, *called)
    assert started["isError"] is False, started
    run_id = started["structuredContent"]["run_id"]
    after = 0
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, f"run {run_id} did not end"
        arguments = json.dumps({"run_id": run_id, "after_seq": after, "timeout": 20})
        waited = inspector(
            repo, home, "--method", "tools/call", "--tool-name", "stretto_wait",
            "--tool-args-json", arguments,
        )  # fmt: skip
        assert waited["isError"] is False, waited
        answer = waited["structuredContent"]
        after = answer["next_seq"]
        if answer["reason"] == "ended":
            break
    assert answer["state"] == "finished"
    assert git(repo, "show", "main:one.txt").strip() == "one"
