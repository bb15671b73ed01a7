"""Data readers, deduplication, splits and batches."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED, shared_path
from elbert_jax import data as data_lib
from elbert_jax.data import DataError, TextSet

ROOT = Path(__file__).resolve().parents[1]

PB = "Profit rose sharply .@positive\r\nCosts fell .@positive\r\nThe CEO \xe9lan said @ noon .@neutral\r\n"


def write_pb(folder, text=PB, subset="50Agree"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"Sentences_{subset}.txt"
    path.write_bytes(text.encode("latin-1"))
    return path


def test_phrasebank_latin1_crlf_and_last_at(tmp_path):
    write_pb(tmp_path / "FinancialPhraseBank-v1.0")
    data = data_lib.read_phrasebank(tmp_path)
    assert data.texts == ["Profit rose sharply .", "Costs fell .", "The CEO \xe9lan said @ noon ."]
    assert data.labels.tolist() == [2, 2, 1]


def test_phrasebank_zip(tmp_path):
    archive = tmp_path / "FinancialPhraseBank-v1.0.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("FinancialPhraseBank-v1.0/Sentences_AllAgree.txt", PB.encode("latin-1"))
    assert len(data_lib.read_phrasebank(archive, "AllAgree")) == 3
    with pytest.raises(FileNotFoundError, match="Sentences_50Agree"):
        data_lib.read_phrasebank(archive, "50Agree")


def test_agreement_levels_and_soft_targets(tmp_path):
    folder = tmp_path / "FinancialPhraseBank-v1.0"
    rows = ["Sales fell .@negative", "Sales rose .@positive", "It is Monday .@neutral",
            "Costs rose .@negative"]
    for subset, keep in zip(data_lib.PHRASEBANK_SUBSETS, (4, 3, 2, 1)):  # the files nest
        write_pb(folder, "\r\n".join(rows[:keep]) + "\r\n", subset)
    data = data_lib.read_phrasebank(tmp_path)
    level = data_lib.phrasebank_agreement(tmp_path, data.texts)
    assert level.tolist() == [3, 2, 1, 0]
    targets = data_lib.agreement_targets(data.labels, level)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets[np.arange(4), data.labels],
                               np.asarray(data_lib.PHRASEBANK_AGREEMENT)[::-1], rtol=1e-6)
    # a polar label's remainder goes to neutral; a neutral label's splits between the polar two
    np.testing.assert_allclose(targets, [[1, 0, 0], [0, 0.16, 0.84], [0.145, 0.71, 0.145],
                                         [0.6, 0.4, 0]], atol=1e-6)
    with pytest.raises(DataError, match="'Profits doubled .' is in no Sentences_"):
        data_lib.phrasebank_agreement(tmp_path, ["Profits doubled ."])
    kept = TextSet(data.texts, data.labels, targets=targets, agreement=level).subset([3, 0])
    np.testing.assert_array_equal(kept.targets, targets[[3, 0]])
    assert kept.agreement.tolist() == [0, 3]
    np.testing.assert_array_equal(data_lib.agreement_if_available(tmp_path, data.texts), level)
    (folder / "Sentences_66Agree.txt").unlink()  # a trimmed copy: no breakdown, no error
    assert data_lib.agreement_if_available(tmp_path, data.texts) is None


def test_real_phrasebank_agreement_levels_nest():
    folder = shared_path(SHARED / "data" / "financial_phrasebank")
    data = data_lib.read_phrasebank(folder, "50Agree")
    level = data_lib.phrasebank_agreement(folder, data.texts)
    for k, subset in enumerate(data_lib.PHRASEBANK_SUBSETS):  # as sets: the files hold duplicates
        at_least = {t for t, lv in zip(data.texts, level) if lv >= k}
        assert at_least == set(data_lib.read_phrasebank(folder, subset).texts), subset


def test_deduplicate_drops_conflicts_and_counts():
    data = TextSet(["a", "b", "a", "c", "c", "d"], np.array([0, 1, 0, 2, 1, 0], np.int32))
    kept, stats = data_lib.deduplicate(data)
    assert kept.texts == ["a", "b", "d"] and kept.labels.tolist() == [0, 1, 0]
    assert stats == {"rows": 6, "kept": 3, "duplicates_removed": 1, "conflicting_texts": 1,
                     "conflicting_rows_dropped": 2}


def test_real_phrasebank_sizes_and_finbert_split():
    folder = shared_path(SHARED / "data" / "financial_phrasebank")
    data, stats = data_lib.deduplicate(data_lib.read_phrasebank(folder, "50Agree"))
    assert stats["rows"] == 4846 and stats["conflicting_texts"] == 2
    train, val, test = data_lib.split_indices(data.labels, seed=0)
    assert len(test) == 968  # the benchmark's n_test
    assert len(set(train) | set(val) | set(test)) == len(data)
    again = data_lib.split_indices(data.labels, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(test, data_lib.split_indices(data.labels, seed=1)[2])


def test_stratified_split_keeps_proportions():
    labels = np.array([0] * 100 + [1] * 300 + [2] * 600)
    _, _, test = data_lib.split_indices(labels, seed=3, stratified=True)
    assert np.bincount(labels[test]).tolist() == [20, 60, 120]


def test_tables_csv_tsv_jsonl_with_pairs(tmp_path):
    (tmp_path / "a.csv").write_text('premise,hypothesis,label\n"A, quoted",B,entailment\nC,D,not\n')
    data, names = data_lib.read_table(tmp_path / "a.csv", "premise", "label", "hypothesis")
    assert data.texts == ["A, quoted", "C"] and data.pairs == ["B", "D"]
    assert names == ["entailment", "not"] and data.labels.tolist() == [0, 1]
    (tmp_path / "b.tsv").write_text("text\tlabel\nup\t1\ndown\t0\n")
    data, names = data_lib.read_table(tmp_path / "b.tsv", label_names=["neg", "pos"])
    assert data.labels.tolist() == [1, 0] and data.pairs is None
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "x", "label": "pos"}) + "\n\n"
                                      + json.dumps({"text": "y", "label": "neg"}) + "\n")
    assert data_lib.read_table(tmp_path / "c.jsonl", label_names=["neg", "pos"])[0].labels.tolist() == [1, 0]


def test_hub_dataset_with_pairs_and_a_hidden_test_split(tmp_path, monkeypatch):
    """A `datasets` dataset shaped like GLUE's RTE, from a local folder (no download): class names
    from its ClassLabel, sentence pairs, and a test split whose labels are all -1."""
    datasets = pytest.importorskip("datasets")
    from elbert_jax import config as config_lib
    from elbert_jax import training

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    features = datasets.Features({"sentence1": datasets.Value("string"),
                                  "sentence2": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "not_entailment"])})
    for folder, split, labels in (("rte", "train", [0, 1] * 10), ("rte", "validation", [1, 0, 0]),
                                  ("rte", "test", [-1] * 4), ("blank", "train", [0, 1])):
        premises = [f"{split} premise {i}" for i in range(len(labels))]
        if folder == "blank":
            premises[1] = None
        datasets.Dataset.from_dict({"sentence1": premises,
                                    "sentence2": [f"hypothesis {i}" for i in range(len(labels))],
                                    "label": labels}, features=features
                                   ).to_parquet(tmp_path / folder / f"{split}.parquet")
    overrides = {"data.source": "hub", "data.hub_name": str(tmp_path / "rte"),
                 "data.text_column": "sentence1", "data.pair_column": "sentence2"}
    config = config_lib.load_config_file(ROOT / "configs" / "tiny.py", **overrides)
    with pytest.raises(DataError, match=r"rte\[test\]: no labels .*test_split=validation"):
        training.load_splits(config)
    with pytest.raises(DataError, match=r"rte\[train\]: missing column\(s\) \['text'\]; it has "):
        data_lib.load_hub_dataset(str(tmp_path / "rte"), "train", text_column="text")
    with pytest.raises(DataError, match=r"blank\[train\] row 1: empty or missing 'sentence1'"):
        data_lib.load_hub_dataset(str(tmp_path / "blank"), "train", text_column="sentence1")
    config = config_lib.load_config_file(ROOT / "configs" / "tiny.py", **overrides,
                                         **{"data.test_split": "validation",
                                            "data.validation_split": ""})
    splits = training.load_splits(config)
    assert splits.label_names == ["entailment", "not_entailment"]
    assert splits.test.texts[0] == "validation premise 0" and splits.test.pairs[0] == "hypothesis 0"
    assert splits.test.labels.tolist() == [1, 0, 0]
    assert len(splits.train) + len(splits.validation) == 20 and splits.validation.pairs is not None


@pytest.mark.parametrize("name,content,message", [
    ("a.csv", "text,lab\nx,1\n", "a.csv:1: missing column"),
    ("e.txt", "x\n", "unsupported file type"),
])
def test_table_file_errors(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        data_lib.read_table(tmp_path / name, label_names=["a", "b"])


def fake_encoded(n=10, max_len=32):
    lengths = np.arange(n) % max_len + 2
    mask = (np.arange(max_len)[None] < lengths[:, None]).astype(np.int32)
    return data_lib.Encoded(mask * 7, mask, np.zeros_like(mask), np.arange(n) % 3, lengths)


def test_bucket_for_scalars_and_arrays():
    # the smallest bucket that holds a length, the largest for longer ones (callers widen), in
    # any order of buckets; an array of lengths gives the same buckets row by row
    buckets = (32, 8, 16)
    lengths = np.array([0, 1, 8, 9, 16, 17, 32, 33, 500])
    expected = [8, 8, 8, 16, 16, 32, 32, 32, 32]
    assert [data_lib.bucket_for(int(n), buckets) for n in lengths] == expected
    assert all(type(data_lib.bucket_for(int(n), buckets)) is int for n in lengths)
    np.testing.assert_array_equal(data_lib.bucket_for(lengths, buckets), expected)


def test_train_batches_fixed_shape_buckets_and_padding():
    enc = fake_encoded(10)
    batches = list(data_lib.train_batches(enc, 4, seed=0, epoch=0, buckets=(8, 16, 32)))
    assert [b["input_ids"].shape[0] for b in batches] == [4, 4, 4]
    assert batches[-1]["weight"].tolist() == [1, 1, 0, 0]
    assert batches[-1]["attention_mask"][2:].sum() == 0
    seen = np.concatenate([b["index"][b["weight"] > 0] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    for b in batches:
        assert b["input_ids"].shape[1] == data_lib.bucket_for(int(enc.lengths[b["index"]].max()), (8, 16, 32))
    resumed = list(data_lib.train_batches(enc, 4, seed=0, epoch=0, buckets=(8, 16, 32), start=1))
    np.testing.assert_array_equal(resumed[0]["index"], batches[1]["index"])
    other = next(data_lib.train_batches(enc, 4, seed=0, epoch=1, buckets=(8, 16, 32)))
    assert not np.array_equal(other["index"], batches[0]["index"])


def test_length_grouped_batches():
    """Every row once per epoch, batches of similar length, a pure function of (seed, epoch) so a
    resumed epoch continues with the same batches; off, the plain shuffle."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 64, size=203)
    plain = data_lib.epoch_batches(lengths, 16, seed=0, epoch=2)
    assert [b.tolist() for b in plain] == [b.tolist() for b in data_lib.epoch_batches(
        lengths, 16, seed=0, epoch=2, group_by_length=0)]
    grouped = data_lib.epoch_batches(lengths, 16, seed=0, epoch=2, group_by_length=4)
    assert len(grouped) == len(plain) == 13 and sorted(map(len, grouped))[1:] == [16] * 12
    assert sorted(np.concatenate(grouped).tolist()) == list(range(203))
    # rows of a batch come from one group of 4 x 16 shuffled rows, sorted: spans are narrow
    spread = lambda batches: np.mean([np.ptp(lengths[b]) for b in batches])
    assert spread(grouped) < 0.5 * spread(plain)
    again = data_lib.epoch_batches(lengths, 16, seed=0, epoch=2, group_by_length=4)
    assert all(np.array_equal(a, b) for a, b in zip(grouped, again))
    other = data_lib.epoch_batches(lengths, 16, seed=0, epoch=3, group_by_length=4)
    assert not all(np.array_equal(a, b) for a, b in zip(grouped, other))
    enc = fake_encoded(40)
    full = list(data_lib.train_batches(enc, 4, 0, 0, (8, 16, 32), group_by_length=3))
    resumed = list(data_lib.train_batches(enc, 4, 0, 0, (8, 16, 32), start=4, group_by_length=3))
    assert all(np.array_equal(a["index"], b["index"]) for a, b in zip(full[4:], resumed))
    assert len(resumed) == len(full) - 4


def test_eval_batches_sorted_by_length_cover_all_rows():
    enc = fake_encoded(9)
    batches = list(data_lib.eval_batches(enc, 4, (8, 16, 32)))
    rows = np.concatenate([b["index"][b["weight"] > 0] for b in batches])
    assert sorted(rows.tolist()) == list(range(9))
    assert list(enc.lengths[rows]) == sorted(enc.lengths)
