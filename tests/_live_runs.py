"""Test helper: a run written to disk as an engine would leave it, with fixed times and ids.

Snapshot tests need a screen that is the same on every machine: the journal's timestamps,
the run id, the commits and the agents' logs are fixed here, and the test fixes the clock.
The records carry the fields the engine writes (see engine/runner.py and engine/attempt.py).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
NOW = T0 + 300
RUN_ID = "20260101-000000-000-snap"

PLAN = """\
name: shop
stages:
  - name: build
    steps:
      - {id: api, goal: the api, files: [src/api/**], command: "true"}
      - {id: models, goal: data models, files: [src/models/**], command: "true"}
      - {id: ui, goal: the ui, files: [src/ui/**], complexity: high, command: "true"}
      - {id: cli, goal: the cli, files: [src/cli/**], command: "true"}
      - {id: tests, goal: tests for the ui, files: [src/ui/**], command: "true"}
      - {id: deploy, goal: deploy, files: [deploy/**], depends_on: [models], command: "true"}
      - {id: cache, goal: a cache, files: [src/cache/**], agent: codex, command: "true"}
"""


def _route(agent: str, model: str, rule: str, reason: str, estimate: float) -> dict[str, Any]:
    return {
        "agent": agent, "model": model, "tier": None, "rule": rule, "reason": reason,
        "estimate_usd": estimate,
    }  # fmt: skip


def attention_records() -> list[tuple[float, str, str, dict[str, Any]]]:
    """(ts offset, kind, type, fields): a run five minutes in, with something needing the
    person (a task refused by its scope gate and given up, another out of credit), two agents
    running, tasks waiting on a file lease and a dependency, one landed, a provider backing off."""
    tasks = ["api", "models", "ui", "cli", "tests", "deploy", "cache"]
    out: list[tuple[float, str, str, dict[str, Any]]] = [
        (0, "event", "run_started", {
            "run_id": RUN_ID, "plan": "shop", "tasks": tasks, "pid": 4242,
            "options": {"target": "main", "budget": 5.0, "max_agents": 3},
        }),
    ]  # fmt: skip

    def attempt(t: float, task: str, n: int, agent: str, model: str, slot_ws: str) -> None:
        out.append(
            (
                t,
                "event",
                "route",
                {
                    "task": task,
                    "attempt": n,
                    **_route(
                        agent,
                        model,
                        "cascade",
                        "cheapest arm first for a low-complexity task",
                        0.12,
                    ),
                },
            )
        )
        out.append((t, "event", "attempt_started", {
            "task": task, "attempt": n, "agent": agent, "model": model, "tier": None,
            "workspace": f"/work/.stretto/worktrees/{RUN_ID}-{slot_ws}",
            "branch": f"stretto/{task}", "base": "0" * 40, "pid": 1000 + n,
        }))  # fmt: skip

    def finished(t: float, task: str, n: int, outcome: str, cost: float, secs: float) -> None:
        out.append((t, "event", "attempt_finished", {
            "task": task, "attempt": n, "outcome": outcome, "model": "sonnet", "exit_code": 0,
            "reason": "" if outcome == "success" else "command exited with status 1",
            "duration": secs, "usage": {"input": 12000, "output": 3400}, "cost_usd": cost,
            "cost_source": "reported",
        }))  # fmt: skip

    def add(t: float, type_: str, **fields: Any) -> None:
        out.append((t, "event", type_, fields))

    refused = "changed README.md outside src/models/**"
    commit = "1f2e3d4c5b6a" + "0" * 28
    attempt(1, "api", 1, "claude", "sonnet", "api-1")
    attempt(1, "models", 1, "claude", "sonnet", "models-1")
    attempt(2, "ui", 1, "codex", "gpt-5", "ui-1")
    add(2, "decision", action="wait", task="tests", reason="lease", holders=["ui"],
        conflict=["src/ui/**", "src/ui/**"])  # fmt: skip
    finished(60, "api", 1, "success", 0.31, 59)
    add(62, "gate_result", task="api", stage="attempt", gate="tests", passed=True,
        summary="12 passed", duration=1.5)  # fmt: skip
    add(63, "verified", task="api")
    add(64, "merged", task="api", new=commit)
    add(64, "task_finished", task="api", status="landed", reason="", attempts=1, commit=commit)
    finished(80, "models", 1, "success", 0.22, 79)
    add(81, "gate_result", task="models", stage="attempt", gate="scope", passed=False,
        summary=refused, duration=0.1)  # fmt: skip
    add(81, "decision", action="retry", task="models", attempt=1, failures=1, limit=2,
        counted=True)  # fmt: skip
    attempt(90, "models", 2, "claude", "opus", "models-2")
    finished(150, "models", 2, "success", 0.48, 60)
    add(151, "gate_result", task="models", stage="attempt", gate="scope", passed=False,
        summary=refused, duration=0.1)  # fmt: skip
    add(151, "decision", action="give_up", task="models", attempt=2, failures=2, limit=2,
        counted=True)  # fmt: skip
    add(151, "task_finished", task="models", status="failed", attempts=2, commit=None,
        reason="gave up after 2 failed attempts; last: gate scope refused")  # fmt: skip
    add(152, "decision", action="backoff", provider="anthropic", limit=1, was=2, task="models")
    attempt(160, "cli", 1, "claude", "sonnet", "cli-1")
    add(170, "decision", action="out_of_credit", provider="openai", task="cache",
        reason="insufficient_quota")  # fmt: skip
    add(171, "decision", action="wait", task="cache", reason="out_of_credit", holders=[],
        conflict=None)  # fmt: skip
    return out


LOGS = {
    ("api", 1): "reading src/api\nwriting src/api/routes.py\ndone: 3 files changed\n",
    ("models", 1): "editing src/models/user.py\nalso fixing README.md\n",
    ("models", 2): "editing src/models/user.py\nupdating README.md again\n",
    ("ui", 1): "planning the ui\nEditing src/ui/app.py (42 lines)\n",
    ("cli", 1): "looking at src/cli\n",
}
GATE_LOGS = {("models", 2, "scope"): "README.md is not in src/models/**\nrefused\n"}


def write_run(repo: Path) -> Path:
    """The attention run in ``repo``'s .stretto, returned as its run directory."""
    run_dir = repo / ".stretto" / "runs" / RUN_ID
    run_dir.mkdir(parents=True)
    (run_dir / "plan.yaml").write_text(PLAN)
    lines = []
    for seq, (offset, kind, type_, fields) in enumerate(attention_records(), start=1):
        head = {"seq": seq, "gen": 0, "ts": T0 + offset, "kind": kind, "type": type_}
        lines.append(json.dumps({**head, **fields}))
    (run_dir / "journal.jsonl").write_text("\n".join(lines) + "\n")
    for (task, attempt), text in LOGS.items():
        folder = run_dir / "tasks" / task / str(attempt)
        folder.mkdir(parents=True)
        (folder / "agent.log").write_text(text)
    for (task, attempt, gate), text in GATE_LOGS.items():
        folder = run_dir / "tasks" / task / str(attempt) / "gates"
        folder.mkdir(parents=True)
        (folder / f"{gate}.log").write_text(text)
    (run_dir / ".lock").write_text("4242\n")
    return run_dir


@contextmanager
def engine_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's lock as its engine would: the run reads as live while inside."""
    fd = os.open(run_dir / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
