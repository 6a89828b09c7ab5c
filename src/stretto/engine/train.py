"""The merge train: carries out :class:`~stretto.engine.train_policy.TrainPolicy`'s decisions.

``[merge] strategy = "train"`` puts this in the place of the serial
:class:`~stretto.engine.merge_queue.MergeQueue` (whose target, checkout and agent-move handling
it inherits). An attempt hands its verified commit to :meth:`MergeTrain.land` and waits there;
one driver coroutine owns the policy and git, so decisions stay serial while the gates of
several cars run at once (one asyncio task per lane). The driver:

* builds a car: each branch is merged in order (``git merge-tree``, a merge commit with the
  task's trailers and a journaled ``merge`` intent, as the serial queue does) on the car ahead
  (or the target's head). A branch that does not merge is checked against the target's head
  alone: a conflict there goes back to its task at once with the conflicting files (no test
  run); one with the branches ahead only is parked by the policy;
* runs the car's gates (``gates`` intent, a ``gate_result`` per gate with the tree) unless the
  result for that (tree, gate) is known: results are cached by tree and gate command, and the
  cache is rebuilt from the journal on resume, so the same tree is never tested twice;
* a retest (a one-branch car that failed) runs the failed gates again on the same tree; a pass
  then is journaled as ``gate_flaky``;
* lands the passed cars at the head of the train with one compare-and-swap of the target to
  the last car's commit (an ``advance`` intent naming every task), records ``merged`` for each
  task and wakes its attempt; a target moved by someone else resets the train (every car is
  rebuilt on the new head);
* sends a blamed branch back with the failing gates' summaries and log tails.

Every change of the train is journaled as a ``train`` event (cars, lanes, why each task waits),
which ``status`` and ``explain`` show. After a crash, ``stretto resume`` puts the verified,
unlanded tasks back in the train in their order; landed ones are found by their trailers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stretto.engine import merge as merging
from stretto.engine.context import RunContext
from stretto.engine.gates import Gate, GateInput, Verdict, command_gate, run_gates
from stretto.engine.journal import Record, crashpoint
from stretto.engine.merge_queue import MergeQueue
from stretto.engine.outcomes import AttemptEnd, log_tail
from stretto.engine.train_policy import Build, Cancel, Land, Reject, TrainPolicy, TrainSettings
from stretto.git import is_ancestor
from stretto.plans.plan import Task


@dataclass
class Request:
    """One verified attempt waiting in the train."""

    task: Task
    attempt: int
    commit: str  # the attempt's verified commit
    tree: str  # its tree
    env: dict[str, str]
    done: asyncio.Future[AttemptEnd]
    merged: str | None = None  # its merge commit in its current car
    conflict: tuple[str, ...] = ()  # files, when it did not merge on the target


@dataclass
class CarRun:
    """What the driver knows of one car: its commit and tree, its gates' task."""

    commit: str
    tree: str
    keys: list[str]
    job: asyncio.Task[None] | None = None
    failed: list[dict[str, Any]] = field(default_factory=list)  # failing gates' results


def cache_key(tree: str, gate: str, command: str) -> str:
    """The key of a gate's result on a tree: the same tree and command give the same verdict."""
    return f"{tree}:{gate}:{command}"


def cached_results(records: Iterable[Record]) -> dict[str, dict[str, Any]]:
    """The (tree, gate) results a run's journal holds (the latest for each key)."""
    cache: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.type == "gate_result" and rec.fields.get("cache_key"):
            cache[str(rec.fields["cache_key"])] = dict(rec.fields)
    return cache


class MergeTrain(MergeQueue):
    """The run's merge train; see the module docstring."""

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        merge = ctx.options.merge
        self.policy = TrainPolicy(
            TrainSettings(merge.max_batch, merge.max_lanes, merge.flaky_retries)
        )
        self.requests: dict[str, Request] = {}  # branch key -> request
        self.cars: dict[int, CarRun] = {}
        self.cache = cached_results(ctx.journal.history)
        for rec in ctx.journal.history:  # resume: the failure rate the train had learned
            if rec.type == "train" and isinstance(rec.fields.get("failure_rate"), int | float):
                self.policy.rate = float(rec.fields["failure_rate"])
        self.inbox: asyncio.Queue[tuple[int, bool | Exception] | None] = asyncio.Queue()
        self.driver: asyncio.Task[None] | None = None
        self.base: str | None = None  # the target head the first car is built on
        self.last_snapshot: dict[str, Any] | None = None
        self.free_lanes: list[int] = []  # integration worktrees not in use
        self.lane_count = 0

    # ------------------------------------------------------------------ the attempt's side

    async def land(
        self,
        task: Task,
        attempt: int,
        commit: str,
        tree: str,
        env: dict[str, str],
        base: str | None = None,
    ) -> AttemptEnd:
        """Put a verified commit in the train and wait until it lands or is sent back."""
        head = self.expected_head or await self.ctx.blocking(self.ctx.target_head)
        landed = await self.ctx.blocking(
            merging.landed_tasks, self.ctx.repo, self.ctx.options.target, self.ctx.run_id
        )
        if task.id in landed:
            return AttemptEnd(True, commit=landed[task.id][0])
        if base is not None and not await self.ctx.blocking(is_ancestor, self.ctx.repo, base, head):
            reason = (
                f"the target '{self.ctx.options.target}' was rewound since this attempt started "
                f"at {base[:12]} (it is at {head[:12]}, which does not contain it); its work is "
                "redone from the new head so that commits removed from the target do not come back"
            )
            self.ctx.record("merge_refused", task=task.id, attempt=attempt, reason=reason)
            return AttemptEnd(False, False, reason)
        key = f"{task.id}#{attempt}"
        done: asyncio.Future[AttemptEnd] = asyncio.get_running_loop().create_future()
        self.requests[key] = Request(task, attempt, commit, tree, env, done)
        self.policy.add(key)
        self.ctx.record("train_joined", task=task.id, attempt=attempt, commit=commit)
        self._wake()
        try:
            return await done
        finally:
            if not done.done() or done.cancelled():  # the attempt was stopped: leave the train
                self.policy.forget(key)
                self.requests.pop(key, None)
                self._wake()

    async def finish(self) -> None:
        """At the end of a run: stop the driver, remove the lanes, then as the serial queue."""
        await self._stop_driver()
        await self.ctx.blocking(self.remove_lanes)
        await super().finish()

    def lane_path(self, slot: int) -> Path:
        """The integration worktree of lane ``slot``."""
        root = merging.integration_path(self.ctx.repo, self.ctx.run_id)
        return root.parent / f"{self.ctx.run_id}-lane-{slot}"

    def remove_lanes(self) -> None:
        """Remove every lane's worktree (also those a crashed engine left)."""
        from stretto.engine.workspace import worktree_lock
        from stretto.git import run_git

        root = merging.integration_path(self.ctx.repo, self.ctx.run_id).parent
        for path in sorted(root.glob(f"{self.ctx.run_id}-lane-*")):
            with worktree_lock(self.ctx.repo):
                run_git(
                    ["worktree", "remove", "--force", "--force", str(path)],
                    self.ctx.repo,
                    check=False,
                )

    async def _stop_driver(self) -> None:
        if self.driver is not None and not self.driver.done():
            self.driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.driver
        for run in self.cars.values():
            if run.job is not None:
                run.job.cancel()

    def _wake(self) -> None:
        if self.driver is None or self.driver.done():
            self.driver = asyncio.create_task(self._drive())
        else:
            self.inbox.put_nowait(None)

    # ------------------------------------------------------------------ the driver

    async def _drive(self) -> None:
        try:
            while True:
                await self._pump()
                if not self.requests and not any(r.job for r in self.cars.values()):
                    return
                message = await self.inbox.get()
                if message is not None:
                    car, passed = message
                    if isinstance(passed, Exception):
                        raise passed
                    run = self.cars.get(car)
                    if run is not None:
                        run.job = None
                        (self.policy.passed if passed else self.policy.failed)(car)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a full disk, a broken journal: every waiter learns it
            for request in self.requests.values():
                if not request.done.done():
                    request.done.set_exception(error)
                    # Counted as seen: the fault suite once found it unread as the run halted on
                    # the same full disk, and asyncio printed its traceback into the run's
                    # output. A waiter still gets it when it wakes.
                    request.done.exception()
            self.requests.clear()
            for run in self.cars.values():
                if run.job is not None:
                    run.job.cancel()
            self.cars.clear()
            rate = self.policy.rate  # a fresh train for the attempts that come next
            self.policy = TrainPolicy(self.policy.settings, rate=rate)
            self.base = None

    async def _pump(self) -> None:
        while actions := self.policy.decide():
            for action in actions:
                if isinstance(action, Reject):
                    self._reject(action)
                elif isinstance(action, Cancel):
                    run = self.cars.pop(action.car, None)
                    if run is not None and run.job is not None:
                        run.job.cancel()
                elif isinstance(action, Land):
                    await self._land(action)
                elif isinstance(action, Build):
                    await self._build(action)
        self._journal_train()

    def _journal_train(self) -> None:
        snapshot = self.policy.snapshot()
        if snapshot == self.last_snapshot:
            return
        self.last_snapshot = snapshot
        waits = {}
        for key, request in self.requests.items():
            waits[request.task.id] = self.policy.waiting(key)
        self.ctx.record("train", **snapshot, waits=waits)

    async def _head(self) -> str:
        """The target head the train builds on (an agent's own move of it put back first)."""
        if self.base is None:
            head = self.expected_head or await self.ctx.blocking(self.ctx.target_head)
            if self.expected_head is None and self.at_work:
                head = await self._undo_agent_move(head)
            self.base = head
        return self.base

    async def _build(self, action: Build) -> None:
        car = action.car
        if not self.policy.has_car(car):
            return
        if action.retest:
            run = self.cars[car]
            self._start_gates(car, run, retest=True)
            return
        parent = self.policy.parent(car)
        head = await self._head()
        commit = head if parent is None else self.cars[parent].commit
        tree = ""
        keys = []
        for key in action.branches:
            request = self.requests.get(key)
            if request is None or not self.policy.has_car(car):
                continue  # its attempt was stopped while this car was being built
            merged = await self._merge(car, request, commit)
            if merged is None:
                continue
            commit, tree = merged
            keys.append(key)
        if not self.policy.has_car(car) or not keys:
            return
        run = CarRun(commit, tree, keys)
        self.cars[car] = run
        self._start_gates(car, run, retest=False)

    async def _merge(self, car: int, request: Request, base: str) -> tuple[str, str] | None:
        """Merge one branch of a car on ``base``; None (and the policy told) on a conflict."""
        task, attempt = request.task, request.attempt
        date = f"@{int(time.time())} +0000"
        message = f"stretto: {task.title} ({task.id})\n\n{task.goal}\n\n" + merging.trailers(
            self.ctx.run_id, task.id, attempt
        )
        intent = self.ctx.intent(
            "merge",
            task=task.id,
            attempt=attempt,
            base=base,
            branch=request.commit,
            date=date,
            car=car,
        )
        crashpoint("after-intent:merge")
        result = await self.ctx.blocking(
            merging.merge_commit, self.ctx.repo, base, request.commit, message, date
        )
        if result.commit is not None:
            self.ctx.journal.done(intent, commit=result.commit, tree=result.tree)
            crashpoint("after-merge")
            request.merged = result.commit
            return result.commit, result.tree or ""
        head = await self._head()
        with_target = base == head
        if not with_target:
            alone = await self.ctx.blocking(
                merging.merge_commit, self.ctx.repo, head, request.commit, message, date
            )
            with_target = alone.commit is None
            files = alone.conflicts if with_target else result.conflicts
        else:
            files = result.conflicts
        self.ctx.journal.fail(intent, "conflict", files=list(files), with_target=with_target)
        request.conflict = tuple(files)
        self.policy.conflicted(car, f"{task.id}#{attempt}", with_target=with_target)
        return None

    def _gates(self, run: CarRun) -> list[tuple[str, str, Gate]]:
        """(name, command, gate) of every gate the car's merged tree must pass."""
        options = self.ctx.options
        requests = [self.requests[k] for k in run.keys]
        single = len(requests) == 1
        differs = (
            not single or run.tree != requests[0].tree or options.sparse is not None
        )  # one branch on the head it was verified on: its own gates judged this very tree
        out: list[tuple[str, str, Gate]] = []
        for gate in options.gates:
            if gate.when in ("merge", "both") or (
                gate.when == "attempt" and differs and options.recheck_merged
            ):
                out.append(
                    (gate.name, gate.command, command_gate(gate.name, gate.command, gate.timeout))
                )
        if differs and options.recheck_merged:
            for request in requests:
                for index, command in enumerate(request.task.gates, 1):
                    name = f"step-{index}" if single else f"{request.task.id}.step-{index}"
                    out.append((name, command, command_gate(name, command)))
        return out

    def _start_gates(self, car: int, run: CarRun, *, retest: bool) -> None:
        run.job = asyncio.create_task(self._run_gates(car, run, retest))

    async def _run_gates(self, car: int, run: CarRun, retest: bool) -> None:
        passed: bool | Exception = False
        try:
            passed = await self._judge(car, run, retest)
        except Exception as error:  # a full disk: raised again by the driver, which tells
            passed = error  # every waiter (left here, no one would ever see it)
        finally:
            self.inbox.put_nowait((car, passed))

    async def _judge(self, car: int, run: CarRun, retest: bool) -> bool:
        """Run the car's gates that have no cached result (or, on a retest, failed)."""
        gates = self._gates(run)
        todo: list[tuple[str, str, Gate]] = []
        known: dict[str, dict[str, Any]] = {}
        for name, command, gate in gates:
            hit = self.cache.get(cache_key(run.tree, name, command))
            if hit is not None and not (retest and not hit.get("passed")):
                known[name] = hit
            else:
                todo.append((name, command, gate))
        if todo:
            slot = self.free_lanes.pop(0) if self.free_lanes else self._new_lane()
            try:
                await self._run_todo(car, run, retest, todo, known, slot)
            finally:
                self.free_lanes.append(slot)
                self.free_lanes.sort()
        missing = {"passed": False, "summary": "not run (the car was cancelled)"}
        results = [
            self.cache.get(cache_key(run.tree, n, c), {**missing, "gate": n}) for n, c, _ in gates
        ]
        run.failed = [r for r in results if not r.get("passed")]
        return not run.failed

    def _new_lane(self) -> int:
        self.lane_count += 1
        return self.lane_count - 1

    async def _run_todo(
        self,
        car: int,
        run: CarRun,
        retest: bool,
        todo: list[tuple[str, str, Gate]],
        known: dict[str, dict[str, Any]],
        slot: int,
    ) -> None:
        """Run the gates without a usable cached result in lane ``slot``; journal each."""
        requests = [self.requests[k] for k in run.keys if k in self.requests]
        if not requests:
            return  # every attempt of the car was stopped: the car is being cancelled
        first = requests[0]
        tasks = [r.task.id for r in requests]
        workspace = self.lane_path(slot)
        link = self.ctx.options.link_dirs
        await self.ctx.blocking(
            merging.checkout_integration, self.ctx.repo, workspace, run.commit, link_dirs=link
        )
        intent = self.ctx.intent(
            "gates",
            task=first.task.id,
            attempt=first.attempt,
            stage="merge",
            commit=run.commit,
            tree=run.tree,
            car=car,
            tasks=tasks,
            gates=[name for name, _, _ in todo],
            cached=sorted(known),
        )
        crashpoint("after-intent:gates-merge")
        folder = self.ctx.attempt_dir(first.task.id, first.attempt) / f"car-{car}"
        inp = GateInput(workspace, first.task, (), folder, first.env, self.ctx.sandbox)
        try:
            verdicts = await run_gates([(n, g) for n, _, g in todo], inp)
        except asyncio.CancelledError:  # a car ahead failed, or the run stops
            self.ctx.journal.fail(intent, "cancelled")
            raise
        commands = {name: command for name, command, _ in todo}
        for verdict in verdicts:
            key = cache_key(run.tree, verdict.gate, commands[verdict.gate])
            before = self.cache.get(key)
            fields = self._result_fields(verdict, key, run, car, tasks)
            for request in requests:
                rec = self.ctx.record(
                    "gate_result", task=request.task.id, attempt=request.attempt, **fields
                )
                self.cache[key] = dict(rec.fields)
            if retest and verdict.passed and before is not None and not before.get("passed"):
                self.ctx.record(
                    "gate_flaky", gate=verdict.gate, tree=run.tree, car=car, tasks=tasks
                )
        self.ctx.journal.done(intent, passed=all(v.passed for v in verdicts))

    def _result_fields(
        self, verdict: Verdict, key: str, run: CarRun, car: int, tasks: list[str]
    ) -> dict[str, Any]:
        return {
            "stage": "merge",
            **verdict.to_dict(),
            "tree": run.tree,
            "commit": run.commit,
            "car": car,
            "tasks": tasks,
            "cache_key": key,
        }

    async def _land(self, action: Land) -> None:
        """Move the target to the last passed car's commit, then wake every landed attempt."""
        old = await self._head()
        new = self.cars[action.cars[-1]].commit
        requests = [self.requests[k] for k in action.branches]
        tasks = [r.task.id for r in requests]
        last = requests[-1]
        advance = self.ctx.intent(
            "advance",
            task=last.task.id,
            attempt=last.attempt,
            tasks=tasks,
            ref=f"refs/heads/{self.ctx.options.target}",
            old=old,
            new=new,
            cars=list(action.cars),
        )
        crashpoint("after-intent:advance")
        moved = await self.ctx.blocking(
            merging.advance,
            self.ctx.repo,
            self.ctx.options.target,
            new,
            old,
            f"stretto {self.ctx.run_id}: land {', '.join(tasks)}",
        )
        if not moved:
            self.ctx.journal.fail(advance, "target moved")
            self.expected_head = None
            self.base = None
            self.policy.reset()  # every car is rebuilt on the new head, these first
            self.policy.requeue(action.branches)
            for car in action.cars:
                self.cars.pop(car, None)
            return
        self.expected_head = new
        self.before_last = old
        self.base = new
        self.ctx.journal.done(advance)
        crashpoint("after-advance")
        for car in action.cars:
            self.cars.pop(car, None)
        for key, request in zip(action.branches, requests, strict=True):
            commit = request.merged or new
            self.ctx.record(
                "merged",
                task=request.task.id,
                attempt=request.attempt,
                commit=commit,
                old=old,
                new=new,
                cars=list(action.cars),
            )
            self.landed[request.task.id] = [commit]
            self.requests.pop(key, None)
            if not request.done.done():
                request.done.set_result(AttemptEnd(True, commit=commit))
        self.landed_at = None
        self._kick_checkout_sync()

    def _reject(self, action: Reject) -> None:
        request = self.requests.pop(action.branch, None)
        if request is None:
            return
        target = self.ctx.options.target
        task, attempt = request.task.id, request.attempt
        if action.why == "conflict":
            files = ", ".join(request.conflict) or "(git named none)"
            reason = (
                f"merge conflict with {target} in: {files}; rebase your work on the new target head"
            )
            self.ctx.record(
                "merge_refused",
                task=task,
                attempt=attempt,
                reason="conflict",
                files=list(request.conflict),
            )
            end = AttemptEnd(False, True, reason)
        else:
            run = self.cars.get(action.car) if action.car is not None else None
            failed = run.failed if run is not None else []
            reason = "gates failed on the merged tree: " + (
                "; ".join(f"{r.get('gate')}: {r.get('summary')}" for r in failed)
                or "(no gate named)"
            )
            self.ctx.record("merge_refused", task=task, attempt=attempt, reason=reason)
            logs = "\n".join(log_tail(Path(str(r["log"])), 1500) for r in failed if r.get("log"))
            end = AttemptEnd(False, True, reason, logs)
        if action.car is not None and not self.policy.has_car(action.car):
            self.cars.pop(action.car, None)
        if not request.done.done():
            request.done.set_result(end)
