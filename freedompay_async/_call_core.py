"""
The rules every call shares, invoice or classic: attempts, the deadline, doubt, resends, reconcile.

`CallCore` is the base of `_call.Call` (the invoice operations; its docstring states the rules)
and `_classic_call.ClassicCall` (refund, cancel, capture, the classic reads). Pure like them:
told what happened (`record`, `woke`, `stop`, `abandon`), it answers `next_step(now)`. Written
once here: the monotonic doubt and its only way back (`proves_not_applied`), resends by
`_retry.decide`, the breaker (which never stops the one resend a status read allowed), the send
deadline and its reconcile reserve, the jittered reconcile grace, notes, sleeps and the ends. The
subclasses decide the rest: `_start_read`, `_record_send`, `_record_status`, `_ambiguous_error`
and `guard_state`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

from freedompay_async._exceptions import (
    CircuitOpenError,
    FreedomPayError,
    GatewayError,
    HTTPStatusError,
    PaymentPending,
    PoolTimeout,
    RequestTimeout,
)
from freedompay_async._retry import (
    BREAKER_FAILURES,
    Outcome,
    Verb,
    decide,
    retry_after_seconds,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from random import Random

    from freedompay_async._config import RetryPolicy
    from freedompay_async._retry import CircuitBreaker, RetryBudget

__all__ = [
    "GRACE_JITTER",
    "READ_SLACK",
    "RECONCILE_RESERVE",
    "Act",
    "CallCore",
    "Note",
    "Phase",
    "proves_not_applied",
]

#: Seconds of a write call's deadline kept for reconcile (at most a quarter of the deadline).
RECONCILE_RESERVE: Final = 5.0
#: The first reconcile read gets at least this long, even at the deadline's edge: the only
#: time a call may outlive its deadline, and by no more than this.
READ_SLACK: Final = 1.0
#: The reconcile grace is slept as `reconcile_grace * uniform(1.0, GRACE_JITTER)`.
GRACE_JITTER: Final = 1.25


class Act(enum.Enum):
    """What the driver does next."""

    SEND = "send"
    ASK_STATUS = "ask_status"
    SLEEP = "sleep"
    DONE = "done"
    FAIL = "fail"


class Phase(enum.Enum):
    """Where the call stands (only an invoice pay polls)."""

    SENDING = "sending"
    RECONCILING = "reconciling"
    POLLING = "polling"
    ENDED = "ended"


#: One note for a hook or the log: (action, outcome, delay, cause).
Note = tuple[str, Outcome, float, FreedomPayError]

# Outcomes that prove this attempt was never acted on.
_PROOF_NOT_SENT: Final = frozenset({Outcome.NOT_SENT, Outcome.REFUSED, Outcome.LOCAL})
_HTTP_CLIENT_ERRORS: Final = range(400, 500)


def proves_not_applied(result: FreedomPayError, outcome: Outcome) -> bool:
    """
    Whether an attempt's error proves the request was never acted on.

    Args:
        result: The error the attempt ended with.
        outcome: Its classification (`_retry.classify`).

    Returns:
        True for not-sent, refused and local errors, a gateway refusal (`status=error`, which
        `classify` leaves PERMANENT unless it is 1000) and an HTTP 4xx.
    """
    if outcome in _PROOF_NOT_SENT:
        return True
    if outcome is not Outcome.PERMANENT:
        return False
    if isinstance(result, GatewayError):
        return True
    return isinstance(result, HTTPStatusError) and result.status_code in _HTTP_CLIENT_ERRORS


class CallCore:
    """
    The state every call shares; see the module docstring for the rules.

    Args:
        operation: The operation (its `value` names it in messages).
        moves_money: Whether a duplicate of the request could move money.
        policy: The retry policy.
        now: The monotonic time the call starts (its deadline counts from here).
        rng: The client's random source.
        context: Non-secret identifiers for logs and errors.
        budget: The client's retry budget, if any.
        breaker: The client's circuit breaker, if any.
    """

    __slots__ = (
        "_after",
        "_cause",
        "_doubt_before",
        "_first_read",
        "_in_flight",
        "_send_deadline",
        "attempts",
        "breaker",
        "budget",
        "context",
        "deadline",
        "delay",
        "error",
        "in_doubt",
        "last_write_at",
        "moves_money",
        "next_act",
        "notes",
        "operation",
        "phase",
        "policy",
        "remaining",
        "resent",
        "result",
        "rng",
    )

    operation: enum.Enum
    _cause: FreedomPayError | None

    def __init__(  # noqa: PLR0917 - positional: a subclass builds one per call
        self,
        operation: enum.Enum,
        moves_money: bool,
        policy: RetryPolicy,
        now: float,
        rng: Random,
        context: Mapping[str, str],
        budget: RetryBudget | None,
        breaker: CircuitBreaker | None,
        /,
    ) -> None:
        self.operation = operation
        self.moves_money = moves_money
        self.policy = policy
        self.rng = rng
        self.context = context
        self.budget = budget
        self.breaker = breaker
        self.deadline = now + policy.deadline
        reserve = min(RECONCILE_RESERVE, policy.deadline / 4) if moves_money else 0.0
        self._send_deadline = self.deadline - reserve
        self.phase = Phase.SENDING
        self.next_act = Act.SEND
        self.attempts = 0
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
        self._cause = None
        self._first_read = True

    # -- what the driver asks and tells ------------------------------------------------------

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
            # Time may have passed since the sleep was planned: it never ends past its bound.
            self.delay = max(min(self.delay, self._sleep_bound() - now), 0.0)
        return self.next_act

    def record(self, result: object, *, now: float, wall: float = 0.0) -> None:
        """
        Record the answer to SEND or ASK_STATUS: a decoded model or a `FreedomPayError`.

        Args:
            result: The model, or the error the exchange raised.
            now: The current monotonic time.
            wall: The current wall-clock time (for an HTTP-date `Retry-After`).
        """
        self._in_flight = False
        if self.phase is Phase.SENDING:
            self._record_send(result, now, wall)
        elif self.phase is not Phase.ENDED:
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
        if self.phase is not Phase.ENDED:
            self._fail(error, Outcome.LOCAL)

    def abandon(self, now: float) -> bool:
        """
        Record that the driver stopped mid-call (cancellation, an unexpected exception).

        Args:
            now: The current monotonic time.

        Returns:
            Whether a write of this call may have landed (the caller logs "outcome unknown").
        """
        if self.phase is Phase.ENDED:
            return False
        if self.moves_money and self._in_flight and self.next_act is Act.SEND:
            self.in_doubt = True
            self.last_write_at = now
        self._in_flight = False
        self.phase = Phase.ENDED
        return self.in_doubt

    # -- what the subclasses decide ----------------------------------------------------------

    def _start_read(self, now: float) -> None:
        raise NotImplementedError

    def _record_send(self, result: object, now: float, wall: float) -> None:
        raise NotImplementedError

    def _record_status(self, result: object, now: float) -> None:
        raise NotImplementedError

    def _ambiguous_error(self, why: str, cause: FreedomPayError | None) -> FreedomPayError:
        raise NotImplementedError

    def _sleep_bound(self) -> float:
        return self._send_deadline if self.phase is Phase.SENDING else self.deadline

    # -- the shared rules --------------------------------------------------------------------

    def _start_send(self, now: float) -> None:
        if self.breaker is not None and not self.resent and not self.breaker.allow(now):
            op = self.operation.value
            why = "circuit breaker open after repeated failures"
            self._fail(CircuitOpenError(f"{op}: {why}; not sent", operation=op), Outcome.LOCAL)
            return
        if now >= self._send_deadline:
            # The deadline passed before this attempt could start (a busy loop, a slow guard or
            # sleep): it is never sent.
            op = self.operation.value
            why = "the call's deadline passed before this attempt was sent"
            self._fail(PoolTimeout(f"{op}: {why}; not sent", operation=op), Outcome.NOT_SENT)
            return
        self.attempts += 1
        self._in_flight = True
        if self.moves_money:
            self._doubt_before = self.in_doubt
            self.in_doubt = True
        self.remaining = self._send_deadline - now

    def _account(self, outcome: Outcome, now: float) -> None:
        """Tell the breaker and the retry budget how an attempt went."""
        failed = outcome in BREAKER_FAILURES
        if self.breaker is not None:
            self.breaker.record(failure=failed, now=now)
        if self.budget is not None and not failed:
            self.budget.refund()

    def _record_send_error(
        self, result: FreedomPayError, outcome: Outcome, now: float, wall: float
    ) -> None:
        if self.moves_money:
            if proves_not_applied(result, outcome):
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
        self.phase = Phase.RECONCILING
        self._cause = cause
        self._first_read = True
        jittered = self.policy.reconcile_grace * self.rng.uniform(1.0, GRACE_JITTER)
        grace = min(jittered, max(self.deadline - now, 0.0) / 2)
        self._note("reconcile", outcome, grace, cause)
        self._sleep(grace, Act.ASK_STATUS)

    def _resend_once(self, action: str) -> None:
        """The one resend a status read allowed: the doubt stays until the reply settles it."""
        self.resent = True
        self.phase = Phase.SENDING
        cause = self._cause
        assert cause is not None  # noqa: S101 - reconcile always starts from a cause
        self._note(action, Outcome.AMBIGUOUS, 0.0, cause)
        self.next_act = Act.SEND

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
        self.phase = Phase.ENDED
        self.next_act = Act.DONE

    def _fail(self, error: FreedomPayError, outcome: Outcome) -> None:
        error.attempts = self.attempts
        self._note("giveup", outcome, 0.0, error)
        if self.moves_money and self.in_doubt and not isinstance(error, PaymentPending):
            self._end_ambiguous("a later step failed", error)
            return
        self.error = error
        self.phase = Phase.ENDED
        self.next_act = Act.FAIL

    def _end_ambiguous(self, why: str, cause: FreedomPayError | None) -> None:
        error = self._ambiguous_error(why, cause)
        self._note("giveup", Outcome.AMBIGUOUS, 0.0, error)
        self.in_doubt = True
        self.error = error
        self.phase = Phase.ENDED
        self.next_act = Act.FAIL
