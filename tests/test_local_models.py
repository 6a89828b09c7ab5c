"""Local model servers (issue 20) without the real agent CLIs: config, adapters, the scripted
server's Ollama API, the ledger, budgets, the per-server limit and ``stretto init``.

The real CLIs (aider on Ollama, opencode on an OpenAI-compatible server) are in
``tests/conformance/test_local.py``; here a small script plays the agent through the
``command`` adapter and talks to the scripted server itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from stretto.agents import AttemptContext, get_adapter, provider_of
from stretto.config import load_config
from stretto.errors import ConfigError
from stretto.frontends.cli import main
from stretto.localmodels import LocalServer, with_servers
from stretto.plans.plan import Task
from stretto.routing.ledger import Entry, make_entry, render_cost, summarize, totals
from stretto.testing.fakemodel import FakeModelServer, HttpError, Script, Step, Usage
from stretto.testing.repo import git, make_repo

MODEL = "qwen2.5-coder:7b"


def post(url: str, body: dict[str, Any]) -> tuple[int, bytes, str]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers["Content-Type"]


# --------------------------------------------------------------------------- the scripted server


def test_the_scripted_server_speaks_ollamas_chat_api() -> None:
    script = Script.from_steps(
        [Step(text="hello there, world", usage=Usage(12, 5, 0)), Step(text="again")],
        models=(MODEL, "llama3.2"),
    )
    with FakeModelServer(script) as server:
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        status, raw, kind = post(f"{server.url}/api/chat", chat)  # streams unless told not to
        lines = [json.loads(line) for line in raw.decode().splitlines()]
        assert status == 200 and kind == "application/x-ndjson"
        assert "".join(line["message"]["content"] for line in lines) == "hello there, world"
        assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
        assert lines[-1]["prompt_eval_count"] == 12 and lines[-1]["eval_count"] == 5
        status, raw, _ = post(f"{server.url}/api/chat", {**chat, "stream": False})
        whole = json.loads(raw)
        assert status == 200 and whole["message"] == {
            "role": "assistant",
            "content": "hello there, world",
        }
        assert whole["done"] is True and whole["done_reason"] == "stop"
        with urllib.request.urlopen(f"{server.url}/api/tags") as response:
            tags = json.load(response)
        assert [m["name"] for m in tags["models"]] == [MODEL, "llama3.2:latest"]
        status, raw, _ = post(f"{server.url}/api/show", {"model": "llama3.2"})
        assert status == 200 and json.loads(raw)["model_info"]["llama.context_length"] > 0
        status, raw, _ = post(f"{server.url}/api/show", {"name": "mistral"})
        assert status == 404 and json.loads(raw) == {"error": "model 'mistral' not found"}
        with urllib.request.urlopen(f"{server.url}/api/version") as response:
            assert "version" in json.load(response)
        assert [(r.protocol, r.endpoint) for r in server.requests][:2] == [
            ("ollama", "generate"),
            ("ollama", "generate"),
        ]


def test_an_injected_error_comes_in_ollamas_shape() -> None:
    with FakeModelServer([Step(http_error=HttpError(500))]) as server:
        status, raw, _ = post(f"{server.url}/api/chat", {"model": "m", "messages": []})
    assert status == 500 and set(json.loads(raw)) == {"error"}


def test_the_server_counts_requests_in_flight() -> None:
    script = Script.from_steps([Step(text="slow", delay=0.4)])
    with FakeModelServer(script) as server:
        body = {"model": "m", "stream": False, "messages": [{"role": "user", "content": "x"}]}
        threads = [
            threading.Thread(target=post, args=(f"{server.url}/api/chat", body)) for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        post(f"{server.url}/api/chat", body)  # one more, alone
        assert server.peak_in_flight(protocol="ollama") == 3
        assert server.peak_in_flight(protocol="chat") == 0
        assert server.peak_in_flight(session="other") == 0


# --------------------------------------------------------------------------- config


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"README.md": "hi\n"})


def test_local_servers_get_defaults_per_kind(repo: Path) -> None:
    (repo / "stretto.toml").write_text(
        '[local.ollama]\nkind = "ollama"\nmodels = ["qwen2.5-coder:7b"]\n'
        '[local.vllm]\nkind = "openai"\nbase_url = "http://10.0.0.5:8000/v1/"\n'
        '[agents.aider-local]\nadapter = "aider"\nlocal = "ollama"\n'
    )
    config = load_config(repo)
    assert config.local["ollama"] == LocalServer(
        "ollama", "ollama", "http://127.0.0.1:11434", (MODEL,), 1
    )
    assert config.local["vllm"] == LocalServer("vllm", "openai", "http://10.0.0.5:8000/v1", (), 4)
    assert config.local["ollama"].openai_url == "http://127.0.0.1:11434/v1"
    table = config.agents["aider-local"]
    assert table["local"] == "ollama" and table["local_server"]["base_url"].endswith(":11434")
    assert provider_of("aider-local", config.agents) == "local:ollama"
    assert provider_of("aider", config.agents) == "openai"


BAD = [
    ('[local.o]\nkind = "olama"\n', "stretto.toml:2:1: local.o.kind", "did you mean 'ollama'"),
    ('[local.o]\nkind = "ollama"\nbase_url = "127.0.0.1:11434"\n', "stretto.toml:3:1", "URL"),
    ('[local.o]\nkind = "ollama"\nmax_paralel = 2\n', "local.o.max_paralel", "'max_parallel'"),
    ('[local.o]\nkind = "ollama"\nmax_parallel = 0\n', "local.o.max_parallel", "at least 1"),
    ("[local.o]\nbase_url = 'http://x'\n", "local.o.kind", 'kind = "ollama"'),
    (
        '[local.ollama]\nkind = "ollama"\n[agents.a]\nadapter = "aider"\nlocal = "olama"\n',
        "stretto.toml:5:1: agents.a.local",
        "unknown local server 'olama' (did you mean 'ollama'?)",
    ),
    ('[agents.a]\nlocal_server = { name = "x" }\n', "agents.a.local_server", "set by stretto"),
]


@pytest.mark.parametrize(("text", "where", "says"), BAD)
def test_bad_local_tables_are_located_errors(repo: Path, text: str, where: str, says: str) -> None:
    (repo / "stretto.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(repo)
    assert where in caught.value.message and says in caught.value.message


def test_a_bad_local_table_stops_a_run_before_anything_happens(repo: Path) -> None:
    (repo / "stretto.toml").write_text('[local.o]\nkind = "olama"\n')
    (repo / "plan.yaml").write_text(
        "stages:\n  - name: s\n    steps:\n      - {id: a, goal: g, command: 'true'}\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "plan")
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    done = subprocess.run(
        [sys.executable, "-m", "stretto", "run", "plan.yaml"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "stretto.toml:2:1: local.o.kind" in done.stderr and "Traceback" not in done.stderr
    assert {p: p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------- adapters


def context(tmp_path: Path, agent: str, settings: dict[str, Any], **env: str) -> AttemptContext:
    task = Task(
        id="t", goal="g", title="t", description="", role="implement", complexity="low",
        stage="work", files=None, lease=("**",), depends_on=(), explicit_deps=(),
    )  # fmt: skip
    return AttemptContext(
        task,
        1,
        "r",
        tmp_path,
        "p",
        tmp_path / "p.md",
        tmp_path / "log",
        {"PATH": os.environ["PATH"], **env},
        None,
        None,
        settings,
    )


def local(kind: str, url: str, *models: str, **table: Any) -> dict[str, Any]:
    server = LocalServer("box", "ollama" if kind == "ollama" else "openai", url, models)
    return with_servers({"a": {"local": "box", **table}}, {"box": server})["a"]


def test_aider_on_ollama_uses_ollama_chat_and_ollama_api_base(tmp_path: Path) -> None:
    settings = {**local("ollama", "http://127.0.0.1:11434", MODEL), "command": sys.executable}
    launch = get_adapter("aider").build(context(tmp_path, "aider", settings))
    argv = list(launch.argv)
    assert argv[argv.index("--model") + 1] == f"ollama_chat/{MODEL}"  # the server's first
    assert launch.env["OLLAMA_API_BASE"] == "http://127.0.0.1:11434"
    settings = {**local("openai", "http://127.0.0.1:8080/v1", "coder"), "command": sys.executable}
    launch = get_adapter("aider").build(context(tmp_path, "aider", settings))
    argv = list(launch.argv)
    assert argv[argv.index("--model") + 1] == "openai/coder"
    assert launch.env["OPENAI_API_BASE"] == "http://127.0.0.1:8080/v1"
    assert launch.env["OPENAI_API_KEY"] == "sk-local"  # none given: a placeholder


def test_opencode_qwen_and_codex_get_the_servers_openai_url(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("opencode", "qwen", "codex"):
        (fake / name).write_text("#!/bin/sh\n")
        (fake / name).chmod(0o755)
    settings = local("ollama", "http://127.0.0.1:11434", MODEL)
    ctx = context(tmp_path, "x", settings, PATH=str(fake), OPENAI_BASE_URL="https://api.x/v1")
    opencode = get_adapter("opencode").build(ctx)
    config = json.loads(Path(opencode.env["OPENCODE_CONFIG"]).read_text())
    assert config["provider"]["stretto"]["options"]["baseURL"] == "http://127.0.0.1:11434/v1"
    assert opencode.env["OPENAI_API_KEY"] == "sk-local" and opencode.model == MODEL
    qwen = get_adapter("qwen").build(ctx)
    assert qwen.env["OPENAI_BASE_URL"] == "http://127.0.0.1:11434/v1"
    assert qwen.env["OPENAI_API_KEY"] == "sk-local"
    codex = get_adapter("codex").build(ctx)
    toml = tomllib.loads((Path(codex.env["CODEX_HOME"]) / "config.toml").read_text())
    [provider] = toml["model_providers"].values()
    assert provider["base_url"] == "http://127.0.0.1:11434/v1" and toml["model"] == MODEL
    assert codex.env[provider["env_key"]] == "sk-local"


def test_the_command_agent_gets_the_server_in_its_environment(tmp_path: Path) -> None:
    settings = {
        **local("ollama", "http://127.0.0.1:11434", MODEL),
        "adapter": "command",
        "command": ["tool", "--url", "{base_url}", "--model", "{model}"],
    }
    launch = get_adapter("bot", settings).build(context(tmp_path, "bot", settings))
    assert list(launch.argv) == ["tool", "--url", "http://127.0.0.1:11434", "--model", MODEL]
    env = launch.env
    assert env["STRETTO_LOCAL_SERVER"] == "box" and env["STRETTO_LOCAL_KIND"] == "ollama"
    assert env["OLLAMA_HOST"] == env["OLLAMA_API_BASE"] == "http://127.0.0.1:11434"
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:11434/v1"


# --------------------------------------------------------------------------- ledger and costs


def test_a_local_entry_costs_nothing_whatever_was_reported() -> None:
    entry = make_entry(
        run_id="r", task="t", attempt=1, kind="attempt", agent="aider-local",
        agent_kind="aider", model="ollama_chat/qwen", tier="fast",
        usage={"input_tokens": 900, "output_tokens": 30}, reported_cost=0.42,
        outcome="success", local="ollama", seconds=12.3456,
    )  # fmt: skip
    assert (entry.cost_usd, entry.source, entry.local, entry.seconds) == (
        0.0,
        "local",
        "ollama",
        12.346,
    )
    assert entry.counted_usd == 0.0
    again = Entry.from_dict(json.loads(json.dumps(entry.to_dict())))
    assert again == entry
    old = {k: v for k, v in entry.to_dict().items() if k not in ("local", "seconds")}
    assert Entry.from_dict({**old, "source": "reported", "cost_usd": 1.0}).local is None
    hosted = make_entry(
        run_id="r", task="u", attempt=1, kind="attempt", agent="claude", agent_kind="claude",
        model="m", tier=None, usage={}, reported_cost=0.5, outcome="success",
    )  # fmt: skip
    rows = summarize([entry, hosted], "agent")
    lines = render_cost(rows, totals([entry, hosted]), "agent", title="spend")
    text = "\n".join(lines)
    assert "local $0" in text and "$0.50 (1 local)" in text
    assert "1 attempt ran on local model servers: $0, 12.3 s of agent time" in text


# --------------------------------------------------------------------------- runs

LOCAL_BOT = """\
import json, os, sys, urllib.request
task = os.environ["STRETTO_TASK_ID"]
assert os.environ["STRETTO_LOCAL_KIND"] == "ollama", os.environ
body = {"model": sys.argv[1], "stream": False,
        "messages": [{"role": "user", "content": "write " + task}]}
request = urllib.request.Request(os.environ["OLLAMA_API_BASE"] + "/api/chat",
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
reply = json.load(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request))
open(task + ".txt", "w").write(reply["message"]["content"])
usage = {"prompt_tokens": reply["prompt_eval_count"], "completion_tokens": reply["eval_count"]}
print(json.dumps({"usage": usage, "total_cost_usd": 0.5}))
"""
HOSTED_BOT = """\
import json, os
task = os.environ["STRETTO_TASK_ID"]
open(task + ".txt", "w").write("paid\\n")
print(json.dumps({"usage": {"prompt_tokens": 10, "completion_tokens": 1}, "total_cost_usd": 1.0}))
"""


def project(tmp_path: Path, url: str, plan: str, extra: str = "") -> Path:
    root = make_repo(tmp_path / "project", {"README.md": "hi\n"})
    (tmp_path / "local_bot.py").write_text(LOCAL_BOT)
    (tmp_path / "hosted_bot.py").write_text(HOSTED_BOT)
    py = sys.executable
    (root / "stretto.toml").write_text(
        f"""\
max_agents = 3
{extra}
[local.ollama]
kind = "ollama"
base_url = "{url}"
models = ["{MODEL}"]

[agents.local-bot]
adapter = "command"
local = "ollama"
command = ["{py}", "{tmp_path / "local_bot.py"}", "{{model}}"]
output = "jsonl"

[agents.hosted-bot]
adapter = "command"
command = ["{py}", "{tmp_path / "hosted_bot.py"}"]
output = "jsonl"
"""
    )
    (root / "plan.yaml").write_text(plan)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "plan")
    return root


def records(root: Path) -> list[dict[str, Any]]:
    [path] = (root / ".stretto" / "runs").glob("*/journal.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


THREE_LOCAL = """\
stages:
  - name: s
    steps:
      - {id: a, goal: write a.txt, files: [a.txt], agent: local-bot}
      - {id: b, goal: write b.txt, files: [b.txt], agent: local-bot}
      - {id: c, goal: write c.txt, files: [c.txt], agent: local-bot}
"""


def test_max_parallel_holds_and_the_wait_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Script.from_steps([Step(text="made\n", delay=0.3)], models=(MODEL,))
    with FakeModelServer(script) as server:
        root = project(tmp_path, server.url, THREE_LOCAL)
        monkeypatch.chdir(root)
        result = CliRunner().invoke(main, ["run", "plan.yaml", "--offline"])
        peak = server.peak_in_flight(protocol="ollama")
        asked = len([r for r in server.requests if r.endpoint == "generate"])
    assert result.exit_code == 0, result.output
    assert [git(root, "show", f"HEAD:{t}.txt") for t in "abc"] == ["made\n"] * 3
    assert asked == 3 and peak == 1
    journal = records(root)
    running, most = 0, 0
    for rec in journal:
        running += {"attempt_started": 1, "attempt_finished": -1}.get(rec["type"], 0)
        most = max(most, running)
    assert most == 1
    whys = {r.get("why") for r in journal if r.get("action") == "wait"}
    assert "waiting for a slot on local model server 'ollama': 1 of max_parallel = 1 in use" in whys
    waited = next(r["task"] for r in journal if r.get("action") == "wait")
    story = CliRunner().invoke(main, ["explain", waited])
    assert "waited: waiting for a slot on local model server 'ollama'" in story.output
    ledger = [json.loads(x) for x in (root / ".stretto" / "ledger.jsonl").read_text().splitlines()]
    assert {(e["source"], e["cost_usd"], e["local"]) for e in ledger} == {("local", 0.0, "ollama")}
    assert all(e["seconds"] > 0 and e["tokens"]["input"] > 0 for e in ledger)


BUDGETED = """\
budget: 0.5
stages:
  - name: first
    steps:
      - {id: paid, goal: write paid.txt, files: [paid.txt], agent: hosted-bot}
  - name: then
    steps:
      - {id: free, goal: write free.txt, files: [free.txt], agent: local-bot, depends_on: [paid]}
      - {id: more, goal: write more.txt, files: [more.txt], agent: hosted-bot, depends_on: [paid]}
"""


def test_budgets_ignore_local_attempts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hosted step spends $1 of a $0.50 budget: the next hosted step is skipped, the local
    one still runs and lands (it reported $0.50 itself, which the ledger does not count)."""
    with FakeModelServer(Script.from_steps([Step(text="free\n")], models=(MODEL,))) as server:
        root = project(tmp_path, server.url, BUDGETED)
        monkeypatch.chdir(root)
        result = CliRunner().invoke(main, ["run", "plan.yaml"])
    assert result.exit_code == 1, result.output
    assert git(root, "show", "HEAD:free.txt") == "free\n"
    assert git(root, "show", "HEAD:paid.txt") == "paid\n"
    finished = {r["task"]: r for r in records(root) if r["type"] == "task_finished"}
    assert finished["free"]["status"] == "landed"
    assert finished["more"]["status"] == "skipped" and "budget" in finished["more"]["reason"]
    cost = CliRunner().invoke(main, ["cost", "--by", "agent"])
    assert "local $0" in cost.output and "$1.00 (1 local)" in cost.output
    report = json.loads(CliRunner().invoke(main, ["report", "--json"]).output)
    by_agent = {row["key"]: row for row in report["cost_by"]["agent"]}
    assert by_agent["local-bot"]["local"] == 1 and by_agent["hosted-bot"]["local"] == 0
    free = next(a for a in report["attempts"] if a["task"] == "free")
    assert free["local"] == "ollama" and free["cost_usd"] == 0.0
    html = CliRunner().invoke(main, ["report", "-o", "-"]).output
    assert "(1 local)" in html and "(local model server ollama)" in html


# --------------------------------------------------------------------------- init


def test_init_declares_a_server_that_answers_on_its_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path / "r", {"README.md": "hi\n"})
    monkeypatch.chdir(root)
    with FakeModelServer(Script.from_steps([Step(text="x")], models=(MODEL,))) as server:
        monkeypatch.setenv(
            "STRETTO_LOCAL_PROBE", f"ollama={server.url},openai=http://127.0.0.1:9/v1"
        )
        result = CliRunner().invoke(main, ["init", "--json"])
        url = server.url
    assert result.exit_code == 0, result.output
    [found] = json.loads(result.output)["local"]
    assert found == {
        "name": "ollama",
        "kind": "ollama",
        "base_url": url,
        "what": "Ollama",
        "models": [MODEL],
    }
    config = load_config(root)
    assert config.local["ollama"].models == (MODEL,) and config.local["ollama"].base_url == url
    assert (
        '# [agents.aider-local]\n# adapter = "aider"\n# local = "ollama"'
        in (root / "stretto.toml").read_text()
    )


def test_init_with_no_server_only_shows_how(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path / "r", {"README.md": "hi\n"})
    monkeypatch.chdir(root)
    monkeypatch.setenv("STRETTO_LOCAL_PROBE", "ollama=http://127.0.0.1:9")
    result = CliRunner().invoke(main, ["init"])
    assert result.exit_code == 0 and "local model server" not in result.output
    assert load_config(root).local == {}
    assert "# [local.ollama]" in (root / "stretto.toml").read_text()


def test_max_cost_does_not_stop_a_local_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local bot reports $0.50 (as some CLIs price every model); with ``[attempt] max_cost
    = 0.10`` it used to be stopped as over its limit, although a local attempt costs $0."""
    plan = THREE_LOCAL.split("      - {id: b")[0]  # step a alone
    with FakeModelServer(Script.from_steps([Step(text="ok\n")], models=(MODEL,))) as server:
        root = project(tmp_path, server.url, plan, extra="[attempt]\nmax_cost = 0.1\n")
        monkeypatch.chdir(root)
        result = CliRunner().invoke(main, ["run", "plan.yaml"])
    assert result.exit_code == 0, result.output
    assert git(root, "show", "HEAD:a.txt") == "ok\n"
    [finished] = [r for r in records(root) if r["type"] == "attempt_finished"]
    assert finished["outcome"] == "success" and finished["cost_usd"] == 0.0


def test_offline_is_kept_in_the_runs_options() -> None:
    from stretto.options import RunOptions

    options = RunOptions(target="main", offline=True)
    assert RunOptions.from_dict(options.to_dict()).offline is True
    older = {k: v for k, v in options.to_dict().items() if k != "offline"}
    assert RunOptions.from_dict(older).offline is False  # a journal from before issue 20
