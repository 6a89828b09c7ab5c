"""Dispatch: which agent and model each attempt gets, whether the budget allows it, what it cost.

The runner asks three things of a :class:`Dispatch` around every attempt, and it answers from the
pure parts (:mod:`~stretto.routing.router`, :mod:`~stretto.routing.ledger`) plus two files that
live across runs, ``.stretto/router/policy.json`` and ``.stretto/ledger.jsonl``:

* :meth:`Dispatch.route` before a spawn: the arm (agent, model, tier) for this attempt. Pins in the
  step win; without ``[[router.arms]]`` the step's agent (or the default agent) and model are used
  as before. The choice, with its feature vector and every arm's estimate, is journaled so
  ``stretto explain`` can show why.
* :meth:`Dispatch.admit` before a spawn: the attempt's estimated cost, plus what running attempts
  have reserved, against what is left of the run's budget and of the daily cap.
* :meth:`Dispatch.book` after the agent exits: a ledger entry with tokens and dollars (reported,
  priced from the price table, or flagged as unknown); :meth:`Dispatch.learn` once the gates and
  the merge queue have judged the attempt: the bandit's update.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stretto.agents import provider_of
from stretto.config import RouterSettings
from stretto.localmodels import server_of
from stretto.options import RunOptions
from stretto.plans.plan import Task
from stretto.routing.arms import Arm, RouterConfig
from stretto.routing.features import FailedAttempt, TaskContext, estimate_tokens, language_of
from stretto.routing.ledger import (
    BudgetCheck,
    Entry,
    Ledger,
    ModelPrice,
    check_budget,
    estimate_attempt_cost,
    make_entry,
    model_prices,
    past_median,
)
from stretto.routing.router import Policy, reward, update_policy, update_policy_task

POLICY_FILE = Path(".stretto") / "router" / "policy.json"


@dataclass(frozen=True, slots=True)
class Route:
    """The arm one attempt runs on, and why."""

    agent: str
    model: str | None
    tier: str | None
    rule: str  # a router rule, or "default" when no arms are configured
    reason: str
    context: TaskContext
    estimate: float | None  # USD this attempt is expected to cost (None: unknown price)
    choice: Mapping[str, Any] | None = None  # the router's explanation (None without a router)

    @property
    def arm(self) -> Arm:
        """The arm as the router knows it."""
        return Arm(self.agent, self.model, self.tier or "balanced")

    def to_dict(self) -> dict[str, Any]:
        """Fields of the journal's ``route`` record."""
        return {
            "agent": self.agent,
            "model": self.model,
            "tier": self.tier,
            "rule": self.rule,
            "reason": self.reason,
            "estimate_usd": self.estimate,
            "choice": dict(self.choice) if self.choice else None,
        }


def router_config(settings: RouterSettings) -> RouterConfig:
    """The router's view of ``[router]``."""
    return RouterConfig(
        arms=tuple(Arm(a.agent, a.model, a.tier) for a in settings.arms),
        warmup=settings.warmup,
        alpha=settings.alpha,
        cost_ceiling=settings.cost_ceiling,
        min_tier=dict(settings.min_tier),
        credit=settings.credit,
        landed_value_usd=settings.landed_value_usd,
    )


def load_policy(repo: Path, options: RunOptions) -> Policy | None:
    """The repository's routing policy (a fresh one if none yet); None without arms."""
    config = router_config(options.router)
    if not config.enabled:
        return None
    return Policy.load(repo / POLICY_FILE, config)


def adapter_kind(agent: str, options: RunOptions) -> str:
    """The adapter behind an agent name (a profile's ``adapter``, else the name itself)."""
    return str(options.agent_settings.get(agent, {}).get("adapter") or agent)


def planner_call_entry(
    call: Any,
    *,
    run_id: str,
    task: str,
    number: int,
    kind: str,
    agent_kind: str,
    prices: Mapping[str, ModelPrice],
    local: str | None = None,
) -> Entry:
    """The ledger entry of a planning call (a ``stretto.planning.planner.PlannerCall``): ``kind`` is
    "plan" or "split"; ``number`` counts the run's calls (stored as attempt ``-number``);
    ``local``: the local model server the planner ran on ($0)."""
    return make_entry(
        run_id=run_id,
        task=task,
        attempt=-number,
        kind=kind,
        agent=call.agent,
        agent_kind=agent_kind,
        model=call.model,
        tier=None,
        usage=call.usage,
        reported_cost=call.cost_usd,
        outcome="success" if call.exit_code == 0 else f"exit {call.exit_code}",
        prices=prices,
        local=local,
        seconds=getattr(call, "duration", None),
    )


def planner_call_record(call: Any, entry: Entry) -> dict[str, Any]:
    """The fields of the journal's ``planner_call`` record."""
    return {
        "task": entry.task,
        "call": call.kind,
        "agent": call.agent,
        "model": call.model,
        "duration": round(call.duration, 3),
        "exit_code": call.exit_code,
        "cost_usd": entry.cost_usd,
        "cost_source": entry.source,
        "usage": dict(call.usage),
    }


def today() -> str:
    """The current UTC day, as the ledger's budgets count it."""
    return time.strftime("%Y-%m-%d", time.gmtime())


def attempt_context(
    task: Task,
    attempt: int,
    *,
    repo: str = "",
    language: str = "",
    failed: FailedAttempt | None = None,
) -> TaskContext:
    """What the router knows about ``attempt`` of ``task`` before it starts: the step, the
    repository's name and language (the language of the step's owned files wins), and on
    a retry what the failed attempt used."""
    return TaskContext(
        complexity=task.complexity,
        role=task.role,
        files=task.files,
        attempt=attempt,
        est_tokens=estimate_tokens(task.complexity, task.files),
        repo=repo,
        language=language_of(task.files or ()) or language,
        failed=failed if attempt > 1 else None,
    )


def route_by_policy(
    policy: Policy,
    task: Task,
    context: TaskContext,
    failed: Arm | None,
    unavailable: Collection[str],
    estimate: Callable[[Arm], float | None],
    tried: Collection[str] = (),
) -> Route:
    """The policy's route for an attempt in ``context`` (the step's pins obeyed);
    ``estimate`` prices the chosen arm. Shared by :class:`Dispatch` and the offline router."""
    choice = policy.choose(
        context,
        pinned_agent=task.agent,
        pinned_model=task.model,
        failed=failed,
        unavailable=unavailable,
        tried=tried,
    )
    arm = choice.arm
    return Route(
        arm.agent,
        arm.model,
        arm.tier,
        choice.rule,
        choice.reason,
        context,
        estimate(arm),
        choice.to_dict(),
    )


def attempt_reward(
    config: RouterConfig, route: Route, landed: bool, cost: float | None
) -> float | None:
    """What the route's arm learns from a judged attempt with attempt credit (None: nothing,
    the arm was pinned)."""
    if route.rule == "pinned":
        return None
    return reward(landed, cost, config.cost_ceiling)


class Dispatch:
    """Routing, budget and cost bookkeeping for one run; see the module docstring."""

    def __init__(self, repo: Path, run_id: str, options: RunOptions) -> None:
        self.repo = repo
        self.run_id = run_id
        self.options = options
        self.config = router_config(options.router)
        self.policy = load_policy(repo, options)
        self.prices = model_prices(options.prices)
        self.ledger = Ledger.for_repo(repo)
        self.history: list[Entry] = self.ledger.entries()
        # (agent, model, complexity) -> costs of past attempts, for estimates
        self.past: dict[tuple[str, str | None, str], list[float]] = {}
        for entry in self.history:
            self._remember(entry)
        self.day = today()
        # Spend counted against the budgets: unknown prices at their bound (Entry.counted_usd).
        self.run_spent = sum(e.counted_usd for e in self.history if e.run_id == run_id)
        self.day_spent = sum(e.counted_usd for e in self.history if _day(e.ts) == self.day)
        self.unpriced = sum(1 for e in self.history if e.run_id == run_id and e.source == "unknown")
        # why the budgets cannot be kept: spend of unknown price with no bound, booked by this
        # process (a resume goes on: what the stopped run spent was already told)
        self.unbounded: str | None = None
        self.reserved: dict[str, float] = {}  # task -> estimate of its running attempt
        self.failed_arm: dict[str, Arm] = {}  # task -> arm of its last counted failure
        self.tried: dict[str, set[str]] = {}  # task -> keys of the arms that failed it
        self.spent: dict[str, FailedAttempt] = {}  # task -> what its last attempt used
        self.repo_name = repo.resolve().name
        self.language = repo_language(repo) if self.policy is not None else ""
        self.routes: dict[str, Route] = {}  # task -> route of its current attempt
        # task -> its judged attempts so far (route, cost), credited when the task ends
        self.judged: dict[str, list[tuple[Route, float | None]]] = {}

    # ------------------------------------------------------------------ before a spawn

    def route(self, task: Task, attempt: int, unavailable: Collection[str] = ()) -> Route:
        """The arm for ``attempt`` of ``task``, remembered as its current route (journal it
        with :meth:`Route.to_dict`). ``unavailable``: agents out of credit, avoided if any
        other arm may take the attempt."""
        route = self.choose(task, attempt, self.failed_arm.get(task.id), unavailable)
        if route.rule == "give-up":
            return route  # the runner ends the task; no attempt runs
        self.routes[task.id] = route
        return route

    def choose(
        self,
        task: Task,
        attempt: int,
        failed: Arm | None,
        unavailable: Collection[str] = (),
        tried: Collection[str] | None = None,
    ) -> Route:
        """The arm for ``attempt`` of ``task`` after a failure on ``failed`` (None: none yet);
        ``tried``: keys of the arms that failed the task (None: as this run has seen them).

        Changes nothing: the dry run asks it for every attempt of a task's cost range.
        """
        failed_use = self.spent.get(task.id) if failed is not None else None
        context = attempt_context(
            task, attempt, repo=self.repo_name, language=self.language, failed=failed_use
        )
        if self.policy is None:
            agent = task.agent or self.options.default_agent
            return Route(
                agent,
                task.model,
                None,
                "default",
                "no [[router.arms]] configured: the step's agent or the default agent",
                context,
                self._estimate(agent, task.model, context),
            )
        return route_by_policy(
            self.policy,
            task,
            context,
            failed,
            unavailable,
            lambda arm: self._estimate(arm.agent, arm.model, context),
            (self.tried.get(task.id, ()) if tried is None else tried) if failed else (),
        )

    def local_server(self, agent: str) -> str | None:
        """The local model server ``agent`` runs on (``local = "NAME"``), if any."""
        server = server_of(self.options.agent_settings.get(agent))
        return server.name if server is not None else None

    def _estimate(self, agent: str, model: str | None, context: TaskContext) -> float | None:
        """The median cost of past attempts like this one, else a priced token estimate;
        $0 on a local server."""
        if self.local_server(agent) is not None:
            return 0.0
        typical = past_median(self.past.get((agent, model, context.complexity), []))
        if typical is not None:
            return typical
        return estimate_attempt_cost(
            adapter_kind(agent, self.options),
            model,
            context.complexity,
            context.est_tokens,
            (),
            prices=self.prices,
        )

    def _remember(self, entry: Entry) -> None:
        if entry.kind == "attempt" and entry.cost_usd is not None:
            key = (entry.agent, entry.model, entry.complexity or "")
            self.past.setdefault(key, []).append(entry.cost_usd)

    @property
    def limited(self) -> bool:
        """Whether any budget applies to this run."""
        return self.options.budget is not None or self.options.daily_cap is not None

    def admit(self, route: Route) -> BudgetCheck:
        """May an attempt on ``route`` start within the run budget and the daily cap? One on a
        local server always may: it costs nothing, and budgets ignore it."""
        self._roll_day()
        local = self.local_server(route.agent)
        if local is not None:
            return BudgetCheck(True, 0.0, None, f"local model server {local!r}: free, no budget")
        return check_budget(
            estimate=route.estimate,
            run_spent=self.run_spent,
            run_budget=self.options.budget,
            day_spent=self.day_spent,
            daily_cap=self.options.daily_cap,
            reserved=sum(self.reserved.values()),
        )

    def reserve(self, task: str, route: Route) -> None:
        """Hold the attempt's estimate against the budget while it runs."""
        self.reserved[task] = route.estimate or 0.0

    def exceeded(self) -> bool:
        """Whether what was spent has reached a budget (for ``on_exceed = "stop"``)."""
        run = self.options.budget is not None and self.run_spent >= self.options.budget
        day = self.options.daily_cap is not None and self.day_spent >= self.options.daily_cap
        return run or day or (self.limited and self.unbounded is not None)

    def _roll_day(self) -> None:
        if today() != self.day:
            self.day = today()
            self.day_spent = sum(e.counted_usd for e in self.history if _day(e.ts) == self.day)

    # ------------------------------------------------------------------ after an attempt

    def book(
        self,
        task: Task,
        attempt: int,
        route: Route,
        usage: Mapping[str, int],
        reported_cost: float | None,
        outcome: str,
        *,
        kind: str = "attempt",
        model: str | None = None,
        turns: int | None = None,
        seconds: float | None = None,
    ) -> Entry:
        """Write the attempt's ledger entry and count its cost against the budgets; remember
        what the attempt used (``turns``: its agent steps, if known) for a retry's choice.

        ``model`` is the model the agent actually ran on (what its CLI reported, or the default
        its adapter picked), which prices the tokens; None falls back to the route's model.
        """
        self.reserved.pop(task.id, None)
        entry = make_entry(
            run_id=self.run_id,
            task=task.id,
            attempt=attempt,
            kind=kind,
            agent=route.agent,
            agent_kind=adapter_kind(route.agent, self.options),
            model=model or route.model,
            tier=route.tier,
            usage=usage,
            reported_cost=reported_cost,
            outcome=outcome,
            prices=self.prices,
            provider=provider_of(route.agent, self.options.agent_settings),
            complexity=task.complexity,
            local=self.local_server(route.agent),
            seconds=seconds,
        )
        self.add(entry)
        tokens = entry.tokens.total or None
        self.spent[task.id] = FailedAttempt(route.arm.key, turns, tokens, entry.cost_usd)
        return entry

    def add(self, entry: Entry) -> None:
        """Append an entry (an attempt's or a planning call's) and count it."""
        self.ledger.append(entry)
        self.history.append(entry)
        self._remember(entry)
        self.run_spent += entry.counted_usd
        self._roll_day()
        if _day(entry.ts) == self.day:
            self.day_spent += entry.counted_usd
        if entry.source == "unknown":
            self.unpriced += 1
        self._check_bounded(entry)

    def _check_bounded(self, entry: Entry) -> None:
        """Spend of unknown price with no bound cannot be kept within a budget: say why."""
        if entry.source != "unknown" or entry.bound_usd is not None or self.unbounded:
            return
        model = f"model {entry.model}" if entry.model else "no model named"
        self.unbounded = (
            f"spend of unknown price: {entry.agent} ({model}) used tokens that neither "
            "[prices] in stretto.toml nor the bundled price table can price, and its provider "
            f'has no known top price to count them at; add [prices."{entry.model or "MODEL"}"] '
            "to stretto.toml (new runs read it) or name a priced model, or run without a budget"
        )

    def learn(self, task: str, landed: bool, cost: float | None) -> list[dict[str, Any]]:
        """The gates and merge queue judged the attempt on the task's current route.

        With ``credit = "attempt"`` (the default) its arm learns now; with ``"task"`` the task's
        attempts are credited together when it lands, or by :meth:`task_failed`. Returns what
        was learned, for the journal.
        """
        route = self.routes.get(task)
        if landed:
            self.failed_arm.pop(task, None)
            self.tried.pop(task, None)
        elif route is not None:
            self.failed_arm[task] = route.arm
            self.tried.setdefault(task, set()).add(route.arm.key)
        if self.policy is None or route is None:
            return []
        self.judged.setdefault(task, []).append((route, cost))
        if self.config.credit == "task":
            return self._credit(task, landed=True) if landed else []
        value = attempt_reward(self.config, route, landed, cost)
        if value is None:
            return []
        self.policy = update_policy(
            self.repo / POLICY_FILE,
            self.config,
            route.arm,
            route.context,
            value,
            cost,
            landed=landed,
        )
        return [{"arm": route.arm.key, "reward": round(value, 6), "landed": landed}]

    def task_failed(self, task: str) -> list[dict[str, Any]]:
        """The task ended without landing (given up, or split): credit its attempts with 0."""
        if self.policy is None or self.config.credit != "task" or task not in self.judged:
            return []
        return self._credit(task, landed=False)

    def _credit(self, task: str, *, landed: bool) -> list[dict[str, Any]]:
        judged = self.judged.pop(task, [])
        if not judged:
            return []
        attempts = [(route.arm, route.context, cost) for route, cost in judged]
        skip = [n for n, (route, _) in enumerate(judged, 1) if route.rule == "pinned"]
        self.policy = update_policy_task(
            self.repo / POLICY_FILE, self.config, attempts, landed, skip=skip
        )
        return [  # numbered by the attempts' own numbers (rate-limited ones are not judged)
            {**record, "attempt": route.context.attempt}
            for record, (route, _) in zip(self.policy.credited, judged, strict=True)
        ]

    def restore(self, records: Iterable[Any]) -> list[Entry]:
        """Resume: routes and failed arms from the journal; ledger entries a crash lost.

        Returns the entries that were re-added to the ledger.
        """
        booked = {e.key for e in self.history}
        routes: dict[tuple[str, int], Mapping[str, Any]] = {}
        costs: dict[tuple[str, int], float | None] = {}
        used: dict[tuple[str, int], tuple[int | None, int | None, float | None]] = {}
        added: list[Entry] = []
        for rec in records:
            f = rec.fields
            if rec.type == "route":
                routes[(f["task"], int(f["attempt"]))] = f
            elif rec.type == "decision" and f.get("action") in ("retry", "give_up"):
                key = (f["task"], int(f.get("attempt", 0)))
                seen = routes.get(key)
                if seen and f.get("counted", True):
                    arm = Arm(seen["agent"], seen.get("model"), seen.get("tier") or "balanced")
                    self.failed_arm[f["task"]] = arm
                    self.tried.setdefault(f["task"], set()).add(arm.key)
                    use = used.get(key)
                    if use is not None:
                        self.spent[f["task"]] = FailedAttempt(arm.key, *use)
                    judged = _judged_route(seen, key[1])
                    if judged is not None:
                        self.judged.setdefault(key[0], []).append((judged, costs.get(key)))
            elif rec.type == "task_finished":
                self.judged.pop(f.get("task", ""), None)  # credited when it finished
            elif rec.type == "attempt_finished":
                costs[(f["task"], int(f["attempt"]))] = f.get("cost_usd")
                usage = f.get("usage") or {}
                tokens = sum(v for v in usage.values() if isinstance(v, int)) or None
                used[(f["task"], int(f["attempt"]))] = (f.get("turns"), tokens, f.get("cost_usd"))
            elif rec.type == "attempt_finished" and isinstance(f.get("ledger"), dict):
                entry = Entry.from_dict(f["ledger"])
                if entry.key not in booked:
                    self.add(entry)
                    booked.add(entry.key)
                    added.append(entry)
        return added


def _judged_route(fields: Mapping[str, Any], attempt: int) -> Route | None:
    """A journaled route, as far as crediting its attempt needs it (None: it was not routed)."""
    choice = fields.get("choice") or {}
    context = choice.get("context")
    if not context:
        return None
    files, failed = context.get("files"), context.get("failed")
    ctx = TaskContext(
        complexity=context["complexity"],
        role=context["role"],
        files=tuple(files) if files is not None else None,
        attempt=int(context.get("attempt", attempt)),
        est_tokens=int(context["est_tokens"]),
        repo=str(context.get("repo", "")),
        language=str(context.get("language", "")),
        failed=None
        if not failed
        else FailedAttempt(
            str(failed["arm"]), failed.get("turns"), failed.get("tokens"), failed.get("cost_usd")
        ),
    )
    return Route(
        fields["agent"],
        fields.get("model"),
        fields.get("tier"),
        str(fields.get("rule", "")),
        "",
        ctx,
        fields.get("estimate_usd"),
        choice,
    )


def repo_language(repo: Path) -> str:
    """The language most of the repository's tracked files are written in ("" if unknown)."""
    import subprocess

    from stretto.git import run_git

    try:
        listed = run_git(["ls-files"], repo, check=False, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return language_of(listed.splitlines())


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))
