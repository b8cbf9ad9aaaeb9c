"""
The duplicate-pay guard and rate-limiter seams of the client, and the default in-memory guard.

A guard answers `claim(customer)` with a `PayClaim` before the first pay attempt and is told
with `finish(customer, state=...)` how the pay ended. `state` is a `PayOutcome.state`: `error`
means nothing is known to be charged (the claim is released); every other state keeps the
customer refused (`ambiguous` and `pending` included: the pay may have landed).
"""

from __future__ import annotations

from typing import Protocol

from freedompay_async._exceptions import ConfigurationError
from freedompay_async._models import CLAIM_GRANTED, PayClaim

__all__ = ["InMemoryPayGuard", "PayGuard", "RateLimiter"]

_IN_FLIGHT = PayClaim(
    granted=False,
    reason="a pay for this customer is already in flight on this client",
    prior_state="claimed",
    kind="busy",
)


class PayGuard(Protocol):
    """
    Refuses a second pay of the same `customer` while the first is in flight or settled.

    The client claims a customer before its first pay attempt and reports the end state after.
    `freedompay_async.contrib` offers a Redis-backed guard shared by many processes.
    """

    async def claim(self, customer: str) -> PayClaim:
        """
        Claim *customer* for one pay.

        Args:
            customer: The invoice's customer token.

        Returns:
            The decision: `granted`, or why not (`reason`) and the state held (`prior_state`).
        """
        ...

    async def finish(self, customer: str, *, state: str) -> None:
        """
        Report how the claimed pay ended.

        Args:
            customer: The customer token claimed before.
            state: A `PayOutcome.state` value; `error` means nothing is known to be charged and
                the claim is released.
        """
        ...


class InMemoryPayGuard:
    """
    The default duplicate guard: one client, one process.

    Customers in flight are refused; settled ones (any state but `error`, so `ambiguous` and
    `pending` too) are remembered, the most recent `remember` of them, and refused too.

    Args:
        remember: How many settled customers to remember.
    """

    def __init__(self, *, remember: int = 100_000) -> None:
        if isinstance(remember, bool) or not isinstance(remember, int) or remember < 0:
            raise ConfigurationError(f"remember must be an integer >= 0, got {remember!r}")
        self._remember = remember
        self._in_flight: set[str] = set()
        self._settled: dict[str, str] = {}

    async def claim(self, customer: str) -> PayClaim:
        """
        Claim *customer* for one pay.

        Args:
            customer: The invoice's customer token.

        Returns:
            The decision.
        """
        if customer in self._in_flight:
            return _IN_FLIGHT
        state = self._settled.get(customer)
        if state is not None:
            return PayClaim(
                granted=False,
                reason=f"this customer was already paid by this client (state={state})",
                prior_state=state,
                kind="settled",
            )
        self._in_flight.add(customer)
        return CLAIM_GRANTED

    async def finish(self, customer: str, *, state: str) -> None:
        """
        Release the claim and remember a settled customer.

        Args:
            customer: The customer token.
            state: The outcome's state.
        """
        self._in_flight.discard(customer)
        if state == "error" or self._remember == 0:
            return
        self._settled[customer] = state
        if len(self._settled) > self._remember:
            del self._settled[next(iter(self._settled))]


class RateLimiter(Protocol):
    """A limit on request starts that the client consults before each send."""

    async def acquire(self) -> None:
        """Wait until one more request may start."""
        ...
