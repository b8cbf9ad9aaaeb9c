"""
`FreedomPayClient`: lifecycle, the attempt loop, reconcile and polling.

This is the only module that sleeps. Each call builds its request once (`_protocol`), then runs
the attempt loop: send through the transport, decode (`_decode`), classify and decide
(`_retry`), and act on the decision — return, raise, sleep and resend, reconcile a pay whose
outcome is unknown, or poll a pending one. One deadline bounds the whole call.

The money rule: once any pay attempt of a call may have reached the gateway, the call ends either
with a settled `InvoicePayment` learned from the gateway, a pending one, `PaymentPending`, or
`AmbiguousPaymentError` — never with a second pay sent blindly.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
import warnings
from importlib import metadata
from typing import TYPE_CHECKING, Protocol, Self, TypeVar

import attrs

from freedompay_async import _decode
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
from freedompay_async._exceptions import (
    AmbiguousPaymentError,
    CircuitOpenError,
    ConfigurationError,
    FreedomPayError,
    HTTPStatusError,
    PaymentPending,
    RequestTimeout,
)
from freedompay_async._models import (
    InvoiceInfo,
    InvoiceInit,
    InvoicePayment,
    InvoiceStatus,
    PayOutcome,
    PayRequest,
    parse_amount,
    payment_state,
)
from freedompay_async._protocol import Field, Operation, OutgoingRequest, RawResponse, build_request
from freedompay_async._retry import (
    BREAKER_FAILURES,
    CircuitBreaker,
    Outcome,
    RetryBudget,
    RetryEvent,
    Verb,
    classify,
    decide,
    poll_delay,
    retry_after_seconds,
)
from freedompay_async._transport import Transport

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
    from decimal import Decimal

    import aiohttp

    from freedompay_async._models import BatchProgress

__all__ = ["DEFAULT_BASE_URL", "FreedomPayClient", "InMemoryPayGuard", "PayGuard", "RateLimiter"]

logger = logging.getLogger("freedompay_async")

DEFAULT_BASE_URL = "https://api.freedompay.kz"

#: A reconcile always gets at least this long for its status reads, even at the deadline's edge:
#: learning where the money stands is worth a few seconds past the call's budget.
RECONCILE_MIN_WINDOW = 5.0

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


class PayGuard(Protocol):
    """
    Refuses a second pay of the same `customer` while the first is in flight or settled.

    The client claims a customer before its first pay attempt and reports the end state after.
    `freedompay_async.contrib` offers a Redis-backed guard shared by many processes.
    """

    async def claim(self, customer: str) -> str | None:
        """
        Claim *customer* for one pay.

        Args:
            customer: The invoice's customer token.

        Returns:
            None when the claim succeeded; otherwise why the pay must not be sent.
        """
        ...

    async def finish(self, customer: str, *, state: str) -> None:
        """
        Report how the claimed pay ended.

        Args:
            customer: The customer token claimed before.
            state: A `PayOutcome.state` value; `error` means nothing is known to be charged and
                the claim is released.
        """
        ...


class InMemoryPayGuard:
    """
    The default duplicate guard: one client, one process.

    Customers in flight are refused; settled ones (any state but `error`) are remembered, the
    most recent `remember` of them, and refused too.

    Args:
        remember: How many settled customers to remember.
    """

    def __init__(self, *, remember: int = 100_000) -> None:
        if isinstance(remember, bool) or not isinstance(remember, int) or remember < 0:
            raise ConfigurationError(f"remember must be an integer >= 0, got {remember!r}")
        self._remember = remember
        self._in_flight: set[str] = set()
        self._settled: dict[str, str] = {}

    async def claim(self, customer: str) -> str | None:
        """
        Claim *customer* for one pay.

        Args:
            customer: The invoice's customer token.

        Returns:
            None when claimed, else the reason for refusing.
        """
        if customer in self._in_flight:
            return "a pay for this customer is already in flight on this client"
        state = self._settled.get(customer)
        if state is not None:
            return f"this customer was already paid by this client (state={state})"
        self._in_flight.add(customer)
        return None

    async def finish(self, customer: str, *, state: str) -> None:
        """
        Release the claim and remember a settled customer.

        Args:
            customer: The customer token.
            state: The outcome's state.
        """
        self._in_flight.discard(customer)
        if state == "error" or self._remember == 0:
            return
        self._settled[customer] = state
        if len(self._settled) > self._remember:
            del self._settled[next(iter(self._settled))]


class RateLimiter(Protocol):
    """A limit on request starts that the client consults before each send."""

    async def acquire(self) -> None:
        """Wait until one more request may start."""
        ...


@attrs.define
class _Call:
    """Per-call state: how many requests were sent, and whether a pay may have landed."""

    operation: Operation
    context: dict[str, str]
    attempts: int = 0
    landed: bool = False


class FreedomPayClient:
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
    ) -> None:
        if isinstance(merchant_id, bool) or not isinstance(merchant_id, str | int):
            raise ConfigurationError("merchant_id must be a string or an integer")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
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
            raise RuntimeError("FreedomPayClient is closed")
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

    # -- the attempt loop ------------------------------------------------------------------

    def _event(
        self, call: _Call, *, delay: float, outcome: Outcome, action: str, cause: FreedomPayError
    ) -> None:
        hook = self._on_giveup if action == "giveup" else self._on_retry
        log = logger.warning if action in ("giveup", "reconcile") else logger.info
        log(
            "%s %s after attempt %d (%s, %s); delay %.3fs %s",
            call.operation.value,
            action,
            call.attempts,
            outcome.value,
            type(cause).__name__,
            delay,
            _fmt_context(call.context),
        )
        if hook is None:
            return
        event = RetryEvent(
            operation=call.operation.value,
            attempt=call.attempts,
            delay=delay,
            outcome=outcome.value,
            action=action,
            cause=cause,
            context=dict(call.context),
        )
        try:
            hook(event)
        except Exception:
            logger.exception("the %s hook raised; the call goes on", action)

    async def _attempts(
        self,
        request: OutgoingRequest,
        decode: Callable[[RawResponse], _T],
        *,
        call: _Call,
        policy: RetryPolicy,
        deadline: float,
        guarded: bool = True,
    ) -> tuple[Verb, _T | FreedomPayError, float]:
        """
        Send until the decision is not a resend.

        Returns:
            (RETURN, model, 0), (POLL, payment, 0) or (RECONCILE, error, grace).

        Raises:
            FreedomPayError: The decision was to raise (the attempt's own error, attempts set).
        """
        moves_money = request.operation.moves_money
        clock = self._clock
        breaker = self._breaker if guarded else None
        budget = self._budget if guarded else None
        send = self._transport.send
        debug = logger.isEnabledFor(logging.DEBUG)
        while True:
            if breaker is not None and not breaker.allow(clock.monotonic()):
                error: FreedomPayError = CircuitOpenError(
                    f"{call.operation.value}: circuit breaker open after repeated failures; "
                    "not sent",
                    operation=call.operation.value,
                )
                error.attempts = call.attempts
                self._event(call, delay=0.0, outcome=Outcome.LOCAL, action="giveup", cause=error)
                raise error
            # Counted before the rate limiter: a limiter that times out still spends an attempt.
            call.attempts += 1
            if debug:
                logger.debug(
                    "%s attempt %d %s",
                    call.operation.value,
                    call.attempts,
                    _fmt_context(call.context),
                )
            result: _T | FreedomPayError
            try:
                if self._rate_limiter is not None:
                    await self._rate_limiter.acquire()
                raw = await send(request, remaining=deadline - clock.monotonic())
                result = decode(raw)
            except FreedomPayError as exc:
                result = exc
            except asyncio.CancelledError:
                if moves_money:
                    # The request may have been written: the guard must keep it claimed.
                    call.landed = True
                    logger.warning(
                        "pay cancelled while in flight: outcome unknown, check invoice_status %s",
                        _fmt_context(call.context),
                    )
                raise
            outcome = classify(result, moves_money=moves_money)
            failed = outcome in BREAKER_FAILURES
            if breaker is not None:
                breaker.record(failure=failed, now=clock.monotonic())
            if budget is not None and not failed:
                budget.refund()
            if not isinstance(result, FreedomPayError):
                return (Verb.POLL if outcome is Outcome.PENDING else Verb.RETURN), result, 0.0
            timeout = isinstance(result, RequestTimeout)
            hint = None
            if isinstance(result, HTTPStatusError):
                hint = retry_after_seconds(result.retry_after, now_wall=clock.time())
            decision = decide(
                outcome,
                moves_money=moves_money,
                attempt=call.attempts,
                policy=policy,
                now=clock.monotonic(),
                deadline=deadline,
                rng=self._rng,
                retry_after=hint,
                budget_ok=budget is None or budget.can_spend(timeout=timeout),
            )
            if decision.verb is Verb.RECONCILE:
                self._event(
                    call, delay=decision.delay, outcome=outcome, action="reconcile", cause=result
                )
                return Verb.RECONCILE, result, decision.delay
            if decision.verb is Verb.RAISE:
                result.attempts = call.attempts
                self._event(call, delay=0.0, outcome=outcome, action="giveup", cause=result)
                raise result
            if budget is not None:
                budget.spend(timeout=timeout)
            self._event(call, delay=decision.delay, outcome=outcome, action="resend", cause=result)
            if decision.delay > 0:
                await clock.sleep(decision.delay)

    async def _read(
        self,
        operation: Operation,
        fields: list[Field],
        decode: Callable[[RawResponse], _T],
        *,
        policy: RetryPolicy,
        call: _Call | None = None,
        deadline: float | None = None,
        guarded: bool = True,
    ) -> _T:
        """Run a call that moves no money (init, status, info) under the resend rules."""
        request = build_request(operation, fields, credentials=self._credentials, wire=self._wire)
        own = _Call(operation=operation, context=dict(request.context))
        if deadline is None:
            deadline = self._clock.monotonic() + policy.deadline
        try:
            _, result, _ = await self._attempts(
                request, decode, call=own, policy=policy, deadline=deadline, guarded=guarded
            )
        finally:
            if call is not None:
                call.attempts += own.attempts
        return result  # type: ignore[return-value]  # only a model is ever returned for reads

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
            if isinstance(value, bool) or not isinstance(value, int):
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
            ConfigurationError: An argument is invalid, or this customer is already being paid
                (or was paid) by this client; nothing was sent.
            GatewayError: The gateway refused the pay (`status=error`); nothing was charged.
            PaymentPending: Polling timed out; `.payment` is the last status seen.
            AmbiguousPaymentError: The pay may have charged and its status could not settle it;
                check `invoice_status(customer=...)` before paying again.
            TransportError: The pay was never sent (connect failures, the breaker is open).
            ResponseError: A reply could not be used (a refused HTTP status).
        """
        payment, _ = await self._pay_guarded(
            customer=customer,
            user_id=user_id,
            card_token=card_token,
            wait=wait,
            retry=retry,
            poll=poll,
        )
        return payment

    async def _pay_guarded(
        self,
        *,
        customer: str,
        user_id: str,
        card_token: str,
        wait: bool,
        retry: RetryPolicy | None,
        poll: PollPolicy | None,
        call: _Call | None = None,
    ) -> tuple[InvoicePayment, _Call]:
        _check_text("customer", customer, max_len=255)
        _check_text("user_id", user_id, max_len=255)
        if not isinstance(card_token, str) or not card_token:
            raise ConfigurationError("card_token must be a non-empty string")
        self._ensure_open()
        if call is None:
            call = _Call(operation=Operation.PAY, context={"customer": customer})
        refusal = await self._guard.claim(customer)
        if refusal is not None:
            raise ConfigurationError(f"pay for customer={customer} not sent: {refusal}")
        state = "error"
        try:
            payment = await self._pay(
                customer=customer,
                user_id=user_id,
                card_token=card_token,
                wait=wait,
                policy=retry or self._retry,
                poll=poll or self._poll,
                call=call,
            )
            state = payment_state(payment)
        except PaymentPending:
            state = "pending"
            raise
        except AmbiguousPaymentError:
            state = "ambiguous"
            raise
        except BaseException:
            state = "ambiguous" if call.landed else "error"
            raise
        finally:
            await self._guard.finish(customer, state=state)
        return payment, call

    async def _pay(
        self,
        *,
        customer: str,
        user_id: str,
        card_token: str,
        wait: bool,
        policy: RetryPolicy,
        poll: PollPolicy,
        call: _Call,
    ) -> InvoicePayment:
        request = build_request(
            Operation.PAY,
            [("customer", customer), ("user_id", user_id), ("card_token", card_token)],
            credentials=self._credentials,
            wire=self._wire,
        )
        max_bytes = self._wire.max_response_bytes

        def decode(raw: RawResponse) -> InvoicePayment:
            return _decode.decode_payment(raw, max_bytes=max_bytes, customer=customer)

        deadline = self._clock.monotonic() + policy.deadline
        resent_if_new = False
        while True:
            try:
                verb, result, delay = await self._attempts(
                    request, decode, call=call, policy=policy, deadline=deadline
                )
            except FreedomPayError as exc:
                if call.landed:
                    raise self._ambiguous(call, customer, "a later pay attempt failed") from exc
                raise
            if isinstance(result, InvoicePayment):
                if verb is Verb.RETURN or not wait:
                    return result
                return await self._poll_until_terminal(customer, result, poll, policy, call)
            # RECONCILE: the pay may have landed; learn where the money stands.
            call.landed = True
            if delay > 0:
                await self._clock.sleep(delay)
            status = await self._reconcile(customer, policy, deadline, call, cause=result)
            if status.invoice_status is InvoiceStatus.NEW:
                if policy.resend_pay_if_new and not resent_if_new:
                    resent_if_new = True
                    logger.warning(
                        "pay status still new after an ambiguous attempt; resending once as "
                        "RetryPolicy.resend_pay_if_new allows %s",
                        _fmt_context(call.context),
                    )
                    continue
                raise self._ambiguous(
                    call, customer, "its status still reads new, so it may land later"
                ) from result
            if status.is_terminal or not wait:
                return status
            return await self._poll_until_terminal(customer, status, poll, policy, call)

    def _ambiguous(self, call: _Call, customer: str, why: str) -> AmbiguousPaymentError:
        error = AmbiguousPaymentError(
            f"pay for customer={customer} may have been charged ({why}); check "
            f"invoice_status(customer={customer!r}) before paying again",
            attempts=call.attempts,
            customer=customer,
        )
        self._event(call, delay=0.0, outcome=Outcome.AMBIGUOUS, action="giveup", cause=error)
        return error

    async def _status_read(
        self, customer: str, *, policy: RetryPolicy, call: _Call, deadline: float
    ) -> InvoicePayment:
        """Read the status by customer for reconcile or polling (past the budget and breaker)."""
        max_bytes = self._wire.max_response_bytes

        def decode(raw: RawResponse) -> InvoicePayment:
            return _decode.decode_payment(
                raw, operation=Operation.STATUS, max_bytes=max_bytes, customer=customer
            )

        return await self._read(
            Operation.STATUS,
            [("merchant_id", self._credentials.merchant_id), ("customer", customer)],
            decode,
            policy=policy,
            call=call,
            deadline=deadline,
            guarded=False,
        )

    async def _reconcile(
        self,
        customer: str,
        policy: RetryPolicy,
        deadline: float,
        call: _Call,
        *,
        cause: FreedomPayError,
    ) -> InvoicePayment:
        """Ask the status by customer after an ambiguous pay; failures become ambiguous."""
        window = max(deadline, self._clock.monotonic() + RECONCILE_MIN_WINDOW)
        try:
            return await self._status_read(customer, policy=policy, call=call, deadline=window)
        except FreedomPayError as exc:
            exc.__context__ = cause
            raise self._ambiguous(call, customer, "its status could not be read") from exc

    async def _poll_until_terminal(
        self,
        customer: str,
        payment: InvoicePayment,
        poll: PollPolicy,
        policy: RetryPolicy,
        call: _Call,
    ) -> InvoicePayment:
        """Poll the status by customer until terminal or `poll.timeout`; never pays again."""
        clock = self._clock
        end = clock.monotonic() + poll.timeout
        last = payment
        number = 0
        while True:
            delay = poll_delay(number, poll, self._rng)
            number += 1
            now = clock.monotonic()
            if now + delay > end:
                pending = PaymentPending(
                    f"pay for customer={customer} still {last.invoice_status.value} after "
                    f"polling {poll.timeout:g}s; poll invoice_status(customer={customer!r}) "
                    "later or wait for the result_url notification",
                    operation="pay",
                    attempts=call.attempts,
                    payment=last,
                )
                self._event(
                    call, delay=0.0, outcome=Outcome.PENDING, action="giveup", cause=pending
                )
                raise pending
            await clock.sleep(delay)
            read_deadline = clock.monotonic() + min(policy.deadline, max(end - now, 1.0))
            try:
                status = await self._status_read(
                    customer, policy=policy, call=call, deadline=read_deadline
                )
            except FreedomPayError as exc:
                # A missed poll is not an outcome: the next one may succeed before the timeout.
                logger.warning(
                    "poll read failed (%s %s) %s",
                    type(exc).__name__,
                    getattr(exc, "error_code", None) or "",
                    _fmt_context(call.context),
                )
                continue
            last = status
            if status.is_terminal:
                return status

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
        call = _Call(operation=Operation.PAY, context={"customer": request.customer})
        try:
            payment, _ = await self._pay_guarded(
                customer=request.customer,
                user_id=request.user_id,
                card_token=request.card_token,
                wait=wait,
                retry=None,
                poll=None,
                call=call,
            )
        except PaymentPending as exc:
            return PayOutcome(
                request=request,
                payment=exc.payment,
                error=exc,
                attempts=call.attempts,
                elapsed=self._clock.monotonic() - start,
            )
        except FreedomPayError as exc:
            return PayOutcome(
                request=request,
                error=exc,
                attempts=call.attempts,
                elapsed=self._clock.monotonic() - start,
            )
        return PayOutcome(
            request=request,
            payment=payment,
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
    ) -> AsyncGenerator[PayOutcome, None]:
        """
        Pay many invoices concurrently, yielding each `PayOutcome` as it finishes.

        The input is read lazily by at most `concurrency` workers, so a generator over millions
        of rows runs in flat memory. Every request yields exactly one outcome; one failure never
        stops the others. Close the iterator early (`contextlib.aclosing`) to stop the batch.

        Args:
            requests: `PayRequest`s, as a sync or async iterable.
            concurrency: Workers (default and maximum: the client's `max_concurrency`).
            wait: As for `pay_invoice`.
            on_progress: Called with a `BatchProgress` before each outcome is yielded.

        Returns:
            An async iterator of outcomes, in completion order.

        Raises:
            ConfigurationError: `concurrency` is not a positive integer.
        """
        from freedompay_async._batch import run_batch  # noqa: PLC0415 - keeps import light

        if concurrency is None:
            concurrency = self.max_concurrency
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        workers = min(concurrency, self.max_concurrency)

        async def pay_one(request: PayRequest) -> PayOutcome:
            return await self.pay_one(request, wait=wait)

        return run_batch(
            requests,
            pay_one=pay_one,
            concurrency=workers,
            on_progress=on_progress,
            monotonic=self._clock.monotonic,
        )


def _check_text(name: str, value: object, *, max_len: int) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string")
    if len(value) > max_len:
        raise ConfigurationError(f"{name} must be at most {max_len} characters")


def _fmt_context(context: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in context.items())
