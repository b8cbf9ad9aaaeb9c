"""
One call as a pure state machine: what to do next, and what the money is known to be.

Theory of operation. The client builds one `Call` per operation and drives it: it asks
`next_step(now)` and performs the answer — send the request, ask the invoice's status, sleep
`delay` seconds, return `result` or raise `error` — then reports what happened with `record()`,
`woke()`, `stop()` or `abandon()`. Nothing here awaits, reads a clock or draws randomness of its
own (`now` is an argument, `rng` is the client's), so every rule is tested synchronously and a
model-based test drives it through arbitrary replies, errors, lagging status reads and
cancellations.

Phases: SENDING → (RECONCILING) → (POLLING) → ENDED.

Rules, in the order they apply:

1. **In doubt is monotonic.** From the moment a pay (any operation that moves money) is handed to
   the transport, the call is in doubt. Only a result that proves this attempt was never acted
   on (`NOT_SENT`, `REFUSED`, `LOCAL`, a gateway `status=error` other than 1000, an HTTP 4xx)
   gives the previous value back; everything else — a reply, a timeout, a broken connection, a
   1xx/3xx/5xx reply, an unreadable body, a cancellation (`abandon`), the client closing
   (`stop`) — keeps or raises it. Only a status read can settle it.
2. Resends follow `_retry.decide` (attempts, budget, backoff, `Retry-After`, the deadline). A pay
   is resent only after a proof of not-sent, or once after `settle()` says its status proves it
   never landed (`RetryPolicy.resend_pay_if_new`).
3. A pay whose outcome is unknown is reconciled: sleep `reconcile_grace` (jittered up to x1.25),
   then ask its status by `customer` until one read answers, with full-jitter backoff between
   failed reads, until the deadline (just once with `attempts=1`). `RECONCILE_OUTCOMES` says
   what each `settle()` verdict does.
4. One deadline per call. A pay's own attempts stop `reserve` seconds early (`RECONCILE_RESERVE`,
   at most a quarter of `RetryPolicy.deadline`), so reconcile runs inside the deadline; only the
   first reconcile read is granted `READ_SLACK` seconds when less is left. Polling has its own
   end, `PollPolicy.timeout` after it starts; no sleep or read is started past it.
5. Every end of a call that was ever in doubt, short of a settled or pending payment, is
   `AmbiguousPaymentError`; `guard_state` is what the duplicate guard records.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

from freedompay_async._exceptions import (
    AmbiguousPaymentError,
    CircuitOpenError,
    FreedomPayError,
    GatewayError,
    HTTPStatusError,
    PaymentPending,
    PoolTimeout,
    RequestTimeout,
)
from freedompay_async._models import InvoicePayment, payment_state
from freedompay_async._protocol import Operation
from freedompay_async._retry import (
    BREAKER_FAILURES,
    Outcome,
    Verb,
    backoff,
    classify,
    decide,
    poll_delay,
    retry_after_seconds,
)
from freedompay_async.settlement import SettlePolicy, Verdict, settle

if TYPE_CHECKING:
    from collections.abc import Mapping
    from random import Random

    from freedompay_async._config import PollPolicy, RetryPolicy
    from freedompay_async._retry import CircuitBreaker, RetryBudget

__all__ = [
    "READ_SLACK",
    "RECONCILE_OUTCOMES",
    "RECONCILE_RESERVE",
    "Act",
    "Call",
    "Phase",
    "settle_policy_of",
]

#: Seconds of a pay call's deadline kept for reconcile (at most a quarter of the deadline).
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
    """Where the call stands."""

    SENDING = "sending"
    RECONCILING = "reconciling"
    POLLING = "polling"
    ENDED = "ended"


class _Then(enum.Enum):
    """What a reconcile verdict leads to."""

    SETTLE = "settle"
    POLL = "poll"
    RESEND_ONCE = "resend_once"
    AMBIGUOUS = "ambiguous"


#: Reconcile outcomes: what a status read's `settle()` verdict does to the pay call.
RECONCILE_OUTCOMES: Final[dict[Verdict, _Then]] = {
    Verdict.SETTLED: _Then.SETTLE,  # the status is the outcome (ok: an earlier attempt charged)
    Verdict.PENDING: _Then.POLL,  # poll on, or return it under wait=False
    Verdict.NOT_LANDED: _Then.RESEND_ONCE,  # one resend per call, then as IN_DOUBT
    Verdict.IN_DOUBT: _Then.AMBIGUOUS,  # new, not proof: AmbiguousPaymentError
}

_MOVES_MONEY: Final = frozenset(op for op in Operation if op.moves_money)

# Outcomes that prove this attempt was never acted on.
_PROOF_NOT_SENT: Final = frozenset({Outcome.NOT_SENT, Outcome.REFUSED, Outcome.LOCAL})
_HTTP_CLIENT_ERRORS: Final = range(400, 500)

#: One note for a hook or the log: (action, outcome, delay, cause).
Note = tuple[str, Outcome, float, FreedomPayError]


def settle_policy_of(policy: RetryPolicy) -> SettlePolicy:
    """
    Return the settle policy a retry policy stands for.

    `resend_pay_if_new=True` means a status of `new`, read at least `reconcile_grace` seconds
    after the pay's last possible write, proves that it never landed; False (default) means
    `new` after a doubt never proves anything.

    Args:
        policy: The call's retry policy.

    Returns:
        The matching `SettlePolicy`.
    """
    if policy.resend_pay_if_new:
        return SettlePolicy(new_proves_not_landed_after=policy.reconcile_grace)
    return _NO_WINDOW


_NO_WINDOW: Final = SettlePolicy()


def _proves_not_applied(result: FreedomPayError, outcome: Outcome) -> bool:
    if outcome in _PROOF_NOT_SENT:
        return True
    if outcome is not Outcome.PERMANENT:
        return False
    if isinstance(result, GatewayError):
        return True
    return isinstance(result, HTTPStatusError) and result.status_code in _HTTP_CLIENT_ERRORS


class Call:
    """
    The state of one call; see the module docstring for its rules.

    Args:
        operation: The operation.
        policy: The retry policy.
        now: The monotonic time the call starts (its deadline counts from here).
        rng: The client's random source.
        context: Non-secret identifiers for logs and errors (`customer`, ...).
        wait: For pay: poll a pending payment until terminal.
        poll: The poll policy (pay with *wait*).
        budget: The client's retry budget, if any.
        breaker: The client's circuit breaker, if any.
    """

    __slots__ = (
        "_after",
        "_cause",
        "_doubt_before",
        "_failed_reads",
        "_first_read",
        "_in_flight",
        "_last",
        "_poll_end",
        "_polls",
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
        "poll",
        "remaining",
        "resent",
        "result",
        "rng",
        "wait",
    )

    # Set when a sleep, a send, reconcile or polling begins.
    _after: Act
    _doubt_before: bool
    _cause: FreedomPayError
    _failed_reads: int
    _first_read: bool
    _polls: int

    def __init__(
        self,
        operation: Operation,
        *,
        policy: RetryPolicy,
        now: float,
        rng: Random,
        context: Mapping[str, str],
        wait: bool = True,
        poll: PollPolicy | None = None,
        budget: RetryBudget | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.operation = operation
        self.moves_money = operation in _MOVES_MONEY
        self.policy = policy
        self.poll = poll
        self.wait = wait and poll is not None
        self.rng = rng
        self.context = context
        self.budget = budget
        self.breaker = breaker
        self.deadline = now + policy.deadline
        reserve = min(RECONCILE_RESERVE, policy.deadline / 4) if self.moves_money else 0.0
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
        self._poll_end = 0.0
        self._last: InvoicePayment | None = None

    # -- what the driver asks ----------------------------------------------------------------

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
            if self.phase is Phase.POLLING:
                bound = self._poll_end
            elif self.phase is Phase.SENDING:
                bound = self._send_deadline
            else:
                bound = self.deadline
            self.delay = max(min(self.delay, bound - now), 0.0)
        return self.next_act

    def _start_send(self, now: float) -> None:
        # The one resend a status of `new` allows settles a pay in doubt, like a reconcile read:
        # the breaker does not stop it (else the pay would end ambiguous for want of one request).
        if self.breaker is not None and not self.resent and not self.breaker.allow(now):
            error = CircuitOpenError(
                f"{self.operation.value}: circuit breaker open after repeated failures; not sent",
                operation=self.operation.value,
            )
            self._fail(error, Outcome.LOCAL)
            return
        if now >= self._send_deadline:
            # The deadline passed before this attempt could start (a busy loop, a slow guard or
            # sleep): it is never sent.
            self._fail(
                PoolTimeout(
                    f"{self.operation.value}: the call's deadline passed before this attempt "
                    "was sent; not sent",
                    operation=self.operation.value,
                ),
                Outcome.NOT_SENT,
            )
            return
        self.attempts += 1
        self._in_flight = True
        if self.moves_money:
            self._doubt_before = self.in_doubt
            self.in_doubt = True
        self.remaining = self._send_deadline - now

    def _start_read(self, now: float) -> None:
        if self.phase is Phase.POLLING:
            if now > self._poll_end:
                self._poll_give_up()
                return
            self.remaining = min(self.policy.deadline, max(self._poll_end - now, READ_SLACK))
        elif self._first_read:
            self._first_read = False
            self.remaining = max(self.deadline - now, READ_SLACK)
        elif now >= self.deadline:
            self._end_ambiguous("its status could not be read in time", self._cause)
            return
        else:
            self.remaining = self.deadline - now
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
            Whether a pay of this call may have landed (the caller logs "outcome unknown").
        """
        if self.phase is Phase.ENDED:
            return False
        if self.moves_money and self._in_flight and self.next_act is Act.SEND:
            self.in_doubt = True
            self.last_write_at = now
        self._in_flight = False
        self.phase = Phase.ENDED
        return self.in_doubt

    @property
    def guard_state(self) -> str:
        """What the duplicate guard records for this pay: a `PayOutcome.state` value."""
        if isinstance(self.result, InvoicePayment):
            return payment_state(self.result)
        if isinstance(self.error, PaymentPending):
            return "pending"
        return "ambiguous" if self.in_doubt else "error"

    # -- rules -------------------------------------------------------------------------------

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
            error = self._ambiguous("a later step failed", cause=error)
        self.error = error
        self.phase = Phase.ENDED
        self.next_act = Act.FAIL

    def _ambiguous(self, why: str, *, cause: FreedomPayError | None) -> AmbiguousPaymentError:
        customer = self.context.get("customer")
        error = AmbiguousPaymentError(
            f"pay for customer={customer} may have been charged ({why}); check "
            f"invoice_status(customer={customer!r}) before paying again",
            attempts=self.attempts,
            customer=customer,
        )
        error.__cause__ = cause
        self._note("giveup", Outcome.AMBIGUOUS, 0.0, error)
        return error

    def _end_ambiguous(self, why: str, cause: FreedomPayError | None) -> None:
        self.error = self._ambiguous(why, cause=cause)
        self.phase = Phase.ENDED
        self.next_act = Act.FAIL

    def _record_send(self, result: object, now: float, wall: float) -> None:
        if type(result) is InvoicePayment:  # the usual answer, classified without the tables
            outcome = (
                Outcome.PENDING
                if self.moves_money and not result.invoice_status.is_terminal
                else Outcome.SETTLED
            )
        else:
            outcome = classify(result, moves_money=self.moves_money)
        failed = outcome in BREAKER_FAILURES
        if self.breaker is not None:
            self.breaker.record(failure=failed, now=now)
        if self.budget is not None and not failed:
            self.budget.refund()
        if not isinstance(result, FreedomPayError):
            if self.moves_money:
                self.last_write_at = now
            if outcome is Outcome.PENDING and self.wait:
                self._start_polling(result, now)  # type: ignore[arg-type]
            else:
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
        self.phase = Phase.RECONCILING
        self._cause = cause
        self._failed_reads = 0
        self._first_read = True
        jittered = self.policy.reconcile_grace * self.rng.uniform(1.0, GRACE_JITTER)
        grace = min(jittered, max(self.deadline - now, 0.0) / 2)
        self._note("reconcile", outcome, grace, cause)
        self._sleep(grace, Act.ASK_STATUS)

    def _start_polling(self, payment: InvoicePayment, now: float) -> None:
        self.phase = Phase.POLLING
        self._last = payment
        self._polls = 0
        self._poll_end = now + self.poll.timeout  # type: ignore[union-attr]
        self._poll_next(now)

    def _poll_next(self, now: float) -> None:
        poll = self.poll
        assert poll is not None  # noqa: S101 - polling starts only with a poll policy
        delay = poll_delay(self._polls, poll, self.rng)
        self._polls += 1
        if now + delay <= self._poll_end:
            self._sleep(delay, Act.ASK_STATUS)
        else:
            self._poll_give_up()

    def _poll_give_up(self) -> None:
        poll = self.poll
        assert poll is not None  # noqa: S101 - polling starts only with a poll policy
        last = self._last
        customer = self.context.get("customer")
        status = last.invoice_status.value if last is not None else "pending"
        self._fail(
            PaymentPending(
                f"pay for customer={customer} still {status} after polling "
                f"{poll.timeout:g}s; poll invoice_status(customer={customer!r}) later or wait "
                "for the result_url notification",
                operation="pay",
                attempts=self.attempts,
                payment=last,
            ),
            Outcome.PENDING,
        )

    def _record_status(self, result: object, now: float) -> None:
        if self.phase is Phase.POLLING:
            if isinstance(result, InvoicePayment):
                self._last = result
                if result.is_terminal:
                    self._done(result)
                    return
            elif isinstance(result, FreedomPayError):
                # A missed poll is not an outcome: the next one may answer before the end.
                self._note("poll_miss", Outcome.PENDING, 0.0, result)
            self._poll_next(now)
            return
        if isinstance(result, InvoicePayment):
            verdict = settle(
                result.invoice_status,
                read_at=now,
                last_write_at=self.last_write_at,
                policy=settle_policy_of(self.policy),
            )
            self._then(RECONCILE_OUTCOMES[verdict], result, now)
            return
        error = result if isinstance(result, FreedomPayError) else None
        outcome = classify(result, moves_money=False)
        if isinstance(result, GatewayError) or outcome is Outcome.LOCAL or error is None:
            self._end_ambiguous("its status could not be read", error)
            return
        self._failed_reads += 1
        delay = backoff(self._failed_reads, self.policy, self.rng)
        # attempts=1 (`RetryPolicy.disabled()`) asks the status once; otherwise until the deadline.
        if self.policy.attempts <= 1 or now + delay >= self.deadline:
            self._end_ambiguous("its status could not be read", error)
            return
        self._sleep(delay, Act.ASK_STATUS)

    def _then(self, then: _Then, status: InvoicePayment, now: float) -> None:
        if then is _Then.SETTLE:
            self._done(status)
        elif then is _Then.POLL:
            if self.wait:
                self._start_polling(status, now)
            else:
                self._done(status)
        elif then is _Then.RESEND_ONCE and not self.resent:
            self.resent = True
            self.phase = Phase.SENDING
            self._note("resend_if_new", Outcome.AMBIGUOUS, 0.0, self._cause)
            self.next_act = Act.SEND
        else:
            self._end_ambiguous("its status still reads new, so it may land later", self._cause)
