"""The client against the emulator over loopback: operations, lifecycle, loop binding, secrets."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from collections.abc import Callable
from decimal import Decimal

import aiohttp
import pytest

from freedompay_async import (
    ConfigurationError,
    FreedomPayClient,
    GatewayError,
    InvoiceInfo,
    InvoicePayment,
    InvoiceStatus,
    PayRequest,
    RetryPolicy,
    Timeouts,
)
from freedompay_async.testing import Fate, FreedomPayEmulator

SECRET = "emulator-secret-key"
TOKEN = "ef741cfc-f85e-41a0-84e6-2ba964912182"


async def test_init_then_pay_then_status_and_info(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """An invoice created by init is paid with the customer from its QR, then read back."""
    async with make_client() as client:
        init = await client.init_invoice(
            order_id="order-1", amount=Decimal("150.50"), description="Счет за услуги"
        )
        assert init.invoice_status is InvoiceStatus.NEW
        assert init.customer is not None
        assert init.qr_url is not None
        assert f"customer={init.customer}" in init.qr_url
        assert init.order_id == "order-1"
        assert isinstance(init.invoice_id, int)
        assert init.dt is not None
        assert init.dt.tzinfo is not None

        payment = await client.pay_invoice(customer=init.customer, user_id="u-1", card_token=TOKEN)
        assert payment.invoice_status is InvoiceStatus.OK
        assert payment.amount == Decimal("150.50")
        assert payment.currency == "KZT"
        assert payment.order_id == "order-1"
        assert payment.customer == init.customer
        assert payment.card_pan is not None
        assert "XX" in payment.card_pan
        assert emulator.charges(init.customer) == 1

        status = await client.invoice_status(customer=init.customer)
        assert status.invoice_status is InvoiceStatus.OK
        by_order = await client.invoice_status(order_id="order-1")
        assert by_order.invoice_id == status.invoice_id
        assert status.invoice_id is not None
        by_id = await client.invoice_status(invoice_id=status.invoice_id)
        assert by_id.order_id == "order-1"

        info = await client.invoice_info(customer=init.customer)
        assert isinstance(info, InvoiceInfo)
        assert info.description == "Счет за услуги"
        assert info.qr == init.qr
    assert emulator.stats.rejected_signatures == 0


@pytest.mark.parametrize("body_format", ["multipart", "json"])
@pytest.mark.parametrize("header_key", ["path", "uri"])
async def test_wire_switches_are_understood_by_the_emulator(
    emulator: FreedomPayEmulator,
    make_client: Callable[..., FreedomPayClient],
    body_format: str,
    header_key: str,
) -> None:
    """Both body formats and both JWS header keys produce requests whose signatures verify."""
    customer = emulator.create_invoice(amount=Decimal(100))
    async with make_client(body_format=body_format, jws_header_key=header_key) as client:
        payment = await client.pay_invoice(customer=customer, user_id="u", card_token=TOKEN)
    assert payment.invoice_status is InvoiceStatus.OK
    assert emulator.stats.rejected_signatures == 0
    record = emulator.requests[-1]
    assert record.operation == "pay"
    assert list(record.fields) == ["customer", "user_id", "card_token"]
    assert TOKEN not in repr(record)


async def test_wrong_secret_is_a_gateway_error(
    emulator: FreedomPayEmulator, client_for: Callable[..., FreedomPayClient]
) -> None:
    """A request signed with the wrong key is refused by the gateway, and nothing is charged."""
    customer = emulator.create_invoice()
    client = client_for(emulator, secret_key="wrong-key", retry=RetryPolicy.disabled())
    async with client:
        with pytest.raises(GatewayError) as caught:
            await client.pay_invoice(customer=customer, user_id="u", card_token=TOKEN)
    assert caught.value.error_code is not None
    assert emulator.stats.rejected_signatures == 1
    assert emulator.charges(customer) == 0
    assert "wrong-key" not in str(caught.value)


async def test_declined_card_is_data_not_an_exception(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """A declined payment returns FAILED with the gateway's error code."""
    customer = emulator.create_invoice(fate=Fate.declined(error_code=4001))
    async with make_client() as client:
        payment = await client.pay_invoice(customer=customer, user_id="u", card_token=TOKEN)
    assert payment.invoice_status is InvoiceStatus.FAILED
    assert payment.error_code == 4001


async def test_pending_then_paid_is_polled_to_the_end(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """wait=True polls a pending pay until it is paid; wait=False returns it pending."""
    first = emulator.create_invoice(fate=Fate.pending_then_paid(polls=2))
    second = emulator.create_invoice(fate=Fate.pending_then_paid(polls=2))
    async with make_client() as client:
        paid = await client.pay_invoice(customer=first, user_id="u", card_token=TOKEN)
        pending = await client.pay_invoice(
            customer=second, user_id="u", card_token=TOKEN, wait=False
        )
    assert paid.invoice_status is InvoiceStatus.OK
    assert pending.invoice_status is InvoiceStatus.PROCESS
    assert emulator.charges(first) == 1
    assert emulator.charges(second) == 1


async def test_gateway_error_on_pay_is_raised_with_its_code(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """A scripted gateway refusal raises GatewayError carrying code and description."""
    customer = emulator.create_invoice(fate=Fate.gateway_error(code=600, description="General"))
    async with make_client() as client:
        with pytest.raises(GatewayError) as caught:
            await client.pay_invoice(customer=customer, user_id="u", card_token=TOKEN)
    assert caught.value.error_code == 600
    assert caught.value.error_description == "General"
    assert caught.value.attempts == 1


async def test_no_unclosed_session_warning_after_async_with(
    make_client: Callable[..., FreedomPayClient], emulator: FreedomPayEmulator
) -> None:
    """A client used as a context manager closes its session: no ResourceWarning on collection."""
    customer = emulator.create_invoice()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with make_client() as client:
            await client.pay_invoice(customer=customer, user_id="u", card_token=TOKEN)
        del client
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


async def test_leaked_open_client_warns(make_client: Callable[..., FreedomPayClient]) -> None:
    """A client collected with its own session still open emits a ResourceWarning."""
    client = make_client()
    await client.__aenter__()
    transport = client._transport
    with pytest.warns(ResourceWarning, match="unclosed"):
        client.__del__()
    await transport.close()


async def test_use_after_close_is_a_clear_error(
    make_client: Callable[..., FreedomPayClient],
) -> None:
    """Every call after aclose() raises RuntimeError saying the client is closed."""
    client = make_client()
    async with client:
        pass
    await client.aclose()  # idempotent
    assert client.closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.invoice_status(customer="c")
    with pytest.raises(RuntimeError, match="closed"):
        await client.__aenter__()


async def test_caller_session_is_used_and_left_open(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """A caller-owned session carries the requests and stays open after the client closes."""
    customer = emulator.create_invoice()
    async with aiohttp.ClientSession() as session:
        async with make_client(session=session) as client:
            await client.pay_invoice(customer=customer, user_id="u", card_token=TOKEN)
        assert not session.closed
    assert emulator.charges(customer) == 1


def test_client_is_bound_to_one_loop(make_client: Callable[..., FreedomPayClient]) -> None:
    """A client opened in one event loop refuses to run in another."""
    client = make_client()

    async def open_only() -> None:
        await client.__aenter__()

    async def use() -> None:
        await client.invoice_status(customer="c")

    asyncio.run(open_only())
    try:
        with pytest.raises(RuntimeError, match="event loop"):
            asyncio.run(use())
    finally:
        asyncio.run(client._transport.close())
        client._state = client._state.__class__.CLOSED


def test_constructor_needs_no_loop_and_validates() -> None:
    """Options are validated at construction, before any loop exists, naming the option."""
    FreedomPayClient("123", "k")  # no running loop needed
    cases: list[tuple[dict[str, object], str]] = [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"body_format": "xml"}, "body_format"),
        ({"jws_header_key": "url"}, "jws_header_key"),
        ({"base_url": "not a url"}, "base_url"),
        ({"timeouts": Timeouts(connect=1.0, read=1.0, pool=1.0), "retry": "fast"}, "retry"),
    ]
    for options, name in cases:
        with pytest.raises(ConfigurationError, match=name):
            FreedomPayClient("123", "k", **options)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="secret_key"):
        FreedomPayClient("123", "")


async def test_invalid_arguments_send_nothing(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """Bad amounts, lookups and empty tokens are refused as ConfigurationError before sending."""
    async with make_client() as client:
        with pytest.raises(ConfigurationError, match="amount"):
            await client.init_invoice(order_id="o", amount=10.5, description="d")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="two decimals"):
            await client.init_invoice(order_id="o", amount=Decimal("1.001"), description="d")
        with pytest.raises(ConfigurationError, match="exactly one"):
            await client.invoice_status(customer="a", order_id="b")
        with pytest.raises(ConfigurationError, match="exactly one"):
            await client.invoice_info()
        with pytest.raises(ConfigurationError, match="card_token"):
            await client.pay_invoice(customer="c", user_id="u", card_token="")
    assert emulator.stats.requests == 0


async def test_secrets_stay_out_of_repr_errors_and_debug_logs(
    emulator: FreedomPayEmulator,
    make_client: Callable[..., FreedomPayClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The secret key, card token and signature appear in no repr, exception text or log line."""
    customer = emulator.create_invoice(fate=Fate.gateway_error(code=600))
    caplog.set_level(logging.DEBUG, logger="freedompay_async")
    async with make_client() as client:
        assert SECRET not in repr(client)
        with pytest.raises(GatewayError) as caught:
            await client.pay_invoice(customer=customer, user_id="u", card_token=TOKEN)
    request = PayRequest(customer=customer, user_id="u", card_token=TOKEN)
    signature = emulator.requests[-1].jws_header
    texts = [repr(client), str(caught.value), repr(caught.value), repr(request), caplog.text]
    for text in texts:
        assert SECRET not in text
        assert TOKEN not in text
    assert "X-JWS-Signature" not in caplog.text
    assert signature is not None
    assert any("customer=" + customer in record.getMessage() for record in caplog.records)


async def test_payment_model_is_frozen(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """Returned models cannot be mutated."""
    customer = emulator.create_invoice()
    async with make_client() as client:
        payment = await client.pay_invoice(customer=customer, user_id="u", card_token=TOKEN)
    assert isinstance(payment, InvoicePayment)
    with pytest.raises(AttributeError):
        payment.amount = Decimal(1)  # type: ignore[misc]


async def test_rate_limiter_timeouts_spend_attempts(
    emulator: FreedomPayEmulator, make_client: Callable[..., FreedomPayClient]
) -> None:
    """A rate limiter that always times out ends the call after RetryPolicy.attempts, unsent."""
    from freedompay_async import PoolTimeout

    class Refusing:
        calls = 0

        async def acquire(self) -> None:
            Refusing.calls += 1
            raise PoolTimeout("no token in time; not sent")

    customer = emulator.create_invoice()
    retry = RetryPolicy(attempts=3, deadline=1000.0, budget=None, breaker_threshold=None)
    async with make_client(rate_limiter=Refusing(), retry=retry) as client:
        with pytest.raises(PoolTimeout) as caught:
            await client.pay_invoice(customer=customer, user_id="u", card_token=TOKEN)
    assert caught.value.attempts == 3
    assert Refusing.calls == 3
    assert emulator.charges(customer) == 0
    assert emulator.stats.requests == 0
