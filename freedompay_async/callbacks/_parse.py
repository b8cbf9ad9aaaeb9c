"""Reading and verifying a notification, then decoding it: pure, no I/O and no aiohttp."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from freedompay_async._decode import parse_ordered
from freedompay_async._exceptions import ConfigurationError, DecodeError, SignatureError
from freedompay_async.callbacks._fields import (
    BRACKET,
    MAX_FORM_DEPTH,
    NAME_QUOTE,
    NESTED_NAME,
    build_notification,
    check_secret,
    quote,
)
from freedompay_async.callbacks._models import (
    CheckNotification,
    Notification,
    ResultNotification,
)
from freedompay_async.signing import Element, script_name_from_url, verify_pg_sig

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["parse_check", "parse_notification", "parse_result"]


def _field_text(value: object, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise DecodeError(f"field {quote(name)} is not UTF-8", tag=name) from None
    raise DecodeError(f"field {quote(name)} is not a text field (a file?)", tag=name)


def _pairs(fields: Mapping[str, object] | Iterable[tuple[str, object]]) -> list[tuple[str, object]]:
    items = fields.items() if isinstance(fields, Mapping) else fields
    pairs: list[tuple[str, object]] = []
    for entry in items:
        if not isinstance(entry, tuple) or len(entry) != 2 or not isinstance(entry[0], str):  # noqa: PLR2004 - a pair
            raise DecodeError("notification fields must be (name, value) pairs")
        pairs.append(entry)
    return pairs


def _next_index(group: dict[str, object]) -> str:
    """PHP's `name[]`: one more than the largest integer key so far, or 0."""
    indices = [int(key) for key in group if key.isdigit() and key.isascii()]
    return str(max(indices) + 1) if indices else "0"


def _unflatten(pairs: list[tuple[str, str]]) -> list[tuple[str, object]]:
    """Regroup bracket-notation names (`a[b][]`) into nested dicts, keeping first-seen order."""
    root: dict[str, object] = {}
    for name, value in pairs:
        match = NESTED_NAME.fullmatch(name)
        path = [name] if match is None else [match[1], *BRACKET.findall(match[2])]
        if len(path) > MAX_FORM_DEPTH:
            raise DecodeError(f"field {quote(name)} nests too deep", tag=path[0][:NAME_QUOTE])
        group = root
        for depth, key in enumerate(path):
            step = _next_index(group) if key == "" and depth else key
            if depth == len(path) - 1:
                if step in group:
                    raise DecodeError(f"field {quote(name)} is repeated", tag=name[:NAME_QUOTE])
                group[step] = value
                break
            child = group.setdefault(step, {})
            if not isinstance(child, dict):
                raise DecodeError(
                    f"field {quote(path[0])} is both a value and a group",
                    tag=path[0][:NAME_QUOTE],
                )
            group = child
    return list(root.items())


def read_fields(
    fields: Mapping[str, object] | Iterable[tuple[str, object]],
) -> list[tuple[str, object]]:
    """Normalise received fields (form or `pg_xml`) into the message `pg_sig` covers."""
    pairs = _pairs(fields)
    if not pairs:
        raise DecodeError("the notification carries no fields")
    if any(name == "pg_xml" for name, _ in pairs):
        if len(pairs) != 1:
            raise DecodeError("pg_xml must be the notification's only field", tag="pg_xml")
        document = _field_text(pairs[0][1], "pg_xml").encode()
        try:
            _root, children = parse_ordered(document)
        except DecodeError as exc:
            # A fresh error: the parser's keeps the body, which holds the signature.
            raise DecodeError(f"pg_xml refused: {exc.message}", tag=exc.tag or "pg_xml") from None
        return list(Element.from_ordered(children).children)
    return _unflatten([(name, _field_text(value, name)) for name, value in pairs])


def verify_signature(entries: list[tuple[str, object]], script_name: str, secret_key: str) -> None:
    """Refuse entries whose single `pg_sig` is missing or does not verify (`SignatureError`)."""
    if not any(name == "pg_sig" for name, _ in entries):
        raise SignatureError("the notification carries no pg_sig; refused")
    if not verify_pg_sig(script_name, entries, secret_key):
        raise SignatureError(
            "the notification's pg_sig does not verify; refused (check the secret key and that "
            "the script name is the last path segment of the callback URL)"
        )


def _resolve_script(script_name: str | None, url: str | None) -> str:
    if (script_name is None) == (url is None):
        raise ConfigurationError("give exactly one of script_name and url")
    if script_name is not None:
        return script_name
    return script_name_from_url(url or "")


def parse_notification(
    fields: Mapping[str, object] | Iterable[tuple[str, object]],
    *,
    secret_key: str,
    script_name: str | None = None,
    url: str | None = None,
) -> Notification:
    """
    Verify a Check or Result notification and decode it.

    A notification with `pg_result` is a Result; one without is a Check.

    Args:
        fields: The received fields in the order received: a mapping (e.g. aiohttp's
            `await request.post()` or `request.query`) or (name, value) pairs; or a single
            `pg_xml` field holding the XML `<request>`.
        secret_key: The merchant's secret key.
        script_name: The script name to verify with: the last path segment of the callback URL.
        url: The callback URL instead of `script_name` (exactly one of the two).

    Returns:
        A `CheckNotification` or a `ResultNotification`.

    Raises:
        ConfigurationError: Neither or both of `script_name` and `url`, or an empty key.
        SignatureError: `pg_sig` is missing, repeated or wrong.
        DecodeError: The fields or the XML are malformed, or a field is missing, repeated or
            not of its type (`.tag` names it).
    """
    script = _resolve_script(script_name, url)
    entries = read_fields(fields)
    verify_signature(entries, script, check_secret(secret_key))
    return build_notification(entries, script)


def parse_check(
    fields: Mapping[str, object] | Iterable[tuple[str, object]],
    *,
    secret_key: str,
    script_name: str | None = None,
    url: str | None = None,
) -> CheckNotification:
    """
    Verify and decode a Check request (see `parse_notification` for the arguments).

    Args:
        fields: The received fields, or a single `pg_xml` field.
        secret_key: The merchant's secret key.
        script_name: The last path segment of the check URL.
        url: The check URL instead of `script_name`.

    Returns:
        The verified Check.

    Raises:
        ConfigurationError: Neither or both of `script_name` and `url`, or an empty key.
        SignatureError: `pg_sig` is missing, repeated or wrong.
        DecodeError: The notification is malformed, or it is a Result (it has `pg_result`).
    """
    notification = parse_notification(
        fields, secret_key=secret_key, script_name=script_name, url=url
    )
    if not isinstance(notification, CheckNotification):
        raise DecodeError(
            "a Result notification was given where a Check is expected", tag="pg_result"
        )
    return notification


def parse_result(
    fields: Mapping[str, object] | Iterable[tuple[str, object]],
    *,
    secret_key: str,
    script_name: str | None = None,
    url: str | None = None,
) -> ResultNotification:
    """
    Verify and decode a Result notification (see `parse_notification` for the arguments).

    Args:
        fields: The received fields, or a single `pg_xml` field.
        secret_key: The merchant's secret key.
        script_name: The last path segment of the result URL.
        url: The result URL instead of `script_name`.

    Returns:
        The verified Result.

    Raises:
        ConfigurationError: Neither or both of `script_name` and `url`, or an empty key.
        SignatureError: `pg_sig` is missing, repeated or wrong.
        DecodeError: The notification is malformed, or it has no `pg_result`.
    """
    notification = parse_notification(
        fields, secret_key=secret_key, script_name=script_name, url=url
    )
    if not isinstance(notification, ResultNotification):
        raise DecodeError("pg_result is missing or empty", tag="pg_result")
    return notification
