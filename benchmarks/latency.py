"""
Thousands in flight against a slow gateway: `python benchmarks/latency.py [--quick]`.

A raw server (`server.py --delay D`) holds every reply back D seconds, so the ideal rate of a
client with N calls in flight is N / D. Each measurement is one fresh client process
(`latency_client.py`) pinned to one core, the servers to another; N worker tasks loop on their
own (a steady stream, starts spread over one delay period), a warm-up is discarded and a fixed
window is measured. The SDK's `pay_invoice` and the best hand-written aiohttp row of `loads.py`
run back to back in every cell, on every Python asked for, with and without the GC recipe the
benchmark applies in its own process (`gc.freeze()` after start-up, raised thresholds); the SDK
never touches process-wide GC settings. Live objects per in-flight call are counted by type.

Each Python runs from its own venv, `benchmarks/out/venv-X.Y`, which this script creates with
`pip install -e .` of this tree (and uvloop, when it installs). The report is written to
`benchmarks/RESULTS-latency.md` (`--quick`: `benchmarks/out/RESULTS-latency-quick.md`, the
current interpreter only, small windows, under a minute).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import embed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
ROWS = ("sdk", "raw")
ROW_TITLES = {"sdk": "SDK pay_invoice", "raw": "best raw aiohttp"}
#: The recipe the report recommends, applied by the benchmark's client process only.
RECIPE_THRESHOLD = (50_000, 20, 100)
GC_MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "recipe": {"freeze": True, "threshold": list(RECIPE_THRESHOLD)},
    "freeze only": {"freeze": True},
    "thresholds only": {"threshold": list(RECIPE_THRESHOLD)},
    "freeze + (10000, 10, 10)": {"freeze": True, "threshold": [10_000, 10, 10]},
}
GC_TITLES = {
    "default": "defaults",
    "recipe": f"recipe: freeze + {RECIPE_THRESHOLD}",
}
TARGET_CELL = (2048, 0.5)
TARGETS = {"3.13": 0.90, "3.11": 0.85}
#: A run that waited for its core longer than this share of its window is run again once.
NOISY_RUNQUEUE = 0.10
#: Before each run, wait (briefly, bounded) until the client's core is busier than this no more.
QUIET_BUSY = 0.25


@dataclass(frozen=True)
class Plan:
    """Sizes of one invocation."""

    name: str
    cells: tuple[tuple[int, float], ...]  # (in flight, delay seconds)
    repeats: dict[tuple[int, float], int]
    window: float
    variants: tuple[str, ...]  # extra GC modes run at the target cell
    uvloop: bool
    objects_inflight: int
    objects_delay: float
    budget: float
    reruns: int  # how many noisy runs may be repeated in all


FULL = Plan(
    name="full",
    cells=((1024, 0.25), (2048, 0.5), (4096, 1.0)),
    repeats={(2048, 0.5): 2},
    window=4.0,
    variants=("freeze only", "thresholds only", "freeze + (10000, 10, 10)"),
    uvloop=True,
    objects_inflight=1024,
    objects_delay=3.0,
    budget=580.0,
    reruns=8,
)
QUICK = Plan(
    name="quick",
    cells=((1024, 0.25),),
    repeats={},
    window=2.0,
    variants=(),
    uvloop=False,
    objects_inflight=256,
    objects_delay=2.0,
    budget=55.0,
    reruns=0,
)


#: The smallest run that exercises every part, for the test suite: seconds, not a measurement.
SMOKE = Plan(
    name="smoke",
    cells=((128, 0.1),),
    repeats={},
    window=0.5,
    variants=(),
    uvloop=False,
    objects_inflight=64,
    objects_delay=1.0,
    budget=40.0,
    reruns=0,
)


class BenchmarkError(RuntimeError):
    """A run failed, a process crashed or the time budget ran out."""


class BudgetExceededError(BenchmarkError):
    """Too little of the invocation's time budget is left for the next run."""


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- interpreters and venvs ----------------------------------------------------------------------


def _find_interpreter(version: str) -> str | None:
    """Return a working python executable of *version* ("3.13"): pyenv's, else one on PATH."""
    from shutil import which

    pattern = f"{version}.*/bin/python{version}"
    candidates = sorted(Path.home().joinpath(".pyenv", "versions").glob(pattern), reverse=True)
    on_path = which(f"python{version}")
    for candidate in [*map(str, candidates), *([on_path] if on_path else [])]:
        # A pyenv shim exists for every version but runs only the selected ones: ask it.
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def _ensure_venv(version: str, interpreter: str) -> tuple[str, str]:
    """Create or reuse `out/venv-<version>` with this tree installed; return (python, uvloop)."""
    venv = OUT / f"venv-{version}"
    python = venv / "bin" / "python"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = venv / ".latency-stamp"
    if python.exists() and stamp.exists() and stamp.read_text().startswith(digest):
        return str(python), stamp.read_text().split(" ", 1)[1].strip()
    _say(f"creating {venv} from {interpreter} (pip install -e .) ...")

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)

    made = run([interpreter, "-m", "venv", "--clear", str(venv)])
    if made.returncode != 0:
        raise BenchmarkError(f"venv for {version} failed: {made.stderr[-2000:]}")
    installed = run([str(python), "-m", "pip", "install", "--quiet", "-e", str(ROOT)])
    if installed.returncode != 0:
        raise BenchmarkError(f"pip install -e . under {version} failed: {installed.stderr[-2000:]}")
    uv = run([str(python), "-m", "pip", "install", "--quiet", "uvloop"])
    uvloop = "installed" if uv.returncode == 0 else "did not install"
    stamp.write_text(f"{digest} {uvloop}\n")
    return str(python), uvloop


# -- processes -----------------------------------------------------------------------------------


def _cores() -> tuple[int | None, int | None]:
    """Return (client core, server core), or Nones when pinning is impossible."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return cores[0], cores[-1]


@dataclass
class Context:
    """The servers, the cores and the clock of one invocation."""

    plan: Plan
    client_cpu: int | None
    server_cpu: int | None
    servers: dict[float, tuple[subprocess.Popen[str], int]] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    reruns_left: int = 0
    reruns_done: int = 0

    def elapsed(self) -> float:
        """Seconds since the invocation started."""
        return time.monotonic() - self.started

    def server(self, delay: float) -> tuple[int, int]:
        """Return (port, pid) of the server holding replies *delay* seconds, starting it once."""
        if delay not in self.servers:
            command = [
                sys.executable,
                str(HERE / "server.py"),
                "--delay",
                str(delay),
                "--max-seconds",
                str(int(self.plan.budget + 120)),
            ]
            if self.server_cpu is not None:
                command += ["--cpu", str(self.server_cpu)]
            process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith("PORT "):
                process.kill()
                raise BenchmarkError("a benchmark server did not start")
            self.servers[delay] = (process, int(line.split()[1]))
        process, port = self.servers[delay]
        return port, process.pid

    def stop(self) -> None:
        """Stop every server this invocation started."""
        for process, _port in self.servers.values():
            process.terminate()
        for process, _port in self.servers.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _client(ctx: Context, python: str, job: dict[str, Any], limit: float) -> dict[str, Any]:
    left = ctx.plan.budget - ctx.elapsed()
    if left < limit * 0.6:
        raise BudgetExceededError(f"time budget used up before {job}")
    delay = float(job.get("delay", ctx.plan.objects_delay))
    port, pid = ctx.server(delay)
    job = {**job, "port": port, "server_pid": pid, "cpu": ctx.client_cpu, "time_limit": limit}
    try:
        completed = subprocess.run(
            [python, str(HERE / "latency_client.py"), json.dumps(job)],
            capture_output=True,
            text=True,
            timeout=limit + 15,
            check=False,
            cwd=HERE,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"client run timed out: {job}") from exc
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        raise BenchmarkError(f"client failed ({completed.returncode}): {completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result.get("errors"):
        raise BenchmarkError(f"{result['errors']} calls failed in {job}: {result['first_error']}")
    return result


def _core_busy(core: int, seconds: float) -> float | None:
    """Return the share of *seconds* that *core* spent busy (Linux `/proc/stat`), or None."""

    def sample() -> tuple[int, int] | None:
        try:
            text = Path("/proc/stat").read_text(encoding="ascii")
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(f"cpu{core} "):
                values = [int(value) for value in line.split()[1:]]
                idle = values[3] + (values[4] if len(values) > 4 else 0)
                return sum(values), idle
        return None

    first = sample()
    time.sleep(seconds)
    second = sample()
    if first is None or second is None or second[0] == first[0]:
        return None
    return 1 - (second[1] - first[1]) / (second[0] - first[0])


def _wait_for_quiet(core: int | None, *, budget: float) -> None:
    """Wait (at most *budget* seconds) until the client's core is mostly idle."""
    if core is None:
        return
    deadline = time.monotonic() + max(0.0, budget)
    while time.monotonic() < deadline:
        busy = _core_busy(core, 0.3)
        if busy is None or busy < QUIET_BUSY:
            return


def _stream(
    ctx: Context, python: str, row: str, cell: tuple[int, float], gc_mode: str, *, uvloop: bool
) -> dict[str, Any] | None:
    inflight, delay = cell
    warmup = max(2 * delay, 1.0)
    job = {
        "mode": "stream",
        "row": row,
        "inflight": inflight,
        "delay": delay,
        "warmup": warmup,
        "window": ctx.plan.window,
        "gc": GC_MODES[gc_mode],
        "uvloop": uvloop,
    }
    limit = 4 + delay * 6 + warmup + ctx.plan.window
    if ctx.plan.name != "smoke":
        _wait_for_quiet(ctx.client_cpu, budget=min(2.0, ctx.plan.budget - ctx.elapsed() - limit))
    result = _client(ctx, python, job, limit)
    if "unavailable" in result:
        return None
    noisy = (result.get("runqueue_share") or 0) > NOISY_RUNQUEUE
    if noisy and ctx.reruns_left > 0 and ctx.plan.budget - ctx.elapsed() > limit * 3:
        ctx.reruns_left -= 1
        ctx.reruns_done += 1
        _wait_for_quiet(ctx.client_cpu, budget=min(5.0, ctx.plan.budget - ctx.elapsed() - limit))
        again = _client(ctx, python, job, limit)
        _say(
            f"    rerun (waited for its core {result['runqueue_share']:.0%} of the window): "
            f"share {again['share']:.2f} instead of {result['share']:.2f}"
        )
        if (again.get("runqueue_share") or 0) < result["runqueue_share"]:
            result = again
    result["gc_mode"] = gc_mode
    _say(
        f"  {result['python']:<6} {inflight:>4}/{delay * 1000:>4.0f}ms {gc_mode:<24} {row:<3} "
        f"{'uvloop ' if uvloop else ''}share {result['share']:.2f} "
        f"cpu {result['cpu_us']:5.0f}us gc {result['gc_us']:5.1f}us "
        f"wait {(result.get('runqueue_share') or 0):.0%} [{ctx.elapsed():4.0f}s]"
    )
    return result


def _census(ctx: Context, python: str, version: str) -> dict[str, dict[str, Any]]:
    """Count live objects per in-flight call for both rows under one Python."""
    out = {}
    for row in ROWS:
        job = {
            "mode": "objects",
            "row": row,
            "inflight": ctx.plan.objects_inflight,
            "delay": ctx.plan.objects_delay,
        }
        result = _client(ctx, python, job, 30 + ctx.plan.objects_delay * 3)
        out[row] = result
        _say(
            f"  {version} objects {row}: {result['objects_per_call']:.0f} per call, "
            f"{result['blocks_per_call']:.0f} blocks [{ctx.elapsed():4.0f}s]"
        )
    return out


# -- the report ----------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return _median([run[key] for run in runs if run.get(key) is not None])


def _fmt_range(runs: list[dict[str, Any]], key: str, digits: int, scale: float = 1.0) -> str:
    values = [run[key] * scale for run in runs if run.get(key) is not None]
    if not values:
        return "n/a"
    text = f"{_median(values):,.{digits}f}"
    if len(values) > 1:
        text += f" ({min(values):,.{digits}f}..{max(values):,.{digits}f})"
    return text


def _cell_name(cell: tuple[int, float]) -> str:
    return f"{cell[0]:,} / {cell[1] * 1000:.0f} ms"


Results = dict[str, dict[tuple[tuple[int, float], str, str, bool], list[dict[str, Any]]]]


def _stream_table(runs_by_key: dict[Any, list[dict[str, Any]]], keys: list[Any]) -> list[str]:
    lines = [
        (
            "| in flight / delay | GC | row | req/s (ideal) | share of ideal | CPU ceiling "
            "| client CPU µs/req | GC CPU µs/req | gen 0/1/2 collections | longest GC pause ms "
            "| loop lag max ms | p50 / p99 ms | waited for core | server CPU | peak RSS MiB |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        cell, gc_mode, row, uvloop = key
        runs = runs_by_key.get(key, [])
        title = ROW_TITLES[row] + (" + uvloop" if uvloop else "")
        gc_title = GC_TITLES.get(gc_mode, gc_mode)
        if not runs:
            lines.append(f"| {_cell_name(cell)} | {gc_title} | {title} | not run |||||||||||")
            continue
        collections = "/".join(
            f"{_median([run['gc_collections'][g] for run in runs]):.0f}" for g in range(3)
        )
        lines.append(
            f"| {_cell_name(cell)} | {gc_title} | {title} "
            f"| {_med(runs, 'rate'):,.0f} ({runs[0]['ideal']:,.0f}) "
            f"| **{_fmt_range(runs, 'share', 2)}** "
            f"| {_fmt_range(runs, 'ceiling', 2)} "
            f"| {_fmt_range(runs, 'cpu_us', 0)} "
            f"| {_fmt_range(runs, 'gc_us', 1)} "
            f"| {collections} "
            f"| {_med(runs, 'gc_longest_ms'):.0f} "
            f"| {_med(runs, 'lag_max_ms'):.0f} "
            f"| {_med(runs, 'p50_ms'):.0f} / {_med(runs, 'p99_ms'):.0f} "
            f"| {_fmt_range(runs, 'runqueue_share', 0, 100)} % "
            f"| {_med(runs, 'server_cpu_share') * 100:.0f} % "
            f"| {_med(runs, 'rss_mib'):.0f} |"
        )
    return lines


def _paired(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str, op: str) -> str:
    values = [
        _ratio(x[key], y[key]) if op == "ratio" else (x[key] - y[key])
        for x, y in zip(a, b, strict=False)
    ]
    if len(values) < 2:
        return ""
    digits = 2 if op == "ratio" else 0
    return f" ({min(values):.{digits}f}..{max(values):.{digits}f})"


def _report(
    ctx: Context,
    command: str,
    *,
    pythons: dict[str, dict[str, Any]],
    results: Results,
    objects: dict[str, dict[str, dict[str, Any]]],
    notes: list[str],
) -> str:
    plan = ctx.plan
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pinning = (
        f"servers on core {ctx.server_cpu}, each client process on core {ctx.client_cpu}"
        if ctx.client_cpu is not None
        else "none (fewer than 2 usable cores)"
    )
    waits = [
        run.get("runqueue_share") or 0
        for by_key in results.values()
        for runs in by_key.values()
        for run in runs
    ]
    lines = [
        "# Thousands in flight: latency-bound benchmark results",
        "",
        (
            f"Generated by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
            f"in {ctx.elapsed():.0f} s. Do not edit by hand; rerun the script."
        ),
        "",
        (
            (
                "**The machine was shared** with other work while this ran: "
                if max(waits, default=0) > NOISY_RUNQUEUE
                else "The runs had their cores to themselves: "
            )
            + "every run reports the share of its window it spent waiting for its core "
            "(`/proc/self/schedstat`); a run that waited more than "
            f"{NOISY_RUNQUEUE:.0%} was run again once and the less disturbed run kept "
            f"({ctx.reruns_done} reruns). Median wait over all runs: "
            f"{_median(waits) * 100:.0f} %, worst {max(waits, default=0) * 100:.0f} %. "
            "Compare rows only within one table (SDK and raw ran back to back)."
        ),
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {cpu_model} |",
        (
            f"| cores (nproc / usable) | {os.cpu_count()} / "
            f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} |"
        ),
        f"| pinning | {pinning} |",
        f"| OS | {platform.system()} {platform.release()} |",
    ]
    for version, info in pythons.items():
        versions = info.get("versions", {})
        lines.append(
            f"| client Python {version} | {info.get('python', '?')}, default GC thresholds "
            f"{tuple(info.get('gc_threshold_default', []))}; aiohttp {versions.get('aiohttp')}, "
            f"yarl {versions.get('yarl')}, multidict {versions.get('multidict')}, "
            f"xmltodict {versions.get('xmltodict')}, uvloop {versions.get('uvloop') or 'none'} |"
        )
    lines += [
        f"| servers | `server.py --delay D` under {platform.python_version()}, default loop |",
        (
            "| window | warm-up max(2 x delay, 1 s) after a ramp of one delay, "
            f"then {plan.window:.0f} s measured |"
        ),
        "",
        "## Targets",
        "",
        (
            f"At {_cell_name(TARGET_CELL)} with the recipe (`gc.freeze()` after start-up, "
            f"`gc.set_threshold{RECIPE_THRESHOLD}`), the SDK's share of the ideal rate, and never "
            "less than the best hand-written aiohttp of the same run. Verdicts use the medians; "
            "a run that waited for its core (another process on it) cannot reach the ideal "
            "rate, so the wait is shown beside them."
        ),
        "",
        (
            "| Python | SDK share | raw share | target | SDK ≥ target | SDK ≥ raw "
            "| waited for core (SDK / raw) | least disturbed pair: SDK / raw (wait) |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for version, by_key in results.items():
        sdk = by_key.get((TARGET_CELL, "recipe", "sdk", False), [])
        raw = by_key.get((TARGET_CELL, "recipe", "raw", False), [])
        target = TARGETS.get(version)
        if not sdk or not raw:
            lines.append(f"| {version} | not run | | | | | | |")
            continue
        share, raw_share = _med(sdk, "share"), _med(raw, "share")
        pairs = sorted(
            zip(sdk, raw, strict=False),
            key=lambda pair: max(run.get("runqueue_share") or 0 for run in pair),
        )
        calm_sdk, calm_raw = pairs[0]
        calm_wait = max(run.get("runqueue_share") or 0 for run in pairs[0])
        meets = "n/a" if target is None else ("**pass**" if share >= target else "**FAIL**")
        lines.append(
            f"| {version} | {share:.2f} | {raw_share:.2f} | "
            f"{'n/a' if target is None else f'≥ {target:.2f}'} | {meets} "
            f"| {'**pass**' if share >= raw_share else '**FAIL**'} "
            f"| {_med(sdk, 'runqueue_share') * 100:.0f} % / "
            f"{_med(raw, 'runqueue_share') * 100:.0f} % "
            f"| {calm_sdk['share']:.2f} / {calm_raw['share']:.2f} ({calm_wait:.0%}) |"
        )
    lines += [
        "",
        "## Steady stream, SDK and raw side by side",
        "",
        (
            "Share of ideal = achieved req/s ÷ (in flight ÷ delay). Client CPU is `os.times()` "
            "user + system of the client process over the window, per completed request; GC is "
            "the time between the `start` and `stop` callbacks of `gc.callbacks`. Loop lag is how "
            "late a task sleeping 50 ms was woken. CPU ceiling = (1e6 ÷ client CPU µs/req) ÷ "
            "ideal rate: the share this process could reach with a core of its own if CPU were "
            "its only limit; sharing the machine moves it far less than the share itself. "
            "Medians with min..max where a cell ran more "
            "than once."
        ),
    ]
    for version, by_key in results.items():
        keys = [
            (cell, gc_mode, row, False)
            for cell in plan.cells
            for gc_mode in ("default", "recipe")
            for row in ROWS
        ]
        lines += ["", f"### Python {version}", "", *_stream_table(by_key, keys)]
    lines += [
        "",
        "## Ratios",
        "",
        (
            "SDK ÷ raw compares rows of the same cell and GC mode (paired by repeat, brackets give "
            "the per-repeat range); recipe ÷ defaults compares one row with itself."
        ),
        "",
        (
            "| Python | in flight / delay | GC | SDK share ÷ raw share | SDK CPU - raw CPU µs/req "
            "| SDK GC - raw GC µs/req |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for version, by_key in results.items():
        for cell in plan.cells:
            for gc_mode in ("default", "recipe"):
                sdk = by_key.get((cell, gc_mode, "sdk", False), [])
                raw = by_key.get((cell, gc_mode, "raw", False), [])
                if not sdk or not raw:
                    continue
                lines.append(
                    f"| {version} | {_cell_name(cell)} | {GC_TITLES[gc_mode]} "
                    f"| {_ratio(_med(sdk, 'share'), _med(raw, 'share')):.2f}"
                    f"{_paired(sdk, raw, 'share', 'ratio')} "
                    f"| {_med(sdk, 'cpu_us') - _med(raw, 'cpu_us'):+.0f}"
                    f"{_paired(sdk, raw, 'cpu_us', 'diff')} "
                    f"| {_med(sdk, 'gc_us') - _med(raw, 'gc_us'):+.0f} |"
                )
    lines += [
        "",
        (
            "| Python | in flight / delay | row | share: recipe ÷ defaults | CPU µs/req: recipe - "
            "defaults | GC µs/req: recipe - defaults |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for version, by_key in results.items():
        for cell in plan.cells:
            for row in ROWS:
                on = by_key.get((cell, "recipe", row, False), [])
                off = by_key.get((cell, "default", row, False), [])
                if not on or not off:
                    continue
                lines.append(
                    f"| {version} | {_cell_name(cell)} | {ROW_TITLES[row]} "
                    f"| {_ratio(_med(on, 'share'), _med(off, 'share')):.2f} "
                    f"| {_med(on, 'cpu_us') - _med(off, 'cpu_us'):+.0f} "
                    f"| {_med(on, 'gc_us') - _med(off, 'gc_us'):+.0f} |"
                )
    variant_keys = [
        (TARGET_CELL, gc_mode, row, False)
        for gc_mode in ("default", *plan.variants, "recipe")
        for row in ROWS
    ]
    if plan.variants:
        lines += [
            "",
            f"## GC settings compared at {_cell_name(TARGET_CELL)}",
            "",
            (
                "Each setting is applied by the benchmark's client process after start-up (the "
                "client and its session are open, nothing in flight). `freeze` = `gc.collect(); "
                "gc.freeze()`: the objects alive after start-up (modules, classes, the SDK's and "
                "aiohttp's own) move to the permanent generation and are no longer walked by "
                "collections. Defaults and the recipe repeat the rows of the main table."
            ),
        ]
        for version, by_key in results.items():
            lines += ["", f"### Python {version}", "", *_stream_table(by_key, variant_keys)]
    if plan.uvloop:
        lines += [
            "",
            f"## uvloop at {_cell_name(TARGET_CELL)}, with the recipe",
            "",
        ]
        for version, by_key in results.items():
            keys = [(TARGET_CELL, "recipe", row, uv) for uv in (False, True) for row in ROWS]
            if not any(by_key.get(key) for key in keys[2:]):
                lines.append(f"Python {version}: uvloop {pythons[version].get('uvloop', '?')}.")
                continue
            lines += [f"### Python {version}", "", *_stream_table(by_key, keys), ""]
    lines += _objects_section(objects, plan)
    if notes:
        lines += ["", "## Notes from this run", "", *[f"- {note}" for note in notes]]
    lines += [
        "",
        "## How it measures",
        "",
        (
            "- `server.py --delay D` answers every pay after D seconds (one `loop.call_later` per "
            "batch of replies), pinned to its own core; a backlog of 16,384 (capped by "
            "`net.core.somaxconn`) and the open-files limit raised to its hard limit, in the "
            "client too."
        ),
        (
            "- N worker tasks, each looping on `pay(distinct customer)`; the first starts at once, "
            "the last after one delay period, so starts are spread evenly: a steady stream, not "
            "waves. The pool is sized to N (`TCPConnector(limit=N)` for raw, `max_concurrency=N` "
            "for the SDK), so nothing queues in the client; the SDK runs with its defaults except "
            "`InMemoryPayGuard(remember=0)`, which keeps memory flat over the run."
        ),
        (
            "- Every run is a fresh process. Cells run row after row, alternating which row goes "
            "first; every Python and GC mode runs its cells in the same order."
        ),
    ]
    return "\n".join(lines) + "\n"


def _objects_section(objects: dict[str, dict[str, dict[str, Any]]], plan: Plan) -> list[str]:
    if not objects:
        return []
    lines = [
        "",
        "## Live objects per in-flight call",
        "",
        (
            f"{plan.objects_inflight:,} calls held in flight (the server holds every reply "
            f"{plan.objects_delay:.0f} s; counted once it holds all of them) over a warm pool of "
            f"{plan.objects_inflight:,} idle connections, against the count just before they "
            "started (the caller tasks already existed). *Objects* are what the cyclic GC walks "
            "(`gc.get_objects()` after `gc.collect()`), *blocks* are every allocation "
            "(`sys.getallocatedblocks()`: strings, bytes and ints too). The pooled connection's "
            "own objects (open, idle) are counted separately, against the client before its "
            "first call."
        ),
        "",
        (
            "| Python | row | GC objects per call | blocks per call | live GC objects with all "
            "in flight | per pooled connection: objects / blocks |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for version, by_row in objects.items():
        for row in ROWS:
            result = by_row.get(row)
            if result is None:
                continue
            lines.append(
                f"| {version} | {ROW_TITLES[row]} | **{result['objects_per_call']:.0f}** "
                f"| {result['blocks_per_call']:.0f} | {result['live_objects_in_flight']:,} "
                f"| {result['pooled_objects_per_connection']:.0f} / "
                f"{result['pooled_blocks_per_connection']:.0f} |"
            )
    for version, by_row in objects.items():
        sdk = by_row.get("sdk", {}).get("per_call_by_type", {})
        raw = by_row.get("raw", {}).get("per_call_by_type", {})
        if not sdk:
            continue
        lines += [
            "",
            f"### Per call by type, Python {version} (top of the SDK's, raw alongside)",
            "",
            "| type | SDK per call | raw per call | SDK - raw |",
            "|---|---|---|---|",
        ]
        for kind, count in list(sdk.items())[:20]:
            other = raw.get(kind, 0.0)
            lines.append(f"| `{kind}` | {count:.2f} | {other:.2f} | {count - other:+.2f} |")
        sdk_named = by_row.get("sdk", {}).get("per_call_by_name", {})
        raw_named = by_row.get("raw", {}).get("per_call_by_name", {})
        lines += [
            "",
            f"Coroutines, closures and bound methods per call by name, Python {version}:",
            "",
            "| kind and name | SDK per call | raw per call |",
            "|---|---|---|",
        ]
        for name in sorted(
            sdk_named.keys() | raw_named.keys(),
            key=lambda name: -(sdk_named.get(name, 0.0) + raw_named.get(name, 0.0)),
        ):
            both = sdk_named.get(name, 0.0), raw_named.get(name, 0.0)
            if max(both) >= 0.5:
                lines.append(f"| `{name}` | {both[0]:.2f} | {both[1]:.2f} |")
        pooled = by_row.get("sdk", {}).get("pooled_by_type", {})
        if pooled:
            top = ", ".join(f"`{kind}` {count:.1f}" for kind, count in list(pooled.items())[:8])
            lines += ["", f"Per pooled connection (SDK's pool), Python {version}: {top}."]
    return lines


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one cell, small windows, <1 min")
    parser.add_argument("--output", type=Path, default=None, help="where to write the report")
    parser.add_argument(
        "--pythons",
        default=None,
        help="comma-separated versions (3.11,3.13) or 'current' (the running interpreter)",
    )
    parser.add_argument("--window", type=float, default=None, help="measured seconds per run")
    parser.add_argument(
        "--smoke", action="store_true", help="the smallest run of every part (for tests)"
    )
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else QUICK if args.quick else FULL
    args.quick = args.quick or args.smoke
    if args.window is not None:
        plan = Plan(**{**plan.__dict__, "window": max(0.5, args.window)})
    pythons_arg = args.pythons or ("current" if args.quick else "3.11,3.13")
    output = args.output or (
        OUT / "RESULTS-latency-quick.md" if args.quick else HERE / "RESULTS-latency.md"
    )
    command = "python benchmarks/latency.py" + (
        " --smoke" if args.smoke else " --quick" if args.quick else ""
    )

    client_cpu, server_cpu = _cores()
    ctx = Context(plan=plan, client_cpu=client_cpu, server_cpu=server_cpu)
    ctx.reruns_left = plan.reruns
    notes: list[str] = []
    interpreters: dict[str, tuple[str, str]] = {}
    for asked in pythons_arg.split(","):
        version = asked.strip()
        if version == "current":
            current = f"{sys.version_info.major}.{sys.version_info.minor}"
            interpreters[current] = (sys.executable, "as installed")
            continue
        found = _find_interpreter(version)
        if found is None:
            notes.append(f"Python {version} was not found on this machine; its rows did not run.")
            continue
        try:
            interpreters[version] = _ensure_venv(version, found)
        except (BenchmarkError, subprocess.TimeoutExpired) as exc:
            _say(f"no venv for Python {version}: {exc}")
            notes.append(f"Python {version}: its venv could not be created; its rows did not run.")
    ctx.started = time.monotonic()  # venv creation is not part of the measurement budget

    pythons: dict[str, dict[str, Any]] = {}
    results: Results = {version: {} for version in interpreters}
    objects: dict[str, dict[str, dict[str, Any]]] = {version: {} for version in interpreters}
    try:
        for version, (python, uvloop) in interpreters.items():
            described = _client(ctx, python, {"mode": "describe"}, 30)
            described["uvloop"] = uvloop
            pythons[version] = described
        _say(f"clients on core {client_cpu}, servers on core {server_cpu}")
        # Every Python, cell and GC mode once; then the objects census; then the GC variants
        # and uvloop; the further repeats of the target cell last, so a slow machine that
        # runs out of budget loses repeats, not whole sections.
        steps: list[tuple[str, str, tuple[int, float], str, bool]] = [
            ("stream", version, cell, gc_mode, False)
            for cell in plan.cells
            for version in interpreters
            for gc_mode in ("default", "recipe")
        ]
        steps += [("objects", version, TARGET_CELL, "default", False) for version in interpreters]
        for version in interpreters:
            steps += [("stream", version, TARGET_CELL, mode, False) for mode in plan.variants]
            if plan.uvloop and interpreters[version][1] == "installed":
                steps.append(("stream", version, TARGET_CELL, "recipe", True))
        for repeat in range(1, max([1, *plan.repeats.values()])):
            steps += [
                ("stream", version, cell, gc_mode, False)
                for cell in plan.cells
                if repeat < plan.repeats.get(cell, 1)
                for version in interpreters
                for gc_mode in ("default", "recipe")
            ]
        for index, (kind, version, cell, gc_mode, uvloop) in enumerate(steps):
            python = interpreters[version][0]
            try:
                if kind == "objects":
                    objects[version] = _census(ctx, python, version)
                    continue
                order = ROWS if index % 2 == 0 else ROWS[::-1]
                for row in order:
                    result = _stream(ctx, python, row, cell, gc_mode, uvloop=uvloop)
                    if result is not None:
                        key = (cell, gc_mode, row, uvloop)
                        results[version].setdefault(key, []).append(result)
            except BudgetExceededError:
                left = len(steps) - index
                _say(f"time budget used up: {left} steps not run")
                notes.append(
                    f"The time budget ({plan.budget:.0f} s) ran out: the last {left} of "
                    f"{len(steps)} steps (further repeats first) did not run."
                )
                break
    except BenchmarkError as exc:
        _say(f"benchmark failed: {exc}")
        return 1
    finally:
        ctx.stop()
    report = _report(ctx, command, pythons=pythons, results=results, objects=objects, notes=notes)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report, encoding="utf-8")
    OUT.mkdir(parents=True, exist_ok=True)
    raw_runs = [
        {"python": version, "gc_mode": key[1], "uvloop": key[3], **run}
        for version, by_key in results.items()
        for key, runs in by_key.items()
        for run in runs
    ]
    (OUT / f"latency-{plan.name}.json").write_text(
        json.dumps({"runs": raw_runs, "objects": objects}, indent=1), encoding="utf-8"
    )
    _say(f"wrote {output} in {ctx.elapsed():.0f} s")
    if output == HERE / "RESULTS-latency.md" and embed.refresh(HERE / "RESULTS.md", output):
        _say("refreshed its section in RESULTS.md")
    print(report.split("## Targets", 1)[1].split("##", 1)[0].strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
