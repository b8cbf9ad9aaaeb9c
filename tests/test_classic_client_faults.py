"""Refunds and captures through the client against the emulator's fault schedules."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from freedompay_async import (
    AmbiguousWriteError,
    CaptureResult,
    FreedomPayClient,
    FreedomPayError,
    RefundResult,
    RetryPolicy,
    Timeouts,
)
from freedompay_async.testing import Fault, FreedomPayEmulator, VirtualClock

FAULTS = st.sampled_from(
    [
        ("refund", Fault.drop(after_commit=True)),
        ("refund", Fault.drop(after_commit=False)),
        ("refund", Fault.http_status(500, after_commit=True)),
        ("refund", Fault.http_status(502, after_commit=False)),
        ("refund", Fault.http_status(503)),
        ("refund", Fault.error_code(1000, after_commit=True)),
        ("refund", Fault.delay(0.4, after_commit=True)),
        ("refund", Fault.delay(0.4, after_commit=False)),
        ("refund", Fault.malformed_xml(after_commit=True)),
        ("capture", Fault.drop(after_commit=True)),
        ("capture", Fault.http_status(504, after_commit=True)),
        ("capture", Fault.error_code(1000, after_commit=False)),
        ("capture", Fault.delay(0.4, after_commit=True)),
        ("payment_status", Fault.stale_status(reads=2)),
        ("payment_status", Fault.http_status(500)),
        ("payment_status", Fault.drop(after_commit=False)),
    ]
)
AMOUNTS = st.lists(
    st.integers(min_value=1, max_value=6000).map(lambda c: Decimal(c) / 100),
    min_size=1,
    max_size=3,
    unique=True,
)


@settings(max_examples=30, deadline=None)
@given(
    schedule=st.lists(FAULTS, max_size=6),
    amounts=AMOUNTS,
    captures=st.integers(min_value=1, max_value=2),
)
def test_no_schedule_refunds_more_than_asked_or_captures_twice(
    schedule: list[tuple[str, Fault]], amounts: list[Decimal], captures: int
) -> None:
    """Concurrent refunds and repeated captures under faults: each lands at most once, truly."""

    async def scenario() -> None:
        async with FreedomPayEmulator(seed=3, adversarial=True) as emu:
            paid = emu.classic.create_payment(Decimal(100))
            held = emu.classic.create_payment(Decimal(80), hold=True)
            for operation, fault in schedule:
                emu.classic.inject(fault, operation=operation)
            async with FreedomPayClient(
                emu.merchant_id,
                emu.secret_key,
                base_url=emu.base_url,
                clock=VirtualClock(),
                timeouts=Timeouts(connect=1.0, read=0.2, pool=1.0),
                retry=RetryPolicy(attempts=3, deadline=20.0, reconcile_grace=0.5),
            ) as client:
                refunds = await asyncio.gather(
                    *(client.refund_payment(payment_id=paid, amount=a) for a in amounts),
                    return_exceptions=True,
                )
                captured = [
                    await _settle(client.capture_payment(payment_id=held)) for _ in range(captures)
                ]
            landed = Counter(emu.classic.refunds(paid))
            assert all(n == 1 for n in landed.values()), "a refund landed twice"
            assert set(landed) <= set(amounts), "a refund nobody asked for"
            for amount, outcome in zip(amounts, refunds, strict=True):
                assert isinstance(outcome, RefundResult | FreedomPayError), outcome
                if isinstance(outcome, RefundResult):
                    assert landed[amount] == 1
                elif not isinstance(outcome, AmbiguousWriteError):
                    assert landed[amount] == 0, f"{type(outcome).__name__} but it landed"
            assert emu.classic.captures(held) <= 1
            assert emu.classic.double_captured() == []
            for outcome in captured:
                assert isinstance(outcome, CaptureResult | FreedomPayError), outcome
            if isinstance(captured[0], CaptureResult):
                assert emu.classic.captures(held) == 1

    asyncio.run(scenario())


async def _settle(call: object) -> object:
    try:
        return await call  # type: ignore[misc]
    except FreedomPayError as exc:
        return exc
