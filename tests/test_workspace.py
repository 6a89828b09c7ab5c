"""Workspaces and the git wrapper, against real git repositories in a temporary directory."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stretto.engine.workspace import (
    PORT_BASE,
    PORT_STRIDE,
    ChangedFile,
    Workspace,
    branch_name,
    changed_files,
    commit_all,
    create_workspace,
    parse_branch,
    port_base,
    remove_workspace,
    worktrees_root,
)
from stretto.engine.workspace_gc import collect_garbage, list_workspaces
from stretto.engine.workspace_setup import WorkspaceSetupError
from stretto.errors import RepoError, StrettoError
from stretto.git import (
    GitCommandError,
    current_branch,
    git_common_dir,
    git_dir,
    is_clean,
    list_worktrees,
    rev_parse,
    run_git,
    toplevel,
    update_ref_cas,
)


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user or system git config, no identity, no inherited repository redirection."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in (
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
    ):
        monkeypatch.delenv(name, raising=False)


def git(cwd: Path, *args: str) -> str:
    """Run git as a test's own hands (with an identity), returning stdout."""
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    write(root / "README.md", "hello\n")
    write(root / "src" / "app.py", "print('app')\n" * 20)
    write(root / "tests" / "test_app.py", "def test_app():\n    assert True\n")
    write(root / "frontend" / "package.json", "{}\n")
    write(root / ".gitignore", "node_modules/\n.venv/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def head(cwd: Path, rev: str = "HEAD") -> str:
    sha = rev_parse(cwd, rev)
    assert sha is not None
    return sha


def make(
    repo: Path,
    task: str = "api",
    *,
    link_dirs: Sequence[str] = (),
    setup: Sequence[str] = (),
    setup_timeout: float = 60,
    setup_env: Mapping[str, str] | None = None,
) -> Workspace:
    """Create attempt 1 of ``task`` in run ``r1``, forked from ``main``."""
    return create_workspace(
        repo,
        "r1",
        task,
        1,
        "main",
        link_dirs=link_dirs,
        setup=setup,
        setup_timeout=setup_timeout,
        setup_env=setup_env,
    )


# --- git.py -------------------------------------------------------------------------------


def test_run_git_failure_names_command_directory_and_message(repo: Path) -> None:
    with pytest.raises(GitCommandError) as caught:
        run_git(["rev-parse", "--verify", "no-such-branch"], repo)
    message = str(caught.value)
    assert "git rev-parse --verify no-such-branch" in message
    assert str(repo) in message
    assert "fatal" in caught.value.stderr
    assert isinstance(caught.value, RepoError)
    assert run_git(["rev-parse", "--verify", "nope"], repo, check=False).returncode != 0


def test_run_git_ignores_inherited_git_dir(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert os.path.samefile(toplevel(repo / "src"), repo)


def test_toplevel_outside_a_repository_says_git_init(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(RepoError, match="not a git repository; run `git init`"):
        toplevel(plain)
    with pytest.raises(RepoError, match="does not exist"):
        toplevel(tmp_path / "missing")


def test_rev_parse_current_branch_and_common_dir(repo: Path) -> None:
    assert rev_parse(repo, "main") == git(repo, "rev-parse", "main")
    assert rev_parse(repo, "no-such-ref") is None
    assert current_branch(repo) == "main"
    git(repo, "checkout", "-q", "--detach")
    assert current_branch(repo) is None
    assert git_common_dir(repo / "src") == (repo / ".git").resolve()


def test_is_clean_ignores_untracked_but_not_tracked_changes(repo: Path) -> None:
    assert is_clean(repo)
    write(repo / "new.txt", "untracked\n")
    assert is_clean(repo), "untracked files do not make the checkout dirty"
    write(repo / "README.md", "changed\n")
    assert not is_clean(repo)
    git(repo, "add", "README.md")
    assert not is_clean(repo), "staged changes are dirty too"


def test_update_ref_cas_moves_only_from_the_expected_value(repo: Path) -> None:
    first = head(repo)
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    second = head(repo)
    ref = "refs/heads/target"
    assert update_ref_cas(repo, ref, first, None, "create") is True
    assert update_ref_cas(repo, ref, second, None, "create again") is False
    assert update_ref_cas(repo, ref, second, first, "advance") is True
    assert rev_parse(repo, ref) == second
    assert update_ref_cas(repo, ref, first, first, "stale old value") is False
    assert rev_parse(repo, ref) == second, "a failed compare-and-swap changes nothing"
    assert "advance" in git(repo, "reflog", "show", ref)
    with pytest.raises(GitCommandError):
        update_ref_cas(repo, ref, "1" * 40, second, "object does not exist")
    with pytest.raises(ValueError, match="full ref name"):
        update_ref_cas(repo, "target", second, first, "short name")


def test_update_ref_cas_waits_out_a_short_lock_and_names_a_stale_one(repo: Path) -> None:
    first = head(repo)
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    second = head(repo)
    ref = "refs/heads/target"
    git(repo, "update-ref", ref, first)
    lock = repo / ".git" / "refs" / "heads" / "target.lock"
    lock.write_text("")  # another git process is moving the ref right now

    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: (time.sleep(0.3), lock.unlink()))
        assert update_ref_cas(repo, ref, second, first, "after the lock") is True
    assert rev_parse(repo, ref) == second

    lock.write_text("")  # a crashed git left it behind: give up, with git's own message
    started = time.monotonic()
    with pytest.raises(GitCommandError, match=r"target\.lock': File exists"):
        update_ref_cas(repo, ref, first, second, "never")
    assert 1.0 < time.monotonic() - started < 10
    assert rev_parse(repo, ref) == second


# --- names and ports ------------------------------------------------------------------------


def test_branch_names_round_trip_and_bad_ids_are_refused() -> None:
    assert branch_name("r1", "api", 2) == "stretto/r1/api/2"
    assert parse_branch("stretto/r1/api/2") == ("r1", "api", 2)
    assert parse_branch("stretto/r1/api") is None
    assert parse_branch("feature/r1/api/2") is None
    for run_id, task_id in (
        ("r/1", "api"),
        ("r1", ""),
        ("r1", "a..b"),
        ("r1", "-x"),
        ("r1", "a b"),
    ):
        with pytest.raises(ValueError):
            branch_name(run_id, task_id, 1)
    with pytest.raises(ValueError):
        branch_name("r1", "api", -1)


def test_port_ranges_are_distinct_and_inside_the_port_space() -> None:
    slots = range((65536 - PORT_BASE) // PORT_STRIDE)
    bases = [port_base(slot) for slot in slots]
    assert bases[0] == PORT_BASE
    assert all(b - a == PORT_STRIDE for a, b in itertools.pairwise(bases))
    assert bases[-1] + PORT_STRIDE - 1 <= 65535
    for bad in (-1, len(slots)):
        with pytest.raises(ValueError):
            port_base(bad)


# --- create -------------------------------------------------------------------------------


def test_create_gives_worktree_on_its_branch_and_leaves_the_main_checkout_alone(
    repo: Path,
) -> None:
    write(repo / "README.md", "user's uncommitted edit\n")
    write(repo / "scratch.txt", "user's untracked file\n")
    status_before = git(repo, "status", "--porcelain")
    main_before = head(repo, "refs/heads/main")

    ws = make(repo)

    assert ws.path == worktrees_root(repo) / "r1-api-1"
    assert ws.branch == "stretto/r1/api/1"
    assert ws.base == main_before
    assert current_branch(ws.path) == ws.branch
    assert head(ws.path) == main_before
    assert (ws.path / "src" / "app.py").is_file()
    assert (ws.path / "README.md").read_text() == "hello\n"
    assert head(repo, "refs/heads/main") == main_before
    assert current_branch(repo) == "main"
    assert (repo / "README.md").read_text() == "user's uncommitted edit\n"
    assert git(repo, "status", "--porcelain") == status_before, ".stretto/ stays out of status"


def test_create_refuses_an_unknown_base(repo: Path) -> None:
    with pytest.raises(RepoError, match="does not exist"):
        create_workspace(repo, "r1", "api", 1, "no-such-commit")
    assert not (worktrees_root(repo) / "r1-api-1").exists()


def test_create_again_when_complete_keeps_the_worktree(repo: Path) -> None:
    ws = make(repo)
    write(ws.path / "work.txt", "in progress\n")
    again = make(repo)
    assert again == ws
    assert (ws.path / "work.txt").read_text() == "in progress\n", "nothing was recreated"
    assert len([e for e in list_worktrees(repo) if e.branch == ws.branch]) == 1


def test_create_again_when_the_directory_vanished_reuses_the_branch(repo: Path) -> None:
    ws = make(repo)
    write(ws.path / "done.txt", "committed work\n")
    work = commit_all(ws, "work")
    shutil.rmtree(ws.path)  # registered, directory gone: prunable

    again = make(repo)

    assert again.path == ws.path
    assert head(ws.path) == work, "the branch's commits are kept"
    assert (ws.path / "done.txt").read_text() == "committed work\n"
    assert not any(e.prunable for e in list_worktrees(repo))


def test_create_with_a_branch_but_no_worktree_checks_the_branch_out(repo: Path) -> None:
    git(repo, "branch", "stretto/r1/api/1", "main")
    ws = make(repo)
    assert current_branch(ws.path) == "stretto/r1/api/1"


def test_create_replaces_a_stray_directory(repo: Path) -> None:
    stray = worktrees_root(repo) / "r1-api-1"
    write(stray / "junk.txt", "left by a crash\n")
    ws = make(repo)
    assert ws.path == stray
    assert not (stray / "junk.txt").exists()
    assert current_branch(ws.path) == ws.branch


def test_create_redoes_a_half_initialised_worktree(repo: Path) -> None:
    ws = make(repo)
    (git_dir(ws.path) / "locked").write_text("initializing")  # `worktree add` was killed
    (ws.path / "src" / "app.py").unlink()  # ...before the checkout finished

    again = make(repo)

    assert (again.path / "src" / "app.py").is_file()
    assert not any(e.locked for e in list_worktrees(repo))
    assert git(ws.path, "status", "--porcelain") == ""


def test_create_refuses_an_existing_branch_without_the_base(repo: Path) -> None:
    git(repo, "checkout", "-q", "--orphan", "elsewhere")
    git(repo, "commit", "-q", "--allow-empty", "-m", "unrelated")
    git(repo, "branch", "stretto/r1/api/1", "elsewhere")
    git(repo, "checkout", "-q", "-f", "main")
    with pytest.raises(RepoError, match="does not contain base commit"):
        make(repo)


def test_create_refuses_a_branch_checked_out_elsewhere(repo: Path, tmp_path: Path) -> None:
    git(repo, "worktree", "add", "-q", "-b", "stretto/r1/api/1", str(tmp_path / "mine"), "main")
    with pytest.raises(RepoError, match="is checked out at"):
        make(repo)
    assert (tmp_path / "mine" / "README.md").is_file(), "the user's worktree is untouched"


# --- linking heavy directories -----------------------------------------------------------


def test_heavy_directories_are_linked_and_invisible_to_git(repo: Path) -> None:
    write(repo / "node_modules" / "left-pad" / "index.js", "module.exports = 1\n")
    write(repo / ".venv" / "pyvenv.cfg", "home = /usr\n")
    write(repo / "venv" / "marker", "untracked and not ignored\n")
    write(repo / "frontend" / "node_modules" / "react" / "index.js", "x\n")
    write(repo / "vendor" / "lib.txt", "tracked\n")
    git(repo, "add", "vendor")
    git(repo, "commit", "-q", "-m", "vendor")

    ws = make(repo, link_dirs=["frontend/node_modules", "vendor", "missing/dir"])

    for rel in ("node_modules", ".venv", "venv", "frontend/node_modules"):
        link = ws.path / rel
        assert link.is_symlink(), rel
        assert link.resolve() == (repo / rel).resolve()
    assert (ws.path / "node_modules" / "left-pad" / "index.js").is_file()
    assert not (ws.path / "vendor").is_symlink(), "tracked directories are never linked"
    assert not os.path.lexists(ws.path / "missing")
    assert git(ws.path, "status", "--porcelain", "--untracked-files=all") == ""
    assert commit_all(ws, "nothing") == ws.base, "links are never staged"


def test_linking_is_idempotent_and_shares_one_exclude(repo: Path) -> None:
    write(repo / "node_modules" / "a.js", "a\n")
    first = make(repo, "api")
    make(repo, "api")
    second = make(repo, "web")
    exclude = (git_common_dir(repo) / "info" / "exclude").read_text().splitlines()
    assert exclude.count("/node_modules") == 1
    assert exclude.count("/.stretto/") == 1
    assert git(second.path, "status", "--porcelain") == ""
    assert git(first.path, "status", "--porcelain") == ""


def test_removing_a_workspace_keeps_the_linked_directory(repo: Path) -> None:
    write(repo / "node_modules" / "a.js", "precious\n")
    ws = make(repo)
    remove_workspace(repo, ws, delete_branch=False)
    assert (repo / "node_modules" / "a.js").read_text() == "precious\n"
    stray = make(repo, "web")
    shutil.rmtree(git_dir(stray.path))  # make it a stray directory, removed with rmtree
    make(repo, "web")
    assert (repo / "node_modules" / "a.js").read_text() == "precious\n"


def test_link_paths_must_stay_inside_the_repository(repo: Path) -> None:
    with pytest.raises(ValueError, match="relative"):
        make(repo, link_dirs=["../outside"])
    with pytest.raises(ValueError, match="relative"):
        make(repo, "web", link_dirs=["/etc"])


# --- setup -------------------------------------------------------------------------------


def test_setup_commands_run_in_order_inside_the_worktree(repo: Path) -> None:
    ws = make(
        repo,
        setup=["pwd -P > where.txt", 'echo "$STRETTO_WORKSPACE $EXTRA" >> where.txt'],
        setup_env={"EXTRA": "yes"},
    )
    lines = (ws.path / "where.txt").read_text().splitlines()
    assert Path(lines[0]) == ws.path.resolve()
    assert lines[1] == f"{ws.path} yes"


def test_setup_failure_raises_with_the_output_tail(repo: Path) -> None:
    with pytest.raises(WorkspaceSetupError) as caught:
        make(repo, setup=["echo first-ok", "echo boom-line; echo to-stderr >&2; exit 3"])
    error = caught.value
    assert isinstance(error, StrettoError)
    assert error.returncode == 3
    assert "boom-line" in error.output_tail and "to-stderr" in error.output_tail
    assert "exit status 3" in str(error) and "boom-line" in str(error)
    assert error.cwd == worktrees_root(repo) / "r1-api-1"


def test_setup_timeout_kills_the_whole_process_group(repo: Path, tmp_path: Path) -> None:
    marker = tmp_path / "survived"
    started = time.monotonic()
    with pytest.raises(WorkspaceSetupError, match="did not finish within"):
        make(repo, setup=[f"(sleep 2; touch {marker}) & sleep 30"], setup_timeout=0.5)
    assert time.monotonic() - started < 10
    time.sleep(2.5)
    assert not marker.exists(), "the background child was killed with its group"


# --- commit_all and changed_files -------------------------------------------------------


def test_commit_all_commits_new_modified_and_deleted_files(repo: Path) -> None:
    ws = make(repo)
    write(ws.path / "src" / "new.py", "new\n")
    write(ws.path / "README.md", "changed\n")
    (ws.path / "tests" / "test_app.py").unlink()
    write(ws.path / "node_modules" / "x.js", "ignored\n")

    sha = commit_all(ws, "stretto: api attempt 1\n\n# not a comment")

    assert sha == head(ws.path) == head(repo, f"refs/heads/{ws.branch}")
    assert sha != ws.base
    assert git(ws.path, "status", "--porcelain") == ""
    assert (
        git(ws.path, "log", "-1", "--format=%an <%ae>|%cn") == "stretto <stretto@localhost>|stretto"
    )
    assert git(ws.path, "log", "-1", "--format=%B").endswith("# not a comment")
    assert {(c.path, c.status) for c in changed_files(ws)} == {
        ("src/new.py", "A"),
        ("README.md", "M"),
        ("tests/test_app.py", "D"),
    }
    assert commit_all(ws, "again") == sha, "nothing to commit: the head is returned"


def test_commit_all_returns_the_agents_own_commit_and_skips_hooks(repo: Path) -> None:
    hook = git_common_dir(repo) / "hooks" / "pre-commit"
    write(hook, "#!/bin/sh\nexit 1\n")
    hook.chmod(0o755)
    ws = make(repo)
    write(ws.path / "a.txt", "a\n")
    git(ws.path, "add", "a.txt")
    git(ws.path, "commit", "-q", "--no-verify", "-m", "agent's own")
    agent = head(ws.path)
    assert commit_all(ws, "nothing new") == agent
    write(ws.path / "b.txt", "b\n")
    assert commit_all(ws, "hooks are gates, not blockers") != agent


def test_commit_all_refuses_when_the_worktree_left_its_branch(repo: Path) -> None:
    ws = make(repo)
    git(ws.path, "checkout", "-q", "--detach")
    with pytest.raises(RepoError, match="not on its branch"):
        commit_all(ws, "x")
    with pytest.raises(ValueError, match="Name <email>"):
        commit_all(ws, "x", author="no email")


def test_changed_files_reports_renames_and_deletions(repo: Path) -> None:
    ws = make(repo)
    git(ws.path, "mv", "src/app.py", "src/main.py")
    (ws.path / "tests" / "test_app.py").unlink()
    write(ws.path / "docs" / "new file.md", "spaces and ünïcode\n")
    commit_all(ws, "rename")
    assert sorted(changed_files(ws), key=lambda c: c.path) == [
        ChangedFile("docs/new file.md", "A"),
        ChangedFile("src/main.py", "R", "src/app.py"),
        ChangedFile("tests/test_app.py", "D"),
    ]
    assert changed_files(make(repo, "untouched")) == []


# --- remove and garbage collection ------------------------------------------------------


def test_remove_workspace_is_idempotent(repo: Path) -> None:
    ws = make(repo)
    tip = commit_all(ws, "nothing")
    assert remove_workspace(repo, ws, delete_branch=True, expected_sha=tip) is True
    assert not ws.path.exists()
    assert rev_parse(repo, f"refs/heads/{ws.branch}") is None
    assert all(e.path != ws.path for e in list_worktrees(repo))
    assert remove_workspace(repo, ws, delete_branch=True, expected_sha=tip) is True
    assert head(repo, "refs/heads/main") == ws.base


def test_guarded_branch_delete_refuses_a_branch_that_moved(repo: Path) -> None:
    ws = make(repo)
    write(ws.path / "late.txt", "work after the merge\n")
    moved = commit_all(ws, "late work")
    assert remove_workspace(repo, ws, delete_branch=True, expected_sha=ws.base) is False
    assert rev_parse(repo, f"refs/heads/{ws.branch}") == moved, "the branch survives"
    assert not ws.path.exists(), "the worktree is still removed"
    with pytest.raises(ValueError, match="expected_sha"):
        remove_workspace(repo, ws, delete_branch=True)


def test_list_and_collect_garbage_keep_only_what_keep_says(repo: Path, tmp_path: Path) -> None:
    kept = make(repo, "kept")
    dropped = make(repo, "dropped")
    write(dropped.path / "x.txt", "x\n")
    commit_all(dropped, "unmerged work")
    vanished = make(repo, "vanished")
    shutil.rmtree(vanished.path)
    stray = worktrees_root(repo) / "left-over"
    write(stray / "junk", "junk\n")
    git(repo, "branch", "stretto/r1/lone/1", "main")
    git(repo, "worktree", "add", "-q", "-b", "stretto/r1/mine/1", str(tmp_path / "mine"), "main")
    git(repo, "branch", "feature", "main")

    infos = {(i.branch, i.path.name if i.path else None): i for i in list_workspaces(repo)}
    assert infos[("stretto/r1/dropped/1", "r1-dropped-1")].head == head(dropped.path)
    assert infos[("stretto/r1/vanished/1", "r1-vanished-1")].prunable
    assert not infos[(None, "left-over")].registered
    assert infos[("stretto/r1/lone/1", None)].run_id == "r1"
    assert infos[("stretto/r1/mine/1", None)].checked_out_elsewhere == tmp_path / "mine"

    report = collect_garbage(repo, keep=lambda branch: branch == kept.branch)

    assert report.kept_branches == (kept.branch,)
    assert current_branch(kept.path) == kept.branch
    assert not dropped.path.exists() and not vanished.path.exists() and not stray.exists()
    assert report.removed_dirs == (stray,)
    assert dropped.path in report.removed_worktrees
    assert vanished.path in report.pruned
    assert set(report.deleted_branches) == {
        "stretto/r1/dropped/1",
        "stretto/r1/vanished/1",
        "stretto/r1/lone/1",
    }
    assert report.skipped_branches == ("stretto/r1/mine/1",)
    assert rev_parse(repo, "refs/heads/stretto/r1/mine/1") is not None
    assert rev_parse(repo, "refs/heads/feature") is not None, "only stretto/* branches go"
    assert (tmp_path / "mine" / "README.md").is_file()
    assert {i.branch for i in list_workspaces(repo)} == {kept.branch, "stretto/r1/mine/1"}
    assert collect_garbage(repo, keep=lambda branch: branch == kept.branch).deleted_branches == ()


def test_workspaces_can_be_created_in_parallel(repo: Path) -> None:
    write(repo / "node_modules" / "a.js", "a\n")
    tasks = [f"t{i}" for i in range(8)]
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        spaces = list(pool.map(lambda task: make(repo, task), tasks))
    assert [current_branch(ws.path) for ws in spaces] == [f"stretto/r1/{t}/1" for t in tasks]
    assert all(git(ws.path, "status", "--porcelain") == "" for ws in spaces)
    exclude = (git_common_dir(repo) / "info" / "exclude").read_text().splitlines()
    assert exclude.count("/node_modules") == 1
