"""Classic Merchant API requests: the operation table, field checks, salt and pg_sig."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from urllib.parse import parse_qsl

import pytest

from freedompay_async import ConfigurationError
from freedompay_async._classic import (
    SPECS,
    ClassicOptions,
    build_classic_request,
)
from freedompay_async._classic_models import ClassicOperation
from freedompay_async._config import _Credentials

CREDS = _Credentials(merchant_id="123456", secret_key="classic-secret")
SALT = "a1b2c3"

VALID: dict[ClassicOperation, dict[str, object]] = {
    ClassicOperation.CARD_ADD: {
        "user_id": "user_1",
        "back_link": "https://shop.example/back",
        "post_link": "https://shop.example/post",
        "order_id": "card-order-1",
    },
    ClassicOperation.CARD_LIST: {"user_id": "user_1", "extended": True},
    ClassicOperation.CARD_REMOVE: {"user_id": "user_1", "card_token": "tok-0123456789"},
    ClassicOperation.PAYMENT_STATUS: {"payment_id": 987654},
    ClassicOperation.REFUND: {"payment_id": 987654, "amount": Decimal("10.50")},
    ClassicOperation.CANCEL: {"payment_id": 987654},
    ClassicOperation.CAPTURE: {"payment_id": 987654, "amount": Decimal(40)},
}

EXPECTED_PATHS = {
    ClassicOperation.CARD_ADD: ("/v1/merchant/123456/cardstorage/add2", "add2"),
    ClassicOperation.CARD_LIST: ("/v1/merchant/123456/cardstorage/list", "list"),
    ClassicOperation.CARD_REMOVE: ("/v1/merchant/123456/cardstorage/remove", "remove"),
    ClassicOperation.PAYMENT_STATUS: ("/get_status3.php", "get_status3.php"),
    ClassicOperation.REFUND: ("/revoke.php", "revoke.php"),
    ClassicOperation.CANCEL: ("/cancel.php", "cancel.php"),
    ClassicOperation.CAPTURE: ("/do_capture.php", "do_capture.php"),
}


def _md5_flat(script: str, fields: list[tuple[str, str]], secret: str) -> str:
    """The documented flat rule written out by hand: script, values by name, secret."""
    values = [value for _, value in sorted(fields)]
    return hashlib.md5(
        ";".join([script, *values, secret]).encode(), usedforsecurity=False
    ).hexdigest()


def test_the_table_declares_every_operation_once() -> None:
    """Every classic operation has exactly one spec, whose key is its own operation."""
    assert set(SPECS) == set(ClassicOperation)
    for operation, spec in SPECS.items():
        assert spec.operation is operation
        assert spec.fields, operation


@pytest.mark.parametrize("operation", list(ClassicOperation), ids=str)
def test_every_request_is_signed_with_its_paths_last_segment(
    operation: ClassicOperation,
) -> None:
    """The body's pg_sig equals MD5(script;sorted values;secret), script = the path's tail."""
    request = build_classic_request(operation, VALID[operation], credentials=CREDS, salt=SALT)
    path, script = EXPECTED_PATHS[operation]
    assert request.path == path
    assert request.script_name == script
    sent = parse_qsl(request.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    signature = dict(sent).pop("pg_sig")
    unsigned = [(name, value) for name, value in sent if name != "pg_sig"]
    assert signature == _md5_flat(script, unsigned, "classic-secret")
    assert ("pg_salt", SALT) in unsigned
    assert ("pg_merchant_id", "123456") in unsigned
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_fields_carry_the_documented_wire_names_and_text() -> None:
    """Refund writes pg_payment_id and pg_refund_amount in plain decimal text."""
    request = build_classic_request(
        ClassicOperation.REFUND,
        {"payment_id": "42", "amount": Decimal("1.5")},
        credentials=CREDS,
        salt=SALT,
    )
    sent = dict(request.fields)
    assert sent["pg_payment_id"] == "42"
    assert sent["pg_refund_amount"] == "1.5"
    assert request.params == {"payment_id": 42, "amount": Decimal("1.5")}
    assert request.context == {"payment_id": "42"}


def test_a_full_refund_and_a_plain_list_leave_optional_fields_out() -> None:
    """No amount means no pg_refund_amount; extended=False sends no pg_extend_data."""
    refund = build_classic_request(
        ClassicOperation.REFUND, {"payment_id": 5}, credentials=CREDS, salt=SALT
    )
    assert "pg_refund_amount" not in dict(refund.fields)
    listing = build_classic_request(
        ClassicOperation.CARD_LIST,
        {"user_id": "u", "extended": False},
        credentials=CREDS,
        salt=SALT,
    )
    assert "pg_extend_data" not in dict(listing.fields)


def test_card_add_script_is_a_switch() -> None:
    """card_add_script='add' calls cardstorage/add and signs with 'add'."""
    request = build_classic_request(
        ClassicOperation.CARD_ADD,
        VALID[ClassicOperation.CARD_ADD],
        credentials=CREDS,
        salt=SALT,
        options=ClassicOptions(card_add_script="add"),
    )
    assert request.path.endswith("/cardstorage/add")
    assert request.script_name == "add"
    unsigned = [(n, v) for n, v in request.fields if n != "pg_sig"]
    assert dict(request.fields)["pg_sig"] == _md5_flat("add", unsigned, "classic-secret")


def test_the_documented_card_add_example_string_is_reproduced() -> None:
    """The docs' `add;back;mid;post;salt;user;secret` order falls out of the sort rule."""
    request = build_classic_request(
        ClassicOperation.CARD_ADD,
        {"user_id": "1234", "back_link": "http://site.kz/back", "post_link": "http://site.kz/post"},
        credentials=CREDS,
        salt="somerandomstring",
        options=ClassicOptions(card_add_script="add"),
    )
    text = "add;http://site.kz/back;123456;http://site.kz/post;somerandomstring;1234;classic-secret"
    assert (
        dict(request.fields)["pg_sig"]
        == hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
    )


@pytest.mark.parametrize(
    ("operation", "params", "field"),
    [
        (ClassicOperation.REFUND, {"payment_id": 1, "amount": 10.5}, "amount"),
        (ClassicOperation.REFUND, {"payment_id": 1, "amount": 10}, "amount"),
        (ClassicOperation.REFUND, {"payment_id": 1, "amount": Decimal(0)}, "amount"),
        (ClassicOperation.REFUND, {"payment_id": 1, "amount": Decimal(-1)}, "amount"),
        (ClassicOperation.REFUND, {"payment_id": 1, "amount": Decimal("1.001")}, "amount"),
        (ClassicOperation.REFUND, {"payment_id": 1, "amount": Decimal("NaN")}, "amount"),
        (ClassicOperation.CAPTURE, {"payment_id": 1, "amount": Decimal("1e9")}, "amount"),
        (ClassicOperation.REFUND, {"amount": Decimal(1)}, "payment_id"),
        (ClassicOperation.CANCEL, {"payment_id": 0}, "payment_id"),
        (ClassicOperation.CANCEL, {"payment_id": True}, "payment_id"),
        (ClassicOperation.CANCEL, {"payment_id": "12a"}, "payment_id"),
        (ClassicOperation.CARD_LIST, {"user_id": "bad id"}, "user_id"),
        (ClassicOperation.CARD_LIST, {"user_id": "x" * 51}, "user_id"),
        (ClassicOperation.CARD_LIST, {"user_id": "u", "extended": 1}, "extended"),
        (ClassicOperation.CARD_REMOVE, {"user_id": "u", "card_token": ""}, "card_token"),
        (ClassicOperation.CARD_REMOVE, {"user_id": "u", "card_token": "a\nb"}, "card_token"),
        (ClassicOperation.CARD_ADD, {"user_id": "u", "back_link": "ftp://x/y"}, "back_link"),
        (ClassicOperation.CARD_ADD, {"user_id": "u"}, "back_link"),
        (
            ClassicOperation.CARD_ADD,
            {"user_id": "u", "back_link": "https://a.b/", "order_id": "o" * 51},
            "order_id",
        ),
        (ClassicOperation.REFUND, {"payment_id": 1, "refund_amount": Decimal(1)}, "refund_amount"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field(
    operation: ClassicOperation, params: dict[str, object], field: str
) -> None:
    """Each invalid value raises ConfigurationError whose message names the field."""
    with pytest.raises(ConfigurationError, match=field):
        build_classic_request(operation, params, credentials=CREDS, salt=SALT)


@pytest.mark.parametrize(
    "params", [{}, {"payment_id": 1, "order_id": "o-1"}], ids=["neither", "both"]
)
def test_status_needs_exactly_one_key(params: dict[str, object]) -> None:
    """get_status3 takes a payment id or an order id, exactly one."""
    with pytest.raises(ConfigurationError, match="exactly one of payment_id, order_id"):
        build_classic_request(ClassicOperation.PAYMENT_STATUS, params, credentials=CREDS, salt=SALT)


def test_status_by_order_id_sends_pg_order_id() -> None:
    """A status read by order id sends pg_order_id and no pg_payment_id."""
    request = build_classic_request(
        ClassicOperation.PAYMENT_STATUS, {"order_id": "A-1"}, credentials=CREDS, salt=SALT
    )
    sent = dict(request.fields)
    assert sent["pg_order_id"] == "A-1"
    assert "pg_payment_id" not in sent


@pytest.mark.parametrize("salt", ["", "has space", "ü", "x" * 65, None])
def test_a_bad_salt_is_refused(salt: object) -> None:
    """The salt must be 1-64 letters and digits."""
    with pytest.raises(ConfigurationError, match="salt"):
        build_classic_request(
            ClassicOperation.CANCEL,
            {"payment_id": 1},
            credentials=CREDS,
            salt=salt,  # type: ignore[arg-type]
        )


def test_different_salts_give_different_signatures() -> None:
    """The salt is signed: two salts, two signatures, same other fields."""
    one = build_classic_request(
        ClassicOperation.CANCEL, {"payment_id": 1}, credentials=CREDS, salt="aaa"
    )
    two = build_classic_request(
        ClassicOperation.CANCEL, {"payment_id": 1}, credentials=CREDS, salt="bbb"
    )
    assert dict(one.fields)["pg_sig"] != dict(two.fields)["pg_sig"]


def test_repr_shows_neither_body_nor_signature_nor_token() -> None:
    """A request's repr hides the body, the fields and a card token."""
    request = build_classic_request(
        ClassicOperation.CARD_REMOVE,
        {"user_id": "u", "card_token": "tok-SECRET-token-9999"},
        credentials=CREDS,
        salt=SALT,
    )
    shown = repr(request)
    assert "SECRET" not in shown
    assert dict(request.fields)["pg_sig"] not in shown
    assert "classic-secret" not in shown


@pytest.mark.parametrize(
    "options",
    [
        {"card_add_script": "add3"},
        {"verify_replies": 1},
        {"max_response_bytes": 0},
        {"max_response_bytes": True},
    ],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    """ClassicOptions refuses an unknown script, a non-bool switch and a bad size cap."""
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        ClassicOptions(**options)  # type: ignore[arg-type]


def test_money_operations_are_marked() -> None:
    """Refund, cancel and capture move money; the reads and card calls do not."""
    moving = {op for op in ClassicOperation if op.moves_money}
    assert moving == {ClassicOperation.REFUND, ClassicOperation.CANCEL, ClassicOperation.CAPTURE}
