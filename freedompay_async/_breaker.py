"""
The per-client retry budget and circuit breaker: small state machines shared by every call.

Both are pure: they take `now` as an argument and never read a clock. `_retry` decides with them
and re-exports them; reconcile and poll reads bypass both (design §3.3).
"""

from __future__ import annotations

import enum

__all__ = ["BreakerState", "CircuitBreaker", "RetryBudget"]


class RetryBudget:
    """
    A per-client token bucket that caps resends across all calls (botocore's retry quota).

    It starts full; a resend costs `retry_cost` tokens (`timeout_cost` after a timeout) and a
    success refunds one. When it runs dry, first attempts still go out but nothing is resent, so
    an outage is not multiplied by the number of attempts.
    """

    retry_cost = 5
    timeout_cost = 10

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.tokens = capacity

    def can_spend(self, *, timeout: bool) -> bool:
        """
        Tell whether a resend is affordable.

        Args:
            timeout: Whether the failed attempt was a timeout (costs more).

        Returns:
            True when enough tokens remain.
        """
        return self.tokens >= (self.timeout_cost if timeout else self.retry_cost)

    def spend(self, *, timeout: bool) -> None:
        """
        Take the cost of one resend.

        Args:
            timeout: Whether the failed attempt was a timeout.
        """
        self.tokens = max(0, self.tokens - (self.timeout_cost if timeout else self.retry_cost))

    def refund(self) -> None:
        """Give back one token after a successful attempt."""
        if self.tokens < self.capacity:
            self.tokens += 1


class BreakerState(enum.Enum):
    """The circuit breaker's states."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """
    A per-client breaker that fails fast after sustained failures.

    CLOSED counts consecutive failed attempts; at `threshold` it opens. OPEN refuses every send
    until `cooldown` seconds have passed, then lets exactly one probe through (HALF_OPEN): its
    success closes the breaker, its failure opens it again for another cooldown.
    """

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._probe_out = False
        self._probe_at = 0.0

    def allow(self, now: float) -> bool:
        """
        Ask whether a request may be sent now.

        Args:
            now: The current monotonic time.

        Returns:
            True when closed, or for the single probe after the cooldown.
        """
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now - self.opened_at < self.cooldown:
                return False
            self.state = BreakerState.HALF_OPEN
            self._probe_out = False
        if self._probe_out and now - self._probe_at < self.cooldown:
            return False
        # No probe out, or the last one never reported (its call was cancelled): send one.
        self._probe_out = True
        self._probe_at = now
        return True

    def record(self, *, failure: bool, now: float) -> None:
        """
        Record an attempt's result.

        Args:
            failure: Whether the attempt failed in a way that shows the gateway unwell.
            now: The current monotonic time.
        """
        if not failure:
            self.state = BreakerState.CLOSED
            self.failures = 0
            self._probe_out = False
            return
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.threshold:
            self.state = BreakerState.OPEN
            self.opened_at = now
            self._probe_out = False
