"""Hostile replies are refused before they cost memory: entity bombs, XXE, huge and deep XML."""

from __future__ import annotations

import tracemalloc

import pytest

from freedompay_async import DecodeError
from freedompay_async._decode import decode_payment, parse_ordered
from freedompay_async._protocol import RawResponse

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
]>
<root><status>ok</status><invoice_status>&lol9;</invoice_status></root>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE root [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<root><status>ok</status><invoice_status>&xxe;</invoice_status></root>"""

XXE_UTF16 = (
    XXE.decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"').encode("utf-16")
)

FIFTY_MB = b"<root><status>ok</status><pad>" + b"x" * (50 * 1024 * 1024) + b"</pad></root>"

DEEP = (
    b"<root><status>ok</status><invoice_status>ok</invoice_status>"
    + b"<a>" * 10_000
    + b"x"
    + b"</a>" * 10_000
    + b"</root>"
)

CASES = {
    "billion-laughs": BILLION_LAUGHS,
    "xxe": XXE,
    "xxe-utf16": XXE_UTF16,
    "50-mb": FIFTY_MB,
}

#: Peak Python allocations a refusal may cost, beyond the input bytes themselves.
MEMORY_BOUND = 4 * 1024 * 1024


def _peak(body: bytes, parse: object) -> tuple[BaseException | None, int]:
    """Run *parse* on *body* under tracemalloc; return what it raised and the peak allocation."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        error: BaseException | None = None
        try:
            parse(body)  # type: ignore[operator]
        except DecodeError as exc:
            error = exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return error, peak


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_reply_is_refused_with_bounded_memory(name: str) -> None:
    """Each hostile reply raises DecodeError and allocates at most a few MiB while refusing it."""
    body = CASES[name]
    error, peak = _peak(body, lambda b: decode_payment(RawResponse(status=200, headers={}, body=b)))
    assert isinstance(error, DecodeError), name
    assert peak < MEMORY_BOUND, f"{name}: {peak} bytes"
    assert b"root:x:0:0" not in error.body  # /etc/passwd was never read into the reply
    assert "root:x:0:0" not in str(error)


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_xml_is_refused_by_the_ordered_parser_too(name: str) -> None:
    """The callback parser refuses the same inputs with bounded memory."""
    error, peak = _peak(CASES[name], parse_ordered)
    assert isinstance(error, DecodeError), name
    assert peak < MEMORY_BOUND, f"{name}: {peak} bytes"


def test_ten_thousand_deep_nesting_is_a_decode_error_or_a_model() -> None:
    """10,000 nested elements never crash the decoder (no RecursionError): model or DecodeError."""
    tracemalloc.start()
    try:
        try:
            payment = decode_payment(RawResponse(status=200, headers={}, body=DEEP))
        except DecodeError:
            payment = None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    if payment is not None:
        assert payment.invoice_status.value == "ok"
    assert peak < 64 * 1024 * 1024


def test_ten_thousand_deep_nesting_is_refused_by_the_ordered_parser() -> None:
    """The callback parser refuses deep nesting outright (callers walk its tree recursively)."""
    with pytest.raises(DecodeError):
        parse_ordered(DEEP)
