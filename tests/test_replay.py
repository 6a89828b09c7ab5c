"""The replay of recorded outcomes: the loader, the arms, what a policy may see, the rules."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from stretto.routing.arms import Arm
from stretto.routing.outcomes import (
    OutcomesError,
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
