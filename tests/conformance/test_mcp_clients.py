"""End to end: real IDE agents use ``stretto mcp`` as their MCP server (issue 13).

Claude Code and Gemini CLI, pinned by scripts/install-agents, are configured with stretto as an
MCP server the way a user would do it (``stretto mcp config --client NAME --write``), and driven
by the scripted model server on 127.0.0.1. The scripted model calls ``stretto_run`` with a plan of
two shell steps, loops on ``stretto_wait`` (passing back the run id and ``next_seq`` the tools
returned), asks ``stretto_result``, and answers. Everything but the model's replies is real: the
CLI, its MCP client, the stdio server it starts, the detached run, the worktrees and the merge.

The scripted model keeps no state, so a reply cannot know the run id ``stretto_run`` returned
until the request carrying that result comes in. :func:`templated_replies` fills ``{run_id}``,
``{next_seq}`` and ``{state}`` in a step's arguments and text from the tool results in the
request, as a model reads them from its context.

Codex (0.171.0) is not among the clients, because of the scripted model server: codex offers an
MCP server's tools to the model as one Responses API ``namespace`` tool (``mcp__stretto``, holding
``stretto_run``, ...), so the model's call must be a ``function_call`` item that carries
``"namespace": "mcp__stretto"``. The scripted model server renders function calls without a
namespace, and codex answers "unsupported call" to every spelling of the name
(``mcp__stretto__stretto_run``, ``stretto_run``, ``mcp__stretto.stretto_run``). With the namespace
added to the rendered item (tried by patching the renderer), codex calls stretto's tools when its
``[mcp_servers.stretto]`` also has ``required = true`` (else ``codex exec`` may send its first
request before the server has answered ``initialize``, and offers no stretto tools) and
``default_tools_approval_mode = "approve"`` (else, with ``approval_policy = "never"``, each call
fails with "MCP tool call requires approval").

A missing CLI fails these tests (it does not skip them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from _support import NPM_BIN, generate_requests, path_with, require_cli

from stretto import api
from stretto.errors import ControlError
from stretto.testing.fakemodel import FakeModelServer, LoggedRequest, Step, ToolCall
from stretto.testing.fakemodel import server as fakemodel_server
from stretto.testing.fakemodel.selection import Choice
from stretto.testing.repo import git, make_repo

CLAUDE = NPM_BIN / "claude"
GEMINI = NPM_BIN / "gemini"
GEMINI_MODEL = "gemini-2.5-flash"

PLAN = """\
name: mcp-e2e
stages:
  - name: work
    steps:
      - id: alpha
        goal: write alpha.txt
        files: [alpha.txt]
        agent: shell
        command: echo alpha > alpha.txt
      - id: beta
        goal: write beta.txt
        files: [beta.txt]
        agent: shell
        command: echo beta > beta.txt
"""

WAITS = 3  # stretto_wait calls; the run ends during the first, the others return at once
WAIT_TIMEOUT = 20  # seconds, each
PROMPT = "Split this into tasks and run them in parallel with stretto, then tell me what landed."
FINAL = "stretto run {run_id} is over: {state}."

# In a raw request body the tools' JSON sits inside a string: quotes escaped, newlines as \n.
_Q = r'\\*"'  # a quote, maybe escaped
_S = r"(?:\s|\\[nt])*"  # blanks, maybe escaped
_KEY = f"{_Q}{_S}:{_S}{_Q}"  # '": "' between a key and a string value
RUN_ID = re.compile(f"run_id{_KEY}" + r"(\d{8}-\d{6}-\d{3}-[0-9a-f]{4})")
NEXT_SEQ = re.compile(f"next_seq{_Q}{_S}:{_S}" + r"(\d+)")
# A run's own state comes right after its run_id in each result that has both (status, result).
STATE = re.compile(f"run_id{_KEY}[\\w-]+{_Q}{_S},{_S}{_Q}state{_KEY}([a-z_]+)")


# ------------------------------------------------------------------ the scripted model


def script(prefix: str) -> list[Step]:
    """Run the plan, wait on the run WAITS times, ask for the result, answer.

    ``prefix`` is how the CLI names the server's tools (``mcp__stretto__`` for Claude Code,
    ``mcp_stretto_`` for Gemini CLI).
    """
    wait = {"run_id": "{run_id}", "after_seq": "{next_seq}", "timeout": WAIT_TIMEOUT}
    return [
        Step(tool_calls=[ToolCall(f"{prefix}stretto_run", {"plan": PLAN})]),
        *[Step(tool_calls=[ToolCall(f"{prefix}stretto_wait", wait)]) for _ in range(WAITS)],
        Step(tool_calls=[ToolCall(f"{prefix}stretto_result", {"run_id": "{run_id}"})]),
        Step(text=FINAL),
    ]


def fill(value: Any, body: str) -> Any:
    """``value`` with ``{run_id}``, ``{next_seq}`` and ``{state}`` taken from ``body``, the raw
    request: the first run id a tool returned, the last ``next_seq`` (a number; 0 before any) and
    the run's last ``state``."""
    if value == "{next_seq}":
        seqs = NEXT_SEQ.findall(body)
        return int(seqs[-1]) if seqs else 0
    if isinstance(value, str):
        run_id = RUN_ID.search(body)
        states = STATE.findall(body)
        return value.replace("{run_id}", run_id.group(1) if run_id else "<no run id>").replace(
            "{state}", states[-1] if states else "<no state>"
        )
    if isinstance(value, Mapping):
        return {key: fill(item, body) for key, item in value.items()}
    return value


@pytest.fixture
def templated_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fill the placeholders of the step each request gets from what that request carries.

    The scripted model server has no placeholders of its own, so this wraps the function that
    picks a request's step (``stretto.testing.fakemodel.server.choose``) for this test only.
    """
    choose = fakemodel_server.choose

    def templated(*args: Any) -> Choice:
        choice = choose(*args)
        body = args[3].body  # selection.Facts: the raw request body
        step = choice.step
        calls = [dataclasses.replace(c, arguments=fill(c.arguments, body)) for c in step.tool_calls]
        text = fill(step.text, body) if step.text is not None else None
        step = dataclasses.replace(step, tool_calls=calls, text=text)
        return dataclasses.replace(choice, step=step)

    monkeypatch.setattr(fakemodel_server, "choose", templated)


# ------------------------------------------------------------------ reading the conversation


@dataclasses.dataclass
class Exchange:
    """One tool call the model made, as the CLI sent it back, and the tool's result."""

    name: str
    arguments: dict[str, Any]
    result: dict[str, Any]
    error: bool


def parse_result(text: str) -> dict[str, Any]:
    """A tool's JSON result in the text a CLI passes back (Gemini CLI wraps it in tags)."""
    start, end = text.find("{"), text.rfind("}")
    try:
        value = json.loads(text[start : end + 1])
    except ValueError:
        return {"text": text}
    return value if isinstance(value, dict) else {"text": text}


def claude_exchanges(body: Mapping[str, Any]) -> list[Exchange]:
    calls: dict[str, tuple[str, dict[str, Any]]] = {}
    out = []
    for message in body["messages"]:
        blocks = message["content"] if isinstance(message["content"], list) else []
        for block in blocks:
            if block.get("type") == "tool_use":
                calls[block["id"]] = (block["name"], block["input"])
            elif block.get("type") == "tool_result":
                content = block["content"]
                if isinstance(content, list):
                    content = "".join(part.get("text", "") for part in content)
                name, arguments = calls[block["tool_use_id"]]
                out.append(
                    Exchange(name, arguments, parse_result(content), bool(block.get("is_error")))
                )
    return out


def gemini_exchanges(body: Mapping[str, Any]) -> list[Exchange]:
    calls: list[tuple[str, dict[str, Any]]] = []
    out = []
    for content in body["contents"]:
        for part in content.get("parts", []):
            if "functionCall" in part:
                calls.append((part["functionCall"]["name"], part["functionCall"].get("args", {})))
            elif "functionResponse" in part:
                response = part["functionResponse"]["response"]
                name, arguments = calls.pop(0)
                assert name == part["functionResponse"]["name"]
                text = response.get("output", response.get("error", ""))
                out.append(Exchange(name, arguments, parse_result(text), "error" in response))
    return out


def check_conversation(exchanges: Sequence[Exchange], prefix: str) -> str:
    """The tools ran in order, each wait on the run stretto_run started, each after the records
    the one before returned, and the run ended with both tasks landed. Returns the run id."""
    names = [e.name.removeprefix(prefix) for e in exchanges]
    assert names == ["stretto_run", *["stretto_wait"] * WAITS, "stretto_result"], names
    assert not any(e.error for e in exchanges), [e.result for e in exchanges if e.error]
    started, *waits, result = exchanges
    run_id = started.result["run_id"]
    assert re.fullmatch(r"\d{8}-\d{6}-\d{3}-[0-9a-f]{4}", run_id), started.result
    assert started.result["follow"].startswith("stretto_wait(")
    seq = 0
    for wait in waits:
        assert wait.arguments["run_id"] == run_id
        assert wait.arguments["after_seq"] == seq  # the next_seq of the wait before
        assert wait.result["status"]["run_id"] == run_id
        assert all(event["seq"] > seq for event in wait.result["events"])
        seq = wait.result["next_seq"]
    types = [event["type"] for wait in waits for event in wait.result["events"]]
    assert types[0] == "run_started" and types[-1] == "run_finished", types
    last = waits[-1].result
    assert (last["reason"], last["over"], last["state"]) == ("ended", True, "finished"), last
    assert result.arguments == {"run_id": run_id}
    summary = result.result
    assert (summary["run_id"], summary["state"], summary["over"]) == (run_id, "finished", True)
    assert sorted(task["id"] for task in summary["landed"]) == ["alpha", "beta"], summary
    assert all(task["commit"] for task in summary["landed"])
    assert summary["failed"] == [] and summary["other"] == [], summary
    return str(run_id)


# ------------------------------------------------------------------ the repository


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A repository; afterwards every run in it is over and its engine gone."""
    path = make_repo(tmp_path / "repo", {"README.md": "# demo\n"})
    yield path
    for status in api.list_runs(path) if (path / ".stretto").exists() else []:
        handle = api.open_run(path, status.run_id)
        if not handle.wait(timeout=60).over:
            with contextlib.suppress(ControlError):
                handle.cancel()
            handle.wait(timeout=30)


def write_mcp_config(client: str, repo: Path, env: Mapping[str, str]) -> Path:
    """``stretto mcp config --client CLIENT --write`` in ``repo``, committed as a user would."""
    done = subprocess.run(
        [sys.executable, "-m", "stretto", "mcp", "config", "--client", client, "--write"],
        cwd=repo,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"stretto as an MCP server for {client}")
    return repo


def client_env(home: Path) -> dict[str, str]:
    """This environment with its own HOME and no proxy or bytecode settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.lower().endswith("_proxy") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env.update(HOME=str(home), PATH=path_with(NPM_BIN), LANG="C.UTF-8")
    return env


def run_cli(argv: Sequence[str], repo: Path, env: Mapping[str, str]) -> tuple[int, str, str]:
    done = subprocess.run(
        list(argv),
        cwd=repo,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def wait_over(repo: Path, run_id: str) -> api.RunStatus:
    """The run's final status, once its detached engine let go of it."""
    handle = api.open_run(repo, run_id)
    status = handle.wait(timeout=60)
    deadline = time.monotonic() + 30
    while handle.live() and time.monotonic() < deadline:
        time.sleep(0.05)
    return status


def last_generate(server: FakeModelServer) -> LoggedRequest:
    requests = generate_requests(server)
    assert requests, "the CLI never called the model"
    return requests[-1]


# ------------------------------------------------------------------ the clients


@pytest.mark.usefixtures("templated_replies")
def test_claude_code_runs_a_plan_through_stretto_mcp(tmp_path: Path, repo: Path) -> None:
    require_cli(CLAUDE)
    home = tmp_path / "home"
    home.mkdir()
    env = client_env(home)
    write_mcp_config("claude-code", repo, env)
    env.update(
        CLAUDE_CONFIG_DIR=str(tmp_path / "claude-config"),
        ANTHROPIC_API_KEY="sk-ant-fake",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
        DISABLE_BUG_COMMAND="1",
        CLAUDE_CODE_MAX_RETRIES="0",
        # `claude -p` sends its first request without waiting for --mcp-config servers unless
        # told to (docs/mcp.md); stretto mcp takes a second or more to start on a busy machine
        MCP_CONNECTION_NONBLOCKING="false",
    )
    prefix = "mcp__stretto__"
    allowed = ",".join(prefix + tool for tool in ("stretto_run", "stretto_wait", "stretto_result"))
    argv = [
        str(CLAUDE),
        "-p",
        PROMPT,
        "--output-format",
        "json",
        "--model",
        "fake-model",
        "--mcp-config",
        str(repo / ".mcp.json"),
        "--strict-mcp-config",
        "--allowedTools",
        allowed,
    ]
    with FakeModelServer(script(prefix), log_path=tmp_path / "model-requests.jsonl") as server:
        env["ANTHROPIC_BASE_URL"] = server.url
        code, out, err = run_cli(argv, repo, env)
        requests = generate_requests(server)
        last = last_generate(server)
    assert code == 0, (out[-2000:], err[-2000:])
    answer = json.loads(out)
    assert answer["is_error"] is False and answer["permission_denials"] == [], answer
    offered = {tool["name"] for tool in requests[0].body["tools"]}
    assert {f"{prefix}stretto_run", f"{prefix}stretto_wait", f"{prefix}stretto_status"} <= offered
    assert [r.step for r in requests] == list(range(WAITS + 3))
    run_id = check_conversation(claude_exchanges(last.body), prefix)
    assert answer["result"] == f"stretto run {run_id} is over: finished."
    assert wait_over(repo, run_id).state == "finished"
    assert git(repo, "show", "main:alpha.txt") == "alpha\n"
    assert git(repo, "show", "main:beta.txt") == "beta\n"


@pytest.mark.usefixtures("templated_replies")
def test_gemini_cli_runs_a_plan_through_stretto_mcp(tmp_path: Path, repo: Path) -> None:
    require_cli(GEMINI)
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(
        json.dumps(
            {
                "security": {
                    "auth": {"selectedType": "gemini-api-key"},
                    "folderTrust": {"enabled": False},
                },
                "telemetry": {"enabled": False},
                "privacy": {"usageStatisticsEnabled": False},
                "general": {
                    "enableAutoUpdate": False,
                    "enableAutoUpdateNotification": False,
                    "maxAttempts": 1,
                },
            }
        )
    )
    env = client_env(home)
    write_mcp_config("gemini", repo, env)  # the repository's .gemini/settings.json
    env.update(
        GEMINI_CLI_HOME=str(home),
        GEMINI_API_KEY="fake",
        GEMINI_CLI_NO_RELAUNCH="true",
        NO_COLOR="1",
    )
    prefix = "mcp_stretto_"
    argv = [str(GEMINI), "-p", PROMPT, "--output-format", "json", "--yolo", "-m", GEMINI_MODEL]
    with FakeModelServer(script(prefix), log_path=tmp_path / "model-requests.jsonl") as server:
        env["GOOGLE_GEMINI_BASE_URL"] = server.url
        code, out, err = run_cli(argv, repo, env)
        requests = generate_requests(server)
        last = last_generate(server)
    assert code == 0, (out[-2000:], err[-2000:])
    answer = json.loads(out)
    offered = {d["name"] for t in requests[0].body["tools"] for d in t["functionDeclarations"]}
    assert {f"{prefix}stretto_run", f"{prefix}stretto_wait", f"{prefix}stretto_status"} <= offered
    assert [r.step for r in requests] == list(range(WAITS + 3))
    run_id = check_conversation(gemini_exchanges(last.body), prefix)
    assert answer["response"] == f"stretto run {run_id} is over: finished."
    tools = answer["stats"]["tools"]
    assert (tools["totalCalls"], tools["totalSuccess"]) == (WAITS + 2, WAITS + 2), tools
    assert wait_over(repo, run_id).state == "finished"
    assert git(repo, "show", "main:alpha.txt") == "alpha\n"
    assert git(repo, "show", "main:beta.txt") == "beta\n"
