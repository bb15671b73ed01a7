"""The synthetic early-exit workload shared by the benchmarks.

No trained ALBERT weights exist offline, so a random-weight model's exits follow a plan: every
text gets an exit depth and the ``static`` policy, given those depths as per-row thresholds,
exits it there. The engines still run their real loops.
"""

from __future__ import annotations

import numpy as np


def planned_depths(num_texts: int, num_layers: int, mean: float, profile: str = "uniform",
                   seed: int = 0) -> np.ndarray:
    """[num_texts] int32 exit depths: uniform on [1, 2 * mean - 1], or all ``round(mean)``."""
    if profile == "constant":
        return np.full(num_texts, int(round(mean)), np.int32)
    high = int(round(2 * mean - 1))
    if not 1 <= high <= num_layers:
        raise ValueError(f"mean_depth={mean} needs 2 * mean - 1 in [1, {num_layers}]")
    return np.random.default_rng(seed).integers(1, high + 1, num_texts).astype(np.int32)
