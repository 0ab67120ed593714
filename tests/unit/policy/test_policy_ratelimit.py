"""The rate limiter: bursts up to ``calls``, steady refill, all-or-nothing across limits, bounded memory."""

from __future__ import annotations

import pytest

from bastion.errors import DenialError
from bastion.jsonrpc import codes
from bastion.policy import RateLimit, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limit(key: str = "k", calls: int = 3, per_s: float = 60.0, rule_id: str = "r") -> RateLimit:
    return RateLimit(rule_id, key, calls, per_s)


def test_burst_up_to_calls_then_rate_limited_with_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    for _ in range(3):
        limiter.acquire([limit()])
    with pytest.raises(DenialError) as info:
        limiter.acquire([limit()])
    assert info.value.code == codes.RATE_LIMITED
    assert info.value.data == {"rule": "r", "retry_after_s": 20.0}


def test_calls_are_allowed_again_when_the_window_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    for _ in range(3):
        limiter.acquire([limit()])
    clock.now += 19.9
    with pytest.raises(DenialError):
        limiter.acquire([limit()])
    clock.now += 0.1
    limiter.acquire([limit()])
    with pytest.raises(DenialError):
        limiter.acquire([limit()])


def test_keys_are_counted_separately() -> None:
    limiter = RateLimiter(clock=FakeClock())
    limiter.acquire([limit("a", calls=1)])
    limiter.acquire([limit("b", calls=1)])
    with pytest.raises(DenialError):
        limiter.acquire([limit("a", calls=1)])


def test_nothing_is_counted_when_one_of_several_limits_is_exhausted() -> None:
    limiter = RateLimiter(clock=FakeClock())
    limiter.acquire([limit("tight", calls=1)])
    with pytest.raises(DenialError) as info:
        limiter.acquire([limit("loose", calls=2, rule_id="loose"), limit("tight", calls=1, rule_id="tight")])
    assert info.value.data["rule"] == "tight"
    limiter.acquire([limit("loose", calls=2)])
    limiter.acquire([limit("loose", calls=2)])
    with pytest.raises(DenialError):
        limiter.acquire([limit("loose", calls=2)])


def test_longest_wait_is_reported_when_several_limits_are_exhausted() -> None:
    limiter = RateLimiter(clock=FakeClock())
    limiter.acquire([limit("a", calls=1, per_s=10), limit("b", calls=1, per_s=50)])
    with pytest.raises(DenialError) as info:
        limiter.acquire([limit("a", calls=1, per_s=10, rule_id="a"), limit("b", calls=1, per_s=50, rule_id="b")])
    assert info.value.data == {"rule": "b", "retry_after_s": 50.0}


def test_memory_stays_bounded_when_many_keys_are_used() -> None:
    clock = FakeClock()
    limiter = RateLimiter(max_keys=10, clock=clock)
    for index in range(100):
        limiter.acquire([limit(f"k{index}")])
    assert len(limiter) == 10
    assert limiter.evicted == 90


def test_expired_keys_are_dropped_when_time_passes() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limiter.acquire([limit("a", calls=1, per_s=1)])
    limiter.acquire([limit("b", calls=1, per_s=1)])
    clock.now += 5
    limiter.acquire([limit("c", calls=1, per_s=1)])
    assert len(limiter) == 1
    assert limiter.evicted == 0


def test_no_limits_is_a_no_op() -> None:
    limiter = RateLimiter(clock=FakeClock())
    limiter.acquire([])
    assert len(limiter) == 0
