"""
The `get_status3.php` reply as a `PaymentStatus`, refund and cancellation lists included.

The two spellings of the cancelled amount are both read: `pg_revoke_amount` (the docs) and
`pg_revoked_amount` (the official mobile SDK); when both are present they must agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from freedompay_async._classic_models import (
    ClassicOperation,
    PaymentState,
    PaymentStatus,
    RefundEntry,
    RevokeEntry,
)
from freedompay_async._decode._invoice import _DEFAULT_MAX_BYTES
from freedompay_async._decode._tree import Tree, check_status, parse_reply

if TYPE_CHECKING:
    from decimal import Decimal

    from freedompay_async._protocol import RawResponse

__all__ = ["decode_payment_status"]


def _refund_entries(tree: Tree) -> tuple[RefundEntry, ...]:
    entries: list[RefundEntry] = []
    for container in tree.elements("pg_refund_payments"):
        for entry in container.elements("pg_refund_payment"):
            raw_state = entry.text("pg_payment_status")
            entries.append(
                RefundEntry(
                    payment_id=entry.integer("pg_payment_id"),
                    state=PaymentState.parse(raw_state),
                    state_raw=raw_state,
                    amount=entry.amount("pg_amount"),
                    payment_date=entry.text("pg_payment_date"),
                    reference=entry.text("pg_reference"),
                )
            )
    return tuple(entries)


def _revoke_entries(tree: Tree) -> tuple[RevokeEntry, ...]:
    entries: list[RevokeEntry] = []
    for container in tree.elements("pg_revoked_payments"):
        for entry in container.elements("pg_revoked_payment"):
            raw_state = entry.text("pg_payment_status")
            entries.append(
                RevokeEntry(
                    payment_id=entry.integer("pg_payment_id"),
                    state=PaymentState.parse(raw_state),
                    state_raw=raw_state,
                )
            )
    return tuple(entries)


def _revoked_amount(tree: Tree) -> Decimal | None:
    """`pg_revoke_amount` (the docs) or `pg_revoked_amount` (the mobile SDK); both must agree."""
    documented = tree.amount("pg_revoke_amount")
    sdk = tree.amount("pg_revoked_amount")
    if documented is not None and sdk is not None and documented != sdk:
        tree.fail("<pg_revoke_amount> and <pg_revoked_amount> disagree", "pg_revoked_amount")
    return documented if documented is not None else sdk


def decode_payment_status(
    raw: RawResponse,
    *,
    script_name: str,
    secret_key: str | None,
    max_bytes: int = _DEFAULT_MAX_BYTES,
) -> PaymentStatus:
    """
    Decode the reply to `get_status3.php`, refund and cancellation lists included.

    Args:
        raw: The reply as the transport read it.
        script_name: The called script (`get_status3.php`).
        secret_key: The key to verify `pg_sig` with; None skips the check.
        max_bytes: Largest body accepted.

    Returns:
        The payment's status.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused (e.g. the two revoked-amount spellings disagree).
        SignatureError: `pg_sig` is missing or wrong.
        GatewayError: `pg_status` is `error` or `rejected`.
    """
    tree = parse_reply(raw, ClassicOperation.PAYMENT_STATUS, script_name, secret_key, max_bytes)
    check_status(tree, required=True)
    raw_state = tree.text("pg_payment_status")
    return PaymentStatus(
        payment_id=tree.integer("pg_payment_id"),
        state=PaymentState.parse(raw_state),
        state_raw=raw_state,
        order_id=tree.text("pg_order_id"),
        amount=tree.amount("pg_amount"),
        currency=tree.text("pg_currency"),
        can_reject=tree.flag("pg_can_reject"),
        captured=tree.flag("pg_captured"),
        clearing_amount=tree.amount("pg_clearing_amount"),
        revoked_amount=_revoked_amount(tree),
        refund_amount=tree.amount("pg_refund_amount"),
        refunds=_refund_entries(tree),
        revocations=_revoke_entries(tree),
        payment_method=tree.text("pg_payment_method"),
        card_name=tree.text("pg_card_name"),
        card_pan=tree.text("pg_card_pan"),
        card_token=tree.text("pg_card_token"),
        payment_date=tree.text("pg_payment_date"),
        create_date=tree.text("pg_create_date"),
        reference=tree.text("pg_reference"),
        auth_code=tree.text("pg_auth_code"),
        failure_code=tree.integer("pg_failure_code"),
        failure_description=tree.text("pg_failure_description"),
    )
