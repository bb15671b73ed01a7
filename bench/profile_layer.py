"""Where the time of one full-depth forward goes, ours against transformers in the same run.

The H100 run put our full depth at 1.10x transformers + torch.compile (the target is 1.2x) and a
layer at ~2.8 ms for 1024 x 64 tokens against ~1.3 ms of matrix work: this finds the rest. Ours is
traced with ``jax.profiler`` (the ``full`` engine's program: the forward and the oracle) and its
device ops are summed by HLO instruction, each shown with the start of its HLO definition (a
cuBLAS call, a loop fusion, ...); the peer is ``AlbertForSequenceClassification`` under
``torch.profiler``, summed by kernel. Both print the top ops and their share of the measured time.

`--engine masked|compact|refill` profiles an early-exit engine's program instead (the planned exit
depths of bench/engines.py, the static policy): what a loop step costs besides its layer.

COMMAND (H100, bf16): python bench/profile_layer.py --device gpu --dtype bfloat16 --batch 1024 --torch
COMMAND (H100, refill): python bench/profile_layer.py --device gpu --dtype bfloat16 --batch 1024 \
    --engine refill --attention cudnn
COMMAND (CPU smoke test, seconds): python bench/profile_layer.py --batch 4 --layers 2 --torch
"""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/device_trace.py

flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "Where to run.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_integer("batch", 1024, "Rows per call.")
flags.DEFINE_integer("seq", 64, "Sequence length.")
flags.DEFINE_integer("layers", 12, "Layers (albert-base-v2 shape otherwise).")
flags.DEFINE_string("attention", "xla", "Our attention kernel (EncoderConfig.attention).")
flags.DEFINE_boolean("fuse_qkv", False, "Our query/key/value projections as one product.")
flags.DEFINE_enum("engine", "full", ["full", "masked", "compact", "refill"], "Which program of ours.")
flags.DEFINE_float("mean_depth", 4.0, "Mean planned exit depth of the early-exit engines.")
flags.DEFINE_integer("queue_batches", 16, "refill: rows per call = batch x this.")
flags.DEFINE_integer("reps", 5, "Profiled calls after a warm-up.")
flags.DEFINE_integer("top", 25, "Ops to print per side.")
flags.DEFINE_boolean("torch", False, "Also profile transformers (torch.compile on GPU, eager on CPU).")
flags.DEFINE_string("output", None, "Also write both tables as JSON here.")
FLAGS = flags.FLAGS


def profile_ours() -> dict:
    import jax
    import numpy as np

    from elbert_jax import exits
    from elbert_jax.engines import Engine, early_exit, full_depth, halving_levels
    from elbert_jax.model import ElbertModel, EncoderConfig, init_params

    from device_trace import hlo_definitions, traced_ops
    from workload import planned_depths

    config = EncoderConfig(num_labels=3, dtype=FLAGS.dtype, attention=FLAGS.attention,
                           fuse_qkv=FLAGS.fuse_qkv, num_hidden_layers=FLAGS.layers)
    model, params = ElbertModel(config), init_params(config, 0)
    policy = exits.ExitPolicy("static")
    num_rows = FLAGS.batch * (FLAGS.queue_batches if FLAGS.engine == "refill" else 1)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, config.vocab_size, (num_rows, FLAGS.seq)).astype(np.int32)
    args = (params, ids, np.ones_like(ids), np.zeros_like(ids))
    if FLAGS.engine == "full":
        fn = functools.partial(full_depth, model, policy, False)
        args += (np.zeros(num_rows, np.float32),)
    else:  # the loop the Engine runs on one queue (what Engine.__call__ jits per bucket)
        levels = ((FLAGS.batch,) if FLAGS.engine == "masked"
                  else halving_levels(FLAGS.batch, Engine.min_batch))  # the Engine's default
        fn = functools.partial(early_exit, model, policy, levels, FLAGS.engine == "refill", False)
        plan = planned_depths(num_rows, config.num_hidden_layers, FLAGS.mean_depth)
        args += (plan.astype(np.float32), np.int32(num_rows))
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    definitions = hlo_definitions(fn.lower(*args).compile().as_text())
    with traced_ops() as result:
        for _ in range(FLAGS.reps):
            jax.block_until_ready(fn(*args))
    totals, span = result["ops"], result["span"]
    rows = [{"op": name, "what": definitions.get(name, "?"), "ms_per_call": us / FLAGS.reps / 1e3}
            for name, us in sorted(totals.items(), key=lambda kv: -kv[1])]
    return {"side": f"elbert_jax {FLAGS.engine}", "device": jax.devices()[0].device_kind,
            "rows_per_call": num_rows, "ms_per_call_ops": sum(totals.values()) / FLAGS.reps / 1e3,
            "ms_per_call_span": span / FLAGS.reps / 1e3, "ops": rows}


def profile_torch() -> dict:
    import torch
    import transformers
    from torch.profiler import ProfilerActivity, profile

    from elbert_jax.convert import config_to_hf
    from elbert_jax.model import EncoderConfig

    config = EncoderConfig(num_labels=3, num_hidden_layers=FLAGS.layers)
    dev = "cuda" if FLAGS.device == "gpu" else "cpu"
    torch.manual_seed(0)
    hf = transformers.AlbertForSequenceClassification(config_to_hf(config)).eval()
    hf = hf.to(dev, dtype=torch.bfloat16 if FLAGS.dtype == "bfloat16" else torch.float32)
    model = torch.compile(hf) if dev == "cuda" else hf
    ids = torch.randint(5, config.vocab_size, (FLAGS.batch, FLAGS.seq), device=dev)

    def call():
        with torch.inference_mode():
            model(input_ids=ids).logits.float().cpu()

    call()
    call()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(FLAGS.reps):
            call()
    if dev == "cuda":  # the kernels alone: aten ops carry their kernels' device time too
        stats = [(e.key, e.self_device_time_total) for e in prof.key_averages()
                 if e.device_type == torch.autograd.DeviceType.CUDA]
    else:  # leaf aten ops, so time is not counted twice through their callers
        stats = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()
                 if e.key.startswith("aten::")]
    rows = [{"op": k, "ms_per_call": t / FLAGS.reps / 1e3} for k, t in sorted(stats, key=lambda s: -s[1])]
    return {"side": "transformers" + (" torch.compile" if dev == "cuda" else " eager"),
            "ms_per_call_ops": sum(r["ms_per_call"] for r in rows), "ops": rows}


def print_table(result: dict) -> None:
    total = result["ms_per_call_ops"]
    rows = result.get("rows_per_call", FLAGS.batch)
    print(f"\n== {result['side']}: {total:.3f} ms of ops per call of {rows} rows, "
          f"{1e3 * total / rows:.2f} us per row (batch {FLAGS.batch}, seq {FLAGS.seq}, "
          f"{FLAGS.layers} layers, {FLAGS.dtype})")
    for row in result["ops"][:FLAGS.top]:
        share = row["ms_per_call"] / total if total else 0.0
        print(f"{row['ms_per_call']:9.4f} ms {share:6.1%}  {row['op'][:70]:70s} {row.get('what', '')}")


def main(argv):
    del argv
    if FLAGS.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    # Without CUDA graphs, so the trace shows every kernel rather than one graph launch (full
    # depth at batch 1024 ran at the same speed with and without them: docs/benchmarks.md).
    os.environ.setdefault("XLA_FLAGS", "--xla_gpu_enable_command_buffer=")
    from elbert_jax import parallel

    parallel.configure_xla()  # the rest of what infer.py runs with (cuBLAS epilogues)
    results = [profile_ours()]
    if FLAGS.torch and FLAGS.engine == "full":  # the peer has no early exit
        results.append(profile_torch())
    for result in results:
        print_table(result)
    if FLAGS.output:
        Path(FLAGS.output).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    app.run(main)
