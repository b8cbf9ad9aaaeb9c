"""`refund` and `refund-batch`: refunds from the shell, each at most once, resumable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

import attrs

from freedompay_async import (
    AmbiguousWriteError,
    DuplicateWriteError,
    FreedomPayError,
    GatewayError,
    PaymentState,
    PaymentStatus,
    RefundEntry,
    RefundResult,
    RetryPolicy,
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
from freedompay_async.cli._journal import STDOUT, Prior, open_journal
from freedompay_async.csvinput import BadRow, CsvInputError, PayCsv, open_pay_csv
from freedompay_async.records import INTENT_STATE
from freedompay_async.settlement import SettlePolicy, Verdict

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from freedompay_async import FreedomPayClient

#: Refund states after which a row is never refunded again.
FINAL_STATES: Final = frozenset({"refunded", "refused"})
_CENT: Final = Decimal("0.01")
_CALL_BOUND: Final = 2 * (RetryPolicy().deadline + 1.0)
_DOUBT_STATES: Final = frozenset({"ambiguous", INTENT_STATE})


def _print(data: object) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def parse_amount(text: str | None, *, where: str) -> Decimal | None:
    """Read a refund amount (None or empty: the full remainder); raise ValueError naming it."""
    if text is None or not text.strip():
        return None
    try:
        amount = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{where}: amount {text!r} is not a number, e.g. 150.00") from None
    if not amount.is_finite() or amount <= 0 or amount != amount.quantize(_CENT):
        raise ValueError(f"{where}: amount must be positive with at most two decimals: {text}")
    return amount


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


class RefundRow:
    """One good row of a refund CSV: `payment_id,amount[,key]` (empty amount: full)."""

    def __init__(self, line: int, payment_id: int, amount: Decimal | None, key: str | None) -> None:
        self.line = line
        self.payment_id = payment_id
        self.amount = amount
        self.key = key

    @property
    def journal_key(self) -> str:
        """The row's identity in the journal: its key, else payment id and amount."""
        return self.key or f"{self.payment_id}/{self.amount or 'full'}"


class RefundCsv(PayCsv):
    """A refund CSV, read by the same reader as pay CSVs."""

    REQUIRED = ("payment_id",)
    OPTIONAL = ("amount", "key")

    def _build(self, line: int, values: dict[str, str]) -> RefundRow | BadRow:  # type: ignore[override]
        text = values["payment_id"]
        if not text.isascii() or not text.isdigit() or int(text) <= 0:
            return BadRow(line=line, reason=f"payment_id must be a positive integer: {text!r}")
        try:
            amount = parse_amount(values.get("amount"), where="amount")
        except ValueError as exc:
            return BadRow(line=line, reason=str(exc))
        return RefundRow(line, int(text), amount, values.get("key") or None)


@attrs.define
class RefundPrior(Prior):
    """
    What an earlier run recorded for one refund row.

    Attributes:
        refunds_before: The payment's refunds seen before the last intent (id, amount, state).
    """

    refunds_before: list[list[Any]] = attrs.field(factory=list)


def read_refund_journal(path: Path) -> dict[str, RefundPrior]:
    """What an earlier run recorded per row key (refund lines only)."""
    priors: dict[str, RefundPrior] = {}
    with contextlib.suppress(FileNotFoundError), path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            try:
                record = json.loads(text)
                key, state = record["journal_key"], record["state"]
            except (ValueError, KeyError, TypeError):
                if text.strip():
                    say(f"{path}:{number}: ignored an unreadable line")
                continue
            prior = priors.setdefault(key, RefundPrior())
            if state in FINAL_STATES:
                prior.terminal = prior.terminal or state
            elif state == INTENT_STATE:
                prior.open_intents += 1
                # The refund may go out as late as the end of its call (a status read and
                # the write, each bounded by the client's deadline): count from there.
                prior.intent_at = (record.get("finished_at") or time.time()) + _CALL_BOUND
                prior.refunds_before = record.get("refunds_before") or []
            elif record.get("source") == "refund":
                prior.open_intents = max(prior.open_intents - 1, 0)
                if state == "ambiguous":
                    prior.doubt_at = record.get("finished_at") or time.time()
    return priors


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
    client = client_from_env(args, max_concurrency=args.concurrency)
    states: list[str] = []
    done_earlier = 0
    gate = asyncio.Semaphore(args.concurrency)

    async def one(row: RefundRow) -> None:
        async with gate:
            prior = priors.get(row.journal_key)
            record = await refund_one(
                client,
                row.payment_id,
                row.amount,
                line=row.line,
                key=row.key,
                prior=prior,
                write_intent=lambda intent: journal.write(
                    intent | {"journal_key": row.journal_key}
                ),
                window=args.settle_window,
            )
            record["journal_key"] = row.journal_key
            if not journal.write(record):
                say("unrecorded outcome: " + json.dumps(record))
            states.append(record["state"])

    with contextlib.closing(table), contextlib.closing(journal):
        async with client, asyncio.TaskGroup() as tasks:
            for row in _rows(table):
                if isinstance(row, BadRow):
                    say(f"{args.input}:{row.line}: skipped: {row.reason}")
                    states.append("malformed")
                    continue
                prior = priors.get(row.journal_key)
                if prior is not None and prior.terminal is not None:
                    done_earlier += 1
                    continue
                tasks.create_task(one(row))
    counts = {state: states.count(state) for state in sorted(set(states))}
    code = _code(states or ["refunded"])
    if journal.failed is not None:
        code = EXIT_UNKNOWN
    summary = {"rows": table.rows, "done_earlier": done_earlier, "outcomes": counts}
    summary["exit_code"] = code
    (sys.stderr if args.out == STDOUT else sys.stdout).write(json.dumps(summary) + "\n")
    if code == EXIT_UNKNOWN:
        say(
            "Some refunds are in doubt: nothing was refunded twice. Later, run again with --resume."
        )
    return code


def _rows(table: PayCsv) -> Iterator[RefundRow | BadRow]:
    yield from table  # type: ignore[misc]
