"""The command line: exit codes, output, JSON, and a fast start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from stretto.frontends.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "rate-limit.yaml"

BAD = """\
stages:
  - name: backend
    steps:
      - {id: models, goal: x}
      - {id: api, goal: y, depends_on: [modles]}
"""


def test_validate_ok() -> None:
    result = CliRunner().invoke(main, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "ok (8 steps in 3 stages)" in result.output


def test_validate_error_exit_2_and_nothing_written(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(BAD)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(main, ["validate", str(plan)])
    assert result.exit_code == 2
    assert f"{plan}:5:41: stages[0].steps[1].depends_on[0]: unknown step 'modles'" in result.stderr
    assert "(did you mean 'models'?)" in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_validate_json_error(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(BAD)
    result = CliRunner().invoke(main, ["validate", "--json", str(plan)])
    assert result.exit_code == 2
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and payload["error"] == "PlanError"
    [diag] = payload["diagnostics"]
    assert (diag["line"], diag["column"], diag["field"]) == (
        5,
        41,
        "stages[0].steps[1].depends_on[0]",
    )


def test_validate_missing_file() -> None:
    result = CliRunner().invoke(main, ["validate", "/nonexistent/plan.yaml"])
    assert result.exit_code == 2
    assert "file not found" in result.stderr


def test_schema_is_json_schema() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "stages" in schema["properties"] and schema["additionalProperties"] is False
    step = schema["$defs"]["Step"]
    assert step["required"] == ["goal"]
    assert step["properties"]["complexity"]["enum"] == ["low", "medium", "high"]


def test_dry_run_text() -> None:
    result = CliRunner().invoke(main, ["run", "--dry-run", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "stretto dry run: Rate limiting" in out
    assert "wait   config" in out and "file lease: 'src/api/app.py', held by middleware" in out
    assert "Critical path (35m): limiter -> limiter-tests -> integration-tests" in out
    assert "Estimated makespan 35m vs 1h10m serial (2.00x)" in out


def test_dry_run_json_and_max_agents() -> None:
    result = CliRunner().invoke(
        main, ["run", "--dry-run", "--json", "--max-agents", "1", str(EXAMPLE)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["max_agents"] == 1 and report["peak_agents"] == 1
    assert report["makespan_minutes"] == report["serial_minutes"] == 70.0
    assert report["critical_path"] == ["limiter", "limiter-tests", "integration-tests"]
    assert report["waves"][0] == ["limiter", "middleware", "config"]
    starts = [b["start"] for b in report["batches"]]
    assert sum(len(s) for s in starts) == 8


def test_dry_run_invalid_plan_exit_2(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(BAD)
    result = CliRunner().invoke(main, ["run", "--dry-run", str(plan)])
    assert result.exit_code == 2
    assert "unknown step 'modles'" in result.stderr


def test_run_outside_a_git_repo_is_a_clear_error(tmp_path: Path, monkeypatch: object) -> None:
    import os

    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(main, ["run", str(EXAMPLE)])
    finally:
        os.chdir(ROOT)
    assert result.exit_code == 2  # called in the wrong place: nothing was done
    assert "not a git repository" in result.stderr
    assert not (tmp_path / ".stretto").exists()


def test_help_and_version_import_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from stretto.frontends.cli import main\n"
        "for args in (['--help'], ['--version'], ['run', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "heavy = [m for m in ('pydantic', 'pydantic_core', 'yaml', 'stretto.plans.plan', "
        "'stretto.schedule.scheduler', 'stretto.engine.runner', 'stretto.api.runs', 'asyncio') "
        "if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "HEAVY []" in result.stdout
    assert "0.1.0" in result.stdout


def test_help_lists_the_commands_by_section() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    text = result.output
    sections = ["Plan and run:", "Watch and steer a run:", "Costs and routing:", "Set up:"]
    positions = [text.index(s) for s in sections]
    assert positions == sorted(positions)
    steer = text[positions[1] : positions[2]]
    for command in ("events", "cancel", "retry", "pause", "unpause", "budget", "parallelism"):
        assert f"  {command} " in steer, command
    assert "Other commands" not in text  # every command has a section


def test_python_dash_m() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stretto", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "stretto, version 0.1.0"


def test_fake_model_serve_bad_script_is_exit_2(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text("sessions:\n  default:\n    - txet: hi\n")
    result = subprocess.run(
        [sys.executable, "-m", "stretto", "fake-model", "serve", "--script", str(script)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"{script}:3:" in result.stderr and "txet" in result.stderr


def test_dry_run_of_a_large_plan_sums_up_waits_on_steps_owning_everything(tmp_path: Path) -> None:
    """Above 500 steps, the ready steps waiting on a step that owns everything (and the steps
    owning everything that wait for the others) are one line per occasion, with a count; the
    schedule is the one the per-step waits give (the starts are the same)."""
    import yaml

    from stretto.plans.graph import TaskGraph
    from stretto.plans.plan import load_plan
    from stretto.schedule.simulate import simulate

    steps = [
        {"id": f"s{i}", "goal": "g"} if i % 50 == 7 else {"id": f"s{i}", "goal": "g",
                                                          "files": [f"f{i % 40}.txt"]}
        for i in range(600)
    ]  # fmt: skip
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(yaml.safe_dump({"name": "big", "stages": [{"name": "s", "steps": steps}]}))
    result = CliRunner().invoke(main, ["run", "--dry-run", "--json", str(plan_file)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    summed = [w for w in report["waits"] if w["task"] in ("*", "**")]
    assert {w["task"] for w in summed} == {"*", "**"} and all(w["count"] >= 1 for w in summed)
    plan = load_plan(plan_file)
    each = simulate(TaskGraph.from_plan(plan), {t.id: t.lease for t in plan.tasks}, 4)
    starts = [(e.time, e.task) for e in each.events if e.kind == "start"]
    assert [(b["time"], t) for b in report["batches"] for t in b["start"]] == starts
    text = CliRunner().invoke(main, ["run", "--dry-run", str(plan_file)]).stdout
    assert "step(s) owning files  file lease: everything" in text
    assert "step(s) owning everything  each waits until no step holds any file" in text
