"""Throughput of the early-exit engines against full depth, measured in one run (ratios count).

COMMAND (2-core CPU, a few minutes):
  python bench/engines.py --device cpu --texts 96 --batch_sizes 1,32 --torch_peer
COMMAND (H100, bf16, with the transformers peer):
  python bench/engines.py --device gpu --dtype bfloat16 --batch_sizes 1,64,1024 --texts 16384 \
      --torch_peer
COMMAND (a trained checkpoint, PhraseBank texts):
  python bench/engines.py --mode checkpoint --checkpoint runs/minilm_s0 --batch_sizes 64,256

`synthetic` mode: albert-base-v2 shape (or bert-base's, `--model_type bert`) with random weights
(no ALBERT weights exist offline), so the exits follow a planned profile: every row gets an exit
depth drawn with mean `--mean_depth` and the `static` policy with per-row thresholds exits it
there; the engines still run the real loop. Reported per batch size: texts/s of our full depth,
of each engine, the speedup over our full depth, and the engine efficiency = speedup /
(L / mean depth). `--torch_peer` adds transformers' Albert/BertForSequenceClassification at full
depth (eager, and torch.compile on GPU). `checkpoint` mode runs a trained workdir's own policy on
real texts and checks that every engine gives the full-depth rows exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/workload.py

flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "Where to run.")
flags.DEFINE_enum("mode", "synthetic", ["synthetic", "checkpoint"], "What to measure.")
flags.DEFINE_string("batch_sizes", "1,32", "Comma-separated batch sizes.")
flags.DEFINE_string("engines", "masked,compact,refill", "Engines to time besides full depth.")
flags.DEFINE_integer("texts", 128, "Texts per timed pass.")
flags.DEFINE_integer("small_batch_texts", 0, "Texts per pass for batch sizes below 64 (0 = --texts): "
                     "batch 1 runs one call per text.")
flags.DEFINE_integer("seq", 64, "Sequence length (synthetic).")
flags.DEFINE_enum("model_type", "albert", ["albert", "bert"], "Synthetic model: albert-base-v2's "
                  "shape (one shared layer) or bert-base's (12 unshared layers, where refill groups "
                  "rows by depth).")
flags.DEFINE_float("mean_depth", 4.0, "Mean planned exit depth (synthetic; L = 12).")
flags.DEFINE_enum("profile", "uniform", ["uniform", "constant"],
                  "Planned depths: uniform on [1, 2 * mean - 1], or all at the mean.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_string("attention", "xla", "Attention kernels to compare (comma-separated "
                    "EncoderConfig.attention values: xla, cudnn, cudnn_lengths, pallas, auto); the "
                    "first also runs the engines and peers.")
flags.DEFINE_string("fuse_qkv", "false", "EncoderConfig.fuse_qkv settings to compare (comma-separated "
                    "true/false), each with every --attention kernel.")
flags.DEFINE_integer("reps", 3, "Timed passes per measurement (median reported).")
flags.DEFINE_boolean("torch_peer", False, "Also time transformers' ALBERT at full depth.")
flags.DEFINE_string("torch_compile_modes", "default", "torch.compile modes of the GPU peer "
                    "(comma-separated: default, reduce-overhead, max-autotune).")
flags.DEFINE_string("checkpoint", None, "Workdir (or transformers classifier) for --mode checkpoint.")
flags.DEFINE_string("input", None, "Texts for --mode checkpoint (.txt, one per line); default: "
                    "Financial PhraseBank 50Agree from --phrasebank.")
flags.DEFINE_string("phrasebank", str(Path(__file__).resolve().parents[2] / "shared" / "data" /
                                      "financial_phrasebank" / "FinancialPhraseBank-v1.0"),
                    "FinancialPhraseBank-v1.0 folder for --mode checkpoint.")
flags.DEFINE_string("output", None, "Also write the results as JSON here.")
FLAGS = flags.FLAGS


def median_seconds(fn, reps: int) -> float:
    fn()  # compile and warm up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def variant_name(attention: str, fuse_qkv: bool) -> str:
    """How a kernel choice is named in the rows ("full [cudnn fused qkv]"); bench/fastest.py reads
    it back."""
    return attention + (" fused qkv" if fuse_qkv else "")


def report(row: dict) -> None:
    """Prints a measurement and appends it to ``--output``.partial.jsonl, so a run cut short by a
    time limit keeps what it measured."""
    print(json.dumps(row), file=sys.stderr, flush=True)
    if FLAGS.output:
        with open(FLAGS.output + ".partial.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")


def texts_for(batch: int, available: int) -> int:
    small = FLAGS.small_batch_texts if batch < 64 and FLAGS.small_batch_texts else available
    return min(available, small)


def time_engines(model, params, policy, rows, thresholds, batch_sizes, kinds, reps, suffix=""):
    """[{batch, engine, texts_per_s, mean_exit_layer}] and whether every engine matched full."""
    from elbert_jax.engines import Engine

    results, exact = [], True
    num_layers = model.config.num_hidden_layers
    for batch in batch_sizes:
        reference = None
        count = texts_for(batch, len(rows[0]))
        batch_rows = tuple(r[:count] for r in rows)
        batch_thresholds = None if thresholds is None else thresholds[:count]
        for kind in ("full",) + tuple(kinds):
            engine = Engine(model, params, policy, kind=kind, batch_size=batch,
                            buckets=(16, 32, 64, 128))
            out = {}

            def run(engine=engine, out=out):
                out["r"] = engine(*batch_rows, thresholds=batch_thresholds)

            seconds = median_seconds(run, reps)
            r = out["r"]
            if reference is None:
                reference = r
            same = bool((r.layer == reference.layer).all() and
                        (r.prediction == reference.prediction).all())
            exact &= same
            differ = {"rows_with_other_layer": int((r.layer != reference.layer).sum()),
                      "rows_with_other_label": int((r.prediction != reference.prediction).sum())}
            results.append({"batch": batch, "engine": kind + suffix, "seconds": seconds,
                            "texts": count, "texts_per_s": len(r.layer) / seconds,
                            "ms_per_call": 1e3 * seconds / -(-count // batch),
                            "mean_exit_layer": float(r.layer.mean()), "same_rows_as_full": same,
                            **differ})
            report(results[-1])
        full = results[-1 - len(kinds)]["texts_per_s"]
        for row in results[len(results) - len(kinds):]:
            row["speedup_vs_full"] = row["texts_per_s"] / full
            row["efficiency"] = row["speedup_vs_full"] / (num_layers / row["mean_exit_layer"])
    return results, exact


def torch_peer(config, batch_sizes, num_texts, seq, dtype, device, reps):
    import torch
    import transformers

    from elbert_jax.convert import config_to_hf

    torch.manual_seed(0)
    hf = transformers.AutoModelForSequenceClassification.from_config(config_to_hf(config)).eval()
    dev = "cuda" if device == "gpu" else "cpu"
    hf = hf.to(dev, dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    ids = torch.randint(5, config.vocab_size, (num_texts, seq), device=dev)
    modes = FLAGS.torch_compile_modes.split(",") if device == "gpu" else []
    rows = []
    for name, mode in [("transformers eager", None)] + [
            (f"transformers torch.compile{'' if m == 'default' else f' ({m})'}", m) for m in modes]:
        for batch in batch_sizes:
            count = texts_for(batch, num_texts)
            model = hf
            if mode is not None:
                # A fresh static-shape compilation per batch size: one compiled model called with a
                # second shape recompiles with dynamic shapes, whose kernels are slower (the first
                # H100 run did that and under-reported the peer).
                torch._dynamo.reset()
                model = torch.compile(hf, mode=mode, dynamic=False)

            def run(model=model, batch=batch, count=count):
                with torch.inference_mode():
                    for first in range(0, count, batch):
                        model(input_ids=ids[first:first + batch]).logits.float().cpu()
                if dev == "cuda":
                    torch.cuda.synchronize()

            seconds = median_seconds(run, reps)
            rows.append({"batch": batch, "engine": name, "seconds": seconds, "texts": count,
                         "texts_per_s": count / seconds,
                         "ms_per_call": 1e3 * seconds / -(-count // batch)})
            report(rows[-1])
    return rows


def synthetic():
    import jax
    import numpy as np

    from elbert_jax import exits
    from elbert_jax.model import ElbertModel, EncoderConfig, init_params

    from workload import planned_depths

    variants = [(a, f == "true") for f in FLAGS.fuse_qkv.split(",") for a in FLAGS.attention.split(",")]
    attention, fuse = variants[0]
    config = EncoderConfig(model_type=FLAGS.model_type, num_labels=3, dtype=FLAGS.dtype,
                           attention=attention, fuse_qkv=fuse,
                           **({"vocab_size": 30522, "embedding_size": None}
                              if FLAGS.model_type == "bert" else {}))
    model, params = ElbertModel(config), init_params(config, 0)  # albert-base-v2 / bert-base shape
    rng = np.random.default_rng(0)
    ids = rng.integers(5, config.vocab_size, (FLAGS.texts, FLAGS.seq)).astype(np.int32)
    mask = np.ones_like(ids)
    plan = planned_depths(FLAGS.texts, config.num_hidden_layers, FLAGS.mean_depth, FLAGS.profile)
    batch_sizes = [int(b) for b in FLAGS.batch_sizes.split(",")]
    kinds = [k for k in FLAGS.engines.split(",") if k]
    results, exact = time_engines(model, params, exits.ExitPolicy("static"),
                                  (ids, mask, np.zeros_like(ids)), plan, batch_sizes, kinds,
                                  FLAGS.reps)
    for other, other_fuse in variants[1:]:  # the same weights through another kernel choice
        variant = ElbertModel(config.replace(attention=other, fuse_qkv=other_fuse))
        label = variant_name(other, other_fuse)
        try:
            more, same = time_engines(variant, params, exits.ExitPolicy("static"),
                                      (ids, mask, np.zeros_like(ids)), plan, batch_sizes, kinds,
                                      FLAGS.reps, suffix=f" [{label}]")
        except Exception as err:  # noqa: BLE001 - report the kernel that failed, keep the rest
            print(f"{label} failed: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        results += more
        exact &= same
    for r in results:  # the planned depths are what every engine ran
        assert abs(r["mean_exit_layer"] - plan[:r["texts"]].mean()) < 1e-6, r
    if FLAGS.torch_peer:
        results += torch_peer(config, batch_sizes, FLAGS.texts, FLAGS.seq, FLAGS.dtype,
                              FLAGS.device, FLAGS.reps)
    setting = {"mode": "synthetic", "model_type": FLAGS.model_type,
               "device": str(jax.devices()[0].device_kind),
               "dtype": FLAGS.dtype, "variants": [variant_name(a, f) for a, f in variants],
               "texts": FLAGS.texts,
               "small_batch_texts": FLAGS.small_batch_texts, "seq": FLAGS.seq,
               "planned_mean_depth": float(plan.mean()), "profile": FLAGS.profile,
               "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
               "tree": str(Path(__file__).resolve().parents[1])}
    return setting, results, exact


def checkpoint():
    import jax

    from elbert_jax import data
    from elbert_jax.predict import Predictor, read_texts

    serving = {}  # the checkpoint's own dtype and kernel unless the flags are given
    if FLAGS["dtype"].present:
        serving["dtype"] = FLAGS.dtype
    if FLAGS["attention"].present:
        serving["attention"] = FLAGS.attention.split(",")[0]
    predictor = Predictor.load(FLAGS.checkpoint, **serving)
    if FLAGS.input:
        texts = list(read_texts(FLAGS.input))
    else:
        texts = data.read_phrasebank(FLAGS.phrasebank, "50Agree").texts
    texts = texts[:FLAGS.texts]
    enc = predictor.tokenizer(texts, max_length=predictor.max_length, pad_to=predictor.max_length)
    rows = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    batch_sizes = [int(b) for b in FLAGS.batch_sizes.split(",")]
    kinds = [k for k in FLAGS.engines.split(",") if k]
    results, exact = time_engines(predictor.model, predictor.params, predictor.policy, rows, None,
                                  batch_sizes, kinds, FLAGS.reps)
    setting = {"mode": "checkpoint", "checkpoint": FLAGS.checkpoint,
               "device": str(jax.devices()[0].device_kind), "texts": len(texts),
               "dtype": predictor.model.config.dtype,
               "attention": predictor.model.config.attention,
               "policy": dataclasses.asdict(predictor.policy)}
    return setting, results, exact


def main(argv):
    del argv
    if FLAGS.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    from elbert_jax import parallel

    parallel.configure_xla()  # what infer.py runs with (XLA_FLAGS set by hand take precedence)
    setting, results, exact = synthetic() if FLAGS.mode == "synthetic" else checkpoint()
    print(json.dumps(setting))
    print(f"{'batch':>6} {'engine':<30} {'texts/s':>10} {'ms/call':>8} {'mean depth':>10} "
          f"{'vs full':>8} {'efficiency':>10}")
    for r in results:
        print(f"{r['batch']:>6} {r['engine']:<30} {r['texts_per_s']:>10.1f} {r['ms_per_call']:>8.3f} "
              f"{r.get('mean_exit_layer', float('nan')):>10.2f} "
              f"{r.get('speedup_vs_full', float('nan')):>8.2f} "
              f"{r.get('efficiency', float('nan')):>10.2f}")
    peers: dict[int, float] = {}
    for r in results:
        if r["engine"].startswith("transformers"):
            peers[r["batch"]] = max(peers.get(r["batch"], 0.0), r["texts_per_s"])
    for r in results:  # against the fastest transformers variant at the same batch size
        if r["batch"] in peers and not r["engine"].startswith("transformers"):
            r["vs_transformers"] = r["texts_per_s"] / peers[r["batch"]]
            print(f"batch {r['batch']:>5} {r['engine']:<16} / fastest transformers: "
                  f"{r['vs_transformers']:.2f}x")
    print(f"every engine gave the full-depth exit layers and labels: {exact}")
    if FLAGS.output:
        Path(FLAGS.output).write_text(json.dumps({"setting": setting, "results": results,
                                                  "exact": exact}, indent=1))


if __name__ == "__main__":
    app.run(main)
