"""The masking rules: PANs, card tokens, redaction of echoed secrets, and where they apply."""

from __future__ import annotations

import pickle

import pytest

from freedompay_async import (
    DecodeError,
    GatewayError,
    HTTPStatusError,
    InvoiceInfo,
    InvoicePayment,
    InvoiceStatus,
    PayRequest,
)
from freedompay_async._exceptions import BODY_KEEP_BYTES, TransportCause
from freedompay_async.masking import (
    REDACTED,
    mask_pan,
    mask_pans,
    mask_token,
    printable,
    redact_bytes,
    redact_headers,
    redact_text,
)

PAN = "4111111111111111"
TOKEN = "tok-SECRET-abcdef123456"
JWS = "eyJhbGciOiJIUzI1NiIsImtpZCI6IjEifQ..c2lnbmF0dXJlLXZhbHVlLWhlcmUtMDEyMzQ1"


def test_printable_keeps_its_behaviour() -> None:
    """Printable escapes backslash, CR, LF, TAB, other controls and lone surrogates only."""
    assert printable("plain текст 😀") == "plain текст 😀"
    assert printable("a\nb\rc\td\\e") == "a\\nb\\rc\\td\\\\e"
    assert printable("x\x1b[31m\ud800") == "x\\x1b[31m\\ud800"
    assert printable(12) == "12"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (PAN, "411111******1111"),
        ("4111-1111-1111-1111", "4111-11**-****-1111"),
        ("440043******0000", "440043******0000"),  # already masked by the gateway
        ("5555555555554444123", "555555*********4123"),
        ("", ""),
    ],
)
def test_mask_pan(value: str, shown: str) -> None:
    """A card number keeps only its first six and last four digits."""
    assert mask_pan(value) == shown


def test_mask_pans_in_text_masks_luhn_valid_numbers_only() -> None:
    """Free text: Luhn-valid 13-19 digit runs are masked; order numbers are left alone."""
    text = f"paid with {PAN} (or 4111 1111 1111 1111); order 1234567890123; id 42"
    assert mask_pans(text) == (
        "paid with 411111******1111 (or 4111 11** **** 1111); order 1234567890123; id 42"
    )
    assert mask_pans("short 123") == "short 123"


def test_mask_token() -> None:
    """A card token shows only its last four characters."""
    assert mask_token(TOKEN) == "…3456"
    assert mask_token("abcd") == "…"


@pytest.mark.parametrize(
    "text",
    [
        f"<response><card_token>{TOKEN}</card_token></response>",
        f'<Card_Token type="x">{TOKEN}</Card_Token >',
        f'{{"card_token": "{TOKEN}", "other": 1}}',
        f"a=1&card_token={TOKEN}&b=2",
        f'--b\r\nContent-Disposition: form-data; name="card_token"\r\n\r\n{TOKEN}\r\n--b--',
        f"HTTP/1.1 400\r\nX-JWS-Signature: {TOKEN}\r\n",
        f"signature: {TOKEN}",
    ],
)
def test_sensitive_fields_are_redacted_in_every_syntax(text: str) -> None:
    """A sensitive field's value is redacted in XML, JSON, form, multipart and header syntax."""
    redacted = redact_text(text)
    assert TOKEN not in redacted
    assert REDACTED in redacted


def test_exact_secrets_jws_and_pans_are_redacted() -> None:
    """Exact secrets (and a JWS's signature segment), any JWS, and full PANs are removed."""
    signature_tail = JWS.rpartition(".")[2]
    text = f"echo {TOKEN} then {JWS} alone {signature_tail} and {PAN}"
    redacted = redact_text(text, [TOKEN, JWS])
    for secret in (TOKEN, JWS, signature_tail, PAN):
        assert secret not in redacted
    assert "411111******1111" in redacted
    assert redact_text("ok", ["ab"]) == "ok"  # too short to be a secret: ignored


def test_redact_bytes_is_byte_exact_when_nothing_matches() -> None:
    """Bodies that are not UTF-8 pass through unchanged unless a secret is in them."""
    body = b"\xff\xfe<r>\x00ok</r>"
    assert redact_bytes(body) is body
    assert redact_bytes(b"\xff" + TOKEN.encode(), [TOKEN]) == b"\xff" + REDACTED.encode()


def test_redact_headers() -> None:
    """Sensitive headers are blanked; other values are redacted; names lower-cased."""
    headers = {
        "X-JWS-Signature": JWS,
        "X-Upstream-Token": "t",
        "Set-Cookie": "s=1",
        "Server": f"proxy {PAN}",
        "X-Echo": f"got {TOKEN}",
    }
    assert redact_headers(headers, [TOKEN]) == {
        "x-jws-signature": REDACTED,
        "x-upstream-token": REDACTED,
        "set-cookie": REDACTED,
        "server": "proxy 411111******1111",
        "x-echo": f"got {REDACTED}",
    }


def test_response_error_redacts_before_keeping_and_survives_pickle() -> None:
    """ResponseError keeps redacted headers and 2 KiB of redacted body, also after pickling."""
    body = b"x" * (BODY_KEEP_BYTES - 5) + TOKEN.encode() + b"tail" * 100
    error = HTTPStatusError(
        "pay failed",
        operation="pay",
        status_code=500,
        headers={"X-Echo": TOKEN, "Retry-After": "3"},
        body=body,
        redact=[TOKEN],
    )
    assert TOKEN.encode()[:4] not in error.body[-40:]  # no cut-off beginning of the secret
    assert len(error.body) <= BODY_KEEP_BYTES + len(REDACTED)
    assert error.headers == {"x-echo": REDACTED, "retry-after": "3"}
    assert error.retry_after == "3"
    restored = pickle.loads(pickle.dumps(error))
    assert restored.body == error.body
    assert restored.headers == error.headers


def test_big_body_is_not_copied_whole() -> None:
    """A 64 MiB body is cut to 2 KiB; the secret at its end never matters."""
    error = DecodeError("too big", body=b"a" * (64 << 20) + TOKEN.encode(), redact=[TOKEN])
    assert error.body == b"a" * BODY_KEEP_BYTES


def test_gateway_error_redacts_its_description() -> None:
    """GatewayError's message and error_description lose echoed secrets and full PANs."""
    error = GatewayError(
        f"pay refused: {TOKEN} {PAN}",
        error_code=1,
        error_description=f"token {TOKEN} card {PAN}",
        redact=[TOKEN],
    )
    for text in (str(error), error.error_description or "", repr(pickle.dumps(error))):
        assert TOKEN not in text
        assert PAN not in text


def test_transport_cause_pickles_and_prints() -> None:
    """TransportCause keeps a kind and a detail, and survives pickle."""
    cause = TransportCause("aiohttp.ServerDisconnectedError", "Server disconnected")
    assert str(cause) == "aiohttp.ServerDisconnectedError: Server disconnected"
    assert str(TransportCause("TimeoutError")) == "TimeoutError"
    restored = pickle.loads(pickle.dumps(cause))
    assert (restored.kind, restored.detail) == (cause.kind, cause.detail)


def test_models_never_hold_a_full_pan() -> None:
    """A full PAN from the gateway is masked in the model itself: repr and pickle alike."""
    payment = InvoicePayment(
        invoice_status=InvoiceStatus.OK, card_pan=PAN, error_description=f"card {PAN}"
    )
    info = InvoiceInfo(invoice_status=InvoiceStatus.OK, description=f"for card {PAN}")
    for model in (payment, info):
        assert PAN not in repr(model)
        assert PAN.encode() not in pickle.dumps(model)
    assert payment.card_pan == "411111******1111"
    assert InvoicePayment(invoice_status=InvoiceStatus.NEW).card_pan is None


def test_pay_request_repr_masks_the_token() -> None:
    """PayRequest's repr shows the token's last four characters only."""
    request = PayRequest(customer="c", user_id="u", card_token=TOKEN)
    assert TOKEN not in repr(request)
    assert "…3456" in repr(request)
