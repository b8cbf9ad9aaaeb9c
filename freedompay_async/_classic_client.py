"""
The classic Merchant API on `FreedomPayClient`: saved cards, status, refund, cancel, capture.

`ClassicOperations` is a base class of `FreedomPayClient`. It builds each request once
(`_classic.build_classic_request`, a fresh `pg_salt`), creates a pure `_classic_call.ClassicCall`
and performs its steps, exactly as the invoice calls are driven. A write (refund, cancel,
capture) is claimed first (one refund per payment and amount per client), checked against a
status read taken before it is sent, and settled by status reads after any doubt.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING, cast

from freedompay_async._call import Act, settle_policy_of
from freedompay_async._classic import (
    ClassicOptions,
    ClassicRequest,
    build_classic_request,
    decode_classic_reply,
)
from freedompay_async._classic_call import ClassicCall
from freedompay_async._classic_errors import (
    DuplicateWriteError,
    ExcessRefundError,
    WriteClaim,
    WriteRefusedError,
)
from freedompay_async._classic_models import (
    CancelResult,
    CaptureResult,
    CardAddition,
    ClassicOperation,
    PaymentState,
    PaymentStatus,
    RefundResult,
    RemovedCard,
    SavedCard,
)
from freedompay_async._classic_settle import refundable_amount
from freedompay_async._events import emit, fmt_context
from freedompay_async._exceptions import ClientClosedError, ConnectionLost, FreedomPayError
from freedompay_async._protocol import OutgoingRequest

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Mapping
    from decimal import Decimal

    from freedompay_async._call import Call
    from freedompay_async._config import Clock, RetryPolicy, _Credentials
    from freedompay_async._guard import RateLimiter
    from freedompay_async._protocol import RawResponse
    from freedompay_async._retry import CircuitBreaker, RetryBudget, RetryEvent
    from freedompay_async._transport import Transport

__all__ = ["ClassicOperations", "WriteGuard"]

logger = logging.getLogger("freedompay_async")

_REVERSED = frozenset({PaymentState.REVOKED, PaymentState.CANCELLED})


class WriteGuard:
    """
    One client's memory of its refunds, cancels and captures: none is sent twice.

    A refund is keyed by its payment and amount, a cancel or capture by its payment. A claim in
    flight or ended (any way but `error`, which means nothing moved) refuses the same write.

    Args:
        remember: How many ended writes to remember.
    """

    def __init__(self, *, remember: int = 100_000) -> None:
        self._remember = remember
        self._claims: dict[tuple[str, int, Decimal | None], WriteClaim] = {}

    def claim(self, operation: str, payment_id: int, amount: Decimal | None) -> WriteClaim | None:
        """
        Claim one write; return the claim that refuses it, or None when granted.

        Args:
            operation: `refund`, `cancel` or `capture`.
            payment_id: The payment.
            amount: The refund's amount (None: full); ignored for cancel and capture.

        Returns:
            None when the write may be sent, else the claim already held.
        """
        key = (operation, payment_id, amount if operation == "refund" else None)
        held = self._claims.get(key)
        if held is not None:
            return held
        self._claims[key] = WriteClaim(
            operation=operation, payment_id=payment_id, amount=amount, state="in_flight"
        )
        return None

    def finish(self, operation: str, payment_id: int, amount: Decimal | None, state: str) -> None:
        """
        Record how a claimed write ended; `error` (nothing moved) releases it.

        Args:
            operation: As claimed.
            payment_id: As claimed.
            amount: As claimed.
            state: `done`, `ambiguous` or `error`.
        """
        key = (operation, payment_id, amount if operation == "refund" else None)
        if state == "error":
            self._claims.pop(key, None)
            return
        self._claims[key] = WriteClaim(
            operation=operation, payment_id=payment_id, amount=amount, state=state
        )
        while len(self._claims) > self._remember:
            del self._claims[next(iter(self._claims))]


class ClassicOperations:
    """The classic Merchant API calls of `FreedomPayClient` (see the module docstring)."""

    _credentials: _Credentials
    _transport: Transport
    _clock: Clock
    _rng: random.Random
    _retry: RetryPolicy
    _budget: RetryBudget | None
    _breaker: CircuitBreaker | None
    _rate_limiter: RateLimiter | None
    _on_retry: Callable[[RetryEvent], object] | None
    _on_giveup: Callable[[RetryEvent], object] | None
    _classic_options: ClassicOptions
    _write_guard: WriteGuard

    if TYPE_CHECKING:

        def _ensure_open(self) -> None: ...

        @property
        def closed(self) -> bool: ...

    # -- plumbing ----------------------------------------------------------------------------

    def _classic_request(
        self, operation: ClassicOperation, params: Mapping[str, object]
    ) -> ClassicRequest:
        return build_classic_request(
            operation,
            params,
            credentials=self._credentials,
            salt=secrets.token_hex(8),
            options=self._classic_options,
        )

    def _outgoing(self, request: ClassicRequest) -> OutgoingRequest:
        sig = dict(request.fields).get("pg_sig", "")
        token = request.params.get("card_token")
        sensitive = (sig, token) if isinstance(token, str) else (sig,)
        return OutgoingRequest(
            operation=request.operation,
            path=request.path,
            body=request.body,
            headers=request.headers,
            context=request.context,
            sensitive=sensitive,
        )

    def _new_call(
        self,
        request: ClassicRequest,
        *,
        retry: RetryPolicy | None,
        amount: Decimal | None = None,
        before: PaymentStatus | None = None,
    ) -> ClassicCall:
        policy = retry or self._retry
        return ClassicCall(
            request.operation,
            policy=policy,
            now=self._clock.monotonic(),
            rng=self._rng,
            context=request.context,
            amount=amount,
            before=before,
            settle=settle_policy_of(policy),
            budget=self._budget,
            breaker=self._breaker,
        )

    async def _drive_classic(
        self, call: ClassicCall, request: ClassicRequest, status: ClassicRequest | None = None
    ) -> object:
        """Perform the call's steps until it ends; nothing but `ClassicCall` decides anything."""
        clock = self._clock
        try:
            while True:
                if call.notes:
                    emit(cast("Call", call), on_retry=self._on_retry, on_giveup=self._on_giveup)
                act = call.next_step(clock.monotonic())
                if act is Act.SEND or act is Act.ASK_STATUS:
                    req = request if act is Act.SEND or status is None else status
                    result = await self._exchange_classic(call, req)
                    call.record(result, now=clock.monotonic(), wall=clock.time())
                elif act is Act.SLEEP:
                    if self.closed:
                        call.stop(
                            ClientClosedError(
                                f"{call.operation.value}: the client is closed",
                                operation=call.operation.value,
                            )
                        )
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
                    "%s %s with its outcome unknown: read payment_status before sending it "
                    "again %s",
                    call.operation.value,
                    "cancelled"
                    if isinstance(exc, asyncio.CancelledError)
                    else f"interrupted by {type(exc).__name__}",
                    fmt_context(call.context),
                )
            raise
        if call.notes:
            emit(cast("Call", call), on_retry=self._on_retry, on_giveup=self._on_giveup)
        assert call.error is not None  # noqa: S101 - FAIL always carries its error
        raise call.error

    async def _exchange_classic(self, call: ClassicCall, req: ClassicRequest) -> object:
        """One exchange: the decoded model, or the `FreedomPayError` it ended with."""
        try:
            if self._rate_limiter is not None:
                await self._rate_limiter.acquire()
            raw: RawResponse = await self._transport.send(
                self._outgoing(req), remaining=call.remaining
            )
            return decode_classic_reply(
                req, raw, credentials=self._credentials, options=self._classic_options
            )
        except FreedomPayError as exc:
            return exc
        except Exception as exc:
            if not call.moves_money:
                raise
            lost = ConnectionLost(
                f"{call.operation.value}: the reply could not be read "
                f"({type(exc).__name__}); the outcome is unknown",
                operation=call.operation.value,
            )
            lost.__cause__ = exc
            return lost

    async def _classic_read(
        self,
        operation: ClassicOperation,
        params: Mapping[str, object],
        *,
        retry: RetryPolicy | None,
    ) -> object:
        request = self._classic_request(operation, params)
        self._ensure_open()
        return await self._drive_classic(self._new_call(request, retry=retry), request)

    async def _write(
        self,
        operation: ClassicOperation,
        *,
        payment_id: int,
        amount: Decimal | None,
        retry: RetryPolicy | None,
    ) -> object:
        """Claim, read the status, check, send once, settle by status after any doubt."""
        params: dict[str, object] = {"payment_id": payment_id}
        if operation is not ClassicOperation.CANCEL:
            params["amount"] = amount
        request = self._classic_request(operation, params)
        status_request = self._classic_request(
            ClassicOperation.PAYMENT_STATUS, {"payment_id": payment_id}
        )
        pid = cast("int", request.params["payment_id"])
        self._ensure_open()
        held = self._write_guard.claim(operation.value, pid, amount)
        if held is not None:
            raise DuplicateWriteError(
                f"{operation.value} of payment_id={pid} not sent: this client already sent "
                f"it (state={held.state})",
                operation=operation.value,
                payment_id=pid,
                claim=held,
            )
        state = "error"
        try:
            before = cast(
                "PaymentStatus",
                await self._drive_classic(
                    self._new_call(status_request, retry=retry), status_request
                ),
            )
            _check_before(operation, pid, amount, before)
            call = self._new_call(request, retry=retry, amount=amount, before=before)
            try:
                return await self._drive_classic(call, request, status_request)
            finally:
                state = call.guard_state
        finally:
            self._write_guard.finish(operation.value, pid, amount, state)

    # -- saved cards -------------------------------------------------------------------------

    async def save_card(
        self,
        *,
        user_id: str,
        back_link: str,
        post_link: str | None = None,
        order_id: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> CardAddition:
        """
        Start saving a card: the user enters it at the returned `redirect_url`.

        Calls `cardstorage/add2` (or `add`, `ClassicOptions.card_add_script`). Nothing is
        charged, so a lost reply is simply asked again.

        Args:
            user_id: The card owner's id in the merchant's system.
            back_link: Where the card page sends the user afterwards.
            post_link: Where the gateway posts the result, if anywhere.
            order_id: The merchant's id for this request, if any.
            retry: This call's retry policy instead of the client's.

        Returns:
            The `CardAddition`: `redirect_url`, `payment_id`, `order_id`.

        Raises:
            ConfigurationError: An argument is invalid (the message names it); nothing was sent.
            GatewayError: The gateway refused the request.
            TransportError: The request could not be sent.
            ResponseError: The reply could not be used.
        """
        params = {
            "user_id": user_id,
            "back_link": back_link,
            "post_link": post_link,
            "order_id": order_id,
        }
        return cast(
            "CardAddition", await self._classic_read(ClassicOperation.CARD_ADD, params, retry=retry)
        )

    async def list_cards(
        self, *, user_id: str, extended: bool = False, retry: RetryPolicy | None = None
    ) -> tuple[SavedCard, ...]:
        """
        List a user's saved cards.

        Args:
            user_id: The card owner's id.
            extended: Also ask for bank, brand and expiry (`pg_extend_data=1`).
            retry: This call's retry policy instead of the client's.

        Returns:
            The cards (`SavedCard`, tokens masked in `repr`), possibly none.

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            GatewayError: The gateway refused the request.
            TransportError: The request could not be sent.
            ResponseError: The reply could not be used.
        """
        params = {"user_id": user_id, "extended": extended}
        return cast(
            "tuple[SavedCard, ...]",
            await self._classic_read(ClassicOperation.CARD_LIST, params, retry=retry),
        )

    async def remove_card(
        self, *, user_id: str, card_token: str, retry: RetryPolicy | None = None
    ) -> RemovedCard:
        """
        Remove one of a user's saved cards.

        Args:
            user_id: The card owner's id.
            card_token: The card's token (never logged).
            retry: This call's retry policy instead of the client's.

        Returns:
            The `RemovedCard`: masked PAN, `deleted_at`, status.

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            GatewayError: The gateway refused (an unknown card, for one).
            TransportError: The request could not be sent.
            ResponseError: The reply could not be used.
        """
        params = {"user_id": user_id, "card_token": card_token}
        return cast(
            "RemovedCard",
            await self._classic_read(ClassicOperation.CARD_REMOVE, params, retry=retry),
        )

    # -- a payment's further life --------------------------------------------------------------

    async def payment_status(
        self,
        *,
        payment_id: int | None = None,
        order_id: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> PaymentStatus:
        """
        Read a payment's status (`get_status3`), with its refunds and reversals.

        Args:
            payment_id: The payment's id (a paid invoice's `invoice_id`); or
            order_id: the merchant's order id. Exactly one of the two.
            retry: This call's retry policy instead of the client's.

        Returns:
            The `PaymentStatus`.

        Raises:
            ConfigurationError: Neither or both ids given, or one is invalid; nothing was sent.
            GatewayError: The gateway refused (an unknown payment, for one).
            TransportError: The request could not be sent.
            ResponseError: The reply could not be used.
        """
        params = {"payment_id": payment_id, "order_id": order_id}
        return cast(
            "PaymentStatus",
            await self._classic_read(ClassicOperation.PAYMENT_STATUS, params, retry=retry),
        )

    async def refund_payment(
        self, *, payment_id: int, amount: Decimal | None = None, retry: RetryPolicy | None = None
    ) -> RefundResult:
        """
        Refund a payment, fully or in part; at most once, whatever fails on the way.

        The payment's status is read first: a refund of more than is left is refused before
        anything is sent. After an ambiguous failure (a timeout after the write, a broken
        connection, HTTP 5xx, an unreadable reply, error 1000) the status is read again and
        compared with the first read; the refund is never sent twice on a guess.

        Args:
            payment_id: The payment to refund.
            amount: The amount (`Decimal`, at most two decimals); None refunds what is left.
            retry: This call's retry policy instead of the client's.

        Returns:
            The `RefundResult` (the refund's own payment id when known).

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            DuplicateWriteError: This client already refunded this amount of this payment (or is
                doing so); nothing was sent.
            ExcessRefundError: The amount is more than is left to refund; nothing was sent.
            WriteRefusedError: A status read shows the refund failed.
            GatewayError: The gateway refused the refund; nothing was refunded.
            AmbiguousWriteError: The refund may have landed and no status read could tell;
                read `payment_status` before refunding again.
            TransportError: The refund was never sent.
            ResponseError: A reply could not be used.
        """
        return cast(
            "RefundResult",
            await self._write(
                ClassicOperation.REFUND, payment_id=payment_id, amount=amount, retry=retry
            ),
        )

    async def cancel_payment(
        self, *, payment_id: int, retry: RetryPolicy | None = None
    ) -> CancelResult:
        """
        Cancel a held (two-step, not yet captured) payment; at most once.

        Args:
            payment_id: The held payment.
            retry: This call's retry policy instead of the client's.

        Returns:
            The `CancelResult`.

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            DuplicateWriteError: This client already cancelled this payment; nothing was sent.
            WriteRefusedError: The payment is captured or cancelled already; nothing was sent.
            GatewayError: The gateway refused the cancel.
            AmbiguousWriteError: The cancel may have landed and no status read could tell.
            TransportError: The cancel was never sent.
            ResponseError: A reply could not be used.
        """
        return cast(
            "CancelResult",
            await self._write(
                ClassicOperation.CANCEL, payment_id=payment_id, amount=None, retry=retry
            ),
        )

    async def capture_payment(
        self, *, payment_id: int, amount: Decimal | None = None, retry: RetryPolicy | None = None
    ) -> CaptureResult:
        """
        Capture (clear) a held payment, fully or in part; at most once.

        Args:
            payment_id: The held payment.
            amount: The amount to capture (at most the held amount); None captures all of it.
            retry: This call's retry policy instead of the client's.

        Returns:
            The `CaptureResult`.

        Raises:
            ConfigurationError: An argument is invalid; nothing was sent.
            DuplicateWriteError: This client already captured this payment; nothing was sent.
            WriteRefusedError: The payment is captured or cancelled already; nothing was sent.
            GatewayError: The gateway refused the capture.
            AmbiguousWriteError: The capture may have landed and no status read could tell.
            TransportError: The capture was never sent.
            ResponseError: A reply could not be used.
        """
        return cast(
            "CaptureResult",
            await self._write(
                ClassicOperation.CAPTURE, payment_id=payment_id, amount=amount, retry=retry
            ),
        )


def _refuse(operation: ClassicOperation, payment_id: int, reason: str) -> WriteRefusedError:
    return WriteRefusedError(
        f"{operation.value} of payment_id={payment_id} not sent: {reason}",
        operation=operation.value,
        payment_id=payment_id,
        reason=reason,
    )


def _check_before(
    operation: ClassicOperation, payment_id: int, amount: Decimal | None, before: PaymentStatus
) -> None:
    """Refuse a write that the status read before it shows cannot or must not land."""
    reversed_ = before.state in _REVERSED or bool(before.revocations)
    captured = bool(before.captured) or (before.clearing_amount or 0) > 0
    if operation is ClassicOperation.REFUND:
        left = refundable_amount(before)
        if left is not None and (left <= 0 or (amount is not None and amount > left)):
            raise ExcessRefundError(
                f"refund of payment_id={payment_id} not sent: amount "
                f"{'(full)' if amount is None else amount} is more than the {left} left to refund",
                payment_id=payment_id,
                reason="more than is left to refund",
                amount=amount,
                refundable=left,
            )
    elif operation is ClassicOperation.CAPTURE:
        if captured:
            raise _refuse(operation, payment_id, "already captured")
        if amount is not None and before.amount is not None and amount > before.amount:
            raise _refuse(operation, payment_id, f"more than the {before.amount} held")
        if reversed_:
            raise _refuse(operation, payment_id, "the payment is cancelled")
    elif captured:
        raise _refuse(operation, payment_id, "already captured; refund it instead")
    elif reversed_:
        raise _refuse(operation, payment_id, "already cancelled")
