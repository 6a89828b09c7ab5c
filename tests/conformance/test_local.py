"""Local models (issue 20): real agent CLIs on a local model server, offline, at $0.

The scripted model server plays the local server: Ollama's own API (``/api/chat``,
``/api/tags``, ``/api/show``) for real aider through LiteLLM's ``ollama_chat/`` models, and an
OpenAI-compatible ``/v1`` server for real opencode. Every run goes through ``stretto run`` in a
real repository; the ledger, ``stretto cost``, ``stretto explain``, ``stretto doctor`` and the
server's own count of requests in flight are what the checks read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _support import (
    AIDER,
    NPM_BIN,
    WRITE_TASK_FILE,
    committed_project,
    generate_requests,
    path_with,
    require_cli,
)
from click.testing import CliRunner

from stretto.frontends.cli import main
from stretto.testing.fakemodel import FakeModelServer, Script, Step, ToolCall, Usage
from stretto.testing.fakemodel.script import Match, Rule, Session
from stretto.testing.repo import git

LOCAL_MODEL = "qwen2.5-coder:7b"
METADATA = (
    "{ max_input_tokens = 128000, input_cost_per_token = 1e-6, output_cost_per_token = 2e-6 }"
)


def whole(path: str, content: str, usage: Usage | None = None) -> Step:
    """A reply in aider's ``whole`` edit format."""
    return Step(text=f"{path}\n```\n{content}```\n", usage=usage)


def ledger(project: Path) -> list[dict[str, object]]:
    path = project / ".stretto" / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def journal(project: Path) -> list[dict[str, object]]:
    [path] = (project / ".stretto" / "runs").glob("*/journal.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (``.git`` included) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result.exit_code, result.output


# --------------------------------------------------------------------------- aider on Ollama

AIDER_LOCAL = """\
[local.ollama]
kind = "ollama"
base_url = "{url}"
models = ["{model}"]

[agents.aider-local]
adapter = "aider"
command = "{aider}"
local = "ollama"
edit_format = "whole"
"""

ONE_STEP = """\
name: local-one
stages:
  - name: work
    steps:
      - {id: hello, goal: create hello.txt, files: [hello.txt], agent: aider-local}
"""


def test_aider_on_ollama_lands_offline_at_zero_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real aider, told ``ollama_chat/MODEL`` and ``OLLAMA_API_BASE``, talks Ollama's own API
    to the scripted server; ``--offline`` lets it run; the ledger books $0, ``local``, and the
    agent's time; ``stretto cost`` shows it as local."""
    require_cli(AIDER)
    script = Script.from_steps(
        [whole("hello.txt", "hello\n", usage=Usage(900, 30, 0))], models=(LOCAL_MODEL,)
    )
    with FakeModelServer(script) as server:
        config = AIDER_LOCAL.format(url=server.url, model=LOCAL_MODEL, aider=AIDER)
        project = committed_project(tmp_path, ONE_STEP, config)
        monkeypatch.chdir(project)
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        code, output = invoke(["run", "plan.yaml", "--offline"])
        requests = server.requests
    assert code == 0, output
    assert git(project, "show", "HEAD:hello.txt") == "hello\n"
    generated = [r for r in requests if r.endpoint == "generate"]
    assert [(r.protocol, r.path) for r in generated] == [("ollama", "/api/chat")]
    assert generated[0].body["model"] == LOCAL_MODEL  # ollama_chat/ is LiteLLM's, not Ollama's
    assert {r.protocol for r in requests} == {"ollama"}  # nothing but Ollama's API was asked
    [entry] = ledger(project)
    assert entry["source"] == "local" and entry["cost_usd"] == 0.0 and entry["local"] == "ollama"
    assert entry["model"] == f"ollama_chat/{LOCAL_MODEL}"
    assert isinstance(entry["seconds"], float) and entry["seconds"] > 0
    assert entry["tokens"]["input"] == 900  # what the server reported, through aider
    [started] = [r for r in journal(project) if r["type"] == "run_started"]
    assert started["options"]["offline"] is True
    code, table = invoke(["cost", "--by", "agent"])
    assert code == 0, table
    assert "local $0" in table and "1 attempt ran on local model servers: $0" in table
    code, raw = invoke(["cost", "--by", "agent", "--json"])
    [row] = json.loads(raw)["rows"]
    assert row["local"] == 1 and row["cost_usd"] == 0.0


# --------------------------------------------------------------------------- opencode on /v1

OPENCODE_LOCAL = """\
[local.vllm]
kind = "openai"
base_url = "{url}/v1"
models = ["{model}"]
max_parallel = 2

[agents.opencode-local]
adapter = "opencode"
local = "vllm"
"""

TWO_STEPS = """\
name: local-two
stages:
  - name: work
    steps:
      - {id: alpha, goal: create alpha.txt, files: [alpha.txt], agent: opencode-local}
      - {id: beta, goal: create beta.txt, files: [beta.txt], agent: opencode-local}
"""


def test_opencode_on_an_openai_compatible_local_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real opencode against a local OpenAI-compatible server (vLLM, llama.cpp, LM Studio):
    no key in the environment (a placeholder is given), the model is the server's first, two
    attempts at once (max_parallel = 2), both $0 and local."""
    require_cli(NPM_BIN / "opencode")
    args = {"command": WRITE_TASK_FILE, "description": "write the file"}
    script = Script.from_steps(
        [Step(tool_calls=[ToolCall("bash", args)]), Step(text="Done.")],
        models=("Qwen/Qwen2.5-Coder-7B-Instruct",),
    )
    with FakeModelServer(script) as server:
        model = "Qwen/Qwen2.5-Coder-7B-Instruct"
        project = committed_project(
            tmp_path, TWO_STEPS, OPENCODE_LOCAL.format(url=server.url, model=model)
        )
        monkeypatch.chdir(project)
        monkeypatch.setenv("PATH", path_with(NPM_BIN))
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
        code, output = invoke(["run", "plan.yaml", "--offline"])
        generated = generate_requests(server)
        peak = server.peak_in_flight(protocol="chat")
    assert code == 0, output
    assert git(project, "show", "HEAD:alpha.txt") == "alpha\n"
    assert git(project, "show", "HEAD:beta.txt") == "beta\n"
    assert {r.body["model"] for r in generated} == {model}
    assert {r.headers.get("authorization") for r in generated} == {"<redacted>"}
    assert peak <= 2
    entries = ledger(project)
    assert [(e["source"], e["cost_usd"], e["local"]) for e in entries] == [
        ("local", 0.0, "vllm")
    ] * 2


# --------------------------------------------------------------------------- --offline refuses

HOSTED_STEP = """\
name: hosted
stages:
  - name: work
    steps:
      - {id: local, goal: create a.txt, files: [a.txt], agent: aider-local}
      - {id: cloud, goal: create b.txt, files: [b.txt], agent: claude}
"""


def test_offline_refuses_a_hosted_agent_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = AIDER_LOCAL.format(url="http://127.0.0.1:9", model=LOCAL_MODEL, aider=AIDER)
    project = committed_project(tmp_path, HOSTED_STEP, config)
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = CliRunner().invoke(main, ["run", "plan.yaml", "--offline"])
    assert result.exit_code == 2, result.output
    message = result.output
    assert "plan.yaml:6:" in message and "agent 'claude' would reach the network" in message
    assert "provider anthropic" in message and 'local = "NAME" in [agents.claude]' in message
    assert "Traceback" not in message
    assert snapshot(project) == before  # not a byte written, .git and .stretto included
    dry = CliRunner().invoke(main, ["run", "plan.yaml", "--offline", "--dry-run"])
    assert dry.exit_code == 2 and "would reach the network" in dry.output
    goal = CliRunner().invoke(main, ["run", "-g", "do it", "--offline"])
    assert goal.exit_code == 2 and "--offline takes a PLAN_FILE" in goal.output
    assert snapshot(project) == before


def test_offline_refuses_a_router_with_no_local_arm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = (
        AIDER_LOCAL.format(url="http://127.0.0.1:9", model=LOCAL_MODEL, aider=AIDER)
        + '\n[[router.arms]]\nagent = "claude"\ntier = "balanced"\n'
    )
    plan = ONE_STEP.replace(", agent: aider-local", "")
    project = committed_project(tmp_path, plan, config)
    monkeypatch.chdir(project)
    before = snapshot(project)
    result = CliRunner().invoke(main, ["run", "plan.yaml", "--offline"])
    assert result.exit_code == 2, result.output
    assert "stretto.toml:12:" in result.output and "no [[router.arms]] agent" in result.output
    assert snapshot(project) == before


# --------------------------------------------------------------------------- doctor


def test_doctor_reports_a_missing_model_and_how_to_pull_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script.from_steps([Step(text="hi")], models=(LOCAL_MODEL,))
    with FakeModelServer(script) as server:
        url = server.url
        # aider named by its bare name (not on PATH here): doctor does not start it for
        # its version, which takes seconds
        config = AIDER_LOCAL.format(url=url, model=LOCAL_MODEL, aider="aider")
        config = config.replace(
            f'models = ["{LOCAL_MODEL}"]', f'models = ["{LOCAL_MODEL}", "llama3.2"]'
        )
        config += 'model = "deepseek-r1:8b"\n'
        project = committed_project(tmp_path, ONE_STEP, config)
        monkeypatch.chdir(project)
        code, output = invoke(["doctor"])
        code_json, raw = invoke(["doctor", "--json"])
        asked = {(r.method, r.path) for r in server.requests}
    assert code == 1, output
    assert f"local ollama: ollama server at {url} answers; 1 model(s): {LOCAL_MODEL}" in output
    assert "model 'llama3.2' (named in [local.ollama] models) is not on" in output
    assert "fix: ollama pull llama3.2" in output
    assert "model 'deepseek-r1:8b' (named in [agents.aider-local])" in output
    assert "fix: ollama pull deepseek-r1:8b" in output
    assert f"local model {LOCAL_MODEL}" not in output  # the one that is there is not reported
    assert asked == {("GET", "/api/tags")}
    checks = {c["name"]: c for c in json.loads(raw)["checks"]}
    assert code_json == 1 and checks["local ollama model llama3.2"]["status"] == "fail"
    # The server gone: doctor says so, and how to start it.
    code, output = invoke(["doctor"])
    assert code == 1 and "does not answer" in output and "fix: ollama serve" in output
    code, listing = invoke(["agents"])
    assert f"local model server: ollama (ollama at {url})" in listing
    # a profile runs its adapter's program: it used to be listed as "a plugin: see its docs"
    [line] = [x for x in listing.splitlines() if x.split()[1:2] == ["aider-local"]]
    assert "'aider' not found on PATH; pipx install aider-chat" in line


# --------------------------------------------------------------------------- mixed, escalating

MIXED = """\
max_agents = 2
env = ["OPENAI_API_KEY"]

[gates]
good = "! grep -rq bad --include=*.txt ."

[local.ollama]
kind = "ollama"
base_url = "{local}"
models = ["{model}"]
max_parallel = 1

[agents.aider-local]
adapter = "aider"
command = "{aider}"
local = "ollama"
edit_format = "whole"

[agents.aider]
command = "{aider}"
base_url = "{hosted}"
model = "fake-model"
edit_format = "whole"
model_metadata = {metadata}

[router]
warmup = 50

[[router.arms]]
agent = "aider-local"
model = "{model}"
tier = "fast"

[[router.arms]]
agent = "aider"
model = "fake-model"
tier = "balanced"
"""

THREE_STEPS = """\
name: mixed
stages:
  - name: work
    steps:
      - {id: alpha, goal: create alpha.txt, files: [alpha.txt], complexity: low}
      - {id: beta, goal: create beta.txt, files: [beta.txt], complexity: low}
"""


def test_a_mixed_run_escalates_from_local_to_hosted_within_max_parallel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two routed tasks, two agents at once: the cascade starts each on the local arm,
    whose server takes one at a time (max_parallel = 1); its answers fail the gate, so each
    task escalates to the hosted arm, which lands it. The scripted server never had more than
    one request in flight on the local session; the hosted attempts ran side by side."""
    require_cli(AIDER)
    names = ("alpha", "beta")

    def rules(content: str, delay: float) -> list[Rule]:
        return [
            Rule(
                Match(body_contains=f"create {n}.txt"),
                Step(text=f"{n}.txt\n```\n{content}```\n", usage=Usage(800, 20, 0), delay=delay),
            )
            for n in names
        ]

    # The local server is slow (0.5 s a reply), so overlapping requests would show.
    script = Script(
        sessions={
            "local": Session([Step(text="No idea.")], rules=rules("bad\n", 0.5)),
            "hosted": Session([Step(text="No idea.")], rules=rules("good\n", 0.0)),
        },
        models=(LOCAL_MODEL, "fake-model"),
    )
    with FakeModelServer(script) as server:
        config = MIXED.format(
            local=server.session_url("local"),
            hosted=server.session_url("hosted") + "/v1",
            model=LOCAL_MODEL,
            aider=AIDER,
            metadata=METADATA,
        )
        project = committed_project(tmp_path, THREE_STEPS, config)
        monkeypatch.chdir(project)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        code, output = invoke(["run", "plan.yaml"])
        local_peak = server.peak_in_flight(session="local")
        hosted_calls = [r for r in server.requests if r.session == "hosted"]
        local_calls = [r for r in server.requests if r.session == "local"]
    assert code == 0, output
    for name in names:
        assert git(project, "show", f"HEAD:{name}.txt") == "good\n"
    assert local_peak == 1, f"{local_peak} requests at once reached the local server"
    assert len([r for r in local_calls if r.endpoint == "generate"]) == 2
    assert len([r for r in hosted_calls if r.endpoint == "generate"]) == 2
    assert {r.protocol for r in hosted_calls} == {"chat"}
    records = journal(project)
    # never two local agents at once, by the journal
    running, most = set(), 0
    for rec in records:
        if rec["type"] == "attempt_started" and rec["agent"] == "aider-local":
            running.add(rec["task"])
            most = max(most, len(running))
        elif rec["type"] == "attempt_finished" and rec["task"] in running:
            running.discard(rec["task"])
    assert most == 1
    rules_used = [(r["task"], r["agent"], r["rule"]) for r in records if r["type"] == "route"]
    for name in names:
        assert (name, "aider-local", "cascade-start") in rules_used
        assert (name, "aider", "cascade-escalate") in rules_used
    entries = ledger(project)
    local_entries = [e for e in entries if e["agent"] == "aider-local"]
    hosted_entries = [e for e in entries if e["agent"] == "aider"]
    assert [(e["source"], e["cost_usd"]) for e in local_entries] == [("local", 0.0)] * 2
    assert all(e["source"] == "reported" and e["cost_usd"] > 0 for e in hosted_entries)
    assert len(hosted_entries) == 2
    waits = [r for r in records if r["type"] == "decision" and r.get("action") == "wait"]
    assert any("local model server 'ollama'" in str(w.get("why")) for w in waits), waits
    waited = next(w["task"] for w in waits if "local model server" in str(w.get("why")))
    code, story = invoke(["explain", waited])
    assert code == 0, story
    assert "waited: waiting for a slot on local model server 'ollama'" in story
    assert "cascade-escalate" in story


# --------------------------------------------------------------------------- codex on /v1

CODEX_LOCAL = """\
[local.ollama]
kind = "ollama"
base_url = "{url}"
models = ["gpt-oss:20b"]

[agents.codex-local]
adapter = "codex"
local = "ollama"
"""


def test_codex_on_a_local_server_through_a_custom_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real codex with a custom provider whose base_url is the local server's /v1 (Ollama's
    OpenAI-compatible API, here the scripted server's Responses endpoint): no key in the
    environment, the server's model, $0 in the ledger although codex reported tokens."""
    require_cli(NPM_BIN / "codex")
    script = Script.from_steps(
        [
            Step(
                tool_calls=[ToolCall("exec_command", {"cmd": WRITE_TASK_FILE})],
                usage=Usage(10_000, 500, 0),
            ),
            Step(text="Done.", usage=Usage(11_000, 20, 0)),
        ],
        models=("gpt-oss:20b",),
    )
    plan = ONE_STEP.replace("aider-local", "codex-local")
    with FakeModelServer(script) as server:
        project = committed_project(tmp_path, plan, CODEX_LOCAL.format(url=server.url))
        monkeypatch.chdir(project)
        monkeypatch.setenv("PATH", path_with(NPM_BIN))
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
        code, output = invoke(["run", "plan.yaml", "--offline"])
        generated = generate_requests(server)
    assert code == 0, output
    assert git(project, "show", "HEAD:hello.txt") == "hello\n"
    assert [(r.path, r.body["model"]) for r in generated] == [("/v1/responses", "gpt-oss:20b")] * 2
    [entry] = ledger(project)
    assert (entry["source"], entry["cost_usd"], entry["local"]) == ("local", 0.0, "ollama")
    assert entry["tokens"]["input"] > 0


def test_codex_on_a_local_server_plans_a_goal_at_zero_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local planner: codex's read-only planning call goes to the local server, and the
    planning call is booked at $0, local."""
    require_cli(NPM_BIN / "codex")
    step = {
        "id": "hello", "title": "", "goal": "create hello.txt", "description": "",
        "role": "backend", "complexity": "low", "files": ["hello.txt"], "outputs": [],
        "depends_on": [], "gates": [],
    }  # fmt: skip
    answer = {"name": "hi", "stages": [{"name": "work", "depends_on": [], "steps": [step]}]}
    script = Script.from_steps(
        [Step(text=json.dumps(answer), usage=Usage(5_000, 300, 0))], models=("gpt-oss:20b",)
    )
    with FakeModelServer(script) as server:
        config = 'default_agent = "codex-local"\n' + CODEX_LOCAL.format(url=server.url)
        project = committed_project(tmp_path, ONE_STEP, config)
        monkeypatch.chdir(project)
        monkeypatch.setenv("PATH", path_with(NPM_BIN))
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
        code, output = invoke(["plan", "--planner", "codex-local", "--plan-only", "say hello"])
        generated = generate_requests(server)
    assert code == 0, output
    assert "create hello.txt" in output
    assert [r.body["model"] for r in generated] == ["gpt-oss:20b"]
    [entry] = ledger(project)
    assert (entry["kind"], entry["source"], entry["cost_usd"]) == ("plan", "local", 0.0)
    assert entry["local"] == "ollama"
