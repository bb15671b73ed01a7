"""bench/attention.py at a test size: every variant runs and matches the float64 reference."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_attention_variants_match_the_reference(tmp_path):
    out = tmp_path / "attention.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "attention.py"), "--batch", "4",
                          "--seq", "16", "--heads", "2", "--head_dim", "8", "--iters", "2",
                          "--reps", "1", "--output", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    results = {row["attention"]: row for row in json.loads(out.read_text())["results"]}
    # the CPU runs the model's XLA attention, jax's key-length path and the Pallas kernel
    # interpreted (cuDNN needs a GPU)
    assert {"model: xla", "model: pallas", "jax xla path, key lengths"} <= set(results)
    for row in results.values():
        assert "failed" not in row, row
        assert row["relative_error"] < 1e-5, row
        assert row["ms_per_call"] > 0 and row["gb_per_s"] > 0
        assert row["attention"] in run.stdout
