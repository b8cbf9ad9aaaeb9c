"""
The stages of `pay-batch` before the payer: read, skip what is settled, check, hand over.

Rows flow lazily: the CSV is read only as fast as the payer takes work. Each row that may be
paid gets a status read first (at most *limit* at once, concurrently with the pays), and the
one settle rule (`freedompay_async.settlement.settle`) decides: a `new` invoice never written
to is paid; anything settled, pending or in doubt is recorded and never paid.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import attrs

from freedompay_async import FreedomPayError, InvoicePayment, PayOutcome, PayRequest
from freedompay_async.cli._common import failure_kind, say, systemic_advice
from freedompay_async.csvinput import BadRow, PayRow
from freedompay_async.masking import printable
from freedompay_async.records import intent_record, outcome_record
from freedompay_async.settlement import SettlePolicy, Verdict, settle

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncGenerator, Iterator

    from freedompay_async import FreedomPayClient
    from freedompay_async.cli._journal import Journal, Prior
    from freedompay_async.cli._render import Progress
    from freedompay_async.cli._signals import Stop


#: Distinct failure messages kept for the summary; more are counted as "other messages".
_MAX_FAILURE_KINDS = 200


@attrs.frozen
class RowKey:
    """What a `PayRequest.key` holds for a CSV row: its line and its own key."""

    line: int
    key: str | None


class RequestCounter:
    """A `RateLimiter` that limits nothing and counts every request the client starts."""

    def __init__(self) -> None:
        self.count = 0

    async def acquire(self) -> None:
        """Count one request."""
        self.count += 1


class Tally:
    """Every row of the file, accounted for once; failures by kind; the systemic streak."""

    def __init__(self, rows: int, progress: Progress, args: argparse.Namespace) -> None:
        self.rows = rows
        self.bad = 0
        self.earlier: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.paid_now: Counter[str] = Counter()
        self.handed = 0
        self.failures: Counter[tuple[str, str, str]] = Counter()
        self.streak: tuple[str, int] = ("", 0)
        self.progress = progress
        self.args = args

    @property
    def in_flight(self) -> int:
        """Pays handed to the gateway whose outcome never came back."""
        return self.handed - sum(self.paid_now.values())

    @property
    def not_started(self) -> int:
        """Rows never checked nor paid (the run stopped first)."""
        accounted = self.bad + sum(self.earlier.values()) + sum(self.by_status.values())
        return self.rows - accounted - self.handed

    def record(self, record: dict[str, Any], error: FreedomPayError | None, stop: Stop) -> None:
        """Count a written outcome; stop the run after a streak of one systemic failure."""
        state = record["state"]
        (self.by_status if record["source"] == "status" else self.paid_now)[state] += 1
        self.progress.advance(state)
        if record["error_code"] is not None or record["error"] is not None:
            kind = record["error"] or "declined"
            code = "" if record["error_code"] is None else str(record["error_code"])
            text = record["error_description"] or record["message"] or ""
            key = (kind, code, printable(text)[:160])
            if key not in self.failures and len(self.failures) >= _MAX_FAILURE_KINDS:
                key = (kind, code, "(other messages)")
            self.failures[key] += 1
        advice = systemic_advice(error, self.args) if error is not None else None
        if advice is None or error is None:
            self.streak = ("", 0)
            return
        kind = failure_kind(error)
        count = self.streak[1] + 1 if self.streak[0] == advice else 1  # one cause, one streak
        self.streak = (advice, count)
        limit = self.args.stop_after
        if limit and count >= limit:
            stop.request(
                "systemic",
                f"stopped after {count} identical failures ({kind}: "
                f"{printable(record['error_description'] or record['message'])}): {advice}",
            )


def _status_record(
    row: PayRow, request: PayRequest, payment: InvoicePayment, verdict: Verdict, elapsed: float
) -> dict[str, Any]:
    record = outcome_record(
        PayOutcome(request=request, payment=payment, attempts=1, elapsed=elapsed),
        line=row.line,
        key=row.key,
        source="status",
    )
    if verdict is Verdict.IN_DOUBT:
        record["state"] = "ambiguous"
        record["message"] = (
            "the status still reads new after a pay that may have been sent; not paid again. "
            "Resume later with --settle-window SECONDS, or check with the gateway"
        )
    return record


class Feeder:
    """The async iterable of requests the payer takes: checked, intent written, in file order."""

    def __init__(
        self,
        rows: Iterator[PayRow | BadRow],
        *,
        client: FreedomPayClient,
        journal: Journal,
        tally: Tally,
        stop: Stop,
        priors: dict[str, Prior],
        args: argparse.Namespace,
    ) -> None:
        self._rows = rows
        self._client = client
        self._journal = journal
        self._tally = tally
        self._stop = stop
        self._priors = priors
        self._args = args
        self._policy = SettlePolicy(new_proves_not_landed_after=args.settle_window)
        self._exhausted = False

    def _hand_over(self, row: PayRow) -> PayRequest | None:
        """Write the intent, then return the request; None (and stop) if it cannot be written."""
        request = row.request(key=RowKey(row.line, row.key))
        if not self._journal.write(intent_record(request, line=row.line, key=row.key)):
            self._stop.request("output", f"cannot write {self._journal.path}")
            return None
        self._tally.handed += 1
        return request

    def _take(self) -> tuple[PayRow, bool] | None:
        """The next row that may be paid and whether it needs a status read; None at the end."""
        for row in self._rows:
            if isinstance(row, BadRow):
                say(f"{self._args.input}:{row.line}: skipped a malformed row: {row.reason}")
                self._tally.bad += 1
                self._tally.progress.advance(None)
                continue
            prior = self._priors.get(row.customer)
            if prior is not None and prior.terminal is not None:
                self._tally.earlier[prior.terminal] += 1
                self._tally.progress.advance(prior.terminal)
                continue
            return row, prior is not None or self._args.status_check
        return None

    async def _check(self, row: PayRow) -> tuple[PayRow, bool]:
        """Read the row's status and settle it; True when it may be paid."""
        request = row.request(key=RowKey(row.line, row.key))
        prior = self._priors.get(row.customer)
        start = time.monotonic()
        try:
            payment = await self._client.invoice_status(customer=row.customer)
        except FreedomPayError as exc:
            outcome = PayOutcome(request=request, error=exc, attempts=exc.attempts)
            record = outcome_record(outcome, line=row.line, key=row.key, source="status")
            self._settled(record, exc)
            return row, False
        verdict = settle(
            payment.invoice_status,
            read_at=time.time(),
            last_write_at=prior.last_write_at if prior is not None else None,
            policy=self._policy,
        )
        if verdict is Verdict.NOT_LANDED:
            return row, True
        elapsed = time.monotonic() - start
        self._settled(_status_record(row, request, payment, verdict, elapsed), None)
        return row, False

    def _settled(self, record: dict[str, Any], error: FreedomPayError | None) -> None:
        if not self._journal.write(record):
            self._stop.request("output", f"cannot write {self._journal.path}")
        self._tally.record(record, error, self._stop)

    def _fill(self, pending: set[asyncio.Task[tuple[PayRow, bool]]]) -> list[PayRequest]:
        """Start status reads up to the limit; return unchecked rows ready to pay (bounded)."""
        ready: list[PayRequest] = []
        limit = self._args.concurrency
        while (
            not self._exhausted
            and len(pending) < limit
            and len(ready) < limit
            and not self._stop.requested
        ):
            taken = self._take()
            if taken is None:
                self._exhausted = True
            elif taken[1]:
                pending.add(asyncio.create_task(self._check(taken[0])))
            elif (request := self._hand_over(taken[0])) is not None:
                ready.append(request)
        return ready

    async def __aiter__(self) -> AsyncGenerator[PayRequest, None]:
        pending: set[asyncio.Task[tuple[PayRow, bool]]] = set()
        try:
            while True:
                for request in self._fill(pending):
                    yield request
                if not pending:
                    if self._exhausted or self._stop.requested:
                        return
                    continue
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    row, payable = task.result()
                    if payable and not self._stop.requested:
                        handed = self._hand_over(row)
                        if handed is not None:
                            yield handed
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
