"""Properties of the pure retry core: jitter bounds, the deadline, budget and breaker machines."""

from __future__ import annotations

import email.utils
import math
import random

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from freedompay_async import PollPolicy, RetryPolicy
from freedompay_async._retry import (
    BreakerState,
    CircuitBreaker,
    Outcome,
    RetryBudget,
    Verb,
    backoff,
    decide,
    poll_delay,
    retry_after_seconds,
)

seeds = st.integers(min_value=0, max_value=2**32 - 1)
seconds = st.floats(min_value=0.0, max_value=1_000.0, allow_nan=False)
positive = st.floats(min_value=0.001, max_value=1_000.0, allow_nan=False)


@st.composite
def retry_policies(draw: st.DrawFn) -> RetryPolicy:
    """Valid retry policies across their whole range."""
    return RetryPolicy(
        attempts=draw(st.integers(min_value=1, max_value=10)),
        deadline=draw(positive),
        backoff_base=draw(seconds),
        backoff_max=draw(seconds),
        retry_after_max=draw(seconds),
        reconcile_grace=draw(seconds),
    )


@given(
    seed=seeds,
    retry=st.integers(min_value=1, max_value=10_000),
    base=seconds,
    cap=seconds,
)
def test_backoff_stays_within_full_jitter_bounds(
    seed: int, retry: int, base: float, cap: float
) -> None:
    """0 <= backoff(n) <= min(backoff_max, backoff_base * 2**(n-1)) for every n and seed."""
    policy = RetryPolicy(backoff_base=base, backoff_max=cap)
    delay = backoff(retry, policy, random.Random(seed))
    ceiling = min(cap, base * 2.0 ** min(retry - 1, 1_000))
    assert 0.0 <= delay <= ceiling


@given(
    seed=seeds,
    poll=st.integers(min_value=0, max_value=5_000),
    interval=st.floats(min_value=0.001, max_value=100.0),
    factor=st.floats(min_value=1.0, max_value=10.0),
    cap=st.floats(min_value=0.001, max_value=1_000.0),
)
def test_poll_delay_is_never_early_and_at_most_a_quarter_late(
    seed: int, poll: int, interval: float, factor: float, cap: float
) -> None:
    """Polls are never early, at most 25 % late: planned <= d < 1.25 * planned, capped plan."""
    policy = PollPolicy(interval=interval, factor=factor, max_interval=cap)
    try:
        planned = min(cap, interval * factor**poll)
    except OverflowError:
        planned = cap
    delay = poll_delay(poll, policy, random.Random(seed))
    assert planned <= delay < 1.25 * planned


outcomes = st.sampled_from(list(Outcome))


@given(
    outcome=outcomes,
    moves_money=st.booleans(),
    attempt=st.integers(min_value=1, max_value=12),
    policy=retry_policies(),
    now=st.floats(min_value=-1e6, max_value=1e6),
    left=st.floats(min_value=-100.0, max_value=1_000.0),
    hint=st.none()
    | st.floats(min_value=-10.0, max_value=100.0)
    | st.sampled_from([math.inf, -math.inf, math.nan, 1e300]),
    budget_ok=st.booleans(),
    seed=seeds,
)
@example(
    outcome=Outcome.REFUSED,
    moves_money=True,
    attempt=1,
    policy=RetryPolicy(),
    now=0.0,
    left=60.0,
    hint=math.inf,
    budget_ok=True,
    seed=3,
)
def test_decide_never_sleeps_past_the_deadline_nor_resends_a_landed_pay(
    *,
    outcome: Outcome,
    moves_money: bool,
    attempt: int,
    policy: RetryPolicy,
    now: float,
    left: float,
    hint: float | None,
    budget_ok: bool,
    seed: int,
) -> None:
    """No RESEND ends past the deadline, breaks attempts/budget, or follows a pay that may land."""
    deadline = now + left
    decision = decide(
        outcome,
        moves_money=moves_money,
        attempt=attempt,
        policy=policy,
        now=now,
        deadline=deadline,
        rng=random.Random(seed),
        retry_after=hint,
        budget_ok=budget_ok,
    )
    assert decision.delay >= 0.0
    if moves_money and outcome in {Outcome.AMBIGUOUS, Outcome.TRANSIENT}:
        assert decision.verb is Verb.RECONCILE
    if decision.verb is Verb.RECONCILE:
        assert moves_money
        assert decision.delay <= policy.reconcile_grace
        assert now + decision.delay <= max(deadline, now)
    if decision.verb is Verb.RESEND:
        assert outcome in {Outcome.NOT_SENT, Outcome.REFUSED} or (
            not moves_money and outcome in {Outcome.AMBIGUOUS, Outcome.TRANSIENT}
        )
        assert attempt < policy.attempts
        assert budget_ok
        assert now + decision.delay < deadline
        ceiling = min(policy.backoff_max, policy.backoff_base * 2.0 ** min(attempt - 1, 62))
        if hint is not None and hint == hint and hint > 0:  # noqa: PLR0124 - NaN check
            capped = min(hint, policy.retry_after_max)
            assert decision.delay == max(capped, decision.delay)
            assert decision.delay <= max(ceiling, capped)
        else:
            assert decision.delay <= ceiling
    if outcome is Outcome.SETTLED:
        assert decision.verb is Verb.RETURN
    if outcome in {Outcome.PERMANENT, Outcome.LOCAL}:
        assert decision.verb is Verb.RAISE


@given(seed=seeds, policy=retry_policies(), start=st.floats(min_value=0.0, max_value=1e6))
def test_a_whole_resend_schedule_fits_in_the_deadline(
    seed: int, policy: RetryPolicy, start: float
) -> None:
    """Following decide's delays from the first failure, no resend starts after the deadline."""
    rng = random.Random(seed)
    deadline = start + policy.deadline
    now = start
    attempt = 1
    resends = 0
    while True:
        decision = decide(
            Outcome.NOT_SENT,
            moves_money=True,
            attempt=attempt,
            policy=policy,
            now=now,
            deadline=deadline,
            rng=rng,
        )
        if decision.verb is not Verb.RESEND:
            break
        now += decision.delay
        attempt += 1
        resends += 1
        assert now < deadline
    assert resends <= policy.attempts - 1


@given(offset=st.integers(min_value=-(10**6), max_value=10**7))
def test_retry_after_http_date_round_trips(offset: int) -> None:
    """An HTTP-date `offset` seconds away reads back as max(0, offset)."""
    now = 1_700_000_000.0
    value = email.utils.formatdate(now + offset, usegmt=True)
    assert retry_after_seconds(value, now_wall=now) == max(0.0, float(offset))


@given(value=st.integers(min_value=0, max_value=10**9))
def test_retry_after_seconds_form_reads_back(value: int) -> None:
    """Delay-seconds reads back as the number."""
    assert retry_after_seconds(str(value), now_wall=0.0) == float(value)


@given(value=st.text(max_size=60))
def test_retry_after_never_raises(value: str) -> None:
    """Any header text gives None or a non-negative number, never an exception."""
    result = retry_after_seconds(value, now_wall=1_700_000_000.0)
    assert result is None or result >= 0.0


# ------------------------------------------------------------------------------------------------
# State machines


class BudgetMachine(RuleBasedStateMachine):
    """The retry budget against a plain-integer model."""

    def __init__(self) -> None:
        super().__init__()
        self.budget = RetryBudget(1)
        self.model = 1

    @initialize(capacity=st.integers(min_value=1, max_value=60))
    def start(self, capacity: int) -> None:
        """Start full at some capacity."""
        self.budget = RetryBudget(capacity)
        self.model = capacity

    @rule(timeout=st.booleans())
    def resend(self, timeout: bool) -> None:
        """A resend is paid for only when affordable, and then costs exactly its price."""
        cost = 10 if timeout else 5
        affordable = self.budget.can_spend(timeout=timeout)
        assert affordable == (self.model >= cost)
        if affordable:
            self.budget.spend(timeout=timeout)
            self.model -= cost

    @rule(timeout=st.booleans())
    def spend_blindly(self, timeout: bool) -> None:
        """Spending without asking first never drives the budget below zero."""
        self.budget.spend(timeout=timeout)
        self.model = max(0, self.model - (10 if timeout else 5))

    @rule()
    def success(self) -> None:
        """A success refunds one token, never above the capacity."""
        self.budget.refund()
        self.model = min(self.budget.capacity, self.model + 1)

    @invariant()
    def bounded(self) -> None:
        """Tokens stay in [0, capacity] and match the model."""
        assert 0 <= self.budget.tokens <= self.budget.capacity
        assert self.budget.tokens == self.model


class BreakerMachine(RuleBasedStateMachine):
    """The circuit breaker against its specification, with time moving forward."""

    def __init__(self) -> None:
        super().__init__()
        self.threshold = 3
        self.cooldown = 5.0
        self.breaker = CircuitBreaker(self.threshold, self.cooldown)
        self.now = 0.0
        self.streak = 0  # consecutive failures recorded while closed
        self.opened_at: float | None = None
        self.probe_out = False
        self.probe_at = 0.0

    @initialize(
        threshold=st.integers(min_value=1, max_value=6),
        cooldown=st.floats(min_value=0.5, max_value=30.0),
    )
    def start(self, threshold: int, cooldown: float) -> None:
        """Start closed."""
        self.threshold = threshold
        self.cooldown = cooldown
        self.breaker = CircuitBreaker(threshold, cooldown)

    @rule(dt=st.floats(min_value=0.0, max_value=20.0))
    def wait(self, dt: float) -> None:
        """Time passes."""
        self.now += dt

    @rule()
    def ask(self) -> None:
        """allow() says yes when closed, no while cooling down, then one probe per cooldown."""
        allowed = self.breaker.allow(self.now)
        if self.opened_at is None:
            assert allowed
            return
        if self.now - self.opened_at < self.cooldown:
            assert not allowed
        elif self.probe_out and self.now - self.probe_at < self.cooldown:
            assert not allowed  # one probe at a time
        else:
            assert allowed  # the first probe, or a replacement for one that never reported
            self.probe_out = True
            self.probe_at = self.now
            assert self.breaker.state is BreakerState.HALF_OPEN

    @precondition(lambda self: self.opened_at is None or self.probe_out)
    @rule(failure=st.booleans())
    def report(self, failure: bool) -> None:
        """A sent request reports back: success closes, failures open at threshold or on a probe."""
        self.breaker.record(failure=failure, now=self.now)
        if not failure:
            self.streak = 0
            self.opened_at = None
            self.probe_out = False
            return
        if self.probe_out:
            self.opened_at = self.now
            self.probe_out = False
            return
        self.streak += 1
        if self.streak >= self.threshold:
            self.opened_at = self.now

    @invariant()
    def state_matches(self) -> None:
        """The breaker's state is the one the specification predicts."""
        if self.opened_at is None:
            assert self.breaker.state is BreakerState.CLOSED
        elif self.probe_out:
            assert self.breaker.state is BreakerState.HALF_OPEN
        else:
            assert self.breaker.state in {BreakerState.OPEN, BreakerState.HALF_OPEN}


TestBudgetMachine = BudgetMachine.TestCase
TestBudgetMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=80, stateful_step_count=40, deadline=None)


@given(threshold=st.integers(min_value=1, max_value=8), cooldown=positive)
def test_breaker_needs_consecutive_failures(threshold: int, cooldown: float) -> None:
    """Failures interleaved with successes never open the breaker below the threshold streak."""
    assume(threshold > 1)
    breaker = CircuitBreaker(threshold, cooldown)
    for _ in range(5):
        for _ in range(threshold - 1):
            breaker.record(failure=True, now=0.0)
        breaker.record(failure=False, now=0.0)
    assert breaker.state is BreakerState.CLOSED
    for _ in range(threshold):
        breaker.record(failure=True, now=1.0)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow(1.0 + cooldown / 2)
