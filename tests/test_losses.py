"""ELBERT's exit weights and the multi-exit loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from elbert_jax.losses import exit_weights, init_weight_logits, multi_exit_loss


@pytest.mark.parametrize("weighting", ["dyn", "equal", "linear"])
@pytest.mark.parametrize("num_layers", [2, 12, 24])
def test_weights_sum_to_num_layers(weighting, num_layers):
    w = exit_weights(weighting, num_layers, init_weight_logits(num_layers))
    assert w.shape == (num_layers,)
    assert float(w.sum()) == pytest.approx(num_layers, rel=1e-6)


def test_dyn_last_weight_at_init_matches_paper():
    w = exit_weights("dyn", 24, init_weight_logits(24))
    assert float(w[-1]) == pytest.approx(1.4137, abs=1e-4)
    np.testing.assert_allclose(w[:-1], jax.nn.sigmoid(4.0), rtol=1e-6)
    np.testing.assert_allclose(exit_weights("linear", 3), [0.5, 1.0, 1.5], rtol=1e-6)


def test_loss_is_weighted_sum_of_exit_cross_entropies():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(4, 5, 3)), jnp.float32)
    labels = jnp.array([0, 1, 2, 1, 0])
    weight = jnp.array([1, 1, 1, 1, 0], jnp.float32)  # the last row is padding
    t = jnp.array([0.5, -1.0, 2.0])
    loss, aux = multi_exit_loss(logits, labels, weight, "dyn", t)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :4], labels[None, :4]).mean(1)
    w = exit_weights("dyn", 4, t)
    assert float(loss) == pytest.approx(float((w * ce).sum()), rel=1e-6)
    np.testing.assert_allclose(aux["per_exit_ce"], ce, rtol=1e-6)


def test_soft_targets_replace_the_one_hot_labels():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(3, 4, 3)), jnp.float32)
    labels, weight = jnp.array([0, 1, 2, 0]), jnp.array([1, 1, 1, 0], jnp.float32)
    plain, _ = multi_exit_loss(logits, labels, weight, "equal", rdrop=0.0)
    one_hot, _ = multi_exit_loss(logits, labels, weight, "equal", targets=jax.nn.one_hot(labels, 3))
    assert float(one_hot) == pytest.approx(float(plain), rel=1e-6)
    soft = jnp.array([[0.6, 0.4, 0], [0.1, 0.8, 0.1], [0, 0.2, 0.8], [1, 0, 0]], jnp.float32)
    loss, aux = multi_exit_loss(logits, labels, weight, "equal", targets=soft)
    ce = -(soft * jax.nn.log_softmax(logits, -1)).sum(-1)[:, :3].mean(1)
    np.testing.assert_allclose(aux["per_exit_ce"], ce, rtol=1e-6)
    smoothed, _ = multi_exit_loss(logits, labels, weight, "equal", label_smoothing=0.1,
                                  targets=soft)
    expected = -(optax.smooth_labels(soft, 0.1) * jax.nn.log_softmax(logits, -1)).sum(-1)
    assert float(smoothed) == pytest.approx(float(expected[:, :3].mean(1).sum()), rel=1e-6)
    # R-Drop: the second pass's rows are the same texts with the same targets
    twice = jnp.concatenate([logits, logits], axis=1)
    doubled, _ = multi_exit_loss(twice, labels, weight, "equal", rdrop=1.0, targets=soft)
    assert float(doubled) == pytest.approx(float(loss), rel=1e-6)  # equal passes: KL 0


def test_gradient_of_t_moves_weight_toward_easier_exits():
    """d loss / d t_i = sigmoid'(t_i) (CE_i - CE_L): an exit easier than the last gains weight."""
    logits = jnp.zeros((3, 2, 2)).at[0, :, 0].set(5.0)  # exit 1 confident and right, others unsure
    labels = jnp.array([0, 0])
    t = init_weight_logits(3)
    grad = jax.grad(lambda t: multi_exit_loss(logits, labels, jnp.ones(2), "dyn", t)[0])(t)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels[None]).mean(1)
    s = jax.nn.sigmoid(t)
    np.testing.assert_allclose(grad, s * (1 - s) * (ce[:2] - ce[2]), rtol=1e-5)
    assert grad[0] < 0 and grad[1] == pytest.approx(0.0, abs=1e-7)


def test_distillation_adds_a_term_without_teacher_gradient():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(3, 4, 3)), jnp.float32)
    labels, weight = jnp.array([0, 1, 2, 0]), jnp.ones(4)
    plain, _ = multi_exit_loss(logits, labels, weight, "equal")
    distilled, _ = multi_exit_loss(logits, labels, weight, "equal", distill_weight=0.5)
    assert float(distilled) > float(plain)
    grad = jax.grad(lambda z: multi_exit_loss(z, labels, weight, "equal", distill_weight=1.0)[0]
                    - multi_exit_loss(z, labels, weight, "equal")[0])(logits)
    assert float(jnp.abs(grad[-1]).max()) == 0.0 and float(jnp.abs(grad[0]).max()) > 0


def test_unknown_weighting():
    with pytest.raises(ValueError, match="weighting"):
        exit_weights("cubic", 3)
    with pytest.raises(ValueError, match="needs its trainable"):
        exit_weights("dyn", 3)


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(3, 4, 3)), jnp.float32)
    labels, weight = jnp.array([0, 1, 2, 0]), jnp.array([1, 1, 1, 0], jnp.float32)
    smoothed, aux = multi_exit_loss(logits, labels, weight, "equal", label_smoothing=0.2)
    targets = optax.smooth_labels(jax.nn.one_hot(labels[:3], 3), 0.2)
    ce = optax.softmax_cross_entropy(logits[:, :3], targets[None]).mean(1)
    np.testing.assert_allclose(aux["per_exit_ce"], ce, rtol=1e-6)
    assert float(smoothed) == pytest.approx(float(ce.sum()), rel=1e-6)
    plain, _ = multi_exit_loss(logits, labels, weight, "equal")
    assert float(plain) != pytest.approx(float(smoothed), rel=1e-3)


def test_rdrop_is_the_mean_of_both_passes_plus_their_symmetric_kl():
    rng = np.random.default_rng(3)
    first, second = (jnp.asarray(rng.normal(size=(3, 4, 3)), jnp.float32) for _ in range(2))
    labels, weight = jnp.array([0, 1, 2, 0]), jnp.array([1, 1, 1, 0], jnp.float32)
    t = init_weight_logits(3)
    both = jnp.concatenate([first, second], 1)
    loss, aux = multi_exit_loss(both, labels, weight, "dyn", t, rdrop=2.0)
    one, _ = multi_exit_loss(first, labels, weight, "dyn", t)
    two, _ = multi_exit_loss(second, labels, weight, "dyn", t)
    p, q = jax.nn.softmax(first[:, :3], -1), jax.nn.softmax(second[:, :3], -1)  # real rows only
    kl = 0.5 * (optax.kl_divergence(jnp.log(q), p) + optax.kl_divergence(jnp.log(p), q)).mean(1)
    w = exit_weights("dyn", 3, t)
    assert float(loss) == pytest.approx(0.5 * (float(one) + float(two)) + 2.0 * float(w @ kl),
                                        rel=1e-5)
    assert aux["per_exit_ce"].shape == (3,)
    same, _ = multi_exit_loss(jnp.concatenate([first, first], 1), labels, weight, "dyn", t,
                              rdrop=2.0)
    assert float(same) == pytest.approx(float(one), rel=1e-6)  # no disagreement, no penalty
