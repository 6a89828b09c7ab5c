"""Repository states: stretto run in the repositories users really have (issue 19).

Each test builds a real git repository in a temporary directory, runs ``python -m stretto`` as a
subprocess with ``bash`` commands as agents, and checks git and the files on disk against what
docs/running.md ("Repository states") promises: not a repository (or a bare one), no commit
yet, a detached HEAD, a missing or locked target, a dirty checkout, a target the user moves or
rewinds mid-run, stale ``stretto/*`` branches, a branch named like an attempt, locked or
prunable worktrees, submodules, Git LFS pointer files, sparse worktrees and a user's sparse
checkout, hooks (``.git/hooks`` and ``core.hooksPath``) and no git identity. Agents leave
evidence in ``OUT``, a directory outside the repository.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from stretto.testing.repo import commit_file, git, make_repo

pytestmark = pytest.mark.timeout(90, method="thread")
T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """stretto's environment: no user or system git config, git never looks above tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    out = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "STRETTO_"))}
    out.update(
        HOME=str(home),
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CEILING_DIRECTORIES=str(tmp_path),
    )
    out.pop("EMAIL", None)
    return out


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Where agents and gates leave evidence (outside every repository)."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def stretto(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stretto", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def step(id_: str, command: str, **extra: Any) -> dict[str, Any]:
    return {"id": id_, "goal": f"do {id_}", "agent": "shell", "command": command, **extra}


def plan_file(where: Path, *steps: dict[str, Any], **keys: Any) -> Path:
    """A one-stage plan written outside the repository."""
    path = where / f"plan-{time.monotonic_ns()}.yaml"
    plan = {"name": "states", **keys, "stages": [{"name": "work", "steps": list(steps)}]}
    path.write_text(yaml.safe_dump(plan, sort_keys=False))
    return path


def run(repo: Path, env: dict[str, str], *steps: dict[str, Any], **keys: Any) -> Any:
    """``stretto run --plain`` a plan of ``steps`` in ``repo``; returns the finished process."""
    return stretto(repo, env, "run", "--plain", str(plan_file(repo.parent, *steps, **keys)))


def repo_with(tmp_path: Path, files: dict[str, str] | None = None, config: str = "") -> Path:
    content = {"README.md": "# project\n", "stretto.toml": 'target = "main"\n' + config}
    content.update(files or {})
    return make_repo(tmp_path / "repo", content)


def everything(root: Path, *, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file under ``root`` (``.git`` included) with its bytes; symlinks as their target."""
    found: dict[str, bytes] = {}
    for folder, dirs, names in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if (rel / d).as_posix() not in skip]
        for name in [*names, *(d for d in dirs if (Path(folder) / d).is_symlink())]:
            path = Path(folder) / name
            key = (rel / name).as_posix()
            found[key] = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return found


def user_files(checkout: Path) -> dict[str, bytes]:
    """The checkout's files as a user sees them (no .git, no .stretto)."""
    return everything(checkout, skip=(".git", ".stretto"))


def rev(repo: Path, name: str = "refs/heads/main") -> str:
    return git(repo, "rev-parse", name).strip()


def show(repo: Path, path: str, commit: str = "refs/heads/main") -> str:
    return git(repo, "show", f"{commit}:{path}")


def landed(repo: Path, target: str = "main") -> list[str]:
    out = git(repo, "log", target, "--format=%(trailers:key=Stretto-Task,valueonly)")
    return sorted(line.strip() for line in out.splitlines() if line.strip())


def leftovers(repo: Path) -> tuple[list[str], list[str]]:
    """stretto's worktrees and branches still registered after a run."""
    trees = [
        line.split(" ", 1)[1]
        for line in git(repo, "worktree", "list", "--porcelain").splitlines()
        if line.startswith("worktree ") and "/.stretto/" in line
    ]
    return trees, git(repo, "branch", "--list", "stretto/*", "--format=%(refname:short)").split()


def q(path: Path) -> str:
    return shlex.quote(str(path))


# --------------------------------------------------------------------------- no repository


def test_not_a_git_repository_is_exit_2_and_writes_nothing(tmp_path: Path, env: Any) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("mine\n")
    plan = plan_file(tmp_path, step("a", "echo a > a.txt", files=["a.txt"]))
    before = everything(plain)

    for args in (
        ["run", str(plan)],
        ["run", "--detach", str(plan)],
    ):
        result = stretto(plain, env, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert f"{plain} is not a git repository; run `git init` there first" in result.stderr
        assert "Traceback" not in result.stderr
        assert everything(plain) == before
    # A dry run needs no repository: it only reads the plan (and writes nothing either).
    assert stretto(plain, env, "run", "--dry-run", str(plan)).returncode == 0
    assert everything(plain) == before


def test_bare_repository_is_exit_2_and_writes_nothing(tmp_path: Path, env: Any) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    before = everything(bare)

    result = stretto(bare, env, "run", str(plan_file(tmp_path, step("a", "true"))))

    assert result.returncode == 2
    assert "is a bare repository; stretto needs a working tree (clone it)" in result.stderr
    assert everything(bare) == before


def test_repository_without_a_commit_is_exit_2_and_writes_nothing(tmp_path: Path, env: Any) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "draft.txt").write_text("not committed yet\n")
    before = everything(repo)

    result = stretto(repo, env, "run", str(plan_file(tmp_path, step("a", "true"))))

    assert result.returncode == 2
    assert "has no commit yet" in result.stderr
    assert 'git commit --allow-empty -m "initial commit"' in result.stderr  # the fix
    assert everything(repo) == before  # .git included: not even info/exclude


# --------------------------------------------------------------------------- HEAD and target


def test_detached_head_lands_on_main_and_stays_detached(tmp_path: Path, env: Any) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# p\n"})  # no stretto.toml: no target
    commit_file(repo, "later.txt", "later\n")
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    detached_at = rev(repo, "HEAD")
    before = user_files(repo)

    result = run(repo, env, step("a", "echo a > a.txt", files=["a.txt"]))

    assert result.returncode == 0, result.stdout + result.stderr
    assert landed(repo) == ["a"] and show(repo, "later.txt") == "later\n"
    assert subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=repo).returncode == 1
    assert rev(repo, "HEAD") == detached_at  # still detached where the user left it
    assert user_files(repo) == before


def test_detached_head_without_main_names_the_branches(tmp_path: Path, env: Any) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# p\n"}, branch="trunk")
    git(repo, "checkout", "-q", "--detach")
    before = everything(repo)

    result = run(repo, env, step("a", "true"))

    assert result.returncode == 2
    assert "target branch 'main' does not exist" in result.stderr
    assert "(HEAD is detached, so the target defaulted to 'main')" in result.stderr
    assert "its branches: trunk" in result.stderr
    assert everything(repo) == before


def test_missing_target_branch_is_exit_2_and_writes_nothing(tmp_path: Path, env: Any) -> None:
    repo = repo_with(tmp_path)
    git(repo, "branch", "dev")
    before = everything(repo)

    result = run(repo, env, step("a", "true"), target="release")

    assert result.returncode == 2
    assert "target branch 'release' does not exist" in result.stderr
    assert "its branches: dev, main" in result.stderr
    assert "git branch release" in result.stderr
    assert "detached" not in result.stderr
    assert everything(repo) == before


def test_a_stale_lock_on_the_target_is_exit_2_and_writes_nothing(tmp_path: Path, env: Any) -> None:
    repo = repo_with(tmp_path)
    lock = repo / ".git" / "refs" / "heads" / "main.lock"
    lock.write_text("")  # what a git killed while moving main leaves behind
    before = everything(repo)

    result = run(repo, env, step("a", "echo a > a.txt", files=["a.txt"]))

    assert result.returncode == 2
    assert f"the target branch 'main' is locked: {lock} exists" in result.stderr
    assert "remove it, then retry" in result.stderr
    assert everything(repo) == before
    lock.unlink()
    assert run(repo, env, step("a", "echo a > a.txt", files=["a.txt"])).returncode == 0


# --------------------------------------------------------------------------- the user's checkout


def test_dirty_checkout_is_never_touched_and_told_how_to_catch_up(tmp_path: Path, env: Any) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n", "b.txt": "b\n"})
    (repo / "a.txt").write_bytes(b"my unstaged edit\r\n")
    (repo / "b.txt").write_text("my staged edit\n")
    git(repo, "add", "b.txt")
    (repo / "notes.txt").write_text("untracked notes\n")
    (repo / "c.txt").write_text("my untracked c, in the way of a landing\n")
    before, index, base = user_files(repo), git(repo, "ls-files", "-s"), rev(repo)

    result = run(
        repo,
        env,
        step("add-c", "echo C > c.txt", files=["c.txt"]),
        step("edit-a", "echo A > a.txt", files=["a.txt"]),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert landed(repo) == ["add-c", "edit-a"]
    assert show(repo, "a.txt") == "A\n" and show(repo, "c.txt") == "C\n"
    assert user_files(repo) == before and git(repo, "ls-files", "-s") == index
    assert "uncommitted changes" in result.stdout
    recipe = f"git reset --soft {base[:12]} && git merge --ff-only {rev(repo)[:12]}"
    assert recipe in result.stdout


def test_a_locked_index_in_the_checkout_is_named_in_the_hint(tmp_path: Path, env: Any) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n"})
    lock = repo / ".git" / "index.lock"
    lock.write_text("")  # an editor's git command, or a crashed one
    before, base = user_files(repo), rev(repo)

    result = run(repo, env, step("edit", "echo A > a.txt", files=["a.txt"]))

    assert result.returncode == 0, result.stdout + result.stderr
    assert show(repo, "a.txt") == "A\n" and user_files(repo) == before
    assert f"its index is locked ({lock} exists" in result.stdout
    assert "uncommitted changes" not in result.stdout
    lock.unlink()
    recipe = f"git reset --soft {base[:12]} && git merge --ff-only {rev(repo)[:12]}"
    assert recipe in result.stdout
    subprocess.run(recipe, shell=True, cwd=repo, env=env, check=True, capture_output=True)
    assert (repo / "a.txt").read_text() == "A\n"
    assert git(repo, "status", "--porcelain", "--", ".", ":!.stretto") == ""


WAIT = "touch {out}/started; while [ ! -f {out}/go ]; do sleep 0.05; done"


def run_meanwhile(
    repo: Path, env: Any, out: Path, plan: Path, user: Callable[[], T]
) -> tuple[str, T]:
    """Run ``plan``; once its agent has started (and waits for ``out/go``), call ``user``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "stretto", "run", "--plain", str(plan)],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (out / "started").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
            time.sleep(0.05)
        done = user()
        (out / "go").touch()
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    return output, done


def test_target_moved_by_the_user_mid_run(tmp_path: Path, env: Any, out: Path) -> None:
    gate = f"(test -f user.txt && echo with-user || echo without-user) >> {q(out)}/gate.txt"
    repo = repo_with(tmp_path, {"a.txt": "a\n"}, f"[gates]\nprobe = {gate!r}\n")
    wait = WAIT.format(out=q(out))
    plan = plan_file(tmp_path, step("work", f"{wait}; echo w > work.txt", files=["work.txt"]))

    _, user = run_meanwhile(
        repo, env, out, plan, lambda: commit_file(repo, "user.txt", "mine\n", "the user's")
    )

    head = rev(repo)
    assert git(repo, "rev-parse", f"{head}^1").strip() == user  # landed on top of theirs
    assert show(repo, "user.txt") == "mine\n" and show(repo, "work.txt") == "w\n"
    # The gate passed in the attempt's worktree (forked before the user's commit), then ran
    # again on the merged tree, which holds the user's commit.
    assert (out / "gate.txt").read_text().split() == ["without-user", "with-user"]
    assert (repo / "work.txt").read_text() == "w\n"  # the clean checkout came along
    assert leftovers(repo) == ([], [])


def test_target_rewound_by_the_user_mid_run(tmp_path: Path, env: Any, out: Path) -> None:
    # The user rewinds while the attempt's gate runs (its agent is done: a rewind while an
    # agent is at work is taken for the agent's and put back, tests/test_hostile_agents.py).
    gate = WAIT.format(out=q(out))
    repo = repo_with(tmp_path, {"a.txt": "a\n"}, f"[gates]\nslow = {gate!r}\n")
    bad = commit_file(repo, "bad.txt", "a mistake\n", "a commit the user will drop")
    plan = plan_file(tmp_path, step("work", "echo w > work.txt", files=["work.txt"]))

    def rewind() -> None:
        git(repo, "reset", "-q", "--hard", "HEAD~1")  # main checked out: main is rewound

    output, _ = run_meanwhile(repo, env, out, plan, rewind)

    assert landed(repo) == ["work"] and show(repo, "work.txt") == "w\n"
    # The first attempt forked from the dropped commit: merging it would have brought the
    # commit back. It was refused (not counted) and redone from the new head.
    assert "bad.txt" not in git(repo, "ls-tree", "-r", "--name-only", "main").split()
    contains = subprocess.run(["git", "merge-base", "--is-ancestor", bad, "main"], cwd=repo)
    assert contains.returncode == 1
    assert "was rewound since this attempt started" in output
    assert "ok   work  attempts 2" in output
    assert not (repo / "bad.txt").exists() and (repo / "work.txt").read_text() == "w\n"
    [kept], _ = leftovers(repo)  # the refused attempt's worktree, kept for inspection
    assert kept.endswith("-work-1")
    assert stretto(repo, env, "clean").returncode == 0 and leftovers(repo) == ([], [])


def test_target_rewound_while_stretto_was_down_is_not_undone_by_resume(
    tmp_path: Path, env: Any
) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n"})
    bad = commit_file(repo, "bad.txt", "a mistake\n", "a commit the user will drop")
    plan = plan_file(tmp_path, step("work", "echo w > work.txt", files=["work.txt"]))
    # stretto dies right after the attempt passed its gates, before it landed.
    crashed = stretto(repo, {**env, "STRETTO_CRASHPOINT": "after-verified"}, "run", str(plan))
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    git(repo, "reset", "-q", "--hard", "HEAD~1")  # meanwhile the user drops the commit

    resumed = stretto(repo, env, "resume")

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "was rewound since this attempt started" in resumed.stdout
    assert landed(repo) == ["work"] and show(repo, "work.txt") == "w\n"
    contains = subprocess.run(["git", "merge-base", "--is-ancestor", bad, "main"], cwd=repo)
    assert contains.returncode == 1  # the dropped commit did not come back


# --------------------------------------------------------------------------- branches, worktrees


def test_stale_branches_and_locked_or_prunable_worktrees(tmp_path: Path, env: Any) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n"})
    base = rev(repo)
    root = repo / ".stretto" / "worktrees"
    # Someone else's branch under stretto/ (not a run id stretto makes), with their work.
    theirs = "stretto/feature/login/1"
    git(repo, "branch", theirs, base)
    git(repo, "branch", "stretto/wip")
    # A vanished run (its .stretto/runs directory was deleted): one locked worktree, one
    # whose directory was deleted by hand (prunable).
    gone = "20200101-000000-000-abcd"
    git(repo, "worktree", "add", "-q", "-b", f"stretto/{gone}/x/1", str(root / f"{gone}-x-1"))
    git(repo, "worktree", "lock", "--reason", "on a stick", str(root / f"{gone}-x-1"))
    git(repo, "worktree", "add", "-q", "-b", f"stretto/{gone}/y/1", str(root / f"{gone}-y-1"))
    subprocess.run(["rm", "-rf", str(root / f"{gone}-y-1")], check=True)
    # The user's own locked worktree of the target, outside stretto's root, deleted by hand.
    git(repo, "switch", "-q", "-c", "dev")
    mine = tmp_path / "my-main"
    git(repo, "worktree", "add", "-q", str(mine), "main")
    git(repo, "worktree", "lock", str(mine))
    subprocess.run(["rm", "-rf", str(mine)], check=True)

    result = run(repo, env, step("a", "echo A > a.txt", files=["a.txt"]))

    assert result.returncode == 0, result.stdout + result.stderr
    assert landed(repo) == ["a"]
    cleaned = stretto(repo, env, "clean")
    assert cleaned.returncode == 0, cleaned.stderr
    trees, branches = leftovers(repo)
    assert trees == []
    assert sorted(branches) == [theirs, "stretto/wip"]  # someone else's: never deleted
    assert rev(repo, theirs) == base
    listed = git(repo, "worktree", "list", "--porcelain")
    assert f"worktree {mine}\n" in listed  # the user's own: never pruned by stretto
    assert git(repo, "symbolic-ref", "--short", "HEAD").strip() == "dev"


def test_a_branch_with_the_name_of_an_attempt_is_never_taken_over(tmp_path: Path, env: Any) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a\n"})
    theirs = "stretto/nightly/a/1"  # what attempt 1 of task a in a run named "nightly" uses
    git(repo, "switch", "-q", "-c", theirs)
    tip = commit_file(repo, "a.txt", "their own work\n", "someone else's commit")
    git(repo, "switch", "-q", "main")
    plan = plan_file(tmp_path, step("a", "echo A > a.txt", files=["a.txt"]))
    code = (
        "import sys\nfrom stretto import api\n"
        "print(api.start_run('.', sys.argv[1], run_id='nightly').summary.status)"
    )

    result = subprocess.run(
        [sys.executable, "-c", code, str(plan)], cwd=repo, env=env, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["finished"]
    assert rev(repo, theirs) == tip  # left exactly as it was
    assert show(repo, "a.txt") == "A\n"
    contains = subprocess.run(["git", "merge-base", "--is-ancestor", tip, "main"], cwd=repo)
    assert contains.returncode == 1  # their commit did not land with stretto's work
    journal = (repo / ".stretto" / "runs" / "nightly" / "journal.jsonl").read_text()
    assert "already exists with commits stretto did not make for this attempt" in journal
    assert "Stretto-Attempt: 2" in git(repo, "log", "-1", "main", "--format=%B")


# --------------------------------------------------------------------------- submodules, LFS


def _with_submodule(tmp_path: Path) -> tuple[Path, str]:
    lib = make_repo(tmp_path / "lib", {"lib.txt": "library v1\n"})
    repo = repo_with(tmp_path, {"a.txt": "a\n"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "vendor/lib")
    git(repo, "commit", "-q", "-m", "add the submodule")
    return repo, rev(repo, "HEAD:vendor/lib")


def test_submodules_are_not_checked_out_in_worktrees_and_work_lands(
    tmp_path: Path, env: Any, out: Path
) -> None:
    repo, gitlink = _with_submodule(tmp_path)
    before = user_files(repo)
    look = f"ls -A vendor/lib > {q(out)}/$STRETTO_TASK_ID.txt"

    result = run(
        repo,
        env,
        step("edit", f"{look}; echo A > a.txt", files=["a.txt"]),
        step("add", f"{look}; mkdir -p src && echo b > src/b.txt", files=["src/**"]),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert landed(repo) == ["add", "edit"]
    assert (out / "edit.txt").read_text() == ""  # an empty directory in the worktree
    assert rev(repo, "main:vendor/lib") == gitlink  # the pointer never moved
    assert git(repo, "ls-tree", "main", "vendor/lib").split()[:2] == ["160000", "commit"]
    after = user_files(repo)
    assert after.pop("a.txt") == b"A\n" and after.pop("src/b.txt") == b"b\n"
    assert after == {k: v for k, v in before.items() if k != "a.txt"}  # submodule untouched
    assert leftovers(repo) == ([], [])


def test_submodules_with_a_setup_command(tmp_path: Path, env: Any) -> None:
    repo, gitlink = _with_submodule(tmp_path)
    config = (repo / "stretto.toml").read_text()
    # (-c protocol.file.allow: git refuses local-path submodule URLs by default since 2.38.1)
    setup = "git -c protocol.file.allow=always submodule update --init --quiet"
    config += f'[workspace]\nsetup = ["{setup}"]\n'
    commit_file(repo, "stretto.toml", config, "submodules in worktrees")

    result = run(repo, env, step("use", "cp vendor/lib/lib.txt copy.txt", files=["copy.txt"]))

    assert result.returncode == 0, result.stdout + result.stderr
    assert show(repo, "copy.txt") == "library v1\n"  # the agent had the submodule's files
    assert rev(repo, "main:vendor/lib") == gitlink
    assert leftovers(repo) == ([], [])


LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 12345\n"
)


def test_lfs_pointer_files_pass_through_unchanged(tmp_path: Path, env: Any, out: Path) -> None:
    attributes = "*.bin filter=lfs diff=lfs merge=lfs -text\n"
    repo = repo_with(
        tmp_path,
        {".gitattributes": attributes, "assets/model.bin": LFS_POINTER, "a.txt": "a\n"},
    )
    pointer = rev(repo, "HEAD:assets/model.bin")

    result = run(
        repo,
        env,
        step("read", f"cat assets/model.bin > {q(out)}/seen.txt; echo A > a.txt", files=["a.txt"]),
        step("add", "mkdir -p data && printf 'new\\n' > data/new.txt", files=["data/**"]),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert landed(repo) == ["add", "read"]
    assert (out / "seen.txt").read_text() == LFS_POINTER  # the agent saw the pointer
    assert rev(repo, "main:assets/model.bin") == pointer  # the same blob on the target
    assert (repo / "assets" / "model.bin").read_text() == LFS_POINTER
    assert git(repo, "status", "--porcelain", "--", ".", ":!.stretto") == ""


def test_a_required_filter_that_is_not_installed_fails_every_attempt_before_its_agent(
    tmp_path: Path, env: Any, out: Path
) -> None:
    attributes = "*.bin filter=lfs diff=lfs merge=lfs -text\n"
    repo = repo_with(tmp_path, {".gitattributes": attributes, "model.bin": LFS_POINTER})
    git(repo, "config", "filter.lfs.process", "no-such-git-lfs filter-process")
    git(repo, "config", "filter.lfs.required", "true")  # as `git lfs install` sets it
    before = rev(repo)

    result = run(repo, env, step("a", f"touch {q(out)}/ran; echo a > a.txt", files=["a.txt"]))

    assert result.returncode == 1
    assert "workspace setup failed" in result.stdout and "no-such-git-lfs" in result.stdout
    assert not (out / "ran").exists()  # no agent started on a half-checked-out worktree
    assert rev(repo) == before


# --------------------------------------------------------------------------- sparse worktrees


def _monorepo(tmp_path: Path, config: str) -> Path:
    files = {f"{d}/f{i}.txt": f"{d} {i}\n" for d in ("api", "web", "docs", "tests") for i in (1, 2)}
    files["api/deep/core.txt"] = "core\n"
    files["Makefile"] = "all:\n"
    return repo_with(tmp_path, files, config)


def _seen(out: Path, name: str) -> set[str]:
    return set((out / name).read_text().split())


LIST = "find . -type f -not -path './.git' | sed 's|^./||' | sort > {out}/$STRETTO_TASK_ID.txt"


def test_sparse_worktrees_hold_owned_and_configured_paths(
    tmp_path: Path, env: Any, out: Path
) -> None:
    count = f"find . -name 'f*.txt' | wc -l >> {q(out)}/gate-counts.txt"
    config = f'[workspace]\nsparse = ["tests"]\n[gates]\ncount = "{count}"\n'
    repo = _monorepo(tmp_path, config)
    listing = LIST.format(out=q(out))

    result = run(
        repo,
        env,
        step("api", f"{listing}; echo more >> api/f1.txt", files=["api/f1.txt"]),
        step("anywhere", f"{listing}; echo x > web/x.txt", files=["**/x.txt"]),
        step("stray", f"{listing}; mkdir -p docs && echo s > docs/stray.txt", files=["web/*.txt"]),
    )

    assert "landed  api" in result.stdout and "landed  anywhere" in result.stdout, result.stdout
    # api owns api/f1.txt: its folder, the configured tests/ and the top-level files.
    assert _seen(out, "api.txt") == {
        "Makefile",
        "README.md",
        "stretto.toml",
        "api/f1.txt",
        "api/f2.txt",
        "api/deep/core.txt",
        "tests/f1.txt",
        "tests/f2.txt",
    }
    # A pattern that could own a path anywhere gets a full checkout.
    assert {"web/f1.txt", "docs/f1.txt", "api/f1.txt"} <= _seen(out, "anywhere.txt")
    # A new file outside the cone is still committed, so the scope gate refuses it.
    assert "docs/f1.txt" not in _seen(out, "stray.txt")
    assert "stray" not in landed(repo)
    assert "outside the step's owned files: docs/stray.txt" in result.stdout, result.stdout
    # The gate ran on the sparse tree (4 of the 8 f*.txt files), then on the full merged tree.
    counts = [int(n) for n in (out / "gate-counts.txt").read_text().split()]
    assert counts.count(8) >= 2 and 4 in counts  # anywhere: 8 and 8; api: 4 then 8
    # The user's checkout stays a full one; git turned on per-worktree config for the sparse.
    assert (repo / "web" / "f1.txt").is_file()
    assert git(repo, "config", "--get", "extensions.worktreeConfig").strip() == "true"
    assert subprocess.run(
        ["git", "config", "--get", "core.sparseCheckout"], cwd=repo, capture_output=True
    ).stdout.strip() in (b"", b"false")
    assert show(repo, "api/f1.txt") == "api 1\nmore\n"


@pytest.mark.parametrize("style", ["git sparse-checkout", "core.sparseCheckout"])
def test_a_sparse_checkout_of_the_user_does_not_leak_into_worktrees(
    tmp_path: Path, env: Any, out: Path, style: str
) -> None:
    listing = f"find . -name 'f*.txt' | sort > {q(out)}/$STRETTO_TASK_ID.txt"
    merged = f"find . -name 'f*.txt' | sort > {q(out)}/merged.txt"
    config = f'[gates]\nall = {{ command = "{merged}", when = "merge" }}\n'
    repo = _monorepo(tmp_path, config)
    if style == "git sparse-checkout":  # per-worktree config, as git sets it up today
        git(repo, "sparse-checkout", "set", "api")
    else:  # the older way: a shared setting and the main checkout's pattern file
        git(repo, "config", "core.sparseCheckout", "true")
        (repo / ".git" / "info" / "sparse-checkout").write_text("/*\n!/web/\n")
        git(repo, "read-tree", "-mu", "HEAD")
    assert not (repo / "web").exists()
    config_before, files_before = (repo / ".git" / "config").read_text(), user_files(repo)

    result = run(repo, env, step("web", f"{listing}; echo more >> web/f1.txt", files=["web/**"]))

    assert result.returncode == 0, result.stdout + result.stderr
    everything_ = {f"./{d}/f{i}.txt" for d in ("api", "web", "docs", "tests") for i in (1, 2)}
    # The agent had the whole tree (web/f1.txt included, which it appended to), and so did the
    # gate on the merged tree.
    assert set((out / "web.txt").read_text().split()) == everything_
    assert set((out / "merged.txt").read_text().split()) == everything_
    assert show(repo, "web/f1.txt") == "web 1\nmore\n"
    # The user's checkout is as sparse as it was; its config untouched.
    assert (repo / ".git" / "config").read_text() == config_before
    assert not (repo / "web").exists() and user_files(repo) == files_before
    assert leftovers(repo) == ([], [])


# --------------------------------------------------------------------------- hooks, identity


HOOKS = (
    "pre-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "post-checkout",
    "post-merge",
    "pre-merge-commit",
    "reference-transaction",
    "post-index-change",
)


def _install_hooks(folder: Path, log: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in HOOKS:
        hook = folder / name
        hook.write_text(f'#!/bin/sh\necho "{name} $(pwd)" >> {q(log)}\nexit 1\n')
        hook.chmod(0o755)


@pytest.mark.parametrize("where", [".git/hooks", "core.hooksPath"])
def test_hooks_are_never_run_by_stretto_itself(
    tmp_path: Path, env: Any, out: Path, where: str
) -> None:
    config = '[gates]\nmerged = { command = "true", when = "merge" }\n'
    repo = repo_with(tmp_path, {"a.txt": "a\n"}, config)
    log = out / "hooks.log"
    if where == ".git/hooks":
        _install_hooks(repo / ".git" / "hooks", log)
    else:
        _install_hooks(tmp_path / "shared-hooks", log)
        git(repo, "config", "core.hooksPath", str(tmp_path / "shared-hooks"))

    result = run(
        repo,
        env,
        step("a", "echo A > a.txt", files=["a.txt"]),
        step("b", "echo B > b.txt", files=["b.txt"], depends_on=["a"]),
        # An agent's own commit does run the hooks: the failing pre-commit stops it, and
        # stretto commits what the agent left (without hooks).
        step(
            "c", "echo C > c.txt && (git add c.txt && git commit -qm mine || true)", files=["c.txt"]
        ),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert landed(repo) == ["a", "b", "c"]
    assert (repo / "b.txt").read_text() == "B\n"  # the checkout was fast-forwarded
    lines = log.read_text().splitlines() if log.exists() else []
    assert any(line.startswith("pre-commit ") for line in lines), lines
    # Every hook that ran, ran for agent c's own git commands, in its worktree.
    assert all(line.endswith("-c-1") and "/.stretto/worktrees/" in line for line in lines), lines


@pytest.mark.parametrize("configured", [False, True])
def test_agents_commit_without_a_git_identity(tmp_path: Path, env: Any, configured: bool) -> None:
    repo = repo_with(tmp_path)
    for key in ("user.name", "user.email"):
        git(repo, "config", "--unset", key)
    git(repo, "config", "user.useConfigOnly", "true")  # git may not make one up either
    if configured:
        git(repo, "config", "user.name", "Ada")
        git(repo, "config", "user.email", "ada@example.org")

    result = run(
        repo,
        env,
        step(
            "own",
            "echo o > o.txt && git add o.txt && git commit -qm 'agent commit'",
            files=["o.txt"],
        ),
        step("left", "echo l > l.txt", files=["l.txt"]),
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert landed(repo) == ["left", "own"]
    authors = git(repo, "log", "main", "--format=%an <%ae>|%s").splitlines()
    [own] = [a.split("|")[0] for a in authors if a.endswith("|agent commit")]
    assert own == ("Ada <ada@example.org>" if configured else "stretto <stretto@localhost>")
    # The user's repository config was left as it was.
    assert git(repo, "config", "--get", "user.useConfigOnly").strip() == "true"
    email = ["git", "config", "--get", "user.email"]
    found = subprocess.run(email, cwd=repo, env=env, capture_output=True, text=True).stdout
    assert found.strip() == ("ada@example.org" if configured else "")
