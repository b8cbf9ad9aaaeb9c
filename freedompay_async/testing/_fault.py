"""
A `Fault`: one disturbance of a request on its way in or out.

An HTTP error status, a gateway error code, a dropped connection, a delay, a reply that is not
usable XML, or a status read that does not yet see a charge. A frozen value with a dictionary
form, so a test in another process can send it to the emulator's admin API as JSON.
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal

import attrs

from freedompay_async.testing._checks import check_int as _check_int
from freedompay_async.testing._checks import check_keys as _check_keys

__all__ = ["Fault", "FaultKind"]

FaultKind = Literal[
    "http_status",
    "error_code",
    "drop",
    "delay",
    "malformed_xml",
    "doctype",
    "oversized",
    "stale_status",
]


_FAULT_KINDS: Final = frozenset(
    {
        "http_status",
        "error_code",
        "drop",
        "delay",
        "malformed_xml",
        "doctype",
        "oversized",
        "stale_status",
    }
)
_MIN_HTTP_ERROR: Final = 400
_MAX_HTTP_ERROR: Final = 599


@attrs.frozen(kw_only=True)
class Fault:
    """
    One disturbance of a request; build one with the class methods and hand it to `inject`.

    A fault applied *before commit* replaces the request's processing: nothing is created,
    charged or read. Applied *after commit*, the request is processed first (an invoice is
    created, a pay commits, a status read counts down) and then its reply is replaced.

    Attributes:
        kind: The fault kind (see the class methods).
        after_commit: Whether the request is processed before the fault strikes.
        status: The HTTP status of an `http_status` fault.
        retry_after: The `Retry-After` header value of an `http_status` fault.
        code: The gateway error code of an `error_code` fault.
        seconds: The delay of a `delay` fault.
        size: The reply size of an `oversized` fault, in bytes.
        reads: How many status/info reads a `stale_status` fault covers.
    """

    kind: FaultKind
    after_commit: bool = False
    status: int | None = None
    retry_after: str | None = None
    code: int | None = None
    seconds: float = 0.0
    size: int = 0
    reads: int = 0

    def __attrs_post_init__(self) -> None:
        """Reject an unknown kind or a value out of range."""
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.kind == "http_status":
            _check_int("status", self.status, minimum=_MIN_HTTP_ERROR)
            if self.status is not None and self.status > _MAX_HTTP_ERROR:
                raise ValueError(f"status must be an HTTP error status, got {self.status}")
        if self.kind == "error_code":
            _check_int("code", self.code, minimum=0)
        if self.kind == "delay" and (
            isinstance(self.seconds, bool)
            or not isinstance(self.seconds, int | float)
            or not math.isfinite(self.seconds)
            or self.seconds < 0
        ):
            raise ValueError(f"seconds must be a finite number >= 0, got {self.seconds!r}")
        if self.kind == "oversized":
            _check_int("size", self.size, minimum=1)
        if self.kind == "stale_status":
            _check_int("reads", self.reads, minimum=1)

    @classmethod
    def http_status(
        cls, status: int, *, after_commit: bool = False, retry_after: str | None = None
    ) -> Fault:
        """
        Answer with an HTTP error status and a short text or HTML body (not XML).

        Args:
            status: The status, 400-599 (429, 500, 502, 503 and 504 are the interesting ones).
            after_commit: Process the request first (a pay commits), then answer the error.
            retry_after: A `Retry-After` value to send: seconds (`"2"`) or an HTTP-date.

        Returns:
            The fault.
        """
        return cls(
            kind="http_status", status=status, after_commit=after_commit, retry_after=retry_after
        )

    @classmethod
    def error_code(cls, code: int = 1000, *, after_commit: bool = False) -> Fault:
        """
        Answer HTTP 200 with `status=error` and this error code (1000: internal error).

        Args:
            code: The gateway error code.
            after_commit: Process the request first (a pay commits), then answer the error.

        Returns:
            The fault.
        """
        return cls(kind="error_code", code=code, after_commit=after_commit)

    @classmethod
    def drop(cls, *, after_commit: bool = True) -> Fault:
        """
        Close the TCP connection without any reply, so the client sees a disconnect.

        Args:
            after_commit: Process the request first (a pay commits), then drop.

        Returns:
            The fault.
        """
        return cls(kind="drop", after_commit=after_commit)

    @classmethod
    def delay(cls, seconds: float, *, after_commit: bool = True) -> Fault:
        """
        Hold the reply back for *seconds* (real time), to outlast a client's read timeout.

        The request is processed even if the client gives up meanwhile, as a real server would.

        Args:
            seconds: How long to wait.
            after_commit: Commit first, then wait before replying; False waits, then processes.

        Returns:
            The fault.
        """
        return cls(kind="delay", seconds=float(seconds), after_commit=after_commit)

    @classmethod
    def malformed_xml(cls, *, after_commit: bool = True) -> Fault:
        """
        Answer HTTP 200 with `application/xml` content that is not well-formed XML.

        Args:
            after_commit: Process the request first (a pay commits), then answer the garbage.

        Returns:
            The fault.
        """
        return cls(kind="malformed_xml", after_commit=after_commit)

    @classmethod
    def doctype(cls, *, after_commit: bool = True) -> Fault:
        """
        Answer with an otherwise valid reply that declares a `<!DOCTYPE` with an entity.

        A hardened client must refuse it rather than expand the entity.

        Args:
            after_commit: Process the request first (a pay commits), then answer it.

        Returns:
            The fault.
        """
        return cls(kind="doctype", after_commit=after_commit)

    @classmethod
    def oversized(cls, size: int = 2 * 1024 * 1024, *, after_commit: bool = True) -> Fault:
        """
        Answer with a well-formed XML reply padded to *size* bytes.

        Args:
            size: The body size in bytes.
            after_commit: Process the request first (a pay commits), then answer it.

        Returns:
            The fault.
        """
        return cls(kind="oversized", size=size, after_commit=after_commit)

    @classmethod
    def stale_status(cls, reads: int = 1) -> Fault:
        """
        Make status/info reads answer `invoice_status` `new`, as if a charge had not landed yet.

        The invoice itself is not touched: a pending countdown does not advance on a stale read.
        It applies to status and info requests only.

        Args:
            reads: How many reads answer stale.

        Returns:
            The fault.
        """
        return cls(kind="stale_status", reads=reads)

    def to_dict(self) -> dict[str, Any]:
        """
        Return the JSON-ready form that `from_dict` reads back.

        Returns:
            A dictionary with `kind` and the parameters that kind uses.
        """
        data: dict[str, Any] = {"kind": self.kind}
        if self.kind == "http_status":
            data.update(
                status=self.status, after_commit=self.after_commit, retry_after=self.retry_after
            )
        elif self.kind == "error_code":
            data.update(code=self.code, after_commit=self.after_commit)
        elif self.kind == "delay":
            data.update(seconds=self.seconds, after_commit=self.after_commit)
        elif self.kind == "oversized":
            data.update(size=self.size, after_commit=self.after_commit)
        elif self.kind == "stale_status":
            data["reads"] = self.reads
        else:
            data["after_commit"] = self.after_commit
        return data

    @classmethod
    def from_dict(cls, data: object) -> Fault:
        """
        Build a fault from its dictionary form, e.g. `{"kind": "drop", "after_commit": true}`.

        Omitted parameters take the class methods' defaults.

        Args:
            data: `kind` plus that kind's parameters (the names of the class methods' arguments).

        Returns:
            The fault.

        Raises:
            TypeError: *data* is not a dictionary.
            ValueError: The kind or a key is unknown, or a value is invalid.
        """
        if not isinstance(data, dict):
            raise TypeError("a fault must be a JSON object")
        kind = data.get("kind")
        params = {key: value for key, value in data.items() if key != "kind"}
        makers: dict[str, tuple[Any, frozenset[str]]] = {
            "http_status": (cls.http_status, frozenset({"status", "after_commit", "retry_after"})),
            "error_code": (cls.error_code, frozenset({"code", "after_commit"})),
            "drop": (cls.drop, frozenset({"after_commit"})),
            "delay": (cls.delay, frozenset({"seconds", "after_commit"})),
            "malformed_xml": (cls.malformed_xml, frozenset({"after_commit"})),
            "doctype": (cls.doctype, frozenset({"after_commit"})),
            "oversized": (cls.oversized, frozenset({"size", "after_commit"})),
            "stale_status": (cls.stale_status, frozenset({"reads"})),
        }
        if not isinstance(kind, str) or kind not in makers:
            raise ValueError(f"unknown fault kind {kind!r}")
        make, allowed = makers[kind]
        _check_keys(kind, data, allowed)
        if "after_commit" in params and not isinstance(params["after_commit"], bool):
            raise ValueError("after_commit must be true or false")
        try:
            fault: Fault = make(**params)
        except TypeError as exc:
            raise ValueError(f"invalid fault {data!r}") from exc
        return fault
