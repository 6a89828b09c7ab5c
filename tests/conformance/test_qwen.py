"""Conformance of the ``qwen`` adapter against the real Qwen Code CLI and the fake model.

Nothing is mocked: the pinned CLI from ``.tools/npm`` (``scripts/install-agents``) runs in a
real git repository, talks to :class:`FakeModelServer` on 127.0.0.1, and its output goes through
the adapter's ``parse_line`` and ``decide`` exactly as the runner feeds them.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from _support import (
    NPM_BIN,
    WRITE_TASK_FILE,
    Ran,
    bare_context,
    committed_project,
    generate_requests,
    greet_repo,
    identity_in_home_only,
    kinds,
    make_task,
    no_identity_env,
    path_with,
    proxy_env,
    repo_context,
    require_cli,
    run_attempt,
    two_task_plan,
)
from click.testing import CliRunner

from stretto.agents import AgentResult, Outcome
from stretto.agents.base import reported_model
from stretto.agents.qwen import QwenAdapter
from stretto.process import processes_with_token
from stretto.testing.fakemodel import FakeModelServer, HttpError, Step, ToolCall, Usage
from stretto.testing.repo import git

QWEN = NPM_BIN / "qwen"
TASK = make_task(agent="qwen")


@pytest.fixture(scope="module", autouse=True)
def qwen_installed() -> None:
    require_cli(QWEN)


def write_step(path: Path, content: str, usage: Usage | None = None) -> Step:
    """A step that calls Qwen Code's ``write_file`` tool."""
    return Step(
        tool_calls=[ToolCall("write_file", {"file_path": str(path), "content": content})],
        usage=usage,
    )


def run_qwen(
    repo: Path,
    server: FakeModelServer,
    *,
    timeout: float = 150.0,
    extra_env: Mapping[str, str] | None = None,
    prompt: str = "Do the task.",
    settings: Mapping[str, object] | None = None,
) -> Ran:
    ctx = repo_context(
        repo, server, TASK, timeout=timeout, extra_env=extra_env, prompt=prompt, settings=settings
    )
    return run_attempt(QwenAdapter(), ctx)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return greet_repo(tmp_path)


def test_creates_a_new_file(repo: Path) -> None:
    script = [write_step(repo / "hello.py", "print('hi')\n"), Step(text="Created hello.py.")]
    with FakeModelServer(script) as server:
        run = run_qwen(repo, server, prompt="Create hello.py")
        asked = {r.body.get("model") for r in generate_requests(server)}
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert asked == {reported_model(run.events)}  # the model its init event names
    assert (repo / "hello.py").read_text() == "print('hi')\n"
    assert {"path": str(repo / "hello.py"), "tool": "write_file"} in kinds(run.events, "file")
    assert {"text": "Created hello.py."} in kinds(run.events, "text")
    assert "hello.py" in git(repo, "status", "--porcelain")


def test_a_long_prompt_goes_through_stdin(repo: Path) -> None:
    with FakeModelServer([Step(text="Read it.")]) as server:
        run = run_qwen(repo, server, prompt="Do the task.\n" + "x" * 200_000)
        body = server.requests[0].body
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert "x" * 200_000 in str(body)


def test_edits_an_existing_file(repo: Path) -> None:
    path = str(repo / "greet.py")
    args = {"file_path": path, "old_string": "'hello'", "new_string": "'hello, world'"}
    script = [
        # Qwen Code refuses to edit a file the session has not read.
        Step(tool_calls=[ToolCall("read_file", {"file_path": path})]),
        Step(tool_calls=[ToolCall("edit", args)]),
        Step(text="Edited greet.py."),
    ]
    with FakeModelServer(script) as server:
        run = run_qwen(repo, server)
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert (repo / "greet.py").read_text() == "print('hello, world')\n"
    assert {"path": path, "tool": "edit"} in kinds(run.events, "file")


def test_http_400_is_an_api_error_although_qwen_exits_0(repo: Path) -> None:
    with FakeModelServer([Step(http_error=HttpError(400))]) as server:
        run = run_qwen(repo, server)
        statuses = [r.status for r in generate_requests(server)]
    assert run.result.outcome is Outcome.API_ERROR, run.result.reason
    assert run.result.exit_code == 0  # the trap: Qwen Code reports success
    assert "400" in run.result.reason and "Bad request" in run.result.reason
    assert statuses == [400]


def test_http_429_is_rate_limited(repo: Path) -> None:
    # Qwen Code makes 7 attempts with backoff (1.5 s doubling; it ignores Retry-After): ~80 s.
    with FakeModelServer([Step(http_error=HttpError(429, retry_after=1))]) as server:
        run = run_qwen(repo, server)
        statuses = [r.status for r in generate_requests(server)]
    assert run.result.outcome is Outcome.RATE_LIMITED, run.result.reason
    assert not run.result.outcome.counts_as_failure
    assert statuses == [429] * 7


def test_tokens_match_the_scripted_usage(repo: Path) -> None:
    script = [
        write_step(repo / "a.txt", "a\n", usage=Usage(1200, 40, 1000)),
        Step(text="Done.", usage=Usage(1500, 25, 1100)),
    ]
    with FakeModelServer(script) as server:
        run = run_qwen(repo, server)
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert run.result.usage["input_tokens"] == 2700
    assert run.result.usage["cached_input_tokens"] == 2100
    assert run.result.usage["output_tokens"] == 65
    assert run.result.cost_usd is None  # Qwen Code reports no dollars


def test_a_hang_is_killed_at_the_timeout(repo: Path) -> None:
    with FakeModelServer([Step(hang=True)]) as server:
        run = run_qwen(repo, server, timeout=6.0)
        assert run.result.outcome is Outcome.TIMED_OUT
        assert processes_with_token(run.token) == []
    assert run.duration < 20


class TunnelProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 that records every target and tunnels only to one.

    Qwen Code sends even loopback traffic through ``HTTPS_PROXY`` (it ignores ``NO_PROXY``), so a
    proxy that forwards nothing would break the run: this one forwards to the scripted server
    alone and refuses (and records) everything else.
    """

    def __init__(self, allowed: str) -> None:
        self.allowed = allowed
        self.seen: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TunnelProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
            except OSError:
                return
            line = head.split(b"\r\n", 1)[0].decode(errors="replace")
            method, _, rest = line.partition(" ")
            target = rest.split(" ", 1)[0]
            self.seen.append(f"{method} {target}")
            if method != "CONNECT" or target != self.allowed:
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                return
            host, _, port = target.rpartition(":")
            with socket.create_connection((host, int(port))) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                conn.settimeout(None)
                pump = threading.Thread(target=_pipe, args=(upstream, conn), daemon=True)
                pump.start()
                _pipe(conn, upstream)
                pump.join(timeout=5)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def test_reaches_no_address_but_the_scripted_server(repo: Path) -> None:
    script = [write_step(repo / "net.txt", "ok\n"), Step(text="Done.")]
    with FakeModelServer(script) as server:
        allowed = f"127.0.0.1:{server.port}"
        with TunnelProxy(allowed) as proxy:
            no_proxy = {"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
            run = run_qwen(repo, server, extra_env={**proxy_env(proxy.url), **no_proxy})
        requests = list(server.requests)
    assert run.result.outcome is Outcome.SUCCESS, run.result.reason
    assert (repo / "net.txt").read_text() == "ok\n"
    others = [seen for seen in proxy.seen if seen != f"CONNECT {allowed}"]
    assert others == [], f"qwen tried to reach something besides the scripted server: {others!r}"
    assert [(r.endpoint, r.step) for r in requests] == [("generate", 0), ("generate", 1)]


E2E_PLAN = two_task_plan("qwen-pair", "qwen", "create")
E2E_CONFIG = 'env = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]\n\n[agents.qwen]\nmodel = "fake-model"\n'


def test_stretto_run_with_two_qwen_tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import stretto.agents
    from stretto.frontends.cli import main

    monkeypatch.setitem(stretto.agents.BUILTIN, "qwen", "stretto.agents.qwen:QwenAdapter")
    project = committed_project(tmp_path, E2E_PLAN, E2E_CONFIG)
    config = identity_in_home_only(project, tmp_path / "user-home")  # and none in the repo
    # Both tasks share one session (each conversation starts at step 0), so the scripted command
    # writes the file named after the task it runs in.
    script = [
        Step(tool_calls=[ToolCall("run_shell_command", {"command": WRITE_TASK_FILE})]),
        Step(text="Done."),
    ]
    with FakeModelServer(script) as server:
        monkeypatch.chdir(project)
        monkeypatch.setenv("OPENAI_BASE_URL", server.env()["OPENAI_BASE_URL"])
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        monkeypatch.setenv("PATH", path_with(NPM_BIN))
        monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
        no_identity_env(monkeypatch)
        result = CliRunner().invoke(main, ["run", "plan.yaml"], catch_exceptions=False)
        generated = generate_requests(server)
    assert result.exit_code == 0, result.output
    assert git(project, "show", "HEAD:alpha.txt") == "alpha\n"
    assert git(project, "show", "HEAD:beta.txt") == "beta\n"
    assert len(generated) == 4
    assert (project / ".git" / "config").read_bytes() == config


def test_model_comes_from_the_step_then_the_tier_map(tmp_path: Path) -> None:
    tiers = {"fast": "mini", "balanced": "mid", "strong": "big"}

    def model(step_model: str | None, complexity: str, **settings: object) -> str:
        ctx = bare_context(replace(TASK, complexity=complexity), tmp_path, step_model, settings)
        return QwenAdapter.model_for(ctx)

    assert model("gpt-x", "low", models=tiers) == "gpt-x"
    assert model("strong", "low", models=tiers) == "big"
    assert model(None, "low", models=tiers) == "mini"
    assert model(None, "high", models=tiers, model="fixed") == "big"
    assert model(None, "medium", model="fixed") == "fixed"


def test_the_key_comes_from_env_key_and_the_home_is_per_attempt(tmp_path: Path) -> None:
    env = {"PATH": str(NPM_BIN), "DASHSCOPE_API_KEY": "sk-dash"}
    settings = {"env_key": "DASHSCOPE_API_KEY", "base_url": "http://gw/v1"}
    ctx = bare_context(TASK, tmp_path, "m", settings, env=env, log_dir=tmp_path / "log")
    launch = QwenAdapter().build(ctx)
    assert launch.env["OPENAI_API_KEY"] == "sk-dash"
    assert launch.env["OPENAI_BASE_URL"] == "http://gw/v1"
    assert launch.env["OPENAI_MODEL"] == "m"
    home = Path(launch.env["QWEN_HOME"])
    assert home.parent == tmp_path / "log"
    settings = json.loads((home / "settings.json").read_text())
    assert settings["security"]["auth"]["selectedType"] == "openai"
    assert settings["privacy"]["usageStatisticsEnabled"] is False
    assert launch.stdin == "p" and "p" not in launch.argv


def test_errors_are_classified_from_the_final_text() -> None:
    adapter = QwenAdapter()

    def decide(text: str, exit_code: int = 0) -> AgentResult:
        lines = [
            json.dumps(
                {"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}}
            ),
            json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": text}),
        ]
        events = [event for line in lines for event in adapter.parse_line(line, "stdout")]
        return adapter.decide(exit_code, False, events)

    limited = decide("[API Error: 429 Too many requests, retry after 3s]\nPossible quota limits.")
    assert limited.outcome is Outcome.RATE_LIMITED
    assert limited.retry_after == 3.0
    # What Qwen Code 0.15.10 ends with for OpenAI's insufficient_quota 429 (probed).
    no_credit = decide(
        "[API Error: 429 You exceeded your current quota, please check your plan and billing "
        "details.]\nPossible quota limitations in place or slow response times detected. "
        "Please wait and try again later."
    )
    assert no_credit.outcome is Outcome.OUT_OF_CREDIT
    assert not no_credit.outcome.counts_as_failure
    assert decide("[API Error: 500 Internal error]").outcome is Outcome.API_ERROR
    assert decide("All done. [API Error: is how errors look]").outcome is Outcome.SUCCESS
    assert decide("Done.", exit_code=1).outcome is Outcome.FAILED
    assert adapter.decide(1, False, []).outcome is Outcome.FAILED
