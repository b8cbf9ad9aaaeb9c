"""The detached JWS (HS512) of the `/v5/merchant/invoice/*` API; `signing` re-exports it."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["jws_detached", "jws_header", "jws_payload", "number_text", "verify_jws_detached"]

_URLSAFE = bytes.maketrans(b"+/", b"-_")
_dumps_str = json.JSONEncoder(ensure_ascii=False).encode
# The C string encoder behind `_dumps_str`, without JSONEncoder.encode's Python-level dispatch.
_encode_str = json.encoder.encode_basestring
# Field names repeat on every request: quote each once.
_json_name = functools.lru_cache(maxsize=256)(_encode_str)


def _b64url(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_scalar(value: str | int | Decimal) -> str:
    """Render one value as compact JSON: numbers as numbers, text unescaped UTF-8."""
    if value.__class__ is str:
        return _encode_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return number_text(value)
    return str(_dumps_str(value))


def number_text(value: int | Decimal) -> str:
    """Write a number as its plain decimal text (never exponent notation, never via float)."""
    if isinstance(value, int):
        return str(value)
    if not value.is_finite():
        raise ValueError("a non-finite Decimal cannot be signed")
    return format(value, "f")


def jws_payload(fields: Iterable[tuple[str, str | int | Decimal]]) -> bytes:
    """
    Serialise request fields as the JWS payload: one compact JSON object, in the order given.

    Text is kept as UTF-8 (non-ASCII is not escaped); an `int` or `Decimal` is a JSON number.

    Args:
        fields: (name, value) pairs in the order they are sent.

    Returns:
        The payload bytes.

    Raises:
        ValueError: A `Decimal` is not finite.
    """
    body = ",".join([f"{_json_name(name)}:{_json_scalar(value)}" for name, value in fields])
    return ("{" + body + "}").encode()


def _merchant_id_json(merchant_id: str | int) -> str:
    text = str(merchant_id)
    return text if text.isascii() and text.isdigit() else str(_dumps_str(text))


def jws_header(
    *,
    path: str,
    merchant_id: str | int,
    header_key: Literal["path", "uri"] = "path",
    method: str = "POST",
    params: str = "",
) -> bytes:
    """
    Build the protected JWS header, byte-exact as in the documented example.

    Args:
        path: The endpoint path, e.g. `/v5/merchant/invoice/pay`.
        merchant_id: The merchant id; a JSON integer when it is all digits, else a string.
        header_key: The name of the path entry: `path` (the verified example) or `uri` (the prose).
        method: The HTTP method.
        params: The reserved `params` entry.

    Returns:
        The compact JSON header bytes.
    """
    return (
        f"{{{_dumps_str(header_key)}:{_dumps_str(path)},"
        f'"merchant_id":{_merchant_id_json(merchant_id)},'
        f'"method":{_dumps_str(method)},"params":{_dumps_str(params)},"alg":"HS512"}}'
    ).encode()


@functools.lru_cache(maxsize=16)
def _hmac_sha512(secret_key: str) -> hmac.HMAC:
    """A keyed HMAC-SHA512 to copy per message: the key schedule is computed once per key."""
    return hmac.new(secret_key.encode(), digestmod=hashlib.sha512)


def _hs512(secret_key: str, b64_header: str, payload: bytes) -> str:
    mac = _hmac_sha512(secret_key).copy()
    mac.update(f"{b64_header}.{_b64url(payload)}".encode("ascii"))
    return _b64url(mac.digest())


@functools.lru_cache(maxsize=64)
def _b64_header(path: str, merchant_id: str | int, header_key: Literal["path", "uri"]) -> str:
    """The encoded protected header: constant per endpoint and merchant, so built once."""
    return _b64url(jws_header(path=path, merchant_id=merchant_id, header_key=header_key))


def jws_detached(
    payload: bytes,
    *,
    secret_key: str,
    path: str,
    merchant_id: str | int,
    header_key: Literal["path", "uri"] = "path",
) -> str:
    """
    Sign a request payload as a detached JWS (HS512), the value of `X-JWS-Signature`.

    Args:
        payload: The exact payload bytes (see `jws_payload`).
        secret_key: The merchant's secret key (HMAC key, as UTF-8).
        path: The endpoint path.
        merchant_id: The merchant id.
        header_key: `path` or `uri`, the header entry naming the endpoint.

    Returns:
        `B64H..B64S`: the header and signature, base64url without padding, payload cut out.
    """
    b64_header = _b64_header(path, merchant_id, header_key)
    return f"{b64_header}..{_hs512(secret_key, b64_header, payload)}"


def verify_jws_detached(signature: str, payload: bytes, *, secret_key: str) -> dict[str, object]:
    """
    Verify a detached JWS against its payload and return its protected header.

    Args:
        signature: The `X-JWS-Signature` value, `B64H..B64S`.
        payload: The payload bytes the signature is claimed to cover.
        secret_key: The merchant's secret key.

    Returns:
        The decoded protected header, for the caller to check `path` and `merchant_id`.

    Raises:
        ValueError: The value is malformed, its algorithm is not HS512, or the signature does
            not match (checked in constant time).
    """
    parts = signature.split(".")
    if len(parts) != 3 or parts[1] != "" or not parts[0] or not parts[2]:  # noqa: PLR2004
        raise ValueError("X-JWS-Signature is not a detached JWS (B64H..B64S)")
    try:
        header = json.loads(_b64url_decode(parts[0]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("X-JWS-Signature has an undecodable header") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS512":
        raise ValueError("X-JWS-Signature header is not an HS512 JWS header")
    expected = _hs512(secret_key, parts[0], payload)
    if not hmac.compare_digest(expected.encode("ascii"), parts[2].encode("ascii", "replace")):
        raise ValueError("X-JWS-Signature does not match the payload")
    return header
