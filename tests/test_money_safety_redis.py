"""Two clients sharing a RedisPayGuard never pay a customer twice, whatever the first cancelled."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

pytest.importorskip("redis", reason="the 'arq' extra (redis) is not installed")

from rawgate import RawGateway, xml
from redis.asyncio import Redis
from redis_server import RedisServer

from freedompay_async import (
    DuplicatePayError,
    FreedomPayClient,
    InvoicePayment,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)
from freedompay_async.contrib.redis_guard import RedisPayGuard, settle_by_status


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """One real redis-server for the module."""
    with RedisServer.running() as server:
        yield server.url


def _client(gateway: RawGateway, guard: RedisPayGuard) -> FreedomPayClient:
    return FreedomPayClient(
        "123456",
        "not-a-real-secret",
        base_url=gateway.url,
        guard=guard,
        retry=RetryPolicy(attempts=4, deadline=20.0, reconcile_grace=0.01),
        poll=PollPolicy(interval=0.01, factor=1.0, max_interval=0.01, timeout=30.0),
        timeouts=Timeouts(connect=2.0, read=5.0, pool=10.0),
        rng=random.Random(5),
    )


async def test_a_storm_cancelled_on_one_worker_is_never_paid_twice_by_another(redis_url) -> None:
    """1,000 pays on worker A, half cancelled at random; worker B retries each: no double charge."""
    reads: dict[str, int] = {}
    gateway = RawGateway()

    def status(customer: str) -> bytes:
        if not gateway.charges[customer]:
            return xml("new")
        reads[customer] = reads.get(customer, 0) + 1
        return xml("ok" if reads[customer] > 3 else "process")

    gateway.on_status = status
    rng = random.Random(17)
    customers = [f"r-{n}" for n in range(1000)]
    redis_a, redis_b = Redis.from_url(redis_url), Redis.from_url(redis_url)
    await redis_a.flushdb()
    guard_a = RedisPayGuard(redis_a, "123456", claim_ttl=2.0)
    guard_b = RedisPayGuard(redis_b, "123456", claim_ttl=2.0)
    try:
        async with gateway, _client(gateway, guard_a) as first, _client(gateway, guard_b) as second:
            guard_b.set_settle_hook(settle_by_status(second))
            tasks = {
                c: asyncio.create_task(
                    first.pay_invoice(customer=c, user_id="u", card_token="tok-1")
                )
                for c in customers
            }
            loop = asyncio.get_running_loop()
            for customer in rng.sample(customers, 500):
                loop.call_later(rng.uniform(0, 0.3), tasks[customer].cancel)
            done = await asyncio.gather(*tasks.values(), return_exceptions=True)
            cancelled = [
                c
                for c, r in zip(customers, done, strict=True)
                if isinstance(r, asyncio.CancelledError)
            ]
            retried = await asyncio.gather(
                *(
                    second.pay_invoice(customer=c, user_id="u", card_token="tok-1")
                    for c in cancelled
                ),
                return_exceptions=True,
            )
    finally:
        await guard_a.aclose()
        await guard_b.aclose()
        await redis_a.aclose()
        await redis_b.aclose()
    assert len(cancelled) >= 100
    assert gateway.double_charged() == []
    for customer, result in zip(cancelled, retried, strict=True):
        if gateway.charges[customer]:
            # a charged customer is either refused or was found paid: never paid again
            assert isinstance(result, DuplicatePayError | InvoicePayment), (customer, result)
        else:
            assert isinstance(result, DuplicatePayError), (customer, result)
