"""The optimiser: parameter averaging and per-module learning-rate scales (optim.py)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from elbert_jax import config as config_lib
from elbert_jax import optim
from elbert_jax.model import EncoderConfig, init_params

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.py"


@pytest.mark.parametrize("accumulate", [1, 3])
def test_param_average_is_the_debiased_ema_of_the_updated_params(accumulate):
    decay = 0.8
    inner = optax.multi_transform({"model": optax.sgd(0.1), "t": optax.sgd(0.1)},
                                  {"model": {"w": "model"}, "t": "t"})
    tx = optim.with_param_average(inner, decay)
    if accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulate)
    params = {"model": {"w": jnp.array([1.0, -2.0])}, "t": jnp.zeros(2)}
    state = tx.init(params)
    assert optim.averaged_params(tx.init(params), decay) is not None
    expected, visited = np.zeros(2), []
    for i in range(4 * accumulate):
        grads = {"model": {"w": jnp.array([0.5, 1.0]) * (i + 1)}, "t": jnp.ones(2)}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        if (i + 1) % accumulate == 0:  # only real updates count, not accumulation micro-steps
            visited.append(np.asarray(params["model"]["w"]))
    for w in visited:
        expected = decay * expected + (1 - decay) * w
    expected /= 1 - decay ** len(visited)
    np.testing.assert_allclose(optim.averaged_params(state, decay)["w"], expected, rtol=1e-6)
    assert optim.averaged_params(inner.init(params), decay) is None


@pytest.mark.parametrize("model_type", ["bert", "albert"])
@pytest.mark.parametrize("decay,head_scale", [(0.5, 1.0), (1.0, 10.0), (0.5, 4.0)])
def test_lr_scales_each_module(model_type, decay, head_scale):
    """Against the same step without scales: group g of G moves decay^(G-1-g) as far, the
    embeddings decay^G, the exit heads head_scale as far, ELBERT's t as far (weight decay
    included)."""
    cfg = EncoderConfig(model_type=model_type, vocab_size=50, embedding_size=8, hidden_size=8,
                        num_hidden_layers=3, num_attention_heads=2, intermediate_size=16,
                        num_labels=3, head_per_layer=model_type == "bert")
    params = {"model": init_params(cfg), "t": np.zeros(2, np.float32)}
    grads = jax.tree.map(lambda x: np.random.default_rng(0).normal(size=x.shape).astype(x.dtype),
                         params)
    updates = []
    for changes in ({}, {"train.layer_lr_decay": decay, "train.head_lr_scale": head_scale}):
        t = config_lib.load_config_file(TINY, **{"train.warmup_fraction": 0.0, **changes}).train
        tx = optim.make_optimizer(t, total_updates=10)
        updates.append(tx.update(grads, tx.init(params), params)[0])
    groups = cfg.groups
    assert groups == (3 if model_type == "bert" else 1)
    ratios = jax.tree.map(lambda a, b: np.asarray(b) / np.asarray(a), *updates)
    seen = set()
    for path, ratio in jax.tree_util.tree_leaves_with_path(ratios):
        name = jax.tree_util.keystr(path)
        if "embeddings" in name:
            np.testing.assert_allclose(ratio, decay ** groups, rtol=1e-5, err_msg=name)
        elif "encoder" in name:
            for g in range(groups):
                np.testing.assert_allclose(ratio[g], decay ** (groups - 1 - g), rtol=1e-5,
                                           err_msg=name)
        elif "exits" in name:
            np.testing.assert_allclose(ratio, head_scale, rtol=1e-5, err_msg=name)
        else:
            np.testing.assert_allclose(ratio, 1.0, rtol=1e-5, err_msg=name)
        seen.add(name.split("']")[1] if "model" in name else "t")
    assert {"['embeddings", "['encoder", "['exits", "t"} <= seen, seen
