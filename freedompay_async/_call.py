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

Rules 1, 2 and 4 and the start of reconcile are shared with the classic calls and written once,
in `_call_core.CallCore`; this module adds the invoice reads, polling and `RECONCILE_OUTCOMES`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

from freedompay_async._call_core import (
    GRACE_JITTER,
    READ_SLACK,
    RECONCILE_RESERVE,
    Act,
    CallCore,
    Note,
    Phase,
)
from freedompay_async._exceptions import (
    AmbiguousPaymentError,
    FreedomPayError,
    GatewayError,
    PaymentPending,
)
from freedompay_async._models import InvoicePayment, payment_state
from freedompay_async._protocol import Operation
from freedompay_async._retry import Outcome, backoff, classify, poll_delay
from freedompay_async.settlement import SettlePolicy, Verdict, settle

if TYPE_CHECKING:
    from collections.abc import Mapping
    from random import Random

    from freedompay_async._config import PollPolicy, RetryPolicy
    from freedompay_async._retry import CircuitBreaker, RetryBudget

__all__ = [
    "GRACE_JITTER",
    "READ_SLACK",
    "RECONCILE_OUTCOMES",
    "RECONCILE_RESERVE",
    "Act",
    "Call",
    "Note",
    "Phase",
    "settle_policy_of",
]


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


class Call(CallCore):
    """
    The state of one invoice call; see the module docstring for its rules.

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

    __slots__ = ("_failed_reads", "_last", "_poll_end", "_polls", "poll", "wait")

    operation: Operation
    _cause: FreedomPayError

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
        is_pay = operation is Operation.PAY
        super().__init__(operation, is_pay, policy, now, rng, context, budget, breaker)
        self.poll = poll
        self.wait = wait and poll is not None
        self._failed_reads = 0
        self._polls = 0
        self._poll_end = 0.0
        self._last: InvoicePayment | None = None

    @property
    def guard_state(self) -> str:
        """What the duplicate guard records for this pay: a `PayOutcome.state` value."""
        if isinstance(self.result, InvoicePayment):
            return payment_state(self.result)
        if isinstance(self.error, PaymentPending):
            return "pending"
        return "ambiguous" if self.in_doubt else "error"

    # -- rules -------------------------------------------------------------------------------

    def _sleep_bound(self) -> float:
        if self.phase is Phase.POLLING:
            return self._poll_end
        return super()._sleep_bound()

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

    def _ambiguous_error(self, why: str, cause: FreedomPayError | None) -> AmbiguousPaymentError:
        customer = self.context.get("customer")
        error = AmbiguousPaymentError(
            f"pay for customer={customer} may have been charged ({why}); check "
            f"invoice_status(customer={customer!r}) before paying again",
            attempts=self.attempts,
            customer=customer,
        )
        error.__cause__ = cause
        return error

    def _record_send(self, result: object, now: float, wall: float) -> None:
        if type(result) is InvoicePayment:  # the usual answer, classified without the tables
            outcome = (
                Outcome.PENDING
                if self.moves_money and not result.invoice_status.is_terminal
                else Outcome.SETTLED
            )
        else:
            outcome = classify(result, moves_money=self.moves_money)
        self._account(outcome, now)
        if not isinstance(result, FreedomPayError):
            if self.moves_money:
                self.last_write_at = now
            if outcome is Outcome.PENDING and self.wait:
                self._start_polling(result, now)  # type: ignore[arg-type]
            else:
                self._done(result)
        else:
            self._record_send_error(result, outcome, now, wall)

    def _start_reconcile(self, cause: FreedomPayError, outcome: Outcome, now: float) -> None:
        self._failed_reads = 0
        super()._start_reconcile(cause, outcome, now)

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
            self._resend_once("resend_if_new")
        else:
            self._end_ambiguous("its status still reads new, so it may land later", self._cause)
