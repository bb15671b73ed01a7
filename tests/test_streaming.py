"""infer.py streams: a 6x longer input keeps every row, in order, in the same peak memory.

Runs bench/streaming.py (the 1,000,000-line measurement in docs/benchmarks.md) at test sizes. The
first thousands of rows compile the engine's programs (one per batch size, length bucket and
queue size; a bounded set), so both sizes start past that warm-up.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_peak_memory_does_not_grow_with_input(trained, tmp_path):
    workdir, _ = trained
    out = tmp_path / "streaming.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "streaming.py"), "--checkpoint",
                          str(workdir), "--lines", "10000,60000", "--chunk", "2048",
                          "--output", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    for result in report["runs"]:
        assert result["rows_out"] == result["lines"] and result["in_order"]
        assert result["empty_rows"] == len(range(0, result["lines"], 97))
    assert report["peak_growth_mb"] < 40, report
