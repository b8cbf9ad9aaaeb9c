"""
One measured benchmark run in a fresh process; prints one JSON object on its last line.

`python benchmarks/client.py JOB` where JOB is a JSON object:

- `{"mode": "row", "row": "raw", "concurrency": 64, "count": N, "warmup": W, "port": P}`:
  warm up with W requests, then measure N: wall time, req/s, client CPU per request
  (`resource.getrusage`), latency percentiles, peak RSS and the server's CPU share;
- `{"mode": "memory", "count": N, "port": P, "remember": R}`: `pay_invoices` over N requests,
  RSS sampled while it runs against the idle RSS after a warm-up;
- `{"mode": "decode", "loops": L}`: the SDK's decode of the pay reply against `xmltodict.parse`;
- `{"mode": "profile", "row": "sdk", "concurrency": 64, "count": N, "port": P}`: the measured
  phase of a row under cProfile, summarised per request.

Every job also takes `"cpu"` (pin to that core) and `"time_limit"` (seconds for the whole job).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import http.client
import json
import os
import pstats
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import loads

MIB = 1024 * 1024


def _rusage_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def _current_rss_mib() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_bytes().split()[1])
    except OSError:
        return _peak_rss_mib()
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def _server_cpu(port: int, pid: int | None) -> float | None:
    """Return the server's CPU seconds so far, or None when it cannot be read."""
    if pid is not None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    # Portable fallback: the server reports its own os.times() (a blocking call, made outside
    # the measured window only).
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/_cpu")
        return float(connection.getresponse().read())
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def _latency_summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": _percentile(ordered, 0.50) * 1000,
        "p99_ms": _percentile(ordered, 0.99) * 1000,
        "max_ms": (ordered[-1] * 1000) if ordered else float("nan"),
    }


def _windowed_tail(starts: list[float], latencies: list[float], width: float = 0.5) -> float | None:
    """
    Return the median over time windows of p99/p50 of the requests that started in each.

    With a FIFO gate every request in a window waits behind about the same queue, so this
    ratio shows the ordering's fairness, without the drift of the machine's speed over the run.
    """
    if not starts:
        return None
    origin = min(starts)
    windows: dict[int, list[float]] = {}
    for start, latency in zip(starts, latencies, strict=True):
        windows.setdefault(int((start - origin) / width), []).append(latency)
    ratios = []
    for values in windows.values():
        if len(values) >= 200:
            values.sort()
            median = _percentile(values, 0.5)
            if median > 0:
                ratios.append(_percentile(values, 0.99) / median)
    return statistics.median(ratios) if ratios else None


def _make_row(name: str, base_url: str, concurrency: int, **options: Any) -> Any:
    if name == "naive":
        return loads.NaiveRow(base_url, concurrency)
    if name == "raw":
        return loads.RawRow(base_url, concurrency)
    return loads.SdkRow(base_url, concurrency, **options)


class _Window:
    """The measured window: wall clock, client CPU and server CPU at its start and end."""

    def __init__(self, port: int, server_pid: int | None) -> None:
        self._port = port
        self._pid = server_pid
        self.began: float | None = None
        self._cpu = 0.0
        self._server: float | None = None
        self.wall = 0.0
        self.cpu = 0.0
        self.server_share: float | None = None
        self.gc_seconds = 0.0
        self._gc_began = 0.0
        if server_pid is None:
            # Without the server's pid, ask the server itself: a blocking call, so it is made
            # now, before the workers start, rather than inside the window.
            self._server = _server_cpu(port, None)

    def _on_gc(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
        else:
            self.gc_seconds += time.perf_counter() - self._gc_began

    def open(self) -> None:
        # /proc/<pid>/stat is read in microseconds, so the loop hardly notices.
        if self._pid is not None:
            self._server = _server_cpu(self._port, self._pid)
        gc.callbacks.append(self._on_gc)
        self._cpu = _rusage_cpu()
        self.began = time.perf_counter()

    def close(self) -> None:
        assert self.began is not None, "the measured phase never started"
        self.wall = time.perf_counter() - self.began
        gc.callbacks.remove(self._on_gc)
        self.cpu = _rusage_cpu() - self._cpu
        server = _server_cpu(self._port, self._pid)
        if self._server is not None and server is not None and self.wall > 0:
            self.server_share = (server - self._server) / self.wall


async def _run_row(job: dict[str, Any], profiler: cProfile.Profile | None = None) -> dict[str, Any]:
    name = job["row"]
    concurrency = job["concurrency"]
    count = job["count"]
    warmup = job["warmup"]
    port = job["port"]
    tag = f"{os.getpid() % 100_000:05d}"
    base_url = f"http://127.0.0.1:{port}"
    window = _Window(port, job.get("server_pid"))

    def mark() -> None:
        window.open()
        if profiler is not None:
            profiler.enable()

    tally = loads.Tally()
    async with _make_row(name, base_url, concurrency) as row:
        gc.collect()
        if name == "batch":
            await loads.drive_batch(
                row,
                tag=tag,
                warmup=warmup,
                count=count,
                concurrency=concurrency,
                tally=tally,
                on_mark=mark,
            )
        else:
            await loads.drive(
                row.pay,
                tag=tag,
                warmup=warmup,
                count=count,
                concurrency=concurrency,
                tally=tally,
                on_mark=mark,
            )
        if profiler is not None:
            profiler.disable()
        window.close()
    return {
        "row": name,
        "concurrency": concurrency,
        "count": count,
        "wall_s": window.wall,
        "rps": count / window.wall,
        "cpu_us": window.cpu / count * 1e6,
        "gc_us": window.gc_seconds / count * 1e6,
        **_latency_summary(tally.latencies),
        "tail_windowed": _windowed_tail(tally.starts, tally.latencies),
        "rss_peak_mib": _peak_rss_mib(),
        "server_cpu_share": window.server_share,
        "errors": tally.errors,
        "first_error": tally.first_error,
    }


async def _run_memory(job: dict[str, Any]) -> dict[str, Any]:
    from freedompay_async import InMemoryPayGuard

    port = job["port"]
    count = job["count"]
    remember = job.get("remember")
    options: dict[str, Any] = {}
    if remember is not None:
        options["guard"] = InMemoryPayGuard(remember=remember)
    tag = f"{os.getpid() % 100_000:05d}"
    concurrency = job.get("concurrency", 64)
    samples: list[float] = []

    def sample(done: int) -> None:
        if done % 500 == 0:
            samples.append(_current_rss_mib())

    async with loads.SdkRow(f"http://127.0.0.1:{port}", concurrency, **options) as row:
        warm = loads.Tally()
        await loads.drive_batch(
            row, tag=tag, warmup=0, count=job["warmup"], concurrency=concurrency, tally=warm
        )
        gc.collect()
        idle = _current_rss_mib()
        tally = loads.Tally(record=False)
        began = time.perf_counter()
        await loads.drive_batch(
            row,
            tag=f"{tag}x",
            warmup=0,
            count=count,
            concurrency=concurrency,
            tally=tally,
            on_outcome=sample,
        )
        wall = time.perf_counter() - began
        samples.append(_current_rss_mib())
    peak = max(samples)
    return {
        "count": count,
        "remember": remember,
        "concurrency": concurrency,
        "idle_rss_mib": idle,
        "peak_rss_mib": peak,
        "growth_mib": peak - idle,
        "end_rss_mib": samples[-1],
        "ru_maxrss_mib": _peak_rss_mib(),
        "rps": count / wall,
        "errors": tally.errors + warm.errors,
        "first_error": tally.first_error or warm.first_error,
    }


def _run_decode(job: dict[str, Any]) -> dict[str, Any]:
    import server
    import xmltodict

    body = server.REPLY_XML
    loops = job["loops"]
    customer = loads.customer_token("00000", 1)
    candidates: dict[str, Any] = {
        "xmltodict.parse (defaults)": lambda: xmltodict.parse(body),
        "xmltodict.parse (tuned options)": lambda: xmltodict.parse(
            body, xml_attribs=False, dict_constructor=dict, disable_entities=True
        ),
        "row 2 decode (tuned parse + attrs model)": lambda: loads.decode_raw(body, 200, customer),
        "reference: flat expat parse, no xmltodict (not used by any row)": lambda: loads.parse_flat(
            body
        ),
    }
    try:
        from freedompay_async._decode import decode_payment
        from freedompay_async._protocol import RawResponse
    except ImportError as exc:
        unavailable = repr(exc)
    else:
        unavailable = None
        raw = RawResponse(status=200, headers={"content-type": "application/xml"}, body=body)
        candidates["SDK decode_payment (hardened parse + model)"] = lambda: decode_payment(
            raw, customer=customer
        )
    runs: dict[str, list[float]] = {label: [] for label in candidates}
    for function in candidates.values():
        function()
    # Rounds interleave the candidates, so a slow spell of the machine hits them all.
    for _ in range(7):
        for label, function in candidates.items():
            began = time.perf_counter()
            for _ in range(loops):
                function()
            runs[label].append((time.perf_counter() - began) / loops * 1e6)
    results = {
        label: {"median_us": statistics.median(values), "min_us": min(values)}
        for label, values in runs.items()
    }
    return {"reply_bytes": len(body), "loops": loops, "results": results, "sdk": unavailable}


_CATEGORIES = (
    ("attrs generated", "attrs models"),
    ("freedompay_async", "SDK code"),
    ("xmltodict", "XML parse"),
    ("pyexpat", "XML parse"),
    ("expat", "XML parse"),
    ("aiohttp", "aiohttp, yarl, multidict"),
    ("yarl", "aiohttp, yarl, multidict"),
    ("multidict", "aiohttp, yarl, multidict"),
    ("propcache", "aiohttp, yarl, multidict"),
    ("asyncio", "asyncio and sockets"),
    ("selectors", "asyncio and sockets"),
    ("socket", "asyncio and sockets"),
    ("select.epoll", "asyncio and sockets"),
    ("hmac", "signing (hmac, hashlib, base64, json)"),
    ("hashlib", "signing (hmac, hashlib, base64, json)"),
    ("_hashlib", "signing (hmac, hashlib, base64, json)"),
    ("base64", "signing (hmac, hashlib, base64, json)"),
    ("binascii", "signing (hmac, hashlib, base64, json)"),
    ("json", "signing (hmac, hashlib, base64, json)"),
    ("client.py", "benchmark driver"),
)
#: Entries the profile notes refer to: (label, part of the file name, function or None for all).
_SELECTED: tuple[tuple[str, str, str | None], ...] = (
    ("asyncio.timeout (all of asyncio/timeouts.py)", "asyncio/timeouts.py", None),
    ("TimerHandle.__lt__ (timer heap ordering)", "asyncio/events.py", "__lt__"),
    ("loop.call_at", "asyncio/base_events.py", "call_at"),
    ("loop.call_later", "asyncio/base_events.py", "call_later"),
    ("aiohttp _reschedule_timeout (sock_read)", "aiohttp/client_proto.py", "_reschedule_timeout"),
    ("signing.jws_header", "freedompay_async/signing.py", "jws_header"),
    ("signing.jws_payload", "freedompay_async/signing.py", "jws_payload"),
    ("PayRequest.__init__ (attrs)", "freedompay_async._models.PayRequest", "__init__"),
    ("PayOutcome.__init__ (attrs)", "freedompay_async._models.PayOutcome", "__init__"),
    ("xmltodict callbacks (all of xmltodict.py)", "xmltodict.py", None),
)
_DRIVER = frozenset({"drive", "drive_batch", "worker", "customer_token", "<genexpr>"})


def _category(filename: str, function: str) -> str:
    if filename.endswith("loads.py"):
        return "benchmark driver" if function in _DRIVER else "row 1/2 hand-written code"
    text = f"{filename} {function}"
    for needle, label in _CATEGORIES:
        if needle in text:
            return label
    return "other (stdlib, builtins)"


def _short(filename: str, line: int, function: str) -> str:
    if filename == "~":
        return function
    parts = filename.replace("\\", "/").split("/")
    for anchor in ("freedompay_async", "aiohttp", "asyncio", "xmltodict.py", "yarl", "multidict"):
        if anchor in parts:
            parts = parts[parts.index(anchor) :]
            break
    else:
        parts = parts[-1:]
    return f"{'/'.join(parts)}:{line}({function})"


def _profile_summary(profiler: cProfile.Profile, count: int, top: int) -> dict[str, Any]:
    stats = pstats.Stats(profiler)
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    entries = []
    categories: dict[str, float] = {}
    total = 0.0
    for (filename, line, function), (_cc, calls, tottime, cumtime, _callers) in table.items():
        category = _category(filename, function)
        categories[category] = categories.get(category, 0.0) + tottime
        total += tottime
        entries.append(
            {
                "name": _short(filename, line, function),
                "category": category,
                "calls_per_request": calls / count,
                "tottime_us": tottime / count * 1e6,
                "cumtime_us": cumtime / count * 1e6,
            }
        )
    selected: dict[str, dict[str, float]] = {}
    for (filename, _line, function), (_cc, calls, tottime, _cum, _callers) in table.items():
        for label, file_part, name in _SELECTED:
            if file_part in filename and (name is None or name == function):
                entry = selected.setdefault(label, {"calls_per_request": 0.0, "tottime_us": 0.0})
                entry["calls_per_request"] += calls / count
                entry["tottime_us"] += tottime / count * 1e6
    entries.sort(key=lambda entry: entry["tottime_us"], reverse=True)
    sdk = [entry for entry in entries if entry["category"] == "SDK code"]
    sdk_cumulative = sorted(sdk, key=lambda entry: entry["cumtime_us"], reverse=True)
    return {
        "total_us": total / count * 1e6,
        "categories_us": {key: value / count * 1e6 for key, value in categories.items()},
        "top": entries[:top],
        "sdk_top": sdk[:top],
        "sdk_cumulative": sdk_cumulative[:top],
        "selected": selected,
    }


async def _run_profile(job: dict[str, Any]) -> dict[str, Any]:
    profiler = cProfile.Profile()
    result = await _run_row(job, profiler)
    result["profile"] = _profile_summary(profiler, job["count"], job.get("top", 20))
    return result


def main(argv: list[str]) -> int:
    job = json.loads(argv[1])
    cpu = job.get("cpu")
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    mode = job["mode"]
    time_limit = float(job.get("time_limit", 300))

    async def bounded(coro: Any) -> dict[str, Any]:
        async with asyncio.timeout(time_limit):
            return await coro

    try:
        if mode == "row":
            result = asyncio.run(bounded(_run_row(job)))
        elif mode == "memory":
            result = asyncio.run(bounded(_run_memory(job)))
        elif mode == "profile":
            result = asyncio.run(bounded(_run_profile(job)))
        elif mode == "decode":
            result = _run_decode(job)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    except ImportError as exc:
        result = {"unavailable": repr(exc)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
