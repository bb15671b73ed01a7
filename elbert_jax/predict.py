"""Texts in, predictions out, from a trained workdir: the FSA system behind ``infer.py``.

``Predictor`` tokenises a chunk of texts, hands the token rows to an early-exit ``Engine`` (which
sorts them by length, buckets them and returns rows in input order) and turns the results into one
dict per text. ``stream`` does this chunk by chunk, so memory stays flat over any input length;
``read_texts`` reads .txt/.csv/.tsv/.jsonl lazily; ``Summary`` collects what infer.py reports.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from elbert_jax import exits
from elbert_jax.data import DataError
from elbert_jax.engines import Engine, Results
from elbert_jax.model import ElbertModel, Params
from elbert_jax.tokenizer import Tokenizer, load_tokenizer

INPUT_FORMATS = (".txt", ".csv", ".tsv", ".jsonl")


@dataclasses.dataclass
class Predictor:
    """An exit policy and engine around a model, its tokenizer and label names."""

    model: ElbertModel
    params: Params
    tokenizer: Tokenizer
    label_names: list[str]
    policy: exits.ExitPolicy
    max_length: int = 64
    buckets: Sequence[int] = (16, 32, 64)
    engine: str = "refill"
    batch_size: int = 64

    @classmethod
    def from_workdir(cls, workdir: str | Path, engine: str = "refill", batch_size: int = 64,
                     **policy_overrides: Any) -> "Predictor":
        """The workdir's best checkpoint and exit policy; ``policy_overrides`` (``name``,
        ``threshold``, ``window``, ...) replace the policy's fields where not None."""
        from elbert_jax import training  # the trainer's stack (orbax, ml_collections) only here

        model, params, meta = training.restore_best_params(workdir)
        settings = dict(meta["exit"])
        settings["name"] = settings.pop("policy")
        settings.update({k: v for k, v in policy_overrides.items() if v is not None})
        policy = exits.ExitPolicy(**settings)
        return cls(model, params, load_tokenizer(Path(workdir) / "tokenizer"), meta["label_names"],
                   policy, meta["max_length"], meta["buckets"], engine, batch_size)

    def __post_init__(self) -> None:
        self._engines: dict[bool, Engine] = {}
        self.engine_for(False)  # validates the engine name now

    def engine_for(self, trace: bool) -> Engine:
        if trace not in self._engines:
            self._engines[trace] = Engine(self.model, self.params, self.policy, self.engine,
                                          self.batch_size, self.buckets, trace=trace)
        return self._engines[trace]

    def run(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
            trace: bool = False) -> Results:
        """The engine's ``Results`` (numpy, input order) for ``texts``."""
        enc = self.tokenizer(list(texts), pairs, max_length=self.max_length, pad_to=self.max_length)
        return self.engine_for(trace)(enc["input_ids"], enc["attention_mask"],
                                      enc["token_type_ids"])

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                trace: bool = False) -> list[dict[str, Any]]:
        """One dict per text, in order: ``label``, ``probs`` (at the exit), ``exit_layer``, and
        ``trace`` (probabilities of every layer up to the exit) if asked. A text that is empty
        or blank is still classified (as the bare special tokens) and marked ``"empty": true``."""
        texts = list(texts)
        out = self.run(texts, pairs, trace)
        rows = []
        for i, text in enumerate(texts):
            row = {"label": self.label_names[out.prediction[i]],
                   "probs": out.probs[i].astype(float).round(6).tolist(), "exit_layer": int(out.layer[i])}
            if trace:
                row["trace"] = out.trace[i, :out.layer[i]].astype(float).round(6).tolist()
            if not text.strip():
                row["empty"] = True
            rows.append(row)
        return rows

    def stream(self, texts: Iterable[str], chunk: int = 4096, trace: bool = False
               ) -> Iterator[dict[str, Any]]:
        """Predictions for an arbitrarily long iterable, in order, holding ``chunk`` texts at a time."""
        buffer: list[str] = []
        for text in texts:
            buffer.append(text)
            if len(buffer) == chunk:
                yield from self.predict(buffer, trace=trace)
                buffer = []
        if buffer:
            yield from self.predict(buffer, trace=trace)


def read_texts(path: str | Path, column: str = "text") -> Iterator[str]:
    """Texts of a .txt file (one per line) or the ``column`` of a .csv/.tsv/.jsonl file, lazily.

    Bytes that are not UTF-8 are replaced (U+FFFD), never dropped. A missing column, a JSONL line
    that is not an object, or a malformed row raises ``DataError`` naming the file and line.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in INPUT_FORMATS:
        raise DataError(f"{path}: unsupported input type {suffix!r}; use one of {INPUT_FORMATS}")
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        if suffix == ".txt":
            for line in handle:
                yield line.rstrip("\r\n")
        elif suffix == ".jsonl":
            for number, line in enumerate(handle, 1):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{number}: not JSON ({error.msg})") from None
                if not isinstance(record, dict) or column not in record:
                    raise DataError(f"{path}:{number}: expected a JSON object with a "
                                    f"{column!r} field")
                yield "" if record[column] is None else str(record[column])
        else:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise DataError(f"{path}:1: no column {column!r} in the header "
                                f"{reader.fieldnames}")
            for record in reader:
                if record[column] is None:
                    raise DataError(f"{path}:{reader.line_num}: row has no {column!r} field")
                yield record[column]


@dataclasses.dataclass
class Summary:
    """Counts, throughput and exit depths of a run, for infer.py's report on stderr."""

    num_layers: int
    count: int = 0
    layer_total: int = 0
    histogram: dict[int, int] = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, row: dict[str, Any]) -> None:
        self.count += 1
        self.layer_total += row["exit_layer"]
        self.histogram[row["exit_layer"]] = self.histogram.get(row["exit_layer"], 0) + 1

    def report(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        mean = self.layer_total / self.count if self.count else float("nan")
        return {"count": self.count, "seconds": round(seconds, 3),
                "texts_per_s": round(self.count / seconds, 1) if seconds else None,
                "mean_exit_layer": round(mean, 4),
                "computation_cost": round(mean / self.num_layers, 4),
                "exit_histogram": {str(k): self.histogram[k] for k in sorted(self.histogram)}}


def write_rows(rows: Iterable[dict[str, Any]], handle: TextIO, fmt: str = "jsonl") -> Iterator[dict]:
    """Writes each row as it comes (JSON lines, or CSV ``id,label,exit_layer,probs,trace,empty``
    with lists as JSON) and yields it on, so a caller can count and summarise the same stream."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"output format {fmt!r} is not jsonl or csv")
    fields = ["id", "label", "exit_layer", "probs", "trace", "empty"]
    writer = csv.writer(handle) if fmt == "csv" else None
    if writer:
        writer.writerow(fields)
    for row in rows:
        if writer:
            writer.writerow([json.dumps(row[f]) if isinstance(row.get(f), list) else row.get(f, "")
                             for f in fields])
        else:
            handle.write(json.dumps(row) + "\n")
        yield row
