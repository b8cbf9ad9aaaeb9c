"""Bad input is refused before anything is sent, naming the field; a batch goes on around it."""

from __future__ import annotations

import asyncio
import collections
from decimal import Decimal

import pytest
from hostile_http import PAY_PATH, RawServer, Request, http_reply, xml

from freedompay_async import (
    ConfigurationError,
    FreedomPayClient,
    PayRequest,
    RetryPolicy,
    Timeouts,
)
from freedompay_async._config import _Credentials, _WireOptions, check_base_url
from freedompay_async._models import MAX_AMOUNT, parse_amount
from freedompay_async._protocol import Operation, build_request
from freedompay_async._validate import MAX_INT

CREDENTIALS = _Credentials(merchant_id="1", secret_key="k" * 32)
GOOD_PAY = {"customer": "c-1", "user_id": "u-1", "card_token": "tok-1234567890"}


def _pay(**changes: str) -> None:
    fields = {**GOOD_PAY, **changes}
    build_request(Operation.PAY, list(fields.items()), credentials=CREDENTIALS, wire=_WireOptions())


@pytest.mark.parametrize("field", ["customer", "user_id", "card_token"])
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("a\ud800b", "lone surrogate"),
        ("a\x00b", "NUL"),
        ("a\r\nb", "control character"),
        ("a\nforged log line", "control character"),
        ("a\x1b[31mb", "control character"),
        ("", "empty"),
        ("   ", "whitespace only"),
        ("x" * 256, "at most 255"),
    ],
)
def test_bad_pay_field_is_refused_naming_it(field: str, bad: str, reason: str) -> None:
    """Each pay field refuses surrogates, NUL, control characters, blank and over-long values."""
    with pytest.raises(ConfigurationError, match=reason) as caught:
        _pay(**{field: bad})
    assert str(caught.value).startswith(field)
    if len(bad) > 3:
        assert bad not in str(caught.value)


@pytest.mark.parametrize("token", ["tok 123", "tok\t123", "\u00a0tok123", " tok-123"])
def test_card_token_with_whitespace_is_refused(token: str) -> None:
    """A card token holding whitespace of any kind is refused (tokens are opaque)."""
    with pytest.raises(ConfigurationError, match="card_token"):
        _pay(card_token=token)


def test_good_values_pass_and_the_limits_are_inclusive() -> None:
    """Non-ASCII text, 255-character tokens and a description with line breaks are accepted."""
    _pay(customer="c" * 255, user_id="Ерлан-😀", card_token="t" * 255)
    build_request(
        Operation.INIT,
        [
            ("order_id", "o" * 50),
            ("merchant_id", "1"),
            ("amount", MAX_AMOUNT),
            ("description", "line one\nline two\ttabbed\r\nthree"),
            ("invoice_method", "qr"),
            ("currency", "KZT"),
        ],
        credentials=CREDENTIALS,
        wire=_WireOptions(),
    )


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("description", "a\x00b", "NUL"),
        ("description", "a\ud800b", "lone surrogate"),
        ("description", "a\x07b", "control character"),
        ("order_id", "o" * 51, "at most 50"),
        ("order_id", "o\n1", "control character"),
        ("currency", "KZTX", "at most 3"),
        ("amount", MAX_AMOUNT + Decimal("0.01"), "at most 99999999"),
        ("amount", Decimal(10) ** 1000, "at most 99999999"),
        ("amount", Decimal("NaN"), "positive finite"),
    ],
)
def test_bad_init_field_is_refused_naming_it(field: str, value: object, reason: str) -> None:
    """Init fields are checked by the same rules, amounts against the documented maximum."""
    fields: dict[str, object] = {
        "order_id": "o-1",
        "merchant_id": "1",
        "amount": Decimal(100),
        "description": "d",
        "invoice_method": "qr",
        "currency": "KZT",
        field: value,
    }
    with pytest.raises(ConfigurationError, match=reason) as caught:
        build_request(
            Operation.INIT,
            list(fields.items()),  # type: ignore[arg-type]
            credentials=CREDENTIALS,
            wire=_WireOptions(),
        )
    assert str(caught.value).startswith(field)


@pytest.mark.parametrize("value", [0, -1, MAX_INT + 1])
def test_invoice_id_out_of_range_is_refused(value: int) -> None:
    """An integer field outside 1..2**63-1 is refused."""
    with pytest.raises(ConfigurationError, match="invoice_id"):
        build_request(
            Operation.STATUS,
            [("merchant_id", "1"), ("invoice_id", value)],
            credentials=CREDENTIALS,
            wire=_WireOptions(),
        )


@pytest.mark.parametrize("amount", [10**1000, MAX_AMOUNT + 1, Decimal("1e9")])
def test_amount_above_the_maximum_is_refused(amount: object) -> None:
    """parse_amount refuses amounts above MAX_AMOUNT, whatever their size."""
    with pytest.raises(ConfigurationError, match="at most"):
        parse_amount(amount)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:99999", "port"),
        ("http://127.0.0.1:0", "port"),
        ("http://127.0.0.1:abc", "port"),
        ("ftp://api.freedompay.kz", "http:// or https://"),
        ("api.freedompay.kz", "http:// or https://"),
        ("http://", "host"),
        ("https://user:pass@api.freedompay.kz", "credentials"),
        ("https://api.freedompay.kz/?x=1", "query"),
        ("https://api.freedompay.kz/#frag", "fragment"),
        ("https://api.freedompay.kz\r\nX: y", "control"),
        ("https://api .freedompay.kz", "whitespace"),
    ],
)
def test_invalid_base_url_is_refused_by_the_constructor(url: str, reason: str) -> None:
    """The client refuses a base_url with a bad port, scheme, host or extra parts."""
    with pytest.raises(ConfigurationError, match=reason) as caught:
        FreedomPayClient("1", "k" * 32, base_url=url)
    assert "base_url" in str(caught.value)


def test_valid_base_urls_are_kept() -> None:
    """Ports, IPv6 hosts and path prefixes are accepted; a trailing slash is dropped."""
    assert check_base_url("https://api.freedompay.kz/") == "https://api.freedompay.kz"
    assert check_base_url("http://[::1]:8080/proxy") == "http://[::1]:8080/proxy"
    assert check_base_url("http://127.0.0.1:65535") == "http://127.0.0.1:65535"


async def test_bad_pay_sends_nothing() -> None:
    """A pay with a lone surrogate fails before a byte is sent, and later pays go out."""

    async def handler(request: Request, writer: asyncio.StreamWriter) -> bool:
        del request
        writer.write(http_reply(body=xml(status="ok", invoice_status="ok", order_id="o")))
        await writer.drain()
        return True

    async with RawServer(handler) as server:
        async with FreedomPayClient("1", "k" * 32, base_url=server.base_url) as client:
            with pytest.raises(ConfigurationError, match="user_id"):
                await client.pay_invoice(customer="c-1", user_id="\ud800", card_token="tok-12345")
            assert server.requests == []
            payment = await client.pay_invoice(customer="c-1", user_id="u", card_token="tok-12345")
        assert payment.invoice_status == "ok"
        assert server.count(PAY_PATH) == 1


async def test_batch_of_200_with_a_lone_surrogate_pays_the_199_once() -> None:
    """One item with a lone surrogate gets its own error; the other 199 are charged once each."""
    charges: collections.Counter[str] = collections.Counter()

    async def handler(request: Request, writer: asyncio.StreamWriter) -> bool:
        customer = request.field("customer") or ""
        if request.path == PAY_PATH:
            charges[customer] += 1
        await asyncio.sleep(0.001)
        body = xml(status="ok", invoice_status="ok", order_id=customer)
        writer.write(http_reply(body=body))
        await writer.drain()
        return True

    bad_index = 137
    requests = [
        PayRequest(
            customer=f"c-{index}",
            user_id="u\ud800" if index == bad_index else f"u-{index}",
            card_token=f"tok-{index:08d}",
            key=index,
        )
        for index in range(200)
    ]
    async with RawServer(handler) as server:
        client = FreedomPayClient(
            "1",
            "k" * 32,
            base_url=server.base_url,
            max_concurrency=8,
            retry=RetryPolicy(attempts=2, deadline=30.0),
            timeouts=Timeouts(connect=5.0, read=10.0, pool=30.0),
        )
        async with client:
            outcomes = [outcome async for outcome in client.pay_invoices(requests)]
    assert len(outcomes) == 200
    by_key = {outcome.request.key: outcome for outcome in outcomes}
    assert sorted(by_key) == list(range(200))
    bad = by_key.pop(bad_index)
    assert bad.state == "error"
    assert isinstance(bad.error, ConfigurationError)
    assert "user_id" in str(bad.error)
    assert bad.attempts == 0
    assert all(outcome.state == "paid" for outcome in by_key.values())
    assert charges == {f"c-{index}": 1 for index in range(200) if index != bad_index}
