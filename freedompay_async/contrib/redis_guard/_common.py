"""The guard's vocabulary and helpers: claim kinds, the settle hook, key and value checks."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeAlias

import attrs

from freedompay_async import ConfigurationError, InvoiceStatus
from freedompay_async.facts import STATE_BY_INVOICE_STATUS, is_integer, is_number

if TYPE_CHECKING:
    import asyncio

    from freedompay_async import FreedomPayClient, InvoicePayment

__all__ = [
    "ClaimKind",
    "GuardRecord",
    "Held",
    "SettleHook",
    "default_owner",
    "key_part",
    "positive",
    "settle_by_status",
    "state_of_status",
    "text_of",
]

#: `fresh` (granted, never claimed before), `reclaimed` (granted: `settle()` proved an earlier
#: pay never landed), `settled` (refused: a terminal state is recorded), `busy` (refused: another
#: worker holds the claim), `landed` (refused: the status read found an earlier pay's result, now
#: recorded), `unsettled` (refused: an earlier pay has no known end and its status did not settle
#: it). `PayClaim.kind` holds one of these.
ClaimKind = Literal["fresh", "reclaimed", "settled", "busy", "landed", "unsettled"]

#: Given a customer whose earlier pay has no known end, read and return the invoice's status
#: (`client.invoice_status(customer=...)`); `settle()` decides what it proves. Raising refuses the
#: pay and keeps the doubt recorded.
SettleHook: TypeAlias = Callable[[str], Awaitable["InvoicePayment"]]


def text_of(value: object) -> str:
    """Return a Redis reply item as text (bytes decoded as UTF-8)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def positive(name: str, value: object) -> float:
    """Return *value* as a float, refusing anything but a finite number > 0."""
    if not is_number(value) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    return float(value)


def key_part(name: str, value: object) -> str:
    """Return *value* as one part of a Redis key, refusing `:`, `{` and `}`."""
    if is_integer(value):
        value = str(value)
    if not isinstance(value, str) or not value or any(c in value for c in ":{}"):
        raise ConfigurationError(f"{name} must be a non-empty string without ':', '{{', '}}'")
    return value


def default_owner() -> str:
    """
    Name this process for claim tokens: host name and process id.

    Returns:
        `host:pid`.
    """
    return f"{socket.gethostname()}:{os.getpid()}"


def state_of_status(payment: InvoicePayment) -> str | None:
    """
    Map an invoice's status to what a settle hook returns.

    Args:
        payment: The invoice's status, as `invoice_status` read it.

    Returns:
        None for `new` (unpaid: it may be paid); `paid`, `failed`, `expired` for a terminal
        status; `pending` for anything still moving (`process`, an unknown value).
    """
    if payment.invoice_status is InvoiceStatus.NEW:
        return None
    return STATE_BY_INVOICE_STATUS.get(payment.invoice_status.value, "pending")


def settle_by_status(
    client: FreedomPayClient,
    *,
    on_payment: Callable[[str, InvoicePayment], object] | None = None,
) -> SettleHook:
    """
    Build the usual settle hook: ask the gateway where the invoice stands.

    Args:
        client: The client to read `invoice_status(customer=...)` with.
        on_payment: Called with the customer and the status read, before the hook returns.

    Returns:
        A hook for `RedisPayGuard(settle=...)`.
    """

    async def read(customer: str) -> InvoicePayment:
        payment = await client.invoice_status(customer=customer)
        if on_payment is not None:
            on_payment(customer, payment)
        return payment

    return read


@attrs.frozen(kw_only=True)
class GuardRecord:
    """
    What Redis holds for one customer (`RedisPayGuard.peek`).

    Attributes:
        state: The recorded state (`claimed`, `paid`, `pending`, ...), or None.
        holder: The token of the current claim, or None when nobody holds it.
        claim_ttl: Seconds left on the current claim, or None.
    """

    state: str | None
    holder: str | None
    claim_ttl: float | None


@attrs.define
class Held:
    """A claim this process holds: its token and the task renewing it."""

    token: str
    heartbeat: asyncio.Task[None] | None
