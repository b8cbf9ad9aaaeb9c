"""
Child process for the compression-bomb tests: read invoice statuses, report peak RSS growth.

Run as `python bomb_child.py BASE_URL CONCURRENCY`. It makes one small warm-up call (so imports
and the session are counted in the baseline), records `ru_maxrss`, then runs CONCURRENCY
`invoice_status` calls at once against replies the server inflates, and prints one JSON line:
the baseline and peak RSS in KiB, the exception class of each call and the seconds taken.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from freedompay_async import FreedomPayClient, RetryPolicy, Timeouts


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def _main(base_url: str, concurrency: int) -> dict[str, object]:
    retry = RetryPolicy(attempts=2, deadline=60.0, backoff_base=0.0, reconcile_grace=0.0)
    async with FreedomPayClient(
        "1",
        "child-secret-key",
        base_url=base_url,
        retry=retry,
        timeouts=Timeouts(connect=5.0, read=30.0, pool=30.0),
    ) as client:
        await client.invoice_status(customer="warm")
        before = _maxrss_kib()
        start = time.monotonic()
        results = await asyncio.gather(
            *(client.invoice_status(customer=f"bomb{index}") for index in range(concurrency)),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - start
        after = _maxrss_kib()
    return {
        "before_kib": before,
        "after_kib": after,
        "errors": [type(result).__name__ for result in results],
        "messages": [str(result) for result in results],
        "elapsed": elapsed,
    }


if __name__ == "__main__":
    report = asyncio.run(_main(sys.argv[1], int(sys.argv[2])))
    sys.stdout.write(json.dumps(report) + "\n")
