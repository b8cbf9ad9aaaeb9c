"""
Pay invoices from an arq job queue: many worker processes, one duplicate guard, one rate limit.

Run as many workers as you need, on as many hosts, all pointing at the same Redis:

```console
$ export FREEDOMPAY_MERCHANT_ID=... FREEDOMPAY_SECRET_KEY=... FREEDOMPAY_REDIS_URL=redis://...
$ arq freedompay_async.contrib.arq.WorkerSettings
```

and queue a CSV (`customer,user_id,card_token[,key]`, header row) with
`freedompay-async enqueue INPUT.csv --redis URL` or `enqueue_batch()`.

Each worker process creates one `FreedomPayClient` at startup (closed at shutdown) with a
`RedisPayGuard` and a `RedisRateLimiter`, so every worker of the merchant shares one guard and one
request rate. The job `pay_invoice_job` pays one invoice through `client.pay_one` and stores a
JSON outcome (no card token; the gateway's masked PAN only) in the Redis hash of `OutcomeStore`,
one field per customer.

A job re-run after its worker died finds the dead worker's claim; once the claim expires, the
guard's settle hook asks `invoice_status(customer=...)` and `settlement.settle()` decides: a pay
that landed before the crash is recorded, not repeated. An invoice still `new` is paid only when
`FREEDOMPAY_NEW_PROVES_AFTER` is set and that many seconds have passed since the dead worker's
last possible write; by default it is stored as `ambiguous` for a manual check. Jobs have
deterministic ids (`freedompay:pay:<customer>`), so arq also drops a duplicate while the first is
queued or running.

Configuration comes from the environment (`PayWorkerConfig.from_env`):

| variable | meaning | default |
|---|---|---|
| `FREEDOMPAY_MERCHANT_ID`, `FREEDOMPAY_SECRET_KEY` | credentials | required |
| `FREEDOMPAY_BASE_URL` | API host | `https://api.freedompay.kz` |
| `FREEDOMPAY_REDIS_URL` (or `REDIS_URL`) | Redis | `redis://127.0.0.1:6379/0` |
| `FREEDOMPAY_RATE`, `FREEDOMPAY_BURST` | requests/s of all workers (0: none), burst | 10, 1 |
| `FREEDOMPAY_QUEUE` | arq queue name | `freedompay:queue` |
| `FREEDOMPAY_MAX_JOBS` | jobs at once per worker | 32 |
| `FREEDOMPAY_JOB_TIMEOUT` | seconds one job may run | 900 |
| `FREEDOMPAY_CLAIM_TTL` | seconds a dead worker's claim blocks its customer | 30 |
| `FREEDOMPAY_NEW_PROVES_AFTER` | seconds after which `new` proves a pay never landed | unset |
| `FREEDOMPAY_NAMESPACE` | prefix of every guard, limiter and outcome key | `freedompay` |

Card tokens travel inside arq's job payload in Redis (as with any job argument) until the job
ends: protect Redis like the card data it holds. They are wrapped in `MaskedToken`, so arq's log
line for a started job shows only the last four characters.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import attrs
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.worker import Function, Retry, func
from redis.exceptions import RedisError

from freedompay_async import (
    AmbiguousPaymentError,
    ConfigurationError,
    DuplicatePayError,
    FreedomPayClient,
    PayClaim,
    PayOutcome,
    PayRequest,
)
from freedompay_async.contrib.redis_guard import (
    RedisPayGuard,
    RedisRateLimiter,
    settle_by_status,
)
from freedompay_async.csvinput import BadRow, CsvInputError, PayCsv, open_pay_csv
from freedompay_async.records import TERMINAL_STATES, jsonable, outcome_record
from freedompay_async.settlement import SettlePolicy

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = [
    "CONFIG_KEY",
    "DEFAULT_QUEUE",
    "JOB_ID_PREFIX",
    "JOB_NAME",
    "REDIS_RETRY_DELAY",
    "RUNTIME_KEY",
    "EnqueueReport",
    "MaskedToken",
    "OutcomeStore",
    "PayRuntime",
    "PayWorkerConfig",
    "WorkerSettings",
    "add_enqueue_command",
    "enqueue_batch",
    "job_id_for",
    "main",
    "outcome_to_dict",
    "pay_invoice_job",
    "run_enqueue",
    "shutdown",
    "startup",
    "wait_for_outcomes",
    "worker_settings",
]

logger = logging.getLogger("freedompay_async.contrib")

DEFAULT_QUEUE: Final = "freedompay:queue"
DEFAULT_BASE_URL: Final = "https://api.freedompay.kz"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
#: The name workers register `pay_invoice_job` under, and that enqueuers use.
JOB_NAME: Final = "freedompay_pay_invoice"
#: Job ids are this prefix plus the customer, so arq itself drops duplicates.
JOB_ID_PREFIX: Final = "freedompay:pay:"
#: Keys of arq's per-worker `ctx` dictionary.
CONFIG_KEY: Final = "freedompay_config"
RUNTIME_KEY: Final = "freedompay_runtime"

#: Seconds before a job whose Redis calls failed runs again.
REDIS_RETRY_DELAY: Final = 5.0

_MAX_TRIES: Final = 10
_OUTCOME_TTL: Final = 30 * 86400
_CSV_CHUNK: Final = 1000

_ENV_MERCHANT_ID: Final = "FREEDOMPAY_MERCHANT_ID"
_ENV_SECRET_KEY: Final = "FREEDOMPAY_SECRET_KEY"  # noqa: S105 - an environment variable's name

_T = TypeVar("_T")


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


class MaskedToken(str):
    """A card token whose `repr` shows only its last four characters (arq logs job arguments)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"'…{self[-4:]}'" if len(self) > 4 else "'…'"  # noqa: PLR2004 - the masking rule


# -- configuration --------------------------------------------------------------------------


def _env(environ: Mapping[str, str], name: str, default: str) -> str:
    value = environ.get(name, "").strip()
    return value or default


def _env_number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{name} must be a finite number >= 0, got {raw!r}")
    return value


def _redis_url(environ: Mapping[str, str]) -> str:
    return _env(environ, "FREEDOMPAY_REDIS_URL", _env(environ, "REDIS_URL", DEFAULT_REDIS_URL))


def _at_least_one(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigurationError(f"{attribute.name} must be a number >= 0, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{attribute.name} must be a number > 0, got {value!r}")


def _required(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{attribute.name} must be a non-empty string")


@attrs.frozen(kw_only=True)
class PayWorkerConfig:
    """
    Everything a pay worker needs; `from_env()` reads it from the environment.

    Attributes:
        merchant_id: The merchant id.
        secret_key: The merchant's secret key (never shown).
        base_url: The API host (or an emulator).
        redis_url: Redis, for arq, the guard, the limiter and the outcomes.
        queue_name: The arq queue; use one queue per merchant.
        rate: Requests per second over all workers of the merchant; 0 disables the limit.
        burst: Requests that may start at once after an idle spell.
        max_jobs: Jobs one worker runs at once (also the client's `max_concurrency`).
        job_timeout: Seconds one job may run; keep it above the client's deadline plus its
            poll timeout.
        claim_ttl: Seconds a dead worker's claim keeps its customer locked.
        new_proves_not_landed_after: Seconds after the last possible write of a pay in doubt
            after which a status of `new` proves it never landed (the guard's `SettlePolicy`);
            None (default): it never does, and such an invoice is stored as `ambiguous`.
        namespace: The prefix of every guard, limiter and outcome key.
        client_options: More keyword arguments for `FreedomPayClient` (`timeouts`, `retry`...).
    """

    merchant_id: str = attrs.field(converter=str, validator=_required)
    secret_key: str = attrs.field(repr=False, validator=_required)
    base_url: str = DEFAULT_BASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    queue_name: str = attrs.field(default=DEFAULT_QUEUE, validator=_required)
    rate: float = attrs.field(default=10.0, validator=_non_negative)
    burst: int = attrs.field(default=1, validator=_at_least_one)
    max_jobs: int = attrs.field(default=32, validator=_at_least_one)
    job_timeout: float = attrs.field(default=900.0, validator=_positive)
    claim_ttl: float = attrs.field(default=30.0, validator=_positive)
    new_proves_not_landed_after: float | None = None
    namespace: str = attrs.field(default="freedompay", validator=_required)
    client_options: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PayWorkerConfig:
        """
        Read the configuration from environment variables (see the module's table).

        Args:
            environ: The variables; `os.environ` by default.

        Returns:
            The configuration.

        Raises:
            ConfigurationError: The credentials are missing, or a value is invalid.
        """
        env = os.environ if environ is None else environ
        merchant_id = env.get(_ENV_MERCHANT_ID, "").strip()
        secret_key = env.get(_ENV_SECRET_KEY, "")
        if not merchant_id or not secret_key:
            raise ConfigurationError(
                f"set {_ENV_MERCHANT_ID} and {_ENV_SECRET_KEY} for the pay workers"
            )
        return cls(
            merchant_id=merchant_id,
            secret_key=secret_key,
            base_url=_env(env, "FREEDOMPAY_BASE_URL", DEFAULT_BASE_URL),
            redis_url=_redis_url(env),
            queue_name=_env(env, "FREEDOMPAY_QUEUE", DEFAULT_QUEUE),
            rate=_env_number(env, "FREEDOMPAY_RATE", 10.0),
            burst=int(_env_number(env, "FREEDOMPAY_BURST", 1)),
            max_jobs=int(_env_number(env, "FREEDOMPAY_MAX_JOBS", 32)),
            job_timeout=_env_number(env, "FREEDOMPAY_JOB_TIMEOUT", 900.0),
            claim_ttl=_env_number(env, "FREEDOMPAY_CLAIM_TTL", 30.0),
            new_proves_not_landed_after=(
                _env_number(env, "FREEDOMPAY_NEW_PROVES_AFTER", 0.0)
                if env.get("FREEDOMPAY_NEW_PROVES_AFTER", "").strip()
                else None
            ),
            namespace=_env(env, "FREEDOMPAY_NAMESPACE", "freedompay"),
        )


# -- outcomes -------------------------------------------------------------------------------


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


# -- the worker -----------------------------------------------------------------------------


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
    """

    def __init__(
        self,
        *,
        client: FreedomPayClient,
        guard: RedisPayGuard,
        results: OutcomeStore,
        rate_limiter: RedisRateLimiter | None = None,
        busy_retry: float = 30.0,
    ) -> None:
        self.client = client
        self.guard = guard
        self.grants: _GrantLog | None = None
        self.results = results
        self.rate_limiter = rate_limiter
        self.busy_retry = busy_retry

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
        outcome = await self.client.pay_one(request)
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

    async def _invalid(
        self, customer: object, user_id: object, key: object, error: ConfigurationError
    ) -> dict[str, Any]:
        result: dict[str, Any] = {
            "customer": customer if isinstance(customer, str) else None,
            "user_id": user_id if isinstance(user_id, str) else None,
            "key": jsonable(key),
            "state": "error",
            "error": type(error).__name__,
            "message": str(error),
            "attempts": 0,
            "claim": None,
            "finished_at": round(time.time(), 3),
        }
        if isinstance(customer, str) and customer:
            await self.results.save(result, replace=False)  # never hides a real outcome
        return result


async def startup(ctx: dict[Any, Any]) -> None:
    """
    Build this worker's runtime: arq's `on_startup`.

    Builds this worker's `PayRuntime` (one client per worker process).

    The configuration is `ctx[CONFIG_KEY]` when `worker_settings(config)` put it there, else
    `PayWorkerConfig.from_env()`.

    Args:
        ctx: arq's worker context; `ctx["redis"]` is arq's Redis pool.
    """
    config = ctx.get(CONFIG_KEY)
    if not isinstance(config, PayWorkerConfig):
        config = PayWorkerConfig.from_env()
    runtime = PayRuntime.open(ctx["redis"], config)
    ctx[RUNTIME_KEY] = runtime
    logger.info(
        "pay worker ready: merchant_id=%s base_url=%s queue=%s rate=%g/s",
        config.merchant_id,
        config.base_url,
        config.queue_name,
        config.rate,
    )


async def shutdown(ctx: dict[Any, Any]) -> None:
    """
    Close this worker's client: arq's `on_shutdown`.

    Args:
        ctx: arq's worker context.
    """
    runtime = ctx.pop(RUNTIME_KEY, None)
    if isinstance(runtime, PayRuntime):
        await runtime.aclose()


async def pay_invoice_job(
    ctx: dict[Any, Any],
    customer: str,
    user_id: str,
    card_token: str,
    key: object = None,
) -> dict[str, Any]:
    """
    The arq job: pay one invoice with this worker's client and store the outcome.

    Args:
        ctx: arq's worker context (with the runtime `startup` built).
        customer: The invoice's customer token.
        user_id: The payer's id.
        card_token: The saved card's token.
        key: The caller's correlation value.

    Returns:
        The outcome dictionary (also stored in the `OutcomeStore`).

    Raises:
        Retry: Another live worker holds this customer's claim, or Redis failed; arq runs the
            job again later (at most 10 tries).
    """
    runtime: PayRuntime = ctx[RUNTIME_KEY]
    try:
        result = await runtime.pay(customer, user_id, card_token, key)
    except (RedisError, OSError) as exc:
        # Redis failed around the pay: a claim left behind expires and the next run settles
        # the customer by status, so running the job again is safe.
        logger.warning(
            "pay job for customer=%s: Redis failed (%s); retrying", customer, type(exc).__name__
        )
        raise Retry(defer=REDIS_RETRY_DELAY) from exc
    if result.get("claim") == "busy":
        raise Retry(defer=runtime.busy_retry)
    return result


def _job_function(timeout: float | None = None) -> Function:
    return func(
        pay_invoice_job, name=JOB_NAME, keep_result=0, max_tries=_MAX_TRIES, timeout=timeout
    )


def worker_settings(config: PayWorkerConfig | None = None, **overrides: object) -> dict[str, Any]:
    """
    Build arq worker settings for *config*: pass them to `arq.worker.Worker(**settings)`.

    Args:
        config: The configuration; `PayWorkerConfig.from_env()` by default.
        **overrides: Other `Worker` arguments (`burst`, `poll_delay`, `handle_signals`...).

    Returns:
        Keyword arguments for `arq.worker.Worker`.
    """
    cfg = config if config is not None else PayWorkerConfig.from_env()
    settings: dict[str, Any] = {
        "functions": [_job_function(cfg.job_timeout)],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "queue_name": cfg.queue_name,
        "redis_settings": RedisSettings.from_dsn(cfg.redis_url),
        "max_jobs": cfg.max_jobs,
        "job_timeout": cfg.job_timeout,
        "keep_result": 0,
        "ctx": {CONFIG_KEY: cfg},
    }
    settings.update(overrides)
    return settings


class WorkerSettings:
    """
    arq settings read from the environment: `arq freedompay_async.contrib.arq.WorkerSettings`.

    The queue, Redis, `max_jobs` and `job_timeout` are read when this module is imported; the
    credentials and the rate at each worker's startup. Results are not kept by arq
    (`keep_result = 0`: they would hold the job's arguments); outcomes go to `OutcomeStore`.
    """

    functions: ClassVar[list[Function]] = [
        _job_function(_env_number(os.environ, "FREEDOMPAY_JOB_TIMEOUT", 900.0))
    ]
    on_startup: ClassVar[Callable[[dict[Any, Any]], Awaitable[None]]] = startup
    on_shutdown: ClassVar[Callable[[dict[Any, Any]], Awaitable[None]]] = shutdown
    queue_name: ClassVar[str] = _env(os.environ, "FREEDOMPAY_QUEUE", DEFAULT_QUEUE)
    redis_settings: ClassVar[RedisSettings] = RedisSettings.from_dsn(_redis_url(os.environ))
    max_jobs: ClassVar[int] = int(_env_number(os.environ, "FREEDOMPAY_MAX_JOBS", 32))
    job_timeout: ClassVar[float] = _env_number(os.environ, "FREEDOMPAY_JOB_TIMEOUT", 900.0)
    keep_result: ClassVar[int] = 0


# -- enqueueing -----------------------------------------------------------------------------


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
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
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


# -- the `enqueue` command ------------------------------------------------------------------


class _CsvRows:
    """The requests of a pay CSV (`freedompay_async.csvinput`), read in a thread, in chunks."""

    def __init__(self, table: PayCsv, *, keep_customers: bool) -> None:
        self.table = table
        self.malformed = 0
        self.customers: list[str] | None = [] if keep_customers else None
        self._rows = iter(table)

    def _read_chunk(self) -> list[PayRequest | BadRow]:
        chunk: list[PayRequest | BadRow] = []
        for row in self._rows:
            chunk.append(row if isinstance(row, BadRow) else row.request())
            if len(chunk) >= _CSV_CHUNK:
                break
        return chunk

    async def __aiter__(self) -> AsyncIterator[PayRequest]:
        try:
            for _ in range(1_000_000_000):  # bounded: a billion chunks
                chunk = await asyncio.to_thread(self._read_chunk)
                if not chunk:
                    break
                for row in chunk:
                    if isinstance(row, BadRow):
                        self.malformed += 1
                        sys.stderr.write(
                            f"{self.table.path}:{row.line}: skipped a malformed row: {row.reason}\n"
                        )
                        continue
                    if self.customers is not None:
                        self.customers.append(row.customer)
                    yield row
        finally:
            await asyncio.to_thread(self.table.close)


def add_enqueue_command(
    subparsers: argparse._SubParsersAction[Any],
) -> argparse.ArgumentParser:
    """
    Register `enqueue INPUT.csv --redis URL` on a command line's subparsers.

    The handler is set as both `func` and `handler` in the parsed namespace and returns the
    exit code.

    Args:
        subparsers: What `ArgumentParser.add_subparsers()` returned.

    Returns:
        The `enqueue` subparser.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "enqueue",
        help="queue a CSV of invoices for arq pay workers",
        description=(
            "Queue one pay job per CSV row (customer,user_id,card_token[,key], header row) for "
            "workers started with: arq freedompay_async.contrib.arq.WorkerSettings"
        ),
    )
    parser.add_argument("input", type=Path, help="the CSV file")
    parser.add_argument(
        "--encoding",
        default="utf-8-sig",
        help="the CSV's encoding, e.g. cp1251 (default: %(default)s; a BOM is dropped)",
    )
    parser.add_argument(
        "--delimiter",
        default=None,
        help="the CSV's field delimiter (default: sniffed from the header: , ; tab |)",
    )
    parser.add_argument(
        "--redis",
        default=_redis_url(os.environ),
        help="Redis URL (default: $FREEDOMPAY_REDIS_URL, $REDIS_URL or %(default)s)",
    )
    parser.add_argument(
        "--queue",
        default=_env(os.environ, "FREEDOMPAY_QUEUE", DEFAULT_QUEUE),
        help="the workers' arq queue (default: $FREEDOMPAY_QUEUE or %(default)s)",
    )
    parser.add_argument(
        "--merchant-id",
        default=os.environ.get(_ENV_MERCHANT_ID) or None,
        help="skip customers already settled, and read outcomes (default: $FREEDOMPAY_MERCHANT_ID)",
    )
    parser.add_argument(
        "--namespace",
        default=_env(os.environ, "FREEDOMPAY_NAMESPACE", "freedompay"),
        help="the workers' key prefix (default: %(default)s)",
    )
    parser.add_argument(
        "--wait", action="store_true", help="wait for every outcome, then print a summary"
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds --wait waits at most"
    )
    parser.add_argument("--out", type=Path, help="with --wait: write the outcomes as JSON lines")

    def handler(args: argparse.Namespace) -> int:
        return asyncio.run(run_enqueue(args))

    parser.set_defaults(func=handler, handler=handler)
    return parser


def _print(data: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(dict(data), separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _write_jsonl(path: Path, outcomes: Iterable[Mapping[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for outcome in outcomes:
            out.write(json.dumps(dict(outcome), ensure_ascii=False, separators=(",", ":")) + "\n")


async def run_enqueue(args: argparse.Namespace) -> int:
    """
    Run `enqueue` with the arguments `add_enqueue_command` parsed.

    Args:
        args: The parsed arguments.

    Returns:
        The exit code, as for `main`.
    """
    if args.wait and not args.merchant_id:
        sys.stderr.write("--wait needs --merchant-id (or FREEDOMPAY_MERCHANT_ID)\n")
        return 2
    if not await asyncio.to_thread(args.input.is_file):
        sys.stderr.write(f"{args.input}: no such file\n")
        return 2
    try:
        settings = RedisSettings.from_dsn(args.redis)
    except (RuntimeError, ValueError) as exc:
        sys.stderr.write(f"--redis: {exc}\n")
        return 2
    try:
        table = await asyncio.to_thread(
            open_pay_csv,
            args.input,
            encoding=getattr(args, "encoding", "utf-8-sig"),
            delimiter=getattr(args, "delimiter", None),
        )
    except (CsvInputError, ConfigurationError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    try:
        return await _enqueue_table(args, settings, table)
    except (RedisError, OSError) as exc:
        sys.stderr.write(
            f"enqueue: cannot use Redis at {settings.host}:{settings.port} "
            f"({type(exc).__name__}: {exc}); start it or pass --redis URL. Rows already "
            "queued stay queued; running enqueue again queues each customer at most once\n"
        )
        return 2
    finally:
        await asyncio.to_thread(table.close)


async def _enqueue_table(args: argparse.Namespace, settings: RedisSettings, table: PayCsv) -> int:
    redis = await create_pool(settings, default_queue_name=args.queue)
    try:
        results = (
            OutcomeStore(redis, args.merchant_id, namespace=args.namespace)
            if args.merchant_id
            else None
        )
        rows = _CsvRows(table, keep_customers=args.wait)
        report = await enqueue_batch(redis, rows, queue_name=args.queue, results=results)
        _print({**report.to_dict(), "malformed": rows.malformed, "queue": args.queue})
        if not args.wait or results is None or rows.customers is None:
            return 1 if rows.malformed else 0
        return await _wait_and_report(args, results, rows.customers, rows.malformed)
    finally:
        await redis.aclose()


async def _wait_and_report(
    args: argparse.Namespace, results: OutcomeStore, customers: list[str], malformed: int
) -> int:
    unique = list(dict.fromkeys(customers))
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0 or done == total:  # noqa: PLR2004 - one line per two seconds
            last[0] = now
            sys.stderr.write(f"outcomes: {done}/{total}\n")

    found = await wait_for_outcomes(results, unique, within=args.timeout, on_progress=progress)
    if args.out is not None:
        await asyncio.to_thread(_write_jsonl, args.out, (found[c] for c in unique if c in found))
    by_state: dict[str, int] = {}
    for outcome in found.values():
        state = str(outcome.get("state"))
        by_state[state] = by_state.get(state, 0) + 1
    missing = len(unique) - len(found)
    _print({"outcomes": len(found), "missing": missing, "by_state": by_state})
    if missing:
        sys.stderr.write(f"{missing} outcomes still missing after {args.timeout:g}s\n")
        return 2
    return 0 if by_state.get("paid", 0) == len(unique) and not malformed else 1


def main(argv: list[str] | None = None) -> int:
    """
    Run the `enqueue` command: `python -m freedompay_async.contrib.arq enqueue INPUT.csv`.

    Args:
        argv: The arguments (default: `sys.argv[1:]`).

    Returns:
        The exit code: 0 when everything was queued (with `--wait`: paid), 1 when some row or
        outcome was not, 2 for a usage error or a `--wait` that timed out.
    """
    parser = argparse.ArgumentParser(prog="python -m freedompay_async.contrib.arq")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_enqueue_command(subparsers)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    # Run the imported module's `main`, so that pickled job arguments (`MaskedToken`) name
    # `freedompay_async.contrib.arq`, which workers can import, rather than `__main__`.
    from freedompay_async.contrib.arq import main as _main

    sys.exit(_main())
