"""
How the SDK shows values it did not choose: log-safe text, masked PANs and card tokens.

Every log line, exception message and `repr` that interpolates a caller's or the gateway's value
goes through this module, so one rule decides what a reader (or an attacker reading logs) sees.
"""

from __future__ import annotations

__all__ = ["printable"]

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
