"""
`FreedomPayClient`: lifecycle, the operations, and the driver that performs a call's steps.

Every rule about attempts, resends, the deadline, reconcile, polling and what the money is known
to be lives in the pure `_call.Call`. This module builds each request once (`_protocol`), creates
the call, and runs `_drive`: ask the call for its next step, perform it (send through the
transport and decode, sleep, return, raise), and report back. It is the only code that awaits.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import time
import warnings
from importlib import metadata
from typing import TYPE_CHECKING, Self, TypeVar, cast

import attrs

from freedompay_async import _decode
from freedompay_async._call import Act, Call
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
from freedompay_async._events import emit, fmt_context
from freedompay_async._exceptions import (
    ClientClosedError,
    ConfigurationError,
    ConnectionLost,
    DuplicatePayError,
    FreedomPayError,
    PaymentPending,
)
from freedompay_async._guard import InMemoryPayGuard, PayGuard, RateLimiter
from freedompay_async._models import (
    InvoiceInfo,
    InvoiceInit,
    InvoicePayment,
    PayOutcome,
    PayRequest,
    parse_amount,
)
from freedompay_async._protocol import Field, Operation, OutgoingRequest, RawResponse, build_request
from freedompay_async._retry import CircuitBreaker, RetryBudget
from freedompay_async._transport import Transport
from freedompay_async.facts import DEFAULT_BASE_URL, is_integer, is_number

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
    from decimal import Decimal

    import aiohttp

    from freedompay_async._models import BatchProgress
    from freedompay_async._retry import RetryEvent

__all__ = ["DEFAULT_BASE_URL", "FreedomPayClient", "InMemoryPayGuard", "PayGuard", "RateLimiter"]

logger = logging.getLogger("freedompay_async")


_T = TypeVar("_T")

try:
    _VERSION = metadata.version("freedompay-async")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    _VERSION = "0"


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class _SystemClock:
    """The real clock: `time.monotonic`, `time.time`, `asyncio.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FreedomPayClient(ClassicOperations):
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
        self._clock: Clock = clock if clock is not None else _SystemClock()
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
        self._state = _State.UNOPENED
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return (
            f"FreedomPayClient(merchant_id={self._credentials.merchant_id!r}, "
            f"base_url={self._base_url!r}, state={self._state.value})"
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether `aclose()` has run."""
        return self._state is _State.CLOSED

    @property
    def max_concurrency(self) -> int:
        """The size of the concurrency gate."""
        return self._transport.gate.size

    def _ensure_open(self) -> None:
        if self._state is _State.CLOSED:
            raise _closed("FreedomPayClient is closed")
        loop = asyncio.get_running_loop()
        if self._state is _State.UNOPENED:
            self._loop = loop
            self._transport.open()
            self._state = _State.OPENED
        elif loop is not self._loop:
            raise RuntimeError(
                "FreedomPayClient is bound to the event loop it was opened in; "
                "create one client per event loop"
            )

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
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
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

    # -- the driver: the only code that awaits a call's steps ------------------------------

    async def _drive(
        self, call: Call, request: OutgoingRequest, decode: Callable[[RawResponse], object]
    ) -> object:
        """Perform the call's steps until it ends; nothing but `Call` decides anything."""
        clock = self._clock
        send = self._transport.send
        limiter = self._rate_limiter
        status: tuple[OutgoingRequest, Callable[[RawResponse], object]] | None = None
        debug = logger.isEnabledFor(logging.DEBUG)
        try:
            while True:
                if call.notes:
                    emit(call, on_retry=self._on_retry, on_giveup=self._on_giveup)
                act = call.next_step(clock.monotonic())
                if act is Act.SEND or act is Act.ASK_STATUS:
                    if debug:
                        logger.debug(
                            "%s attempt %d %s",
                            call.operation.value,
                            call.attempts,
                            fmt_context(call.context),
                        )
                    out, read = request, decode
                    if act is Act.ASK_STATUS:
                        if status is None:
                            status = self._status_exchange(call.context["customer"])
                        out, read = status
                    result: object
                    try:
                        if limiter is not None:
                            await limiter.acquire()
                        result = read(await send(out, remaining=call.remaining))
                    except FreedomPayError as exc:
                        result = exc
                    except Exception as exc:
                        if not call.moves_money:
                            raise
                        result = ConnectionLost(
                            f"{call.operation.value}: the reply could not be read "
                            f"({type(exc).__name__}); the outcome is unknown",
                            operation=call.operation.value,
                        )
                        result.__cause__ = exc
                    call.record(result, now=clock.monotonic(), wall=clock.time())
                elif act is Act.SLEEP:
                    if self._state is _State.CLOSED:
                        call.stop(_closed(call.operation.value))
                        continue
                    await clock.sleep(call.delay)
                    call.woke()
                elif act is Act.DONE:
                    return call.result
                else:
                    break
        except BaseException as exc:
            if call.abandon(clock.monotonic()):
                logger.warning(
                    "pay %s with its outcome unknown: check invoice_status before paying again %s",
                    "cancelled"
                    if isinstance(exc, asyncio.CancelledError)
                    else f"interrupted by {type(exc).__name__}",
                    fmt_context(call.context),
                )
            raise
        assert call.error is not None  # noqa: S101 - FAIL always carries its error
        raise call.error

    def _status_exchange(
        self, customer: str
    ) -> tuple[OutgoingRequest, Callable[[RawResponse], object]]:
        """The status-by-customer request and decoder a pay call reconciles and polls with."""
        request = build_request(
            Operation.STATUS,
            [("merchant_id", self._credentials.merchant_id), ("customer", customer)],
            credentials=self._credentials,
            wire=self._wire,
        )
        max_bytes = self._wire.max_response_bytes

        def decode(raw: RawResponse) -> InvoicePayment:
            return _decode.decode_payment(
                raw, operation=Operation.STATUS, max_bytes=max_bytes, customer=customer
            )

        return request, decode

    async def _read(
        self,
        operation: Operation,
        fields: list[Field],
        decode: Callable[[RawResponse], _T],
        *,
        policy: RetryPolicy,
    ) -> _T:
        """Run a call that moves no money (init, status, info) under the resend rules."""
        request = build_request(operation, fields, credentials=self._credentials, wire=self._wire)
        call = Call(
            operation,
            policy=policy,
            now=self._clock.monotonic(),
            rng=self._rng,
            context=request.context,
            budget=self._budget,
            breaker=self._breaker,
        )
        return cast("_T", await self._drive(call, request, decode))

    # -- operations ------------------------------------------------------------------------

    async def init_invoice(
        self,
        *,
        order_id: str,
        amount: Decimal | int,
        description: str,
        currency: str = "KZT",
        check_url: str | None = None,
        result_url: str | None = None,
        request_method: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> InvoiceInit:
        """
        Create an invoice to be paid by QR or by `pay_invoice`.

        Init is resent after an ambiguous failure with the same `order_id`: at worst the gateway
        holds a second unpaid invoice for the order, which can charge nobody and expires.

        Args:
            order_id: The merchant's order id (1-50 characters; keep it unique).
            amount: The amount as a `Decimal` (or `int`), at most two decimals.
            description: Shown to the payer.
            currency: The currency code, `KZT` by default.
            check_url: URL the gateway calls to ask whether the payment may proceed.
            result_url: URL the gateway notifies with the result.
            request_method: `GET` or `POST` for those callbacks.
            retry: This call's retry policy instead of the client's.

        Returns:
            The invoice, with `customer` (the pay token) and `qr_url` when they decode.

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            GatewayError: The gateway answered `status=error`.
            TransportError: No usable reply after the retries.
            ResponseError: A reply could not be used after the retries.
        """
        _check_text("order_id", order_id, max_len=50)
        _check_text("description", description, max_len=1024)
        _check_text("currency", currency, max_len=3)
        money = parse_amount(amount)
        fields: list[Field] = [
            ("order_id", order_id),
            ("merchant_id", self._credentials.merchant_id),
            ("amount", money),
            ("description", description),
            ("invoice_method", "qr"),
            ("currency", currency),
        ]
        for name, value in (
            ("check_url", check_url),
            ("result_url", result_url),
            ("request_method", request_method),
        ):
            if value is not None:
                _check_text(name, value, max_len=2048)
                fields.append((name, value))
        self._ensure_open()
        wire = self._wire
        init = await self._read(
            Operation.INIT,
            fields,
            lambda raw: _decode.decode_init(
                raw, max_bytes=wire.max_response_bytes, qr_customer_param=wire.qr_customer_param
            ),
            policy=retry or self._retry,
        )
        if init.order_id is None:
            init = attrs.evolve(init, order_id=order_id)
        return init

    def _lookup_fields(
        self, customer: str | None, order_id: str | None, invoice_id: int | None
    ) -> list[Field]:
        given = [
            (name, value)
            for name, value in (
                ("customer", customer),
                ("order_id", order_id),
                ("invoice_id", invoice_id),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ConfigurationError("give exactly one of customer, order_id or invoice_id")
        name, value = given[0]
        if name == "invoice_id":
            if not is_integer(value):
                raise ConfigurationError("invoice_id must be an integer")
        else:
            _check_text(name, value, max_len=255)
        return [("merchant_id", self._credentials.merchant_id), (name, value)]

    async def invoice_status(
        self,
        *,
        customer: str | None = None,
        order_id: str | None = None,
        invoice_id: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> InvoicePayment:
        """
        Ask the gateway for an invoice's current status, once (with resends on failures).

        Args:
            customer: The payment-page token from `InvoiceInit.customer`; or give *order_id* or
                *invoice_id*.
            order_id: The merchant's order id.
            invoice_id: The gateway's invoice id.
            retry: This call's retry policy instead of the client's.

        Returns:
            The invoice as the gateway sees it now; this never waits for a terminal status.

        Raises:
            ConfigurationError: Not exactly one of the three keys was given.
            GatewayError: The gateway answered `status=error`.
            TransportError: No usable reply after the retries.
            ResponseError: A reply could not be used after the retries.
        """
        fields = self._lookup_fields(customer, order_id, invoice_id)
        self._ensure_open()
        max_bytes = self._wire.max_response_bytes
        return await self._read(
            Operation.STATUS,
            fields,
            lambda raw: _decode.decode_payment(
                raw, operation=Operation.STATUS, max_bytes=max_bytes, customer=customer
            ),
            policy=retry or self._retry,
        )

    async def invoice_info(
        self,
        *,
        customer: str | None = None,
        order_id: str | None = None,
        invoice_id: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> InvoiceInfo:
        """
        Fetch an invoice's details: its payment state, description and QR.

        Args:
            customer: The payment-page token; or give *order_id* or *invoice_id*.
            order_id: The merchant's order id.
            invoice_id: The gateway's invoice id.
            retry: This call's retry policy instead of the client's.

        Returns:
            The invoice's details.

        Raises:
            ConfigurationError: Not exactly one of the three keys was given.
            GatewayError: The gateway answered `status=error`.
            TransportError: No usable reply after the retries.
            ResponseError: A reply could not be used after the retries.
        """
        fields = self._lookup_fields(customer, order_id, invoice_id)
        self._ensure_open()
        wire = self._wire
        return await self._read(
            Operation.INFO,
            fields,
            lambda raw: _decode.decode_info(
                raw,
                max_bytes=wire.max_response_bytes,
                qr_customer_param=wire.qr_customer_param,
                customer=customer,
            ),
            policy=retry or self._retry,
        )

    async def pay_invoice(
        self,
        *,
        customer: str,
        user_id: str,
        card_token: str,
        wait: bool = True,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
    ) -> InvoicePayment:
        """
        Pay an invoice with a saved card; at most one charge, whatever fails on the way.

        A pay is resent only when it provably never reached the gateway (connect errors, a full
        gate, HTTP 429/503). When its outcome is unknown (read timeout, broken connection, HTTP
        5xx, an unreadable reply, error 1000) the client waits `retry.reconcile_grace` and asks
        the invoice's status instead of paying again.

        Args:
            customer: The invoice's customer token (`InvoiceInit.customer`).
            user_id: The payer's id in the merchant's system.
            card_token: The saved card's token (never logged).
            wait: Poll a pending payment until it is terminal (`PollPolicy`); with False, return
                the first answer, which may be `NEW` or `PROCESS`.
            retry: This call's retry policy instead of the client's.
            poll: This call's poll policy instead of the client's.

        Returns:
            The payment: `OK` (paid), `FAILED` (declined) or `INCOMPLETE` (expired) — or, with
            `wait=False`, possibly still pending.

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            DuplicatePayError: The duplicate guard refused the pay (this customer is being paid,
                was paid, or its earlier pay has no known end); nothing was sent.
            GatewayError: The gateway refused the pay (`status=error`); nothing was charged.
            PaymentPending: Polling timed out; `.payment` is the last status seen.
            AmbiguousPaymentError: The pay may have charged and its status could not settle it;
                check `invoice_status(customer=...)` before paying again.
            TransportError: The pay was never sent (connect failures, the breaker is open).
            ResponseError: A reply could not be used (a refused HTTP status).
        """
        call = self._pay_call(customer, wait=wait, retry=retry, poll=poll)
        return await self._pay(call, customer=customer, user_id=user_id, card_token=card_token)

    def _pay_call(
        self, customer: str, *, wait: bool, retry: RetryPolicy | None, poll: PollPolicy | None
    ) -> Call:
        return Call(
            Operation.PAY,
            policy=retry or self._retry,
            now=self._clock.monotonic(),
            rng=self._rng,
            context={"customer": customer},
            wait=wait,
            poll=poll or self._poll,
            budget=self._budget,
            breaker=self._breaker,
        )

    async def _pay(
        self, call: Call, *, customer: str, user_id: str, card_token: str
    ) -> InvoicePayment:
        """Claim the customer, drive the pay call, and tell the guard how it ended."""
        _check_text("customer", customer, max_len=255)
        _check_text("user_id", user_id, max_len=255)
        if not isinstance(card_token, str) or not card_token:
            raise ConfigurationError("card_token must be a non-empty string")
        self._ensure_open()
        claim = await self._guard.claim(customer)
        if not claim.granted:
            raise DuplicatePayError(
                f"pay for customer={customer} not sent: {claim.reason}",
                customer=customer,
                claim=claim,
            )
        try:
            request = build_request(
                Operation.PAY,
                [("customer", customer), ("user_id", user_id), ("card_token", card_token)],
                credentials=self._credentials,
                wire=self._wire,
            )
            max_bytes = self._wire.max_response_bytes

            def decode(raw: RawResponse) -> InvoicePayment:
                return _decode.decode_payment(raw, max_bytes=max_bytes, customer=customer)

            return cast("InvoicePayment", await self._drive(call, request, decode))
        finally:
            await self._guard.finish(customer, state=call.guard_state)

    # -- batches ---------------------------------------------------------------------------

    async def pay_one(self, request: PayRequest, *, wait: bool = True) -> PayOutcome:
        """
        Pay one `PayRequest` and describe the result as a `PayOutcome` instead of raising.

        Args:
            request: The invoice to pay.
            wait: As for `pay_invoice`.

        Returns:
            The outcome; `FreedomPayError`s become `outcome.error`.
        """
        start = self._clock.monotonic()
        call = self._pay_call(request.customer, wait=wait, retry=None, poll=None)
        payment: InvoicePayment | None = None
        error: FreedomPayError | None = None
        try:
            payment = await self._pay(
                call,
                customer=request.customer,
                user_id=request.user_id,
                card_token=request.card_token,
            )
        except FreedomPayError as exc:
            error = exc
            if isinstance(exc, PaymentPending):
                payment = exc.payment
        return PayOutcome(
            request=request,
            payment=payment,
            error=error,
            attempts=call.attempts,
            elapsed=self._clock.monotonic() - start,
        )

    def pay_invoices(
        self,
        requests: Iterable[PayRequest] | AsyncIterable[PayRequest],
        *,
        concurrency: int | None = None,
        wait: bool = True,
        on_progress: Callable[[BatchProgress], object] | None = None,
        outage_tolerance: float = 300.0,
    ) -> AsyncGenerator[PayOutcome, None]:
        """
        Pay many invoices concurrently, yielding each `PayOutcome` as it finishes.

        The input is read lazily by at most `concurrency` workers, so a generator over millions
        of rows runs in flat memory. Every request yields exactly one outcome; one failure never
        stops the others. Close the iterator early (`contextlib.aclosing`) to stop the batch.

        Unlike `pay_invoice`, a batch waits for a gateway outage instead of failing fast: a pay
        that provably was never sent (the breaker open, the retry budget empty, a connect error,
        no gate slot, HTTP 429/503) is held, no new pay starts, and one probe at a time (when the
        breaker allows one) tests the gateway; when a probe is answered the batch resumes. A pay
        that may have been written is never held: it is reconciled as in `pay_invoice`.

        Args:
            requests: `PayRequest`s, as a sync or async iterable.
            concurrency: Workers (default and maximum: the client's `max_concurrency`).
            wait: As for `pay_invoice`.
            on_progress: Called with a `BatchProgress` before each outcome is yielded, and when
                the batch starts or stops waiting for the gateway (`waiting_for_gateway`,
                `held`).
            outage_tolerance: Seconds the batch holds its pays while the gateway is down; after
                that, what is held ends as `error` (not sent, safe to resubmit) and further pays
                fail fast until one is answered again. 0 disables holding.

        Returns:
            An async iterator of outcomes, in completion order.

        Raises:
            ConfigurationError: `concurrency` is not a positive integer, or `outage_tolerance`
                not a finite number of seconds >= 0.
        """
        from freedompay_async._batch import run_batch  # noqa: PLC0415 - keeps import light
        from freedompay_async._hold import GatewayHold  # noqa: PLC0415 - keeps import light

        if concurrency is None:
            concurrency = self.max_concurrency
        if not is_integer(concurrency) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if not is_number(outage_tolerance) or not 0 <= outage_tolerance < math.inf:
            raise ConfigurationError(
                f"outage_tolerance must be a finite number of seconds >= 0, "
                f"got {outage_tolerance!r}"
            )
        workers = min(concurrency, self.max_concurrency)
        hold = GatewayHold(
            tolerance=float(outage_tolerance),
            monotonic=self._clock.monotonic,
            sleep=self._clock.sleep,
            breaker=self._breaker,
            rng=self._rng,
        )

        async def pay_one(request: PayRequest) -> PayOutcome:
            return await self.pay_one(request, wait=wait)

        return run_batch(
            requests,
            pay_one=pay_one,
            concurrency=workers,
            on_progress=on_progress,
            monotonic=self._clock.monotonic,
            hold=hold,
        )


def _check_text(name: str, value: object, *, max_len: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string")
    if len(value) > max_len:
        raise ConfigurationError(f"{name} must be at most {max_len} characters")


def _closed(operation: str) -> ClientClosedError:
    if operation == "FreedomPayClient is closed":
        return ClientClosedError(operation)
    return ClientClosedError(f"{operation}: the client was closed; not sent", operation=operation)
