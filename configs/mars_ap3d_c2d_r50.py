"""AP3D's C2D baseline recipe on MARS: ResNet-50 per frame, max pooling, AP3D's training recipe.

guxinqian/AP3D at commit 84bd12afc1d9e99c58365559d9ec9269cb19d94f: ``train.py`` (arguments,
losses, optimiser, ``test()``), ``models/ResNet.py`` (``ResNet503D`` with no 3D block = C2D: an
ImageNet ResNet-50 with last stride 1 on every frame, ``F.max_pool2d`` over each frame map, mean
over T, BatchNorm1d, classifier), ``tools/samplers.py`` (``RandomIdentitySampler``: every
training tracklet once per epoch), ``transforms/temporal_transforms.py`` (``TemporalRandomCrop``:
T=4 frames 8 apart). Plain cross-entropy on the classifier + batch-hard triplet (margin 0.3,
cosine) on the BN feature ``f``; Adam 3e-4, weight decay 5e-4, 240 epochs, x0.1 at 60/120/180;
flip only (no random erasing, no padding); test on the BN feature with cosine distance, the
queries appended to the gallery.

    python -m reid_jax.main --config configs/mars_ap3d_c2d_r50.py --workdir runs/mars_ap3d_c2d \\
        --config.data.raw_dir=/path/to/MARS \\
        --config.model.pretrained=weights/resnet50-0676ba61.pth

Published (AP3D paper, Gu et al. ECCV 2020; MARS, queries appended to the gallery = reid_jax's
``appended`` protocol, all frames at test time): AP3D 85.1 mAP / 90.1 Rank-1; its C2D baseline
about 2.5 mAP lower (see the paper's ablation table). Not measured here.
Differences kept: reid_jax's BNNeck has no shift and its classifier no bias (AP3D's BatchNorm1d
and Linear have both); AP3D's ``test()`` during training uses the first 4 frames
(``TemporalBeginCrop``) and its ``test-all.py`` all frames, as reid_jax does
(``data.test_sampling="all"``). ``:tiny`` is the smoke variant of mars_r50.py.
"""

from pathlib import Path

from reid_jax.config_args import parse_arg
from reid_jax.config_base import load_config_file


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    """AP3D's C2D recipe (``tiny``: the smoke variant of mars_r50.py)."""
    a = parse_arg(arg, __file__, tiny=False)
    c = load_config_file(Path(__file__).with_name("mars_r50.py"), "tiny" if a.tiny else "")
    c.data.seq_len = 4  # train.py --seq_len 4
    c.data.frame_sampler, c.data.sample_stride = "strided", 8  # TemporalRandomCrop(4, stride=8)
    c.data.epoch = "tracklets"  # RandomIdentitySampler: every training tracklet once
    c.data.p, c.data.k = 8, 4  # --train_batch 32, --num_instances 4
    c.data.pad, c.data.flip_p, c.data.erase_p = 0, 0.5, 0.0  # Scale + RandomHorizontalFlip only
    c.model.last_stride = 1  # ResNet.py: layer4[0] conv2 / downsample stride (1, 1)
    c.model.spatial_pool = "max"  # ResNet.py forward: F.max_pool2d(x, x.size()[2:])
    c.model.fusion = "mean"  # x.mean(1)
    c.loss.label_smoothing = 0.0  # nn.CrossEntropyLoss()
    c.loss.triplet_margin = 0.3  # --margin 0.3
    c.loss.triplet_distance = "cosine"  # --distance cosine
    c.loss.triplet_feature = "bn"  # criterion_htri(features, pids): f = self.bn(x)
    c.optim.name, c.optim.lr, c.optim.weight_decay = "adam", 3e-4, 5e-4  # --lr, --weight_decay
    c.optim.warmup_epochs = 0.0  # no warmup
    c.optim.schedule = "step"
    c.optim.decay_epochs = [60, 120, 180]  # --stepsize
    c.optim.decay_factor = 0.1  # --gamma
    c.num_epochs = 240  # --max_epoch
    c.eval_every_epochs, c.eval_start_epochs = 10.0, 0.0  # --eval_step 10, --start_eval 0
    c.evals.retrieval.feature = "bn"  # test(): model.module.bn(feat)
    c.evals.retrieval.distance = "cosine"  # test(): args.distance == "cosine"
    c.checkpoint.best_metric = "retrieval/appended/mAP"
    if a.tiny:
        c.num_steps = 2
    return c
