"""Secrets and isolation (issue 19): what agents may see, what stretto keeps, who may read it.

Real runs through ``python -m stretto`` with shell agents that try to show every secret they
can: agents see only the allow-listed environment, a secret that was allowed is redacted from
every file stretto writes and from every command's output, and the state folder is private.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from stretto.testing.repo import git, make_repo

ALLOWED = "sk-live-ALLOWED-0123456789abcdef"  # passed to agents on purpose (env = [...])
#: The caller's secrets that no agent or gate may see unless the config names them.
WITHHELD = {
    "GITHUB_TOKEN": "ghp_WITHHELD_0123456789abcdefghij",
    "AWS_SECRET_ACCESS_KEY": "aws-WITHHELD-0123456789abcdef",
    "OPENAI_API_KEY": "sk-proj-WITHHELD-0123456789",
    "DATABASE_PASSWORD": "pw-WITHHELD-0123456789",
}

PLAN = """\
name: leaky
stages:
  - name: s
    steps:
      - id: shows
        goal: print every secret it has
        files: [env.txt]
        command: "echo using $MY_API_KEY; env | sort > env.txt; echo last line $MY_API_KEY >&2"
      - id: fails
        goal: fail with the secret in the reason
        files: [f.txt]
        command: "echo f > f.txt; echo agent says $MY_API_KEY"
        gates: ["echo gate sees $MY_API_KEY; exit 1"]
"""


def stretto(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MY_API_KEY": ALLOWED, **WITHHELD}
    return subprocess.run(
        [sys.executable, "-m", "stretto", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = make_repo(
        tmp_path / "repo",
        {"README.md": "hi\n", "stretto.toml": 'target = "main"\nenv = ["MY_API_KEY"]\n'},
    )
    (repo.parent / "plan.yaml").write_text(PLAN)
    return repo


def test_agents_see_only_allowed_secrets_and_no_output_or_file_keeps_one(repo: Path) -> None:
    run = stretto(repo, "run", "../plan.yaml", "--plain")
    assert run.returncode == 1, run.stdout + run.stderr  # `fails` fails, `shows` lands
    assert "gate sees ***" in run.stdout, run.stdout
    [run_id] = os.listdir(repo / ".stretto" / "runs")

    # The agent saw the allowed secret (it used it) and none of the withheld ones.
    landed_env = git(repo, "show", "main:env.txt")
    assert f"MY_API_KEY={ALLOWED}" in landed_env
    for name, value in WITHHELD.items():
        assert name not in landed_env and value not in landed_env, name

    # Every command's output about the run, in every format.
    outputs = [run.stdout + run.stderr]
    for args in (
        ("runs", "--json"),
        ("status", run_id, "--json"),
        ("status", run_id),
        ("events", run_id, "--json"),
        ("events", run_id),
        ("explain", run_id, "fails"),
        ("cost",),
        ("report", run_id, "-o", "-"),
        ("report", run_id, "--json"),
        ("trace", run_id, "-o", "-"),
        ("resume", run_id),  # refuses (finished): its message must not leak either
    ):
        result = stretto(repo, *args)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        outputs.append(result.stdout + result.stderr)
    assert any("exit 1" in text or "exited with status 1" in text for text in outputs)
    for text in outputs:
        assert ALLOWED not in text
        assert not any(value in text for value in WITHHELD.values())

    # Every file stretto keeps, except the agents' own work in worktrees it keeps for a look.
    kept = [
        path
        for path in (repo / ".stretto").rglob("*")
        if path.is_file() and "worktrees" not in path.relative_to(repo / ".stretto").parts
    ]
    assert any(path.name == "agent.log" for path in kept)
    assert any(path.name == "report.html" for path in kept)
    for path in kept:
        data = path.read_bytes()
        assert ALLOWED.encode() not in data, path
        assert not any(value.encode() in data for value in WITHHELD.values()), path
    logs = b"".join(path.read_bytes() for path in kept if path.suffix == ".log")
    assert b"using ***" in logs and b"agent says ***" in logs and b"gate sees ***" in logs


def test_the_state_folder_is_private_to_its_user(repo: Path) -> None:
    state = repo / ".stretto"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)  # made by an older stretto, or by hand
    run = stretto(repo, "run", "../plan.yaml", "--plain")
    assert run.returncode == 1, run.stdout + run.stderr
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    [run_dir] = (state / "runs").iterdir()
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    for name in ("journal.jsonl", ".lock"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name
    # Nobody else can reach anything under it, whatever the modes of the files inside.
    other = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "cat",
            str(run_dir / "plan.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert other.returncode != 0 and "Permission denied" in other.stderr, other


def test_a_fresh_repository_gets_a_private_state_folder(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "hi\n"})
    (tmp_path / "plan.yaml").write_text(
        "stages:\n  - name: s\n    steps:\n"
        '      - {id: t, goal: g, files: [t.txt], command: "echo t > t.txt"}\n'
    )
    run = stretto(repo, "run", "../plan.yaml", "--plain")
    assert run.returncode == 0, run.stdout + run.stderr
    assert stat.S_IMODE((repo / ".stretto").stat().st_mode) == 0o700
    status = json.loads(stretto(repo, "runs", "--json").stdout)
    assert status and [item["state"] for item in status] == ["finished"]
