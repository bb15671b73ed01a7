"""Attention kernels at the engines' shape: what a layer's attention could cost.

The H200 profile of the refill loop (docs/benchmarks.md, 2026-11-28) put cuDNN's attention at
0.39 ms per layer call on [1024, 12, 64, 64], about 4x its memory floor, and 19% of the loop's
device time. This times, in one process and on the same random right-padded rows, the model's
attention kernels (`elbert_jax.model.attend`: `EncoderConfig.attention`): `cudnn` (its boolean
mask becomes a bias tensor) against the candidates `cudnn_lengths` (the mask as key lengths) and
`pallas` (Pallas' Triton flash attention, the mask as segment ids), and `xla`; then
`jax.nn.dot_product_attention`'s own XLA path and torch's `scaled_dot_product_attention`
(whichever back end torch picks). Every output is checked against a float64 reference on the
host, over the valid query rows.

COMMAND (GPU): python bench/attention.py --device gpu
COMMAND (CPU smoke test, seconds): python bench/attention.py --batch 4 --seq 16 --heads 2 \
    --head_dim 8 --iters 2 --reps 1
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "Where to run.")
flags.DEFINE_integer("batch", 1024, "Rows.")
flags.DEFINE_integer("seq", 64, "Sequence length.")
flags.DEFINE_integer("heads", 12, "Attention heads.")
flags.DEFINE_integer("head_dim", 64, "Size of a head.")
flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "Inputs' dtype (default: bfloat16 on "
                  "the GPU, float32 on the CPU).")
flags.DEFINE_integer("iters", 50, "Calls per timed pass.")
flags.DEFINE_integer("reps", 5, "Timed passes (median reported).")
flags.DEFINE_boolean("torch", True, "Also time torch's scaled_dot_product_attention if torch is "
                     "installed.")
flags.DEFINE_string("output", None, "Also write the results as JSON here.")
FLAGS = flags.FLAGS


def inputs(seed: int = 0):
    """q, k, v [B, S, N, D] (float32 numpy) and right-padded lengths in [S/4, S]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    shape = (FLAGS.batch, FLAGS.seq, FLAGS.heads, FLAGS.head_dim)
    q, k, v = (rng.standard_normal(shape, np.float32) for _ in range(3))
    lengths = rng.integers(max(FLAGS.seq // 4, 1), FLAGS.seq + 1, FLAGS.batch).astype(np.int32)
    return q, k, v, lengths


def reference(q, k, v, lengths):
    """float64 softmax attention over the first ``lengths`` keys of every row."""
    import numpy as np

    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    keep = np.arange(q.shape[1])[None, :] < lengths[:, None]
    scores = np.where(keep[:, None, None, :], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", probs, v)


def median_ms(call: Callable[[], object], sync: Callable[[object], None]) -> float:
    sync(call())  # compile and warm up
    times = []
    for _ in range(FLAGS.reps):
        start = time.perf_counter()
        for _ in range(FLAGS.iters - 1):
            call()
        sync(call())
        times.append((time.perf_counter() - start) / FLAGS.iters)
    return 1e3 * statistics.median(times)


def jax_variants(q, k, v, lengths) -> list[tuple[str, Callable]]:
    import jax
    import jax.numpy as jnp

    from elbert_jax.model import attend

    gpu = FLAGS.device == "gpu"
    # the model's kernels (EncoderConfig.attention); cuDNN's need a GPU, Pallas' is interpreted
    # off it
    kernels = ("cudnn", "cudnn_lengths", "xla", "pallas") if gpu else ("xla", "pallas")
    variants = [(f"model: {kernel}", lambda q, k, v, m, n, kernel=kernel: attend(q, k, v, m, kernel))
                for kernel in kernels]
    variants.append(("jax xla path, key lengths", lambda q, k, v, m, n: jax.nn.dot_product_attention(
        q, k, v, key_value_seq_lengths=n, implementation="xla")))
    dtype = jnp.dtype(FLAGS.dtype)
    device = jax.devices("gpu" if gpu else "cpu")[0]
    args = [jax.device_put(jnp.asarray(x, dtype), device) for x in (q, k, v)]
    mask = jnp.arange(FLAGS.seq)[None, :] < jnp.asarray(lengths)[:, None]
    args += [jax.device_put(mask[:, None, None, :], device), jax.device_put(lengths, device)]
    return [(name, (lambda fn=jax.jit(fn): fn(*args)), jax.block_until_ready)
            for name, fn in variants]


def torch_variants(q, k, v, lengths) -> list[tuple[str, Callable]]:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return []
    device = "cuda" if FLAGS.device == "gpu" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        return []
    dtype = getattr(torch, FLAGS.dtype)
    # torch's layout [B, N, S, D]; the transposes stay outside the timed call (the peer's model
    # makes them contiguous before its attention too)
    q_t, k_t, v_t = (torch.from_numpy(x).to(device, dtype).transpose(1, 2).contiguous()
                     for x in (q, k, v))
    keep = (torch.arange(FLAGS.seq)[None, :] < torch.from_numpy(lengths)[:, None]).to(device)
    mask = keep[:, None, None, :]

    def call():
        with torch.inference_mode():
            return F.scaled_dot_product_attention(q_t, k_t, v_t, attn_mask=mask).transpose(1, 2)

    def sync(_):
        if device == "cuda":
            torch.cuda.synchronize()

    return [("torch sdpa (boolean mask)", call, sync)]


def to_numpy(out):
    import numpy as np

    if hasattr(out, "detach"):  # torch
        return out.detach().float().cpu().numpy()
    return np.asarray(out, np.float32)


def main(argv):
    del argv
    import numpy as np

    FLAGS.dtype = FLAGS.dtype or ("bfloat16" if FLAGS.device == "gpu" else "float32")
    if FLAGS.device == "cpu":
        import jax

        jax.config.update("jax_platforms", "cpu")
    q, k, v, lengths = inputs()
    want = reference(q, k, v, lengths)
    valid = np.arange(FLAGS.seq)[None, :] < lengths[:, None]  # [B, S] query rows that count
    variants = jax_variants(q, k, v, lengths)
    if FLAGS.torch:
        variants += torch_variants(q, k, v, lengths)
    item = 2 if FLAGS.dtype == "bfloat16" else 4
    moved = 4 * q.size * item  # q, k and v read once, the context written once
    flops = 4 * FLAGS.batch * FLAGS.heads * FLAGS.seq ** 2 * FLAGS.head_dim
    results = []
    print(f"{'attention':32s} {'ms/call':>9s} {'GB/s':>8s} {'TFLOP/s':>8s} {'rel. error':>10s}")
    for name, call, sync in variants:
        try:  # a kernel the device or library refuses costs its row, not the other rows
            got = to_numpy(call())
            ms = median_ms(call, sync)
        except Exception as err:  # noqa: BLE001 - reported and recorded
            results.append({"attention": name, "failed": f"{type(err).__name__}: {err}"[:500]})
            print(f"{name:32s} failed: {results[-1]['failed'][:200]}")
            continue
        # valid query rows only: what a padded query sees is never read (the Pallas kernel lets
        # it attend to the other padding, the rest to the valid keys)
        error = float(np.linalg.norm((got - want)[valid]) / np.linalg.norm(want[valid]))
        results.append({"attention": name, "ms_per_call": ms, "gb_per_s": moved / ms / 1e6,
                        "tflop_per_s": flops / ms / 1e9, "relative_error": error})
        print(f"{name:32s} {ms:9.4f} {moved / ms / 1e6:8.1f} {flops / ms / 1e9:8.2f} {error:10.2e}")
    setting = {key: getattr(FLAGS, key) for key in ("device", "batch", "seq", "heads", "head_dim",
                                                    "dtype", "iters", "reps")}
    if FLAGS.output:
        Path(FLAGS.output).write_text(json.dumps({"setting": setting, "results": results},
                                                 indent=1))
    return int(any("failed" in row for row in results))  # the exit status


if __name__ == "__main__":
    app.run(main)
