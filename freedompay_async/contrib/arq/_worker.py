"""The arq side of a pay worker: startup and shutdown hooks, the job, and the worker settings."""

from __future__ import annotations

import logging
import math
import os
from typing import TYPE_CHECKING, Any, ClassVar, Final

from arq.connections import RedisSettings
from arq.worker import Function, Retry, func
from redis.exceptions import RedisError

from freedompay_async import ConfigurationError
from freedompay_async.contrib.arq._config import (
    CONFIG_KEY,
    DEFAULT_QUEUE,
    JOB_NAME,
    REDIS_RETRY_DELAY,
    RUNTIME_KEY,
    PayWorkerConfig,
    env_number,
    env_redis_url,
    env_text,
)
from freedompay_async.contrib.arq._runtime import PayRuntime
from freedompay_async.facts import is_number

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

__all__ = [
    "WorkerSettings",
    "pay_invoice_job",
    "settings_from_env",
    "shutdown",
    "startup",
    "worker_settings",
]

logger = logging.getLogger("freedompay_async.contrib")

_MAX_TRIES: Final = 10


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


def worker_settings(
    config: PayWorkerConfig | None = None,
    *,
    burst: bool = False,
    poll_delay: float = 0.5,
    handle_signals: bool = True,
) -> dict[str, Any]:
    """
    Build arq worker settings for *config*: pass them to `arq.worker.Worker(**settings)`.

    Args:
        config: The configuration; `PayWorkerConfig.from_env()` by default.
        burst: Stop the worker once the queue is empty (arq's `burst`).
        poll_delay: Seconds between two looks at the queue.
        handle_signals: Let arq stop the worker gracefully on SIGINT and SIGTERM.

    Returns:
        Keyword arguments for `arq.worker.Worker`.

    Raises:
        ConfigurationError: `poll_delay` is not a positive finite number of seconds.
    """
    if not is_number(poll_delay) or not 0 < poll_delay < math.inf:
        raise ConfigurationError(
            f"poll_delay must be a positive finite number of seconds, got {poll_delay!r}"
        )
    cfg = config if config is not None else PayWorkerConfig.from_env()
    return {
        "functions": [_job_function(cfg.job_timeout)],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "queue_name": cfg.queue_name,
        "redis_settings": RedisSettings.from_dsn(cfg.redis_url),
        "max_jobs": cfg.max_jobs,
        "job_timeout": cfg.job_timeout,
        "keep_result": 0,
        "ctx": {CONFIG_KEY: cfg},
        "burst": bool(burst),
        "poll_delay": float(poll_delay),
        "handle_signals": bool(handle_signals),
    }


class WorkerSettings:
    """
    arq settings read from the environment: `arq freedompay_async.contrib.arq.WorkerSettings`.

    `freedompay_async.contrib.arq.WorkerSettings` is built by `settings_from_env()` each time it
    is looked up, so the environment is read when arq loads it to start a worker, never when the
    package is imported: the queue, Redis, `max_jobs` and `job_timeout` then, the credentials and
    the rate at each worker's startup. Results are not kept by arq (`keep_result = 0`: they would
    hold the job's arguments); outcomes go to `OutcomeStore`.
    """

    functions: ClassVar[list[Function]]
    on_startup: ClassVar[Callable[[dict[Any, Any]], Awaitable[None]]]
    on_shutdown: ClassVar[Callable[[dict[Any, Any]], Awaitable[None]]]
    queue_name: ClassVar[str]
    redis_settings: ClassVar[RedisSettings]
    max_jobs: ClassVar[int]
    job_timeout: ClassVar[float]
    keep_result: ClassVar[int]


def settings_from_env(environ: Mapping[str, str] | None = None) -> type[WorkerSettings]:
    """
    Build the `WorkerSettings` class arq starts a worker with, from the environment now.

    Args:
        environ: The variables; `os.environ` by default.

    Returns:
        A `WorkerSettings` subclass holding every value arq reads (arq reads the class's own
        attributes).

    Raises:
        ConfigurationError: `FREEDOMPAY_JOB_TIMEOUT` or `FREEDOMPAY_MAX_JOBS` is not a number.
    """
    env = os.environ if environ is None else environ
    job_timeout = env_number(env, "FREEDOMPAY_JOB_TIMEOUT", 900.0)
    values: dict[str, Any] = {
        "__doc__": WorkerSettings.__doc__,
        "__module__": "freedompay_async.contrib.arq",
        "functions": [_job_function(job_timeout)],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "queue_name": env_text(env, "FREEDOMPAY_QUEUE", DEFAULT_QUEUE),
        "redis_settings": RedisSettings.from_dsn(env_redis_url(env)),
        "max_jobs": int(env_number(env, "FREEDOMPAY_MAX_JOBS", 32)),
        "job_timeout": job_timeout,
        "keep_result": 0,
    }
    return type("WorkerSettings", (WorkerSettings,), values)
