"""Properties of reply decoding: any bytes give a model or a known error; valid ones round-trip."""

from __future__ import annotations

import base64
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freedompay_async._decode import (
    OrderedNode,
    decode_info,
    decode_init,
    decode_payment,
    decode_qr,
    parse_ordered,
)
from freedompay_async._exceptions import DecodeError, GatewayError, HTTPStatusError
from freedompay_async._models import InvoiceInfo, InvoiceInit, InvoicePayment, InvoiceStatus
from freedompay_async._protocol import RawResponse

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")
PROPS = settings(max_examples=200, deadline=None, database=None)

FIXTURES = {
    path.stem: path.read_bytes() for path in sorted(Path(__file__).parent.glob("fixtures/*.xml"))
}
DECODERS: dict[str, Callable[[RawResponse], object]] = {
    "init": decode_init,
    "pay": decode_payment,
    "info": decode_info,
}
MODEL_TYPE = {"init": InvoiceInit, "pay": InvoicePayment, "info": InvoiceInfo}
FIXTURE_OP = {name: {"init_ok": "init", "info_ok": "info"}.get(name, "pay") for name in FIXTURES}

PAY_TAGS = [
    "status", "order_id", "invoice_status", "invoice_id", "error_code", "error_description",
    "card_pan", "amount", "currency", "dt",
]  # fmt: skip
KNOWN_TAGS = [*PAY_TAGS, "description", "invoice_methods", "qr"]
#: The tags each decoder reads from an `ok` reply (what a duplicate of them must break).
READS = {
    "pay": set(PAY_TAGS),
    "info": {*PAY_TAGS, "description", "qr"},
    "init": {"status", "invoice_status", "invoice_id", "order_id", "dt", "qr"},
}
#: What an `error` reply's decoding reads before raising GatewayError.
ERROR_READS = {"status", "error_code", "error_description"}


def run(decoder: Callable[[RawResponse], object], body: bytes, status: int = 200) -> object:
    """Decode; return the model or the DecodeError/GatewayError raised; anything else propagates."""
    try:
        return decoder(RawResponse(status=status, headers={}, body=body))
    except (DecodeError, GatewayError) as exc:
        return exc


def check_everything(body: bytes) -> None:
    """Every decoder gives its model or a known error, and parse_ordered a tree or DecodeError."""
    for op, decoder in DECODERS.items():
        result = run(decoder, body)
        assert isinstance(result, MODEL_TYPE[op] | DecodeError | GatewayError)
        if isinstance(result, DecodeError):
            assert result.body == body[:2048]
    try:
        root, children = parse_ordered(body)
    except DecodeError:
        return
    assert isinstance(root, str)
    assert isinstance(children, list)
    assert children


def summary(result: object) -> object:
    """Comparable form of a decode result."""
    if isinstance(result, Exception):
        return (
            type(result),
            str(result),
            getattr(result, "tag", None),
            getattr(result, "error_code", None),
        )
    return result


# --- strategies ----------------------------------------------------------------------------

#: Characters XML 1.0 allows in text (no C0 controls except tab, newline, carriage return).
xml_chars = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn")) | st.sampled_from(
    "\t\n\r"
)
xml_text = st.text(xml_chars, max_size=20)
#: Text as xmltodict returns it: stripped and non-empty.
field_text = xml_text.map(str.strip).filter(bool)
names = st.from_regex(r"[a-z_][a-z0-9_.-]{0,8}", fullmatch=True)
tags = st.sampled_from([*KNOWN_TAGS, "a", "b"]) | names


def to_xml(tag: str, node: OrderedNode) -> str:
    """Serialise a node so that its text comes back exactly (carriage returns escaped)."""
    if isinstance(node, str):
        return f"<{tag}>{escape(node, {chr(13): '&#13;'})}</{tag}>"
    return f"<{tag}>{''.join(to_xml(t, n) for t, n in node)}</{tag}>"


def document(root: str, children: list[tuple[str, OrderedNode]]) -> bytes:
    """A whole reply with an XML declaration."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n' + to_xml(root, children)).encode()


trees: st.SearchStrategy[OrderedNode] = st.recursive(
    xml_text,
    lambda kids: st.lists(st.tuples(tags, kids), min_size=1, max_size=4),
    max_leaves=24,
)
roots = st.sampled_from(["root", "response"]) | names
children_lists = st.lists(st.tuples(tags, trees), min_size=1, max_size=12)

aware_datetimes = st.builds(
    lambda moment, minutes: moment.replace(tzinfo=timezone(timedelta(minutes=minutes))),
    st.datetimes(),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
)
amounts = st.decimals(
    min_value=-(10**12), max_value=10**12, places=2, allow_nan=False, allow_infinity=False
)
ints = st.integers(-(10**18), 10**18)

#: Values for the known tags: mostly well-formed, sometimes anything.
VALUES: dict[str, st.SearchStrategy[str]] = {
    "status": st.sampled_from(["ok", "ok", "error", " ok\n"]) | xml_text,
    "invoice_status": st.sampled_from([s.value for s in InvoiceStatus]) | xml_text,
    "invoice_id": ints.map(str) | xml_text,
    "error_code": ints.map(str) | xml_text,
    "amount": amounts.map(lambda d: format(d, "f")) | xml_text,
    "dt": aware_datetimes.map(datetime.isoformat) | xml_text,
}
known_fields = st.sampled_from(KNOWN_TAGS).flatmap(
    lambda tag: st.tuples(st.just(tag), VALUES.get(tag, xml_text))
)
reply_children = st.lists(known_fields | st.tuples(tags, trees), min_size=1, max_size=14)


# --- any input -----------------------------------------------------------------------------


@PROPS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_give_a_model_or_a_known_error(body: bytes) -> None:
    """No byte string makes a decoder raise anything but DecodeError or GatewayError."""
    check_everything(body)


XML_PIECES = [
    b"<root>", b"</root>", b"<response>", b"</response>", b"<status>", b"</status>", b"ok",
    b"error", b"<invoice_status>", b"</invoice_status>", b"<amount>", b"</amount>", b"1.50",
    b"NaN", b"<dt>", b"</dt>", b"2024-01-01T00:00:00Z", b"<invoice_methods>", b"</invoice_methods>",
    b"<qr>", b"</qr>", b"aHR0cHM6Ly94", b"<x/>", b"&amp;", b"&e;", b"<![CDATA[", b"]]>", b"<!--",
    b"-->", b"<?xml version='1.0'?>", b"<!DOCTYPE", b"<!ENTITY", b" ", b"\n", b"\xff", b"<", b">",
]  # fmt: skip


@PROPS
@given(st.lists(st.sampled_from(XML_PIECES), max_size=40).map(b"".join))
def test_xml_like_fragments_give_a_model_or_a_known_error(body: bytes) -> None:
    """Shuffled pieces of replies never make a decoder raise anything but the known errors."""
    check_everything(body)


@PROPS
@given(
    st.integers(100, 599).filter(lambda code: not 200 <= code < 300),
    st.binary(max_size=512) | st.sampled_from(list(FIXTURES.values())),
)
def test_non_2xx_is_always_http_status_error(status: int, body: bytes) -> None:
    """A non-2xx reply raises HTTPStatusError whatever its body holds."""
    for decoder in DECODERS.values():
        with pytest.raises(HTTPStatusError) as info:
            decoder(RawResponse(status=status, headers={}, body=body))
        assert info.value.status_code == status


# --- well-formed trees ---------------------------------------------------------------------


@PROPS
@given(roots, reply_children)
def test_well_formed_replies_are_classified_by_their_status(
    root: str, children: list[tuple[str, OrderedNode]]
) -> None:
    """A model needs exactly one `ok` status, GatewayError one `error`; otherwise tag `status`."""
    body = document(root, children)
    statuses = [node for tag, node in children if tag == "status"]
    single = statuses[0].strip() if len(statuses) == 1 and isinstance(statuses[0], str) else None
    for op, decoder in DECODERS.items():
        result = run(decoder, body)
        if isinstance(result, GatewayError):
            assert single == "error"
        elif isinstance(result, DecodeError):
            assert (result.tag == "status") == (single not in {"ok", "error"})
        else:
            assert single == "ok"
            assert isinstance(result, MODEL_TYPE[op])


@PROPS
@given(roots, children_lists)
def test_parse_ordered_returns_the_tree_that_was_written(
    root: str, children: list[tuple[str, OrderedNode]]
) -> None:
    """parse_ordered gives back every element in document order, repeats in place, text exact."""
    assert parse_ordered(document(root, children)) == (root, children)


@PROPS
@given(
    st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=12),
    st.lists(xml_text, min_size=12, max_size=12),
)
def test_parse_ordered_keeps_interleaved_repeats(order: list[str], texts: list[str]) -> None:
    """Interleaved repeats of two tags come back in the order written; empty ones as ""."""
    children: list[tuple[str, OrderedNode]] = list(zip(order, texts, strict=False))
    _, parsed = parse_ordered(document("root", children))
    assert [tag for tag, _ in parsed] == order
    assert [node for _, node in parsed] == texts[: len(order)]


def optional(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    """A value or None."""
    return st.none() | strategy


@PROPS
@given(st.data())
def test_valid_payment_replies_round_trip(data: st.DataObject) -> None:
    """A valid pay reply, fields in any order among unknown tags, decodes to exactly its values."""
    values = {
        "order_id": data.draw(optional(field_text)),
        "invoice_id": data.draw(optional(ints)),
        "amount": data.draw(optional(amounts)),
        "currency": data.draw(optional(field_text)),
        "card_pan": data.draw(optional(field_text)),
        "error_code": data.draw(optional(ints)),
        "error_description": data.draw(optional(field_text)),
        "dt": data.draw(optional(aware_datetimes)),
    }
    status_raw = data.draw(st.sampled_from([s.value for s in InvoiceStatus]) | field_text)
    customer = data.draw(optional(field_text))
    children: list[tuple[str, OrderedNode]] = [("status", "ok"), ("invoice_status", status_raw)]
    for tag, value in values.items():
        if value is not None:
            text = format(value, "f") if isinstance(value, Decimal) else str(value)
            children.append((tag, value.isoformat() if isinstance(value, datetime) else text))
        elif data.draw(st.booleans()):
            children.append((tag, ""))
    extras = data.draw(st.lists(st.tuples(names.filter(lambda n: n not in KNOWN_TAGS), trees)))
    order = data.draw(st.permutations([*children, *extras]))
    root = data.draw(roots)

    payment = decode_payment(
        RawResponse(status=200, headers={}, body=document(root, order)), customer=customer
    )

    assert payment == InvoicePayment(
        invoice_status=InvoiceStatus.parse(status_raw),
        invoice_status_raw=status_raw,
        customer=customer,
        **values,  # type: ignore[arg-type]
    )
    if values["dt"] is not None:
        assert isinstance(values["dt"], datetime)
        assert payment.dt is not None
        assert payment.dt.utcoffset() == values["dt"].utcoffset()


tokens = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~", min_size=1)
hosts = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){1,2}", fullmatch=True)


@PROPS
@given(
    st.sampled_from(["http", "https"]),
    hosts,
    tokens,
    st.sampled_from(["standard", "urlsafe"]),
    st.booleans(),
)
def test_decode_qr_round_trips_any_payment_url(
    scheme: str, host: str, token: str, alphabet: str, padded: bool
) -> None:
    """A payment URL encoded in either alphabet, padded or not, gives back the URL and token."""
    url = f"{scheme}://{host}/pay.html?x=1&customer={token}"
    encode = base64.b64encode if alphabet == "standard" else base64.urlsafe_b64encode
    qr = encode(url.encode()).decode()
    assert decode_qr(qr if padded else qr.rstrip("=")) == (url, token)


@PROPS
@given(st.text(max_size=200))
def test_decode_qr_never_raises(qr: str) -> None:
    """Whatever the QR text, decode_qr returns a pair and raises nothing."""
    url, customer = decode_qr(qr)
    assert customer is None or url is not None


# --- mutations of every fixture ------------------------------------------------------------

fixture_names = st.sampled_from(sorted(FIXTURES))


@PROPS
@given(
    fixture_names,
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6),
)
def test_fixture_byte_flips_give_a_model_or_a_known_error(
    name: str, flips: list[tuple[int, int]]
) -> None:
    """Corrupting bytes of any fixture never lets another exception escape."""
    body = bytearray(FIXTURES[name])
    for position, value in flips:
        body[position % len(body)] = value
    check_everything(bytes(body))


@PROPS
@given(fixture_names, st.integers(0, 1 << 16))
def test_fixture_truncations_give_a_model_or_a_known_error(name: str, cut: int) -> None:
    """A fixture cut anywhere is refused (or still decodes), never crashing a decoder."""
    body = FIXTURES[name]
    check_everything(body[: cut % (len(body) + 1)])


ELEMENT = re.compile(rb"<(\w+)(?:/>|>[^<]*</\1>)")


@PROPS
@given(fixture_names, st.data())
def test_fixture_element_duplicated_anywhere(name: str, data: st.DataObject) -> None:
    """A copy of any element inserted at any tag boundary never crashes a decoder."""
    body = FIXTURES[name]
    element = data.draw(st.sampled_from([m.group() for m in ELEMENT.finditer(body)]))
    boundaries = [m.end() for m in re.finditer(rb">", body)]
    at = data.draw(st.sampled_from(boundaries))
    check_everything(body[:at] + element + body[at:])


ELEMENT_LINE = re.compile(rb"\s*<(\w+)(?:/>|>[^<]*</\1>)\s*")
DUPLICABLE = [
    (name, index, match.group(1).decode())
    for name, body in FIXTURES.items()
    for index, line in enumerate(body.splitlines(keepends=True))
    if (match := ELEMENT_LINE.fullmatch(line))
]


@pytest.mark.parametrize(
    ("name", "index", "tag"),
    DUPLICABLE,
    ids=[f"{name}-{tag}" for name, _, tag in DUPLICABLE],
)
def test_fixture_with_a_duplicated_element(name: str, index: int, tag: str) -> None:
    """A repeated tag the decoder reads is refused naming it; any other repeat changes nothing."""
    decoder = DECODERS[FIXTURE_OP[name]]
    original = run(decoder, FIXTURES[name])
    lines = FIXTURES[name].splitlines(keepends=True)
    mutated = run(decoder, b"".join([*lines[: index + 1], lines[index], *lines[index + 1 :]]))
    if isinstance(original, GatewayError):
        reads = ERROR_READS
    elif isinstance(original, DecodeError):
        reads = {"status"}
    else:
        reads = READS[FIXTURE_OP[name]]
    if tag in reads:
        assert isinstance(mutated, DecodeError)
        assert mutated.tag == tag
        assert "more than once" in str(mutated)
    else:
        assert summary(mutated) == summary(original)


def test_every_fixture_offers_duplicable_elements() -> None:
    """The duplication table covers every fixture, so no fixture escapes that property."""
    assert {name for name, _, _ in DUPLICABLE} == set(FIXTURES)
    assert len(FIXTURES) == 10
