"""Every engine must give exactly the oracle's exit layer and prediction for every row."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from elbert_jax import engines, exits
from elbert_jax.model import ElbertModel, EncoderConfig, init_params

BATCHED = ("full", "masked", "compact", "refill")


def make_model(model_type: str = "albert", layers: int = 4, **overrides):
    """A random model whose exits disagree across rows and layers (large init, 3 labels)."""
    settings = dict(model_type=model_type, vocab_size=61, hidden_size=16, num_hidden_layers=layers,
                    num_attention_heads=2, intermediate_size=24, max_position_embeddings=32,
                    num_labels=3, initializer_range=0.5,
                    embedding_size=8 if model_type == "albert" else None)
    settings.update(overrides)
    config = EncoderConfig(**settings)
    return ElbertModel(config), init_params(config, seed=3)


def make_rows(n: int, width: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)  # a few lengths: the reference engine compiles per length
    lengths = rng.choice([3, 6, 11, width], n)
    mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1, 61, (n, width)).astype(np.int32) * mask
    types = ((np.arange(width)[None] >= lengths[:, None] // 2) * mask).astype(np.int32)
    return ids, mask, types


def oracle(model, params, policy, ids, mask, types):
    probs = jax.nn.softmax(model.apply({"params": params}, ids, mask, types).exit_logits, -1)
    chosen = exits.oracle(policy, probs)
    return np.asarray(chosen.layer), np.asarray(chosen.prediction), np.asarray(probs)


def check(model, params, policy, rows, kinds=("reference",) + BATCHED, **engine_args):
    ids, mask, types = rows
    layer, prediction, probs = oracle(model, params, policy, ids, mask, types)
    for kind in kinds:
        engine = engines.Engine(model, params, policy, kind=kind, trace=True, **engine_args)
        out = engine(ids, mask, types)
        np.testing.assert_array_equal(out.layer, layer, err_msg=f"{kind} exit layers")
        np.testing.assert_array_equal(out.prediction, prediction, err_msg=f"{kind} predictions")
        at_exit = probs[layer - 1, np.arange(len(layer))]
        np.testing.assert_allclose(out.probs, at_exit, atol=1e-4, err_msg=kind)
        computed = np.arange(1, probs.shape[0] + 1)[None, :] <= layer[:, None]
        np.testing.assert_array_equal(np.isnan(out.trace), ~computed[..., None].repeat(3, -1))
        np.testing.assert_allclose(out.trace[computed], probs.transpose(1, 0, 2)[computed],
                                   atol=1e-4, err_msg=kind)
    return layer


POLICIES = [
    exits.ExitPolicy("cwb", threshold=0.2, window=2),
    exits.ExitPolicy("cwb", threshold=0.1, window=2, margin=0.1, variant="bias_2"),
    exits.ExitPolicy("cwb", threshold=0.1, window=3, variant="bias_3", spread=0.2),
    exits.ExitPolicy("entropy", threshold=0.5),
    exits.ExitPolicy("raw_entropy", threshold=0.4),
    exits.ExitPolicy("patience", patience=1),
    exits.ExitPolicy("max_prob", threshold=0.8),
    exits.ExitPolicy("static", layer=2),
    exits.ExitPolicy("cwb", threshold=0.3, window=2, temperatures=(0.3, 0.6, 1.5, 3.0)),
]


@pytest.mark.parametrize("policy", POLICIES,
                         ids=lambda p: f"{p.name}-{p.variant}" + ("-tempered" if p.temperatures else ""))
def test_every_engine_equals_the_oracle(policy):
    model, params = make_model()
    layer = check(model, params, policy, make_rows(40), batch_size=8, min_batch=2,
                  buckets=(8, 24), queue_batches=4)
    if policy.name != "static":  # the model is random but the exits must not be all alike
        assert len(np.unique(layer)) > 1


@pytest.mark.parametrize("batch_size,min_batch", [(1, 1), (3, 1), (16, 4), (64, 16)])
def test_batch_sizes(batch_size, min_batch):
    """Down to batch 1 and up to more slots than rows (64 for 37)."""
    model, params = make_model(layers=5)
    check(model, params, exits.ExitPolicy("cwb", threshold=0.3, window=2), make_rows(37, seed=1),
          kinds=BATCHED, batch_size=batch_size, min_batch=min_batch, buckets=(8, 24))


@pytest.mark.parametrize("kind", ["masked", "compact", "refill"])
def test_few_rows_run_on_few_slots(kind):
    """A call with fewer rows than batch_size runs on the smallest power of two of slots holding
    them (a lone request must not pay for a full batch), with the same exact rows."""
    model, params = make_model()
    policy = exits.ExitPolicy("cwb", threshold=0.3, window=2)
    # one length bucket; 37 rows: one refill queue, or batches of 16, 16 and 5
    last = {16} if kind == "refill" else {16, 8}
    for rows, slots in ((1, {1}), (3, {4}), (5, {8}), (16, {16}), (37, last)):
        ids, mask, types = make_rows(rows, seed=rows)
        mask = np.ones_like(mask)
        engine = engines.Engine(model, params, policy, kind=kind, batch_size=16, min_batch=2,
                                buckets=(8, 24))
        check(model, params, policy, (ids, mask, types), kinds=(kind,), batch_size=16,
              min_batch=2, buckets=(8, 24))
        engine(ids, mask, types)
        assert {levels[0] for levels, _ in engine._programs} == slots, rows


@pytest.mark.parametrize("model_type,overrides", [
    ("albert", {"head_per_layer": True}),
    ("albert", {"num_hidden_groups": 2}),
    ("roberta", {"type_vocab_size": 1}),  # unshared like BERT; positions follow the padding
    ("distilbert", {"head_per_layer": True}),  # no token types, ReLU heads (BERT's: below)
    ("albert", {"pooling": "mean", "head_per_layer": True}),
], ids=["albert-heads", "albert-groups", "roberta", "distilbert-heads", "albert-mean"])
def test_model_families(model_type, overrides):
    model, params = make_model(model_type, **overrides)
    check(model, params, exits.ExitPolicy("max_prob", threshold=0.7), make_rows(30, seed=2),
          batch_size=8, min_batch=2, buckets=(12, 24), queue_batches=1)


@pytest.mark.parametrize("queue_batches", [1, 2, 16])
def test_refill_by_depth_on_unshared_stacks(queue_batches):
    """Queues of 1, 2 and 16 batches: a pool of 1, 2 and L = 4 batches of slots."""
    model, params = make_model("bert", head_per_layer=True)
    rows = make_rows(70, seed=10)
    for policy in (exits.ExitPolicy("cwb", threshold=0.5, window=2),
                   exits.ExitPolicy("max_prob", threshold=0.7, temperatures=(0.5, 1.0, 2.0, 4.0))):
        layer = check(model, params, policy, rows, kinds=("refill",), batch_size=4, min_batch=1,
                      buckets=(8, 24), queue_batches=queue_batches)
        assert set(layer) == {1, 2, 3, 4}  # every depth group is used


def test_window_longer_than_depth():
    model, params = make_model(layers=3)
    layer = check(model, params, exits.ExitPolicy("cwb", threshold=0.05, window=5),
                  make_rows(20, seed=4), kinds=BATCHED, batch_size=4, min_batch=1)
    assert set(layer) <= {1, 2, 3}


def test_bf16_runs_close_to_the_fp32_oracle():
    """bf16 rounding moves rows that sit on a threshold, so exactness is an fp32 promise only."""
    model, params = make_model()
    model16 = ElbertModel(model.config.replace(dtype="bfloat16"))
    policy = exits.ExitPolicy("entropy", threshold=0.6)
    rows = make_rows(40, seed=5)
    layer, prediction, _ = oracle(model, params, policy, *rows)
    for kind in BATCHED:
        out = engines.Engine(model16, params, policy, kind=kind, batch_size=8, min_batch=2)(*rows)
        assert (out.layer == layer).mean() >= 0.8 and (out.prediction == prediction).mean() >= 0.8


def test_ties_uniform_probabilities():
    """A zero classifier gives uniform probabilities everywhere: ties broken as the oracle does."""
    model, params = make_model()
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 0 if "classifier" in jax.tree_util.keystr(path) else x, params)
    rows = make_rows(8, seed=6)
    for policy, expected in [(exits.ExitPolicy("cwb", threshold=0.5, window=2), 4),
                             (exits.ExitPolicy("patience", patience=2), 3),
                             (exits.ExitPolicy("max_prob", threshold=1 / 3), 1)]:
        layer = check(model, params, policy, rows, kinds=("reference", "masked", "refill"),
                      batch_size=4, min_batch=1)
        assert (layer == expected).all(), policy


def test_empty_input_and_order():
    model, params = make_model()
    engine = engines.Engine(model, params, exits.ExitPolicy(), kind="refill", batch_size=4)
    out = engine(np.zeros((0, 8), np.int32), np.zeros((0, 8), np.int32))
    assert out.layer.shape == (0,) and out.probs.shape == (0, 3)
    ids, mask, types = make_rows(9, seed=7)
    whole = engine(ids, mask, types)
    backwards = engine(ids[::-1], mask[::-1], types[::-1])
    np.testing.assert_array_equal(backwards.layer[::-1], whole.layer)
    np.testing.assert_array_equal(backwards.prediction[::-1], whole.prediction)


def test_bad_arguments():
    model, params = make_model()
    with pytest.raises(ValueError, match="engine 'fast'"):
        engines.Engine(model, params, exits.ExitPolicy(), kind="fast")
    engine = engines.Engine(model, params, exits.ExitPolicy())
    with pytest.raises(ValueError, match="shape"):
        engine(np.zeros((2, 8), np.int32), np.zeros((2, 7), np.int32))


def test_halving_levels():
    assert engines.halving_levels(64, 8) == (64, 32, 16, 8)
    assert engines.halving_levels(100, 8) == (100, 50, 25, 12)
    assert engines.halving_levels(1, 8) == (1,)


def test_per_row_thresholds():
    model, params = make_model(layers=5)
    ids, mask, types = make_rows(30, seed=8)
    plan = np.random.default_rng(0).integers(1, 6, len(ids))
    for kind in ("reference", "masked", "refill"):
        out = engines.Engine(model, params, exits.ExitPolicy("static"), kind=kind, batch_size=8,
                             min_batch=2)(ids, mask, types, thresholds=plan)
        np.testing.assert_array_equal(out.layer, plan, err_msg=kind)
    policy = exits.ExitPolicy("entropy")
    tau = np.random.default_rng(1).uniform(0.1, 0.9, len(ids)).astype(np.float32)
    probs = jax.nn.softmax(model.apply({"params": params}, ids, mask, types).exit_logits, -1)
    expected = exits.oracle(policy, probs, tau)
    for kind in ("full", "compact"):
        out = engines.Engine(model, params, policy, kind=kind, batch_size=8,
                             min_batch=2)(ids, mask, types, thresholds=tau)
        np.testing.assert_array_equal(out.layer, expected.layer, err_msg=kind)
        np.testing.assert_array_equal(out.prediction, expected.prediction, err_msg=kind)
    with pytest.raises(ValueError, match="thresholds"):
        engines.Engine(model, params, policy)(ids, mask, types, thresholds=tau[:3])


def test_mean_pooling_reads_only_real_tokens():
    model, params = make_model(pooling="mean")
    ids, mask, types = make_rows(6, seed=9)
    out = model.apply({"params": params}, ids, mask, types, output_hidden_states=True)
    hidden = np.asarray(out.hidden_states[1:], np.float64)  # [L, B, S, H]
    means = (hidden * mask[None, :, :, None]).sum(2) / mask.sum(1)[None, :, None]
    logits = jax.vmap(lambda h, i: model.apply({"params": params}, h, i, method="exit"))(
        means.astype(np.float32), np.arange(4))
    np.testing.assert_allclose(out.exit_logits, logits, atol=1e-5)
    padded = ids.copy()
    padded[mask == 0] = 7  # whatever sits in the padding must not matter
    again = model.apply({"params": params}, padded, mask, types).exit_logits
    np.testing.assert_allclose(again, out.exit_logits, atol=1e-6)
    with pytest.raises(ValueError, match="pooling"):
        from elbert_jax.convert import config_to_hf
        config_to_hf(model.config)
