"""The full set of config keys with their defaults; files in ``configs/`` override what they change.

Every key exists here, so configs are locked (a typo in ``--config.x=y`` fails loudly) and the
training code never needs ``.get`` with a fallback.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections
from ml_collections import config_dict

from reid_jax import fusion
from reid_jax.data import builders
from reid_jax.evaluation import evaluators


def fusion_placeholders(table: dict) -> ml_collections.ConfigDict:
    """``config.model.fusion_kwargs``: an unset placeholder of its type for every option of the
    fusions' option table (``reid_jax.fusion.option_table``), a sub-dict for a branch's options."""
    return ml_collections.ConfigDict(
        {
            k: fusion_placeholders(t) if isinstance(t, dict) else config_dict.placeholder(t)
            for k, t in table.items()
        }
    )


def base_config() -> ml_collections.ConfigDict:
    """Defaults: the research recipe's choices where it has one (ResNet-50 TP on MARS)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.num_epochs = 520
    c.num_steps = -1  # > 0 overrides num_epochs
    c.log_every_steps = 50
    c.log_every_epochs = config_dict.placeholder(float)  # set: overrides log_every_steps
    c.log_data_order = False  # record each step's global tracklet ids in data_order.jsonl
    c.eval_every_epochs = 40.0
    c.eval_start_epochs = 0.0  # no periodic evaluation before this epoch (the last always runs)

    c.data = ml_collections.ConfigDict()
    c.data.name = "mars"  # a key of reid_jax.data.builders.DATASETS
    c.data.raw_dir = "data/MARS"  # the manual download (MARS) or where SynthMARS is rendered
    c.data.data_dir = "data/tfds"  # prepared array_record datasets
    c.data.split = 0  # trial of iLIDS-VID / PRID-2011 (0..9); fixed-split datasets need 0
    c.data.synth = ml_collections.ConfigDict(
        dict(num_ids=100, height=256, width=128, corruption_rate=0.1, seed=0, length_scale=0.25)
    )
    c.data.height = 256
    c.data.width = 128
    c.data.seq_len = 4  # T frames per clip
    c.data.p = 8  # identities per batch
    c.data.k = 4  # tracklets per identity
    # "restricted_random", "random_window" (T frames sample_stride apart) or "strided" (AP3D's
    # TemporalRandomCrop: T frames sample_stride apart when the tracklet is long enough)
    c.data.frame_sampler = "restricted_random"
    c.data.sample_stride = 1  # stride of "random_window" / "strided" (AP3D: 8)
    # What one epoch is: "identities" (every training identity once, P x K) or "tracklets"
    # (every training tracklet once, in chunks of K: AP3D / TF-CLIP's epochs). docs/recipes.md
    c.data.epoch = "identities"
    c.data.pad = 10
    c.data.flip_p = 0.5
    c.data.erase_p = 0.5
    # "all" frames in chunks of T, "evenly" (T spread frames) or "restricted_random" (one seeded
    # random frame from each of T equal parts)
    c.data.test_sampling = "all"
    c.data.test_batch_size = 64  # clips per evaluation batch (bounds device memory)
    c.data.num_workers = 2  # grain worker processes (0 = in the main process)
    c.data.num_threads = 4  # reader threads per worker
    c.data.max_bad_frames = 100  # undecodable frames tolerated before the run stops

    c.model = ml_collections.ConfigDict()
    c.model.arch = "resnet50"
    c.model.width = 64
    c.model.last_stride = 1
    c.model.fusion = "mean"
    c.model.spatial_pool = "avg"  # or "max": each frame map max-pooled before the fusion (AP3D)
    # Every option of every fusion (the modules' fields), unset (None = the fusion's own
    # default); set only those of the chosen fusion, e.g. --config.model.fusion_kwargs.tau=0.1,
    # two_branch's as --config.model.fusion_kwargs.appearance.tau=0.1. See docs/fusion.md.
    c.model.fusion_kwargs = fusion_placeholders(fusion.option_table())
    c.model.dtype = "float32"
    c.model.zero_init_residual = False  # last BN of each residual block starts at 0 (Goyal et al.)
    # Temporal layers inside a ResNet (docs/models.md): kind "none" (C2D: frames independent),
    # "c3d" (3x1x1 residual temporal conv, AP3D's P3D-C), "i3d" (3x3x3 inflated conv) or "ap3d"
    # (appearance-preserving 3D conv, AP3D's APP3DC) in the blocks named by "stage.block" lists
    # (AP3D's ResNet-50: "2.0,2.2,3.0,3.2,3.4"); non-local blocks after nonlocal_blocks (AP3D-NL:
    # "2.1,2.3,3.1,3.3,3.5"). time_dim / temperature / contrastive_att as in AP3D's models/AP3D.py.
    c.model.temporal = ml_collections.ConfigDict(
        dict(
            kind="none",
            blocks="",
            nonlocal_blocks="",
            time_dim=3,
            temperature=4.0,
            contrastive_att=True,
        )
    )
    # ImageNet weights for the backbone: a .safetensors/.pth state dict (torchvision or timm
    # ResNet names) or an orbax dir from reid_jax.tools.import_weights. "" = unset: random init
    # on SynthMARS, an error on real datasets (pretrained_weights); "scratch" = random init.
    c.model.pretrained = ""
    # ViT backbones (arch vit_b16 / vit_s16 / clip_vit_b16, docs/vit.md); unset = the arch's own.
    c.model.vit = ml_collections.ConfigDict(
        dict(
            tokens="cls",  # what the fusion sees: "cls" (CLS vectors) or "patches" (token maps)
            stride=config_dict.placeholder(int),  # patch stride (< 16: overlapping patches)
            width=config_dict.placeholder(int),
            depth=config_dict.placeholder(int),
            heads=config_dict.placeholder(int),
            act=config_dict.placeholder(str),  # "gelu" | "quick_gelu" (OpenAI CLIP weights)
            proj_dim=config_dict.placeholder(int),  # > 0: CLIP's visual projection on the tokens
            pos_interpolation="bicubic",  # import: timm/open_clip's; "bilinear": CLIP-ReID's
            pretrained_grid=config_dict.placeholder(tuple),  # import: the file's grid if not square
        )
    )

    c.loss = ml_collections.ConfigDict(
        dict(
            label_smoothing=0.1,
            ce_weight=1.0,
            triplet_weight=1.0,
            triplet_margin=0.3,
            triplet_distance="euclidean",
            triplet_soft=False,
            triplet_feature="raw",  # "raw" (before the BNNeck, BoT) or "bn" (after it, AP3D)
        )
    )

    c.optim = ml_collections.ConfigDict(
        dict(
            name="adam",
            lr=3e-4,
            weight_decay=5e-4,
            b1=0.9,
            b2=0.999,
            eps=1e-8,  # Adam's epsilon (torch.optim.Adam's default)
            warmup_epochs=0.0,
            warmup_factor=0.01,
            schedule="step",
            decay_epochs=[200, 400],
            decay_factor=0.1,
            final_factor=0.0,
            grad_clip_norm=0.0,
            layer_decay=1.0,  # ViT layer-wise lr decay: block i of L gets lr * decay ** (L - i)
        )
    )

    c.evals = ml_collections.ConfigDict()
    c.evals.retrieval = ml_collections.ConfigDict(
        dict(
            type="retrieval",
            protocols=("official", "legacy", "appended"),
            feature="bn",  # "bn" (after BNNeck) or "raw"
            distance="euclidean",  # or "cosine"
            normalize=False,
            dump_weights=False,  # write every test chunk's per-frame fusion weights to an .npz
            # docs/evaluation.md: test-time options of the evaluator and the evaluation job.
            flip=False,  # horizontal-flip TTA: average the features of each clip and its mirror
            camera_pairs=False,  # official 6x6 query x gallery camera mAP / Rank-1 matrices
            aqe_k=0,  # > 0: also report "<protocol>+aqe/..." with query expansion
            aqe_mode="average",  # or "alpha": fast-reid's aqe (queries and gallery, cos ** alpha)
            aqe_alpha=3.0,  # "alpha" mode: weight exponent (fast-reid TEST.AQE.ALPHA)
            aqe_times=1,  # "alpha" mode: rounds of expansion (fast-reid TEST.AQE.QE_TIME)
            rerank=False,  # also report "<protocol>+rerank/..." (k-reciprocal re-ranking)
            rerank_k1=20,
            rerank_k2=6,
            rerank_lambda=0.3,
        )
    )

    c.checkpoint = ml_collections.ConfigDict(
        dict(
            every_steps=1000,
            every_epochs=config_dict.placeholder(float),  # set: overrides every_steps
            keep_last=2,
            keep_best=True,
            best_metric="retrieval/official/mAP",
            keep_eval_steps=True,
            async_save=True,
        )
    )
    # Device mesh (docs/scaling.md): axis -> size, -1 = the rest. "data" splits the batch; "fsdp"
    # also splits the batch and shards parameters / optimiser state (1 = off).
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1))
    return c


class ConfigError(ValueError):
    """A config value that cannot run; entry points print its message as one line and exit 2."""


# Datasets rendered by reid_jax itself: random init is their norm (nothing to compare with).
SYNTHETIC_DATASETS = ("synth_mars",)
SCRATCH = "scratch"  # config.model.pretrained value that asks for random init explicitly
WEIGHTS_HELP = "README.md, section 'ImageNet-pretrained backbones'"


# Numeric keys and the range that can run: (key, lowest allowed, what it means). Checked by
# ``check_ranges`` before anything runs, so a bad value is named instead of failing deep inside.
RANGES = (
    ("data.seq_len", 1, "frames per clip"),
    ("data.p", 1, "identities per batch"),
    ("data.k", 1, "tracklets per identity"),
    ("data.height", 1, "input height"),
    ("data.width", 1, "input width"),
    ("data.test_batch_size", 1, "clips per evaluation batch"),
    ("data.sample_stride", 1, "frame stride"),
    ("data.pad", 0, "crop padding"),
    ("data.num_workers", 0, "grain worker processes"),
    ("data.num_threads", 0, "reader threads"),
    ("data.max_bad_frames", 0, "undecodable frames tolerated"),
    ("log_every_steps", 1, "steps between log lines"),
    ("checkpoint.every_steps", 1, "steps between checkpoints"),
    ("checkpoint.keep_last", 1, "checkpoints kept"),
    ("eval_every_epochs", 0, "epochs between evaluations (0 = only at the end)"),
    ("eval_start_epochs", 0, "first epoch of periodic evaluation"),
    ("optim.weight_decay", 0, "weight decay"),
    ("optim.warmup_epochs", 0, "warmup epochs"),
    ("optim.grad_clip_norm", 0, "gradient clipping norm (0 = off)"),
)
PROBABILITIES = ("data.flip_p", "data.erase_p")
# Intervals that may be given in epochs instead of steps (``run.interval_steps``): key -> the
# steps key it overrides when set.
INTERVALS_IN_EPOCHS = {
    "log_every_epochs": "log_every_steps",
    "checkpoint.every_epochs": "checkpoint.every_steps",
}


def get_key(config: ml_collections.ConfigDict, key: str):
    """The value of a dotted key, e.g. ``get_key(config, "checkpoint.every_steps")``."""
    for part in key.split("."):
        config = config[part]
    return config


def check_ranges(config: ml_collections.ConfigDict) -> None:
    """ConfigError naming the first numeric key outside the range that can run (``RANGES``), a
    probability outside [0, 1], a non-positive learning rate, a duration with no step, or an
    unknown fusion or fusion option (``check_fusion``)."""

    def get(key: str):
        return get_key(config, key)

    for key, low, meaning in RANGES:
        value = get(key)
        if value < low:
            raise ConfigError(f"config.{key}={value!r} ({meaning}): expected >= {low}")
    for key in INTERVALS_IN_EPOCHS:
        value = get(key)
        if value is not None and not value > 0:
            raise ConfigError(f"config.{key}={value!r}: expected > 0 epochs (or unset: steps)")
    for key in PROBABILITIES:
        if not 0.0 <= get(key) <= 1.0:
            raise ConfigError(f"config.{key}={get(key)!r}: expected a probability in [0, 1]")
    if not config.optim.lr > 0:
        raise ConfigError(f"config.optim.lr={config.optim.lr!r}: expected > 0")
    if config.num_steps == 0 or config.num_steps < -1:
        raise ConfigError(
            f"config.num_steps={config.num_steps!r}: expected > 0 (or -1 to train num_epochs)"
        )
    if config.num_steps == -1 and not config.num_epochs > 0:
        raise ConfigError(
            f"config.num_epochs={config.num_epochs!r} gives no training step (config.num_steps="
            f"-1): expected > 0"
        )
    check_fusion(config)
    check_evals(config)


def check_evals(config: ml_collections.ConfigDict) -> None:
    """ConfigError naming an unknown dataset, an evaluator setting that cannot run, a protocol
    that is not the dataset's (``builders.DATASETS[name].PROTOCOLS``: MARS's official / appended
    only on MARS-format data), or a ``checkpoint.best_metric`` that no evaluator reports:
    checked before anything starts, not at the first evaluation."""
    reported = []
    dataset = builders.DATASETS.get(config.data.name)
    if dataset is None:
        raise ConfigError(
            f"config.data.name={config.data.name!r}: expected one of {sorted(builders.DATASETS)}"
        )
    for name, entry in config.evals.items():
        if entry.type not in evaluators.EVALUATORS:
            raise ConfigError(
                f"config.evals.{name}.type={entry.type!r}: expected one of "
                f"{sorted(evaluators.EVALUATORS)}"
            )
        try:
            evaluators.check_config(entry)
        except ValueError as e:
            message = f"config.{e}".replace("config.evals.", f"config.evals.{name}.", 1)
            raise ConfigError(message) from None
        foreign = [p for p in entry.protocols if p not in dataset.PROTOCOLS]
        if foreign:
            raise ConfigError(
                f"config.evals.{name}.protocols={tuple(entry.protocols)}: {foreign} not a protocol "
                f"of {config.data.name}; expected a subset of {dataset.PROTOCOLS} "
                "(docs/evaluation.md)"
            )
        reported += [f"{name}/{m}" for m in evaluators.reported_metrics(entry)]
    best = config.checkpoint.best_metric
    if best not in reported:
        raise ConfigError(
            f"config.checkpoint.best_metric={best!r}: no evaluator reports it; expected one of "
            f"{', '.join(reported[:6])}, ... (<evaluator>/<protocol>[+aqe|+rerank]/<metric>)"
        )


def check_fusion(config: ml_collections.ConfigDict) -> None:
    """ConfigError naming a ``model.fusion`` that is not registered, or a set option of
    ``model.fusion_kwargs`` that the chosen fusion (or its branch) does not take, with the
    accepted names: before data preparation, not at model construction."""
    name = config.model.fusion
    if name not in fusion.FUSIONS:
        raise ConfigError(f"config.model.fusion={name!r}: expected one of {sorted(fusion.FUSIONS)}")
    try:
        fusion.resolve_options(name, config.model.fusion_kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def pretrained_weights(config: ml_collections.ConfigDict) -> str:
    """The backbone weights file to load ("" = random init), checked before anything runs.

    Every published result on a real dataset starts from ImageNet weights, so a real dataset with
    ``model.pretrained`` unset is an error that names the flag and where to get the file; random
    init there is the explicit ``--config.model.pretrained=scratch``. SynthMARS runs start from
    random weights unless given a file.
    """
    value = config.model.pretrained
    if value == SCRATCH:
        return ""
    if value:
        if not Path(value).exists():
            raise ConfigError(
                f"config.model.pretrained={value!r}: no such file or directory (a .safetensors / "
                f".pth state dict or an orbax dir from reid_jax.tools.import_weights)"
            )
        return value
    if config.data.name in SYNTHETIC_DATASETS:
        return ""
    raise ConfigError(
        f"config.data.name={config.data.name!r} trains from ImageNet weights: pass "
        f"--config.model.pretrained=PATH (ResNet-50: torchvision's resnet50-0676ba61.pth or "
        f"timm's resnet50.tv_in1k model.safetensors; every backbone and where to get it: "
        f"{WEIGHTS_HELP}), or --config.model.pretrained={SCRATCH} to train from random weights"
    )


def load_config_file(spec: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of a config file, read as ``--config`` reads it: ``spec`` is
    ``path.py`` or ``path.py:arg`` (``arg`` given here wins). Config files that build on another
    one (``mars_r50_bot.py`` on ``mars_r50.py``) load it with this, so they cannot drift."""
    path, _, spec_arg = str(spec).partition(":")
    arg = spec_arg if arg is None else arg
    if not Path(path).is_file():
        raise FileNotFoundError(f"config file {path} not found")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
