"""Labelled text data: Financial PhraseBank, CSV/TSV/JSONL files, `datasets` names; splits; batches.

Every reader either returns every row or raises an error naming the file and line. Batches have
a fixed number of rows (padding rows carry ``weight`` 0) and a length from a few buckets, so the
jitted train and eval steps compile a handful of shapes.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import json
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PHRASEBANK_LABELS = ("negative", "neutral", "positive")
PHRASEBANK_SUBSETS = ("50Agree", "66Agree", "75Agree", "AllAgree")
PHRASEBANK_HUB = ("takala/financial_phrasebank", "data/FinancialPhraseBank-v1.0.zip")


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


@dataclasses.dataclass
class TextSet:
    texts: list[str]
    labels: np.ndarray  # int32 [N]
    pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int]) -> "TextSet":
        return TextSet([self.texts[i] for i in index], self.labels[np.asarray(index, int)],
                       None if self.pairs is None else [self.pairs[i] for i in index])


@dataclasses.dataclass
class Splits:
    train: TextSet
    validation: TextSet
    test: TextSet
    label_names: list[str]
    stats: dict[str, Any]


# ---------------------------------------------------------------- Financial PhraseBank

def parse_phrasebank(lines: Sequence[str], source: str) -> TextSet:
    """``sentence@label`` lines (the label after the last ``@``); blank lines are skipped."""
    texts, labels = [], []
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        text, sep, label = line.rpartition("@")
        label = label.strip()
        if not sep or not text.strip():
            raise DataError(f"{source}:{number}: expected 'sentence@label', got {line[:80]!r}")
        if label not in PHRASEBANK_LABELS:
            raise DataError(f"{source}:{number}: label {label!r} is not one of {PHRASEBANK_LABELS}")
        texts.append(text.strip())
        labels.append(PHRASEBANK_LABELS.index(label))
    return TextSet(texts, np.array(labels, np.int32))


def read_phrasebank(path: str | Path, subset: str = "50Agree") -> TextSet:
    """``Sentences_<subset>.txt`` from a folder (searched recursively) or the original zip."""
    if subset not in PHRASEBANK_SUBSETS:
        raise ValueError(f"PhraseBank subset {subset!r} is not one of {PHRASEBANK_SUBSETS}")
    path = Path(path).expanduser()
    name = f"Sentences_{subset}.txt"
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.endswith(name) and "__MACOSX" not in m]
            if not members:
                raise FileNotFoundError(f"{path}: no {name} inside the zip")
            raw = archive.read(members[0])
        source = f"{path}!{members[0]}"
    else:
        found = sorted(path.rglob(name)) if path.is_dir() else []
        if not found:
            raise FileNotFoundError(f"{path}: no {name} found (pass the PhraseBank folder or zip)")
        raw, source = found[0].read_bytes(), str(found[0])
    return parse_phrasebank(raw.decode("latin-1").splitlines(), source)


def download_phrasebank() -> Path:
    """The original zip from the hub's ``takala/financial_phrasebank`` dataset repo."""
    from huggingface_hub import hf_hub_download

    repo, filename = PHRASEBANK_HUB
    return Path(hf_hub_download(repo, filename, repo_type="dataset"))


def deduplicate(data: TextSet) -> tuple[TextSet, dict[str, int]]:
    """Keeps the first copy of each (text, pair); drops every copy of texts whose labels disagree."""
    keys = [(t, None if data.pairs is None else data.pairs[i]) for i, t in enumerate(data.texts)]
    labels_of: dict[Any, set[int]] = defaultdict(set)
    for key, label in zip(keys, data.labels.tolist()):
        labels_of[key].add(label)
    conflicting = {k for k, ls in labels_of.items() if len(ls) > 1}
    seen, keep = set(), []
    for i, key in enumerate(keys):
        if key in conflicting or key in seen:
            continue
        seen.add(key)
        keep.append(i)
    counts = Counter(keys)
    stats = {"rows": len(data), "kept": len(keep),
             "duplicates_removed": sum(c - 1 for k, c in counts.items() if k not in conflicting),
             "conflicting_texts": len(conflicting),
             "conflicting_rows_dropped": sum(counts[k] for k in conflicting)}
    return data.subset(keep), stats


# ---------------------------------------------------------------- generic sources

def _label_index(value: Any, label_names: list[str] | None, source: str) -> int | str:
    if label_names is None:
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= int(value) < len(label_names):
            return int(value)
    elif str(value) in label_names:
        return label_names.index(str(value))
    elif str(value).strip().lstrip("-").isdigit() and 0 <= int(value) < len(label_names):
        return int(value)
    raise DataError(f"{source}: label {value!r} is not one of {label_names}")


def _to_textset(rows: list[tuple[str, Any, str | None]], label_names: list[str] | None,
                sources: list[str]) -> tuple[TextSet, list[str]]:
    raw = [_label_index(label, label_names, src) for (_, label, _), src in zip(rows, sources)]
    if label_names is None:
        label_names = sorted({str(v) for v in raw})
        raw = [label_names.index(str(v)) for v in raw]
    has_pairs = any(pair is not None for _, _, pair in rows)
    pairs = [pair or "" for _, _, pair in rows] if has_pairs else None
    return TextSet([t for t, _, _ in rows], np.array(raw, np.int32), pairs), label_names


def read_table(path: str | Path, text_column: str = "text", label_column: str = "label",
               pair_column: str | None = None, label_names: list[str] | None = None
               ) -> tuple[TextSet, list[str]]:
    """A .csv/.tsv (header row) or .jsonl file; labels as names or integer ids."""
    path = Path(path).expanduser()
    rows, sources = [], []
    suffix = path.suffix.lower()
    with open(path, encoding="utf-8", newline="") as f:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            records = ((reader.line_num, r) for r in reader)
            wanted = [c for c in (text_column, label_column, pair_column) if c]
            missing = [c for c in wanted if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}:1: missing column(s) {missing}; header has {reader.fieldnames}")
        elif suffix in (".jsonl", ".json"):
            def parse():
                for number, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except json.JSONDecodeError as err:
                            raise DataError(f"{path}:{number}: not JSON ({err.msg})") from None
                        if not isinstance(record, dict):
                            raise DataError(f"{path}:{number}: expected a JSON object")
                        yield number, record
            records = parse()
        else:
            raise DataError(f"{path}: unsupported file type {suffix!r} (.csv, .tsv, .jsonl)")
        for number, record in records:
            where = f"{path}:{number}"
            if record.get(text_column) is None or record.get(label_column) in (None, ""):
                raise DataError(f"{where}: missing {text_column!r} or {label_column!r}")
            pair = record.get(pair_column) if pair_column else None
            rows.append((str(record[text_column]), record[label_column], pair))
            sources.append(where)
    return _to_textset(rows, label_names, sources)


def load_hub_dataset(name: str, split: str, config_name: str | None = None,
                     text_column: str = "sentence", label_column: str = "label",
                     pair_column: str | None = None) -> tuple[TextSet, list[str]]:
    """A split of a `datasets` dataset (e.g. ``glue``/``sst2``); class names from its features."""
    import datasets

    ds = datasets.load_dataset(name, config_name, split=split)
    feature = ds.features.get(label_column)
    names = list(feature.names) if hasattr(feature, "names") else None
    rows = [(str(r[text_column]), r[label_column], r[pair_column] if pair_column else None)
            for r in ds]
    return _to_textset(rows, names, [f"{name}[{split}] row {i}" for i in range(len(rows))])


# ---------------------------------------------------------------- splits

def split_indices(labels: np.ndarray, seed: int, test_fraction: float = 0.2,
                  validation_fraction: float = 0.1, stratified: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FinBERT protocol: ``train_test_split(test_size=0.2, random_state=seed)``, then the same on
    train for validation; ``stratified`` keeps class proportions in each part."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    train, test = train_test_split(index, test_size=test_fraction, random_state=seed,
                                   stratify=labels if stratified else None)
    train, validation = train_test_split(train, test_size=validation_fraction, random_state=seed,
                                         stratify=labels[train] if stratified else None)
    return train, validation, test


# ---------------------------------------------------------------- batches

@dataclasses.dataclass
class Encoded:
    """Token ids padded to ``max_length`` plus true lengths; batches crop them to a bucket."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def encode(tokenizer: Any, data: TextSet, max_length: int) -> Encoded:
    enc = tokenizer(data.texts, data.pairs, max_length=max_length, pad_to=max_length)
    return Encoded(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                   data.labels.astype(np.int32), enc["attention_mask"].sum(1).astype(np.int32))


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    sizes = sorted(buckets)
    return sizes[min(bisect.bisect_left(sizes, length), len(sizes) - 1)]


def _batch(data: Encoded, rows: np.ndarray, batch_size: int, buckets: Sequence[int]) -> dict:
    width = bucket_for(int(data.lengths[rows].max()), buckets)
    pad = batch_size - len(rows)
    take = np.concatenate([rows, np.zeros(pad, rows.dtype)])
    weight = np.concatenate([np.ones(len(rows)), np.zeros(pad)]).astype(np.float32)
    return {"input_ids": data.input_ids[take, :width],
            "attention_mask": data.attention_mask[take, :width] * (weight[:, None] > 0),
            "token_type_ids": data.token_type_ids[take, :width],
            "labels": data.labels[take], "weight": weight, "index": take}


def epoch_order(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled row order of ``epoch``: a pure function of (seed, epoch), so runs resume."""
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def train_batches(data: Encoded, batch_size: int, seed: int, epoch: int,
                  buckets: Sequence[int], start: int = 0) -> Iterator[dict]:
    """Shuffled batches of one epoch from batch number ``start``; the last one is padded."""
    order = epoch_order(len(data), seed, epoch)
    for first in range(start * batch_size, len(order), batch_size):
        yield _batch(data, order[first:first + batch_size], batch_size, buckets)


def eval_batches(data: Encoded, batch_size: int, buckets: Sequence[int]) -> Iterator[dict]:
    """Batches sorted by length (less padding); ``index`` maps rows back to input order."""
    order = np.argsort(data.lengths, kind="stable")
    for first in range(0, len(order), batch_size):
        yield _batch(data, order[first:first + batch_size], batch_size, buckets)


def steps_per_epoch(num_rows: int, batch_size: int) -> int:
    return -(-num_rows // batch_size)

