"""Device time per XLA op from a ``jax.profiler`` trace: shared by the profiling benchmarks."""

from __future__ import annotations

import collections
import contextlib
import glob
import gzip
import json
import re
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def traced_ops() -> Iterator[dict]:
    """Traces the block; afterwards the yielded dict holds ``ops`` (microseconds per HLO op) and
    ``span`` (microseconds from the first op's start to the last op's end)."""
    import jax

    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="device_trace_") as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            yield result
        [trace_file] = glob.glob(f"{folder}/**/perfetto_trace.json.gz", recursive=True)
        result["ops"], result["span"] = device_op_times(trace_file)


def device_op_times(trace_file: str) -> tuple[dict[str, float], float]:
    """Microseconds per HLO op summed over a perfetto trace's device events (the host's XLA
    threads when there is no device lane, as on CPU), and the span those events cover."""
    with gzip.open(trace_file) as handle:
        trace = json.load(handle)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {e["pid"]: e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "process_name"}
    ops = [e for e in events if e.get("ph") == "X" and "hlo_op" in e.get("args", {})]
    on_device = [e for e in ops if "/device:" in names.get(e["pid"], "")]
    ops = on_device or ops
    totals: dict[str, float] = collections.defaultdict(float)
    for e in ops:
        totals[e["args"]["hlo_op"]] += e["dur"]
    span = max(e["ts"] + e["dur"] for e in ops) - min(e["ts"] for e in ops) if ops else 0.0
    return dict(totals), span


def hlo_definitions(hlo_text: str) -> dict[str, str]:
    """``name -> what it is`` from compiled HLO text: the op and, for fusions and custom calls,
    their kind or target (a cuBLAS gemm, cuDNN attention, a loop or input fusion) and, for cuBLAS,
    the epilogue fused into it (``BIAS``, ``BIAS_GELU``, ...)."""
    out = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (.+?) ([\w\-]+)\(", line)
        if not match:
            continue
        name, shape, op = match.groups()
        details = [d.group(1) for d in (re.search(r'(kind=\w+|custom_call_target="[^"]+")', line),
                                        re.search(r'"epilogue":"(\w+)"', line)) if d]
        out[name] = " ".join([f"{op} {shape[:60]}"] + details)
    return out
