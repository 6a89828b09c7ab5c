"""The replay of recorded outcomes: the loader, the arms, what a policy may see, the rules."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from stretto.routing.arms import Arm
from stretto.routing.outcomes import (
    OutcomesError,
    Played,
    SealedOutcome,
    Seen,
    TaskView,
    load_outcomes,
    play,
)

HEADER = "instance_id,repo,model,resolved,turns,cost_usd,tokens_in,tokens_out,api_calls\n"
CHEAP, DEAR, FREE = "Cheap - 1", "Dear - 1", "Unpriced - paper"


def rows(*lines: str) -> str:
    return HEADER + "".join(line + "\n" for line in lines)


def small(tmp_path: Path) -> Path:
    """Three tasks on two repositories; one repository is named by its owner alone."""
    path = tmp_path / "outcomes.csv"
    path.write_text(
        rows(
            f"instance_acme__app-1,acme/app,{CHEAP},0,40,1.0,1000,10,40",
            f"instance_acme__app-1,acme/app,{DEAR},1,30,5.0,900,9,30",
            f"instance_acme__app-1,acme/app,{FREE},1,12,,,,",
            f"instance_acme__app-2,acme,{CHEAP},1,10,0.5,400,4,10",
            f"instance_acme__app-2,acme,{DEAR},0,50,7.0,2000,20,50",
            f"instance_ansible__ansible-3,ansible/ansible,{CHEAP},0,250,3.0,9000,90,250",
            f"instance_ansible__ansible-3,ansible/ansible,{DEAR},0,80,9.0,4000,40,80",
            f"instance_only__cheap-4,only/cheap,{CHEAP},1,5,0.1,100,1,5",
        )
    )
    return path


def test_world_arms_are_the_priced_configurations_tiered_by_price(tmp_path: Path) -> None:
    world = load_outcomes(small(tmp_path))
    assert [a.model for a in world.arms] == [CHEAP, DEAR]
    assert [a.tier for a in world.arms] == ["fast", "strong"]
    assert world.mean_cost[world.arms[0].key] == pytest.approx((1.0 + 0.5 + 3.0 + 0.1) / 4)
    assert [t.id for t in world.tasks] == [
        "instance_acme__app-1",
        "instance_acme__app-2",
        "instance_ansible__ansible-3",
    ]
    assert world.dropped == 1  # task 4: the dear arm never ran it
    assert [t.repo for t in world.tasks] == ["acme/app", "acme/app", "ansible/ansible"]
    assert [t.language for t in world.tasks] == ["", "", "python"]
    assert world.strongest() == world.arms[1]  # 1 landed alone each: the dearer wins the tie


def test_language_complexity_and_role_columns_are_read(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_text(
        "instance_id,repo,model,resolved,turns,cost_usd,language,complexity,role\n"
        f"t1,a/b,{CHEAP},1,3,0.2,Rust,high,backend\n"
    )
    (task,) = load_outcomes(path).tasks
    assert (task.language, task.complexity, task.role) == ("rust", "high", "backend")


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("instance_id,repo,model\nt,a/b,m\n", ":1:", "missing column(s) resolved, turns, cost_usd"),
        (rows(f"t,a/b,{CHEAP},yes,3,0.2,,,"), ":2:", "resolved must be 0 or 1, got 'yes'"),
        (rows(f"t,a/b,{CHEAP},1,3,-2,,,"), ":2:", "cost_usd must be a number >= 0, got '-2'"),
        (rows(f"t,a/b,{CHEAP},1,,0.2,,,"), ":2:", "turns is empty"),
        (rows(f"t,a/b,{CHEAP},1,3,0.2,x,,"), ":2:", "tokens_in must be a number >= 0"),
        (rows(f"t,a/b,{CHEAP},1,3,0.2,,,", f"t,a/b,{CHEAP},0,3,0.2,,,"), ":3:", "appear twice"),
        (rows(f"t,a/b,{FREE},1,3,,,,"), "", "no configuration has a cost_usd"),
    ],
)
def test_bad_outcomes_files_name_the_line_field_and_fix(
    tmp_path: Path, text: str, where: str, says: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(OutcomesError) as caught:
        load_outcomes(path)
    assert f"{path}{where}" in str(caught.value)
    assert says in str(caught.value)
    assert caught.value.exit_code == 2


class Scripted:
    """A policy that plays a fixed list of arms; it may try to peek before choosing."""

    def __init__(self, plan: Sequence[Arm], peek: bool = False) -> None:
        self.plan, self.peek, self.learned = list(plan), peek, []

    def first(self, task: TaskView) -> Arm | None:
        if self.peek:
            task.recorded(self.plan[0])
        return self.plan[0] if self.plan else None

    def next(self, task: TaskView, attempts: Sequence[Seen]) -> Arm | None:
        if self.peek:
            task.recorded(self.plan[len(attempts)])
        return self.plan[len(attempts)] if len(attempts) < len(self.plan) else None

    def learn(self, task: TaskView, seen: Seen) -> None:
        self.learned.append(seen)
        assert task.recorded(seen.arm).resolved == seen.landed  # what was chosen is open

    def end(self, task: TaskView, landed: bool) -> None:
        self.ended = landed


def test_only_the_oracle_reads_an_outcome_before_choosing(tmp_path: Path) -> None:
    world = load_outcomes(small(tmp_path))
    cheap, dear = world.arms
    task = world.tasks[0]
    with pytest.raises(SealedOutcome, match="read before it was chosen"):
        play(task, Scripted([cheap, dear], peek=True))
    assert play(task, Scripted([cheap, dear], peek=True), oracle=True).landed
    policy = Scripted([cheap])
    played = play(task, policy)  # what it chose opens once it was chosen, not before
    assert [s.arm for s in played.attempts] == [cheap] and not played.landed
    with pytest.raises(SealedOutcome):
        TaskView(task).recorded(dear)


def test_replay_rules_recorded_results_and_a_rerun_repeats_and_costs_again(
    tmp_path: Path,
) -> None:
    world = load_outcomes(small(tmp_path))
    cheap, dear = world.arms
    first, second, third = world.tasks
    played = play(first, Scripted([cheap, dear]))
    assert played.landed and played.cost_usd == 6.0
    assert [(s.attempt, s.landed, s.turns, s.tokens) for s in played.attempts] == [
        (1, False, 40, 1010),
        (2, True, 30, 909),
    ]
    again = play(third, Scripted([cheap, cheap, cheap, cheap]))  # at most 3 attempts
    assert not again.landed and again.cost_usd == 9.0 and len(again.attempts) == 3
    assert play(second, Scripted([])).cost_usd == 0.0  # not attempted at all
    assert play(second, Scripted([dear, cheap, dear])).cost_usd == 7.5  # stops on landing


REPLAY = Path(__file__).resolve().parents[1] / "benchmarks" / "routing" / "replay.py"


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPLAY), *args], capture_output=True, text=True, timeout=120
    )


def world_file(tmp_path: Path, tasks: int = 60) -> Path:
    """A seeded synthetic world in the outcomes format: three repositories, two priced arms."""
    rng = random.Random(7)
    lines = []
    for n in range(tasks):
        repo = ("a/one", "b/two", "c/three")[n % 3]
        task = f"instance_{repo.replace('/', '__')}-{n}"
        hard = rng.random()
        for model, cost, skill in ((CHEAP, 1.0, 0.5), (DEAR, 6.0, 0.65)):
            landed = int(rng.random() < skill * (1.2 - hard))
            turns = rng.randint(10, 250)
            lines.append(
                f"{task},{repo},{model},{landed},{turns},{cost * turns / 100:.3f},"
                f"{turns * 1000},{turns * 10},{turns}"
            )
    path = tmp_path / "world.csv"
    path.write_text(rows(*lines))
    return path


def test_replay_json_names_every_policy_and_no_policy_but_the_oracle_peeks(
    tmp_path: Path,
) -> None:
    done = bench("--data", str(world_file(tmp_path)), "--orders", "3", "--json")
    assert done.returncode == 0, done.stderr  # a policy that peeked would raise SealedOutcome
    data = json.loads(done.stdout)
    assert set(data) == {"tasks", "orders", "policies"}
    assert (data["tasks"], data["orders"]) == (60, 3)
    assert set(data["policies"]) == {
        "always_strongest",
        "always_cheapest",
        "cascade_cheap_first",
        "cascade_strong_first",
        "best_fixed_per_repo",
        "oracle",
        "router",
    }
    for figures in data["policies"].values():
        assert {"landed", "cost_usd", "cost_per_landed"} <= set(figures)
        assert figures["landed_min"] <= figures["landed"] <= figures["landed_max"]
    oracle, policies = data["policies"]["oracle"], data["policies"].values()
    assert all(p["landed"] <= oracle["landed"] for p in policies)
    cascade = data["policies"]["cascade_cheap_first"]
    assert cascade["landed"] == data["policies"]["cascade_strong_first"]["landed"]
    assert oracle["landed"] == cascade["landed"]  # anything either arm lands, nothing more


def test_replay_text_table_svg_and_a_bad_file(tmp_path: Path) -> None:
    picture = tmp_path / "p.svg"
    done = bench("--data", str(world_file(tmp_path)), "--orders", "2", "--svg", str(picture))
    assert done.returncode in (0, 1), done.stderr  # 1: a target missed on this tiny world
    assert "router" in done.stdout and done.stdout.count("TARGET") == 4
    assert picture.read_text().startswith("<svg") and "cascade_cheap_first" in picture.read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text(rows(f"t,a/b,{CHEAP},maybe,3,0.2,,,"))
    done = bench("--data", str(bad))
    assert done.returncode == 2
    assert f"{bad}:2: resolved must be 0 or 1" in done.stderr


@pytest.mark.parametrize("credit", ["attempt", "task"])
def test_the_offline_router_learns_online_and_decides_the_same_every_time(
    tmp_path: Path, credit: str
) -> None:
    from stretto.config import ArmConfig, RouterSettings
    from stretto.routing.offline import OfflineRouter

    world = load_outcomes(world_file(tmp_path))
    arms = tuple(ArmConfig(a.agent, a.model, a.tier) for a in world.arms)  # type: ignore[arg-type]
    settings = RouterSettings(
        arms=arms,
        warmup=10,
        cost_ceiling=20.0,
        credit=credit,  # type: ignore[arg-type]
        landed_value_usd=1000.0,
    )

    def run() -> tuple[list[Played], OfflineRouter]:
        router = OfflineRouter(settings)
        return [play(t, router) for t in world.tasks], router

    first, router = run()
    again, _ = run()
    assert [(p.task, p.landed, [s.arm for s in p.attempts]) for p in first] == [
        (p.task, p.landed, [s.arm for s in p.attempts]) for p in again
    ]
    assert router.policy.completed >= len(world.tasks)  # one per task at least, either credit
    assert all(len({s.arm for s in p.attempts}) == len(p.attempts) for p in first)  # no re-run
    assert not router.routes and not router.costs  # every task's bookkeeping ended


def test_held_out_replays_every_split_on_its_own(tmp_path: Path) -> None:
    data = world_file(tmp_path)
    done = bench("--data", str(data), "--orders", "2", "--held-out", "--json")
    assert done.returncode in (0, 1), done.stderr  # 1: a target missed on this tiny world
    splits = json.loads(done.stdout)["splits"]
    assert list(splits) == [
        "whole file",
        "tasks 0/2",
        "tasks 1/2",
        "repos 0/2",
        "repos 1/2",
        "tasks 0/3",
        "tasks 1/3",
        "tasks 2/3",
    ]
    assert splits["whole file"]["tasks"] == 60
    assert splits["tasks 0/2"]["tasks"] + splits["tasks 1/2"]["tasks"] == 60
    assert sum(splits[f"tasks {k}/3"]["tasks"] for k in range(3)) == 60
    assert splits["repos 0/2"]["tasks"] + splits["repos 1/2"]["tasks"] == 60
    for split in splits.values():
        if split["tasks"]:
            router = split["policies"]["router"]
            cascade = split["policies"]["cascade_cheap_first"]
            assert split["cost_vs_cascade"] == router["cost_usd"] / cascade["cost_usd"]
            assert split["met"] == (
                split["landed_vs_strongest"] >= 1.05
                and split["cost_vs_strongest"] <= 0.75
                and split["landed_vs_cascade"] >= 0.95
                and split["cost_vs_cascade"] <= 0.85
            )
    alone = bench("--data", str(data), "--orders", "2", "--part", "0/2", "--json")
    same = json.loads(alone.stdout)["policies"]
    assert splits["tasks 0/2"]["policies"] == same  # the same replay as --part 0/2
    text = bench("--data", str(data), "--orders", "2", "--held-out")
    assert "tasks 2/3" in text.stdout and "cost vs cascade" in text.stdout
    assert text.returncode == (0 if all(s.get("met") is not False for s in splits.values()) else 1)
    refused = bench("--data", str(data), "--held-out", "--part", "0/2")
    assert refused.returncode == 2 and "--held-out replays its own splits" in refused.stderr
