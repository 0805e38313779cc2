"""The CPU demo: SynthMARS, a narrow ResNet-18 at 128x64 (last stride 1), temporal average pooling.

Renders SynthMARS on first use (``data/synth_mars_demo``), prepares it as array_record
(``data/tfds``), trains with P x K batches, evaluates under the three MARS protocols, and prints the
research note's table. The whole demo fits in ~15 minutes on 2 CPU cores.

    python -m reid_jax.main --config configs/synth_mars_demo.py --workdir runs/demo

Other fusions: ``--config.model.fusion=<name>`` (see ``reid_jax.fusion.FUSIONS``).
``configs/synth_mars_demo.py:tiny`` is the test-sized variant (tiny data, ResNet-10 width 8,
64x32, few steps).
"""

from reid_jax.config_args import parse_arg
from reid_jax.config_base import base_config


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    a = parse_arg(arg, __file__, tiny=False)
    c = base_config()
    c.data.name = "synth_mars"
    c.data.raw_dir = "data/synth_mars_demo"
    c.data.data_dir = "data/tfds_demo"
    c.data.synth.update(
        dict(num_ids=100, height=128, width=64, corruption_rate=0.1, seed=0, length_scale=0.25)
    )
    c.data.height, c.data.width = 128, 64
    c.data.seq_len = 4
    c.data.p, c.data.k = 8, 4
    c.data.num_workers = 1
    c.data.num_threads = 2
    c.data.test_batch_size = 64
    c.model.arch, c.model.width, c.model.last_stride = "resnet18", 16, 1
    c.num_epochs = 40
    c.eval_every_epochs = 20
    c.eval_start_epochs = 0
    c.log_every_steps = 25
    c.optim.lr = 1e-3
    c.optim.warmup_epochs = 2
    c.optim.schedule = "cosine"
    c.optim.final_factor = 0.01
    c.checkpoint.every_steps = 200
    if a.tiny:
        c.data.raw_dir = "data/synth_mars_tiny"
        c.data.data_dir = "data/tfds_tiny"
        c.data.synth.update(dict(num_ids=8, height=64, width=32, length_scale=0.05))
        c.data.height, c.data.width = 64, 32
        c.data.p, c.data.k = 4, 2
        c.data.num_workers = 0
        c.data.test_batch_size = 16
        c.model.arch, c.model.width = "resnet10", 8
        c.num_epochs = 2
        c.eval_every_epochs = 1
        c.optim.warmup_epochs = 0
        c.log_every_steps = 1
        c.checkpoint.every_steps = 1
    return c
