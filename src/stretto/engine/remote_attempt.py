"""A cluster attempt as the engine sees it: the job out, the events and the result back.

:class:`RemoteBackend` does for an attempt on a worker what
:meth:`~stretto.engine.attempt.Attempts.run_here` does for a local one, and journals the same
records (``attempt_started`` names the worker's address): it builds the job (the prompt, the
task, which environment variables the agent may have *by name*, the gates; never a value of
this process's environment), has :class:`~stretto.engine.dask_backend.DaskCluster` run it on a
worker, appends the agent's output to the attempt's log as it streams in, books the usage,
fetches the verified branch from the returned bundle into the repository and hands it to the
merge queue, here, like any other.

A worker that dies mid-attempt: the attempt is journaled as ``attempt_lost`` and ends without
counting against the task (the scheduler retries it, on another worker). The scheduler lost:
the run is stopped (``stretto resume`` goes on). A result is only ever used by the attempt that
asked for it, and the merge queue lands a task once (the merge trailer is the key).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stretto.agents import AgentEvent, Outcome, delay_in_text, get_adapter, provider_of
from stretto.agents.base import reported_model
from stretto.engine import merge as merging
from stretto.engine import prompt as prompting
from stretto.engine.backend import Backend, ClusterLost, LocalBackend, WorkerLost
from stretto.engine.bundles import repo_key
from stretto.engine.gates import Verdict
from stretto.engine.journal import crashpoint
from stretto.engine.meter import AttemptMeter
from stretto.engine.outcomes import AttemptEnd, log_tail
from stretto.engine.worker_attempt import JOB_VERSION
from stretto.engine.workspace import branch_name
from stretto.errors import RunError
from stretto.git import rev_parse, run_git, user_identity
from stretto.plans.plan import Task
from stretto.process import TOKEN_VAR
from stretto.routing.dispatch import Route, adapter_kind
from stretto.routing.prices import Tokens, ceiling_price, price_tokens

if TYPE_CHECKING:
    from stretto.engine.attempt import Attempts
    from stretto.engine.dask_backend import DaskCluster


class RemoteBackend:
    """Attempts on the workers of a Dask cluster; see the module docstring."""

    name = "dask"

    def __init__(self, address: str, stop: Callable[[str], None]) -> None:
        from stretto.engine.dask_backend import DaskCluster

        self.address = address
        self.stop = stop
        self.cluster: DaskCluster = DaskCluster(address)
        self.key: str | None = None
        self.identity: tuple[str, str] | None = None  # the user's git name and email

    async def start(self) -> None:
        await self.cluster.connect()

    async def close(self) -> None:
        await self.cluster.close()

    def job(
        self, attempts: Attempts, task: Task, attempt: int, route: Route, base: str
    ) -> dict[str, Any]:
        """What is sent to the worker: no environment value of this process is in it (the
        worker builds the agent's environment from its own, the names in ``env_allow``)."""
        ctx = attempts.ctx
        options = ctx.options
        gates = attempts.attempt_gates(task)
        prompt = prompting.build_prompt(
            task,
            attempt=attempt,
            gates=[name for name, _ in gates],
            context=attempts.context,
            failure=attempts.failures.get(task.id),
        )
        if self.identity is None:
            self.identity = user_identity(ctx.repo)
        name, email = self.identity
        env = {
            TOKEN_VAR: ctx.run_id,
            "STRETTO_RUN_ID": ctx.run_id,
            "STRETTO_TASK_ID": task.id,
            "STRETTO_ATTEMPT": str(attempt),
            "STRETTO_GOAL": task.goal,
            "STRETTO_ROLE": task.role,
            "STRETTO_COMPLEXITY": task.complexity,
            "STRETTO_OWNED_FILES": "\n".join(task.files or ()),
            "STRETTO_TARGET": options.target,
        }
        for who in ("AUTHOR", "COMMITTER"):
            env[f"GIT_{who}_NAME"], env[f"GIT_{who}_EMAIL"] = name, email
        if self.key is None:
            self.key = repo_key(ctx.repo)
        return {
            "v": JOB_VERSION,
            "key": f"stretto-{ctx.run_id}-{task.id}-{attempt}",
            "topic": f"stretto-{ctx.run_id}",
            "repo_key": self.key,
            "run_id": ctx.run_id,
            "task": task,
            "attempt": attempt,
            "base": base,
            "bundle_ref": f"refs/stretto/bundle/{ctx.run_id}-{task.id}-{attempt}",
            "prompt": prompt,
            "agent": route.agent,
            "settings": dict(options.agent_settings.get(route.agent, {})),
            "model": route.model,
            "timeout": task.timeout or options.agent_timeout,
            "env": env,
            "env_allow": list(options.env_allow),
            "scope": options.scope,
            "gates": [(g.name, g.command, float(g.timeout), g.when) for g in options.gates],
            "link_dirs": list(options.link_dirs),
            "setup": list(options.setup),
            "sparse": list(options.sparse) if options.sparse is not None else None,
        }

    async def run(self, attempts: Attempts, task: Task, attempt: int, route: Route) -> AttemptEnd:
        ctx = attempts.ctx
        folder = ctx.attempt_dir(task.id, attempt)
        folder.mkdir(parents=True, exist_ok=True)
        wait = attempts.not_before.pop(task.id, 0.0) - time.monotonic()
        if wait > 0:
            ctx.record(
                "decision", action="backoff", task=task.id, attempt=attempt, seconds=round(wait, 3)
            )
            await asyncio.sleep(wait)
        stop = attempts.stop_reason(route.agent)
        if stop is not None:
            attempts.stopping[task.id] = stop
            return AttemptEnd(False, False, f"stopped: {stop}")
        base = attempts.queue.expected_head or await ctx.blocking(ctx.target_head)
        job = self.job(attempts, task, attempt, route, base)
        (folder / "prompt.md").write_text(job["prompt"])
        log = folder / "agent.log"
        adapter = get_adapter(route.agent, ctx.options.agent_settings.get(route.agent))
        spawn = ctx.intent(
            "remote_spawn", task=task.id, attempt=attempt, agent=route.agent, base=base
        )
        crashpoint("after-intent:spawn")
        streamed = log.open("ab", buffering=0)
        events: list[AgentEvent] = []
        meter = self._meter(attempts, route, events)
        over: list[str] = []  # why the meter stopped the agent ([attempt] limits)
        running: asyncio.Future[dict[str, Any]] | None = None

        def on_event(worker: str, msg: dict[str, Any]) -> None:
            if "started" in msg:
                ctx.record(
                    "attempt_started",
                    task=task.id,
                    attempt=attempt,
                    agent=route.agent,
                    model=route.model,
                    tier=route.tier,
                    workspace=None,
                    branch=msg.get("branch"),
                    base=msg.get("base"),
                    pid=msg["started"],
                    worker=worker,
                )
            for line, stream in msg.get("lines", ()):
                with contextlib.suppress(OSError):
                    streamed.write(line.encode() + b"\n")
                if not over:  # usage and the limits, judged here as the lines arrive
                    parsed = adapter.parse_line(line, stream)
                    events.extend(parsed)
                    meter.add(parsed)
                    why = meter.over() if meter.active else None
                    if why is not None and running is not None:
                        over.append(why)
                        running.cancel()  # the worker sees it and ends the agent

        attempts.in_agent.add(task.id)
        try:
            running = asyncio.ensure_future(self.cluster.execute(ctx.repo, job, on_event))
            try:
                result = await running
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not over or (current is not None and current.cancelling()):
                    if task.id in attempts.stopping:  # stopped (budget, cancel): still spent
                        stopped = adapter.decide(None, False, events)
                        model = reported_model(events) or route.model
                        attempts.dispatch.book(
                            task, attempt, route, stopped.usage, stopped.cost_usd, "stopped",
                            model=model,
                        )  # fmt: skip
                    raise
                ctx.journal.done(spawn, stopped=over[0])
                return self._over_limit(attempts, task, attempt, route, adapter, events, over[0])
        except WorkerLost as lost:
            ctx.journal.fail(spawn, f"worker {lost.address} lost")
            ctx.record("attempt_lost", task=task.id, attempt=attempt, worker=lost.address)
            return AttemptEnd(
                False, False, f"worker {lost.address} left the cluster during the attempt"
            )
        except ClusterLost as gone:
            why = f"the cluster is lost: {gone}"
            attempts.stopping[task.id] = why
            ctx.journal.fail(spawn, why)
            self.stop(why)
            return AttemptEnd(False, False, f"stopped: {why}")
        finally:
            attempts.in_agent.discard(task.id)
            streamed.close()
        return await self._judge(attempts, task, attempt, route, adapter, result, spawn, folder)

    def _meter(self, attempts: Attempts, route: Route, events: list[AgentEvent]) -> AttemptMeter:
        """The ``[attempt]`` limits of one attempt (``events``: what its agent reported so
        far), priced as a local attempt is."""
        options = attempts.ctx.options
        provider = provider_of(route.agent, options.agent_settings)

        def price(tokens: Tokens) -> float | None:
            model = reported_model(events) or route.model
            known = price_tokens(model, tokens, prices=attempts.dispatch.prices)
            return known if known is not None else ceiling_price(tokens, provider)

        return AttemptMeter(options.limits, adapter_kind(route.agent, options), price)

    def _over_limit(
        self,
        attempts: Attempts,
        task: Task,
        attempt: int,
        route: Route,
        adapter: Any,
        events: list[AgentEvent],
        why: str,
    ) -> AttemptEnd:
        """The meter stopped the agent on its worker: book what it used, journal the end."""
        ctx = attempts.ctx
        decided = adapter.decide(None, False, events)
        model = reported_model(events) or route.model
        entry = attempts.dispatch.book(
            task, attempt, route, decided.usage, decided.cost_usd, "over_limit", model=model
        )
        attempts.cost_of[task.id] = entry.cost_usd
        attempts.on_spent()
        reason = f"stopped: {why}"
        ctx.record(
            "attempt_finished",
            task=task.id,
            attempt=attempt,
            outcome=Outcome.OVER_LIMIT.value,
            model=model,
            exit_code=None,
            reason=reason,
            duration=None,
            usage=dict(decided.usage),
            turns=sum(1 for event in events if event.kind == "tool") or None,
            cost_usd=entry.cost_usd,
            cost_source=entry.source,
            reported_cost_usd=decided.cost_usd,
            ledger=entry.to_dict(),
            head=None,
        )
        folder = ctx.attempt_dir(task.id, attempt)
        return AttemptEnd(
            False,
            Outcome.OVER_LIMIT.counts_as_failure,
            f"agent {route.agent}: over_limit ({reason})",
            log_tail(folder / "agent.log"),
        )

    async def _judge(
        self,
        attempts: Attempts,
        task: Task,
        attempt: int,
        route: Route,
        adapter: Any,
        result: dict[str, Any],
        spawn: Any,
        folder: Path,
    ) -> AttemptEnd:
        ctx = attempts.ctx
        worker = str(result.get("worker", "?"))
        if "error" in result or "workspace_error" in result:
            why = result.get("error") or f"workspace setup failed: {result['workspace_error']}"
            ctx.journal.fail(spawn, why)
            return AttemptEnd(False, True, f"on worker {worker}: {why}")
        if "missing_cli" in result:
            program = result["missing_cli"]
            why = (
                f"worker {worker} (host {result.get('host')}) has no `{program}` on its PATH: "
                f"install the {route.agent} agent's CLI there (and its credentials)"
            )
            ctx.journal.fail(spawn, why)
            unfit = self.cluster.unfit.setdefault(route.agent, set())
            unfit.add(worker)
            others = [w for w in self.cluster.workers if w not in unfit]
            ctx.record(
                "worker_unfit",
                task=task.id,
                attempt=attempt,
                worker=worker,
                reason=why,
                others=len(others),
            )
            if others:  # not the task's fault: another worker may have it
                return AttemptEnd(False, False, why)
            return AttemptEnd(False, True, why)
        (folder / "agent.log").write_bytes(result.get("log", b""))  # the whole log, in order
        events: list[AgentEvent] = []
        for line, stream in result.get("lines", ()):
            events.extend(adapter.parse_line(line, stream))
        decided = adapter.decide(result.get("exit_code"), bool(result.get("timed_out")), events)
        attempts.agent_seconds += float(result.get("duration", 0.0))
        turns = sum(1 for event in events if event.kind == "tool") or None
        entry = attempts.dispatch.book(
            task,
            attempt,
            route,
            decided.usage,
            decided.cost_usd,
            decided.outcome.value,
            model=result.get("model"),
            turns=turns,
        )
        attempts.cost_of[task.id] = entry.cost_usd
        attempts.on_spent()
        ctx.journal.done(spawn, exit_code=result.get("exit_code"), worker=worker)
        crashpoint("after-agent")
        agent_tail = log_tail(folder / "agent.log")
        if "commit_error" in result:
            return AttemptEnd(
                False,
                True,
                "the agent left its worktree in a state stretto cannot commit: "
                + str(result["commit_error"]),
                agent_tail,
            )
        head, base = str(result["head"]), str(result["base"])
        ctx.record(
            "attempt_finished",
            task=task.id,
            attempt=attempt,
            outcome=decided.outcome.value,
            model=result.get("model"),
            exit_code=result.get("exit_code"),
            reason=decided.reason,
            duration=round(float(result.get("duration", 0.0)), 3),
            usage=dict(decided.usage),
            turns=turns,
            cost_usd=entry.cost_usd,
            cost_source=entry.source,
            reported_cost_usd=decided.cost_usd,
            ledger=entry.to_dict(),
            head=head,
            worker=worker,
            phases=result.get("phases"),
        )
        if decided.outcome is not Outcome.SUCCESS:
            counts = decided.outcome.counts_as_failure
            if not counts:
                attempts.uncounted[task.id] = attempts.uncounted.get(task.id, 0) + 1
                counts = attempts.uncounted[task.id] > ctx.options.limits.max_rate_limited
            retry_after = decided.retry_after
            if retry_after is None and decided.outcome is Outcome.RATE_LIMITED:
                retry_after = delay_in_text(decided.reason)
            return AttemptEnd(
                False,
                counts,
                f"agent {route.agent}: {decided.outcome.value}"
                + (f" ({decided.reason})" if decided.reason else ""),
                agent_tail,
                retry_after=retry_after,
                rate_limited=decided.outcome is Outcome.RATE_LIMITED,
                out_of_credit=(
                    decided.reason or "out of credit"
                    if decided.outcome is Outcome.OUT_OF_CREDIT
                    else None
                ),
            )
        if head == base:
            return AttemptEnd(False, True, "the agent made no changes", agent_tail)
        if result.get("rewritten"):
            return AttemptEnd(
                False,
                True,
                f"the agent rewrote its branch's history: it no longer contains its base commit "
                f"{base[:12]}; work must be new commits on top of the base",
                agent_tail,
            )
        verdicts = self._gate_records(attempts, task, attempt, head, result, folder)
        failed = [v for v in verdicts if not v.passed]
        if failed:
            return AttemptEnd(
                False,
                True,
                "gates failed: " + "; ".join(f"{v.gate}: {v.summary}" for v in failed),
                "\n".join(log_tail(v.log, 1500) for v in failed if v.log),
            )
        branch = branch_name(ctx.run_id, task.id, attempt)
        await ctx.blocking(fetch_branch, ctx.repo, result["bundle"], branch, head)
        tree = merging.tree_of(ctx.repo, head) or ""
        ctx.record("verified", task=task.id, attempt=attempt, commit=head, tree=tree)
        crashpoint("after-verified")
        env = ctx.env(task, attempt)
        end = await attempts.land(task, attempt, head, tree, env, base)
        if end.landed:
            await ctx.blocking(
                run_git, ["update-ref", "-d", f"refs/heads/{branch}", head], ctx.repo, check=False
            )
        return end

    def _gate_records(
        self,
        attempts: Attempts,
        task: Task,
        attempt: int,
        head: str,
        result: dict[str, Any],
        folder: Path,
    ) -> list[Verdict]:
        """Journal the gates the worker ran (their logs saved in the attempt's folder)."""
        ctx = attempts.ctx
        raw = result.get("verdicts") or []
        if not raw:
            return []
        intent = ctx.intent(
            "gates",
            task=task.id,
            attempt=attempt,
            stage="attempt",
            commit=head,
            gates=[v["gate"] for v in raw],
            worker=result.get("worker"),
        )
        verdicts = []
        for item in raw:
            log = None
            if item.get("log_text") is not None:
                log = folder / "gates" / f"{item['gate']}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_bytes(item["log_text"])
            verdict = Verdict(
                str(item["gate"]),
                bool(item["passed"]),
                str(item["summary"]),
                log,
                float(item.get("duration", 0.0)),
                bool(item.get("warning")),
            )
            verdicts.append(verdict)
            ctx.record(
                "gate_result", task=task.id, attempt=attempt, stage="attempt", **verdict.to_dict()
            )
        ctx.journal.done(intent, passed=all(v.passed for v in verdicts))
        return verdicts


def fetch_branch(repo: Path, bundle: bytes, branch: str, head: str) -> None:
    """Put the attempt's branch from a worker's bundle into ``repo`` (at ``head``)."""
    with tempfile.TemporaryDirectory(prefix="stretto-bundle-") as tmp:
        path = Path(tmp) / "branch.bundle"
        path.write_bytes(bundle)
        refspec = f"+refs/heads/{branch}:refs/heads/{branch}"
        run_git(["fetch", "-q", "--no-tags", str(path), refspec], repo)
    got = rev_parse(repo, f"refs/heads/{branch}")
    if got != head:
        raise RunError(f"the bundle of {branch} holds {got}, not the verified {head}")


def open_backend(cluster: str | None, stop: Callable[[str], None]) -> Backend:
    """The backend of a run: local without ``cluster``, else attempts on that Dask scheduler's
    workers (``stop(why)`` is called if the cluster is lost mid-run). Dask is imported only
    in the second case."""
    if not cluster:
        return LocalBackend()
    return RemoteBackend(cluster, stop)
