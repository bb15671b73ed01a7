"""infer.py streams: every row comes back, in order, and resident memory stays flat.

Runs bench/streaming.py (the 1,000,000-line measurement in docs/benchmarks.md) at a test size.
Memory is compared between 40% and 90% of the rows: before that the first chunks compile the
engine's programs (one per batch size, length bucket and queue size, a bounded set), and the peak
also includes the process winding down, both of which vary by tens of MB from run to run. A
leak of even 0.4 KB per row would add more than the 10 MB allowed over those 30,000 rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_resident_memory_flat_over_the_stream(trained, tmp_path):
    workdir, _ = trained
    out = tmp_path / "streaming.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "streaming.py"), "--checkpoint",
                          str(workdir), "--lines", "60000", "--chunk", "2048",
                          "--output", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    (result,) = json.loads(out.read_text())["runs"]
    assert result["rows_out"] == result["lines"] and result["in_order"]
    assert result["empty_rows"] == len(range(0, result["lines"], 97))
    assert result["rss_growth_40_to_90_mb"] < 10, result
