"""The Flax encoder: shapes, dtypes, sharing, the one-layer API the engines use, config checks."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from elbert_jax import ElbertModel, EncoderConfig, head_params, init_params, layer_params
from elbert_jax.model import _attention_kernel, compute_weights

L, B, S, H, K = 4, 3, 7, 16, 3


def tiny(**changes) -> EncoderConfig:
    base = dict(model_type="albert", vocab_size=50, embedding_size=8, hidden_size=H,
                num_hidden_layers=L, num_attention_heads=2, intermediate_size=20, num_labels=K,
                max_position_embeddings=32)
    base.update(changes)
    if base["model_type"] == "bert":
        base["embedding_size"] = None
    return EncoderConfig(**base)


def batch():
    ids = jnp.array(np.random.default_rng(0).integers(5, 50, (B, S)), jnp.int32)
    mask = jnp.array([[1] * S, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], jnp.int32)
    return ids * mask, mask


CONFIGS = {
    "albert-shared": tiny(),
    "albert-2-groups": tiny(num_hidden_groups=2),
    "bert": tiny(model_type="bert"),
    "bert-per-layer-heads": tiny(model_type="bert", head_per_layer=True),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_output_shapes_and_dtypes(name):
    config = CONFIGS[name]
    params = init_params(config)
    ids, mask = batch()
    out = ElbertModel(config).apply({"params": params}, ids, mask, output_hidden_states=True)
    chex.assert_shape(out.exit_logits, (L, B, K))
    chex.assert_shape(out.hidden_states, (L + 1, B, S, H))
    chex.assert_type(out.exit_logits, jnp.float32)
    chex.assert_tree_all_finite(out)
    plain = ElbertModel(config).apply({"params": params}, ids, mask)
    assert plain.hidden_states is None
    np.testing.assert_allclose(plain.exit_logits, out.exit_logits, atol=1e-6)


def test_albert_shares_one_layer_bert_does_not():
    albert = init_params(CONFIGS["albert-shared"])["encoder"]["groups"]["layers"]["layer"]
    bert = init_params(CONFIGS["bert"])["encoder"]["groups"]["layers"]["layer"]
    assert albert["query"]["kernel"].shape == (1, H, H)
    assert bert["query"]["kernel"].shape == (L, H, H)
    assert not np.allclose(bert["query"]["kernel"][0], bert["query"]["kernel"][1])
    count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
    assert count(bert) == L * count(albert)


@pytest.mark.parametrize("name", CONFIGS)
def test_layer_by_layer_equals_full_depth(name):
    """embed -> layer(i) -> exit(i) reproduces every hidden state and exit of the scanned forward."""
    config = CONFIGS[name]
    model, params = ElbertModel(config), init_params(config)
    ids, mask = batch()
    full = model.apply({"params": params}, ids, mask, output_hidden_states=True)
    step = jax.jit(lambda h, i: model.apply({"params": params}, h, mask, i, method=model.layer))
    exit_ = jax.jit(lambda h, i: model.apply({"params": params}, h[:, 0], i, method=model.exit))
    h = model.apply({"params": params}, ids, method=model.embed)
    np.testing.assert_allclose(h, full.hidden_states[0], atol=1e-6)
    for i in range(L):
        h = step(h, jnp.int32(i))  # traced index, as inside lax.while_loop
        np.testing.assert_allclose(h, full.hidden_states[i + 1], atol=1e-5)
        np.testing.assert_allclose(exit_(h, jnp.int32(i)), full.exit_logits[i], atol=1e-5)


def test_group_and_head_slicing():
    config = tiny(num_hidden_groups=2, head_per_layer=True)
    params = init_params(config)
    stacked = params["encoder"]["groups"]["layers"]["layer"]["ffn"]["kernel"]
    for i, group in enumerate([0, 0, 1, 1]):
        np.testing.assert_array_equal(layer_params(config, params, i)["ffn"]["kernel"], stacked[group])
    heads = params["exits"]["head"]["classifier"]["kernel"]
    np.testing.assert_array_equal(head_params(config, params, 3)["classifier"]["kernel"], heads[3])


def test_padding_does_not_leak():
    """Changing padded tokens must not change any exit of the padded row."""
    config = CONFIGS["bert"]
    model, params = ElbertModel(config), init_params(config)
    ids, mask = batch()
    other = jnp.where(mask == 1, ids, 7)
    a = model.apply({"params": params}, ids, mask).exit_logits
    b = model.apply({"params": params}, other, mask).exit_logits
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_dropout_is_active_only_when_not_deterministic():
    config = tiny(hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    model, params = ElbertModel(config), init_params(config)
    ids, mask = batch()
    run = lambda seed: model.apply({"params": params}, ids, mask, deterministic=False,  # noqa: E731
                                   rngs={"dropout": jax.random.PRNGKey(seed)}).exit_logits
    assert not np.allclose(run(0), run(1))
    np.testing.assert_array_equal(run(0), run(0))
    eval_a = model.apply({"params": params}, ids, mask).exit_logits
    np.testing.assert_array_equal(eval_a, model.apply({"params": params}, ids, mask).exit_logits)


def test_bf16_compute_keeps_fp32_params():
    config = tiny(dtype="bfloat16")
    params = init_params(config)
    assert {x.dtype for x in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    ids, mask = batch()
    out = ElbertModel(config).apply({"params": params}, ids, mask, output_hidden_states=True)
    chex.assert_type(out.hidden_states, jnp.bfloat16)
    chex.assert_type(out.exit_logits, jnp.float32)
    ref = ElbertModel(tiny()).apply({"params": params}, ids, mask).exit_logits
    np.testing.assert_allclose(out.exit_logits, ref, atol=0.1)


def test_gradients_reach_every_parameter():
    config = CONFIGS["bert-per-layer-heads"]
    model, params = ElbertModel(config), init_params(config)
    ids, mask = batch()
    grads = jax.grad(lambda p: model.apply({"params": p}, ids, mask).exit_logits.sum())(params)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        if "position_embeddings" in jax.tree_util.keystr(path) or "word_embeddings" in jax.tree_util.keystr(path):
            continue  # only the rows that were looked up get gradients
        assert np.abs(g).sum() > 0, jax.tree_util.keystr(path)


@pytest.mark.parametrize("changes,message", [
    (dict(model_type="gpt"), "model_type"),
    (dict(hidden_size=15), "num_attention_heads"),
    (dict(num_hidden_groups=3), "must divide"),
    (dict(hidden_act="mish"), "hidden_act"),
    (dict(dtype="float64"), "dtype"),
    (dict(num_labels=0), "num_labels"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(attention="flash"), "attention"),
    (dict(attention="cudnn"), "cudnn' needs dtype bfloat16"),
    (dict(attention="cudnn_lengths"), "cudnn_lengths' needs dtype bfloat16"),
    (dict(fuse_qkv=1), "fuse_qkv"),
])
def test_config_validation(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**changes)


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="'auto' means Pallas or cuDNN on a GPU")
def test_auto_attention_is_the_xla_path_off_gpu():
    # cuDNN's fused kernel needs a GPU (measured there: docs/benchmarks.md); elsewhere 'auto'
    # must be exactly the float32-softmax path, bf16 included
    ids, mask = batch()
    for dtype in ("float32", "bfloat16"):
        params = init_params(tiny(dtype=dtype))
        logits = {a: ElbertModel(tiny(dtype=dtype, attention=a)).apply({"params": params}, ids, mask)
                  .exit_logits for a in ("xla", "auto")}
        np.testing.assert_array_equal(logits["auto"], logits["xla"])


def test_auto_attention_picks_pallas_for_inference_on_a_gpu(monkeypatch):
    # the rule, with the backend faked: Pallas where the H200 measured it fastest (head size 64,
    # 64-token blocks), cuDNN for gradients and shapes no GPU has run Pallas on, XLA in float32,
    # off the GPU and for head sizes cuDNN does not take
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    bf16 = tiny(dtype="bfloat16", attention="auto")
    assert _attention_kernel(bf16, 64, 64) == "pallas"
    assert _attention_kernel(bf16, 64, 128) == "pallas"
    assert _attention_kernel(bf16, 64, 64, deterministic=False) == "cudnn"
    assert _attention_kernel(bf16, 64, 32) == "cudnn"  # a 32-token bucket: 32-token blocks
    assert _attention_kernel(bf16, 32, 64) == "cudnn"  # MiniLM's heads
    assert _attention_kernel(bf16, 12, 64) == "xla"  # not a size cuDNN takes
    assert _attention_kernel(tiny(dtype="float32", attention="auto"), 64, 64) == "xla"
    assert _attention_kernel(tiny(dtype="bfloat16", attention="cudnn"), 64, 64) == "cudnn"
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert _attention_kernel(bf16, 64, 64) == "xla"


@pytest.mark.parametrize("name", ["albert-shared", "bert"])
def test_pallas_attention_is_the_same_model(name):
    # Pallas' flash kernel (interpreted off the GPU) with the mask as segment ids: XLA's exit
    # logits, and its states at every unmasked position (masked queries attend to the other
    # masked keys there, which nothing reads), for right padding and for a mask with holes
    config = CONFIGS[name]
    params = init_params(config)
    ids = jnp.array(np.random.default_rng(1).integers(5, 50, (3, 16)), jnp.int32)
    mask = jnp.array([[1] * 16, [1] * 9 + [0] * 7, [1, 1, 0, 1] + [0] * 12], jnp.int32)
    out = {a: ElbertModel(config.replace(attention=a)).apply(
        {"params": params}, ids, mask, output_hidden_states=True) for a in ("xla", "pallas")}
    np.testing.assert_allclose(out["pallas"].exit_logits, out["xla"].exit_logits, rtol=0,
                               atol=1e-5)
    kept = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(out["pallas"].hidden_states)[:, kept],
                               np.asarray(out["xla"].hidden_states)[:, kept], rtol=0, atol=1e-5)
    # the one-layer call the engines make
    hidden = out["xla"].hidden_states[0]
    step = {a: ElbertModel(config.replace(attention=a)).apply(
        {"params": params}, hidden, mask, 1, method="layer") for a in ("xla", "pallas")}
    np.testing.assert_allclose(np.asarray(step["pallas"])[kept], np.asarray(step["xla"])[kept],
                               rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="divisible by 16"):
        ElbertModel(config.replace(attention="pallas")).apply({"params": params}, ids[:, :12],
                                                              mask[:, :12])


def test_pallas_attention_trains_with_xla_gradients():
    # Pallas' own backward kernels (their block sizes are set in `attend`): the parameter
    # gradients of XLA's path, padding included
    config = CONFIGS["albert-shared"]
    params = init_params(config)
    ids = jnp.array(np.random.default_rng(2).integers(5, 50, (3, 16)), jnp.int32)
    mask = jnp.array([[1] * 16, [1] * 9 + [0] * 7, [1] * 3 + [0] * 13], jnp.int32)
    weights = jnp.array(np.random.default_rng(3).standard_normal((config.num_hidden_layers, 3,
                                                                  config.num_labels)), jnp.float32)

    def loss(p, attention):
        out = ElbertModel(config.replace(attention=attention)).apply({"params": p}, ids, mask)
        return (out.exit_logits * weights).sum()

    grads = {a: jax.grad(loss)(params, a) for a in ("xla", "pallas")}
    chex.assert_trees_all_close(grads["pallas"], grads["xla"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CONFIGS)
def test_fused_qkv_is_the_same_model(name):
    # one product over the concatenated query/key/value kernels: the same parameter tree and
    # initialisation (checkpoints load either way), and the same outputs as three Dense layers
    config = CONFIGS[name]
    params = init_params(config)
    fused = init_params(config.replace(fuse_qkv=True))
    chex.assert_trees_all_equal(fused, params)
    ids, mask = batch()
    for dtype in ("float32", "bfloat16"):
        out = {f: ElbertModel(config.replace(dtype=dtype, fuse_qkv=f)).apply(
            {"params": params}, ids, mask).exit_logits for f in (False, True)}
        np.testing.assert_allclose(out[True], out[False], rtol=0, atol=1e-6 if dtype == "float32"
                                   else 2e-2)


def test_sequence_longer_than_positions_is_refused():
    config = tiny(max_position_embeddings=8)
    ids = jnp.ones((1, 9), jnp.int32)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        ElbertModel(config).init(jax.random.PRNGKey(0), ids)


def test_init_statistics_follow_transformers():
    params = init_params(tiny(hidden_size=64, num_attention_heads=4, intermediate_size=256))
    kernel = np.asarray(params["encoder"]["groups"]["layers"]["layer"]["ffn"]["kernel"])
    assert abs(kernel.std() - 0.02) < 0.002
    assert np.all(np.asarray(params["encoder"]["groups"]["layers"]["layer"]["ffn"]["bias"]) == 0)


@pytest.mark.parametrize("model_type", ["albert", "bert"])
def test_compute_weights_cast_up_front_changes_no_bit(model_type):
    """Engines cast the weights a layer would cast anyway once, outside their loops."""
    cfg = EncoderConfig(model_type=model_type, vocab_size=50, hidden_size=16,
                        embedding_size=8 if model_type == "albert" else None,
                        num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=16, num_labels=3, head_per_layer=True,
                        dtype="bfloat16")
    params = init_params(cfg, 0)
    cast = compute_weights(cfg, params)
    dtypes = {jax.tree_util.keystr(path): leaf.dtype
              for path, leaf in jax.tree_util.tree_leaves_with_path(cast)}
    assert {d for k, d in dtypes.items() if "LayerNorm" in k or "layer_norm" in k} == {
        jnp.dtype(jnp.float32)}
    assert {d for k, d in dtypes.items() if k.endswith(("['kernel']", "['embedding']"))} == {
        jnp.dtype(jnp.bfloat16)}
    ids = jax.random.randint(jax.random.PRNGKey(1), (4, 12), 0, 50)
    mask = jnp.ones_like(ids).at[1, 7:].set(0)
    model = ElbertModel(cfg)
    want = model.apply({"params": params}, ids, mask).exit_logits
    got = model.apply({"params": cast}, ids, mask).exit_logits
    np.testing.assert_array_equal(got, want)
    assert compute_weights(cfg.replace(dtype="float32"), params) is params
