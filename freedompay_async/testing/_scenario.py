"""
What the emulator is told to do: the fate of a payment (and, re-exported, the faults).

A `Fate` decides how a pay request ends (paid, declined, pending then settled, expired, refused
by the gateway). A `Fault` disturbs one request on its way in or out: an HTTP error status, a
gateway error code, a dropped connection, a delay, a reply that is not usable XML, or a status
read that does not yet see a charge. Both are frozen values with a dictionary form, so a test in
another process can send them to the emulator's admin API as JSON.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import attrs

from freedompay_async.testing._checks import check_int as _check_int
from freedompay_async.testing._checks import check_keys as _check_keys
from freedompay_async.testing._fault import Fault, FaultKind

__all__ = ["Fate", "FateKind", "Fault", "FaultKind"]

FateKind = Literal[
    "paid", "declined", "pending_then_paid", "pending_then_failed", "expired", "gateway_error"
]

_FATE_KINDS: Final = frozenset(
    {"paid", "declined", "pending_then_paid", "pending_then_failed", "expired", "gateway_error"}
)


@attrs.frozen(kw_only=True)
class Fate:
    """
    How a pay request on an invoice ends; build one with the class methods.

    Attributes:
        kind: `paid`, `declined`, `pending_then_paid`, `pending_then_failed`, `expired` or
            `gateway_error`.
        polls: For the pending kinds, how many status/info reads answer `process` before the
            terminal status.
        error_code: The error code a declined payment or a gateway error carries.
        description: The error description a declined payment or a gateway error carries.
    """

    kind: FateKind
    polls: int = 0
    error_code: int | None = None
    description: str | None = None

    def __attrs_post_init__(self) -> None:
        """Reject an unknown kind or a negative poll count."""
        if self.kind not in _FATE_KINDS:
            raise ValueError(f"unknown fate kind {self.kind!r}")
        _check_int("polls", self.polls, minimum=0)
        if self.error_code is not None:
            _check_int("error_code", self.error_code, minimum=0)

    @classmethod
    def paid(cls) -> Fate:
        """
        Pay commits one charge and the invoice becomes `ok`.

        Returns:
            The fate.
        """
        return cls(kind="paid")

    @classmethod
    def declined(
        cls, error_code: int | None = None, *, description: str = "Payment declined"
    ) -> Fate:
        """
        Pay commits one charge attempt and the invoice becomes `failed`.

        The pay reply is `status=ok`, `invoice_status=failed`, with `error_description` and,
        when given, `error_code`.

        Args:
            error_code: The error code the reply carries; None leaves it out.
            description: The error description the reply carries.

        Returns:
            The fate.
        """
        return cls(kind="declined", error_code=error_code, description=description)

    @classmethod
    def pending_then_paid(cls, polls: int = 2) -> Fate:
        """
        Pay commits one charge and answers `process`; the invoice settles as `ok` later.

        Args:
            polls: How many status/info reads answer `process` before one answers `ok`.

        Returns:
            The fate.
        """
        return cls(kind="pending_then_paid", polls=polls)

    @classmethod
    def pending_then_failed(cls, polls: int = 2) -> Fate:
        """
        Pay commits one charge attempt and answers `process`; the invoice settles as `failed`.

        Args:
            polls: How many status/info reads answer `process` before one answers `failed`.

        Returns:
            The fate.
        """
        return cls(kind="pending_then_failed", polls=polls)

    @classmethod
    def expired(cls) -> Fate:
        """
        Pay answers `status=ok`, `invoice_status=incomplete`; nothing is charged.

        Returns:
            The fate.
        """
        return cls(kind="expired")

    @classmethod
    def gateway_error(cls, code: int = 600, description: str = "General error") -> Fate:
        """
        Pay answers `status=error` with this code; nothing is committed, the invoice stays `new`.

        Args:
            code: The error code.
            description: The error description.

        Returns:
            The fate.
        """
        return cls(kind="gateway_error", error_code=code, description=description)

    def to_dict(self) -> dict[str, Any]:
        """
        Return the JSON-ready form that `from_dict` reads back.

        Returns:
            A dictionary with `kind` and the parameters that kind uses.
        """
        data: dict[str, Any] = {"kind": self.kind}
        if self.kind in {"pending_then_paid", "pending_then_failed"}:
            data["polls"] = self.polls
        elif self.kind == "declined":
            data["error_code"] = self.error_code
            data["description"] = self.description
        elif self.kind == "gateway_error":
            data["code"] = self.error_code
            data["description"] = self.description
        return data

    @classmethod
    def from_dict(cls, data: object) -> Fate:
        """
        Build a fate from its dictionary form, e.g. `{"kind": "pending_then_paid", "polls": 3}`.

        Args:
            data: `kind` plus that kind's parameters (the names of the class methods' arguments).

        Returns:
            The fate.

        Raises:
            TypeError: *data* is not a dictionary.
            ValueError: The kind or a key is unknown, or a value is invalid.
        """
        if not isinstance(data, dict):
            raise TypeError("a fate must be a JSON object")
        kind = data.get("kind")
        try:
            if kind in {"paid", "expired"}:
                _check_keys(kind, data, frozenset())
                return cls.paid() if kind == "paid" else cls.expired()
            if kind == "declined":
                _check_keys(kind, data, frozenset({"error_code", "description"}))
                return cls.declined(
                    data.get("error_code"),
                    description=str(data.get("description") or "Payment declined"),
                )
            if kind in {"pending_then_paid", "pending_then_failed"}:
                _check_keys(kind, data, frozenset({"polls"}))
                make = (
                    cls.pending_then_paid
                    if kind == "pending_then_paid"
                    else (cls.pending_then_failed)
                )
                return make(data.get("polls", 2))
            if kind == "gateway_error":
                _check_keys(kind, data, frozenset({"code", "description"}))
                return cls.gateway_error(
                    data.get("code", 600), str(data.get("description") or "General error")
                )
        except TypeError as exc:
            raise ValueError(f"invalid fate {data!r}") from exc
        raise ValueError(f"unknown fate kind {kind!r}")
