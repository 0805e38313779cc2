"""Shared helpers of the bench/ scripts: machine description, load gate, timing and tables.

Every figure is printed next to the 1-minute load average it was measured under: this machine
is shared, and a figure taken at load 3 on 2 cores is not comparable to one taken at load 0.2.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Make `python bench/<x>.py` work from a fresh clone: the repo root (for `bench.` imports).
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Peak dense throughput per device kind (FLOP/s), used for MFU. Sources: NVIDIA H200/H100 SXM
# datasheets (dense, no sparsity); float32 on GPU means TF32 tensor cores, which XLA uses for
# float32 convolutions and matmuls at the default precision.
GPU_PEAKS = {
    "H200": {"bfloat16": 989.4e12, "float32": 494.7e12},
    "H100": {"bfloat16": 989.4e12, "float32": 494.7e12},
    "A100": {"bfloat16": 312e12, "float32": 156e12},
}
# x86 cores with two 256-bit FMA pipes (AMD Zen 2-4, incl. AVX-512 on Zen 4 which splits 512-bit
# ops): 2 pipes x 8 float32 lanes x 2 FLOPs = 32 float32 FLOP per cycle per core.
CPU_FLOP_PER_CYCLE = 32


def loadavg() -> float:
    """The 1-minute load average of this machine."""
    return float(Path("/proc/loadavg").read_text().split()[0])


_WAIT_LEFT_S = [600.0]  # total seconds one process may spend waiting for a quiet machine


def wait_for_quiet(max_load: float, poll_s: float = 30.0) -> float:
    """Wait (polling every ``poll_s``) until the 1-minute load is below ``max_load``.

    A process waits at most 10 minutes in total over all calls (then measures anyway); returns
    the load it measures under. ``max_load`` <= 0 disables the wait.
    """
    load = loadavg()
    while max_load > 0 and load >= max_load and _WAIT_LEFT_S[0] > 0:
        print(
            f"# load {load:.2f} >= {max_load}: waiting {poll_s:.0f} s "
            f"({_WAIT_LEFT_S[0]:.0f} s of waiting left)",
            file=sys.stderr,
        )
        time.sleep(poll_s)
        _WAIT_LEFT_S[0] -= poll_s
        load = loadavg()
    return load


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_mhz() -> float:
    """The current clock of the first core from /proc/cpuinfo (MHz; 0 when unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return 0.0


def machine_lines() -> list[str]:
    """Lines describing the machine and software: cores, CPU, versions, thread settings."""
    import jax

    dev = jax.devices()[0]
    lines = [
        (
            f"machine: nproc={os.cpu_count()}, CPU {cpu_model()!r} at {cpu_mhz():.0f} MHz, "
            f"python {platform.python_version()}"
        ),
        (
            f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}, {jax.device_count()} "
            f"device(s)); XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
        ),
    ]
    try:
        import torch

        lines.append(
            f"torch {torch.__version__}: intra-op threads {torch.get_num_threads()}, "
            f"inter-op {torch.get_num_interop_threads()}"
        )
    except ImportError:
        lines.append("torch: not installed")
    omp = {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")}
    if omp:
        lines.append(f"thread env: {omp}")
    return lines


def peak_flops(dtype: str) -> tuple[float, str]:
    """Peak FLOP/s of device 0 for ``dtype`` and a note saying where it comes from."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "gpu":
        for name, peaks in GPU_PEAKS.items():
            if name in dev.device_kind:
                return peaks[dtype], f"{name} dense {dtype} datasheet peak"
        return float("nan"), f"unknown GPU {dev.device_kind!r}"
    cores, mhz = len(os.sched_getaffinity(0)), cpu_mhz()  # the cores this process may use
    peak = cores * mhz * 1e6 * CPU_FLOP_PER_CYCLE
    return peak, f"{cores} cores x {mhz:.0f} MHz x {CPU_FLOP_PER_CYCLE} float32 FLOP/cycle"


def xla_flops(lowered: Any) -> float:
    """FLOPs of one call of a lowered (or compiled) jax function, from XLA's cost analysis.

    XLA counts a multiply-add as 2 FLOPs and skips the taps of a convolution that fall on
    padding, so this is the work actually done, not a padded upper bound. The lowered (not yet
    optimised) HLO is used so the count is the same on every backend (a GPU's compiled HLO
    hides convolutions in cuDNN custom calls).
    """
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of a list of measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt_spread(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """'median (min-max)' of values times ``scale``."""
    s = spread([v * scale for v in values])
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def alternate(
    runners: dict[str, Callable[[], float]], rounds: int, max_load: float = 0.0
) -> tuple[dict[str, list[float]], list[float]]:
    """Run every runner once per round, alternating their order each round (A B, B A, ...).

    Each runner does its own timed repetition and returns seconds. Returns the seconds per runner
    and the 1-minute load before each round; before the first round it waits for the load to
    fall below ``max_load`` (``wait_for_quiet``).
    """
    times: dict[str, list[float]] = {name: [] for name in runners}
    loads = [wait_for_quiet(max_load)]
    names = list(runners)
    for r in range(rounds):
        if r:
            loads.append(loadavg())
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(runners[name]())
    return times, loads


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_load(loads: Sequence[float]) -> str:
    """The loads seen over the rounds of a measurement, as 'min-max'."""
    return f"{min(loads):.2f}-{max(loads):.2f}" if loads else "-"


SUMMARY_HEADERS = ["figure", "value", "goal", "load", "detail"]


def append_json_rows(path: str | Path, source: str, rows: Sequence[Sequence[Any]]) -> None:
    """Append summary rows (figure, value, goal, load, detail) as JSON lines for ``summarize``."""
    import json

    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps({"source": source, **dict(zip(SUMMARY_HEADERS, map(str, row)))}))
            f.write("\n")


def summarize(path: str | Path) -> str:
    """The one markdown table of every row appended to ``path`` (bench/gpu.sh prints it)."""
    import json

    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    rows = [[json.loads(line)[k] for k in SUMMARY_HEADERS] for line in lines]
    return markdown_table(SUMMARY_HEADERS, rows)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "summarize":
        raise SystemExit("usage: python bench/common.py summarize ROWS.jsonl")
    print("\n".join(machine_lines()))
    print(summarize(sys.argv[2]))
