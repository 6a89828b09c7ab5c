"""The merge train (``[merge] strategy = "train"``) in real runs on real git repositories.

Each failure kind (a bad branch, a semantic conflict only the merged tree's gate sees, a
textual conflict, a flaky gate), the target only ever at commits whose exact tree passed, the
(tree, gate) cache, the user's checkout, bad ``[merge]`` settings, and SIGKILL at each step of
the train followed by ``stretto resume`` (nothing lost, nothing landed twice, no passed tree
tested again).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from _invariants import check_invariants, only_run
from stretto.engine.journal import Record, read_journal
from stretto.testing.repo import git, make_repo
from test_run import isolated_git, q, repo_with, rev, run_plan, show, step, task_trailers

__all__ = ["isolated_git"]  # the fixture (autouse) comes with the helpers

pytestmark = pytest.mark.timeout(90, method="thread")

TRAIN = '[merge]\nstrategy = "train"\nmax_batch = 8\nmax_lanes = 3\n'


def merge_gate(command: str) -> str:
    return f'[gates]\nmerged = {{ command = "{command}", when = "merge" }}\n'


def flaky_gate(marks: Path) -> str:
    """A gate that fails the first time it sees a tree and passes the next time."""
    tree = "$(git rev-parse HEAD^{tree})"
    return f"t={tree}; if test -e {marks}/$t; then exit 0; fi; touch {marks}/$t; exit 1"


def passed_merge_commits(journal: list[Record]) -> set[str]:
    """Commits whose merge gates all passed (a gates intent whose done says passed)."""
    intents = {r.seq: r for r in journal if r.type == "gates" and r.kind == "intent"}
    done = [r for r in journal if r.type == "gates" and r.kind == "done" and r.fields["passed"]]
    commits = {str(intents[int(r.fields["of"])].fields["commit"]) for r in done}
    # A car whose every gate result came from the cache has no gates intent: its results do.
    results = [r for r in journal if r.type == "gate_result" and r.fields.get("cache_key")]
    by_commit: dict[str, list[bool]] = {}
    for r in results:
        by_commit.setdefault(str(r.fields["commit"]), []).append(bool(r.fields["passed"]))
    return commits | {c for c, verdicts in by_commit.items() if all(verdicts)}


def assert_target_only_at_passed_trees(repo: Path, journal: list[Record]) -> None:
    """Every commit the target moved to is one whose exact tree passed the merge gates."""
    trees_passed = set()
    for r in journal:
        if r.type == "gate_result" and r.fields.get("cache_key") and r.fields["passed"]:
            trees_passed.add(r.fields["tree"])
    for rec in journal:
        if rec.type == "advance" and rec.kind == "intent":
            tree = git(repo, "rev-parse", f"{rec.fields['new']}^{{tree}}").strip()
            assert tree in trees_passed, f"target moved to {rec.fields['new']}: tree never passed"


def test_bad_and_semantic_branches_go_back_good_ones_land_in_cars(tmp_path: Path) -> None:
    gate = (
        "sleep 0.4; if test -e bad.txt; then echo BROKEN-by-bad >&2; exit 1; fi; "
        "! (test -e s1.txt && test -e s2.txt)"
    )
    repo = repo_with(tmp_path, {"a.txt": "a\n"}, TRAIN + merge_gate(gate))
    out = tmp_path / "out"
    out.mkdir()
    ran = run_plan(
        repo,
        [
            step("g1", "echo 1 > g1.txt", files=["g1.txt"]),
            step("s1", "echo s > s1.txt", files=["s1.txt"]),
            step("g2", "sleep 0.2; echo 2 > g2.txt", files=["g2.txt"]),
            step(
                "bad",
                "sleep 0.2; echo x > bad.txt; "
                f'cp "$STRETTO_PROMPT_FILE" {q(out)}/bad-$STRETTO_ATTEMPT.md',
                files=["bad.txt"],
                max_attempts=2,
            ),
            step("s2", "sleep 0.3; echo s > s2.txt", files=["s2.txt"], max_attempts=1),
            step("g3", "sleep 0.3; echo 3 > g3.txt", files=["g3.txt"]),
            step("g4", "sleep 0.3; echo 4 > g4.txt", files=["g4.txt"]),
        ],
        max_agents=7,
    )
    landed = {t.task for t in ran.summary.tasks if t.status == "landed"}
    assert landed == {"g1", "g2", "g3", "g4", "s1"}, ran.summary.tasks
    assert ran.task("bad").status == ran.task("s2").status == "failed"
    assert "gates failed on the merged tree" in ran.task("s2").reason
    # The failing gate's log reaches the bad task's next prompt.
    prompt = (out / "bad-2.md").read_text()
    assert "gates failed on the merged tree" in prompt and "BROKEN-by-bad" in prompt
    assert sorted(task_trailers(repo)) == sorted(landed)  # each landed exactly once
    assert_target_only_at_passed_trees(repo, ran.journal)
    assert {"bad.txt", "s2.txt"}.isdisjoint(git(repo, "ls-tree", "--name-only", "main").split())
    # Cars: at least one car held several branches, so fewer merge-gate runs than landings.
    cars = [r for r in ran.journal if r.type == "train"]
    assert any(len(car["branches"]) > 1 for r in cars for car in r.fields["cars"])
    # The same tree never tested twice with a pass (the cache answers).
    runs = Counter(
        r.fields["tree"]
        for r in ran.journal
        if r.type == "gates" and r.kind == "intent" and r.fields.get("tree")
    )
    passes = {
        str(r.fields["tree"])
        for r in ran.journal
        if r.type == "gate_result" and r.fields.get("cache_key") and r.fields["passed"]
    }
    assert all(runs[tree] == 1 for tree in passes), runs
    check_invariants_of_run(repo, ran.run_id, landed, sent_back={"bad", "s2"})


def check_invariants_of_run(
    repo: Path, run_id: str, landed: set[str], *, sent_back: set[str]
) -> None:
    """The invariants of a run in which ``sent_back`` were verified, then refused for good."""
    from _invariants import run_problems

    problems = [
        p
        for p in run_problems(repo, run_id, tasks=landed)
        if p.kind != "journal"  # the run 'failed' (tasks were sent back): expected here
        and not (p.kind == "lost" and any(f"task {t} " in p.what for t in sent_back))
    ]
    assert not problems, "\n".join(map(str, problems))


def test_textual_conflict_goes_back_at_once_with_the_files(tmp_path: Path) -> None:
    config = 'scope = "warn"\n' + TRAIN + merge_gate("sleep 0.3")
    repo = repo_with(tmp_path, {"shared.txt": "line 1\nline 2\n"}, config)
    out = tmp_path / "out"
    out.mkdir()
    ran = run_plan(
        repo,
        [
            step("a", "sed -i '1s/.*/from a/' shared.txt && echo a > a.txt", files=["a.txt"]),
            step(
                "b",
                "sleep 0.5\nsed -i '1s/.*/from b/' shared.txt && echo b > b.txt\n"
                f'cp "$STRETTO_PROMPT_FILE" {q(out)}/b-$STRETTO_ATTEMPT.md\n',
                files=["b.txt"],
            ),
        ],
    )
    assert ran.summary.status == "finished", ran.summary.tasks
    assert ran.task("b").attempts == 2
    [refused] = [r for r in ran.journal if r.type == "merge_refused" and r.fields["task"] == "b"]
    assert refused.fields["reason"] == "conflict" and refused.fields["files"] == ["shared.txt"]
    prompt = (out / "b-2.md").read_text()
    assert "merge conflict" in prompt and "shared.txt" in prompt
    # No test run was spent on the conflicting attempt.
    gates_b1 = [
        r
        for r in ran.journal
        if r.type == "gates" and r.kind == "intent" and r.fields.get("stage") == "merge"
        if "b" in r.fields.get("tasks", [])
        and r.fields.get("attempt") == 1
        and r.fields.get("task") == "b"
    ]
    assert not gates_b1
    assert show(repo, "shared.txt") == "from b\nline 2\n"
    check_invariants(repo, ran.run_id, tasks={"a", "b"})


def test_flaky_gate_is_asked_again_and_recorded(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    gate = flaky_gate(marks)
    config = TRAIN.replace("max_batch = 8", "max_batch = 1") + merge_gate(gate)
    repo = repo_with(tmp_path, {}, config)
    ran = run_plan(repo, [step("a", "echo a > a.txt", files=["a.txt"], max_attempts=1)])
    assert ran.task("a").status == "landed", ran.summary.tasks
    flaky = [r for r in ran.journal if r.type == "gate_flaky"]
    assert flaky and flaky[0].fields["gate"] == "merged"
    assert_target_only_at_passed_trees(repo, ran.journal)
    check_invariants(repo, ran.run_id, tasks={"a"})


def test_flaky_retries_zero_sends_the_branch_back(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    gate = flaky_gate(marks)
    config = TRAIN + "flaky_retries = 0\n" + merge_gate(gate)
    repo = repo_with(tmp_path, {}, config)
    ran = run_plan(repo, [step("a", "echo a > a.txt", files=["a.txt"], max_attempts=1)])
    assert ran.task("a").status == "failed"
    assert rev(repo) == git(repo, "rev-list", "--max-parents=0", "main").strip()


def test_dirty_checkout_is_left_alone_by_the_train(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {}, TRAIN + merge_gate("true"))
    (repo / "README.md").write_text("my own edit\n")
    ran = run_plan(repo, [step("a", "echo a > a.txt", files=["a.txt"])])
    assert ran.task("a").status == "landed"
    assert (repo / "README.md").read_text() == "my own edit\n"
    assert not (repo / "a.txt").exists()
    assert any("uncommitted changes" in note for note in ran.summary.notes)


def test_clean_checkout_follows_the_train(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {}, TRAIN + merge_gate("true"))
    ran = run_plan(
        repo, [step(n, f"echo {n} > {n}.txt", files=[f"{n}.txt"]) for n in ("a", "b", "c")]
    )
    assert ran.summary.status == "finished"
    assert all((repo / f"{n}.txt").exists() for n in "abc")
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    check_invariants(repo, ran.run_id, tasks={"a", "b", "c"})
    # The report, status --json and explain show the train.
    report = subprocess.run(
        [sys.executable, "-m", "stretto", "report"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert report.returncode == 0, report.stderr
    html = (repo / ".stretto" / "runs" / ran.run_id / "report.html").read_text()
    assert '<section id="train">' in html and "Merge train" in html
    status = subprocess.run(
        [sys.executable, "-m", "stretto", "status", "--json"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    train = json.loads(status.stdout)["train"]
    assert train is not None and train["lanes"] >= 1
    explain = subprocess.run(
        [sys.executable, "-m", "stretto", "explain", "b"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "joined the merge train" in explain.stdout and "landed with car(s)" in explain.stdout


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ('[merge]\nstrategy = "zip"\n', "merge.strategy"),
        ("[merge]\nmax_lanes = 0\n", "merge.max_lanes"),
        ("[merge]\nflaky_retries = -1\n", "merge.flaky_retries"),
        ("[merge]\nbatch = 3\n", "merge.batch"),
    ],
)
def test_bad_merge_settings_are_refused_with_file_line_and_field(
    tmp_path: Path, table: str, field: str
) -> None:
    repo = repo_with(tmp_path, {}, table)
    (tmp_path / "plan.yaml").write_text(
        "name: t\nstages:\n  - name: s\n    steps:\n      - {id: a, goal: a, command: 'true'}\n"
    )
    before = git(repo, "for-each-ref")
    result = subprocess.run(
        [sys.executable, "-m", "stretto", "run", "../plan.yaml", "--plain"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "stretto.toml:" in result.stderr and field in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (repo / ".stretto").exists() and git(repo, "for-each-ref") == before


# --------------------------------------------------------------------------- crash and resume

PLAN = """\
name: train
max_agents: 5
stages:
  - name: build
    steps:
      - {id: a, goal: A, files: [a.txt], command: "echo a > a.txt"}
      - {id: b, goal: B, files: [b.txt], command: "sleep 0.2; echo b > b.txt"}
      - {id: c, goal: C, files: [c.txt], command: "sleep 0.2; echo c > c.txt"}
      - {id: d, goal: D, files: [d.txt], command: "sleep 0.4; echo d > d.txt"}
      - {id: e, goal: E, files: [e.txt], command: "sleep 0.4; echo e > e.txt"}
"""

CRASH_CONFIG = (
    'target = "main"\n'
    + TRAIN
    + '[gates]\nmerged = { command = "sleep 0.3; test -n \\"$(ls *.txt)\\"", when = "merge" }\n'
)

TASKS = {"a", "b", "c", "d", "e"}


def stretto(repo: Path, *args: str, crash: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STRETTO_CRASHPOINT"}
    if crash:
        env["STRETTO_CRASHPOINT"] = crash
    return subprocess.run(
        [sys.executable, "-m", "stretto", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


TRAIN_CRASH_POINTS = [
    "after-intent:gates-merge@2",  # a car's gates starting, one car tested already
    "after-intent:advance",  # landing cars: intent written, ref not moved
    "after-advance@2",  # ref moved, nothing recorded after
]
if os.environ.get("STRETTO_TRAIN_SOAK"):  # ~20 s each: the rest of the train's crash points
    TRAIN_CRASH_POINTS += [
        "after-intent:merge@2",  # building a car
        "after-verified@2",  # a branch verified, not yet in the train
        "after-intent:merge@4",
        "after-intent:gates-merge",
        "after-advance",
        "after-intent:advance@2",
    ]


@pytest.mark.parametrize("point", TRAIN_CRASH_POINTS)
def test_train_resumes_after_a_crash_at_each_step(tmp_path: Path, point: str) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "hi\n", "stretto.toml": CRASH_CONFIG})
    (tmp_path / "plan.yaml").write_text(PLAN)
    crashed = stretto(repo, "run", "../plan.yaml", "--plain", crash=point)
    assert crashed.returncode == -9, (point, crashed.returncode, crashed.stdout, crashed.stderr)
    run = only_run(repo)
    before = read_journal(repo / ".stretto" / "runs" / run / "journal.jsonl")
    passed_before = {
        r.fields["cache_key"]
        for r in before
        if r.type == "gate_result" and r.fields.get("cache_key") and r.fields["passed"]
    }
    resumed = stretto(repo, "resume", "--plain")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_invariants(repo, run, tasks=TASKS)
    records = read_journal(repo / ".stretto" / "runs" / run / "journal.jsonl")
    after = records[len(before) :]
    retested = {
        r.fields["cache_key"]
        for r in after
        if r.type == "gate_result" and r.fields.get("cache_key") in passed_before
    }
    assert not retested, f"trees that had passed were tested again: {retested}"
    assert_target_only_at_passed_trees(repo, records)


def test_train_is_the_default_and_old_runs_resume_serial() -> None:
    from stretto.config import MergeSettings
    from stretto.options import RunOptions

    assert MergeSettings().strategy == "train"
    old = RunOptions(target="main").to_dict()
    del old["merge"]  # a journal written before [merge] existed
    assert RunOptions.from_dict(old).merge.strategy == "serial"


def stop_mid_train(tmp_path: Path) -> Path:
    """A run of PLAN stopped with SIGTERM while a car's gates run; its repository."""
    import signal
    import time

    config = 'target = "main"\n' + TRAIN + merge_gate("sleep 3")
    repo = make_repo(tmp_path / "repo", {"README.md": "hi\n", "stretto.toml": config})
    (tmp_path / "plan.yaml").write_text(PLAN)
    env = {k: v for k, v in os.environ.items() if k != "STRETTO_CRASHPOINT"}
    engine = subprocess.Popen(
        [sys.executable, "-m", "stretto", "run", "../plan.yaml", "--plain"],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = False
    deadline = time.monotonic() + 60
    while not started and time.monotonic() < deadline:
        runs = list((repo / ".stretto" / "runs").glob("*/journal.jsonl"))
        started = bool(runs) and any(
            r.type == "gates" and r.kind == "intent" and "car" in r.fields
            for r in read_journal(runs[0])
        )
        time.sleep(0.1)
    assert started, "no car's gates started"
    engine.send_signal(signal.SIGTERM)
    assert engine.wait(timeout=60) != -9
    return repo


def test_stopped_mid_train_then_resumed(tmp_path: Path) -> None:
    """SIGTERM while a car's gates run: the attempts waiting in the train are stopped (they
    leave it), nothing lands half-way, and resume lands everything once."""
    repo = stop_mid_train(tmp_path)
    run = only_run(repo)
    resumed = stretto(repo, "resume", "--plain")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    check_invariants(repo, run, tasks=TASKS)


def test_clean_removes_the_lanes_of_a_stopped_train(tmp_path: Path) -> None:
    repo = stop_mid_train(tmp_path)
    assert "-lane-" in git(repo, "worktree", "list")  # a stopped run keeps its lanes...
    cleaned = stretto(repo, "clean")
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert "-lane-" not in git(repo, "worktree", "list")  # ...until `stretto clean`
    assert not list((repo / ".stretto" / "integration").glob("*-lane-*"))


def test_a_full_disk_while_a_car_is_tested_stops_the_run_cleanly(tmp_path: Path) -> None:
    """The journal write that fails is the merge gate's result, written by a lane of the train
    (not the driver): the run stops with the storage error and no traceback (the lane's error
    went unretrieved and asyncio printed it), and resume finishes the work."""
    plan = 'stages:\n  - name: s\n    steps:\n      - {id: a, goal: A, files: [a.txt], command: "echo a > a.txt"}\n'  # noqa: E501
    config = 'target = "main"\n' + TRAIN + merge_gate("sleep 0.2; test -e a.txt")
    probe = make_repo(tmp_path / "probe", {"README.md": "hi\n", "stretto.toml": config})
    (probe / "plan.yaml").write_text(plan)
    assert stretto(probe, "run", "plan.yaml", "--plain").returncode == 0
    journal = read_journal(probe / ".stretto" / "runs" / only_run(probe) / "journal.jsonl")
    nth = 1 + next(
        i
        for i, r in enumerate(journal)
        if r.type == "gate_result" and r.fields.get("stage") == "merge"
    )
    repo = make_repo(tmp_path / "repo", {"README.md": "hi\n", "stretto.toml": config})
    (repo / "plan.yaml").write_text(plan)
    ran = stretto(repo, "run", "plan.yaml", "--plain", crash=f"journal-write-enospc@{nth}")
    output = ran.stdout + ran.stderr
    assert ran.returncode == 1, output
    assert "Traceback" not in output and "never retrieved" not in output, output
    assert "No space left on device" in output, output
    run = only_run(repo)
    records = read_journal(repo / ".stretto" / "runs" / run / "journal.jsonl")
    assert records[-1].type == "gates" and records[-1].fields.get("stage") == "merge", records[-1]
    resumed = stretto(repo, "resume", "--plain")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert git(repo, "show", "main:a.txt").strip() == "a"


@pytest.mark.parametrize("strategy", ["train", "serial"])
def test_a_task_in_the_merge_queue_frees_its_agent_slot(tmp_path: Path, strategy: str) -> None:
    """One agent at a time and a merge gate of 2 s: the second agent starts while the first
    task waits in the merge queue (it keeps its file lease, not an agent slot), and never
    more than one agent runs."""
    config = f'[merge]\nstrategy = "{strategy}"\n' + merge_gate("sleep 2")
    repo = repo_with(tmp_path, {}, config)
    ran = run_plan(
        repo,
        [
            step("a", "echo a > a.txt", files=["a.txt"]),
            step("b", "echo b > b.txt", files=["b.txt"]),
        ],
        max_agents=1,
    )
    assert ran.task("a").status == ran.task("b").status == "landed", ran.summary.tasks
    at = {(r.type, r.fields.get("task")): r.ts for r in ran.journal}
    first, second = sorted(("a", "b"), key=lambda t: at[("attempt_started", t)])
    assert at[("attempt_started", second)] < at[("merged", first)]  # while first was landing
    running = peak = 0
    for record in ran.journal:  # agents running at once, from the journal
        running += {"attempt_started": 1, "attempt_finished": 1 - 2}.get(record.type, 0)
        peak = max(peak, running)
    assert peak == 1


def test_tasks_in_the_merge_queue_keep_their_leases(tmp_path: Path) -> None:
    """A task waiting to land still owns its files: a task of the same file waits for it to
    land, though an agent slot is free."""
    repo = repo_with(tmp_path, {}, TRAIN + merge_gate("sleep 1"))
    ran = run_plan(
        repo,
        [
            step("a", "echo a > s.txt", files=["s.txt"]),
            step("b", "echo b >> s.txt", files=["s.txt"]),
        ],
        max_agents=2,
    )
    assert ran.task("a").status == ran.task("b").status == "landed", ran.summary.tasks
    at = {(r.type, r.fields.get("task")): r.ts for r in ran.journal}
    first, second = sorted(("a", "b"), key=lambda t: at[("attempt_started", t)])
    assert at[("attempt_started", second)] > at[("merged", first)]
