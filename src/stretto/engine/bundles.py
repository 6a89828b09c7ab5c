"""Git bundles between the engine's repository and a worker's cached clone (no Dask here)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from stretto.errors import RunError
from stretto.git import run_git


def repo_key(repo: Path) -> str:
    """A worker's name for the repository: its first commit and its folder's name."""
    roots = run_git(["rev-list", "--max-parents=0", "HEAD"], repo, check=False).stdout.split()
    digest = hashlib.sha256(f"{sorted(roots)}|{repo.resolve()}".encode()).hexdigest()[:16]
    return f"{repo.name}-{digest}"


def make_bundle(repo: Path, base: str, haves: list[str], name: str) -> bytes | None:
    """``base`` as a git bundle (v2) under ``refs/stretto/bundle/<name>``, without what the
    worker already has (``haves``, its prerequisites); None when it has ``base`` itself.

    One ``git pack-objects`` and a header written here: ``git bundle create`` would need a
    ref in the user's repository and a few more processes per attempt."""
    if base in haves:
        return None
    known = haves[-8:]
    revs = "".join(f"^{have}\n" for have in known) + f"{base}\n"
    packed = subprocess.run(
        ["git", "pack-objects", "--stdout", "--revs", "-q", "--delta-base-offset"],
        cwd=repo,
        input=revs.encode(),
        capture_output=True,
        check=False,
    )
    if packed.returncode != 0 and known:  # a have this repository lacks: send it whole
        return make_bundle(repo, base, [], name)
    if packed.returncode != 0:
        raise RunError(f"git pack-objects failed: {packed.stderr.decode(errors='replace')}")
    head = "# v2 git bundle\n" + "".join(f"-{have} stretto: the worker has it\n" for have in known)
    head += f"{base} refs/stretto/bundle/{name}\n\n"
    return head.encode() + packed.stdout
