"""The fastest full-depth setting among bench/engines.py result files, as shell assignments.

bench/h100.sh runs the same full-depth pass under several code trees and XLA flag settings, each
a JSON file whose ``setting`` names them, and lets the measurement pick what the engine table runs.

COMMAND: python bench/fastest.py --batch 1024 runs/ab_*.json   # prints TREE=... XLA_FLAGS=... ATTENTION=...
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from absl import app, flags

flags.DEFINE_integer("batch", 1024, "Batch size whose full-depth texts/s decides.")
FLAGS = flags.FLAGS


def candidates(paths: list[str], batch: int) -> list[dict]:
    """One row per (file, variant) with its full-depth texts/s at ``batch``."""
    rows = []
    for path in paths:
        result = json.loads(Path(path).read_text())
        setting = result["setting"]
        variants = setting.get("variants", setting.get("attention", ["xla"]))
        for r in result["results"]:
            if r["batch"] != batch or not r["engine"].startswith("full"):
                continue
            label = r["engine"][len("full"):].strip(" []") or variants[0]
            rows.append({"file": path, "tree": setting.get("tree", "."),
                         "xla_flags": setting.get("xla_flags", ""), "variant": label,
                         "texts_per_s": r["texts_per_s"]})
    return sorted(rows, key=lambda row: -row["texts_per_s"])


def main(argv: list[str]) -> None:
    rows = candidates(argv[1:], FLAGS.batch)
    if not rows:
        sys.exit(f"no full-depth result at batch {FLAGS.batch} in {argv[1:]}")
    for row in rows:
        print(f"{row['texts_per_s']:10.1f} texts/s  {row['tree']:<8} {row['variant']:<20} "
              f"{row['xla_flags']}", file=sys.stderr)
    best = rows[0]
    attention, _, fused = best["variant"].partition(" ")
    print(f"TREE={shlex.quote(best['tree'])} XLA_FLAGS={shlex.quote(best['xla_flags'])} "
          f"ATTENTION={attention} FUSE_QKV={'true' if fused else 'false'}")


if __name__ == "__main__":
    app.run(main)
