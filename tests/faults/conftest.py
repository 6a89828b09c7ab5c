"""The fault suite's shared tally: every campaign adds to it, and pytest prints it at the end."""

from __future__ import annotations

from typing import Any

from faults.driver import Tally

TALLY = Tally()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TALLY.runs:
        terminalreporter.section("stretto fault suite")
        terminalreporter.write_line(TALLY.summary())
        for line in TALLY.details[:50]:
            terminalreporter.write_line(f"  {line}")
