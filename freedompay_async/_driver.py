"""
The invoice calls' driver: the one loop that awaits a call's steps, and the client's state.

`InvoiceDriver` is a base class of `FreedomPayClient` (through `InvoiceOperations`). Every rule
about attempts, resends, the deadline, reconcile, polling and what the money is known to be
lives in the pure `_call.Call`; `_drive` asks it for the next step, performs it (send through
the transport and decode, sleep, return, raise) and reports back.

A pay's caller (`pay_invoice`, `pay_one`) asks the duplicate guard first
(`refuse_unless_granted`) and tells it how the pay ended (`Call.guard_state`) in a `finally`,
whatever ends the loop, cancellation included. The loop is written for the thousands of calls a
batch holds in flight: one coroutine per call, no closure, the decoder a function shared by
every call of the client.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import TYPE_CHECKING

from freedompay_async._call import Act, Call
from freedompay_async._decode import decode_payment
from freedompay_async._events import emit, fmt_context
from freedompay_async._exceptions import (
    ClientClosedError,
    ConnectionLost,
    DuplicatePayError,
    FreedomPayError,
)
from freedompay_async._protocol import Field, Operation, OutgoingRequest, build_request

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from freedompay_async._call_core import CallCore
    from freedompay_async._config import Clock, PollPolicy, RetryPolicy, _Credentials, _WireOptions
    from freedompay_async._guard import PayGuard, RateLimiter
    from freedompay_async._models import InvoicePayment, PayClaim
    from freedompay_async._protocol import RawResponse
    from freedompay_async._retry import CircuitBreaker, RetryBudget, RetryEvent
    from freedompay_async._transport import Transport

    #: A reply decoder: the reply and the customer token the call used (None when it has none).
    Decoder = Callable[[RawResponse, str | None], object]

__all__ = [
    "InvoiceDriver",
    "State",
    "SystemClock",
    "closed_error",
    "payment_decoder",
    "refuse_unless_granted",
]

logger = logging.getLogger("freedompay_async")


class State(enum.Enum):
    """A client's lifecycle."""

    UNOPENED = "unopened"
    OPENED = "opened"
    CLOSED = "closed"


class SystemClock:
    """The real clock: `time.monotonic`, `time.time`, `asyncio.sleep`."""

    # The builtins themselves: the driver reads the clock a few times per call.
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        """Sleep for *seconds*."""
        await asyncio.sleep(seconds)


def closed_error(operation: str | None) -> ClientClosedError:
    """The error of a call made on, or cut short by, a closed client."""
    if operation is None:
        return ClientClosedError("FreedomPayClient is closed")
    return ClientClosedError(f"{operation}: the client was closed; not sent", operation=operation)


class InvoiceDriver:
    """Builds and drives the invoice calls; `InvoiceOperations` adds the public methods."""

    _credentials: _Credentials
    _wire: _WireOptions
    _transport: Transport
    _clock: Clock
    _rng: random.Random
    _retry: RetryPolicy
    _poll: PollPolicy
    _budget: RetryBudget | None
    _breaker: CircuitBreaker | None
    _guard: PayGuard
    _rate_limiter: RateLimiter | None
    _on_retry: Callable[[RetryEvent], object] | None
    _on_giveup: Callable[[RetryEvent], object] | None
    _state: State
    _decode_status: Decoder
    _decode_pay: Decoder
    _loop: asyncio.AbstractEventLoop | None

    def _ensure_open(self) -> None:
        if self._state is State.CLOSED:
            raise closed_error(None)
        loop = asyncio.get_running_loop()
        if self._state is State.UNOPENED:
            self._loop = loop
            self._transport.open()
            self._state = State.OPENED
        elif loop is not self._loop:
            raise RuntimeError(
                "FreedomPayClient is bound to the event loop it was opened in; "
                "create one client per event loop"
            )

    def _request(self, operation: Operation, fields: list[Field]) -> OutgoingRequest:
        """Check, build and sign one request (`ConfigurationError` names a bad field)."""
        return build_request(operation, fields, credentials=self._credentials, wire=self._wire)

    def _read_call(
        self, operation: Operation, request: OutgoingRequest, policy: RetryPolicy | None
    ) -> Call:
        """The pure call of one read (init, status, info), its deadline counted from now."""
        return Call(
            operation,
            policy=policy or self._retry,
            now=self._clock.monotonic(),
            rng=self._rng,
            context=request.context,
            budget=self._budget,
            breaker=self._breaker,
        )

    async def _read(
        self,
        operation: Operation,
        fields: list[Field],
        decode: Decoder,
        *,
        customer: str | None = None,
        policy: RetryPolicy | None,
    ) -> object:
        """Run a call that moves no money (init, status, info) under the resend rules."""
        request = self._request(operation, fields)
        self._ensure_open()
        call = self._read_call(operation, request, policy)
        return await self._drive(call, request, decode, customer)

    def _status_request(self, customer: str | None) -> OutgoingRequest:
        """The status-by-customer request a pay call reconciles and polls with."""
        fields: list[Field] = [
            ("merchant_id", self._credentials.merchant_id),
            ("customer", str(customer)),
        ]
        return self._request(Operation.STATUS, fields)

    async def _drive(
        self, call: Call, request: OutgoingRequest, decode: Decoder, customer: str | None
    ) -> object:
        """
        Perform the call's steps until it ends; nothing but `Call` decides anything.

        The exchange is inline: this is the one coroutine a call keeps alive while its request
        is in flight, beside the transport's.
        """
        clock = self._clock
        try:
            while True:
                if call.notes:
                    emit(call, on_retry=self._on_retry, on_giveup=self._on_giveup)
                act = call.next_step(clock.monotonic())
                if act is Act.SEND or act is Act.ASK_STATUS:
                    _log_attempt(call)
                    out, read = (
                        (request, decode)
                        if act is Act.SEND
                        else (self._status_request(customer), self._decode_status)
                    )
                    result: object
                    try:
                        if self._rate_limiter is not None:
                            await self._rate_limiter.acquire()
                        result = read(
                            await self._transport.send(out, remaining=call.remaining), customer
                        )
                    except FreedomPayError as exc:
                        result = exc
                    except Exception as exc:  # noqa: BLE001 - see _unreadable
                        result = _unreadable(call, exc)
                    call.record(result, now=clock.monotonic(), wall=clock.time())
                elif act is Act.SLEEP:
                    await self._sleep(call)
                elif act is Act.DONE:
                    return call.result
                else:
                    break
        except BaseException as exc:
            abandoned(
                call, exc, clock.monotonic(), advice="check invoice_status before paying again"
            )
            raise
        assert call.error is not None  # noqa: S101 - FAIL always carries its error
        raise call.error

    async def _sleep(self, call: Call) -> None:
        if self._state is State.CLOSED:
            call.stop(closed_error(call.operation.value))
            return
        await self._clock.sleep(call.delay)
        call.woke()


def _log_attempt(call: Call) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "%s attempt %d %s", call.operation.value, call.attempts, fmt_context(call.context)
        )


def _unreadable(call: Call, exc: Exception) -> ConnectionLost:
    """
    A reply that failed to read in an unforeseen way: for a pay, its outcome is unknown.

    Raises:
        Exception: *exc* itself, for a call that moves no money.
    """
    if not call.moves_money:
        raise exc
    lost = ConnectionLost(
        f"{call.operation.value}: the reply could not be read "
        f"({type(exc).__name__}); the outcome is unknown",
        operation=call.operation.value,
    )
    lost.__cause__ = exc
    return lost


def refuse_unless_granted(claim: PayClaim, customer: str) -> None:
    """
    Raise when the pay guard refused a pay.

    Args:
        claim: The guard's answer.
        customer: The customer token claimed.

    Raises:
        DuplicatePayError: The claim was not granted; nothing was sent.
    """
    if not claim.granted:
        raise DuplicatePayError(
            f"pay for customer={customer} not sent: {claim.reason}",
            customer=customer,
            claim=claim,
        )


def abandoned(call: CallCore, exc: BaseException, now: float, *, advice: str) -> None:
    """
    Tell the call its driver stopped; a write that may have landed logs "outcome unknown".

    Args:
        call: The call whose driver is leaving (cancelled or interrupted by *exc*).
        exc: What stopped the driver.
        now: The monotonic time.
        advice: What the caller must check before sending the write again.
    """
    if call.abandon(now):
        logger.warning(
            "%s %s with its outcome unknown: %s %s",
            call.operation.value,
            "cancelled"
            if isinstance(exc, asyncio.CancelledError)
            else f"interrupted by {type(exc).__name__}",
            advice,
            fmt_context(call.context),
        )


def payment_decoder(operation: Operation, max_bytes: int) -> Decoder:
    """
    The decoder of one client's pay or status replies.

    Args:
        operation: `Operation.PAY` or `Operation.STATUS`.
        max_bytes: The client's reply size cap.

    Returns:
        A function of the reply and the customer token, made once per client.
    """

    def decode(raw: RawResponse, customer: str | None) -> InvoicePayment:
        return decode_payment(raw, operation=operation, max_bytes=max_bytes, customer=customer)

    return decode
