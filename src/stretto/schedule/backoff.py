"""How long a rate-limited task waits before its next attempt: pure, so the same run waits the
same (the journal's ``backoff`` decision records each wait).

* The provider named a delay (a ``Retry-After`` header, or words such as "try again in 3s"):
  that delay, at most :data:`MAX_STATED` seconds, plus up to 10% so tasks refused together do
  not all come back in the same instant.
* It named none (Codex, aider and Qwen Code show none): exponential back-off with jitter,
  ``BASE`` seconds doubled for each rate-limited attempt of the task in a row, at most ``CAP``,
  then a random share between half and all of it ("equal jitter"). The randomness is drawn
  from the run, task and attempt, so it is the same on every replay.

Without it, a server that always answers 429 got 12 codex attempts in 3.3 s.
"""

from __future__ import annotations

import hashlib

MAX_STATED = 600.0  # never wait longer than this for a provider's stated delay
BASE = 2.0  # seconds before the second attempt when no delay is known
CAP = 120.0  # the longest wait when no delay is known


def _unit(key: str) -> float:
    """A number in [0, 1) drawn from ``key`` (the same key, the same number)."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def rate_limit_wait(stated: float | None, streak: int, key: str) -> float:
    """Seconds to wait before the next attempt of a task whose attempt was rate limited.

    Args:
        stated: the delay the provider named, in seconds; None if it named none.
        streak: how many attempts of the task in a row were rate limited (1 for the first).
        key: what the jitter is drawn from (e.g. ``"RUN/TASK/ATTEMPT"``).
    """
    jitter = _unit(key)
    if stated is not None:
        base = min(max(stated, 0.0), MAX_STATED)
        return round(base * (1 + 0.1 * jitter), 3)
    ceiling = min(CAP, BASE * 2.0 ** max(streak - 1, 0))
    return round(float(ceiling * (0.5 + 0.5 * jitter)), 3)
