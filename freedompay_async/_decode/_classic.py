"""
Classic Merchant API replies as models: saved cards, refund, cancel and capture.

The reading rules (HTTP status, hardening, `pg_sig`, `pg_status`) are `_tree`'s; `_status`
decodes `get_status3`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from freedompay_async._classic_models import (
    CancelResult,
    CaptureResult,
    CardAddition,
    ClassicOperation,
    RefundResult,
    RemovedCard,
    SavedCard,
)
from freedompay_async._decode._invoice import _DEFAULT_MAX_BYTES
from freedompay_async._decode._tree import Tree, check_status, parse_reply

if TYPE_CHECKING:
    from decimal import Decimal

    from freedompay_async._protocol import RawResponse

__all__ = [
    "decode_cancel",
    "decode_capture",
    "decode_card_add",
    "decode_card_list",
    "decode_card_remove",
    "decode_refund",
]


def decode_card_add(
    raw: RawResponse,
    *,
    script_name: str,
    secret_key: str | None,
    max_bytes: int = _DEFAULT_MAX_BYTES,
) -> CardAddition:
    """
    Decode the reply to `cardstorage/add` (or `add2`).

    Args:
        raw: The reply as the transport read it.
        script_name: The called script (`add` or `add2`), which signs the reply.
        secret_key: The key to verify `pg_sig` with; None skips the check.
        max_bytes: Largest body accepted.

    Returns:
        The redirect URL and the card-verification payment's ids.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused; `pg_redirect_url` is required.
        SignatureError: `pg_sig` is missing or wrong.
        GatewayError: `pg_status` is `error` or `rejected`.
    """
    tree = parse_reply(raw, ClassicOperation.CARD_ADD, script_name, secret_key, max_bytes)
    check_status(tree, required=True)
    url = tree.text("pg_redirect_url")
    if url is None:
        tree.fail("reply has no <pg_redirect_url>", "pg_redirect_url")
    return CardAddition(
        redirect_url=url.strip(),
        payment_id=tree.integer("pg_payment_id"),
        order_id=tree.text("pg_order_id"),
    )


def _card(tree: Tree) -> SavedCard:
    token = tree.text("pg_card_token")
    if token is None:
        tree.fail("a <card> has no <pg_card_token>", "pg_card_token")
    return SavedCard(
        card_token=token,
        card_hash=tree.text("pg_card_hash"),
        card_id=tree.text("pg_card_id"),
        status=tree.text("pg_status"),
        recurring_profile_id=tree.text("pg_recurring_profile_id"),
        created_at=tree.text("created_at"),
        bank=tree.text("bank_alias"),
        brand=tree.text("brand_alias"),
        expiry_month=tree.integer("expiry_month"),
        expiry_year=tree.integer("expiry_year"),
    )


def decode_card_list(
    raw: RawResponse,
    *,
    script_name: str,
    secret_key: str | None,
    max_bytes: int = _DEFAULT_MAX_BYTES,
) -> tuple[SavedCard, ...]:
    """
    Decode the reply to `cardstorage/list`: one `<card>` element per saved card.

    A top-level `pg_status` is optional (the documented reply holds only `<card>` elements); an
    empty root is an empty list.

    Args:
        raw: The reply as the transport read it.
        script_name: The called script (`list`).
        secret_key: The key to verify `pg_sig` with; None skips the check.
        max_bytes: Largest body accepted.

    Returns:
        The cards, in the order sent.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused; every card needs `pg_card_token`.
        SignatureError: `pg_sig` is missing or wrong.
        GatewayError: `pg_status` is `error` or `rejected`.
    """
    tree = parse_reply(raw, ClassicOperation.CARD_LIST, script_name, secret_key, max_bytes)
    check_status(tree, required=False)
    return tuple(_card(card) for card in tree.elements("card"))


def decode_card_remove(
    raw: RawResponse,
    *,
    script_name: str,
    secret_key: str | None,
    max_bytes: int = _DEFAULT_MAX_BYTES,
) -> RemovedCard:
    """
    Decode the reply to `cardstorage/remove`; its fields may sit in a `<card>` element or not.

    Args:
        raw: The reply as the transport read it.
        script_name: The called script (`remove`).
        secret_key: The key to verify `pg_sig` with; None skips the check.
        max_bytes: Largest body accepted.

    Returns:
        The removed card's masked number and removal time.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused; a `pg_status` is required (top level or in `<card>`).
        SignatureError: `pg_sig` is missing or wrong.
        GatewayError: `pg_status` is `error` or `rejected`.
    """
    tree = parse_reply(raw, ClassicOperation.CARD_REMOVE, script_name, secret_key, max_bytes)
    cards = tree.elements("card")
    if len(cards) > 1:
        tree.fail("<card> appears more than once", "card")
    card = cards[0] if cards else tree
    top = tree.text("pg_status")
    check_status(tree, required=card is tree)
    if card is not tree:
        check_status(card, required=top is None)
    return RemovedCard(
        card_hash=card.text("pg_card_hash"),
        deleted_at=card.text("deleted_at"),
        status=card.text("pg_status") or top,
    )


def decode_refund(
    raw: RawResponse,
    *,
    script_name: str,
    secret_key: str | None,
    payment_id: int,
    amount: Decimal | None,
    max_bytes: int = _DEFAULT_MAX_BYTES,
) -> RefundResult:
    """
    Decode the reply to `revoke.php`.

    Args:
        raw: The reply as the transport read it.
        script_name: The called script (`revoke.php`).
        secret_key: The key to verify `pg_sig` with; None skips the check.
        payment_id: The payment the request refunded, copied into the result.
        amount: The amount the request asked for (None: full), copied into the result.
        max_bytes: Largest body accepted.

    Returns:
        The refund's own payment id, when sent.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused.
        SignatureError: `pg_sig` is missing or wrong.
        GatewayError: `pg_status` is `error` or `rejected`.
    """
    tree = parse_reply(raw, ClassicOperation.REFUND, script_name, secret_key, max_bytes)
    check_status(tree, required=True)
    return RefundResult(
        payment_id=payment_id,
        refund_payment_id=tree.integer("pg_revoke_payment_id"),
        amount=amount,
    )


def decode_cancel(
    raw: RawResponse,
    *,
    script_name: str,
    secret_key: str | None,
    payment_id: int,
    max_bytes: int = _DEFAULT_MAX_BYTES,
) -> CancelResult:
    """
    Decode the reply to `cancel.php`.

    Args:
        raw: The reply as the transport read it.
        script_name: The called script (`cancel.php`).
        secret_key: The key to verify `pg_sig` with; None skips the check.
        payment_id: The payment the request cancelled, copied into the result.
        max_bytes: Largest body accepted.

    Returns:
        The reversal's own payment id, when sent.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused.
        SignatureError: `pg_sig` is missing or wrong.
        GatewayError: `pg_status` is `error` or `rejected`.
    """
    tree = parse_reply(raw, ClassicOperation.CANCEL, script_name, secret_key, max_bytes)
    check_status(tree, required=True)
    return CancelResult(
        payment_id=payment_id, cancel_payment_id=tree.integer("pg_cancel_payment_id")
    )


def decode_capture(
    raw: RawResponse,
    *,
    script_name: str,
    secret_key: str | None,
    payment_id: int,
    max_bytes: int = _DEFAULT_MAX_BYTES,
) -> CaptureResult:
    """
    Decode the reply to `do_capture.php`.

    Args:
        raw: The reply as the transport read it.
        script_name: The called script (`do_capture.php`).
        secret_key: The key to verify `pg_sig` with; None skips the check.
        payment_id: The payment the request captured, copied into the result.
        max_bytes: Largest body accepted.

    Returns:
        The payment's amount and the amount cleared, when sent.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused.
        SignatureError: `pg_sig` is missing or wrong.
        GatewayError: `pg_status` is `error` or `rejected`.
    """
    tree = parse_reply(raw, ClassicOperation.CAPTURE, script_name, secret_key, max_bytes)
    check_status(tree, required=True)
    return CaptureResult(
        payment_id=payment_id,
        amount=tree.amount("pg_amount"),
        clearing_amount=tree.amount("pg_clearing_amount"),
    )
