"""
Typed usage of the public API, checked by `mypy --strict` and never run.

A change that breaks how users call the SDK fails type checking here before it ships.
"""

from __future__ import annotations

import random
from decimal import Decimal

from freedompay_async import (
    AmbiguousPaymentError,
    AmbiguousWriteError,
    BatchProgress,
    CancelResult,
    CaptureResult,
    CardAddition,
    ClassicOptions,
    DuplicateWriteError,
    ExcessRefundError,
    FreedomPayClient,
    FreedomPayError,
    GatewayError,
    InvoiceInfo,
    InvoiceInit,
    InvoicePayment,
    InvoiceStatus,
    PaymentPending,
    PaymentState,
    PaymentStatus,
    PayOutcome,
    PayRequest,
    PollPolicy,
    RefundEntry,
    RefundResult,
    RemovedCard,
    RetryEvent,
    RetryPolicy,
    SavedCard,
    Timeouts,
    WriteClaim,
    WriteRefusedError,
)
from freedompay_async.signing import jws_detached, jws_payload, pg_sig, verify_pg_sig
from freedompay_async.testing import Fate, Fault, FreedomPayEmulator, VirtualClock


def on_retry(event: RetryEvent) -> None:
    """Receive retry events."""
    assert event.attempt >= 1
    assert isinstance(event.cause, FreedomPayError)


def on_progress(progress: BatchProgress) -> None:
    """Receive batch progress."""
    assert progress.done <= progress.submitted


async def usage(secret: str, token: str) -> None:
    """Call every operation the way the README shows."""
    client = FreedomPayClient(
        "123456",
        secret,
        base_url="https://api.freedompay.kg",
        timeouts=Timeouts(connect=5.0, read=20.0, pool=5.0),
        retry=RetryPolicy(attempts=3, deadline=30.0, resend_pay_if_new=False),
        poll=PollPolicy(interval=1.0, timeout=60.0),
        max_concurrency=32,
        body_format="json",
        jws_header_key="uri",
        clock=VirtualClock(),
        rng=random.Random(1),
        on_retry=on_retry,
        on_giveup=on_retry,
    )
    async with client:
        init: InvoiceInit = await client.init_invoice(
            order_id="o-1", amount=Decimal("10.50"), description="d", currency="KZT"
        )
        customer: str | None = init.customer
        assert customer is not None
        try:
            payment: InvoicePayment = await client.pay_invoice(
                customer=customer, user_id="u", card_token=token, wait=False
            )
        except AmbiguousPaymentError as exc:
            missing: str | None = exc.customer
            assert missing is not None
            return
        except PaymentPending as exc:
            last: InvoicePayment | None = exc.payment
            assert last is not None
            return
        except GatewayError as exc:
            code: int | None = exc.error_code
            assert code is not None
            return
        terminal: bool = payment.invoice_status.is_terminal
        assert terminal or payment.invoice_status in (InvoiceStatus.NEW, InvoiceStatus.PROCESS)
        status: InvoicePayment = await client.invoice_status(invoice_id=1)
        info: InvoiceInfo = await client.invoice_info(order_id="o-1")
        assert status.amount is None or isinstance(status.amount, Decimal)
        assert info.description is None or isinstance(info.description, str)
        requests = [PayRequest(customer="c", user_id="u", card_token=token, key=1)]
        async for outcome in client.pay_invoices(requests, concurrency=8, on_progress=on_progress):
            checked: PayOutcome = outcome
            assert checked.state in ("paid", "failed", "expired", "pending", "ambiguous", "error")


async def emulator_usage() -> None:
    """Drive the emulator the way the README shows."""
    async with FreedomPayEmulator(adversarial=True) as emu:
        customer: str = emu.create_invoice(
            amount=Decimal(100), fate=Fate.pending_then_paid(polls=1)
        )
        emu.inject(Fault.http_status(429, retry_after="1"), operation="pay", times=2)
        emu.script_card("tok", Fate.declined())
        charges: int = emu.charges(customer)
        assert charges == 0
        url: str = emu.base_url
        assert url.startswith("http://127.0.0.1")


def signing_usage() -> None:
    """Sign and verify with the public helpers."""
    payload: bytes = jws_payload([("customer", "c"), ("merchant_id", 1)])
    header: str = jws_detached(
        payload, secret_key="k", path="/v5/merchant/invoice/pay", merchant_id=1
    )
    assert header.count(".") == 2
    sig: str = pg_sig("init_payment.php", {"pg_amount": "25"}, "k")
    ok: bool = verify_pg_sig("init_payment.php", {"pg_amount": "25", "pg_sig": sig}, "k")
    assert ok


async def classic_emulator_usage(status: PaymentStatus, cards: tuple[SavedCard, ...]) -> None:
    """Drive the emulator's classic API and read the classic models the way the README shows."""
    async with FreedomPayEmulator(require_issued_tokens=True) as emu:
        token: str = emu.classic.save_card("u1")
        assert emu.classic.is_issued("u1", token)
        payment_id: int = emu.classic.create_payment(Decimal(100), hold=True)
        emu.classic.inject(Fault.drop(after_commit=True), operation="refund", payment_id=payment_id)
        refunds: list[Decimal] = emu.classic.refunds(payment_id)
        assert refunds == []
        assert emu.classic.captures(payment_id) == 0
    state: PaymentState = status.state
    assert state.is_success or not state.is_success
    total: Decimal = status.refunded_total
    entries: tuple[RefundEntry, ...] = status.refunds
    assert total >= 0
    assert len(entries) >= 0
    hashes: list[str | None] = [card.card_hash for card in cards]
    assert len(hashes) == len(cards)


async def classic_client_usage(client: FreedomPayClient) -> None:
    """Save, list and remove cards; read a status; refund, capture and cancel, handling errors."""
    addition: CardAddition = await client.save_card(
        user_id="u1", back_link="https://shop.example/back", post_link=None, order_id="c-1"
    )
    url: str = addition.redirect_url
    assert url
    cards: tuple[SavedCard, ...] = await client.list_cards(user_id="u1", extended=True)
    removed: RemovedCard = await client.remove_card(user_id="u1", card_token=cards[0].card_token)
    assert removed.deleted_at is None or removed.deleted_at
    status: PaymentStatus = await client.payment_status(payment_id=1)
    by_order: PaymentStatus = await client.payment_status(order_id="A-1", retry=RetryPolicy())
    assert status.payment_id == by_order.payment_id
    try:
        refund: RefundResult = await client.refund_payment(payment_id=1, amount=Decimal("10.00"))
        assert refund.refund_payment_id is None or refund.refund_payment_id > 0
    except DuplicateWriteError as exc:
        claim: WriteClaim | None = exc.claim
        assert claim is None or claim.state
    except ExcessRefundError as exc:
        left: Decimal | None = exc.refundable
        assert left is None or left >= 0
    except AmbiguousWriteError as exc:
        pid: int | None = exc.payment_id
        assert pid is None or pid > 0
    except WriteRefusedError as exc:
        reason: str | None = exc.reason
        assert reason is None or reason
    captured: CaptureResult = await client.capture_payment(payment_id=2, amount=None)
    cancelled: CancelResult = await client.cancel_payment(payment_id=3)
    assert captured.payment_id != cancelled.payment_id
    options = ClassicOptions(card_add_script="add", verify_replies=True)
    assert FreedomPayClient("1", "k", classic=options)
