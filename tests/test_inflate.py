"""The incremental decoder: every encoding under the cap, fed in pieces of any size."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freedompay_async._inflate import InflateError, Inflater

PAYLOAD = b"<response><status>ok</status></response>" * 20
ENCODED = {
    "gzip": gzip.compress(PAYLOAD),
    "x-gzip": gzip.compress(PAYLOAD),
    "deflate": zlib.compress(PAYLOAD),
    "identity": PAYLOAD,
    "Identity, gzip": gzip.compress(PAYLOAD),
}


def _feed(inflater: Inflater, data: bytes, size: int) -> bool:
    over = False
    for start in range(0, len(data), size):
        over = inflater.feed(data[start : start + size])
    return over


@given(size=st.integers(min_value=1, max_value=2048), name=st.sampled_from(sorted(ENCODED)))
def test_any_chunking_decodes_the_same(size: int, name: str) -> None:
    """However the raw body is split, the decoded bytes are the original payload."""
    inflater = Inflater(name, cap=4096, max_input=1 << 16)
    assert not _feed(inflater, ENCODED[name], size)
    assert inflater.finish() == PAYLOAD


def test_raw_deflate_and_no_header_decode() -> None:
    """Raw deflate (no zlib header) and a missing Content-Encoding both decode."""
    raw = zlib.compress(PAYLOAD)[2:-4]
    inflater = Inflater("deflate", cap=4096, max_input=1 << 16)
    _feed(inflater, raw, 1)
    assert inflater.finish() == PAYLOAD
    plain = Inflater(None, cap=4096, max_input=1 << 16)
    plain.feed(PAYLOAD)
    assert plain.finish() == PAYLOAD
    assert plain.size == len(PAYLOAD)


@pytest.mark.parametrize("name", ["gzip", "deflate", "identity"])
def test_over_the_cap_keeps_cap_plus_one(name: str) -> None:
    """Past the cap the decoder stops and keeps exactly cap + 1 bytes."""
    data = {"gzip": gzip.compress, "deflate": zlib.compress, "identity": bytes}[name](
        b"\0" * (1 << 22)
    )
    inflater = Inflater(name, cap=1000, max_input=1 << 23)
    assert _feed(inflater, data, 4096)
    assert inflater.feed(b"more") is True
    assert len(inflater.finish()) == 1001


def test_raw_input_is_capped_too() -> None:
    """A stream of gzip members that produce nothing still stops at the raw-input bound."""
    empty_member = gzip.compress(b"")
    inflater = Inflater("gzip", cap=1000, max_input=600)
    with pytest.raises(InflateError, match="too many gzip members"):
        _feed(inflater, empty_member * 200, 10_000)
    bounded = Inflater("gzip", cap=1000, max_input=100)
    assert _feed(bounded, empty_member * 8, 20)


def test_empty_body_with_an_encoding_is_empty() -> None:
    """A body-less reply that names an encoding decodes to nothing."""
    assert Inflater("gzip", cap=10, max_input=10).finish() == b""
    assert Inflater("deflate", cap=10, max_input=10).finish() == b""


def test_truncated_deflate_header_is_refused() -> None:
    """One byte of a deflate body is a truncated stream."""
    inflater = Inflater("deflate", cap=10, max_input=10)
    inflater.feed(b"x")
    with pytest.raises(InflateError, match="truncated"):
        inflater.finish()


@pytest.mark.parametrize("header", ["br", "zstd", "compress", "gzip, deflate", "\x1b[31m"])
def test_unsupported_encodings_are_refused(header: str) -> None:
    """Encodings the SDK did not ask for, or stacked ones, are refused up front."""
    with pytest.raises(InflateError, match="not supported") as caught:
        Inflater(header, cap=10, max_input=10)
    assert "\x1b" not in str(caught.value)
