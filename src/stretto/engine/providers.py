"""Agents at once per provider: halved when the provider rate-limits, one back per landing;
none once it is out of credit.

Every agent sends its requests to a provider (anthropic, openai, google, …; ``provider = "…"``
in ``[agents.NAME]`` overrides the built-in one). When an attempt ends rate-limited, the
provider's limit drops to half the agents it was running (at least one); each attempt that
lands on it raises the limit by one again, up to ``max_agents``. Other providers keep their
agents.

A task whose agent is fixed (pinned, or the default with no router) belongs to its provider's
pool in the scheduler (``provider:NAME``), which then never starts too many. A routed task's
provider is known only once its arm is chosen, so the runner asks :meth:`ProviderLimits.admit`
at spawn time.

An agent on a local model server (``local = "NAME"``) goes to provider ``local:NAME``, whose
limit never exceeds the server's ``max_parallel``: at most that many of its agents run at once,
so a GPU that serves one request at a time is not handed a dozen.

A provider that says the account has no credit left gets nothing more in the run
(:meth:`ProviderLimits.out_of_credit`); the router is told to avoid its agents
(:meth:`ProviderLimits.unavailable`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stretto.agents import PROVIDERS, provider_of
from stretto.engine.outcomes import AttemptEnd
from stretto.localmodels import server_of
from stretto.options import RunOptions
from stretto.plans.plan import Plan

if TYPE_CHECKING:
    from stretto.routing.dispatch import Route

__all__ = ["PROVIDERS", "LimitChange", "ProviderLimits", "provider_of"]


@dataclass(frozen=True, slots=True)
class LimitChange:
    """A provider's limit moved: ``action`` is ``backoff`` or ``recover``."""

    action: str
    provider: str
    limit: int
    was: int


class ProviderLimits:
    """The agents each provider may run at once, and which provider each task is using."""

    def __init__(self, plan: Plan, options: RunOptions, routes: Mapping[str, Route]) -> None:
        """``routes``: each routed task's current route (the dispatcher's, kept up to date)."""
        self.settings = options.agent_settings
        self.routes = routes
        routed = bool(options.router.arms)
        self.ceiling = options.max_agents
        # Routed tasks learn their agent (and provider) per attempt, at spawn.
        self.fixed = {
            t.id: provider_of(t.agent or options.default_agent, self.settings)
            for t in plan.tasks
            if not routed or t.agent
        }
        self.agents = {t.id: t.agent or options.default_agent for t in plan.tasks}
        self.arm_agents = tuple(a.agent for a in options.router.arms)
        self.no_credit: dict[str, str] = {}  # provider (or agent) out of credit -> what it said
        arms = (provider_of(a.agent, self.settings) for a in options.router.arms)
        # local:NAME -> the server's max_parallel: its limit's ceiling
        self.cap = {
            server.provider: server.max_parallel
            for server in (server_of(table) for table in self.settings.values())
            if server is not None
        }
        self.limit = {p: self.top(p) for p in (*self.fixed.values(), *arms) if p}

    def top(self, provider: str) -> int:
        """The most agents ``provider`` may ever run at once: ``max_agents``, or a local
        server's ``max_parallel`` if smaller."""
        return min(self.ceiling, self.cap.get(provider, self.ceiling))

    def explain(self, pool: str | None) -> str | None:
        """Why a task waits for ``pool`` (a scheduler pool name), in words; None: no words."""
        if not pool or not pool.startswith("provider:"):
            return None
        provider = pool.removeprefix("provider:")
        limit = self.limit.get(provider, self.top(provider))
        if provider in self.cap:
            name = provider.removeprefix("local:")
            return (
                f"waiting for a slot on local model server {name!r}: {limit} of "
                f"max_parallel = {self.cap[provider]} in use"
            )
        return f"waiting for a slot at provider {provider!r} ({limit} agents at once)"

    def fixed_agent(self, task: str) -> str | None:
        """The agent of ``task`` when it is fixed (not chosen by the router), else None."""
        return self.agents.get(task) if task in self.fixed else None

    def pools(self) -> dict[str, tuple[str, ...]]:
        """The scheduler pools of the tasks whose agent is fixed."""
        return {task: (f"provider:{p}",) for task, p in self.fixed.items() if p}

    def of(self, task: str) -> str | None:
        """The provider ``task`` is using (or will use), if any."""
        if task in self.fixed:
            return self.fixed[task]
        route = self.routes.get(task)
        return provider_of(route.agent, self.settings) if route is not None else None

    def in_use(self, running: Iterable[str]) -> dict[str, int]:
        """Agents running per provider, among the ``running`` tasks."""
        counts = dict.fromkeys(self.limit, 0)
        for task in running:
            provider = self.of(task)
            if provider:
                counts[provider] = counts.get(provider, 0) + 1
        return counts

    def free(self, in_use: Mapping[str, int]) -> dict[str, int]:
        """Free places per scheduler pool (``provider:NAME``)."""
        return {f"provider:{p}": n - in_use.get(p, 0) for p, n in self.limit.items()}

    def admit(self, task: str, in_use: dict[str, int]) -> str | None:
        """Take a place for ``task``, whose route was just chosen: None when admitted
        (``in_use`` then counts it), else the full pool's name. Tasks whose agent is fixed are
        always admitted: the scheduler's pools already counted them."""
        if task in self.fixed:
            return None
        provider = self.of(task)
        if not provider:
            return None
        if in_use.get(provider, 0) >= self.limit.get(provider, 1):
            return f"provider:{provider}"
        in_use[provider] = in_use.get(provider, 0) + 1
        return None

    def credit_key(self, agent: str) -> str:
        """What runs out of credit: the agent's provider, or the agent itself if it has none."""
        return provider_of(agent, self.settings) or agent

    def out_of_credit(self, agent: str, said: str) -> str | None:
        """``agent``'s provider said the account has no credit left: note it, and return the
        provider (or agent) newly out of credit; None if it was already known to be."""
        key = self.credit_key(agent)
        if key in self.no_credit:
            return None
        self.no_credit[key] = said
        return key

    def broke(self, agent: str) -> str | None:
        """The provider (or agent) out of credit that ``agent`` would use, if any."""
        key = self.credit_key(agent)
        return key if key in self.no_credit else None

    def unavailable(self) -> set[str]:
        """The router's agents whose provider is out of credit."""
        return {agent for agent in self.arm_agents if self.broke(agent)}

    def credit_stop(self) -> str:
        """``out of credit (openai: Quota exceeded…)``, for the run's notes and skipped tasks."""
        said = "; ".join(f"{key}: {what}" for key, what in sorted(self.no_credit.items()))
        return f"out of credit ({said})"

    def adjust(self, task: str, end: AttemptEnd, running: Iterable[str]) -> LimitChange | None:
        """Back ``task``'s provider off if its attempt was rate-limited (``running``: the other
        tasks still running), or give it one more agent if the attempt landed."""
        provider = self.of(task)
        if not provider:
            return None
        limit = self.limit[provider]
        if end.rate_limited:
            busy = 1 + sum(1 for t in running if self.of(t) == provider)
            lowered = max(1, min(limit, busy) // 2)
            if lowered < limit:
                self.limit[provider] = lowered
                return LimitChange("backoff", provider, lowered, limit)
        elif end.landed and limit < self.top(provider):
            self.limit[provider] = limit + 1
            return LimitChange("recover", provider, limit + 1, limit)
        return None
