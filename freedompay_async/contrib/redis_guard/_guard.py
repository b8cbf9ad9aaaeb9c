"""`RedisPayGuard`: one duplicate-pay guard for every worker of a merchant, held in Redis."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from typing import TYPE_CHECKING, Final

from freedompay_async import ConfigurationError, PayClaim, settlement
from freedompay_async.contrib.redis_guard._common import (
    GuardRecord,
    Held,
    SettleHook,
    default_owner,
    key_part,
    positive,
    state_of_status,
    text_of,
)
from freedompay_async.contrib.redis_guard._scripts import CLAIM, FINISH, RELEASE, RENEW
from freedompay_async.settlement import SettlePolicy, Verdict

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisPayGuard"]

logger = logging.getLogger("freedompay_async.contrib")

_FRESH: Final = PayClaim(granted=True, kind="fresh")


class RedisPayGuard:
    """
    A `PayGuard` shared by every process that uses the same Redis and merchant.

    Args:
        redis: A `redis.asyncio.Redis` client (bytes or decoded replies both work).
        merchant_id: The merchant the keys belong to.
        namespace: The first part of every key.
        claim_ttl: Seconds a claim lives without a heartbeat: how long a crashed worker's
            customer stays locked. Keep it longer than the gateway may take to land a pay that
            was already sent (a dead worker's request can still be processed).
        heartbeat: Seconds between claim renewals (default `claim_ttl / 3`); 0 disables them,
            and then `claim_ttl` must outlast the longest pay call.
        max_hold: Seconds after which a heartbeat stops renewing a claim (a stuck pay); its
            claim then expires and the next claimer settles by status.
        remember: Seconds a recorded state is kept (default 30 days).
        settle: Called for a customer whose earlier pay has no known end; see `SettleHook`.
        owner: This process's name in claim tokens (default `host:pid`).
        settle_policy: When a status of `new` proves that an earlier pay never landed, for
            `freedompay_async.settlement.settle()`; by default it never does. Give the clients'
            own rule (`RetryPolicy(resend_pay_if_new=True)` is
            `SettlePolicy(new_proves_not_landed_after=reconcile_grace)`) so that the guard and the
            clients answer alike.

    Raises:
        ConfigurationError: An option is invalid.
    """

    def __init__(
        self,
        redis: Redis,
        merchant_id: str | int,
        *,
        namespace: str = "freedompay",
        claim_ttl: float = 30.0,
        heartbeat: float | None = None,
        max_hold: float = 900.0,
        remember: float = 30 * 86400.0,
        settle: SettleHook | None = None,
        owner: str | None = None,
        settle_policy: SettlePolicy | None = None,
    ) -> None:
        self._redis = redis
        merchant = key_part("merchant_id", merchant_id)
        self._prefix = f"{key_part('namespace', namespace)}:{merchant}:"
        self._claim_ttl = positive("claim_ttl", claim_ttl)
        if heartbeat is None:
            heartbeat = self._claim_ttl / 3
        elif heartbeat != 0:
            heartbeat = positive("heartbeat", heartbeat)
            if heartbeat >= self._claim_ttl:
                raise ConfigurationError("heartbeat must be shorter than claim_ttl")
        self._heartbeat = float(heartbeat)
        self._max_hold = positive("max_hold", max_hold)
        self._remember = positive("remember", remember)
        self._settle = settle
        self._settle_policy = settle_policy if settle_policy is not None else SettlePolicy()
        if not isinstance(self._settle_policy, SettlePolicy):
            raise ConfigurationError("settle_policy must be a SettlePolicy")
        self._owner = owner if owner is not None else default_owner()
        self._held: dict[str, Held] = {}
        self._claim = redis.register_script(CLAIM)
        self._finish = redis.register_script(FINISH)
        self._release = redis.register_script(RELEASE)
        self._renew = redis.register_script(RENEW)

    def __repr__(self) -> str:
        return f"RedisPayGuard(prefix={self._prefix!r}, claim_ttl={self._claim_ttl:g})"

    @property
    def prefix(self) -> str:
        """The key prefix, `{namespace}:{merchant_id}:`."""
        return self._prefix

    def set_settle_hook(self, settle: SettleHook | None) -> None:
        """
        Set (or clear) the hook that settles a customer whose earlier pay has no known end.

        Args:
            settle: See `SettleHook`; typically asks `client.invoice_status(customer=...)`.
        """
        self._settle = settle

    def _keys(self, customer: str) -> list[str]:
        base = f"{self._prefix}{{{customer}}}"
        return [f"{base}:claim", f"{base}:state", f"{base}:wrote"]

    def _ms(self, seconds: float) -> int:
        return max(1, math.ceil(seconds * 1000))

    async def claim(self, customer: str) -> PayClaim:
        """
        Claim *customer* for one pay, across every process using this Redis and merchant.

        Args:
            customer: The invoice's customer token.

        Returns:
            The decision: `granted` (then `finish` it), or refused with `reason`, the state held
            (`prior_state`), one of `ClaimKind` (`kind`), and the status read that settled an
            earlier pay (`payment`), if any.
        """
        keys = self._keys(customer)
        token = f"{self._owner}:{uuid.uuid4().hex}"
        reply = await self._claim(
            keys=keys, args=[token, self._ms(self._claim_ttl), self._ms(self._remember)]
        )
        verdict, detail = text_of(reply[0]), text_of(reply[1])
        if verdict == "settled":
            return PayClaim(
                granted=False,
                kind="settled",
                prior_state=detail,
                reason=f"this customer was already paid through the shared guard (state={detail})",
            )
        if verdict == "busy":
            return PayClaim(
                granted=False,
                kind="busy",
                prior_state=detail or None,
                reason="a pay for this customer is in flight in another worker",
            )
        self._hold(customer, token)
        if verdict == "fresh":
            return _FRESH
        age = int(reply[2]) if len(reply) > 2 else -1  # noqa: PLR2004 - the reply's third item
        try:
            return await self._settle_reclaim(customer, token, doubt=detail, age_ms=age)
        except BaseException:  # cancelled while settling: give the claim back, pay nothing
            await self._drop(customer, token)
            raise

    async def _settle_reclaim(
        self, customer: str, token: str, *, doubt: str, age_ms: int
    ) -> PayClaim:
        """Holding the claim of a customer in doubt: pay only if `settle()` proves not-landed."""
        if self._settle is None:
            await self._drop(customer, token)
            return PayClaim(
                granted=False,
                kind="unsettled",
                prior_state=doubt,
                reason=(
                    f"an earlier pay of this customer has no known end (state={doubt}); "
                    f"check invoice_status(customer={customer!r}) before paying again"
                ),
            )
        try:
            payment = await self._settle(customer)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the doubt; never pay blindly
            await self._drop(customer, token)
            logger.warning(
                "could not settle customer=%s by status (%s); not paid",
                customer,
                type(exc).__name__,
            )
            return PayClaim(
                granted=False,
                kind="unsettled",
                prior_state=doubt,
                reason=(
                    f"an earlier pay of this customer has no known end (state={doubt}) and its "
                    f"status could not be read ({type(exc).__name__}); not paid"
                ),
            )
        # Seconds on the reader's clock. A finished doubt was last written age_ms before this
        # claim. A crashed worker's claim expired before this claim: it stopped renewing it at
        # least claim_ttl - heartbeat before (it renews every heartbeat while its pay runs), so
        # its pay was last written at least that long ago; without heartbeats, only now is sure.
        read_at = asyncio.get_running_loop().time()
        if age_ms >= 0:
            last_write_at = read_at - age_ms / 1000
        else:
            last_write_at = read_at - (
                self._claim_ttl - self._heartbeat if self._heartbeat else 0.0
            )
        verdict = settlement.settle(
            payment.invoice_status,
            read_at=read_at,
            last_write_at=last_write_at,
            policy=self._settle_policy,
        )
        if verdict is Verdict.NOT_LANDED:
            logger.info("customer=%s: status proves state=%s never landed; paying", customer, doubt)
            return PayClaim(granted=True, kind="reclaimed", prior_state=doubt, payment=payment)
        if verdict is Verdict.IN_DOUBT:
            await self._drop(customer, token)
            return PayClaim(
                granted=False,
                kind="unsettled",
                prior_state=doubt,
                payment=payment,
                reason=(
                    f"an earlier pay of this customer (state={doubt}) may still land: its status "
                    "reads new, which does not prove it never landed; not paid"
                ),
            )
        state = state_of_status(payment) or "pending"
        await self.finish(customer, state=state)
        logger.warning(
            "customer=%s: an earlier pay (state=%s) turned out %s; not paid again",
            customer,
            doubt,
            state,
        )
        return PayClaim(
            granted=False,
            kind="landed",
            prior_state=state,
            payment=payment,
            reason=f"an earlier pay of this customer ended as {state}; not paid again",
        )

    def _hold(self, customer: str, token: str) -> None:
        task = None
        if self._heartbeat > 0:
            task = asyncio.create_task(
                self._beat(customer, token), name=f"freedompay-claim-heartbeat:{customer}"
            )
        self._held[customer] = Held(token=token, heartbeat=task)

    async def _drop(self, customer: str, token: str) -> None:
        """Give a claim back without recording anything."""
        held = self._held.pop(customer, None)
        if held is not None and held.heartbeat is not None:
            held.heartbeat.cancel()
        await self._release(keys=self._keys(customer)[:1], args=[token])

    async def _beat(self, customer: str, token: str) -> None:
        key = self._keys(customer)[:1]
        ttl_ms = self._ms(self._claim_ttl)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(math.ceil(self._max_hold / self._heartbeat)):
            await asyncio.sleep(self._heartbeat)
            if loop.time() - start >= self._max_hold:
                break
            try:
                renewed = await self._renew(keys=key, args=[token, ttl_ms])
            except Exception as exc:  # noqa: BLE001 - the next beat tries again
                logger.warning(
                    "claim heartbeat for customer=%s failed (%s)", customer, type(exc).__name__
                )
                continue
            if not renewed:
                logger.warning(
                    "claim for customer=%s was lost while paying (expired or taken); "
                    "another worker may settle it by status",
                    customer,
                )
                return
        logger.warning(
            "pay for customer=%s held its claim past max_hold=%gs; no longer renewed",
            customer,
            self._max_hold,
        )

    async def finish(self, customer: str, *, state: str) -> None:
        """
        Record how the claimed pay ended and release the claim.

        Args:
            customer: The customer claimed before.
            state: A `PayOutcome.state`; `error` releases the claim and records nothing.
        """
        held = self._held.pop(customer, None)
        if held is None:
            logger.warning("finish for customer=%s without a claim held here; ignored", customer)
            return
        if held.heartbeat is not None:
            held.heartbeat.cancel()
        owned = await self._finish(
            keys=self._keys(customer), args=[held.token, state, self._ms(self._remember)]
        )
        if not owned:
            logger.warning(
                "claim for customer=%s had expired before the pay ended (state=%s)",
                customer,
                state,
            )

    async def peek(self, customer: str) -> GuardRecord:
        """
        Read what Redis holds for *customer*, without changing it.

        Args:
            customer: The customer token.

        Returns:
            The recorded state, the claim holder and the claim's remaining time.
        """
        claim_key, state_key, _ = self._keys(customer)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(state_key)
            pipe.get(claim_key)
            pipe.pttl(claim_key)
            state, holder, pttl = await pipe.execute()
        return GuardRecord(
            state=None if state is None else text_of(state),
            holder=None if holder is None else text_of(holder),
            claim_ttl=int(pttl) / 1000 if holder is not None and int(pttl) >= 0 else None,
        )

    async def forget(self, customer: str) -> None:
        """
        Delete the claim and the recorded state of *customer* (after a manual check).

        Args:
            customer: The customer token.
        """
        await self._redis.delete(*self._keys(customer))

    async def aclose(self) -> None:
        """Stop every heartbeat of this process; claims still held expire on their own."""
        held, self._held = self._held, {}
        tasks = [entry.heartbeat for entry in held.values() if entry.heartbeat is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
