"""
Test support: an embedded Freedom Pay emulator and a virtual clock.

`FreedomPayEmulator` serves the invoice API on 127.0.0.1 over real sockets, verifies every
signature, scripts the fate of each payment, injects faults and counts the charges per invoice;
`emulator.classic` (a `ClassicGateway`) serves the classic Merchant API beside it: saved cards,
payment status, refunds, cancels and captures, with the same faults; `VirtualClock` makes the
client's sleeps instant and records them.

Example:
    ```python
    from freedompay_async import FreedomPayClient
    from freedompay_async.testing import Fate, Fault, FreedomPayEmulator

    async def test_pay_survives_a_dropped_reply() -> None:
        async with FreedomPayEmulator(adversarial=True) as emu:
            customer = emu.create_invoice(fate=Fate.paid())
            emu.inject(Fault.drop(after_commit=True), operation="pay")
            async with FreedomPayClient(
                emu.merchant_id, emu.secret_key, base_url=emu.base_url
            ) as client:
                await client.pay_invoice(customer=customer, user_id="u1", card_token="tok-1")
            assert emu.charges(customer) == 1
            assert emu.double_charged() == []
    ```
"""

from __future__ import annotations

from freedompay_async.testing._classic_server import CLASSIC_OPERATIONS, ClassicGateway
from freedompay_async.testing._classic_wire import ClassicRecord
from freedompay_async.testing._clock import VirtualClock
from freedompay_async.testing._emulator import EmulatorStats, FreedomPayEmulator, RequestRecord
from freedompay_async.testing._scenario import Fate, Fault

__all__ = [
    "CLASSIC_OPERATIONS",
    "ClassicGateway",
    "ClassicRecord",
    "EmulatorStats",
    "Fate",
    "Fault",
    "FreedomPayEmulator",
    "RequestRecord",
    "VirtualClock",
]
