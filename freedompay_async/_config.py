"""
Configuration value objects: timeouts, retry and poll policies, the clock, wire options.

All of them are frozen attrs classes that validate on construction and raise
`ConfigurationError` naming the option that was wrong, so a bad setting fails before anything is
sent. Durations are seconds as `float`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import attrs

from freedompay_async._exceptions import ConfigurationError
from freedompay_async.facts import is_integer, is_number

if TYPE_CHECKING:
    from collections.abc import Awaitable

__all__ = [
    "BodyFormat",
    "Clock",
    "JwsHeaderKey",
    "PollPolicy",
    "RetryPolicy",
    "Timeouts",
    "check_base_url",
]

BodyFormat = Literal["multipart", "json"]
JwsHeaderKey = Literal["path", "uri"]

DEFAULT_MAX_RESPONSE_BYTES = 1 << 20
_MAX_PORT = 65535


def check_base_url(base_url: object) -> str:
    """
    Validate the API base URL.

    Args:
        base_url: The URL, e.g. `https://api.freedompay.kz` (a path prefix is allowed).

    Returns:
        The URL without a trailing slash.

    Raises:
        ConfigurationError: Not a string; a scheme other than http or https; no host; a port
            that is not a number from 1 to 65535; credentials, a query or a fragment in it;
            whitespace or control characters in it. The message names `base_url`.
    """
    if not isinstance(base_url, str):
        raise ConfigurationError(f"base_url must be a string, got {type(base_url).__name__}")
    if not base_url.isprintable() or any(char.isspace() for char in base_url):
        raise ConfigurationError("base_url must not contain whitespace or control characters")
    try:
        parts = urlsplit(base_url)
        port = parts.port
    except ValueError as exc:
        reason = (
            "its port is not a number from 1 to 65535"
            if "port" in str(exc).lower()
            else "it cannot be parsed"
        )
        raise ConfigurationError(f"base_url is not a valid URL: {reason}") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigurationError("base_url must start with http:// or https://")
    if not parts.hostname:
        raise ConfigurationError("base_url must name a host")
    if port is not None and not 1 <= port <= _MAX_PORT:
        raise ConfigurationError("base_url port must be a number from 1 to 65535")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError("base_url must not hold credentials (user:password@)")
    if parts.query or parts.fragment or base_url.endswith(("?", "#")):
        raise ConfigurationError("base_url must not hold a query or a fragment")
    return base_url.rstrip("/")


def _seconds(
    name: str, value: object, *, allow_none: bool = False, allow_zero: bool = False
) -> None:
    """Check that *value* is a finite, positive number of seconds (or None when allowed)."""
    if value is None and allow_none:
        return
    if not is_number(value):
        raise ConfigurationError(f"{name} must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(
            f"{name} must be a finite number of seconds {bound}, got {value!r}"
        )


def _positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    """Check that *value* is an int >= 1 (or None when allowed)."""
    if value is None and allow_none:
        return
    if not is_integer(value) or value < 1:
        raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class Timeouts:
    """
    Per-attempt timeouts, in seconds.

    Each attempt uses `min(configured, time left before the call's deadline)`.

    Args:
        connect: Time to establish a TCP (and TLS) connection.
        read: Time an attempt may take, from its start to the end of the reply (checked
            every 0.1 s); a read timeout of a pay is ambiguous.
        pool: Time to wait for a free slot of the client's concurrency gate.
        keepalive: How long an idle pooled connection may wait to be reused; an older one is
            closed and a new connection is made. Keep it below the gateway's (or its proxy's)
            idle timeout: a pay written on a connection the server is closing comes back
            ambiguous. The default, 1.5 s, is below the common 2 s, 5 s and 75 s server idle
            timeouts. It applies to the client's own session, not to a `session` you pass.

    Raises:
        ConfigurationError: A value is not a positive, finite number.
    """

    connect: float = 10.0
    read: float = 30.0
    pool: float = 10.0
    keepalive: float = 1.5

    def __attrs_post_init__(self) -> None:
        for field in ("connect", "read", "pool", "keepalive"):
            _seconds(f"Timeouts.{field}", getattr(self, field))


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """
    How a call is retried, and how an ambiguous payment is reconciled.

    The delay before retry *n* (1 for the first) is full-jitter exponential backoff:
    `uniform(0, min(backoff_max, backoff_base * 2 ** (n - 1)))`, raised to a `Retry-After` hint
    when the gateway sent one (capped at `retry_after_max`).

    Args:
        attempts: Maximum requests per call, the first included (1 disables retries).
        deadline: Seconds one call may take in all: gate waits, attempts, sleeps, reconcile.
        backoff_base: Upper bound of the first retry's delay.
        backoff_max: Upper bound of any retry's delay.
        retry_after_max: Cap on a honoured `Retry-After`; a larger capped hint than the time left
            makes the call give up at once.
        reconcile_grace: Seconds to wait after an ambiguous pay before asking its status.
        resend_pay_if_new: After an ambiguous pay whose status still reads `new`, send pay once
            more instead of raising `AmbiguousPaymentError`. Risky: if the gateway's status lags
            behind its charge, the invoice can be charged twice.
        budget: Tokens in the client's retry budget (a resend costs 5, 10 after a timeout, a
            success refunds 1); None disables the budget.
        breaker_threshold: Consecutive failed attempts that open the client's circuit breaker;
            None disables the breaker.
        breaker_cooldown: Seconds the breaker stays open before one probe request goes through.

    Raises:
        ConfigurationError: A value is out of range.
    """

    attempts: int = 4
    deadline: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    retry_after_max: float = 30.0
    reconcile_grace: float = 2.0
    resend_pay_if_new: bool = False
    budget: int | None = 500
    breaker_threshold: int | None = 20
    breaker_cooldown: float = 10.0

    def __attrs_post_init__(self) -> None:
        _positive_int("RetryPolicy.attempts", self.attempts)
        _seconds("RetryPolicy.deadline", self.deadline)
        _seconds("RetryPolicy.backoff_base", self.backoff_base, allow_zero=True)
        _seconds("RetryPolicy.backoff_max", self.backoff_max, allow_zero=True)
        _seconds("RetryPolicy.retry_after_max", self.retry_after_max, allow_zero=True)
        _seconds("RetryPolicy.reconcile_grace", self.reconcile_grace, allow_zero=True)
        _seconds("RetryPolicy.breaker_cooldown", self.breaker_cooldown)
        _positive_int("RetryPolicy.budget", self.budget, allow_none=True)
        _positive_int("RetryPolicy.breaker_threshold", self.breaker_threshold, allow_none=True)
        if not isinstance(self.resend_pay_if_new, bool):
            raise ConfigurationError("RetryPolicy.resend_pay_if_new must be a bool")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """
        Return a policy that sends every call exactly once and never reconciles by waiting.

        Returns:
            A policy with one attempt, no budget and no breaker. An ambiguous pay still asks the
            status once (without a grace period), so its outcome is classified truthfully.
        """
        return cls(attempts=1, reconcile_grace=0.0, budget=None, breaker_threshold=None)


@attrs.frozen(kw_only=True)
class PollPolicy:
    """
    How a pending payment is polled until it reaches a terminal status.

    Poll *k* (0 for the first) waits `min(max_interval, interval * factor ** k)` seconds, times a
    random factor in `[1.0, 1.25)`: never earlier than planned, never in lockstep with other polls.

    Args:
        interval: Seconds before the first poll.
        factor: Growth of the interval from one poll to the next (>= 1).
        max_interval: Upper bound of one interval.
        timeout: Seconds of polling after which `PaymentPending` is raised.

    Raises:
        ConfigurationError: A value is out of range.
    """

    interval: float = 2.0
    factor: float = 1.5
    max_interval: float = 15.0
    timeout: float = 300.0

    def __attrs_post_init__(self) -> None:
        # A zero interval would poll the gateway in a tight loop.
        _seconds("PollPolicy.interval", self.interval)
        _seconds("PollPolicy.max_interval", self.max_interval)
        _seconds("PollPolicy.timeout", self.timeout, allow_zero=True)
        if not is_number(self.factor):
            raise ConfigurationError("PollPolicy.factor must be a number")
        if not math.isfinite(self.factor) or self.factor < 1:
            raise ConfigurationError(f"PollPolicy.factor must be >= 1, got {self.factor!r}")


@runtime_checkable
class Clock(Protocol):
    """
    The source of time the client reads and sleeps on.

    The default reads `time.monotonic`/`time.time` and sleeps with `asyncio.sleep`;
    `freedompay_async.testing.VirtualClock` makes tests instant and deterministic.
    """

    def monotonic(self) -> float:
        """Return seconds on a monotonic clock."""
        ...

    def time(self) -> float:
        """Return wall-clock seconds since the epoch (for HTTP-date `Retry-After`)."""
        ...

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Sleep for *seconds*."""
        ...


@attrs.frozen(kw_only=True)
class _Credentials:
    """The merchant's identity; the secret never appears in `repr`."""

    merchant_id: str
    secret_key: str = attrs.field(repr=False)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.merchant_id, str) or not self.merchant_id.strip():
            raise ConfigurationError("merchant_id must be a non-empty string or integer")
        if not isinstance(self.secret_key, str) or not self.secret_key:
            raise ConfigurationError("secret_key must be a non-empty string")


@attrs.frozen(kw_only=True)
class _WireOptions:
    """The switches for what the documentation leaves open (see the README's Assumptions)."""

    body_format: BodyFormat = "multipart"
    jws_header_key: JwsHeaderKey = "path"
    qr_customer_param: str = "customer"
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __attrs_post_init__(self) -> None:
        if self.body_format not in ("multipart", "json"):
            raise ConfigurationError(
                f"body_format must be 'multipart' or 'json', got {self.body_format!r}"
            )
        if self.jws_header_key not in ("path", "uri"):
            raise ConfigurationError(
                f"jws_header_key must be 'path' or 'uri', got {self.jws_header_key!r}"
            )
        if not isinstance(self.qr_customer_param, str) or not self.qr_customer_param:
            raise ConfigurationError("qr_customer_param must be a non-empty string")
        _positive_int("max_response_bytes", self.max_response_bytes)
