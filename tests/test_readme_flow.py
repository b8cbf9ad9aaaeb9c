"""README's whole-merchant-flow example, extracted from README and run against the emulator."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from freedompay_async import FreedomPayClient, PaymentStatus
from freedompay_async.testing import FreedomPayEmulator

README = Path(__file__).resolve().parent.parent / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- merchant-flow -->\n```python\n(.*?)```\n<!-- /merchant-flow -->", text, re.DOTALL
    )
    assert found is not None, "README lost its merchant-flow example"
    return found.group(1)


async def test_the_readme_flow_saves_pays_and_refunds_part() -> None:
    """The README block runs as written: one card saved, one pay, 30.00 refunded once."""
    namespace: dict[str, Any] = {}
    exec(compile(_example(), str(README), "exec"), namespace)  # noqa: S102 - our own README
    flow = namespace["sell_and_refund_part"]
    async with (
        FreedomPayEmulator(seed=5, require_issued_tokens=True) as emu,
        aiohttp.ClientSession() as browser,
    ):

        async def show_card_page(url: str) -> None:
            async with browser.get(url) as page:  # the user opens the page ...
                assert page.status == 200
            entry = int(parse_qs(urlsplit(url).query)["pg_payment_id"][0])
            emu.classic.complete_card_entry(entry)  # ... and enters the card

        async with FreedomPayClient(
            emu.merchant_id, emu.secret_key, base_url=emu.base_url
        ) as client:
            status = await flow(client, user_id="buyer-1", show_card_page=show_card_page)
    assert isinstance(status, PaymentStatus)
    assert status.payment_id is not None
    assert emu.classic.refunds(status.payment_id) == [Decimal("30.00")]
    assert status.refunded_total == Decimal("30.00")
    assert status.amount == Decimal("100.00")
