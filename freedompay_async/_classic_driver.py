"""
The classic Merchant API's driver: build each request once, claim writes, perform a call's steps.

`ClassicDriver` is a base class of `FreedomPayClient` (through `ClassicOperations`). It builds
each request once (`_classic.build_classic_request`, a fresh `pg_salt`), creates a pure
`_classic_call.ClassicCall` and performs its steps, exactly as the invoice calls are driven. A
write (refund, cancel, capture) is claimed first in `WriteGuard` (one refund per payment and
amount per client), checked against a status read taken before it is sent
(`_classic_outcome.check_before`), and settled by status reads after any doubt.
"""

from __future__ import annotations

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
from freedompay_async._classic_errors import DuplicateWriteError, WriteClaim
from freedompay_async._classic_models import ClassicOperation, PaymentStatus
from freedompay_async._classic_outcome import check_before
from freedompay_async._driver import abandoned
from freedompay_async._events import emit
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

__all__ = ["ClassicDriver", "WriteGuard"]


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


class ClassicDriver:
    """Builds, claims and drives classic calls; `ClassicOperations` adds the public methods."""

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
            abandoned(
                call,
                exc,
                clock.monotonic(),
                advice="read payment_status before sending it again",
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
            check_before(operation, pid, amount, before)
            call = self._new_call(request, retry=retry, amount=amount, before=before)
            try:
                return await self._drive_classic(call, request, status_request)
            finally:
                state = call.guard_state
        finally:
            self._write_guard.finish(operation.value, pid, amount, state)
