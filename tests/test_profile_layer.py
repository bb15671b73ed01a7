"""bench/profile_layer.py at a test size: the trace is read and its ops are named from the HLO."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("engine,rows", [("full", 2), ("refill", 8)])
def test_profile_names_the_device_ops(tmp_path, engine, rows):
    out = tmp_path / "profile.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "profile_layer.py"), "--batch", "2",
                          "--seq", "16", "--layers", "2", "--reps", "1", "--engine", engine,
                          "--mean_depth", "1.5", "--queue_batches", "4", "--output", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    [ours] = json.loads(out.read_text())
    assert ours["side"] == f"elbert_jax {engine}" and ours["rows_per_call"] == rows and ours["ops"]
    if engine == "refill":  # the loop's own ops are there besides the layer's
        assert any(op["what"].startswith(("while", "conditional")) for op in ours["ops"]), ours["ops"]
    times = [op["ms_per_call"] for op in ours["ops"]]
    assert all(t > 0 for t in times)
    assert times == sorted(times, reverse=True)
    assert abs(sum(times) - ours["ms_per_call_ops"]) < 1e-6 * max(1.0, sum(times))
    assert all(op["what"] != "?" for op in ours["ops"]), [op for op in ours["ops"] if op["what"] == "?"]
    assert "elbert_jax" in run.stdout and ours["ops"][0]["op"] in run.stdout


def test_hlo_definitions_name_the_cublas_epilogue():
    # what the GPU profile reads to tell whether XLA fused bias and GELU into a cuBLAS call
    sys.path.insert(0, str(ROOT / "bench"))
    from device_trace import hlo_definitions

    text = """
  %custom-call.0 = (bf16[65536,3072]{1,0}, s8[33554432]{0}) custom-call(bf16[65536,768]{1,0} %p), custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{"alpha_real":1,"epilogue":"BIAS_GELU"}}
  ROOT %loop_add_fusion = bf16[1024,64,768]{2,1,0} fusion(bf16[1024,64,768]{2,1,0} %x), kind=kLoop, calls=%f
"""
    found = hlo_definitions(text)
    assert found["custom-call.0"].endswith('custom_call_target="__cublas$lt$matmul" BIAS_GELU')
    assert found["loop_add_fusion"] == "fusion bf16[1024,64,768]{2,1,0} kind=kLoop"
