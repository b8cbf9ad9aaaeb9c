"""Classic Merchant API replies: models, pg_sig, pg_status and the hardening rules."""

from __future__ import annotations

import pickle
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape

import pytest

from freedompay_async import (
    DecodeError,
    GatewayError,
    HTTPStatusError,
    PaymentState,
    PaymentStatus,
    SavedCard,
    SignatureError,
)
from freedompay_async._decode import (
    decode_cancel,
    decode_capture,
    decode_card_add,
    decode_card_list,
    decode_card_remove,
    decode_payment_status,
    decode_refund,
)
from freedompay_async._protocol import RawResponse
from freedompay_async.signing import Element, pg_sig

SECRET = "classic-secret"
Item = tuple[str, Any]


def _element(items: list[Item]) -> Element:
    return Element((n, v if isinstance(v, str) else _element(v)) for n, v in items)


def _xml(items: list[Item]) -> str:
    return "".join(f"<{n}>{escape(v) if isinstance(v, str) else _xml(v)}</{n}>" for n, v in items)


def reply(
    script: str,
    items: list[Item],
    *,
    sign: bool = True,
    root: str = "response",
    status: int = 200,
    secret: str = SECRET,
) -> RawResponse:
    """Write a reply the way the gateway documents it, signed with the called script's name."""
    if sign:
        items = [*items, ("pg_salt", "s4lt")]
        items = [*items, ("pg_sig", pg_sig(script, _element(items), secret))]
    body = f'<?xml version="1.0" encoding="utf-8"?><{root}>{_xml(items)}</{root}>'
    return RawResponse(status=status, headers={}, body=body.encode())


def status_reply(extra: list[Item], **kwargs: Any) -> RawResponse:
    """A get_status3 reply with the given fields after pg_status=ok."""
    return reply("get_status3.php", [("pg_status", "ok"), *extra], **kwargs)


def decode_status(raw: RawResponse, secret: str | None = SECRET) -> PaymentStatus:
    """Decode a get_status3 reply with the test secret."""
    return decode_payment_status(raw, script_name="get_status3.php", secret_key=secret)


FULL_STATUS: list[Item] = [
    ("pg_payment_id", "555"),
    ("pg_order_id", "A-1"),
    ("pg_currency", "KZT"),
    ("pg_amount", "100.00"),
    ("pg_can_reject", "0"),
    ("pg_payment_method", "bankcard"),
    ("pg_payment_status", "success"),
    ("pg_clearing_amount", "100.00"),
    ("pg_refund_amount", "-30.50"),
    ("pg_captured", "1"),
    ("pg_card_pan", "4405-63XX-XXXX-1234"),
    ("pg_card_token", "tok-abcdef-123456"),
    ("pg_payment_date", "2026-07-01 12:00:00"),
    (
        "pg_refund_payments",
        [
            (
                "pg_refund_payment",
                [
                    ("pg_payment_id", "556"),
                    ("pg_payment_status", "success"),
                    ("pg_amount", "-10.50"),
                    ("pg_payment_date", "2026-07-02 10:00:00"),
                    ("pg_reference", "000000000556"),
                ],
            ),
            (
                "pg_refund_payment",
                [("pg_payment_id", "557"), ("pg_payment_status", "success"), ("pg_amount", "-20")],
            ),
        ],
    ),
]


def test_a_full_status_reply_decodes_into_typed_fields() -> None:
    """get_status3 decodes amounts as Decimal, refunds positive, flags as bools."""
    status = decode_status(status_reply(FULL_STATUS))
    assert status.payment_id == 555
    assert status.state is PaymentState.SUCCESS
    assert status.amount == Decimal("100.00")
    assert status.captured is True
    assert status.can_reject is False
    assert status.refund_amount == Decimal("30.50")
    assert [(r.payment_id, r.amount) for r in status.refunds] == [
        (556, Decimal("10.50")),
        (557, Decimal(20)),
    ]
    assert status.refunds[0].reference == "000000000556"
    assert status.refunded_total == Decimal("30.50")
    assert "tok-abcdef-123456" not in repr(status)
    assert "3456" in repr(status)


@pytest.mark.parametrize("tag", ["pg_revoke_amount", "pg_revoked_amount"])
def test_both_revoked_amount_spellings_are_read(tag: str) -> None:
    """The docs' pg_revoke_amount and the mobile SDK's pg_revoked_amount both decode."""
    status = decode_status(status_reply([("pg_payment_status", "revoked"), (tag, "75.25")]))
    assert status.revoked_amount == Decimal("75.25")
    assert status.state is PaymentState.REVOKED


def test_both_spellings_agreeing_are_accepted_and_disagreeing_refused() -> None:
    """Both spellings present must carry the same amount, else DecodeError names the tag."""
    same = [("pg_revoke_amount", "5"), ("pg_revoked_amount", "5.00")]
    assert decode_status(status_reply(same)).revoked_amount == Decimal(5)
    with pytest.raises(DecodeError) as caught:
        decode_status(status_reply([("pg_revoke_amount", "5"), ("pg_revoked_amount", "6")]))
    assert caught.value.tag == "pg_revoked_amount"


def test_revocation_entries_decode() -> None:
    """pg_revoked_payments entries keep their payment id and state."""
    items: list[Item] = [
        (
            "pg_revoked_payments",
            [("pg_revoked_payment", [("pg_payment_id", "9"), ("pg_payment_status", "success")])],
        )
    ]
    status = decode_status(status_reply(items))
    assert [(r.payment_id, r.state) for r in status.revocations] == [(9, PaymentState.SUCCESS)]


def test_an_unknown_payment_status_is_kept_raw() -> None:
    """An unknown pg_payment_status decodes to UNKNOWN with the raw text kept."""
    status = decode_status(status_reply([("pg_payment_status", "partially_frozen")]))
    assert status.state is PaymentState.UNKNOWN
    assert status.state_raw == "partially_frozen"


@pytest.mark.parametrize(
    ("items", "tag"),
    [
        ([("pg_amount", "1,5")], "pg_amount"),
        ([("pg_amount", "1e3")], "pg_amount"),
        ([("pg_payment_id", "12x")], "pg_payment_id"),
        ([("pg_captured", "yes")], "pg_captured"),
        ([("pg_amount", "1"), ("pg_amount", "2")], "pg_amount"),
        ([("pg_amount", [("x", "1")])], "pg_amount"),
        ([("pg_refund_payments", "text")], "pg_refund_payments"),
        (
            [("pg_refund_payments", [("pg_refund_payment", [("pg_amount", "abc")])])],
            "pg_amount",
        ),
    ],
)
def test_a_malformed_field_is_refused_naming_its_tag(items: list[Item], tag: str) -> None:
    """Bad numbers, flags, repeats and misplaced children raise DecodeError with .tag."""
    with pytest.raises(DecodeError) as caught:
        decode_status(status_reply(items))
    assert caught.value.tag == tag
    assert caught.value.operation == "payment_status"


def test_pg_status_error_raises_gateway_error_with_code_and_description() -> None:
    """pg_status=error becomes GatewayError carrying pg_error_code and its description."""
    raw = reply(
        "revoke.php",
        [
            ("pg_status", "error"),
            ("pg_error_code", "490"),
            ("pg_error_description", "Refund impossible"),
        ],
    )
    with pytest.raises(GatewayError) as caught:
        decode_refund(raw, script_name="revoke.php", secret_key=SECRET, payment_id=1, amount=None)
    assert caught.value.error_code == 490
    assert caught.value.error_description == "Refund impossible"
    assert caught.value.operation == "refund"


def test_pg_status_rejected_raises_gateway_error_from_failure_fields() -> None:
    """pg_status=rejected is refused too; pg_failure_code stands in for pg_error_code."""
    raw = reply(
        "do_capture.php",
        [
            ("pg_status", "rejected"),
            ("pg_failure_code", "7"),
            ("pg_failure_description", "Exceeds"),
        ],
    )
    with pytest.raises(GatewayError, match="rejected") as caught:
        decode_capture(raw, script_name="do_capture.php", secret_key=SECRET, payment_id=1)
    assert (caught.value.error_code, caught.value.error_description) == (7, "Exceeds")


@pytest.mark.parametrize(("status", "tag"), [(None, "pg_status"), ("maybe", "pg_status")])
def test_a_missing_or_unknown_pg_status_is_refused(status: str | None, tag: str) -> None:
    """A money reply without pg_status, or with an unknown one, is a DecodeError."""
    items: list[Item] = [("pg_revoke_payment_id", "5")]
    if status is not None:
        items.insert(0, ("pg_status", status))
    with pytest.raises(DecodeError) as caught:
        decode_refund(
            reply("revoke.php", items),
            script_name="revoke.php",
            secret_key=SECRET,
            payment_id=1,
            amount=None,
        )
    assert caught.value.tag == tag


def test_money_results_decode() -> None:
    """Refund, cancel and capture replies give their ids and amounts."""
    refund = decode_refund(
        reply("revoke.php", [("pg_status", "ok"), ("pg_revoke_payment_id", "77")]),
        script_name="revoke.php",
        secret_key=SECRET,
        payment_id=5,
        amount=Decimal("2.50"),
    )
    assert (refund.payment_id, refund.refund_payment_id, refund.amount) == (
        5,
        77,
        Decimal("2.50"),
    )
    cancel = decode_cancel(
        reply("cancel.php", [("pg_status", "ok"), ("pg_cancel_payment_id", "78")]),
        script_name="cancel.php",
        secret_key=SECRET,
        payment_id=5,
    )
    assert cancel.cancel_payment_id == 78
    capture = decode_capture(
        reply(
            "do_capture.php",
            [("pg_status", "ok"), ("pg_amount", "10"), ("pg_clearing_amount", "8")],
        ),
        script_name="do_capture.php",
        secret_key=SECRET,
        payment_id=5,
    )
    assert (capture.amount, capture.clearing_amount) == (Decimal(10), Decimal(8))


def _card(token: str, **extra: str) -> Item:
    fields: list[Item] = [
        ("pg_status", "success"),
        ("pg_merchant_id", "123456"),
        ("pg_card_id", "3"),
        ("pg_card_token", token),
        ("pg_card_hash", "4405-63XX-XXXX-0001"),
        ("created_at", "2026-07-01 10:00:00"),
    ]
    fields += list(extra.items())
    return ("card", fields)


def test_card_list_decodes_every_card_and_masks_tokens() -> None:
    """Each <card> becomes a SavedCard; repr shows only the token's tail."""
    raw = reply(
        "list",
        [
            _card("tok-1111-secret-aaaa"),
            _card(
                "tok-2222-secret-bbbb", expiry_month="12", expiry_year="2030", brand_alias="VISA"
            ),
        ],
    )
    cards = decode_card_list(raw, script_name="list", secret_key=SECRET)
    assert [c.card_token for c in cards] == ["tok-1111-secret-aaaa", "tok-2222-secret-bbbb"]
    assert cards[1].expiry_month == 12
    assert cards[1].brand == "VISA"
    assert cards[0].card_hash == "4405-63XX-XXXX-0001"
    assert "secret" not in repr(cards)
    assert "aaaa" in repr(cards[0])


def test_an_empty_card_list_decodes_to_no_cards() -> None:
    """A reply with no <card> (only salt and signature, or an empty root) is an empty list."""
    assert decode_card_list(reply("list", []), script_name="list", secret_key=SECRET) == ()
    empty = RawResponse(status=200, headers={}, body=b"<response/>")
    assert decode_card_list(empty, script_name="list", secret_key=None) == ()


def test_a_card_without_token_is_refused() -> None:
    """A <card> lacking pg_card_token raises DecodeError naming it."""
    raw = reply("list", [("card", [("pg_card_hash", "x")])])
    with pytest.raises(DecodeError) as caught:
        decode_card_list(raw, script_name="list", secret_key=SECRET)
    assert caught.value.tag == "pg_card_token"


@pytest.mark.parametrize("nested", [True, False], ids=["in-card", "top-level"])
def test_card_remove_reads_fields_nested_or_flat(nested: bool) -> None:
    """Remove's fields are read from a <card> element or from the root."""
    fields: list[Item] = [
        ("pg_status", "success"),
        ("pg_card_hash", "4405-63XX-XXXX-0001"),
        ("deleted_at", "2026-07-03 09:00:00"),
    ]
    items: list[Item] = [("card", fields)] if nested else fields
    removed = decode_card_remove(reply("remove", items), script_name="remove", secret_key=SECRET)
    assert removed.card_hash == "4405-63XX-XXXX-0001"
    assert removed.deleted_at == "2026-07-03 09:00:00"
    assert removed.status == "success"


def test_card_add_needs_a_redirect_url() -> None:
    """cardstorage/add gives the redirect URL; without one the reply is refused."""
    ok = reply(
        "add2",
        [("pg_status", "ok"), ("pg_payment_id", "12"), ("pg_redirect_url", "https://x/v?p=1")],
    )
    added = decode_card_add(ok, script_name="add2", secret_key=SECRET)
    assert (added.redirect_url, added.payment_id) == ("https://x/v?p=1", 12)
    with pytest.raises(DecodeError) as caught:
        decode_card_add(reply("add2", [("pg_status", "ok")]), script_name="add2", secret_key=SECRET)
    assert caught.value.tag == "pg_redirect_url"


# -- signatures ---------------------------------------------------------------------------


def test_a_reply_signed_with_another_script_is_refused() -> None:
    """A reply signed for cancel.php does not verify as a revoke.php reply."""
    raw = reply("cancel.php", [("pg_status", "ok"), ("pg_revoke_payment_id", "5")])
    with pytest.raises(SignatureError, match="does not verify"):
        decode_refund(raw, script_name="revoke.php", secret_key=SECRET, payment_id=1, amount=None)


def test_a_reply_signed_with_another_key_is_refused() -> None:
    """A reply signed with a different secret raises SignatureError, not a model."""
    raw = status_reply(FULL_STATUS, secret="someone-else")
    with pytest.raises(SignatureError) as caught:
        decode_status(raw)
    assert "someone-else" not in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_tampered_nested_value_is_refused() -> None:
    """Changing a refund entry's amount after signing breaks the signature."""
    raw = status_reply(FULL_STATUS)
    forged = RawResponse(status=200, headers={}, body=raw.body.replace(b"-10.50", b"-1.50"))
    with pytest.raises(SignatureError):
        decode_status(forged)


def test_an_unsigned_ok_reply_is_refused() -> None:
    """An unsigned reply is accepted only as the 9998 error, never as ok."""
    raw = status_reply([("pg_payment_id", "1"), ("pg_error_code", "9998")], sign=False)
    with pytest.raises(SignatureError, match="missing"):
        decode_status(raw)


def test_the_unsigned_9998_error_is_a_gateway_error() -> None:
    """The gateway cannot sign 'merchant not identified'; it surfaces as GatewayError 9998."""
    raw = reply(
        "get_status3.php",
        [
            ("pg_status", "error"),
            ("pg_error_code", "9998"),
            ("pg_error_description", "Unknown merchant"),
        ],
        sign=False,
    )
    with pytest.raises(GatewayError) as caught:
        decode_status(raw)
    assert caught.value.error_code == 9998


def test_an_unsigned_non_9998_error_is_refused() -> None:
    """An unsigned error with another code is a SignatureError (it could be forged)."""
    raw = reply("revoke.php", [("pg_status", "error"), ("pg_error_code", "490")], sign=False)
    with pytest.raises(SignatureError):
        decode_refund(raw, script_name="revoke.php", secret_key=SECRET, payment_id=1, amount=None)


def test_verification_can_be_switched_off() -> None:
    """secret_key=None decodes an unsigned ok reply (the switch for unsigned gateways)."""
    raw = status_reply([("pg_payment_id", "3")], sign=False)
    assert decode_status(raw, secret=None).payment_id == 3


def test_the_root_name_is_ignored() -> None:
    """A <root> reply decodes like a <response> reply."""
    assert decode_status(status_reply(FULL_STATUS, root="root")).payment_id == 555


# -- hostile input ------------------------------------------------------------------------


HOSTILE = {
    "doctype": b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "b">]><response>&a;</response>',
    "entity-lowercase": b"<!entity x><response><pg_status>ok</pg_status></response>",
    "billion-laughs": (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><response>&lol2;</response>'
    ),
    "utf16-doctype": '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r><response/>'.encode(
        "utf-16"
    ),
    "malformed": b"<response><pg_status>ok</pg_status>",
    "empty": b"",
    "text-root": b"<response>just text</response>",
    "deep": b"<a>" * 40 + b"x" + b"</a>" * 40,
    "not-xml": b"<html><body>502 Bad Gateway",
}


@pytest.mark.parametrize("body", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_bodies_raise_decode_error_only(body: bytes) -> None:
    """DOCTYPE, ENTITY, deep nesting, garbage and empty bodies are DecodeErrors, nothing else."""
    raw = RawResponse(status=200, headers={}, body=body)
    with pytest.raises(DecodeError) as caught:
        decode_status(raw)
    assert caught.value.operation == "payment_status"


def test_an_oversized_reply_is_refused_before_parsing() -> None:
    """A body over max_bytes is refused by size."""
    raw = status_reply(FULL_STATUS)
    with pytest.raises(DecodeError, match="larger than"):
        decode_payment_status(
            raw, script_name="get_status3.php", secret_key=SECRET, max_bytes=len(raw.body) - 1
        )


def test_a_non_2xx_reply_is_an_http_status_error() -> None:
    """HTTP 502 raises HTTPStatusError with the status code kept."""
    raw = RawResponse(status=502, headers={"Retry-After": "3"}, body=b"<html>bad</html>")
    with pytest.raises(HTTPStatusError) as caught:
        decode_status(raw)
    assert caught.value.status_code == 502
    assert caught.value.retry_after == "3"


def test_models_are_frozen_and_pickle() -> None:
    """Decoded models cannot be mutated and survive pickling."""
    status = decode_status(status_reply(FULL_STATUS))
    with pytest.raises(AttributeError):
        status.amount = Decimal(1)  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(status)) == status
    card = SavedCard(card_token="tok-1234567890")
    assert pickle.loads(pickle.dumps(card)) == card


@pytest.mark.parametrize(
    ("token", "shown"),
    [("tok-0123456789", "…6789"), ("12345678", "…"), ("", "…"), ("abcdefgh\x1b123", "…\\x1b123")],
)
def test_mask_token_keeps_at_most_four_printable_characters(token: str, shown: str) -> None:
    """Short tokens vanish entirely; long ones keep a tail of four, control characters escaped."""
    from freedompay_async.masking import mask_token

    assert mask_token(token) == shown
