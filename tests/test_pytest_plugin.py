"""The shipped pytest plugin, run in fresh pytest processes, and the README's testing example."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from freedompay_async import FreedomPayClient, InvoiceStatus
from freedompay_async.testing import FreedomPayEmulator, VirtualClock

README = Path(__file__).resolve().parent.parent / "README.md"


def _readme_testing_example() -> str:
    """The python block of README's emulator section that uses the plugin's fixtures."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## The emulator\n") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    found = [block for block in blocks if "freedompay_client" in block]
    assert len(found) == 1, "README's emulator section must hold one example using the fixtures"
    return found[0]


def _run_pytest(
    directory: Path, *args: str, mode: str | None, block_pytest_asyncio: bool = False
) -> subprocess.CompletedProcess[str]:
    ini = "[pytest]\n" + (f"asyncio_mode = {mode}\n" if mode else "")
    if mode:
        ini += "asyncio_default_fixture_loop_scope = function\n"
    (directory / "pytest.ini").write_text(ini, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    command = [sys.executable, "-m", "pytest"]
    if block_pytest_asyncio:
        # As if pytest-asyncio were not installed: a module of its name that cannot be imported
        # shadows it, and its plugin is not loaded.
        shadow = directory / "shadow"
        shadow.mkdir()
        (shadow / "pytest_asyncio.py").write_text(
            "raise ModuleNotFoundError('pytest_asyncio')\n", encoding="utf-8"
        )
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow), env.get("PYTHONPATH")]))
        command += ["-p", "no:asyncio"]
    return subprocess.run(  # noqa: S603 - the test's own interpreter and files
        [*command, "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_the_readme_testing_example_passes_through_the_plugin(tmp_path: Path, mode: str) -> None:
    """README's testing example, copied verbatim, passes with pytest-asyncio in either mode."""
    (tmp_path / "test_readme_example.py").write_text(_readme_testing_example(), encoding="utf-8")
    result = _run_pytest(tmp_path, mode=mode)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_example_runner_sees_a_failing_example(tmp_path: Path) -> None:
    """The runner reports a failure when the example's assertion does not hold (it can fail)."""
    broken = _readme_testing_example().replace("charges(customer) == 1", "charges(customer) == 2")
    (tmp_path / "test_readme_example.py").write_text(broken, encoding="utf-8")
    result = _run_pytest(tmp_path, mode="strict")
    assert result.returncode == 1
    assert "1 failed" in result.stdout


FIXTURE_CLEANUP = textwrap.dedent(
    """
    import socket

    import pytest

    from freedompay_async import InvoiceStatus

    seen = {}


    async def test_pays_through_the_fixtures(
        freedompay_emulator, freedompay_client, freedompay_clock
    ):
        customer = freedompay_emulator.create_invoice()
        payment = await freedompay_client.pay_invoice(
            customer=customer, user_id="u", card_token="t"
        )
        assert payment.invoice_status is InvoiceStatus.OK
        assert freedompay_emulator.base_url.startswith("http://127.0.0.1:")
        seen["client"] = freedompay_client
        seen["port"] = int(freedompay_emulator.base_url.rsplit(":", 1)[1])


    def test_the_previous_test_cleaned_up():
        assert seen["client"].closed
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", seen["port"]), timeout=2).close()
    """
)


def test_fixtures_pay_on_loopback_and_clean_up_after_the_test(tmp_path: Path) -> None:
    """The client fixture pays on a loopback emulator; afterwards it is closed and the port shut."""
    (tmp_path / "test_cleanup.py").write_text(FIXTURE_CLEANUP, encoding="utf-8")
    result = _run_pytest(tmp_path, mode="auto")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout


WITHOUT_ASYNCIO = textwrap.dedent(
    """
    def test_plain():
        assert 1 + 1 == 2


    def test_wants_the_client(freedompay_client):
        assert freedompay_client is not None
    """
)


def test_pytest_still_works_without_pytest_asyncio(tmp_path: Path) -> None:
    """Without pytest-asyncio other tests run; the async fixtures error and say what to install."""
    (tmp_path / "test_plain.py").write_text(WITHOUT_ASYNCIO, encoding="utf-8")
    result = _run_pytest(tmp_path, "-rE", mode=None, block_pytest_asyncio=True)
    output = result.stdout + result.stderr
    assert "1 passed" in result.stdout, output
    assert "1 error" in result.stdout, output
    assert "needs pytest-asyncio: pip install pytest-asyncio" in output


async def test_the_fixtures_work_in_this_repository(
    freedompay_emulator: FreedomPayEmulator,
    freedompay_client: FreedomPayClient,
    freedompay_clock: VirtualClock,
) -> None:
    """In this suite (auto mode) the fixtures give a client bound to the emulator and the clock."""
    customer = freedompay_emulator.create_invoice(amount=Decimal(42))
    payment = await freedompay_client.pay_invoice(customer=customer, user_id="u", card_token="t")
    assert payment.invoice_status is InvoiceStatus.OK
    assert freedompay_emulator.charges(customer) == 1
    assert freedompay_clock.sleeps == []


NO_HANDLER_SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, sys

    from freedompay_async import AmbiguousPaymentError, FreedomPayClient
    from freedompay_async.testing import Fault, FreedomPayEmulator, VirtualClock

    if sys.argv[1] == "without-null-handler":
        for handler in list(logging.getLogger("freedompay_async").handlers):
            logging.getLogger("freedompay_async").removeHandler(handler)


    async def main():
        async with FreedomPayEmulator() as emu:
            customer = emu.create_invoice()
            emu.inject(Fault.error_code(1000), operation="pay")
            async with FreedomPayClient(
                emu.merchant_id, emu.secret_key, base_url=emu.base_url, clock=VirtualClock()
            ) as client:
                try:
                    await client.pay_invoice(customer=customer, user_id="u", card_token="t")
                except AmbiguousPaymentError:
                    print("ambiguous")


    asyncio.run(main())
    """
)


@pytest.mark.parametrize(
    ("variant", "printed"), [("as-shipped", False), ("without-null-handler", True)]
)
def test_a_plain_script_prints_no_library_warning(
    tmp_path: Path, variant: str, printed: bool
) -> None:
    """A script without logging set up prints none of the SDK's warnings (NullHandler)."""
    script = tmp_path / "script.py"
    script.write_text(NO_HANDLER_SCRIPT, encoding="utf-8")
    result = subprocess.run(  # noqa: S603 - the test's own interpreter and file
        [sys.executable, str(script), variant],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ambiguous"
    assert ("reconcile" in result.stderr) is printed, result.stderr
