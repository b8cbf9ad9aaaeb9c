"""The pay workers' settings: names shared by workers and enqueuers, and `PayWorkerConfig`."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Final

import attrs

from freedompay_async import ConfigurationError
from freedompay_async.facts import DEFAULT_BASE_URL, is_integer, is_number

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CONFIG_KEY",
    "DEFAULT_QUEUE",
    "DEFAULT_REDIS_URL",
    "ENV_MERCHANT_ID",
    "JOB_ID_PREFIX",
    "JOB_NAME",
    "REDIS_RETRY_DELAY",
    "RUNTIME_KEY",
    "PayWorkerConfig",
    "env_number",
    "env_redis_url",
    "env_text",
]

DEFAULT_QUEUE: Final = "freedompay:queue"
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

ENV_MERCHANT_ID: Final = "FREEDOMPAY_MERCHANT_ID"
_ENV_SECRET_KEY: Final = "FREEDOMPAY_SECRET_KEY"  # noqa: S105 - an environment variable's name


def env_text(environ: Mapping[str, str], name: str, default: str) -> str:
    """Return the stripped value of variable *name*, or *default* when it is unset or blank."""
    value = environ.get(name, "").strip()
    return value or default


def env_number(environ: Mapping[str, str], name: str, default: float) -> float:
    """Return variable *name* as a finite number >= 0, or *default*; a bad value is refused."""
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


def env_redis_url(environ: Mapping[str, str]) -> str:
    """Return `FREEDOMPAY_REDIS_URL`, else `REDIS_URL`, else the local default."""
    return env_text(
        environ, "FREEDOMPAY_REDIS_URL", env_text(environ, "REDIS_URL", DEFAULT_REDIS_URL)
    )


def _at_least_one(_inst: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not is_integer(value) or value < 1:
        raise ConfigurationError(f"{attribute.name} must be an integer >= 1, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not is_number(value) or not value >= 0:
        raise ConfigurationError(f"{attribute.name} must be a number >= 0, got {value!r}")


def _positive(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not is_number(value) or not value > 0:
        raise ConfigurationError(f"{attribute.name} must be a number > 0, got {value!r}")


def _required(_inst: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{attribute.name} must be a non-empty string")


def _default_outage_tolerance(config: PayWorkerConfig) -> float:
    """300 seconds, or half of `job_timeout` when that is shorter."""
    timeout = config.job_timeout
    return min(300.0, timeout / 2) if is_number(timeout) else 300.0


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
        outage_tolerance: Seconds a job waits out a gateway outage: a pay refused or not sent
            (503, 429, no connection, the breaker open) is tried again, one second apart, until
            it is answered or this time is over; 0 records the failure at once. It must stay
            below `job_timeout`; by default 300, or half of `job_timeout` when that is shorter.
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
    outage_tolerance: float = attrs.field(
        default=attrs.Factory(_default_outage_tolerance, takes_self=True),
        validator=_non_negative,
    )
    namespace: str = attrs.field(default="freedompay", validator=_required)
    client_options: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    def __attrs_post_init__(self) -> None:
        if is_number(self.outage_tolerance) and self.outage_tolerance >= self.job_timeout:
            raise ConfigurationError(
                f"outage_tolerance ({self.outage_tolerance:g} s) must be below job_timeout "
                f"({self.job_timeout:g} s): arq would cancel a job still waiting for the gateway"
            )

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
        merchant_id = env.get(ENV_MERCHANT_ID, "").strip()
        secret_key = env.get(_ENV_SECRET_KEY, "")
        if not merchant_id or not secret_key:
            raise ConfigurationError(
                f"set {ENV_MERCHANT_ID} and {_ENV_SECRET_KEY} for the pay workers"
            )
        config = cls(
            merchant_id=merchant_id,
            secret_key=secret_key,
            base_url=env_text(env, "FREEDOMPAY_BASE_URL", DEFAULT_BASE_URL),
            redis_url=env_redis_url(env),
            queue_name=env_text(env, "FREEDOMPAY_QUEUE", DEFAULT_QUEUE),
            rate=env_number(env, "FREEDOMPAY_RATE", 10.0),
            burst=int(env_number(env, "FREEDOMPAY_BURST", 1)),
            max_jobs=int(env_number(env, "FREEDOMPAY_MAX_JOBS", 32)),
            job_timeout=env_number(env, "FREEDOMPAY_JOB_TIMEOUT", 900.0),
            claim_ttl=env_number(env, "FREEDOMPAY_CLAIM_TTL", 30.0),
            new_proves_not_landed_after=(
                env_number(env, "FREEDOMPAY_NEW_PROVES_AFTER", 0.0)
                if env.get("FREEDOMPAY_NEW_PROVES_AFTER", "").strip()
                else None
            ),
            namespace=env_text(env, "FREEDOMPAY_NAMESPACE", "freedompay"),
        )
        if not env.get("FREEDOMPAY_OUTAGE_TOLERANCE", "").strip():
            return config
        tolerance = env_number(env, "FREEDOMPAY_OUTAGE_TOLERANCE", 0.0)
        return attrs.evolve(config, outage_tolerance=tolerance)
