"""The `freedompay-async` command line, run as real subprocesses against `emulate`."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SECRET = "cli-test-secret-key"
MERCHANT = "555001"
SCRIPT = shutil.which("freedompay-async", path=str(Path(sys.executable).parent))


def command(*args: str) -> list[str]:
    """Return the argv that runs the command line with *args* (`python -m`)."""
    return [sys.executable, "-m", "freedompay_async", *args]


def environment(**extra: str) -> dict[str, str]:
    """Return an environment with the test credentials and a wide, plain terminal."""
    env = dict(os.environ)
    env.update(
        FREEDOMPAY_SECRET_KEY=SECRET,
        FREEDOMPAY_MERCHANT_ID=MERCHANT,
        COLUMNS="120",
        NO_COLOR="1",
    )
    env.pop("FREEDOMPAY_BASE_URL", None)
    env.update(extra)
    return env


def run(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the command line to completion and capture its output."""
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment(**env),
        check=False,
    )


def admin(base_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the emulator's admin API and return its JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - a loopback http URL
        f"{base_url}/_emulator/{path}", data=data, method=method
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


@pytest.fixture
def emulate() -> Iterator[dict[str, Any]]:
    """`freedompay-async emulate --adversarial` in its own process; yields its first stdout line."""
    process = subprocess.Popen(  # noqa: S603
        command("emulate", "--adversarial", "--merchant-id", MERCHANT, "--seed", "11"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "emulate printed nothing within 20 s"
        info = json.loads(process.stdout.readline())
        yield info
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert process.returncode == 0


def write_csv(path: Path, customers: list[str], *, bad_after: int | None = None) -> int | None:
    """Write a pay-batch CSV for *customers*; return the line number of the malformed row."""
    lines = ["customer,user_id,card_token,key"]
    bad_line = None
    for number, customer in enumerate(customers):
        lines.append(f"{customer},user-{number},card-token-{number:04d}-secret,order-{number}")
        if number == bad_after:
            lines.append("only-a-customer,and-a-user")
            bad_line = len(lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return bad_line


def read_lines(path: Path) -> list[dict[str, Any]]:
    """Parse every line of a JSON-lines file (each must be complete JSON)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


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
    assert re.search(r"total\s*│\s*200\s*│", result.stdout)
    assert re.search(r"paid\s*│\s*1\d\d\s*│", result.stdout)
    assert re.search(r"invoices charged twice\s*│\s*0\b", result.stdout)
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
    assert "expected 4 fields, got 2" in result.stderr
    records = read_lines(out)
    assert sorted(r["customer"] for r in records) == sorted(customers)
    assert {r["state"] for r in records} == {"paid"}
    assert all(re.fullmatch(r"[\dX-]+", r["card_pan"]) for r in records)
    assert "card-token-" not in out.read_text(encoding="utf-8")
    assert "card-token-" not in result.stdout + result.stderr
    assert re.search(r"malformed rows skipped\s*│\s*1\b", result.stdout)
    stats = admin(base_url, "GET", "stats?customers=1")
    assert stats["double_charged"] == []
    assert {c: v["charges"] for c, v in stats["invoices"].items()} == dict.fromkeys(customers, 1)

    status = run("status", "--customer", customers[0], "--base-url", base_url)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["invoice_status"] == "ok"


def test_pay_batch_refuses_to_overwrite_outcomes_without_resume(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """Running pay-batch again on a non-empty OUT without --resume pays nothing and exits 2."""
    base_url = emulate["base_url"]
    customers = admin(base_url, "POST", "invoices", {"count": 3})["customers"]
    source = tmp_path / "invoices.csv"
    write_csv(source, customers)
    out = tmp_path / "outcomes.jsonl"
    assert run("pay-batch", str(source), "--out", str(out), "--base-url", base_url).returncode == 0

    again = run("pay-batch", str(source), "--out", str(out), "--base-url", base_url)

    assert again.returncode == 2
    assert "--resume" in again.stderr
    assert admin(base_url, "GET", "stats")["by_operation"]["pay"] == 3


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
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_text(encoding="utf-8").count("\n") >= 8:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert "SIGTERM" in stderr
    assert "--resume" in stderr
    assert "Outcomes" in stdout

    first = read_lines(out)  # every line is complete JSON
    assert 8 <= len(first) < 40
    assert {r["state"] for r in first} == {"paid"}
    time.sleep(0.3)  # let the emulator finish reading what the killed run wrote
    charged_unrecorded = admin(base_url, "GET", "stats")["committed_pays"] - len(first)
    assert charged_unrecorded >= 1

    admin(base_url, "DELETE", "faults")
    result = run(*argv, "--resume", "--concurrency", "4")

    assert result.returncode == 0, result.stderr
    records = read_lines(out)
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
    while time.monotonic() < deadline and process.poll() is None:
        if out.exists() and out.read_text(encoding="utf-8").count("\n") >= 4:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 143, stderr
    records = read_lines(out)
    assert 4 <= len(records) < 40
    assert {r["state"] for r in records} == {"paid"}
    time.sleep(0.3)
    assert admin(base_url, "GET", "stats")["committed_pays"] == len(records)


def test_resume_skips_terminal_rows_and_settles_the_rest_by_status(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """--resume skips a paid row, tolerates a cut line, and pays an ambiguous-but-new row once."""
    base_url = emulate["base_url"]
    paid, unsure, fresh = admin(base_url, "POST", "invoices", {"count": 3})["customers"]
    out = tmp_path / "outcomes.jsonl"
    first_csv = tmp_path / "first.csv"
    write_csv(first_csv, [paid])
    first = run("pay-batch", str(first_csv), "--out", str(out), "--base-url", base_url)
    assert first.returncode == 0, first.stderr
    ambiguous = {"customer": unsure, "state": "ambiguous", "source": "pay"}
    with out.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(ambiguous) + "\n")
        handle.write('{"customer": "cut short by a crash", "sta')  # no newline: a torn write
    source = tmp_path / "invoices.csv"
    write_csv(source, [paid, unsure, fresh])

    result = run("pay-batch", str(source), "--out", str(out), "--base-url", base_url, "--resume")

    assert result.returncode == 0, result.stderr
    assert f"{out}:3: ignored an unreadable line" in result.stderr
    lines = out.read_text(encoding="utf-8").splitlines()
    new_records = [json.loads(line) for line in lines[3:]]
    assert sorted(r["customer"] for r in new_records) == sorted([unsure, fresh])
    assert {(r["state"], r["source"]) for r in new_records} == {("paid", "pay")}
    stats = admin(base_url, "GET", "stats?customers=1")
    assert stats["by_operation"]["pay"] == 3
    assert stats["by_operation"]["status"] == 2  # the paid row was skipped without a lookup
    assert {v["charges"] for v in stats["invoices"].values()} == {1}
