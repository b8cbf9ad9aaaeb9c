"""CSV input through the real console script: encodings, delimiters, BOMs, line numbers."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_support import admin, command, emulate, environment, outcomes, run
from redis_server import RedisServer

from freedompay_async.csvinput import BadRow, PayRow, open_pay_csv

__all__ = ["emulate"]


def _rows(customers: list[str], *, user: str = "user") -> list[list[str]]:
    return [
        [c, f"{user}-{n}", f"card-token-{n:05d}-secret", f"k{n}"] for n, c in enumerate(customers)
    ]


def _write(path: Path, rows: list[list[str]], *, sep: str = ",", encoding: str = "utf-8") -> None:
    lines = [sep.join(["customer", "user_id", "card_token", "key"])]
    lines += [sep.join(row) for row in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))


def test_a_latin1_byte_on_line_1502_is_refused_before_anything_is_paid(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """One Latin-1 byte on line 1502 stops the run up front, naming that line and byte."""
    base_url = emulate["base_url"]
    customers = admin(base_url, "POST", "invoices", {"count": 2000})["customers"]
    rows = _rows(customers)
    rows[1500][1] = "Jos\xe9"  # line 1502: the header is line 1
    source = tmp_path / "export.csv"
    _write(source, rows, encoding="latin-1")
    out = tmp_path / "out.jsonl"

    refused = run("pay-batch", str(source), "--out", str(out), "--base-url", base_url)

    assert refused.returncode == 2, refused.stderr
    byte = len(customers[1500]) + len(",Jos") + 1
    assert f"{source}:1502: byte {byte} of the line (0xe9) is not valid utf-8-sig" in refused.stderr
    assert "--encoding" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert admin(base_url, "GET", "stats")["requests"] == 0  # nothing was even asked

    read = run(
        *("pay-batch", str(source), "--out", str(out), "--base-url", base_url),
        *("--encoding", "cp1251", "--concurrency", "32"),
        timeout=180,
    )

    assert read.returncode == 0, read.stdout + read.stderr
    records = outcomes(out)
    assert len(records) == 2000
    assert {r["state"] for r in records} == {"paid"}
    line_of = {c: n + 2 for n, c in enumerate(customers)}
    assert all(r["line"] == line_of[r["customer"]] for r in records)
    assert [r["user_id"] for r in records if r["line"] == 1502] == ["Josй"]  # cp1251's 0xe9
    assert admin(base_url, "GET", "stats")["double_charged"] == []


def test_a_semicolon_export_in_cp1251_is_paid(emulate: dict[str, Any], tmp_path: Path) -> None:
    """A 1C-style export (semicolons, cp1251, CRLF) is sniffed and paid; names survive intact."""
    base_url = emulate["base_url"]
    customers = admin(base_url, "POST", "invoices", {"count": 6})["customers"]
    source = tmp_path / "1c.csv"
    _write(source, _rows(customers, user="Пётр"), sep=";", encoding="cp1251")
    out = tmp_path / "out.jsonl"

    result = run(
        "pay-batch", str(source), "--out", str(out), "--base-url", base_url, "--encoding", "cp1251"
    )

    assert result.returncode == 0, result.stdout + result.stderr
    records = outcomes(out)
    assert sorted(r["user_id"] for r in records) == [f"Пётр-{n}" for n in range(6)]
    assert {r["state"] for r in records} == {"paid"}


def test_a_bom_csv_with_a_multiline_field_keeps_editor_line_numbers(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """A BOM is dropped; a quoted field over two lines shifts every later line number by one."""
    base_url = emulate["base_url"]
    customers = admin(base_url, "POST", "invoices", {"count": 3})["customers"]
    source = tmp_path / "bom.csv"
    text = (
        "\ufeffcustomer,user_id,card_token,key\n"
        f'{customers[0]},u0,card-0,"two\nlines"\n'
        "only-a-customer\n"
        f"{customers[1]},u1,card-1,k1\n"
        "\n"
        f"{customers[2]},u2,card-2,k2\n"
    )
    source.write_text(text, encoding="utf-8")
    out = tmp_path / "out.jsonl"

    result = run("pay-batch", str(source), "--out", str(out), "--base-url", base_url)

    assert result.returncode == 1, result.stderr  # the malformed row was not paid
    assert f"{source}:4: skipped a malformed row: missing user_id, card_token" in result.stderr
    lines = {r["customer"]: r["line"] for r in outcomes(out)}
    assert lines == {customers[0]: 2, customers[1]: 5, customers[2]: 7}
    assert re.search(r"rows in the file\s+4\n", result.stdout)


def test_every_record_is_a_row_or_a_bad_row_and_nothing_else(tmp_path: Path) -> None:
    """The reader's count equals its good plus bad rows, even around an unclosed quote."""
    source = tmp_path / "mixed.csv"
    source.write_text(
        'customer;user_id;card_token\nc1;u1;t1\n;u2;t2\nc3;u3;t3;extra\n\nc4;"u\n4";t4\nc5;"u5;t5\n',
        encoding="utf-8",
    )
    table = open_pay_csv(source)
    with table:
        rows = list(table)
    assert table.delimiter == ";"
    assert table.rows == len(rows) == 5
    assert [(type(r).__name__, r.line) for r in rows] == [
        ("PayRow", 2),
        ("BadRow", 3),
        ("BadRow", 4),
        ("PayRow", 6),
        ("BadRow", 8),
    ]
    assert isinstance(rows[0], PayRow)
    assert "card_token" not in repr(rows[0]).replace("card_token=", "")
    assert "t1" not in repr(rows[0])
    assert isinstance(rows[1], BadRow)
    assert rows[1].reason.startswith("missing customer")


@pytest.mark.blocking_ok
def test_enqueue_reads_the_same_bom_file_as_pay_batch(tmp_path: Path) -> None:
    """Enqueue accepts the BOM CSV pay-batch accepts, names the same bad line, queues the rest."""
    from redis import Redis

    source = tmp_path / "bom.csv"
    source.write_text(
        "\ufeffcustomer,user_id,card_token\r\nc1,u1,card-1\r\nc2,,card-2\r\nc3,u3,card-3\r\n",
        encoding="utf-8",
    )
    with RedisServer.running() as server:
        result = subprocess.run(  # noqa: S603
            command("enqueue", str(source), "--redis", server.url, "--queue", "q"),
            capture_output=True,
            text=True,
            timeout=60,
            env=environment(),
            check=False,
        )
        client = Redis.from_url(server.url)
        try:
            queued = sorted(client.zrange("q", 0, -1))
        finally:
            client.close()
    assert result.returncode == 1, result.stderr  # one malformed row
    assert f"{source}:3: skipped a malformed row: missing user_id" in result.stderr
    assert '"enqueued":2' in result.stdout
    assert queued == [b"freedompay:pay:c1", b"freedompay:pay:c3"]


def test_enqueue_with_redis_down_says_so_in_one_line(tmp_path: Path) -> None:
    """Enqueue against a closed Redis port exits 2 with one line and no traceback."""
    source = tmp_path / "in.csv"
    source.write_text("customer,user_id,card_token\nc1,u1,card-1\n", encoding="utf-8")
    result = run("enqueue", str(source), "--redis", "redis://127.0.0.1:9/0", timeout=90)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "cannot use Redis at 127.0.0.1:9" in lines[0]
    assert "--redis" in lines[0]
