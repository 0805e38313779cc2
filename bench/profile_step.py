"""Where the JAX training step spends its time: one step under ``jax.profiler``, summed by XLA op.

Takes train_step.py's flags (one fusion and dtype) and prints the op kinds (``ynn_fusion.66`` ->
``ynn_fusion``) by total time, then the slowest single ops. On CPU, ``ynn_fusion`` ops are
YNNPACK convolutions/dots; match an op to its HLO with
``XLA_FLAGS=--xla_dump_to=DIR --xla_dump_hlo_as_text``.

    .venv/bin/python bench/profile_step.py --p 2 --k 2 --fusions mean --dtypes float32
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import sys
import tempfile
from pathlib import Path

import jax
import train_step


def main(argv: list[str] | None = None) -> None:
    """Trace one step and print the time per op kind and the top ops."""
    args = train_step.parse_args(argv)
    fusion, dtype = args.fusion_list[0], args.dtype_list[0]
    host = train_step.random_batch(args.p, args.k, args.seq_len, args.height, args.width)
    step = train_step.JaxStep(args, fusion, dtype, host)
    with tempfile.TemporaryDirectory() as out:
        with jax.profiler.trace(out, create_perfetto_trace=True):
            secs = step.run(1)
        trace = json.load(gzip.open(next(Path(out).rglob("*.trace.json.gz"))))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    ops = [
        (e["name"], e.get("dur", 0) / 1e3)
        for e in events
        if e.get("ph") == "X" and not e["name"].startswith(("$", "ThunkExecutor", "Slinky"))
    ]
    kinds: dict[str, list[float]] = collections.defaultdict(list)
    for name, ms in ops:
        kinds[re.sub(r"\.\d+$", "", name)].append(ms)
    total = sum(ms for _, ms in ops)
    print(
        f"{args.arch} {args.height}x{args.width} T={args.seq_len} {args.p * args.k} clips, "
        f"{fusion} {dtype}: step {secs:.2f} s wall, {total / 1e3:.2f} s summed over ops "
        "(ops on different threads overlap)"
    )
    print("| op kind | ops | ms | share |\n|---|---|---|---|")
    for kind, times in sorted(kinds.items(), key=lambda kv: -sum(kv[1]))[:12]:
        print(f"| {kind} | {len(times)} | {sum(times):,.1f} | {100 * sum(times) / total:.1f}% |")
    print(
        "slowest ops: "
        + ", ".join(f"{n} {ms:.0f} ms" for n, ms in sorted(ops, key=lambda o: -o[1])[:8])
    )


if __name__ == "__main__":
    main(sys.argv[1:])
