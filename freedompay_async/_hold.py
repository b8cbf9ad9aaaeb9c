"""
Holding a batch through a gateway outage: pays that were never sent wait for the gateway.

Theory of operation
-------------------

`pay_invoices` pays every item through `GatewayHold.pay`. A web request should fail fast when the
gateway is down; a batch should wait for it. So:

1. **Down.** An outcome proving that the pay was never sent and never was in doubt — the breaker
   open (`CircuitOpenError`), a connect error or timeout, no gate slot (`PoolTimeout`), HTTP
   429/503, the retry budget empty after one of those — marks the gateway *down*.
2. **Held.** While it is down, no worker starts a pay: items whose pay was not sent, and items
   taken from the input meanwhile, are *held* (`held`, `waiting`).
3. **Probe.** One held worker at a time is the *prober*: it sleeps until the breaker lets one
   request through (the end of its cool-down, jittered), or a capped backoff without a breaker,
   then pays its item. A pay the gateway answered (a payment or a gateway error) while the
   breaker is closed marks the gateway *up* and wakes every held worker; any other end hands the
   probe on. So during an outage the batch sends only the probes.
4. **Never held.** An outcome that may have charged (`ambiguous`, a pay that timed out or broke
   after it was written) follows the client's reconcile rules and is returned as it is: only a
   pay that provably never left is ever sent again, and the duplicate guard released it first
   (its state was `error`).
5. **Tolerance.** Once the gateway has been down `tolerance` seconds, every held item ends with
   its not-sent error (`CircuitOpenError` for an item never tried) and new items go back to
   failing fast, until a pay is answered again. A tolerance of 0 turns holding off.

Progress changes (down, up, a worker held) are reported through `on_change`, which the batch turns
into a `BatchProgress` without an outcome, so a caller sees the wait as it happens.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

import attrs

from freedompay_async._exceptions import CircuitOpenError, ClientClosedError, GatewayError
from freedompay_async._models import PayOutcome
from freedompay_async._retry import BreakerState, Outcome, classify

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from random import Random

    from freedompay_async._models import PayRequest
    from freedompay_async._retry import CircuitBreaker

__all__ = ["DEFAULT_OUTAGE_TOLERANCE", "GatewayHold", "never_sent"]

logger = logging.getLogger("freedompay_async")

#: Seconds a batch waits for the gateway by default before failing what it holds.
DEFAULT_OUTAGE_TOLERANCE: Final = 300.0
#: Without an open breaker to wait for, probe *n* waits `min(MAX, BASE * 2**n)`, jittered.
PROBE_BACKOFF_BASE: Final = 0.5
PROBE_BACKOFF_MAX: Final = 10.0
#: Probe delays are stretched by `uniform(1, 1 + PROBE_JITTER)`, plus `PROBE_SLACK` seconds past
#: a breaker's cool-down, so probes do not land in lockstep with other timers.
PROBE_JITTER: Final = 0.2
PROBE_SLACK: Final = 0.05

_NOT_SENT: Final = frozenset({Outcome.NOT_SENT, Outcome.REFUSED})


def never_sent(outcome: PayOutcome) -> bool:
    """
    Tell whether an outcome proves that its pay never reached the gateway.

    Such a pay is safe to send again once the gateway answers: `pay_invoices` holds these during
    an outage, and a job queue can run their jobs again later.

    Args:
        outcome: A pay's outcome.

    Returns:
        True for state `error` with a not-sent or refused error (the breaker, a connect error or
        timeout, no gate slot, HTTP 429/503); False for anything that may have charged or that
        the gateway answered, and for a closed client.
    """
    error = outcome.error
    if error is None or outcome.state != "error" or isinstance(error, ClientClosedError):
        return False
    return isinstance(error, CircuitOpenError) or classify(error, moves_money=True) in _NOT_SENT


def _answered(outcome: PayOutcome) -> bool:
    return outcome.payment is not None or isinstance(outcome.error, GatewayError)


class GatewayHold:
    """
    One batch's view of the gateway: up, or down with held items waiting for a probe.

    Args:
        tolerance: Seconds to wait for the gateway before failing what is held; 0 disables.
        monotonic: The clock.
        sleep: The sleeper (the client's clock).
        breaker: The client's circuit breaker, if any (read to time the probes).
        rng: Random source for jitter.
    """

    def __init__(
        self,
        *,
        tolerance: float,
        monotonic: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        breaker: CircuitBreaker | None,
        rng: Random,
    ) -> None:
        self.tolerance = tolerance
        self.on_change: Callable[[], object] | None = None
        self.held = 0
        self.down = False
        self.given_up = False
        self._monotonic = monotonic
        self._sleep = sleep
        self._breaker = breaker
        self._rng = rng
        self._down_since = 0.0
        self._probing = False
        self._failed_probes = 0
        self._changed = asyncio.Event()

    @property
    def waiting(self) -> bool:
        """Whether the batch is holding its pays until the gateway answers again."""
        return self.down and not self.given_up

    async def pay(
        self, pay_one: Callable[[PayRequest], Awaitable[PayOutcome]], request: PayRequest
    ) -> PayOutcome:
        """
        Pay *request*, holding it while the gateway is down; never resend a pay that may have left.

        Args:
            pay_one: Pays one request and describes the result.
            request: The item.

        Returns:
            The item's outcome; `attempts` and `elapsed` cover every try.
        """
        if self.tolerance <= 0:
            return await pay_one(request)
        start = self._monotonic()
        attempts = 0
        held = False
        last: PayOutcome | None = None
        while True:
            probe = False
            if self.waiting:
                held = True
                probe = await self._hold()
                if not probe and self.down:
                    return self._gave_up(request, last, attempts, start)
            # The usual item is paid straight through: no layer, no copy of its outcome.
            outcome = await (self._probe(pay_one, request) if probe else pay_one(request))
            attempts += outcome.attempts
            if self._hold_again(outcome, probe=probe):
                last = outcome
                continue
            if not held and last is None:
                return outcome
            return self._merged(outcome, attempts, start)

    async def _probe(
        self, pay_one: Callable[[PayRequest], Awaitable[PayOutcome]], request: PayRequest
    ) -> PayOutcome:
        try:
            outcome = await pay_one(request)
        except BaseException:
            self._probing = False
            self._notify()
            raise
        self._probing = False  # `_hold_again` tells the waiters what the probe found
        return outcome

    def _hold_again(self, outcome: PayOutcome, *, probe: bool) -> bool:
        """Learn from *outcome* whether the gateway is up; True to hold the item again."""
        now = self._monotonic()
        again = never_sent(outcome)
        if again:
            self._mark_down(now)
            again = not self._expired(now)
        else:
            breaker = self._breaker
            up = _answered(outcome) and (breaker is None or breaker.state is BreakerState.CLOSED)
            if up:
                self._mark_up(now)
        if probe:
            self._failed_probes = 0 if not self.down else self._failed_probes + 1
            self._notify()
        return again

    # -- waiting ----------------------------------------------------------------------------

    async def _hold(self) -> bool:
        """Wait while the gateway is down: True when this worker must probe now, else False."""
        self.held += 1
        self._report()
        try:
            while self.waiting:
                now = self._monotonic()
                if self._expired(now):
                    break
                if not self._probing:
                    self._probing = True
                    try:
                        await self._sleep(self._probe_delay(now))
                    except BaseException:
                        self._probing = False
                        self._notify()
                        raise
                    if self.waiting and not self._expired(self._monotonic()):
                        return True
                    self._probing = False
                    self._notify()
                    break
                await self._changed.wait()
            return False
        finally:
            self.held -= 1

    def _probe_delay(self, now: float) -> float:
        breaker = self._breaker
        stretch = self._rng.uniform(1.0, 1.0 + PROBE_JITTER)
        if breaker is not None and breaker.state is BreakerState.OPEN:
            delay = max(breaker.opened_at + breaker.cooldown - now, 0.0) * stretch + PROBE_SLACK
        else:
            exponent = min(self._failed_probes, 16)
            delay = min(PROBE_BACKOFF_MAX, PROBE_BACKOFF_BASE * 2**exponent) * stretch
        # Wake no later than the tolerance's end, to fail what is held on time.
        return min(delay, max(self._down_since + self.tolerance - now, 0.0))

    # -- state changes ----------------------------------------------------------------------

    def _report(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        self._report()

    def _mark_down(self, now: float) -> None:
        if self.down:
            return
        self.down = True
        self.given_up = False
        self._down_since = now
        self._failed_probes = 0
        logger.warning(
            "gateway unavailable: the batch holds the pays it has not sent and waits for it "
            "(outage tolerance %gs)",
            self.tolerance,
        )
        self._notify()

    def _mark_up(self, now: float) -> None:
        if not self.down:
            return
        self.down = False
        self.given_up = False
        logger.warning(
            "gateway answering again after %.1fs: the batch resumes", now - self._down_since
        )
        self._notify()

    def _expired(self, now: float) -> bool:
        if self.waiting and now - self._down_since >= self.tolerance:
            self.given_up = True
            logger.warning(
                "gateway unavailable for %gs (outage tolerance): the pays held are failed as "
                "not sent; they are safe to resubmit",
                self.tolerance,
            )
            self._notify()
        return self.given_up

    # -- outcomes ---------------------------------------------------------------------------

    def _merged(self, outcome: PayOutcome, attempts: int, start: float) -> PayOutcome:
        elapsed = self._monotonic() - start
        if attempts == outcome.attempts and elapsed <= outcome.elapsed:
            return outcome
        return attrs.evolve(outcome, attempts=attempts, elapsed=elapsed)

    def _gave_up(
        self, request: PayRequest, last: PayOutcome | None, attempts: int, start: float
    ) -> PayOutcome:
        if last is not None:
            return self._merged(last, attempts, start)
        customer = request.customer
        error = CircuitOpenError(
            f"pay for customer={customer} not sent: the gateway was unavailable for "
            f"{self.tolerance:g}s (outage_tolerance); safe to resubmit",
            operation="pay",
        )
        return PayOutcome(
            request=request, error=error, attempts=0, elapsed=self._monotonic() - start
        )
