"""Queue pay jobs: deterministic job ids, settled customers skipped, and waiting for outcomes."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs

from freedompay_async import ConfigurationError, PayRequest
from freedompay_async.contrib.arq._config import DEFAULT_QUEUE, JOB_ID_PREFIX, JOB_NAME
from freedompay_async.facts import TERMINAL_STATES, is_integer
from freedompay_async.masking import mask_token
from freedompay_async.records import jsonable

if TYPE_CHECKING:
    from arq.connections import ArqRedis

    from freedompay_async.contrib.arq._store import OutcomeStore

__all__ = [
    "EnqueueReport",
    "MaskedToken",
    "enqueue_batch",
    "job_id_for",
    "wait_for_outcomes",
]


class MaskedToken(str):
    """A card token whose `repr` shows only its last four characters (arq logs job arguments)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"'{mask_token(self)}'"


# Queued jobs pickle this class by name: name the public path, which every release of the
# workers can import, so jobs queued by one release run on the next.
MaskedToken.__module__ = "freedompay_async.contrib.arq"


def job_id_for(customer: str, *, prefix: str = JOB_ID_PREFIX) -> str:
    """
    Return the arq job id of *customer*'s pay: the same id for the same customer, always.

    Args:
        customer: The customer token.
        prefix: The id prefix (one per merchant when merchants share a Redis).

    Returns:
        `prefix + customer`.
    """
    return prefix + customer


@attrs.frozen(kw_only=True)
class EnqueueReport:
    """
    What `enqueue_batch` did.

    Attributes:
        rows: Requests read.
        enqueued: Jobs created.
        deduplicated: Requests whose job was already queued or running (same customer).
        settled: Requests skipped because a terminal outcome is already stored.
    """

    rows: int
    enqueued: int
    deduplicated: int
    settled: int

    def to_dict(self) -> dict[str, int]:
        """
        Return the report as a JSON-ready dictionary.

        Returns:
            Every attribute by name.
        """
        return attrs.asdict(self)


async def _chunks(
    rows: Iterable[PayRequest] | AsyncIterable[PayRequest], size: int
) -> AsyncIterator[list[PayRequest]]:
    chunk: list[PayRequest] = []
    if isinstance(rows, AsyncIterable):
        async for row in rows:
            chunk.append(row)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    else:
        for row in rows:
            chunk.append(row)
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


async def enqueue_batch(
    redis: ArqRedis,
    rows: Iterable[PayRequest] | AsyncIterable[PayRequest],
    *,
    queue_name: str = DEFAULT_QUEUE,
    job_prefix: str = JOB_ID_PREFIX,
    results: OutcomeStore | None = None,
    chunk: int = 100,
) -> EnqueueReport:
    """
    Queue one pay job per request, with deterministic job ids so duplicates are dropped.

    The input is read lazily, `chunk` requests at a time, and each chunk is queued concurrently.
    A request whose customer already has a job queued or running is counted as deduplicated;
    with *results*, one whose customer already has a terminal outcome (`paid`, `failed`,
    `expired`) is skipped. Anything else is queued, and the workers' guard settles it.

    Args:
        redis: arq's Redis pool (`await arq.create_pool(...)`).
        rows: The requests.
        queue_name: The workers' queue.
        job_prefix: The job id prefix (`job_id_for`).
        results: The merchant's outcomes, to skip settled customers.
        chunk: Requests queued at once.

    Returns:
        The counts.

    Raises:
        ConfigurationError: *chunk* is not a positive integer.
    """
    if not is_integer(chunk) or chunk < 1:
        raise ConfigurationError(f"chunk must be an integer >= 1, got {chunk!r}")
    total = enqueued = deduplicated = settled = 0
    async for batch in _chunks(rows, chunk):
        total += len(batch)
        todo = batch
        if results is not None:
            stored = await results.get_many([row.customer for row in batch])
            todo = [
                row
                for row, outcome in zip(batch, stored, strict=True)
                if outcome is None or outcome.get("state") not in TERMINAL_STATES
            ]
            settled += len(batch) - len(todo)
        jobs = await asyncio.gather(
            *(
                redis.enqueue_job(
                    JOB_NAME,
                    row.customer,
                    row.user_id,
                    MaskedToken(row.card_token),
                    jsonable(row.key),
                    _job_id=job_id_for(row.customer, prefix=job_prefix),
                    _queue_name=queue_name,
                )
                for row in todo
            )
        )
        created = sum(job is not None for job in jobs)
        enqueued += created
        deduplicated += len(todo) - created
    return EnqueueReport(rows=total, enqueued=enqueued, deduplicated=deduplicated, settled=settled)


async def wait_for_outcomes(
    results: OutcomeStore,
    customers: list[str],
    *,
    within: float,
    interval: float = 0.5,
    on_progress: Callable[[int, int], object] | None = None,
) -> dict[str, dict[str, Any]]:
    """
    Wait until every customer has a stored outcome, or for *within* seconds at most.

    Args:
        results: The merchant's outcomes.
        customers: The customers to wait for.
        within: Seconds to wait at most.
        interval: Seconds between reads.
        on_progress: Called with (outcomes found, customers) after each read.

    Returns:
        The outcomes found, by customer (all of them unless the wait timed out).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    found: dict[str, dict[str, Any]] = {}
    missing = list(dict.fromkeys(customers))
    for _ in range(math.ceil(within / interval) + 2):
        still: list[str] = []
        for start in range(0, len(missing), 1000):
            part = missing[start : start + 1000]
            for customer, outcome in zip(part, await results.get_many(part), strict=True):
                if outcome is None:
                    still.append(customer)
                else:
                    found[customer] = outcome
        missing = still
        if on_progress is not None:
            on_progress(len(found), len(found) + len(missing))
        remaining = deadline - loop.time()
        if not missing or remaining <= 0:
            break
        await asyncio.sleep(min(interval, remaining))
    return found
