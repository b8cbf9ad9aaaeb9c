"""Argument checks shared by the emulator's fates and faults."""

from __future__ import annotations

from typing import Any

__all__ = ["check_int", "check_keys"]


def check_int(name: str, value: object, *, minimum: int) -> int:
    """
    Return *value* if it is an int (not a bool) of at least *minimum*.

    Args:
        name: The argument's name, for the message.
        value: The value.
        minimum: The smallest value allowed.

    Returns:
        The value.

    Raises:
        ValueError: It is not such an integer.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_keys(kind: str, data: dict[str, Any], allowed: frozenset[str]) -> None:
    """
    Refuse a dictionary form that holds keys its kind does not take.

    Args:
        kind: The fate or fault kind, for the message.
        data: The dictionary form.
        allowed: The keys besides `kind` that the kind takes.

    Raises:
        ValueError: An unknown key.
    """
    unknown = set(data) - allowed - {"kind"}
    if unknown:
        raise ValueError(f"unknown keys for {kind!r}: {', '.join(sorted(unknown))}")
