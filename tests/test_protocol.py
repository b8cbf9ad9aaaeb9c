"""Requests as bytes: field order, multipart read back independently, JWS over the payload."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from freedompay_async._config import _Credentials, _WireOptions
from freedompay_async._protocol import Operation, build_request, encode_multipart
from freedompay_async.signing import jws_payload, verify_jws_detached

CREDS = _Credentials(merchant_id="123456", secret_key="secret_key")

INIT_FIELDS = [
    ("order_id", "828cf71d-a447-4a67-a149-c1df8bc197ca"),
    ("merchant_id", "123456"),
    ("amount", Decimal(100)),
    ("description", "Счет за услуги"),
    ("invoice_method", "qr"),
    ("currency", "KZT"),
]


def _parse_multipart(body: bytes, content_type: str) -> list[tuple[str, str]]:
    """Read a multipart body back with the standard library's MIME parser."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    assert message.is_multipart()
    fields = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields.append((name, part.get_payload(decode=True).decode("utf-8")))
    return fields


def _header(signature: str) -> dict[str, object]:
    b64 = signature.split(".", maxsplit=1)[0]
    return json.loads(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))


def test_json_body_reproduces_the_documented_vector() -> None:
    """The JSON body is the documented payload and its signature the documented one, bit for bit."""
    request = build_request(
        Operation.INIT, INIT_FIELDS, credentials=CREDS, wire=_WireOptions(body_format="json")
    )
    assert (
        request.body
        == (
            '{"order_id":"828cf71d-a447-4a67-a149-c1df8bc197ca","merchant_id":123456,"amount":100,'
            '"description":"Счет за услуги","invoice_method":"qr","currency":"KZT"}'
        ).encode()
    )
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-JWS-Signature"] == (
        "eyJwYXRoIjoiL3Y1L21lcmNoYW50L2ludm9pY2UvaW5pdCIsIm1lcmNoYW50X2lkIjoxMjM0NTYsIm1ldGhvZCI6"
        "IlBPU1QiLCJwYXJhbXMiOiIiLCJhbGciOiJIUzUxMiJ9.."
        "wCwFCAmxN0nbTm6mad8GxowIjgkCwfF7IAy2ijO9thLjsZFXnS4K_I4NPnXjkTFTMnEzqjk8rtIVmtf7NbGyvg"
    )


def test_multipart_body_reads_back_in_order_and_signs_the_text_fields() -> None:
    """Multipart parts come back, in order, through an independent parser; the JWS covers them."""
    request = build_request(Operation.INIT, INIT_FIELDS, credentials=CREDS, wire=_WireOptions())
    content_type = request.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    fields = _parse_multipart(request.body, content_type)
    assert fields == [(name, str(value)) for name, value in INIT_FIELDS]
    header = verify_jws_detached(
        request.headers["X-JWS-Signature"], jws_payload(fields), secret_key="secret_key"
    )
    assert header == {
        "path": "/v5/merchant/invoice/init",
        "merchant_id": 123456,
        "method": "POST",
        "params": "",
        "alg": "HS512",
    }


def test_pay_fields_are_the_seed_pages_three_in_order() -> None:
    """A pay request carries customer, user_id and card_token, in that order, and nothing else."""
    fields = [("customer", "kzobd2vgp"), ("user_id", "No65GFR"), ("card_token", "ef741cfc")]
    request = build_request(Operation.PAY, fields, credentials=CREDS, wire=_WireOptions())
    assert request.path == "/v5/merchant/invoice/pay"
    assert _parse_multipart(request.body, request.headers["Content-Type"]) == fields
    assert request.context == {"customer": "kzobd2vgp"}
    assert "ef741cfc" not in repr(request)


def test_uri_header_key_and_string_merchant_id() -> None:
    """The header-key switch writes `uri`; a non-numeric merchant id stays a JSON string."""
    creds = _Credentials(merchant_id="shop-7", secret_key="k")
    request = build_request(
        Operation.STATUS,
        [("merchant_id", "shop-7"), ("customer", "c1")],
        credentials=creds,
        wire=_WireOptions(jws_header_key="uri", body_format="json"),
    )
    header = _header(request.headers["X-JWS-Signature"])
    assert header["uri"] == "/v5/merchant/invoice/status"
    assert "path" not in header
    assert header["merchant_id"] == "shop-7"
    assert json.loads(request.body) == {"merchant_id": "shop-7", "customer": "c1"}


def test_decimal_amounts_keep_their_cents() -> None:
    """Amounts with cents are sent as written, never through a float."""
    fields = [("amount", Decimal("10.05"))]
    json_request = build_request(
        Operation.INIT, fields, credentials=CREDS, wire=_WireOptions(body_format="json")
    )
    assert json_request.body == b'{"amount":10.05}'
    multipart = build_request(Operation.INIT, fields, credentials=CREDS, wire=_WireOptions())
    assert _parse_multipart(multipart.body, multipart.headers["Content-Type"]) == [
        ("amount", "10.05")
    ]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["customer", "user_id", "card_token", "description", "order_id"]),
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_no_boundary_occurs_inside_a_value(fields: list[tuple[str, str]]) -> None:
    """Whatever the values, the boundary is absent from them and the parts read back intact."""
    body, content_type = encode_multipart(fields)
    boundary = content_type.split("boundary=", 1)[1]
    assert all(boundary not in value for _, value in fields)
    assert body.count(f"--{boundary}".encode()) == len(fields) + 1


def test_boundary_changes_when_a_value_contains_it() -> None:
    """A value that holds the default boundary forces a different one."""
    _, first = encode_multipart([("a", "x")])
    default = first.split("boundary=", 1)[1]
    body, second = encode_multipart([("a", f"evil {default} value")])
    boundary = second.split("boundary=", 1)[1]
    assert boundary != default
    assert boundary not in f"evil {default} value"
    assert f"evil {default} value".encode() in body
