"""The emulated servers' own rate limit: a sliding window per key, in process memory.

This is the *server* side (what NCBI or ClinicalTrials.gov enforce), not our client-side
limiter. A request is allowed when fewer than `limit` requests of the same key were allowed
during the last `window_s` seconds. Refused requests do not use up the quota but are counted
in `count`, as NCBI's 429 body shows (`"count":"26","limit":"3"`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

_SWEEP_EVERY = 1024


@dataclass(frozen=True)
class RateDecision:
    """The limiter's answer to one request.

    Args:
        allowed: whether the request may proceed.
        count: requests of this key seen in the window, this one included (refused ones too).
        limit: requests allowed per window.
        remaining: requests still allowed in the window after this one.
        retry_after_s: seconds until the next request of this key would be allowed (0 if allowed).
    """

    allowed: bool
    count: int
    limit: int
    remaining: int
    retry_after_s: float


def per_window(rate_per_s: float, window_s: float) -> int:
    """Requests allowed per window for a rate in requests/s (at least one)."""
    return max(1, math.floor(rate_per_s * window_s + 1e-9))


class SlidingWindowLimiter:
    """Sliding-window-log limiter keyed by API key or client address.

    Args:
        window_s: window length in seconds.
        clock: monotonic clock in seconds (injectable for tests).
    """

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._allowed: dict[str, deque[float]] = {}
        self._seen: dict[str, deque[float]] = {}
        self._checks = 0

    def check(self, key: str, limit: int) -> RateDecision:
        """Record one request of `key` and say whether it is within `limit` per window.

        Args:
            key: the API key, or the client address when there is none.
            limit: requests allowed per window for this key.

        Returns:
            The decision, with the numbers a 429 answer reports.
        """
        now = self._clock()
        horizon = now - self.window_s
        allowed = self._allowed.setdefault(key, deque())
        seen = self._seen.setdefault(key, deque())
        for log in (allowed, seen):
            while log and log[0] <= horizon:
                log.popleft()
        seen.append(now)
        self._checks += 1
        if self._checks % _SWEEP_EVERY == 0:
            self._sweep(horizon)
        if len(allowed) < limit:
            allowed.append(now)
            return RateDecision(True, len(seen), limit, limit - len(allowed), 0.0)
        retry = max(0.0, allowed[0] + self.window_s - now)
        return RateDecision(False, len(seen), limit, 0, retry)

    def _sweep(self, horizon: float) -> None:
        """Forget keys idle for a whole window, so memory follows the active clients."""
        for key in [k for k, log in self._seen.items() if not log or log[-1] <= horizon]:
            self._seen.pop(key, None)
            self._allowed.pop(key, None)
