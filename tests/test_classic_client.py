"""The client's classic Merchant API methods against the emulator over loopback."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from decimal import Decimal

import pytest

from freedompay_async import (
    AmbiguousPaymentError,
    AmbiguousWriteError,
    CancelResult,
    CaptureResult,
    ConfigurationError,
    DuplicateWriteError,
    ExcessRefundError,
    FreedomPayClient,
    GatewayError,
    PaymentState,
    RefundResult,
    RetryPolicy,
    WriteRefusedError,
)
from freedompay_async.testing import Fault, FreedomPayEmulator, VirtualClock

MakeClient = Callable[..., FreedomPayClient]


def _sent(emu: FreedomPayEmulator, operation: str) -> int:
    return sum(1 for r in emu.classic.requests if r.operation == operation)


async def test_save_list_and_remove_a_card(
    emulator: FreedomPayEmulator, make_client: MakeClient
) -> None:
    """save_card returns the entry URL; the completed card is listed masked, then removed."""
    async with make_client() as client:
        added = await client.save_card(user_id="u1", back_link="https://shop.example/back")
        assert added.payment_id is not None
        assert "cardstorage" in added.redirect_url
        assert await client.list_cards(user_id="u1") == ()
        token = emulator.classic.complete_card_entry(added.payment_id)
        cards = await client.list_cards(user_id="u1", extended=True)
        assert [c.card_token for c in cards] == [token]
        assert token not in repr(cards)
        removed = await client.remove_card(user_id="u1", card_token=token)
        assert removed.card_hash == cards[0].card_hash
        assert await client.list_cards(user_id="u1") == ()
    assert all(r.signature_valid for r in emulator.classic.requests)


async def test_payment_status_by_payment_id_and_by_order_id(
    emulator: FreedomPayEmulator, make_client: MakeClient
) -> None:
    """payment_status reads the same payment by either key; both keys at once are refused."""
    pid = emulator.classic.create_payment(Decimal("250.50"), order_id="ORD-7")
    async with make_client() as client:
        by_id = await client.payment_status(payment_id=pid)
        by_order = await client.payment_status(order_id="ORD-7")
        assert by_id.payment_id == by_order.payment_id == pid
        assert by_id.amount == Decimal("250.50")
        with pytest.raises(ConfigurationError, match="exactly one"):
            await client.payment_status(payment_id=pid, order_id="ORD-7")


async def test_partial_then_full_refund(
    emulator: FreedomPayEmulator, make_client: MakeClient
) -> None:
    """A partial refund, then the rest with amount=None; the gateway records both once."""
    pid = emulator.classic.create_payment(Decimal(100))
    async with make_client() as client:
        first = await client.refund_payment(payment_id=pid, amount=Decimal("30.00"))
        assert isinstance(first, RefundResult)
        assert first.refund_payment_id is not None
        rest = await client.refund_payment(payment_id=pid)
        assert rest.payment_id == pid
        status = await client.payment_status(payment_id=pid)
    assert emulator.classic.refunds(pid) == [Decimal("30.00"), Decimal("70.00")]
    assert status.refunded_total == Decimal(100)
    sent = emulator.classic.requests
    assert {r.operation for r in sent} == {"payment_status", "refund"}
    assert all(r.signature_valid for r in sent)
    assert emulator.classic.rejected_signatures == 0


async def test_an_over_refund_is_refused_before_sending(
    emulator: FreedomPayEmulator, make_client: MakeClient
) -> None:
    """More than is left to refund raises ExcessRefundError and sends no refund request."""
    pid = emulator.classic.create_payment(Decimal(50))
    async with make_client() as client:
        await client.refund_payment(payment_id=pid, amount=Decimal(40))
        with pytest.raises(ExcessRefundError) as caught:
            await client.refund_payment(payment_id=pid, amount=Decimal("10.01"))
        await client.refund_payment(payment_id=pid, amount=Decimal(10))
        with pytest.raises(ExcessRefundError):
            await client.refund_payment(payment_id=pid)
    assert caught.value.refundable == Decimal(10)
    assert caught.value.payment_id == pid
    assert _sent(emulator, "refund") == 2
    assert emulator.classic.refunds(pid) == [Decimal(40), Decimal(10)]


async def test_a_duplicate_refund_is_refused_with_its_claim(
    emulator: FreedomPayEmulator, make_client: MakeClient
) -> None:
    """The same payment and amount twice in one client: the second is refused, nothing sent."""
    pid = emulator.classic.create_payment(Decimal(100))
    async with make_client() as client:
        await client.refund_payment(payment_id=pid, amount=Decimal(5))
        with pytest.raises(DuplicateWriteError) as caught:
            await client.refund_payment(payment_id=pid, amount=Decimal(5))
        await client.refund_payment(payment_id=pid, amount=Decimal(6))
    claim = caught.value.claim
    assert claim is not None
    assert (claim.operation, claim.payment_id, claim.amount, claim.state) == (
        "refund",
        pid,
        Decimal(5),
        "done",
    )
    assert pickle.loads(pickle.dumps(caught.value)).claim == claim
    assert emulator.classic.refunds(pid) == [Decimal(5), Decimal(6)]


async def test_a_gateway_refusal_releases_the_claim(
    emulator: FreedomPayEmulator, make_client: MakeClient
) -> None:
    """A refund refused by the gateway moved nothing: the same refund may be asked again."""
    pid = emulator.classic.create_payment(Decimal(100), hold=True)
    async with make_client() as client:
        with pytest.raises(GatewayError):
            await client.refund_payment(payment_id=pid, amount=Decimal(5))
        await client.capture_payment(payment_id=pid)
        done = await client.refund_payment(payment_id=pid, amount=Decimal(5))
    assert done.payment_id == pid
    assert emulator.classic.refunds(pid) == [Decimal(5)]


async def test_a_dropped_refund_reply_is_settled_by_status_not_resent(
    emulator: FreedomPayEmulator, make_client: MakeClient
) -> None:
    """Commit-then-drop on refund: the status read finds the refund; it is never sent again."""
    pid = emulator.classic.create_payment(Decimal(100))
    emulator.classic.inject(Fault.drop(after_commit=True), operation="refund")
    async with make_client() as client:
        result = await client.refund_payment(payment_id=pid, amount=Decimal(30))
    assert result.amount == Decimal(30)
    assert result.refund_payment_id is not None
    assert _sent(emulator, "refund") == 1
    assert emulator.classic.refunds(pid) == [Decimal(30)]


async def test_a_lagging_status_after_a_lost_refund_is_reported_not_resent(
    emulator: FreedomPayEmulator, make_client: MakeClient
) -> None:
    """A lost reply and a status that lags behind: AmbiguousWriteError, one refund only."""
    pid = emulator.classic.create_payment(Decimal(100))
    emulator.classic.inject(Fault.http_status(500, after_commit=True), operation="refund")
    emulator.classic.inject(Fault.stale_status(reads=1), times=20, payment_id=pid)
    retry = RetryPolicy(attempts=3, deadline=30.0, reconcile_grace=0.5)
    async with make_client(retry=retry) as client:
        with pytest.raises(AmbiguousWriteError) as caught:
            await client.refund_payment(payment_id=pid, amount=Decimal(30))
        with pytest.raises(DuplicateWriteError) as again:
            await client.refund_payment(payment_id=pid, amount=Decimal(30))
    assert isinstance(caught.value, AmbiguousPaymentError)
    assert caught.value.payment_id == pid
    assert "payment_status(payment_id=" in str(caught.value)
    assert again.value.claim is not None
    assert again.value.claim.state == "ambiguous"
    assert _sent(emulator, "refund") == 1
    assert emulator.classic.refunds(pid) == [Decimal(30)]


async def test_a_refund_not_sent_is_resent(
    emulator: FreedomPayEmulator, make_client: MakeClient
) -> None:
    """HTTP 503 before commit proves nothing landed: the refund is resent and lands once."""
    pid = emulator.classic.create_payment(Decimal(100))
    emulator.classic.inject(Fault.http_status(503), operation="refund", times=2)
    async with make_client() as client:
        await client.refund_payment(payment_id=pid, amount=Decimal(1))
    assert _sent(emulator, "refund") == 3
    assert emulator.classic.refunds(pid) == [Decimal(1)]


async def test_capture_and_cancel_a_hold(
    emulator: FreedomPayEmulator, make_client: MakeClient
) -> None:
    """A hold is captured once; another hold is cancelled; writes they cannot take are refused."""
    held = emulator.classic.create_payment(Decimal(80), hold=True)
    other = emulator.classic.create_payment(Decimal(20), hold=True)
    async with make_client() as client:
        with pytest.raises(WriteRefusedError, match="more than the 80"):
            await client.capture_payment(payment_id=held, amount=Decimal("80.01"))
        captured = await client.capture_payment(payment_id=held, amount=Decimal(60))
        assert isinstance(captured, CaptureResult)
        with pytest.raises(WriteRefusedError, match="already captured"):
            await client.cancel_payment(payment_id=held)
        cancelled = await client.cancel_payment(payment_id=other)
        assert isinstance(cancelled, CancelResult)
        with pytest.raises(WriteRefusedError):
            await client.capture_payment(payment_id=other)
        status = await client.payment_status(payment_id=other)
    assert emulator.classic.captures(held) == 1
    assert emulator.classic.cancels(other) == 1
    assert emulator.classic.captures(other) == 0
    assert status.state in (PaymentState.REVOKED, PaymentState.CANCELLED) or status.revocations


async def test_a_capture_whose_reply_is_lost_is_captured_once() -> None:
    """500 after commit on capture, in adversarial mode: the status proves it; no 2nd capture."""
    async with FreedomPayEmulator(seed=2, adversarial=True) as emu:
        held = emu.classic.create_payment(Decimal(80), hold=True)
        emu.classic.inject(Fault.http_status(500, after_commit=True), operation="capture")
        async with FreedomPayClient(
            emu.merchant_id, emu.secret_key, base_url=emu.base_url, clock=VirtualClock()
        ) as client:
            result = await client.capture_payment(payment_id=held)
            with pytest.raises(DuplicateWriteError):
                await client.capture_payment(payment_id=held)
        assert result.payment_id == held
        assert emu.classic.captures(held) == 1
        assert emu.classic.double_captured() == []


async def test_bad_arguments_name_the_field_and_send_nothing(
    emulator: FreedomPayEmulator, make_client: MakeClient
) -> None:
    """A float amount, a negative id or a bad URL is refused naming the field; nothing is sent."""
    async with make_client() as client:
        with pytest.raises(ConfigurationError, match="amount"):
            await client.refund_payment(payment_id=1, amount=1.5)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="payment_id"):
            await client.capture_payment(payment_id=-3)
        with pytest.raises(ConfigurationError, match="back_link"):
            await client.save_card(user_id="u1", back_link="not a url")
    assert emulator.classic.requests == []
