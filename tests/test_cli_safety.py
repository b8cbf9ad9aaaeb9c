"""The command line never pays twice, stops early on systemic errors, shows no traceback."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from cli_support import (
    MERCHANT,
    admin,
    command,
    emulate,
    environment,
    outcomes,
    run,
    write_csv,
)

__all__ = ["emulate"]


def _batch(base_url: str, tmp_path: Path, count: int, name: str = "in") -> tuple[Path, list[str]]:
    customers = admin(base_url, "POST", "invoices", {"count": count})["customers"]
    source = tmp_path / f"{name}.csv"
    write_csv(source, customers)
    return source, customers


def test_a_second_run_with_a_new_out_charges_nobody_twice(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """Paying the same CSV again into a new --out reads each status and pays nothing twice."""
    base_url = emulate["base_url"]  # adversarial: a second pay would charge again
    source, customers = _batch(base_url, tmp_path, 10)
    first = run(
        "pay-batch", str(source), "--out", str(tmp_path / "a.jsonl"), "--base-url", base_url
    )
    assert first.returncode == 0, first.stderr

    second_out = tmp_path / "b.jsonl"
    second = run("pay-batch", str(source), "--out", str(second_out), "--base-url", base_url)

    assert second.returncode == 0, second.stdout + second.stderr
    records = outcomes(second_out)
    assert {(r["state"], r["source"]) for r in records} == {("paid", "status")}
    stats = admin(base_url, "GET", "stats?customers=1")
    assert stats["double_charged"] == []
    assert stats["by_operation"]["pay"] == 10
    assert {c: v["charges"] for c, v in stats["invoices"].items()} == dict.fromkeys(customers, 1)


def test_a_wrong_secret_names_error_100_and_stops_early(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """With a wrong key the run stops after a few identical failures, naming error 100 and why."""
    base_url = emulate["base_url"]
    source, _ = _batch(base_url, tmp_path, 60)

    result = run(
        *("pay-batch", str(source), "--out", str(tmp_path / "o.jsonl"), "--base-url", base_url),
        *("--concurrency", "2", "--json"),
        FREEDOMPAY_SECRET_KEY="not-the-key",
    )

    assert result.returncode == 2, result.stderr
    assert "stopped after 5 identical failures (GatewayError 100" in result.stderr
    assert "secret key in $FREEDOMPAY_SECRET_KEY" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["stopped"] == "systemic"
    assert summary["failures"][0]["kind"] == "GatewayError"
    assert summary["failures"][0]["code"] == "100"
    assert "signature" in summary["failures"][0]["message"].lower()
    assert summary["not_started"] >= 50  # stopped early, not tried on every row
    assert "--resume" in summary["resume_command"]
    stats = admin(base_url, "GET", "stats")
    assert stats["by_operation"]["pay"] == 0
    assert stats["requests"] + stats["rejected_signatures"] < 20


def test_an_unreachable_host_stops_early_and_names_it(tmp_path: Path) -> None:
    """A host that refuses connections stops the run after a few rows and names the host."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed when the block ends: nobody listens there
    source = tmp_path / "in.csv"
    write_csv(source, [f"c{n}" for n in range(50)])
    result = run(
        *("pay-batch", str(source), "--out", str(tmp_path / "o.jsonl")),
        *("--base-url", f"http://127.0.0.1:{port}", "--concurrency", "2"),
    )
    assert result.returncode == 2, result.stderr
    assert f"cannot reach 127.0.0.1:{port}" in result.stderr
    assert "check --base-url" in result.stderr
    rows_not_started = re.search(r"rows not started\s+(\d+)\n", result.stdout)
    assert rows_not_started is not None
    assert int(rows_not_started.group(1)) >= 40
    assert "Traceback" not in result.stderr


def test_exit_status_1_when_a_card_is_declined(emulate: dict[str, Any], tmp_path: Path) -> None:
    """A finished run with one declined card exits 1 and shows the decline's code and text."""
    base_url = emulate["base_url"]
    source, _ = _batch(base_url, tmp_path, 4)
    fate = {"kind": "declined", "error_code": 51, "description": "Insufficient funds"}
    admin(base_url, "POST", "cards", {"card_token": "card-token-0002-secret", "fate": fate})

    result = run(
        "pay-batch", str(source), "--out", str(tmp_path / "o.jsonl"), "--base-url", base_url
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"declined 51\s+1\s+Insufficient funds", result.stdout), result.stdout
    assert "Finished" in result.stdout


def test_exit_status_3_when_a_pay_is_in_doubt(emulate: dict[str, Any], tmp_path: Path) -> None:
    """A pay whose reply is lost and whose status still reads new exits 3 with --resume advice."""
    base_url = emulate["base_url"]
    source, customers = _batch(base_url, tmp_path, 3)
    # The pay is charged, its reply is lost, and the status keeps reading `new` for a while.
    drop = {"fault": {"kind": "drop", "after_commit": True}, "customer": customers[1]}
    stale = {"fault": {"kind": "stale_status", "reads": 20}, "customer": customers[1]}
    admin(base_url, "POST", "faults", drop)
    admin(base_url, "POST", "faults", stale)
    out = tmp_path / "o.jsonl"

    result = run("pay-batch", str(source), "--out", str(out), "--base-url", base_url)

    assert result.returncode == 3, result.stdout + result.stderr
    assert "pay-batch" in result.stdout
    assert "--resume" in result.stdout
    states = {r["customer"]: r["state"] for r in outcomes(out)}
    assert states[customers[1]] == "ambiguous"
    assert admin(base_url, "GET", "stats")["double_charged"] == []


def test_sigint_exits_130_with_the_resume_command(emulate: dict[str, Any], tmp_path: Path) -> None:
    """SIGINT stops the run gracefully: exit 130 and the exact --resume command in the summary."""
    base_url = emulate["base_url"]
    source, _ = _batch(base_url, tmp_path, 30)
    slow = {"fault": {"kind": "delay", "seconds": 0.3}, "operation": "pay", "times": 30}
    admin(base_url, "POST", "faults", slow)
    out = tmp_path / "o.jsonl"
    argv = ["pay-batch", str(source), "--out", str(out), "--base-url", base_url]
    process = subprocess.Popen(  # noqa: S603
        command(*argv, "--concurrency", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (out.exists() and '"pay"' in out.read_text()):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    resume = f"freedompay-async pay-batch {source} --out {out} --base-url {base_url}"
    assert f"{resume} --concurrency 2 --resume\n" in stdout


def test_emulate_on_a_busy_port_says_so_in_one_line(emulate: dict[str, Any]) -> None:
    """`emulate --port` on a port in use exits 2 with one line naming the port."""
    port = emulate["base_url"].rsplit(":", 1)[1]
    result = run("emulate", "--port", port, timeout=30)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in result.stderr


def test_a_base_url_with_a_bad_port_is_a_usage_error(tmp_path: Path) -> None:
    """`--base-url http://127.0.0.1:99999` exits 2 with one line, before anything is sent."""
    source = tmp_path / "in.csv"
    write_csv(source, ["c1"])
    for argv in (
        ("pay-batch", str(source), "--out", str(tmp_path / "o.jsonl")),
        ("status", "--customer", "c1"),
    ):
        result = run(*argv, "--base-url", "http://127.0.0.1:99999")
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        assert "Port out of range" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_a_full_disk_mid_run_stops_with_resume_advice_and_pays_nobody_twice(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """When OUT cannot grow mid-run: exit 3, no traceback; --resume then pays each invoice once."""
    base_url = emulate["base_url"]
    source, customers = _batch(base_url, tmp_path, 40)
    out = tmp_path / "o.jsonl"
    argv = ["pay-batch", str(source), "--out", str(out), "--base-url", base_url]
    env = {k: v for k, v in environment().items() if not k.startswith("COVERAGE_")}

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    full = subprocess.run(  # noqa: S603 - the limit is set in the child only
        command(*argv, "--concurrency", "2"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
        preexec_fn=small_files,
    )

    assert full.returncode == 3, full.stdout + full.stderr
    assert "Traceback" not in full.stderr
    assert "File too large" in full.stdout
    assert "--resume" in full.stdout
    assert 0 < len(outcomes_tolerant(out)) < 40

    again = run(*argv, "--resume")

    assert again.returncode == 0, again.stdout + again.stderr
    stats = admin(base_url, "GET", "stats?customers=1")
    assert stats["double_charged"] == []
    assert {c: v["charges"] for c, v in stats["invoices"].items()} == dict.fromkeys(customers, 1)


def outcomes_tolerant(path: Path) -> list[dict[str, Any]]:
    """Pay outcome records of a file whose last line may be cut short."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record["source"] == "pay":
            found.append(record)
    return found


def test_the_command_line_works_without_rich(emulate: dict[str, Any], tmp_path: Path) -> None:
    """With rich unimportable, pay-batch and demo run and print the same summary as plain text."""
    blocker = tmp_path / "no_rich"
    blocker.mkdir()
    (blocker / "rich.py").write_text("raise ImportError('rich is not installed')\n")
    pythonpath = os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")]))
    probe = subprocess.run(  # noqa: S603
        [*command()[:1], "-c", "import rich"],
        capture_output=True,
        text=True,
        env=environment(PYTHONPATH=pythonpath),
        check=False,
    )
    assert probe.returncode != 0  # rich is really unimportable in these runs
    base_url = emulate["base_url"]
    source, _ = _batch(base_url, tmp_path, 5)

    paid = run(
        *("pay-batch", str(source), "--out", "-", "--base-url", base_url, "-v"),
        PYTHONPATH=pythonpath,
    )
    demo = run("demo", "--invoices", "50", "--seed", "3", PYTHONPATH=pythonpath)

    assert paid.returncode == 0, paid.stderr
    records = [json.loads(line) for line in paid.stdout.splitlines()]  # --out -: stdout
    assert {r["state"] for r in records if r["source"] == "pay"} == {"paid"}
    assert re.search(r"Paying: 5/5 \(100%\) paid 5", paid.stderr)
    assert re.search(r"rows in the file\s+5\n", paid.stderr)  # the summary, on stderr
    assert demo.returncode == 0, demo.stderr
    assert re.search(r"total\s+50\n", demo.stdout)
    assert "No invoice was charged twice." in demo.stdout


def test_single_invoice_commands_create_pay_and_read_an_invoice(
    emulate: dict[str, Any],
) -> None:
    """init, pay, status and info work one call at a time; a second pay is refused by status."""
    base_url = emulate["base_url"]
    created = run(
        *("init", "--order-id", "A-1", "--amount", "150.50", "--description", "Заказ A-1"),
        *("--base-url", base_url),
    )
    assert created.returncode == 0, created.stderr
    customer = json.loads(created.stdout)["customer"]
    assert customer

    paid = run(
        *("pay", "--customer", customer, "--user-id", "u1", "--base-url", base_url),
        FREEDOMPAY_CARD_TOKEN="card-token-single-secret",
    )
    again = run(
        *("pay", "--customer", customer, "--user-id", "u1", "--base-url", base_url),
        FREEDOMPAY_CARD_TOKEN="card-token-single-secret",
    )
    status = run("status", "--order-id", "A-1", "--base-url", base_url)
    info = run("info", "--customer", customer, "--base-url", base_url, "-v")

    assert paid.returncode == 0, paid.stderr
    assert json.loads(paid.stdout)["state"] == "paid"
    assert "card-token-single" not in paid.stdout + paid.stderr
    assert again.returncode == 0, again.stderr
    assert "already ok" in again.stderr
    assert admin(base_url, "GET", f"invoices/{customer}")["charges"] == 1
    assert json.loads(status.stdout)["invoice_status"] == "ok"
    assert json.loads(info.stdout)["description"] == "Заказ A-1"
    assert json.loads(info.stdout)["amount"] == "150.50"


def test_status_names_the_host_it_cannot_reach() -> None:
    """A status call to a closed port names the host and says what to check."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run("status", "--customer", "c1", "--base-url", f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"[host 127.0.0.1:{port}]" in result.stderr
    assert "check --base-url" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_emulators_advertised_admin_url_answers(emulate: dict[str, Any]) -> None:
    """The startup line's admin_url lists the admin routes instead of answering 404."""
    with urllib.request.urlopen(emulate["admin_url"], timeout=10) as response:  # noqa: S310
        listing = json.loads(response.read())
    assert "POST /_emulator/invoices" in listing["routes"]
    assert emulate["merchant_id"] == MERCHANT


def test_help_documents_every_exit_status() -> None:
    """--help of the program and of pay-batch list the exit statuses; emulate lists admin routes."""
    for argv in ((), ("pay-batch",), ("emulate",)):
        result = run(*argv, "--help")
        assert result.returncode == 0
        for code in ("0 ", "1 ", "2 ", "3 ", "130/143"):
            assert f"\n  {code}" in result.stdout, (argv, code)
    assert "/_emulator/faults" in run("emulate", "--help").stdout


def test_outage_tolerance_zero_stops_a_refused_run_at_once(
    emulate: dict[str, Any], tmp_path: Path
) -> None:
    """--outage-tolerance 0: pays refused with 503 stop the run early, resumable, none charged."""
    base_url = emulate["base_url"]
    source, _ = _batch(base_url, tmp_path, 60)
    refuse = {"fault": {"kind": "http_status", "status": 503}, "operation": "pay", "times": 10_000}
    admin(base_url, "POST", "faults", refuse)
    out = tmp_path / "o.jsonl"
    # With the default tolerance (300 s) the batch would hold its rows well past this timeout.
    result = run(
        *("pay-batch", str(source), "--out", str(out), "--base-url", base_url),
        *("--concurrency", "2", "--no-status-check", "--outage-tolerance", "0", "--json"),
        timeout=45,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["stopped"] == "systemic"
    assert summary["failures"][0]["kind"] == "CircuitOpenError"
    assert summary["not_started"] >= 20
    assert "--outage-tolerance 0" in summary["resume_command"]
    assert "or it refused every recent request" in result.stderr
    stats = admin(base_url, "GET", "stats")
    assert stats["committed_pays"] == 0
    # The breaker opens after 20 refusals in a row; the two workers add at most one attempt each.
    assert stats["by_operation"]["pay"] <= 20 + 2
    assert "Traceback" not in result.stderr


def test_outage_tolerance_is_checked_before_anything_is_sent(tmp_path: Path) -> None:
    """A negative --outage-tolerance is refused with a usage error naming the option."""
    source = tmp_path / "in.csv"
    write_csv(source, ["c0"])
    result = run(
        "pay-batch",
        str(source),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--outage-tolerance",
        "-1",
        "--base-url",
        "http://127.0.0.1:9",
    )
    assert result.returncode == 2
    assert "--outage-tolerance" in result.stderr
    assert "must be between 0 and 86400, got -1" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()
