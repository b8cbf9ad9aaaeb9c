"""The shared outcome record, the PAN mask and the CSV reader's refusals, in process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freedompay_async import (
    ConfigurationError,
    GatewayError,
    InvoicePayment,
    InvoiceStatus,
    PayOutcome,
    PayRequest,
)
from freedompay_async.csvinput import CsvInputError, open_pay_csv
from freedompay_async.records import RECORD_FIELDS, intent_record, outcome_record


def test_every_record_has_the_same_keys_and_no_card_token() -> None:
    """Pay, gateway-error and intent records share RECORD_FIELDS and never hold the token."""
    request = PayRequest(customer="c1", user_id="u1", card_token="card-secret-9999", key=7)
    paid = PayOutcome(
        request=request,
        payment=InvoicePayment(invoice_status=InvoiceStatus.OK, card_pan="4405645000006150"),
        attempts=2,
    )
    refused = PayOutcome(
        request=request,
        error=GatewayError(
            "error 100", error_code=100, error_description="Invalid signature", operation="pay"
        ),
    )
    records = [
        outcome_record(paid, line=3, key="k3"),
        outcome_record(refused, source="status"),
        intent_record(request, line=3),
    ]
    assert all(tuple(record) == RECORD_FIELDS for record in records)
    assert records[0]["card_pan"] == "440564******6150"
    assert (records[0]["line"], records[0]["key"], records[0]["state"]) == (3, "k3", "paid")
    assert (records[1]["error"], records[1]["error_code"]) == ("GatewayError", 100)
    assert records[1]["error_description"] == "Invalid signature"
    assert (records[2]["state"], records[2]["source"], records[2]["key"]) == (
        "sending",
        "intent",
        7,
    )
    assert "card-secret" not in json.dumps(records)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"customer,customer,user_id,card_token\n", "names a column twice"),
        (b"customer|user_id\nc|u\n", "must name the columns"),
        (b"customer,user_id,card_token\nc,u,\xe2\x82", "ends inside"),
        (b"customer,user_id,card_token\r\xff,u,t\r", ":2: byte 1 of the line (0xff)"),
    ],
)
def test_an_unusable_csv_is_refused_naming_the_reason(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """A CSV with no header, a repeated column, no known columns or bad bytes is refused."""
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    with pytest.raises(CsvInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_pay_csv(path)


def test_bad_reader_options_and_paths_are_refused(tmp_path: Path) -> None:
    """An unknown codec, a long delimiter, a directory and a missing file are refused."""
    path = tmp_path / "in.csv"
    path.write_text("customer,user_id,card_token\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="unknown codec"):
        open_pay_csv(path, encoding="no-such-codec")
    with pytest.raises(ConfigurationError, match="one character"):
        open_pay_csv(path, delimiter=";;")
    with pytest.raises(CsvInputError, match="directory"):
        open_pay_csv(tmp_path)
    with pytest.raises(CsvInputError, match="cannot read"):
        open_pay_csv(tmp_path / "missing.csv")
    table = open_pay_csv(path, delimiter=",")
    assert table.rows == 0
    assert list(table) == []
    with pytest.raises(RuntimeError, match="read once"):
        list(table)
    table.close()


def test_a_csv_error_pickles_with_its_line() -> None:
    """CsvInputError survives pickle with its path and line (it crosses process boundaries)."""
    import pickle

    error = CsvInputError("in.csv:7: bad", path=Path("in.csv"), line=7)
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.path, again.line) == ("in.csv:7: bad", Path("in.csv"), 7)
    assert isinstance(again, ValueError)


def test_resume_keeps_a_doubt_that_a_later_refusal_does_not_clear() -> None:
    """A duplicate's refusal never clears the intent of a pay still in flight for the customer."""
    from freedompay_async.cli._journal import fold

    priors: dict = {}
    for record in (
        {"customer": "c", "state": "sending", "source": "intent", "finished_at": 10.0},
        {"customer": "c", "state": "sending", "source": "intent", "finished_at": 11.0},
        {"customer": "c", "state": "error", "source": "pay", "finished_at": 12.0},
        {"customer": "d", "state": "sending", "source": "intent", "finished_at": 5.0},
        {"customer": "d", "state": "error", "source": "pay", "finished_at": 6.0},
        {"customer": "e", "state": "ambiguous", "source": "pay", "finished_at": 7.0},
        {"customer": "e", "state": "sending", "source": "intent", "finished_at": 8.0},
        {"customer": "e", "state": "error", "source": "pay", "finished_at": 9.0},
        {"customer": "f", "state": "paid", "source": "status", "finished_at": 1.0},
    ):
        fold(priors, record)
    assert priors["c"].last_write_at == 11.0  # one pay of two is still unaccounted for
    assert priors["d"].last_write_at is None  # its only pay was proven never sent
    assert priors["e"].last_write_at == 7.0  # the earlier ambiguous pay may still land
    assert priors["f"].terminal == "paid"
