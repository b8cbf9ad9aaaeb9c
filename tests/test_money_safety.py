"""No path pays an invoice twice: cancellation, unreadable replies, 1xx/3xx, aclose(); loopback.

Every server here is a raw asyncio gateway (`rawgate.RawGateway`) that charges every pay it
receives, so a second pay of a customer is a second charge, counted at the server.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from rawgate import RawGateway, raw_status, xml

from freedompay_async import (
    AmbiguousPaymentError,
    ClientClosedError,
    DuplicatePayError,
    FreedomPayClient,
    FreedomPayError,
    InvoiceStatus,
    PayRequest,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)

QUICK_POLL = PollPolicy(interval=0.01, factor=1.0, max_interval=0.01, timeout=30.0)
QUICK_RETRY = RetryPolicy(attempts=4, deadline=20.0, reconcile_grace=0.01)


@pytest.fixture
def raw_client(client_for: Callable[..., FreedomPayClient]) -> Callable[..., FreedomPayClient]:
    """Clients for a raw gateway: the shared factory with a real clock and quick polls."""

    def factory(gateway: RawGateway, **options: Any) -> FreedomPayClient:
        options.setdefault("clock", None)  # the real clock: the raw gateway runs in real time
        options.setdefault("retry", QUICK_RETRY)
        options.setdefault("poll", QUICK_POLL)
        options.setdefault("timeouts", Timeouts(connect=2.0, read=5.0, pool=10.0))
        options.setdefault("rng", random.Random(7))
        return client_for(gateway.url, **options)

    return factory


async def _pay(client: FreedomPayClient, customer: str, **options: Any) -> object:
    return await client.pay_invoice(customer=customer, user_id="u1", card_token="tok-1", **options)


# -- cancelled while polling ----------------------------------------------------------------


async def test_a_pay_cancelled_while_polling_is_never_paid_again(
    caplog: pytest.LogCaptureFixture,
    raw_client: Callable[..., FreedomPayClient],
    wait_until: Callable[..., Awaitable[None]],
) -> None:
    """A pay answered process, then cancelled while polling, stays claimed and logs its customer."""
    caplog.set_level(logging.WARNING, logger="freedompay_async")
    async with RawGateway() as gateway, raw_client(gateway) as client:
        task = asyncio.create_task(_pay(client, "cust-1"))
        await wait_until(lambda: gateway.requests["status"] >= 2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(DuplicatePayError) as refused:
            await _pay(client, "cust-1")
    assert gateway.charges["cust-1"] == 1
    assert refused.value.claim is not None
    assert refused.value.claim.prior_state == "ambiguous"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("outcome unknown" in m and "customer=cust-1" in m for m in warnings)


async def test_a_storm_of_cancelled_pays_charges_no_customer_twice(
    caplog: pytest.LogCaptureFixture, raw_client: Callable[..., FreedomPayClient]
) -> None:
    """1,000 pays, half cancelled at random moments, each one retried: no customer charged twice."""
    caplog.set_level(logging.WARNING, logger="freedompay_async")
    reads: dict[str, int] = {}

    def status(customer: str) -> bytes:
        reads[customer] = reads.get(customer, 0) + 1
        return xml("ok" if reads[customer] > 3 else "process")

    rng = random.Random(11)
    customers = [f"storm-{n}" for n in range(1000)]
    async with RawGateway(on_status=status) as gateway, raw_client(gateway) as client:
        start = time.monotonic()
        tasks = {c: asyncio.create_task(_pay(client, c)) for c in customers}
        doomed = rng.sample(customers, 500)
        for customer in doomed:
            asyncio.get_running_loop().call_later(rng.uniform(0, 0.3), tasks[customer].cancel)
        results = dict(
            zip(
                customers,
                await asyncio.gather(*tasks.values(), return_exceptions=True),
                strict=True,
            )
        )
        cancelled = [c for c, r in results.items() if isinstance(r, asyncio.CancelledError)]
        retried = await asyncio.gather(
            *(_pay(client, c) for c in cancelled), return_exceptions=True
        )
        elapsed = time.monotonic() - start
    assert len(cancelled) >= 100, "the storm must cancel calls at many points"
    assert gateway.double_charged() == []
    for customer, result in zip(cancelled, retried, strict=True):
        # A cancelled call stays claimed whatever it had reached: its retry is refused, never sent.
        assert isinstance(result, DuplicatePayError), (customer, result)
    warned = {
        m.rsplit("customer=", 1)[-1]
        for m in (r.getMessage() for r in caplog.records)
        if "outcome unknown" in m
    }
    charged_then_cancelled = {c for c in cancelled if gateway.charges[c]}
    assert charged_then_cancelled <= warned
    assert elapsed < 60


# -- unreadable and unexpected replies ------------------------------------------------------


async def test_memory_error_reading_a_pay_reply_keeps_the_customer_in_doubt(
    monkeypatch: pytest.MonkeyPatch, raw_client: Callable[..., FreedomPayClient]
) -> None:
    """A MemoryError while reading a charged pay's reply reconciles; it never releases the claim."""
    original = aiohttp.ClientResponse.read

    async def read(self: aiohttp.ClientResponse) -> bytes:
        if self.url.path.endswith("/pay"):
            raise MemoryError
        return await original(self)

    monkeypatch.setattr(aiohttp.ClientResponse, "read", read)
    async with (
        RawGateway(on_pay=lambda _c: xml("ok"), on_status=lambda _c: xml("new")) as gateway,
        raw_client(gateway) as client,
    ):
        with pytest.raises(AmbiguousPaymentError) as first:
            await _pay(client, "mem-1")
        with pytest.raises(DuplicatePayError):
            await _pay(client, "mem-1")
    assert isinstance(first.value.__cause__, FreedomPayError)
    assert isinstance(first.value.__cause__.__cause__, MemoryError)
    assert gateway.charges["mem-1"] == 1
    assert gateway.requests["status"] >= 1


@pytest.mark.parametrize("code", [101, 301, 302, 307, 308])
async def test_a_1xx_or_3xx_reply_to_a_pay_is_ambiguous_never_paid_again(
    code: int, raw_client: Callable[..., FreedomPayClient]
) -> None:
    """A pay answered 1xx/3xx may have charged: it is reconciled, and never sent twice."""
    extra = ["Upgrade: websocket", "Connection: Upgrade"] if code == 101 else []
    if code >= 300:
        extra = ["Location: http://127.0.0.1:9/elsewhere"]
    async with (
        RawGateway(
            on_pay=lambda _c: raw_status(code, *extra), on_status=lambda _c: xml("new")
        ) as gateway,
        raw_client(
            gateway, retry=RetryPolicy(attempts=4, deadline=4.0, reconcile_grace=0.01)
        ) as client,
    ):
        with pytest.raises(FreedomPayError) as first:
            await _pay(client, f"redirect-{code}")
        with pytest.raises(DuplicatePayError):
            await _pay(client, f"redirect-{code}")
    assert isinstance(first.value, AmbiguousPaymentError), repr(first.value)
    assert gateway.charges[f"redirect-{code}"] == 1


async def test_a_3xx_pay_whose_status_reads_ok_returns_paid(
    raw_client: Callable[..., FreedomPayClient],
) -> None:
    """A redirected pay that did charge is found by reconcile: paid, one charge."""
    async with (
        RawGateway(
            on_pay=lambda _c: raw_status(302, "Location: /x"), on_status=lambda _c: xml("ok")
        ) as gateway,
        raw_client(gateway) as client,
    ):
        payment = await _pay(client, "redirect-ok")
    assert getattr(payment, "invoice_status", None) is InvoiceStatus.OK
    assert gateway.charges["redirect-ok"] == 1


# -- aclose() with pays in flight -----------------------------------------------------------


async def test_aclose_ends_written_pays_ambiguous_and_queued_ones_not_sent(
    raw_client: Callable[..., FreedomPayClient], wait_until: Callable[..., Awaitable[None]]
) -> None:
    """Closing with pays in flight: written ones end ambiguous, queued ones as not sent."""
    async with RawGateway(on_pay=lambda _c: None) as gateway:
        client = raw_client(gateway, max_concurrency=2)
        tasks = [asyncio.create_task(_pay(client, f"close-{n}")) for n in range(6)]
        await wait_until(lambda: gateway.held == 2)
        await client.aclose()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    written = [r for r in results if isinstance(r, AmbiguousPaymentError)]
    queued = [r for r in results if isinstance(r, ClientClosedError)]
    assert (len(written), len(queued)) == (2, 4), results
    assert sum(gateway.charges.values()) == 2
    assert not any(type(r) is RuntimeError for r in results)


async def test_aclose_during_a_batch_yields_an_outcome_for_every_started_item(
    raw_client: Callable[..., FreedomPayClient],
    wait_until: Callable[..., Awaitable[None]],
) -> None:
    """A batch whose client closes yields one outcome per item; charged ones are ambiguous."""
    async with RawGateway(on_pay=lambda _c: None) as gateway:
        client = raw_client(gateway, max_concurrency=2)
        requests = [
            PayRequest(customer=f"b-{n}", user_id="u", card_token="tok-1") for n in range(5)
        ]
        closer = asyncio.create_task(_close_when(client, lambda: gateway.held == 2, wait_until))
        outcomes = [o async for o in client.pay_invoices(requests, concurrency=2)]
        await closer
    assert len(outcomes) == 5
    by_customer = {o.request.customer: o for o in outcomes}
    for customer, outcome in by_customer.items():
        if gateway.charges[customer]:
            assert outcome.state == "ambiguous", (customer, outcome.error)
        else:
            assert isinstance(outcome.error, ClientClosedError), (customer, outcome.error)
    assert sum(gateway.charges.values()) == 2


async def _close_when(
    client: FreedomPayClient, ready: Callable[[], bool], wait_until: Callable[..., Awaitable[None]]
) -> None:
    await wait_until(ready, what="the pays the close must find in flight")
    await client.aclose()
