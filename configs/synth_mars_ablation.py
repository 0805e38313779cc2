"""The fusion ablation's base job: the demo recipe, smaller (SynthMARS 60 ids at 96x48, ResNet-10
width 16, 160 steps).

Sized so the default ablation (a 3-lr grid per variant, then 4 variants x 10 seeds at 15% + 10 A/A
jobs + 4 x 2 seeds at 0% and 30%, two jobs at a time: docs/experiments.md) fits in 90 minutes on 2
CPU cores; every job ends with one all-frames evaluation that dumps the per-frame fusion weights
(for the corrupted-frame AUC).

    python -m reid_jax.experiments.ablate --base configs/synth_mars_ablation.py \\
        --workdir runs/ablation

One job alone (any fusion): ``python -m reid_jax.main --config configs/synth_mars_ablation.py
--workdir runs/abl_one --config.model.fusion=templet``. The ablation runner sets
``data.synth.corruption_rate`` and the data folders per rate (``data/synth_mars_ablation_c15``...).
Loads ``synth_mars_demo.py`` (model, loss, optimiser and the "tiny" variant come from there) and
changes only what is below; ``:tiny`` is the demo's tiny job with these folders.
"""

from pathlib import Path

from reid_jax.config_args import parse_arg
from reid_jax.config_base import load_config_file


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    a = parse_arg(arg, __file__, tiny=False)
    c = load_config_file(Path(__file__).with_name("synth_mars_demo.py"), "tiny" if a.tiny else "")
    c.evals.retrieval.dump_weights = True
    c.checkpoint.keep_last = 1
    c.checkpoint.every_steps = 1000  # jobs are short: save at the evaluation (the end) only
    if a.tiny:
        c.data.raw_dir = "data/synth_mars_ablation_tiny"
        c.data.data_dir = "data/tfds_ablation_tiny"
        c.eval_every_epochs = c.num_epochs  # one evaluation, at the end, as in the full size
        return c
    c.data.raw_dir = "data/synth_mars_ablation"
    c.data.data_dir = "data/tfds_ablation"
    # 96x48 keeps stage 4 at 6x3 (last stride 1): XLA:CPU is very slow on 2-pixel-wide maps.
    c.data.synth.update(
        dict(num_ids=60, height=96, width=48, corruption_rate=0.15, length_scale=0.15)
    )
    c.data.height, c.data.width = 96, 48
    # ResNet-10 (one basic block per stage): 1.35x ResNet-18's steps per second here (2.25 vs 1.67
    # steps/s on 2 idle cores), which the 90-minute budget needs (docs/experiments.md).
    c.model.arch = "resnet10"
    c.data.num_workers = 0  # decode in the job's process: two jobs share the 2 cores already
    c.num_epochs = 20  # 160 steps
    c.eval_every_epochs = 20
    c.optim.lr = 3e-3  # the lr grid (--lr_grid) picks each variant's own
    c.optim.warmup_epochs = 1
    return c
