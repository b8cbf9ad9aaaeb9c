"""The pure retry core: wire contract §5 row by row through classify and decide, budget, breaker."""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Callable

import attrs
import pytest

from freedompay_async import (
    AmbiguousPaymentError,
    AmbiguousWriteError,
    CircuitOpenError,
    ClientClosedError,
    ConfigurationError,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    DecodeError,
    DuplicatePayError,
    DuplicateWriteError,
    ExcessRefundError,
    FreedomPayError,
    GatewayError,
    HTTPStatusError,
    InvoicePayment,
    InvoiceStatus,
    PaymentPending,
    PoolTimeout,
    ReadTimeout,
    RequestTimeout,
    ResponseError,
    RetryPolicy,
    SignatureError,
    TransportError,
    WriteRefusedError,
)
from freedompay_async._retry import (
    BREAKER_FAILURES,
    BreakerState,
    CircuitBreaker,
    Decision,
    Outcome,
    RetryBudget,
    Verb,
    backoff,
    classify,
    decide,
    retry_after_seconds,
)

POLICY = RetryPolicy(
    attempts=4,
    deadline=60.0,
    backoff_base=0.5,
    backoff_max=10.0,
    retry_after_max=30.0,
    reconcile_grace=2.0,
)
NOW_WALL = 1_700_000_000.0


class CeilingRandom(random.Random):
    """A random source whose `uniform` always answers its upper bound (the worst-case jitter)."""

    def uniform(self, a: float, b: float) -> float:
        """Return the upper bound."""
        del a
        return b


def _http(status: int, retry_after: str | None = None) -> HTTPStatusError:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return HTTPStatusError(f"HTTP {status}", operation="pay", status_code=status, headers=headers)


def _payment(status: InvoiceStatus) -> InvoicePayment:
    return InvoicePayment(invoice_status=status, invoice_status_raw=status.value, customer="c-1")


# ------------------------------------------------------------------------------------------------
# §5 as data: what happened -> class -> (pay verb, read verb). One row per line of the contract.

R, RC, RS, P, RT = Verb.RAISE, Verb.RECONCILE, Verb.RESEND, Verb.POLL, Verb.RETURN


@attrs.frozen
class Row:
    what: str
    make: Callable[[], object]
    outcome: Outcome
    pay: Verb
    read: Verb | None  # None: the event cannot happen on a read (a pay-only status)


CONTRACT_ROWS = [
    # DNS or connect error, connect timeout, pool-wait timeout: not sent -> resend / resend
    Row("connect-error", lambda: ConnectError("refused"), Outcome.NOT_SENT, RS, RS),
    Row("connect-timeout", lambda: ConnectTimeout("slow"), Outcome.NOT_SENT, RS, RS),
    Row("pool-timeout", lambda: PoolTimeout("full"), Outcome.NOT_SENT, RS, RS),
    # HTTP 429, 503: refused -> resend / resend
    Row("http-429", lambda: _http(429), Outcome.REFUSED, RS, RS),
    Row("http-503", lambda: _http(503), Outcome.REFUSED, RS, RS),
    # read timeout, reset after write, 500/502/504, not XML: ambiguous -> reconcile / resend
    Row("read-timeout", lambda: ReadTimeout("no reply"), Outcome.AMBIGUOUS, RC, RS),
    Row("timeout-unknown-phase", lambda: RequestTimeout("?"), Outcome.AMBIGUOUS, RC, RS),
    Row("connection-lost", lambda: ConnectionLost("reset"), Outcome.AMBIGUOUS, RC, RS),
    Row("http-500", lambda: _http(500), Outcome.AMBIGUOUS, RC, RS),
    Row("http-502", lambda: _http(502), Outcome.AMBIGUOUS, RC, RS),
    Row("http-504", lambda: _http(504), Outcome.AMBIGUOUS, RC, RS),
    Row("not-xml", lambda: DecodeError("not XML"), Outcome.AMBIGUOUS, RC, RS),
    # status=error with error_code 1000: transient -> reconcile / resend
    Row(
        "error-1000",
        lambda: GatewayError("internal", error_code=1000),
        Outcome.TRANSIENT,
        RC,
        RS,
    ),
    # any other status=error: permanent -> raise / raise
    Row("error-600", lambda: GatewayError("general", error_code=600), Outcome.PERMANENT, R, R),
    Row("error-350", lambda: GatewayError("not payable", error_code=350), Outcome.PERMANENT, R, R),
    Row("error-no-code", lambda: GatewayError("?", error_code=None), Outcome.PERMANENT, R, R),
    # other HTTP 4xx and a bad signature: permanent (design §3.1)
    Row("http-400", lambda: _http(400), Outcome.PERMANENT, R, R),
    Row("http-404", lambda: _http(404), Outcome.PERMANENT, R, R),
    Row("signature", lambda: SignatureError("bad sig"), Outcome.PERMANENT, R, R),
    # the client refused locally: raise, nothing sent
    Row("circuit-open", lambda: CircuitOpenError("open"), Outcome.LOCAL, R, R),
    Row("client-closed", lambda: ClientClosedError("closed"), Outcome.LOCAL, R, R),
    Row("configuration", lambda: ConfigurationError("bad"), Outcome.LOCAL, R, R),
    # status=ok: pay waiting -> poll; everything terminal -> return
    Row("ok-process", lambda: _payment(InvoiceStatus.PROCESS), Outcome.PENDING, P, None),
    Row("ok-new", lambda: _payment(InvoiceStatus.NEW), Outcome.PENDING, P, None),
    Row("ok-unknown", lambda: _payment(InvoiceStatus.UNKNOWN), Outcome.PENDING, P, None),
    Row("ok-ok", lambda: _payment(InvoiceStatus.OK), Outcome.SETTLED, RT, RT),
    Row("ok-failed", lambda: _payment(InvoiceStatus.FAILED), Outcome.SETTLED, RT, RT),
    Row("ok-incomplete", lambda: _payment(InvoiceStatus.INCOMPLETE), Outcome.SETTLED, RT, RT),
]

OPERATIONS = [("pay", True), ("init", False), ("status", False), ("info", False)]

CASES = [
    pytest.param(row, op, moves_money, id=f"{op}-{row.what}")
    for row in CONTRACT_ROWS
    for op, moves_money in OPERATIONS
    if moves_money or row.read is not None
]


def _decide(
    outcome: Outcome,
    *,
    moves_money: bool,
    attempt: int = 1,
    now: float = 0.0,
    deadline: float = 60.0,
    retry_after: float | None = None,
    budget_ok: bool = True,
    policy: RetryPolicy = POLICY,
    rng: random.Random | None = None,
) -> Decision:
    return decide(
        outcome,
        moves_money=moves_money,
        attempt=attempt,
        policy=policy,
        now=now,
        deadline=deadline,
        rng=rng if rng is not None else random.Random(7),
        retry_after=retry_after,
        budget_ok=budget_ok,
    )


@pytest.mark.parametrize(("row", "op", "moves_money"), CASES)
def test_contract_row(row: Row, op: str, moves_money: bool) -> None:
    """Each §5 row classifies to its class and decides its column's verb, for pay and reads."""
    result = row.make()
    outcome = classify(result, moves_money=moves_money)
    if not moves_money and isinstance(result, InvoicePayment):
        assert outcome is Outcome.SETTLED  # a read that answers a waiting status is an answer
    else:
        assert outcome is row.outcome
    decision = _decide(outcome, moves_money=moves_money)
    expected = row.pay if moves_money else row.read
    assert decision.verb is expected, (op, row.what, decision)
    if decision.verb is Verb.RESEND:
        assert 0.0 <= decision.delay <= POLICY.backoff_base
    elif decision.verb is Verb.RECONCILE:
        assert decision.delay == POLICY.reconcile_grace
    else:
        assert decision.delay == 0.0


def _subclasses(cls: type) -> set[type]:
    found: set[type] = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


#: Classes that never come out of one attempt (call-level ends and abstract bases).
NOT_ATTEMPT_RESULTS = {
    AmbiguousPaymentError,
    AmbiguousWriteError,
    DuplicateWriteError,
    ExcessRefundError,
    WriteRefusedError,
    AmbiguousWriteError,
    DuplicatePayError,
    DuplicateWriteError,
    ExcessRefundError,
    WriteRefusedError,
    PaymentPending,
    ResponseError,
    TransportError,
}


def test_every_error_class_of_the_tree_has_a_row() -> None:
    """Every FreedomPayError subclass an attempt can raise is a row of the table above."""
    rows = {type(row.make()) for row in CONTRACT_ROWS}
    public = {cls for cls in _subclasses(FreedomPayError) if cls.__module__.startswith("freedom")}
    missing = public - rows - NOT_ATTEMPT_RESULTS
    assert not missing, sorted(cls.__name__ for cls in missing)


def test_breaker_failures_are_the_transient_classes() -> None:
    """The breaker counts exactly the classes where the gateway did not serve the request."""
    assert {
        Outcome.NOT_SENT,
        Outcome.REFUSED,
        Outcome.AMBIGUOUS,
        Outcome.TRANSIENT,
    } == BREAKER_FAILURES


@pytest.mark.parametrize("status", [501, 505, 507, 520, 599], ids=lambda s: f"http-{s}")
def test_unlisted_5xx_on_pay_is_reconciled_not_raised(status: int) -> None:
    """A 5xx the table does not list maps to the unsafe side: pay reconciles, reads resend."""
    outcome = classify(_http(status), moves_money=True)
    assert outcome is Outcome.AMBIGUOUS
    assert _decide(outcome, moves_money=True).verb is Verb.RECONCILE
    assert _decide(outcome, moves_money=False).verb is Verb.RESEND


# ------------------------------------------------------------------------------------------------
# Give-up rows: attempts, budget, deadline, Retry-After.

RESENDABLE = [
    pytest.param(Outcome.NOT_SENT, True, id="pay-not-sent"),
    pytest.param(Outcome.REFUSED, True, id="pay-refused"),
    pytest.param(Outcome.NOT_SENT, False, id="read-not-sent"),
    pytest.param(Outcome.REFUSED, False, id="read-refused"),
    pytest.param(Outcome.AMBIGUOUS, False, id="read-ambiguous"),
    pytest.param(Outcome.TRANSIENT, False, id="read-transient"),
]


@pytest.mark.parametrize(("outcome", "moves_money"), RESENDABLE)
def test_attempts_exhausted_gives_up(outcome: Outcome, moves_money: bool) -> None:
    """The attempt that reaches RetryPolicy.attempts is the last: the next step is raise."""
    assert _decide(outcome, moves_money=moves_money, attempt=3).verb is Verb.RESEND
    decision = _decide(outcome, moves_money=moves_money, attempt=4)
    assert decision == Decision(verb=Verb.RAISE, reason="attempts exhausted")


@pytest.mark.parametrize(("outcome", "moves_money"), RESENDABLE)
def test_empty_budget_gives_up(outcome: Outcome, moves_money: bool) -> None:
    """An empty retry budget stops a resend that attempts and deadline would allow."""
    decision = _decide(outcome, moves_money=moves_money, budget_ok=False)
    assert decision == Decision(verb=Verb.RAISE, reason="retry budget empty")


@pytest.mark.parametrize(("outcome", "moves_money"), RESENDABLE)
@pytest.mark.parametrize("left", [0.0, -5.0, 0.4], ids=["at", "past", "short"])
def test_sleep_past_the_deadline_is_not_started(
    outcome: Outcome, moves_money: bool, left: float
) -> None:
    """A backoff that would end at or past the deadline gives up instead of sleeping."""
    policy = attrs.evolve(POLICY, backoff_base=1.0)
    decision = _decide(
        outcome,
        moves_money=moves_money,
        now=100.0,
        deadline=100.0 + left,
        policy=policy,
        rng=CeilingRandom(),
    )
    assert decision == Decision(verb=Verb.RAISE, reason="deadline")


@pytest.mark.parametrize(("outcome", "moves_money"), RESENDABLE)
def test_retry_after_beyond_the_deadline_gives_up(outcome: Outcome, moves_money: bool) -> None:
    """A Retry-After hint longer than the time left gives up at once rather than sleep into it."""
    decision = _decide(outcome, moves_money=moves_money, now=50.0, retry_after=20.0)
    assert decision == Decision(verb=Verb.RAISE, reason="Retry-After beyond the deadline")


@pytest.mark.parametrize(
    ("hint", "rng", "expected"),
    [
        pytest.param(5.0, random.Random(3), 5.0, id="hint-above-backoff"),
        pytest.param(0.1, CeilingRandom(), 0.5, id="backoff-above-hint"),
        pytest.param(0.0, CeilingRandom(), 0.5, id="zero-hint"),
        pytest.param(-4.0, CeilingRandom(), 0.5, id="negative-hint-ignored"),
        pytest.param(1_000.0, random.Random(3), 30.0, id="capped-at-retry-after-max"),
    ],
)
def test_retry_after_is_max_of_backoff_and_capped_hint(
    hint: float, rng: random.Random, expected: float
) -> None:
    """The delay is max(backoff(n), min(hint, retry_after_max)), for pay and reads alike."""
    for moves_money in (True, False):
        decision = _decide(Outcome.REFUSED, moves_money=moves_money, retry_after=hint, rng=rng)
        assert decision.verb is Verb.RESEND
        assert decision.delay == pytest.approx(expected)


def test_capped_hint_still_beyond_deadline_gives_up() -> None:
    """A huge hint is capped first; the cap itself beyond the time left still means give up."""
    decision = _decide(Outcome.REFUSED, moves_money=True, now=35.0, retry_after=1e9)
    assert decision.verb is Verb.RAISE
    assert decision.reason == "Retry-After beyond the deadline"


def test_infinite_retry_after_is_capped_not_ignored() -> None:
    """An infinite hint (a 400-digit header) is capped at retry_after_max, never dropped."""
    decision = _decide(
        Outcome.REFUSED, moves_money=True, retry_after=math.inf, rng=random.Random(3)
    )
    assert decision.verb is Verb.RESEND
    assert decision.delay == POLICY.retry_after_max


def test_nan_retry_after_is_ignored() -> None:
    """A NaN hint cannot poison the delay: the plain backoff is used."""
    decision = _decide(Outcome.REFUSED, moves_money=True, retry_after=math.nan, rng=CeilingRandom())
    assert decision == Decision(verb=Verb.RESEND, delay=0.5, reason="refused")


@pytest.mark.parametrize("outcome", [Outcome.AMBIGUOUS, Outcome.TRANSIENT])
@pytest.mark.parametrize(
    ("attempt", "budget_ok", "left", "hint"),
    [
        pytest.param(1, True, 60.0, None, id="fresh"),
        pytest.param(4, True, 60.0, None, id="attempts-spent"),
        pytest.param(1, False, 60.0, None, id="budget-empty"),
        pytest.param(1, True, 0.0, None, id="deadline-reached"),
        pytest.param(1, True, 60.0, 5.0, id="with-retry-after"),
    ],
)
def test_pay_ambiguity_always_reconciles(
    outcome: Outcome, attempt: int, budget_ok: bool, left: float, hint: float | None
) -> None:
    """A pay that may have landed is reconciled whatever the attempts, budget or deadline say."""
    decision = _decide(
        outcome,
        moves_money=True,
        attempt=attempt,
        budget_ok=budget_ok,
        now=10.0,
        deadline=10.0 + left,
        retry_after=hint,
    )
    assert decision.verb is Verb.RECONCILE
    assert 0.0 <= decision.delay <= min(POLICY.reconcile_grace, left)


def test_reconcile_grace_shrinks_to_the_time_left() -> None:
    """The reconcile grace never sleeps past the deadline; past it, the status is asked at once."""
    assert _decide(Outcome.AMBIGUOUS, moves_money=True, now=59.0).delay == 1.0
    assert _decide(Outcome.AMBIGUOUS, moves_money=True, now=61.0).delay == 0.0


# ------------------------------------------------------------------------------------------------
# backoff and Retry-After parsing


@pytest.mark.parametrize(
    ("retry", "ceiling"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (200, 10.0)],
    ids=str,
)
def test_backoff_ceiling_doubles_up_to_the_max(retry: int, ceiling: float) -> None:
    """backoff(n) reaches min(backoff_max, base * 2**(n-1)) at worst and never exceeds it."""
    assert backoff(retry, POLICY, CeilingRandom()) == ceiling
    rng = random.Random(retry)
    for _ in range(50):
        assert 0.0 <= backoff(retry, POLICY, rng) <= ceiling


def test_backoff_is_deterministic_for_a_seed() -> None:
    """The same seed gives the same jitter sequence, so failing runs replay."""
    first = [backoff(n, POLICY, random.Random(42)) for n in range(1, 6)]
    again = [backoff(n, POLICY, random.Random(42)) for n in range(1, 6)]
    assert first == again


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("5", 5.0, id="seconds"),
        pytest.param(" 7 ", 7.0, id="seconds-padded"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param(email.utils.formatdate(NOW_WALL + 30, usegmt=True), 30.0, id="date-ahead"),
        pytest.param(email.utils.formatdate(NOW_WALL - 30, usegmt=True), 0.0, id="date-past"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", 0.0, id="rfc-example-past"),
        pytest.param(None, None, id="absent"),
        pytest.param("", None, id="empty"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("-3", None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("\u0663", None, id="arabic-digit"),
        pytest.param("Mon, 99 Foo 2023 00:00:00 GMT", None, id="bad-date"),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    """Retry-After is read as delay-seconds or an HTTP-date; anything else is None."""
    assert retry_after_seconds(value, now_wall=NOW_WALL) == expected


# ------------------------------------------------------------------------------------------------
# RetryBudget


def test_budget_costs_and_refunds() -> None:
    """A resend costs 5 tokens (10 after a timeout), a success refunds 1, capped at capacity."""
    budget = RetryBudget(20)
    budget.refund()
    assert budget.tokens == 20
    budget.spend(timeout=False)
    assert budget.tokens == 15
    budget.spend(timeout=True)
    assert budget.tokens == 5
    assert budget.can_spend(timeout=False)
    assert not budget.can_spend(timeout=True)
    budget.spend(timeout=False)
    assert budget.tokens == 0
    assert not budget.can_spend(timeout=False)
    budget.spend(timeout=True)
    assert budget.tokens == 0
    for _ in range(30):
        budget.refund()
    assert budget.tokens == 20


# ------------------------------------------------------------------------------------------------
# CircuitBreaker


def test_breaker_opens_at_threshold_consecutive_failures() -> None:
    """Threshold-1 failures keep it closed; a success resets the count; threshold opens it."""
    breaker = CircuitBreaker(threshold=3, cooldown=10.0)
    breaker.record(failure=True, now=0.0)
    breaker.record(failure=True, now=0.0)
    breaker.record(failure=False, now=0.0)
    breaker.record(failure=True, now=0.0)
    breaker.record(failure=True, now=0.0)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow(0.0)
    breaker.record(failure=True, now=1.0)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(1.0)
    assert not breaker.allow(10.9)


def test_breaker_lets_one_probe_through_and_closes_on_success() -> None:
    """After the cooldown exactly one probe goes; its success closes the breaker."""
    breaker = CircuitBreaker(threshold=1, cooldown=10.0)
    breaker.record(failure=True, now=0.0)
    assert breaker.allow(10.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow(10.0)
    assert not breaker.allow(15.0)
    breaker.record(failure=False, now=16.0)
    assert breaker.state is BreakerState.CLOSED
    assert all(breaker.allow(16.0) for _ in range(5))


def test_breaker_reopens_when_the_probe_fails() -> None:
    """A failed probe opens the breaker for another full cooldown from the probe's end."""
    breaker = CircuitBreaker(threshold=2, cooldown=10.0)
    breaker.record(failure=True, now=0.0)
    breaker.record(failure=True, now=0.0)
    assert breaker.allow(10.0)
    breaker.record(failure=True, now=12.0)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(21.9)
    assert breaker.allow(22.0)


def test_breaker_probe_that_never_reports_does_not_wedge_it() -> None:
    """A probe whose call was cancelled (no record) does not keep the breaker shut forever."""
    breaker = CircuitBreaker(threshold=1, cooldown=10.0)
    breaker.record(failure=True, now=0.0)
    assert breaker.allow(10.0)  # the probe goes out and is cancelled: record() never runs
    assert not breaker.allow(15.0)
    assert breaker.allow(20.0 + 1e-9), "a lost probe must be replaced after another cooldown"


def test_retry_event_literals_name_every_outcome() -> None:
    """RetryEvent.outcome's Literal type lists exactly the values of Outcome."""
    from typing import get_args

    from freedompay_async._retry import OutcomeName, RetryAction

    assert set(get_args(OutcomeName)) == {outcome.value for outcome in Outcome}
    assert set(get_args(RetryAction)) == {"resend", "reconcile", "giveup"}
