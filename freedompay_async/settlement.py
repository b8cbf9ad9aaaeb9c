"""
What a status read proves about a pay (or refund, or capture) whose outcome was in doubt.

One rule, used by the client's reconcile, every duplicate guard's reclaim and the command
line's `--resume` alike, so that "may I pay this invoice again?" has one answer everywhere.

Theory: once a pay may have been written, only the gateway knows whether it landed. A status
read that returns a terminal state (`ok`, `failed`, `incomplete`) settles the question for good;
`process` means the charge is under way. A status of `new` is weaker: the gateway may not have
applied a pay that it already accepted (status lag), so `new` proves "never landed" only when it
was read long enough after the last moment the pay could have been written — and, by default,
never (the caller reports the outcome as unknown instead of paying again).

```
status read        last write known?    verdict
---------------    -----------------    ----------------------------------------------
ok/failed/incompl  any                  SETTLED     (never pay again)
process/unknown    any                  PENDING     (never pay; ask again later)
new                no (never written)   NOT_LANDED  (a fresh invoice: pay it)
new                yes, read >= window  NOT_LANDED  (the window proves it: pay once)
new                yes, read <  window  IN_DOUBT    (do not pay; ask again or report)
```
"""

from __future__ import annotations

import enum
import math

import attrs

from freedompay_async._exceptions import ConfigurationError
from freedompay_async._models import InvoiceStatus
from freedompay_async.facts import is_number

__all__ = ["SettlePolicy", "Verdict", "settle"]


class Verdict(enum.StrEnum):
    """What one status read proves about an operation that may have been written."""

    SETTLED = "settled"
    """The status is terminal: the operation must never be sent again."""
    PENDING = "pending"
    """The gateway is still working on it (`process`, or a status the SDK does not know)."""
    NOT_LANDED = "not_landed"
    """Proven never applied: sending it (once more) cannot charge twice."""
    IN_DOUBT = "in_doubt"
    """Not proven either way: do not send; ask again later or report the outcome as unknown."""


def _window(
    instance: SettlePolicy, attribute: attrs.Attribute[float | None], value: object
) -> None:
    del instance
    if value is None:
        return
    if not is_number(value) or not math.isfinite(value):
        raise ConfigurationError(f"{attribute.name} must be None or a finite number of seconds")
    if value < 0:
        raise ConfigurationError(f"{attribute.name} must be >= 0 seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class SettlePolicy:
    """
    When a status of `new` proves that an earlier write never landed.

    Args:
        new_proves_not_landed_after: Seconds that must pass between the last moment the
            operation could have been written and the status read, for a status of `new` to
            prove that it never landed. `None` (default): `new` after a possible write never
            proves anything, and the operation stays in doubt.
    """

    new_proves_not_landed_after: float | None = attrs.field(default=None, validator=_window)


def settle(
    status: InvoiceStatus,
    *,
    read_at: float,
    last_write_at: float | None,
    policy: SettlePolicy | None = None,
) -> Verdict:
    """
    Decide what one status read proves.

    Args:
        status: The invoice status the read returned.
        read_at: When the read was answered (any clock, the same as `last_write_at`'s).
        last_write_at: The last moment the operation could have been written, or None when it
            was never possibly written (a fresh invoice).
        policy: The settle policy; `SettlePolicy()` when None.

    Returns:
        The verdict (see the table in the module docstring).
    """
    if status.is_terminal:
        return Verdict.SETTLED
    if status is not InvoiceStatus.NEW:
        return Verdict.PENDING
    if last_write_at is None:
        return Verdict.NOT_LANDED
    window = (policy or SettlePolicy()).new_proves_not_landed_after
    if window is not None and read_at - last_write_at >= window:
        return Verdict.NOT_LANDED
    return Verdict.IN_DOUBT
