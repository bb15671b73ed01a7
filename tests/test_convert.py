"""Parity with transformers' PyTorch models and the checkpoint conversion both ways."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from conftest import (ALBERT_TOKENIZER, MINILM, TINY_ALBERT, TINY_BERT, TINY_DISTILBERT, TINY_ELECTRA,
                      TINY_ROBERTA, save_random_hf, shared_path)
from elbert_jax import (EncoderConfig, config_from_hf, init_params, load_pretrained,
                        params_from_state_dict, read_state_dict, save_pretrained,
                        state_dict_from_params)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from elbert_jax.parity import compare_with_transformers, random_batch  # noqa: E402  (needs torch)

TOL = 1e-5


def assert_parity(folder, vocab_size, batch=None, **load_kwargs):
    batch = batch or random_batch(vocab_size, batch=4, seq_len=12)
    diffs = compare_with_transformers(folder, batch, **load_kwargs)
    assert diffs["hidden_states"] <= TOL, diffs
    assert diffs["logits"] <= TOL, diffs
    return diffs


@pytest.mark.parametrize("num_labels", [2, 5])
@pytest.mark.parametrize("act", ["gelu_new", "gelu"])
def test_albert_parity(tmp_path, num_labels, act):
    folder = save_random_hf(tmp_path, "albert", num_labels=num_labels, hidden_act=act, **TINY_ALBERT)
    assert_parity(folder, TINY_ALBERT["vocab_size"])


def test_albert_hidden_groups_parity(tmp_path):
    folder = save_random_hf(tmp_path, "albert", num_labels=3, num_hidden_groups=2,
                            **{**TINY_ALBERT, "num_hidden_layers": 4})
    model, params = load_pretrained(folder)
    assert model.config.groups == 2
    assert params["encoder"]["groups"]["layers"]["layer"]["query"]["kernel"].shape[0] == 2
    assert_parity(folder, TINY_ALBERT["vocab_size"])


def test_albert_inner_groups_refused(tmp_path):
    folder = save_random_hf(tmp_path, "albert", inner_group_num=2, **TINY_ALBERT)
    with pytest.raises(ValueError, match="inner_group_num=2"):
        load_pretrained(folder)


@pytest.mark.parametrize("num_labels", [2, 5])
def test_bert_parity(tmp_path, num_labels):
    folder = save_random_hf(tmp_path, "bert", num_labels=num_labels, **TINY_BERT)
    assert_parity(folder, TINY_BERT["vocab_size"])


def roberta_batch(seq_len=12):
    """Padding id 1 (RoBERTa's), one token type: transformers' RoBERTa refuses type 1."""
    return random_batch(TINY_ROBERTA["vocab_size"], batch=4, seq_len=seq_len,
                        pad_token_id=TINY_ROBERTA["pad_token_id"], pairs=False)


@pytest.mark.parametrize("kind,num_labels", [("roberta", 2), ("roberta", 5), ("xlm-roberta", 3),
                                             ("camembert", 2)])
def test_roberta_parity(tmp_path, kind, num_labels):
    """Padded rows of different lengths: RoBERTa numbers positions from pad + 1 and gives padding
    the pad position, which the hidden states at every position (padding included) compare.
    XLM-RoBERTa and CamemBERT are RoBERTa under other names."""
    folder = save_random_hf(tmp_path, kind, num_labels=num_labels, **TINY_ROBERTA)
    model, params = load_pretrained(folder)
    assert model.config.model_type == "roberta" and model.config.pad_token_id == 1
    hf_config = json.loads((folder / "config.json").read_text())
    assert config_from_hf({**hf_config, "pad_token_id": 0}).pad_token_id == 0  # not the default
    assert_parity(folder, TINY_ROBERTA["vocab_size"], roberta_batch())
    # our tokenizer marks a pair's second segment type 1; a one-type model reads it as type 0
    batch = roberta_batch()
    types = random_batch(TINY_ROBERTA["vocab_size"], batch=4, seq_len=12)["token_type_ids"]
    assert types.any()
    logits = [model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                          t).exit_logits for t in (batch["token_type_ids"], types)]
    np.testing.assert_array_equal(*logits)
    assert model.config.max_length == 64
    with pytest.raises(ValueError, match="exceeds the 64 positions of max_position_embeddings=66"):
        model.apply({"params": params}, np.ones((1, 65), np.int32))  # 65 + 2 > 66 positions


def test_roberta_bare_model_and_new_head(tmp_path, caplog):
    """A RobertaModel's pooler is not RobertaForSequenceClassification's head (transformers starts
    that afresh), so neither is it ours: the head is initialised, the pooler is not 'unused'."""
    folder = save_random_hf(tmp_path / "bare", "roberta", head=False, **TINY_ROBERTA)
    assert "pooler.dense.weight" in read_state_dict(folder)  # a bare model's keys have no prefix
    with caplog.at_level(logging.WARNING, logger="elbert_jax"):
        load_pretrained(folder, num_labels=3)
    assert "classifier.dense.weight, classifier.dense.bias, classifier.out_proj.weight" in caplog.text
    assert "not used" not in caplog.text
    assert_parity(folder, TINY_ROBERTA["vocab_size"], roberta_batch(), num_labels=3)
    # new_head: a fresh out_proj for other labels; the head's dense layer (our pooler) is kept
    tuned = save_random_hf(tmp_path / "tuned", "roberta", num_labels=3, **TINY_ROBERTA)
    with pytest.raises(ValueError, match="num_labels=3"):
        load_pretrained(tuned, num_labels=2)
    _, params = load_pretrained(tuned, num_labels=2, new_head=True)
    state = read_state_dict(tuned)
    head = params["exits"]["head"]
    np.testing.assert_array_equal(head["pooler"]["kernel"], state["classifier.dense.weight"].T)
    assert head["classifier"]["kernel"].shape == (32, 2)


@pytest.mark.parametrize("num_labels,act", [(2, "gelu"), (5, "relu")])
def test_distilbert_parity(tmp_path, num_labels, act):
    """DistilBERT's own layer names, no token types (ours are ignored) and its ReLU head."""
    folder = save_random_hf(tmp_path, "distilbert", num_labels=num_labels, activation=act,
                            **TINY_DISTILBERT)
    model, params = load_pretrained(folder)
    assert not model.config.token_types and model.config.hidden_act == act
    assert "token_type_embeddings" not in params["embeddings"]
    assert_parity(folder, TINY_DISTILBERT["vocab_size"])  # a batch with token types 0 and 1
    bare = save_random_hf(tmp_path / "bare", "distilbert", head=False, **TINY_DISTILBERT)
    assert_parity(bare, TINY_DISTILBERT["vocab_size"], num_labels=3)


@pytest.mark.parametrize("embedding_size,num_labels", [(16, 2), (32, 5)])
def test_electra_parity(tmp_path, embedding_size, num_labels):
    """ELECTRA: embeddings of width E projected to H when they differ (ELECTRA-small), BERT's
    layers, RoBERTa's head with a GELU; a discriminator as released (its replaced-token head is
    not ours), and a classifier."""
    sizes = {**TINY_ELECTRA, "embedding_size": embedding_size}
    folder = save_random_hf(tmp_path, "electra", num_labels=num_labels, **sizes)
    model, params = load_pretrained(folder)
    assert model.config.projects_embeddings == (embedding_size != 32)
    assert ("embedding_hidden_mapping_in" in params["embeddings"]) == (embedding_size != 32)
    assert_parity(folder, TINY_ELECTRA["vocab_size"])
    released = save_random_hf(tmp_path / "discriminator", "electra", head="pretraining", **sizes)
    assert_parity(released, TINY_ELECTRA["vocab_size"], num_labels=3)
    from elbert_jax import pretrain
    from elbert_jax.config import ConfigError

    with pytest.raises(ConfigError, match="not electra"):
        pretrain.load_masked_lm(released)


def test_distilbert_with_a_fixed_position_table_is_refused():
    with pytest.raises(ValueError, match="sinusoidal_pos_embds=True is not supported"):
        config_from_hf(transformers.DistilBertConfig(sinusoidal_pos_embds=True))


def test_albert_base_v2_architecture_parity(tmp_path):
    hf_config = json.loads((shared_path(ALBERT_TOKENIZER) / "config.json").read_text())
    for key in ("_name_or_path", "architectures", "transformers_version", "torch_dtype"):
        hf_config.pop(key, None)
    hf_config.pop("model_type")
    folder = save_random_hf(tmp_path, "albert", **hf_config)
    diffs = assert_parity(folder, hf_config["vocab_size"])
    print(f"albert-base-v2 (random weights): {diffs}")


def test_minilm_real_weights_parity():
    folder = shared_path(MINILM)
    diffs = assert_parity(folder, 30522, num_labels=3)
    assert diffs["head_copied"] == 1.0  # a bare BertModel: no classifier in the checkpoint
    print(f"all-MiniLM-L6-v2: {diffs}")


def test_bare_model_initialises_head_with_warning(tmp_path, caplog):
    folder = save_random_hf(tmp_path, "albert", head=False, **TINY_ALBERT)
    with caplog.at_level(logging.INFO, logger="elbert_jax"):
        model, params = load_pretrained(folder, num_labels=4)
    assert "exit head initialised" in caplog.text and "classifier.weight" in caplog.text
    assert "pooler" not in caplog.text.split("initialised", 1)[1]  # the pooler was in the file
    assert params["exits"]["head"]["classifier"]["kernel"].shape == (32, 4)
    state = read_state_dict(folder)
    np.testing.assert_array_equal(params["exits"]["head"]["pooler"]["kernel"],
                                  state["pooler.weight"].T)


def test_classifier_import_reported(tmp_path, caplog):
    folder = save_random_hf(tmp_path, "bert", num_labels=3, **TINY_BERT)
    with caplog.at_level(logging.INFO, logger="elbert_jax"):
        load_pretrained(folder)
    assert "imported from the checkpoint" in caplog.text


def test_num_labels_mismatch_names_key(tmp_path):
    folder = save_random_hf(tmp_path, "bert", num_labels=3, **TINY_BERT)
    with pytest.raises(ValueError, match="classifier has num_labels=3 .* num_labels=5 was asked"):
        load_pretrained(folder, num_labels=5)
    model, params = load_pretrained(folder, num_labels=5, new_head=True)  # a fresh classifier
    assert params["exits"]["head"]["classifier"]["kernel"].shape == (32, 5)
    assert model.config.num_labels == 5


def test_missing_encoder_key_is_an_error(tmp_path):
    folder = save_random_hf(tmp_path, "bert", num_labels=3, **TINY_BERT)
    state = read_state_dict(folder)
    del state["bert.encoder.layer.1.attention.self.key.weight"]
    config = config_from_hf(transformers.AutoConfig.from_pretrained(folder))
    with pytest.raises(KeyError, match="encoder.layer.1.attention.self.key.weight"):
        params_from_state_dict(config, state, source="my.ckpt")


def test_unsupported_model_type(tmp_path):
    with pytest.raises(ValueError, match="'deberta-v2' is not supported: elbert_jax loads ALBERT"):
        config_from_hf({"model_type": "deberta-v2"})


def test_per_layer_heads_start_from_pretrained_head(tmp_path):
    folder = save_random_hf(tmp_path, "albert", num_labels=3, **TINY_ALBERT)
    model, params = load_pretrained(folder, head_per_layer=True)
    kernel = params["exits"]["head"]["classifier"]["kernel"]
    assert kernel.shape == (3, 32, 3)
    np.testing.assert_array_equal(kernel[0], kernel[2])
    assert_parity(folder, TINY_ALBERT["vocab_size"], head_per_layer=True)


def test_pytorch_bin_and_legacy_names(tmp_path):
    folder = save_random_hf(tmp_path / "st", "albert", num_labels=3, **TINY_ALBERT)
    state = read_state_dict(folder)
    legacy = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): torch.from_numpy(v)
              for k, v in state.items()}
    binary = tmp_path / "bin"
    binary.mkdir()
    (binary / "config.json").write_text((folder / "config.json").read_text())
    torch.save(legacy, binary / "pytorch_model.bin")
    _, from_st = load_pretrained(folder)
    _, from_bin = load_pretrained(binary)
    for a, b in zip(jax_leaves(from_st), jax_leaves(from_bin), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_hub_repo_with_pytorch_weights_only(tmp_path, monkeypatch):
    """Older hub repos hold pytorch_model.bin and no safetensors: fetched (only) when the
    safetensors patterns bring no weights."""
    import fnmatch
    import shutil

    import huggingface_hub

    folder = save_random_hf(tmp_path / "st", "bert", num_labels=3, **TINY_BERT)
    repos = {"org/new": folder, "org/old": tmp_path / "old"}
    repos["org/old"].mkdir()
    (repos["org/old"] / "config.json").write_text((folder / "config.json").read_text())
    torch.save({k: torch.from_numpy(v) for k, v in read_state_dict(folder).items()},
               repos["org/old"] / "pytorch_model.bin")
    (repos["org/old"] / "training_args.bin").write_bytes(b"not weights")
    calls = []

    def snapshot_download(repo, allow_patterns):  # the hub: the repo's files that match
        calls.append((repo, tuple(allow_patterns)))
        snapshot = tmp_path / "cache" / repo.replace("/", "--")
        snapshot.mkdir(parents=True, exist_ok=True)
        for file in repos[repo].iterdir():
            if any(fnmatch.fnmatch(file.name, p) for p in allow_patterns):
                shutil.copy(file, snapshot / file.name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    _, new = load_pretrained("org/new")
    assert len(calls) == 1  # safetensors found: no pickles fetched
    _, old = load_pretrained("org/old")
    assert [c[0] for c in calls[1:]] == ["org/old", "org/old"]
    assert "pytorch_model.bin" in calls[2][1] and "*.bin" not in calls[2][1]
    assert not (tmp_path / "cache" / "org--old" / "training_args.bin").exists()
    for a, b in zip(jax_leaves(new), jax_leaves(old), strict=True):
        np.testing.assert_array_equal(a, b)


def test_sharded_safetensors(tmp_path):
    model = transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2, **TINY_BERT))
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert_parity(tmp_path, TINY_BERT["vocab_size"])


def test_hub_name_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="not a local folder"):
        load_pretrained("no-such-user/no-such-model")


def jax_leaves(tree):
    import jax

    return jax.tree.leaves(tree)


@pytest.mark.parametrize("model_type,extra", [
    ("albert", {}), ("albert", {"num_hidden_groups": 3}), ("bert", {}),
    ("bert", {"head_per_layer": True}),
    ("roberta", {"type_vocab_size": 1, "pad_token_id": 1, "max_position_embeddings": 66}),
    ("distilbert", {}), ("electra", {"embedding_size": 16})])
def test_export_round_trip(tmp_path, model_type, extra):
    """Our params -> transformers folder -> transformers logits == our last exit."""
    config = EncoderConfig(**{**dict(model_type=model_type, vocab_size=99, hidden_size=32,
                                     embedding_size=16 if model_type == "albert" else None,
                                     num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=64,
                                     num_labels=3), **extra})
    params = init_params(config, seed=1)
    folder = save_pretrained(tmp_path, config, params, label_names=["negative", "neutral", "positive"])
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert reloaded.config.id2label[2] == "positive"
    assert type(reloaded).__name__.lower().startswith(model_type)
    batch = random_batch(99, pad_token_id=config.pad_token_id, pairs=config.type_vocab_size > 1)
    if not config.token_types:
        del batch["token_type_ids"]
    from elbert_jax import ElbertModel

    ours = ElbertModel(config).apply({"params": params}, batch["input_ids"],
                                     batch["attention_mask"], batch.get("token_type_ids"))
    with torch.no_grad():
        theirs = reloaded(**{k: torch.as_tensor(v) for k, v in batch.items()}).logits.numpy()
    assert np.abs(theirs - np.asarray(ours.exit_logits[-1])).max() <= TOL
    # and back: the state dict survives a load -> export cycle bit for bit
    _, again = load_pretrained(folder, **{k: v for k, v in extra.items() if k == "head_per_layer"})
    if not config.head_per_layer:
        for a, b in zip(jax_leaves(params), jax_leaves(again), strict=True):
            np.testing.assert_array_equal(a, b)
    assert set(state_dict_from_params(config, params)) == set(read_state_dict(folder))
