"""
The invoice operations of `FreedomPayClient`: init, status, info, pay, and batches of pays.

`InvoiceOperations` is a base class of `FreedomPayClient`; its methods build the caller's values
into one request (checked and signed once, `_protocol.build_request`) and leave every rule to the
pure `_call.Call`, driven by `_driver.InvoiceDriver._drive`.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, cast

import attrs

from freedompay_async._call import Call
from freedompay_async._decode import decode_info, decode_init
from freedompay_async._driver import InvoiceDriver, payment_decoder, refuse_unless_granted
from freedompay_async._exceptions import ConfigurationError, FreedomPayError, PaymentPending
from freedompay_async._models import (
    InvoiceInfo,
    InvoiceInit,
    InvoicePayment,
    PayOutcome,
    PayRequest,
    parse_amount,
)
from freedompay_async._protocol import Field, Operation, OutgoingRequest
from freedompay_async.facts import is_integer, is_number

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
    from decimal import Decimal

    from freedompay_async._config import PollPolicy, RetryPolicy
    from freedompay_async._driver import Decoder
    from freedompay_async._models import BatchProgress
    from freedompay_async._protocol import RawResponse

__all__ = ["InvoiceOperations"]


class InvoiceOperations(InvoiceDriver):
    """The invoice calls of `FreedomPayClient` (see the module docstring)."""

    _decode_pay: Decoder
    _decode_init: Decoder
    _decode_info: Decoder

    def _make_decoders(self) -> None:
        """Build the client's reply decoders once: no call creates a closure of its own."""
        max_bytes = self._wire.max_response_bytes
        qr_param = self._wire.qr_customer_param

        def init(raw: RawResponse, _customer: str | None) -> InvoiceInit:
            return decode_init(raw, max_bytes=max_bytes, qr_customer_param=qr_param)

        def info(raw: RawResponse, customer: str | None) -> InvoiceInfo:
            return decode_info(
                raw, max_bytes=max_bytes, qr_customer_param=qr_param, customer=customer
            )

        self._decode_pay = payment_decoder(Operation.PAY, max_bytes)
        self._decode_status = payment_decoder(Operation.STATUS, max_bytes)
        self._decode_init = init
        self._decode_info = info

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
                fields.append((name, value))
        init = cast(
            "InvoiceInit", await self._read(Operation.INIT, fields, self._decode_init, policy=retry)
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
        if name == "invoice_id" and not is_integer(value):
            raise ConfigurationError("invoice_id must be an integer")
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
        payment = await self._read(
            Operation.STATUS, fields, self._decode_status, customer=customer, policy=retry
        )
        return cast("InvoicePayment", payment)

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
        info = await self._read(
            Operation.INFO, fields, self._decode_info, customer=customer, policy=retry
        )
        return cast("InvoiceInfo", info)

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
        request = self._pay_request(customer, user_id, card_token)
        self._ensure_open()
        call = self._pay_call(customer, wait=wait, retry=retry, poll=poll)
        refuse_unless_granted(await self._guard.claim(customer), customer)
        try:
            payment = await self._drive(call, request, self._decode_pay, customer)
        finally:
            await self._guard.finish(customer, state=call.guard_state)
        return cast("InvoicePayment", payment)

    def _pay_request(self, customer: str, user_id: str, card_token: str) -> OutgoingRequest:
        """Check and sign a pay; a bad field fails here, before the guard is asked."""
        fields: list[Field] = [
            ("customer", customer),
            ("user_id", user_id),
            ("card_token", card_token),
        ]
        return self._request(Operation.PAY, fields)

    def _pay_call(
        self, customer: str, *, wait: bool, retry: RetryPolicy | None, poll: PollPolicy | None
    ) -> Call:
        # The raw token, not the log-escaped one: errors hand it back to the caller.
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
        customer = request.customer
        call = self._pay_call(customer, wait=wait, retry=None, poll=None)
        payment: InvoicePayment | None = None
        error: FreedomPayError | None = None
        try:
            outgoing = self._pay_request(customer, request.user_id, request.card_token)
            self._ensure_open()
            refuse_unless_granted(await self._guard.claim(customer), customer)
            try:
                paid = await self._drive(call, outgoing, self._decode_pay, customer)
            finally:
                await self._guard.finish(customer, state=call.guard_state)
            payment = cast("InvoicePayment", paid)
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
            concurrency = self._transport.gate.size
        if not is_integer(concurrency) or concurrency < 1:
            raise ConfigurationError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        if not is_number(outage_tolerance) or not 0 <= outage_tolerance < math.inf:
            raise ConfigurationError(
                f"outage_tolerance must be a finite number of seconds >= 0, "
                f"got {outage_tolerance!r}"
            )
        workers = min(concurrency, self._transport.gate.size)
        hold = GatewayHold(
            tolerance=float(outage_tolerance),
            monotonic=self._clock.monotonic,
            sleep=self._clock.sleep,
            breaker=self._breaker,
            rng=self._rng,
        )

        return run_batch(
            requests,
            pay_one=functools.partial(self.pay_one, wait=wait),
            concurrency=workers,
            on_progress=on_progress,
            monotonic=self._clock.monotonic,
            hold=hold,
        )
