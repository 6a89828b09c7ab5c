"""Crash anywhere: SIGKILL the engine at seeded random moments and at every named crash point,
resume, and check that nothing is lost, duplicated or left behind.

Each campaign generates a ~30-task plan (:mod:`faults.plangen`), starts ``stretto run`` and then
kills and resumes it many times (:mod:`faults.driver`): the resumed engine is killed again, at a
crash point or after a seeded delay, so a kill often lands while ``resume`` itself is settling
the previous crash. The default run does :data:`CAMPAIGNS` campaigns and at least 100 kills;
``STRETTO_FAULT_SOAK=N`` runs N more campaigns with more kills each (a longer soak).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from faults.conftest import TALLY
from faults.driver import (
    NEEDS_A_PLANNER,
    ONLY_AT_START,
    Campaign,
    Fault,
    crash_points,
    seeded_faults,
)
from faults.plangen import CONFIG, make_plan
from stretto.testing.repo import make_repo

SOAK = int(os.environ.get("STRETTO_FAULT_SOAK", "0") or 0)
CAMPAIGNS = 6
TIMER_KILLS = 16  # per campaign, besides its named crash points
SOAK_TIMER_KILLS = 30


def named_points() -> list[str]:
    return [p for p in crash_points() if p not in NEEDS_A_PLANNER]


def occurrence(point: str, rng: random.Random) -> str:
    """``point@N``: which time the point is reached in that engine (seeded)."""
    if point == "journal-write-torn":
        return f"{point}@{rng.randint(2, 80)}"
    if point == "after-control" or point in ONLY_AT_START:
        return point  # the driver sends one command; a run creates one journal
    return f"{point}@{rng.randint(1, 3)}"


def faults_for(campaign: int, total: int, timers: int) -> list[Fault]:
    """The seeded faults of one campaign: its share of the named points, then timer kills,
    mixed so that the named points come while there is work left."""
    rng = random.Random(1000 + campaign)
    mine = [p for i, p in enumerate(named_points()) if i % total == campaign % total]
    kills = seeded_faults(rng, timers, 0.1, 1.0)  # the train lands fast: kill often
    for point in mine:
        # early: the merge train lands work fast, and a point armed after the run ended never fires
        at = 0 if point in ONLY_AT_START else rng.randint(1, min(3, timers // 2))
        kills.insert(at, Fault(point=occurrence(point, rng)))
    return kills


def test_the_campaigns_reach_every_named_crash_point_and_100_kills() -> None:
    points = crash_points()
    assert "after-intent:merge" in points and "journal-write-torn" in points, points
    assert set(NEEDS_A_PLANNER) <= set(points), "a crash point listed as needing a planner is gone"
    scheduled = [f for c in range(CAMPAIGNS) for f in faults_for(c, CAMPAIGNS, TIMER_KILLS)]
    named = {f.point.split("@")[0] for f in scheduled if f.point}
    assert named == set(named_points())
    assert len(scheduled) >= 100


CASES = [(c, CAMPAIGNS, TIMER_KILLS) for c in range(CAMPAIGNS)]
CASES += [(CAMPAIGNS + c, SOAK, SOAK_TIMER_KILLS) for c in range(SOAK)]


@pytest.mark.parametrize(("campaign", "total", "timers"), CASES)
def test_kill_anywhere_then_resume(tmp_path: Path, campaign: int, total: int, timers: int) -> None:
    text, expected = make_plan(campaign, tmp_path)
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    repo = make_repo(tmp_path / "repo", {"README.md": "faults\n", "stretto.toml": CONFIG})
    faults = faults_for(campaign, total, timers)
    log = tmp_path / "engines.log"
    tally = Campaign(repo, plan, expected.tasks, log, expected.check_tree).run(faults)
    TALLY.add(tally)
    wanted = {f.point.split("@")[0] for f in faults if f.point}
    missed = wanted - set(tally.fired)
    tail = log.read_text().splitlines()[-60:]
    assert not tally.problems, "\n".join([tally.summary(), *tally.details, "engines.log:", *tail])
    assert not missed, f"named crash points that never fired: {missed}; {tally.summary()}"
