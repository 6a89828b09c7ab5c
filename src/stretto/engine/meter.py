"""The live limits of one attempt: model calls, tokens and dollars, read from what its agent
streams, against ``[attempt] max_turns``, ``max_tokens`` and ``max_cost``.

A looping agent (Claude Code calling a tool it lacks made 6,000 model calls in ten minutes) is
stopped at its first output line past a limit, not at the attempt's timeout. What counts:

* model calls: the adapter's ``call`` events (one per model reply, where the CLI's stream shows
  them), and never fewer than its ``tool`` events (each tool call needs a reply);
* tokens: the usage of ``call`` events when they carry it, else the ``usage`` events so far;
  CLIs that report usage only when they finish (Gemini CLI, Qwen Code) are bounded by calls;
* dollars: the larger of the dollars the agent reported and its tokens priced like the ledger
  does (an unknown price at its provider's top price); none for an agent on a local model
  server (``free``), which costs $0 whatever it reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from stretto.agents import AgentEvent
from stretto.config import AttemptSettings
from stretto.routing.ledger import Tokens

Pricer = Callable[[Tokens], float | None]


class AttemptMeter:
    """Counts one attempt's calls, tokens and dollars as its events arrive (see the module doc).

    Args:
        limits: the run's ``[attempt]`` settings.
        agent_kind: the adapter (how its usage counts cached tokens: :meth:`Tokens.from_usage`).
        price: dollars of some tokens on the attempt's model (None: unknown).
        free: the agent runs on a local model server: ``max_cost`` does not apply.
    """

    def __init__(
        self, limits: AttemptSettings, agent_kind: str, price: Pricer, *, free: bool = False
    ) -> None:
        self.limits = limits
        self.free = free
        self.agent_kind = agent_kind
        self.price = price
        self.calls = 0
        self.tools = 0
        self.call_usage: dict[str, int] = {}
        self.usage: dict[str, int] = {}
        self.reported = 0.0

    @property
    def active(self) -> bool:
        """Whether any limit is set (else nothing needs counting)."""
        limits = self.limits
        return any(x is not None for x in (limits.max_cost, limits.max_tokens, limits.max_turns))

    def add(self, events: Iterable[AgentEvent]) -> None:
        """Count newly parsed events."""
        for event in events:
            if event.kind == "call":
                self.calls += 1
                _add(self.call_usage, event.data.get("usage"))
            elif event.kind == "tool":
                self.tools += 1
            elif event.kind == "usage":
                _add(self.usage, event.data)
            elif event.kind == "cost" and isinstance(event.data.get("usd"), int | float):
                self.reported = max(self.reported, float(event.data["usd"]))

    @property
    def tokens(self) -> Tokens:
        """The tokens used so far."""
        return Tokens.from_usage(self.call_usage or self.usage, self.agent_kind)

    def over(self) -> str | None:
        """Which limit was passed, in words for the journal and the terminal; None if none."""
        limits = self.limits
        calls = max(self.calls, self.tools)
        if limits.max_turns is not None and calls > limits.max_turns:
            return (
                f"made {calls} model calls, over the limit of {limits.max_turns} "
                "([attempt] max_turns)"
            )
        tokens = self.tokens
        if limits.max_tokens is not None and tokens.total > limits.max_tokens:
            return (
                f"used {tokens.total:,} tokens, over the limit of {limits.max_tokens:,} "
                "([attempt] max_tokens)"
            )
        if limits.max_cost is not None and not self.free:
            spent = max(self.reported, self.price(tokens) or 0.0)
            if spent > limits.max_cost:
                return (
                    f"spent ${spent:.4f}, over the limit of ${limits.max_cost:.2f} "
                    "([attempt] max_cost)"
                )
        return None


def _add(total: dict[str, int], counts: object) -> None:
    if not isinstance(counts, Mapping):
        return
    for key, value in counts.items():
        if isinstance(value, int) and not isinstance(value, bool):
            total[str(key)] = total.get(str(key), 0) + value
