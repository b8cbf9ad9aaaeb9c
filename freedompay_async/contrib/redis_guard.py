"""
A duplicate-pay guard and a rate limiter shared through Redis by every worker of a merchant.

`RedisPayGuard` implements the client's `PayGuard` protocol for many processes at once:

- **claim** is one Lua script: a settled customer is refused; a customer whose claim key exists
  is refused (another worker is paying it); otherwise `SET claim token PX ttl` takes it. Two
  claimers can never both win, whatever their number or host.
- While a pay runs, a heartbeat renews the claim every `heartbeat` seconds, for at most
  `max_hold`. A worker that dies stops renewing and its claim expires `claim_ttl` seconds later.
- **finish** records the pay's `PayOutcome.state` for `remember` seconds (`paid`, `failed`,
  `expired` are refused for good; `pending` and `ambiguous` are kept as doubts), or, for `error`
  (nothing is known to be charged), releases the claim and forgets a fresh one.
- A customer whose earlier claim ended without a terminal state (a crashed worker, a `pending` or
  `ambiguous` outcome) is **never paid blindly**: the next claimer holds the claim and calls the
  `settle` hook, which reads the invoice's status, and `freedompay_async.settlement.settle()`
  decides what that read proves — the same rule the client's reconcile and the CLI's resume use.
  A terminal or moving status is recorded and refused. A status of `new` is paid only when
  `settle()` says it proves the earlier pay never landed (`settle_policy`; by default it never
  does, and the customer stays refused). Without a hook such a customer is refused, and stays
  refused until a hook settles it or `forget()` is called after a manual check.
- When a pay ends in doubt (`pending`, `ambiguous`), `finish` also records the Redis time, so a
  later reclaim knows how long ago that pay could last have been written. A crashed worker's pay
  was last written at least `claim_ttl - heartbeat` before its claim expired (it renewed the
  claim while paying); without heartbeats, that bound is 0.

Keys live under `{namespace}:{merchant_id}:`; the two keys of a customer share a Redis Cluster
hash tag, so the scripts also run on a cluster.

`RedisRateLimiter` is a token bucket in one Redis hash (`rate` tokens per second, at most `burst`
saved up), updated by a Lua script that reads Redis `TIME`, so the workers' own clocks never
matter. A request that finds no token reserves the next one and sleeps until it is due: waiters
are served in order and Redis is asked once per request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

import attrs

from freedompay_async import ConfigurationError, InvoiceStatus, PayClaim, PoolTimeout, settlement
from freedompay_async.settlement import SettlePolicy, Verdict

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from freedompay_async import FreedomPayClient, InvoicePayment

__all__ = [
    "ClaimKind",
    "GuardRecord",
    "RedisPayGuard",
    "RedisRateLimiter",
    "SettleHook",
    "default_owner",
    "settle_by_status",
    "state_of_status",
]

logger = logging.getLogger("freedompay_async.contrib")

_FRESH: Final = PayClaim(granted=True, kind="fresh")

#: States after which a customer is never paid again.
TERMINAL_STATES: Final = frozenset({"paid", "failed", "expired"})
#: Recorded states that leave the pay's fate open: the next claimer settles by status first.
DOUBT_STATES: Final = frozenset({"claimed", "pending", "ambiguous"})

#: `fresh` (granted, never claimed before), `reclaimed` (granted: `settle()` proved an earlier
#: pay never landed), `settled` (refused: a terminal state is recorded), `busy` (refused: another
#: worker holds the claim), `landed` (refused: the status read found an earlier pay's result, now
#: recorded), `unsettled` (refused: an earlier pay has no known end and its status did not settle
#: it). `PayClaim.kind` holds one of these.
ClaimKind = Literal["fresh", "reclaimed", "settled", "busy", "landed", "unsettled"]

#: Given a customer whose earlier pay has no known end, read and return the invoice's status
#: (`client.invoice_status(customer=...)`); `settle()` decides what it proves. Raising refuses the
#: pay and keeps the doubt recorded.
SettleHook: TypeAlias = Callable[[str], Awaitable["InvoicePayment"]]

_CLAIM = """
local record = redis.call('GET', KEYS[2])
if record and record ~= 'claimed' and record ~= 'pending' and record ~= 'ambiguous' then
  return {'settled', record}
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'busy', record or ''}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if record then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  local wrote = redis.call('GET', KEYS[3])
  local age = -1
  if wrote and record ~= 'claimed' then
    local t = redis.call('TIME')
    age = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(wrote)
  end
  return {'reclaim', record, age}
end
redis.call('SET', KEYS[2], 'claimed', 'PX', ARGV[3])
return {'fresh', ''}
"""

_FINISH = """
local owned = redis.call('GET', KEYS[1]) == ARGV[1]
if owned then redis.call('DEL', KEYS[1]) end
if ARGV[2] == 'error' then
  if owned and redis.call('GET', KEYS[2]) == 'claimed' then redis.call('DEL', KEYS[2]) end
else
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  if ARGV[2] == 'pending' or ARGV[2] == 'ambiguous' then
    local t = redis.call('TIME')
    redis.call('SET', KEYS[3], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
               'PX', ARGV[3])
  end
end
if owned then return 1 end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# Token bucket with reservations. Tokens may go negative: -tokens requests are already waiting
# for their slot, so a new one waits (1 - tokens) / rate. A reservation that would wait longer
# than ARGV[3] microseconds is not taken; the caller learns the wait (as a negative number).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
local last = tonumber(redis.call('HGET', KEYS[1], 'at'))
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
if now > last then
  tokens = math.min(burst, tokens + (now - last) * rate / 1000000)
  last = now
end
tokens = tokens - 1
local wait = 0
if tokens < 0 then wait = math.ceil(-tokens * 1000000 / rate) end
if wait > max_wait then return -wait end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'at', string.format('%.0f', last))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return wait
"""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return float(value)


def _check_key_part(name: str, value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or any(c in value for c in ":{}"):
        raise ConfigurationError(f"{name} must be a non-empty string without ':', '{{', '}}'")
    return value


def default_owner() -> str:
    """
    Name this process for claim tokens: host name and process id.

    Returns:
        `host:pid`.
    """
    return f"{socket.gethostname()}:{os.getpid()}"


_STATE_BY_STATUS: Final = {
    InvoiceStatus.OK: "paid",
    InvoiceStatus.FAILED: "failed",
    InvoiceStatus.INCOMPLETE: "expired",
}


def state_of_status(payment: InvoicePayment) -> str | None:
    """
    Map an invoice's status to what a settle hook returns.

    Args:
        payment: The invoice's status, as `invoice_status` read it.

    Returns:
        None for `new` (unpaid: it may be paid); `paid`, `failed`, `expired` for a terminal
        status; `pending` for anything still moving (`process`, an unknown value).
    """
    if payment.invoice_status is InvoiceStatus.NEW:
        return None
    return _STATE_BY_STATUS.get(payment.invoice_status, "pending")


def settle_by_status(
    client: FreedomPayClient,
    *,
    on_payment: Callable[[str, InvoicePayment], object] | None = None,
) -> SettleHook:
    """
    Build the usual settle hook: ask the gateway where the invoice stands.

    Args:
        client: The client to read `invoice_status(customer=...)` with.
        on_payment: Called with the customer and the status read, before the hook returns.

    Returns:
        A hook for `RedisPayGuard(settle=...)`.
    """

    async def read(customer: str) -> InvoicePayment:
        payment = await client.invoice_status(customer=customer)
        if on_payment is not None:
            on_payment(customer, payment)
        return payment

    return read


@attrs.frozen(kw_only=True)
class GuardRecord:
    """
    What Redis holds for one customer (`RedisPayGuard.peek`).

    Attributes:
        state: The recorded state (`claimed`, `paid`, `pending`, ...), or None.
        holder: The token of the current claim, or None when nobody holds it.
        claim_ttl: Seconds left on the current claim, or None.
    """

    state: str | None
    holder: str | None
    claim_ttl: float | None


@attrs.define
class _Held:
    token: str
    heartbeat: asyncio.Task[None] | None


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
        merchant = _check_key_part("merchant_id", merchant_id)
        self._prefix = f"{_check_key_part('namespace', namespace)}:{merchant}:"
        self._claim_ttl = _positive("claim_ttl", claim_ttl)
        if heartbeat is None:
            heartbeat = self._claim_ttl / 3
        elif heartbeat != 0:
            heartbeat = _positive("heartbeat", heartbeat)
            if heartbeat >= self._claim_ttl:
                raise ConfigurationError("heartbeat must be shorter than claim_ttl")
        self._heartbeat = float(heartbeat)
        self._max_hold = _positive("max_hold", max_hold)
        self._remember = _positive("remember", remember)
        self._settle = settle
        self._settle_policy = settle_policy if settle_policy is not None else SettlePolicy()
        if not isinstance(self._settle_policy, SettlePolicy):
            raise ConfigurationError("settle_policy must be a SettlePolicy")
        self._owner = owner if owner is not None else default_owner()
        self._held: dict[str, _Held] = {}
        self._claim = redis.register_script(_CLAIM)
        self._finish = redis.register_script(_FINISH)
        self._release = redis.register_script(_RELEASE)
        self._renew = redis.register_script(_RENEW)

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
        verdict, detail = _text(reply[0]), _text(reply[1])
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
        self._held[customer] = _Held(token=token, heartbeat=task)

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
            state=None if state is None else _text(state),
            holder=None if holder is None else _text(holder),
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


class RedisRateLimiter:
    """
    A `RateLimiter` shared by every worker of a merchant: at most `rate` request starts a second.

    Args:
        redis: A `redis.asyncio.Redis` client.
        merchant_id: The merchant the bucket belongs to.
        rate: Requests per second, over all workers.
        burst: Requests that may start at once after an idle spell (the bucket's size).
        namespace: The first part of the key.
        name: The bucket's name, to keep separate limits for one merchant.
        max_wait: Seconds `acquire()` may wait; beyond it, it raises `PoolTimeout` (the request
            was not sent, so the client may try again).

    Raises:
        ConfigurationError: An option is invalid.
    """

    def __init__(
        self,
        redis: Redis,
        merchant_id: str | int,
        *,
        rate: float,
        burst: int = 1,
        namespace: str = "freedompay",
        name: str = "requests",
        max_wait: float = 30.0,
    ) -> None:
        self._rate = _positive("rate", rate)
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ConfigurationError(f"burst must be an integer >= 1, got {burst!r}")
        self._burst = burst
        self._max_wait = _positive("max_wait", max_wait)
        merchant = _check_key_part("merchant_id", merchant_id)
        self._key = (
            f"{_check_key_part('namespace', namespace)}:{merchant}:"
            f"rate:{_check_key_part('name', name)}"
        )
        self._take = redis.register_script(_TAKE)

    def __repr__(self) -> str:
        return f"RedisRateLimiter(key={self._key!r}, rate={self._rate:g}, burst={self._burst})"

    @property
    def rate(self) -> float:
        """Requests per second over all workers."""
        return self._rate

    @property
    def burst(self) -> int:
        """The bucket's size."""
        return self._burst

    async def acquire(self) -> None:
        """
        Wait until one more request may start.

        Raises:
            PoolTimeout: No slot within `max_wait` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        step = 1.0 / self._rate
        for _ in range(math.ceil(self._max_wait / min(step, self._max_wait)) + 2):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            wait_us = int(
                await self._take(
                    keys=[self._key],
                    args=[repr(self._rate), self._burst, math.floor(remaining * 1_000_000)],
                )
            )
            if wait_us >= 0:
                if wait_us:
                    await asyncio.sleep(wait_us / 1_000_000)
                return
            # The queue is longer than what is left of max_wait: back off and ask again.
            await asyncio.sleep(min(remaining, max(step, 0.01)))
        raise PoolTimeout(
            f"rate limit {self._rate:g}/s: no request slot within {self._max_wait:g}s; not sent"
        )
