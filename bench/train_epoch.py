"""One training epoch of an albert-base-v2-shape model on Financial PhraseBank: ours vs transformers.

COMMAND (H100, bf16, both trainers in one run):
  python bench/train_epoch.py --phrasebank ../shared/data/financial_phrasebank/FinancialPhraseBank-v1.0 \
      --tokenizer ../shared/models/albert-base-v2-tokenizer --dtype bfloat16 --torch_compile \
      --output bench/results/h100_train_epoch.json
COMMAND (2-core CPU smoke run, tiny shape): add --shape tiny --max_steps 6 --dtype float32

Both trainers see the same batches: the 50Agree FinBERT-protocol train split (deduplicated, 80/20
then 10% validation, seed 0), tokenised by the ALBERT tokenizer, max_len 64, batch 32, padded to
the length buckets 16/32/64. Weights are random (no ALBERT checkpoint exists offline; the speed of
a step does not depend on them). Ours: the library's jitted train step (ELBERT's weighted loss
over all 12 exits, AdamW + warmup/decay + clipping, float32 parameters, ``--dtype`` compute).
Peer: transformers' AlbertForSequenceClassification (one exit), torch AdamW (fused), the same
schedule and clipping, float32 parameters with bf16 autocast; eager, and torch.compile when asked.
Each trainer runs two epochs; the first includes compilation, the second is the epoch time
reported, so the ratio compares steady-state training of the same shape in the same process.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/torch_peer.py, device_trace.py

flags.DEFINE_string("phrasebank", None, "FinancialPhraseBank-v1.0 folder (or zip).", required=True)
flags.DEFINE_string("tokenizer", None, "ALBERT tokenizer folder.", required=True)
flags.DEFINE_string("subset", "50Agree", "PhraseBank subset.")
flags.DEFINE_enum("shape", "base", ["base", "tiny"], "albert-base-v2 shape, or a tiny smoke shape.")
flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "Compute dtype (both trainers).")
flags.DEFINE_integer("batch_size", 32, "Rows per step.")
flags.DEFINE_string("group_by_length", "0", "Comma list of data.group_by_length values: the first "
                    "for every trainer, each further one an extra row of ours (first --attention "
                    "kernel) on batches grouped so, e.g. 0,50.")
flags.DEFINE_integer("max_steps", 0, "Steps per epoch (0 = the whole epoch; for smoke runs).")
flags.DEFINE_string("attention", "xla", "Our attention kernels to time, each a trainer row "
                    "(comma-separated EncoderConfig.attention values; auto trains with cudnn on a "
                    "GPU in bf16).")
flags.DEFINE_boolean("torch_peer", True, "Time transformers' PyTorch training too.")
flags.DEFINE_boolean("torch_compile", False, "Also time the peer under torch.compile.")
flags.DEFINE_integer("profile_steps", 0, "After timing, trace this many of our steps (the first "
                     "--attention kernel's) with "
                     "jax.profiler and print wall vs device time per step and the top device ops "
                     "(kernels inside CUDA graphs may not show: add XLA_FLAGS="
                     "--xla_gpu_enable_command_buffer= to see every one).")
flags.DEFINE_string("output", None, "Also write the results as JSON here.")
FLAGS = flags.FLAGS
TINY = dict(embedding_size=32, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=128)


def batches(encoded, buckets, epoch: int, group_by_length: int) -> list[dict]:
    from elbert_jax import data as data_lib

    out = []
    for batch in data_lib.train_batches(encoded, FLAGS.batch_size, 0, epoch, buckets,
                                        group_by_length=group_by_length):
        batch.pop("index")
        out.append(batch)
        if FLAGS.max_steps and len(out) == FLAGS.max_steps:
            break
    return out


def time_ours(config, model, params, epochs: list[list[dict]], profile: bool = False) -> dict:
    import jax

    from elbert_jax import parallel
    from elbert_jax.losses import init_weight_logits
    from elbert_jax.optim import TrainState, make_optimizer
    from elbert_jax.training import make_train_step

    tx = make_optimizer(config.train, sum(len(e) for e in epochs))
    full = {"model": params, "t": init_weight_logits(model.config.num_hidden_layers)}
    mesh = parallel.data_mesh(1)
    state = parallel.replicate(TrainState(jax.numpy.zeros((), jax.numpy.int32), full,
                                          tx.init(full)), mesh)
    step = make_train_step(model, tx, config, mesh)
    seconds, losses = [], []
    for epoch in epochs:
        start = time.perf_counter()
        for batch in epoch:
            state, out = step(state, batch)
            losses.append(out["loss"])
        jax.block_until_ready(state)
        seconds.append(time.perf_counter() - start)
    losses = [float(x) for x in losses]
    result = {"trainer": f"elbert_jax ({model.config.num_hidden_layers} exits, dyn weights, "
                         f"{model.config.attention} attention)",
              "first_epoch_s": seconds[0], "epoch_s": seconds[-1], "first_loss": losses[0],
              "last_loss": losses[-1]}
    if profile and FLAGS.profile_steps:
        result["profile"] = profile_steps(step, state, epochs[-1][:FLAGS.profile_steps])
    return result


def profile_steps(step, state, steps: list[dict]) -> dict:
    """Wall time per step against the device time its ops take: a gap is per-step host overhead
    (dispatch, transfers, loop round trips), not matrix work."""
    import jax

    from device_trace import traced_ops

    with traced_ops() as trace:
        start = time.perf_counter()
        for batch in steps:
            state, _ = step(state, batch)
        jax.block_until_ready(state)
        wall = time.perf_counter() - start
    totals, span = trace["ops"], trace["span"]
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:15]
    out = {"steps": len(steps), "wall_ms_per_step": 1e3 * wall / len(steps),
           "device_op_ms_per_step": sum(totals.values()) / len(steps) / 1e3,
           "device_span_ms_per_step": span / len(steps) / 1e3,
           "top_ops_ms_per_step": {name: us / len(steps) / 1e3 for name, us in top}}
    print(json.dumps(out, indent=1), flush=True)
    return out


def time_torch(encoder_config, t, epochs: list[list[dict]], compiled: bool) -> dict:
    import torch
    import transformers

    from elbert_jax.convert import config_to_hf
    from torch_peer import make_step

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    hf = transformers.AlbertForSequenceClassification(config_to_hf(encoder_config)).to(dev).train()
    step = make_step(hf, t, sum(len(e) for e in epochs), FLAGS.dtype == "bfloat16")
    forward = torch.compile(hf, dynamic=False) if compiled else hf

    seconds, losses = [], []
    for epoch in epochs:
        start = time.perf_counter()
        for batch in epoch:
            losses.append(step(batch, forward))
        if dev == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    name = "transformers AlbertForSequenceClassification" + (", torch.compile" if compiled else
                                                             ", eager")
    return {"trainer": name, "first_epoch_s": seconds[0], "epoch_s": seconds[-1],
            "first_loss": float(losses[0]), "last_loss": float(losses[-1])}


def main(argv):
    del argv
    import jax

    from elbert_jax import data as data_lib
    from elbert_jax import parallel
    from elbert_jax.model import ElbertModel, EncoderConfig, init_params
    from elbert_jax.tokenizer import load_tokenizer
    from elbert_jax.config import base_config
    from elbert_jax.training import load_splits

    parallel.configure_xla()  # as train.py
    config = base_config()
    config.seed = 0
    config.data.path, config.data.subset = FLAGS.phrasebank, FLAGS.subset
    config.model.dtype = FLAGS.dtype
    config.train.batch_size = FLAGS.batch_size
    splits = load_splits(config)
    tokenizer = load_tokenizer(FLAGS.tokenizer)
    encoded = data_lib.encode(tokenizer, splits.train, config.data.max_length)
    buckets = tokenizer.buckets(config.data.max_length, config.data.buckets)
    groups = [int(g) for g in FLAGS.group_by_length.split(",")]
    grouped = {g: [batches(encoded, buckets, e, g) for e in range(2)] for g in groups}
    epochs = grouped[groups[0]]
    shape = TINY if FLAGS.shape == "tiny" else {}
    encoder = EncoderConfig(vocab_size=tokenizer.vocab_size, num_labels=3, dtype=FLAGS.dtype,
                            pad_token_id=tokenizer.pad_token_id, **shape)
    rows = []
    for i, attention in enumerate(FLAGS.attention.split(",")):  # the same weights, each kernel
        model = ElbertModel(encoder.replace(attention=attention))
        rows.append(time_ours(config, model, init_params(encoder, 0), epochs, profile=i == 0))
        print(json.dumps(rows[-1]), flush=True)
    for g in groups[1:]:  # same weights and kernel, batches of similar lengths
        model = ElbertModel(encoder.replace(attention=FLAGS.attention.split(",")[0]))
        rows.append(time_ours(config, model, init_params(encoder, 0), grouped[g]))
        rows[-1]["trainer"] += f", length groups of {g} batches"
        rows[-1]["padded_tokens_per_epoch"] = sum(b["input_ids"].size for b in grouped[g][-1])
        print(json.dumps(rows[-1]), flush=True)
    ours = rows[0]
    ours["padded_tokens_per_epoch"] = sum(b["input_ids"].size for b in epochs[-1])
    if FLAGS.torch_peer:
        for compiled in (False, True) if FLAGS.torch_compile else (False,):
            rows.append(time_torch(encoder, config.train, epochs, compiled))
            print(json.dumps(rows[-1]), flush=True)
    texts = int(sum(b["weight"].sum() for b in epochs[-1]))
    setting = {"device": str(jax.devices()[0].device_kind), "dtype": FLAGS.dtype,
               "shape": FLAGS.shape, "subset": FLAGS.subset, "texts_per_epoch": texts,
               "steps_per_epoch": len(epochs[-1]), "batch_size": FLAGS.batch_size,
               "buckets": buckets, "group_by_length": groups[0]}
    print(json.dumps(setting))
    print(f"{'trainer':<80} {'epoch s':>8} {'texts/s':>9} {'first epoch s':>14} {'loss':>14}")
    for r in rows:
        r["texts_per_s"] = texts / r["epoch_s"]
        r["ours_speedup"] = r["epoch_s"] / ours["epoch_s"]
        print(f"{r['trainer']:<80} {r['epoch_s']:>8.2f} {r['texts_per_s']:>9.0f} "
              f"{r['first_epoch_s']:>14.2f} {r['first_loss']:>6.3f}->{r['last_loss']:.3f}")
    for r in rows[1:]:
        if "length groups" in r["trainer"]:
            print(f"{r['trainer']}: {1 / r['ours_speedup']:.2f}x the speed of shuffled batches, "
                  f"{r['padded_tokens_per_epoch'] / ours['padded_tokens_per_epoch']:.2f}x the "
                  f"padded tokens")
        else:
            print(f"{ours['trainer']} vs {r['trainer']}: {r['ours_speedup']:.2f}x (epoch time "
                  f"ratio)")
    if FLAGS.output:
        Path(FLAGS.output).write_text(json.dumps({"setting": setting, "results": rows}, indent=1))


if __name__ == "__main__":
    app.run(main)
