"""Shared fixtures for the fusion tests: cheap jitted init and degenerate frame maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest


@pytest.fixture(scope="session")
def init_apply():
    """``init_apply(module, maps) -> (variables, jitted apply)``; init jitted with a cheap PRNG."""

    def run(module, maps):
        key = jax.random.key(0, impl="unsafe_rbg")
        variables = jax.jit(lambda k, x: module.init(k, x, False))(key, maps)
        apply = jax.jit(lambda v, x: module.apply(v, x, False))
        return variables, apply

    return run


def degenerate_maps(t: int = 4, h: int = 3, w: int = 2, c: int = 8) -> np.ndarray:
    """[4, t, h, w, c] float32 maps, one degenerate case per clip: all frames equal; one zero
    frame; frames alternating f, -f (opposite); ReLU features with ~85% zeros."""
    rng = np.random.default_rng(0)
    f = rng.normal(size=(h, w, c)).astype(np.float32)
    equal = np.broadcast_to(f, (t, h, w, c))
    zero_frame = rng.normal(size=(t, h, w, c)).astype(np.float32)
    zero_frame[1] = 0.0
    opposite = np.stack([f if i % 2 == 0 else -f for i in range(t)])
    relu = np.maximum(rng.normal(size=(t, h, w, c)) - 1.0, 0.0).astype(np.float32)
    return np.stack([equal, zero_frame, opposite, relu])


@pytest.fixture(scope="session")
def degenerate():
    """The degenerate maps of ``degenerate_maps()`` as a jnp float32 array."""
    return jnp.asarray(degenerate_maps())
