"""
The hardened parse every decoder shares: the byte screen, a DOCTYPE-refusing expat, `parse_ordered`.

`parse_ordered` keeps a signed document's elements in the order they were sent. The rules are
stated in `_invoice`'s docstring: a body over the cap, empty, or holding a DOCTYPE or ENTITY
declaration is refused before any parser sees a byte, and every parser made here refuses a DOCTYPE
the moment expat reports one. Messages never quote the document.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import TypeAlias
from xml.parsers import expat

from freedompay_async._exceptions import DecodeError

__all__ = ["OrderedNode", "parse_ordered"]

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
