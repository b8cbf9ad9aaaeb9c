"""Retry, reconcile and polling over loopback: each fault class of wire contract §5 end to end."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from freedompay_async import (
    AmbiguousPaymentError,
    CircuitOpenError,
    ConfigurationError,
    ConnectError,
    DuplicatePayError,
    FreedomPayClient,
    GatewayError,
    HTTPStatusError,
    InvoiceStatus,
    PaymentPending,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)
from freedompay_async._config import _Credentials, _WireOptions
from freedompay_async._protocol import Operation, build_request
from freedompay_async._retry import RetryEvent
from freedompay_async.testing import Fate, Fault, FreedomPayEmulator, VirtualClock

TOKEN = "card-token-5c1e7a19-90ab-4d11-8b0e-77f1"
USER = "user-1"
SLOW_READ = Timeouts(connect=2.0, read=0.1, pool=2.0)


def _ops(emu: FreedomPayEmulator, operation: str) -> int:
    return emu.stats.by_operation[operation]


async def _quiet(emu: FreedomPayEmulator) -> None:
    """Wait (bounded) until the emulator has no request in hand, so late commits are counted."""
    for _ in range(300):
        if emu.stats.in_flight == 0:
            return
        await asyncio.sleep(0.01)
    pytest.fail("the emulator still holds a request after 3 s")


@pytest.fixture
async def rogue() -> AsyncIterator[FreedomPayEmulator]:
    """An adversarial emulator: every pay it receives commits, so a second pay shows as 2."""
    async with FreedomPayEmulator(adversarial=True, seed=7) as emu:
        yield emu


def _client_for(emu: FreedomPayEmulator, **options: Any) -> FreedomPayClient:
    options.setdefault("clock", VirtualClock())
    options.setdefault("rng", random.Random(99))
    options.setdefault("timeouts", Timeouts(connect=2.0, read=2.0, pool=2.0))
    options.setdefault("retry", RetryPolicy(attempts=4, deadline=30.0, reconcile_grace=0.5))
    options.setdefault("poll", PollPolicy(interval=0.5, factor=1.5, max_interval=2.0))
    return FreedomPayClient(emu.merchant_id, emu.secret_key, base_url=emu.base_url, **options)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------------------------------------------
# REFUSED: 429 with Retry-After, 503


async def test_429_retry_after_seconds_is_waited_then_pay_is_resent(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """A pay refused with 429 and `Retry-After: 3` sleeps 3 s, is resent, and charges once."""
    customer = emulator.create_invoice(fate=Fate.paid())
    emulator.inject(Fault.http_status(429, retry_after="3"), operation="pay")
    clock = VirtualClock()
    async with make_client(clock=clock) as client:
        payment = await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert payment.invoice_status is InvoiceStatus.OK
    assert clock.sleeps == [3.0]
    assert _ops(emulator, "pay") == 2
    assert emulator.charges(customer) == 1


@pytest.mark.parametrize("operation", ["pay", "status"])
async def test_429_retry_after_http_date_is_waited(
    emulator: FreedomPayEmulator,
    make_client: Callable[..., FreedomPayClient],
    operation: str,
) -> None:
    """An HTTP-date Retry-After 4 s ahead of the client's wall clock is slept as 4 s."""
    customer = emulator.create_invoice(fate=Fate.paid())
    clock = VirtualClock(time=1_700_000_000.0)
    when = email.utils.formatdate(clock.time() + 4, usegmt=True)
    emulator.inject(Fault.http_status(429, retry_after=when), operation=operation)
    async with make_client(clock=clock) as client:
        if operation == "pay":
            result = await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
        else:
            result = await client.invoice_status(customer=customer)
    assert result.invoice_status is (InvoiceStatus.OK if operation == "pay" else InvoiceStatus.NEW)
    assert clock.sleeps == [4.0]
    assert _ops(emulator, operation) == 2


async def test_retry_after_beyond_the_deadline_gives_up_without_sleeping(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """A 503 asking for 20 s when 10 s are left raises HTTPStatusError at once, nothing charged."""
    customer = emulator.create_invoice(fate=Fate.paid())
    emulator.inject(Fault.http_status(503, retry_after="20"), operation="pay")
    clock = VirtualClock()
    async with make_client(clock=clock, retry=RetryPolicy(deadline=10.0)) as client:
        with pytest.raises(HTTPStatusError) as caught:
            await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert caught.value.status_code == 503
    assert caught.value.attempts == 1
    assert clock.sleeps == []
    assert emulator.charges(customer) == 0


@pytest.mark.parametrize("operation", ["pay", "status", "info", "init"])
async def test_503_is_resent_for_every_operation(
    emulator: FreedomPayEmulator,
    make_client: Callable[..., FreedomPayClient],
    operation: str,
) -> None:
    """HTTP 503 means the gateway refused: every operation, pay included, is resent."""
    customer = emulator.create_invoice(fate=Fate.paid())
    emulator.inject(Fault.http_status(503), operation=operation, times=2)
    async with make_client() as client:
        if operation == "pay":
            await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
        elif operation == "status":
            await client.invoice_status(customer=customer)
        elif operation == "info":
            await client.invoice_info(customer=customer)
        else:
            await client.init_invoice(order_id="o-503", amount=100, description="d")
    assert _ops(emulator, operation) == 3
    assert emulator.charges(customer) == (1 if operation == "pay" else 0)


# ------------------------------------------------------------------------------------------------
# AMBIGUOUS / TRANSIENT on reads: resend


@pytest.mark.parametrize("status", [500, 502, 504])
@pytest.mark.parametrize("operation", ["status", "info"])
async def test_5xx_before_commit_on_a_read_is_resent(
    emulator: FreedomPayEmulator,
    make_client: Callable[..., FreedomPayClient],
    status: int,
    operation: str,
) -> None:
    """A read answered 500/502/504 is simply sent again: it cannot charge anyone."""
    customer = emulator.create_invoice()
    emulator.inject(Fault.http_status(status), operation=operation)
    async with make_client() as client:
        if operation == "status":
            result = await client.invoice_status(customer=customer)
        else:
            result = await client.invoice_info(customer=customer)
    assert result.invoice_status is InvoiceStatus.NEW
    assert _ops(emulator, operation) == 2


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.error_code(1000), id="error-1000"),
        pytest.param(Fault.malformed_xml(), id="malformed-xml"),
        pytest.param(Fault.drop(), id="drop"),
    ],
)
async def test_transient_and_ambiguous_reads_are_resent(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient], fault: Fault
) -> None:
    """Error 1000, a reply that is not XML and a dropped connection on status are resent."""
    customer = emulator.create_invoice()
    emulator.inject(fault, operation="status")
    async with make_client() as client:
        result = await client.invoice_status(customer=customer)
    assert result.invoice_status is InvoiceStatus.NEW
    assert _ops(emulator, "status") == 2


async def test_permanent_gateway_error_on_a_read_is_raised_at_once(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """Any status=error other than 1000 is raised after one request."""
    customer = emulator.create_invoice()
    emulator.inject(Fault.error_code(600), operation="status")
    async with make_client() as client:
        with pytest.raises(GatewayError) as caught:
            await client.invoice_status(customer=customer)
    assert caught.value.error_code == 600
    assert caught.value.attempts == 1
    assert _ops(emulator, "status") == 1


# ------------------------------------------------------------------------------------------------
# AMBIGUOUS / TRANSIENT on pay: reconcile, never resend (adversarial emulator)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(Fault.http_status(500, after_commit=True), id="500"),
        pytest.param(Fault.http_status(502, after_commit=True), id="502"),
        pytest.param(Fault.http_status(504, after_commit=True), id="504"),
        pytest.param(Fault.error_code(1000, after_commit=True), id="error-1000"),
        pytest.param(Fault.drop(after_commit=True), id="commit-then-drop"),
        pytest.param(Fault.malformed_xml(after_commit=True), id="malformed-xml"),
        pytest.param(Fault.doctype(after_commit=True), id="doctype"),
        pytest.param(Fault.oversized(8192, after_commit=True), id="oversized"),
    ],
)
async def test_ambiguous_pay_after_commit_reconciles_to_paid_with_one_charge(
    rogue: FreedomPayEmulator, fault: Fault
) -> None:
    """A pay that committed, then failed on the way back, returns paid via status; one charge."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(fault, operation="pay")
    clock = VirtualClock()
    async with _client_for(rogue, clock=clock, max_response_bytes=4096) as client:
        payment = await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert payment.invoice_status is InvoiceStatus.OK
    assert rogue.charges(customer) == 1
    assert _ops(rogue, "pay") == 1
    assert _ops(rogue, "status") == 1
    assert len(clock.sleeps) == 1  # the reconcile grace, nothing else, jittered up to x1.25
    assert 0.5 <= clock.sleeps[0] <= 0.5 * 1.25


async def test_unlisted_5xx_after_commit_on_pay_is_reconciled(rogue: FreedomPayEmulator) -> None:
    """A 5xx outside the table (520) after a committed pay is ambiguous: reconcile, not raise."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(Fault.http_status(520, after_commit=True), operation="pay")
    async with _client_for(rogue) as client:
        payment = await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert payment.invoice_status is InvoiceStatus.OK
    assert rogue.charges(customer) == 1


async def test_slow_commit_beyond_the_read_timeout_reconciles_to_paid(
    rogue: FreedomPayEmulator,
) -> None:
    """A pay that commits but answers after the (real) read timeout returns paid, charged once."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(Fault.delay(0.5, after_commit=True), operation="pay")
    async with _client_for(rogue, timeouts=SLOW_READ) as client:
        payment = await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    await _quiet(rogue)
    assert payment.invoice_status is InvoiceStatus.OK
    assert _ops(rogue, "pay") == 1
    assert rogue.charges(customer) == 1
    assert rogue.double_charged() == []


async def test_slow_pay_that_lands_after_the_reconcile_is_ambiguous_never_twice(
    rogue: FreedomPayEmulator,
) -> None:
    """A pay that lands only after the status read answered new is ambiguous and never resent."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(Fault.delay(0.5, after_commit=False), operation="pay")
    async with _client_for(rogue, timeouts=SLOW_READ) as client:
        with pytest.raises(AmbiguousPaymentError) as caught:
            await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    await _quiet(rogue)
    assert caught.value.customer == customer
    assert _ops(rogue, "pay") == 1
    assert rogue.charges(customer) == 1  # it did land, later: the error told the truth


async def test_error_1000_before_commit_on_pay_is_ambiguous_not_resent(
    rogue: FreedomPayEmulator,
) -> None:
    """Error 1000 on pay is reconciled; a status still new ends ambiguous, with no second pay."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(Fault.error_code(1000), operation="pay")
    async with _client_for(rogue) as client:
        with pytest.raises(AmbiguousPaymentError) as caught:
            await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert caught.value.customer == customer
    assert isinstance(caught.value.__cause__, GatewayError)
    assert _ops(rogue, "pay") == 1
    assert rogue.charges(customer) == 0


async def test_stale_status_after_ambiguous_pay_raises_ambiguous_with_customer(
    rogue: FreedomPayEmulator,
) -> None:
    """By default a status that still reads new after an ambiguous pay raises, never repays."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(Fault.drop(after_commit=True), operation="pay")
    rogue.inject(Fault.stale_status(reads=1), operation="status", customer=customer)
    async with _client_for(rogue) as client:
        with pytest.raises(AmbiguousPaymentError) as caught:
            await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
        assert caught.value.customer == customer
        assert customer in str(caught.value)
        assert caught.value.attempts == 2  # the pay and the reconciling status read
        status = await client.invoice_status(customer=customer)
    assert status.invoice_status is InvoiceStatus.OK
    assert _ops(rogue, "pay") == 1
    assert rogue.charges(customer) == 1


async def test_opt_in_resends_a_pay_that_did_not_land_once(rogue: FreedomPayEmulator) -> None:
    """With resend_pay_if_new, a dropped pay whose status reads new is sent once more and paid."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(Fault.drop(after_commit=False), operation="pay")
    policy = RetryPolicy(deadline=30.0, reconcile_grace=0.5, resend_pay_if_new=True)
    async with _client_for(rogue, retry=policy) as client:
        payment = await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert payment.invoice_status is InvoiceStatus.OK
    assert _ops(rogue, "pay") == 2
    assert rogue.charges(customer) == 1


async def test_opt_in_resends_at_most_once_per_call(rogue: FreedomPayEmulator) -> None:
    """The opt-in allows one resend: a second unlanded pay ends ambiguous, not a third pay."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(Fault.drop(after_commit=False), operation="pay", times=5)
    policy = RetryPolicy(deadline=30.0, reconcile_grace=0.5, resend_pay_if_new=True)
    async with _client_for(rogue, retry=policy) as client:
        with pytest.raises(AmbiguousPaymentError):
            await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert _ops(rogue, "pay") == 2
    assert rogue.charges(customer) == 0


async def test_opt_in_risk_a_lagging_status_charges_twice(rogue: FreedomPayEmulator) -> None:
    """The opt-in's documented risk: a status that lags a charge makes its resend charge again."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(Fault.drop(after_commit=True), operation="pay")
    rogue.inject(Fault.stale_status(reads=1), operation="status", customer=customer)
    policy = RetryPolicy(deadline=30.0, reconcile_grace=0.5, resend_pay_if_new=True)
    async with _client_for(rogue, retry=policy) as client:
        await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert rogue.charges(customer) == 2


# ------------------------------------------------------------------------------------------------
# PENDING: polling


@pytest.mark.parametrize(
    ("fate", "final"),
    [
        pytest.param(Fate.pending_then_paid(polls=3), InvoiceStatus.OK, id="then-paid"),
        pytest.param(Fate.pending_then_failed(polls=3), InvoiceStatus.FAILED, id="then-failed"),
    ],
)
async def test_pending_pay_is_polled_to_terminal(
    emulator: FreedomPayEmulator,
    make_client: Callable[..., FreedomPayClient],
    fate: Fate,
    final: InvoiceStatus,
) -> None:
    """A pay answered `process` is polled by status on PollPolicy's schedule until terminal."""
    customer = emulator.create_invoice(fate=fate)
    clock = VirtualClock()
    poll = PollPolicy(interval=0.5, factor=1.5, max_interval=1.0, timeout=30.0)
    async with make_client(clock=clock, poll=poll) as client:
        payment = await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert payment.invoice_status is final
    assert _ops(emulator, "pay") == 1
    assert _ops(emulator, "status") == 4
    planned = [0.5, 0.75, 1.0, 1.0]
    assert len(clock.sleeps) == 4
    for slept, plan in zip(clock.sleeps, planned, strict=True):
        assert plan <= slept < 1.25 * plan
    assert emulator.charges(customer) == 1


async def test_poll_timeout_raises_payment_pending_with_last_snapshot(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """Polling that outlasts PollPolicy.timeout raises PaymentPending with the last payment."""
    customer = emulator.create_invoice(fate=Fate.pending_then_paid(polls=10_000))
    clock = VirtualClock()
    poll = PollPolicy(interval=1.0, factor=2.0, max_interval=4.0, timeout=10.0)
    async with make_client(clock=clock, poll=poll) as client:
        with pytest.raises(PaymentPending) as caught:
            await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert caught.value.payment is not None
    assert caught.value.payment.invoice_status is InvoiceStatus.PROCESS
    assert caught.value.payment.customer == customer
    assert clock.slept <= 10.0
    assert _ops(emulator, "pay") == 1
    assert _ops(emulator, "status") == len(clock.sleeps)


async def test_wait_false_returns_the_pending_payment_at_once(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """With wait=False a `process` answer is returned as is: no poll, no sleep."""
    customer = emulator.create_invoice(fate=Fate.pending_then_paid(polls=2))
    clock = VirtualClock()
    async with make_client(clock=clock) as client:
        payment = await client.pay_invoice(
            customer=customer, user_id=USER, card_token=TOKEN, wait=False
        )
    assert payment.invoice_status is InvoiceStatus.PROCESS
    assert clock.sleeps == []
    assert _ops(emulator, "status") == 0


async def test_zero_poll_interval_cannot_hammer_the_gateway(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """A zero poll interval is refused, or polling still ends by its timeout in few reads."""
    try:
        poll = PollPolicy(interval=0.0, max_interval=0.0, timeout=5.0)
    except ConfigurationError:
        return
    customer = emulator.create_invoice(fate=Fate.pending_then_paid(polls=1_000_000))
    async with make_client(poll=poll) as client:
        with pytest.raises(PaymentPending):
            async with asyncio.timeout(2.0):
                await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert _ops(emulator, "status") <= 100


async def test_poll_read_failures_are_retried_and_never_repay(
    rogue: FreedomPayEmulator,
) -> None:
    """Failed poll reads are retried as reads; polling never sends pay again."""
    customer = rogue.create_invoice(fate=Fate.pending_then_paid(polls=1))
    rogue.inject(Fault.http_status(500), operation="status", times=2)
    rogue.inject(Fault.error_code(600), operation="status")
    async with _client_for(rogue) as client:
        payment = await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert payment.invoice_status is InvoiceStatus.OK
    assert _ops(rogue, "pay") == 1
    assert rogue.charges(customer) == 1


# ------------------------------------------------------------------------------------------------
# Cancellation, hooks, logs


async def test_cancelled_pay_propagates_is_not_retried_and_logs_a_warning(
    rogue: FreedomPayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """CancelledError during pay propagates, is never retried, and logs WARNING with customer."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(Fault.delay(2.0, after_commit=False), operation="pay")
    caplog.set_level(logging.WARNING, logger="freedompay_async")
    async with _client_for(rogue) as client:
        task = asyncio.create_task(
            client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
        )
        for _ in range(200):
            if _ops(rogue, "pay") == 1:
                break
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert _ops(rogue, "pay") == 1
    assert _ops(rogue, "status") == 0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cancel" in r.getMessage() and customer in r.getMessage() for r in warnings)


async def test_pay_cancelled_in_flight_keeps_its_customer_claimed(
    rogue: FreedomPayEmulator,
) -> None:
    """A pay cancelled once written may land: the client's guard refuses a second pay of it."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(Fault.delay(0.3, after_commit=False), operation="pay")
    async with _client_for(rogue) as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
        with pytest.raises(DuplicatePayError) as refused:
            await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert refused.value.claim is not None
    assert refused.value.claim.prior_state == "ambiguous"
    await _quiet(rogue)
    assert _ops(rogue, "pay") == 1, "the second pay must be refused by the guard, not sent"
    assert rogue.charges(customer) == 1


async def test_hooks_receive_retry_events(
    rogue: FreedomPayEmulator,
) -> None:
    """on_retry sees the resend and the reconcile, on_giveup the final error, as RetryEvents."""
    retries: list[RetryEvent] = []
    giveups: list[RetryEvent] = []
    paid = rogue.create_invoice(fate=Fate.paid())
    refused = rogue.create_invoice(fate=Fate.gateway_error(600))
    rogue.inject(Fault.http_status(503), operation="pay", customer=paid)
    rogue.inject(Fault.http_status(500, after_commit=True), operation="pay", customer=paid)
    async with _client_for(rogue, on_retry=retries.append, on_giveup=giveups.append) as client:
        await client.pay_invoice(customer=paid, user_id=USER, card_token=TOKEN)
        with pytest.raises(GatewayError):
            await client.pay_invoice(customer=refused, user_id=USER, card_token=TOKEN)
    assert [(e.action, e.outcome, e.attempt) for e in retries] == [
        ("resend", "refused", 1),
        ("reconcile", "ambiguous", 2),
    ]
    resend, reconcile = retries
    assert resend.operation == "pay"
    assert isinstance(resend.cause, HTTPStatusError)
    assert resend.cause.status_code == 503
    assert 0.0 <= resend.delay <= 0.5
    assert 0.5 <= reconcile.delay <= 0.5 * 1.25
    assert reconcile.context == {"customer": paid}
    assert len(giveups) == 1
    (giveup,) = giveups
    assert (giveup.action, giveup.outcome, giveup.attempt, giveup.delay) == (
        "giveup",
        "permanent",
        1,
        0.0,
    )
    assert isinstance(giveup.cause, GatewayError)
    assert giveup.context == {"customer": refused}


async def test_a_raising_hook_does_not_break_the_call(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """An exception inside on_retry is logged and the call goes on."""

    def broken(event: RetryEvent) -> None:
        raise RuntimeError(event.action)

    customer = emulator.create_invoice(fate=Fate.paid())
    emulator.inject(Fault.http_status(503), operation="pay")
    async with make_client(on_retry=broken) as client:
        payment = await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert payment.invoice_status is InvoiceStatus.OK


async def test_logs_carry_customer_and_attempt_but_no_secrets(
    rogue: FreedomPayEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """DEBUG logs of a retried, reconciled pay name customer and attempt; never key/token/JWS."""
    customer = rogue.create_invoice(fate=Fate.paid())
    rogue.inject(Fault.http_status(503), operation="pay")
    rogue.inject(Fault.drop(after_commit=True), operation="pay")
    rogue.inject(Fault.http_status(502), operation="status")
    signature = build_request(
        Operation.PAY,
        [("customer", customer), ("user_id", USER), ("card_token", TOKEN)],
        credentials=_Credentials(merchant_id=rogue.merchant_id, secret_key=rogue.secret_key),
        wire=_WireOptions(),
    ).headers["X-JWS-Signature"]
    caplog.set_level(logging.DEBUG)
    async with _client_for(rogue) as client:
        await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    ours = [r for r in caplog.records if r.name.startswith("freedompay_async")]
    assert ours
    text = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    for secret in (rogue.secret_key, TOKEN, signature, signature.rsplit(".", 1)[-1]):
        assert secret not in text
    attempts = [r.getMessage() for r in ours if "attempt" in r.getMessage()]
    assert any("pay attempt 1" in m for m in attempts)
    assert any("pay attempt 2" in m for m in attempts)
    assert all(f"customer={customer}" in m for m in attempts)


async def test_connection_and_slot_are_released_before_any_sleep(
    rogue: FreedomPayEmulator,
) -> None:
    """Every backoff, grace and poll sleep starts with no gate slot held by the call."""
    held: list[int] = []

    class Watching(VirtualClock):
        async def sleep(self, seconds: float) -> None:
            held.append(client._transport.gate.in_use)
            await super().sleep(seconds)

    customer = rogue.create_invoice(fate=Fate.pending_then_paid(polls=1))
    rogue.inject(Fault.http_status(503), operation="pay")
    rogue.inject(Fault.drop(after_commit=True), operation="pay")
    client = _client_for(rogue, clock=Watching())
    async with client:
        await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert len(held) >= 3
    assert set(held) == {0}


# ------------------------------------------------------------------------------------------------
# Breaker and budget


async def test_breaker_opens_on_sustained_connect_failures_and_fails_fast(
    make_client: Callable[..., FreedomPayClient],
) -> None:
    """Connect failures to a closed port open the breaker; then calls fail fast, pay unsent."""
    clock = VirtualClock()
    policy = RetryPolicy(attempts=1, breaker_threshold=3, breaker_cooldown=10.0)
    client = make_client(base_url=f"http://127.0.0.1:{_closed_port()}", clock=clock, retry=policy)
    async with client:
        for _ in range(3):
            with pytest.raises(ConnectError):
                await client.invoice_status(customer="c-1")
        with pytest.raises(CircuitOpenError) as caught:
            await client.invoice_status(customer="c-1")
        assert caught.value.attempts == 0
        with pytest.raises(CircuitOpenError):
            await client.pay_invoice(customer="c-2", user_id=USER, card_token=TOKEN)
        clock.advance(10.0)
        with pytest.raises(ConnectError):  # the single probe goes out and fails
            await client.invoice_status(customer="c-1")
        with pytest.raises(CircuitOpenError):
            await client.invoice_status(customer="c-1")
        with pytest.raises(CircuitOpenError):  # the unsent pay released its guard
            await client.pay_invoice(customer="c-2", user_id=USER, card_token=TOKEN)


async def test_breaker_closes_after_a_successful_probe(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """After the cooldown a successful probe closes the breaker and traffic flows again."""
    customer = emulator.create_invoice()
    clock = VirtualClock()
    policy = RetryPolicy(attempts=1, breaker_threshold=2, breaker_cooldown=5.0)
    emulator.inject(Fault.http_status(503), operation="status", times=2)
    async with make_client(clock=clock, retry=policy) as client:
        for _ in range(2):
            with pytest.raises(HTTPStatusError):
                await client.invoice_status(customer=customer)
        with pytest.raises(CircuitOpenError):
            await client.invoice_status(customer=customer)
        clock.advance(5.0)
        await client.invoice_status(customer=customer)
        await client.invoice_status(customer=customer)
    assert _ops(emulator, "status") == 4


async def test_breaker_recovers_from_a_cancelled_probe(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """A probe cancelled in flight does not leave the breaker refusing every call forever."""
    customer = emulator.create_invoice()
    clock = VirtualClock()
    policy = RetryPolicy(attempts=1, breaker_threshold=1, breaker_cooldown=5.0)
    emulator.inject(Fault.http_status(503), operation="status")
    emulator.inject(Fault.delay(2.0, after_commit=False), operation="status")
    async with make_client(clock=clock, retry=policy) as client:
        with pytest.raises(HTTPStatusError):
            await client.invoice_status(customer=customer)
        clock.advance(5.0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.invoice_status(customer=customer)  # the probe, cancelled
        clock.advance(60.0)
        status = await client.invoice_status(customer=customer)
    assert status.invoice_status is InvoiceStatus.NEW


async def test_budget_exhaustion_stops_resends(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """An empty retry budget stops resends; first attempts still go out; successes refund."""
    customer = emulator.create_invoice()
    policy = RetryPolicy(attempts=10, deadline=60.0, budget=10, breaker_threshold=None)
    emulator.inject(Fault.http_status(503), operation="status", times=50)
    async with make_client(retry=policy) as client:
        with pytest.raises(HTTPStatusError) as first:
            await client.invoice_status(customer=customer)
        assert first.value.attempts == 3  # two resends at 5 tokens each, then dry
        with pytest.raises(HTTPStatusError) as second:
            await client.invoice_status(customer=customer)
        assert second.value.attempts == 1
        emulator.clear_faults()
        for _ in range(5):
            await client.invoice_status(customer=customer)
        assert client._budget is not None
        assert client._budget.tokens == 5
        emulator.inject(Fault.http_status(503), operation="status", times=50)
        with pytest.raises(HTTPStatusError) as third:
            await client.invoice_status(customer=customer)
        assert third.value.attempts == 2
    assert _ops(emulator, "status") == 3 + 1 + 5 + 2


async def test_attempts_exhausted_reraises_the_last_error_with_attempts(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """Four 503s on pay give up with the original HTTPStatusError, attempts=4, nothing charged."""
    customer = emulator.create_invoice(fate=Fate.paid())
    emulator.inject(Fault.http_status(503), operation="pay", times=4)
    async with make_client() as client:
        with pytest.raises(HTTPStatusError) as caught:
            await client.pay_invoice(customer=customer, user_id=USER, card_token=TOKEN)
    assert caught.value.status_code == 503
    assert caught.value.attempts == 4
    assert emulator.charges(customer) == 0
