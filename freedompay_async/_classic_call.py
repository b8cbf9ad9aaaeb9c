"""
One classic call as a pure state machine: the invoice call's rules, for refund, cancel, capture.

The same base as `_call.Call` (`_call_core.CallCore`: `next_step(now)` says SEND, ASK_STATUS,
SLEEP, DONE or FAIL; the driver reports with `record()`, `woke()`, `stop()`, `abandon()`), so the
same attempt classes, resend decisions, proof of not-sent and monotonic doubt, written once.
Reads are resent like any read. A write in doubt is settled by `get_status3` reads judged by
`_classic_settle.settle_write` against a read taken before it: after `reconcile_grace`, at most
`policy.attempts` reads with full-jitter backoff within the deadline, then `AmbiguousWriteError`.
It is resent only after a proof that nothing was acted on, or once after a read proves it never
landed (`NOT_LANDED`; never under the default `SettlePolicy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from freedompay_async._call_core import READ_SLACK, Act, CallCore, Phase
from freedompay_async._classic_errors import AmbiguousWriteError, WriteRefusedError
from freedompay_async._classic_models import PaymentStatus
from freedompay_async._classic_outcome import settled_outcome
from freedompay_async._classic_settle import WriteFinding, settle_write
from freedompay_async._exceptions import FreedomPayError, GatewayError
from freedompay_async._retry import Outcome, backoff, classify
from freedompay_async.settlement import SettlePolicy, Verdict

if TYPE_CHECKING:
    from collections.abc import Mapping
    from decimal import Decimal
    from random import Random

    from freedompay_async._classic_models import ClassicOperation
    from freedompay_async._config import RetryPolicy
    from freedompay_async._retry import CircuitBreaker, RetryBudget

__all__ = ["ClassicCall"]


class ClassicCall(CallCore):
    """
    The state of one classic call; see the module docstring for its rules.

    Args:
        operation: The operation.
        policy: The retry policy.
        now: The monotonic time the call starts.
        rng: The client's random source.
        context: Non-secret identifiers for logs and errors (`payment_id`, ...).
        amount: For a write, the amount asked for (None: full, or a cancel).
        before: For a write, a status read of the payment taken before the first send.
        settle: When an unchanged status proves a write never landed (`SettlePolicy()`: never).
        budget: The client's retry budget, if any.
        breaker: The client's circuit breaker, if any.
    """

    __slots__ = ("amount", "before", "reads", "settle")

    operation: ClassicOperation

    def __init__(
        self,
        operation: ClassicOperation,
        *,
        policy: RetryPolicy,
        now: float,
        rng: Random,
        context: Mapping[str, str],
        amount: Decimal | None = None,
        before: PaymentStatus | None = None,
        settle: SettlePolicy | None = None,
        budget: RetryBudget | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        moves_money = operation.moves_money
        super().__init__(operation, moves_money, policy, now, rng, context, budget, breaker)
        self.amount = amount
        self.before = before
        self.settle = settle or SettlePolicy()
        self.reads = 0

    @property
    def guard_state(self) -> str:
        """What the write guard records: `done`, `ambiguous` or `error` (nothing moved)."""
        if self.error is None and self.phase is Phase.ENDED and self.result is not None:
            return "done"
        return "ambiguous" if self.in_doubt else "error"

    def _start_read(self, now: float) -> None:
        if self._first_read:
            self._first_read = False
            self.remaining = max(self.deadline - now, READ_SLACK)
        elif now >= self.deadline:
            self._end_ambiguous("its status could not settle it in time", None)
            return
        else:
            self.remaining = self.deadline - now
        self.reads += 1
        self.attempts += 1
        self._in_flight = True

    def _done(self, result: object) -> None:
        self.in_doubt = False
        super()._done(result)

    def _ambiguous_error(self, why: str, cause: FreedomPayError | None) -> AmbiguousWriteError:
        payment_id = self.context.get("payment_id")
        error = AmbiguousWriteError(
            f"{self.operation.value} of payment_id={payment_id} may have landed ({why}); read "
            f"payment_status(payment_id={payment_id}) before sending it again",
            operation=self.operation.value,
            attempts=self.attempts,
            payment_id=int(payment_id) if payment_id is not None else None,
            amount=self.amount,
        )
        error.__cause__ = cause if cause is not None else self._cause
        return error

    def _record_send(self, result: object, now: float, wall: float) -> None:
        outcome = classify(result, moves_money=False)
        self._account(outcome, now)
        if not isinstance(result, FreedomPayError):
            if self.moves_money:
                self.last_write_at = now
            self._done(result)
        else:
            self._record_send_error(result, outcome, now, wall)

    def _record_status(self, result: object, now: float) -> None:
        if isinstance(result, PaymentStatus):
            finding = settle_write(
                self.operation,
                amount=self.amount,
                before=self.before,
                after=result,
                read_at=now,
                last_write_at=self.last_write_at,
                policy=self.settle,
            )
            if finding.verdict is Verdict.SETTLED:
                self._settled(finding, result)
                return
            if finding.verdict is Verdict.NOT_LANDED and not self.resent:
                self._resend_once("resend")
                return
            self._read_again(now, finding.reason, None)
            return
        error = result if isinstance(result, FreedomPayError) else None
        outcome = classify(result, moves_money=False)
        if isinstance(result, GatewayError) or outcome is Outcome.LOCAL or error is None:
            self._end_ambiguous("its status could not be read", error)
            return
        self._read_again(now, "its status could not be read", error)

    def _read_again(self, now: float, why: str, error: FreedomPayError | None) -> None:
        delay = backoff(self.reads, self.policy, self.rng)
        if self.reads >= self.policy.attempts or now + delay >= self.deadline:
            self._end_ambiguous(why, error)
            return
        self._sleep(delay, Act.ASK_STATUS)

    def _settled(self, finding: WriteFinding, status: PaymentStatus) -> None:
        """Turn a SETTLED finding into the write's result, or the refusal it proves."""
        outcome = settled_outcome(
            self.operation,
            finding,
            status,
            self.before,
            int(self.context["payment_id"]),
            self.amount,
        )
        if isinstance(outcome, WriteRefusedError):
            self.in_doubt = False
            outcome.attempts = self.attempts
            self.error = outcome
            self._note("giveup", Outcome.SETTLED, 0.0, outcome)
            self.phase = Phase.ENDED
            self.next_act = Act.FAIL
            return
        self._done(outcome)
