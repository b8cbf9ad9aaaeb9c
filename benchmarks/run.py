"""
Run every benchmark and write `benchmarks/RESULTS.md`: `python benchmarks/run.py [--quick]`.

One raw asyncio server (`server.py`) runs for the whole invocation, pinned to one core; each
measurement runs in a fresh client process (`client.py`) pinned to another. The four rows of
`loads.py` are interleaved, repeat by repeat and concurrency by concurrency, with the row order
rotated on each repeat, so slow spells of the machine fall on every row alike; tables show
medians with min..max, and ratios are taken within this one invocation.

`--quick` runs every row and section once with small counts (under a minute) and writes
`benchmarks/out/RESULTS-quick.md` unless `--output` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from embed import latency_section

HERE = Path(__file__).resolve().parent
ROWS = ("naive", "raw", "sdk", "batch")
ROW_TITLES = {
    "naive": "1. naive aiohttp: FormData + xmltodict",
    "raw": "2. best raw aiohttp: bytes + JWS + xmltodict + attrs",
    "sdk": "3. SDK pay_invoice, worker tasks",
    "batch": "4. SDK pay_invoices",
}
SDK_ROWS = ("sdk", "batch")
POOL_CAP = 100


@dataclass(frozen=True)
class Plan:
    """Counts for one invocation."""

    name: str
    repeats: int
    levels: dict[int, tuple[int, int]]  # concurrency -> (measured requests, warm-up requests)
    memory_count: int
    memory_warmup: int
    decode_loops: int
    profile_count: int
    run_timeout: float
    budget: float  # seconds for the whole invocation
    reserve: float  # seconds kept for the sections after the rows


FULL = Plan(
    name="full",
    repeats=5,
    levels={1: (2_000, 200), 64: (15_000, 1_500), 1024: (15_360, 2_048)},
    memory_count=100_000,
    memory_warmup=2_000,
    decode_loops=5_000,
    profile_count=5_000,
    run_timeout=120.0,
    budget=570.0,
    reserve=150.0,
)
QUICK = Plan(
    name="quick",
    repeats=1,
    levels={1: (200, 50), 64: (2_000, 200), 1024: (2_048, 1_024)},
    memory_count=10_000,
    memory_warmup=500,
    decode_loops=500,
    profile_count=1_000,
    run_timeout=30.0,
    budget=55.0,
    reserve=15.0,
)


@dataclass
class Context:
    """What every client process needs, and the invocation's clock."""

    port: int
    server_pid: int
    client_cpu: int | None
    server_cpu: int | None
    plan: Plan
    started: float = field(default_factory=time.monotonic)
    repeats_done: int = 0

    def elapsed(self) -> float:
        """Seconds since the invocation started."""
        return time.monotonic() - self.started


class BenchmarkError(RuntimeError):
    """A run failed: requests errored, a process crashed or the time budget ran out."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- processes -----------------------------------------------------------------------------------


def _cores() -> tuple[int | None, int | None]:
    """Return (client core, server core), or Nones when pinning is impossible."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[0], cores[-1]


def _start_server(core: int | None, max_seconds: float) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, str(HERE / "server.py"), "--max-seconds", str(int(max_seconds))]
    if core is not None:
        command += ["--cpu", str(core)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 15
    line = ""
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("PORT ") or not line:
            break
    if not line.startswith("PORT "):
        process.kill()
        raise BenchmarkError("the benchmark server did not start")
    return process, int(line.split()[1])


def _client(ctx: Context, job: dict[str, Any], *, timeout: float | None = None) -> dict[str, Any]:
    """Run one job in a fresh client process and return its JSON result."""
    limit = timeout if timeout is not None else ctx.plan.run_timeout
    left = ctx.plan.budget - ctx.elapsed()
    if left <= 5:
        raise BenchmarkError(
            f"time budget of {ctx.plan.budget:.0f}s used up before {job.get('mode')} "
            f"{job.get('row', '')} c={job.get('concurrency', '')}"
        )
    limit = min(limit, left)
    job = {
        **job,
        "port": ctx.port,
        "server_pid": ctx.server_pid,
        "cpu": ctx.client_cpu,
        "time_limit": limit,
    }
    try:
        completed = subprocess.run(
            [sys.executable, str(HERE / "client.py"), json.dumps(job)],
            capture_output=True,
            text=True,
            timeout=limit + 15,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"client run timed out: {job}") from exc
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise BenchmarkError(
            f"client run failed ({completed.returncode}): {job}\n{completed.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    if result.get("errors"):
        raise BenchmarkError(
            f"{result['errors']} requests failed in {job}: {result.get('first_error')}"
        )
    return result


# -- statistics ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _spread(values: list[float], digits: int = 0, scale: float = 1.0) -> str:
    """Format `median (min..max)`."""
    if not values:
        return "n/a"
    scaled = [value * scale for value in values]
    fmt = f"{{:,.{digits}f}}"
    if len(scaled) == 1:
        return fmt.format(scaled[0])
    return f"{fmt.format(_median(scaled))} ({fmt.format(min(scaled))}..{fmt.format(max(scaled))})"


def _metric(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [run[key] for run in runs if run.get(key) is not None]


# -- the sections --------------------------------------------------------------------------------


def _rows_section(ctx: Context) -> dict[int, dict[str, list[dict[str, Any]]]]:
    plan = ctx.plan
    results: dict[int, dict[str, list[dict[str, Any]]]] = {
        level: {row: [] for row in ROWS} for level in plan.levels
    }
    for repeat in range(plan.repeats):
        began = ctx.elapsed()
        order = ROWS[repeat % len(ROWS) :] + ROWS[: repeat % len(ROWS)]
        for level, (count, warmup) in plan.levels.items():
            for row in order:
                job = {
                    "mode": "row",
                    "row": row,
                    "concurrency": level,
                    "count": count,
                    "warmup": warmup,
                }
                result = _client(ctx, job)
                if "unavailable" in result:
                    _say(f"  {row} c={level}: unavailable ({result['unavailable']})")
                    continue
                results[level][row].append(result)
                share = result.get("server_cpu_share")
                _say(
                    f"  repeat {repeat + 1}/{plan.repeats} c={level:<4} {row:<6} "
                    f"{result['rps']:8,.0f} req/s {result['cpu_us']:6.1f} us/req "
                    f"p50 {result['p50_ms']:7.2f} ms p99 {result['p99_ms']:7.2f} ms "
                    f"server {'?' if share is None else f'{share:.0%}'} "
                    f"[{ctx.elapsed():5.0f}s]"
                )
        ctx.repeats_done = repeat + 1
        # A slow machine gets fewer repeats (never fewer than 3) rather than a blown budget.
        needed = ctx.elapsed() + (ctx.elapsed() - began) + plan.reserve
        if repeat + 1 >= min(3, plan.repeats) and needed > plan.budget:
            if repeat + 1 < plan.repeats:
                _say(f"  stopping after {repeat + 1} repeats to stay within the time budget")
            break
    return results


def _memory_section(ctx: Context) -> list[dict[str, Any]]:
    plan = ctx.plan
    out = []
    for remember in (None, 0):
        job = {
            "mode": "memory",
            "count": plan.memory_count,
            "warmup": plan.memory_warmup,
            "remember": remember,
            "concurrency": 64,
        }
        result = _client(ctx, job, timeout=plan.run_timeout * 1.5)
        if "unavailable" in result:
            _say(f"  memory: unavailable ({result['unavailable']})")
            continue
        _say(
            f"  memory remember={remember}: idle {result['idle_rss_mib']:.1f} MiB, "
            f"peak {result['peak_rss_mib']:.1f} MiB [{ctx.elapsed():5.0f}s]"
        )
        out.append(result)
    return out


def _profile_section(ctx: Context) -> dict[str, dict[str, Any]]:
    out = {}
    for row in ("raw", "sdk"):
        job = {
            "mode": "profile",
            "row": row,
            "concurrency": 64,
            "count": ctx.plan.profile_count,
            "warmup": ctx.plan.profile_count // 5,
            "top": 20,
        }
        result = _client(ctx, job)
        if "unavailable" in result:
            continue
        out[row] = result
        _say(f"  profile {row}: {result['profile']['total_us']:.0f} us/req under cProfile")
    return out


# -- the report ----------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    versions = {}
    for name in ("aiohttp", "xmltodict", "attrs", "yarl", "multidict", "freedompay-async"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        versions["uvloop"] = metadata.version("uvloop") + " (installed, not used)"
    except metadata.PackageNotFoundError:
        versions["uvloop"] = "not installed (default asyncio loop)"
    return versions


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _machine_lines(ctx: Context) -> list[str]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pinning = (
        f"server on core {ctx.server_cpu}, each client process on core {ctx.client_cpu}"
        if ctx.client_cpu is not None
        else "none (fewer than 2 usable cores or no sched_setaffinity)"
    )
    lines = [
        "| | |",
        "|---|---|",
        f"| CPU | {_cpu_model()} |",
        f"| cores (nproc / usable) | {os.cpu_count()} / {usable} |",
        f"| pinning | {pinning} |",
        f"| OS | {platform.system()} {platform.release()} |",
        f"| Python | {platform.python_implementation()} {platform.python_version()} |",
    ]
    lines += [f"| {name} | {version} |" for name, version in _versions().items()]
    return lines


def _rows_tables(results: dict[int, dict[str, list[dict[str, Any]]]]) -> list[str]:
    lines = []
    for level, by_row in results.items():
        pool = min(level, POOL_CAP)
        lines += [
            "",
            f"### c = {level} ({level} callers, pool of {pool} connections)",
            "",
            (
                "| row | req/s | client CPU µs/req | of which GC µs/req | p50 ms | p99 ms "
                "| peak RSS MiB | server CPU |"
            ),
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in ROWS:
            runs = by_row[row]
            if not runs:
                lines.append(f"| {ROW_TITLES[row]} | not run | | | | | | |")
                continue
            lines.append(
                f"| {ROW_TITLES[row]} | {_spread(_metric(runs, 'rps'))} "
                f"| {_spread(_metric(runs, 'cpu_us'), 1)} "
                f"| {_spread(_metric(runs, 'gc_us'), 1)} "
                f"| {_spread(_metric(runs, 'p50_ms'), 2)} "
                f"| {_spread(_metric(runs, 'p99_ms'), 2)} "
                f"| {_spread(_metric(runs, 'rss_peak_mib'), 1)} "
                f"| {_spread(_metric(runs, 'server_cpu_share'), 0, 100)} % |"
            )
    return lines


def _paired(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str, op: str) -> list[float]:
    """Per-repeat ratios or differences of one metric (runs of one repeat share an index)."""
    out = []
    for first, second in zip(a, b, strict=False):
        if op == "ratio":
            out.append(first[key] / second[key])
        else:
            out.append(first[key] - second[key])
    return out


def _ratio_tables(results: dict[int, dict[str, list[dict[str, Any]]]]) -> list[str]:
    lines = [
        "",
        (
            "Ratios use the medians of each row; the brackets give the range of the per-repeat "
            "ratios (runs of the same repeat ran back to back). CPU overhead is the SDK's client "
            "CPU µs/request minus row 2's; wall overhead is `1e6/req/s` of the SDK minus row 2's."
        ),
        "",
        (
            "| c | SDK row | req/s ÷ row 1 | req/s ÷ row 2 | CPU overhead over row 2, µs/req "
            "| wall overhead over row 2, µs/req |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for level, by_row in results.items():
        naive, raw = by_row["naive"], by_row["raw"]
        for row in SDK_ROWS:
            sdk = by_row[row]
            if not sdk or not naive or not raw:
                continue
            rps = _median(_metric(sdk, "rps"))
            over_naive = rps / _median(_metric(naive, "rps"))
            over_raw = rps / _median(_metric(raw, "rps"))
            cpu = _median(_metric(sdk, "cpu_us")) - _median(_metric(raw, "cpu_us"))
            wall = 1e6 / rps - 1e6 / _median(_metric(raw, "rps"))
            lines.append(
                f"| {level} | {ROW_TITLES[row]} "
                f"| {over_naive:.2f}x ({_range(_paired(sdk, naive, 'rps', 'ratio'), 2)}) "
                f"| {over_raw:.2f}x ({_range(_paired(sdk, raw, 'rps', 'ratio'), 2)}) "
                f"| {cpu:+.1f} ({_range(_paired(sdk, raw, 'cpu_us', 'diff'), 1)}) "
                f"| {wall:+.1f} |"
            )
    return lines


def _range(values: list[float], digits: int) -> str:
    if not values:
        return "n/a"
    return f"{min(values):.{digits}f}..{max(values):.{digits}f}"


def _decode_table(decode: dict[str, Any]) -> list[str]:
    if not decode:
        return ["", "Not run."]
    lines = [
        "",
        (
            f"The pay reply the server sends ({decode['reply_bytes']} bytes), decoded "
            f"{decode['loops']:,} times per round, 7 rounds, in one process."
        ),
        "",
        "| decoder | µs per reply, median of rounds | best round |",
        "|---|---|---|",
    ]
    for label, value in decode["results"].items():
        lines.append(f"| {label} | {value['median_us']:.2f} | {value['min_us']:.2f} |")
    results = decode["results"]
    base = results.get("xmltodict.parse (defaults)")
    tuned = results.get("xmltodict.parse (tuned options)")
    sdk = results.get("SDK decode_payment (hardened parse + model)")
    if base and tuned and sdk:
        lines += [
            "",
            (
                "Rounds interleave the decoders. On the best rounds, the SDK's decode costs "
                f"{sdk['min_us'] / base['min_us']:.2f}x `xmltodict.parse` alone with its defaults "
                f"({sdk['min_us'] - base['min_us']:+.2f} µs per reply) and "
                f"{sdk['min_us'] / tuned['min_us']:.2f}x the same parse with the SDK's options "
                f"({sdk['min_us'] - tuned['min_us']:+.2f} µs): the rest of the SDK's decode "
                "(hardening, checks, conversions, the model) is that difference."
            ),
        ]
    if decode.get("sdk"):
        lines += ["", f"SDK decoder unavailable: {decode['sdk']}"]
    return lines


def _memory_table(memory: list[dict[str, Any]]) -> list[str]:
    if not memory:
        return ["", "Not run."]
    lines = [
        "",
        (
            "`pay_invoices` over a lazy generator of distinct customers, 64 workers; RSS sampled "
            "every "
            "500 outcomes (`/proc/self/statm`). Idle is measured after a warm-up batch and "
            "`gc.collect()`, with the client open and its connections pooled."
        ),
        "",
        (
            "| requests | duplicate guard | req/s | idle RSS MiB | peak RSS MiB | growth MiB "
            "| RSS at end MiB |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for result in memory:
        remember = result["remember"]
        guard = (
            "default `InMemoryPayGuard()` (remembers 100,000 settled customers)"
            if remember is None
            else f"`InMemoryPayGuard(remember={remember})`"
        )
        lines.append(
            f"| {result['count']:,} | {guard} | {result['rps']:,.0f} "
            f"| {result['idle_rss_mib']:.1f} | {result['peak_rss_mib']:.1f} "
            f"| {result['growth_mib']:+.1f} | {result['end_rss_mib']:.1f} |"
        )
    return lines


def _tail(results: dict[int, dict[str, list[dict[str, Any]]]]) -> list[float]:
    runs = results.get(1024, {}).get("sdk", [])
    return [run["p99_ms"] / run["p50_ms"] for run in runs if run["p50_ms"] > 0]


def _tail_table(results: dict[int, dict[str, list[dict[str, Any]]]]) -> list[str]:
    runs = results.get(1024, {}).get("sdk", [])
    if not runs:
        return ["", "Not run."]
    lines = [
        "",
        (
            "Row 3 at c = 1024: 1,024 worker tasks calling `pay_invoice` on one client with "
            "`max_concurrency=100`, so about 924 callers wait in the FIFO gate at any time. "
            "For contrast, rows 1 and 2 at the same concurrency use aiohttp's connector alone "
            "(limit 100)."
        ),
        "",
        "| row | p50 ms | p99 ms | p99 ÷ p50 | p99 ÷ p50 within 0.5 s windows |",
        "|---|---|---|---|---|",
    ]
    for row in ROWS:
        row_runs = results[1024][row]
        if not row_runs:
            continue
        ratios = [run["p99_ms"] / run["p50_ms"] for run in row_runs if run["p50_ms"] > 0]
        lines.append(
            f"| {ROW_TITLES[row]} | {_spread(_metric(row_runs, 'p50_ms'), 1)} "
            f"| {_spread(_metric(row_runs, 'p99_ms'), 1)} | {_spread(ratios, 2)} "
            f"| {_spread(_metric(row_runs, 'tail_windowed'), 2)} |"
        )
    lines += [
        "",
        (
            "The last column groups requests by the half second in which they started and takes "
            "p99 ÷ p50 within each group (median over groups). With a FIFO gate every request of a "
            "group waits behind about the same queue, so this column shows the gate's fairness "
            "alone; the whole-run ratio also contains the machine's speed drifting during the run "
            "(a slower half second makes everyone queued in it wait longer)."
        ),
    ]
    lines += [
        "",
        (
            "Row 4's latency is each outcome's `elapsed` (from when a worker took the item), so it "
            "leaves out the wait in the batch's input, and its 100 workers never queue at the gate."
        ),
    ]
    return lines


def _targets(
    results: dict[int, dict[str, list[dict[str, Any]]]],
    memory: list[dict[str, Any]],
) -> list[tuple[str, str, str, bool | None]]:
    """Return (target, threshold, measured, passed) rows."""
    out: list[tuple[str, str, str, bool | None]] = []

    def med(level: int, row: str, key: str) -> float | None:
        runs = results.get(level, {}).get(row, [])
        values = _metric(runs, key)
        return _median(values) if values else None

    for row in SDK_ROWS:
        label = "pay_invoice" if row == "sdk" else "pay_invoices"
        sdk_rps, naive_rps, raw_rps = (med(64, r, "rps") for r in (row, "naive", "raw"))
        if sdk_rps and naive_rps:
            ratio = sdk_rps / naive_rps
            out.append((f"c=64 {label} req/s ÷ row 1", "≥ 1.50x", f"{ratio:.2f}x", ratio >= 1.5))
        if sdk_rps and raw_rps:
            ratio = sdk_rps / raw_rps
            out.append((f"c=64 {label} req/s ÷ row 2", "≥ 0.85x", f"{ratio:.2f}x", ratio >= 0.85))
        sdk_cpu, raw_cpu = med(64, row, "cpu_us"), med(64, "raw", "cpu_us")
        if sdk_cpu is not None and raw_cpu is not None:
            over = sdk_cpu - raw_cpu
            out.append(
                (
                    f"c=64 {label} client CPU over row 2",
                    "≤ +15 µs/req",
                    f"{over:+.1f} µs/req",
                    over <= 15,
                )
            )
        sdk_p50, raw_p50 = med(1, row, "p50_ms"), med(1, "raw", "p50_ms")
        if sdk_p50 is not None and raw_p50 is not None:
            over = sdk_p50 - raw_p50
            out.append(
                (
                    f"c=1 {label} p50 over row 2",
                    "≤ +0.10 ms",
                    f"{over:+.3f} ms ({sdk_p50:.3f} vs {raw_p50:.3f})",
                    over <= 0.10,
                )
            )
    default = [result for result in memory if result["remember"] is None]
    if default:
        result = default[0]
        growth = result["growth_mib"]
        out.append(
            (
                f"pay_invoices over {result['count']:,}: peak RSS over idle",
                "≤ +20 MiB",
                f"{growth:+.1f} MiB",
                growth <= 20,
            )
        )
    tail = _tail(results)
    windowed = _metric(results.get(1024, {}).get("sdk", []), "tail_windowed")
    if tail:
        value = _median(tail)
        out.append(
            (
                "1,024 pay_invoice callers, gate 100: p99 ÷ p50",
                "≤ 1.30",
                f"{value:.2f}",
                value <= 1.3,
            )
        )
    if windowed:
        value = _median(windowed)
        out.append(
            (
                "diagnostic: the same, within 0.5 s windows (see Tail latency)",
                "≤ 1.30",
                f"{value:.2f}",
                None if value <= 1.3 else False,  # shown, never counted as a target
            )
        )
    return out


def _targets_table(targets: list[tuple[str, str, str, bool | None]]) -> list[str]:
    lines = ["", "| target | threshold | measured (medians) | result |", "|---|---|---|---|"]
    failed = False
    for name, threshold, measured, passed in targets:
        if name.startswith("diagnostic"):
            verdict = "within" if passed is None else "over"
        else:
            verdict = "**pass**" if passed else "**FAIL**"
            failed = failed or not passed
        lines.append(f"| {name} | {threshold} | {measured} | {verdict} |")
    if failed:
        lines += [
            "",
            (
                "Where a target fails, the Profile section below shows where the SDK's time "
                "goes and what could be changed."
            ),
        ]
    return lines


def _profile_tables(profiles: dict[str, dict[str, Any]]) -> list[str]:
    if "sdk" not in profiles:
        return ["", "Not run."]
    sdk = profiles["sdk"]["profile"]
    raw = profiles.get("raw", {}).get("profile")
    count = profiles["sdk"]["count"]
    lines = [
        "",
        (
            f"cProfile over the measured phase of one run of row 3 and one of row 2 (c = 64, "
            f"{count:,} requests each). The profiler adds a fixed cost to every Python call, "
            "so its "
            "µs are inflated (about 2-3x here); compare the rows with each other and read shares, "
            "not absolute times. `tottime` is time in the function itself, `cumtime` includes what "
            "it calls."
        ),
        "",
        "**Where the time goes, µs per request under the profiler (tottime summed by owner):**",
        "",
        "| owner | row 2 | row 3 (SDK) | difference |",
        "|---|---|---|---|",
    ]
    names = sorted(
        set(sdk["categories_us"]) | set(raw["categories_us"] if raw else {}),
        key=lambda key: -sdk["categories_us"].get(key, 0.0),
    )
    for name in names:
        ours = sdk["categories_us"].get(name, 0.0)
        theirs = raw["categories_us"].get(name, 0.0) if raw else float("nan")
        lines.append(f"| {name} | {theirs:.1f} | {ours:.1f} | {ours - theirs:+.1f} |")
    theirs_total = raw["total_us"] if raw else float("nan")
    lines.append(
        f"| **total** | {theirs_total:.1f} | {sdk['total_us']:.1f} "
        f"| {sdk['total_us'] - theirs_total:+.1f} |"
    )
    sdk_selected = sdk.get("selected", {})
    raw_selected = raw.get("selected", {}) if raw else {}
    if sdk_selected or raw_selected:
        lines += [
            "",
            "**Entries the notes below refer to** (calls and tottime µs per request):",
            "",
            "| entry | row 2 calls | row 2 tottime | row 3 calls | row 3 tottime |",
            "|---|---|---|---|---|",
        ]
        empty = {"calls_per_request": 0.0, "tottime_us": 0.0}
        for label in dict.fromkeys([*raw_selected, *sdk_selected]):
            theirs = raw_selected.get(label, empty)
            ours = sdk_selected.get(label, empty)
            lines.append(
                f"| {label} | {theirs['calls_per_request']:.2f} | {theirs['tottime_us']:.1f} "
                f"| {ours['calls_per_request']:.2f} | {ours['tottime_us']:.1f} |"
            )
    lines += [
        "",
        "**Top entries of the SDK run by tottime** (all code, per request):",
        "",
        "| function | calls/req | tottime µs | cumtime µs |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{entry['name']}` | {entry['calls_per_request']:.2f} | {entry['tottime_us']:.1f} "
        f"| {entry['cumtime_us']:.1f} |"
        for entry in sdk["top"][:20]
    ]
    lines += [
        "",
        (
            "**The SDK's own functions** (by tottime; cumtime shows what each call path costs "
            "in all):"
        ),
        "",
        "| function | calls/req | tottime µs | cumtime µs |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| `{entry['name']}` | {entry['calls_per_request']:.2f} | {entry['tottime_us']:.1f} "
        f"| {entry['cumtime_us']:.1f} |"
        for entry in sdk["sdk_top"][:15]
    ]
    return lines


def _profile_notes(profiles: dict[str, dict[str, Any]]) -> list[str]:
    notes_file = HERE / "PROFILE_NOTES.md"
    lines: list[str] = []
    if "sdk" in profiles and "raw" in profiles:
        sdk = profiles["sdk"]["profile"]
        raw = profiles["raw"]["profile"]
        own = sdk["categories_us"].get("SDK code", 0.0)
        extra = sdk["total_us"] - raw["total_us"]
        lines += [
            "",
            (
                f"In this run the SDK's own functions hold {own:.1f} µs/request of tottime under "
                f"the profiler ({own / sdk['total_us']:.0%} of its {sdk['total_us']:.1f}), and the "
                f"whole SDK path costs {extra:+.1f} µs/request more than row 2 under the profiler."
            ),
        ]
    if notes_file.exists():
        lines += ["", notes_file.read_text(encoding="utf-8").strip()]
    return lines


def _report(
    ctx: Context,
    command: str,
    *,
    results: dict[int, dict[str, list[dict[str, Any]]]],
    decode: dict[str, Any],
    memory: list[dict[str, Any]],
    profiles: dict[str, dict[str, Any]],
) -> str:
    plan = ctx.plan
    shares = [
        run["server_cpu_share"]
        for by_row in results.values()
        for runs in by_row.values()
        for run in runs
        if run.get("server_cpu_share") is not None
    ]
    levels = ", ".join(
        f"c={level}: {count:,} requests after {warmup:,} warm-up"
        for level, (count, warmup) in plan.levels.items()
    )
    targets = _targets(results, memory)
    lines = [
        "# Benchmark results",
        "",
        (
            "Generated by `benchmarks/run.py`; do not edit by hand. How it measures: "
            "[README.md](README.md)."
        ),
        "",
        f"- command: `{command}` ({plan.name} plan, {ctx.elapsed():.0f} s)",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        (
            f"- repeats: {ctx.repeats_done} per row and concurrency (planned {plan.repeats}), "
            "interleaved, a fresh client "
            f"process per run; {levels}"
        ),
        "- server: raw `asyncio.Protocol` HTTP/1.1 on 127.0.0.1, keep-alive, fixed pay reply; "
        + (
            f"its CPU share while measuring: median {_median(shares):.0%}, "
            f"max {max(shares):.0%} of one core"
            if shares
            else "CPU share not measured"
        ),
        "",
        "## Machine",
        "",
        *_machine_lines(ctx),
        "",
        "## Targets",
        *_targets_table(targets),
        "",
        "## Throughput, CPU and latency",
        "",
        (
            "Each cell: median (min..max) over the repeats. Client CPU is user + system time of "
            "the client process (`resource.getrusage`) over the measured phase, divided by its "
            "requests; the time spent in the cyclic garbage collector (`gc.callbacks`) is part "
            "of it and shown apart. Peak RSS is the client process's `ru_maxrss`. Server CPU is "
            "the server's CPU time over the same phase as a share of one core."
        ),
        *_rows_tables(results),
        "",
        "## Ratios",
        *_ratio_tables(results),
        "",
        "## Decode",
        *_decode_table(decode),
        "",
        "## Memory",
        *_memory_table(memory),
        "",
        "## Tail latency",
        *_tail_table(results),
        "",
        "## Profile",
        *_profile_tables(profiles),
        *_profile_notes(profiles),
        "",
        *latency_section(HERE / "RESULTS-latency.md"),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every row once, small counts")
    parser.add_argument("--output", type=Path, default=None, help="where to write the report")
    parser.add_argument("--repeats", type=int, default=None, help="override the repeat count")
    parser.add_argument(
        "--budget", type=float, default=None, help="override the time budget in seconds"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.repeats is not None:
        plan = Plan(**{**plan.__dict__, "repeats": max(1, args.repeats)})
    if args.budget is not None:
        plan = Plan(**{**plan.__dict__, "budget": max(plan.reserve + 10.0, args.budget)})
    output = args.output or (
        HERE / "out" / "RESULTS-quick.md" if args.quick else HERE / "RESULTS.md"
    )
    command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
    if args.repeats is not None:
        command += f" --repeats {args.repeats}"

    client_cpu, server_cpu = _cores()
    server, port = _start_server(server_cpu, plan.budget + 60)
    ctx = Context(
        port=port, server_pid=server.pid, client_cpu=client_cpu, server_cpu=server_cpu, plan=plan
    )
    _say(f"server on 127.0.0.1:{port} (core {server_cpu}), clients on core {client_cpu}")
    try:
        _say("rows:")
        results = _rows_section(ctx)
        _say("decode:")
        decode = _client(ctx, {"mode": "decode", "loops": plan.decode_loops})
        if "unavailable" in decode:
            decode = {}
        _say("memory:")
        memory = _memory_section(ctx)
        _say("profile:")
        profiles = _profile_section(ctx)
    except BenchmarkError as exc:
        _say(f"benchmark failed: {exc}")
        return 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    report = _report(ctx, command, results=results, decode=decode, memory=memory, profiles=profiles)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report, encoding="utf-8")
    _say(f"wrote {output} in {ctx.elapsed():.0f} s")
    targets = report.split("## Targets", 1)[1].split("##", 1)[0]
    print(targets.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
