"""Prices: token counts of one agent call in one shape (:class:`Tokens`), the user's
``[prices."MODEL"]`` table (:class:`ModelPrice`), and pricing tokens with it or with the table
bundled with ``genai-prices`` (never updated over the network), including the most expensive
known price of a provider (:func:`ceiling_price`) that budgets count an unknown price at.
Re-exported by :mod:`stretto.routing.ledger`, which records what each call cost.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

NO_PRICES: Mapping[str, ModelPrice] = MappingProxyType({})


@dataclasses.dataclass(frozen=True, slots=True)
class ModelPrice:
    """A user's price for a model, in USD per million tokens (``[prices."MODEL"]``).

    ``cached`` (cache reads) defaults to the input price; cache writes are priced as input.
    """

    input: float
    output: float
    cached: float | None = None


def model_prices(table: Mapping[str, Mapping[str, float | None]]) -> dict[str, ModelPrice]:
    """``{"my-model": {"input": 1.0, "output": 2.0}}`` (the config's ``prices``) as ModelPrices."""
    return {
        name: ModelPrice(
            float(p["input"] or 0), float(p["output"] or 0), _maybe_float(p.get("cached"))
        )
        for name, p in table.items()
    }


def _maybe_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclasses.dataclass(frozen=True, slots=True)
class Tokens:
    """Token counts of one agent call, in one shape whatever the agent reported.

    ``input`` is the uncached input; ``cached`` the cache reads and ``cache_write`` the cache
    writes, each counted in neither of the others.
    """

    input: int = 0
    output: int = 0
    cached: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        """Every token counted, input (cached or not) and output."""
        return self.input + self.output + self.cached + self.cache_write

    @classmethod
    def from_usage(cls, usage: Mapping[str, int], agent_kind: str) -> Tokens:
        """Normalize an adapter's usage counts (``AgentResult.usage``).

        Conventions by adapter (``agent_kind``):

        * ``claude``: ``input_tokens`` excludes ``cached_tokens`` (reads) and
          ``cache_creation_tokens`` (writes), as the Anthropic API counts;
        * ``codex``, ``opencode``, ``qwen``: ``input_tokens`` includes ``cached_input_tokens``
          (OpenAI's convention); ``reasoning_output_tokens`` is part of ``output_tokens``;
        * ``gemini``: ``input_tokens`` (the prompt) includes ``cached_tokens``;
        * ``aider``: ``input_tokens`` ("sent") includes ``cached_input_tokens`` and
          ``cache_creation_input_tokens`` (stretto runs aider through LiteLLM's OpenAI route);
        * anything else (``shell``, ``command``, plugins): ``cached_tokens``,
          ``cache_creation_tokens``, ``cache_creation_input_tokens`` and ``cache_write_tokens``
          are separate from ``input_tokens``; ``cached_input_tokens`` is included in it.

        Missing, negative and non-integer counts are 0; an included part larger than the whole
        (aider rounds its counts) leaves 0 uncached input rather than a negative count.
        """
        total_in, output = _count(usage, "input_tokens"), _count(usage, "output_tokens")
        if agent_kind in ("codex", "opencode", "qwen"):
            cached, write, inside = _count(usage, "cached_input_tokens"), 0, True
        elif agent_kind == "gemini":
            cached, write, inside = _count(usage, "cached_tokens"), 0, True
        elif agent_kind == "aider":
            cached = _count(usage, "cached_input_tokens")
            write, inside = _count(usage, "cache_creation_input_tokens"), True
        else:
            included = _count(usage, "cached_input_tokens")
            write = sum(
                _count(usage, key)
                for key in ("cache_creation_tokens", "cache_creation_input_tokens")
            ) or _count(usage, "cache_write_tokens")
            separate = _count(usage, "cached_tokens") or _count(usage, "cache_read_tokens")
            total_in = max(total_in - included, 0)
            cached, inside = separate + included, False
        uncached = max(total_in - cached - write, 0) if inside else total_in
        return cls(uncached, output, cached, write)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tokens:
        """Counts as written by :meth:`Entry.to_dict`; ValueError if one is not a count."""
        values = {f.name: data.get(f.name, 0) for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"tokens.{key} must be a whole number >= 0, got {value!r}")
        return cls(**values)


def _user_price(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    if model in prices:
        return prices[model]
    folded = model.casefold()
    return next((p for name, p in prices.items() if name.casefold() == folded), None)


# Probes of 1,000 tokens each (far below any long-context tier): none, input, output, cache read
# and cache write (genai-prices counts cache reads and writes inside ``input_tokens``).
_PROBE = 1000
_PROBES: tuple[dict[str, int], ...] = (
    {},
    {"input_tokens": _PROBE},
    {"output_tokens": _PROBE},
    {"input_tokens": _PROBE, "cache_read_tokens": _PROBE},
    {"input_tokens": _PROBE, "cache_write_tokens": _PROBE},
)


@functools.lru_cache(maxsize=256)
def _bundled_rates(model: str, provider: str | None) -> tuple[float, ...] | None:
    """USD per token (input, output, cache read, cache write) from genai-prices' bundled table.

    Rates are measured on small probes: an attempt's usage sums many requests, so pricing the
    sum at once would wrongly cross the long-context tiers (e.g. above 200k input tokens) that
    apply per request. Long-context requests are therefore priced at base rates. The bundled
    table is the only source: genai-prices' updater (which fetches over HTTP) is never started.
    """
    try:
        import genai_prices  # ~0.4 s to import: only when a price is needed
    except ImportError:  # not installed: every model is unknown, so flagged rather than $0
        return None

    calc, usage = genai_prices.calc_price, genai_prices.Usage
    for ref, prov in [(model, provider), *([(model, "litellm")] if "/" in model else [])]:
        try:
            base, *probes = [
                float(calc(usage(**counts), ref, provider_id=prov).total_price)
                for counts in _PROBES
            ]
        except LookupError:
            continue
        return tuple((price - base) / _PROBE for price in probes)
    return None


@functools.lru_cache(maxsize=16)
def ceiling_rates(provider: str | None) -> tuple[str, tuple[float, ...]] | None:
    """The most expensive model of ``provider`` in genai-prices' bundled table (by input plus
    output price per token) and its rates, as :func:`_bundled_rates` gives them; None when the
    table knows no model of that provider (or no provider is given)."""
    if not provider:
        return None
    try:
        from genai_prices import data
    except ImportError:
        return None
    best: tuple[str, tuple[float, ...]] | None = None
    for known in data.providers:
        if known.id != provider:
            continue
        for model in known.models:
            rates = None if model.deprecated else _bundled_rates(model.id, provider)
            if rates is not None and (best is None or rates[0] + rates[1] > sum(best[1][:2])):
                best = (model.id, rates)
    return best


def ceiling_price(tokens: Tokens, provider: str | None) -> float | None:
    """``tokens`` priced as ``provider``'s most expensive known model (:func:`ceiling_rates`)."""
    ceiling = ceiling_rates(provider)
    if ceiling is None:
        return None
    counts = (tokens.input, tokens.output, tokens.cached, tokens.cache_write)
    return round(sum(n * rate for n, rate in zip(counts, ceiling[1], strict=True)), 9)


def price_tokens(
    model: str | None,
    tokens: Tokens,
    *,
    prices: Mapping[str, ModelPrice] = NO_PRICES,
    provider: str | None = None,
) -> float | None:
    """What ``tokens`` cost on ``model``, in USD; None if the model's price is unknown.

    Args:
        model: the model name as the agent was told it; None for an unnamed model.
        tokens: the counts to price.
        prices: the user's prices, which win over the bundled table (exact name first, then
            case-insensitively).
        provider: a genai-prices provider id (``anthropic``, ``openai``, ``google``, …) to look
            the model up in; None lets genai-prices pick by model name. A ``vendor/model`` name
            is also tried as LiteLLM spells it.

    Returns:
        The cost, rounded to a billionth of a dollar; 0.0 for no tokens at all, whatever the
        model.
    """
    if tokens.total == 0:
        return 0.0
    if model is None:
        return None
    user = _user_price(model, prices)
    if user is not None:
        cached = user.input if user.cached is None else user.cached
        per_mtok = (
            (tokens.input + tokens.cache_write) * user.input
            + tokens.output * user.output
            + tokens.cached * cached
        )
        return round(per_mtok / 1_000_000, 9)
    rates = _bundled_rates(model, provider)
    if rates is None:
        return None
    counts = (tokens.input, tokens.output, tokens.cached, tokens.cache_write)
    return round(sum(n * rate for n, rate in zip(counts, rates, strict=True)), 9)
