"""
One run of the latency-bound scenario in a fresh process; prints one JSON object on its last line.

`python benchmarks/latency_client.py JOB` where JOB is a JSON object:

- `{"mode": "stream", "row": "sdk"|"raw", "inflight": N, "delay": D, "warmup": W,
  "window": S, "port": P, "gc": {...}, "uvloop": false}`: N worker tasks, each looping on its
  own (a request starts as another finishes), against a server that holds every reply back D
  seconds. The workers start staggered over one delay period, so the stream is steady and not a
  wave of N requests restarting at once; W seconds are discarded as warm-up; then S seconds are
  measured: completions, client CPU (`os.times`, user + system), time in the cyclic garbage
  collector (`gc.callbacks`), collections per generation, event-loop lag and call latency.
- `{"mode": "objects", "row": ..., "inflight": N, "port": P, "gc": {...}}`: live objects per
  in-flight call. The pool is warmed with one round of N calls, N idle tasks are created, then
  they all start a call and, once the server holds N replies back, the GC-tracked objects are
  counted by type against the count before (and against the count before the pool was warm, for
  the pooled connections' share).

`"gc"` is the benchmark's own process-wide recipe, applied after start-up, never by the SDK:
`{"freeze": true, "threshold": [a, b, c]}` runs `gc.collect(); gc.freeze()` once the client is
open and sets the thresholds; `{}` leaves the interpreter's defaults. Every job also takes
`"cpu"` (pin to that core) and `"time_limit"` (seconds for the whole job).
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import loads
from server import raise_open_files_limit


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _peak_rss_mib() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _runqueue_wait() -> float | None:
    """Return the seconds this process has waited for a core so far (Linux), or None."""
    try:
        return int(Path("/proc/self/schedstat").read_bytes().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _server_cpu(pid: int | None) -> float | None:
    """Return the server's CPU seconds so far (Linux), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _make_row(name: str, port: int, inflight: int) -> Any:
    base_url = f"http://127.0.0.1:{port}"
    if name == "raw":
        return loads.RawRow(base_url, inflight, limit=inflight)
    if name == "sdk":
        from freedompay_async import InMemoryPayGuard

        # remember=0: the guard still refuses a customer in flight twice, but keeps no history,
        # so memory stays flat however many requests the run sends.
        return loads.SdkRow(base_url, inflight, limit=inflight, guard=InMemoryPayGuard(remember=0))
    raise SystemExit(f"unknown row {name!r}")


def _apply_recipe(recipe: dict[str, Any]) -> None:
    """Apply the benchmark's GC recipe to this process (after start-up, before the load)."""
    if recipe.get("freeze"):
        gc.collect()
        gc.freeze()
    threshold = recipe.get("threshold")
    if threshold:
        gc.set_threshold(*threshold)


class _GcMeter:
    """
    Time in the cyclic collector, and collections per generation, while installed.

    `seconds` is CPU time (`time.process_time`), which a core shared with other work does not
    inflate; `longest` is the longest pause in wall time, what the event loop felt.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.longest = 0.0
        self.collections = [0, 0, 0]
        self._began = 0.0
        self._began_cpu = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began_cpu = time.process_time()
            self._began = time.perf_counter()
            return
        self.longest = max(self.longest, time.perf_counter() - self._began)
        self.seconds += time.process_time() - self._began_cpu
        generation = info.get("generation", 0)
        if 0 <= generation < len(self.collections):
            self.collections[generation] += 1


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


async def _lag_probe(period: float, lags: list[float], stop: asyncio.Event) -> None:
    """Record how late the loop wakes a task that sleeps *period* seconds, until *stop*."""
    clock = time.perf_counter
    while not stop.is_set():
        began = clock()
        await asyncio.sleep(period)
        lags.append(clock() - began - period)


async def _stream(job: dict[str, Any]) -> dict[str, Any]:
    inflight = int(job["inflight"])
    delay = float(job["delay"])
    warmup = float(job["warmup"])
    window = float(job["window"])
    tag = f"{os.getpid() % 100_000:05d}"
    clock = time.perf_counter
    numbers = iter(range(10**9))
    latencies: list[float] = []
    errors: list[str] = []
    phase = {"measuring": False, "stopping": False, "completed": 0}

    async with _make_row(job["row"], job["port"], inflight) as row:
        _apply_recipe(job.get("gc") or {})
        pay = row.pay

        async def worker(index: int) -> None:
            # Staggered over one delay period: request starts are spread evenly in time.
            await asyncio.sleep(index * delay / inflight)
            while not phase["stopping"]:
                customer = loads.customer_token(tag, next(numbers))
                began = clock()
                try:
                    await pay(customer)
                except Exception as exc:
                    if len(errors) < 5:
                        errors.append(repr(exc))
                    phase["errors"] = phase.get("errors", 0) + 1
                    continue
                if phase["measuring"]:
                    phase["completed"] += 1
                    latencies.append(clock() - began)

        workers = [asyncio.create_task(worker(index)) for index in range(inflight)]
        lags: list[float] = []
        stop_probe = asyncio.Event()
        await asyncio.sleep(delay + warmup)
        probe = asyncio.create_task(_lag_probe(0.05, lags, stop_probe))
        meter = _GcMeter()
        gc.callbacks.append(meter)
        server_began = _server_cpu(job.get("server_pid"))
        wait_began = _runqueue_wait()
        cpu_began = _cpu()
        wall_began = clock()
        phase["measuring"] = True
        await asyncio.sleep(window)
        phase["measuring"] = False
        wall = clock() - wall_began
        cpu = _cpu() - cpu_began
        wait_ended = _runqueue_wait()
        server_ended = _server_cpu(job.get("server_pid"))
        gc.callbacks.remove(meter)
        completed = phase["completed"]
        phase["stopping"] = True
        stop_probe.set()
        # Every worker finishes its call in flight (one delay), bounded all the same.
        _done, pending = await asyncio.wait([*workers, probe], timeout=delay * 4 + 10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    ordered = sorted(latencies)
    lags.sort()
    ideal = inflight / delay
    rate = completed / wall
    return {
        "row": job["row"],
        "inflight": inflight,
        "delay": delay,
        "window_s": wall,
        "completed": completed,
        "rate": rate,
        "ideal": ideal,
        "share": rate / ideal,
        "cpu_us": cpu / max(completed, 1) * 1e6,
        "cpu_share": cpu / wall,
        "runqueue_share": (
            None if wait_began is None or wait_ended is None else (wait_ended - wait_began) / wall
        ),
        "server_cpu_share": (
            None
            if server_began is None or server_ended is None
            else (server_ended - server_began) / wall
        ),
        "ceiling": 1 / (cpu / max(completed, 1)) / ideal if cpu > 0 else float("nan"),
        "rss_mib": _peak_rss_mib(),
        "gc_us": meter.seconds / max(completed, 1) * 1e6,
        "gc_longest_ms": meter.longest * 1000,
        "gc_collections": meter.collections,
        "lag_p99_ms": _percentile(lags, 0.99) * 1000,
        "lag_max_ms": (lags[-1] * 1000) if lags else float("nan"),
        "p50_ms": _percentile(ordered, 0.5) * 1000,
        "p99_ms": _percentile(ordered, 0.99) * 1000,
        "gc_threshold": list(gc.get_threshold()),
        "frozen": gc.get_freeze_count(),
        "errors": phase.get("errors", 0),
        "first_error": errors[0] if errors else None,
    }


def _held(port: int) -> int:
    """Return how many replies the server holds back right now (a blocking loopback call)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/_held")
        return int(connection.getresponse().read())
    finally:
        connection.close()


_NAMED = ("coroutine", "function", "method")


def _census() -> tuple[Counter[str], int, int]:
    """
    Return the GC-tracked objects by type, and the allocated blocks before and after counting.

    The blocks a call holds are `during[1] - before[2]`: the census's own counter, alive from
    one census to the next, is left out that way.

    Coroutines, functions (closures) and bound methods are also counted by the qualified name of
    their code, under keys starting with `named `, which says which call layers hold them.
    """
    gc.collect()
    blocks = sys.getallocatedblocks()
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts[f"{kind.__module__}.{kind.__qualname__}"] += 1
        if kind.__name__ in _NAMED:
            target = getattr(obj, "__func__", obj)
            counts[f"named {kind.__name__} {getattr(target, '__qualname__', '?')}"] += 1
    return counts, blocks, sys.getallocatedblocks()


async def _objects(job: dict[str, Any]) -> dict[str, Any]:
    inflight = int(job["inflight"])
    port = int(job["port"])
    tag = f"{os.getpid() % 100_000:05d}"
    numbers = iter(range(10**9))
    loop = asyncio.get_running_loop()

    async with _make_row(job["row"], port, inflight) as row:
        _apply_recipe(job.get("gc") or {})
        cold, _cold_start, cold_blocks = _census()
        # One round of N calls leaves N idle keep-alive connections in the pool.
        await asyncio.gather(
            *(row.pay(loads.customer_token(tag, next(numbers))) for _ in range(inflight))
        )
        go = asyncio.Event()

        async def caller() -> object:
            await go.wait()
            return await row.pay(loads.customer_token(tag, next(numbers)))

        callers = [asyncio.create_task(caller()) for _ in range(inflight)]
        await asyncio.sleep(0)
        before, before_start, before_blocks = _census()
        go.set()
        deadline = loop.time() + 10
        held = 0
        while loop.time() < deadline:
            await asyncio.sleep(0.02)
            held = await loop.run_in_executor(None, _held, port)
            if held >= inflight:
                break
        # Let the last writes settle: every call is now waiting for its reply.
        await asyncio.sleep(0.05)
        during, during_blocks, _during_end = _census()
        await asyncio.gather(*callers)
    per_call = {
        kind: (during[kind] - before[kind]) / inflight
        for kind in during.keys() | before.keys()
        if during[kind] != before[kind] and not kind.startswith("named ")
    }
    named = {
        kind.removeprefix("named "): (during[kind] - before[kind]) / inflight
        for kind in during.keys() | before.keys()
        if during[kind] != before[kind] and kind.startswith("named ")
    }
    pooled = {
        kind: (before[kind] - cold[kind]) / inflight
        for kind in before.keys() | cold.keys()
        if before[kind] != cold[kind] and not kind.startswith("named ")
    }
    during = Counter({k: v for k, v in during.items() if not k.startswith("named ")})
    before = Counter({k: v for k, v in before.items() if not k.startswith("named ")})
    cold = Counter({k: v for k, v in cold.items() if not k.startswith("named ")})
    return {
        "row": job["row"],
        "inflight": inflight,
        "held": held,
        "objects_per_call": (sum(during.values()) - sum(before.values())) / inflight,
        "blocks_per_call": (during_blocks - before_blocks) / inflight,
        "pooled_objects_per_connection": (sum(before.values()) - sum(cold.values())) / inflight,
        "pooled_blocks_per_connection": (before_start - cold_blocks) / inflight,
        "live_objects_in_flight": sum(during.values()),
        "per_call_by_type": dict(sorted(per_call.items(), key=lambda item: -item[1])[:25]),
        "per_call_by_name": dict(sorted(named.items(), key=lambda item: -item[1])[:30]),
        "pooled_by_type": dict(sorted(pooled.items(), key=lambda item: -item[1])[:12]),
        "errors": 0 if held >= inflight else 1,
        "first_error": None if held >= inflight else f"only {held} of {inflight} calls held",
    }


def _describe() -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for name in ("aiohttp", "xmltodict", "attrs", "yarl", "multidict", "uvloop"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "gc_threshold_default": list(gc.get_threshold()),
        "versions": versions,
    }


def main(argv: list[str]) -> int:
    job = json.loads(argv[1])
    cpu = job.get("cpu")
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    raise_open_files_limit()
    time_limit = float(job.get("time_limit", 60))
    mode = job["mode"]
    if mode == "describe":
        print(json.dumps(_describe()), flush=True)
        return 0
    runner = asyncio.run
    if job.get("uvloop"):
        try:
            import uvloop
        except ImportError as exc:
            print(json.dumps({"unavailable": repr(exc)}), flush=True)
            return 0
        runner = uvloop.run

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(time_limit):
            if mode == "stream":
                return await _stream(job)
            if mode == "objects":
                return await _objects(job)
            raise SystemExit(f"unknown mode {mode!r}")

    result = runner(bounded())
    result["python"] = platform.python_version()
    result["uvloop"] = bool(job.get("uvloop"))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
