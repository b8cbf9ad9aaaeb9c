"""What a get_status3 read proves about a refund, cancel or capture that may have been written."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from freedompay_async import ConfigurationError, PaymentState, PaymentStatus, RefundEntry
from freedompay_async._classic_models import ClassicOperation, RevokeEntry
from freedompay_async._classic_settle import refundable_amount, settle_write
from freedompay_async.settlement import SettlePolicy, Verdict

REFUND = ClassicOperation.REFUND
CANCEL = ClassicOperation.CANCEL
CAPTURE = ClassicOperation.CAPTURE
D = Decimal


def paid(*refunds: tuple[int, str], amount: str = "100", **extra: object) -> PaymentStatus:
    """A captured payment with the given (refund id, amount) entries, all succeeded."""
    entries = tuple(
        RefundEntry(payment_id=pid, state=PaymentState.SUCCESS, amount=D(value))
        for pid, value in refunds
    )
    fields: dict[str, object] = {
        "payment_id": 1,
        "state": PaymentState.SUCCESS,
        "amount": D(amount),
        "captured": True,
        "clearing_amount": D(amount),
        "refunds": entries,
        "refund_amount": sum((e.amount or D(0) for e in entries), D(0)) or None,
    }
    fields.update(extra)
    return PaymentStatus(**fields)  # type: ignore[arg-type]


def judge(
    operation: ClassicOperation,
    before: PaymentStatus | None,
    after: PaymentStatus,
    *,
    amount: Decimal | None = None,
    elapsed: float = 1.0,
    window: float | None = None,
    written: bool = True,
) -> Verdict:
    """Run the rule with a read taken *elapsed* seconds after the last write."""
    return settle_write(
        operation,
        amount=amount,
        before=before,
        after=after,
        read_at=100.0 + elapsed,
        last_write_at=100.0 if written else None,
        policy=SettlePolicy(new_proves_not_landed_after=window),
    ).verdict


def test_a_new_refund_of_the_asked_amount_settles() -> None:
    """A refund entry that was not there before, of the asked amount, proves the refund."""
    finding = settle_write(
        REFUND,
        amount=D("10"),
        before=paid((2, "5")),
        after=paid((2, "5"), (3, "10")),
        read_at=1.0,
        last_write_at=0.0,
    )
    assert finding.verdict is Verdict.SETTLED
    assert finding.refund is not None
    assert finding.refund.payment_id == 3


def test_an_old_refund_of_the_same_amount_is_not_taken_for_the_new_one() -> None:
    """A refund of the same amount that existed before the write proves nothing."""
    assert judge(REFUND, paid((2, "10")), paid((2, "10")), amount=D(10)) is Verdict.IN_DOUBT


def test_a_pending_or_failed_refund_entry() -> None:
    """A new entry still processing is PENDING; a failed one is SETTLED (never resent)."""
    for state, verdict in (
        (PaymentState.PROCESSING, Verdict.PENDING),
        (PaymentState.FAILED, Verdict.SETTLED),
    ):
        entry = RefundEntry(payment_id=9, state=state, amount=D(10))
        after = paid(refunds=(entry,), refund_amount=None)
        assert judge(REFUND, paid(), after, amount=D(10)) is verdict


def test_a_refund_of_another_amount_is_not_attributed() -> None:
    """A new refund of a different amount leaves the write in doubt."""
    assert judge(REFUND, paid(), paid((5, "7")), amount=D(10)) is Verdict.IN_DOUBT


def test_totals_alone_prove_a_refund_when_they_grew_by_the_asked_amount() -> None:
    """Without a refund list, the refunded total growing by the amount proves it."""
    before = paid(refund_amount=D(5), refunds=())
    assert (
        judge(REFUND, before, paid(refund_amount=D(15), refunds=()), amount=D(10))
        is Verdict.SETTLED
    )
    assert (
        judge(REFUND, before, paid(refund_amount=D(12), refunds=()), amount=D(10))
        is Verdict.IN_DOUBT
    )


def test_a_full_refund_is_judged_against_what_was_left() -> None:
    """amount=None expects a refund of the remainder; a fully refunded payment settles."""
    before = paid((2, "30"))
    after = paid((2, "30"), (3, "70"), state=PaymentState.REFUNDED)
    assert judge(REFUND, before, after, amount=None) is Verdict.SETTLED
    bare = paid(state=PaymentState.REFUNDED, refunds=())
    assert judge(REFUND, None, bare, amount=None) is Verdict.SETTLED


def test_unchanged_status_is_proof_only_after_the_window() -> None:
    """No trace: NOT_LANDED if never sent or the window passed, else IN_DOUBT."""
    same = paid()
    assert judge(REFUND, same, same, amount=D(1), written=False) is Verdict.NOT_LANDED
    assert judge(REFUND, same, same, amount=D(1)) is Verdict.IN_DOUBT
    assert judge(REFUND, same, same, amount=D(1), window=5.0, elapsed=4.9) is Verdict.IN_DOUBT
    assert judge(REFUND, same, same, amount=D(1), window=5.0, elapsed=5.0) is Verdict.NOT_LANDED


def test_capture_rows() -> None:
    """Captured settles; cancelled or failed settles; an untouched hold waits for the window."""
    hold = paid(captured=False, clearing_amount=None)
    assert judge(CAPTURE, hold, paid()) is Verdict.SETTLED
    assert judge(CAPTURE, hold, paid(captured=None, clearing_amount=D(50))) is Verdict.SETTLED
    cancelled = paid(captured=False, clearing_amount=None, state=PaymentState.REVOKED)
    assert judge(CAPTURE, hold, cancelled) is Verdict.SETTLED
    failed = paid(captured=False, clearing_amount=None, state=PaymentState.FAILED)
    assert judge(CAPTURE, hold, failed) is Verdict.SETTLED
    assert judge(CAPTURE, hold, hold) is Verdict.IN_DOUBT
    assert judge(CAPTURE, hold, hold, window=2.0, elapsed=3.0) is Verdict.NOT_LANDED


def test_cancel_rows() -> None:
    """A new reversal or revoked amount settles; captured settles; a pending reversal waits."""
    hold = paid(captured=False, clearing_amount=None)
    reversal = RevokeEntry(payment_id=4, state=PaymentState.SUCCESS)
    assert judge(CANCEL, hold, paid(captured=False, revocations=(reversal,))) is Verdict.SETTLED
    assert judge(CANCEL, hold, paid(captured=False, revoked_amount=D(100))) is Verdict.SETTLED
    assert judge(CANCEL, hold, paid()) is Verdict.SETTLED
    waiting = RevokeEntry(payment_id=4, state=PaymentState.WAITING)
    assert judge(CANCEL, hold, paid(captured=False, revocations=(waiting,))) is Verdict.PENDING
    assert judge(CANCEL, hold, hold) is Verdict.IN_DOUBT


def test_reads_of_two_payments_or_a_read_operation_are_refused() -> None:
    """The rule refuses reads of different payments and operations that move no money."""
    with pytest.raises(ConfigurationError, match="same payment_id"):
        judge(REFUND, paid(payment_id=1), paid(payment_id=2), amount=D(1))
    with pytest.raises(ConfigurationError, match="refund, cancel or capture"):
        judge(ClassicOperation.PAYMENT_STATUS, None, paid())


def test_refundable_amount() -> None:
    """What is left to refund: cleared (else paid) minus refunded, never negative."""
    assert refundable_amount(paid((2, "30"))) == D(70)
    assert refundable_amount(paid(clearing_amount=D(60))) == D(60)
    assert refundable_amount(paid((2, "100"), (3, "5"))) == D(0)
    assert refundable_amount(PaymentStatus(payment_id=1, state=PaymentState.SUCCESS)) is None


# -- properties: a simulated gateway with status lag ---------------------------------------

money = st.decimals(min_value=D("0.01"), max_value=D(500), places=2)


@given(
    amount=money,
    prior=st.lists(money, max_size=3),
    ask=st.one_of(st.none(), money),
    try_land=st.booleans(),
    other=st.one_of(st.none(), money),
    listed=st.booleans(),
    with_before=st.booleans(),
    lag=st.floats(min_value=0, max_value=30),
    elapsed=st.floats(min_value=0, max_value=60),
    window=st.one_of(st.none(), st.floats(min_value=0, max_value=60)),
)
def test_refund_rule_never_says_not_landed_for_a_refund_that_landed(
    *,
    amount: Decimal,
    prior: list[Decimal],
    ask: Decimal | None,
    try_land: bool,
    other: Decimal | None,
    listed: bool,
    with_before: bool,
    lag: float,
    elapsed: float,
    window: float | None,
) -> None:
    """NOT_LANDED only when our refund did not land, if the gateway lags less than the window."""
    assume(sum(prior, D(0)) <= amount)
    assume(window is None or lag <= window)
    refunded = sum(prior, D(0))
    wanted = ask if ask is not None else amount - refunded
    landed = try_land and D(0) < wanted <= amount - refunded
    rows = [(i + 1, value) for i, value in enumerate(prior)]
    visible = elapsed >= lag
    shown = list(rows)
    if landed and visible:
        shown.append((100, wanted))
    if other is not None and visible and sum((v for _, v in shown), D(0)) + other <= amount:
        shown.append((200, other))

    def status(entries: list[tuple[int, Decimal]]) -> PaymentStatus:
        total = sum((v for _, v in entries), D(0))
        return paid(
            *((pid, str(v)) for pid, v in entries) if listed else (),
            amount=str(amount),
            refund_amount=total or None,
            state=PaymentState.REFUNDED if total == amount else PaymentState.SUCCESS,
        )

    before = status(rows) if with_before else None
    verdict = judge(REFUND, before, status(shown), amount=ask, elapsed=elapsed, window=window)
    if verdict is Verdict.NOT_LANDED:
        assert not landed
    if landed and visible and other is None and with_before and wanted > 0:
        assert verdict is Verdict.SETTLED
    if window is None:
        assert verdict is not Verdict.NOT_LANDED


@given(
    landed=st.booleans(),
    already=st.booleans(),
    cancelled=st.booleans(),
    lag=st.floats(min_value=0, max_value=30),
    elapsed=st.floats(min_value=0, max_value=60),
    window=st.one_of(st.none(), st.floats(min_value=0, max_value=60)),
)
def test_capture_rule_never_allows_a_second_capture(
    *,
    landed: bool,
    already: bool,
    cancelled: bool,
    lag: float,
    elapsed: float,
    window: float | None,
) -> None:
    """NOT_LANDED only for a hold that no capture reached; a captured hold always settles."""
    assume(window is None or lag <= window)
    assume(not (cancelled and (already or landed)))
    hold = paid(captured=False, clearing_amount=None)
    before = paid() if already else hold
    captured = already or (landed and elapsed >= lag)
    after = paid() if captured else hold
    if cancelled:
        after = paid(captured=False, clearing_amount=None, state=PaymentState.REVOKED)
    verdict = judge(CAPTURE, before, after, elapsed=elapsed, window=window)
    if verdict is Verdict.NOT_LANDED:
        assert not landed
        assert not already
    if captured or cancelled:
        assert verdict is Verdict.SETTLED
