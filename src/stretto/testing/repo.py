"""A throwaway git repository, built from a mapping of paths to contents."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

IDENTITY = {
    "GIT_AUTHOR_NAME": "stretto test",
    "GIT_AUTHOR_EMAIL": "test@stretto.invalid",
    "GIT_COMMITTER_NAME": "stretto test",
    "GIT_COMMITTER_EMAIL": "test@stretto.invalid",
}


def git(repo: Path, *args: str, input: str | None = None) -> str:
    """Run git in ``repo`` with a fixed identity; return stdout (raises on failure)."""
    env = {**os.environ, **IDENTITY, "GIT_TERMINAL_PROMPT": "0"}
    for key in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(key, None)
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, input=input, capture_output=True, text=True, check=True
    ).stdout


def make_repo(
    path: Path, files: Mapping[str, str], *, branch: str = "main", message: str = "initial"
) -> Path:
    """Create a git repository at ``path`` with ``files`` committed on ``branch``."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    git(path, "config", "user.name", IDENTITY["GIT_AUTHOR_NAME"])
    git(path, "config", "user.email", IDENTITY["GIT_AUTHOR_EMAIL"])
    git(path, "config", "commit.gpgsign", "false")
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "--no-verify", "-m", message)
    return path


def commit_file(repo: Path, name: str, text: str, message: str = "edit") -> str:
    """Write one file, commit it on the current branch, return the new commit id."""
    target = repo / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "--no-verify", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()
