"""The spend ledger: usage normalization, pricing, the file under crashes and concurrency, views
and budgets. Real files, real subprocesses, the real bundled price table."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stretto.errors import RunError
from stretto.routing.ledger import (
    LEDGER_FILE,
    Entry,
    Ledger,
    ModelPrice,
    Tokens,
    check_budget,
    estimate_attempt_cost,
    make_entry,
    model_prices,
    price_tokens,
    render_cost,
    summarize,
    totals,
)

# 2026-01-01 00:00:00 UTC and an hour before it (still 2025-12-31 in UTC)
NEW_YEAR = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
EVE = NEW_YEAR - 3600

# Published per-million-token prices (the bundled genai-prices table agrees)
SONNET = {"input": 3.0, "output": 15.0, "cached": 0.30, "cache_write": 3.75}
GPT5 = {"input": 1.25, "output": 10.0, "cached": 0.125}


def entry(**over: Any) -> Entry:
    fields: dict[str, Any] = {
        "ts": NEW_YEAR,
        "run_id": "r1",
        "task": "api",
        "attempt": 1,
        "kind": "attempt",
        "agent": "codex",
        "model": "gpt-5",
        "tier": None,
        "tokens": Tokens(input=1000, output=100, cached=500),
        "cost_usd": 0.10,
        "source": "priced",
        "outcome": "landed",
        "complexity": "medium",
    }
    fields.update(over)
    return Entry(**fields)


def made(usage: dict[str, int], **over: Any) -> Entry:
    fields: dict[str, Any] = {
        "run_id": "r1",
        "task": "api",
        "attempt": 1,
        "kind": "attempt",
        "agent": "codex",
        "agent_kind": "codex",
        "model": "gpt-5",
        "tier": "balanced",
        "usage": usage,
        "reported_cost": None,
        "outcome": "landed",
        "ts": NEW_YEAR,
    }
    fields.update(over)
    return make_entry(**fields)


# --- usage normalization ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "usage", "want"),
    [
        (
            "claude",
            {
                "input_tokens": 100,
                "output_tokens": 50,
                "cached_tokens": 9000,
                "cache_creation_tokens": 700,
            },
            Tokens(input=100, output=50, cached=9000, cache_write=700),
        ),
        (
            "codex",
            {
                "input_tokens": 10_000,
                "cached_input_tokens": 8000,
                "output_tokens": 300,
                "reasoning_output_tokens": 200,
            },
            Tokens(input=2000, output=300, cached=8000),
        ),
        (
            "opencode",
            {"input_tokens": 1000, "cached_input_tokens": 600, "output_tokens": 5},
            Tokens(input=400, output=5, cached=600),
        ),
        (
            "qwen",
            {"input_tokens": 1000, "cached_input_tokens": 250, "output_tokens": 5},
            Tokens(input=750, output=5, cached=250),
        ),
        (
            "gemini",
            {"input_tokens": 5000, "cached_tokens": 3000, "output_tokens": 40},
            Tokens(input=2000, output=40, cached=3000),
        ),
        (
            "aider",
            {
                "input_tokens": 2400,
                "cached_input_tokens": 1000,
                "cache_creation_input_tokens": 400,
                "output_tokens": 46,
            },
            Tokens(input=1000, output=46, cached=1000, cache_write=400),
        ),
        (
            "shell",
            {"input_tokens": 10, "output_tokens": 20, "cached_tokens": 30},
            Tokens(input=10, output=20, cached=30),
        ),
        (
            "command",
            {"input_tokens": 10, "output_tokens": 20, "cached_tokens": 30},
            Tokens(input=10, output=20, cached=30),
        ),
        (
            "other",
            {"input_tokens": 100, "cached_input_tokens": 40, "output_tokens": 1},
            Tokens(input=60, output=1, cached=40),
        ),
        ("shell", {}, Tokens()),
    ],
)
def test_usage_is_normalized_per_agent_kind(kind: str, usage: dict[str, int], want: Tokens) -> None:
    assert Tokens.from_usage(usage, kind) == want


def test_usage_normalization_tolerates_junk_and_rounding() -> None:
    junk: dict[str, Any] = {"input_tokens": -5, "output_tokens": True, "cached_tokens": "9"}
    assert Tokens.from_usage(junk, "claude") == Tokens()
    # aider rounds to 0.1k: a cache hit above "sent" must not give a negative input
    rounded = {"input_tokens": 1000, "cached_input_tokens": 1049, "output_tokens": 3}
    assert Tokens.from_usage(rounded, "aider") == Tokens(input=0, output=3, cached=1049)


# --- pricing ------------------------------------------------------------------------------------


def test_bundled_prices_match_the_published_per_million_prices() -> None:
    tokens = Tokens(input=400_000, output=100_000, cached=2_000_000, cache_write=200_000)
    want = (
        0.4 * SONNET["input"]
        + 0.1 * SONNET["output"]
        + 2.0 * SONNET["cached"]
        + 0.2 * SONNET["cache_write"]
    )
    # 2.6M input tokens summed over a whole attempt stay at the base rate: the long-context tier
    # (above 200k tokens) applies per request, not to an attempt's total
    assert price_tokens("claude-sonnet-4-5", tokens) == pytest.approx(want)
    assert price_tokens("claude-sonnet-4-5", tokens, provider="anthropic") == pytest.approx(want)
    gpt = Tokens(input=1_000_000, output=200_000, cached=3_000_000)
    assert price_tokens("gpt-5", gpt) == pytest.approx(1.25 + 2.0 + 3 * 0.125)


def test_vendor_prefixed_model_names_are_found() -> None:
    plain = price_tokens("claude-sonnet-4-5", Tokens(input=1_000_000))
    assert plain == pytest.approx(SONNET["input"])
    assert price_tokens("anthropic/claude-sonnet-4-5", Tokens(input=1_000_000)) == plain


def test_unknown_models_and_providers_have_no_price() -> None:
    tokens = Tokens(input=1000, output=10)
    assert price_tokens("my-local-coder-7b", tokens) is None
    assert price_tokens("gpt-5", tokens, provider="no-such-provider") is None
    assert price_tokens(None, tokens) is None
    assert price_tokens("my-local-coder-7b", Tokens()) == 0.0


def test_user_prices_win_over_the_bundled_table() -> None:
    prices = {"gpt-5": ModelPrice(input=2.0, output=4.0, cached=0.5)}
    tokens = Tokens(input=1_000_000, output=1_000_000, cached=2_000_000, cache_write=1_000_000)
    # cache writes are priced as input
    assert price_tokens("gpt-5", tokens, prices=prices) == pytest.approx(2 + 4 + 1 + 2)
    # case-insensitive match; cached defaults to the input price
    local = {"My-Local-7B": ModelPrice(input=0.1, output=0.2)}
    assert price_tokens("my-local-7b", tokens, prices=local) == pytest.approx(0.1 * 4 + 0.2)


def test_model_prices_reads_the_config_table() -> None:
    table = {"foo": {"input": 1, "output": 2}, "bar": {"input": 1.0, "output": 2.0, "cached": 0}}
    assert model_prices(table) == {
        "foo": ModelPrice(1.0, 2.0, None),
        "bar": ModelPrice(1.0, 2.0, 0.0),
    }


def test_reported_cost_is_used_as_is() -> None:
    e = made(
        {"input_tokens": 100, "output_tokens": 50, "cached_tokens": 10},
        agent="claude",
        agent_kind="claude",
        model="claude-sonnet-4-5",
        reported_cost=0.4321,
    )
    assert (e.cost_usd, e.source) == (0.4321, "reported")
    assert e.tokens == Tokens(input=100, output=50, cached=10)


def test_tokens_only_are_priced() -> None:
    usage = {"input_tokens": 1_000_000, "cached_input_tokens": 600_000, "output_tokens": 100_000}
    e = made(usage)
    assert e.source == "priced"
    assert e.cost_usd == pytest.approx(0.4 * GPT5["input"] + 0.6 * GPT5["cached"] + 1.0)


def test_a_bogus_reported_cost_is_priced_instead() -> None:
    e = made({"input_tokens": 1_000_000}, reported_cost=float("nan"))
    assert (e.cost_usd, e.source) == (pytest.approx(1.25), "priced")


def test_unknown_model_is_never_silently_free() -> None:
    e = made({"input_tokens": 1000}, model="my-local-coder-7b", agent_kind="command")
    assert (e.cost_usd, e.source) == (None, "unknown")
    nameless = made({"input_tokens": 1000}, model=None)
    assert (nameless.cost_usd, nameless.source) == (None, "unknown")


def test_user_price_makes_an_unknown_model_priced() -> None:
    prices = {"my-local-coder-7b": ModelPrice(input=0.0, output=0.0)}
    e = made({"input_tokens": 1000}, model="my-local-coder-7b", prices=prices)
    assert (e.cost_usd, e.source) == (0.0, "priced")


def test_no_usage_no_cost_costs_nothing() -> None:
    e = made({}, agent="shell", agent_kind="shell", model=None)
    assert (e.cost_usd, e.source) == (0.0, "none")


def test_importing_the_ledger_does_not_import_genai_prices() -> None:
    code = "import stretto.routing.ledger, sys; assert 'genai_prices' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- the file -----------------------------------------------------------------------------------


def test_append_and_read_back(tmp_path: Path) -> None:
    ledger = Ledger.for_repo(tmp_path)
    assert ledger.path == tmp_path / ".stretto" / LEDGER_FILE
    assert ledger.entries() == []
    first = entry(tokens=Tokens(1, 2, 3, 4), tier="strong")
    plan = entry(task="", attempt=0, kind="plan", model=None, cost_usd=None, source="unknown")
    ledger.append(first)
    ledger.append(plan)
    assert ledger.entries() == [first, plan]
    lines = ledger.path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["tokens"] == {
        "input": 1,
        "output": 2,
        "cached": 3,
        "cache_write": 4,
    }
    assert Entry.from_dict(json.loads(lines[1])) == plan


def test_unknown_keys_are_ignored_on_read(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_FILE)
    data = {**entry().to_dict(), "from_the_future": 1}
    ledger.path.write_text(json.dumps(data) + "\n\n")
    assert ledger.entries() == [entry()]


def test_torn_last_line_is_tolerated_and_cut_by_the_next_append(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_FILE)
    ledger.append(entry(task="a"))
    line = json.dumps(entry(task="b").to_dict())
    with ledger.path.open("a") as f:
        f.write(line[: len(line) // 2])  # a crash mid-write
    assert [e.task for e in ledger.entries()] == ["a"]
    ledger.append(entry(task="c"))
    assert [e.task for e in ledger.entries()] == ["a", "c"]
    assert ledger.path.read_text().count("\n") == 2


def test_a_whole_torn_line_missing_only_its_newline_is_skipped(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_FILE)
    ledger.path.write_text(json.dumps(entry().to_dict()))
    assert ledger.entries() == []


def test_duplicate_key_last_wins(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_FILE)
    ledger.append(entry(task="a", cost_usd=1.0))
    ledger.append(entry(task="b", cost_usd=2.0))
    ledger.append(entry(task="a", cost_usd=3.0))
    assert [(e.task, e.cost_usd) for e in ledger.entries()] == [("b", 2.0), ("a", 3.0)]
    assert ledger.spent() == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("{not json", "damaged"),
        ('["a list"]', "not a JSON object"),
        (json.dumps({**entry().to_dict(), "attempt": "one"}), "attempt must be int"),
        (json.dumps({**entry().to_dict(), "source": "guessed"}), "source must be one of"),
        (json.dumps({k: v for k, v in entry().to_dict().items() if k != "run_id"}), "run_id"),
    ],
)
def test_corrupt_middle_line_names_file_and_line(tmp_path: Path, bad: str, why: str) -> None:
    ledger = Ledger(tmp_path / LEDGER_FILE)
    ledger.append(entry(task="a"))
    with ledger.path.open("a") as f:
        f.write(bad + "\n")
    ledger.append(entry(task="c"))
    with pytest.raises(RunError, match=why) as info:
        ledger.entries()
    assert f"{ledger.path}:2:" in str(info.value)
    assert "move the file aside" in str(info.value)


def test_nan_cost_is_refused_before_writing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_FILE)
    with pytest.raises(ValueError):
        ledger.append(entry(cost_usd=float("nan")))
    assert ledger.entries() == []


WRITER = """
    import sys
    from pathlib import Path
    from stretto.routing.ledger import Entry, Ledger, Tokens
    path, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    ledger = Ledger(path)
    sys.stdin.readline()  # start together
    for i in range(count):
        ledger.append(Entry(
            float(i), name, f"task-{i}", 1, "attempt", "shell", None, None,
            Tokens(input=i), 0.01, "reported", "landed",
        ))
"""


def test_concurrent_appends_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    path, count = tmp_path / "repo" / ".stretto" / LEDGER_FILE, 150
    argv = [sys.executable, "-c", textwrap.dedent(WRITER), str(path)]
    procs = [
        subprocess.Popen([*argv, name, str(count)], stdin=subprocess.PIPE, text=True)
        for name in ("run-a", "run-b")
    ]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    ledger = Ledger(path)
    entries = ledger.entries()
    assert len(entries) == 2 * count
    assert len(path.read_text().splitlines()) == 2 * count
    for name in ("run-a", "run-b"):
        mine = ledger.entries(run_id=name)
        assert [e.task for e in mine] == [f"task-{i}" for i in range(count)]
        assert ledger.spent(run_id=name) == pytest.approx(0.01 * count)


def test_spent_per_run_and_per_utc_day(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_FILE)
    ledger.append(entry(run_id="r1", task="a", ts=EVE, cost_usd=1.0))
    ledger.append(entry(run_id="r1", task="b", ts=NEW_YEAR, cost_usd=2.0))
    ledger.append(entry(run_id="r2", task="a", ts=NEW_YEAR + 60, cost_usd=4.0))
    ledger.append(entry(run_id="r2", task="u", ts=NEW_YEAR, cost_usd=None, source="unknown"))
    assert ledger.spent() == pytest.approx(7.0)
    assert ledger.spent(run_id="r1") == pytest.approx(3.0)
    assert ledger.spent(day="2025-12-31") == pytest.approx(1.0)
    assert ledger.spent(day="2026-01-01") == pytest.approx(6.0)
    assert ledger.spent(run_id="r2", day="2026-01-01") == pytest.approx(4.0)
    assert ledger.spent(day="2026-01-02") == 0.0
    assert [e.task for e in ledger.unknown()] == ["u"]
    assert ledger.unknown(run_id="r1") == []
    with pytest.raises(ValueError, match="2026-01-31"):
        ledger.spent(day="yesterday")


# --- views --------------------------------------------------------------------------------------


def sample() -> list[Entry]:
    return [
        entry(run_id="r1", task="api", attempt=1, ts=EVE, cost_usd=1.0, outcome="failed"),
        entry(run_id="r1", task="api", attempt=2, cost_usd=2.0, outcome="landed"),
        entry(
            run_id="r1",
            task="",
            attempt=0,
            kind="plan",
            agent="claude",
            model="claude-sonnet-4-5",
            cost_usd=0.5,
            source="reported",
            outcome="success",
        ),
        entry(
            run_id="r2",
            task="ui",
            agent="command",
            model="foo",
            cost_usd=None,
            source="unknown",
            outcome="landed",
        ),
        entry(run_id="r2", task="ui", attempt=2, agent="shell", model=None, cost_usd=0.0),
    ]


@pytest.mark.parametrize(
    ("by", "want"),
    [
        ("task", [("api", 3.0, 2, 0), ("(plan)", 0.5, 1, 0), ("ui", 0.0, 2, 1)]),
        (
            "model",
            [
                ("gpt-5", 3.0, 2, 0),
                ("claude-sonnet-4-5", 0.5, 1, 0),
                ("(no model)", 0.0, 1, 0),
                ("foo", 0.0, 1, 1),
            ],
        ),
        (
            "agent",
            [
                ("codex", 3.0, 2, 0),
                ("claude", 0.5, 1, 0),
                ("command", 0.0, 1, 1),
                ("shell", 0.0, 1, 0),
            ],
        ),
        ("day", [("2026-01-01", 2.5, 4, 1), ("2025-12-31", 1.0, 1, 0)]),
        ("run", [("r1", 3.5, 3, 0), ("r2", 0.0, 2, 1)]),
    ],
)
def test_summarize_by_each_key(by: str, want: list[tuple[str, float, int, int]]) -> None:
    rows = summarize(sample(), by)
    got = [(r["key"], r["cost_usd"], r["attempts"], r["unknown"]) for r in rows]
    assert got == want
    json.dumps(rows)  # plain data for `stretto cost --json`


#: What the runs' journals say landed: the ledger's ``outcome`` is the agent's word, not this.
LANDED = {("r1", "api", 2), ("r2", "ui", 1)}


def test_summarize_rows_carry_tokens_and_landed() -> None:
    (api,) = [r for r in summarize(sample(), "task", LANDED) if r["key"] == "api"]
    assert api["landed"] == 1
    (untold,) = [r for r in summarize(sample(), "task") if r["key"] == "api"]
    assert untold["landed"] == 0  # an outcome "landed" in the ledger is not a landing
    assert (api["input_tokens"], api["output_tokens"], api["cached_tokens"]) == (2000, 200, 1000)
    with pytest.raises(ValueError, match="task, model, agent, day, run"):
        summarize(sample(), "color")


def test_totals_flag_unknown_prices() -> None:
    total = totals(sample(), LANDED)
    assert total["key"] == "total"
    assert (total["attempts"], total["landed"], total["runs"]) == (5, 2, 2)
    assert total["cost_usd"] == pytest.approx(3.5)
    assert (total["unknown"], total["unknown_models"]) == (1, {"foo": 1})
    json.dumps(total)


def test_render_cost_shows_the_table_and_flags_unknown_prices() -> None:
    entries = [
        *sample(),
        entry(run_id="r2", task="ui", attempt=3, model="foo", cost_usd=None, source="unknown"),
    ]
    lines = render_cost(summarize(entries, "model"), totals(entries), "model", title="Spend")
    text = "\n".join(lines)
    assert lines[0] == "Spend"
    assert lines[1].split() == ["model", "attempts", "landed", "input", "cached", "output", "cost"]
    assert "$3.00" in text and "$3.50 +?" in text
    foo_row = next(line for line in lines if line.startswith("foo "))
    assert foo_row.rstrip().endswith("?")
    assert "+ 2 attempts of unknown price (model foo): not in the dollars above" in text
    assert "budgets counted them at $0.00" in text  # agent "command": no provider, no bound
    assert '[prices."foo"]' in text and "input = ..." in text and "output = ..." in text


def test_render_cost_of_nothing() -> None:
    assert render_cost([], totals([]), "task", title="Spend") == ["Spend", "no spend recorded yet"]


# --- estimates and budgets ----------------------------------------------------------------------


def test_estimate_from_the_history_median() -> None:
    history = [
        entry(attempt=i, cost_usd=cost, complexity="high")
        for i, cost in enumerate([0.30, 0.10, 5.00], start=1)
    ]
    others = [
        entry(agent="claude", cost_usd=9.0, complexity="high"),
        entry(cost_usd=9.0, complexity="low"),
        entry(cost_usd=None, source="unknown", complexity="high"),
        entry(kind="plan", cost_usd=9.0, complexity="high"),
    ]
    got = estimate_attempt_cost("codex", "gpt-5", "high", 1000, history + others)
    assert got == pytest.approx(0.30)
    # two past attempts are too few: priced from tokens instead
    fallback = estimate_attempt_cost("codex", "gpt-5", "high", 1000, history[:2])
    assert fallback == estimate_attempt_cost("codex", "gpt-5", "high", 1000, [])


def test_estimate_from_tokens() -> None:
    # 100k tokens: 42,500 uncached input, 42,500 cached, 15,000 output
    want = 0.0425 * GPT5["input"] + 0.0425 * GPT5["cached"] + 0.015 * GPT5["output"]
    assert estimate_attempt_cost("codex", "gpt-5", "medium", 100_000, []) == pytest.approx(want)
    prices = {"mine": ModelPrice(input=1.0, output=2.0, cached=0.0)}
    got = estimate_attempt_cost("aider", "mine", "low", 1_000_000, [], prices=prices)
    assert got == pytest.approx(0.425 + 0.3)
    assert estimate_attempt_cost("codex", "my-local-coder-7b", "low", 1000, []) is None
    assert estimate_attempt_cost("shell", None, "low", 1000, []) == 0.0
    assert estimate_attempt_cost("claude", None, "low", 1000, []) is None


def test_budget_plenty_left() -> None:
    check = check_budget(
        estimate=0.40, run_spent=1.0, run_budget=5.0, day_spent=3.0, daily_cap=20.0, reserved=0.6
    )
    assert check.allowed
    assert check.left == pytest.approx(3.4)
    assert check.reason == "next attempt estimated $0.40, $3.40 left"


def test_budget_would_exceed_the_run_budget() -> None:
    check = check_budget(
        estimate=0.40, run_spent=4.82, run_budget=5.0, day_spent=4.82, daily_cap=None
    )
    assert not check.allowed
    assert check.reason == "budget reached: $4.82 of $5.00 spent, next attempt estimated $0.40"
    held = check_budget(
        estimate=0.10, run_spent=4.0, run_budget=5.0, day_spent=0, daily_cap=None, reserved=0.95
    )
    assert not held.allowed
    assert "$0.95 reserved by running attempts" in held.reason


def test_budget_would_exceed_the_daily_cap() -> None:
    check = check_budget(
        estimate=0.50, run_spent=0.1, run_budget=5.0, day_spent=19.70, daily_cap=20.0
    )
    assert not check.allowed
    assert check.left == pytest.approx(0.30)
    assert check.reason.startswith("daily cap reached: $19.70 of $20.00 spent today (UTC)")


def test_budget_with_an_unknown_estimate() -> None:
    check = check_budget(
        estimate=None, run_spent=1.0, run_budget=5.0, day_spent=1.0, daily_cap=None
    )
    assert check.allowed and check.estimate is None
    assert "estimate unknown" in check.reason and "$4.00 left" in check.reason
    spent = check_budget(
        estimate=None, run_spent=5.0, run_budget=5.0, day_spent=5.0, daily_cap=None
    )
    assert not spent.allowed
    assert spent.reason == "budget reached: $5.00 of $5.00 spent"


def test_no_budget_allows_anything() -> None:
    for estimate in (None, 1e6):
        check = check_budget(
            estimate=estimate, run_spent=1e6, run_budget=None, day_spent=1e6, daily_cap=None
        )
        assert check.allowed and check.left is None
        assert check.reason == "no budget set"


def test_exact_fit_and_free_attempts_are_allowed() -> None:
    assert check_budget(
        estimate=1.0, run_spent=4.0, run_budget=5.0, day_spent=0, daily_cap=None
    ).allowed
    assert check_budget(
        estimate=0.0, run_spent=5.0, run_budget=5.0, day_spent=0, daily_cap=None
    ).allowed
