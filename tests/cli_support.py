"""Helpers for the command-line tests: run the real CLI, start `emulate`, write CSV files."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
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


def outcomes(path: Path) -> list[dict[str, Any]]:
    """The outcome records of a pay-batch output (intent lines left out)."""
    return [record for record in read_lines(path) if record["source"] != "intent"]
