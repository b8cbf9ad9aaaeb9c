"""
`FreedomPayClient`: its options, its state and its lifecycle.

The operations are its base classes: `_invoice_client.InvoiceOperations` (init, status, info,
pay, batches; driven by `_driver.InvoiceDriver`) and `_classic_client.ClassicOperations` (saved
cards, payment status, refund, cancel, capture). Every rule about attempts, resends, the
deadline, reconcile, polling and what the money is known to be lives in the pure `_call.Call`
(and `_classic_call.ClassicCall`); the drivers only perform the steps those decide.
"""

from __future__ import annotations

import logging
import random
import warnings
from importlib import metadata
from typing import TYPE_CHECKING, Self

from freedompay_async._classic import ClassicOptions
from freedompay_async._classic_client import ClassicOperations
from freedompay_async._classic_driver import WriteGuard
from freedompay_async._config import (
    BodyFormat,
    Clock,
    JwsHeaderKey,
    PollPolicy,
    RetryPolicy,
    Timeouts,
    _Credentials,
    _WireOptions,
)
from freedompay_async._driver import State, SystemClock
from freedompay_async._exceptions import ConfigurationError
from freedompay_async._guard import InMemoryPayGuard, PayGuard, RateLimiter
from freedompay_async._invoice_client import InvoiceOperations
from freedompay_async._retry import CircuitBreaker, RetryBudget
from freedompay_async._transport import Transport
from freedompay_async.facts import DEFAULT_BASE_URL, is_integer

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    import aiohttp

    from freedompay_async._retry import RetryEvent

__all__ = ["DEFAULT_BASE_URL", "FreedomPayClient", "InMemoryPayGuard", "PayGuard", "RateLimiter"]

logger = logging.getLogger("freedompay_async")


try:
    _VERSION = metadata.version("freedompay-async")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "0"


class FreedomPayClient(InvoiceOperations, ClassicOperations):
    """
    An asyncio client for Freedom Pay's invoice API, sharing one HTTP session across calls.

    Use it as an async context manager (or call `aclose()`), create it once per process, and send
    as many calls at once as you like: a FIFO gate of `max_concurrency` slots queues them fairly.

    Args:
        merchant_id: The merchant id issued by Freedom Pay.
        secret_key: The merchant's secret key (never logged or shown).
        base_url: The API host: `https://api.freedompay.kz` (default), `.kg`, `.uz`, or an
            emulator/proxy.
        timeouts: Connect, read and gate-wait timeouts per attempt.
        retry: Resend, deadline and reconcile policy; `RetryPolicy.disabled()` sends once.
        poll: How `pay_invoice(wait=True)` polls a pending payment.
        max_concurrency: Requests in flight at once (the gate and the connection pool size).
        body_format: `multipart` (the endpoint pages) or `json` (the overview page).
        session: An `aiohttp.ClientSession` to use instead of the client's own; never closed by
            the client, and its connector limit caps the gate.
        jws_header_key: `path` (the verified example) or `uri` (the prose) in the JWS header.
        qr_customer_param: The query parameter of the decoded QR URL that holds `customer`.
        max_response_bytes: Replies larger than this are refused as `DecodeError`.
        clock: Time source and sleeper (tests pass `testing.VirtualClock()`).
        rng: Random source for jitter (tests pass a seeded `random.Random`).
        on_retry: Called with a `RetryEvent` before each resend or reconcile.
        on_giveup: Called with a `RetryEvent` when a call gives up on an error.
        guard: The duplicate-pay guard; defaults to `InMemoryPayGuard()`.
        rate_limiter: Consulted before each request is sent; none by default.
        classic: The classic Merchant API's switches (`ClassicOptions`): card-add script, reply
            verification, reply size cap.

    Raises:
        ConfigurationError: An option is invalid.
    """

    def __init__(
        self,
        merchant_id: str | int,
        secret_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        max_concurrency: int = 64,
        body_format: BodyFormat = "multipart",
        session: aiohttp.ClientSession | None = None,
        jws_header_key: JwsHeaderKey = "path",
        qr_customer_param: str = "customer",
        max_response_bytes: int = 1 << 20,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_retry: Callable[[RetryEvent], object] | None = None,
        on_giveup: Callable[[RetryEvent], object] | None = None,
        guard: PayGuard | None = None,
        rate_limiter: RateLimiter | None = None,
        classic: ClassicOptions | None = None,
    ) -> None:
        if not (is_integer(merchant_id) or isinstance(merchant_id, str)):
            raise ConfigurationError("merchant_id must be a string or an integer")
        if not is_integer(max_concurrency):
            raise ConfigurationError("max_concurrency must be an integer >= 1")
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if not isinstance(base_url, str):
            raise ConfigurationError("base_url must be a string")
        self._credentials = _Credentials(merchant_id=str(merchant_id), secret_key=secret_key)
        self._wire = _WireOptions(
            body_format=body_format,
            jws_header_key=jws_header_key,
            qr_customer_param=qr_customer_param,
            max_response_bytes=max_response_bytes,
        )
        self._timeouts = timeouts if timeouts is not None else Timeouts()
        self._retry = retry if retry is not None else RetryPolicy()
        self._poll = poll if poll is not None else PollPolicy()
        for name, value, cls in (
            ("timeouts", self._timeouts, Timeouts),
            ("retry", self._retry, RetryPolicy),
            ("poll", self._poll, PollPolicy),
        ):
            if not isinstance(value, cls):
                raise ConfigurationError(f"{name} must be a {cls.__name__}")
        self._base_url = base_url.rstrip("/")
        self._max_concurrency = max_concurrency
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not crypto
        self._on_retry = on_retry
        self._on_giveup = on_giveup
        self._guard: PayGuard = guard if guard is not None else InMemoryPayGuard()
        self._rate_limiter = rate_limiter
        self._classic_options = classic if classic is not None else ClassicOptions()
        self._write_guard = WriteGuard()
        self._budget = RetryBudget(self._retry.budget) if self._retry.budget else None
        self._breaker = (
            CircuitBreaker(self._retry.breaker_threshold, self._retry.breaker_cooldown)
            if self._retry.breaker_threshold
            else None
        )
        self._transport = Transport(
            base_url=self._base_url,
            max_concurrency=max_concurrency,
            max_response_bytes=max_response_bytes,
            timeouts=self._timeouts,
            session=session,
            user_agent=f"freedompay-async/{_VERSION}",
        )
        self._state = State.UNOPENED
        self._loop: asyncio.AbstractEventLoop | None = None
        self._make_decoders()

    def __repr__(self) -> str:
        return (
            f"FreedomPayClient(merchant_id={self._credentials.merchant_id!r}, "
            f"base_url={self._base_url!r}, state={self._state.value})"
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether `aclose()` has run."""
        return self._state is State.CLOSED

    @property
    def max_concurrency(self) -> int:
        """The size of the concurrency gate."""
        return self._transport.gate.size

    async def __aenter__(self) -> Self:
        self._ensure_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """
        Close the client and its own HTTP session (a caller's session is left open).

        Idempotent. Calls still in flight fail as `ConnectionLost`; their pays end as ambiguous.
        """
        if self._state is State.CLOSED:
            return
        self._state = State.CLOSED
        await self._transport.close()

    def __del__(self) -> None:
        transport = getattr(self, "_transport", None)
        if transport is not None and transport.owns_session and transport.session_open:
            warnings.warn(
                f"unclosed {self!r}: use 'async with FreedomPayClient(...)' or await aclose()",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )
