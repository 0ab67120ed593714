"""In-process rate limiting for the limits a ``Decision`` carries (GCRA, a token bucket in one float).

Owns per-key state — the "theoretical arrival time" of the next call — with O(1) work per limit
and at most ``max_keys`` keys (least recently used keys are dropped first). Counting is local to
this process; the gateway calls ``acquire`` only for decisions that are not DENY.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from bastion.errors import DenialError
from bastion.jsonrpc import codes
from bastion.policy.model import RateLimit


class RateLimiter:
    """Allows ``calls`` per ``per_s`` seconds per key, in bursts of up to ``calls``.

    Not thread-safe: use it from the event loop only. ``clock`` returns seconds (monotonic).
    """

    __slots__ = ("_arrivals", "_clock", "_max_keys", "evicted")

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._arrivals: OrderedDict[str, float] = OrderedDict()
        self._max_keys = max_keys
        self._clock = clock
        self.evicted = 0
        """How many keys were dropped while their bucket was still in use (a sign ``max_keys`` is too low)."""

    def __len__(self) -> int:
        return len(self._arrivals)

    def acquire(self, limits: Sequence[RateLimit]) -> None:
        """Count one call against every limit — or against none, if any limit is exhausted.

        Raises:
            DenialError: code RATE_LIMITED; ``data`` has ``rule`` and ``retry_after_s`` (the longest wait).
        """
        now = self._clock()
        arrivals = self._arrivals
        updates: list[tuple[str, float]] = []
        blocked: tuple[float, RateLimit] | None = None
        for limit in limits:
            interval = limit.per_s / limit.calls
            next_arrival = max(arrivals.get(limit.key, now), now) + interval
            wait = next_arrival - now - limit.per_s
            if wait > 1e-9:
                if blocked is None or wait > blocked[0]:
                    blocked = (wait, limit)
            else:
                updates.append((limit.key, next_arrival))
        if blocked is not None:
            wait, limit = blocked
            retry_after_s = math.ceil(wait * 1000) / 1000
            raise DenialError(
                f"rate limit exceeded ({limit.calls} calls per {limit.per_s:g} s); retry after {retry_after_s:g} s",
                code=codes.RATE_LIMITED,
                data={"rule": limit.rule_id, "retry_after_s": retry_after_s},
            )
        for key, next_arrival in updates:
            arrivals[key] = next_arrival
            arrivals.move_to_end(key)
        self._trim(now)

    def _trim(self, now: float) -> None:
        arrivals = self._arrivals
        for _ in range(2):  # amortised cleanup: a key whose arrival time has passed holds no state
            if arrivals and next(iter(arrivals.values())) <= now:
                arrivals.popitem(last=False)
        while len(arrivals) > self._max_keys:
            _, next_arrival = arrivals.popitem(last=False)
            if next_arrival > now:
                self.evicted += 1
