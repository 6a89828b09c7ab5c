"""Detached runs and control from anywhere, with real processes.

A run started with ``stretto run --detach`` lives in its own engine process; these tests kill
the shell that started it, hang up its terminal, follow it from several processes, steer it
from another, kill the engine in the middle of a command, and check who may send commands.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from _engines import stop_engines
from stretto import api
from stretto.engine.control import inbox_path, send
from stretto.engine.journal import LOCK_NAME, Record, is_live, read_journal
from stretto.errors import RunError
from stretto.process import processes_with_token
from stretto.testing.repo import git, make_repo

STRETTO = [sys.executable, "-m", "stretto"]


def cli(repo: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STRETTO, *args], cwd=repo, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A repository with one commit on main; at the end, no engine or agent of it is left."""
    path = make_repo(tmp_path / "repo", {"README.md": "# test\n"})
    yield path
    stop_engines(path)


def plan(repo: Path, text: str) -> Path:
    path = repo.parent / "plan.yaml"
    path.write_text(text)
    return path


def run_dir_of(repo: Path, run_id: str) -> Path:
    return repo / ".stretto" / "runs" / run_id


def wait_until(check: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


def records_of(repo: Path, run_id: str) -> list[Record]:
    return read_journal(run_dir_of(repo, run_id) / "journal.jsonl")


def has(run_id: str, repo: Path, type_: str, **fields: object) -> bool:
    return any(
        r.type == type_ and all(r.fields.get(k) == v for k, v in fields.items())
        for r in records_of(repo, run_id)
    )


def detach(repo: Path, plan_path: Path, *args: str) -> str:
    done = cli(repo, "run", "--detach", "--json", str(plan_path), *args)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["type"] == "detached" and out["pid"] > 0
    lock = run_dir_of(repo, out["run_id"]) / LOCK_NAME
    assert lock.read_text().strip() == str(out["pid"])  # the lock names the engine at once
    return str(out["run_id"])


THREE = """\
name: three
stages:
  - name: work
    steps:
      - {id: a, goal: write a, files: [a.txt], command: "sleep 1; echo a > a.txt"}
      - {id: b, goal: write b, files: [b.txt], command: "sleep 1; echo b > b.txt"}
      - {id: c, goal: write c, files: [c.txt], depends_on: [a], command: "echo c > c.txt"}
"""


def test_detached_run_outlives_its_killed_shell_and_hung_up_terminal(repo: Path) -> None:
    plan_path = plan(repo, THREE)
    primary, secondary = pty.openpty()
    shell = subprocess.Popen(
        ["bash", "-c", f"{' '.join(STRETTO)} run --detach {plan_path}; sleep 60"],
        cwd=repo,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,  # a session of its own, with the pty as its terminal
    )
    os.close(secondary)
    said = b""

    def started() -> bool:  # `stretto run --detach` printed the run id: the engine has it
        nonlocal said
        ready, _, _ = select.select([primary], [], [], 0)
        if ready:
            said += os.read(primary, 4096)
        return b"started in the background" in said

    try:
        wait_until(started, what="stretto run --detach to return")
        [status] = api.list_runs(repo)
        assert status.live and status.run_id in said.decode()
        shell.kill()  # the starting shell dies with SIGKILL ...
        assert shell.wait(timeout=10) == -signal.SIGKILL
    finally:
        os.close(primary)  # ... and its terminal hangs up
    handle = api.open_run(repo, status.run_id)
    final = handle.wait(timeout=60)
    assert final.state == "finished", final.to_dict()
    assert {t.id: t.state for t in final.tasks.values()} == dict.fromkeys("abc", "landed")
    assert git(repo, "show", "main:c.txt").strip() == "c"
    log = (handle.run_dir / "engine.log").read_text()
    assert '"status": "finished"' in log
    assert processes_with_token(status.run_id) == []


def test_run_detach_prints_how_to_follow_and_returns_at_once(repo: Path) -> None:
    plan_path = plan(repo, THREE)
    started = time.monotonic()
    done = cli(repo, "run", "--detach", str(plan_path))
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[1]
    assert f"stretto events {run_id} --follow" in done.stdout
    assert "engine.log" in done.stdout
    assert took < 20  # the run itself takes longer; the benchmark measures the real figure
    assert api.open_run(repo, run_id).wait(timeout=60).state == "finished"


STEER = """\
name: steer
stages:
  - name: work
    steps:
      - {id: quick, goal: q, files: [q.txt], command: "echo q > q.txt"}
      - id: flaky
        goal: fails once
        files: [f.txt]
        max_attempts: 1
        command: 'if [ "$STRETTO_ATTEMPT" = 1 ]; then exit 3; fi; echo f > f.txt'
      - {id: after, goal: after, files: [x.txt], depends_on: [flaky], command: "echo x > x.txt"}
      - {id: slowpoke, goal: slow, files: [s.txt], command: "sleep 60; echo s > s.txt"}
      - {id: later, goal: later, files: [l.txt], depends_on: [quick], command: "echo l > l.txt"}
"""


def test_two_followers_and_a_controller_see_every_record_once_in_order(repo: Path) -> None:
    run_id = detach(repo, plan(repo, STEER))
    folder = run_dir_of(repo, run_id)
    followers = []
    for name in ("one", "two"):
        out = (repo.parent / f"{name}.jsonl").open("w")
        followers.append(
            (
                subprocess.Popen(
                    [*STRETTO, "events", run_id, "--follow", "--json"],
                    cwd=repo,
                    stdout=out,
                    stderr=subprocess.DEVNULL,
                ),
                repo.parent / f"{name}.jsonl",
            )
        )
        out.close()
    # flaky fails for good (one attempt allowed) and its dependent is skipped; slowpoke runs.
    wait_until(lambda: has(run_id, repo, "task_finished", task="after", status="skipped"))
    wait_until(lambda: has(run_id, repo, "attempt_started", task="slowpoke"))
    steps = [
        ("pause", [], "paused"),
        ("budget", ["3.5"], "run budget $3.50"),
        ("parallelism", ["3"], "3 agents at once"),
        ("retry", ["flaky"], "one more attempt"),
        ("unpause", [], "running"),
    ]
    for action, args, said in steps:
        done = cli(repo, action, run_id, *args)
        assert done.returncode == 0, (action, done.stdout, done.stderr)
        assert said in done.stdout
    wait_until(lambda: has(run_id, repo, "task_finished", task="after", status="landed"))
    done = cli(repo, "cancel", run_id, "--task", "slowpoke")
    assert done.returncode == 0, done.stderr
    final = api.open_run(repo, run_id).wait(timeout=60)
    assert final.state == "failed"  # slowpoke was cancelled: not everything landed
    states = {t.id: t.state for t in final.tasks.values()}
    assert states == {
        "quick": "landed",
        "flaky": "landed",
        "after": "landed",
        "slowpoke": "cancelled",
        "later": "landed",
    }
    assert final.budget == 3.5 and final.max_agents == 3
    journal = [r.to_dict() for r in read_journal(folder / "journal.jsonl")]
    for process, path in followers:
        assert process.wait(timeout=30) == 0
        seen = [json.loads(line) for line in path.read_text().splitlines()]
        assert seen == journal  # every record, once, in order
    controls = [r for r in journal if r["type"] == "control"]
    assert [c["action"] for c in controls] == [*(s[0] for s in steps), "cancel"]
    assert all(c["ok"] and c["source"]["frontend"] == "cli" for c in controls)
    assert not any(inbox_path(folder).iterdir())  # every command file was consumed
    assert processes_with_token(run_id) == []


SLOW = """\
name: slow
stages:
  - name: work
    steps:
      - {id: one, goal: one, files: [1.txt], command: "sleep 2; echo 1 > 1.txt"}
      - {id: two, goal: two, files: [2.txt], command: "sleep 2; echo 2 > 2.txt"}
"""


def engine_pid(repo: Path, run_id: str) -> int:
    return int((run_dir_of(repo, run_id) / LOCK_NAME).read_text().strip())


@pytest.mark.parametrize("when", ["after-journal", "before-read"])
def test_a_command_racing_a_kill_of_the_engine_is_applied_exactly_once(
    repo: Path, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if when == "after-journal":  # journaled, its file not yet removed, then kill -9
        monkeypatch.setenv("STRETTO_CRASHPOINT", "after-control")
    run_id = detach(repo, plan(repo, SLOW))
    folder = run_dir_of(repo, run_id)
    wait_until(lambda: has(run_id, repo, "attempt_started", task="one"))
    pid = engine_pid(repo, run_id)
    sent = send(folder, "budget", value=7.0, source={"frontend": "test"})
    if when == "before-read":
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not is_live(folder), what="the engine to die")
    assert api.open_run(repo, run_id).status().state == "interrupted"
    monkeypatch.delenv("STRETTO_CRASHPOINT", raising=False)
    done = cli(repo, "resume", run_id, "--plain")
    assert done.returncode == 0, done.stdout + done.stderr
    applied = [
        r for r in records_of(repo, run_id) if r.type == "control" and r.fields["id"] == sent.id
    ]
    assert len(applied) == 1 and applied[0].fields["ok"]
    status = api.open_run(repo, run_id).status()
    assert status.state == "finished" and status.budget == 7.0
    assert not any(inbox_path(folder).iterdir())


def test_control_of_a_finished_unknown_or_interrupted_run_exits_2(repo: Path) -> None:
    plan_path = plan(repo, THREE)
    assert cli(repo, "run", str(plan_path), "--plain").returncode == 0
    [finished] = api.list_runs(repo)
    for args in (["pause"], ["budget", "5"], ["retry", "a"], ["cancel", "--task", "b"]):
        done = cli(repo, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert f"run {finished.run_id} is not running (it finished)" in done.stderr
        assert "Traceback" not in done.stderr
    unknown = cli(repo, "cancel", "nosuchrun")
    assert unknown.returncode == 2
    assert "no run 'nosuchrun'; `stretto runs` lists them" in unknown.stderr
    # A live run: an unknown task is named with the tasks that exist.
    run_id = detach(repo, plan(repo, SLOW))
    wait_until(lambda: has(run_id, repo, "attempt_started", task="one"))
    wrong = cli(repo, "retry", run_id, "on")
    assert wrong.returncode == 2
    assert "no task 'on' in run" in wrong.stderr and "(did you mean 'one'?)" in wrong.stderr
    early = cli(repo, "retry", run_id, "two")  # running, not failed: the engine refuses
    assert early.returncode == 2
    assert "retry refused by the engine: task 'two' is running" in early.stderr
    os.kill(engine_pid(repo, run_id), signal.SIGKILL)
    wait_until(lambda: not is_live(run_dir_of(repo, run_id)))
    down = cli(repo, "pause", run_id)
    assert down.returncode == 2
    assert f"`stretto resume {run_id}` goes on with it" in down.stderr


def test_only_the_owner_can_send_commands(repo: Path) -> None:
    go = repo.parent / "go"  # the agents wait for it: the run is live until the checks are done
    wait = f"while [ ! -e {go} ]; do sleep 0.05; done"
    held = SLOW.replace("sleep 2;", f"{wait};")
    run_id = detach(repo, plan(repo, held))
    folder = run_dir_of(repo, run_id)
    wait_until(lambda: has(run_id, repo, "attempt_started", task="one"))
    assert folder.stat().st_mode & 0o777 == 0o700
    assert inbox_path(folder).stat().st_mode & 0o777 == 0o700
    assert (folder / "journal.jsonl").stat().st_mode & 0o777 == 0o600
    mine = send(folder, "parallelism", value=2.0)
    wait_until(lambda: has(run_id, repo, "control", id=mine.id), what="the owner's command")
    if os.getuid() == 0:  # root can act as another user: try it for real
        inbox = inbox_path(folder)
        for command in (
            f'echo \'{{"id": "x", "action": "cancel"}}\' > {inbox}/evil.json',
            f"cat {folder}/journal.jsonl",
            f"ls {inbox}",
        ):
            other = subprocess.run(
                ["sh", "-c", command], user=65534, group=65534, capture_output=True, text=True
            )
            assert other.returncode != 0, command
            assert "Permission denied" in other.stderr, other.stderr
        # A file that another user managed to put there (here: planted by root) is refused.
        planted = inbox_path(folder) / "00000000000000000001-1-abcdef.json"
        planted.write_text(json.dumps({"id": "planted", "action": "cancel"}))
        os.chown(planted, 65534, 65534)
        wait_until(lambda: has(run_id, repo, "control_refused"), what="the refusal")
        assert not has(run_id, repo, "control", id="planted")
        assert not planted.exists()
    go.touch()
    status = api.open_run(repo, run_id).wait(timeout=60)
    assert status.state == "finished"
    assert [r.fields["id"] for r in records_of(repo, run_id) if r.type == "control"] == [mine.id]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_a_foreground_run_cleanly(
    repo: Path, sig: signal.Signals, code: int
) -> None:
    out = (repo.parent / "out.log").open("w")
    proc = subprocess.Popen(
        [*STRETTO, "run", str(plan(repo, SLOW)), "--plain"],
        cwd=repo,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    try:
        wait_until(lambda: bool(api.list_runs(repo)))
        run_id = api.list_runs(repo)[0].run_id
        wait_until(lambda: has(run_id, repo, "attempt_started", task="two"))
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == code
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (repo.parent / "out.log").read_text()
    assert f"interrupted: run {run_id} stopped before its end" in text
    assert f"`stretto resume {run_id}` finishes it" in text
    assert "Traceback" not in text
    assert processes_with_token(run_id) == []  # the agents were ended on the way out
    status = api.open_run(repo, run_id).status()
    assert status.state == "interrupted"
    assert has(run_id, repo, "run_finished", status="interrupted", signal=int(sig))
    done = cli(repo, "resume", run_id, "--plain")
    assert done.returncode == 0, done.stdout + done.stderr
    assert api.open_run(repo, run_id).status().state == "finished"


def test_cancel_stops_the_run_keeps_verified_work_and_resume_finishes_it(repo: Path) -> None:
    run_id = detach(repo, plan(repo, STEER.replace("sleep 60", "sleep 3")))
    wait_until(lambda: has(run_id, repo, "task_finished", task="quick", status="landed"))
    wait_until(lambda: has(run_id, repo, "attempt_started", task="slowpoke"))
    handle = api.open_run(repo, run_id)
    result = handle.cancel(source="test")
    assert result.applied and result.ok
    final = handle.wait(timeout=30)
    assert final.state == "cancelled" and final.resumable
    assert final.tasks["quick"].state == "landed"
    assert final.tasks["slowpoke"].state == "interrupted"
    assert processes_with_token(run_id) == []
    with pytest.raises(Exception, match="is not running"):
        handle.pause()
    resumed = api.resume_run(repo, run_id)
    assert resumed.summary is not None
    states = {t.task: t.status for t in resumed.summary.tasks}
    assert states["slowpoke"] == "landed" and states["quick"] == "landed"
    assert git(repo, "show", "main:s.txt").strip() == "s"


def test_list_runs_survives_a_run_killed_before_its_first_record(repo: Path) -> None:
    run_id = detach(repo, plan(repo, THREE))
    api.open_run(repo, run_id).wait(timeout=60)
    empty = repo / ".stretto" / "runs" / "20990101-000000-000-dead"
    empty.mkdir(mode=0o700)
    (empty / "journal.jsonl").write_bytes(b"")
    listed = {s.run_id: s for s in api.list_runs(repo)}
    assert listed[run_id].state == "finished"
    assert listed[empty.name].state == "damaged"
    done = cli(repo, "runs")
    assert done.returncode == 0 and "damaged" in done.stdout, done.stdout + done.stderr
    with pytest.raises(RunError):
        api.open_run(repo, empty.name).status()


def test_the_async_handle_follows_and_steers_a_run(repo: Path) -> None:
    import asyncio

    run_id = detach(repo, plan(repo, SLOW))
    handle = api.AsyncRunHandle(api.open_run(repo, run_id))

    async def drive() -> tuple[list[str], list[int]]:
        seen: list[str] = []
        seqs: list[int] = []
        paused = False
        async for record in handle.events(follow=True, timeout=60):
            seen.append(record.type)
            seqs.append(record.seq)
            if record.type == "attempt_started" and not paused:
                paused = True
                result = await handle.pause(source="async-test")
                assert result.applied and result.ok and result.message == "paused"
                assert (await handle.status()).state == "paused"
                await handle.set_parallelism(1)
                assert (await handle.unpause()).message == "running"
        return seen, seqs

    seen, seqs = asyncio.run(drive())
    assert seen[-1] == "run_finished"
    assert seqs == list(range(1, len(seqs) + 1))
    assert seen.count("control") == 3
    final = asyncio.run(handle.wait(timeout=10))
    assert final.state == "finished" and final.max_agents == 1
