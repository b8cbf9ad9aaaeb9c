"""The input of `refund-batch`: its CSV rows and what an earlier run's journal recorded."""

from __future__ import annotations

import contextlib
import json
import time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Final

import attrs

from freedompay_async import RetryPolicy
from freedompay_async.cli._common import say
from freedompay_async.cli._journal import Prior
from freedompay_async.csvinput import BadRow, PayCsv
from freedompay_async.records import INTENT_STATE

if TYPE_CHECKING:
    from pathlib import Path

#: Refund states after which a row is never refunded again.
FINAL_STATES: Final = frozenset({"refunded", "refused"})
_CENT: Final = Decimal("0.01")
#: How long after its intent line a refund may still go out: a status read and the write,
#: each bounded by the client's deadline.
_CALL_BOUND: Final = 2 * (RetryPolicy().deadline + 1.0)


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
