"""Constant-memory streaming: infer.py over generated inputs of growing length, peak memory each.

  python bench/streaming.py --checkpoint runs/demo --lines 10000,100000,1000000

For each size it writes a .txt of financial sentences (``elbert_jax.demo`` templates, mixed
lengths, with empty lines), runs ``infer.py --input`` in a fresh process, reads its JSONL from a
pipe (checking one row per line, ids in order) and reports the child's peak resident memory
(``wait4``) plus its resident memory at every tenth of the rows. Flat means the peak does not grow
with the input and resident memory does not climb between 40% and 90% of the rows (the first
chunks compile the engine's bounded set of programs; the end of a run adds the exit path).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_input(path: Path, lines: int) -> None:
    from elbert_jax import demo

    pool = demo.make_sentences(2000, seed=1).texts
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(lines):
            handle.write(("" if i % 97 == 0 else " ".join(pool[i % 2000:i % 2000 + 1 + i % 3]))
                         + "\n")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(checkpoint: str, path: Path, lines: int, extra: list[str]) -> dict:
    command = [sys.executable, str(ROOT / "infer.py"), "--checkpoint", checkpoint, "--input",
               str(path), *extra]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    samples, rows, in_order = [], 0, True
    for line in proc.stdout:
        if json.loads(line)["id"] != rows:
            in_order = False
        rows += 1
        if rows % max(lines // 10, 1) == 0:
            samples.append(round(rss_mb(proc.pid), 1))
    stderr = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"infer.py failed ({proc.returncode}): {stderr[-2000:]}")
    summary = json.loads(stderr.strip().splitlines()[-1])
    return {"lines": lines, "rows_out": rows, "in_order": in_order,
            "seconds": round(time.perf_counter() - started, 2),
            "texts_per_s": summary["texts_per_s"], "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "rss_mb_at_tenths": samples, "empty_rows": summary["empty"],
            # steady state: after the engine's programs are compiled, before the process winds down
            "rss_growth_40_to_90_mb": round(samples[8] - samples[3], 1) if len(samples) >= 9 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="runs/demo", help="A train.py workdir.")
    parser.add_argument("--lines", default="10000,100000,1000000", help="Input sizes.")
    parser.add_argument("--engine", default="refill")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8192, help="infer.py --chunk.")
    parser.add_argument("--output", help="Also write the results here (JSON).")
    args = parser.parse_args()
    sizes = [int(n) for n in args.lines.split(",")]
    extra = ["--engine", args.engine, "--batch_size", str(args.batch_size), "--chunk", str(args.chunk)]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for lines in sizes:
            path = Path(folder) / f"in_{lines}.txt"
            write_input(path, lines)
            result = measure(args.checkpoint, path, lines, extra)
            path.unlink()
            results.append(result)
            print(json.dumps(result), flush=True)
    first, last = results[0], results[-1]
    report = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "engine": args.engine,
              "batch_size": args.batch_size, "chunk": args.chunk, "checkpoint": args.checkpoint,
              "runs": results,
              "peak_growth_mb": round(last["peak_rss_mb"] - first["peak_rss_mb"], 1),
              "lines_ratio": last["lines"] / first["lines"]}
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
