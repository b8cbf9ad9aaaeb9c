"""
Classic Merchant API requests: the operation table, field checks, `pg_salt` and `pg_sig`.

Everything here is pure. Each operation is declared once in `SPECS`: its path, its fields (the
caller's name, the wire name, whether it is required, how a value is checked and written), and
its reply decoder. `build_classic_request` checks the caller's values (a `ConfigurationError`
names the field), adds `pg_merchant_id` and the caller's `pg_salt`, signs with `pg_sig` using the
path's last segment as the script name, and writes one urlencoded body; `decode_classic_reply`
turns the reply into the operation's model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal, TypeAlias
from urllib.parse import urlencode

import attrs

from freedompay_async import _decode
from freedompay_async._classic_fields import (
    check_card_token,
    check_flag,
    check_money,
    check_order_id,
    check_payment_id,
    check_url,
    check_user_id,
)
from freedompay_async._classic_models import (
    CancelResult,
    CaptureResult,
    CardAddition,
    ClassicOperation,
    PaymentStatus,
    RefundResult,
    RemovedCard,
    SavedCard,
)
from freedompay_async._exceptions import ConfigurationError
from freedompay_async.signing import pg_sig, script_name_from_url

if TYPE_CHECKING:
    from freedompay_async._config import _Credentials
    from freedompay_async._protocol import RawResponse

__all__ = [
    "SPECS",
    "ClassicOptions",
    "ClassicReply",
    "ClassicRequest",
    "FieldSpec",
    "OperationSpec",
    "build_classic_request",
    "decode_classic_reply",
]

CardAddScript = Literal["add", "add2"]

_SALT = re.compile(r"[A-Za-z0-9]{1,64}")
_DEFAULT_MAX_BYTES = 1 << 20


@attrs.frozen(kw_only=True)
class FieldSpec:
    """
    One request field: the caller's name, the wire name, and how a value is checked.

    Attributes:
        name: The caller's name (`payment_id`), used in error messages.
        wire: The form field (`pg_payment_id`).
        check: Returns the wire text, or raises `ConfigurationError` naming the field.
        required: Whether the field must be given (None values are left out otherwise).
        omit_false: Leave the field out when the value is False (for opt-in flags).
    """

    name: str
    wire: str
    check: Callable[[str, object], str]
    required: bool = False
    omit_false: bool = False


#: What a classic reply decodes to.
ClassicReply: TypeAlias = (
    "CardAddition | tuple[SavedCard, ...] | RemovedCard | PaymentStatus | RefundResult"
    " | CancelResult | CaptureResult"
)
Decoder: TypeAlias = Callable[
    ["RawResponse", "ClassicRequest", "ClassicOptions", "str | None"], ClassicReply
]


@attrs.frozen(kw_only=True)
class OperationSpec:
    """
    One classic operation, declared once.

    Attributes:
        operation: The operation.
        path: The endpoint path; `{merchant_id}` and `{card_add_script}` are filled in.
        fields: The fields the caller may give.
        one_of: Names of which exactly one must be given (empty: no such rule).
        decode: Turns a reply into the operation's model (reply, request, options, secret).
    """

    operation: ClassicOperation
    path: str
    fields: tuple[FieldSpec, ...]
    decode: Decoder
    one_of: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class ClassicOptions:
    """
    The switches for what the classic API's documentation leaves open (README, Assumptions).

    Args:
        card_add_script: `add2` (the official mobile SDK, the RU KG docs) or `add` (the EN docs).
        verify_replies: Verify each reply's `pg_sig` with the called script's name.
        max_response_bytes: Largest reply body accepted.
    """

    card_add_script: CardAddScript = "add2"
    verify_replies: bool = True
    max_response_bytes: int = _DEFAULT_MAX_BYTES

    def __attrs_post_init__(self) -> None:
        """Refuse an unknown script or a non-positive size cap."""
        if self.card_add_script not in ("add", "add2"):
            raise ConfigurationError(
                f"card_add_script must be 'add' or 'add2', got {self.card_add_script!r}"
            )
        if not isinstance(self.verify_replies, bool):
            raise ConfigurationError("verify_replies must be True or False")
        size = self.max_response_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ConfigurationError("max_response_bytes must be a positive integer")


@attrs.frozen(kw_only=True)
class ClassicRequest:
    """
    One classic call's request, ready to send as many times as its rules allow.

    Attributes:
        operation: The operation.
        path: The endpoint path (merchant id filled in).
        script_name: The path's last segment, which signs the request and its reply.
        body: The urlencoded body bytes (signed; never logged).
        headers: Content-Type and Accept.
        fields: The sent fields in wire order, `pg_sig` included; never logged.
        params: The caller's checked values by caller name (`payment_id` as int, money as
            Decimal), for decoders and settle rules.
        context: Non-secret identifiers for logs and errors.
    """

    operation: ClassicOperation
    path: str
    script_name: str
    body: bytes = attrs.field(repr=False)
    headers: Mapping[str, str] = attrs.field(repr=False)
    fields: tuple[tuple[str, str], ...] = attrs.field(repr=False)
    params: Mapping[str, object] = attrs.field(repr=False)
    context: Mapping[str, str] = attrs.field(factory=dict)


def _plain(decoder: Callable[..., ClassicReply]) -> Decoder:
    """Adapt a decoder that needs only the script name, the key and the size cap."""

    def decode(
        raw: RawResponse, req: ClassicRequest, opts: ClassicOptions, key: str | None
    ) -> ClassicReply:
        return decoder(
            raw, script_name=req.script_name, secret_key=key, max_bytes=opts.max_response_bytes
        )

    return decode


def _with_payment(decoder: Callable[..., ClassicReply], *, amount: bool = False) -> Decoder:
    """Adapt a money decoder, which copies the request's payment id (and amount) in."""

    def decode(
        raw: RawResponse, req: ClassicRequest, opts: ClassicOptions, key: str | None
    ) -> ClassicReply:
        extra: dict[str, object] = {}
        if amount:
            extra["amount"] = req.params.get("amount")
        return decoder(
            raw,
            script_name=req.script_name,
            secret_key=key,
            payment_id=req.params["payment_id"],
            max_bytes=opts.max_response_bytes,
            **extra,
        )

    return decode


_PAYMENT_ID = FieldSpec(
    name="payment_id", wire="pg_payment_id", check=check_payment_id, required=True
)
_USER = FieldSpec(name="user_id", wire="pg_user_id", check=check_user_id, required=True)
_CARDSTORAGE = "/v1/merchant/{merchant_id}/cardstorage"

#: The operation table.
SPECS: Mapping[ClassicOperation, OperationSpec] = {
    spec.operation: spec
    for spec in (
        OperationSpec(
            operation=ClassicOperation.CARD_ADD,
            path=_CARDSTORAGE + "/{card_add_script}",
            fields=(
                _USER,
                FieldSpec(name="back_link", wire="pg_back_link", check=check_url, required=True),
                FieldSpec(name="post_link", wire="pg_post_link", check=check_url),
                FieldSpec(name="order_id", wire="pg_order_id", check=check_order_id),
            ),
            decode=_plain(_decode.decode_card_add),
        ),
        OperationSpec(
            operation=ClassicOperation.CARD_LIST,
            path=_CARDSTORAGE + "/list",
            fields=(
                _USER,
                FieldSpec(
                    name="extended", wire="pg_extend_data", check=check_flag, omit_false=True
                ),
            ),
            decode=_plain(_decode.decode_card_list),
        ),
        OperationSpec(
            operation=ClassicOperation.CARD_REMOVE,
            path=_CARDSTORAGE + "/remove",
            fields=(
                _USER,
                FieldSpec(
                    name="card_token", wire="pg_card_token", check=check_card_token, required=True
                ),
            ),
            decode=_plain(_decode.decode_card_remove),
        ),
        OperationSpec(
            operation=ClassicOperation.PAYMENT_STATUS,
            path="/get_status3.php",
            fields=(
                FieldSpec(name="payment_id", wire="pg_payment_id", check=check_payment_id),
                FieldSpec(name="order_id", wire="pg_order_id", check=check_order_id),
            ),
            one_of=("payment_id", "order_id"),
            decode=_plain(_decode.decode_payment_status),
        ),
        OperationSpec(
            operation=ClassicOperation.REFUND,
            path="/revoke.php",
            fields=(
                _PAYMENT_ID,
                FieldSpec(name="amount", wire="pg_refund_amount", check=check_money),
            ),
            decode=_with_payment(_decode.decode_refund, amount=True),
        ),
        OperationSpec(
            operation=ClassicOperation.CANCEL,
            path="/cancel.php",
            fields=(_PAYMENT_ID,),
            decode=_with_payment(_decode.decode_cancel),
        ),
        OperationSpec(
            operation=ClassicOperation.CAPTURE,
            path="/do_capture.php",
            fields=(
                _PAYMENT_ID,
                FieldSpec(name="amount", wire="pg_clearing_amount", check=check_money),
            ),
            decode=_with_payment(_decode.decode_capture),
        ),
    )
}


def _checked(spec: OperationSpec, params: Mapping[str, object]) -> dict[str, tuple[str, object]]:
    """Check the caller's values; return caller name -> (wire text, caller value)."""
    known = {field.name for field in spec.fields}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigurationError(f"{spec.operation.value} takes no field {unknown[0]!r}")
    given = [name for name in spec.one_of if params.get(name) is not None]
    if spec.one_of and len(given) != 1:
        raise ConfigurationError(
            f"{spec.operation.value} needs exactly one of {', '.join(spec.one_of)}"
        )
    out: dict[str, tuple[str, object]] = {}
    for field in spec.fields:
        value = params.get(field.name)
        if value is None:
            if field.required:
                raise ConfigurationError(f"{field.name} is required")
            continue
        text = field.check(field.name, value)
        if field.omit_false and value is False:
            continue
        out[field.name] = (text, value)
    return out


def build_classic_request(
    operation: ClassicOperation,
    params: Mapping[str, object],
    *,
    credentials: _Credentials,
    salt: str,
    options: ClassicOptions | None = None,
) -> ClassicRequest:
    """
    Check, sign and serialise one classic operation's request.

    Args:
        operation: The operation.
        params: The caller's values by caller name (see `SPECS`); None values count as absent.
        credentials: Merchant id and secret key.
        salt: The `pg_salt`: 1-64 letters and digits, fresh per request (the caller draws it).
        options: The switches; `ClassicOptions()` when None.

    Returns:
        The request: path, script name, body, headers and the checked values.

    Raises:
        ConfigurationError: A value is missing or invalid; the message names the field.
    """
    opts = options or ClassicOptions()
    if not isinstance(salt, str) or _SALT.fullmatch(salt) is None:
        raise ConfigurationError("salt must be 1-64 letters and digits")
    spec = SPECS[operation]
    checked = _checked(spec, params)
    path = spec.path.format(
        merchant_id=credentials.merchant_id, card_add_script=opts.card_add_script
    )
    script = script_name_from_url(path)
    wire = {field.name: field.wire for field in spec.fields}
    pairs = [(wire[name], text) for name, (text, _) in checked.items()]
    pairs += [("pg_merchant_id", credentials.merchant_id), ("pg_salt", salt)]
    pairs.sort()
    pairs.append(("pg_sig", pg_sig(script, pairs, credentials.secret_key)))
    context = {
        name: text for name, (text, _) in checked.items() if name in ("payment_id", "order_id")
    }
    return ClassicRequest(
        operation=operation,
        path=path,
        script_name=script,
        body=urlencode(pairs).encode("ascii"),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/xml",
        },
        fields=tuple(pairs),
        params={
            name: int(text) if name == "payment_id" else value
            for name, (text, value) in checked.items()
        },
        context=context,
    )


def decode_classic_reply(
    request: ClassicRequest,
    raw: RawResponse,
    *,
    credentials: _Credentials,
    options: ClassicOptions | None = None,
) -> ClassicReply:
    """
    Decode the reply to *request* with its operation's decoder.

    Args:
        request: The request the reply answers.
        raw: The reply as the transport read it.
        credentials: The secret key verifies the reply's `pg_sig` (unless switched off).
        options: The switches; `ClassicOptions()` when None.

    Returns:
        The operation's model: `CardAddition`, `tuple[SavedCard, ...]`, `RemovedCard`,
        `PaymentStatus`, `RefundResult`, `CancelResult` or `CaptureResult`.

    Raises:
        HTTPStatusError: The HTTP status is not 2xx.
        DecodeError: The reply is refused (the message names the tag).
        SignatureError: The reply's `pg_sig` is missing or wrong.
        GatewayError: `pg_status` is `error` or `rejected`.
    """
    opts = options or ClassicOptions()
    key = credentials.secret_key if opts.verify_replies else None
    return SPECS[request.operation].decode(raw, request, opts, key)
