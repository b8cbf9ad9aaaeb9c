"""One worker's pay machinery: the client, the shared guard and limiter, the outcome store."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from freedompay_async import (
    AmbiguousPaymentError,
    ConfigurationError,
    DuplicatePayError,
    FreedomPayClient,
    PayClaim,
    PayOutcome,
    PayRequest,
    never_sent,
)
from freedompay_async.contrib.arq._store import OutcomeStore, outcome_to_dict
from freedompay_async.contrib.redis_guard import (
    RedisPayGuard,
    RedisRateLimiter,
    settle_by_status,
)
from freedompay_async.facts import is_number
from freedompay_async.records import invalid_record
from freedompay_async.settlement import SettlePolicy

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from freedompay_async.contrib.arq._config import PayWorkerConfig

__all__ = ["PayRuntime"]

logger = logging.getLogger("freedompay_async.contrib")

#: Seconds between two tries of a pay the gateway refused or never received, during an outage.
OUTAGE_PAUSE = 1.0


class _GrantLog:
    """
    The runtime's guard as the client sees it: the Redis guard, remembering granted claims.

    A refused claim reaches the job in `DuplicatePayError.claim`; a granted one (`fresh` or
    `reclaimed`) is kept here, by customer, until the job that holds it takes it back. Only one
    job holds a customer's claim at a time, so the entry is never shared.
    """

    def __init__(self, guard: RedisPayGuard) -> None:
        self.guard = guard
        self.granted: dict[str, PayClaim] = {}

    async def claim(self, customer: str) -> PayClaim:
        claim = await self.guard.claim(customer)
        if claim.granted:
            self.granted[customer] = claim
        return claim

    async def finish(self, customer: str, *, state: str) -> None:
        await self.guard.finish(customer, state=state)


class PayRuntime:
    """
    One worker's pay machinery: the client, the shared guard and limiter, the outcome store.

    `startup` builds one per worker process; any other job system can build one with `open`
    and call `pay` from its jobs.

    Args:
        client: The client, created with `guard` and `rate_limiter`.
        guard: The shared guard.
        results: Where outcomes are stored.
        rate_limiter: The shared limiter, or None.
        busy_retry: Seconds after which a job whose customer is claimed elsewhere runs again.
        outage_tolerance: Seconds `pay` waits out a gateway outage, trying a pay that was
            refused or never sent again every second; 0 (default) returns its failure at once.

    Raises:
        ConfigurationError: `outage_tolerance` is negative or not a finite number.
    """

    def __init__(
        self,
        *,
        client: FreedomPayClient,
        guard: RedisPayGuard,
        results: OutcomeStore,
        rate_limiter: RedisRateLimiter | None = None,
        busy_retry: float = 30.0,
        outage_tolerance: float = 0.0,
    ) -> None:
        if not is_number(outage_tolerance) or not 0 <= outage_tolerance < math.inf:
            raise ConfigurationError(
                f"outage_tolerance must be a finite number of seconds >= 0, "
                f"got {outage_tolerance!r}"
            )
        self.client = client
        self.guard = guard
        self.grants: _GrantLog | None = None
        self.results = results
        self.rate_limiter = rate_limiter
        self.busy_retry = busy_retry
        self.outage_tolerance = outage_tolerance

    def __repr__(self) -> str:
        return f"PayRuntime({self.client!r}, {self.guard!r}, {self.rate_limiter!r})"

    @classmethod
    def open(cls, redis: Redis, config: PayWorkerConfig) -> PayRuntime:
        """
        Build the runtime of one worker process; close it with `aclose()`.

        Args:
            redis: A `redis.asyncio.Redis` client (arq's pool in a worker).
            config: The configuration.

        Returns:
            The runtime; its client opens on first use.
        """
        guard = RedisPayGuard(
            redis,
            config.merchant_id,
            namespace=config.namespace,
            claim_ttl=config.claim_ttl,
            settle_policy=SettlePolicy(
                new_proves_not_landed_after=config.new_proves_not_landed_after
            ),
        )
        limiter = None
        if config.rate > 0:
            limiter = RedisRateLimiter(
                redis,
                config.merchant_id,
                rate=config.rate,
                burst=config.burst,
                namespace=config.namespace,
            )
        options: dict[str, Any] = {"max_concurrency": config.max_jobs, **config.client_options}
        grants = _GrantLog(guard)
        client = FreedomPayClient(
            config.merchant_id,
            config.secret_key,
            base_url=config.base_url,
            guard=grants,
            rate_limiter=limiter,
            **options,
        )
        guard.set_settle_hook(settle_by_status(client))
        results = OutcomeStore(redis, config.merchant_id, namespace=config.namespace)
        runtime = cls(
            client=client,
            guard=guard,
            results=results,
            rate_limiter=limiter,
            busy_retry=config.claim_ttl,
            outage_tolerance=config.outage_tolerance,
        )
        runtime.grants = grants
        return runtime

    async def aclose(self) -> None:
        """Close the client and stop the guard's heartbeats."""
        try:
            await self.client.aclose()
        finally:
            await self.guard.aclose()

    async def pay(
        self, customer: str, user_id: str, card_token: str, key: object = None
    ) -> dict[str, Any]:
        """
        Pay one invoice and store its outcome, unless it only repeats an earlier one.

        Args:
            customer: The invoice's customer token.
            user_id: The payer's id.
            card_token: The saved card's token.
            key: The caller's correlation value (JSON-able, or shown as text).

        Returns:
            The outcome (`outcome_to_dict`). A duplicate of a settled customer returns the
            stored outcome with `duplicate: true` and stores nothing; a customer claimed by a
            live worker returns `claim: "busy"` and stores nothing (run the job again later).
        """
        start = time.monotonic()
        try:
            request = PayRequest(
                customer=customer, user_id=user_id, card_token=str(card_token), key=key
            )
        except ConfigurationError as exc:
            return await self._invalid(customer, user_id, key, exc)
        outcome = await self._pay_answered(request, start)
        granted = self.grants.granted.pop(customer, None) if self.grants is not None else None
        if isinstance(outcome.error, DuplicatePayError) and outcome.error.claim is not None:
            claim: PayClaim = outcome.error.claim
        elif granted is not None or not isinstance(outcome.error, ConfigurationError):
            result = outcome_to_dict(outcome, claim=granted.kind if granted else "fresh")
            await self.results.save(result)
            return result
        else:  # refused before any claim (an invalid argument): nothing was sent
            result = outcome_to_dict(outcome)
            await self.results.save(result, replace=False)
            return result
        elapsed = time.monotonic() - start
        if claim.kind == "busy":
            return {**outcome_to_dict(outcome, claim="busy"), "state": "busy"}
        if claim.kind == "settled":
            stored = await self.results.get(customer)
            if stored is None:
                stored = {
                    **outcome_to_dict(outcome, claim="settled"),
                    "state": claim.prior_state,
                    "error": None,
                    "message": claim.reason,
                }
                await self.results.save(stored, replace=False)
            return {**stored, "duplicate": True}
        payment = claim.payment
        if claim.kind == "landed" and payment is not None:
            settled = PayOutcome(request=request, payment=payment, attempts=1, elapsed=elapsed)
            result = outcome_to_dict(settled, claim="landed")
        elif claim.kind == "landed":  # settled by a hook other than this runtime's
            result = {
                **outcome_to_dict(outcome, claim="landed"),
                "state": claim.prior_state,
                "error": None,
                "message": claim.reason,
            }
        else:
            settled = PayOutcome(
                request=request,
                error=AmbiguousPaymentError(
                    f"pay for customer={customer} not sent: {claim.reason}", customer=customer
                ),
                elapsed=elapsed,
            )
            result = outcome_to_dict(settled, claim=claim.kind)
        await self.results.save(result)
        return result

    async def _pay_answered(self, request: PayRequest, start: float) -> PayOutcome:
        """Pay once; while the pay is refused or never sent, try again until `outage_tolerance`."""
        waited = False
        while True:
            outcome = await self.client.pay_one(request)
            remaining = self.outage_tolerance - (time.monotonic() - start)
            if remaining <= 0 or not never_sent(outcome):
                return outcome
            if self.grants is not None:
                # This try's claim is finished (nothing was sent); the next try claims anew.
                self.grants.granted.pop(request.customer, None)
            if not waited:
                waited = True
                logger.warning(
                    "pay job for customer=%s: the gateway refused it or cannot be reached (%s); "
                    "trying again for up to %gs",
                    request.customer,
                    type(outcome.error).__name__,
                    remaining,
                )
            await asyncio.sleep(min(OUTAGE_PAUSE, remaining))

    async def _invalid(
        self, customer: object, user_id: object, key: object, error: ConfigurationError
    ) -> dict[str, Any]:
        result = invalid_record(customer=customer, user_id=user_id, key=key, error=error)
        if isinstance(customer, str) and customer:
            await self.results.save(result, replace=False)  # never hides a real outcome
        return result
