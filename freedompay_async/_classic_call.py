"""
One classic call as a pure state machine: the invoice call's rules, for refund, cancel, capture.

The same shape as `_call.Call` (`next_step(now)` says SEND, ASK_STATUS, SLEEP, DONE or FAIL; the
driver reports with `record()`, `woke()`, `stop()`, `abandon()`), the same attempt classes and
resend decisions (`_retry`), the same proof of not-sent (`_call`) and the same monotonic doubt.
Reads are resent like any read. A write in doubt is settled by `get_status3` reads judged by
`_classic_settle.settle_write` against a read taken before it: after `reconcile_grace`, at most
`policy.attempts` reads with full-jitter backoff within the deadline, then `AmbiguousWriteError`.
It is resent only after a proof that nothing was acted on, or once after a read proves it never
landed (`NOT_LANDED`; never under the default `SettlePolicy`).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from freedompay_async._call import (
    GRACE_JITTER,
    READ_SLACK,
    RECONCILE_RESERVE,
    Act,
    Note,
    _proves_not_applied,  # the one rule of what proves a write never acted on
)
from freedompay_async._classic_errors import AmbiguousWriteError, WriteRefusedError
from freedompay_async._classic_models import PaymentStatus
from freedompay_async._classic_outcome import settled_outcome
from freedompay_async._classic_settle import WriteFinding, settle_write
from freedompay_async._exceptions import (
    CircuitOpenError,
    FreedomPayError,
    GatewayError,
    HTTPStatusError,
    PoolTimeout,
    RequestTimeout,
)
from freedompay_async._retry import (
    BREAKER_FAILURES,
    Outcome,
    Verb,
    backoff,
    classify,
    decide,
    retry_after_seconds,
)
from freedompay_async.settlement import SettlePolicy, Verdict

if TYPE_CHECKING:
    from collections.abc import Mapping
    from decimal import Decimal
    from random import Random

    from freedompay_async._classic_models import ClassicOperation
    from freedompay_async._config import RetryPolicy
    from freedompay_async._retry import CircuitBreaker, RetryBudget

__all__ = ["ClassicCall", "WritePhase"]


class WritePhase(enum.Enum):
    """Where a classic call stands."""

    SENDING = "sending"
    RECONCILING = "reconciling"
    ENDED = "ended"


class ClassicCall:
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
        self.operation = operation
        self.moves_money = operation.moves_money
        self.policy = policy
        self.rng = rng
        self.context = context
        self.amount = amount
        self.before = before
        self.settle = settle or SettlePolicy()
        self.budget = budget
        self.breaker = breaker
        self.deadline = now + policy.deadline
        reserve = min(RECONCILE_RESERVE, policy.deadline / 4) if self.moves_money else 0.0
        self._send_deadline = self.deadline - reserve
        self.phase = WritePhase.SENDING
        self.next_act = Act.SEND
        self.attempts = 0
        self.reads = 0
        self.in_doubt = False
        self.last_write_at: float | None = None
        self.resent = False
        self.remaining = 0.0
        self.delay = 0.0
        self.result: object = None
        self.error: FreedomPayError | None = None
        self.notes: list[Note] | None = None
        self._in_flight = False
        self._doubt_before = False
        self._after = Act.SEND
        self._cause: FreedomPayError | None = None
        self._first_read = True

    def next_step(self, now: float) -> Act:
        """
        Say what to do next; for SEND and ASK_STATUS, `remaining` bounds the exchange.

        Args:
            now: The current monotonic time.

        Returns:
            The act; its data is in `remaining`, `delay`, `result` or `error`.
        """
        act = self.next_act
        if act is Act.SEND:
            self._start_send(now)
        elif act is Act.ASK_STATUS:
            self._start_read(now)
        elif act is Act.SLEEP:
            bound = self._send_deadline if self.phase is WritePhase.SENDING else self.deadline
            self.delay = max(min(self.delay, bound - now), 0.0)
        return self.next_act

    def _start_send(self, now: float) -> None:
        op = self.operation.value
        if self.breaker is not None and not self.breaker.allow(now):
            why = "circuit breaker open after repeated failures"
            self._fail(CircuitOpenError(f"{op}: {why}; not sent", operation=op), Outcome.LOCAL)
            return
        if now >= self._send_deadline:
            why = "the call's deadline passed before this attempt was sent"
            self._fail(PoolTimeout(f"{op}: {why}; not sent", operation=op), Outcome.NOT_SENT)
            return
        self.attempts += 1
        self._in_flight = True
        if self.moves_money:
            self._doubt_before = self.in_doubt
            self.in_doubt = True
        self.remaining = self._send_deadline - now

    def _start_read(self, now: float) -> None:
        if self._first_read:
            self._first_read = False
            self.remaining = max(self.deadline - now, READ_SLACK)
        elif now >= self.deadline:
            self._end_ambiguous("its status could not settle it in time")
            return
        else:
            self.remaining = self.deadline - now
        self.reads += 1
        self.attempts += 1
        self._in_flight = True

    def record(self, result: object, *, now: float, wall: float = 0.0) -> None:
        """
        Record the answer to SEND or ASK_STATUS: a decoded model or a `FreedomPayError`.

        Args:
            result: The model, or the error the exchange raised.
            now: The current monotonic time.
            wall: The current wall-clock time (for an HTTP-date `Retry-After`).
        """
        self._in_flight = False
        if self.phase is WritePhase.SENDING:
            self._record_send(result, now, wall)
        elif self.phase is WritePhase.RECONCILING:
            self._record_status(result, now)

    def woke(self) -> None:
        """Report that the SLEEP asked for is over."""
        self.next_act = self._after

    def stop(self, error: FreedomPayError) -> None:
        """
        End the call now because of *error* (the client closed); a doubt stays a doubt.

        Args:
            error: Why the call cannot go on.
        """
        self._in_flight = False
        if self.phase is not WritePhase.ENDED:
            self._fail(error, Outcome.LOCAL)

    def abandon(self, now: float) -> bool:
        """
        Record that the driver stopped mid-call (cancellation, an unexpected exception).

        Args:
            now: The current monotonic time.

        Returns:
            Whether a write of this call may have landed.
        """
        if self.phase is WritePhase.ENDED:
            return False
        if self.moves_money and self._in_flight and self.next_act is Act.SEND:
            self.in_doubt = True
            self.last_write_at = now
        self._in_flight = False
        self.phase = WritePhase.ENDED
        return self.in_doubt

    @property
    def guard_state(self) -> str:
        """What the write guard records: `done`, `ambiguous` or `error` (nothing moved)."""
        if self.error is None and self.phase is WritePhase.ENDED and self.result is not None:
            return "done"
        return "ambiguous" if self.in_doubt else "error"

    def _note(self, action: str, outcome: Outcome, delay: float, cause: FreedomPayError) -> None:
        if self.notes is None:
            self.notes = []
        self.notes.append((action, outcome, delay, cause))

    def _sleep(self, delay: float, then: Act) -> None:
        if delay > 0:
            self.delay = delay
            self._after = then
            self.next_act = Act.SLEEP
        else:
            self.next_act = then

    def _done(self, result: object) -> None:
        self.result = result
        self.in_doubt = False
        self.phase = WritePhase.ENDED
        self.next_act = Act.DONE

    def _fail(self, error: FreedomPayError, outcome: Outcome) -> None:
        error.attempts = self.attempts
        self._note("giveup", outcome, 0.0, error)
        if self.moves_money and self.in_doubt:
            self._end_ambiguous("a later step failed", cause=error)
            return
        self.error = error
        self.phase = WritePhase.ENDED
        self.next_act = Act.FAIL

    def _end_ambiguous(self, why: str, cause: FreedomPayError | None = None) -> None:
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
        self._note("giveup", Outcome.AMBIGUOUS, 0.0, error)
        self.in_doubt = True
        self.error = error
        self.phase = WritePhase.ENDED
        self.next_act = Act.FAIL

    def _record_send(self, result: object, now: float, wall: float) -> None:
        outcome = classify(result, moves_money=False)
        failed = outcome in BREAKER_FAILURES
        if self.breaker is not None:
            self.breaker.record(failure=failed, now=now)
        if self.budget is not None and not failed:
            self.budget.refund()
        if not isinstance(result, FreedomPayError):
            if self.moves_money:
                self.last_write_at = now
            self._done(result)
        else:
            self._record_send_error(result, outcome, now, wall)

    def _record_send_error(
        self, result: FreedomPayError, outcome: Outcome, now: float, wall: float
    ) -> None:
        if self.moves_money:
            if _proves_not_applied(result, outcome):
                self.in_doubt = self._doubt_before
            else:
                self.last_write_at = now
        timeout = isinstance(result, RequestTimeout)
        hint = None
        if isinstance(result, HTTPStatusError) and result.retry_after is not None:
            hint = retry_after_seconds(result.retry_after, now_wall=wall)
        decision = decide(
            outcome,
            moves_money=self.moves_money,
            attempt=self.attempts,
            policy=self.policy,
            now=now,
            deadline=self._send_deadline,
            rng=self.rng,
            retry_after=hint,
            budget_ok=self.budget is None or self.budget.can_spend(timeout=timeout),
        )
        if decision.verb is Verb.RECONCILE:
            self._start_reconcile(result, outcome, now)
        elif decision.verb is Verb.RESEND:
            if self.budget is not None:
                self.budget.spend(timeout=timeout)
            self._note("resend", outcome, decision.delay, result)
            self._sleep(decision.delay, Act.SEND)
        else:
            self._fail(result, outcome)

    def _start_reconcile(self, cause: FreedomPayError, outcome: Outcome, now: float) -> None:
        self.in_doubt = True
        self.phase = WritePhase.RECONCILING
        self._cause = cause
        self._first_read = True
        jittered = self.policy.reconcile_grace * self.rng.uniform(1.0, GRACE_JITTER)
        grace = min(jittered, max(self.deadline - now, 0.0) / 2)
        self._note("reconcile", outcome, grace, cause)
        self._sleep(grace, Act.ASK_STATUS)

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
                self.resent = True
                self.phase = WritePhase.SENDING
                cause = self._cause
                assert cause is not None  # noqa: S101 - reconcile always starts from a cause
                self._note("resend", Outcome.AMBIGUOUS, 0.0, cause)
                self.next_act = Act.SEND
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
            self.phase = WritePhase.ENDED
            self.next_act = Act.FAIL
            return
        self._done(outcome)
