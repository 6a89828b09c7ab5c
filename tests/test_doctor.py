"""`stretto agents` and `stretto doctor`, in real repositories with real programs on PATH."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from stretto.frontends.cli import main
from stretto.testing.repo import make_repo

TOOLS = Path(__file__).resolve().parents[1] / ".tools" / "npm" / "node_modules" / ".bin"


def test_agents_lists_installed_programs_with_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (TOOLS / "claude").exists(), "run scripts/install-agents"
    monkeypatch.setenv("PATH", f"{TOOLS}{os.pathsep}{os.environ['PATH']}")
    result = CliRunner().invoke(main, ["agents", "--json"])
    assert result.exit_code == 0, result.output
    infos = {i["name"]: i for i in json.loads(result.stdout)}
    assert infos["shell"]["installed"] and "bash" in infos["shell"]["version"].lower()
    assert infos["claude"]["installed"] and infos["claude"]["path"] == str(TOOLS / "claude")
    assert infos["claude"]["version"]


def test_agents_says_how_to_install_a_missing_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    result = CliRunner().invoke(main, ["agents"])
    assert result.exit_code == 0
    assert "'codex' not found on PATH; npm install -g @openai/codex" in result.stdout


def test_doctor_on_a_healthy_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "r", {"stretto.toml": 'target = "main"\n[gates]\nok = "true"\n'})
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(main, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert report["ok"] is True
    assert statuses["git"] == statuses["repository"] == statuses["target"] == "ok"
    assert statuses["gate ok"] == "ok" and statuses["agent shell"] == "ok"


def test_doctor_names_each_problem_and_its_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = 'target = "release"\ndefault_agent = "codex"\n[gates]\nlint = "no-such-linter ."\n'
    repo = make_repo(tmp_path / "r", {"stretto.toml": config})
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1
    out = result.stdout
    assert "FAIL  target: branch 'release' does not exist" in out
    assert "fix: create it (`git branch release`)" in out
    assert "FAIL  agent codex" in out and "npm install -g @openai/codex" in out
    assert "warn  gate lint: 'no-such-linter' is not on PATH" in out


def test_doctor_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1
    assert "FAIL  repository" in result.stdout and "fix: cd into a git repository" in result.stdout
