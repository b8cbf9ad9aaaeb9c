"""The `demo` command's second act: saved cards, refunds and captures under injected faults."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from freedompay_async import (
    AmbiguousWriteError,
    CancelResult,
    CaptureResult,
    FreedomPayError,
    RefundResult,
)

if TYPE_CHECKING:
    import random

    from freedompay_async import FreedomPayClient
    from freedompay_async.testing import Fault, FreedomPayEmulator

#: The faults injected into refunds and captures, drawn uniformly.
WRITE_FAULTS: Final = (
    "503",
    "500-after-commit",
    "drop-after-commit",
    "1000-after-commit",
    "stale-status",
    "slow",
)
#: At most this many cards are saved, payments refunded and holds written in the demo.
_CARDS: Final = 20
_REFUNDS: Final = 300
_HOLDS: Final = 100


def _fault(name: str, read_timeout: float) -> Fault:
    from freedompay_async.testing import Fault  # noqa: PLC0415 - the emulator loads on demand

    if name == "503":
        return Fault.http_status(503)
    if name == "500-after-commit":
        return Fault.http_status(500, after_commit=True)
    if name == "drop-after-commit":
        return Fault.drop(after_commit=True)
    if name == "1000-after-commit":
        return Fault.error_code(1000, after_commit=True)
    if name == "stale-status":
        return Fault.stale_status(reads=2)
    return Fault.delay(read_timeout + 0.5, after_commit=True)


def _state(outcome: object) -> str:
    if isinstance(outcome, RefundResult | CaptureResult | CancelResult):
        return "done"
    if isinstance(outcome, AmbiguousWriteError):
        return "ambiguous"
    return "refused" if isinstance(outcome, FreedomPayError) else "crashed"


async def run_classic_demo(
    emulator: FreedomPayEmulator,
    client: FreedomPayClient,
    *,
    paid: list[int],
    fault_rate: float,
    concurrency: int,
    rng: random.Random,
    read_timeout: float,
) -> tuple[list[tuple[str, str]], int]:
    """
    Save cards, refund paid invoices in part and capture or cancel holds, with faults.

    Returns:
        The section's rows, and how many payments were refunded more than asked or captured
        twice (the demo fails if any).
    """
    saved = await _save_cards(emulator, client, min(_CARDS, max(len(paid), 1)))
    injected: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)

    def maybe_fault(operation: str, payment_id: int) -> None:
        if rng.random() < fault_rate:
            kind = rng.choice(WRITE_FAULTS)
            injected[kind] += 1
            op = "payment_status" if kind == "stale-status" else operation
            emulator.classic.inject(_fault(kind, read_timeout), operation=op, payment_id=payment_id)

    asked: dict[int, Decimal] = {}
    for payment_id in rng.sample(paid, min(_REFUNDS, len(paid))):
        asked[payment_id] = Decimal(rng.randint(100, 5000)) / 100
        maybe_fault("refund", payment_id)
    holds = [emulator.classic.create_payment(Decimal(80), hold=True) for _ in range(_HOLDS)]
    for payment_id in holds:
        maybe_fault("capture" if payment_id % 2 else "cancel", payment_id)

    async def write(payment_id: int) -> str:
        async with gate:
            try:
                if payment_id in asked:
                    await client.refund_payment(payment_id=payment_id, amount=asked[payment_id])
                elif payment_id % 2:
                    await client.capture_payment(payment_id=payment_id)
                else:
                    await client.cancel_payment(payment_id=payment_id)
            except FreedomPayError as exc:
                return _state(exc)
            return "done"

    states = await asyncio.gather(*(write(pid) for pid in [*asked, *holds]))
    refund_states = Counter(states[: len(asked)])
    hold_states = Counter(states[len(asked) :])
    over = sum(
        1 for pid, amount in asked.items() if emulator.classic.refunds(pid) not in ([], [amount])
    )
    double = len(emulator.classic.double_captured())
    rows = [
        ("cards saved and listed", f"{saved}"),
        ("refunds (part of a paid invoice)", _counts(refund_states)),
        ("captures and cancels of holds", _counts(hold_states)),
        ("faults injected", ", ".join(f"{k} {n}" for k, n in sorted(injected.items())) or "none"),
        ("payments refunded more than asked", str(over)),
        ("holds captured twice", str(double)),
    ]
    return rows, over + double


async def _save_cards(emulator: FreedomPayEmulator, client: FreedomPayClient, count: int) -> int:
    """Save one card for each of *count* users (the emulator plays the user); count them."""
    saved = 0
    for number in range(count):
        user = f"user-{number + 1:06d}"
        addition = await client.save_card(user_id=user, back_link="https://shop.example/cards")
        if addition.payment_id is not None:
            emulator.classic.complete_card_entry(addition.payment_id)
        saved += len(await client.list_cards(user_id=user))
    return saved


def _counts(counter: Counter[str]) -> str:
    return ", ".join(
        f"{state} {counter[state]}" for state in ("done", "ambiguous", "refused") if counter[state]
    )
