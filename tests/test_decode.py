"""Reply decoding: recorded fixtures field by field, every refusal rule, QR decoding, order."""

from __future__ import annotations

import base64
import pickle
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from freedompay_async._decode import (
    decode_info,
    decode_init,
    decode_payment,
    decode_qr,
    parse_ordered,
)
from freedompay_async._exceptions import DecodeError, GatewayError, HTTPStatusError
from freedompay_async._models import InvoiceInfo, InvoiceInit, InvoicePayment, InvoiceStatus
from freedompay_async._protocol import Operation, RawResponse

if TYPE_CHECKING:
    from collections.abc import Callable

FIXTURES = Path(__file__).parent / "fixtures"
CUSTOMER = "kzobd2vgp17214143761774775392946"
PAY_URL = f"https://customer.freedompay.kz/pay.html?customer={CUSTOMER}"
ALMATY = timezone(timedelta(hours=5))


def fixture(name: str) -> bytes:
    """Read a recorded reply."""
    return (FIXTURES / f"{name}.xml").read_bytes()


def reply(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> RawResponse:
    """Wrap bytes as the transport would hand them over."""
    return RawResponse(
        status=status, headers=headers or {"content-type": "application/xml"}, body=body
    )


def doc(*children: str, root: str = "root") -> bytes:
    """Build a reply from child element strings."""
    return f"<?xml version='1.0' encoding='UTF-8'?><{root}>{''.join(children)}</{root}>".encode()


def b64(text: str) -> str:
    """Standard base64 of a UTF-8 string."""
    return base64.b64encode(text.encode()).decode()


OK_PAY = ("<status>ok</status>", "<invoice_status>ok</invoice_status>")


# --- recorded fixtures, field by field -------------------------------------------------------


def test_pay_ok_decodes_every_field() -> None:
    """A paid pay reply yields every field converted, empty elements as None."""
    payment = decode_payment(reply(fixture("pay_ok")), customer=CUSTOMER)
    assert type(payment) is InvoicePayment
    assert payment.invoice_status is InvoiceStatus.OK
    assert payment.invoice_status_raw == "ok"
    assert payment.order_id == "00102"
    assert payment.invoice_id == 1721414376
    assert payment.customer == CUSTOMER
    assert payment.amount == Decimal("1500.00")
    assert str(payment.amount) == "1500.00"
    assert payment.currency == "KZT"
    assert payment.card_pan == "5483-18XX-XXXX-0293"
    assert payment.error_code is None
    assert payment.error_description is None
    assert payment.dt == datetime(2024, 7, 19, 23, 39, 36, tzinfo=ALMATY)
    assert payment.dt is not None
    assert payment.dt.utcoffset() == timedelta(hours=5)
    assert payment.is_terminal


def test_pay_failed_decodes_decline_as_data() -> None:
    """A declined payment is data: an `ok` reply with `failed` status and its error code."""
    payment = decode_payment(reply(fixture("pay_failed")))
    assert payment.invoice_status is InvoiceStatus.FAILED
    assert payment.invoice_status_raw == "failed"
    assert payment.order_id == "00103"
    assert payment.invoice_id == 1721414377
    assert payment.customer is None
    assert payment.amount == Decimal("2490.50")
    assert payment.currency == "KZT"
    assert payment.card_pan == "4405-63XX-XXXX-1448"
    assert payment.error_code == 463
    assert payment.error_description == "Insufficient funds on the card"
    assert payment.dt == datetime(2024, 7, 19, 23, 41, 2, tzinfo=ALMATY)
    assert payment.is_terminal


def test_pay_process_leaves_absent_fields_none() -> None:
    """A pending reply without invoice_id, card_pan and currency decodes them as None."""
    payment = decode_payment(reply(fixture("pay_process")), customer=CUSTOMER)
    assert payment.invoice_status is InvoiceStatus.PROCESS
    assert payment.invoice_status_raw == "process"
    assert payment.order_id == "00104"
    assert payment.invoice_id is None
    assert payment.customer == CUSTOMER
    assert payment.amount == Decimal(780)
    assert payment.currency is None
    assert payment.card_pan is None
    assert payment.error_code is None
    assert payment.error_description is None
    assert payment.dt == datetime(2024, 7, 19, 23, 42, 10, tzinfo=UTC)
    assert not payment.is_terminal


def test_pay_new_decodes_as_not_terminal() -> None:
    """A `new` reply decodes to NEW with its amount and a UTC timestamp."""
    payment = decode_payment(reply(fixture("pay_new")))
    assert payment.invoice_status is InvoiceStatus.NEW
    assert payment.invoice_status_raw == "new"
    assert payment.order_id == "00105"
    assert payment.invoice_id is None
    assert payment.amount == Decimal("99.99")
    assert payment.currency is None
    assert payment.card_pan is None
    assert payment.dt == datetime(2024, 7, 19, 18, 43, tzinfo=UTC)
    assert not payment.is_terminal


def test_status_ok_decodes_with_the_status_operation() -> None:
    """A status reply decodes like pay, and the given customer is copied into the model."""
    payment = decode_payment(
        reply(fixture("status_ok")), operation=Operation.STATUS, customer=CUSTOMER
    )
    assert payment == InvoicePayment(
        invoice_status=InvoiceStatus.OK,
        invoice_status_raw="ok",
        order_id="00102",
        invoice_id=1721414376,
        customer=CUSTOMER,
        amount=Decimal("1500.00"),
        currency="KZT",
        card_pan="5483-18XX-XXXX-0293",
        error_code=None,
        error_description=None,
        dt=datetime(2024, 7, 19, 23, 45, 12, tzinfo=ALMATY),
    )


def test_init_ok_decodes_qr_url_and_customer() -> None:
    """An init reply yields the invoice, the raw QR, its URL and the customer token inside it."""
    init = decode_init(reply(fixture("init_ok")))
    assert type(init) is InvoiceInit
    assert init.invoice_id == 1721414376
    assert init.invoice_status is InvoiceStatus.NEW
    assert init.invoice_status_raw == "new"
    assert init.qr == b64(PAY_URL)
    assert init.qr_url == PAY_URL
    assert init.customer == CUSTOMER
    assert init.order_id is None
    assert init.dt == datetime(2024, 7, 19, 23, 39, 21, tzinfo=ALMATY)


def test_info_ok_decodes_description_qr_and_customer_from_qr() -> None:
    """An info reply yields payment fields, the Cyrillic description and the QR's customer."""
    info = decode_info(reply(fixture("info_ok")))
    assert type(info) is InvoiceInfo
    assert info.invoice_status is InvoiceStatus.NEW
    assert info.invoice_status_raw == "new"
    assert info.order_id == "828cf71d-a447-4a67-a149-c1df8bc197ca"
    assert info.invoice_id == 1721414376
    assert info.amount == Decimal(100)
    assert info.currency == "KZT"
    assert info.card_pan is None
    assert info.error_code is None
    assert info.description == "Счет за услуги"
    assert info.qr == b64(PAY_URL)
    assert info.qr_url == PAY_URL
    assert info.customer == CUSTOMER
    assert info.dt == datetime(2024, 7, 19, 23, 40, 5, tzinfo=ALMATY)


def test_info_customer_argument_wins_over_the_qr() -> None:
    """The customer the call used is kept even when the QR names another one."""
    info = decode_info(reply(fixture("info_ok")), customer="asked-for")
    assert info.customer == "asked-for"
    assert info.qr_url == PAY_URL


def test_info_reads_the_configured_qr_parameter() -> None:
    """`qr_customer_param` selects which query parameter holds the token."""
    body = doc(
        *OK_PAY,
        f"<invoice_methods><qr>{b64('https://pay.example/p?c=tok1&customer=x')}</qr></invoice_methods>",
    )
    assert decode_info(reply(body), qr_customer_param="c").customer == "tok1"
    assert decode_init(reply(body), qr_customer_param="c").customer == "tok1"


def test_error_9998_with_response_root_raises_gateway_error() -> None:
    """An error reply under a `<response>` root raises GatewayError with code and description."""
    with pytest.raises(GatewayError) as info:
        decode_payment(reply(fixture("error_9998")))
    error = info.value
    assert error.error_code == 9998
    assert error.error_description == "Incorrect merchant identifier"
    assert error.operation == "pay"
    assert "9998" in str(error)
    assert "Incorrect merchant identifier" in str(error)
    assert not isinstance(error, DecodeError)


@pytest.mark.parametrize(
    ("decoder", "operation"),
    [
        (decode_init, "init"),
        (lambda raw: decode_payment(raw, operation=Operation.STATUS), "status"),
        (decode_info, "info"),
    ],
    ids=["init", "status", "info"],
)
def test_error_1000_raises_gateway_error_for_every_operation(
    decoder: Callable[[RawResponse], object], operation: str
) -> None:
    """Error 1000 raises GatewayError naming the operation, whatever the decoder."""
    with pytest.raises(GatewayError) as info:
        decoder(reply(fixture("error_1000")))
    assert info.value.error_code == 1000
    assert info.value.error_description == "Internal error"
    assert info.value.operation == operation
    assert str(info.value).startswith(f"{operation} ")


def test_error_without_code_or_description_still_raises_gateway_error() -> None:
    """A bare `status=error` raises GatewayError with None code and description."""
    with pytest.raises(GatewayError) as info:
        decode_payment(reply(doc("<status>error</status>")))
    assert info.value.error_code is None
    assert info.value.error_description is None
    assert "no description" in str(info.value)


def test_gateway_error_message_caps_a_long_description() -> None:
    """The message quotes at most 200 characters of the description; the attribute keeps it all."""
    long = "x" * 500
    body = doc(
        "<status>error</status><error_code>7</error_code>",
        f"<error_description>{long}</error_description>",
    )
    with pytest.raises(GatewayError) as info:
        decode_payment(reply(body))
    assert info.value.error_description == long
    assert "x" * 201 not in str(info.value)
    assert "x" * 200 in str(info.value)


def test_seed_sample_is_refused_for_its_placeholder_status() -> None:
    """The documentation's literal sample says `status=string`, which is neither ok nor error."""
    with pytest.raises(DecodeError) as info:
        decode_payment(reply(fixture("seed_sample")))
    assert info.value.tag == "status"
    assert "string" not in str(info.value)


def test_seed_sample_with_ok_status_decodes_its_placeholders() -> None:
    """The sample with `status=ok` decodes: unknown status kept raw, zeros, `Z` as UTC."""
    body = fixture("seed_sample").replace(b"<status>string</status>", b"<status>ok</status>")
    payment = decode_payment(reply(body))
    assert payment.invoice_status is InvoiceStatus.UNKNOWN
    assert payment.invoice_status_raw == "string"
    assert payment.order_id == "string"
    assert payment.invoice_id == 0
    assert payment.error_code == 0
    assert payment.error_description == "string"
    assert payment.card_pan == "string"
    assert payment.amount == Decimal(0)
    assert payment.currency == "string"
    assert payment.dt == datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC)


# --- tolerated variations --------------------------------------------------------------------


def test_init_without_invoice_status_defaults_to_new() -> None:
    """Init tolerates a missing invoice_status (NEW, raw None) and a missing QR."""
    init = decode_init(reply(doc("<status>ok</status><invoice_id>5</invoice_id>")))
    assert init.invoice_status is InvoiceStatus.NEW
    assert init.invoice_status_raw is None
    assert init.qr is None
    assert init.qr_url is None
    assert init.customer is None
    assert init.invoice_id == 5
    assert init.dt is None


def test_init_keeps_order_id_and_unknown_status() -> None:
    """Init takes order_id from the reply and keeps an unknown status raw."""
    body = doc("<status>ok</status><invoice_status>paused</invoice_status><order_id>A-1</order_id>")
    init = decode_init(reply(body))
    assert init.order_id == "A-1"
    assert init.invoice_status is InvoiceStatus.UNKNOWN
    assert init.invoice_status_raw == "paused"


def test_init_with_undecodable_qr_keeps_the_raw_value() -> None:
    """A QR that is not base64 of a URL leaves qr_url and customer None and keeps qr."""
    body = doc("<status>ok</status><invoice_methods><qr>not base64!</qr></invoice_methods>")
    init = decode_init(reply(body))
    assert init.qr == "not base64!"
    assert init.qr_url is None
    assert init.customer is None


def test_empty_invoice_methods_gives_no_qr() -> None:
    """An empty `<invoice_methods/>` means no QR."""
    info = decode_info(reply(doc(*OK_PAY, "<invoice_methods/>")))
    assert info.qr is None
    assert info.qr_url is None
    assert info.customer is None


def test_unknown_tags_attributes_and_namespaces_are_ignored() -> None:
    """Extra tags, attributes, namespaces, comments and CDATA do not disturb decoding."""
    body = (
        b'<?xml version="1.0"?><response xmlns="urn:freedompay"><status lang="en">ok</status>'
        b"<!-- a comment --><extra><deep>1</deep><deep>2</deep></extra><extra/>"
        b'<invoice_status xmlns:p="urn:x">ok</invoice_status>'
        b"<amount><![CDATA[10.50]]></amount><p:currency>KZT</p:currency></response>"
    )
    payment = decode_payment(reply(body))
    assert payment.invoice_status is InvoiceStatus.OK
    assert payment.amount == Decimal("10.50")
    assert payment.currency is None


def test_whitespace_around_values_is_stripped() -> None:
    """Pretty-printed values decode without their surrounding whitespace."""
    body = doc(
        "<status>\n ok\n</status><invoice_status> ok </invoice_status>",
        "<amount> 5 </amount><dt>\n2024-01-01T00:00:00+00:00\n</dt><currency>  </currency>",
    )
    payment = decode_payment(reply(body))
    assert payment.amount == Decimal(5)
    assert payment.dt == datetime(2024, 1, 1, tzinfo=UTC)
    assert payment.currency is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("-12.50", Decimal("-12.50")), ("0", Decimal(0)), ("007", Decimal(7))],
    ids=["negative", "zero", "leading-zeros"],
)
def test_plain_decimal_amounts_are_accepted(text: str, expected: Decimal) -> None:
    """Plain decimal strings, signed or not, become exact Decimals."""
    payment = decode_payment(reply(doc(*OK_PAY, f"<amount>{text}</amount>")))
    assert payment.amount == expected


def test_negative_integers_are_accepted() -> None:
    """Integers may carry a leading minus."""
    payment = decode_payment(reply(doc(*OK_PAY, "<error_code>-1</error_code>")))
    assert payment.error_code == -1


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_every_2xx_status_is_decoded(status: int) -> None:
    """Any 2xx status is a reply to decode."""
    assert decode_payment(reply(fixture("pay_ok"), status=status)).invoice_id == 1721414376


def test_max_bytes_allows_a_body_of_exactly_the_cap() -> None:
    """The cap is inclusive: a body of exactly max_bytes is decoded."""
    body = fixture("pay_ok")
    assert decode_payment(reply(body), max_bytes=len(body)).order_id == "00102"


# --- refusals ------------------------------------------------------------------------------

PAY_OK = fixture("pay_ok")
UTF16_DOCTYPE = (
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE root><root><status>ok</status></root>'
).encode("utf-16")

INIT, PAY, INFO = decode_init, decode_payment, decode_info
ERR = "<status>error</status>"
OK = "<status>ok</status>"
MALFORMED: list[tuple[str, Callable[[RawResponse], object], bytes, str | None]] = [
    ("not-xml", PAY, b"this is not xml", None),
    ("json", PAY, b'{"status": "ok"}', None),
    ("empty", PAY, b"", None),
    ("whitespace-only", PAY, b"  \n", None),
    ("truncated", PAY, PAY_OK[: len(PAY_OK) // 2], None),
    ("two-roots", PAY, b"<root><status>ok</status></root><root/>", None),
    ("unknown-encoding", PAY, b'<?xml version="1.0" encoding="bogus"?><root/>', None),
    ("invalid-utf8", PAY, b"<root><status>\xff</status></root>", None),
    ("doctype", PAY, b"<!DOCTYPE root><root><status>ok</status></root>", None),
    ("doctype-lowercase", PAY, b"<!doctype root><root/>", None),
    ("entity", PAY, b'<!DOCTYPE r [<!ENTITY a "b">]><r><status>&a;</status></r>', None),
    ("entity-alone", PAY, b'<root><!ENTITY a "b"><status>ok</status></root>', None),
    ("utf16-doctype", PAY, UTF16_DOCTYPE, None),
    ("text-root", PAY, b"<root>ok</root>", "root"),
    ("empty-root", PAY, b"<response/>", "response"),
    ("mixed-root", PAY, doc("stray text", *OK_PAY), "root"),
    ("missing-status", PAY, doc("<invoice_status>ok</invoice_status>"), "status"),
    ("empty-status", PAY, doc("<status/><invoice_status>ok</invoice_status>"), "status"),
    ("status-uppercase", PAY, doc("<status>OK</status>"), "status"),
    ("status-repeated", PAY, doc(*OK_PAY, OK), "status"),
    ("status-nested", PAY, doc("<status><ok/></status>"), "status"),
    ("missing-invoice-status", PAY, doc(OK), "invoice_status"),
    ("missing-invoice-status-info", INFO, doc(OK), "invoice_status"),
    ("repeated-amount", PAY, doc(*OK_PAY, "<amount>1</amount><amount>2</amount>"), "amount"),
    ("repeated-order-id", INIT, doc(OK, "<order_id>1</order_id><order_id/>"), "order_id"),
    ("nested-amount", PAY, doc(*OK_PAY, "<amount><value>1</value></amount>"), "amount"),
    ("amount-nan", PAY, doc(*OK_PAY, "<amount>NaN</amount>"), "amount"),
    ("amount-infinity", PAY, doc(*OK_PAY, "<amount>Infinity</amount>"), "amount"),
    ("amount-exponent", PAY, doc(*OK_PAY, "<amount>1e3</amount>"), "amount"),
    ("amount-comma", PAY, doc(*OK_PAY, "<amount>12,50</amount>"), "amount"),
    ("amount-underscore", PAY, doc(*OK_PAY, "<amount>1_000</amount>"), "amount"),
    ("amount-word", PAY, doc(*OK_PAY, "<amount>free</amount>"), "amount"),
    ("amount-arabic-digits", PAY, doc(*OK_PAY, "<amount>\u0661\u0662</amount>"), "amount"),
    ("dt-naive", PAY, doc(*OK_PAY, "<dt>2024-07-19T23:39:36</dt>"), "dt"),
    ("dt-date-only", PAY, doc(*OK_PAY, "<dt>2024-07-19</dt>"), "dt"),
    ("dt-garbage", PAY, doc(*OK_PAY, "<dt>yesterday</dt>"), "dt"),
    ("dt-init", INIT, doc(OK, "<dt>19.07.2024 23:39</dt>"), "dt"),
    ("invoice-id-letters", PAY, doc(*OK_PAY, "<invoice_id>12a</invoice_id>"), "invoice_id"),
    ("invoice-id-float", PAY, doc(*OK_PAY, "<invoice_id>1.0</invoice_id>"), "invoice_id"),
    ("invoice-id-init", INIT, doc(OK, "<invoice_id>x</invoice_id>"), "invoice_id"),
    ("error-code-ok-reply", PAY, doc(*OK_PAY, "<error_code>E1</error_code>"), "error_code"),
    ("error-code-error-reply", PAY, doc(ERR, "<error_code>oops</error_code>"), "error_code"),
    (
        "error-description-repeated",
        PAY,
        doc(ERR, "<error_description/><error_description/>"),
        "error_description",
    ),
    (
        "invoice-methods-repeated",
        INIT,
        doc(OK, "<invoice_methods/><invoice_methods/>"),
        "invoice_methods",
    ),
    (
        "invoice-methods-text",
        INFO,
        doc(*OK_PAY, "<invoice_methods>abc</invoice_methods>"),
        "invoice_methods",
    ),
    ("qr-repeated", INIT, doc(OK, "<invoice_methods><qr>a</qr><qr>b</qr></invoice_methods>"), "qr"),
    (
        "description-nested",
        INFO,
        doc(*OK_PAY, "<description><p>x</p></description>"),
        "description",
    ),
]


@pytest.mark.parametrize(
    ("decoder", "body", "tag"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_reply_raises_decode_error_naming_the_tag(
    decoder: Callable[[RawResponse], object], body: bytes, tag: str | None
) -> None:
    """Each refusal rule raises DecodeError with the tag at fault and the reply's context."""
    headers = {"content-type": "text/html", "x-request-id": "r1"}
    with pytest.raises(DecodeError) as info:
        decoder(reply(body, headers=headers))
    error = info.value
    assert error.tag == tag
    assert error.status_code == 200
    assert error.headers == headers
    assert error.body == body[:2048]
    assert error.operation in {"init", "pay", "info"}
    assert isinstance(error, ValueError)


def test_parser_failures_are_chained_from_the_parser_exception() -> None:
    """A parse failure keeps the parser's exception as its cause."""
    with pytest.raises(DecodeError) as info:
        decode_payment(reply(b"<root><status>ok</root>"))
    assert info.value.__cause__ is not None
    assert "not well-formed" in str(info.value)


def test_oversized_reply_is_refused_before_parsing() -> None:
    """A body over max_bytes is refused with a message giving the cap, even if it is fine XML."""
    with pytest.raises(DecodeError, match="reply larger than 64 bytes") as info:
        decode_payment(reply(PAY_OK), max_bytes=64)
    assert info.value.tag is None
    assert info.value.__cause__ is None


def test_doctype_is_refused_before_parsing() -> None:
    """A DOCTYPE is refused by the byte check, so no parser exception is chained."""
    with pytest.raises(DecodeError, match="DOCTYPE") as info:
        decode_payment(reply(b"<!DocType root><root/>"))
    assert info.value.__cause__ is None


def test_doctype_in_utf16_is_refused_by_the_parser() -> None:
    """A DOCTYPE the byte check cannot see (UTF-16) is refused when expat reports it."""
    assert b"DOCTYPE" not in UTF16_DOCTYPE
    with pytest.raises(DecodeError, match="DOCTYPE") as info:
        decode_payment(reply(UTF16_DOCTYPE))
    assert info.value.__cause__ is not None


def test_utf16_reply_without_doctype_decodes() -> None:
    """UTF-16 itself is not refused: only what it could hide is."""
    body = doc(*OK_PAY).decode().replace("UTF-8", "UTF-16").encode("utf-16")
    assert decode_payment(reply(body)).invoice_status is InvoiceStatus.OK


def test_decode_error_messages_do_not_quote_the_reply() -> None:
    """A field error names the tag, never its value or any other part of the body."""
    body = PAY_OK.replace(b"<dt>2024-07-19T23:39:36+05:00</dt>", b"<dt>not-a-date</dt>")
    with pytest.raises(DecodeError) as info:
        decode_payment(reply(body))
    message = str(info.value)
    assert info.value.tag == "dt"
    assert "5483" not in message
    assert "not-a-date" not in message
    assert "<dt>" in message


def test_decode_error_body_is_capped_and_pickles() -> None:
    """The error keeps at most 2 KiB of the body and survives pickle with its tag."""
    body = doc(*OK_PAY, "<amount>x</amount>", "<pad>" + "p" * 5000 + "</pad>")
    with pytest.raises(DecodeError) as info:
        decode_payment(reply(body))
    assert len(info.value.body) == 2048
    clone = pickle.loads(pickle.dumps(info.value))
    assert clone.tag == "amount"
    assert str(clone) == str(info.value)


# --- HTTP status ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [
        (429, "7"),
        (503, "Wed, 21 Oct 2015 07:28:00 GMT"),
        (500, None),
        (404, None),
        (302, None),
        (199, None),
    ],
    ids=["429", "503", "500", "404", "302", "199"],
)
def test_non_2xx_raises_http_status_error_with_retry_after(
    status: int, retry_after: str | None
) -> None:
    """Any non-2xx reply raises HTTPStatusError keeping status, headers and Retry-After."""
    headers = {"Content-Type": "text/html"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = b"<html>busy, card 5483-18XX-XXXX-0293</html>"
    for decoder in (decode_init, decode_payment, decode_info):
        with pytest.raises(HTTPStatusError) as info:
            decoder(reply(body, status=status, headers=headers))
        error = info.value
        assert error.status_code == status
        assert error.retry_after == retry_after
        assert error.body == body
        assert str(status) in str(error)
        assert "5483" not in str(error)
        assert retry_after is None or retry_after not in str(error)


def test_http_status_is_checked_before_the_size_cap() -> None:
    """An oversized non-2xx reply is an HTTPStatusError, not a DecodeError."""
    with pytest.raises(HTTPStatusError) as info:
        decode_payment(reply(PAY_OK, status=503), operation=Operation.STATUS, max_bytes=10)
    assert info.value.operation == "status"


# --- decode_qr -----------------------------------------------------------------------------

STD = b64(PAY_URL)
EX = "https://pay.example/p"
URLSAFE_URL = f"{EX}?customer=a~b&x=%3F%3F%3F"


@pytest.mark.parametrize(
    ("qr", "expected"),
    [
        (STD, (PAY_URL, CUSTOMER)),
        (STD.rstrip("="), (PAY_URL, CUSTOMER)),
        (base64.urlsafe_b64encode(URLSAFE_URL.encode()).decode(), (URLSAFE_URL, "a~b")),
        (base64.urlsafe_b64encode(URLSAFE_URL.encode()).decode().rstrip("="), (URLSAFE_URL, "a~b")),
        (STD[:20] + "\n " + STD[20:], (PAY_URL, CUSTOMER)),
        (b64(f"{EX}?customer=T%C3%A9"), (f"{EX}?customer=T%C3%A9", "T\u00e9")),
        (None, (None, None)),
        ("", (None, None)),
        ("not base64!", (None, None)),
        ("abcde", (None, None)),
        ("данные", (None, None)),
        (base64.b64encode(b"\xff\xfe\x00").decode(), (None, None)),
        (b64("ftp://pay.example/?customer=x"), (None, None)),
        (b64("https:///no-host?customer=x"), (None, None)),
        (b64("customer=x"), (None, None)),
        (b64("https://[::1/?customer=x"), (None, None)),
        (b64("https://pay.example/a b?customer=x"), (None, None)),
        (b64("https://pay.example/\n?customer=x"), (None, None)),
        (b64(EX), (EX, None)),
        (b64(f"{EX}?customer="), (f"{EX}?customer=", None)),
        (b64(f"{EX}?customer=a&customer=b"), (f"{EX}?customer=a&customer=b", None)),
        (b64(f"{EX}?customer=%FF"), (f"{EX}?customer=%FF", None)),
        (b64(f"{EX}?customer=a%20b"), (f"{EX}?customer=a%20b", None)),
        (b64(f"{EX}?customer=%0A"), (f"{EX}?customer=%0A", None)),
        (b64(f"{EX}?other=x"), (f"{EX}?other=x", None)),
    ],
    ids=[
        "standard", "no-padding", "urlsafe", "urlsafe-no-padding", "embedded-whitespace",
        "percent-encoded-token", "none", "empty", "not-base64", "impossible-length", "non-ascii",
        "not-utf8", "ftp", "no-host", "not-a-url", "bad-ipv6", "space-in-url", "newline-in-url",
        "no-query", "empty-customer", "repeated-customer", "bad-percent-encoding",
        "space-in-customer", "control-in-customer", "other-parameter",
    ],
)  # fmt: skip
def test_decode_qr(qr: str | None, expected: tuple[str | None, str | None]) -> None:
    """decode_qr returns the URL and token it can decode and None for the rest, never raising."""
    assert decode_qr(qr) == expected


def test_decode_qr_custom_parameter() -> None:
    """The token is read from the named query parameter."""
    url = f"{EX}?customer=a&token=b"
    assert decode_qr(b64(url), customer_param="token") == (url, "b")


# --- parse_ordered -------------------------------------------------------------------------


def test_parse_ordered_keeps_interleaved_repeats_in_document_order() -> None:
    """Repeated tags stay where they were (a, b, a), not folded into one list."""
    root, children = parse_ordered(b"<response><a>1</a><b>2</b><a>3</a><c/></response>")
    assert root == "response"
    assert children == [("a", "1"), ("b", "2"), ("a", "3"), ("c", "")]


def test_parse_ordered_nests_children_in_order() -> None:
    """A nested element becomes its own ordered children; attributes are ignored."""
    body = b'<root><x k="v"><y>1</y><z/><y>2</y></x><w><v><u>deep</u></v></w></root>'
    assert parse_ordered(body) == (
        "root",
        [("x", [("y", "1"), ("z", ""), ("y", "2")]), ("w", [("v", [("u", "deep")])])],
    )


def test_parse_ordered_keeps_leaf_text_exactly() -> None:
    """Leaf text keeps its whitespace and unescaped characters; layout whitespace is dropped."""
    body = (
        b"<?xml version='1.0' encoding='UTF-8'?>\n<root>\n  <a> spaced </a>\n"
        b"  <b>&lt;&amp;&gt;&#13;</b>\n  <c><![CDATA[<x>]]></c>\n  <d>\xd1\x81</d>\n</root>\n"
    )
    assert parse_ordered(body) == (
        "root",
        [("a", " spaced "), ("b", "<&>\r"), ("c", "<x>"), ("d", "\u0441")],
    )


MALFORMED_ORDERED: list[tuple[str, bytes, str | None]] = [
    ("not-xml", b"pg_status=ok", None),
    ("empty", b"", None),
    ("truncated", b"<root><a>1</a>", None),
    ("doctype", b"<!DOCTYPE root><root><a/></root>", None),
    ("entity", b'<!DOCTYPE r [<!ENTITY e "x">]><r><a>&e;</a></r>', None),
    ("utf16-doctype", UTF16_DOCTYPE, None),
    ("text-root", b"<root>text</root>", "root"),
    ("empty-root", b"<root/>", "root"),
    ("whitespace-root", b"<root>\n </root>", "root"),
    ("mixed-root", b"<root>x<a>1</a></root>", "root"),
    ("mixed-nested", b"<root><a>x<b/>y</a></root>", "a"),
    ("too-deep", b"<r>" + b"<n>" * 40 + b"</n>" * 40 + b"</r>", "n"),
]


@pytest.mark.parametrize(
    ("body", "tag"),
    [case[1:] for case in MALFORMED_ORDERED],
    ids=[case[0] for case in MALFORMED_ORDERED],
)
def test_parse_ordered_refusals(body: bytes, tag: str | None) -> None:
    """parse_ordered applies the same hardening and raises DecodeError naming the element."""
    with pytest.raises(DecodeError) as info:
        parse_ordered(body)
    assert info.value.tag == tag
    assert info.value.body == body[:2048]


def test_parse_ordered_accepts_nesting_up_to_the_limit() -> None:
    """Thirty-two levels, the root included, are accepted."""
    body = b"<r>" + b"<n>" * 31 + b"x" + b"</n>" * 31 + b"</r>"
    root, children = parse_ordered(body)
    depth = 1
    node: object = children
    while isinstance(node, list):
        ((_, node),) = node
        depth += 1
    assert (root, depth, node) == ("r", 32, "x")


def test_parse_ordered_size_cap() -> None:
    """parse_ordered refuses a body over max_bytes, naming the cap."""
    with pytest.raises(DecodeError, match="reply larger than 8 bytes"):
        parse_ordered(b"<root><a>1</a></root>", max_bytes=8)
