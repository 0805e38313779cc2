"""Re-ID losses: label-smoothed cross entropy and batch-hard triplet loss, computed in float32."""

import jax
import jax.numpy as jnp

DISTANCES = ("euclidean", "cosine")
_MIN_SQUARED_DIST = 1e-12  # sqrt clamp: keeps gradients finite for identical features


def cross_entropy_label_smoothing(
    logits: jax.Array, labels: jax.Array, epsilon: float = 0.1
) -> jax.Array:
    """Mean cross entropy against targets (1-eps)*onehot + eps/num_classes (Szegedy et al. 2016).

    This is the re-ID "CrossEntropyLabelSmooth": epsilon is spread over all classes, including
    the true one. logits [B,C], integer labels [B]; returns a float32 scalar.
    """
    logits = logits.astype(jnp.float32)
    num_classes = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    targets = (1.0 - epsilon) * jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    targets = targets + epsilon / num_classes
    return jnp.mean(-jnp.sum(targets * log_probs, axis=-1))


def pairwise_distance(features: jax.Array, distance: str = "euclidean") -> jax.Array:
    """[N,D] -> [N,N] float32 distances: clamped Euclidean, or cosine distance 1 - cos."""
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r}; expected one of {DISTANCES}")
    x = features.astype(jnp.float32)
    if distance == "cosine":
        x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        return 1.0 - jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
    sq = jnp.sum(x * x, axis=-1)
    gram = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
    d2 = sq[:, None] + sq[None, :] - 2.0 * gram
    return jnp.sqrt(jnp.maximum(d2, _MIN_SQUARED_DIST))


def batch_hard_triplet(
    features: jax.Array,
    labels: jax.Array,
    margin: float = 0.3,
    distance: str = "euclidean",
    soft: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batch-hard triplet loss of Hermans et al. 2017 over a P x K batch.

    Per anchor: hardest positive (same label, not itself) and hardest negative; loss
    relu(d_ap - d_an + margin), or softplus(d_ap - d_an) when ``soft`` (margin unused). Anchors
    lacking a positive or a negative are masked out. aux: "frac_active" (valid anchors with
    d_ap - d_an + m > 0, m = 0 if soft), "hardest_pos", "hardest_neg" (means over valid anchors).
    """
    dist = pairwise_distance(features, distance)
    n = dist.shape[0]
    same = labels[:, None] == labels[None, :]
    pos_mask = same & ~jnp.eye(n, dtype=bool)
    neg_mask = ~same
    has_pos = jnp.any(pos_mask, axis=1)
    has_neg = jnp.any(neg_mask, axis=1)
    valid = (has_pos & has_neg).astype(jnp.float32)
    # Masked entries are replaced by finite constants so no inf reaches the arithmetic below.
    hardest_pos = jnp.max(jnp.where(pos_mask, dist, -1.0), axis=1)
    far = jax.lax.stop_gradient(jnp.max(dist)) + 1.0
    hardest_neg = jnp.min(jnp.where(neg_mask, dist, far), axis=1)
    hardest_pos = jnp.where(has_pos, hardest_pos, 0.0)
    hardest_neg = jnp.where(has_neg, hardest_neg, 0.0)
    gap = hardest_pos - hardest_neg
    if soft:
        per_anchor, active = jax.nn.softplus(gap), gap > 0
    else:
        per_anchor, active = jax.nn.relu(gap + margin), gap + margin > 0
    count = jnp.maximum(jnp.sum(valid), 1.0)
    loss = jnp.sum(per_anchor * valid) / count
    aux = {
        "frac_active": jnp.sum(active * valid) / count,
        "hardest_pos": jnp.sum(hardest_pos * valid) / count,
        "hardest_neg": jnp.sum(hardest_neg * valid) / count,
    }
    return loss, aux
