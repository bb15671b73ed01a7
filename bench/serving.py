"""Single requests at a given rate: latency and throughput of ``Batcher`` against no batching.

  python bench/serving.py --checkpoint runs/demo --rates 200,1000,4000 --requests 4000

Requests arrive one text at a time at Poisson-distributed instants (an open loop: the schedule
does not wait for answers, so queueing shows in the latency instead of slowing the client) and
each one's latency runs from its scheduled arrival to its answer. Two servers in the same process,
same ``Predictor``: ``Batcher`` (each batch is every request waiting, up to ``--max_batch``) and the
peer without batching, ``Batcher(max_batch=1)``: one ``predict`` call per request, what a
handler that calls the model itself does. Also each server's saturated throughput: every request
submitted at once; and ``infer.py --warm_up`` reading the same requests as a live feed on its
stdin (``--feed``). Texts: ``elbert_jax.demo`` sentences (no download), mixed lengths.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

flags.DEFINE_string("checkpoint", str(ROOT / "runs" / "demo"),
                    "Workdir written by train.py, or a transformers classifier (folder or hub id).")
flags.DEFINE_string("rates", "200,1000,4000", "Offered loads to measure (requests per second).")
flags.DEFINE_integer("requests", 4000, "Requests per measurement.")
flags.DEFINE_integer("max_batch", 64, "Batcher's largest batch (also the engine's batch size).")
flags.DEFINE_float("max_wait_ms", 0.0, "Batcher's wait for more requests after the first.")
flags.DEFINE_string("engine", "refill", "Engine of the Predictor.")
flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "Where to run.")
flags.DEFINE_string("dtype", None, "Serving dtype (default: the checkpoint's).")
flags.DEFINE_boolean("feed", True, "Also time infer.py --warm_up reading the requests as a live "
                     "feed on stdin (at the --rates).")
flags.DEFINE_string("output", None, "Also write the results as JSON here.")
FLAGS = flags.FLAGS


def arrivals(count: int, rate: float | None, seed: int = 0) -> np.ndarray:
    """Seconds after the start at which each request arrives: Poisson at ``rate`` per second
    (None: all at once)."""
    if rate is None:
        return np.zeros(count)
    return np.cumsum(np.random.default_rng(seed).exponential(1 / rate, count))


def send_on_schedule(texts: list[str], arrival: np.ndarray, start: float, send) -> None:
    for i, text in enumerate(texts):
        delay = start + arrival[i] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        send(i, text)


def load_row(server: str, rate: float | None, latency: np.ndarray, seconds: float,
             batches: int | None) -> dict:
    """One table row: latency percentiles (ms) and the achieved throughput."""
    count = len(latency)
    return {"server": server, "offered_per_s": rate, "requests": count,
            "seconds": round(seconds, 3), "served_per_s": round(count / seconds, 1),
            **{f"p{q}_ms": round(1e3 * float(np.percentile(latency, q)), 2) for q in (50, 90, 99)},
            "mean_batch": None if batches is None else round(count / max(batches, 1), 2)}


def run_load(server: str, batcher, texts: list[str], rate: float | None) -> dict:
    """Submits ``texts`` to ``batcher`` at the ``arrivals`` of ``rate``."""
    arrival = arrivals(len(texts), rate)
    latency = np.zeros(len(texts))
    done = threading.Semaphore(0)
    batches_before = batcher.batches
    start = time.perf_counter()

    def submit(i: int, text: str) -> None:
        def record(_):
            latency[i] = time.perf_counter() - start - arrival[i]
            done.release()
        batcher.submit(text).add_done_callback(record)

    send_on_schedule(texts, arrival, start, submit)
    for _ in texts:
        done.acquire()
    return load_row(server, rate, latency, time.perf_counter() - start,
                    batcher.batches - batches_before)


def feed_infer(texts: list[str], rates: list[float]) -> list[dict]:
    """``infer.py --warm_up`` reading a live feed on stdin: lines written at the ``arrivals`` of
    each rate, latency from a line's scheduled arrival to its output row."""
    command = [sys.executable, str(ROOT / "infer.py"), "--checkpoint", FLAGS.checkpoint,
               "--engine", FLAGS.engine, "--batch_size", str(FLAGS.max_batch), "--warm_up"]
    if FLAGS.dtype:
        command += ["--dtype", FLAGS.dtype]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=ROOT)

    def write(_: int, text: str) -> None:
        proc.stdin.write(text + "\n")
        proc.stdin.flush()

    write(0, "Profit rose.")  # answered once the warm-up is done
    next_id = json.loads(proc.stdout.readline())["id"] + 1
    rows = []
    for rate in rates:
        arrival = arrivals(len(texts), rate)
        latency = np.zeros(len(texts))
        start = time.perf_counter()
        writer = threading.Thread(target=send_on_schedule, args=(texts, arrival, start, write))
        writer.start()
        for i in range(len(texts)):
            row = json.loads(proc.stdout.readline())
            assert row["id"] == next_id + i, row
            latency[i] = time.perf_counter() - start - arrival[i]
        writer.join()
        next_id += len(texts)
        rows.append(load_row("infer.py stdin", rate, latency, time.perf_counter() - start, None))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    proc.stdin.close()
    proc.wait(timeout=600)
    return rows


def main(argv):
    del argv
    import jax

    from elbert_jax import demo, parallel
    from elbert_jax.predict import Predictor
    from elbert_jax.serving import Batcher

    parallel.configure_xla()
    if FLAGS.device == "cpu":
        jax.config.update("jax_platforms", "cpu")
    predictor = Predictor.load(FLAGS.checkpoint, engine=FLAGS.engine,
                                       batch_size=FLAGS.max_batch, dtype=FLAGS.dtype)
    pool = demo.make_sentences(2000, seed=1).texts
    texts = [" ".join(pool[i % 2000:i % 2000 + 1 + i % 3]) for i in range(FLAGS.requests)]
    rates = [float(r) for r in FLAGS.rates.split(",") if r]
    results = []
    for name, max_batch in (("batcher", FLAGS.max_batch), ("no batching", 1)):
        with Batcher(predictor, max_batch=max_batch, max_wait_ms=FLAGS.max_wait_ms) as batcher:
            batcher.warm_up()
            run_load(name, batcher, texts[:200], None)  # first calls of each program, unrecorded
            for rate in rates + [None]:
                row = run_load(name, batcher, texts, rate)
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    if FLAGS.feed:
        results += feed_infer(texts, rates)
    print(f"{'server':14} {'offered/s':>10} {'served/s':>9} {'p50 ms':>8} {'p90 ms':>8} "
          f"{'p99 ms':>9} {'batch':>6}")
    for r in results:
        offered = "all at once" if r["offered_per_s"] is None else f"{r['offered_per_s']:.0f}"
        batch = "" if r["mean_batch"] is None else f"{r['mean_batch']:.2f}"
        print(f"{r['server']:14} {offered:>10} {r['served_per_s']:9.1f} {r['p50_ms']:8.2f} "
              f"{r['p90_ms']:8.2f} {r['p99_ms']:9.2f} {batch:>6}")
    if FLAGS.output:
        meta = {"checkpoint": FLAGS.checkpoint, "engine": FLAGS.engine,
                "max_batch": FLAGS.max_batch, "max_wait_ms": FLAGS.max_wait_ms,
                "device": jax.devices()[0].device_kind, "machine": platform.machine(),
                "cpus": os.cpu_count()}
        Path(FLAGS.output).write_text(json.dumps({"meta": meta, "results": results}, indent=1))


if __name__ == "__main__":
    app.run(main)
