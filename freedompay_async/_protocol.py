"""
Requests as bytes: the field order of each operation, the body encodings and the JWS header.

Everything here is pure. `build_request` runs once per call and returns an `OutgoingRequest`
whose body is already one `bytes` object and whose headers already carry the signature, so every
attempt of a call sends identical bytes (the JWS has no nonce or timestamp) and a retry costs no
re-serialisation.

Multipart bodies are written here (RFC 7578), not by `aiohttp.FormData`: one part per field, no
per-part content type, UTF-8 values, and one `bytes` object that leaves in a single write.
"""

from __future__ import annotations

import enum
import hashlib
from decimal import Decimal
from typing import TYPE_CHECKING

import attrs

from freedompay_async._validate import check_fields
from freedompay_async.masking import printable
from freedompay_async.signing import jws_detached, jws_payload

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from freedompay_async._classic_models import ClassicOperation
    from freedompay_async._config import _Credentials, _WireOptions

__all__ = [
    "Field",
    "Operation",
    "OutgoingRequest",
    "RawResponse",
    "build_request",
]

Field = tuple[str, "str | int | Decimal"]


class Operation(enum.Enum):
    """The four invoice operations and their endpoint paths (wire contract §4)."""

    INIT = "init"
    PAY = "pay"
    STATUS = "status"
    INFO = "info"

    # Members are singletons: hashing by identity keeps table lookups in C on every request.
    __hash__ = object.__hash__

    @property
    def path(self) -> str:
        """The endpoint path, e.g. `/v5/merchant/invoice/pay`."""
        return f"/v5/merchant/invoice/{self.value}"

    @property
    def moves_money(self) -> bool:
        """Whether a duplicate of this request could charge a payer (only pay)."""
        return self is Operation.PAY


# Read on every request: the enum's `path` property would format it each time.
_PATHS = {operation: operation.path for operation in Operation}


@attrs.frozen(kw_only=True)
class OutgoingRequest:
    """
    One call's request, ready to send as many times as the retry policy allows.

    Attributes:
        operation: The operation (an invoice one, or a classic Merchant API one).
        path: The endpoint path; the URL of an operation outside `Operation` is built from it.
        body: The exact body bytes.
        headers: Content-Type, Accept and X-JWS-Signature; never logged.
        context: Non-secret identifiers for logs and errors (`customer`, `order_id`, ...),
            control characters already escaped.
        sensitive: The values a reply must never be kept with (the signature, the card token):
            an exception built from the reply redacts every occurrence.
    """

    operation: Operation | ClassicOperation
    path: str
    body: bytes = attrs.field(repr=False)
    headers: Mapping[str, str] = attrs.field(repr=False)
    context: Mapping[str, str] = attrs.field(factory=dict)
    sensitive: tuple[str, ...] = attrs.field(default=(), repr=False)


@attrs.frozen(kw_only=True)
class RawResponse:
    """
    An HTTP reply as the transport read it: status, headers (lower-cased names), body bytes.

    Attributes:
        status: The HTTP status code.
        headers: Reply headers with lower-cased names.
        body: The body (decoded from its Content-Encoding), at most the size cap plus one byte.
        sensitive: The request's `sensitive` values, for redaction in any exception built from
            this reply.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes = attrs.field(repr=False)
    sensitive: tuple[str, ...] = attrs.field(default=(), repr=False)


_BOUNDARY_BASE = "freedompay-async-8f1c62a0b4e7"
_CONTEXT_FIELDS = frozenset({"customer", "order_id", "invoice_id"})
_SENSITIVE_FIELDS = frozenset({"card_token"})


def _boundary(values: Sequence[str]) -> str:
    """Return a boundary that occurs in no value (RFC 7578 §4.1)."""
    # A boundary holds no line break, so one found in the joined text is inside one value.
    joined = "\n".join(values)
    boundary = _BOUNDARY_BASE
    while boundary in joined:
        boundary = hashlib.sha256((boundary + joined).encode()).hexdigest()[:40]
    return boundary


def encode_multipart(fields: Sequence[tuple[str, str]]) -> tuple[bytes, str]:
    """
    Serialise text fields as one `multipart/form-data` body.

    Args:
        fields: (name, value) pairs in the order to send; names are plain ASCII identifiers.

    Returns:
        The body bytes and the Content-Type header value (with its boundary).
    """
    boundary = _boundary([value for _, value in fields])
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="'
    parts = [f'{head}{name}"\r\n\r\n{value}\r\n' for name, value in fields]
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"


def _text(value: str | int | Decimal) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def _json_value(name: str, value: str | int | Decimal) -> str | int | Decimal:
    """JSON bodies send `merchant_id` as a number when it is all digits (the documented vector)."""
    if name == "merchant_id" and isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


def build_request(
    operation: Operation,
    fields: Sequence[Field],
    *,
    credentials: _Credentials,
    wire: _WireOptions,
) -> OutgoingRequest:
    """
    Build and sign one operation's request.

    Args:
        operation: The operation.
        fields: Its fields in wire order (see the client for each operation's list); `None`
            values must already be left out.
        credentials: Merchant id and secret key.
        wire: The body format and JWS header switches.

    Returns:
        The request, body serialised and signed.

    Raises:
        ConfigurationError: A field breaks its rule (`_validate.check_fields`); nothing is built.
    """
    check_fields(fields)
    if wire.body_format == "json":
        typed = [(name, _json_value(name, value)) for name, value in fields]
        body = jws_payload(typed)
        payload = body
        content_type = "application/json"
    else:
        text_fields = [
            (name, value if value.__class__ is str else _text(value)) for name, value in fields
        ]
        payload = jws_payload(text_fields)
        body, content_type = encode_multipart(text_fields)
    path = _PATHS[operation]
    signature = jws_detached(
        payload,
        secret_key=credentials.secret_key,
        path=path,
        merchant_id=credentials.merchant_id,
        header_key=wire.jws_header_key,
    )
    headers = {
        "Content-Type": content_type,
        "Accept": "application/xml",
        "X-JWS-Signature": signature,
    }
    context: dict[str, str] = {}
    sensitive = [signature]
    for name, value in fields:
        if name in _CONTEXT_FIELDS:
            context[name] = printable(value)
        elif name in _SENSITIVE_FIELDS:
            sensitive.append(str(value))
    return OutgoingRequest(
        operation=operation,
        path=path,
        body=body,
        headers=headers,
        context=context,
        sensitive=tuple(sensitive),
    )
