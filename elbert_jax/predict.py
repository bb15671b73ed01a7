"""Texts in, predictions out, from a trained workdir: the FSA system behind ``infer.py``.

``Predictor`` tokenises a chunk of texts, hands the token rows to an early-exit ``Engine`` (which
sorts them by length, buckets them and returns rows in input order) and turns the results into one
dict per text. ``stream`` does this chunk by chunk, so memory stays flat over any input length;
``read_texts`` reads .txt/.csv/.tsv/.jsonl lazily; ``Summary`` collects what infer.py reports.
A model trained on sentence pairs (``data.pair_column``, e.g. RTE) is given (text, pair) tuples:
fed single texts it would answer for the wrong input, so either mismatch is refused.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import jax
import numpy as np

from elbert_jax import exits, parallel
from elbert_jax.data import INPUT_FORMATS, DataError, csv_records, label_index
from elbert_jax.engines import Engine, Results
from elbert_jax.model import ElbertModel, Params
from elbert_jax.tokenizer import Tokenizer, load_tokenizer


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
    mesh: jax.sharding.Mesh | None = None
    # the run's data.pair_column: "" = trained on single texts, a name = on sentence pairs (every
    # call must then give pairs, e.g. infer.py reads that column); None = not known, either goes
    pair_column: str | None = None
    text_column: str = "text"  # the run's data.text_column: where infer.py looks in a table

    @classmethod
    def from_workdir(cls, workdir: str | Path, engine: str = "refill", batch_size: int = 64,
                     devices: int = 0, dtype: str | None = None, attention: str | None = None,
                     from_report: bool = False, **policy_overrides: Any) -> "Predictor":
        """The workdir's best checkpoint and exit policy; ``policy_overrides`` (``name``,
        ``threshold``, ``window``, ...) replace the policy's fields where not None.
        ``from_report``: start from the setting of the policy (``name``, or the checkpoint's) that
        ``train.py --mode report`` chose on validation under its cost budget, instead of the
        training config's (the report must be of the current best checkpoint). ``devices``:
        how many of this host's devices share the rows (0: all of them). ``dtype``: the compute
        dtype to serve in (e.g. ``bfloat16`` on a GPU for a model trained in float32);
        ``attention``: the attention kernel (``EncoderConfig.attention``; ``auto`` with
        ``bfloat16`` picks Pallas' flash attention on a GPU, the fastest on the H200,
        docs/benchmarks.md)."""
        from elbert_jax import checkpoints  # the trainer's stack (orbax, ml_collections) only here

        model, params, meta = checkpoints.restore_best_params(workdir)
        serving = _given(dtype=dtype, attention=attention)
        if serving:
            model = type(model)(model.config.replace(**serving))
        fields = {f.name for f in dataclasses.fields(exits.ExitPolicy)}
        settings = {"name" if k == "policy" else k: v for k, v in meta["exit"].items()}
        settings = {k: v for k, v in settings.items() if k in fields}  # not e.g. exit.choose_by
        if from_report:
            from elbert_jax import report

            chosen = report.validated_policy(workdir, policy_overrides.get("name") or
                                             settings["name"], meta["best_step"])
            settings = dataclasses.asdict(chosen)
        policy = exits.ExitPolicy(**settings | _given(**policy_overrides))
        text_column, pair_column = checkpoints.input_columns(workdir)
        return cls(model, params, load_tokenizer(Path(workdir) / "tokenizer"), meta["label_names"],
                   policy, meta["max_length"], meta["buckets"], engine, batch_size,
                   _local_mesh(devices), pair_column, text_column)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, engine: str = "refill",
                        batch_size: int = 64, devices: int = 0, dtype: str | None = None,
                        attention: str | None = None, max_length: int | None = None,
                        **policy_overrides: Any) -> "Predictor":
        """A transformers sequence classifier (folder or hub id, of any family ``load_pretrained``
        reads): one fine-tuned elsewhere, or exported by ``train.py --mode export``. Its one
        classifier was trained on the last layer only, so the default policy is ``static`` at
        the last layer (full depth, the fast engines' rows); an early-exit policy
        (``policy_overrides``) reads every layer through that classifier. Labels are the
        checkpoint's ``id2label``. ``max_length`` (default: the model's positions, at most 512)
        is where texts are truncated (rows marked ``"truncated"``); texts run at their own length
        bucket, so a high limit costs short texts nothing."""
        from elbert_jax.convert import load_pretrained, read_checkpoint

        checkpoint = read_checkpoint(name_or_path)  # a hub id is fetched once, tokenizer included
        model, params = load_pretrained(name_or_path, checkpoint=checkpoint, require_head=True,
                                        **_given(dtype=dtype, attention=attention))
        hf_config, _, folder = checkpoint
        config = model.config
        problem = getattr(hf_config, "problem_type", None)
        if problem in ("regression", "multi_label_classification") or config.num_labels < 2:
            raise ValueError(f"{folder}: problem_type={problem!r} with num_labels="
                             f"{config.num_labels}; only single-label classification (a softmax "
                             "over two or more labels, what every exit policy reads) is served")
        limit = min(config.max_length, 512)
        max_length = limit if max_length is None else max_length
        if not 1 <= max_length <= config.max_length:
            raise ValueError(f"max_length={max_length} must be in [1, {config.max_length}], the "
                             f"positions {folder} has")
        settings = {"name": "static", "layer": config.num_hidden_layers}
        tokenizer = load_tokenizer(folder)
        if tokenizer.vocab_size > config.vocab_size:  # JAX would clamp the ids past it in silence
            raise ValueError(f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens but the "
                             f"model's vocabulary {config.vocab_size}")
        labels = [str(hf_config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
        return cls(model, params, tokenizer, labels,
                   exits.ExitPolicy(**settings | _given(**policy_overrides)), max_length,
                   tokenizer.buckets(max_length), engine, batch_size, _local_mesh(devices))

    @classmethod
    def load(cls, checkpoint: str | Path, from_report: bool = False,
             max_length: int | None = None, **kwargs: Any) -> "Predictor":
        """``from_workdir`` for a folder train.py wrote (it holds ``model.json``), else
        ``from_pretrained`` (a transformers folder or hub id): what ``infer.py --checkpoint``
        takes. ``from_report`` needs a workdir (the report is of its validation split), and
        ``max_length`` a transformers checkpoint (a workdir serves at the length it trained at)."""
        folder = Path(checkpoint).expanduser()
        name = str(checkpoint)
        if not folder.exists() and (folder.is_absolute() or name.startswith((".", "~"))
                                    or name.count("/") > 1):  # a path, not a hub id: say so
            raise FileNotFoundError(f"{checkpoint}: no such folder (a workdir written by train.py "
                                    "with its model.json, or a transformers checkpoint)")
        if folder.is_dir() and not any((folder / f).is_file()
                                       for f in ("model.json", "config.json")):
            raise FileNotFoundError(f"{checkpoint}: neither a workdir written by train.py (no "
                                    "model.json) nor a transformers checkpoint (no config.json)")
        if (folder / "model.json").is_file():
            if max_length is not None:
                raise ValueError(f"{checkpoint}: a workdir serves at the max_length it was trained "
                                 "with; max_length is for a transformers checkpoint")
            return cls.from_workdir(checkpoint, from_report=from_report, **kwargs)
        if from_report:
            raise ValueError(f"{checkpoint}: from_report needs a workdir written by train.py (with "
                             "model.json and a report); this is read as a transformers checkpoint")
        return cls.from_pretrained(checkpoint, max_length=max_length, **kwargs)

    def __post_init__(self) -> None:
        self._engines: dict[bool, Engine] = {}
        names = [name.lower() for name in self.label_names]
        # FinBERT's sentiment score, p(positive) - p(negative), for label sets that have both
        self._polarity = ((names.index("positive"), names.index("negative"))
                          if {"positive", "negative"} <= set(names) else None)
        self.engine_for(False)  # validates the engine name now

    def engine_for(self, trace: bool) -> Engine:
        if trace not in self._engines:
            self._engines[trace] = Engine(self.model, self.params, self.policy, self.engine,
                                          self.batch_size, self.buckets, trace=trace,
                                          mesh=self.mesh)
        return self._engines[trace]

    def warm_up(self, rows: int | None = None, trace: bool = False) -> None:
        """Compiles the engine's programs for every length bucket and every call of up to
        ``rows`` texts (default ``batch_size``), so that no later call waits for compilation: a
        live feed otherwise stalls for seconds the first time a batch of a new size or length
        arrives. One engine call per bucket and power of two of rows."""
        rows = self.batch_size if rows is None else rows
        engine = self.engine_for(trace)
        sizes = sorted({1 << k for k in range(rows.bit_length())} | {rows})
        for width in sorted({min(b, self.max_length) for b in self.buckets}):
            for n in sizes:
                ids = np.ones((n, width), np.int32)
                engine(ids, ids)  # all-ones mask: every row is `width` tokens, bucket `width`

    def run(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
            trace: bool = False, thresholds: Sequence[float] | None = None) -> Results:
        """The engine's ``Results`` (numpy, input order) for ``texts``."""
        return self.run_encoded(self.encode(texts, pairs), trace, thresholds)

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None
               ) -> dict[str, np.ndarray]:
        """The token rows ``run_encoded`` takes (the tokenizer's output at the checkpoint's
        max_length): tokenise once, run many times (e.g. under several policies or thresholds)."""
        self.check_pairs(pairs is not None)
        return self.tokenizer(list(texts), pairs, max_length=self.max_length, pad_to=self.max_length)

    def check_pairs(self, paired: bool) -> None:
        """Refuses texts without pairs for a model trained on pairs, and pairs for one trained on
        single texts: either would run, and answer for an input the model never learnt."""
        if self.pair_column is None or bool(self.pair_column) == paired:
            return
        if paired:
            raise ValueError("this model was trained on single texts; it takes no sentence pairs")
        raise ValueError(f"this model was trained on sentence pairs (data.pair_column="
                         f"{self.pair_column!r}); give each text its pair (infer.py: a table's "
                         "--pair_column, or 'first<TAB>second' lines)")

    def run_encoded(self, enc: dict[str, np.ndarray], trace: bool = False,
                    thresholds: Sequence[float] | None = None) -> Results:
        """``run`` on rows that ``encode`` made."""
        return self.engine_for(trace)(enc["input_ids"], enc["attention_mask"],
                                      enc["token_type_ids"], thresholds)

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None,
                trace: bool = False, thresholds: Sequence[float] | None = None
                ) -> list[dict[str, Any]]:
        """One dict per text, in order: ``label``, ``probs`` (at the exit), ``exit_layer``, and
        ``trace`` (probabilities of every layer up to the exit) if asked; with labels named
        ``positive`` and ``negative``, ``score``: p(positive) - p(negative) at the exit, in
        [-1, 1] (FinBERT's sentiment score), a signal a trading system can threshold or
        average. A text that is empty
        or blank is still classified (as the bare special tokens) and marked ``"empty": true``;
        one longer than ``max_length`` tokens is classified on its first ``max_length`` tokens
        (as in training) and marked ``"truncated": true``. ``thresholds`` (one per text) replaces
        the policy's threshold text by text (``Engine.__call__``): a per-request trade-off.
        ``pairs``: the second sentences, for a model trained on sentence pairs (then a row is
        ``"empty"`` when both of its sentences are blank)."""
        texts = list(texts)
        pairs = None if pairs is None else list(pairs)
        enc = self.encode(texts, pairs)
        return self._rows(texts, pairs, enc, self.run_encoded(enc, trace, thresholds), trace)

    def _rows(self, texts: list[str], pairs: list[str] | None, enc: dict[str, np.ndarray],
              out: Results, trace: bool) -> list[dict[str, Any]]:
        labels = [self.label_names[k] for k in out.prediction.tolist()]
        probs = out.probs.astype(np.float64).round(6).tolist()  # whole arrays: no per-row numpy
        layers = out.layer.tolist()
        traces = out.trace.astype(np.float64).round(6) if trace else None
        scores = None
        if self._polarity is not None:
            pos, neg = self._polarity
            scores = (out.probs[:, pos].astype(np.float64) - out.probs[:, neg]).round(6).tolist()
        rows = []
        for i, text in enumerate(texts):
            row = {"label": labels[i], **({"score": scores[i]} if scores else {}),
                   "probs": probs[i], "exit_layer": layers[i]}
            if traces is not None:
                row["trace"] = traces[i, :layers[i]].tolist()
            if not text.strip() and (pairs is None or not pairs[i].strip()):
                row["empty"] = True
            if enc["truncated"][i]:
                row["truncated"] = True
            rows.append(row)
        return rows

    def stream(self, texts: Iterable[str | tuple[str, str] | BadInput], chunk: int = 4096,
               trace: bool = False, live: bool = False, overlap: bool = True
               ) -> Iterator[dict[str, Any]]:
        """Predictions for an arbitrarily long iterable, in order, holding ``chunk`` texts at a time.

        Items are texts, or (text, pair) tuples for a model trained on sentence pairs
        (``read_texts(..., pair_column=...)`` reads them).

        A ``BadInput`` item (an unreadable row of ``read_texts``) keeps its place as a row with
        ``label``, ``probs`` and ``exit_layer`` (and ``score``) None and ``error`` saying where
        and why.
        ``overlap``: a pipeline of threads: one reads and tokenises chunk k + 2 while another runs
        the model on chunk k + 1 and the caller takes chunk k's rows (up to five chunks in
        memory); without it the device waits for the host's tokeniser and the writing of rows,
        and they wait for the device.
        ``live``: for a source that pauses (a news feed on a pipe): a reader thread runs ahead of
        the model, and each batch is every text that has arrived, so a text is answered as soon
        as the model is free instead of when ``chunk`` texts have come. A live batch holds at most
        ``batch_size`` texts, the sizes ``warm_up`` compiles: a burst must not meet a program of a
        new size (a 4,000 texts/s feed of the demo model on 2 CPU cores fell to ~380 texts/s when
        its growing batches each waited for a compilation). Live batches are not overlapped: a
        batch is what has arrived when the model is free.
        """
        if live:
            batches = ((batch, self._encode_good(batch))
                       for batch in ready_batches(texts, min(chunk, self.batch_size)))
        else:
            batches = ((batch, self._encode_good(batch)) for batch in fixed_batches(texts, chunk))
            if overlap:
                batches = run_ahead(batches, 1)
        results = ((batch, enc, self._run_good(enc, trace)) for batch, enc in batches)
        if overlap and not live:
            results = run_ahead(results, 1)
        try:
            for batch, enc, out in results:
                yield from self._flush(batch, enc, out, trace)
        except SourceError as error:  # the source failed (e.g. a bad row in "error" mode): rows
            enc = self._encode_good(error.read)  # read before it still come out, then it
            yield from self._flush(error.read, enc, self._run_good(enc, trace), trace)
            raise error.__cause__ from None

    def _encode_good(self, buffer: list[str | tuple[str, str] | BadInput]
                     ) -> dict[str, np.ndarray] | None:
        good = [item for item in buffer if not isinstance(item, BadInput)]
        return self.encode(*_texts_and_pairs(good)) if good else None

    def _run_good(self, enc: dict[str, np.ndarray] | None, trace: bool) -> Results | None:
        return self.run_encoded(enc, trace) if enc is not None else None

    def _flush(self, buffer: list[str | BadInput], enc: dict[str, np.ndarray] | None,
               out: Results | None, trace: bool) -> Iterator[dict[str, Any]]:
        good = [item for item in buffer if not isinstance(item, BadInput)]
        rows = iter(self._rows(*_texts_and_pairs(good), enc, out, trace) if good else [])
        for item in buffer:
            if isinstance(item, BadInput):
                yield {"label": None, **({"score": None} if self._polarity else {}),
                       "probs": None, "exit_layer": None, "error": str(item)}
            else:
                yield next(rows)


def _given(**fields: Any) -> dict[str, Any]:
    """The fields a caller set (not None): serving and policy overrides."""
    return {k: v for k, v in fields.items() if v is not None}


def _local_mesh(devices: int) -> jax.sharding.Mesh | None:
    """A mesh over ``devices`` of this host's devices (0: all), or None for one device."""
    mesh = parallel.data_mesh(devices, local=True)
    return mesh if mesh.size > 1 else None


def _texts_and_pairs(items: list[str | tuple[str, str]]) -> tuple[list[str], list[str] | None]:
    """The texts of ``items``, and their pairs when the items are (text, pair) tuples."""
    paired = [not isinstance(item, str) for item in items]
    if not any(paired):
        return items, None
    if not all(paired):
        raise ValueError("a mix of single texts and (text, pair) tuples; give one kind")
    return [a for a, _ in items], [b for _, b in items]


class SourceError(Exception):
    """The text source raised; ``read`` holds the items of the batch read before it."""

    def __init__(self, read: list):
        super().__init__("the text source failed")
        self.read = read


def fixed_batches(items: Iterable[Any], size: int) -> Iterator[list]:
    """Consecutive batches of ``size`` items (the last one shorter)."""
    batch: list = []
    iterator = iter(items)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            break
        except Exception as error:
            raise SourceError(batch) from error
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _End(NamedTuple):
    """Put by the reader after the last item; ``error``: what the source raised, if it did."""

    error: Exception | None


def take_ready(ready: queue.Queue | queue.SimpleQueue, size: int, wait: float = 0.0) -> list:
    """The next item of ``ready`` (waiting for it), then whatever else arrives within ``wait``
    seconds, up to ``size`` items: a batch that never waits once it holds something (wait 0)."""
    batch = [ready.get()]
    deadline = time.monotonic() + wait
    while len(batch) < size:
        remaining = deadline - time.monotonic()
        try:
            batch.append(ready.get(timeout=remaining) if remaining > 0 else ready.get_nowait())
        except queue.Empty:
            break
    return batch


def _read_ahead(items: Iterable[Any], size: int) -> tuple[queue.Queue, threading.Event]:
    """A thread puts the items of ``items`` into the returned queue (at most ``size`` waiting),
    then an ``_End`` with what ``items`` raised, if it did; it stops when the event is set."""
    ready: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except Exception as error:
            put(_End(error))
            return
        put(_End(None))

    threading.Thread(target=read, name="elbert_jax-reader", daemon=True).start()
    return ready, stop


def run_ahead(items: Iterable[Any], size: int = 1) -> Iterator[Any]:
    """The items of ``items``, in order, produced by a thread up to ``size`` items ahead of the
    consumer; what ``items`` raises is raised here, after the items before it."""
    ready, stop = _read_ahead(items, size)
    try:
        while not isinstance(item := ready.get(), _End):
            yield item
        if item.error is not None:
            raise item.error
    finally:
        stop.set()


def ready_batches(items: Iterable[Any], size: int) -> Iterator[list]:
    """Batches of whatever a reader thread has fetched from ``items`` (``take_ready``): at least
    one item, at most ``size``. The reader stays at most ``size`` items ahead (memory stays flat)
    and stops when the consumer does."""
    ready, stop = _read_ahead(items, size)
    try:
        while True:
            batch = take_ready(ready, size)
            if not isinstance(batch[-1], _End):  # the reader's last item ends a batch
                yield batch
                continue
            end = batch.pop()
            if end.error is not None:
                raise SourceError(batch) from end.error
            if batch:
                yield batch
            return
    finally:
        stop.set()


class BadInput(NamedTuple):
    """An input row that holds no text to classify (e.g. a JSONL line that is not an object)."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def read_texts(path: str | Path, column: str = "text", encoding: str = "utf-8",
               bad_rows: str = "mark", pair_column: str | None = None
               ) -> Iterator[str | tuple[str, str] | BadInput]:
    """Texts of a .txt file (one per ``\\n``-ended line) or the ``column`` of a .csv/.tsv/.jsonl
    file, lazily, one item per input row.

    Bytes that do not decode are replaced (U+FFFD), never dropped; a UTF-8 BOM is ignored; ``\\r``
    before ``\\n`` is stripped, other characters (NUL, U+2028, a lone ``\\r``) stay in the text.
    A row that holds no text (a CSV row with too few or too many fields, a JSONL line that is
    blank, not JSON, not an object, or lacks ``column``) is yielded as a ``BadInput`` naming the
    file and line (``bad_rows="mark"``) or raises ``DataError`` (``"error"``). A missing column
    in a CSV header raises ``DataError`` at once; an empty file yields nothing.
    ``pair_column``: sentence pairs, as (text, pair) tuples: that column of a table; in a .txt
    file each line is ``first<TAB>second`` (``split_pairs``; the name is not used there).
    """
    if bad_rows not in ("mark", "error"):
        raise ValueError(f"bad_rows={bad_rows!r} is not mark or error")
    path, suffix, encoding = _input_file(path, encoding)

    def bad(number: int, reason: str) -> BadInput:
        if bad_rows == "error":
            raise DataError(f"{path}:{number}: {reason}")
        return BadInput(f"{path}:{number}", reason)

    columns = [column] if pair_column is None else [column, pair_column]
    newline = "" if suffix in (".csv", ".tsv") else "\n"
    with open(path, encoding=encoding, errors="replace", newline=newline) as handle:
        if suffix == ".txt":
            lines = (line.removesuffix("\n").removesuffix("\r") for line in handle)
            yield from lines if pair_column is None else split_pairs(lines, str(path), bad_rows)
        elif suffix == ".jsonl":
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    yield bad(number, "blank line (expected a JSON object)")
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    yield bad(number, f"not JSON ({error.msg})")
                    continue
                if not isinstance(record, dict) or any(c not in record for c in columns):
                    fields = (f"a {column!r} field" if pair_column is None
                              else f"{column!r} and {pair_column!r} fields")
                    yield bad(number, f"expected a JSON object with {fields}")
                    continue
                values = ["" if (v := record[c]) is None else v if isinstance(v, str)
                          else json.dumps(v) for c in columns]
                yield values[0] if pair_column is None else (values[0], values[1])
        else:
            for number, record in csv_records(handle, path, columns, suffix == ".tsv"):
                if isinstance(record, str):
                    yield bad(number, record)
                else:
                    yield record[column] if pair_column is None else (record[column],
                                                                      record[pair_column])


def _input_file(path: str | Path, encoding: str) -> tuple[Path, str, str]:
    """The path, its suffix (one of ``INPUT_FORMATS``) and the encoding to open it with (UTF-8
    ignores a BOM)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in INPUT_FORMATS:
        raise DataError(f"{path}: unsupported input type {suffix!r}; use one of {INPUT_FORMATS}")
    if encoding.replace("-", "").replace("_", "").lower() == "utf8":
        encoding = "utf-8-sig"
    return path, suffix, encoding


def read_columns(path: str | Path, columns: Sequence[str], encoding: str = "utf-8"
                 ) -> Iterator[dict[str, Any]]:
    """``columns`` of each row of a .csv/.tsv/.jsonl file, one dict per row in the order
    ``read_texts`` yields them (bad rows included), for carrying a row's own fields (an article
    id, a timestamp) into its output row. Values are as in the file (JSON types for .jsonl); a
    row without them (a bad row, a JSONL object lacking one) gets None. A CSV header without one
    of them raises ``DataError`` at once."""
    path, suffix, encoding = _input_file(path, encoding)
    if suffix == ".txt":
        raise DataError(f"{path}: a .txt file has no columns to keep; use .csv, .tsv or .jsonl")
    empty = dict.fromkeys(columns)
    with open(path, encoding=encoding, errors="replace",
              newline="\n" if suffix == ".jsonl" else "") as handle:
        if suffix == ".jsonl":
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                yield ({c: record.get(c) for c in columns} if isinstance(record, dict)
                       else empty.copy())
        else:
            for _, record in csv_records(handle, path, columns, suffix == ".tsv"):
                yield {c: record[c] for c in columns} if isinstance(record, dict) else empty.copy()


def split_pairs(lines: Iterable[str], source: str, bad_rows: str = "mark"
                ) -> Iterator[tuple[str, str] | BadInput]:
    """(first, second) of each ``first<TAB>second`` line (split at the first tab: the second
    sentence may hold more), for sentence-pair models fed lines (a .txt file, stdin, arguments).
    A line without a tab is a ``BadInput`` naming ``source`` and the line, or a ``DataError``
    with ``bad_rows="error"``."""
    for number, line in enumerate(lines, 1):
        first, tab, second = line.partition("\t")
        if tab:
            yield first, second
            continue
        reason = "no tab between the two sentences of a pair (expected first<TAB>second)"
        if bad_rows == "error":
            raise DataError(f"{source}:{number}: {reason}")
        yield BadInput(f"{source}:{number}", reason)


@dataclasses.dataclass
class Summary:
    """Counts, throughput and exit depths of a run, for infer.py's report on stderr; with
    ``scoring`` (infer.py --gold), accuracy and macro-F1 against the gold labels ``add`` gets."""

    num_layers: int
    label_names: Sequence[str] = ()
    scoring: bool = False
    count: int = 0
    errors: int = 0
    empty: int = 0
    truncated: int = 0
    layer_total: int = 0
    histogram: dict[int, int] = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.perf_counter)
    gold: list[int] = dataclasses.field(default_factory=list)  # scored rows' gold label ids
    predicted: list[int] = dataclasses.field(default_factory=list)
    scored_layers: list[int] = dataclasses.field(default_factory=list)  # their exit layers
    unscored: dict[str, int] = dataclasses.field(default_factory=dict)  # why, how many

    def add(self, row: dict[str, Any], gold: Any = None) -> None:
        """Counts ``row``; with ``scoring``, ``gold`` (a label name or id, as a file holds it)
        scores it. A row without a gold label, with one outside ``label_names`` or without a
        prediction (an error row) is counted as unscored, by reason: nothing is left out."""
        self.count += 1
        if self.scoring:
            self._score(row, gold)
        if row.get("error"):
            self.errors += 1
            return
        self.empty += bool(row.get("empty"))
        self.truncated += bool(row.get("truncated"))
        self.layer_total += row["exit_layer"]
        self.histogram[row["exit_layer"]] = self.histogram.get(row["exit_layer"], 0) + 1

    def _score(self, row: dict[str, Any], gold: Any) -> None:
        index = None if gold is None or gold == "" else label_index(gold, list(self.label_names))
        reason = ("no_gold_label" if gold is None or gold == "" else
                  "gold_label_not_a_model_label" if index is None else
                  "not_classified" if row.get("error") else None)
        if reason:
            self.unscored[reason] = self.unscored.get(reason, 0) + 1
        else:
            self.gold.append(index)
            self.predicted.append(list(self.label_names).index(row["label"]))
            self.scored_layers.append(row["exit_layer"])

    def report(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self.started
        classified = self.count - self.errors
        mean = self.layer_total / classified if classified else None  # JSON has no NaN
        out = {"count": self.count, "errors": self.errors, "empty": self.empty,
               "truncated": self.truncated,
               "seconds": round(seconds, 3),
               "texts_per_s": round(self.count / seconds, 1) if seconds else None,
               "mean_exit_layer": None if mean is None else round(mean, 4),
               "computation_cost": None if mean is None else round(mean / self.num_layers, 4),
               "exit_histogram": {str(k): self.histogram[k] for k in sorted(self.histogram)}}
        if self.scoring:
            from sklearn.metrics import f1_score

            gold, predicted = np.array(self.gold, int), np.array(self.predicted, int)
            right, layers = gold == predicted, np.array(self.scored_layers, int)
            scored = len(gold)
            out["gold"] = {"scored": scored, "unscored": dict(sorted(self.unscored.items())),
                           "accuracy": round(float(right.mean()), 5) if scored else None,
                           "macro_f1": round(float(f1_score(
                               gold, predicted, labels=range(len(self.label_names)),
                               average="macro", zero_division=0)), 5) if scored else None,
                           # how right the texts that exit at each layer are: where a policy
                           # stops too early shows as a low accuracy at a shallow layer
                           "by_exit_layer": {str(k): {"scored": int((layers == k).sum()),
                                                      "accuracy": round(float(right[layers == k]
                                                                              .mean()), 5)}
                                             for k in sorted(set(self.scored_layers))}}
        return out


OUTPUT_FIELDS = ("id", "label", "score", "exit_layer", "probs", "trace", "empty", "truncated",
                 "error")


def write_rows(rows: Iterable[dict[str, Any]], handle: TextIO, fmt: str = "jsonl",
               kept: Sequence[str] = ()) -> Iterator[dict]:
    """Writes each row as it comes (JSON lines, or CSV
    ``id,<kept>,label,score,exit_layer,probs,trace,empty,truncated,error`` with lists as JSON;
    ``kept``: input columns carried into the rows, ``read_columns``) and yields it on, so a caller
    can count and summarise the same stream."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"output format {fmt!r} is not jsonl or csv")
    clash = sorted(set(kept) & set(OUTPUT_FIELDS))
    if clash:
        raise ValueError(f"kept column(s) {clash} would overwrite output fields {OUTPUT_FIELDS}; "
                         "write them under other names (infer.py --keep COLUMN:NAME)")
    if len(set(kept)) < len(kept):
        raise ValueError(f"kept columns {list(kept)} repeat a name")
    fields = ["id", *kept, *OUTPUT_FIELDS[1:]]
    writer = csv.writer(handle) if fmt == "csv" else None
    if writer:
        writer.writerow(fields)
    for row in rows:
        if writer:
            writer.writerow([json.dumps(row[f]) if isinstance(row.get(f), (list, dict))
                             else row.get(f, "") for f in fields])
        else:
            handle.write(json.dumps(row) + "\n")
        yield row
