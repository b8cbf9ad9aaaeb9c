"""
Freedom Pay's two signatures, pure and standard-library only.

- **Detached JWS, HS512** (the `/v5/merchant/invoice/*` API): the header `X-JWS-Signature` is
  `B64H..B64S`, where `B64S = base64url(HMAC-SHA512(secret_key, B64H + "." + B64P))` and the
  payload part `B64P` (the request fields as compact JSON) is cut out. `jws_detached` reproduces
  the published invoice-init vector bit-for-bit.
- **`pg_sig`** (the classic Merchant API and every callback): lowercase hex MD5 of
  `script_name;value;value;…;secret_key`, the values ordered by the sort rule `pg_sig` documents.
  Messages are given as a mapping, as (name, value) pairs in the order sent (repeated names
  allowed), or as an `Element` (an XML element's children, see `Element.from_ordered`).

Verification compares in constant time and fails closed: a missing or malformed signature never
verifies.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import operator
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, NoReturn
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import TypeAlias

__all__ = [
    "Element",
    "jws_detached",
    "jws_header",
    "jws_payload",
    "pg_sig",
    "script_name_from_url",
    "verify_jws_detached",
    "verify_pg_sig",
]

_dumps_str = json.JSONEncoder(ensure_ascii=False).encode
# The C string encoder behind `_dumps_str`, without JSONEncoder.encode's Python-level dispatch.
_encode_str = json.encoder.encode_basestring
# Field names repeat on every request: quote each once.
_json_name = functools.lru_cache(maxsize=256)(_encode_str)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_scalar(value: str | int | Decimal) -> str:
    """Render one value as compact JSON: numbers as numbers, text unescaped UTF-8."""
    if value.__class__ is str:
        return _encode_str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return _number_text(value)
    return str(_dumps_str(value))


def _number_text(value: int | Decimal) -> str:
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
    body = ",".join(f"{_json_name(name)}:{_json_scalar(value)}" for name, value in fields)
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


def script_name_from_url(url: str) -> str:
    """
    Return the script name `pg_sig` signs with: the URL's last path segment.

    The query and fragment are dropped; a URL whose path is empty or ends in `/` gives `""`.

    Args:
        url: A URL or a path, e.g. `https://shop.example/pay/result.php?x=1`.

    Returns:
        The last segment, e.g. `result.php`.

    Raises:
        ValueError: The URL cannot be split (e.g. a malformed IPv6 host).
    """
    path = urlsplit(url).path
    return path.rsplit("/", 1)[-1]


if TYPE_CHECKING:
    #: A whole message: a mapping, (name, value) pairs in the order sent, or an `Element`. Values
    #: are checked when signing (see `pg_sig`), so they are typed `object` here: a dict literal
    #: mixing text and numbers is accepted as it is written.
    SignFields: TypeAlias = "Mapping[str, object] | Iterable[tuple[str, object]] | Element"

_PAIR_LENGTH = 2


class Element:
    """
    Named entries in document order, repeated names kept: the children of an XML element.

    A mapping cannot hold repeated names, and a plain list is a list of *values* (keyed by
    index), so an XML element with children is given to `pg_sig` as an `Element`.
    `Element.from_ordered` converts the ordered tree an XML decoder produces (text for a leaf, a
    list of (name, value) pairs for an element with children). Immutable; its `repr` shows the
    names only, never the values (which may hold a signature or a card token).

    Args:
        children: (name, value) pairs in document order.

    Raises:
        TypeError: An entry is not a (str, value) pair.
    """

    __slots__ = ("_children",)

    _children: tuple[tuple[str, object], ...]

    def __init__(self, children: Iterable[tuple[str, object]] = ()) -> None:
        items = tuple(children)
        for entry in items:
            if not (
                isinstance(entry, tuple)
                and len(entry) == _PAIR_LENGTH
                and isinstance(entry[0], str)
            ):
                raise TypeError("Element children must be (str, value) pairs")
        object.__setattr__(self, "_children", items)

    @property
    def children(self) -> tuple[tuple[str, object], ...]:
        """The (name, value) pairs, in document order."""
        return self._children

    @classmethod
    def from_ordered(cls, children: Iterable[tuple[str, object]]) -> Element:
        """
        Convert an ordered XML tree into nested `Element`s, ready for `pg_sig`.

        Args:
            children: The root's children as (tag, node) pairs, where a node is the element's
                text (`""` when empty) or, for an element with children, a list or tuple of
                (tag, node) pairs.

        Returns:
            The root's children as an `Element`, nested elements converted likewise.

        Raises:
            TypeError: A node is neither text nor a sequence of (tag, node) pairs.
        """
        frames: list[tuple[Iterator[object], list[tuple[str, object]], str]] = [
            (iter(children), [], "")
        ]
        while True:  # one step per node: bounded by the size of the tree
            source, converted, tag = frames[-1]
            entry = next(source, _END)
            if entry is _END:
                frames.pop()
                element = cls(converted)
                if not frames:
                    return element
                frames[-1][1].append((tag, element))
                continue
            name, node = _split_pair(entry)
            if isinstance(node, str):
                converted.append((name, node))
            elif isinstance(node, list | tuple):
                frames.append((iter(node), [], name))
            else:
                raise TypeError("an ordered XML node must be text or a list of (tag, node) pairs")

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Element is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Element):
            return NotImplemented
        return self._children == other._children

    def __hash__(self) -> int:
        return hash(self._children)

    def __reduce__(self) -> tuple[type[Element], tuple[tuple[tuple[str, object], ...]]]:
        return (Element, (self._children,))

    def __repr__(self) -> str:
        return f"Element(names={tuple(name for name, _ in self._children)!r})"


_END = object()


def _split_pair(entry: object) -> tuple[str, object]:
    """Check that *entry* is a (name, value) pair and return it with the name as text."""
    if not isinstance(entry, tuple | list) or len(entry) != _PAIR_LENGTH:
        raise TypeError("fields must be (name, value) pairs")
    return _key_text(entry[0]), entry[1]


def _key_text(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise TypeError(f"a field name must be text or an integer, not {type(key).__name__}")


def _top_entries(fields: SignFields) -> list[tuple[str, object]]:
    """The message's top-level (name, value) pairs, in the order sent."""
    if isinstance(fields, Element):
        return list(fields.children)
    if isinstance(fields, Mapping):
        return [(_key_text(key), value) for key, value in fields.items()]
    if isinstance(fields, str | bytes | bytearray):
        raise TypeError("fields must be a mapping, (name, value) pairs or an Element")
    return [_split_pair(entry) for entry in fields]


def _children(value: object) -> list[tuple[str, object]] | None:
    """The entries of a container value, or None when *value* is a leaf."""
    if isinstance(value, Element):
        return list(value.children)
    if isinstance(value, Mapping):
        return [(_key_text(key), item) for key, item in value.items()]
    if isinstance(value, list | tuple):
        return [(str(index), item) for index, item in enumerate(value)]
    return None


def _leaf_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise TypeError("a bool cannot be signed: send the text the gateway receives (1 or 0)")
    if isinstance(value, int | Decimal):
        return _number_text(value)
    raise TypeError(f"a {type(value).__name__} cannot be signed: give text, int or Decimal")


def _sorted_values(entries: list[tuple[str, object]]) -> list[str]:
    """
    Flatten a message into its leaf values in `pg_sig` order.

    Every entry gets a sort name: its parent's sort name, its key, its position among its
    siblings padded to three digits. Leaves are then sorted by sort name as UTF-8 bytes (a
    stable sort, so equal names keep document order).
    """
    leaves: list[tuple[bytes, str]] = []
    frames: list[tuple[str, Iterator[tuple[int, tuple[str, object]]]]] = [
        ("", enumerate(entries, start=1))
    ]
    while frames:  # one step per entry: bounded by the size of the message
        parent, siblings = frames[-1]
        step = next(siblings, None)
        if step is None:
            frames.pop()
            continue
        position, (key, value) = step
        if key == "pg_sig":
            continue  # never signed, at any depth; its position stays used
        sort_name = f"{parent}{key}{position:03d}"
        children = _children(value)
        if children is None:
            leaves.append((sort_name.encode(), _leaf_text(value)))
        else:
            frames.append((sort_name, enumerate(children, start=1)))
    leaves.sort(key=operator.itemgetter(0))
    return [text for _, text in leaves]


def _md5_signature(script_name: str, entries: list[tuple[str, object]], secret_key: str) -> str:
    text = ";".join([script_name, *_sorted_values(entries), secret_key])
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def pg_sig(script_name: str, fields: SignFields, secret_key: str) -> str:
    """
    Compute the classic `pg_sig` of a message, as Freedom Pay's PHP class `PG_Signature` does.

    The signing string is the script name, then every leaf value, then the secret key, joined by
    `;`; the signature is its MD5 in lowercase hex. Leaves are ordered by a *sort name*: at each
    level the entries are numbered 1, 2, 3… in the order they were sent, and an entry's sort name
    is its parent's sort name, then its key (a list index in decimal), then its position padded to
    at least three digits (`pg_amount` sent first sorts as `pg_amount001`); sort names are
    compared as UTF-8 bytes. So a 12-item list signs in index order 0, 10, 1, 11, 2, 3 … 9, and
    `pg_param-x` sorts before `pg_param` while `pg_param_x` sorts after it.

    `pg_sig` is skipped at any depth but uses up its position; an empty mapping, list or
    `Element` contributes nothing; an empty value (or None) contributes an empty element.

    Args:
        script_name: The called script (`init_payment.php`) or the callback URL's last segment
            (`script_name_from_url`).
        fields: The message, in the order sent: a mapping, an iterable of (name, value) pairs
            (repeated names allowed, as in XML), or an `Element`. Values are text, `int`,
            finite `Decimal` (written in plain notation), None, mappings, lists or tuples of
            values (keyed by index), or `Element`s (XML elements with children).
        secret_key: The merchant's secret key.

    Returns:
        The 32-character lowercase hex signature.

    Raises:
        TypeError: A name or value has a type that has no defined text (a bool, a float).
        ValueError: A `Decimal` is not finite.
    """
    return _md5_signature(script_name, _top_entries(fields), secret_key)


def verify_pg_sig(
    script_name: str,
    fields: SignFields,
    secret_key: str,
    *,
    allow_unsigned_9998: bool = False,
) -> bool:
    """
    Check the `pg_sig` a message carries, in constant time; fail closed.

    Every received field except `pg_sig` is signed, unknown ones included. A message verifies
    only when it carries exactly one top-level `pg_sig`, a string equal (ignoring hex case) to
    the signature computed over the rest.

    Args:
        script_name: The script name the sender signed with (for a reply: the called script; for
            a callback: the last path segment of the callback URL).
        fields: The received message, as for `pg_sig`, `pg_sig` among the fields.
        secret_key: The merchant's secret key.
        allow_unsigned_9998: Accept a message without any `pg_sig` when its `pg_error_code` is
            `9998` (the gateway could not identify the merchant, so it cannot sign). Only for
            replies to the merchant's own requests; never for callbacks.

    Returns:
        True when the signature matches (or, with `allow_unsigned_9998`, the message is the
        unsigned 9998 error); False otherwise, including for values that cannot be encoded.

    Raises:
        TypeError: A name or value has a type that has no defined text (a programming error,
            not a property of the message).
    """
    entries = _top_entries(fields)
    claimed = [value for name, value in entries if name == "pg_sig"]
    if not claimed:
        return allow_unsigned_9998 and _is_unsigned_9998(entries)
    if len(claimed) != 1 or not isinstance(claimed[0], str) or not claimed[0]:
        return False
    try:
        expected = _md5_signature(script_name, entries, secret_key)
        offered = claimed[0].lower().encode()
    except ValueError:  # a non-finite Decimal, text that cannot be encoded
        return False
    return hmac.compare_digest(expected.encode("ascii"), offered)


def _is_unsigned_9998(entries: list[tuple[str, object]]) -> bool:
    codes = [value for name, value in entries if name == "pg_error_code"]
    if len(codes) != 1:
        return False
    code = codes[0]
    if isinstance(code, int) and not isinstance(code, bool):
        return code == 9998  # noqa: PLR2004 - the documented "merchant not identified" code
    return isinstance(code, str) and code.strip() == "9998"
