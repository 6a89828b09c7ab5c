"""Hostile and broken agents (issue 19): shell agents that misbehave on purpose, each run through
``python -m stretto run`` in a real repository.

Every case checks that the misbehaviour ends in a named outcome visible in the run's status and
journal, is retried or refused as documented, and that nothing unverified reaches the target.
The same agents run again under the opt-in sandbox (``[sandbox] enabled = true``, bubblewrap),
where writes outside the attempt's worktree fail and the user's files survive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from _engines import stop_engines
from stretto import api
from stretto.api import RunStatus
from stretto.engine.journal import Record, read_journal
from stretto.process import processes_with_token
from stretto.testing.repo import git, make_repo

SRC = Path(__file__).resolve().parents[1] / "src"


@dataclass
class Ran:
    """One finished ``stretto run``: its exit code, output, status and journal."""

    code: int
    output: str
    status: RunStatus
    records: list[Record]
    run_dir: Path

    def task(self, task: str) -> tuple[str, str]:
        info = self.status.tasks[task]
        return info.state, info.reason or ""

    def attempts(self, task: str) -> list[Record]:
        return [
            r for r in self.records if r.type == "attempt_finished" and r.fields.get("task") == task
        ]

    def gates(self, task: str) -> dict[str, Record]:
        return {
            str(r.fields["gate"]): r
            for r in self.records
            if r.type == "gate_result" and r.fields.get("task") == task
        }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = make_repo(
        tmp_path / "repo",
        {
            "README.md": "# test\n",
            "src/app.py": "def add(a, b):\n    return a + b\n",
            "tests/test_app.py": "from src.app import add\n\n\ndef test_add():\n"
            "    assert add(1, 2) == 3\n",
        },
    )
    (path / "notes.txt").write_text("the user's untracked notes\n")  # never committed
    yield path
    stop_engines(path)


def run(repo: Path, plan: str, config: str = "", *, timeout: float = 120) -> Ran:
    """Commit ``config`` as stretto.toml (if any), then ``stretto run`` the plan."""
    if config:
        (repo / "stretto.toml").write_text(config)
        git(repo, "add", "stretto.toml")
        git(repo, "commit", "-qm", "config")
    plan_file = repo.parent / "plan.yaml"
    plan_file.write_text(plan)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "stretto", "run", str(plan_file), "--plain"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    [status] = api.list_runs(repo)
    run_dir = repo / ".stretto" / "runs" / status.run_id
    return Ran(
        done.returncode,
        done.stdout + done.stderr,
        status,
        read_journal(run_dir / "journal.jsonl"),
        run_dir,
    )


def step(
    task: str, command: str, *, files: str = "[out.txt]", attempts: int = 1, extra: str = ""
) -> str:
    quoted = command.replace("'", "''")
    return (
        f"      - id: {task}\n        goal: do {task}\n        files: {files}\n"
        f"        max_attempts: {attempts}\n        command: '{quoted}'\n{extra}"
    )


def plan(*steps: str) -> str:
    return "stages:\n  - name: s\n    steps:\n" + "".join(steps)


HONEST = step("honest", "echo fine > honest.txt", files="[honest.txt]")


def target_log(repo: Path) -> list[str]:
    return git(repo, "log", "--format=%s", "main").splitlines()


def assert_clean_end(repo: Path, ran: Ran) -> None:
    """Nothing of the run is left: no process carrying its token, no worktree, no lock file."""
    deadline = time.monotonic() + 5
    while processes_with_token(ran.status.run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with_token(ran.status.run_id) == []
    # Failed attempts keep their worktree for inspection; a landed task's is removed.
    worktrees = git(repo, "worktree", "list", "--porcelain")
    for task, info in ran.status.tasks.items():
        if info.state == "landed":
            assert f"{ran.status.run_id}-{task}-" not in worktrees, worktrees
    assert not list((repo / ".git").glob("*.lock"))
    assert (repo / "notes.txt").read_text() == "the user's untracked notes\n"
    assert git(repo, "fsck", "--no-progress", "--no-dangling") == ""


# --- exits, hangs, daemons, output ---------------------------------------------------------------


def test_an_agent_that_exits_non_zero_is_retried_then_fails(repo: Path) -> None:
    ran = run(repo, plan(step("broken", "echo half > out.txt; exit 3", attempts=2), HONEST))
    assert ran.code == 1, ran.output
    state, reason = ran.task("broken")
    assert state == "failed" and "command exited with status 3" in reason
    outcomes = [r.fields["outcome"] for r in ran.attempts("broken")]
    assert outcomes == ["failed", "failed"]  # retried once, as max_attempts says
    assert ran.task("honest")[0] == "landed"
    assert "stretto: work of shell on broken (attempt 1)" not in target_log(repo)
    assert not git(repo, "ls-tree", "main", "out.txt")
    assert_clean_end(repo, ran)


HANG = (
    "trap '' TERM; (trap '' TERM; sleep 300) & sleep 300 & echo started; while :; do sleep 1; done"
)


def test_an_agent_that_hangs_past_its_timeout_has_its_whole_group_killed(repo: Path) -> None:
    started = time.monotonic()
    ran = run(repo, plan(step("hang", HANG, extra="        timeout: 2\n")))
    assert time.monotonic() - started < 40
    assert ran.code == 1, ran.output
    state, reason = ran.task("hang")
    assert state == "failed" and "timed_out" in reason
    assert [r.fields["outcome"] for r in ran.attempts("hang")] == ["timed_out"]
    log = (ran.run_dir / "tasks" / "hang" / "1" / "agent.log").read_text()
    assert "timed out after 2s; killing the process group" in log
    assert_clean_end(repo, ran)


DAEMONS = (
    "setsid sleep 301 < /dev/null > /dev/null 2>&1 & "  # its own session
    "( setsid bash -c 'sleep 302 & sleep 303' < /dev/null > /dev/null 2>&1 & ) ; "  # double fork
    "nohup sleep 304 > /dev/null 2>&1 & "  # same group, ignores SIGHUP
    "echo made > out.txt"
)


def test_daemons_an_agent_leaves_behind_are_killed_when_it_ends(repo: Path) -> None:
    ran = run(repo, plan(step("daemon", DAEMONS)))
    assert ran.code == 0, ran.output
    assert ran.task("daemon")[0] == "landed"
    leftovers = subprocess.run(
        ["pgrep", "-f", "sleep 30[1-4]"], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == []
    assert_clean_end(repo, ran)


GARBAGE = (
    "head -c 10000000 /dev/urandom; "  # 10 MB of binary noise, invalid UTF-8, NUL bytes
    "python3 -c 'import sys; sys.stdout.write(\"x\" * 3000000)'; "  # one 3 MB line
    "printf '\\377\\376 bad utf-8 at the end\\n' >&2; echo made > out.txt"
)


def test_ten_megabytes_of_garbage_output_keep_the_log_bounded_and_readable(repo: Path) -> None:
    ran = run(repo, plan(step("noisy", GARBAGE)))
    assert ran.code == 0, ran.output
    assert ran.task("noisy")[0] == "landed"
    log = ran.run_dir / "tasks" / "noisy" / "1" / "agent.log"
    size = log.stat().st_size
    assert size <= (4 << 20) + (256 << 10) + 200, size
    text = log.read_bytes().decode("utf-8", "replace")
    assert "bytes of output left out" in text
    assert "bad utf-8 at the end" in text  # the end of the output is what explains a failure
    assert_clean_end(repo, ran)


# --- the target branch and the worktree's own history --------------------------------------------

COMMON = "$(git rev-parse --git-common-dir)"
IDENT = "git -c user.name=a -c user.email=a@b"


@pytest.mark.parametrize(
    "how",
    [
        # a commit of its own, put on the target by update-ref (in test_hostile.py too)
        f"echo x > out.txt && git add out.txt && {IDENT} commit -qm untested"
        " && git update-ref refs/heads/main HEAD",
        # the target rewound to before its last commit (history rewritten)
        "git update-ref refs/heads/main main~1 && echo x > out.txt",
        # a ref file written by hand, no git at all
        f"c=$({IDENT} commit-tree main^{{tree}} -m untested) && "
        f"echo $c > {COMMON}/refs/heads/main && echo x > out.txt",
    ],
    ids=["update-ref", "rewind", "ref-file"],
)
def test_an_agent_that_moves_the_target_is_undone_and_refused(repo: Path, how: str) -> None:
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    before = git(repo, "rev-parse", "main").strip()
    ran = run(repo, plan(step("sneaky", how)))
    assert ran.code == 1, ran.output
    state, reason = ran.task("sneaky")
    assert state == "failed" and "moved the target branch 'main'" in reason, reason
    assert git(repo, "rev-parse", "main").strip() == before  # put back exactly
    assert "untested" not in target_log(repo)
    assert any(r.type == "target_restored" for r in ran.records)
    assert_clean_end(repo, ran)


@pytest.mark.parametrize(
    "how",
    [
        "git reset -q --hard HEAD~1 && echo x > out.txt",  # past its base
        "git checkout -q --orphan fresh && git rm -rqf . && echo x > out.txt",
        "git rebase -q --onto HEAD~1 HEAD && echo x > out.txt",
    ],
    ids=["reset", "orphan", "rebase"],
)
def test_an_agent_that_rewrites_its_own_history_is_refused(repo: Path, how: str) -> None:
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    ran = run(repo, plan(step("rewrite", how, files="['**']"), HONEST))
    assert ran.code == 1, ran.output
    state, reason = ran.task("rewrite")
    assert state == "failed", reason
    assert "base" in reason or "branch" in reason, reason
    assert ran.task("honest")[0] == "landed"
    assert git(repo, "ls-tree", "--name-only", "main", "out.txt") == ""
    assert "second" in target_log(repo)
    assert_clean_end(repo, ran)


# --- tests and gates -----------------------------------------------------------------------------

# The tests, run without pytest's start-up cost: the gate an agent may try to weaken.
GATE = "[gates]\ntests = \"python3 -B -c 'import tests.test_app as t; t.test_add()'\"\n"


@pytest.mark.parametrize(
    ("how", "files", "gate"),
    [
        ("git rm -q tests/test_app.py && echo x > out.txt", "['**']", "no_deleted_tests"),
        (": > tests/test_app.py && echo x > out.txt", "['**']", "no_deleted_tests"),
        ("git mv tests/test_app.py tests/app_notes.txt && echo x > out.txt", "['**']", None),
        (
            "printf 'def test_add():\\n    assert True\\n' > tests/test_app.py; "
            "echo 'def add(a, b): return 0' > src/app.py",
            "[src/app.py]",
            "scope",
        ),
        ("echo 'def add(a, b): return 0' > src/app.py", "[src/app.py]", "tests"),
        ("sed -i 's/python3.*/true\"/' stretto.toml", "['src/**']", "scope"),
        ("sed -i 's/python3.*/true\"/' stretto.toml; echo x > out.txt", "['**']", "config"),
    ],
    ids=[
        "delete",
        "empty",
        "rename-away",
        "weaken-out-of-scope",
        "break-code",
        "weaken-gate-out-of-scope",
        "weaken-gate",
    ],
)
def test_deleting_or_weakening_tests_is_caught_by_a_gate(
    repo: Path, how: str, files: str, gate: str | None
) -> None:
    ran = run(repo, plan(step("weaken", how, files=files)), GATE)
    assert ran.code == 1, ran.output
    state, reason = ran.task("weaken")
    assert state == "failed" and "gates failed" in reason, reason
    verdicts = ran.gates("weaken")
    failed = {name for name, r in verdicts.items() if not r.fields["passed"]}
    if gate is not None:
        assert gate in failed, reason
    else:
        assert failed, reason
    assert git(repo, "diff", "--stat", "HEAD~0", "main") == ""
    assert "tests" in git(repo, "ls-tree", "-r", "--name-only", "main")
    assert_clean_end(repo, ran)


# --- the repository's own git files --------------------------------------------------------------

HOOK = f"{COMMON}/hooks/post-checkout"


@pytest.mark.parametrize(
    "how",
    [
        f"printf '#!/bin/sh\\necho pwned > /tmp/pwned\\n' > {HOOK}; chmod +x {HOOK}",
        "git config --file $(git rev-parse --git-common-dir)/config core.fsmonitor 'echo pwned'",
        "git config core.hooksPath /tmp",
        f"rm -rf {COMMON}/hooks && ln -s /tmp {COMMON}/hooks",
    ],
    ids=["hook", "fsmonitor", "hooks-path", "hooks-dir-replaced"],
)
def test_an_agent_that_edits_git_hooks_or_config_is_undone_and_refused(
    repo: Path, how: str
) -> None:
    config_before = (repo / ".git" / "config").read_bytes()
    hooks_before = sorted(p.name for p in (repo / ".git" / "hooks").iterdir())
    one_at_a_time = "max_agents: 1\n" + plan(step("tamper", how + "; echo x > out.txt"), HONEST)
    ran = run(repo, one_at_a_time)
    assert ran.code == 1, ran.output
    state, reason = ran.task("tamper")
    assert state == "failed" and "changed while this agent ran" in reason, reason
    assert (repo / ".git" / "config").read_bytes() == config_before
    assert sorted(p.name for p in (repo / ".git" / "hooks").iterdir()) == hooks_before
    assert ran.task("honest")[0] == "landed"
    assert git(repo, "ls-tree", "--name-only", "main", "out.txt") == ""
    kept = ran.run_dir / "tasks" / "tamper" / "1" / "tampered"
    assert kept.is_dir() and any(kept.rglob("*"))  # what the agent wrote, kept for a look
    assert_clean_end(repo, ran)


# --- the worktree left in a state git or stretto cannot use --------------------------------------


@pytest.mark.parametrize(
    "how",
    [
        "echo x > out.txt; git worktree lock --reason mine .",
        "echo x > out.txt; touch $(git rev-parse --git-dir)/index.lock",
        "echo x > out.txt; echo y > stray.txt; git add stray.txt; echo z > other.txt",
        "echo x > out.txt; git checkout -q --detach",
    ],
    ids=["worktree-lock", "index-lock", "dirty", "detached"],
)
def test_a_worktree_left_locked_or_dirty_is_handled(repo: Path, how: str) -> None:
    ran = run(repo, plan(step("messy", how, files="['*.txt']", attempts=2)))
    state, reason = ran.task("messy")
    if "detach" not in how:
        # A worktree lock, a stale index.lock, a dirty tree: stretto removes the stale lock,
        # commits everything and removes the worktree as usual.
        assert ran.code == 0 and state == "landed", ran.output
    else:  # a named failure, retried in a fresh worktree
        assert ran.code == 1 and state == "failed", ran.output
        assert "internal error" not in reason, reason
        assert "cannot commit" in reason and "detached HEAD" in reason, reason
        assert sum(r.type == "attempt_started" for r in ran.records) == 2
    if "index.lock" in how:
        warnings = [str(r.fields.get("message")) for r in ran.records if r.type == "warning"]
        assert any("removed lock files the agent left behind: index.lock" in w for w in warnings)
    assert_clean_end(repo, ran)


# --- writes outside the worktree, with and without the sandbox -----------------------------------

SANDBOX = "[sandbox]\nenabled = true\n"
TOP = "$(git rev-parse --git-common-dir)/.."

OUTSIDE = {
    "main-checkout": f"echo pwned > {TOP}/README.md",
    "dotdot": "echo pwned > ../escape.txt",
    "symlink": f"ln -s {TOP}/notes.txt link; echo pwned > link; rm link",
    "rm-untracked": f"rm -f {TOP}/notes.txt",
    "rm-rf-checkout": f"rm -rf {TOP}/src {TOP}/notes.txt",
    "home": "echo pwned > $HOME/.stretto-hostile-test",
    "stretto-state": f"echo pwned > {TOP}/.stretto/runs/pwned.txt",
}


def damage(repo: Path) -> list[str]:
    """What of the user's files an agent changed (empty: nothing)."""
    found = []
    if (repo / "README.md").read_text() != "# test\n":
        found.append("README.md")
    if not (repo / "notes.txt").exists() or "pwned" in (repo / "notes.txt").read_text():
        found.append("notes.txt")
    if not (repo / "src" / "app.py").exists():
        found.append("src/")
    if list(repo.rglob("escape.txt")) or (repo / ".stretto" / "runs" / "pwned.txt").exists():
        found.append("outside the worktree")
    if (Path.home() / ".stretto-hostile-test").exists():
        (Path.home() / ".stretto-hostile-test").unlink()
        found.append("home")
    return found


ALL_OUTSIDE = " ; ".join(OUTSIDE.values()) + " ; echo x > out.txt"  # rm -rf comes last


def test_without_the_sandbox_writes_outside_the_worktree_are_not_prevented(repo: Path) -> None:
    """The documented limit of an unsandboxed agent: it runs as the user. What stretto still
    guarantees: nothing of it reaches the target unverified, and the run ends."""
    ran = run(repo, plan(step("escape", ALL_OUTSIDE)))
    assert damage(repo) == ["README.md", "notes.txt", "src/", "outside the worktree", "home"]
    assert ran.task("escape")[0] in ("landed", "failed")
    assert "pwned" not in git(repo, "show", "main:README.md")


def test_in_the_sandbox_writes_outside_the_worktree_fail_and_the_users_files_survive(
    repo: Path,
) -> None:
    merge_gate = (
        '[gates]\nmerged = { command = "echo pwned > $(git rev-parse --git-common-dir)/../notes.txt'
        '; true", when = "merge" }\n'
    )
    ran = run(repo, plan(step("escape", ALL_OUTSIDE)), SANDBOX + merge_gate)
    assert damage(repo) == []
    assert ran.gates("escape")["merged"].fields["passed"]  # ran on the merged tree, confined
    assert ran.task("escape")[0] == "landed", ran.output  # its own work still lands
    log = (ran.run_dir / "tasks" / "escape" / "1" / "agent.log").read_text()
    refused = [line for line in log.splitlines() if "Read-only file system" in line]
    for where in ("README.md", "escape.txt", "link", "notes.txt", "src", ".stretto-hostile"):
        assert any(where in line for line in refused), (where, log)
    assert "pwned" not in git(repo, "show", "main:README.md")
    assert_clean_end(repo, ran)


SANDBOXED_TAMPERING = {
    "hook": (f"echo 'echo pwned' > {HOOK} && chmod +x {HOOK}", "post-checkout: Read-only"),
    "config": ("git config core.fsmonitor 'echo pwned'", "could not lock config file"),
    "target-update-ref": (
        f"{IDENT} commit -q --allow-empty -m untested && git update-ref refs/heads/main HEAD",
        "cannot lock ref 'refs/heads/main'",
    ),
    "target-commit-tree": (
        f"c=$({IDENT} commit-tree main^{{tree}} -p main -m untested) && "
        "git update-ref refs/heads/main $c",
        "cannot lock ref 'refs/heads/main'",
    ),
    "target-ref-file": (
        f"git rev-parse HEAD > {COMMON}/refs/heads/main",
        "refs/heads/main: Read-only file system",
    ),
    "stretto-toml": (f"echo 'max_agents = 99' >> {TOP}/stretto.toml", "stretto.toml: Read-only"),
}


def test_in_the_sandbox_the_target_hooks_and_config_are_read_only(repo: Path) -> None:
    config_before = (repo / ".git" / "config").read_bytes()
    command = " ; ".join(c for c, _ in SANDBOXED_TAMPERING.values())
    ran = run(repo, plan(step("tamper", f"{command}; echo x > out.txt")), SANDBOX)
    assert ran.task("tamper")[0] == "landed", ran.output  # the refused steps did no harm
    log = (ran.run_dir / "tasks" / "tamper" / "1" / "agent.log").read_text()
    for how, (_, refusal) in SANDBOXED_TAMPERING.items():
        assert log.count(refusal) >= (2 if refusal.startswith("cannot lock") else 1), (how, log)
    assert (repo / ".git" / "config").read_bytes() == config_before
    assert not (repo / ".git" / "hooks" / "post-checkout").exists()
    # The target moved once, to stretto's merge of the verified branch (which may hold the
    # agent's own commits); never to a commit of the agent's making.
    head = git(repo, "rev-parse", "main").strip()
    assert "Stretto-Task: tamper" in git(repo, "show", "-s", "--format=%B", head)
    assert "untested" not in git(repo, "log", "--first-parent", "--format=%s", "main")
    assert not any(r.type in ("target_restored", "git_files_restored") for r in ran.records)
    assert (repo / "stretto.toml").read_text() == SANDBOX
    assert_clean_end(repo, ran)


# `sleep 1`: the daemon has dropped stretto's token from its environment before the agent ends.
ENV_DROPPING_DAEMON = (
    "setsid env -i /bin/sleep 305 < /dev/null > /dev/null 2>&1 & sleep 1; echo x > out.txt"
)


def _sleepers() -> list[str]:
    return subprocess.run(
        ["pgrep", "-f", "sleep 305"], capture_output=True, text=True
    ).stdout.split()


def test_in_the_sandbox_a_daemon_that_drops_its_environment_dies_with_the_agent(
    repo: Path,
) -> None:
    ran = run(repo, plan(step("daemon", ENV_DROPPING_DAEMON)), SANDBOX)
    assert ran.task("daemon")[0] == "landed", ran.output
    assert _sleepers() == []
    assert_clean_end(repo, ran)


def test_without_the_sandbox_a_daemon_that_drops_its_environment_escapes(repo: Path) -> None:
    """The documented limit: a process that leaves the agent's session and drops stretto's
    token from its environment cannot be told from the user's own processes."""
    try:
        ran = run(repo, plan(step("daemon", ENV_DROPPING_DAEMON)))
        assert ran.task("daemon")[0] == "landed", ran.output
        assert _sleepers() != []
    finally:
        for pid in _sleepers():
            os.kill(int(pid), 9)


def test_in_the_sandbox_a_hung_agent_is_killed_with_everything_it_started(repo: Path) -> None:
    started = time.monotonic()
    ran = run(repo, plan(step("hang", HANG, extra="        timeout: 2\n")), SANDBOX)
    assert time.monotonic() - started < 40
    assert [r.fields["outcome"] for r in ran.attempts("hang")] == ["timed_out"]
    assert_clean_end(repo, ran)


def test_in_the_sandbox_agent_clis_and_tools_installed_under_tmp_still_run(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout under /tmp (a CI job's clone) keeps its agent CLIs and tools there; the
    sandbox's private /tmp must not hide them (found by a clean-clone CI run: every sandboxed
    claude attempt failed with "bwrap: execvp /tmp/.../claude: No such file or directory")."""
    tools = tmp_path / "tools" / "bin"  # outside the repository, under /tmp
    tools.mkdir(parents=True)
    for name, text in (("mytool", "echo by-agent > agent.txt"), ("helper", "echo by-path")):
        (tools / name).write_text(f"#!/bin/sh\n{text}\n")
        (tools / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    config = SANDBOX + f'[agents.mytool]\nadapter = "command"\ncommand = ["{tools / "mytool"}"]\n'
    steps = "      - {id: cli, goal: g, files: [agent.txt], agent: mytool}\n" + step(
        "onpath", "helper > path.txt", files="[path.txt]"
    )
    ran = run(repo, plan(steps), config)
    assert ran.code == 0, ran.output
    assert git(repo, "show", "main:agent.txt") == "by-agent\n"
    assert git(repo, "show", "main:path.txt") == "by-path\n"


EVIL_CODE = (
    'printf \'import pathlib\\npathlib.Path("../../../notes.txt").unlink()\\n'
    "def add(a, b):\\n    return a + b\\n' > src/app.py"
)


@pytest.mark.parametrize("sandbox", [False, True], ids=["plain", "sandbox"])
def test_in_the_sandbox_gates_run_confined_too(repo: Path, sandbox: bool) -> None:
    """A command gate runs code the agent wrote (the tests import it): in the sandbox too."""
    ran = run(repo, plan(step("evil", EVIL_CODE, files="[src/app.py]")), SANDBOX * sandbox + GATE)
    state, reason = ran.task("evil")
    if not sandbox:  # the limit the sandbox lifts: the gate ran the agent's code as the user
        assert damage(repo) == ["notes.txt"]
        return
    assert damage(repo) == []
    assert state == "failed" and "tests" in reason and "Read-only file system" in reason, reason
    assert_clean_end(repo, ran)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # ended meanwhile
        return b""


def test_in_the_sandbox_an_engine_killed_mid_agent_leaves_nothing_and_resumes(repo: Path) -> None:
    """The sandboxed agent dies with the engine (bwrap --die-with-parent, so nothing is left
    to adopt); resume starts the task again."""
    (repo / "stretto.toml").write_text(SANDBOX)
    git(repo, "add", "stretto.toml")
    git(repo, "commit", "-qm", "config")
    agent = f"if [ -e {TOP}/go ]; then echo x > out.txt; else sleep 60; fi"
    (repo.parent / "plan.yaml").write_text(plan(step("slow", agent)))
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    cmd = [sys.executable, "-m", "stretto"]
    engine = subprocess.Popen(
        [*cmd, "run", "../plan.yaml", "--plain"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # this run's own agent is asleep (other tests sleep too)
        runs = api.list_runs(repo)
        if runs and any(
            b"sleep\x0060" in cmdline(pid) for pid in processes_with_token(runs[0].run_id)
        ):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the sandboxed agent never started")
    engine.kill()  # SIGKILL: no cleanup code of stretto runs
    engine.wait()
    [status] = api.list_runs(repo)
    deadline = time.monotonic() + 20
    while processes_with_token(status.run_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with_token(status.run_id) == []
    (repo / "go").write_text("")
    resumed = subprocess.run(
        [*cmd, "resume", "--plain"], cwd=repo, env=env, capture_output=True, text=True, timeout=90
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    [status] = api.list_runs(repo)
    assert status.tasks["slow"].state == "landed"
    assert processes_with_token(status.run_id) == []


# --- configuration and doctor --------------------------------------------------------------------


def path_without_bwrap(tmp: Path) -> str:
    """A PATH with git, bash and this Python, and no bwrap."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for program in ("git", "bash", "sh", "env"):
        found = shutil.which(program)
        assert found is not None
        if not (bin_dir / program).exists():
            (bin_dir / program).symlink_to(found)
    return f"{bin_dir}:{os.path.dirname(sys.executable)}"


def test_doctor_reports_whether_the_sandbox_works(repo: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    (repo / "stretto.toml").write_text(SANDBOX)
    ok = subprocess.run(
        [sys.executable, "-m", "stretto", "doctor"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "ok    sandbox: bubblewrap works here (enabled)" in ok.stdout, ok.stdout
    no_bwrap = {**env, "PATH": path_without_bwrap(repo.parent)}
    missing = subprocess.run(
        [sys.executable, "-m", "stretto", "doctor"],
        cwd=repo,
        env=no_bwrap,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    assert "FAIL  sandbox: bwrap (bubblewrap) is not installed" in missing.stdout
    assert "apt-get install bubblewrap" in missing.stdout


def test_an_enabled_sandbox_without_bwrap_stops_the_run_before_it_starts(repo: Path) -> None:
    (repo / "stretto.toml").write_text(SANDBOX)
    git(repo, "add", "stretto.toml")
    git(repo, "commit", "-qm", "config")
    (repo.parent / "plan.yaml").write_text(plan(HONEST))
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "PATH": path_without_bwrap(repo.parent),
    }
    done = subprocess.run(
        [sys.executable, "-m", "stretto", "run", str(repo.parent / "plan.yaml"), "--plain"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "[sandbox] enabled = true, but bwrap (bubblewrap) is not installed" in done.stderr
    assert not (repo / ".stretto" / "runs").exists()


def test_a_bad_sandbox_table_is_a_located_error(repo: Path) -> None:
    (repo / "stretto.toml").write_text('[sandbox]\nenabled = "yes"\nwritable = "~/.m2"\nnet = 1\n')
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "stretto", "doctor"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "stretto.toml:2:1: sandbox.enabled: must be true or false, not a string" in (
        done.stdout + done.stderr
    )
    assert "stretto.toml:3:1: sandbox.writable: must be an array" in done.stdout + done.stderr
    assert "unknown key 'net' (did you mean 'network'?)" in done.stdout + done.stderr


# --- the log pump itself --------------------------------------------------------------------------


def test_long_lines_lose_no_output_and_secrets_split_by_reads_are_hidden(tmp_path: Path) -> None:
    """Lines over the 64 KiB read size used to lose data (asyncio's readline dropped the
    buffer); a secret must be hidden wherever a read boundary falls."""
    import asyncio

    from stretto.process import run_process

    secret = "sk-live-0123456789abcdef"
    script = (
        "import sys\n"
        f"for pad in (65536 - 10, 65536 - 5, 100):\n"
        f"    sys.stdout.write('y' * pad + '{secret}' + 'z' * 70000 + '\\n')\n"
    )
    lines: list[str] = []
    log = tmp_path / "agent.log"
    finished = asyncio.run(
        run_process(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env={"PATH": os.environ["PATH"]},
            log_path=log,
            secrets=[secret],
            on_line=lambda line, _: lines.append(line),
        )
    )
    assert finished.exit_code == 0
    data = log.read_bytes()
    assert secret.encode() not in data and data.count(b"***") == 3
    expected = sum(pad + 3 + 70000 + 1 for pad in (65536 - 10, 65536 - 5, 100))
    assert len(data) == expected  # nothing lost
    assert all(secret not in line for line in lines)


def test_a_hooks_directory_replaced_by_a_link_is_rebuilt_never_emptied_through_it(
    tmp_path: Path,
) -> None:
    """Restoring must never follow a link the agent planted: `.git/hooks -> /somewhere` once
    walked (and would have deleted) everything under /somewhere."""
    from stretto.engine import git_guard

    common = tmp_path / ".git"
    (common / "hooks").mkdir(parents=True)
    (common / "config").write_text("[core]\n")
    (common / "hooks" / "pre-commit").write_text("#!/bin/sh\n")
    before = git_guard.snapshot(common)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "deep").mkdir(parents=True)
    (elsewhere / "deep" / "precious.txt").write_text("keep me\n")
    shutil.rmtree(common / "hooks")
    (common / "hooks").symlink_to(elsewhere)
    (common / "config").write_text("[core]\nfsmonitor = evil\n")
    changed, _ = git_guard.restore(common, before, tmp_path / "kept")
    assert "hooks" in changed and "config" in changed
    assert (elsewhere / "deep" / "precious.txt").read_text() == "keep me\n"
    assert not (common / "hooks").is_symlink()
    assert (common / "hooks" / "pre-commit").read_text() == "#!/bin/sh\n"
    assert (common / "config").read_text() == "[core]\n"
    assert (tmp_path / "kept" / "config").read_text().endswith("fsmonitor = evil\n")
    assert git_guard.snapshot(common) == before


def test_the_sandbox_trusts_a_worktrees_git_file_only_where_it_agrees_with_the_repository(
    repo: Path,
) -> None:
    """An agent may rewrite its worktree's `.git` file; the next process's sandbox (its gates)
    must not then make the repository's whole git directory writable."""
    from stretto.sandbox import SandboxSettings, writable_paths

    worktree = repo / ".stretto" / "worktrees" / "w"
    git(repo, "worktree", "add", "-q", "-b", "stretto/r/t/1", str(worktree))
    common = (repo / ".git").resolve()
    honest = writable_paths(worktree, repo.parent / "tmp", SandboxSettings(True), repo)
    assert common / "worktrees" / "w" in honest and common / "objects" in honest
    assert common / "refs" / "heads" / "stretto" / "r" / "t" in honest
    (worktree / ".git").write_text(f"gitdir: {common}\n")  # the main checkout's own
    forged = writable_paths(worktree, repo.parent / "tmp", SandboxSettings(True), repo)
    assert common not in forged and common / "refs" / "heads" not in forged
    assert not any(p == common or (p.is_relative_to(common) and "hooks" in p.parts) for p in forged)
