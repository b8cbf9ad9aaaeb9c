"""`RedisRateLimiter`: one token bucket in Redis, shared by every worker of a merchant."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

from freedompay_async import ConfigurationError, PoolTimeout
from freedompay_async.contrib.redis_guard._common import key_part, positive
from freedompay_async.contrib.redis_guard._scripts import TAKE
from freedompay_async.facts import is_integer

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisRateLimiter"]


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
        self._rate = positive("rate", rate)
        if not is_integer(burst) or burst < 1:
            raise ConfigurationError(f"burst must be an integer >= 1, got {burst!r}")
        self._burst = burst
        self._max_wait = positive("max_wait", max_wait)
        merchant = key_part("merchant_id", merchant_id)
        self._key = f"{key_part('namespace', namespace)}:{merchant}:rate:{key_part('name', name)}"
        self._take = redis.register_script(TAKE)

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
