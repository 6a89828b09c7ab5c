"""``stretto live`` in a real terminal: tmux runs it against a detached run, the test types keys
(send-keys) and reads the screen (capture-pane), as a person at an 80x24 terminal would.

tmux comes from the system (``scripts/install-system`` installs it); the test fails, not
skips, without it, so a CI machine that lacks it is noticed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _engines import stop_engines
from stretto.engine.journal import read_journal
from stretto.testing.repo import make_repo

PLAN = """\
name: tmuxed
stages:
  - name: work
    steps:
      - {id: quick, goal: q, files: [q.txt], command: "echo q > q.txt"}
      - id: held
        goal: waits for the test
        files: [h.txt]
        command: "echo holding; while [ ! -e GO ]; do sleep 0.05; done; echo h > h.txt"
"""


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    assert shutil.which("tmux"), "tmux is missing: run scripts/install-system"
    socket = f"stretto-live-{os.getpid()}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=20
        )

    yield run
    run("kill-server")


def test_live_in_tmux_pauses_filters_and_detaches(
    tmp_path: Path, tmux: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# t\n"})
    go = tmp_path / "go"
    (tmp_path / "plan.yaml").write_text(PLAN.replace("-e GO", f"-e {go}"))
    try:
        started = subprocess.run(
            [sys.executable, "-m", "stretto", "run", "--detach", "--json", "../plan.yaml"],
            cwd=repo, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        run_id = json.loads(started.stdout)["run_id"]
        journal = repo / ".stretto" / "runs" / run_id / "journal.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env["TERM"] = "xterm-256color"
        env["SHELL"] = "/bin/sh"  # what `o` opens
        script = tmp_path / "live.sh"
        script.write_text(
            f"cd {repo}\n{sys.executable} -m stretto live {run_id}\necho EXITED $?\nsleep 60\n"
        )
        done = subprocess.run(
            ["tmux", "-L", f"stretto-live-{os.getpid()}", "new-session", "-d", "-s", "live",
             "-x", "80", "-y", "24", f"sh {script}"],
            env=env, capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

        def screen() -> str:
            return tmux("capture-pane", "-p", "-t", "live").stdout

        def until(check: Callable[[str], bool], what: str, timeout: float = 30) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                shown = screen()
                if check(shown):
                    return shown
                time.sleep(0.1)
            raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen()}")

        shown = until(lambda s: "held" in s and "holding" in s, "the table and held's log line")
        assert f"run {run_id}:" in shown and "q detach" in shown
        assert len(shown.splitlines()) <= 24 and max(map(len, shown.splitlines())) <= 80
        tmux("send-keys", "-t", "live", "p")
        until(lambda s: "pause: paused" in s, "the engine's answer to pause")
        assert any(r.type == "control" and r.fields["action"] == "pause" and r.fields["ok"]
                   for r in read_journal(journal))  # fmt: skip
        tmux("send-keys", "-t", "live", "/", "quick", "Enter")
        filtered = until(lambda s: "holding" not in s, "the filtered table")
        assert re.search(r"landed +quick", filtered) and not re.search(r"running +held", filtered)
        tmux("send-keys", "-t", "live", "Escape")
        until(lambda s: "holding" in s and "quick" not in s.split("detail")[0], "no filter")
        tmux("send-keys", "-t", "live", "u")
        until(lambda s: "unpause: running" in s, "the engine's answer to unpause")
        # `o`: a shell in the selected task's worktree, the UI suspended until it exits
        was_in = tmp_path / "shell-was-in"
        tmux("send-keys", "-t", "live", "Home")  # the cursor stayed on quick: up to held
        until(lambda s: "==> tasks/held/1/agent.log" in s, "held selected")
        tmux("send-keys", "-t", "live", "o")
        until(lambda s: "q detach" not in s, "the shell instead of the UI")
        tmux("send-keys", "-t", "live", f"pwd > {was_in}; exit", "Enter")
        until(lambda s: "q detach" in s and "holding" in s, "the UI back after the shell")
        held = next(r for r in read_journal(journal) if r.type == "attempt_started"
                    and r.fields["task"] == "held")  # fmt: skip
        assert was_in.read_text().strip() == held.fields["workspace"]
        tmux("send-keys", "-t", "live", "q")
        left = until(lambda s: "EXITED 0" in s, "live to exit")
        assert f"detached from run {run_id}" in left and "it goes on" in left
        go.touch()
        deadline = time.monotonic() + 60
        while not any(r.type == "run_finished" for r in read_journal(journal)):
            assert time.monotonic() < deadline, "the run did not finish after live detached"
            time.sleep(0.1)
        ended = [r for r in read_journal(journal) if r.type == "run_finished"]
        assert ended[0].fields["status"] == "finished"
    finally:
        stop_engines(repo)


def test_run_live_starts_a_run_and_two_windows_watch_it(
    tmp_path: Path, tmux: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# t\n"})
    go = tmp_path / "go"
    (tmp_path / "plan.yaml").write_text(PLAN.replace("-e GO", f"-e {go}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["TERM"] = "xterm-256color"
    socket = f"stretto-live-{os.getpid()}"

    def session(name: str, command: str) -> None:
        script = tmp_path / f"{name}.sh"
        script.write_text(f"cd {repo}\n{command}\necho EXITED $?\nsleep 60\n")
        done = subprocess.run(
            ["tmux", "-L", socket, "new-session", "-d", "-s", name, "-x", "100", "-y", "30",
             f"sh {script}"],
            env=env, capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    def until(name: str, check: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shown = tmux("capture-pane", "-p", "-t", name).stdout
            if check(shown):
                return shown
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} in {name}:\n{shown}")

    try:
        session("first", f"{sys.executable} -m stretto run --live ../plan.yaml")
        shown = until("first", lambda s: "holding" in s, "the run opened by run --live")
        run_id = shown.split("run ", 1)[1].split(":", 1)[0]
        session("second", f"{sys.executable} -m stretto live")  # the latest run: the same one
        until("second", lambda s: f"run {run_id}:" in s and "holding" in s, "a second window")
        tmux("send-keys", "-t", "second", "p")  # steered from one window, seen in both
        until("second", lambda s: "pause: paused" in s, "the answer in the second window")
        until("first", lambda s: "\n paused " in s, "the paused state in the first window")
        for name in ("first", "second"):
            tmux("send-keys", "-t", name, "q")
            left = until(name, lambda s: "EXITED 0" in s, "live to exit")
            assert f"detached from run {run_id} (paused)" in left
        journal = repo / ".stretto" / "runs" / run_id / "journal.jsonl"
        controls = [r for r in read_journal(journal) if r.type == "control"]
        assert [(c.fields["action"], c.fields["source"]["frontend"]) for c in controls] == [
            ("pause", "live")
        ]
    finally:
        stop_engines(repo)
