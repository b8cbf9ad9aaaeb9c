"""
How the SDK shows values it did not choose: log-safe text, masked PANs and card tokens, redaction.

Every log line, exception message and `repr` that interpolates a caller's or the gateway's value
goes through this module, so one rule decides what a reader (or an attacker reading logs) sees:

- `printable` escapes control characters, so a value cannot forge a log line;
- `mask_pan` keeps the first six and last four digits of a card number (PCI DSS display rule);
- `mask_pans` does that to every card number (a Luhn-valid run of 13-19 digits) inside free text;
- `mask_token` shows only the last four characters of a card token;
- `redact_text`, `redact_bytes` and `redact_headers` remove signatures, card tokens, secrets and
  full PANs from text a gateway or a proxy sent back, before an exception keeps it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "REDACTED",
    "SENSITIVE_NAMES",
    "mask_pan",
    "mask_pans",
    "mask_token",
    "printable",
    "redact_bytes",
    "redact_headers",
    "redact_text",
]

#: What a redacted value is replaced with.
REDACTED = "[redacted]"

#: Field and header names whose values are never kept (compared lower-cased).
SENSITIVE_NAMES = frozenset(
    {
        "authorization",
        "card_token",
        "cardtoken",
        "cookie",
        "cvc",
        "cvv",
        "password",
        "pg_sig",
        "proxy-authorization",
        "secret",
        "secret_key",
        "set-cookie",
        "signature",
        "token",
        "x-jws-signature",
    }
)

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ASCII_DIGITS_DELETED = str.maketrans("", "", "0123456789")
_PAN_VISIBLE_HEAD = 6
_PAN_VISIBLE_TAIL = 4
_PAN_MIN_DIGITS = 13
_TOKEN_VISIBLE = 4
_SECRET_MIN_LEN = 4

# A card number in text: 13-19 digits, optionally grouped by single spaces or dashes.
_PAN_RUN = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")
_NAMES = "|".join(sorted((re.escape(name) for name in SENSITIVE_NAMES), key=len, reverse=True))
_FIELD_PATTERNS = (
    # <card_token>...</card_token> (any case, attributes allowed)
    re.compile(rf"(<(?P<n>{_NAMES})\b[^>]*>)(.*?)(</(?P=n)\s*>)", re.IGNORECASE | re.DOTALL),
    # "card_token": "..."
    re.compile(rf'("(?:{_NAMES})"\s*:\s*")((?:[^"\\]|\\.)*)(")', re.IGNORECASE),
    # a form or query pair: the name, an equals sign, the value
    re.compile(rf"(\b(?:{_NAMES})=)([^&\s\"'<]*)()", re.IGNORECASE),
    # multipart part: name="card_token", its headers, a blank line, then the value
    re.compile(
        rf'(name="(?:{_NAMES})"[^\r\n]*\r?\n(?:[^\r\n]+\r?\n)*\r?\n)([^\r\n]*)()',
        re.IGNORECASE,
    ),
    # an echoed header line: X-JWS-Signature: ...
    re.compile(rf"((?:^|[\r\n])(?:{_NAMES})[ \t]*:[ \t]*)([^\r\n]*)()", re.IGNORECASE),
)
# A JWS in compact or detached form (`header..signature`), wherever it appears.
_JWS = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{16,}")


def printable(value: object) -> str:
    r"""
    Render *value* for a log line: control characters escaped, so it cannot forge a new line.

    Args:
        value: Any value; its `str()` is escaped.

    Returns:
        The text with `\\`, CR, LF, TAB and every other control or unpaired-surrogate character
        written as an escape (`\n`, `\x1b`, `\ud800`); printable text is unchanged.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and "\\" not in text:
        return text
    out: list[str] = []
    for char in text:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char.isprintable():
            out.append(char)
        else:
            out.append(ascii(char)[1:-1])
    return "".join(out)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:  # noqa: PLR2004 - the Luhn digit fold
                value -= 9
        total += value
    return total % 10 == 0


def _mask_digits(text: str) -> str:
    """Replace every digit but the first six and the last four with `*`, keeping separators."""
    count = sum(map(str.isdigit, text))
    hidden_until = count - _PAN_VISIBLE_TAIL
    seen = 0
    out: list[str] = []
    for char in text:
        if char.isdigit():
            out.append(char if seen < _PAN_VISIBLE_HEAD or seen >= hidden_until else "*")
            seen += 1
        else:
            out.append(char)
    return "".join(out)


def mask_pan(pan: str) -> str:
    """
    Mask a value that is a card number: only the first six and last four digits stay.

    Args:
        pan: The card number as the gateway sent it (already masked, or not).

    Returns:
        The value with every other digit replaced by `*`. A value that already shows no more
        than ten digits (the gateway's own masking, `440043******0000`) is returned unchanged.
    """
    digits = _digit_count(pan)
    if digits <= _PAN_VISIBLE_HEAD + _PAN_VISIBLE_TAIL:
        return pan
    return _mask_digits(pan)


def _digit_count(text: str) -> int:
    """Count the characters `str.isdigit` accepts; ASCII text at C speed."""
    if text.isascii():
        return len(text) - len(text.translate(_ASCII_DIGITS_DELETED))
    return sum(map(str.isdigit, text))


def _mask_run(match: re.Match[str]) -> str:
    run = match.group(0)
    digits = "".join(char for char in run if char.isdigit())
    if len(digits) < _PAN_MIN_DIGITS or not _luhn_ok(digits):
        return run
    return _mask_digits(run)


def mask_pans(text: str) -> str:
    """
    Mask every card number inside free text.

    Args:
        text: Any text (an error description, an echoed body).

    Returns:
        The text with each Luhn-valid run of 13-19 digits (single spaces or dashes allowed
        between digits) masked as `mask_pan` does; other numbers are unchanged.
    """
    if len(text) < _PAN_MIN_DIGITS or _digit_count(text) < _PAN_MIN_DIGITS:
        return text
    return _PAN_RUN.sub(_mask_run, text)


def mask_token(token: str) -> str:
    """
    Mask a card token for display: only its last four characters stay, and only when it is long.

    Args:
        token: The card token.

    Returns:
        `…` and the last four characters (control characters escaped) for a token longer than
        eight characters, else `…` alone: a short token would show too much of itself.
    """
    text = token if isinstance(token, str) else str(token)
    if len(text) > 2 * _TOKEN_VISIBLE:
        return "…" + printable(text[-_TOKEN_VISIBLE:])
    return "…"


def _secret_variants(secrets: Iterable[str]) -> list[str]:
    """The exact values to scrub: each secret and, for a JWS, its signature segment."""
    out: set[str] = set()
    for secret in secrets:
        if len(secret) >= _SECRET_MIN_LEN:
            out.add(secret)
            tail = secret.rpartition(".")[2]
            if tail != secret and len(tail) >= 16:  # noqa: PLR2004 - a signature, not a word
                out.add(tail)
    return sorted(out, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """
    Remove secrets from text a gateway or proxy sent back.

    Args:
        text: The text (a reply body, a header value, an error description).
        secrets: Exact values to remove wherever they appear (the request's signature and card
            token); values shorter than four characters are ignored.

    Returns:
        The text with each exact secret, each value of a sensitive field (`card_token`,
        `signature`, `secret_key`, ... in XML, JSON, form, multipart or header syntax) and each
        JWS replaced by `[redacted]`, and each full card number masked.
    """
    for secret in _secret_variants(secrets):
        text = text.replace(secret, REDACTED)
    for pattern in _FIELD_PATTERNS:
        text = pattern.sub(_replace_field, text)
    text = _JWS.sub(REDACTED, text)
    return mask_pans(text)


def _replace_field(match: re.Match[str]) -> str:
    groups = [group for index, group in enumerate(match.groups(), 1) if not _is_name(match, index)]
    head, _value, tail = groups[0], groups[1], groups[2]
    return f"{head}{REDACTED}{tail}"


def _is_name(match: re.Match[str], index: int) -> bool:
    return match.re.groupindex.get("n") == index


def redact_bytes(body: bytes, secrets: Iterable[str] = ()) -> bytes:
    """
    Apply `redact_text` to a body, byte-exact where nothing is redacted.

    Args:
        body: The bytes (read as UTF-8; bytes that are not UTF-8 pass through unchanged).
        secrets: Exact values to remove, as for `redact_text`.

    Returns:
        The redacted bytes.
    """
    text = body.decode("utf-8", "surrogateescape")
    redacted = redact_text(text, secrets)
    if redacted == text:
        return body
    return redacted.encode("utf-8", "surrogateescape")


def redact_headers(headers: Mapping[str, str], secrets: Iterable[str] = ()) -> dict[str, str]:
    """
    Redact reply headers before they are kept.

    Args:
        headers: The headers.
        secrets: Exact values to remove, as for `redact_text`.

    Returns:
        The headers with lower-cased names; a sensitive header's value (`SENSITIVE_NAMES`, or any
        name holding `signature`, `token` or `secret`) is `[redacted]`, every other value passes
        through `redact_text`.
    """
    scrub = _secret_variants(secrets)
    out: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in SENSITIVE_NAMES or any(
            word in lowered for word in ("signature", "token", "secret")
        ):
            out[lowered] = REDACTED
        else:
            out[lowered] = redact_text(str(value), scrub)
    return out
