"""
How the SDK shows values it did not choose: log-safe text, masked PANs and card tokens.

Every log line, exception message and `repr` that interpolates a caller's or the gateway's value
goes through this module, so one rule decides what a reader (or an attacker reading logs) sees.
"""

from __future__ import annotations

__all__ = ["mask_card_pan", "printable"]

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


_PAN_SHOWN_FIRST = 6
_PAN_SHOWN_LAST = 4
_PAN_MIN_DIGITS = 12


def mask_card_pan(pan: str | None) -> str | None:
    """
    Mask a card number for output: at most the first six and the last four digits stay.

    The gateway sends PANs already masked (`440564******6150`); this keeps such a value as it is
    and masks one that arrives in full, whatever separators it holds.

    Args:
        pan: The card number as received, or None.

    Returns:
        None for None; a value with fewer than 12 digits unchanged; otherwise every digit but
        the first six and the last four replaced by `*`.
    """
    if pan is None:
        return None
    digits = [position for position, char in enumerate(pan) if char.isdigit()]
    if len(digits) < _PAN_MIN_DIGITS:
        return pan
    hidden = set(digits[_PAN_SHOWN_FIRST : len(digits) - _PAN_SHOWN_LAST])
    return "".join("*" if position in hidden else char for position, char in enumerate(pan))
