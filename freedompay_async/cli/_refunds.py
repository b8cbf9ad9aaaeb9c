"""`refund` and `refund-batch`: refunds from the shell, each at most once, resumable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, cast

from freedompay_async import (
    AmbiguousWriteError,
    DuplicateWriteError,
    FreedomPayError,
    GatewayError,
    PaymentState,
    PaymentStatus,
    RefundEntry,
    RefundResult,
    WriteRefusedError,
)
from freedompay_async._classic_models import ClassicOperation
from freedompay_async._classic_settle import settle_write
from freedompay_async.cli._common import (
    EXIT_NOT_PAID,
    EXIT_OK,
    EXIT_UNKNOWN,
    UsageError,
    client_from_env,
    say,
)
from freedompay_async.cli._journal import STDOUT, Journal, open_journal
from freedompay_async.cli._refund_input import (
    RefundCsv,
    RefundPrior,
    RefundRow,
    parse_amount,
    read_refund_journal,
)
from freedompay_async.cli._signals import Stop
from freedompay_async.csvinput import BadRow, CsvInputError, PayCsv, open_pay_csv
from freedompay_async.records import INTENT_STATE
from freedompay_async.settlement import SettlePolicy, Verdict

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator

    from freedompay_async import FreedomPayClient

_DOUBT_STATES: Final = frozenset({"ambiguous", INTENT_STATE})


def _print(data: object) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _record(
    payment_id: int, amount: Decimal | None, *, line: int | None, key: str | None
) -> dict[str, Any]:
    return {
        "key": key,
        "line": line,
        "payment_id": payment_id,
        "amount": str(amount) if amount is not None else None,
        "state": None,
        "source": "refund",
        "refund_payment_id": None,
        "error": None,
        "message": None,
        "error_code": None,
        "attempts": 0,
        "refunds_before": None,
        "finished_at": round(time.time(), 3),
    }


def _entries(status: PaymentStatus) -> list[list[Any]]:
    return [
        [e.payment_id, str(e.amount) if e.amount is not None else None, e.state.value]
        for e in status.refunds
    ]


def _before(payment_id: int, entries: list[list[Any]]) -> PaymentStatus:
    """Rebuild the status an intent line recorded (its refunds), for `settle_write`."""
    return PaymentStatus(
        payment_id=payment_id,
        state=PaymentState.UNKNOWN,
        refunds=tuple(
            RefundEntry(
                payment_id=pid,
                state=PaymentState.parse(state),
                amount=Decimal(amount) if amount is not None else None,
            )
            for pid, amount, state in entries
        ),
    )


def _ended(record: dict[str, Any], outcome: RefundResult | FreedomPayError) -> dict[str, Any]:
    # The end of the call bounds its last possible write: --settle-window counts from here.
    record["finished_at"] = round(time.time(), 3)
    if isinstance(outcome, RefundResult):
        record.update(state="refunded", refund_payment_id=outcome.refund_payment_id)
        return record
    if isinstance(outcome, AmbiguousWriteError):
        state = "ambiguous"
    elif isinstance(outcome, WriteRefusedError | DuplicateWriteError | GatewayError):
        state = "refused"
    else:
        state = "error"  # never sent, or not decided: nothing moved
    record.update(
        state=state,
        error=type(outcome).__name__,
        message=str(outcome),
        attempts=outcome.attempts,
        error_code=outcome.error_code if isinstance(outcome, GatewayError) else None,
    )
    return record


async def refund_one(
    client: FreedomPayClient,
    payment_id: int,
    amount: Decimal | None,
    *,
    line: int | None,
    key: str | None,
    prior: RefundPrior | None,
    write_intent: Callable[[dict[str, Any]], bool] | None,
    window: float | None,
) -> dict[str, Any]:
    """
    Refund one payment at most once: read its status, judge any earlier attempt, then refund.

    A refund of this amount already in the status (a rerun) or proven by it (an earlier attempt
    that landed) is recorded from the status; an earlier attempt the status cannot settle keeps
    the row in doubt; otherwise an intent line (with the refunds seen) is written, then the
    refund is sent once by the client.
    """
    record = _record(payment_id, amount, line=line, key=key)
    try:
        status = await client.payment_status(payment_id=payment_id)
    except FreedomPayError as exc:
        return _ended(record, exc) | {"source": "status"}
    if prior is not None and prior.last_write_at is not None:
        finding = settle_write(
            ClassicOperation.REFUND,
            amount=amount,
            before=_before(payment_id, prior.refunds_before or []),
            after=status,
            read_at=time.time(),
            last_write_at=prior.last_write_at,
            policy=SettlePolicy(new_proves_not_landed_after=window),
        )
        if finding.verdict is not Verdict.NOT_LANDED:
            state = "ambiguous"
            if finding.verdict is Verdict.SETTLED:
                failed = finding.refund is not None and not finding.refund.state.is_success
                state = "refused" if failed else "refunded"
            record.update(state=state, source="status", message=finding.reason)
            return record
    elif amount is not None and any(
        e.amount == amount and e.state.is_success for e in status.refunds
    ):
        record.update(
            state="refunded",
            source="status",
            message="the payment already has a refund of this amount; not refunded again",
        )
        return record
    if write_intent is not None:
        intent = dict(record, state=INTENT_STATE, source="intent", refunds_before=_entries(status))
        if not write_intent(intent):
            record.update(state="error", message="cannot write the journal; not refunded")
            return record
    try:
        outcome: RefundResult | FreedomPayError = await client.refund_payment(
            payment_id=payment_id, amount=amount
        )
    except FreedomPayError as exc:
        outcome = exc
    return _ended(record, outcome)


async def refund(args: argparse.Namespace) -> int:
    """Run `refund`: refund one payment (status read first); print the outcome as JSON."""
    try:
        amount = parse_amount(args.amount, where="--amount")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    async with client_from_env(args) as client:
        record = await refund_one(
            client,
            args.payment_id,
            amount,
            line=None,
            key=None,
            prior=None,
            write_intent=None,
            window=None,
        )
    _print(record)
    if record["state"] != "refunded":
        say(f"refund: {record['state']}: {record['message']}")
    return _code([record["state"]])


def _code(states: list[str]) -> int:
    if any(state in _DOUBT_STATES for state in states):
        return EXIT_UNKNOWN
    return EXIT_OK if all(state == "refunded" for state in states) else EXIT_NOT_PAID


async def refund_batch(args: argparse.Namespace) -> int:
    """Run `refund-batch`: one refund per CSV row, journaled, resumable, never twice."""
    if args.resume and args.out == STDOUT:
        raise UsageError("--resume reads the earlier outcomes from --out: give a file, not -")
    try:
        table = await asyncio.to_thread(
            open_pay_csv,
            args.input,
            encoding=args.encoding,
            delimiter=args.delimiter,
            kind=RefundCsv,
        )
    except (CsvInputError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    priors = read_refund_journal(args.out) if args.resume else {}
    journal = open_journal(args.out, resume=args.resume)
    run = _Run(args, client_from_env(args, max_concurrency=args.concurrency), journal, priors)
    with contextlib.closing(table), contextlib.closing(journal):
        async with run.client:
            runner = asyncio.create_task(run.rows(table))
            run.stop.install(runner)
            try:
                await runner
            except asyncio.CancelledError:
                if not run.stop.hard:
                    raise
                run.states.append(INTENT_STATE)  # refunds cut off in flight: intents stand
            finally:
                run.stop.uninstall()
    return run.finish(table.rows)


class _Run:
    """One `refund-batch` run: its rows' outcomes, written as they end."""

    def __init__(
        self,
        args: argparse.Namespace,
        client: FreedomPayClient,
        journal: Journal,
        priors: dict[str, RefundPrior],
    ) -> None:
        self.args = args
        self.client = client
        self.journal = journal
        self.priors = priors
        self.states: list[str] = []
        self.done_earlier = 0
        self.stop = Stop(args.grace)
        self._gate = asyncio.Semaphore(args.concurrency)

    async def rows(self, table: PayCsv) -> None:
        """Refund every row not final in the journal, at most `--concurrency` at once."""
        async with asyncio.TaskGroup() as tasks:
            for row in cast("Iterator[RefundRow | BadRow]", iter(table)):
                if isinstance(row, BadRow):
                    say(f"{self.args.input}:{row.line}: skipped: {row.reason}")
                    self.states.append("malformed")
                    continue
                prior = self.priors.get(row.journal_key)
                if prior is not None and prior.terminal is not None:
                    self.done_earlier += 1
                    continue
                tasks.create_task(self.one(row))

    async def one(self, row: RefundRow) -> None:
        """Refund one row (after a stop: not at all) and write its outcome."""
        async with self._gate:
            if self.stop.requested:
                self.states.append("not started")
                return
            key = row.journal_key
            record = await refund_one(
                self.client,
                row.payment_id,
                row.amount,
                line=row.line,
                key=row.key,
                prior=self.priors.get(key),
                write_intent=lambda intent: self.journal.write(intent | {"journal_key": key}),
                window=self.args.settle_window,
            )
            record["journal_key"] = key
            if not self.journal.write(record):
                say("unrecorded outcome: " + json.dumps(record))
            self.states.append(record["state"])

    def finish(self, rows: int) -> int:
        """Print the summary; return the exit status."""
        states = self.states
        code = _code(states or ["refunded"])
        if self.journal.failed is not None or "not started" in states:
            code = EXIT_UNKNOWN
        if self.stop.signum is not None:
            code = self.stop.exit_code
        counts = {state: states.count(state) for state in sorted(set(states))}
        summary = {"rows": rows, "done_earlier": self.done_earlier, "outcomes": counts}
        summary["exit_code"] = code
        (sys.stderr if self.args.out == STDOUT else sys.stdout).write(json.dumps(summary) + "\n")
        if code not in (EXIT_OK, EXIT_NOT_PAID):
            say(
                "Some refunds are in doubt or not started: nothing was refunded twice. "
                "Run again with --resume."
            )
        return code
