"""Step parity: reid_jax's training step vs a PyTorch reference trainer, float32, same everything.

Both sides train the same model from the same initial weights on the same batches:

* the model: a torchvision-layout ResNet (bench/parity_torch.py, last stride 1) per frame,
  temporal average pooling, BNNeck (shift frozen at zero) and a bias-free classifier
  (bench/reference_torch.py's ``TorchReID``) against ``ReIDModel`` with ``fusion="mean"``;
* the weights: reid_jax's random init (seeded), copied into torch by the importer's name map
  (``reid_jax.models.pretrained.torch_name``; conv kernels HWIO -> OIHW, classifier transposed);
* the loss: label-smoothed CE (``F.cross_entropy(label_smoothing=0.1)``) on the logits plus
  batch-hard triplet (margin 0.3, Euclidean) on the pre-BNNeck feature;
* the optimiser: ``torch.optim.Adam(weight_decay=wd)`` (wd * param added to the gradient before
  the moments) against ``config.optim.name="adam"`` (``optax.add_decayed_weights`` before
  ``scale_by_adam``, the same thing);
* the schedule: linear warmup from ``warmup_factor`` then x0.1 at each decay epoch, updated
  EVERY STEP on both sides, as reid_jax does (``optim.make_schedule``): the torch side is
  ``LambdaLR`` with BoT's WarmupMultiStepLR formula (michuanhaohao/reid-strong-baseline
  ``solver/lr_scheduler.py``), stepped after every ``optimizer.step()``; epochs become steps
  with ``round(epochs * steps_per_epoch)``. BoT itself steps it once per epoch;
* the batches: each P x K uint8 clip batch of reid_jax's grain pipeline on SynthMARS goes to both
  (torch gets it normalised with the same constants, NCHW);
* BatchNorm: batch statistics in the train-mode forward, momentum 0.1 (flax 0.9) on both; flax
  updates the running variance with the biased batch variance, torch with the unbiased one
  (x n/(n-1); docs/benchmarks.md): evaluation-only, losses and params do not see it;
* ``--float64_steps`` (20): a float64 copy of the torch trainer for the first steps, the float32
  noise floor (rounding alone, amplified by training, moves either side off it as fast).

Per step it prints both losses and their relative difference |jax - torch| / |torch|; at the
end, the parameters' relative difference (global L2 and worst tensor), the batch statistics'
(means and variances apart), and the retrieval metrics of both final models under every
protocol of ``reid_jax.evaluation.metrics`` (BNNeck features, the same test clips, the same
extraction and scoring code). With ``--seeds 3`` the mAP difference can be read against the
seed spread. Targets: the first 10 steps agree to 1e-4 relative; the mean loss of the last 50
steps to 2%; the final mAP difference within the seed spread.

    .venv/bin/python bench/parity_train.py                    # 200 steps x 3 seeds, ResNet-18/16
    .venv/bin/python bench/parity_train.py --steps 20 --seeds 1 --eval 0     # a quick look
    .venv/bin/python bench/parity_train.py --arch resnet50 --model_width 64   # slow on CPU
    .venv/bin/python bench/parity_train.py --seeds 1 --first_seed 2   # one seed per process
"""

from __future__ import annotations

import argparse
import ast
import bisect
import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import common
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch
from flax import traverse_util

from bench.reference_torch import TorchReID, make_reference
from bench.reference_torch import train_step as torch_train_step
from reid_jax import parallel
from reid_jax.config_base import load_config_file
from reid_jax.data import builders, pipeline, prepare, sampling
from reid_jax.data.transforms import normalize
from reid_jax.evaluation import metrics
from reid_jax.evaluation.evaluators import make_evaluators, scalars
from reid_jax.evaluation.extract import extract_features
from reid_jax.models.pretrained import torch_name
from reid_jax.models.reid import make_model
from reid_jax.train import optim
from reid_jax.train import state as state_lib
from reid_jax.train import step as step_lib

DEMO = common.ROOT / "configs" / "synth_mars_demo.py"
# What the torch reference implements, by dotted config key (a missing key counts as this value:
# its default). The loss is what bench/reference_torch.train_step hard-codes.
REFERENCE = {
    "loss.label_smoothing": 0.1, "loss.ce_weight": 1.0, "loss.triplet_weight": 1.0,
    "loss.triplet_margin": 0.3, "loss.triplet_distance": "euclidean", "loss.triplet_soft": False,
    "loss.triplet_feature": "raw", "model.fusion": "mean", "model.spatial_pool": "avg",
    "model.temporal.kind": "none", "model.last_stride": 1, "model.dtype": "float32",
    "optim.name": "adam", "optim.b1": 0.9, "optim.b2": 0.999, "optim.eps": 1e-8,
    "optim.grad_clip_norm": 0.0, "optim.schedule": "step", "optim.layer_decay": 1.0,
}  # fmt: skip


def _parent(config: Any, key: str) -> tuple[Any, str]:
    """(the ConfigDict holding dotted ``key``, its last part); {} where a parent is missing."""
    *parents, leaf = key.split(".")
    for p in parents:
        config = config.get(p, {})
    return config, leaf


def parity_config(
    arch: str = "resnet18", model_width: int = 16, steps: int = 200, **overrides: Any
) -> ml_collections.ConfigDict:
    """synth_mars_demo's data and model at float32, Adam + warmup + step decay, ``steps`` steps.

    ``overrides``: dotted config keys (``"data.p": 4``); ``"tiny": True`` starts from the demo's
    test-sized variant instead."""
    c = load_config_file(DEMO, "tiny" if overrides.pop("tiny", False) else "")
    c.data.raw_dir, c.data.data_dir = "data/parity_synth", "data/parity_tfds"
    c.data.num_workers = 0  # deterministic and cheap; the order is grain's either way
    c.data.test_sampling = "evenly"
    c.model.update(arch=arch, width=model_width, fusion="mean", dtype="float32")
    c.num_steps = steps
    c.optim.update(
        name="adam", lr=3e-4, weight_decay=5e-4, warmup_epochs=2.0, warmup_factor=0.01,
        schedule="step", decay_epochs=[10], decay_factor=0.1,
    )  # fmt: skip
    c.evals.retrieval.protocols = tuple(metrics.PROTOCOLS)
    for key, value in overrides.items():
        node, leaf = _parent(c, key)
        node[leaf] = value
    for key, value in REFERENCE.items():
        node, leaf = _parent(c, key)
        if node.get(leaf, value) != value:
            raise ValueError(f"config.{key}={node[leaf]!r}: the torch reference implements {value}")
    return c


@dataclasses.dataclass
class Data:
    """The prepared splits, the device mesh and the epoch length (steps)."""

    train_source: Any
    train_index: Any
    test_source: Any
    test_index: Any
    mesh: Any
    steps_per_epoch: int


def load_data(config: ml_collections.ConfigDict) -> Data:
    """Render/prepare SynthMARS once (as the trainer does) and open both splits."""
    prepare.ensure_prepared(config.data)
    load = functools.partial(builders.load_split, config.data.name, config.data.data_dir)
    train_source, train_index = load("train", trial=config.data.split)
    test_source, test_index = load("test", trial=config.data.split)
    d = config.data
    spe = sampling.epoch_steps(train_index.label, d.p, d.k, d.get("epoch", "identities"))
    mesh = parallel.make_mesh(config.mesh)
    return Data(train_source, train_index, test_source, test_index, mesh, spe)


def torch_lr_lambda(config_optim: Any, steps_per_epoch: int) -> Callable[[int], float]:
    """BoT's WarmupMultiStepLR multiplier ("linear" warmup, bisect_right over the milestones),
    with epochs converted to steps, for a per-step ``LambdaLR``."""
    warmup = round(float(config_optim.warmup_epochs) * steps_per_epoch)
    milestones = [round(e * steps_per_epoch) for e in config_optim.decay_epochs]
    factor, gamma = float(config_optim.warmup_factor), float(config_optim.decay_factor)

    def multiplier(step: int) -> float:
        warm = 1.0
        if step < warmup:
            alpha = step / warmup
            warm = factor * (1 - alpha) + alpha
        return warm * gamma ** bisect.bisect_right(milestones, step)

    return multiplier


def torch_named(params: Any, batch_stats: Any) -> dict[str, np.ndarray]:
    """reid_jax ReIDModel variables (fusion "mean") under TorchReID's state-dict names, in torch
    layout: conv kernels OIHW, classifier [classes, D]."""
    flat = traverse_util.flatten_dict({"params": params, "batch_stats": batch_stats})
    out = {}
    for (collection, module, *rest), value in flat.items():
        value = np.asarray(value, np.float32)
        if module == "backbone":
            name = "backbone." + torch_name((collection, *rest))
            out[name] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
        elif module == "bnneck":
            leaf = {"scale": "weight", "mean": "running_mean", "var": "running_var"}[rest[-1]]
            out[f"bnneck.{leaf}"] = value
        elif module == "classifier":
            out["classifier.weight"] = value.T
        else:
            raise ValueError(f"variable {collection}/{module}/{'/'.join(rest)} has no torch twin")
    return out


def torch_from_jax(
    state: Any, config: Any, num_classes: int, steps_per_epoch: int
) -> tuple[TorchReID, Any, Any]:
    """TorchReID holding ``state``'s weights and statistics, its Adam and per-step LambdaLR."""
    m, o = config.model, config.optim
    model, opt = make_reference(
        m.arch, num_classes, config.data.seq_len, o.lr, o.weight_decay, m.width
    )
    named = torch_named(state.params, state.batch_stats)
    missing, unexpected = model.load_state_dict(
        {k: torch.from_numpy(np.array(v, np.float32)) for k, v in named.items()}, strict=False
    )
    left = [k for k in missing if not k.endswith("num_batches_tracked") and k != "bnneck.bias"]
    if left or unexpected:
        raise ValueError(f"weight copy into torch: missing {left}, unexpected {unexpected}")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, torch_lr_lambda(o, steps_per_epoch))
    return model, opt, sched


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b||."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def compare_variables(
    state: Any, model: TorchReID, init: dict[str, np.ndarray] | None = None
) -> dict[str, float]:
    """Relative differences of the final variables: params (global L2, worst tensor), running
    means and variances (global L2), and BNNeck's running variance alone; with ``init``, also
    how far training moved the params ("params_moved", relative to torch's final ones)."""
    ours = torch_named(state.params, state.batch_stats)
    theirs = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    groups: dict[str, list[str]] = {"params": [], "running_mean": [], "running_var": []}
    for name in ours:
        kind = name.rsplit(".", 1)[-1]
        groups[kind if kind in ("running_mean", "running_var") else "params"].append(name)
    out = {}
    for group, names in groups.items():
        a = np.concatenate([ours[n].ravel() for n in names])
        b = np.concatenate([theirs[n].ravel() for n in names])
        out[group] = rel_l2(a, b)
    out["params_worst_tensor"] = max(rel_l2(ours[n], theirs[n]) for n in groups["params"])
    out["bnneck_running_var"] = rel_l2(ours["bnneck.running_var"], theirs["bnneck.running_var"])
    if init is not None:
        a = np.concatenate([init[n].ravel() for n in groups["params"]])
        b = np.concatenate([theirs[n].ravel() for n in groups["params"]])
        out["params_moved"] = rel_l2(a, b)
    return out


def torch_batch(clip: np.ndarray) -> torch.Tensor:
    """uint8 clips [B,T,H,W,3] -> normalised float32 frames [B*T,3,H,W] (reid_jax's constants)."""
    frames = normalize(clip).reshape(-1, *clip.shape[2:])
    return torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()


@dataclasses.dataclass
class Run:
    """One seed: per-step losses of both sides, their final models, seconds per step."""

    seed: int
    jax_loss: np.ndarray
    torch_loss: np.ndarray
    float64_loss: np.ndarray  # the float64 torch reference; NaN past float64_steps
    state: Any
    model: TorchReID
    jax_model: Any
    seconds: dict[str, float]
    init: dict[str, np.ndarray]  # the initial variables, torch names and layout

    @property
    def rel(self) -> np.ndarray:
        """|jax - torch| / |torch| per step."""
        return np.abs(self.jax_loss - self.torch_loss) / np.abs(self.torch_loss)

    def rel64(self, loss: np.ndarray) -> np.ndarray:
        """|loss - float64 torch| / |float64 torch| per step (NaN past float64_steps)."""
        return np.abs(loss - self.float64_loss) / np.abs(self.float64_loss)


def train_pair(
    config: Any,
    data: Data,
    seed: int,
    after_step: Callable[[int, Any, TorchReID], None] | None = None,
    float64_steps: int = 0,
) -> Run:
    """Train both sides ``config.num_steps`` steps from reid_jax's seed-``seed`` init on the seed's
    batch stream; ``after_step(step, state, torch_model)`` observes them after each step.

    ``float64_steps`` > 0 also trains a float64 copy of the torch reference for that many steps:
    the float32 noise floor (how far float32 rounding alone, amplified by training, takes either
    side from the float64 trajectory)."""
    steps, d = config.num_steps, config.data
    num_classes = data.train_index.num_classes
    model = make_model(config.model, num_classes)
    tx = optim.make_optimizer(config.optim, data.steps_per_epoch, total_steps=steps)
    clip_shape = (d.p * d.k, d.seq_len, d.height, d.width, 3)
    state, _ = state_lib.create(
        jax.random.key(seed), model, tx, clip_shape, parallel.replicated(data.mesh)
    )
    jstep = jax.jit(
        functools.partial(
            step_lib.train_step, model=model, tx=tx,
            loss_cfg=step_lib.LossConfig.from_config(config.loss),
        )
    )  # fmt: skip
    tmodel, opt, sched = torch_from_jax(state, config, num_classes, data.steps_per_epoch)
    init = torch_named(state.params, state.batch_stats)
    if float64_steps > 0:  # .double() swaps each Parameter's data in place: Adam keeps them
        m64, opt64, sched64 = torch_from_jax(state, config, num_classes, data.steps_per_epoch)
        m64.double()
    it = pipeline.train_iterator(data.train_source, data.train_index, d, num_steps=steps, seed=seed)
    losses = np.full((3, steps), np.nan)
    seconds = {"jax": 0.0, "torch": 0.0}
    for i in range(steps):
        local = next(it)
        batch = parallel.global_batch({"clip": local["clip"], "label": local["label"]}, data.mesh)
        t0 = time.perf_counter()
        state, m = jstep(state, batch)
        losses[0, i] = float(m["loss"])
        t1 = time.perf_counter()
        labels = torch.from_numpy(np.asarray(local["label"], np.int64))
        losses[1, i] = torch_train_step(tmodel, opt, torch_batch(local["clip"]), labels)
        sched.step()
        t2 = time.perf_counter()
        if i > 0:  # the first JAX step compiles
            seconds["jax"] += (t1 - t0) / (steps - 1)
            seconds["torch"] += (t2 - t1) / (steps - 1)
        if i < float64_steps:
            losses[2, i] = torch_train_step(m64, opt64, torch_batch(local["clip"]).double(), labels)
            sched64.step()
        if after_step is not None:
            after_step(i + 1, state, tmodel)
    close = getattr(it, "close", None)
    if close is not None:
        close()
    return Run(seed, losses[0], losses[1], losses[2], state, tmodel, model, seconds, init)


def _torch_embed(model: TorchReID, batch: dict[str, jax.Array], *, feature: str) -> dict:
    """embed_step's twin for the torch model: eval-mode BNNeck ("bn") or pooled ("raw") features."""
    clip = np.asarray(batch["clip"])
    model.eval()
    with torch.no_grad():
        _, feats = model(torch_batch(clip))
        if feature == "bn":
            feats = model.bnneck(feats)
    return {"features": jnp.asarray(feats.numpy())}


def evaluate_pair(config: Any, data: Data, run: Run) -> dict[str, dict[str, float]]:
    """Retrieval metrics of both final models: same test clips, extraction and scoring code."""
    evaluator = make_evaluators(
        config.evals, model=run.jax_model, source=data.test_source, index=data.test_index,
        data_cfg=config.data, mesh=data.mesh, process=parallel.ProcessSlice(),
    )["retrieval"]  # fmt: skip
    feats = {"reid_jax": evaluator.features(run.state)}
    batches, num_batches = pipeline.eval_iterator(
        data.test_source, data.test_index, config.data, global_batch=config.data.test_batch_size
    )
    embed = functools.partial(_torch_embed, feature=config.evals.retrieval.feature)
    try:
        feats["torch"] = extract_features(
            embed, run.model, batches, num_batches, len(data.test_index.pid), data.mesh
        )
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    run.model.train()
    return {side: dict(scalars(evaluator.score(f))) for side, f in feats.items()}


def summarize(run: Run) -> dict[str, float]:
    """The target figures of one seed."""
    last = slice(max(0, len(run.rel) - 50), None)
    mj, mt = float(run.jax_loss[last].mean()), float(run.torch_loss[last].mean())
    return {
        "first10_max_rel": float(run.rel[:10].max()),
        "all_max_rel": float(run.rel.max()),
        "last50_jax": mj,
        "last50_torch": mt,
        "last50_rel": abs(mj - mt) / abs(mt),
        **compare_variables(run.state, run.model, run.init),
    }


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> None:
    """Train, print the per-step table and the per-seed / across-seed summaries."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first_seed", type=int, default=0, help="seeds first_seed, ...")
    parser.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet34", "resnet50"])
    parser.add_argument("--model_width", type=int, default=16)
    parser.add_argument("--eval", type=int, default=1, help="1: mAP of both final models")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--print_every", type=int, default=1)
    parser.add_argument(
        "--float64_steps", type=int, default=20,
        help="also train a float64 torch copy this many steps: the float32 noise floor",
    )  # fmt: skip
    parser.add_argument("--max_load", type=float, default=99.0, help="wait for a lower load")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE",
        help="config overrides, e.g. data.p=4 optim.lr=1e-3 (values parsed as Python literals)",
    )  # fmt: skip
    args = parser.parse_args()

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    torch.set_num_threads(args.threads)
    config = parity_config(args.arch, args.model_width, args.steps, **overrides)
    common.wait_for_quiet(args.max_load)
    print("\n".join(common.machine_lines()))
    print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {common.loadavg()}")
    data = load_data(config)
    d, o = config.data, config.optim
    print(
        f"{args.arch} width {args.model_width}, {d.height}x{d.width}, T={d.seq_len}, "
        f"P x K = {d.p}x{d.k}, {data.train_index.num_classes} ids, {data.steps_per_epoch} "
        f"steps/epoch; Adam lr {o.lr} wd {o.weight_decay}, warmup {o.warmup_epochs} epochs from "
        f"x{o.warmup_factor}, x{o.decay_factor} at epochs {list(o.decay_epochs)} (per-step lr)"
    )
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        run = train_pair(config, data, seed, float64_steps=args.float64_steps)
        print(
            f"\nseed {seed}: step | reid_jax loss | torch loss | rel diff | float64 torch loss | "
            "reid_jax vs float64 | torch vs float64"
        )
        j64, t64 = run.rel64(run.jax_loss), run.rel64(run.torch_loss)
        for i in range(0, args.steps, args.print_every):
            line = (
                f"{i + 1:4d} | {run.jax_loss[i]:.6f} | {run.torch_loss[i]:.6f} | {run.rel[i]:.2e}"
            )
            if i < args.float64_steps:
                line += f" | {run.float64_loss[i]:.6f} | {j64[i]:.2e} | {t64[i]:.2e}"
            print(line)
        s = summarize(run)
        s["seed"], s["jax_s"], s["torch_s"] = seed, run.seconds["jax"], run.seconds["torch"]
        if args.eval:
            for side, res in evaluate_pair(config, data, run).items():
                for p in config.evals.retrieval.protocols:
                    s[f"{side}/{p}/mAP"] = res[f"{p}/mAP"]
                    s[f"{side}/{p}/Rank1"] = res[f"{p}/Rank1"]
            for p in config.evals.retrieval.protocols:
                print(
                    f"seed {seed}: {p} mAP / Rank1 reid_jax {100 * s[f'reid_jax/{p}/mAP']:.2f} / "
                    f"{100 * s[f'reid_jax/{p}/Rank1']:.2f}, torch {100 * s[f'torch/{p}/mAP']:.2f}"
                    f" / {100 * s[f'torch/{p}/Rank1']:.2f}"
                )
        rows.append(s)
        print(
            f"seed {seed}: first 10 steps max rel {s['first10_max_rel']:.2e} "
            f"({_verdict(s['first10_max_rel'] <= 1e-4)}: <= 1e-4); all steps max rel "
            f"{s['all_max_rel']:.2e}; last-50 mean loss jax {s['last50_jax']:.5f} torch "
            f"{s['last50_torch']:.5f} rel {s['last50_rel']:.2e} "
            f"({_verdict(s['last50_rel'] <= 0.02)}: <= 2%)"
        )
        if args.float64_steps >= 10:
            print(
                f"seed {seed}: first 10 steps max rel to the float64 torch reference: reid_jax "
                f"{j64[:10].max():.2e}, torch float32 {t64[:10].max():.2e} (float32 noise floor)"
            )
        print(
            f"seed {seed}: final rel L2 diff params {s['params']:.2e} (worst tensor "
            f"{s['params_worst_tensor']:.2e}; training moved them {s['params_moved']:.2e}), "
            f"running means {s['running_mean']:.2e}, running "
            f"vars {s['running_var']:.2e} (BNNeck's {s['bnneck_running_var']:.2e}); "
            f"s/step jax {s['jax_s']:.3f} torch {s['torch_s']:.3f}"
        )
    if args.eval:
        _print_map_summary(rows, config.evals.retrieval.protocols)


def _print_map_summary(rows: list[dict[str, float]], protocols: tuple[str, ...]) -> None:
    """Per-seed mAPs of both sides, their mean difference and the seed spread (sample std)."""
    for p in protocols:
        j = np.array([r[f"reid_jax/{p}/mAP"] for r in rows])
        t = np.array([r[f"torch/{p}/mAP"] for r in rows])
        spread = max(j.std(ddof=1), t.std(ddof=1)) if len(rows) > 1 else float("nan")
        diff = float(j.mean() - t.mean())
        print(
            f"{p} mAP per seed: reid_jax {np.round(100 * j, 2).tolist()}, torch "
            f"{np.round(100 * t, 2).tolist()}; mean {100 * j.mean():.2f} vs {100 * t.mean():.2f}, "
            f"diff {100 * diff:+.2f} points, seed std {100 * spread:.2f} "
            + (f" ({_verdict(abs(diff) <= spread)}: |diff| <= seed std)" if len(rows) > 1 else "")
        )


if __name__ == "__main__":
    main()
