"""
The classic replies' shared reading: HTTP status, hardened parse, `pg_sig`, `pg_status`.

A reply is refused, in this order, when: its HTTP status is not 2xx (`HTTPStatusError`); it is
larger than the size cap, empty, or declares a DOCTYPE or ENTITY, is not well-formed or nests
deeper than 32 levels (`DecodeError`, before or while expat parses it, the same hardened parser
the invoice decoders and `parse_ordered` use); its `pg_sig` does not verify with the called
script's name (`SignatureError`; skipped when no secret key is given; an unsigned reply is
accepted only as the `pg_error_code` 9998 error); `pg_status` is `error` or `rejected`
(`GatewayError` with `pg_error_code`/`pg_error_description`, or
`pg_failure_code`/`pg_failure_description`); or a field the model needs is malformed
(`DecodeError` naming the tag).

The root's name is ignored (`<response>` or `<root>`). Unknown tags are tolerated and signed.
Each reply is parsed once, in document order, so the same tree serves the signature and the model.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, NoReturn

from freedompay_async._decode._invoice import (
    _DECIMAL,
    _INT,
    _QUOTE_CHARS,
    OrderedNode,
    _hardened_parser,
    _OrderedBuilder,
    _parser_message,
    _screen,
)
from freedompay_async._exceptions import (
    DecodeError,
    GatewayError,
    HTTPStatusError,
    SignatureError,
)
from freedompay_async.signing import Element, verify_pg_sig

if TYPE_CHECKING:
    from freedompay_async._classic_models import ClassicOperation
    from freedompay_async._protocol import RawResponse

__all__ = ["Tree", "check_status", "parse_reply"]

_OK_STATUSES = frozenset({"ok", "success"})
_REFUSED_STATUSES = frozenset({"error", "rejected"})
_BOOLS = {"1": True, "0": False, "true": True, "false": False}


class Tree:
    """One element's children in document order, with typed accessors that name the bad tag."""

    __slots__ = ("children", "op", "raw")

    def __init__(
        self, children: list[tuple[str, OrderedNode]], raw: RawResponse, op: ClassicOperation
    ) -> None:
        self.children = children
        self.raw = raw
        self.op = op

    def fail(self, message: str, tag: str | None = None) -> NoReturn:
        raise DecodeError(
            f"{self.op.value} reply refused: {message}",
            operation=self.op.value,
            status_code=self.raw.status,
            headers=self.raw.headers,
            body=self.raw.body,
            tag=tag,
        )

    def _all(self, tag: str) -> list[OrderedNode]:
        return [node for name, node in self.children if name == tag]

    def text(self, tag: str) -> str | None:
        """A scalar child's text; None when absent or empty."""
        found = self._all(tag)
        if not found:
            return None
        if len(found) > 1:
            self.fail(f"<{tag}> appears more than once", tag)
        node = found[0]
        if not isinstance(node, str):
            self.fail(f"<{tag}> holds child elements where text belongs", tag)
        return node or None

    def integer(self, tag: str) -> int | None:
        text = self.text(tag)
        if text is None:
            return None
        text = text.strip()
        if _INT.fullmatch(text) is None:
            self.fail(f"<{tag}> is not an integer", tag)
        return int(text)

    def amount(self, tag: str) -> Decimal | None:
        """A plain decimal number, sign dropped (refund amounts are written negative)."""
        text = self.text(tag)
        if text is None:
            return None
        text = text.strip()
        if _DECIMAL.fullmatch(text) is None:
            self.fail(f"<{tag}> is not a plain decimal number", tag)
        return abs(Decimal(text))

    def flag(self, tag: str) -> bool | None:
        text = self.text(tag)
        if text is None:
            return None
        value = _BOOLS.get(text.strip().lower())
        if value is None:
            self.fail(f"<{tag}> is not 0 or 1", tag)
        return value

    def elements(self, tag: str) -> list[Tree]:
        """Every child element *tag* that holds children (an empty one is skipped)."""
        out: list[Tree] = []
        for node in self._all(tag):
            if isinstance(node, str):
                if node.strip():
                    self.fail(f"<{tag}> holds text where child elements belong", tag)
                continue
            out.append(Tree(node, self.raw, self.op))
        return out


def parse_reply(
    raw: RawResponse, op: ClassicOperation, script_name: str, secret_key: str | None, max_bytes: int
) -> Tree:
    if not 200 <= raw.status < 300:  # noqa: PLR2004 - the 2xx range
        raise HTTPStatusError(
            f"{op.value} failed: the gateway answered HTTP {raw.status}",
            operation=op.value,
            status_code=raw.status,
            headers=raw.headers,
            body=raw.body,
        )
    empty = Tree([], raw, op)
    problem = _screen(raw.body, max_bytes)
    if problem is not None:
        empty.fail(problem)
    builder = _OrderedBuilder()
    parser = _hardened_parser()
    parser.buffer_text = True
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.characters
    try:
        parser.Parse(raw.body, True)  # noqa: FBT003 - expat's positional `isfinal`
    except Exception as exc:
        raise DecodeError(
            f"{op.value} reply refused: {_parser_message(exc)}",
            operation=op.value,
            status_code=raw.status,
            headers=raw.headers,
            body=raw.body,
            tag=getattr(exc, "tag", None),
        ) from exc
    root, node = builder.result
    if isinstance(node, str):
        if node.strip():
            empty.fail(f"root element <{root}> holds text", root)
        node = []
    tree = Tree(node, raw, op)
    if secret_key is not None:
        _verify(tree, script_name, secret_key)
    return tree


def _verify(tree: Tree, script_name: str, secret_key: str) -> None:
    signed = any(name == "pg_sig" for name, _ in tree.children)
    message = Element.from_ordered(tree.children)
    if signed and verify_pg_sig(script_name, message, secret_key):
        return
    if not signed and verify_pg_sig(script_name, message, secret_key, allow_unsigned_9998=True):
        status = (tree.text("pg_status") or "").strip().lower()
        if status in _REFUSED_STATUSES:
            return
    what = "does not verify" if signed else "is missing"
    raise SignatureError(
        f"{tree.op.value} reply refused: its pg_sig {what} (script {script_name!r})",
        operation=tree.op.value,
        status_code=tree.raw.status,
        headers=tree.raw.headers,
        body=tree.raw.body,
    )


def check_status(tree: Tree, *, required: bool) -> None:
    """Return on `ok`/`success` (or no status when not *required*); raise otherwise."""
    status = tree.text("pg_status")
    if status is None:
        if required:
            tree.fail("reply has no <pg_status>", "pg_status")
        return
    word = status.strip().lower()
    if word in _OK_STATUSES:
        return
    if word not in _REFUSED_STATUSES:
        tree.fail("<pg_status> is neither ok, error nor rejected", "pg_status")
    code = tree.integer("pg_error_code")
    description = tree.text("pg_error_description")
    if code is None:
        code = tree.integer("pg_failure_code")
    if description is None:
        description = tree.text("pg_failure_description")
    shown = "no description" if description is None else description[:_QUOTE_CHARS]
    verb = "rejected" if word == "rejected" else "refused"
    raise GatewayError(
        f"{tree.op.value} {verb} by the gateway: error {code}: {shown}",
        operation=tree.op.value,
        error_code=code,
        error_description=description,
    )
