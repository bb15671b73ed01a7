"""bench/fastest.py: the setting the GPU script runs through the engine table is the fastest one."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def result(tree: str, flags: str, rows: dict[str, float]) -> dict:
    # the shape bench/engines.py writes: the first variant's rows are named "full"
    return {"setting": {"tree": tree, "xla_flags": flags, "variants": ["xla", "cudnn"]},
            "results": [{"batch": batch, "engine": engine, "texts_per_s": speed}
                        for (batch, engine), speed in rows.items()]}


def test_fastest_prints_the_winning_tree_flags_and_kernel(tmp_path):
    files = {
        "old.json": result("/t/old", "--a", {(1024, "full"): 100.0, (1024, "full [cudnn]"): 110.0}),
        "new.json": result("/t/new", "--a --b=false", {
            (1024, "full"): 120.0, (1024, "full [cudnn fused qkv]"): 130.0,
            (64, "full"): 999.0, (1024, "transformers torch.compile"): 500.0}),
    }
    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "fastest.py"), "--batch", "1024",
                          *sorted(str(p) for p in tmp_path.glob("*.json"))],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    chosen = dict(part.split("=", 1) for part in shlex.split(run.stdout))
    # batch 64 and the transformers peer do not compete; the fused-QKV cuDNN row wins
    assert chosen == {"TREE": "/t/new", "XLA_FLAGS": "--a --b=false", "ATTENTION": "cudnn",
                      "FUSE_QKV": "true"}
    assert run.stderr.index("130.0") < run.stderr.index("120.0") < run.stderr.index("110.0")


def test_fastest_fails_without_a_result_at_that_batch(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(result("/t", "", {(64, "full"): 1.0})))
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "fastest.py"), "--batch", "1024",
                          str(tmp_path / "a.json")], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "no full-depth result at batch 1024" in run.stderr
