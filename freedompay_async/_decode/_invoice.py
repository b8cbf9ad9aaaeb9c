"""
Replies as models: the one place where reply bytes become a model or an exception.

Theory of operation. A reply is refused, in this order, when:

1. its HTTP status is not 2xx (`HTTPStatusError`; the `Retry-After` header stays in `.headers`);
2. it is larger than the size cap, empty, or holds `<!DOCTYPE` or `<!ENTITY` in any letter case
   (`DecodeError` before the parser sees a byte). A DTD is the door to entity expansion
   ("billion laughs") and external entities, and no invoice reply needs one. Two more walls stand
   behind the byte check, for documents in an encoding the check cannot read (UTF-16): every
   parser refuses a DOCTYPE declaration the moment expat reports one, and xmltodict's
   `disable_entities` refuses entity declarations;
3. it is not well-formed XML, or its single root element (named `<root>`, `<response>` or anything
   else: the name is ignored) holds text instead of child elements;
4. a field the model needs is malformed: a scalar tag that repeats, a tag that holds child
   elements where text belongs, a missing `status` (or `invoice_status`, except for init), a
   `status` other than `ok` or `error`, an amount that is not a plain decimal number, an integer
   that is not plain digits, a timestamp that is not ISO 8601 with an offset.

Each refusal is a `DecodeError` naming the tag at fault (`.tag`, None when the whole reply was
refused), chained from the parser's exception when there is one: no `KeyError`, `TypeError` or
`ExpatError` ever escapes. A well-formed `status=error` reply raises `GatewayError`.

What is tolerated: unknown tags (the gateway may add fields), empty or absent optional fields
(None), an unknown `invoice_status` (`InvoiceStatus.UNKNOWN`, the raw string kept), and a QR value
that does not decode (`qr_url` and `customer` are None, the raw value stays): derived values
never raise.

Messages never quote the reply: a field's value could be anything, and the exception already keeps
the first 2 KiB of the body in `.body`. Only the gateway's own `error_description` is quoted.

xmltodict is imported here and nowhere else, and the dict it builds never leaves this module: the
models receive converted values as keywords. Each reply is parsed exactly once.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict
from urllib.parse import parse_qsl, urlsplit
from xml.parsers import expat

import xmltodict

from freedompay_async._exceptions import DecodeError, GatewayError, HTTPStatusError
from freedompay_async._models import InvoiceInfo, InvoiceInit, InvoicePayment, InvoiceStatus
from freedompay_async._protocol import Operation
from freedompay_async.masking import printable, redact_text

if TYPE_CHECKING:
    from freedompay_async._protocol import RawResponse

__all__ = [
    "OrderedNode",
    "decode_info",
    "decode_init",
    "decode_payment",
    "decode_qr",
    "parse_ordered",
]

#: A parsed element for `parse_ordered`: a leaf's text, or a nested element's children in order.
OrderedNode: TypeAlias = "str | list[tuple[str, OrderedNode]]"

_DEFAULT_MAX_BYTES = 1 << 20
#: Deepest nesting `parse_ordered` accepts; its callers walk the tree recursively.
_MAX_ORDERED_DEPTH = 32
#: Longest piece of parser or gateway text quoted in a message.
_QUOTE_CHARS = 200

_INT = re.compile(r"-?[0-9]{1,30}")
_DECIMAL = re.compile(r"-?[0-9]{1,30}(?:\.[0-9]{1,30})?")
_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_HTTP_SCHEMES = frozenset({"http", "https"})


class _Refused(Exception):
    """A hardening rule refused the document while it was being parsed."""

    def __init__(self, message: str, tag: str | None = None) -> None:
        super().__init__(message)
        self.tag = tag


def _refuse_doctype(*_args: object) -> None:
    """Expat handler: a DOCTYPE the byte check could not see (another encoding) is refused too."""
    raise _Refused("reply declares a DOCTYPE, which is refused")


def _hardened_parser(
    encoding: str | None = None, namespace_separator: str | None = None
) -> expat.XMLParserType:
    """Create an expat parser that refuses any DOCTYPE declaration."""
    parser = expat.ParserCreate(encoding, namespace_separator)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    return parser


# xmltodict.parse takes the expat module as an argument (for defusedexpat); this stands in for it.
_HARDENED_EXPAT = SimpleNamespace(ParserCreate=_hardened_parser)


def _screen(body: bytes, max_bytes: int) -> str | None:
    """
    Apply the byte-level rules before any parser runs.

    Returns:
        Why the body is refused, or None when it may be parsed.
    """
    if len(body) > max_bytes:
        return f"reply larger than {max_bytes} bytes (counted after Content-Encoding decoding)"
    if not body:
        return "reply body is empty"
    if b"<!" in body:
        lowered = body.lower()
        if b"<!doctype" in lowered or b"<!entity" in lowered:
            return "reply holds a DOCTYPE or ENTITY declaration, which is refused"
    return None


def _parser_message(exc: Exception) -> str:
    """Describe a parser failure without quoting the document."""
    if isinstance(exc, _Refused):
        return str(exc)
    return f"reply is not well-formed XML: {str(exc)[:_QUOTE_CHARS]}"


# ---------------------------------------------------------------------------------------------
# decode_*: one reply to one model


def _error(raw: RawResponse, op: Operation, message: str, tag: str | None = None) -> DecodeError:
    return DecodeError(
        f"{op.value} reply refused: {message}",
        operation=op.value,
        status_code=raw.status,
        headers=raw.headers,
        body=raw.body,
        tag=tag,
        redact=raw.sensitive,
    )


def _fields(raw: RawResponse, op: Operation, max_bytes: int) -> dict[str, Any]:
    """
    Check the HTTP status and the hardening rules, parse once and settle `status`.

    Returns:
        The root element's children as xmltodict built them (text, None, dict or list).

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The body is refused or `status` is missing or malformed.
        GatewayError: The reply says `status=error`.
    """
    status_code = raw.status
    if not 200 <= status_code < 300:  # noqa: PLR2004 - the 2xx range
        raise HTTPStatusError(
            f"{op.value} failed: the gateway answered HTTP {status_code}",
            operation=op.value,
            status_code=status_code,
            headers=raw.headers,
            body=raw.body,
            redact=raw.sensitive,
        )
    body = raw.body
    problem = _screen(body, max_bytes)
    if problem is not None:
        raise _error(raw, op, problem)
    try:
        document = xmltodict.parse(
            body,
            expat=_HARDENED_EXPAT,
            xml_attribs=False,
            dict_constructor=dict,
            disable_entities=True,
            process_namespaces=False,
        )
        ((root, children),) = document.items()
    except Exception as exc:
        raise _error(raw, op, _parser_message(exc), getattr(exc, "tag", None)) from exc
    if children.__class__ is not dict:
        raise _error(raw, op, f"root element <{root}> holds no child elements", root)
    if "#text" in children:
        raise _error(raw, op, f"root element <{root}> mixes text and child elements", root)
    fields: dict[str, Any] = children
    status = _text(fields, "status", raw, op)
    if status == "ok":
        return fields
    if status == "error":
        raise _gateway_error(fields, raw, op)
    if status is None:
        raise _error(raw, op, "reply has no <status>", "status")
    raise _error(raw, op, "<status> is neither ok nor error", "status")


def _gateway_error(children: dict[str, Any], raw: RawResponse, op: Operation) -> GatewayError:
    code = _int(children, "error_code", raw, op)
    description = _text(children, "error_description", raw, op)
    shown = (
        "no description"
        if description is None
        else printable(redact_text(description, raw.sensitive)[:_QUOTE_CHARS])
    )
    return GatewayError(
        f"{op.value} refused by the gateway: error {code}: {shown}",
        operation=op.value,
        error_code=code,
        error_description=description,
        redact=raw.sensitive,
    )


def _text(children: dict[str, Any], tag: str, raw: RawResponse, op: Operation) -> str | None:
    """Return a scalar child's text, None when it is absent or empty."""
    value = children.get(tag)
    if value is None or value.__class__ is str:
        return value
    if value.__class__ is list:
        raise _error(raw, op, f"<{tag}> appears more than once", tag)
    raise _error(raw, op, f"<{tag}> holds child elements where text belongs", tag)


def _int(children: dict[str, Any], tag: str, raw: RawResponse, op: Operation) -> int | None:
    text = _text(children, tag, raw, op)
    if text is None:
        return None
    if _INT.fullmatch(text) is None:
        raise _error(raw, op, f"<{tag}> is not an integer", tag)
    return int(text)


def _amount(children: dict[str, Any], raw: RawResponse, op: Operation) -> Decimal | None:
    text = _text(children, "amount", raw, op)
    if text is None:
        return None
    if _DECIMAL.fullmatch(text) is None:
        raise _error(raw, op, "<amount> is not a plain decimal number", "amount")
    return Decimal(text)


def _dt(children: dict[str, Any], raw: RawResponse, op: Operation) -> datetime | None:
    text = _text(children, "dt", raw, op)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _error(raw, op, "<dt> is not an ISO 8601 timestamp", "dt") from exc
    if moment.tzinfo is None:
        raise _error(raw, op, "<dt> has no UTC offset", "dt")
    return moment


def _invoice_status(
    children: dict[str, Any], raw: RawResponse, op: Operation
) -> tuple[InvoiceStatus, str]:
    text = _text(children, "invoice_status", raw, op)
    if text is None:
        raise _error(raw, op, "reply has no <invoice_status>", "invoice_status")
    return InvoiceStatus.parse(text), text


def _qr(children: dict[str, Any], raw: RawResponse, op: Operation) -> str | None:
    """Return the raw `invoice_methods/qr` text, None when either element is absent or empty."""
    methods = children.get("invoice_methods")
    if methods is None:
        return None
    if methods.__class__ is not dict:
        kind = "appears more than once" if methods.__class__ is list else "holds no <qr>"
        raise _error(raw, op, f"<invoice_methods> {kind}", "invoice_methods")
    return _text(methods, "qr", raw, op)


class _PaymentFields(TypedDict):
    invoice_status: InvoiceStatus
    invoice_status_raw: str
    order_id: str | None
    invoice_id: int | None
    customer: str | None
    amount: Decimal | None
    currency: str | None
    card_pan: str | None
    error_code: int | None
    error_description: str | None
    dt: datetime | None


def _payment_fields(
    children: dict[str, Any], raw: RawResponse, op: Operation, customer: str | None
) -> _PaymentFields:
    status, status_raw = _invoice_status(children, raw, op)
    return {
        "invoice_status": status,
        "invoice_status_raw": status_raw,
        "order_id": _text(children, "order_id", raw, op),
        "invoice_id": _int(children, "invoice_id", raw, op),
        "customer": customer,
        "amount": _amount(children, raw, op),
        "currency": _text(children, "currency", raw, op),
        "card_pan": _text(children, "card_pan", raw, op),
        "error_code": _int(children, "error_code", raw, op),
        "error_description": _text(children, "error_description", raw, op),
        "dt": _dt(children, raw, op),
    }


def decode_init(
    raw: RawResponse,
    *,
    max_bytes: int = _DEFAULT_MAX_BYTES,
    qr_customer_param: str = "customer",
) -> InvoiceInit:
    """
    Decode the reply to an init request.

    Args:
        raw: The reply as the transport read it.
        max_bytes: Largest body accepted.
        qr_customer_param: The query parameter of the QR's URL that holds the customer token.

    Returns:
        The new invoice; `invoice_status` is `NEW` (raw None) when the reply carries none, and
        `qr_url`/`customer` are None when the QR value does not decode.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused (see the module docstring).
        GatewayError: The reply says `status=error`.
    """
    op = Operation.INIT
    children = _fields(raw, op, max_bytes)
    status_raw = _text(children, "invoice_status", raw, op)
    status = InvoiceStatus.NEW if status_raw is None else InvoiceStatus.parse(status_raw)
    qr = _qr(children, raw, op)
    qr_url, customer = decode_qr(qr, customer_param=qr_customer_param)
    return InvoiceInit(
        invoice_id=_int(children, "invoice_id", raw, op),
        invoice_status=status,
        invoice_status_raw=status_raw,
        qr=qr,
        qr_url=qr_url,
        customer=customer,
        order_id=_text(children, "order_id", raw, op),
        dt=_dt(children, raw, op),
    )


def decode_payment(
    raw: RawResponse,
    *,
    operation: Operation = Operation.PAY,
    max_bytes: int = _DEFAULT_MAX_BYTES,
    customer: str | None = None,
) -> InvoicePayment:
    """
    Decode the reply to a pay or status request.

    Args:
        raw: The reply as the transport read it.
        operation: `Operation.PAY` or `Operation.STATUS`; named in errors.
        max_bytes: Largest body accepted.
        customer: The customer token the call used, copied into the model (replies may omit it).

    Returns:
        The invoice's payment state.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused (see the module docstring); `invoice_status` is required.
        GatewayError: The reply says `status=error`.
    """
    children = _fields(raw, operation, max_bytes)
    return InvoicePayment(**_payment_fields(children, raw, operation, customer))


def decode_info(
    raw: RawResponse,
    *,
    max_bytes: int = _DEFAULT_MAX_BYTES,
    qr_customer_param: str = "customer",
    customer: str | None = None,
) -> InvoiceInfo:
    """
    Decode the reply to an info request.

    Args:
        raw: The reply as the transport read it.
        max_bytes: Largest body accepted.
        qr_customer_param: The query parameter of the QR's URL that holds the customer token.
        customer: The customer token the call used; when None, the one in the QR's URL is used.

    Returns:
        The invoice's payment state with its description and QR.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused (see the module docstring); `invoice_status` is required.
        GatewayError: The reply says `status=error`.
    """
    op = Operation.INFO
    children = _fields(raw, op, max_bytes)
    fields = _payment_fields(children, raw, op, customer)
    qr = _qr(children, raw, op)
    qr_url, qr_customer = decode_qr(qr, customer_param=qr_customer_param)
    if customer is None:
        fields["customer"] = qr_customer
    return InvoiceInfo(
        **fields,
        description=_text(children, "description", raw, op),
        qr=qr,
        qr_url=qr_url,
    )


def decode_qr(qr: str | None, *, customer_param: str = "customer") -> tuple[str | None, str | None]:
    """
    Decode an `invoice_methods/qr` value into the payment-page URL and its customer token.

    The value is base64 (standard alphabet; the URL-safe alphabet and missing padding are
    tolerated) of a UTF-8 `http(s)://` URL whose *customer_param* query parameter is the token.
    This never raises: whatever fails to decode comes back as None.

    Args:
        qr: The raw value, or None.
        customer_param: The query parameter that holds the customer token.

    Returns:
        `(url, customer)`: the URL, or None when the value is not base64 of an http(s) URL; the
        token, or None when the URL lacks exactly one non-empty *customer_param*.
    """
    if not qr:
        return None, None
    try:
        packed = "".join(qr.split()).encode("ascii").translate(_URLSAFE_TO_STANDARD)
        url = base64.b64decode(packed + b"=" * (-len(packed) % 4), validate=True).decode("utf-8")
        parts = urlsplit(url)
    except (ValueError, binascii.Error):  # UnicodeError is a ValueError
        return None, None
    if parts.scheme not in _HTTP_SCHEMES or not parts.netloc or not _is_clean(url):
        return None, None
    try:
        values = [v for k, v in parse_qsl(parts.query, errors="strict") if k == customer_param]
    except ValueError:
        return url, None
    if len(values) != 1 or not _is_clean(values[0]):
        return url, None
    return url, values[0]


def _is_clean(text: str) -> bool:
    """Non-empty, printable and free of spaces: safe to show and to send back as a field."""
    return bool(text) and text.isprintable() and " " not in text


# ---------------------------------------------------------------------------------------------
# parse_ordered: document order for signatures


class _OrderedBuilder:
    """Expat handlers that build `OrderedNode` trees, keeping every child in document order."""

    __slots__ = ("result", "stack")

    def __init__(self) -> None:
        # One frame per open element: (name, children so far, text pieces so far).
        self.stack: list[tuple[str, list[tuple[str, OrderedNode]], list[str]]] = []
        # Replaced when the root element closes, which a parse that returns has always done.
        self.result: tuple[str, OrderedNode] = ("", "")

    def start(self, name: str, _attributes: object) -> None:
        if len(self.stack) >= _MAX_ORDERED_DEPTH:
            raise _Refused(f"elements nest deeper than {_MAX_ORDERED_DEPTH} levels", name)
        self.stack.append((name, [], []))

    def characters(self, data: str) -> None:
        self.stack[-1][2].append(data)

    def end(self, _name: str) -> None:
        name, children, pieces = self.stack.pop()
        text = "".join(pieces)
        node: OrderedNode
        if children:
            if text and not text.isspace():
                raise _Refused(f"<{name}> mixes text and child elements", name)
            node = children
        else:
            node = text
        if self.stack:
            self.stack[-1][1].append((name, node))
        else:
            self.result = (name, node)


def parse_ordered(
    body: bytes, *, max_bytes: int = _DEFAULT_MAX_BYTES
) -> tuple[str, list[tuple[str, OrderedNode]]]:
    """
    Parse a signed XML document keeping every element in document order.

    Signatures such as `pg_sig` cover values in the order they were sent, and a repeated tag may be
    interleaved with others (`a, b, a`); a dict cannot keep that, so this walks expat's events
    itself. Leaf text is kept exactly, whitespace included, because the signature covers it;
    whitespace between child elements is dropped. Attributes are ignored. The hardening rules of
    the decoders apply, and nesting is limited to 32 levels.

    Args:
        body: The document.
        max_bytes: Largest body accepted.

    Returns:
        The root's tag and its children as `(tag, node)` pairs in document order, where a node is
        a leaf's text (`""` for an empty element) or, for a nested element, its own children.

    Raises:
        DecodeError: The document is refused: too large, a DOCTYPE or ENTITY, not well-formed,
            text mixed with child elements, nesting too deep, or a root without child elements.
    """
    problem = _screen(body, max_bytes)
    if problem is not None:
        raise DecodeError(problem, body=body)
    builder = _OrderedBuilder()
    parser = _hardened_parser()
    parser.buffer_text = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.characters
    try:
        parser.Parse(body, True)  # noqa: FBT003 - expat's positional `isfinal`
    except Exception as exc:
        raise DecodeError(_parser_message(exc), body=body, tag=getattr(exc, "tag", None)) from exc
    root, node = builder.result
    if isinstance(node, str):
        raise DecodeError(f"root element <{root}> holds no child elements", body=body, tag=root)
    return root, node
