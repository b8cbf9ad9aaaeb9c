"""`demo`: pay invoices on an in-process emulator with faults injected, and show the summary."""

from __future__ import annotations

import contextlib
import random
import sys
import time
from typing import TYPE_CHECKING, Final

import attrs

from freedompay_async import (
    FreedomPayClient,
    PayRequest,
    PollPolicy,
    RetryPolicy,
    Timeouts,
)
from freedompay_async.cli import _render
from freedompay_async.cli._classic_demo import run_classic_demo
from freedompay_async.cli._common import EXIT_NOT_PAID, EXIT_OK
from freedompay_async.reporting import SummaryBuilder

if TYPE_CHECKING:
    import argparse

    from freedompay_async.testing import Fate, Fault, FreedomPayEmulator

#: The demo's mix of fates: (name, weight).
DEMO_FATES: Final = (
    ("paid", 82),
    ("declined", 6),
    ("pending_then_paid", 5),
    ("pending_then_failed", 1),
    ("expired", 3),
    ("gateway_error", 3),
)
#: The faults the demo injects, drawn uniformly.
DEMO_FAULTS: Final = ("429", "503", "500-after-commit", "drop-after-commit", "slow")

_DEMO_TIMEOUTS: Final = Timeouts(connect=2.0, read=1.0, pool=30.0)
_DEMO_RETRY: Final = RetryPolicy(
    attempts=5,
    deadline=20.0,
    backoff_base=0.05,
    backoff_max=0.5,
    retry_after_max=1.0,
    reconcile_grace=0.05,
)
_DEMO_POLL: Final = PollPolicy(interval=0.05, factor=1.5, max_interval=0.25, timeout=10.0)


def _demo_fate(name: str, rng: random.Random) -> Fate:
    from freedompay_async.testing import Fate  # noqa: PLC0415 - the emulator loads on demand

    if name == "paid":
        return Fate.paid()
    if name == "declined":
        return Fate.declined(rng.choice((51, 54, 61)), description="Insufficient funds")
    if name == "pending_then_paid":
        return Fate.pending_then_paid(polls=rng.randint(1, 3))
    if name == "pending_then_failed":
        return Fate.pending_then_failed(polls=rng.randint(1, 3))
    if name == "expired":
        return Fate.expired()
    return Fate.gateway_error(600, "General error")


def _demo_fault(name: str) -> Fault:
    from freedompay_async.testing import Fault  # noqa: PLC0415 - the emulator loads on demand

    if name == "429":
        return Fault.http_status(429, retry_after="1")
    if name == "503":
        return Fault.http_status(503)
    if name == "500-after-commit":
        return Fault.http_status(500, after_commit=True)
    if name == "drop-after-commit":
        return Fault.drop(after_commit=True)
    return Fault.delay(_DEMO_TIMEOUTS.read + 0.5, after_commit=True)


@attrs.frozen
class _DemoPlan:
    requests: list[PayRequest]
    fates: dict[str, int]
    faults: dict[str, int]


def _plan_demo(
    emulator: FreedomPayEmulator, count: int, fault_rate: float, rng: random.Random
) -> _DemoPlan:
    """Create *count* invoices with drawn fates, inject faults at *fault_rate* on their pays."""
    names = [name for name, _ in DEMO_FATES]
    weights = [weight for _, weight in DEMO_FATES]
    fates = dict.fromkeys(names, 0)
    faults = dict.fromkeys(DEMO_FAULTS, 0)
    requests: list[PayRequest] = []
    for number in range(count):
        name = rng.choices(names, weights)[0]
        fates[name] += 1
        customer = emulator.create_invoice(
            order_id=f"demo-{number + 1:06d}", fate=_demo_fate(name, rng)
        )
        if rng.random() < fault_rate:
            kind = rng.choice(DEMO_FAULTS)
            faults[kind] += 1
            emulator.inject(_demo_fault(kind), operation="pay", customer=customer)
        requests.append(
            PayRequest(
                customer=customer,
                user_id=f"user-{number + 1:06d}",
                card_token=f"card-{rng.getrandbits(64):016x}",
                key=number + 1,
            )
        )
    return _DemoPlan(requests=requests, fates=fates, faults=faults)


async def demo(args: argparse.Namespace) -> int:
    """Run `demo`; exit 0 when no invoice was charged twice."""
    from freedompay_async.testing import FreedomPayEmulator  # noqa: PLC0415 - loads aiohttp.web

    rng = random.Random(args.seed)  # noqa: S311 - a reproducible demo, not cryptography
    async with FreedomPayEmulator(seed=args.seed, adversarial=True) as emulator:
        plan = _plan_demo(emulator, args.invoices, args.fault_rate, rng)
        sys.stderr.write(
            f"Emulator at {emulator.base_url} (adversarial: a second pay would charge again). "
            f"{args.invoices} invoices; faults injected on "
            f"{sum(plan.faults.values())} pays ({args.fault_rate:.0%}).\n"
        )
        builder = SummaryBuilder()
        paid: list[int | None] = []
        rich = _render.use_rich(plain=args.plain, stream=sys.stderr)
        progress = _render.Progress("Paying", args.invoices, rich=rich)
        async with FreedomPayClient(
            emulator.merchant_id,
            emulator.secret_key,
            base_url=emulator.base_url,
            timeouts=_DEMO_TIMEOUTS,
            retry=_DEMO_RETRY,
            poll=_DEMO_POLL,
            max_concurrency=args.concurrency,
        ) as client:
            start = time.monotonic()
            with progress:
                async with contextlib.aclosing(
                    client.pay_invoices(iter(plan.requests), concurrency=args.concurrency)
                ) as outcomes:
                    async for outcome in outcomes:
                        builder.add(outcome)
                        progress.advance(outcome.state)
                        if outcome.state == "paid" and outcome.payment is not None:
                            paid.append(outcome.payment.invoice_id)
            summary = builder.build(time.monotonic() - start)
            classic_rows, classic_bad = await run_classic_demo(
                emulator,
                client,
                paid=[pid for pid in paid if pid is not None],
                fault_rate=args.fault_rate,
                concurrency=args.concurrency,
                rng=rng,
                read_timeout=_DEMO_TIMEOUTS.read,
            )
        stats = emulator.stats
        double = emulator.double_charged()
    scripted = ", ".join(f"{name} {n}" for name, n in plan.fates.items() if n)
    injected = ", ".join(f"{name} {n}" for name, n in plan.faults.items() if n)
    served = ", ".join(f"{name} {n}" for name, n in stats.by_operation.items() if n)
    gateway = [
        ("fates scripted", scripted),
        ("faults injected", injected or "none"),
        ("requests served", served),
        ("most requests in flight", f"{stats.max_in_flight} (concurrency {args.concurrency})"),
        ("pays committed", str(stats.committed_pays)),
        ("invoices charged twice", str(len(double))),
    ]
    footer = (
        f"{len(double)} invoice(s) were charged twice."
        if double
        else "No invoice was charged twice."
    )
    if classic_bad:
        footer += f" {classic_bad} payment(s) were refunded more than asked or captured twice."
    code = EXIT_NOT_PAID if double or classic_bad else EXIT_OK
    if args.json:
        data = {
            "exit_code": code,
            "summary": summary.to_dict(),
            "gateway": dict(gateway),
            "charged_twice": double,
            "saved_cards_and_refunds": dict(classic_rows),
        }
        _render.render_json(sys.stdout, data)
        return code
    rich_out = _render.use_rich(plain=args.plain, stream=sys.stdout)
    sections = [
        ("Batch", _render.batch_facts(summary)),
        ("Gateway (emulator)", gateway),
        ("Saved cards, refunds, captures (emulator)", classic_rows),
    ]
    columns = {"invoices": dict(summary.by_state)}
    _render.render(sys.stdout, columns, sections, footer, rich=rich_out)
    return code
