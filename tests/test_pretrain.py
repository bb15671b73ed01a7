"""Task-adaptive masked-LM pretraining: the head against transformers, the masking, a run."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from conftest import TINY_ALBERT, TINY_BERT, TINY_DISTILBERT, TINY_ROBERTA, save_random_hf
from elbert_jax import config as config_lib
from elbert_jax import convert, pretrain, training
from elbert_jax import data as data_lib
from elbert_jax.parity import random_batch

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _positions(batch: dict, slots: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([rng.choice(int(n), slots, replace=False)
                     for n in batch["attention_mask"].sum(1)]).astype(np.int32)


def _hf_logits(model, batch: dict, positions: np.ndarray) -> np.ndarray:
    import torch

    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch]
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(np.asarray(batch[k], np.int64))
                       for k in names}).logits.numpy()
    return np.take_along_axis(out, positions[..., None], axis=1)


@pytest.mark.parametrize("kind,sizes", [("albert", TINY_ALBERT), ("bert", TINY_BERT),
                                        ("roberta", dict(TINY_ROBERTA, hidden_act="gelu_new",
                                                         initializer_range=0.5)),
                                        ("distilbert", TINY_DISTILBERT)])
def test_masked_lm_matches_transformers_both_ways(tmp_path, kind, sizes):
    """Logits at chosen positions equal transformers' *ForMaskedLM's (fp32), after loading its
    checkpoint and after our export is loaded back by transformers."""
    transformers = pytest.importorskip("transformers")
    folder = save_random_hf(tmp_path / "hf", kind, head="mlm", **sizes)
    model, params, exit_head, imported = pretrain.load_masked_lm(folder)
    assert imported
    batch = random_batch(sizes["vocab_size"], batch=4, seq_len=12,
                         pad_token_id=sizes.get("pad_token_id", 0), pairs=kind != "roberta")
    batch = {k: np.asarray(v) for k, v in batch.items()}
    positions = _positions(batch)
    ours_batch = batch
    if kind == "distilbert":  # it takes no token types (ours ignores them)
        batch = {k: v for k, v in batch.items() if k != "token_type_ids"}
    ours = np.asarray(pretrain.masked_lm_logits(model, params, {**ours_batch, "positions": positions}))
    theirs = _hf_logits(transformers.AutoModelForMaskedLM.from_pretrained(folder).eval(), batch,
                        positions)
    assert ours.shape == (4, 3, model.config.vocab_size)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)

    out = tmp_path / "ours"
    encoder = {"embeddings": params["embeddings"], "encoder": params["encoder"], "exits": exit_head}
    table = np.asarray(params["embeddings"]["word_embeddings"]["embedding"])
    convert.save_pretrained(out, model.config, encoder, classifier=False,
                            extra=convert.mlm_head_state_dict(model.config, params["mlm"], table))
    assert not any(k.startswith("classifier.") for k in convert.read_state_dict(out))
    again = _hf_logits(transformers.AutoModelForMaskedLM.from_pretrained(out).eval(), batch, positions)
    np.testing.assert_allclose(again, theirs, atol=1e-5, rtol=0)


def test_a_checkpoint_without_a_head_starts_one_at_random(tmp_path):
    folder = save_random_hf(tmp_path, "bert", head=False, **TINY_BERT)
    _, params, _, imported = pretrain.load_masked_lm(folder, seed=3)
    assert not imported
    assert float(np.abs(params["mlm"]["bias"]).max()) == 0.0  # transformers' init: zero bias
    assert params["mlm"]["dense"]["kernel"].shape == (32, 32)


def test_masking_follows_bert():
    rng = np.random.default_rng(0)
    ids = rng.integers(10, 1000, (400, 50))
    candidates = np.ones_like(ids, bool)
    candidates[:, 0] = candidates[:, -1] = False  # [CLS] ... [SEP]
    candidates[1, :] = False  # a padded row: nothing to mask
    candidates[2, 2:] = False  # one token
    out = pretrain.mask_tokens(ids, candidates, np.random.default_rng(1), mask_token_id=4,
                               vocab_size=1000, rate=0.15)
    weights, positions = out["weights"].astype(bool), out["positions"]
    assert out["positions"].shape == (400, 8)  # ceil(0.15 x 50)
    assert weights.sum(1)[0] == 7 and weights[1].sum() == 0 and weights[2].sum() == 1  # rint(.15 x 48)
    rows = np.nonzero(weights)[0]
    assert candidates[rows, positions[weights]].all()
    for row in range(400):  # each position once
        assert len(set(positions[row][weights[row]])) == weights[row].sum()
    np.testing.assert_array_equal(out["labels"][weights], ids[rows, positions[weights]])
    changed = out["input_ids"] != ids
    assert not changed[~candidates].any()
    now = out["input_ids"][rows, positions[weights]]
    share_masked = (now == 4).mean()
    share_kept = (now == ids[rows, positions[weights]]).mean()
    assert abs(share_masked - 0.8) < 0.03 and abs(share_kept - 0.1) < 0.03, (share_masked, share_kept)
    again = pretrain.mask_tokens(ids, candidates, np.random.default_rng(1), 4, 1000, 0.15)
    for key in out:
        np.testing.assert_array_equal(out[key], again[key])


@pytest.fixture(scope="module")
def pretrained(trained, tmp_path_factory):
    """The tiny trained run exported, then pretrained on its own split's training texts."""
    from elbert_jax import report

    workdir, _ = trained
    base = report.export(workdir, tmp_path_factory.mktemp("exported"))
    config = config_lib.load_config_file(CONFIGS / "tiny.py", **{
        "model.name_or_path": str(base), "pretrain.epochs": 3, "pretrain.batch_size": 16,
        "pretrain.lr": 3e-3, "pretrain.head_lr": 3e-2})
    out = tmp_path_factory.mktemp("tapt")
    return out, config, pretrain.pretrain(config, out)


def test_pretraining_lowers_the_held_out_loss_and_records_its_texts(pretrained):
    out, config, result = pretrained
    assert result["after"]["mlm_loss"] < result["before"]["mlm_loss"] - 0.1, result
    assert not result["head_from_checkpoint"]
    record = json.loads((out / "encoder" / pretrain.RECORD).read_text())
    splits = training.load_splits(config)
    assert len(record["text_digests"]) == len(splits.train) == result["texts"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sum(line.get("split") == "validation" for line in lines) == 4  # before + 3 epochs
    assert not (out / "checkpoints").exists()  # the encoder supersedes it
    assert pretrain.pretrain(config, out) == result  # a rerun has nothing to do
    other = config.copy_and_resolve_references()
    other.pretrain.epochs = 4
    with pytest.raises(FileExistsError, match="pretrained with another config"):
        pretrain.pretrain(other, out)


def test_an_interrupted_pretraining_resumes_to_the_same_encoder(pretrained, tmp_path, caplog):
    """Stopped in its second epoch (after the first epoch's checkpoint, before the second's), then
    rerun: the same weights and metrics as the uninterrupted run, to the bit."""
    out, config, result = pretrained
    splits = training.load_splits(config)
    per_epoch = data_lib.steps_per_epoch(len(splits.train), config.pretrain.batch_size)
    again = tmp_path / "again"
    assert pretrain.pretrain(config, again, stop_at_step=per_epoch + 1) == {"stopped_at": per_epoch + 1}
    assert not (again / "encoder").exists()
    with caplog.at_level(logging.INFO, logger="elbert_jax"):
        resumed = pretrain.pretrain(config, again)
    assert f"at step {per_epoch}" in caplog.text  # resumed from the first epoch's checkpoint
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {
        k: v for k, v in result.items() if k != "seconds"}
    assert (again / "metrics.jsonl").read_text() == (out / "metrics.jsonl").read_text()
    ours, theirs = (safetensors.numpy.load_file(d / "encoder" / "model.safetensors") for d in (again, out))
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def test_fine_tuning_from_the_pretrained_encoder(pretrained, tmp_path):
    out, config, _ = pretrained
    encoder = str(out / "encoder")
    config = config_lib.load_config_file(CONFIGS / "tiny.py", **{
        "model.name_or_path": encoder, "train.epochs": 1})
    result = training.train_and_evaluate(config, tmp_path / "ft")
    assert 0 <= result["test"]["accuracy"] <= 1
    other = config_lib.load_config_file(CONFIGS / "tiny.py", **{
        "model.name_or_path": encoder, "seed": 7, "train.epochs": 1})
    with pytest.raises(ValueError, match="was pretrained on .* validation texts"):
        training.train_and_evaluate(other, tmp_path / "leak")
    assert not (tmp_path / "leak" / "model.json").exists()


def test_a_refit_fine_tunes_from_an_encoder_pretrained_on_its_training_texts(pretrained, tmp_path):
    """A refit's training texts include its validation texts, so its pretraining reads them too:
    the refit may fine-tune from that encoder, a run that validates on those texts may not."""
    _, config, _ = pretrained
    refit = {"model.name_or_path": config.model.name_or_path, "data.train_on_validation": True,
             "train.select_metric": "last"}
    tapt = config_lib.load_config_file(CONFIGS / "tiny.py", **refit, **{"pretrain.epochs": 1})
    pretrain.pretrain(tapt, tmp_path / "tapt")
    splits = training.load_splits(tapt)
    record = set(json.loads((tmp_path / "tapt" / "encoder" / pretrain.RECORD).read_text())["text_digests"])
    assert set(pretrain.digests(splits.validation)) <= record
    assert not record & set(pretrain.digests(splits.test))
    encoder = {"model.name_or_path": str(tmp_path / "tapt" / "encoder"), "train.epochs": 1}
    ft = config_lib.load_config_file(CONFIGS / "tiny.py", **{**refit, **encoder})
    assert 0 <= training.train_and_evaluate(ft, tmp_path / "ft")["test"]["accuracy"] <= 1
    kept = config_lib.load_config_file(CONFIGS / "tiny.py", **encoder)
    with pytest.raises(ValueError, match=f"pretrained on {len(splits.validation)} of this run's "
                                         f"{len(splits.validation)} validation texts"):
        training.train_and_evaluate(kept, tmp_path / "kept")


def test_a_corpus_is_read_whole_and_held_out_texts_never_trained_on(tmp_path):
    held_out = {pretrain.text_digest("Sales fell 5 %."), pretrain.text_digest("Profit rose.")}
    corpus = tmp_path / "news.txt"
    corpus.write_text("Shares rose.\n\nProfit rose.\n  \nOrders grew 3 %.\nProfit rose.\n", "utf-8")
    with pytest.raises(data_lib.DataError, match=r"news.txt: 2 of its texts .* \(rows 3, 6\)"):
        pretrain.read_corpus(corpus, "text", held_out)
    texts, stats = pretrain.read_corpus(corpus, "text", held_out, "drop")
    assert texts == ["Shares rose.", "Orders grew 3 %."]
    assert stats == {"path": str(corpus), "texts": 2, "blank_skipped": 2, "held_out_dropped": 2}
    table = tmp_path / "news.jsonl"
    table.write_text('{"body": "Shares rose."}\n{"title": "no body"}\n', "utf-8")
    with pytest.raises(data_lib.DataError, match=r"news.jsonl:2: expected a JSON object with a 'body'"):
        pretrain.read_corpus(table, "body", held_out)


def test_pretraining_on_a_corpus_records_its_texts(pretrained, tmp_path):
    _, config, _ = pretrained
    splits = training.load_splits(config)
    corpus = tmp_path / "news.csv"
    corpus.write_text("id,body\n1,Operating profit rose to EUR 3 mn.\n2,\n3,\"Kone, a lift maker, "
                      f"cut jobs.\"\n4,\"{splits.test.texts[0]}\"\n", "utf-8")
    config = config.copy_and_resolve_references()
    config.pretrain.update(epochs=1, texts=str(corpus), text_column="body")
    with pytest.raises(data_lib.DataError, match="1 of its texts are validation or test texts"):
        pretrain.pretrain(config, tmp_path / "refused")
    config.pretrain.held_out = "drop"
    result = pretrain.pretrain(config, tmp_path / "run")
    assert result["corpus"] == {"path": str(corpus), "texts": 2, "blank_skipped": 1,
                                "held_out_dropped": 1}
    assert result["texts"] == len(splits.train) + 2
    record = json.loads((tmp_path / "run" / "encoder" / pretrain.RECORD).read_text())
    assert pretrain.text_digest("Kone, a lift maker, cut jobs.") in record["text_digests"]
    assert pretrain.text_digest(splits.test.texts[0]) not in record["text_digests"]
    assert len(record["text_digests"]) == result["texts"]


def test_pretraining_needs_a_checkpoint_and_a_valid_config(tmp_path):
    config = config_lib.load_config_file(CONFIGS / "tiny.py")
    with pytest.raises(ValueError, match="model.name_or_path"):
        pretrain.pretrain(config, tmp_path)
    config = config_lib.load_config_file(CONFIGS / "tiny.py", **{"pretrain.mask_rate": 1.5})
    with pytest.raises(ValueError, match="pretrain.mask_rate=1.5"):
        pretrain.pretrain(config, tmp_path)
    for key, value, error in (("texts", str(tmp_path / "absent.txt"), "is not a file"),
                              ("texts", str(Path(__file__)), "is not one of"),
                              ("held_out", "keep", "is not refuse or drop")):
        config = config_lib.load_config_file(CONFIGS / "tiny.py", **{f"pretrain.{key}": value})
        with pytest.raises(ValueError, match=f"pretrain.{key}=.*{error}"):
            pretrain.pretrain(config, tmp_path)
