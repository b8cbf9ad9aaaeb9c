"""
Freedom Pay's two signatures, pure and standard-library only.

- **Detached JWS, HS512** (the `/v5/merchant/invoice/*` API): the header `X-JWS-Signature` is
  `B64H..B64S`, where `B64S = base64url(HMAC-SHA512(secret_key, B64H + "." + B64P))` and the
  payload part `B64P` (the request fields as compact JSON) is cut out. `jws_detached` reproduces
  the published invoice-init vector bit-for-bit.
- **`pg_sig`** (the classic Merchant API and every callback): lowercase hex MD5 of
  `script_name;value;value;…;secret_key`, the values ordered by the sort rule `pg_sig` documents.

Verification compares in constant time and fails closed: a missing or malformed signature never
verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "jws_detached",
    "jws_header",
    "jws_payload",
    "pg_sig",
    "script_name_from_url",
    "verify_jws_detached",
    "verify_pg_sig",
]

_dumps_str = json.JSONEncoder(ensure_ascii=False).encode


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_scalar(value: str | int | Decimal) -> str:
    """Render one value as compact JSON: numbers as numbers, text unescaped UTF-8."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("a non-finite Decimal cannot be signed")
        return format(value, "f")
    return str(_dumps_str(value))


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
    body = ",".join(f"{_dumps_str(name)}:{_json_scalar(value)}" for name, value in fields)
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


def _hs512(secret_key: str, b64_header: str, payload: bytes) -> str:
    signing_input = f"{b64_header}.{_b64url(payload)}".encode("ascii")
    return _b64url(hmac.new(secret_key.encode(), signing_input, hashlib.sha512).digest())


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
    b64_header = _b64url(jws_header(path=path, merchant_id=merchant_id, header_key=header_key))
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


def script_name_from_url(url: str) -> str:
    """
    Return the script name `pg_sig` signs with: the URL's last path segment.

    The query and fragment are dropped; a URL ending in `/` gives `""`.

    Args:
        url: A URL or a path, e.g. `https://shop.example/pay/result.php?x=1`.

    Returns:
        The last segment, e.g. `result.php`.
    """
    path = url.split("#", 1)[0].split("?", 1)[0]
    return path.rsplit("/", 1)[-1]


def _flatten(value: object, sort_name: str, out: list[tuple[bytes, str]]) -> None:
    """Collect the leaves of *value* under *sort_name* (see `pg_sig` for the rule)."""
    if isinstance(value, dict):
        items: Iterable[tuple[str, object]] = value.items()
    elif isinstance(value, list | tuple):
        items = ((str(index), item) for index, item in enumerate(value))
    else:
        out.append((sort_name.encode(), _leaf_text(value)))
        return
    for position, (key, item) in enumerate(items, start=1):
        if key == "pg_sig":
            continue  # skipped at any depth, but its position is used up
        _flatten(item, f"{sort_name}{key}{position:03d}", out)


def _leaf_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _signing_values(fields: Mapping[str, object]) -> list[str]:
    leaves: list[tuple[bytes, str]] = []
    _flatten(dict(fields), "", leaves)
    leaves.sort(key=lambda leaf: leaf[0])
    return [text for _, text in leaves]


def pg_sig(script_name: str, fields: Mapping[str, object], secret_key: str) -> str:
    """
    Compute the classic `pg_sig` of a message.

    The signing string is the script name, then every leaf value, then the secret key, joined by
    `;`; the signature is its MD5 in lowercase hex. Leaves are ordered by a *sort name*: at each
    level the entries are numbered 1, 2, 3… in the order they were sent, and an entry's sort name
    is its parent's sort name, then its key (a list index in decimal), then its position padded to
    three digits (`pg_amount` sent first sorts as `pg_amount001`); sort names are compared as
    UTF-8 bytes. `pg_sig` is skipped at any depth but uses up its position; an empty mapping or
    list contributes nothing; an empty value (or None) contributes an empty element.

    Args:
        script_name: The called script (`init_payment.php`) or the callback URL's last segment.
        fields: The message fields, in the order sent; values are text, numbers, mappings or
            lists.
        secret_key: The merchant's secret key.

    Returns:
        The 32-character lowercase hex signature.
    """
    text = ";".join([script_name, *_signing_values(fields), secret_key])
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def verify_pg_sig(script_name: str, fields: Mapping[str, object], secret_key: str) -> bool:
    """
    Check the `pg_sig` a message carries, in constant time; fail closed.

    Every received field except `pg_sig` is signed, unknown ones included.

    Args:
        script_name: The script name the sender signed with.
        fields: The received fields, `pg_sig` among them.
        secret_key: The merchant's secret key.

    Returns:
        True only when `pg_sig` is present, a string, and equals the computed signature.
    """
    claimed = fields.get("pg_sig")
    if not isinstance(claimed, str) or not claimed:
        return False
    expected = pg_sig(script_name, fields, secret_key)
    return hmac.compare_digest(expected.encode(), claimed.lower().encode("ascii", "replace"))
