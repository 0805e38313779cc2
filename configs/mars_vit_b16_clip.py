"""CLIP ViT-B/16 on MARS: the CLIP-ReID-style image-encoder baseline of TF-CLIP (Yu et al., AAAI
2024), i.e. CLIP's visual tower fine-tuned per frame, temporal average pooling of the CLS
features, BNNeck, ID + triplet losses.

    python -m reid_jax.main --config configs/mars_vit_b16_clip.py --workdir runs/vit_clip \\
        --config.data.raw_dir=/path/to/MARS \\
        --config.model.pretrained=weights/open_clip_model.safetensors

Weights: OpenAI CLIP ViT-B/16 (QuickGELU), e.g. ``open_clip_model.safetensors`` (or
``open_clip_pytorch_model.bin``) of the Hugging Face repo ``timm/vit_base_patch16_clip_224.openai``,
where open_clip 3.3.0 fetches its "openai" ViT-B-16; its ``visual.*`` keys are imported, the text
tower ignored (docs/vit.md). Nothing is downloaded at run time.

Values from TF-CLIP's code (github.com/AsuradaYuci/TF-CLIP, commit
497a4f24eee1385fc3b20eaaceb0aadd75ce851f; its train.py reads configs/vit_clipreid.yml, which the
citations below refer to):
* input 256x128 (INPUT.SIZE_TRAIN), patch stride 16 (MODEL.STRIDE_SIZE), the 14x14 position grid
  resized bilinearly to 16x8 (model/clip/model.py resize_pos_embed: F.interpolate 'bilinear');
  frames normalised with the ImageNet mean/std (datasets/make_dataloader_clipreid.py, the MARS
  branch: SeqT.Normalize(mean=[0.485, 0.456, 0.406], ...)), as reid_jax's pipeline does;
* T=8 frames (INPUT.SEQ_LEN) by restricted random sampling (VideoDataset sample='rrs_train'),
  16 tracklets per batch of 4 per identity (SOLVER.STAGE2.IMS_PER_BATCH, DATALOADER.NUM_INSTANCE),
  flip 0.5, random erasing 0.5 (SeqT.RandomSizedEarser), no padding / cropping (SeqT.RectScale);
* Adam, lr 5e-6, weight decay 1e-4 (SOLVER.STAGE2.BASE_LR / WEIGHT_DECAY), linear warmup from
  0.1 over 10 epochs, x0.1 at epochs 30, 50, 70, 80 epochs (WARMUP_FACTOR / WARMUP_ITERS, STEPS,
  MAX_EPOCHS; WarmupMultiStepLR stepped once per epoch);
* label-smoothed (0.1) cross-entropy x 0.25 + batch-hard triplet (margin 0.3) x 1.0
  (MODEL.ID_LOSS_WEIGHT / TRIPLET_LOSS_WEIGHT, config/defaults.py SOLVER.MARGIN,
  loss/softmax_loss.py CrossEntropyLabelSmooth epsilon=0.1), fp16 autocast (here bfloat16);
* test: all frames of each tracklet ('dense'), the CLS feature before the BNNeck,
  L2-normalised (TEST.NECK_FEAT 'before', FEAT_NORM 'yes'), Euclidean distance.

Epochs: TF-CLIP's sampler visits every training tracklet once per epoch (samplers.py
RandomIdentitySampler: 7,532 MARS tracklets -> 470 batches of 16); ``data.epoch="tracklets"``
counts epochs the same way (``sampling.tracklet_epoch``: 470 steps of 4 x 4 on MARS), so TF-CLIP's
epoch numbers are used as they are.

Not reproduced: TF-CLIP's own modules (CLIP-Memory, SSP, TMD: this is its baseline), the camera
embedding on the CLS token (MODEL.SIE_CAMERA), the second BNNeck / ID loss on the 512-d projected
feature, the 2x learning rate of biases (SOLVER.STAGE2.BIAS_LR_FACTOR), and the erased area:
U(0.02, 0.2) of the frame in RandomSizedEarser, U(0.02, 0.4) in reid_jax. Paper figure, not
measured here: TF-CLIP itself reports 89.4 mAP / 93.0 Rank-1 on MARS.

``configs/mars_vit_b16_clip.py:tiny`` is the seconds-long smoke variant used by the tests: tiny
SynthMARS, a 2-block width-32 CLIP-layout ViT at 64x32, 2 steps.
"""

from reid_jax.config_args import parse_arg
from reid_jax.config_base import base_config


def get_config(arg: str = "") -> "ml_collections.ConfigDict":  # noqa: F821
    a = parse_arg(arg, __file__, tiny=False)
    c = base_config()
    c.data.name = "mars"
    c.data.raw_dir = "data/MARS"
    c.data.data_dir = "data/tfds"
    c.data.num_workers = 8
    c.data.num_threads = 8
    c.data.test_batch_size = 128
    c.data.height, c.data.width = 256, 128
    c.data.seq_len = 8
    c.data.p, c.data.k = 4, 4
    c.data.frame_sampler = "restricted_random"
    c.data.pad = 0
    c.data.flip_p = 0.5
    c.data.erase_p = 0.5
    c.data.test_sampling = "all"
    c.model.arch = "clip_vit_b16"
    c.model.fusion = "mean"
    c.model.dtype = "bfloat16"
    c.model.vit.tokens = "cls"
    c.model.vit.pos_interpolation = "bilinear"
    c.loss.ce_weight = 0.25
    c.loss.triplet_weight = 1.0
    c.loss.triplet_margin = 0.3
    c.loss.label_smoothing = 0.1
    c.optim.name = "adam"
    c.optim.lr = 5e-6
    c.optim.weight_decay = 1e-4
    c.data.epoch = "tracklets"  # samplers.py RandomIdentitySampler: every tracklet once
    c.optim.warmup_epochs = 10.0  # SOLVER.STAGE2.WARMUP_ITERS (epochs)
    c.optim.warmup_factor = 0.1
    c.optim.schedule = "step"
    c.optim.decay_epochs = [30, 50, 70]  # SOLVER.STAGE2.STEPS
    c.optim.decay_factor = 0.1
    c.num_epochs = 80  # SOLVER.STAGE2.MAX_EPOCHS
    c.eval_every_epochs = 10.0
    c.eval_start_epochs = 30.0
    c.checkpoint.best_metric = "retrieval/appended/mAP"  # the protocol of the paper's figure
    c.evals.retrieval.feature = "raw"
    c.evals.retrieval.normalize = True
    c.evals.retrieval.distance = "euclidean"
    if a.tiny:
        c.data.name = "synth_mars"
        c.data.raw_dir = "data/synth_mars_tiny"
        c.data.data_dir = "data/tfds_tiny"
        c.data.synth.update(dict(num_ids=8, height=64, width=32, length_scale=0.05))
        c.data.height, c.data.width = 64, 32
        c.data.seq_len = 2
        c.data.p, c.data.k = 4, 2
        c.data.num_workers = 0
        c.data.test_batch_size = 16
        c.model.dtype = "float32"
        c.model.vit.width, c.model.vit.depth, c.model.vit.heads = 32, 2, 2
        c.optim.warmup_epochs = 0.0
        c.optim.lr = 1e-4
        c.num_steps = 2
        c.eval_every_epochs = 1.0
        c.eval_start_epochs = 0.0
        c.log_every_steps = 1
        c.checkpoint.every_steps = 1
        c.checkpoint.async_save = False
    return c
