"""
The facts the client, the command line and the integrations share, stated once.

Pure and dependency-free (it imports nothing from the package), so every module — the core
included — can use it without an import cycle:

- the default API host, `DEFAULT_BASE_URL`;
- the outcome-state vocabulary: `OutcomeState` (the type of `PayOutcome.state`),
  `OUTCOME_STATES` (every state, in the order summaries show them), `TERMINAL_STATES` (never pay
  again), `UNSETTLED_STATES` (the fate is open: settle by status first);
- what a terminal invoice status means as an outcome, `STATE_BY_INVOICE_STATUS`;
- the small checks every validator repeats: `is_integer` and `is_number` (a `bool` is neither).
"""

from __future__ import annotations

from typing import Final, Literal, TypeGuard

__all__ = [
    "DEFAULT_BASE_URL",
    "OUTCOME_STATES",
    "STATE_BY_INVOICE_STATUS",
    "TERMINAL_STATES",
    "UNSETTLED_STATES",
    "OutcomeState",
    "is_integer",
    "is_number",
]

#: The production API host; `.kg` and `.uz` hosts, or an emulator, are passed as `base_url`.
DEFAULT_BASE_URL: Final = "https://api.freedompay.kz"

#: What became of one pay: `PayOutcome.state`, a record's `state`, a guard's recorded state.
OutcomeState = Literal["paid", "failed", "expired", "pending", "ambiguous", "error"]

#: Every `OutcomeState`, in the order summaries show them.
OUTCOME_STATES: Final[tuple[OutcomeState, ...]] = (
    "paid",
    "failed",
    "expired",
    "pending",
    "ambiguous",
    "error",
)
#: The states after which an invoice must never be paid again.
TERMINAL_STATES: Final[frozenset[OutcomeState]] = frozenset({"paid", "failed", "expired"})
#: The states that leave a pay's fate open: it may have charged; a status read must settle it.
UNSETTLED_STATES: Final[tuple[OutcomeState, ...]] = ("pending", "ambiguous")

#: A terminal invoice status (its wire value) as an outcome state; any other status is `pending`.
STATE_BY_INVOICE_STATUS: Final[dict[str, OutcomeState]] = {
    "ok": "paid",
    "failed": "failed",
    "incomplete": "expired",
}


def is_integer(value: object) -> TypeGuard[int]:
    """
    Tell whether *value* is an integer, refusing `True` and `False`.

    Args:
        value: Any value.

    Returns:
        True for an `int` that is not a `bool`.
    """
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """
    Tell whether *value* is an `int` or a `float`, refusing `True` and `False`.

    Args:
        value: Any value.

    Returns:
        True for an `int` or `float` that is not a `bool` (NaN and infinities included).
    """
    return isinstance(value, int | float) and not isinstance(value, bool)
