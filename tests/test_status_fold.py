"""A handle's status is folded record by record as the journal grows (each record read once);
it must equal folding the whole journal at every point. Checked by replaying a real run's
journal into a run directory a few lines at a time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stretto import api
from stretto.engine.journal import read_journal
from stretto.engine.status import fold_status
from stretto.testing.repo import make_repo

PLAN = """\
name: fold
stages:
  - name: a
    steps:
      - {id: one, goal: one, files: [1.txt], command: "echo 1 > 1.txt"}
      - {id: bad, goal: bad, files: [b.txt], command: "exit 1", max_attempts: 2}
  - name: b
    depends_on: [a]
    steps:
      - {id: two, goal: two, files: [2.txt], command: "echo 2 > 2.txt"}
"""


def test_status_read_as_the_journal_grows_equals_the_whole_fold(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"README.md": "# f\n", "stretto.toml": 'target = "main"\n'})
    (tmp_path / "plan.yaml").write_text(PLAN)
    done = subprocess.run(
        [sys.executable, "-m", "stretto", "run", "../plan.yaml", "--plain"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    [source] = (repo / ".stretto" / "runs").iterdir()
    lines = (source / "journal.jsonl").read_bytes().splitlines(keepends=True)
    replay = repo / ".stretto" / "runs" / "replay"
    replay.mkdir()
    (replay / "plan.yaml").write_bytes((source / "plan.yaml").read_bytes())
    journal = replay / "journal.jsonl"
    journal.write_bytes(lines[0])
    handle = api.RunHandle(repo, replay)
    steps = 0
    for end in range(1, len(lines) + 1, 3):
        journal.write_bytes(b"".join(lines[:end]) + b'{"seq": 999, "torn')  # a torn tail too
        whole = fold_status(read_journal(journal), live=False).to_dict()
        assert handle.status().to_dict() == whole, end
        steps += 1
    journal.write_bytes(b"".join(lines))
    final = handle.status()
    assert final.to_dict() == fold_status(read_journal(journal), live=False).to_dict()
    assert final.state == "failed" and final.counts() == {"landed": 1, "failed": 1, "skipped": 1}
    assert steps > 10
