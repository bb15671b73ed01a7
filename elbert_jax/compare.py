"""Is recipe B better than recipe A, or is the difference noise? A paired comparison on the same
texts: run i of A and run i of B must share their split (one pair per split, e.g. seeds 0/1/2),
and every text of the chosen split is scored by both best checkpoints at one exit.

    python -m elbert_jax.compare --a runs/SP_s0 runs/SP_s1 runs/SP_s2 \\
        --b runs/SOUP_s0 runs/SOUP_s1 runs/SOUP_s2 [--split test] [--layer 6] [--json]
    python -m elbert_jax.compare --a runs/X_s0 runs/X_s1 --b runs/X_s0 runs/X_s1 --b_policy cwb
    python -m elbert_jax.compare --a runs/X_s0 runs/X_s1 --b runs/X_s0 runs/X_s1 --b_checkpoint last

A side is scored at its last exit (or ``--layer``), or with ``--a_policy``/``--b_policy`` NAME
under the setting of that exit policy which ``train.py --mode report`` chose on validation (what
``infer.py --from_report`` serves), with its computation cost: the second command asks whether
early exit with CWB costs accuracy that the test texts can see. ``--b_checkpoint last`` scores
B's runs where their training ended instead of at the epoch kept on validation (the third command
asks whether that choice helps).

Per pair and pooled over the pairs: texts right, the discordant texts (right under one recipe
only), McNemar's exact test on them (the p-value of "both recipes are equally accurate"), and a
paired bootstrap interval of B's accuracy minus A's, resampling texts within each split. On a few
hundred texts a split, differences of a point are within the noise; this says how far.

Pooling treats the splits' texts as separate texts; random splits of one corpus share texts, so
the pooled p-value is somewhat optimistic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
from scipy import stats

from elbert_jax import data as data_lib
from elbert_jax import checkpoints, exits, report, training

SPLITS = ("validation", "test")


def right_per_text(workdir: str | Path, split: str = "test", layer: int | None = None,
                   policy: str | None = None, checkpoint: str = "best") -> tuple[np.ndarray, float]:
    """[N] bool, whether the workdir's best (or ``last``) checkpoint gets each text of ``split``
    right, in split order, at exit ``layer`` (1-based; default the last) or under the setting of
    exit policy ``policy`` chosen on validation by the workdir's report; and the computation cost
    (mean exit layer / L)."""
    return _right(workdir, _texts(workdir, split), layer, policy, checkpoint)


def _texts(workdir: str | Path, split: str) -> data_lib.TextSet:
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {SPLITS}")
    return getattr(training.load_splits(checkpoints.saved_config(workdir)), split)


def _right(workdir: str | Path, texts: data_lib.TextSet, layer: int | None,
           policy: str | None, checkpoint: str = "best") -> tuple[np.ndarray, float]:
    if policy is not None and checkpoint != "best":
        raise ValueError(f"{workdir}: a policy's setting is chosen by the report of the best "
                         f"checkpoint, so it cannot score the {checkpoint} one")
    probs, model, meta = training.workdir_probabilities(
        workdir, texts, checkpoints.saved_config(workdir).train.eval_batch_size, checkpoint)
    num_layers = model.config.num_hidden_layers
    layer = num_layers if layer is None else layer
    if not 1 <= layer <= num_layers:
        raise ValueError(f"layer={layer}: {workdir} has exits 1..{num_layers}")
    if policy is None:
        return probs[layer - 1].argmax(-1) == texts.labels, layer / num_layers
    chosen = report.validated_policy(workdir, policy, meta["best_step"])
    exited = exits.oracle(chosen, jnp.asarray(probs))
    cost = float(np.mean(np.asarray(exited.layer))) / num_layers
    return np.asarray(exited.prediction) == texts.labels, cost


def mcnemar(a_right: np.ndarray, b_right: np.ndarray) -> dict[str, Any]:
    """Counts and McNemar's exact two-sided p-value (a binomial test on the discordant texts)."""
    a_only = int(np.sum(a_right & ~b_right))
    b_only = int(np.sum(b_right & ~a_right))
    discordant = a_only + b_only
    p = stats.binomtest(b_only, discordant, 0.5).pvalue if discordant else 1.0
    return {"texts": int(a_right.size), "a_right": int(a_right.sum()),
            "b_right": int(b_right.sum()), "a_only": a_only, "b_only": b_only,
            "p_mcnemar": float(p)}


def bootstrap_interval(pairs: Sequence[tuple[np.ndarray, np.ndarray]], resamples: int = 10_000,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of (B right - A right) / texts over all pairs, in accuracy points,
    each split's texts resampled with replacement on their own (a stratified paired bootstrap)."""
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    for a_right, b_right in pairs:
        diff = b_right.astype(np.int32) - a_right.astype(np.int32)
        for start in range(0, resamples, 1000):  # bounded memory on big splits
            stop = min(start + 1000, resamples)
            rows = rng.integers(0, diff.size, size=(stop - start, diff.size))
            total[start:stop] += diff[rows].sum(1)
    points = 100 * total / sum(a.size for a, _ in pairs)
    low, high = np.quantile(points, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def compare(a_runs: Sequence[str | Path], b_runs: Sequence[str | Path], split: str = "test",
            layer: int | None = None, resamples: int = 10_000, seed: int = 0,
            a_policy: str | None = None, b_policy: str | None = None,
            a_checkpoint: str = "best", b_checkpoint: str = "best") -> dict[str, Any]:
    """Each pair's and the pooled comparison (module docstring); pairs on different splits are
    refused, each named. ``a_policy``/``b_policy``: score that side under the exit policy its
    report chose on validation instead of at ``layer``; ``a_checkpoint``/``b_checkpoint``: its
    ``best`` or ``last`` checkpoint (``checkpoints.restore_params``)."""
    if len(a_runs) != len(b_runs) or not a_runs:
        raise ValueError(f"--a and --b need as many runs each (one per split), not "
                         f"{len(a_runs)} and {len(b_runs)}")
    identity = lambda workdir: checkpoints.split_identity(checkpoints.saved_config(workdir))  # noqa: E731
    for a_dir, b_dir in zip(a_runs, b_runs):  # before any model runs
        if identity(a_dir) != identity(b_dir):
            raise ValueError(f"{a_dir} and {b_dir} were not scored on the same texts (config.json's "
                             "data section or split seed differ); pair runs of one split")
    pairs, rows = [], []
    for a_dir, b_dir in zip(a_runs, b_runs):
        texts = _texts(a_dir, split)  # b_dir's too: the identities are equal
        a_right, a_cost = _right(a_dir, texts, layer, a_policy, a_checkpoint)
        b_right, b_cost = _right(b_dir, texts, layer, b_policy, b_checkpoint)
        pairs.append((a_right, b_right))
        rows.append({"a": str(a_dir), "b": str(b_dir), "a_cost": a_cost, "b_cost": b_cost,
                     **mcnemar(a_right, b_right),
                     "interval": bootstrap_interval([(a_right, b_right)], resamples, seed=seed)})
    pooled = mcnemar(np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs]))
    pooled["interval"] = bootstrap_interval(pairs, resamples, seed=seed)
    for side in "ab":  # the mean over all texts
        pooled[f"{side}_cost"] = sum(r[f"{side}_cost"] * r["texts"] for r in rows) / pooled["texts"]
    return {"split": split, "layer": layer, "a_policy": a_policy, "b_policy": b_policy,
            "a_checkpoint": a_checkpoint, "b_checkpoint": b_checkpoint,
            "resamples": resamples, "pairs": rows, "pooled": pooled}


def markdown(result: dict[str, Any]) -> str:
    fixed = "last exit" if result["layer"] is None else f"exit {result['layer']}"
    sides = [(f"{side} at {fixed}" if result[f"{side.lower()}_policy"] is None else
              f"{side} with {result[f'{side.lower()}_policy']} chosen on validation")
             + ("" if result.get(f"{side.lower()}_checkpoint", "best") == "best" else
                f" ({result[f'{side.lower()}_checkpoint']} checkpoint)")
             for side in "AB"]
    lines = [f"{result['split']}, {sides[0]}, {sides[1]}: B minus A, with a 95% paired bootstrap "
             f"interval ({result['resamples']} resamples)", "",
             "| pair | texts | A right | B right | B - A (points) | 95% interval | right under A only "
             "| under B only | McNemar p | cost A / B |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    named = [(f"{Path(r['a']).name} / {Path(r['b']).name}", r) for r in result["pairs"]]
    for name, r in named + [("**pooled**", result["pooled"])]:
        low, high = r["interval"]
        diff = 100 * (r["b_right"] - r["a_right"]) / r["texts"]
        lines.append(f"| {name} | {r['texts']} | {r['a_right']} | {r['b_right']} | {diff:+.2f} | "
                     f"[{low:+.2f}, {high:+.2f}] | {r['a_only']} | {r['b_only']} | "
                     f"{r['p_mcnemar']:.3g} | {r['a_cost']:.2f} / {r['b_cost']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m elbert_jax.compare",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", nargs="+", required=True, help="recipe A's workdirs, one a split")
    parser.add_argument("--b", nargs="+", required=True, help="recipe B's, in the same order")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--layer", type=int, default=None, help="1-based exit (default: the last)")
    for side in "ab":
        parser.add_argument(f"--{side}_policy", default=None, choices=exits.POLICIES,
                            help=f"score --{side} under this policy's setting chosen on validation "
                            "by its report (default: at --layer)")
        parser.add_argument(f"--{side}_checkpoint", default="best", choices=sorted(checkpoints.CHECKPOINTS),
                            help=f"score --{side} at the epoch kept on validation (best) or where "
                            "training ended (last)")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed")
    parser.add_argument("--json", action="store_true", help="JSON instead of a markdown table")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error("--resamples must be >= 1")
    try:
        result = compare(args.a, args.b, args.split, args.layer, args.resamples, args.seed,
                         args.a_policy, args.b_policy, args.a_checkpoint, args.b_checkpoint)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    print(json.dumps(result) if args.json else markdown(result), file=sys.stdout)


if __name__ == "__main__":
    main()
