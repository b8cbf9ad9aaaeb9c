"""
pytest fixtures for code that uses freedompay_async, registered when the package is installed.

The fixtures need [pytest-asyncio](https://pypi.org/project/pytest-asyncio/) (any mode): they are
declared with `pytest_asyncio.fixture`, so they work in strict mode (mark the tests
`@pytest.mark.asyncio`) and in auto mode alike. Without pytest-asyncio the plugin still loads, so
pytest keeps working; a test that asks for one of these fixtures errors with an explanation.

Fixtures (each function-scoped, stopped or closed after the test):

- `freedompay_emulator`: a `FreedomPayEmulator` serving on a free port of 127.0.0.1.
- `freedompay_clock`: a `VirtualClock`, so retries, backoff and polling take no real time.
- `freedompay_client`: a `FreedomPayClient` with the emulator's credentials, pointed at it and
  sleeping on `freedompay_clock`.

Override a fixture by defining one of the same name in your `conftest.py`, for example an
emulator with `FreedomPayEmulator(adversarial=True, seed=1)`.

Example:
    ```python
    import pytest

    from freedompay_async import InvoiceStatus


    @pytest.mark.asyncio
    async def test_pays(freedompay_emulator, freedompay_client) -> None:
        customer = freedompay_emulator.create_invoice()
        payment = await freedompay_client.pay_invoice(
            customer=customer, user_id="u1", card_token="tok"
        )
        assert payment.invoice_status is InvoiceStatus.OK
    ```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from freedompay_async import FreedomPayClient
from freedompay_async.testing import FreedomPayEmulator, VirtualClock

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = ["freedompay_client", "freedompay_clock", "freedompay_emulator"]

_MISSING_ASYNCIO = (
    "the {name} fixture is async and needs pytest-asyncio: pip install pytest-asyncio "
    "(then mark the test @pytest.mark.asyncio, or set asyncio_mode = auto)"
)


def _needs_pytest_asyncio(function: Callable[..., Any]) -> Any:  # noqa: ANN401 - a fixture
    """Stand in for an async fixture when pytest-asyncio is missing: fail with what to do."""
    name = function.__name__

    @pytest.fixture(name=name)
    def missing() -> None:
        pytest.fail(_MISSING_ASYNCIO.format(name=name), pytrace=False)

    return missing


try:
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # pragma: no cover - exercised in a subprocess without pytest-asyncio
    async_fixture = _needs_pytest_asyncio  # type: ignore[assignment]


@pytest.fixture
def freedompay_clock() -> VirtualClock:
    """
    A virtual clock for the client: its sleeps return at once and are recorded.

    Returns:
        A fresh `VirtualClock`; `freedompay_clock.sleeps` lists what the client slept.
    """
    return VirtualClock()


@async_fixture
async def freedompay_emulator() -> AsyncIterator[FreedomPayEmulator]:
    """
    An emulator on a free loopback port, stopped after the test.

    Yields:
        A started `FreedomPayEmulator` (default merchant; every card is paid).
    """
    async with FreedomPayEmulator() as emulator:
        yield emulator


@async_fixture
async def freedompay_client(
    freedompay_emulator: FreedomPayEmulator, freedompay_clock: VirtualClock
) -> AsyncIterator[FreedomPayClient]:
    """
    A client pointed at `freedompay_emulator`, closed after the test.

    Args:
        freedompay_emulator: The emulator the client talks to.
        freedompay_clock: The virtual clock the client sleeps on.

    Yields:
        A `FreedomPayClient` with the emulator's merchant id and secret key.
    """
    async with FreedomPayClient(
        freedompay_emulator.merchant_id,
        freedompay_emulator.secret_key,
        base_url=freedompay_emulator.base_url,
        clock=freedompay_clock,
    ) as client:
        yield client
