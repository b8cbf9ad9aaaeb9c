"""Check and Result callbacks: verification, typed models, signed replies, replays, the handler."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from contextlib import asynccontextmanager
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import aiohttp
import pytest
from aiohttp import web

from freedompay_async._decode import parse_ordered
from freedompay_async._exceptions import ConfigurationError, DecodeError, SignatureError
from freedompay_async.callbacks import (
    CallbackHandler,
    CheckNotification,
    ReplayGuard,
    ResultNotification,
    build_reply,
    make_handler,
    parse_check,
    parse_notification,
    parse_result,
)
from freedompay_async.callbacks._fields import flatten_params
from freedompay_async.signing import Element, pg_sig, verify_pg_sig

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

KEY = "merchant-secret-Kq7"
RESULT_URL = "https://shop.example/freedompay/result.php?src=fp"
CHECK_URL = "https://shop.example/freedompay/check.php"
CARD_TOKEN = "card-token-7f3a9c2e"


def md5(text: str) -> str:
    """Lowercase hex MD5 of UTF-8 text."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def check_pairs(**changes: str) -> list[tuple[str, Any]]:
    """The fields of a Check request (protocol §8.2), with a merchant parameter."""
    fields = {
        "pg_order_id": "order-42",
        "pg_payment_id": "987654321",
        "pg_amount": "500.00",
        "pg_currency": "KZT",
        "pg_ps_amount": "500",
        "pg_ps_currency": "KZT",
        "pg_ps_full_amount": "512.50",
        "user_ref": "u-17",
        "pg_salt": "a1b2c3d4",
    }
    fields.update(changes)
    return list(fields.items())


def result_pairs(**changes: str) -> list[tuple[str, Any]]:
    """The fields of a Result notification (protocol §8.3)."""
    fields = {
        "pg_order_id": "order-42",
        "pg_payment_id": "987654321",
        "pg_amount": "500.00",
        "pg_currency": "KZT",
        "pg_net_amount": "482.5",
        "pg_ps_amount": "500",
        "pg_ps_full_amount": "500",
        "pg_ps_currency": "KZT",
        "pg_description": "Order 42",
        "pg_result": "1",
        "pg_payment_date": "2024-05-01 12:30:05",
        "pg_can_reject": "1",
        "pg_user_phone": "77011234567",
        "pg_user_contact_email": "payer@example.com",
        "pg_testing_mode": "1",
        "pg_captured": "0",
        "pg_card_token": CARD_TOKEN,
        "pg_card_pan": "5483-18XX-XXXX-0293",
        "pg_card_exp": "03/27",
        "pg_card_owner": "IVAN PETROV",
        "pg_card_brand": "VI",
        "pg_payment_method": "bankcard",
        "pg_discount_percent": "0",
        "pg_discount_amount": "0.00",
        "pg_future_field": "new",
        "user_ref": "u-17",
        "pg_salt": "s4lt9",
    }
    fields.update(changes)
    return list(fields.items())


def signed(pairs: list[tuple[str, Any]], script: str = "result.php") -> list[tuple[str, Any]]:
    """The fields with a valid pg_sig appended, as Freedom Pay sends them."""
    return [*pairs, ("pg_sig", pg_sig(script, pairs, KEY))]


def xml_request(pairs: list[tuple[str, Any]]) -> str:
    """Render fields (nested Elements included) as the `<request>` document of `pg_xml`."""

    def render(entries: Any) -> str:
        parts = []
        for name, value in entries:
            inner = render(value.children) if isinstance(value, Element) else escape(value)
            parts.append(f"<{name}>{inner}</{name}>")
        return "".join(parts)

    return f'<?xml version="1.0" encoding="utf-8"?><request>{render(pairs)}</request>'


def read_reply(body: bytes, script: str) -> dict[str, str]:
    """Parse a reply, assert its own pg_sig verifies under *script*, return its fields."""
    root, children = parse_ordered(body)
    assert root == "response"
    assert [name for name, _ in children] == ["pg_status", "pg_description", "pg_salt", "pg_sig"]
    assert verify_pg_sig(script, Element.from_ordered(children), KEY)
    return {name: value for name, value in children if isinstance(value, str)}


# --- parsing and verification --------------------------------------------------------------------


def test_signed_check_form_is_verified_and_typed() -> None:
    """A signed Check given as a mapping decodes into a typed CheckNotification."""
    check = parse_check(dict(signed(check_pairs(), "check.php")), secret_key=KEY, url=CHECK_URL)
    assert check == CheckNotification(
        order_id="order-42",
        payment_id=987654321,
        amount=Decimal("500.00"),
        currency="KZT",
        salt="a1b2c3d4",
        script_name="check.php",
        ps_amount=Decimal(500),
        ps_currency="KZT",
        ps_full_amount=Decimal("512.50"),
        merchant_params={"user_ref": "u-17"},
    )


def test_signed_result_form_is_verified_and_typed() -> None:
    """A signed Result given as pairs decodes every documented field to its type."""
    result = parse_result(signed(result_pairs()), secret_key=KEY, url=RESULT_URL)
    assert isinstance(result, ResultNotification)
    assert result.success
    assert result.result == 1
    assert result.payment_id == 987654321
    assert result.amount == Decimal("500.00")
    assert result.net_amount == Decimal("482.5")
    assert result.payment_date == datetime(2024, 5, 1, 12, 30, 5)  # noqa: DTZ001 - naive by contract
    assert result.can_reject is True
    assert result.testing_mode is True
    assert result.captured is False
    assert result.card_token == CARD_TOKEN
    assert result.card_pan == "5483-18XX-XXXX-0293"
    assert result.card_owner == "IVAN PETROV"
    assert result.discount_amount == Decimal("0.00")
    assert result.merchant_params == {"user_ref": "u-17"}
    assert result.unknown_fields == {"pg_future_field": "new"}
    assert result.script_name == "result.php"


def test_failed_result_and_optional_fields() -> None:
    """pg_result 0 is a failure; absent optional fields are None and can_reject is False."""
    pairs = [
        (name, value)
        for name, value in result_pairs(pg_result="0")
        if name in {"pg_order_id", "pg_payment_id", "pg_amount", "pg_currency", "pg_result"}
        or name == "pg_salt"
    ]
    result = parse_result(signed(pairs), secret_key=KEY, script_name="result.php")
    assert not result.success
    assert result.can_reject is False
    assert result.payment_date is None
    assert result.card_token is None
    assert result.testing_mode is None
    assert "card_pan=None" in repr(result)


def test_result_repr_hides_card_token_owner_and_full_pan() -> None:
    """The Result's repr shows neither the card token, the owner, nor more than 4 PAN digits."""
    pairs = result_pairs(pg_card_pan="5483181234560293", pg_future_secret="hidden-value")
    text = repr(parse_result(signed(pairs), secret_key=KEY, url=RESULT_URL))
    assert CARD_TOKEN not in text
    assert "IVAN PETROV" not in text
    assert "5483181234560293" not in text
    assert "…0293" in text
    assert "hidden-value" not in text
    assert "pg_future_secret" in text


def test_signed_check_as_pg_xml() -> None:
    """A Check sent as one pg_xml field verifies and decodes like the form."""
    document = xml_request(signed(check_pairs(), "check.php"))
    check = parse_notification({"pg_xml": document}, secret_key=KEY, url=CHECK_URL)
    assert isinstance(check, CheckNotification)
    assert check.amount == Decimal("500.00")
    assert check.merchant_params == {"user_ref": "u-17"}


def test_signed_result_as_pg_xml_with_nested_merchant_parameter() -> None:
    """A Result in pg_xml with a nested element verifies; nested values get bracket names."""
    cart = Element([("item", "tea"), ("item2", "cake")])
    pairs = [*result_pairs(), ("cart", cart)]
    document = xml_request(signed(pairs))
    result = parse_result([("pg_xml", document)], secret_key=KEY, url=RESULT_URL)
    assert result.merchant_params == {
        "user_ref": "u-17",
        "cart[item]": "tea",
        "cart[item2]": "cake",
    }
    assert result.card_token == CARD_TOKEN


def test_pg_xml_bytes_are_accepted() -> None:
    """A pg_xml field given as UTF-8 bytes decodes the same as text."""
    document = xml_request(signed(check_pairs(user_ref="Иван"), "check.php")).encode()
    check = parse_check([("pg_xml", document)], secret_key=KEY, script_name="check.php")
    assert check.merchant_params == {"user_ref": "Иван"}


def test_bracket_form_fields_are_regrouped_before_verification() -> None:
    """Form names in bracket notation verify against the nested structure the sender signed."""
    nested = {"0": {"sku": "A-1", "qty": "2"}, "1": {"sku": "B-7", "qty": "1"}}
    signature = pg_sig("result.php", [*result_pairs(), ("cart", nested)], KEY)
    form = [
        *result_pairs(),
        ("cart[0][sku]", "A-1"),
        ("cart[0][qty]", "2"),
        ("cart[][sku]", "B-7"),
        ("cart[1][qty]", "1"),
        ("pg_sig", signature),
    ]
    result = parse_result(form, secret_key=KEY, url=RESULT_URL)
    assert result.merchant_params["cart[1][sku]"] == "B-7"
    assert result.merchant_params["cart[0][qty]"] == "2"


def test_tampered_notification_is_refused_without_leaking_secrets() -> None:
    """Changing one signed field raises SignatureError whose text holds no key or signature."""
    pairs = signed(result_pairs())
    signature = pairs[-1][1]
    tampered = [(n, "5000.00" if n == "pg_amount" else v) for n, v in pairs]
    with pytest.raises(SignatureError) as caught:
        parse_result(tampered, secret_key=KEY, url=RESULT_URL)
    text = f"{caught.value} {caught.value!r}"
    assert KEY not in text
    assert signature not in text
    assert CARD_TOKEN not in text


def test_unknown_field_added_after_signing_is_refused() -> None:
    """Every received field is signed: an extra field breaks verification."""
    with pytest.raises(SignatureError):
        parse_result([*signed(result_pairs()), ("extra", "x")], secret_key=KEY, url=RESULT_URL)


def test_unsigned_notification_is_refused() -> None:
    """A notification without pg_sig raises SignatureError (no 9998 exception for callbacks)."""
    with pytest.raises(SignatureError, match="no pg_sig"):
        parse_result(result_pairs(pg_error_code="9998"), secret_key=KEY, url=RESULT_URL)


def test_two_signatures_are_refused() -> None:
    """pg_sig twice is refused: as a repeated form field, and by verification in pg_xml."""
    pairs = signed(result_pairs())
    with pytest.raises(DecodeError) as caught:
        parse_result([*pairs, pairs[-1]], secret_key=KEY, url=RESULT_URL)
    assert caught.value.tag == "pg_sig"
    document = xml_request([*pairs, pairs[-1]])
    with pytest.raises(SignatureError):
        parse_result({"pg_xml": document}, secret_key=KEY, url=RESULT_URL)


def test_wrong_script_name_or_key_is_refused() -> None:
    """The signature is bound to the callback URL's last segment and to the key."""
    pairs = signed(result_pairs())
    with pytest.raises(SignatureError):
        parse_result(pairs, secret_key=KEY, url="https://shop.example/freedompay/other.php")
    with pytest.raises(SignatureError):
        parse_result(pairs, secret_key="another-key", url=RESULT_URL)


@pytest.mark.parametrize(
    ("script_name", "url", "key"),
    [(None, None, KEY), ("result.php", RESULT_URL, KEY), ("result.php", None, "")],
)
def test_bad_arguments_are_configuration_errors(
    script_name: str | None, url: str | None, key: str
) -> None:
    """Exactly one of script_name and url is needed, and a non-empty key."""
    with pytest.raises(ConfigurationError):
        parse_notification(signed(result_pairs()), secret_key=key, script_name=script_name, url=url)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pg_amount", "12,50"),
        ("pg_amount", "1e3"),
        ("pg_payment_id", "12a"),
        ("pg_payment_id", "-5"),
        ("pg_payment_date", "2024/05/01 12:30:05"),
        ("pg_payment_date", "2024-02-30 12:30:05"),
        ("pg_can_reject", "yes"),
        ("pg_result", ""),
        ("pg_order_id", ""),
        ("pg_salt", "bad\x01salt"),
    ],
)
def test_malformed_signed_fields_raise_decode_error_naming_the_field(
    field: str, value: str
) -> None:
    """A signed notification with a malformed or missing field raises DecodeError(tag=field)."""
    pairs = signed(result_pairs(**{field: value}))
    with pytest.raises(DecodeError) as caught:
        parse_result(pairs, secret_key=KEY, url=RESULT_URL)
    assert caught.value.tag == field
    if value:
        assert value not in str(caught.value)


def test_missing_required_field_is_named() -> None:
    """A signed Check without pg_payment_id raises DecodeError naming it."""
    pairs = signed([(n, v) for n, v in check_pairs() if n != "pg_payment_id"], "check.php")
    with pytest.raises(DecodeError) as caught:
        parse_check(pairs, secret_key=KEY, script_name="check.php")
    assert caught.value.tag == "pg_payment_id"


def test_repeated_form_field_is_refused() -> None:
    """A plain form field sent twice is ambiguous and refused."""
    pairs = [*check_pairs(), ("pg_amount", "1.00")]
    with pytest.raises(DecodeError) as caught:
        parse_check(signed(pairs, "check.php"), secret_key=KEY, script_name="check.php")
    assert caught.value.tag == "pg_amount"


def test_repeated_xml_field_is_refused_after_verification() -> None:
    """A signed pg_xml Check with pg_amount twice verifies but does not decode."""
    document = xml_request(signed([*check_pairs(), ("pg_amount", "1.00")], "check.php"))
    with pytest.raises(DecodeError) as caught:
        parse_check({"pg_xml": document}, secret_key=KEY, script_name="check.php")
    assert caught.value.tag == "pg_amount"


def test_repeated_nested_merchant_parameter_is_refused() -> None:
    """A nested XML merchant parameter whose children repeat has no single bracket name."""
    cart = Element([("item", "tea"), ("item", "cake")])
    document = xml_request(signed([*check_pairs(), ("cart", cart)], "check.php"))
    with pytest.raises(DecodeError) as caught:
        parse_check({"pg_xml": document}, secret_key=KEY, script_name="check.php")
    assert caught.value.tag == "cart[item]"


def test_nesting_is_bounded() -> None:
    """Form names and nested values deeper than 32 levels are refused, not recursed into."""
    deep_name = "cart" + "[a]" * 40
    with pytest.raises(DecodeError):
        parse_check([*check_pairs(), (deep_name, "1")], secret_key=KEY, script_name="c")
    value: Any = "leaf"
    for _ in range(40):
        value = {"a": value}
    with pytest.raises(DecodeError):
        flatten_params("cart", value, {})


def test_group_where_a_value_belongs_is_refused() -> None:
    """A known field sent as a group (pg_amount[x]) raises DecodeError naming it."""
    pairs = [(n, v) for n, v in check_pairs() if n != "pg_amount"]
    signature = pg_sig("check.php", [*pairs, ("pg_amount", {"x": "1"})], KEY)
    form = [*pairs, ("pg_amount[x]", "1"), ("pg_sig", signature)]
    with pytest.raises(DecodeError) as caught:
        parse_check(form, secret_key=KEY, script_name="check.php")
    assert caught.value.tag == "pg_amount"


def test_value_and_group_under_one_name_is_refused() -> None:
    """`cart=1` together with `cart[0]=2` is refused before verification."""
    form = [*check_pairs(), ("cart", "1"), ("cart[0]", "2"), ("pg_sig", "0" * 32)]
    with pytest.raises(DecodeError):
        parse_check(form, secret_key=KEY, script_name="check.php")


def test_pg_xml_with_other_fields_or_bad_xml_is_refused() -> None:
    """pg_xml must stand alone, and hardening refusals surface without the body attached."""
    document = xml_request(signed(check_pairs(), "check.php"))
    with pytest.raises(DecodeError):
        parse_check({"pg_xml": document, "x": "1"}, secret_key=KEY, script_name="check.php")
    evil = '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e "x">]><request><a>&e;</a></request>'
    with pytest.raises(DecodeError) as caught:
        parse_check({"pg_xml": evil}, secret_key=KEY, script_name="check.php")
    assert caught.value.body == b""
    assert caught.value.__cause__ is None


@pytest.mark.parametrize("value", [object(), b"\xff\xfe"])
def test_non_text_form_values_are_refused(value: object) -> None:
    """A file upload or non-UTF-8 bytes in a field raise DecodeError naming the field."""
    with pytest.raises(DecodeError) as caught:
        parse_check([*check_pairs(), ("upload", value)], secret_key=KEY, script_name="c")
    assert caught.value.tag == "upload"


def test_empty_or_malformed_field_collections_are_refused() -> None:
    """No fields at all, or entries that are not pairs, raise DecodeError."""
    with pytest.raises(DecodeError):
        parse_check({}, secret_key=KEY, script_name="c")
    with pytest.raises(DecodeError):
        parse_check([("a",)], secret_key=KEY, script_name="c")  # type: ignore[list-item]


def test_check_and_result_parsers_refuse_the_other_kind() -> None:
    """parse_check refuses a Result and parse_result refuses a Check."""
    with pytest.raises(DecodeError) as caught:
        parse_check(signed(result_pairs()), secret_key=KEY, url=RESULT_URL)
    assert caught.value.tag == "pg_result"
    with pytest.raises(DecodeError):
        parse_result(signed(check_pairs(), "check.php"), secret_key=KEY, url=CHECK_URL)


# --- the reply ------------------------------------------------------------------------------------


def test_reply_is_signed_as_documented_and_verifies() -> None:
    """The reply's pg_sig is md5(script;description;salt;status;key) and verifies."""
    body = build_reply(
        "ok",
        description="Платеж разрешен",
        salt="a1b2c3d4",
        script_name="check.php",
        secret_key=KEY,
    )
    fields = read_reply(body, "check.php")
    assert fields["pg_status"] == "ok"
    assert fields["pg_description"] == "Платеж разрешен"
    assert fields["pg_salt"] == "a1b2c3d4"
    assert fields["pg_sig"] == md5(f"check.php;Платеж разрешен;a1b2c3d4;ok;{KEY}")
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?>')


@pytest.mark.parametrize("status", ["ok", "rejected", "error"])
def test_reply_text_round_trips_exactly(status: Any) -> None:
    """Markup characters, CR/LF and surrounding spaces survive the XML round trip and verify."""
    description = ' <b>&"quoted"</b>\r\nline two '
    body = build_reply(
        status, description=description, salt="s&<>", script_name="r.php", secret_key=KEY
    )
    fields = read_reply(body, "r.php")
    assert fields["pg_description"] == description
    assert fields["pg_salt"] == "s&<>"
    assert fields["pg_status"] == status


@pytest.mark.parametrize(
    "kwargs",
    [
        {"status": "accepted"},
        {"status": "ok", "description": "bell\x07"},
        {"status": "ok", "salt": "\x00"},
        {"status": "ok", "secret_key": ""},
    ],
)
def test_build_reply_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    """An unknown status, text XML cannot carry, or an empty key is a ConfigurationError."""
    arguments: dict[str, Any] = {"salt": "s", "script_name": "r.php", "secret_key": KEY}
    arguments.update(kwargs)
    status = arguments.pop("status")
    with pytest.raises(ConfigurationError):
        build_reply(status, **arguments)


# --- answering and the replay guard --------------------------------------------------------------


async def until(condition: Callable[[], bool], *, limit: int = 1_000) -> None:
    """Yield to the event loop until *condition* holds; fail if it never does (no clock)."""
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class Recorder:
    """A business callback that records what it saw and answers as told."""

    def __init__(self, answer: Any = "ok", *, fail_times: int = 0) -> None:
        self.seen: list[Any] = []
        self.answer = answer
        self.fail_times = fail_times
        self.gate: asyncio.Event | None = None

    async def __call__(self, notification: Any) -> Any:
        self.seen.append(notification)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_times:
            self.fail_times -= 1
            raise RuntimeError("database unavailable")
        return self.answer


async def test_answer_verifies_dispatches_and_signs() -> None:
    """A verified Result reaches on_result and its answer comes back signed with the salt."""
    on_result = Recorder(("ok", "recorded"))
    handler = CallbackHandler(secret_key=KEY, on_result=on_result)
    body = await handler.answer(signed(result_pairs()), script_name="result.php")
    fields = read_reply(body, "result.php")
    assert fields["pg_status"] == "ok"
    assert fields["pg_description"] == "recorded"
    assert fields["pg_salt"] == "s4lt9"
    assert [n.payment_id for n in on_result.seen] == [987654321]


async def test_replay_is_answered_identically_without_a_second_call() -> None:
    """The same notification delivered again gets the same bytes; the callback runs once."""
    on_result = Recorder("ok")
    guard = ReplayGuard()
    handler = CallbackHandler(secret_key=KEY, on_result=on_result, guard=guard)
    first = await handler.answer(signed(result_pairs()), script_name="result.php")
    on_result.answer = "error"  # a second call would answer differently
    second = await handler.answer(signed(result_pairs()), script_name="result.php")
    assert first == second
    assert len(on_result.seen) == 1
    assert len(guard) == 1
    assert handler.guard is guard


async def test_concurrent_deliveries_call_the_callback_once() -> None:
    """Deliveries arriving while the first is being answered wait for it instead of calling."""
    on_result = Recorder("ok")
    on_result.gate = asyncio.Event()
    handler = CallbackHandler(secret_key=KEY, on_result=on_result)
    tasks = [
        asyncio.create_task(handler.answer(signed(result_pairs()), script_name="result.php"))
        for _ in range(5)
    ]
    # Tasks start in creation order: once the first is in the callback, the rest reached the guard.
    await until(lambda: len(on_result.seen) == 1)
    on_result.gate.set()
    replies = await asyncio.gather(*tasks)
    assert len(set(replies)) == 1
    assert len(on_result.seen) == 1


async def test_a_different_salt_is_a_different_delivery() -> None:
    """The guard keys on payment id and salt: a new salt calls the callback again."""
    on_result = Recorder("ok")
    handler = CallbackHandler(secret_key=KEY, on_result=on_result)
    await handler.answer(signed(result_pairs()), script_name="result.php")
    await handler.answer(signed(result_pairs(pg_salt="other")), script_name="result.php")
    assert len(on_result.seen) == 2


async def test_failed_callback_is_not_remembered() -> None:
    """A callback that raises propagates, stores nothing, and the next delivery calls again."""
    on_result = Recorder("ok", fail_times=1)
    handler = CallbackHandler(secret_key=KEY, on_result=on_result)
    with pytest.raises(RuntimeError):
        await handler.answer(signed(result_pairs()), script_name="result.php")
    body = await handler.answer(signed(result_pairs()), script_name="result.php")
    assert read_reply(body, "result.php")["pg_status"] == "ok"
    assert len(on_result.seen) == 2


async def test_waiters_see_the_failure_of_the_first_delivery() -> None:
    """A delivery waiting on a failing first one gets the same exception, not a stale reply."""
    on_result = Recorder("ok", fail_times=1)
    on_result.gate = asyncio.Event()
    handler = CallbackHandler(secret_key=KEY, on_result=on_result)
    tasks = [
        asyncio.create_task(handler.answer(signed(result_pairs()), script_name="result.php"))
        for _ in range(2)
    ]
    await until(lambda: len(on_result.seen) == 1)
    on_result.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(outcome, RuntimeError) for outcome in outcomes)
    assert len(on_result.seen) == 1


async def test_cancelled_delivery_is_not_remembered() -> None:
    """A delivery cancelled mid-callback stores nothing; its waiters are cancelled too."""
    on_result = Recorder("ok")
    on_result.gate = asyncio.Event()
    handler = CallbackHandler(secret_key=KEY, on_result=on_result)
    first = asyncio.create_task(handler.answer(signed(result_pairs()), script_name="result.php"))
    await until(lambda: len(on_result.seen) == 1)
    waiter = asyncio.create_task(handler.answer(signed(result_pairs()), script_name="result.php"))
    for _ in range(5):
        await asyncio.sleep(0)
    first.cancel()
    outcomes = await asyncio.gather(first, waiter, return_exceptions=True)
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    assert len(handler.guard) == 0
    on_result.gate.set()
    body = await handler.answer(signed(result_pairs()), script_name="result.php")
    assert read_reply(body, "result.php")["pg_status"] == "ok"
    assert len(on_result.seen) == 2


async def test_guard_is_bounded_and_forgets_the_least_recent() -> None:
    """Beyond max_entries the least recently used reply is dropped."""
    on_result = Recorder("ok")
    guard = ReplayGuard(max_entries=2)
    handler = CallbackHandler(secret_key=KEY, on_result=on_result, guard=guard)
    for salt in ("s1", "s2", "s1", "s3"):
        await handler.answer(signed(result_pairs(pg_salt=salt)), script_name="result.php")
    assert len(guard) == 2
    assert len(on_result.seen) == 3  # s1 answered from the guard the second time
    await handler.answer(signed(result_pairs(pg_salt="s2")), script_name="result.php")
    assert len(on_result.seen) == 4  # s2 was evicted
    assert "pg_sig" not in repr(guard)
    assert repr(guard) == "ReplayGuard(entries=2, max_entries=2)"


async def test_guard_run_computes_once_per_notification() -> None:
    """ReplayGuard.run awaits the answer once and returns the stored bytes afterwards."""
    guard = ReplayGuard()
    notification = parse_result(signed(result_pairs()), secret_key=KEY, url=RESULT_URL)
    calls: list[int] = []

    async def compute() -> bytes:
        calls.append(1)
        return b"reply"

    assert guard.get(notification) is None
    assert await guard.run(notification, compute) == b"reply"
    assert await guard.run(notification, compute) == b"reply"
    assert guard.get(notification) == b"reply"
    assert calls == [1]


@pytest.mark.parametrize("size", [0, -1, True, 1.5])
def test_guard_refuses_a_bad_size(size: Any) -> None:
    """max_entries must be a positive integer."""
    with pytest.raises(ConfigurationError):
        ReplayGuard(max_entries=size)


async def test_refused_notifications_never_reach_the_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Tampered and unsigned notifications get a signed `error` and a warning without secrets."""
    on_result = Recorder("ok")
    handler = CallbackHandler(secret_key=KEY, on_result=on_result)
    pairs = signed(result_pairs())
    signature = pairs[-1][1]
    tampered = [(n, "1.00" if n == "pg_amount" else v) for n, v in pairs]
    with caplog.at_level(logging.DEBUG, logger="freedompay_async"):
        bad = await handler.answer(tampered, script_name="result.php")
        unsigned = await handler.answer(result_pairs(), script_name="result.php")
    for body in (bad, unsigned):
        fields = read_reply(body, "result.php")
        assert fields["pg_status"] == "error"
        assert fields["pg_salt"] == "s4lt9"
    assert on_result.seen == []
    bad_salt = [(n, "x\x01" if n == "pg_salt" else v) for n, v in tampered]
    assert (
        read_reply(await handler.answer(bad_salt, script_name="result.php"), "result.php")[
            "pg_salt"
        ]
        == ""
    )
    messages = [record.getMessage() for record in caplog.records]
    assert any("pg_sig" in message for message in messages)
    assert all(record.levelno == logging.WARNING for record in caplog.records)
    for message in messages:
        assert KEY not in message
        assert signature not in message
        assert CARD_TOKEN not in message


async def test_malformed_notifications_are_answered_error() -> None:
    """A form that cannot be read, or a signed one that does not decode, answers `error`."""
    on_check = Recorder("ok")
    handler = CallbackHandler(secret_key=KEY, on_check=on_check)
    unreadable = await handler.answer([], script_name="check.php")
    assert read_reply(unreadable, "check.php")["pg_salt"] == ""
    malformed = signed(check_pairs(pg_amount="lots"), "check.php")
    body = await handler.answer(malformed, script_name="check.php")
    assert read_reply(body, "check.php")["pg_status"] == "error"
    assert on_check.seen == []


async def test_a_kind_without_callback_is_answered_error() -> None:
    """A Check sent to a Result-only handler (and vice versa) answers `error`."""
    result_only = CallbackHandler(secret_key=KEY, on_result=Recorder("ok"))
    body = await result_only.answer(signed(check_pairs(), "check.php"), script_name="check.php")
    assert read_reply(body, "check.php")["pg_status"] == "error"
    check_only = CallbackHandler(secret_key=KEY, on_check=Recorder("ok"))
    body = await check_only.answer(signed(result_pairs()), script_name="result.php")
    assert read_reply(body, "result.php")["pg_status"] == "error"


async def test_check_may_be_rejected() -> None:
    """A Check callback answering `rejected` with a reason sends exactly that, signed."""
    handler = CallbackHandler(secret_key=KEY, on_check=Recorder(("rejected", "out of stock")))
    body = await handler.answer(signed(check_pairs(), "check.php"), script_name="check.php")
    fields = read_reply(body, "check.php")
    assert (fields["pg_status"], fields["pg_description"]) == ("rejected", "out of stock")


async def test_rejecting_a_result_that_cannot_be_rejected_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`rejected` for a Result without pg_can_reject=1 is sent but logged as ineffective."""
    handler = CallbackHandler(secret_key=KEY, on_result=Recorder("rejected"))
    with caplog.at_level(logging.WARNING, logger="freedompay_async"):
        body = await handler.answer(
            signed(result_pairs(pg_can_reject="0")), script_name="result.php"
        )
    assert read_reply(body, "result.php")["pg_status"] == "rejected"
    assert any("pg_can_reject" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("answer", ["accepted", ("ok", 5), None, ("ok", "a", "b"), ["ok"]])
async def test_invalid_callback_answers_are_configuration_errors(answer: Any) -> None:
    """A callback must return a status or (status, description)."""
    handler = CallbackHandler(secret_key=KEY, on_result=Recorder(answer))
    with pytest.raises(ConfigurationError):
        await handler.answer(signed(result_pairs()), script_name="result.php")


def test_handler_needs_a_key_and_a_callback_and_hides_the_key() -> None:
    """make_handler refuses an empty key or no callback; the handler's repr holds no key."""
    with pytest.raises(ConfigurationError):
        make_handler(secret_key=KEY)
    with pytest.raises(ConfigurationError):
        make_handler(secret_key="", on_result=Recorder())
    handler = CallbackHandler(secret_key=KEY, on_result=Recorder())
    assert KEY not in repr(handler)
    assert "result" in repr(handler)


# --- the aiohttp handler over loopback ---------------------------------------------------------


@asynccontextmanager
async def serve(handler: Handler, path: str, max_body: int = 1 << 20) -> AsyncIterator[str]:
    """Serve *handler* at *path* on 127.0.0.1 and yield its URL."""
    app = web.Application(client_max_size=max_body)
    app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


async def test_http_result_form_is_answered_and_replayed_identically() -> None:
    """A Result POSTed as a form is answered 200 with a signed reply; a replay gets the same."""
    on_result = Recorder(("ok", "thanks"))
    handler = make_handler(secret_key=KEY, on_result=on_result)
    form = signed(result_pairs())
    async with serve(handler, "/freedompay/result.php") as url, aiohttp.ClientSession() as http:
        async with http.post(url, data=form) as response:
            assert response.status == 200
            assert response.content_type == "application/xml"
            first = await response.read()
        async with http.post(url, data=form) as response:
            assert response.status == 200
            second = await response.read()
    assert first == second
    fields = read_reply(first, "result.php")
    assert (fields["pg_status"], fields["pg_salt"]) == ("ok", "s4lt9")
    assert len(on_result.seen) == 1
    assert on_result.seen[0].card_token == CARD_TOKEN


async def test_http_check_as_pg_xml() -> None:
    """A Check POSTed as one pg_xml field is verified with the path's script name."""
    on_check = Recorder("ok")
    handler = make_handler(secret_key=KEY, on_check=on_check)
    document = xml_request(signed(check_pairs(), "check.php"))
    async with (
        serve(handler, "/fp/check.php") as url,
        aiohttp.ClientSession() as http,
        http.post(url, data={"pg_xml": document}) as response,
    ):
        assert response.status == 200
        body = await response.read()
    assert read_reply(body, "check.php")["pg_status"] == "ok"
    assert on_check.seen[0].payment_id == 987654321


async def test_http_result_as_get_query_and_multipart() -> None:
    """GET query strings and multipart/form-data bodies are read like urlencoded forms."""
    on_result = Recorder("ok")
    handler = make_handler(secret_key=KEY, on_result=on_result)
    multipart = aiohttp.FormData(default_to_multipart=True)
    for name, value in signed(result_pairs(pg_salt="multi"), "result"):
        multipart.add_field(name, value)
    async with serve(handler, "/result") as url, aiohttp.ClientSession() as http:
        query = signed(result_pairs(pg_salt="query"), "result")
        async with http.get(url, params=query) as response:
            assert read_reply(await response.read(), "result")["pg_status"] == "ok"
        wrong_script = signed(result_pairs(pg_salt="wrong"), "result.php")
        async with http.get(url, params=wrong_script) as response:
            assert read_reply(await response.read(), "result")["pg_status"] == "error"
        async with http.post(url, data=multipart) as response:
            assert response.request_info.headers["Content-Type"].startswith("multipart/form-data")
            assert read_reply(await response.read(), "result")["pg_status"] == "ok"
    assert [n.salt for n in on_result.seen] == ["query", "multi"]


async def test_http_tampered_notification_gets_signed_error_and_no_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tampered Result over HTTP answers 200 `error` (signed), logs no secret, calls nothing."""
    on_result = Recorder("ok")
    handler = make_handler(secret_key=KEY, on_result=on_result)
    form = signed(result_pairs())
    tampered = [(n, "9.99" if n == "pg_amount" else v) for n, v in form]
    with caplog.at_level(logging.DEBUG):
        async with (
            serve(handler, "/pay/result.php") as url,
            aiohttp.ClientSession() as http,
            http.post(url, data=tampered) as response,
        ):
            assert response.status == 200
            body = await response.read()
    assert read_reply(body, "result.php")["pg_status"] == "error"
    assert on_result.seen == []
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "refused" in logged
    assert KEY not in logged
    assert form[-1][1] not in logged
    assert CARD_TOKEN not in logged


async def test_http_failing_callback_answers_500_then_succeeds_on_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A callback that raises gives HTTP 500 (Freedom Pay retries); the retry is answered."""
    on_result = Recorder("ok", fail_times=1)
    handler = make_handler(secret_key=KEY, on_result=on_result)
    form = signed(result_pairs())
    with caplog.at_level(logging.ERROR, logger="freedompay_async"):
        async with serve(handler, "/result.php") as url, aiohttp.ClientSession() as http:
            async with http.post(url, data=form) as response:
                assert response.status == 500
            async with http.post(url, data=form) as response:
                assert response.status == 200
                assert read_reply(await response.read(), "result.php")["pg_status"] == "ok"
    assert len(on_result.seen) == 2
    assert any("RuntimeError" in record.getMessage() for record in caplog.records)


async def test_http_script_name_override_for_rewritten_paths() -> None:
    """With script_name set, the request path does not matter (a proxy may rewrite it)."""
    on_result = Recorder("ok")
    handler = CallbackHandler(secret_key=KEY, on_result=on_result, script_name="result.php").handle
    async with (
        serve(handler, "/internal/cb") as url,
        aiohttp.ClientSession() as http,
        http.post(url, data=signed(result_pairs())) as response,
    ):
        body = await response.read()
    assert read_reply(body, "result.php")["pg_status"] == "ok"
    assert len(on_result.seen) == 1


async def test_http_oversized_body_is_refused_with_413() -> None:
    """A form larger than the application's client_max_size is refused by aiohttp (413)."""
    on_result = Recorder("ok")
    handler = make_handler(secret_key=KEY, on_result=on_result)
    form = [*signed(result_pairs()), ("padding", "x" * 4096)]
    async with (
        serve(handler, "/result.php", max_body=1024) as url,
        aiohttp.ClientSession() as http,
        http.post(url, data=form) as response,
    ):
        assert response.status == 413
    assert on_result.seen == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=xyz", b"garbage"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nnot a header\r\n\r\nx\r\n--xyz--"),
    ],
)
async def test_http_unreadable_form_answers_error(content_type: str, body: bytes) -> None:
    """A broken multipart body is answered with a signed `error`, not an exception."""
    on_result = Recorder("ok")
    handler = make_handler(secret_key=KEY, on_result=on_result)
    async with (
        serve(handler, "/result.php") as url,
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers={"Content-Type": content_type}) as response,
    ):
        assert response.status == 200
        reply = await response.read()
    assert read_reply(reply, "result.php")["pg_status"] == "error"
    assert on_result.seen == []


async def test_http_body_that_is_not_a_form_answers_error() -> None:
    """A POST whose body is not a form (raw XML) and has no query answers `error`, signed."""
    on_result = Recorder("ok")
    handler = make_handler(secret_key=KEY, on_result=on_result)
    raw = xml_request(signed(result_pairs())).encode()
    async with serve(handler, "/result.php") as url, aiohttp.ClientSession() as http:
        headers = {"Content-Type": "application/xml"}
        async with http.post(url, data=raw, headers=headers) as response:
            assert response.status == 200
            body = await response.read()
    assert read_reply(body, "result.php")["pg_status"] == "error"
    assert on_result.seen == []
