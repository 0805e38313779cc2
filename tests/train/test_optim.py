"""Tests for epoch-based lr schedules and the Adam (L2) / AdamW (decoupled) optimisers."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from reid_jax.config_base import base_config
from reid_jax.train.optim import current_lr, make_optimizer, make_schedule

DROP = object()  # a key to remove from the defaults


def _cfg(**kwargs) -> ml_collections.ConfigDict:
    """``config.optim`` with config_base's defaults (the only place they live), then ``kwargs``."""
    cfg = base_config().optim
    for key, value in kwargs.items():
        if value is DROP:
            del cfg[key]
        else:
            cfg[key] = value
    return cfg


def test_step_schedule_with_warmup():
    cfg = _cfg(
        lr=3.5e-4,
        warmup_epochs=10,
        warmup_factor=0.01,
        schedule="step",
        decay_epochs=[40, 70],
        decay_factor=0.1,
    )
    sched = make_schedule(cfg, steps_per_epoch=100)
    expected = {
        0: 3.5e-6,  # lr * warmup_factor
        500: 3.5e-4 * (0.01 + 0.99 * 0.5),  # halfway through warmup
        1000: 3.5e-4,
        3999: 3.5e-4,
        4000: 3.5e-5,  # epoch 40
        6999: 3.5e-5,
        7000: 3.5e-6,  # epoch 70
        12000: 3.5e-6,
    }
    for step, lr in expected.items():
        np.testing.assert_allclose(current_lr(sched, step), lr, rtol=1e-5, err_msg=str(step))
    jitted = jax.jit(sched)(jnp.asarray(4000))  # traceable step
    np.testing.assert_allclose(float(jitted), 3.5e-5, rtol=1e-5)


def test_cosine_and_constant_schedules():
    cfg = _cfg(
        lr=1.0, warmup_epochs=2, warmup_factor=0.01, schedule="cosine", epochs=12, final_factor=0.1
    )
    sched = make_schedule(cfg, steps_per_epoch=10)
    quarter = 0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi / 4))  # 1/4 of the way through the cosine
    expected = {0: 0.01, 10: 0.505, 20: 1.0, 45: quarter, 70: 0.55, 120: 0.1, 200: 0.1}
    for step, lr in expected.items():
        np.testing.assert_allclose(current_lr(sched, step), lr, rtol=1e-5, err_msg=str(step))
    # The run's length can come from total_steps instead of config.optim.epochs (same schedule).
    del cfg.epochs
    by_steps = make_schedule(cfg, steps_per_epoch=10, total_steps=120)
    for step, lr in expected.items():
        np.testing.assert_allclose(current_lr(by_steps, step), lr, rtol=1e-5, err_msg=str(step))
    const = make_schedule(_cfg(lr=0.02, schedule="constant"), steps_per_epoch=7)
    assert [current_lr(const, s) for s in (0, 7, 7000)] == pytest.approx([0.02] * 3)


def _one_step(name: str, w: float, g: float, **extra) -> float:
    cfg = _cfg(name=name, lr=0.01, weight_decay=0.1, schedule="constant", **extra)
    opt = make_optimizer(cfg, steps_per_epoch=1)
    params = {"w": jnp.array(w)}
    updates, _ = opt.update({"w": jnp.array(g)}, opt.init(params), params)
    return float(updates["w"])


def test_adam_l2_vs_adamw_decoupled_by_hand():
    # Step 1 of Adam with bias correction: m_hat = g, v_hat = g^2, so direction = g / (|g| + eps).
    eps = 1e-8
    w, g = 10.0, -0.5
    # adam: L2 enters the gradient, g' = g + wd * w = -0.5 + 1.0 = 0.5 -> update -lr * 0.5/(0.5+eps)
    assert _one_step("adam", w, g) == pytest.approx(-0.01 * 0.5 / (0.5 + eps), rel=2e-5)
    # adamw: direction from g alone (-1), then decay lr * wd * w added: -0.01 * (-1 + 1) = 0
    assert _one_step("adamw", w, g) == pytest.approx(-0.01 * (g / (0.5 + eps) + 0.1 * w), abs=1e-7)
    # With w = 2, g = 0.5: adam sees g' = 0.7 (update -0.01), adamw -0.01 * (1 + 0.2) = -0.012.
    assert _one_step("adam", 2.0, 0.5) == pytest.approx(-0.01, rel=2e-5)
    assert _one_step("adamw", 2.0, 0.5) == pytest.approx(-0.012, rel=2e-5)


def test_grad_clip_applies_to_raw_gradient_and_warmup_reaches_optimizer():
    # |g| = 100 clipped to norm 1 -> g = -1; adam adds wd * w = 1 -> g' = 0 -> zero update.
    assert _one_step("adam", 10.0, -100.0, grad_clip_norm=1.0) == pytest.approx(0.0, abs=1e-7)
    # Unclipped: g' = -99 -> update +lr.
    assert _one_step("adam", 10.0, -100.0) == pytest.approx(0.01, rel=2e-5)
    # First update of a warmed-up schedule uses lr * warmup_factor.
    warm = _one_step("adamw", 0.0, 0.5, warmup_epochs=1, warmup_factor=0.1)
    assert warm == pytest.approx(-0.001, rel=2e-5)


@pytest.mark.parametrize(
    "cfg,match",
    [
        (dict(name="sgd", lr=0.1, schedule="constant"), "sgd"),
        (dict(name="adam", lr=0.1, schedule="poly"), "poly"),
        (dict(name="adam", lr=DROP, schedule="constant"), "lr"),
        (dict(name="adam", lr=0.1, schedule="cosine"), "total_steps"),
        (dict(name="adam", lr=0.1, schedule="cosine", epochs=5, warmup_epochs=5), "epochs"),
        (dict(name="adam", lr=0.1, schedule="step", decay_epochs=[70, 40]), "decay_epochs"),
        (dict(name="adam", lr=0.1, schedule="step", decay_epochs=DROP), "decay_epochs"),
    ],
)
def test_bad_config_raises(cfg, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer(_cfg(**cfg), steps_per_epoch=10)


def test_bad_steps_per_epoch_raises():
    with pytest.raises(ValueError, match="steps_per_epoch"):
        make_schedule(_cfg(lr=0.1, schedule="constant"), steps_per_epoch=0)
