"""How the arm of an attempt is chosen, and what a choice says: pins, cascade, bandit, retries.

:func:`choose_arm` is the decision, pure: from every arm's estimate and confidence bound, the
pins and the arm that failed last, it returns a :class:`Choice` naming the arm, the rule, one
human sentence and every arm's figures (:class:`ArmEstimate`) with why it was not eligible.
Pins are always obeyed. Until ``warmup`` attempts are learned, a first attempt starts at the
cheapest tier allowed for its complexity and each failure escalates one tier; then the bandit
takes the highest upper confidence bound. Retries go strictly stronger, else to another agent
at the same tier (arms that failed the task already are left out), else to the strongest arm
again. With ``landed_value_usd`` set, a weaker arm that has not failed the task (at or above
``min_tier``) comes before that, a task every arm has failed is given up rather than paid for
again, and after warm-up a retry whose estimated chance to land times that value is below its
expected cost is not made (rule ``give-up``). Nothing is random; ties break on tier order, then
arm key. :func:`render_choice` turns a journaled choice into the lines of
``stretto explain``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from stretto.routing.arms import TIERS, Arm

if TYPE_CHECKING:
    from stretto.routing.arms import RouterConfig
    from stretto.routing.features import TaskContext

#: Each arm's estimate and confidence bound, by arm key.
Stats = Mapping[str, tuple[float, float]]
#: A retry's estimated chance to land, the optimism added to that chance for what the retries
#: so far cannot tell, and its cost on each arm (None: cost unknown; the triple is None while
#: the arm's retry model has too little data), by arm key.
Landing = Mapping[str, tuple[float, float, float | None] | None]


@dataclass(frozen=True, slots=True)
class ArmEstimate:
    """One arm's figures in a choice, and whether it could have been chosen."""

    arm: Arm
    mean: float  # estimated reward, theta . x
    bound: float  # confidence bound, alpha * sqrt(x' A^-1 x)
    ucb: float  # mean + bound
    eligible: bool
    note: str  # why it is not eligible (or what it was), "" when nothing to say

    @property
    def key(self) -> str:
        return self.arm.key

    @property
    def tier(self) -> str:
        return self.arm.tier

    def to_dict(self) -> dict[str, Any]:
        figures = {"mean": self.mean, "bound": self.bound, "ucb": self.ucb}
        return {**self.arm.to_dict(), **figures, "eligible": self.eligible, "note": self.note}


@dataclass(frozen=True, slots=True)
class Choice:
    """The arm for one attempt, the rule that chose it and everything it was chosen from."""

    arm: Arm  # with rule give-up: the arm the retry would have taken
    rule: str  # pinned, cascade-{start,escalate}, bandit, retry-{stronger,sibling,same}, give-up
    reason: str  # one human sentence
    features: Mapping[str, float]
    estimates: tuple[ArmEstimate, ...]  # every configured arm, by tier then key
    warmup: bool
    context: TaskContext | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (journaled by the runner, rendered by :func:`render_choice`)."""
        ctx = self.context
        return {
            "arm": self.arm.to_dict(),
            "rule": self.rule,
            "reason": self.reason,
            "warmup": self.warmup,
            "attempt": ctx.attempt if ctx else None,
            "context": None if ctx is None else {**asdict(ctx), "files": _listed(ctx.files)},
            "features": dict(self.features),
            "estimates": [e.to_dict() for e in self.estimates],
        }


def _listed(files: tuple[str, ...] | None) -> list[str] | None:
    return None if files is None else list(files)


def _tier(arm: Arm) -> int:
    return TIERS.index(arm.tier)


def _rank(arm: Arm) -> tuple[int, str]:
    return _tier(arm), arm.key


def choose_arm(
    config: RouterConfig,
    completed: int,
    ctx: TaskContext,
    x: Mapping[str, float],
    stats: Stats,
    *,
    pinned_agent: str | None = None,
    pinned_model: str | None = None,
    failed: Arm | None = None,
    unavailable: Collection[str] = (),
    landing: Landing | None = None,
    tried: Collection[str] = (),
) -> Choice:
    """The arm for an attempt by the pin, cascade, bandit, retry and give-up rules (see
    :meth:`~stretto.routing.router.Policy.choose`, which documents them and the arguments).

    ``completed`` (attempts learned so far) says whether the warm-up cascade still applies;
    ``x`` is the attempt's feature vector and ``stats`` every configured arm's estimate and
    confidence bound for it, by arm key; ``landing`` every arm's estimated chance that a retry
    lands in this context, the optimism added to it and its cost (for the give-up rule; None:
    no give-up).
    """
    arms = sorted(config.arms, key=_rank)
    warm = completed < config.warmup
    notes: dict[str, str] = {}

    def done(arm: Arm, rule: str, reason: str, eligible: Sequence[Arm]) -> Choice:
        if warm:
            reason += f" (warm-up: {completed} of {config.warmup} attempts learned)"
        rows = tuple(
            ArmEstimate(a, *stats[a.key], sum(stats[a.key]), a in eligible, notes.get(a.key, ""))
            for a in arms
        )
        return Choice(arm, rule, reason, x, rows, warm, ctx)

    pool = arms
    if pinned_agent is not None or pinned_model is not None:
        pool = [a for a in arms if pinned_agent in (None, a.agent)]
        pool = [a for a in pool if pinned_model in (None, a.model)]
        pins = (("agent", pinned_agent), ("model", pinned_model))
        what = " and ".join(f"{kind} {name}" for kind, name in pins if name is not None)
        notes.update({a.key: f"pinned to {what}" for a in arms if a not in pool})
        if not pool or (pinned_agent is not None and pinned_model is not None):
            arm = pool[0] if pool else _unconfigured(config, pinned_agent, pinned_model)
            extra = "" if pool else ", which is not a configured arm (nothing is learned)"
            return done(arm, "pinned", f"pinned: the step names {what}{extra}", pool)
    if not pool:
        raise ValueError("no router arms are configured ([[router.arms]] is empty)")
    usable = [a for a in pool if a.agent not in unavailable]
    if usable and len(usable) < len(pool):
        notes.update({a.key: f"{a.agent} is out of credit" for a in pool if a not in usable})
        pool = usable
    if failed is not None:
        want = TIERS.index(config.start_tier(ctx.complexity))
        lowest = min(want, max(_tier(a) for a in pool))
        tried = {*tried, failed.key}
        value = config.landed_value_usd
        if value is None:  # without a landed value the strongest arm may run again (as before)
            lowest = len(TIERS)
        arm, rule, why, eligible = _retry(pool, failed, warm, stats, notes, tried, lowest)
        if value is not None and rule == "retry-same":  # paying twice for one answer
            notes[arm.key] = "every arm has failed this task"
            why = f"give up: every arm has failed this task (last {failed.key}); a re-run is "
            why += "not paid for when landed_value_usd is set"
            return done(arm, "give-up", why, eligible)
        if warm or value is None or landing is None or arm.key not in landing:
            return done(arm, rule, why, eligible)
        figures = landing[arm.key]
        if figures is None:
            why += "; too few retries learned on it to judge whether a retry pays"
            return done(arm, rule, why, eligible)
        chance, optimism, cost = figures
        if cost is None:
            return done(arm, rule, f"{why}; its cost is not known yet, so no give-up", eligible)
        hope = chance + optimism
        unsure = f" (estimated {chance:.0%} + {optimism:.0%} for what its retries cannot tell)"
        worth = f"{hope:.0%} to land{unsure if optimism >= 0.005 else ''} x ${value:,.2f} = "
        worth += f"${hope * value:,.2f}"
        if hope * value >= cost:
            why += f"; worth it: {worth} >= expected cost ${cost:,.2f}"
            return done(arm, rule, why, eligible)
        notes[arm.key] = "given up: not worth its cost"
        return done(
            arm,
            "give-up",
            f"give up: a retry on {arm.key} would not pay: {worth} (landed value) "
            f"< its expected cost ${cost:,.2f}",
            eligible,
        )
    want = TIERS.index(config.start_tier(ctx.complexity))
    tiers = sorted({_tier(a) for a in pool})
    start = next((t for t in tiers if t >= want), tiers[-1])
    floor = f"the minimum for complexity {ctx.complexity}"
    allowed = f"{TIERS[start]}, " + (
        f"the cheapest tier allowed for complexity {ctx.complexity}"
        if start == want
        else f"the cheapest tier with an arm at or above {TIERS[want]}, {floor}"
        if start > want
        else f"the strongest tier with an arm ({TIERS[want]} is {floor})"
    )
    if warm:
        eligible = [a for a in pool if _tier(a) == start]
        notes.update({a.key: f"the cascade starts at {TIERS[start]}" for a in pool})
        notes.update({a.key: "" for a in eligible})
        arm = _best(eligible, stats, ucb=True)
        why = f"cascade: start at {allowed}"
        if len(eligible) > 1:
            why += f"; in that tier, {_versus(arm, eligible, stats, ucb=True)}"
        return done(arm, "cascade-start", why, eligible)
    eligible = [a for a in pool if _tier(a) >= start]
    below = f"below {TIERS[start]}, {floor}" + ("" if start == want else " with an arm")
    notes.update({a.key: below for a in pool if a not in eligible})
    arm = _best(eligible, stats, ucb=True)
    return done(arm, "bandit", f"bandit: {_versus(arm, eligible, stats, ucb=True)}", eligible)


def _unconfigured(config: RouterConfig, agent: str | None, model: str | None) -> Arm:
    same_model = [a for a in config.arms if model is not None and a.model == model]
    if agent is None:
        if not config.arms:
            raise ValueError(f"model {model} is pinned but no router arm names an agent")
        agent = config.arms[0].agent
    return Arm(agent, model, same_model[0].tier if same_model else "balanced")


def _best(cands: Sequence[Arm], stats: Stats, *, ucb: bool) -> Arm:
    """The arm with the best estimate (or upper bound); ties by tier order, then key."""
    return min(cands, key=lambda a: (-stats[a.key][0] - ucb * stats[a.key][1], *_rank(a)))


def _versus(arm: Arm, cands: Sequence[Arm], stats: Stats, *, ucb: bool) -> str:
    """``highest upper confidence bound 0.71 vs 0.64 for X`` (or ``best estimate …``)."""
    value = stats[arm.key][0] + ucb * stats[arm.key][1]
    text = f"{'highest upper confidence bound' if ucb else 'best estimate'} {value:.2f}"
    others = [a for a in cands if a != arm]
    if others:
        second = _best(others, stats, ucb=ucb)
        other = stats[second.key][0] + ucb * stats[second.key][1]
        text += f" vs {other:.2f} for {second.key}"
        text += " (a tie, broken by tier order, then key)" if other == value else ""
    return text if others else text + " (the only eligible arm)"


def _retry(
    pool: Sequence[Arm],
    failed: Arm,
    warm: bool,
    stats: Stats,
    notes: dict[str, str],
    tried: Collection[str],
    floor: int,
) -> tuple[Arm, str, str, Sequence[Arm]]:
    """The arm for a retry after ``failed``: stronger, else a sibling, else another arm that
    has not failed the task (``tried``: those that did) at or above tier ``floor`` (the
    complexity's ``min_tier``), else the strongest again."""
    level = _tier(failed)
    notes.update({a.key: f"not stronger than the failed arm {failed.key}" for a in pool})
    notes.update({a.key: "it failed this task already" for a in pool if a.key in tried})
    notes[failed.key] = "the arm that failed"
    fresh = [a for a in pool if a.key not in tried]
    stronger = [a for a in fresh if _tier(a) > level]
    if stronger:
        nearest = min(_tier(a) for a in stronger)
        tier_arms = [a for a in stronger if _tier(a) == nearest]
        later = f"escalation goes to the cheapest stronger tier, {TIERS[nearest]}"
        notes.update({a.key: later for a in stronger if a not in tier_arms})
        for a in tier_arms:
            notes.pop(a.key)
        if warm:
            arm = _best(tier_arms, stats, ucb=True)
            why = f"cascade: escalate from {failed.tier} to {arm.tier} after a failure of "
            return arm, "cascade-escalate", why + failed.key, tier_arms
        arm = _best(tier_arms, stats, ucb=False)
        why = f"retry: strictly stronger than {failed.key}; in the cheapest stronger tier, "
        return arm, "retry-stronger", why + _versus(arm, tier_arms, stats, ucb=False), tier_arms
    siblings = [a for a in fresh if a.tier == failed.tier]
    if siblings:
        other = [a for a in siblings if a.agent != failed.agent] or siblings
        for a in siblings:
            notes[a.key] = "another " + ("agent" if a in other else "model; agents come first")
        arm = _best(other, stats, ucb=False)
        kind = "agent" if arm.agent != failed.agent else "model"
        why = f"retry: no arm is stronger than {failed.key}; {arm.key} is another {kind} at "
        why += f"tier {failed.tier}, {_versus(arm, other, stats, ucb=False)}"
        return arm, "retry-sibling", why, other
    fresh = [a for a in fresh if _tier(a) >= floor]
    if fresh:  # weaker arms that have not failed the task: each model lands tasks others miss
        for a in fresh:
            notes[a.key] = "has not failed this task"
        arm = _best(fresh, stats, ucb=False)
        why = f"retry: no stronger or same-tier arm is left untried after {failed.key}; "
        why += f"{arm.key} has not failed this task, {_versus(arm, fresh, stats, ucb=False)}"
        return arm, "retry-other", why, fresh
    top = max(_tier(a) for a in pool)
    strongest = [a for a in pool if _tier(a) == top]
    arm = _best(strongest, stats, ucb=False)
    why = f"retry: every arm has failed this task (last {failed.key}), "
    notes[arm.key] = "the strongest arm" + (", which failed last" if arm == failed else "")
    why += f"so the strongest arm, {arm.key}, " + ("tries again" if arm == failed else "takes it")
    return arm, "retry-same", why, strongest


def _known(value: object) -> str:
    return "unknown" if value is None else f"{value:,}"


def render_choice(data: Mapping[str, Any]) -> list[str]:
    """Text lines for ``stretto explain``: the winner, the rule, the features and every arm."""
    arm, ctx = data["arm"], data.get("context")
    head = "" if data.get("attempt") is None else f"attempt {data['attempt']}: "
    title = f"{head}{arm['key']} ({arm['tier']}), rule {data['rule']}"
    if data["rule"] == "give-up":
        title = f"{head}given up instead of a retry on {arm['key']} ({arm['tier']}), rule give-up"
    lines = [title, f"  why: {data['reason']}"]
    if ctx:
        files = ctx["files"]
        scope = "undeclared" if files is None else f"{len(files)} owned pattern(s)"
        where = "".join(f", {name} {ctx[name]}" for name in ("repo", "language") if ctx.get(name))
        lines.append(
            f"  task: complexity {ctx['complexity']}, role {ctx['role']}, files {scope}, "
            f"~{ctx['est_tokens']:,} tokens{where}"
        )
        failed = ctx.get("failed")
        if failed:
            cost = failed.get("cost_usd")
            lines.append(
                f"  failed attempt: {failed['arm']}, {_known(failed.get('turns'))} turns, "
                f"{_known(failed.get('tokens'))} tokens, cost "
                + ("unknown" if cost is None else f"${cost:,.4f}")
            )
    lines.append("  features: " + " ".join(f"{k}={v:.3g}" for k, v in data["features"].items()))
    rows = data["estimates"]
    width = max([3, *(len(r["key"]) for r in rows)])
    lines.append(f"  {'arm':<{width}}  {'tier':<8}  {'mean':>6}  {'bound':>6}  {'ucb':>6}  note")
    for r in rows:
        mark = "*" if r["key"] == arm["key"] else " "
        note = r["note"] if r["eligible"] else f"not eligible: {r['note']}"
        figures = f"{r['mean']:>6.3f}  {r['bound']:>6.3f}  {r['ucb']:>6.3f}"
        lines.append(f"{mark} {r['key']:<{width}}  {r['tier']:<8}  {figures}  {note}".rstrip())
    if not any(r["key"] == arm["key"] for r in rows):
        lines.append(f"* {arm['key']}: not a configured arm, so it has no estimate")
    return lines
