"""
How the SDK shows values it did not choose: log-safe text, masked PANs and card tokens.

Every log line, exception message and `repr` that interpolates a caller's or the gateway's value
goes through this module, so one rule decides what a reader (or an attacker reading logs) sees.
"""

from __future__ import annotations

__all__ = ["mask_token", "printable"]

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


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


_TOKEN_TAIL = 4


def mask_token(token: str) -> str:
    """
    Mask a card token for display: only its last four characters stay, and only when it is long.

    Args:
        token: The card token.

    Returns:
        `…` and the last four characters for a token longer than eight characters, else `…`.
    """
    text = token if isinstance(token, str) else str(token)
    if len(text) > 2 * _TOKEN_TAIL:
        return "…" + printable(text[-_TOKEN_TAIL:])
    return "…"
