"""The run report and the trace, from real runs of shell agents.

One module-wide run (``python -m stretto run``) has a task that lands, one that fails its gate
twice, one that fails once and lands on its retry, a chain of three dependent tasks, two tasks
that wait for each other's file lease and a stage that is skipped. The tests read the
``report.html`` the run left in its directory, the trace, and the journal they must agree with.
Detached runs and ``stretto resume`` write the report too. If Playwright and Debian's chromium
are installed (``scripts/install-chromium``), the page is also opened in headless Chromium.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _engines import stop_engines
from stretto.engine.journal import Record, read_journal
from stretto.testing.repo import make_repo

pytestmark = pytest.mark.timeout(120, method="thread")

STRETTO = [sys.executable, "-m", "stretto"]
SECRET = "sk-report-test-0123456789abcdef"
TITLE = 'One <script>alert("x")</script> & "friends"'

PLAN = """\
name: report-demo
stages:
  - name: build
    steps:
      - id: lease-1
        goal: holds shared.txt
        files: [shared.txt]
        command: "sleep 1.5; echo 1 >> shared.txt"
      - id: lease-2
        goal: waits for shared.txt
        files: [shared.txt]
        command: "echo 2 >> shared.txt"
      - id: one
        title: '{title}'
        goal: write one
        files: [one.txt]
        command: "echo one > one.txt"
      - id: flaky
        goal: fails once, then lands
        files: [flaky.txt]
        command: >-
          if [ -f {out}/flaky-ran ]; then echo ok > flaky.txt;
          else touch {out}/flaky-ran; exit 1; fi
      - id: bad
        goal: never passes its gate
        files: [bad.txt]
        command: "echo bad > bad.txt"
        gates: ["echo gate failing with {secret}; exit 1"]
        max_attempts: 2
      - id: chain-a
        goal: first of a chain
        files: [a.txt]
        command: "sleep 0.3; echo a > a.txt"
      - id: chain-b
        goal: second of a chain
        files: [b.txt]
        depends_on: [chain-a]
        command: "sleep 0.2; echo b > b.txt"
      - id: chain-c
        goal: third of a chain
        files: [c.txt]
        depends_on: [chain-b]
        command: "sleep 0.2; echo c > c.txt"
  - name: after
    depends_on: [build]
    steps:
      - id: never
        goal: skipped because bad failed
        files: [never.txt]
        command: "echo never > never.txt"
"""


def cli(repo: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    return subprocess.run(
        [*STRETTO, *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@dataclass
class Ran:
    repo: Path
    run_dir: Path
    journal: list[Record]
    stdout: str

    def of(self, type_: str, **match: object) -> list[Record]:
        return [
            r
            for r in self.journal
            if r.type == type_ and all(r.fields.get(k) == v for k, v in match.items())
        ]

    @property
    def html(self) -> str:
        return (self.run_dir / "report.html").read_text()


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ran]:
    """The module's one run, through the CLI, to its end (exit 1: not every task landed)."""
    base = tmp_path_factory.mktemp("report")
    out = base / "out"
    out.mkdir()
    repo = make_repo(
        base / "repo",
        {"README.md": "# r\n", "stretto.toml": 'target = "main"\nmax_agents = 3\n'},
    )
    plan = base / "plan.yaml"
    plan.write_text(PLAN.format(title=TITLE, out=out, secret=SECRET))
    done = cli(repo, "run", str(plan), "--plain", timeout=90)
    assert done.returncode == 1, done.stdout + done.stderr
    run_dir = next((repo / ".stretto" / "runs").iterdir())
    yield Ran(repo, run_dir, read_journal(run_dir / "journal.jsonl"), done.stdout)
    stop_engines(repo)


# --------------------------------------------------------------------------- the report


def test_the_run_writes_a_private_report_and_says_where(ran: Ran) -> None:
    path = ran.run_dir / "report.html"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"report: {path}" in ran.stdout


def test_report_summary_counts_and_every_task(ran: Ran) -> None:
    page = ran.html
    finished = {r.fields["task"]: r.fields["status"] for r in ran.of("task_finished")}
    assert sorted(finished.values()).count("landed") == 7
    for state, count in (("landed", 7), ("failed", 1), ("skipped", 1)):
        assert f'<div class="card {state}"><b>{count}</b>{state}</div>' in page
    for task in finished:
        assert f'data-task="{task}"' in page
    assert page.count('<g class="node ') == len(finished) == 9
    attempts = ran.of("attempt_started")
    assert len(attempts) == 10  # 6 land at their first attempt; flaky and bad take two
    assert page.count('<g class="attempt"') == len(attempts)


def test_report_escapes_what_plans_and_agents_wrote(ran: Ran) -> None:
    page = ran.html
    assert "<script>alert" not in page
    assert "One &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;friends&quot;" in page
    assert page.count("<script") == 1  # ours: the hover highlight, inline


def test_report_loads_nothing_from_the_network(ran: Ran) -> None:
    page = ran.html
    assert not re.search(r"https?://", page)
    assert not re.search(r"<script[^>]*\ssrc=", page)
    assert not re.search(r"<link\b", page)
    assert not re.search(r"url\((?!#)", page)  # only references to the page's own patterns
    assert "<img" not in page and "@import" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_report_shows_failures_gate_verdicts_log_tails_and_how_to_go_on(ran: Ran) -> None:
    page = ran.html
    failures = page[page.index('<section id="failures">') : page.index('<section id="left">')]
    assert "<code>bad</code>" in failures and "after 2 attempt(s)" in failures
    assert "gave up after 2 failed attempts" in failures
    assert "FAILED" in failures and "step-1" in failures
    assert "--- gate step-1 ---" in failures  # the gate's log tail
    assert "<code>never</code>" in failures and "dependency" in failures
    left = page[page.index('<section id="left">') :]
    assert "2 task(s) did not land" in left
    assert "fix and run again" in left


def test_report_marks_retries_lease_waits_and_the_critical_path(ran: Ran) -> None:
    data = json.loads(cli(ran.repo, "report", "--json").stdout)
    outcomes = {(a["task"], a["attempt"]): a["outcome"] for a in data["attempts"]}
    assert outcomes[("flaky", 1)] == "retried" and outcomes[("flaky", 2)] == "landed"
    assert outcomes[("bad", 1)] == "retried" and outcomes[("bad", 2)] == "failed"
    # chain-a starts first (longest path), then lease-1; lease-2 waits for its lease.
    waits = {(w["task"], w["reason"], tuple(w["holders"])) for w in data["waits"]}
    assert ("lease-2", "lease", ("lease-1",)) in waits
    assert 'class="waitbar"' in ran.html
    # The critical path: from the last landed task back through the dependency that ended last.
    path = data["critical_path"]
    ended = {r.fields["task"]: r.ts for r in ran.of("task_finished", status="landed")}
    assert path[-1] == max(ended, key=lambda t: ended[t])
    deps = {t["id"]: t["depends_on"] for t in data["tasks"]}
    for before, after in itertools.pairwise(path):
        assert before in deps[after]
    assert not deps[path[0]] or not any(d in ended for d in deps[path[0]])
    critical = {t["id"] for t in data["tasks"] if t["critical"]}
    assert critical == set(path)
    assert data["slots"] <= 3
    assert data["counts"] == json.loads(cli(ran.repo, "status", "--json").stdout)["counts"]


def test_report_redacts_the_readers_secrets(ran: Ran) -> None:
    # The run's own environment had no secret, so the gate's log and the journal carry it.
    assert SECRET in (ran.run_dir / "tasks" / "bad" / "2" / "gates" / "step-1.log").read_text()
    target = ran.repo.parent / "redacted.html"
    done = cli(ran.repo, "report", "-o", str(target), env={"MY_SERVICE_API_KEY": SECRET})
    assert done.returncode == 0, done.stderr
    page = target.read_text()
    assert SECRET not in page and "***" in page
    plain = cli(ran.repo, "report", "-o", "-").stdout
    assert SECRET in plain  # not a secret of that environment: shown as it is


def test_report_of_an_unknown_run_exits_2_and_writes_nothing(ran: Ran) -> None:
    target = ran.repo.parent / "nothing.html"
    done = cli(ran.repo, "report", "no-such-run", "-o", str(target))
    assert done.returncode == 2 and "no-such-run" in done.stderr
    assert not target.exists()
    empty = make_repo(ran.repo.parent / "empty", {"README.md": "x\n"})
    done = cli(empty, "trace", "-o", "t.json")
    assert done.returncode != 0 and "no runs yet" in done.stderr
    assert not (empty / "t.json").exists()


# --------------------------------------------------------------------------- the trace


def test_trace_is_valid_trace_event_json_consistent_with_the_journal(ran: Ran) -> None:
    target = ran.repo.parent / "trace.json"
    done = cli(ran.repo, "trace", "-o", str(target))
    assert done.returncode == 0, done.stderr
    trace = json.loads(target.read_text())
    events = trace["traceEvents"]
    for event in events:
        assert {"name", "ph", "pid", "tid"} <= set(event)
        assert event["ph"] in ("X", "M")
        if event["ph"] == "X":
            assert isinstance(event["ts"], int | float) and event["dur"] >= 0
    slots = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    attempts = [e for e in events if e.get("cat") == "attempt"]
    assert len(attempts) == len(ran.of("attempt_started")) == 10
    t0 = ran.of("run_started")[0].ts
    for slice_ in attempts:
        task, attempt = slice_["args"]["task"], slice_["args"]["attempt"]
        assert slots[slice_["tid"]].startswith("slot ")
        spawn = ran.of("decision", action="spawn", task=task, attempt=attempt)[0]
        finished = ran.of("attempt_finished", task=task, attempt=attempt)[0]
        assert slice_["ts"] == pytest.approx((spawn.ts - t0) * 1e6, abs=2)
        assert slice_["ts"] + slice_["dur"] >= (finished.ts - t0) * 1e6 - 2
        inner = [
            e
            for e in events
            if e["ph"] == "X"
            and e.get("cat") not in ("attempt", "landing")
            and e["args"].get("task") == task
            and e["args"].get("attempt") == attempt
        ]
        kinds = {"setup", "agent"} | (
            {"gates"} if finished.fields["outcome"] == "success" else set()
        )
        assert {e["cat"] for e in inner} >= kinds
        lands = [
            e
            for e in events
            if e.get("cat") == "landing"
            and (e["args"]["task"], e["args"]["attempt"]) == (task, attempt)
        ]
        verified = ran.of("verified", task=task, attempt=attempt)
        assert len(lands) == (1 if verified else 0)  # a verified attempt then waits to land
        for land in lands:  # from where it left its slot, on a row of the merge queue
            assert slots[land["tid"]].startswith("landing ")
            assert land["ts"] == pytest.approx(slice_["ts"] + slice_["dur"], abs=2)
            assert land["ts"] == pytest.approx((verified[0].ts - t0) * 1e6, abs=2)
        for e in inner:  # nested: inside the attempt on its slot, or inside its landing
            outer = (
                slice_
                if e["tid"] == slice_["tid"]
                else next(x for x in lands if x["tid"] == e["tid"])
            )
            assert (
                outer["ts"] - 1 <= e["ts"] <= e["ts"] + e["dur"] <= outer["ts"] + outer["dur"] + 1
            )
    by_slot: dict[int, list[dict[str, float]]] = {}
    for slice_ in attempts:
        by_slot.setdefault(slice_["tid"], []).append(slice_)
    for row in by_slot.values():  # one slot runs one attempt at a time
        row.sort(key=lambda e: e["ts"])
        for one, two in itertools.pairwise(row):
            assert one["ts"] + one["dur"] <= two["ts"] + 1
    landed = [e for e in events if e.get("cat") == "merge"]
    assert len(landed) == len(ran.of("merged")) == 7


# --------------------------------------------------------------------------- written at the end


SLOW = """\
name: slow
stages:
  - name: work
    steps:
      - {id: quick, goal: quick, files: [q.txt], command: "echo q > q.txt"}
      - {id: slowpoke, goal: slow, files: [s.txt], command: "sleep 2; echo s > s.txt"}
"""


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path} after {timeout}s"
        time.sleep(0.05)


def test_detached_run_and_resume_write_the_report_at_their_end(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# d\n"})
    try:
        plan = tmp_path / "plan.yaml"
        plan.write_text(SLOW)
        done = cli(repo, "run", "--detach", "--json", str(plan))
        assert done.returncode == 0, done.stderr
        run_id = json.loads(done.stdout)["run_id"]
        run_dir = repo / ".stretto" / "runs" / run_id
        deadline = time.monotonic() + 30
        while not any(r.type == "attempt_started" and r.fields["task"] == "slowpoke"
                      for r in read_journal(run_dir / "journal.jsonl")):  # fmt: skip
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert cli(repo, "cancel", run_id).returncode == 0
        wait_for(run_dir / "report.html")
        page = (run_dir / "report.html").read_text()
        assert '<span class="state cancelled">cancelled</span>' in page
        assert f"stretto resume {run_id}" in page
        assert stat.S_IMODE((run_dir / "report.html").stat().st_mode) == 0o600
        (run_dir / "report.html").unlink()
        resumed = cli(repo, "resume", run_id, "--plain")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        page = (run_dir / "report.html").read_text()
        assert '<span class="state finished">finished</span>' in page
        assert '<div class="card landed"><b>2</b>landed</div>' in page
    finally:
        stop_engines(repo)


# --------------------------------------------------------------------------- in a browser


CHROMIUM = Path("/usr/bin/chromium")


def test_report_renders_in_headless_chromium_without_a_request(ran: Ran) -> None:
    if not CHROMIUM.exists():  # scripts/test installs it: its absence is a broken set-up
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-chromium (Debian's chromium)")
    from playwright.sync_api import sync_playwright

    page_file = ran.run_dir / "report.html"
    requests: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(page_file.as_uri())
            attempts = page.locator("svg.timeline g.attempt").count()
            nodes = page.locator("svg.graph g.node").count()
            title = page.locator('g.node[data-task="one"] title').text_content()
            page.hover('svg.graph g.node[data-task="flaky"]')
            outlined = page.locator("svg.timeline g.attempt.hl").count()
        finally:
            browser.close()
    assert attempts == len(ran.of("attempt_started")) == 10
    assert nodes == 9
    assert title is not None and TITLE in title  # shown as text, never run
    assert outlined == 2  # hovering a task outlines its two attempts (the script runs)
    assert requests == [page_file.as_uri()] and dialogs == []
