"""Where the pay jobs' outcomes live: one Redis hash per merchant, one JSON record per customer."""

from __future__ import annotations

import inspect
import json
import math
from typing import TYPE_CHECKING, Any, Final, TypeVar

from freedompay_async.records import outcome_record

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Mapping

    from redis.asyncio import Redis

    from freedompay_async import PayOutcome

__all__ = ["OutcomeStore", "outcome_to_dict"]

_OUTCOME_TTL: Final = 30 * 86400

_T = TypeVar("_T")


def outcome_to_dict(outcome: PayOutcome, *, claim: str | None = None) -> dict[str, Any]:
    """
    Describe a `PayOutcome` as a JSON-ready dictionary, without the card token.

    The shape is `freedompay_async.records.outcome_record`'s, the same as `pay-batch` writes.

    Args:
        outcome: The outcome.
        claim: How the guard decided (`fresh`, `reclaimed`, `landed`, ...), when known.

    Returns:
        The record (`records.RECORD_FIELDS`): the request, `state`, the payment's fields with a
        masked `card_pan`, `error` (the exception's class), `message`, `error_code`,
        `error_description`, `attempts`, `elapsed`, `claim` and `finished_at` (Unix time).
    """
    return outcome_record(outcome, claim=claim)


async def _resolve(value: Awaitable[_T] | _T) -> _T:
    """Await a redis-py reply typed for both its sync and async clients."""
    if inspect.isawaitable(value):
        return await value
    return value


def _decode(raw: object) -> dict[str, Any] | None:
    if raw is None:
        return None
    data = json.loads(raw if isinstance(raw, str | bytes) else str(raw))
    return data if isinstance(data, dict) else None


class OutcomeStore:
    """
    The outcomes of a merchant's pay jobs: one Redis hash, field = customer, value = JSON.

    Read it from anywhere to report on a batch (`get_many`, `scan`, `summary`), as `pay-batch`
    reports on its output file.

    Args:
        redis: A `redis.asyncio.Redis` client.
        merchant_id: The merchant.
        namespace: The key prefix (as for the guard).
        ttl: Seconds the hash is kept after its latest write.
    """

    def __init__(
        self,
        redis: Redis,
        merchant_id: str | int,
        *,
        namespace: str = "freedompay",
        ttl: float = _OUTCOME_TTL,
    ) -> None:
        self._redis = redis
        self._key = f"{namespace}:{merchant_id}:outcomes"
        self._ttl = max(1, math.ceil(ttl))

    def __repr__(self) -> str:
        return f"OutcomeStore(key={self._key!r})"

    @property
    def key(self) -> str:
        """The Redis hash's key, `{namespace}:{merchant_id}:outcomes`."""
        return self._key

    async def save(self, outcome: Mapping[str, Any], *, replace: bool = True) -> bool:
        """
        Store one outcome under its `customer`.

        Args:
            outcome: A dictionary from `outcome_to_dict` (or with at least `customer`).
            replace: Overwrite an outcome already stored for the customer.

        Returns:
            Whether it was written.
        """
        field = str(outcome["customer"])
        value = json.dumps(dict(outcome), separators=(",", ":"), ensure_ascii=False)
        async with self._redis.pipeline(transaction=True) as pipe:
            if replace:
                pipe.hset(self._key, field, value)
            else:
                pipe.hsetnx(self._key, field, value)
            pipe.expire(self._key, self._ttl)
            written, _ = await pipe.execute()
        return bool(written) or replace

    async def get(self, customer: str) -> dict[str, Any] | None:
        """
        Return the stored outcome of *customer*.

        Args:
            customer: The customer token.

        Returns:
            The outcome, or None when none is stored.
        """
        return _decode(await _resolve(self._redis.hget(self._key, customer)))

    async def get_many(self, customers: list[str]) -> list[dict[str, Any] | None]:
        """
        Return the stored outcomes of *customers*, in order.

        Args:
            customers: Customer tokens.

        Returns:
            One outcome (or None) per customer.
        """
        if not customers:
            return []
        return [_decode(raw) for raw in await _resolve(self._redis.hmget(self._key, customers))]

    async def count(self) -> int:
        """Return how many outcomes are stored."""
        return int(await _resolve(self._redis.hlen(self._key)))

    async def scan(self, *, batch: int = 500) -> AsyncIterator[dict[str, Any]]:
        """
        Iterate over every stored outcome (`HSCAN`, so Redis is never blocked).

        Args:
            batch: The `COUNT` hint per round trip.

        Yields:
            Each outcome once (the hash may change meanwhile, as `HSCAN` allows).
        """
        seen: set[str] = set()
        async for field, raw in self._redis.hscan_iter(self._key, count=batch):
            name = field.decode() if isinstance(field, bytes) else str(field)
            if name in seen:
                continue
            seen.add(name)
            decoded = _decode(raw)
            if decoded is not None:
                yield decoded

    async def summary(self) -> dict[str, int]:
        """
        Count the stored outcomes per state.

        Returns:
            `{state: count}`.
        """
        counts: dict[str, int] = {}
        async for outcome in self.scan():
            state = str(outcome.get("state"))
            counts[state] = counts.get(state, 0) + 1
        return counts

    async def clear(self) -> None:
        """Delete every stored outcome."""
        await self._redis.delete(self._key)
