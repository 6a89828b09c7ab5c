"""The merge queue: lands verified attempts on the target one at a time.

For each verified attempt (:mod:`stretto.engine.merge` for the git side): skip it if its trailers
are already on the target; refuse it (not counted as a failure: the retry starts from the new
head) if the target was rewound past the commit the attempt started from, since merging it would
bring back what was removed; merge it into the current head as a new merge commit; run the gates
that must judge the merged tree; move the target with compare-and-swap (rebuilding on the new
head if someone else moved it); then, in the background, bring the user's checkout along.
Every step is journaled through the run's :class:`~stretto.engine.context.RunContext`, intent
first; the queue knows nothing of the runner.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from stretto.engine import merge as merging
from stretto.engine.context import RunContext
from stretto.engine.gates import Gate, GateInput, command_gate
from stretto.engine.journal import crashpoint
from stretto.engine.outcomes import AttemptEnd, log_tail
from stretto.git import is_ancestor, rev_parse, update_ref_cas
from stretto.plans.plan import Task


class MergeQueue:
    """The run's merge queue and what it knows about the target and the user's checkout."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.lock = asyncio.Lock()
        self.landed: dict[str, list[str]] = {}  # task -> merge commits on the target (trailers)
        self.landed_at: str | None = None  # the target head `landed` was read at
        self.expected_head: str | None = None  # the target head after our last landing
        self.before_last: str | None = None  # the target head before our last landing
        self.synced_at: str | None = None  # the commit the user's checkout of the target is at
        self.checkout: Path | bool | None = None  # where the target is checked out (False: nowhere)
        self.stale_checkout: tuple[str, str] | None = None  # (old, new) of a dirty checkout
        self.syncer: asyncio.Task[None] | None = None
        self.last_head: str | None = None  # the head the last landing built on or made
        # Attempts whose agent may be at work: task -> (attempt, worktree, base commit).
        self.at_work: dict[str, tuple[int, Path, str]] = {}
        self.moved_by: dict[str, str] = {}  # task -> the commit its agent moved the target to

    async def finish(self) -> None:
        """At the end of a run: catch the checkout up, remove the integration worktree."""
        if self.syncer is not None:
            await self.syncer
        head = await self.ctx.blocking(self.ctx.target_head)
        await self.sync_checkout(head, head)  # also catches up after a resume
        await self.ctx.blocking(self.remove_integration)

    def remove_integration(self) -> None:
        path = merging.integration_path(self.ctx.repo, self.ctx.run_id)
        if path.exists():
            from stretto.engine.workspace import worktree_lock
            from stretto.git import run_git

            with worktree_lock(self.ctx.repo):
                run_git(
                    ["worktree", "remove", "--force", "--force", str(path)],
                    self.ctx.repo,
                    check=False,
                )

    async def sync_checkout(self, old: str, new: str) -> None:
        """Bring the user's checkout of the target along, if its files are exactly ``old``."""
        if self.checkout is None:
            self.checkout = (
                await self.ctx.blocking(
                    merging.find_checkout,
                    self.ctx.repo,
                    self.ctx.options.target,
                    self.ctx.repo / ".stretto",
                )
                or False
            )
        checkout = self.checkout
        if not checkout:
            self.synced_at = new  # nothing to bring along
            return
        base = self.synced_at or old
        if base == new:
            return
        # The files are where we last left them, or (if the user committed on the target and
        # the queue rebuilt on it) at the head before our last landing.
        for candidate in dict.fromkeys(c for c in (base, self.before_last) if c):
            if await self.ctx.blocking(merging.sync_checkout, checkout, candidate, new):
                self.synced_at = new
                self.ctx.record("checkout_synced", path=str(checkout), commit=new)
                self.stale_checkout = None
                return
        self.synced_at = base
        self.stale_checkout = (base, new)

    async def land(
        self,
        task: Task,
        attempt: int,
        commit: str,
        tree: str,
        env: dict[str, str],
        base: str | None = None,
    ) -> AttemptEnd:
        """Land a verified commit; ``base``, the commit its attempt forked from, when known."""
        async with self.lock:
            for _ in range(20):
                end = await self._land_once(task, attempt, commit, tree, env, base)
                if end is not None:
                    return end
            return AttemptEnd(False, False, "the target kept moving during the merge; retrying")

    async def _land_once(
        self,
        task: Task,
        attempt: int,
        commit: str,
        tree: str,
        env: dict[str, str],
        base: str | None,
    ) -> AttemptEnd | None:
        target = self.ctx.options.target
        # Our own last landing is the head we expect; if anyone else moved the target, the
        # compare-and-swap below fails and the next round reads the real head.
        old = self.expected_head or await self.ctx.blocking(self.ctx.target_head)
        if self.expected_head is None and self.at_work:
            old = await self._undo_agent_move(old)
        self.last_head = old
        if old != self.landed_at:
            # The target moved under us (or this is the first landing): read its history.
            self.landed = await self.ctx.blocking(
                merging.landed_tasks, self.ctx.repo, target, self.ctx.run_id
            )
            self.landed_at = old
        if task.id in self.landed:
            return AttemptEnd(True, commit=self.landed[task.id][0])
        if base is not None and not await self.ctx.blocking(is_ancestor, self.ctx.repo, base, old):
            # Someone rewound the target (reset, force-push) past where this attempt started:
            # merging its branch would bring back the commits they removed.
            reason = (
                f"the target '{target}' was rewound since this attempt started at "
                f"{base[:12]} (it is at {old[:12]}, which does not contain it); its work is "
                "redone from the new head so that commits removed from the target do not come back"
            )
            self.ctx.record("merge_refused", task=task.id, attempt=attempt, reason=reason)
            return AttemptEnd(False, False, reason)
        date = f"@{int(time.time())} +0000"
        message = f"stretto: {task.title} ({task.id})\n\n{task.goal}\n\n" + merging.trailers(
            self.ctx.run_id, task.id, attempt
        )
        intent = self.ctx.intent(
            "merge", task=task.id, attempt=attempt, base=old, branch=commit, date=date
        )
        crashpoint("after-intent:merge")
        result = await self.ctx.blocking(
            merging.merge_commit, self.ctx.repo, old, commit, message, date
        )
        if result.commit is None:
            self.ctx.journal.fail(intent, "conflict", files=list(result.conflicts))
            self.ctx.record(
                "merge_refused",
                task=task.id,
                attempt=attempt,
                reason="conflict",
                files=list(result.conflicts),
            )
            return AttemptEnd(
                False,
                True,
                f"merge conflict with {target} in: {', '.join(result.conflicts)}; "
                "rebase your work on the new target head",
            )
        self.ctx.journal.done(intent, commit=result.commit, tree=result.tree)
        crashpoint("after-merge")
        gates = self._merge_gates(task, result.tree or "", tree)
        if gates:
            integration = merging.integration_path(self.ctx.repo, self.ctx.run_id)
            await self.ctx.blocking(
                merging.checkout_integration, self.ctx.repo, integration, result.commit
            )
            folder = self.ctx.attempt_dir(task.id, attempt) / "merge-gates"
            inp = GateInput(integration, task, (), folder, env, self.ctx.sandbox)
            verdicts = await self.ctx.gated(task.id, attempt, "merge", result.commit, gates, inp)
            failed = [v for v in verdicts if not v.passed]
            if failed:
                reason = "gates failed on the merged tree: " + "; ".join(
                    f"{v.gate}: {v.summary}" for v in failed
                )
                self.ctx.record("merge_refused", task=task.id, attempt=attempt, reason=reason)
                return AttemptEnd(
                    False, True, reason, "\n".join(log_tail(v.log, 1500) for v in failed if v.log)
                )
        new = result.commit
        advance = self.ctx.intent(
            "advance", task=task.id, attempt=attempt, ref=f"refs/heads/{target}", old=old, new=new
        )
        crashpoint("after-intent:advance")
        moved = await self.ctx.blocking(
            merging.advance,
            self.ctx.repo,
            target,
            new,
            old,
            f"stretto {self.ctx.run_id}: land {task.id}",
        )
        if not moved:
            self.ctx.journal.fail(advance, "target moved")
            self.expected_head = None
            return None
        self.expected_head = new
        self.before_last = old
        self.ctx.journal.done(advance)
        crashpoint("after-advance")
        self.ctx.record("merged", task=task.id, attempt=attempt, commit=new, old=old, new=new)
        self.landed[task.id] = [new]
        self.landed_at = new
        self._kick_checkout_sync()
        return AttemptEnd(True, commit=new)

    async def _undo_agent_move(self, head: str) -> str:
        """The head to build on, when the target moved under the queue: if a running agent
        moved it to its own commit (``git update-ref`` in its worktree), put it back first, so
        no landing ever builds on unverified work (the attempt fails: see ``moved_by``)."""
        repo = self.ctx.repo
        for task, (attempt, path, base) in list(self.at_work.items()):
            mine = await self.ctx.blocking(rev_parse, path, "HEAD")
            if head == base or mine is None:
                continue
            if not await self.ctx.blocking(is_ancestor, repo, head, mine):
                continue  # not the agent's work
            if await self.ctx.blocking(is_ancestor, repo, head, base):
                continue  # the attempt's base, or older: not the agent's own commit
            back = self.last_head or base
            ref = f"refs/heads/{self.ctx.options.target}"
            undone = await self.ctx.blocking(
                update_ref_cas, repo, ref, back, head, f"stretto: undo {task}'s move"
            )
            self.ctx.record(
                "target_restored",
                task=task,
                attempt=attempt,
                moved_to=head,
                restored_to=back if undone else None,
            )
            self.moved_by[task] = head
            return back if undone else head
        return head

    def _kick_checkout_sync(self) -> None:
        """Catch the user's checkout up with the target in the background, coalescing landings."""
        if self.syncer is None or self.syncer.done():
            self.syncer = asyncio.create_task(self._sync_loop())

    async def _sync_loop(self) -> None:
        while self.expected_head and self.synced_at != self.expected_head:
            head = self.expected_head
            await self.ctx.housekeeping(
                self.sync_checkout(head, head), "", "updating your checkout"
            )
            if self.stale_checkout is not None or self.synced_at != head:
                return

    def _merge_gates(
        self, task: Task, merged_tree: str, verified_tree: str
    ) -> list[tuple[str, Gate]]:
        gates: list[tuple[str, Gate]] = []
        # A sparse attempt's gates saw only part of the tree: they run again on the whole.
        differs = merged_tree != verified_tree or self.ctx.options.sparse is not None
        for gate in self.ctx.options.gates:
            if gate.when in ("merge", "both") or (
                gate.when == "attempt" and differs and self.ctx.options.recheck_merged
            ):
                gates.append((gate.name, command_gate(gate.name, gate.command, gate.timeout)))
        if differs and self.ctx.options.recheck_merged:
            for index, command in enumerate(task.gates, 1):
                name = f"step-{index}"
                gates.append((name, command_gate(name, command)))
        return gates
