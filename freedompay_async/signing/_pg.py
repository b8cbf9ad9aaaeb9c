"""The classic `pg_sig` (MD5) and the `Element` it signs; `signing` re-exports them."""

from __future__ import annotations

import hashlib
import hmac
import operator
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

from freedompay_async.signing._jws import number_text

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import TypeAlias

__all__ = ["Element", "pg_sig", "script_name_from_url", "verify_pg_sig"]


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
        return number_text(value)
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
