"""A seeded generator of a plan that exercises everything a crash can interrupt.

:func:`make_plan` returns the YAML of a ~30-task plan for shell ``command:`` agents (no model):

* four stages with dependencies (``build`` and ``docs`` start at once, ``link`` needs
  ``build``, ``finish`` needs ``link`` and ``docs``), and step-level ``depends_on`` whose
  commands read what the dependency wrote;
* owned files that overlap: every task owns ``out/<id>.txt`` and some also own one of a few
  ``shared/<k>.txt`` files they append a line to, so they wait for each other's file lease;
* one *flaky* task whose step gate fails on its first run and passes after: the gate leaves a
  marker file outside the repository, so the behaviour survives crashes and resumes;
* sleeps of a few tens of milliseconds, so a kill at a random moment falls in every phase.

:class:`Expected` says what the target must hold at the end: each task's ``out`` file, and each
shared file with exactly one line per task that owns it (a task merged twice shows twice).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

CONFIG = """\
target = "main"
max_agents = 3

# After every merge, on the merged tree: no shared file holds a line twice.
[gates.no_duplicates]
command = "test -z \\"$(cat shared/*.txt 2>/dev/null | sort | uniq -d)\\""
when = "merge"
"""

STAGES = (("build", ()), ("docs", ()), ("link", ("build",)), ("finish", ("link", "docs")))
SHARED = 4


@dataclass
class Expected:
    """What the target branch must hold once the run finished."""

    tasks: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)  # out/<id>.txt -> content
    shared: dict[str, list[str]] = field(default_factory=dict)  # shared/<k>.txt -> owners
    flaky: str = ""

    def check_tree(self, repo: Path) -> list[str]:
        """Problems with the files on the target (checked out in ``repo``); [] if none."""
        problems = []
        for path, content in self.outputs.items():
            file = repo / path
            got = file.read_text() if file.is_file() else None
            if got != content:
                problems.append(f"{path}: {got!r} instead of {content!r}")
        for path, owners in self.shared.items():
            file = repo / path
            lines = file.read_text().split() if file.is_file() else []
            if sorted(lines) != sorted(owners):
                problems.append(f"{path}: lines {sorted(lines)} instead of {sorted(owners)}")
        return problems


def make_plan(seed: int, marker_dir: Path, tasks: int = 30) -> tuple[str, Expected]:
    """The plan's YAML and what a finished run must leave on the target."""
    rng = random.Random(seed)
    expected = Expected()
    per_stage = [tasks // len(STAGES) + (1 if i < tasks % len(STAGES) else 0) for i in range(4)]
    done: list[str] = []  # tasks of earlier stages (dependencies to read)
    lines = [f"name: faults-{seed}", "stages:"]
    flaky_at = rng.randrange(tasks)
    number = 0
    for (stage, after), count in zip(STAGES, per_stage, strict=True):
        lines.append(f"  - name: {stage}")
        if after:
            lines.append(f"    depends_on: [{', '.join(after)}]")
        lines.append("    steps:")
        ready = [t for t in done if stage in ("link", "finish")]
        mine = []
        for _ in range(count):
            tid = f"t{number:02d}"
            files = [f"out/{tid}.txt"]
            sleep = rng.choice((0.0, 0.05, 0.1, 0.2, 0.4))
            script = [f"sleep {sleep}"] if sleep else []
            reads = rng.sample(ready, min(len(ready), rng.randint(0, 2))) if ready else []
            if reads:
                cat = " ".join(f"out/{r}.txt" for r in reads)
                script.append(f"cat {cat} > out/{tid}.txt")
                content = "".join(expected.outputs[f"out/{r}.txt"] for r in reads)
            else:
                script.append(f"mkdir -p out && echo {tid} > out/{tid}.txt")
                content = f"{tid}\n"
            expected.outputs[f"out/{tid}.txt"] = content
            if rng.random() < 0.5:
                shared = f"shared/{rng.randrange(SHARED)}.txt"
                files.append(shared)
                script.append(f"mkdir -p shared && echo {tid} >> {shared}")
                expected.shared.setdefault(shared, []).append(tid)
            step = (
                f"      - id: {tid}\n        goal: write {files[0]}\n"
                f"        files: [{', '.join(files)}]\n"
                f"        command: {_quote('; '.join(script))}"
            )
            if reads:
                step += f"\n        depends_on: [{', '.join(reads)}]"
            if number == flaky_at:
                marker = marker_dir / f"flaky-{seed}-{tid}"
                gate = f"test -e {marker} || {{ touch {marker}; exit 1; }}"
                step += f"\n        gates: [{_quote(gate)}]"
                expected.flaky = tid
            lines.append(step)
            mine.append(tid)
            expected.tasks.append(tid)
            number += 1
        done += mine
    return "\n".join(lines) + "\n", expected


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
