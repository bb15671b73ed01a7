"""End to end, texts in and rows out: where ``Predictor.stream`` spends its time, and what
overlapping the tokeniser with the model buys.

  python bench/pipeline.py --checkpoint runs/demo --texts 65536

In one process, on the same texts (``elbert_jax.demo`` sentences, mixed lengths; or the lines of
``--input``), each stage alone and the whole stream, best of ``--reps``:
- tokenise: transformers' ``__call__`` (what ``Tokenizer`` called before it drove the Rust backend
  itself) and ``Tokenizer``, both truncating at the checkpoint's max_length;
- the engine alone on pre-tokenised chunks;
- ``Predictor.stream`` with its rows written as JSON lines (to /dev/null), as infer.py does, with
  ``overlap=False`` (tokenise, run, write, chunk after chunk) and ``overlap=True`` (threads
  tokenise the chunk after next and run the next while this one's rows are written).
The stream cannot beat its slowest stage, so ``bound`` is min(tokenise, engine) texts/s and
``overlap_gain`` the overlapped stream against the sequential one.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

flags.DEFINE_string("checkpoint", str(ROOT / "runs" / "demo"),
                    "Workdir written by train.py, or a transformers classifier (folder or hub id).")
flags.DEFINE_string("input", None, "A .txt of texts, one per line (default: demo sentences).")
flags.DEFINE_integer("texts", 65536, "How many texts (the input's lines repeat if fewer).")
flags.DEFINE_integer("chunk", 8192, "Texts per chunk (infer.py's --chunk).")
flags.DEFINE_integer("batch_size", 64, "Engine batch size (infer.py's --batch_size).")
flags.DEFINE_string("engine", "refill", "Engine.")
flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "Where to run the model.")
flags.DEFINE_string("dtype", None, "Serving dtype (default: the checkpoint's).")
flags.DEFINE_integer("reps", 3, "Repetitions of each measurement; the best is reported.")
flags.DEFINE_string("output", None, "Also write the results as JSON here.")
FLAGS = flags.FLAGS


def load_texts() -> list[str]:
    if FLAGS.input:
        pool = Path(FLAGS.input).read_text(encoding="utf-8").splitlines()
    else:
        from elbert_jax import demo

        pool = demo.make_sentences(2000, seed=1).texts
    return [" ".join(pool[i % len(pool):i % len(pool) + 1 + i % 3]) for i in range(FLAGS.texts)]


def best_rate(run, count: int) -> float:
    """Texts per second of the fastest of ``--reps`` calls of ``run``."""
    seconds = []
    for _ in range(FLAGS.reps):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return round(count / min(seconds), 1)


def main(argv: list[str]) -> None:
    del argv
    import jax

    jax.config.update("jax_platforms", FLAGS.device)
    from elbert_jax.predict import Predictor, write_rows

    predictor = Predictor.load(FLAGS.checkpoint, engine=FLAGS.engine,
                                       batch_size=FLAGS.batch_size, dtype=FLAGS.dtype)
    texts = load_texts()
    chunks = [texts[i:i + FLAGS.chunk] for i in range(0, len(texts), FLAGS.chunk)]
    hf, length = predictor.tokenizer.hf, predictor.max_length
    encoded = [predictor.encode(chunk) for chunk in chunks]
    for enc in encoded:  # compiles every program the engine needs on these texts
        predictor.run_encoded(enc)
    stream_rows: dict[bool, list] = {}

    def stream(overlap: bool) -> None:  # as infer.py: every row written as JSON (to /dev/null)
        with open(os.devnull, "w", encoding="utf-8") as sink:
            stream_rows[overlap] = list(write_rows(predictor.stream(
                iter(texts), chunk=FLAGS.chunk, overlap=overlap), sink))

    rates = {
        "tokenize_transformers_call": best_rate(
            lambda: [hf(chunk, truncation=True, max_length=length) for chunk in chunks], len(texts)),
        "tokenize": best_rate(lambda: [predictor.encode(chunk) for chunk in chunks], len(texts)),
        "engine": best_rate(lambda: [predictor.run_encoded(enc) for enc in encoded],
                            len(texts)),
        "stream_sequential": best_rate(lambda: stream(False), len(texts)),
        "stream_overlapped": best_rate(lambda: stream(True), len(texts)),
    }
    if stream_rows[False] != stream_rows[True] or len(stream_rows[True]) != len(texts):
        raise SystemExit("the overlapped stream's rows differ from the sequential stream's")
    result = {
        "checkpoint": FLAGS.checkpoint, "texts": len(texts), "chunk": FLAGS.chunk,
        "engine": FLAGS.engine, "batch_size": FLAGS.batch_size, "device": str(jax.devices()[0]),
        "host": platform.node(), "texts_per_s": rates,
        "bound": min(rates["tokenize"], rates["engine"]),
        "tokenizer_gain": round(rates["tokenize"] / rates["tokenize_transformers_call"], 2),
        "overlap_gain": round(rates["stream_overlapped"] / rates["stream_sequential"], 2),
        "rows_equal": True,
    }
    print(json.dumps(result, indent=1))
    if FLAGS.output:
        Path(FLAGS.output).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
