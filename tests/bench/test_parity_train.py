"""bench/parity_train.py in small: reid_jax's train step and the PyTorch reference trainer agree
step by step (5 steps on a tiny SynthMARS, 1e-4 relative), with the same lr schedule and the same
Adam weight-decay semantics; the one known difference (BN running variance) is pinned exactly."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="torch (the `test` extra, CPU wheel) is not installed: parity tests skipped"
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pt():
    """bench/parity_train.py as a module (it imports its bench/ neighbours as the scripts do)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "bench"))
        mp.syspath_prepend(str(ROOT))
        return importlib.import_module("parity_train")


@pytest.fixture(scope="module")
def tiny(pt, tmp_path_factory):
    """A 5-step config (warmup 2 steps, decay at step 4) on the demo's tiny SynthMARS."""
    base = tmp_path_factory.mktemp("parity")
    cfg = pt.parity_config(
        "resnet18", 8, 5, tiny=True, **{
            "data.raw_dir": str(base / "raw"), "data.data_dir": str(base / "tfds"),
            "optim.warmup_epochs": 1.0, "optim.decay_epochs": [2],
        },
    )  # fmt: skip
    data = pt.load_data(cfg)
    assert data.steps_per_epoch == 2  # 8 ids, P = 4: the schedule above needs it
    return cfg, data


@pytest.fixture(scope="module")
def run(pt, tiny):
    cfg, data = tiny
    seen = {}

    def after_step(step, state, model):
        if step == 1:  # BNNeck's running variance after one update from var = 1
            seen["jax"] = np.asarray(state.batch_stats["bnneck"]["var"])
            seen["torch"] = model.bnneck.running_var.detach().numpy().copy()

    return pt.train_pair(cfg, data, seed=0, after_step=after_step), seen


def test_five_steps_agree_to_1e4_in_loss_and_parameters(pt, run):
    run, _ = run
    assert run.rel[0] <= 1e-6  # identical weights and batch: only summation order differs
    assert np.all(run.rel <= 1e-4), run.rel
    diffs = pt.compare_variables(run.state, run.model, run.init)
    assert diffs["params"] <= 1e-4, diffs
    assert diffs["running_mean"] <= 1e-4, diffs
    # The weights moved 100x more than the two sides differ: not two untouched copies.
    assert diffs["params_moved"] >= 100 * diffs["params"], diffs


def test_running_variance_is_biased_in_reid_jax_and_unbiased_in_torch(run, tiny):
    """flax updates BN running var with the biased batch variance, torch with the unbiased one:
    after one step from 1, (torch - 0.9) / (jax - 0.9) = n / (n - 1), n = the batch (8 clips)."""
    _, seen = run
    cfg, _ = tiny
    n = cfg.data.p * cfg.data.k
    ratio = (seen["torch"] - 0.9) / (seen["jax"] - 0.9)
    np.testing.assert_allclose(ratio, n / (n - 1), rtol=1e-4)


def test_torch_lambda_lr_follows_reid_jax_schedule_every_step(pt):
    from reid_jax.train import optim

    cfg = pt.parity_config(steps=80)
    spe = 7  # warmup 14 steps, decay at step 70
    schedule = optim.make_schedule(cfg.optim, spe)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, pt.torch_lr_lambda(cfg.optim, spe))
    got, want = [], []
    for step in range(80):
        got.append(opt.param_groups[0]["lr"])  # the lr the step-th update uses
        want.append(float(schedule(step)))
        opt.step()
        sched.step()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert want[0] == pytest.approx(3e-6) and want[14] == pytest.approx(3e-4)
    assert want[69] == pytest.approx(3e-4) and want[70] == pytest.approx(3e-5)


def test_adam_weight_decay_is_torch_l2_in_the_gradient(pt):
    """optim 'adam' == torch.optim.Adam(weight_decay): wd * p joins the gradient before the
    moments (AdamW, decoupled, differs), on a quadratic over 20 steps."""
    import jax.numpy as jnp

    from reid_jax.train import optim

    cfg = pt.parity_config(steps=20)
    cfg.optim.update(weight_decay=0.05, schedule="constant", warmup_epochs=0.0, lr=0.01)
    target = np.linspace(-1.0, 1.0, 6).astype(np.float32)
    start = np.linspace(0.5, -2.0, 6).astype(np.float32)
    p_t = torch.nn.Parameter(torch.from_numpy(start.copy()))
    opt = torch.optim.Adam([p_t], lr=0.01, weight_decay=0.05)
    results = {}
    for name in ("adam", "adamw"):
        cfg.optim.name = name
        tx = optim.make_optimizer(cfg.optim, 1)
        p = jnp.asarray(start)
        state = tx.init(p)
        for _ in range(20):
            updates, state = tx.update(3.0 * (p - target), state, p)
            p = p + updates
        results[name] = np.asarray(p)
    for _ in range(20):
        opt.zero_grad()
        (1.5 * ((p_t - torch.from_numpy(target)) ** 2).sum()).backward()
        opt.step()
    ref = p_t.detach().numpy()
    np.testing.assert_allclose(results["adam"], ref, rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(results["adamw"] - ref)) > 1e-3
