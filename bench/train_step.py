"""Training-step throughput and MFU of reid_jax, per fusion method and dtype, against PyTorch.

For each registered fusion (``reid_jax.fusion.FUSIONS``) and dtype it jits ``train_step`` as the
training loop does (state shardings, donated state), feeds a P x K uint8 batch placed on the
device every step (as the loop does), and times ``--steps`` steps per round. FLOPs per step come
from XLA's cost analysis of the compiled step (a multiply-add counts 2; padded taps are not
counted); MFU = FLOPs per step / step time / peak (see ``common.peak_flops``).

For ``mean`` (temporal average pooling, the PyTorch baseline's model), the PyTorch reference step
(bench/reference_torch.py) runs in the same process, alternating with JAX round by round, and the
ratio JAX step time / torch step time is reported per round (median and spread).

    .venv/bin/python bench/train_step.py                       # the issue's GPU setting
    .venv/bin/python bench/train_step.py --arch resnet18 --height 128 --width 64 --p 4 --k 2 \
        --fusions mean --dtypes float32                         # a CPU-sized setting
    .venv/bin/python bench/train_step.py --arch resnet50,clip_vit_b16 --fusions mean \
        --dtypes bfloat16 --torch 0                             # ViT-B/16 beside ResNet-50

``--temporal c2d,ap3d,ap3d_nl`` adds AP3D / AP3D+NL ResNets beside the plain C2D one (presets of
reid_jax.models.inflated, AP3D's placement; the arch column reads e.g. ``resnet50+ap3d``; torch
runs for c2d only). ``--arch`` takes a comma list of reid_jax.models.reid.BACKBONES (the torch
reference exists for the ResNets only). "XLA memory GiB" is XLA's memory analysis of the
compiled step: arguments + outputs + temporaries - donated (aliased) bytes, i.e. the step's device
footprint.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import common
import jax
import numpy as np

from reid_jax import parallel
from reid_jax.config_base import base_config
from reid_jax.fusion import FUSIONS
from reid_jax.models import embed as embed_lib
from reid_jax.models import inflated
from reid_jax.models.reid import BACKBONES, make_model
from reid_jax.models.resnet import RESNETS
from reid_jax.train import optim
from reid_jax.train import state as state_lib
from reid_jax.train import step as step_lib


def random_batch(p: int, k: int, seq_len: int, height: int, width: int, seed: int = 0) -> dict:
    """A host P x K batch: uint8 clips [P*K, T, H, W, 3] and int32 labels (K clips per id)."""
    rng = np.random.default_rng(seed)
    clip = rng.integers(0, 256, (p * k, seq_len, height, width, 3), dtype=np.uint8)
    return {"clip": clip, "label": np.repeat(np.arange(p, dtype=np.int32), k)}


class JaxStep:
    """The jitted training step of one (arch, fusion, dtype) with its state and host batch."""

    def __init__(self, args: argparse.Namespace, fusion: str, dtype: str, host_batch: dict):
        config = base_config()
        config.model.arch, config.model.fusion, config.model.dtype = args.arch, fusion, dtype
        if args.temporal != "c2d":  # an inflated ResNet (AP3D's placement for the arch)
            stages = RESNETS[args.arch].keywords["stage_sizes"]
            config.model.temporal.update(inflated.preset(args.temporal, stages))
        self.mesh = parallel.make_mesh(config.mesh)
        self.model = make_model(config.model, args.num_classes)
        tx = optim.make_optimizer(config.optim, steps_per_epoch=100)
        b = args.p * args.k
        t0 = time.perf_counter()
        self.state, abstract = state_lib.create(
            jax.random.key(0),
            self.model,
            tx,
            (b, args.seq_len, args.height, args.width, 3),
            functools.partial(parallel.state_shardings, mesh=self.mesh),
        )
        self.params = state_lib.param_count(self.state.params)
        state_sh = jax.tree.map(lambda a: a.sharding, abstract)
        rep, bat = parallel.replicated(self.mesh), parallel.batch_sharding(self.mesh)
        fn = functools.partial(
            step_lib.train_step,
            model=self.model,
            tx=tx,
            loss_cfg=step_lib.LossConfig.from_config(config.loss),
        )
        self.host_batch = host_batch
        batch = self.device_batch()
        jitted = jax.jit(
            fn, in_shardings=(state_sh, bat), out_shardings=(state_sh, rep), donate_argnums=(0,)
        )
        lowered = jitted.lower(self.state, batch)
        self.flops = common.xla_flops(lowered)
        self.step = lowered.compile()
        self.compile_s = time.perf_counter() - t0
        self.memory_gib = compiled_memory_gib(self.step)
        self.run(1)  # first execution (allocation, autotuning) outside the timing

    def device_batch(self) -> dict[str, jax.Array]:
        """The host batch placed on the mesh, as the training loop does every step."""
        return parallel.global_batch(self.host_batch, self.mesh)

    def forward(self, steps: int) -> float:
        """Seconds for ``steps`` inference forwards (``embed_step``) on a fresh device batch."""
        if not hasattr(self, "_embed"):
            embed = functools.partial(embed_lib.embed_step, model=self.model, feature="bn")
            self._embed = jax.jit(embed)
            jax.block_until_ready(self._embed(self.state, self.device_batch()))
        t0 = time.perf_counter()
        for _ in range(steps):
            out = self._embed(self.state, self.device_batch())
        jax.block_until_ready(out)
        return time.perf_counter() - t0

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps, each with a fresh host->device batch."""
        t0 = time.perf_counter()
        for _ in range(steps):
            self.state, metrics = self.step(self.state, self.device_batch())
        jax.block_until_ready((self.state, metrics))
        return time.perf_counter() - t0


def compiled_memory_gib(compiled: Any) -> float:
    """XLA's device-memory estimate of a compiled step in GiB (nan if the backend has none)."""
    m = compiled.memory_analysis()
    if m is None:
        return float("nan")
    used = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
    return (used - m.alias_size_in_bytes) / 2**30


class TorchStep:
    """The PyTorch reference step (mean fusion only) on the same batch, as a loader gives it."""

    def __init__(self, args: argparse.Namespace, dtype: str):
        import reference_torch as ref
        import torch

        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        self.model, self.opt = ref.make_reference(args.arch, args.num_classes, args.seq_len)
        self.frames, self.labels, _, _ = ref.random_batch(
            args.p, args.k, args.seq_len, args.height, args.width, channels_last=args.channels_last
        )
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.autocast = {"float32": None, "bfloat16": torch.bfloat16}[dtype]
        self.params = ref.param_count(self.model)
        self._step = ref.train_step
        self.run(1)

    def forward(self, steps: int) -> float:
        """Seconds for ``steps`` inference forwards (eval mode, no autograd)."""
        import torch

        self.model.eval()
        t0 = time.perf_counter()
        with torch.no_grad():
            for _ in range(steps):
                with torch.autocast("cpu", self.autocast, enabled=self.autocast is not None):
                    self.model(self.frames)
        secs = time.perf_counter() - t0
        self.model.train()
        return secs

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps."""
        t0 = time.perf_counter()
        for _ in range(steps):
            self._step(self.model, self.opt, self.frames, self.labels, self.autocast)
        return time.perf_counter() - t0


def measure(args: argparse.Namespace, fusion: str, dtype: str, host_batch: dict) -> list[Any]:
    """One table row: JAX (and, for mean, torch) alternated over ``args.rounds`` rounds."""
    jax_step = JaxStep(args, fusion, dtype, host_batch)
    runners: dict[str, Callable[[], float]] = {"jax": lambda: jax_step.run(args.steps)}
    torch_step = None
    plain = args.arch in RESNETS and args.temporal == "c2d"
    if args.torch and fusion == "mean" and dtype in args.torch_dtypes and plain:
        torch_step = TorchStep(args, dtype)
        runners["torch"] = lambda: torch_step.run(args.steps)
        if torch_step.params != jax_step.params:
            print(f"# WARNING: parameters differ: jax {jax_step.params} torch {torch_step.params}")
    if args.breakdown and torch_step is not None:
        runners["jax forward"] = lambda: jax_step.forward(args.steps)
        runners["torch forward"] = lambda: torch_step.forward(args.steps)
    times, loads = common.alternate(runners, args.rounds, args.max_load)
    if "jax forward" in times:
        parts = [f"{k} {common.fmt_spread(v, 1e3 / args.steps)} ms" for k, v in times.items()]
        print(f"# breakdown {fusion} {dtype}: " + ", ".join(parts), flush=True)
    jax_s = [t / args.steps for t in times["jax"]]
    frames = args.p * args.k * args.seq_len
    med = common.spread(jax_s)["median"]
    peak, _ = common.peak_flops(dtype)
    row = [
        args.arch if args.temporal == "c2d" else f"{args.arch}+{args.temporal}",
        fusion,
        dtype,
        f"{jax_step.params / 1e6:.2f}M",
        common.fmt_spread(jax_s, 1e3),
        f"{frames / med:,.{1 if frames / med < 100 else 0}f}",
        f"{jax_step.flops / 1e9:,.1f}",
        f"{100 * jax_step.flops / med / peak:.1f}%",
    ]
    if torch_step is not None:
        torch_s = [t / args.steps for t in times["torch"]]
        ratios = [j / t for j, t in zip(times["jax"], times["torch"], strict=True)]
        row += [common.fmt_spread(torch_s, 1e3), common.fmt_spread(ratios, 1.0, 2)]
    else:
        row += ["-", "-"]
    row += [f"{jax_step.memory_gib:.2f}", common.fmt_load(loads), f"{jax_step.compile_s:.0f}"]
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; defaults are the issue's GPU setting (ResNet-50, 256x128, T=4, 32)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--seq_len", type=int, default=4)
    parser.add_argument("--p", type=int, default=8, help="identities per batch")
    parser.add_argument("--k", type=int, default=4, help="clips per identity")
    parser.add_argument("--num_classes", type=int, default=625, help="625 = MARS train ids")
    parser.add_argument("--fusions", default="all", help="comma list, or 'all' registered")
    parser.add_argument(
        "--temporal", default="c2d", help="comma list of ResNet presets: c2d, c3d, ap3d, ap3d_nl"
    )
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--torch", type=int, default=1, help="compare mean against PyTorch")
    parser.add_argument("--breakdown", type=int, default=0, help="also time inference forwards")
    parser.add_argument("--torch_dtypes", default="float32", help="bfloat16 = CPU autocast")
    parser.add_argument("--channels_last", action="store_true", help="torch channels_last")
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="torch intra-op threads; 1 also pins the process (XLA too) to one core",
    )
    parser.add_argument("--max_load", type=float, default=1.5, help="wait below; 0 = never")
    parser.add_argument("--json", default="", help="append summary rows here (bench/gpu.sh)")
    args = parser.parse_args(argv)
    unknown_archs = sorted(set(args.arch.split(",")) - set(BACKBONES))
    if unknown_archs:
        parser.error(f"--arch: {unknown_archs} not registered; have {sorted(BACKBONES)}")
    args.fusion_list = list(FUSIONS) if args.fusions == "all" else args.fusions.split(",")
    unknown = sorted(set(args.fusion_list) - set(FUSIONS))
    if unknown:
        parser.error(f"--fusions: {unknown} not registered; have {sorted(FUSIONS)}")
    args.dtype_list = args.dtypes.split(",")
    args.temporal_list = args.temporal.split(",")
    unknown = sorted(set(args.temporal_list) - set(inflated.PRESETS))
    if unknown:
        parser.error(f"--temporal: {unknown} not presets; have {sorted(inflated.PRESETS)}")
    if args.temporal_list != ["c2d"] and not set(args.arch.split(",")) <= set(RESNETS):
        parser.error(f"--temporal {args.temporal}: inflated backbones need ResNet archs")
    args.torch_dtypes = args.torch_dtypes.split(",")
    return args


HEADERS = [
    "arch",
    "fusion",
    "dtype",
    "params",
    "JAX step ms",
    "JAX frames/s",
    "GFLOP/step",
    "MFU",
    "torch step ms",
    "JAX/torch",
    "XLA memory GiB",
    "load",
    "init+compile s",
]


def main(argv: list[str] | None = None) -> list[list[Any]]:
    """Measure every (fusion, dtype) and print the table; returns its rows."""
    args = parse_args(argv)
    if args.threads == 1:
        # XLA:CPU ignores thread-count flags (jax 0.10 thunk runtime), so both sides get one
        # core by pinning the process to it: the only way to give XLA and torch the same cores.
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    host_batch = random_batch(args.p, args.k, args.seq_len, args.height, args.width)
    rows, arch_args = [], []
    for arch, temporal in [(a, t) for a in args.arch.split(",") for t in args.temporal_list]:
        one = copy.copy(args)
        one.arch, one.temporal = arch, temporal
        for fusion in args.fusion_list:
            for dtype in args.dtype_list:
                rows.append(measure(one, fusion, dtype, host_batch))
                arch_args.append(one)
                print("# " + " | ".join(rows[-1]), flush=True)
    print("\n".join(common.machine_lines()))
    for dtype in args.dtype_list:
        peak, source = common.peak_flops(dtype)
        print(f"peak {dtype}: {peak:.3g} FLOP/s ({source})")
    print(
        f"{args.arch} {args.height}x{args.width}, T={args.seq_len}, P x K = {args.p}x{args.k} "
        f"({args.p * args.k * args.seq_len} frames/step), {args.num_classes} classes, "
        f"{args.rounds} rounds x {args.steps} steps; step ms and ratio: median (min-max); "
        "FLOPs: XLA cost analysis of the whole step (multiply-add = 2)"
    )
    print(common.markdown_table(HEADERS, rows))
    if args.json:
        summary = [summary_row(a, r) for a, r in zip(arch_args, rows, strict=True)]
        common.append_json_rows(args.json, "train_step", summary)
    return rows


def summary_row(args: argparse.Namespace, row: list[str]) -> list[str]:
    """A table row as (figure, value, goal, load, detail) for the one table of bench/gpu.sh."""
    cols = dict(zip(HEADERS, row, strict=True))
    on_gpu = jax.devices()[0].platform == "gpu"
    if on_gpu:  # the goal was set for ResNet-50; other backbones are measured, not judged
        plain_r50 = args.arch == "resnet50" and args.temporal == "c2d"
        goal = ">= 15,000 frames/s (H200, bf16)" if plain_r50 else "- (measured)"
    else:  # the CPU goal is a ratio: only rows that ran the torch step have one
        goal = "JAX/torch <= 1.2 (CPU)" if cols["JAX/torch"] != "-" else "- (CPU run)"
    detail = (
        f"step {cols['JAX step ms']} ms, MFU {cols['MFU']}, {cols['GFLOP/step']} GFLOP/step "
        f"(XLA, FMA = 2), XLA memory {cols['XLA memory GiB']} GiB, "
        f"init+compile {cols['init+compile s']} s"
    )
    if cols["JAX/torch"] != "-":
        detail += f"; torch step {cols['torch step ms']} ms, JAX/torch {cols['JAX/torch']}"
    figure = (
        f"train {cols['arch']} {cols['dtype']} {cols['fusion']} {args.height}x{args.width} "
        f"T={args.seq_len}, {args.p * args.k} clips"
    )
    return [figure, f"{cols['JAX frames/s']} frames/s", goal, cols["load"], detail]


if __name__ == "__main__":
    main()
