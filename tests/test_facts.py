"""The shared facts: one vocabulary, one default host, one integer check, and no copies of them."""

from __future__ import annotations

import ast
import math
from decimal import Decimal
from pathlib import Path
from typing import get_args

import pytest

from freedompay_async import (
    AmbiguousPaymentError,
    ConfigurationError,
    FreedomPayClient,
    InvoicePayment,
    InvoiceStatus,
    PaymentPending,
    PayOutcome,
    PayRequest,
)
from freedompay_async.facts import (
    DEFAULT_BASE_URL,
    OUTCOME_STATES,
    STATE_BY_INVOICE_STATUS,
    TERMINAL_STATES,
    UNSETTLED_STATES,
    OutcomeState,
    is_integer,
    is_number,
)

PACKAGE = Path(__file__).resolve().parent.parent / "freedompay_async"
REQUEST = PayRequest(customer="c1", user_id="u1", card_token="card-token-0001")


@pytest.mark.parametrize(
    ("value", "integer", "number"),
    [
        (0, True, True),
        (-7, True, True),
        (2**70, True, True),
        (1.5, False, True),
        (math.inf, False, True),
        (True, False, False),
        (False, False, False),
        ("1", False, False),
        (Decimal(1), False, False),
        (None, False, False),
    ],
)
def test_integer_and_number_checks_refuse_bools(value: object, integer: bool, number: bool) -> None:
    """is_integer takes ints but not bools; is_number takes ints and floats but not bools."""
    assert is_integer(value) is integer
    assert is_number(value) is number


def test_the_state_tuple_is_the_state_type() -> None:
    """OUTCOME_STATES is exactly the OutcomeState literals; terminal, unsettled, error cover it."""
    assert get_args(OutcomeState) == OUTCOME_STATES
    assert set(OUTCOME_STATES) == {*TERMINAL_STATES, *UNSETTLED_STATES, "error"}
    assert not TERMINAL_STATES & set(UNSETTLED_STATES)


def test_the_status_table_covers_the_terminal_statuses() -> None:
    """Each terminal InvoiceStatus maps to a terminal state; no other status is in the table."""
    terminal = {status.value for status in InvoiceStatus if status.is_terminal}
    assert set(STATE_BY_INVOICE_STATUS) == terminal
    assert set(STATE_BY_INVOICE_STATUS.values()) == TERMINAL_STATES


def _payment(status: InvoiceStatus) -> InvoicePayment:
    return InvoicePayment(
        invoice_status=status,
        invoice_status_raw=status.value,
        customer="c1",
        order_id="o1",
        invoice_id=1,
        amount=Decimal(10),
        currency="KZT",
    )


@pytest.mark.parametrize(
    ("outcome", "state"),
    [
        (PayOutcome(request=REQUEST, payment=_payment(InvoiceStatus.OK)), "paid"),
        (PayOutcome(request=REQUEST, payment=_payment(InvoiceStatus.FAILED)), "failed"),
        (PayOutcome(request=REQUEST, payment=_payment(InvoiceStatus.INCOMPLETE)), "expired"),
        (PayOutcome(request=REQUEST, payment=_payment(InvoiceStatus.PROCESS)), "pending"),
        (PayOutcome(request=REQUEST, error=PaymentPending("still process")), "pending"),
        (PayOutcome(request=REQUEST, error=AmbiguousPaymentError("lost reply")), "ambiguous"),
        (PayOutcome(request=REQUEST, error=ConfigurationError("bad")), "error"),
    ],
)
def test_outcome_states_come_from_the_vocabulary(outcome: PayOutcome, state: str) -> None:
    """PayOutcome.state speaks the shared vocabulary, and is_terminal agrees with it."""
    assert outcome.state == state
    assert outcome.state in OUTCOME_STATES
    assert outcome.is_terminal is (state in TERMINAL_STATES)


def test_the_client_defaults_to_the_shared_host() -> None:
    """FreedomPayClient's base_url default is facts.DEFAULT_BASE_URL."""
    client = FreedomPayClient("123", "secret-key-1")
    assert f"base_url={DEFAULT_BASE_URL!r}" in repr(client)


def _strings(tree: ast.AST) -> list[str]:
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def _bool_or_not_int_checks(tree: ast.AST) -> list[str]:
    """Every `isinstance(x, bool) or not isinstance(x, ...)` expression, as source."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.Or) and len(node.values) >= 2:
            first, second = node.values[0], node.values[1]
            if (
                isinstance(first, ast.Call)
                and ast.unparse(first.func) == "isinstance"
                and ast.unparse(first.args[1]) == "bool"
                and isinstance(second, ast.UnaryOp)
                and isinstance(second.op, ast.Not)
                and isinstance(second.operand, ast.Call)
                and ast.unparse(second.operand.func) == "isinstance"
            ):
                found.append(ast.unparse(node))
    return found


#: Modules whose own copies are removed separately (the callback and emulator rewrites).
NOT_YET = ("callbacks", "testing")


def _package_modules() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0].removesuffix(".py") not in NOT_YET
    ]


def test_the_default_host_is_written_once() -> None:
    """Only facts.py spells out the production host as a string value."""
    holders = [
        str(path.relative_to(PACKAGE))
        for path in _package_modules()
        if "https://api.freedompay.kz" in _strings(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert holders == ["facts.py"]


def test_no_module_repeats_the_bool_int_check() -> None:
    """`isinstance(x, bool) or not isinstance(x, int)` is facts.is_integer / is_number now."""
    copies = {
        str(path.relative_to(PACKAGE)): checks
        for path in _package_modules()
        if (checks := _bool_or_not_int_checks(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert copies == {}


def test_the_copy_finder_sees_a_copy() -> None:
    """The check finder reports the repeated expression when a module holds one (it can fail)."""
    tree = ast.parse("if isinstance(n, bool) or not isinstance(n, int) or n < 1:\n    pass\n")
    assert _bool_or_not_int_checks(tree) == [
        "isinstance(n, bool) or not isinstance(n, int) or n < 1"
    ]
