"""How much each layer knows, against what its exit head learned: a linear probe per depth.

A logistic regression on the frozen states an exit reads (the embeddings and every layer,
pooled as the model pools them) is the best a linear exit could do with those features. An
exit head far below its probe is under-trained (the shallow exits of a fine-tuned MiniLM:
docs/results.md), not short of information; an exit near its probe needs a deeper layer.

    python -m elbert_jax.probe runs/fsa_minilm_exits [--checkpoint last] [--json]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from elbert_jax import checkpoints, training
from elbert_jax import data as data_lib
from elbert_jax.model import ElbertModel, ExitHeads, pool
from elbert_jax.tokenizer import load_tokenizer

L2_GRID = (1e-4, 1e-3, 1e-2)


class Probe(NamedTuple):
    weights: np.ndarray  # [H, K] on standardised features
    bias: np.ndarray     # [K]
    mean: np.ndarray     # [H] training-feature statistics the probe standardises with
    scale: np.ndarray    # [H]
    l2: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        return (((features - self.mean) / self.scale) @ self.weights + self.bias).argmax(-1)


def make_feature_fn(model: ElbertModel):
    """(params, numpy batch) -> numpy [L + 1, B, H]: what each exit reads, after the embeddings
    and after every layer (``exit_probabilities`` runs it over a split in input order)."""
    @jax.jit
    def features(params, input_ids, attention_mask, token_type_ids):
        out = model.apply({"params": params}, input_ids, attention_mask, token_type_ids,
                          output_hidden_states=True)
        return pool(model.config, out.hidden_states, attention_mask).astype(jnp.float32)

    return lambda params, batch: np.asarray(features(
        params, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]))


@functools.partial(jax.jit, static_argnames=("num_labels", "iterations"))
def _logistic_regression(x: jax.Array, y: jax.Array, l2: jax.Array, num_labels: int,
                         iterations: int) -> tuple[jax.Array, jax.Array]:
    """(weights [H, K], bias [K]) minimising the mean cross-entropy + ``l2`` ||weights||^2 by
    L-BFGS; module-level, so every depth and L2 of a probe reuses one compilation."""
    def loss(params):
        w, b = params
        return (optax.softmax_cross_entropy_with_integer_labels(x @ w + b, y).mean()
                + l2 * (w ** 2).sum())
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(params, updates), state), None
    params = (jnp.zeros((x.shape[1], num_labels)), jnp.zeros(num_labels))
    (params, _), _ = jax.lax.scan(step, (params, solver.init(params)), None, iterations)
    return params


def fit_probe(features: np.ndarray, labels: np.ndarray, val_features: np.ndarray,
              val_labels: np.ndarray, num_labels: int, l2_grid: Sequence[float] = L2_GRID,
              iterations: int = 300) -> Probe:
    """Multinomial logistic regression by L-BFGS on standardised ``features`` [N, H]; the L2
    penalty is the one of ``l2_grid`` most accurate on the validation features (ties: the
    first)."""
    mean, scale = features.mean(0), features.std(0) + 1e-6
    x, y = jnp.asarray((features - mean) / scale), jnp.asarray(labels)
    best = None
    for l2 in l2_grid:
        w, b = _logistic_regression(x, y, jnp.float32(l2), num_labels, iterations)
        probe = Probe(np.asarray(w), np.asarray(b), mean, scale, float(l2))
        accuracy = float((probe.predict(val_features) == val_labels).mean())
        if best is None or accuracy > best[0]:
            best = (accuracy, probe)
    return best[1]


def probe_workdir(workdir: str | Path, checkpoint: str = "best", batch_size: int = 128
                  ) -> dict[str, Any]:
    """Per depth (0 = the embeddings): the probe's validation and test accuracy, trained on the
    workdir's training split, and the exit head's on the same splits (none at depth 0)."""
    workdir = Path(workdir)
    config = checkpoints.saved_config(workdir)
    model, params, meta = checkpoints.restore_params(workdir, checkpoint)
    splits = training.load_splits(config)
    tokenizer = load_tokenizer(workdir / "tokenizer")
    feature_fn = make_feature_fn(model)
    heads_fn = jax.jit(lambda heads, pooled: ExitHeads(model.config).apply({"params": heads},
                                                                           pooled))
    features, labels, heads = {}, {}, {}
    for name in ("train", "validation", "test"):
        encoded = data_lib.encode(tokenizer, getattr(splits, name), meta["max_length"])
        features[name] = training.exit_probabilities(feature_fn, params, encoded, batch_size,
                                                     meta["buckets"])
        labels[name] = encoded.labels
        if name != "train":  # the exit heads on the very states the probes read
            logits = np.asarray(heads_fn(params["exits"], features[name][1:]))
            heads[name] = (logits.argmax(-1) == encoded.labels).mean(1)
    rows = []
    for depth in range(features["train"].shape[0]):
        probe = fit_probe(features["train"][depth], labels["train"], features["validation"][depth],
                          labels["validation"], model.config.num_labels)
        row = {"depth": depth, "l2": probe.l2}
        for name in ("validation", "test"):
            row[f"probe_{name}"] = float((probe.predict(features[name][depth]) == labels[name]).mean())
            row[f"head_{name}"] = float(heads[name][depth - 1]) if depth else None
        rows.append(row)
    return {"workdir": str(workdir), "checkpoint": checkpoint, "texts": {
        name: int(len(labels[name])) for name in labels}, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"{result['workdir']} ({result['checkpoint']} checkpoint; train / validation / test "
             f"texts {result['texts']['train']} / {result['texts']['validation']} / "
             f"{result['texts']['test']})", "",
             "| depth | probe validation | exit validation | probe test | exit test | probe L2 |",
             "|---|---:|---:|---:|---:|---:|"]
    show = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in result["rows"]:
        lines.append(f"| {'embeddings' if r['depth'] == 0 else r['depth']} | "
                     f"{show(r['probe_validation'])} | {show(r['head_validation'])} | "
                     f"{show(r['probe_test'])} | {show(r['head_test'])} | {r['l2']:g} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m elbert_jax.probe",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", help="a workdir written by train.py")
    parser.add_argument("--checkpoint", default="best", choices=sorted(checkpoints.CHECKPOINTS))
    parser.add_argument("--json", action="store_true", help="JSON instead of a markdown table")
    args = parser.parse_args(argv)
    try:
        result = probe_workdir(args.workdir, args.checkpoint)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    print(json.dumps(result) if args.json else markdown(result), file=sys.stdout)


if __name__ == "__main__":
    main()
