"""reid_jax: video person re-identification in JAX/Flax at accelerator scale."""

__version__ = "0.1.0"
