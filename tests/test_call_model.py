"""The pure call state machine, driven by hypothesis through arbitrary events, keeps money safe.

The machine plays driver and gateway at once: it asks `Call.next_step`, then answers each send
or status read with any reply or error, lets time pass, lagging status reads answer `new`, and
may cancel or close at any step. It keeps its own record of what the money could be — with its
own table of which results prove a pay was never acted on — and checks after every step:

- no pay is sent while an earlier one may have landed, except the one resend a status of `new`
  allows under the opt-in, read at least the window after the last possible write;
- a call in which a pay may have landed never ends as "nothing charged" (`guard_state` error,
  or an error other than `AmbiguousPaymentError`/`PaymentPending`);
- no sleep ends past the call's deadline (or the poll's end), no send starts after it, and no
  exchange is bounded past it, except a status read's `READ_SLACK` floor.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from freedompay_async import (
    AmbiguousPaymentError,
    CircuitOpenError,
    ClientClosedError,
    ConnectError,
    ConnectionLost,
    ConnectTimeout,
    DecodeError,
    FreedomPayError,
    GatewayError,
    HTTPStatusError,
    InvoicePayment,
    InvoiceStatus,
    PaymentPending,
    PollPolicy,
    PoolTimeout,
    ReadTimeout,
    RetryPolicy,
)
from freedompay_async._call import READ_SLACK, Act, Call
from freedompay_async._protocol import Operation
from freedompay_async._retry import CircuitBreaker, RetryBudget


def _http(code: int) -> HTTPStatusError:
    return HTTPStatusError(f"HTTP {code}", operation="pay", status_code=code)


def _gateway(code: int) -> GatewayError:
    return GatewayError(f"error {code}", operation="pay", error_code=code)


# (name, make the error, proves that this pay attempt was never acted on) — the test's own table.
SEND_ERRORS: list[tuple[str, object, bool]] = [
    ("connect", lambda: ConnectError("refused"), True),
    ("connect-timeout", lambda: ConnectTimeout("slow"), True),
    ("pool-timeout", lambda: PoolTimeout("full"), True),
    ("circuit", lambda: CircuitOpenError("open"), True),
    ("closed", lambda: ClientClosedError("closed"), True),
    ("429", lambda: _http(429), True),
    ("503", lambda: _http(503), True),
    ("400", lambda: _http(400), True),
    ("gateway-600", lambda: _gateway(600), True),
    ("gateway-1000", lambda: _gateway(1000), False),
    ("read-timeout", lambda: ReadTimeout("no reply"), False),
    ("lost", lambda: ConnectionLost("reset"), False),
    ("500", lambda: _http(500), False),
    ("502", lambda: _http(502), False),
    ("101", lambda: _http(101), False),
    ("302", lambda: _http(302), False),
    ("307", lambda: _http(307), False),
    ("decode", lambda: DecodeError("not xml"), False),
]
STATUSES = list(InvoiceStatus)


class CallMachine(RuleBasedStateMachine):
    """Drive one pay `Call` through arbitrary events; the invariants hold after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.call: Call | None = None
        self.now = 1000.0
        self.act: Act | None = None
        self.may_have_landed = False
        self.last_write = 0.0
        self.resend_allowed = False
        self.resends_used = 0
        self.sends = 0
        self.window: float | None = None

    @initialize(
        attempts=st.integers(1, 4),
        deadline=st.sampled_from([0.5, 3.0, 20.0, 60.0]),
        grace=st.sampled_from([0.0, 0.5, 2.0]),
        resend_if_new=st.booleans(),
        wait=st.booleans(),
        shared=st.booleans(),
        seed=st.integers(0, 2**16),
    )
    def start(  # noqa: PLR0917 - hypothesis passes every drawn value by keyword
        self,
        attempts: int,
        deadline: float,
        grace: float,
        resend_if_new: bool,
        wait: bool,
        shared: bool,
        seed: int,
    ) -> None:
        """Start a pay call with a drawn policy."""
        policy = RetryPolicy(
            attempts=attempts,
            deadline=deadline,
            reconcile_grace=grace,
            resend_pay_if_new=resend_if_new,
            backoff_base=0.1,
        )
        self.window = grace if resend_if_new else None
        self.call = Call(
            Operation.PAY,
            policy=policy,
            now=self.now,
            rng=random.Random(seed),
            context={"customer": "c1"},
            wait=wait,
            poll=PollPolicy(interval=0.5, factor=1.5, max_interval=2.0, timeout=10.0),
            budget=RetryBudget(20) if shared else None,
            breaker=CircuitBreaker(3, 1.0) if shared else None,
        )

    def _ended(self) -> bool:
        return self.call is None or self.call.next_act in (Act.DONE, Act.FAIL)

    @precondition(lambda self: self.act is None and not self._ended())
    @rule()
    def next_step(self) -> None:
        """Ask the call what to do, as the driver does."""
        call = self.call
        assert call is not None
        act = call.next_step(self.now)
        if act is Act.SEND:
            assert self.now < call.deadline, "a send started after the deadline"
            assert self.now + call.remaining <= call.deadline, "a send bounded past the deadline"
            if self.may_have_landed:
                assert self.resend_allowed, "a second pay while the first may have landed"
                self.resend_allowed = False
                self.resends_used += 1
            self.sends += 1
            self.act = act
        elif act is Act.ASK_STATUS:
            end = call._poll_end or call.deadline
            assert self.now + call.remaining <= max(end, self.now + READ_SLACK) + 1e-9
            self.act = act
        elif act is Act.SLEEP:
            end = max(call.deadline, call._poll_end)
            # a sleep never ends past its bound; when time already passed it, it is not slept
            assert call.delay <= max(end - self.now, 0.0) + 1e-9, "a sleep past the deadline"
            self.now += call.delay
            call.woke()

    @precondition(lambda self: self.act is Act.SEND)
    @rule(
        reply=st.one_of(
            st.sampled_from(STATUSES).map(lambda s: ("model", s)),
            st.sampled_from(range(len(SEND_ERRORS))).map(lambda i: ("error", i)),
        ),
        took=st.floats(0.0, 5.0),
    )
    def answer_send(self, reply: tuple[str, object], took: float) -> None:
        """The pay's exchange ends, after *took* seconds, with any reply or error."""
        call = self.call
        assert call is not None
        self.now += took
        kind, value = reply
        if kind == "model":
            result: object = InvoicePayment(invoice_status=value)  # type: ignore[arg-type]
            proof = False
        else:
            _name, make, proof = SEND_ERRORS[value]  # type: ignore[index]
            result = make()  # type: ignore[operator]
        if not proof:
            self.may_have_landed = True
            self.last_write = self.now
        self.act = None
        call.record(result, now=self.now, wall=0.0)

    @precondition(lambda self: self.act is Act.ASK_STATUS)
    @rule(
        reply=st.one_of(
            st.sampled_from(STATUSES).map(lambda s: ("model", s)),
            st.sampled_from(range(len(SEND_ERRORS))).map(lambda i: ("error", i)),
        ),
        took=st.floats(0.0, 3.0),
    )
    def answer_status(self, reply: tuple[str, object], took: float) -> None:
        """A status read answers, possibly lagging at new although a pay landed."""
        call = self.call
        assert call is not None
        self.now += took
        kind, value = reply
        result: object
        if kind == "model":
            result = InvoicePayment(invoice_status=value)  # type: ignore[arg-type]
            waited = self.now - self.last_write
            if (
                value is InvoiceStatus.NEW
                and self.window is not None
                and waited >= self.window
                and self.resends_used == 0
            ):
                self.resend_allowed = True
        else:
            result = SEND_ERRORS[value][1]()  # type: ignore[index, operator]
        self.act = None
        call.record(result, now=self.now, wall=0.0)

    @precondition(lambda self: not self._ended())
    @rule()
    def cancel(self) -> None:
        """The caller's task is cancelled at this await."""
        call = self.call
        assert call is not None
        if self.act is Act.SEND:
            self.may_have_landed = True
            self.last_write = self.now
        call.abandon(self.now)
        self.act = None
        self.call = _Ended(call)  # type: ignore[assignment]

    @precondition(lambda self: self.act is None and not self._ended())
    @rule()
    def close(self) -> None:
        """The client closes while the call sleeps or is about to send."""
        call = self.call
        assert call is not None
        call.stop(ClientClosedError("closed"))

    @rule(dt=st.floats(0.0, 1.0))
    def time_passes(self, dt: float) -> None:
        """The event loop is busy elsewhere for a while."""
        self.now += dt

    @invariant()
    def money_is_told_truthfully(self) -> None:
        """An ended call in which a pay may have landed never reports nothing charged."""
        call = self.call
        if call is None:
            return
        if isinstance(call, _Ended):
            if self.may_have_landed:
                assert call.call.guard_state != "error"
            return
        if not self._ended():
            return
        if self.may_have_landed:
            assert call.guard_state != "error", call.error
            if call.error is not None:
                assert isinstance(call.error, AmbiguousPaymentError | PaymentPending), call.error
        if call.next_act is Act.DONE:
            assert isinstance(call.result, InvoicePayment)
        else:
            assert isinstance(call.error, FreedomPayError)


class _Ended:
    """A call the driver gave up on (cancelled)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.next_act = Act.FAIL


CallMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCallMachine = CallMachine.TestCase


def test_a_lagging_new_status_never_resends_by_default() -> None:
    """Pay times out, status lags at new: without the opt-in the call ends ambiguous, one send."""
    call = Call(
        Operation.PAY,
        policy=RetryPolicy(reconcile_grace=1.0),
        now=0.0,
        rng=random.Random(1),
        context={"customer": "c1"},
        poll=PollPolicy(),
    )
    assert call.next_step(0.0) is Act.SEND
    call.record(ReadTimeout("slow"), now=5.0)
    assert call.next_step(5.0) is Act.SLEEP
    call.woke()
    assert call.next_step(7.0) is Act.ASK_STATUS
    call.record(InvoicePayment(invoice_status=InvoiceStatus.NEW), now=7.1)
    assert call.next_step(7.1) is Act.FAIL
    assert isinstance(call.error, AmbiguousPaymentError)
    assert call.guard_state == "ambiguous"


def test_new_read_inside_the_window_is_not_proof_even_with_the_opt_in() -> None:
    """With the opt-in, new read before the window has passed still ends the call ambiguous."""
    call = Call(
        Operation.PAY,
        policy=RetryPolicy(reconcile_grace=2.0, resend_pay_if_new=True),
        now=0.0,
        rng=random.Random(1),
        context={"customer": "c1"},
        poll=PollPolicy(),
    )
    call.next_step(0.0)
    call.record(ConnectionLost("reset"), now=1.0)
    assert call.next_step(1.0) is Act.SLEEP
    call.woke()
    call.next_step(1.5)
    call.record(InvoicePayment(invoice_status=InvoiceStatus.NEW), now=1.5)  # 0.5 s < 2 s
    assert call.next_step(1.5) is Act.FAIL
    assert isinstance(call.error, AmbiguousPaymentError)
