"""Git bundles between the engine's repository and a worker's cached clone (no Dask here)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from stretto.errors import RunError
from stretto.git import rev_parse, run_git


def repo_key(repo: Path) -> str:
    """A worker's name for the repository: its first commit and its folder's name."""
    roots = run_git(["rev-list", "--max-parents=0", "HEAD"], repo, check=False).stdout.split()
    digest = hashlib.sha256(f"{sorted(roots)}|{repo.resolve()}".encode()).hexdigest()[:16]
    return f"{repo.name}-{digest}"


def make_bundle(repo: Path, base: str, haves: list[str], name: str) -> bytes | None:
    """``base`` as a bundle, without what the worker already has (``haves``); None when it has
    ``base`` itself. A temporary ref names the commit (a bundle needs one) and is removed."""
    if base in haves:
        return None
    ref = f"refs/stretto/bundle/{name}"
    run_git(["update-ref", ref, base], repo)
    try:
        with tempfile.TemporaryDirectory(prefix="stretto-bundle-") as tmp:
            out = Path(tmp) / "base.bundle"
            known = [f"^{h}" for h in haves[-16:] if rev_parse(repo, f"{h}^{{commit}}")]
            made = run_git(["bundle", "create", "-q", str(out), ref, *known], repo, check=False)
            if made.returncode != 0 and known:  # e.g. nothing new: send it whole
                made = run_git(["bundle", "create", "-q", str(out), ref], repo)
            elif made.returncode != 0:
                raise RunError(f"git bundle create failed: {made.stderr.strip()}")
            return out.read_bytes()
    finally:
        run_git(["update-ref", "-d", ref], repo, check=False)
