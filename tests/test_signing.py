"""Both signatures: the documented JWS vectors bit-for-bit, and `pg_sig` by example and property."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import pickle
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from freedompay_async._decode import parse_ordered
from freedompay_async.signing import (
    Element,
    jws_detached,
    jws_header,
    jws_payload,
    pg_sig,
    script_name_from_url,
    verify_jws_detached,
    verify_pg_sig,
)

PROPERTY = settings(max_examples=100, deadline=None)


def md5(text: str) -> str:
    """Lowercase hex MD5 of UTF-8 text: the documented `pg_sig` hash."""
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def b64url(data: bytes) -> str:
    """Base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- detached JWS: the documented vectors ------------------------------------------------------

INIT_PAYLOAD = (
    '{"order_id":"828cf71d-a447-4a67-a149-c1df8bc197ca","merchant_id":123456,"amount":100,'
    '"description":"Счет за услуги","invoice_method":"qr","currency":"KZT"}'
).encode()
INIT_HEADER = (
    b'{"path":"/v5/merchant/invoice/init","merchant_id":123456,"method":"POST","params":"",'
    b'"alg":"HS512"}'
)
INIT_B64H = (
    "eyJwYXRoIjoiL3Y1L21lcmNoYW50L2ludm9pY2UvaW5pdCIsIm1lcmNoYW50X2lkIjoxMjM0NTYsIm1ldGhvZCI6"
    "IlBPU1QiLCJwYXJhbXMiOiIiLCJhbGciOiJIUzUxMiJ9"
)
INIT_B64P = (
    "eyJvcmRlcl9pZCI6IjgyOGNmNzFkLWE0NDctNGE2Ny1hMTQ5LWMxZGY4YmMxOTdjYSIsIm1lcmNoYW50X2lkIjox"
    "MjM0NTYsImFtb3VudCI6MTAwLCJkZXNjcmlwdGlvbiI6ItCh0YfQtdGCINC30LAg0YPRgdC70YPQs9C4IiwiaW52b2lj"
    "ZV9tZXRob2QiOiJxciIsImN1cnJlbmN5IjoiS1pUIn0"
)
INIT_B64S = "wCwFCAmxN0nbTm6mad8GxowIjgkCwfF7IAy2ijO9thLjsZFXnS4K_I4NPnXjkTFTMnEzqjk8rtIVmtf7NbGyvg"


def test_jws_payload_matches_the_documented_bytes() -> None:
    """The invoice-init fields serialise to the documented payload, Cyrillic unescaped."""
    payload = jws_payload(
        [
            ("order_id", "828cf71d-a447-4a67-a149-c1df8bc197ca"),
            ("merchant_id", 123456),
            ("amount", 100),
            ("description", "Счет за услуги"),
            ("invoice_method", "qr"),
            ("currency", "KZT"),
        ]
    )
    assert payload == INIT_PAYLOAD
    assert b64url(payload) == INIT_B64P


def test_jws_header_matches_the_documented_bytes() -> None:
    """The protected header is byte-exact: key `path`, integer merchant id, this key order."""
    header = jws_header(path="/v5/merchant/invoice/init", merchant_id=123456)
    assert header == INIT_HEADER
    assert b64url(header) == INIT_B64H


def test_jws_detached_reproduces_the_invoice_init_vector() -> None:
    """The published invoice-init signature is reproduced bit-for-bit and verifies."""
    value = jws_detached(
        INIT_PAYLOAD,
        secret_key="secret_key",
        path="/v5/merchant/invoice/init",
        merchant_id="123456",
    )
    assert value == f"{INIT_B64H}..{INIT_B64S}"
    header = verify_jws_detached(value, INIT_PAYLOAD, secret_key="secret_key")
    assert header["path"] == "/v5/merchant/invoice/init"
    assert header["merchant_id"] == 123456


def test_jws_detached_refuses_a_changed_payload_or_key() -> None:
    """The vector's signature does not verify over another payload or with another key."""
    value = f"{INIT_B64H}..{INIT_B64S}"
    with pytest.raises(ValueError, match="does not match"):
        verify_jws_detached(value, INIT_PAYLOAD.replace(b"100", b"101"), secret_key="secret_key")
    with pytest.raises(ValueError, match="does not match"):
        verify_jws_detached(value, INIT_PAYLOAD, secret_key="secret_kez")


CARD_HEADER = (
    b'{"uri":"/v5/card-api/request/status","auth_id":"123456","method":"POST","params":"",'
    b'"alg":"HS512"}'
)
CARD_B64H = (
    "eyJ1cmkiOiIvdjUvY2FyZC1hcGkvcmVxdWVzdC9zdGF0dXMiLCJhdXRoX2lkIjoiMTIzNDU2IiwibWV0aG9kIjoiUE9T"
    "VCIsInBhcmFtcyI6IiIsImFsZyI6IkhTNTEyIn0"
)
CARD_B64P = "eyJyZXF1ZXN0X2lkIjoiODI4Y2Y3MWQtYTQ0Ny00YTY3LWExNDktYzFkZjhiYzE5N2NhIn0"
CARD_B64S = "f1sQoeIpX_ZjOaykQzSeylvvKaVrEQV4gNM2ACFbEMkFDUV9Zk5WO1yQGEWez-vnQMVHodLBDVEyh5Xm2-3MjQ"


def test_card_api_vector_reproduces_with_the_same_hs512_construction() -> None:
    """The Card API vector (header with `uri` and `auth_id`) recomputes with raw HS512 pieces."""
    payload = jws_payload([("request_id", "828cf71d-a447-4a67-a149-c1df8bc197ca")])
    assert b64url(CARD_HEADER) == CARD_B64H
    assert b64url(payload) == CARD_B64P
    mac = hmac.new(b"secret", f"{CARD_B64H}.{CARD_B64P}".encode(), hashlib.sha512).digest()
    assert b64url(mac) == CARD_B64S


def test_card_api_vector_verifies_through_verify_jws_detached() -> None:
    """`verify_jws_detached` accepts the Card API token and returns its `uri`/`auth_id` header."""
    payload = b'{"request_id":"828cf71d-a447-4a67-a149-c1df8bc197ca"}'
    header = verify_jws_detached(f"{CARD_B64H}..{CARD_B64S}", payload, secret_key="secret")
    assert header == {
        "uri": "/v5/card-api/request/status",
        "auth_id": "123456",
        "method": "POST",
        "params": "",
        "alg": "HS512",
    }


# --- pg_sig: the documented examples ----------------------------------------------------------

FLAT = {
    "pg_amount": "25",
    "pg_description": "test",
    "pg_merchant_id": 123456,
    "pg_order_id": "23",
    "pg_salt": "molbulak",
}
NESTED = {
    "pg_a_param": "value1",
    "pg_b_param": "value2",
    "pg_salt": "9imM909TH820jwk387",
    "pg_t_param": "value3",
    "pg_z_param": {"pg_m_subparam": "subvalue1", "pg_q_subparam": "subvalue2"},
}


def test_pg_sig_flat_documented_example() -> None:
    """The flat init_payment example signs to the documented hash."""
    assert md5("init_payment.php;25;test;123456;23;molbulak;secret_key") == (
        "76bea9cd49bb0337d4bd4cb4dbfc04b4"
    )
    assert pg_sig("init_payment.php", FLAT, "secret_key") == "76bea9cd49bb0337d4bd4cb4dbfc04b4"


def test_pg_sig_flat_example_is_order_independent_for_distinct_names() -> None:
    """Sent in reverse order, the flat example still signs the same (names decide the order)."""
    reversed_pairs = list(FLAT.items())[::-1]
    assert pg_sig("init_payment.php", reversed_pairs, "secret_key") == (
        "76bea9cd49bb0337d4bd4cb4dbfc04b4"
    )


def test_pg_sig_nested_documented_example() -> None:
    """The nested PayBox example signs to the documented hash, in every input form."""
    expected = "a8a4d5a9188f24038a14a4d65c387bf7"
    assert (
        md5("script.php;value1;value2;9imM909TH820jwk387;value3;subvalue1;subvalue2;mypasskey")
        == expected
    )
    assert pg_sig("script.php", NESTED, "mypasskey") == expected
    as_pairs = [
        (name, Element(value.items()) if isinstance(value, dict) else value)
        for name, value in NESTED.items()
    ]
    assert pg_sig("script.php", as_pairs, "mypasskey") == expected
    assert pg_sig("script.php", Element(as_pairs), "mypasskey") == expected


def test_pg_sig_nested_example_from_xml() -> None:
    """The nested example given as an XML document verifies through `parse_ordered`."""
    signature = "a8a4d5a9188f24038a14a4d65c387bf7"
    body = (
        "<?xml version='1.0' encoding='utf-8'?><request>"
        "<pg_a_param>value1</pg_a_param><pg_b_param>value2</pg_b_param>"
        "<pg_salt>9imM909TH820jwk387</pg_salt><pg_t_param>value3</pg_t_param>"
        "<pg_z_param><pg_m_subparam>subvalue1</pg_m_subparam>"
        "<pg_q_subparam>subvalue2</pg_q_subparam></pg_z_param>"
        f"<pg_sig>{signature}</pg_sig></request>"
    ).encode()
    _root, children = parse_ordered(body)
    assert verify_pg_sig("script.php", Element.from_ordered(children), "mypasskey")
    assert not verify_pg_sig("script.php", Element.from_ordered(children), "otherkey")


def test_twelve_item_list_signs_in_string_order_of_indices() -> None:
    """A 12-item list signs its items in index order 0, 10, 1, 11, 2, 3 … 9."""
    items = [f"v{index}" for index in range(12)]
    order = [0, 10, 1, 11, 2, 3, 4, 5, 6, 7, 8, 9]
    expected = md5(";".join(["s.php", "a", *(f"v{i}" for i in order), "k"]))
    assert pg_sig("s.php", {"pg_a": "a", "pg_items": items}, "k") == expected
    assert pg_sig("s.php", {"pg_a": "a", "pg_items": items}, "k") != md5(
        ";".join(["s.php", "a", *items, "k"])
    )


def test_list_of_mappings_uses_the_documented_sort_names() -> None:
    """Receipt positions sort by `pg_receipt_positions0012003name002`-style names."""
    positions = [
        {"count": "1", "name": "tea", "price": "10"},
        {"count": "2", "name": "cake", "price": "20"},
    ]
    fields = {"pg_receipt_positions": positions, "pg_amount": "50"}
    # pg_amount002 < pg_receipt_positions001…, then item 0 before item 1, count < name < price.
    expected = md5("s;50;1;tea;10;2;cake;20;k")
    assert pg_sig("s", fields, "k") == expected


def test_prefix_case_sorts_by_sort_name_not_by_field_name() -> None:
    """`pg_param-x` sorts before `pg_param`, `pg_param_x` after it."""
    fields = [("pg_param", "B"), ("pg_param-x", "A"), ("pg_param_x", "C")]
    assert pg_sig("s", fields, "k") == md5("s;A;B;C;k")
    shuffled = [("pg_param_x", "C"), ("pg_param", "B"), ("pg_param-x", "A")]
    assert pg_sig("s", shuffled, "k") == md5("s;A;B;C;k")


def test_sort_is_bytewise_utf8() -> None:
    """Names compare as UTF-8 bytes: uppercase before lowercase, ASCII before Cyrillic."""
    fields = {"я": "3", "b": "2", "B": "1"}
    assert pg_sig("s", fields, "k") == md5("s;1;2;3;k")


def test_xml_repeated_tags_keep_document_order() -> None:
    """Repeated XML tags sign in document order, interleaved with others by sort name."""
    body = (
        b"<response><pg_item>first</pg_item><pg_other>x</pg_other><pg_item>second</pg_item>"
        b"<pg_item>third</pg_item></response>"
    )
    _root, children = parse_ordered(body)
    fields = Element.from_ordered(children)
    assert pg_sig("s", fields, "k") == md5("s;first;second;third;x;k")
    swapped = Element([("pg_item", "second"), ("pg_other", "x"), ("pg_item", "first")])
    swapped = Element([*swapped.children, ("pg_item", "third")])
    assert pg_sig("s", swapped, "k") != pg_sig("s", fields, "k")


def test_xml_nested_repeated_tags_and_empty_elements() -> None:
    """Nested repeated tags keep order, empty elements count as "", attributes are ignored."""
    body = (
        b"<response><pg_status>ok</pg_status><pg_refund_payments>"
        b"<pg_refund_payment><pg_amount>5</pg_amount><pg_note/></pg_refund_payment>"
        b'<pg_refund_payment kind="x"><pg_amount>7</pg_amount><pg_note></pg_note>'
        b"</pg_refund_payment></pg_refund_payments><pg_salt>s</pg_salt></response>"
    )
    _root, children = parse_ordered(body)
    signature = pg_sig("get_status3.php", Element.from_ordered(children), "k")
    assert signature == md5("get_status3.php;5;;7;;s;ok;k")
    signed = body.replace(b"</response>", f"<pg_sig>{signature}</pg_sig></response>".encode())
    _root, children = parse_ordered(signed)
    assert verify_pg_sig("get_status3.php", Element.from_ordered(children), "k")


def test_pg_sig_is_skipped_at_any_depth_but_uses_its_position() -> None:
    """A nested `pg_sig` is not signed, yet the entries after it are numbered past it."""
    # With pg_sig counted, `a` is entry 3 (`a003` sorts after `a002001`): X then Y.
    # Were its position not used, `a` would be `a002`, a prefix of `a002001`: Y then X.
    top = [("a002", "X"), ("pg_sig", "ignored"), ("a", "Y")]
    assert pg_sig("s", top, "k") == md5("s;X;Y;k")
    nested = {"g": Element(top)}
    assert pg_sig("s", nested, "k") == md5("s;X;Y;k")
    assert pg_sig("s", {"g": {"a002": "X", "pg_sig": "other", "a": "Y"}}, "k") == md5("s;X;Y;k")


def test_empty_containers_contribute_nothing_and_empty_values_contribute_empty() -> None:
    """An empty mapping, list or Element adds no value; "" and None add an empty one."""
    assert pg_sig("s", {"a": "1", "b": {}, "c": [], "d": Element()}, "k") == md5("s;1;k")
    assert pg_sig("s", {"a": "", "b": "1", "c": None}, "k") == md5("s;;1;;k")


def test_integer_keys_are_signed_as_decimal_text() -> None:
    """A mapping with integer keys (a PHP-style list) signs like the list it stands for."""
    assert pg_sig("s", {"l": {0: "a", 1: "b"}}, "k") == pg_sig("s", {"l": ["a", "b"]}, "k")


def test_numbers_are_signed_as_their_text() -> None:
    """Integers sign in decimal; Decimals in plain notation, trailing zeros kept."""
    fields = {"a": 7, "b": Decimal("25.00"), "c": Decimal("1E+2")}
    assert pg_sig("s", fields, "k") == md5("s;7;25.00;100;k")


@pytest.mark.parametrize("bad", [True, 1.5, b"x", object()])
def test_values_without_a_defined_text_are_refused(bad: object) -> None:
    """A bool, float, bytes or arbitrary object cannot be signed (TypeError, not a guess)."""
    with pytest.raises(TypeError):
        pg_sig("s", {"a": bad}, "k")


def test_non_finite_decimal_is_refused_and_never_verifies() -> None:
    """A NaN Decimal raises when signing and makes verification fail closed."""
    with pytest.raises(ValueError, match="non-finite"):
        pg_sig("s", {"a": Decimal("NaN")}, "k")
    assert not verify_pg_sig("s", {"a": Decimal("NaN"), "pg_sig": "0" * 32}, "k")


@pytest.mark.parametrize("bad", ["text", b"bytes", [("a", "1", "2")], [("a",)], [(1.5, "x")]])
def test_malformed_field_collections_are_refused(bad: Any) -> None:
    """Fields must be a mapping, (name, value) pairs or an Element."""
    with pytest.raises(TypeError):
        pg_sig("s", bad, "k")


# --- verify_pg_sig ------------------------------------------------------------------------------


def test_verify_accepts_the_right_signature_in_any_hex_case() -> None:
    """A correct signature verifies, upper-case hex included."""
    signature = pg_sig("init_payment.php", FLAT, "secret_key")
    assert verify_pg_sig("init_payment.php", {**FLAT, "pg_sig": signature}, "secret_key")
    assert verify_pg_sig("init_payment.php", {**FLAT, "pg_sig": signature.upper()}, "secret_key")


@pytest.mark.parametrize(
    "claimed",
    [None, "", "0" * 32, ["76bea9cd49bb0337d4bd4cb4dbfc04b4"], "76bea9cd49bb0337d4bd4cb4dbfc04b4x"],
)
def test_verify_fails_closed_on_missing_or_malformed_signatures(claimed: object) -> None:
    """A missing, empty, wrong, non-text or over-long `pg_sig` never verifies."""
    fields: dict[str, object] = dict(FLAT)
    if claimed is not None:
        fields["pg_sig"] = claimed
    assert not verify_pg_sig("init_payment.php", fields, "secret_key")  # type: ignore[arg-type]


def test_verify_refuses_two_signatures() -> None:
    """A message carrying `pg_sig` twice is refused even if one of them is right."""
    signature = pg_sig("init_payment.php", FLAT, "secret_key")
    pairs = [*FLAT.items(), ("pg_sig", signature), ("pg_sig", signature)]
    assert not verify_pg_sig("init_payment.php", pairs, "secret_key")


def test_verify_depends_on_the_script_name() -> None:
    """The same fields and key do not verify under another script name."""
    signature = pg_sig("init_payment.php", FLAT, "secret_key")
    assert not verify_pg_sig("get_status3.php", {**FLAT, "pg_sig": signature}, "secret_key")


def test_unsigned_reply_is_accepted_only_for_9998_when_allowed() -> None:
    """An unsigned reply passes only with `allow_unsigned_9998` and error code 9998."""
    unsigned = {"pg_status": "error", "pg_error_code": "9998", "pg_error_description": "x"}
    assert not verify_pg_sig("init_payment.php", unsigned, "k")
    assert verify_pg_sig("init_payment.php", unsigned, "k", allow_unsigned_9998=True)
    as_int = {**unsigned, "pg_error_code": 9998}
    assert verify_pg_sig("init_payment.php", as_int, "k", allow_unsigned_9998=True)
    other = {**unsigned, "pg_error_code": "100"}
    assert not verify_pg_sig("init_payment.php", other, "k", allow_unsigned_9998=True)
    twice = [*unsigned.items(), ("pg_error_code", "9998")]
    assert not verify_pg_sig("init_payment.php", twice, "k", allow_unsigned_9998=True)
    wrongly_signed = {**unsigned, "pg_sig": "0" * 32}
    assert not verify_pg_sig("init_payment.php", wrongly_signed, "k", allow_unsigned_9998=True)


def test_unsigned_9998_fixture_reply_is_accepted_only_when_allowed() -> None:
    """The recorded 9998 reply (no pg_sig) verifies only under the 9998 switch."""
    body = (
        b"<response><pg_status>error</pg_status><pg_error_code>9998</pg_error_code>"
        b"<pg_error_description>Incorrect merchant identifier</pg_error_description></response>"
    )
    _root, children = parse_ordered(body)
    fields = Element.from_ordered(children)
    assert not verify_pg_sig("init_payment.php", fields, "k")
    assert verify_pg_sig("init_payment.php", fields, "k", allow_unsigned_9998=True)


# --- script names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.freedompay.kz/init_payment.php", "init_payment.php"),
        ("https://shop.example/pay/result.php?order=1#top", "result.php"),
        ("/api/reg2nonreg", "reg2nonreg"),
        ("https://shop.example/callbacks/", ""),
        ("https://shop.example", ""),
        ("result.php?x=/y", "result.php"),
    ],
)
def test_script_name_from_url(url: str, expected: str) -> None:
    """The script name is the last path segment; query and fragment dropped; "/" gives ""."""
    assert script_name_from_url(url) == expected


# --- Element -------------------------------------------------------------------------------------


def test_element_is_immutable_comparable_and_hides_values_in_repr() -> None:
    """An Element is immutable, compares by children, pickles, and its repr shows names only."""
    element = Element([("pg_sig", "deadbeefdeadbeef"), ("pg_card_token", "tok-secret")])
    assert element == Element((("pg_sig", "deadbeefdeadbeef"), ("pg_card_token", "tok-secret")))
    assert element != Element([("pg_sig", "x")])
    assert element != "not an element"
    assert hash(element) == hash(Element(list(element.children)))
    with pytest.raises(AttributeError):
        element.children = ()  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(element)) == element
    assert copy.deepcopy(element) == element
    text = repr(element)
    assert "pg_card_token" in text
    assert "tok-secret" not in text
    assert "deadbeef" not in text


@pytest.mark.parametrize("bad", [[("a",)], [(1, "x")], ["ab"]])
def test_element_refuses_entries_that_are_not_named_pairs(bad: Any) -> None:
    """Element children must be (str, value) pairs."""
    with pytest.raises(TypeError):
        Element(bad)


def test_from_ordered_refuses_nodes_of_other_types() -> None:
    """`Element.from_ordered` accepts only text and lists of (tag, node) pairs."""
    with pytest.raises(TypeError):
        Element.from_ordered([("a", 5)])
    with pytest.raises(TypeError):
        Element.from_ordered([("a", [("b",)])])


def test_from_ordered_handles_deep_trees_without_recursion() -> None:
    """A tree deeper than Python's recursion limit converts and signs (iterative walk)."""
    node: Any = "leaf"
    for _ in range(5000):
        node = [("n", node)]
    element = Element.from_ordered([("root", node)])
    assert pg_sig("s", element, "k") == md5("s;leaf;k")


# --- properties ---------------------------------------------------------------------------------

NAME = st.text(alphabet="ab_-0129Zя", min_size=1, max_size=6).filter(lambda n: n != "pg_sig")
TEXT = st.text(max_size=8, alphabet=st.characters(exclude_categories=("Cs",)))


def _values(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(NAME, inner, max_size=4),
            st.lists(st.tuples(NAME, inner), max_size=4).map(Element),
        ),
        max_leaves=12,
    )


#: Text without the separator, for properties that compare signing strings value by value.
PLAIN = st.text(
    max_size=8, alphabet=st.characters(exclude_categories=("Cs",), exclude_characters=";")
)
VALUE = _values(TEXT)
FIELDS = st.lists(st.tuples(NAME, VALUE), min_size=1, max_size=6)


def reference_sig(script: str, pairs: list[tuple[str, Any]], key: str) -> str:
    """An independent, recursive port of the published PG_Signature flatten-then-sort rule."""

    def flatten(entries: list[tuple[str, Any]], parent: str) -> list[tuple[bytes, str]]:
        out: list[tuple[bytes, str]] = []
        for position, (name, value) in enumerate(entries, start=1):
            if name == "pg_sig":
                continue
            sort_name = parent + name + "%03d" % position  # noqa: UP031 - mirrors sprintf('%03d')
            if isinstance(value, Element):
                out += flatten(list(value.children), sort_name)
            elif isinstance(value, dict):
                out += flatten(list(value.items()), sort_name)
            elif isinstance(value, list):
                out += flatten([(str(i), v) for i, v in enumerate(value)], sort_name)
            else:
                out.append((sort_name.encode(), value))
        return out

    leaves = sorted(flatten(pairs, ""), key=lambda leaf: leaf[0])
    return md5(";".join([script, *(value for _, value in leaves), key]))


def leaf_count(value: Any) -> int:
    """How many leaves a value holds."""
    if isinstance(value, Element):
        return sum(leaf_count(v) for _, v in value.children)
    if isinstance(value, dict):
        return sum(leaf_count(v) for v in value.values())
    if isinstance(value, list):
        return sum(leaf_count(v[1] if isinstance(v, tuple) else v) for v in value)
    return 1


def replace_leaf(value: Any, index: int, new: str) -> tuple[Any, int]:
    """Replace the index-th leaf (document order); return the new value and the leaves left."""
    if isinstance(value, Element):
        pairs, index = replace_leaf(list(value.children), index, new)
        return Element(pairs), index
    if isinstance(value, dict):
        items, index = replace_leaf(list(value.items()), index, new)
        return dict(items), index
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, tuple):  # a (name, value) pair
                changed, index = replace_leaf(item[1], index, new)
                out.append((item[0], changed))
            else:
                changed, index = replace_leaf(item, index, new)
                out.append(changed)
        return out, index
    if index == 0:
        return new, -1
    return value, index - 1 if index > 0 else index


def signed(pairs: list[tuple[str, Any]], key: str = "key") -> list[tuple[str, Any]]:
    """The pairs with their pg_sig appended."""
    return [*pairs, ("pg_sig", pg_sig("cb.php", pairs, key))]


@PROPERTY
@given(FIELDS)
def test_property_matches_the_reference_rule(pairs: list[tuple[str, Any]]) -> None:
    """pg_sig equals an independent recursive port of PG_Signature on random trees."""
    assert pg_sig("cb.php", pairs, "key") == reference_sig("cb.php", pairs, "key")


@PROPERTY
@given(FIELDS)
def test_property_sign_then_verify_round_trips(pairs: list[tuple[str, Any]]) -> None:
    """Any signed message verifies, as pairs and as an Element."""
    message = signed(pairs)
    assert verify_pg_sig("cb.php", message, "key")
    assert verify_pg_sig("cb.php", Element(message), "key")


@PROPERTY
@given(FIELDS, st.data())
def test_property_changing_any_leaf_breaks_verification(
    pairs: list[tuple[str, Any]], data: st.DataObject
) -> None:
    """Replacing any one leaf with a different text makes the signature fail."""
    count = leaf_count(pairs)
    assume(count > 0)
    index = data.draw(st.integers(0, count - 1))
    new = data.draw(TEXT)
    changed, left = replace_leaf(pairs, index, new)
    assert left == -1
    assume(changed != pairs)
    message = [*changed, ("pg_sig", pg_sig("cb.php", pairs, "key"))]
    assert not verify_pg_sig("cb.php", message, "key")


@PROPERTY
@given(FIELDS, NAME, TEXT, st.data())
def test_property_adding_a_field_breaks_verification(
    pairs: list[tuple[str, Any]], name: str, value: str, data: st.DataObject
) -> None:
    """Inserting one more field anywhere (even an empty one) makes the signature fail."""
    message = signed(pairs)
    where = data.draw(st.integers(0, len(message)))
    tampered = [*message[:where], (name, value), *message[where:]]
    assert not verify_pg_sig("cb.php", tampered, "key")


@PROPERTY
@given(FIELDS, st.data())
def test_property_removing_a_field_breaks_verification(
    pairs: list[tuple[str, Any]], data: st.DataObject
) -> None:
    """Dropping any top-level field that holds a value makes the signature fail."""
    candidates = [i for i, (_, value) in enumerate(pairs) if leaf_count(value) > 0]
    assume(candidates)
    drop = data.draw(st.sampled_from(candidates))
    message = signed(pairs)
    del message[drop]
    assert not verify_pg_sig("cb.php", message, "key")


@PROPERTY
@given(FIELDS, TEXT.filter(bool), TEXT.filter(bool))
def test_property_wrong_key_never_verifies(
    pairs: list[tuple[str, Any]], key: str, other: str
) -> None:
    """A message signed with one key never verifies with another."""
    assume(key != other)
    assert not verify_pg_sig("cb.php", signed(pairs, key), other)


@PROPERTY
@given(FIELDS, NAME, PLAIN, PLAIN)
def test_property_same_name_fields_sign_in_the_order_sent(
    pairs: list[tuple[str, Any]], name: str, first: str, second: str
) -> None:
    """Two fields with the same name sign in the order sent; swapping them changes pg_sig."""
    assume(first != second)
    one = [*pairs, (name, first), (name, second)]
    two = [*pairs, (name, second), (name, first)]
    assert pg_sig("cb.php", one, "key") != pg_sig("cb.php", two, "key")
    assert verify_pg_sig("cb.php", signed(one), "key")


@PROPERTY
@given(FIELDS, NAME)
def test_property_empty_values_are_kept(pairs: list[tuple[str, Any]], name: str) -> None:
    """An added empty value changes the signature: it contributes an empty element."""
    assert pg_sig("cb.php", [*pairs, (name, "")], "key") != pg_sig("cb.php", pairs, "key")


@PROPERTY
@given(st.dictionaries(NAME, VALUE, min_size=1, max_size=6))
def test_property_mapping_and_pairs_sign_alike(fields: dict[str, Any]) -> None:
    """A mapping signs exactly like its items given as pairs or as an Element."""
    expected = pg_sig("cb.php", fields, "key")
    assert pg_sig("cb.php", list(fields.items()), "key") == expected
    assert pg_sig("cb.php", Element(fields.items()), "key") == expected
