"""Requests in flight per (session, protocol, endpoint): how a test checks a concurrency limit.

A request counts from the moment the server has read its body until its answer is written (or
its connection drops). :meth:`InFlight.peak` sweeps the recorded spans, so a limit such as "never
more than one request at a time to the local Ollama server" can be checked after the fact.
"""

from __future__ import annotations

import threading
import time

Key = tuple[str, str | None, str]
"""``(session, protocol, endpoint)`` of a request, as :mod:`.routing` found them."""


class InFlight:
    """Counts of requests being answered, and the spans of those already answered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now: dict[Key, int] = {}
        self._spans: list[tuple[Key, float, float]] = []

    def began(self, key: Key) -> float:
        """A request of ``key`` is being answered; returns its start time for :meth:`ended`."""
        with self._lock:
            self._now[key] = self._now.get(key, 0) + 1
        return time.monotonic()

    def ended(self, key: Key, began: float) -> None:
        """The request of ``key`` started at ``began`` is answered."""
        with self._lock:
            self._now[key] -= 1
            self._spans.append((key, began, time.monotonic()))

    def peak(self, session: str | None, protocol: str | None, endpoint: str | None) -> int:
        """The most requests matching the filters (None: any) that were in flight at once."""

        def wanted(key: Key) -> bool:
            return (
                (session is None or key[0] == session)
                and (protocol is None or key[1] == protocol)
                and (endpoint is None or key[2] == endpoint)
            )

        with self._lock:
            spans = [(start, end) for key, start, end in self._spans if wanted(key)]
            running = sum(n for key, n in self._now.items() if wanted(key))
        # ends sort before starts at the same instant: back-to-back requests do not overlap
        marks = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
        peak = now = 0
        for _, step in marks:
            now += step
            peak = max(peak, now)
        return max(peak, running)
