"""``stretto serve``, a real server process on 127.0.0.1, driven over HTTP with the standard
library's client: the token and Host guard, plan validation, a run started, followed (Server-Sent
Events resumed with Last-Event-ID, 50 followers at once) and inspected through every endpoint."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _engines import stop_engines
from stretto.engine.journal import read_journal
from stretto.testing.repo import make_repo

pytestmark = pytest.mark.timeout(120, method="thread")

PLAN = """\
name: served
stages:
  - name: work
    steps:
      - {id: good, goal: lands, files: [good.txt], command: "sleep 0.5; echo good > good.txt"}
      - {id: bad, goal: fails, files: [bad.txt], command: "echo failing now; exit 3",
         max_attempts: 1}
      - {id: later, goal: after good, files: [later.txt], depends_on: [good],
         command: "sleep 0.5; echo later > later.txt"}
"""


@dataclass
class Server:
    repo: Path
    port: int
    token: str

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Authorization": f"Bearer {self.token if token is None else token}"}
        sent.update(headers or {})
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        out = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        conn.close()
        return out

    def json(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, _, data = self.request(method, path, body)
        return status, json.loads(data)

    def runs(self) -> list[str]:
        root = self.repo / ".stretto" / "runs"
        return sorted(p.name for p in root.iterdir()) if root.is_dir() else []

    def wait_over(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, state = self.json("GET", f"/runs/{run_id}")
            assert status == 200, state
            if state["state"] in ("finished", "failed", "cancelled") and not state["live"]:
                return dict(state)
            assert time.monotonic() < deadline, state
            time.sleep(0.1)

    def sse(self, run_id: str, last: int | None = None, stop_after: int | None = None) -> list[int]:
        """Seq ids of the SSE events of the run (after ``last``) until its end, or until
        ``stop_after`` events were read (then the connection is dropped)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if last is not None:
            headers["Last-Event-ID"] = str(last)
        conn.request("GET", f"/runs/{run_id}/events", headers=headers)
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-type", "").startswith("text/event-stream")
        ids: list[int] = []
        event = ""
        while True:
            line = response.readline().decode()
            if not line:
                break
            line = line.rstrip("\n")
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            elif line.startswith("event: "):
                event = line[7:]
            elif line == "" and event == "end":
                break
            if stop_after is not None and len(ids) >= stop_after and line == "":
                break
        conn.close()
        return ids


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("serve")
    repo = make_repo(base / "repo", {"README.md": "# s\n", "stretto.toml": 'target = "main"\n'})
    port = free_port()
    log = (base / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stretto", "serve", "--port", str(port)],
        cwd=repo,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, (base / "serve.log").read_text()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        token_file = repo / ".stretto" / "serve-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        yield Server(repo, port, token_file.read_text().strip())
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        stop_engines(repo)


def test_no_or_a_wrong_token_is_401_and_changes_nothing(server: Server) -> None:
    before = server.runs()
    for token in ("", "wrong" * 13, server.token[:-1]):
        status, headers, _ = server.request("POST", "/runs", {"plan": PLAN}, token=token)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert server.request("GET", "/runs", token=token)[0] == 401
    assert server.runs() == before


def test_a_foreign_host_or_origin_is_refused(server: Server) -> None:
    before = server.runs()
    status, _, body = server.request(
        "POST", "/runs", {"plan": PLAN}, headers={"Host": f"evil.example:{server.port}"}
    )
    assert status == 421 and b"bad Host" in body
    status, _, _ = server.request(
        "POST", "/runs", {"plan": PLAN}, headers={"Origin": "http://evil.example"}
    )
    assert status == 403
    assert server.runs() == before


def test_an_invalid_plan_is_422_with_its_line_and_field(server: Server) -> None:
    before = server.runs()
    bad = PLAN.replace("max_attempts: 1", "max_attempts: 1, bogus: 2")
    status, body = server.json("POST", "/runs", {"plan": bad})
    assert status == 422, body
    [problem] = body["diagnostics"]
    assert problem["line"] == 7 and "bogus" in json.dumps(problem)
    assert server.runs() == before
    status, body = server.json("POST", "/runs", {"plan": "x.yaml", "goal": "both"})
    assert status == 400 and "'plan'" in body["message"]
    status, body = server.json("POST", "/runs", {"plan": PLAN, "max_agents": 0})
    assert status == 400 and "max_agents" in body["message"]
    status, body = server.json("POST", "/runs", {"plan": PLAN, "offline": "yes"})
    assert status == 400 and "offline" in body["message"]
    hosted = PLAN.replace("max_attempts: 1}", "max_attempts: 1, agent: claude}")
    status, body = server.json("POST", "/runs", {"plan": hosted, "offline": True})
    assert 400 <= status < 500 and "offline" in json.dumps(body), body
    assert server.runs() == before


def test_a_run_started_followed_and_inspected_over_http(server: Server) -> None:
    status, started = server.json("POST", "/runs", {"plan": PLAN, "max_agents": 2})
    assert status == 201, started
    run_id = started["run_id"]
    # Follow it live, drop the connection after a few events, resume with Last-Event-ID.
    first = server.sse(run_id, stop_after=5)
    rest = server.sse(run_id, last=first[-1])
    state = server.wait_over(run_id)
    journal = read_journal(server.repo / ".stretto" / "runs" / run_id / "journal.jsonl")
    seqs = [r.seq for r in journal]
    assert first + rest == seqs  # nothing lost, nothing repeated
    assert state["state"] == "failed"
    assert {t["id"]: t["state"] for t in state["tasks"]} == {
        "good": "landed",
        "bad": "failed",
        "later": "landed",
    }
    status, listed = server.json("GET", "/runs")
    assert status == 200 and run_id in [r["run_id"] for r in listed]
    status, task = server.json("GET", f"/runs/{run_id}/tasks/good")
    assert status == 200 and task["state"] == "landed" and task["commit"]
    for tail in ("", "/log", "/diff"):
        assert server.json("GET", f"/runs/{run_id}/tasks/nope{tail}")[0] == 404
    assert server.json("GET", "/runs/no-such-run")[0] == 404
    status, _, log = server.request("GET", f"/runs/{run_id}/tasks/bad/log")
    assert status == 200 and b"failing now" in log
    status, _, diff = server.request("GET", f"/runs/{run_id}/tasks/good/diff")
    assert status == 200 and b"+good" in diff
    status, page = server.request("GET", f"/runs/{run_id}/report")[::2]
    assert status == 200 and page.count(b'<g class="node ') == 3
    status, trace = server.json("GET", f"/runs/{run_id}/trace")
    assert (
        status == 200 and len([e for e in trace["traceEvents"] if e.get("cat") == "attempt"]) == 3
    )
    status, page_of = server.json("GET", f"/runs/{run_id}/events?after=3")
    assert status == 200 and [e["seq"] for e in page_of["events"]] == seqs[3:]
    assert page_of["next_seq"] == seqs[-1]
    status, refused = server.json("POST", f"/runs/{run_id}/control", {"action": "pause"})
    assert status == 409 and "is not running" in refused["message"]
    status, _, metrics = server.request("GET", "/metrics")
    text = metrics.decode()
    assert status == 200 and 'stretto_runs{state="failed"}' in text
    assert 'stretto_tasks{state="landed"} 2' in text and "stretto_attempts_total 3" in text
    status, doc = server.json("GET", "/openapi.json")
    assert status == 200 and "/runs/{run_id}/events" in doc["paths"]


def test_fifty_followers_each_get_every_record_once(server: Server) -> None:
    status, started = server.json("POST", "/runs", {"plan": PLAN.replace("served", "fifty")})
    assert status == 201, started
    run_id = started["run_id"]
    seen: list[list[int]] = [[] for _ in range(50)]
    errors: list[BaseException] = []

    def follow(index: int) -> None:
        try:
            seen[index] = server.sse(run_id)
        except BaseException as error:  # reported below, with the others
            errors.append(error)

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not errors, errors[0]
    server.wait_over(run_id)
    seqs = [
        r.seq for r in read_journal(server.repo / ".stretto" / "runs" / run_id / "journal.jsonl")
    ]
    for ids in seen:
        assert ids == seqs


def test_control_over_http_is_journaled_with_its_source(server: Server) -> None:
    slow = PLAN.replace("served", "steered").replace("sleep 0.5; echo good", "sleep 3; echo good")
    status, started = server.json("POST", "/runs", {"plan": slow})
    assert status == 201, started
    run_id = started["run_id"]
    for action in ("pause", "unpause"):
        status, result = server.json("POST", f"/runs/{run_id}/control", {"action": action})
        assert status == 200 and result["applied"] and result["ok"], result
    status, result = server.json("POST", f"/runs/{run_id}/control", {"action": "retry"})
    assert status == 409 and "needs a task" in result["message"]
    status, result = server.json(
        "POST", f"/runs/{run_id}/control", {"action": "retry", "task": "goood"}
    )
    assert status == 409 and "did you mean 'good'" in result["message"]
    status, result = server.json("POST", f"/runs/{run_id}/control", {"action": "cancel"})
    assert status == 200 and result["applied"], result
    journal = read_journal(server.repo / ".stretto" / "runs" / run_id / "journal.jsonl")
    controls = [r.fields for r in journal if r.type == "control"]
    assert [c["action"] for c in controls] == ["pause", "unpause", "cancel"]
    assert all(c["source"]["frontend"] == "http" for c in controls)
    deadline = time.monotonic() + 30
    while server.json("GET", f"/runs/{run_id}")[1]["state"] != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_tasks_added_over_http_land_and_bad_ones_are_422_changing_nothing(
    server: Server,
) -> None:
    go = server.repo.parent / "go-add"
    held = (
        PLAN.replace("served", "grown")
        .replace(".txt", "-grown.txt")  # files of its own: other tests' runs landed theirs
        .replace("sleep 0.5; echo good", f"while [ ! -e {go} ]; do sleep 0.05; done; echo good")
    )
    status, started = server.json("POST", "/runs", {"plan": held})
    assert status == 201, started
    run_id = started["run_id"]
    journal = server.repo / ".stretto" / "runs" / run_id / "journal.jsonl"
    deadline = time.monotonic() + 30
    while not any(r.type == "attempt_started" for r in read_journal(journal)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    steps = "id: extra\ngoal: more\nfiles: [extra.txt]\ndepends_on: [good]\n"
    steps += "command: 'echo e > extra.txt'\n"
    inbox = journal.parent / "control"

    def untouched() -> bool:  # nothing sent: no command waiting, none journaled
        controls = [r for r in read_journal(journal) if r.type.startswith("control")]
        return not controls and not list(inbox.iterdir())

    for token in ("", "wrong"):  # no or a bad token: 401, nothing sent
        status, _, _ = server.request(
            "POST", f"/runs/{run_id}/tasks", {"steps": steps}, token=token
        )
        assert status == 401
    bad = steps.replace("depends_on: [good]", "depends_on: [goood]")
    status, body = server.json(
        "POST", f"/runs/{run_id}/tasks", {"steps": bad, "file": "extra.yaml"}
    )
    assert status == 422, body
    [problem] = body["diagnostics"]
    assert (problem["file"], problem["line"], problem["field"]) == (
        "extra.yaml",
        4,
        "depends_on[0]",
    )
    assert "did you mean 'good'" in problem["message"]
    status, body = server.json("POST", f"/runs/{run_id}/tasks", {"file": "x"})
    assert status == 400 and "'steps' is needed" in body["message"]
    status, body = server.json("POST", f"/runs/{run_id}/control", {"action": "add"})
    assert status == 409 and "POST /runs/{id}/tasks" in body["message"]
    assert untouched()
    status, result = server.json("POST", f"/runs/{run_id}/tasks", {"steps": steps})
    assert status == 201 and result["ok"] and result["tasks"] == ["extra"], result
    status, info = server.json("GET", f"/runs/{run_id}/tasks/extra")
    assert status == 200 and info["state"] == "pending"
    go.touch()
    state = server.wait_over(run_id)
    assert {t["id"]: t["state"] for t in state["tasks"]}["extra"] == "landed"
    status, body = server.json("POST", f"/runs/{run_id}/tasks", {"steps": "goal: late\n"})
    assert status == 409 and "not running" in body["message"]
    status, body = server.json("POST", "/runs/nosuchrun/tasks", {"steps": "goal: x\n"})
    assert status == 404


CHROMIUM = Path("/usr/bin/chromium")


def test_dashboard_follows_a_run_and_its_retry_button_reaches_the_journal(
    server: Server,
) -> None:
    if not CHROMIUM.exists():  # scripts/test installs it: its absence is a broken set-up
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-chromium (Debian's chromium)")
    from playwright.sync_api import sync_playwright

    live = """\
name: dashboard
stages:
  - name: work
    steps:
      - {id: flop, goal: fails at once, files: [f.txt], command: "exit 1", max_attempts: 1}
      - {id: slow, goal: keeps the run going, files: [s.txt], command: "sleep 30; echo s > s.txt"}
"""
    status, started = server.json("POST", "/runs", {"plan": live})
    assert status == 201, started
    run_id = started["run_id"]
    journal = server.repo / ".stretto" / "runs" / run_id / "journal.jsonl"
    base = f"http://127.0.0.1:{server.port}"
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(base + "/")
            page.fill("#token", server.token)
            page.click("#login button")
            page.wait_for_selector(f'#runs option[value="{run_id}"]', state="attached")
            # The task table follows the run: flop shows up failed, with a retry button.
            page.wait_for_selector('tr[data-task="flop"] button[data-retry="flop"]', timeout=30000)
            frame = page.frame_locator("#report")  # the report's timeline, refreshed live
            frame.locator('svg.timeline g.attempt[data-task="flop"]').wait_for(timeout=30000)
            page.click('button[data-retry="flop"]')
            deadline = time.monotonic() + 30
            while not any(
                r.type == "control" and r.fields.get("action") == "retry"
                for r in read_journal(journal)
            ):
                assert time.monotonic() < deadline, "the retry never reached the journal"
                time.sleep(0.1)
            # The form adds tasks: a bad step shows its line and field, a good one is added.
            page.click("#adding summary")
            page.fill("#steps", "goal: a note\ndepends_on: [slo]\n")
            page.click("#add button")
            page.wait_for_selector("#added.bad", timeout=30000)
            said = page.inner_text("#added")
            assert "line 2:14 depends_on[0]: unknown step 'slo' (did you mean 'slow'?)" in said
            page.fill(
                "#steps", "{id: note, goal: a note, files: [n.txt], command: 'echo n > n.txt'}"
            )
            page.click("#add button")
            page.locator("#added", has_text="added 1 task: note").wait_for(timeout=30000)
            page.wait_for_selector('tr[data-task="note"]', timeout=30000)
        finally:
            browser.close()
    [add] = [r for r in read_journal(journal) if r.type == "control" and r.fields["ok"] is True
             and r.fields["action"] == "add"]  # fmt: skip
    assert add.fields["tasks"] == ["note"] and add.fields["source"]["frontend"] == "http"
    [retry] = [
        r for r in read_journal(journal) if r.type == "control" and r.fields["action"] == "retry"
    ]
    assert retry.fields["task"] == "flop" and retry.fields["source"]["frontend"] == "http"
    assert all(url.startswith(base + "/") for url in requests), requests
    status, result = server.json("POST", f"/runs/{run_id}/control", {"action": "cancel"})
    assert status == 200, result
    server.wait_over(run_id, timeout=60)
