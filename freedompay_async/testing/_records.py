"""What the emulator observed: each request (masked), the counters, and when it is idle."""

from __future__ import annotations

import bisect
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import attrs

from freedompay_async.testing._wire import decode_jws_header

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["OPERATIONS", "EmulatorStats", "RequestRecord", "Traffic"]

OPERATIONS: Final = ("init", "pay", "status", "info")
_MAX_RECORDS: Final = 100_000


def _mask_token(token: str) -> str:
    """Keep only a card token's last four characters."""
    return "****" + token[-4:] if len(token) > 8 else "****"  # noqa: PLR2004


@attrs.frozen(kw_only=True)
class RequestRecord:
    """
    One API request as the emulator received it (card tokens masked, no signature).

    Attributes:
        operation: `init`, `pay`, `status` or `info`.
        fields: The fields received, in order; `card_token` masked to its last four characters.
        content_type: The request's media type, e.g. `multipart/form-data`.
        at: When it arrived, on `time.monotonic()`.
        jws_header: The decoded protected header of `X-JWS-Signature` (empty when absent).
    """

    operation: str
    fields: Mapping[str, str]
    content_type: str
    at: float
    jws_header: Mapping[str, object]


@attrs.frozen(kw_only=True)
class EmulatorStats:
    """
    A snapshot of what the emulator has seen (admin requests are not counted).

    Attributes:
        requests: API requests received.
        by_operation: API requests per operation.
        in_flight: Requests being handled at the time of the snapshot.
        max_in_flight: The most requests handled at the same time.
        committed_pays: Pay attempts committed, over all invoices.
        double_charges: Invoices with more than one committed pay.
        rejected_signatures: Requests refused for a missing or bad signature (error 100).
        faults_applied: Injected faults that struck.
        invoices: Invoices held.
        first_request_at: `time.monotonic()` of the first request, or None.
        last_request_at: `time.monotonic()` of the latest request, or None.
    """

    requests: int
    by_operation: Mapping[str, int]
    in_flight: int
    max_in_flight: int
    committed_pays: int
    double_charges: int
    rejected_signatures: int
    faults_applied: int
    invoices: int
    first_request_at: float | None
    last_request_at: float | None

    @property
    def mean_rate(self) -> float:
        """Requests per second between the first and the latest request (0.0 if undefined)."""
        if self.first_request_at is None or self.last_request_at is None:
            return 0.0
        span = self.last_request_at - self.first_request_at
        return self.requests / span if span > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """
        Return the snapshot as a JSON-ready dictionary.

        Returns:
            Every attribute by name.
        """
        data = attrs.asdict(self)
        data["by_operation"] = dict(self.by_operation)
        return data


class Traffic:
    """The request log and counters behind `EmulatorStats`; pure bookkeeping, no I/O."""

    def __init__(self) -> None:
        self.records: deque[RequestRecord] = deque(maxlen=_MAX_RECORDS)
        self.requests = 0
        self.by_operation = dict.fromkeys(OPERATIONS, 0)
        self.in_flight = 0
        self.max_in_flight = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def enter(self) -> None:
        """Count a request that starts being handled."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        """Count a request whose handling ended, however it ended."""
        self.in_flight -= 1

    def arrived(self, operation: str, now: float) -> None:
        """Count an API request of *operation* that arrived at *now* (monotonic seconds)."""
        self.requests += 1
        self.by_operation[operation] += 1
        if self.first_at is None:
            self.first_at = now
        self.last_at = now

    def record(
        self,
        operation: str,
        fields: Sequence[tuple[str, str]],
        *,
        content_type: str,
        at: float,
        signature: str | None,
    ) -> None:
        """Keep one request, its card token masked and its signature reduced to its header."""
        shown = {
            name: _mask_token(value) if name == "card_token" else value for name, value in fields
        }
        self.records.append(
            RequestRecord(
                operation=operation,
                fields=shown,
                content_type=content_type,
                at=at,
                jws_header=decode_jws_header(signature),
            )
        )

    def max_rate(self, window: float) -> float:
        """The most arrivals within *window* seconds of the kept requests, per second."""
        times = [record.at for record in self.records]
        best = 0
        for start, at in enumerate(times):
            end = bisect.bisect_left(times, at + window, lo=start)
            best = max(best, end - start)
        return best / window
