"""The `freedompay-async` command line, run as real subprocesses against `emulate`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import (
    SCRIPT,
    admin,
    command,
    emulate,
    environment,
    outcomes,
    run,
    write_csv,
)

__all__ = ["emulate"]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(command(), id="python-m"),
        pytest.param([SCRIPT] if SCRIPT else [], id="console-script"),
    ],
)
def test_both_entry_points_run_the_command_line(argv: list[str]) -> None:
    """`python -m freedompay_async` and the `freedompay-async` script both answer --version."""
    if not argv:
        pytest.skip("the freedompay-async script is not installed next to this interpreter")
    result = subprocess.run(  # noqa: S603
        [*argv, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("freedompay-async ")


def test_demo_pays_a_small_batch_and_reports_no_double_charge() -> None:
    """`demo --invoices 200` exits 0, prints the summary, and counts zero double charges."""
    argv = ["demo", "--invoices", "200", "--concurrency", "32", "--fault-rate", "0.1"]
    script = [SCRIPT] if SCRIPT else command()
    result = subprocess.run(  # noqa: S603
        [*script, *argv, "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"total\s+200\n", result.stdout)
    assert re.search(r"paid\s+1\d\d\n", result.stdout)
    assert re.search(r"invoices charged twice\s+0\n", result.stdout)
    assert "No invoice was charged twice." in result.stdout
    assert "Traceback" not in result.stderr


def test_pay_batch_skips_a_malformed_row_and_pays_the_rest(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """A malformed row is reported with its line number; every other row is paid once."""
    base_url = emulate["base_url"]
    customers = admin(base_url, "POST", "invoices", {"count": 12})["customers"]
    source = tmp_path / "invoices.csv"
    bad_line = write_csv(source, customers, bad_after=4)
    out = tmp_path / "outcomes.jsonl"

    result = run("pay-batch", str(source), "--out", str(out), "--base-url", base_url)

    assert result.returncode == 1  # one row was not paid: the malformed one
    assert f"{source}:{bad_line}: skipped a malformed row" in result.stderr
    assert "missing card_token (2 of 4 fields)" in result.stderr
    records = outcomes(out)
    assert sorted(r["customer"] for r in records) == sorted(customers)
    assert {r["state"] for r in records} == {"paid"}
    assert all(re.fullmatch(r"[\dX*-]+", r["card_pan"]) for r in records)
    assert [r["line"] for r in records if r["customer"] == customers[5]] == [bad_line + 1]
    assert "card-token-" not in out.read_text(encoding="utf-8")
    assert "card-token-" not in result.stdout + result.stderr
    assert re.search(r"malformed rows skipped\s+1\n", result.stdout)
    assert re.search(r"rows in the file\s+13\n", result.stdout)
    stats = admin(base_url, "GET", "stats?customers=1")
    assert stats["double_charged"] == []
    assert {c: v["charges"] for c, v in stats["invoices"].items()} == dict.fromkeys(customers, 1)

    status = run("status", "--customer", customers[0], "--base-url", base_url)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["invoice_status"] == "ok"


def test_pay_batch_refuses_to_overwrite_outcomes_without_resume(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """A second run on a non-empty OUT without --resume pays nothing, exits 2, advises --resume."""
    base_url = emulate["base_url"]
    customers = admin(base_url, "POST", "invoices", {"count": 3})["customers"]
    source = tmp_path / "invoices.csv"
    write_csv(source, customers)
    out = tmp_path / "outcomes.jsonl"
    assert run("pay-batch", str(source), "--out", str(out), "--base-url", base_url).returncode == 0

    again = run("pay-batch", str(source), "--out", str(out), "--base-url", base_url)

    assert again.returncode == 2
    assert "--resume" in again.stderr
    assert "another" not in again.stderr  # no advice that would pay the rows again
    assert admin(base_url, "GET", "stats")["by_operation"]["pay"] == 3


def _paid_lines(path: Path) -> int:
    """Count the pay outcome lines written so far (a line may still be partial)."""
    if not path.exists():
        return 0
    return path.read_text(encoding="utf-8").count('"source":"pay"')


def test_killed_pay_batch_resumes_and_charges_every_invoice_exactly_once(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """SIGTERM mid-run leaves complete lines; --resume settles by status and pays the rest once."""
    base_url = emulate["base_url"]
    customers = admin(base_url, "POST", "invoices", {"count": 40})["customers"]
    # Every pay commits at once, then answers 0.4 s later: a kill catches some pays charged
    # but not yet answered, which only a status read can settle.
    admin(
        base_url,
        "POST",
        "faults",
        {
            "fault": {"kind": "delay", "seconds": 0.4, "after_commit": True},
            "operation": "pay",
            "times": 40,
        },
    )
    source = tmp_path / "invoices.csv"
    write_csv(source, customers)
    out = tmp_path / "outcomes.jsonl"
    argv = ["pay-batch", str(source), "--out", str(out), "--base-url", base_url]

    process = subprocess.Popen(  # noqa: S603
        command(*argv, "--concurrency", "4", "--grace", "0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None and _paid_lines(out) < 8:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert "SIGTERM" in stderr
    cut_off = re.search(r"pays in flight when stopped \(outcome unknown\)\s+(\d+)\n", stdout)
    assert cut_off is not None, stdout
    assert "--resume" in stdout
    assert "Outcomes" in stdout

    first = outcomes(out)  # every line is complete JSON
    assert 8 <= len(first) < 40
    assert {r["state"] for r in first} == {"paid"}
    time.sleep(0.3)  # let the emulator finish reading what the killed run wrote
    charged_unrecorded = admin(base_url, "GET", "stats")["committed_pays"] - len(first)
    assert charged_unrecorded >= 1
    assert int(cut_off.group(1)) >= charged_unrecorded
    requests = re.search(r"requests sent\s+(\d+)\n", stdout)
    assert requests is not None
    served = admin(base_url, "GET", "stats")["requests"]
    # Every request the emulator served is counted, cut-off pays included; a pay cancelled
    # between being counted and being written may add one per pay cut off.
    assert served <= int(requests.group(1)) <= served + int(cut_off.group(1))

    admin(base_url, "DELETE", "faults")
    # A pay cut off before it reached the gateway reads `new`: 0.2 s after its intent, that
    # proves it never landed (the emulator applies a pay the moment it reads it).
    result = run(*argv, "--resume", "--concurrency", "4", "--settle-window", "0.2")

    assert result.returncode == 0, result.stdout + result.stderr
    records = outcomes(out)
    assert sorted(r["customer"] for r in records) == sorted(customers)
    assert {r["state"] for r in records} == {"paid"}
    by_status = [r for r in records[len(first) :] if r["source"] == "status"]
    assert len(by_status) == charged_unrecorded
    stats = admin(base_url, "GET", "stats?customers=1")
    assert stats["double_charged"] == []
    assert stats["by_operation"]["pay"] == 40
    assert {c: v["charges"] for c, v in stats["invoices"].items()} == dict.fromkeys(customers, 1)
    assert {v["status"] for v in stats["invoices"].values()} == {"ok"}


def test_pay_batch_needs_the_secret_in_the_environment(tmp_path: Path) -> None:
    """Without the secret key variable, pay-batch exits 2 with a clear message and sends nothing."""
    source = tmp_path / "invoices.csv"
    write_csv(source, ["c-1"])
    result = run(
        "pay-batch",
        str(source),
        "--out",
        str(tmp_path / "out.jsonl"),
        "--base-url",
        "http://127.0.0.1:9",
        "--secret-key-env",
        "NO_SUCH_SECRET_VARIABLE",
    )
    assert result.returncode == 2
    assert "NO_SUCH_SECRET_VARIABLE" in result.stderr
    assert "Traceback" not in result.stderr


def test_pay_batch_refuses_a_csv_without_the_required_columns(tmp_path: Path) -> None:
    """A CSV whose header lacks card_token is refused with its line number, exit status 2."""
    source = tmp_path / "invoices.csv"
    source.write_text("customer,user_id\nc-1,u-1\n", encoding="utf-8")
    result = run("pay-batch", str(source), "--out", str(tmp_path / "out.jsonl"))
    assert result.returncode == 2
    assert f"{source}:1:" in result.stderr
    assert "card_token" in result.stderr


def test_sigterm_with_a_grace_period_writes_every_payment_in_flight(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """With a grace period, SIGTERM lets the pays in flight finish: every charge has its line."""
    base_url = emulate["base_url"]
    customers = admin(base_url, "POST", "invoices", {"count": 40})["customers"]
    slow = {"fault": {"kind": "delay", "seconds": 0.3, "after_commit": True}, "operation": "pay"}
    admin(base_url, "POST", "faults", {**slow, "times": 40})
    source = tmp_path / "invoices.csv"
    write_csv(source, customers)
    out = tmp_path / "outcomes.jsonl"
    process = subprocess.Popen(  # noqa: S603
        command(
            *("pay-batch", str(source), "--out", str(out), "--base-url", base_url),
            *("--concurrency", "4", "--grace", "20"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None and _paid_lines(out) < 4:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 143, stderr
    assert re.search(r"pays in flight when stopped \(outcome unknown\)\s+0\n", stdout)
    records = outcomes(out)
    assert 4 <= len(records) < 40
    assert {r["state"] for r in records} == {"paid"}
    time.sleep(0.3)
    assert admin(base_url, "GET", "stats")["committed_pays"] == len(records)


def _whole_records(path: Path) -> list[dict[str, Any]]:
    """The outcome records of a file that may hold one torn line (which is left out)."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            assert not line.endswith("}")
    return [r for r in records if r.get("source") != "intent"]


def test_resume_skips_terminal_rows_and_leaves_a_pay_in_doubt_unpaid(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """--resume skips a paid row, tolerates a cut line, and pays an in-doubt row only later."""
    base_url = emulate["base_url"]
    paid, unsure, fresh = admin(base_url, "POST", "invoices", {"count": 3})["customers"]
    out = tmp_path / "outcomes.jsonl"
    first_csv = tmp_path / "first.csv"
    write_csv(first_csv, [paid])
    first = run("pay-batch", str(first_csv), "--out", str(out), "--base-url", base_url)
    assert first.returncode == 0, first.stderr
    # A pay of `unsure` may have been sent two minutes ago: its reply was lost.
    ambiguous = {
        "customer": unsure,
        "state": "ambiguous",
        "source": "pay",
        "finished_at": time.time() - 120,
    }
    with out.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(ambiguous) + "\n")
        handle.write('{"customer": "cut short by a crash", "sta')  # no newline: a torn write
    source = tmp_path / "invoices.csv"
    write_csv(source, [paid, unsure, fresh])
    argv = ("pay-batch", str(source), "--out", str(out), "--base-url", base_url, "--resume")
    before = admin(base_url, "GET", "stats")["by_operation"]

    result = run(*argv, "--settle-window", "600")

    assert result.returncode == 3, result.stderr  # an outcome is unknown
    assert f"{out}:" in result.stderr
    assert "ignored an unreadable line" in result.stderr
    assert "--resume" in result.stdout
    after = admin(base_url, "GET", "stats")["by_operation"]
    assert after["status"] - before["status"] == 2  # the paid row was skipped without a lookup
    assert after["pay"] - before["pay"] == 1  # only the fresh row
    in_doubt = [r for r in _whole_records(out) if r["customer"] == unsure]
    assert [(r["state"], r["source"]) for r in in_doubt] == [
        ("ambiguous", "pay"),
        ("ambiguous", "status"),
    ]

    # Two minutes after the last possible write, a status of `new` proves it never landed.
    again = run(*argv, "--settle-window", "60")

    assert again.returncode == 0, again.stdout + again.stderr
    stats = admin(base_url, "GET", "stats?customers=1")
    assert stats["by_operation"]["pay"] == 3
    assert {v["charges"] for v in stats["invoices"].values()} == {1}
    paid_now = {r["customer"] for r in _whole_records(out) if r["state"] == "paid"}
    assert paid_now == {paid, unsure, fresh}
