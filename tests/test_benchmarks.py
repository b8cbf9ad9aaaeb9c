"""The benchmark runner's quick mode runs end to end and writes every table (no timing checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "benchmarks" / "run.py"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_run_writes_every_row_and_section(tmp_path: Path) -> None:
    """`run.py --quick` exits 0 and reports all four rows at every level, and every section."""
    report = tmp_path / "RESULTS.md"
    completed = subprocess.run(  # noqa: S603 - our own runner, with fixed arguments
        # A generous budget: this checks that every table is written, not how fast (a loaded
        # machine slows the rows, and the quick budget would cut the last sections short).
        [sys.executable, str(RUNNER), "--quick", "--budget", "200", "--output", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=260,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    text = report.read_text(encoding="utf-8")
    for section in (
        "## Machine",
        "## Targets",
        "## Throughput, CPU and latency",
        "## Ratios",
        "## Decode",
        "## Memory",
        "## Tail latency",
        "## Profile",
    ):
        assert section in text, section
    for level in (1, 64, 1024):
        table = text.split(f"### c = {level} ", 1)[1].split("\n\n", 2)[1]
        for row in (
            "1. naive aiohttp",
            "2. best raw aiohttp",
            "3. SDK pay_invoice",
            "4. SDK pay_invoices",
        ):
            line = next(line for line in table.splitlines() if line.startswith(f"| {row}"))
            assert "not run" not in line, line
    assert "SDK decode_payment" in text
    assert text.count("**pass**") + text.count("**FAIL**") >= 10
    assert "server on core" in text or "pinning | none" in text


LATENCY = ROOT / "benchmarks" / "latency.py"


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_latency_smoke_run_reports_both_rows_and_objects_per_call(tmp_path: Path) -> None:
    """`latency.py --smoke` exits 0 and reports SDK and raw rows, GC modes and objects per call."""
    report = tmp_path / "RESULTS-latency.md"
    completed = subprocess.run(  # noqa: S603 - our own runner, with fixed arguments
        [sys.executable, str(LATENCY), "--smoke", "--output", str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=75,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    text = report.read_text(encoding="utf-8")
    for section in ("## Machine", "## Targets", "## Steady stream", "## Ratios"):
        assert section in text, section
    stream = text.split("## Steady stream", 1)[1].split("## Ratios", 1)[0]
    for gc_mode in ("| defaults |", "| recipe: freeze"):
        for row in ("SDK pay_invoice", "best raw aiohttp"):
            line = next(
                line for line in stream.splitlines() if gc_mode in line and f"| {row} |" in line
            )
            assert "not run" not in line, line
    objects = text.split("## Live objects per in-flight call", 1)[1]
    for row in ("SDK pay_invoice", "best raw aiohttp"):
        line = next(line for line in objects.splitlines() if f"| {row} |" in line)
        per_call = float(line.split("**")[1])
        # Every call in flight holds at least its coroutine, task-side state and response.
        assert per_call >= 5, line
    assert "`builtins.coroutine`" in objects
