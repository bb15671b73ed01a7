"""ELBERT's weighted multi-exit loss: a sum over exits of w_i * CE(z_i, y) (spec section 2)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array

WEIGHTINGS = ("dyn", "equal", "linear")
DYN_INIT = 4.0


def init_weight_logits(num_layers: int) -> Array:
    """ELBERT's trainable ``t`` in R^(L-1), all 4.0."""
    return jnp.full((num_layers - 1,), DYN_INIT, jnp.float32)


def exit_weights(weighting: str, num_layers: int, t: Array | None = None) -> Array:
    """[L] weights summing to L.

    ``dyn``: w_i = sigmoid(t_i) for i < L and w_L = L - sum (at init 1.4137 for L = 24);
    ``equal``: all 1; ``linear``: proportional to i (PABEE), rescaled to sum to L.
    """
    if weighting == "dyn":
        if t is None:
            raise ValueError("the 'dyn' weighting needs its trainable logits t")
        early = jax.nn.sigmoid(t)
        return jnp.concatenate([early, jnp.array([num_layers]) - early.sum(keepdims=True)])
    if weighting == "equal":
        return jnp.ones((num_layers,), jnp.float32)
    if weighting == "linear":
        i = jnp.arange(1, num_layers + 1, dtype=jnp.float32)
        return i * num_layers / i.sum()
    raise ValueError(f"weighting {weighting!r} is not one of {WEIGHTINGS}")


def per_exit_cross_entropy(exit_logits: Array, labels: Array, example_weight: Array,
                           label_smoothing: float = 0.0, targets: Array | None = None) -> Array:
    """[L] mean cross-entropy of each exit over the real rows (``example_weight`` 0 for padding).

    ``label_smoothing`` eps trains against (1 - eps) one-hot + eps / K: PhraseBank's 50Agree labels
    are majority votes that as few as half the annotators agreed on. ``targets`` [B, K] replaces
    the one-hot labels (e.g. ``data.agreement_targets``); smoothing then applies to them.
    """
    if label_smoothing or targets is not None:
        if targets is None:
            targets = jax.nn.one_hot(labels, exit_logits.shape[-1])
        if label_smoothing:
            targets = optax.smooth_labels(targets, label_smoothing)
        ce = optax.softmax_cross_entropy(exit_logits, targets[None])
    else:
        ce = optax.softmax_cross_entropy_with_integer_labels(exit_logits, labels[None, :])
    return (ce * example_weight[None, :]).sum(1) / jnp.maximum(example_weight.sum(), 1.0)


def distillation(exit_logits: Array, example_weight: Array, temperature: float = 1.0) -> Array:
    """FastBERT-style self-distillation: mean over earlier exits of KL(last || exit_i).

    The last exit is the teacher and gets no gradient from this term.
    """
    teacher = jax.nn.softmax(jax.lax.stop_gradient(exit_logits[-1]) / temperature, -1)
    log_students = jax.nn.log_softmax(exit_logits[:-1] / temperature, -1)
    kl = jnp.sum(teacher * (jnp.log(jnp.clip(teacher, 1e-12)) - log_students), -1)  # [L-1, B]
    per_exit = (kl * example_weight[None]).sum(1) / jnp.maximum(example_weight.sum(), 1.0)
    return per_exit.mean() * temperature ** 2


def dropout_consistency(exit_logits: Array, example_weight: Array) -> Array:
    """R-Drop (Liang et al. 2021): [L] mean over rows of 0.5 (KL(p||q) + KL(q||p)) at each exit.

    ``exit_logits`` [L, 2B, K] holds two dropout passes over the same B rows, one after the other;
    ``example_weight`` [B] (0 for padding rows).
    """
    first, second = jnp.split(jax.nn.log_softmax(exit_logits, -1), 2, axis=1)
    kl = 0.5 * jnp.sum((jnp.exp(first) - jnp.exp(second)) * (first - second), -1)  # [L, B]
    return (kl * example_weight[None]).sum(1) / jnp.maximum(example_weight.sum(), 1.0)


def multi_exit_loss(exit_logits: Array, labels: Array, example_weight: Array, weighting: str,
                    t: Array | None = None, distill_weight: float = 0.0,
                    distill_temperature: float = 1.0, label_smoothing: float = 0.0,
                    rdrop: float = 0.0, targets: Array | None = None
                    ) -> tuple[Array, dict[str, Array]]:
    """sum_i w_i CE_i (+ distill_weight * distillation); returns (loss, per-exit CE and weights).

    ``rdrop`` > 0: ``exit_logits`` [L, 2B, K] are two dropout passes over the B rows of ``labels``;
    each exit's CE is the mean of both passes' and gains ``rdrop`` x their symmetric KL.
    ``targets`` [B, K]: soft targets for the cross-entropy instead of one-hot ``labels``.
    """
    num_layers = exit_logits.shape[0]
    weights = exit_weights(weighting, num_layers, t)
    exit_logits = exit_logits.astype(jnp.float32)
    penalty = 0.0
    if rdrop:  # the second pass's rows are the same texts: tile their labels and weights
        penalty = rdrop * dropout_consistency(exit_logits, example_weight)
        labels, example_weight = jnp.tile(labels, 2), jnp.tile(example_weight, 2)
        targets = None if targets is None else jnp.tile(targets, (2, 1))
    per_exit = per_exit_cross_entropy(exit_logits, labels, example_weight, label_smoothing, targets)
    loss = jnp.sum(weights * (per_exit + penalty))
    if distill_weight:
        loss = loss + distill_weight * distillation(exit_logits, example_weight,
                                                    distill_temperature)
    return loss, {"per_exit_ce": per_exit, "weights": weights}
