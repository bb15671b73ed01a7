"""Exit policies: the scanned rule against a plain-Python reading of the spec, row by row."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest

from elbert_jax import exits
from elbert_jax.exits import (ExitPolicy, default_threshold, entropy, oracle, sweep,
                              with_threshold)


def reference(policy: ExitPolicy, probs: np.ndarray) -> tuple[int, int]:
    """Exit layer (1-based) and prediction of ONE row, probs [L, K], written from the spec."""
    num_layers, k = probs.shape
    for i in range(1, num_layers + 1):
        p = probs[i - 1]
        c = int(np.argmax(p))
        h = -sum(x * math.log(x) for x in p if x > 0)
        if i == num_layers:
            return i, c
        if policy.name == "cwb":
            if h / math.log(k) < policy.threshold:
                return i, c
            n = policy.window
            if i >= n:
                window = probs[i - n:i]
                tops = np.sort(window, 1)
                agree = all(int(np.argmax(q)) == c for q in window) and all(
                    t[-1] - t[-2] > 2 * policy.margin for t in tops)
                if policy.variant == "bias_2":
                    agree = agree and all(window[j + 1, c] >= window[j, c] for j in range(n - 1))
                if policy.variant == "bias_3":
                    agree = agree and window[:, c].max() - window[:, c].min() <= policy.spread
                if agree:
                    return i, c
        elif policy.name == "entropy" and h / math.log(k) < policy.threshold:
            return i, c
        elif policy.name == "raw_entropy" and h < policy.threshold:
            return i, c
        elif policy.name == "max_prob" and p.max() >= policy.threshold:
            return i, c
        elif policy.name == "patience":
            preds = [int(np.argmax(q)) for q in probs[:i]]
            if i > policy.patience and len(set(preds[-policy.patience - 1:])) == 1:
                return i, c
        elif policy.name == "static" and i >= policy.layer:
            return i, c
    raise AssertionError("unreachable")


def random_probs(num_layers, batch, k, seed, sharp=3.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(num_layers, batch, k)) * sharp
    logits += np.cumsum(rng.normal(size=(num_layers, batch, k)) * 0.3, 0)  # some persistence
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


POLICIES = [
    ExitPolicy("cwb", threshold=0.3, window=3),
    ExitPolicy("cwb", threshold=0.1, window=2, margin=0.1),
    ExitPolicy("cwb", threshold=0.2, window=3, variant="bias_2"),
    ExitPolicy("cwb", threshold=0.2, window=2, variant="bias_3", spread=0.2),
    ExitPolicy("cwb", threshold=0.05, window=20),  # N > L: stage 1 only
    ExitPolicy("entropy", threshold=0.4),
    ExitPolicy("raw_entropy", threshold=0.5),
    ExitPolicy("max_prob", threshold=0.8),
    ExitPolicy("patience", patience=2),
    ExitPolicy("static", layer=3),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p.name}-{p.variant}-{p.window}")
@pytest.mark.parametrize("k", [2, 3, 5])
def test_oracle_matches_reference(policy, k):
    probs = random_probs(6, 64, k, seed=k)
    got = oracle(policy, jnp.asarray(probs))
    for row in range(probs.shape[1]):
        want = reference(policy, probs[:, row].astype(np.float64))
        assert (int(got.layer[row]), int(got.prediction[row])) == want, (row, probs[:, row])


def test_ties_exit_only_at_last_layer_for_window_rule():
    """Uniform probabilities: entropy is maximal and the margin is 0, so nothing exits early."""
    probs = np.full((4, 3, 3), 1 / 3, np.float32)
    got = oracle(ExitPolicy("cwb", threshold=0.5, window=2), jnp.asarray(probs))
    assert got.layer.tolist() == [4, 4, 4] and got.prediction.tolist() == [0, 0, 0]
    one_hot = np.zeros((4, 1, 3), np.float32)
    one_hot[..., 1] = 1.0
    got = oracle(ExitPolicy("entropy", threshold=0.01), jnp.asarray(one_hot))
    assert got.layer.tolist() == [1] and got.prediction.tolist() == [1]


def test_entropy_normalisation():
    p = jnp.array([[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(entropy(p, normalised=False), [math.log(2), math.log(3)], rtol=1e-6)
    np.testing.assert_allclose(entropy(p)[1], 1.0, rtol=1e-6)


def test_sweep_is_monotone_in_cost_and_matches_oracle():
    probs = random_probs(6, 200, 3, seed=7)
    labels = probs[-1].argmax(-1)
    rows = sweep(ExitPolicy("entropy"), jnp.asarray(probs), labels, np.array([0.1, 0.5, 0.9]))
    costs = [r["cost"] for r in rows]
    assert costs == sorted(costs, reverse=True)  # a looser threshold exits earlier
    single = oracle(ExitPolicy("entropy", threshold=0.5), jnp.asarray(probs))
    assert rows[1]["cost"] == pytest.approx(float(single.layer.mean()) / 6)
    assert rows[1]["accuracy"] == pytest.approx(float((np.asarray(single.prediction) == labels).mean()))
    static = sweep(ExitPolicy("static"), jnp.asarray(probs), labels)
    assert [r["cost"] for r in static] == pytest.approx([i / 6 for i in range(1, 7)])
    assert static[-1]["accuracy"] == 1.0



@pytest.mark.parametrize("name", exits.POLICIES)
def test_a_sweep_point_becomes_the_policy_that_gives_it(name):
    probs = jnp.asarray(random_probs(6, 50, 3, seed=3))
    base = ExitPolicy(name, window=3)
    rows = sweep(base, probs, np.zeros(50, np.int32))
    for row in (rows[0], rows[len(rows) // 2], rows[-1]):
        policy = with_threshold(base, row["threshold"])
        assert default_threshold(policy) == pytest.approx(row["threshold"])
        assert policy.window == 3  # the other settings are kept
        assert float(oracle(policy, probs).layer.mean()) / 6 == pytest.approx(row["cost"])


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"{p.name}-{p.variant}-{p.window}")
def test_temperatures_make_the_rule_read_tempered_probabilities(policy):
    """A policy with per-layer temperatures decides as the plain policy does on the probabilities
    of logits divided by them, and keeps the untempered argmax as its prediction."""
    probs = random_probs(6, 300, 3, seed=11)
    temperatures = (0.4, 0.7, 1.0, 1.5, 2.5, 4.0)
    tempered = np.stack([exits.temper(jnp.asarray(p), t) for p, t in zip(probs, temperatures)])
    got = oracle(policy.replace(temperatures=temperatures), jnp.asarray(probs))
    want = oracle(policy, jnp.asarray(tempered))
    np.testing.assert_array_equal(got.layer, want.layer)
    np.testing.assert_array_equal(got.prediction, want.prediction)
    np.testing.assert_array_equal(np.asarray(got.prediction),
                                  probs.argmax(-1)[np.asarray(got.layer) - 1, np.arange(300)])
    if policy.name in ("cwb", "entropy", "raw_entropy", "max_prob"):  # confidence rules move
        assert np.any(np.asarray(got.layer) != np.asarray(oracle(policy, jnp.asarray(probs)).layer))


def test_fit_temperatures_recovers_the_temperature_labels_were_drawn_at():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 20000, 3)) * 3.0
    truth = np.array([0.5, 1.0, 2.5])
    drawn = np.exp(logits / truth[:, None, None])
    drawn /= drawn.sum(-1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    for layer, t in enumerate(truth):  # each exit fitted on labels drawn at its own temperature
        labels = (drawn[layer].cumsum(-1) < rng.random((20000, 1))).sum(-1)
        assert exits.fit_temperatures(probs[layer:layer + 1], labels)[0] == pytest.approx(t, rel=0.05)
    confident = np.eye(3)[labels] * 0.98 + 0.01  # always right: the sharpest allowed temperature
    assert exits.fit_temperatures(confident[None], labels, bounds=(0.1, 10.0))[0] == pytest.approx(0.1)


def test_temperatures_survive_json_and_must_match_the_depth():
    import json

    policy = ExitPolicy("entropy", temperatures=[0.5, 2.0])  # a list, as read back from JSON
    assert policy.temperatures == (0.5, 2.0) and hash(policy)
    assert ExitPolicy(**json.loads(json.dumps(dataclasses.asdict(policy)))) == policy
    with pytest.raises(ValueError, match="2 temperatures for 6 layers"):
        oracle(policy, jnp.asarray(random_probs(6, 4, 3, seed=0)))


@pytest.mark.parametrize("kwargs", [dict(name="nope"), dict(variant="bias_9"), dict(window=0),
                                    dict(threshold=float("nan")), dict(threshold=float("inf")),
                                    dict(margin=-0.1), dict(spread=float("nan")),
                                    dict(temperatures=(1.0, 0.0)),
                                    dict(temperatures=(float("nan"),))])
def test_policy_validation(kwargs):
    with pytest.raises(ValueError):
        ExitPolicy(**kwargs)
