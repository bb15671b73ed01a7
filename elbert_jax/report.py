"""Accuracy-vs-computation reports: one full-depth pass, every exit policy swept post hoc (spec 4)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from elbert_jax import config as config_lib
from elbert_jax import data as data_lib
from elbert_jax import checkpoints, exits, training
from elbert_jax.convert import save_pretrained
from elbert_jax.tokenizer import load_tokenizer

SWEPT = ("cwb", "entropy", "raw_entropy", "patience", "max_prob", "static")


def sweep_all(probs: np.ndarray, labels: np.ndarray, cwb: exits.ExitPolicy) -> list[dict]:
    """Rows {policy, threshold, accuracy, cost} for every policy; CWB keeps ``cwb``'s window etc.,
    and every policy reads the probabilities through ``cwb``'s temperatures."""
    rows = []
    for name in SWEPT:
        policy = cwb if name == "cwb" else exits.ExitPolicy(name=name, temperatures=cwb.temperatures)
        rows += exits.sweep(policy, jnp.asarray(probs), labels)
    return rows


def calibration(probs: np.ndarray, labels: np.ndarray, temperatures: np.ndarray, bins: int = 15
                ) -> dict[str, list[float]]:
    """Per exit, the negative log-likelihood and expected calibration error (top probability
    against accuracy in ``bins`` equal-width bins) of ``probs`` [L, N, K] before and after
    ``exits.temper`` with ``temperatures``."""
    def scores(p: np.ndarray) -> tuple[list[float], list[float]]:
        p = np.asarray(p, np.float64)
        picked = np.take_along_axis(p, labels[None, :, None], -1)[..., 0]
        nll = -np.log(np.maximum(picked, np.finfo(np.float32).tiny)).mean(-1)
        ece = []
        for top, right in zip(p.max(-1), p.argmax(-1) == labels[None]):
            which = np.minimum((top * bins).astype(int), bins - 1)
            ece.append(float(sum(abs(right[which == b].mean() - top[which == b].mean())
                                 * np.mean(which == b) for b in np.unique(which))))
        return nll.tolist(), ece

    t = jnp.asarray(temperatures, jnp.float32)[:, None, None]
    nll, ece = scores(probs)
    nll_t, ece_t = scores(exits.temper(jnp.asarray(probs), t))
    return {"temperatures": [float(x) for x in temperatures], "nll": nll, "nll_calibrated": nll_t,
            "ece": ece, "ece_calibrated": ece_t}


CRITERIA = config_lib.CHOOSE_BY  # what a setting is chosen by on validation


def choose_on_validation(val_probs: np.ndarray, val_labels: np.ndarray, test_probs: np.ndarray,
                         test_labels: np.ndarray, cwb: exits.ExitPolicy, max_cost: float = 0.5,
                         windows: tuple[int, ...] = (2, 3, 4, 5), criterion: str = "accuracy"
                         ) -> list[dict[str, Any]]:
    """Per policy, the setting (CWB: window and threshold) at computation cost <= ``max_cost``
    that is best on validation, and what exactly that setting does on the test split: the honest
    way to compare policies, since a threshold read off the test curve is tuned on test.

    ``criterion``: "accuracy" (the most texts right) or "agreement" (the most texts predicted as
    the last exit predicts them: an early exit can only lose accuracy where it disagrees with the
    last exit, and counting that needs no labels, which are noisy in e.g. PhraseBank 50Agree);
    ties go to the higher accuracy, then the lower cost. Every candidate reads the probabilities
    through ``cwb``'s temperatures."""
    return choose_by_criteria(val_probs, val_labels, test_probs, test_labels, cwb, max_cost,
                              windows, (criterion,))[criterion]


def choose_by_criteria(val_probs: np.ndarray, val_labels: np.ndarray, test_probs: np.ndarray,
                       test_labels: np.ndarray, cwb: exits.ExitPolicy, max_cost: float = 0.5,
                       windows: tuple[int, ...] = (2, 3, 4, 5), criteria: tuple[str, ...] = CRITERIA
                       ) -> dict[str, list[dict[str, Any]]]:
    """``choose_on_validation`` for several criteria at once, each candidate swept once."""
    unknown = [c for c in criteria if c not in CRITERIA]
    if unknown:
        raise ValueError(f"criterion={unknown[0]!r} is not one of {CRITERIA}")
    candidates = [dataclasses.replace(cwb, window=n) for n in windows]
    candidates += [exits.ExitPolicy(name=name, temperatures=cwb.temperatures)
                   for name in SWEPT if name != "cwb"]
    val_probs, test_probs = jnp.asarray(val_probs), jnp.asarray(test_probs)
    chosen: dict[str, list[dict[str, Any]]] = {c: [] for c in criteria}
    last = np.asarray(val_probs[-1].argmax(-1))
    for policy in candidates:
        rows = exits.sweep(policy, val_probs, val_labels)
        for row, agreeing in zip(rows, exits.sweep(policy, val_probs, last)):
            row["agreement"] = agreeing["accuracy"]
        picks = {c: best for c in criteria if (best := best_within(rows, max_cost, c)) is not None}
        if not picks:
            continue
        tests = exits.sweep(policy, test_probs, test_labels,
                            np.array([best["threshold"] for best in picks.values()], np.float32))
        for (criterion, best), test in zip(picks.items(), tests):
            chosen[criterion].append({
                "policy": policy.name, "window": policy.window if policy.name == "cwb" else None,
                "threshold": best["threshold"], "validation_accuracy": best["accuracy"],
                "validation_agreement": best["agreement"], "validation_cost": best["cost"],
                "test_accuracy": test["accuracy"], "test_cost": test["cost"],
                "exit_policy": dataclasses.asdict(exits.with_threshold(policy, best["threshold"]))})
    return chosen


def best_within(rows: list[dict[str, Any]], max_cost: float, criterion: str = "accuracy"
                ) -> dict[str, Any] | None:
    """The best sweep row by ``criterion`` at cost <= ``max_cost`` (then the more accurate, then
    the cheaper), or None."""
    return max((r for r in rows if r["cost"] <= max_cost),
               key=lambda r: (r[criterion], r["accuracy"], -r["cost"]), default=None)


def best_on_validation(chosen: list[dict[str, Any]], criterion: str = "accuracy"
                       ) -> dict[str, dict[str, Any]]:
    """Per policy, the one row of ``choose_on_validation`` to report: the best by ``criterion``
    on validation, then the higher validation accuracy, then the lower validation cost, then
    (CWB) the smaller window."""
    def key(row: dict[str, Any]) -> tuple:
        return (row[f"validation_{criterion}"], row["validation_accuracy"], -row["validation_cost"],
                -(row["window"] or 0))
    best: dict[str, dict[str, Any]] = {}
    for row in chosen:
        if row["policy"] not in best or key(row) > key(best[row["policy"]]):
            best[row["policy"]] = row
    return best


def validated_policy(workdir: str | Path, name: str, best_step: int) -> exits.ExitPolicy:
    """The setting of policy ``name`` that ``write_report`` chose on validation (the best by
    ``exit.choose_by`` at cost <= its ``max_cost``, with its temperatures if calibrated), to
    serve that operating point rather than a threshold read off the test curve. ``best_step``
    (``restore_best_params``' meta): the checkpoint the report must have been made from."""
    path = Path(workdir) / "report_test" / "report.json"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no report to take the exit policy from; run `python "
                                f"train.py --config CONFIG --workdir {workdir} --mode report`")
    table = json.loads(path.read_text())
    chosen = table.get("chosen_on_validation") or {}
    best = chosen.get("best")
    if best is None or any("exit_policy" not in row for row in best.values()):
        raise ValueError(f"{path} holds no chosen settings (written by an older elbert_jax); "
                         "rerun --mode report")
    if table.get("checkpoint_step") != best_step:
        raise ValueError(f"{path} was made from the checkpoint of step "
                         f"{table.get('checkpoint_step')}, but the best checkpoint is now step "
                         f"{best_step}; rerun --mode report")
    if name not in best:
        raise ValueError(f"{path}: no {name} setting reached computation cost <= "
                         f"{chosen['max_cost']} on validation (chosen: {', '.join(sorted(best))})")
    return exits.ExitPolicy(**best[name]["exit_policy"])


def by_agreement(probs: np.ndarray, labels: np.ndarray, agreement: np.ndarray,
                 outcomes: dict[str, Any]) -> list[dict[str, Any]]:
    """Accuracy per PhraseBank agreement level (the highest subset holding each text): the texts,
    each exit's accuracy and each policy's accuracy and cost (``outcomes``: name -> its
    ``exits.oracle`` result on ``probs``). The splits differ in how many ambiguous sentences they
    draw, which moves their accuracy more than most recipes do."""
    num_layers = probs.shape[0]
    right = probs.argmax(-1) == labels[None]  # [L, N]
    rows = []
    for level, subset in enumerate(data_lib.PHRASEBANK_SUBSETS):
        rows_in = agreement == level
        row: dict[str, Any] = {"highest_subset": subset, "texts": int(rows_in.sum())}
        if rows_in.any():
            row["per_exit_accuracy"] = right[:, rows_in].mean(1).tolist()
            for name, out in outcomes.items():
                prediction, layer = np.asarray(out.prediction)[rows_in], np.asarray(out.layer)[rows_in]
                row[name] = {"accuracy": float(np.mean(prediction == labels[rows_in])),
                             "cost": float(layer.mean() / num_layers)}
        rows.append(row)
    return rows


def plot(rows: list[dict], probs: np.ndarray, labels: np.ndarray, layers: np.ndarray,
         folder: Path, title: str) -> list[Path]:
    """accuracy_vs_cost.png (all policies), per_exit_accuracy.png, exit_histogram.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_layers = probs.shape[0]
    paths = [folder / n for n in ("accuracy_vs_cost.png", "per_exit_accuracy.png",
                                  "exit_histogram.png")]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name in SWEPT:
        pts = sorted((r["cost"], r["accuracy"]) for r in rows if r["policy"] == name)
        ax.plot(*zip(*pts), marker="o", markersize=3, label=name)
    ax.set(xlabel="computation cost (mean exit layer / L)", ylabel="accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    per_exit = (probs.argmax(-1) == labels[None]).mean(1)
    ax.bar(np.arange(1, num_layers + 1), per_exit)
    ax.set(xlabel="exit layer", ylabel="accuracy", title="accuracy of each exit",
           ylim=(max(0.0, per_exit.min() - 0.1), 1.0))
    fig.tight_layout()
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.hist(layers, bins=np.arange(0.5, num_layers + 1.5), rwidth=0.85)
    ax.set(xlabel="exit layer", ylabel="texts", title="exit layers of the configured policy")
    fig.tight_layout()
    fig.savefig(paths[2], dpi=120)
    plt.close(fig)
    return paths


def write_report(config: ml_collections.ConfigDict, workdir: str | Path,
                 split: str = "test", max_cost: float = 0.5, checkpoint: str = "best"
                 ) -> dict[str, Any]:
    """``report.json`` and PNGs in ``workdir/report_<split>`` from the best checkpoint; for the
    test split also each policy's setting chosen on validation at cost <= ``max_cost``. With
    ``checkpoint="last"``, of the state the run ended with, in ``report_<split>_last`` (what
    ``infer.py --from_report`` serves stays the best checkpoint's). With ``exit.calibrate``, one
    temperature per exit fitted on validation (``exits.fit_temperatures``) feeds every policy,
    and the chosen settings carry it."""
    config_lib.validate_config(config)
    workdir = Path(workdir)
    splits = training.load_splits(config)
    # another split's test texts may be the run's training texts: a silently optimistic report
    if other := checkpoints.other_texts(workdir, {s: getattr(splits, s).digest()
                                                  for s in ("validation", "test")}):
        raise ValueError(f"{workdir} was trained on another split than this config reads (its "
                         f"{' and '.join(other)} texts differ); pass the run's seed and data "
                         f"settings, as in {workdir / 'config.json'} (e.g. --config.seed, "
                         "--config.data.split_seed)")
    model, params, meta = checkpoints.restore_params(workdir, checkpoint)
    tokenizer = load_tokenizer(workdir / "tokenizer")
    encoded = data_lib.encode(tokenizer, getattr(splits, split), meta["max_length"])
    prob_fn = training.make_prob_fn(model)  # one jitted function: each bucket compiles once
    probs = training.exit_probabilities(prob_fn, params, encoded, config.train.eval_batch_size,
                                        meta["buckets"])
    policy = config_lib.exit_policy(config)
    if split == "validation":
        val, val_probs = encoded, probs
    elif split == "test" or config.exit.calibrate:
        val = data_lib.encode(tokenizer, splits.validation, meta["max_length"])
        val_probs = training.exit_probabilities(prob_fn, params, val, config.train.eval_batch_size,
                                                meta["buckets"])
    calibrated = None
    if config.exit.calibrate:  # fitted on validation, used by every policy below
        temperatures = exits.fit_temperatures(val_probs, val.labels)
        policy = policy.replace(temperatures=tuple(temperatures))
        calibrated = calibration(probs, encoded.labels, temperatures) | {
            "validation": calibration(val_probs, val.labels, temperatures)}
    rows = sweep_all(probs, encoded.labels, policy)
    chosen = exits.oracle(policy, jnp.asarray(probs))
    metrics = training.exit_metrics(probs, encoded.labels, policy)
    selected = None
    if split == "test":
        chosen_by = {criterion: {"rows": rows_chosen,
                                 "best": best_on_validation(rows_chosen, criterion)}
                     for criterion, rows_chosen in choose_by_criteria(
                         val_probs, val.labels, probs, encoded.labels, policy, max_cost).items()}
        criterion = config.exit.choose_by
        selected = {"max_cost": max_cost, "criterion": criterion, **chosen_by[criterion],
                    "by": {name: value["best"] for name, value in chosen_by.items()}}
    agreement = getattr(splits, split).agreement
    if agreement is not None:  # PhraseBank: the configured policy and those chosen on validation
        outcomes = {"configured": chosen} | {
            name: exits.oracle(exits.ExitPolicy(**row["exit_policy"]), jnp.asarray(probs))
            for name, row in (selected["best"] if selected else {}).items()}
        agreement = by_agreement(probs, encoded.labels, agreement, outcomes)
    folder = workdir / (f"report_{split}" if checkpoint == "best" else f"report_{split}_{checkpoint}")
    folder.mkdir(exist_ok=True)
    images = plot(rows, probs, encoded.labels, np.asarray(chosen.layer), folder,
                  f"{split}: {len(encoded)} texts, L = {probs.shape[0]}")
    report = {"split": split, "checkpoint": checkpoint, "checkpoint_step": meta[f"{checkpoint}_step"],
              "texts": len(encoded),
              "num_layers": int(probs.shape[0]),
              "configured_policy": config.exit.to_dict(), "metrics": metrics,
              "exit_histogram": np.bincount(np.asarray(chosen.layer),
                                            minlength=probs.shape[0] + 1)[1:].tolist(),
              "chosen_on_validation": selected, "by_agreement": agreement,
              # the choices above were made on texts the model trained on: optimistic
              "validation_trained_on": checkpoints.validation_trained_on(workdir),
              "calibration": calibrated,
              "sweep": rows, "images": [str(p) for p in images]}
    (folder / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return {k: v for k, v in report.items() if k != "sweep"} | {"report": str(folder / "report.json")}


def export(workdir: str | Path, export_dir: str | Path) -> Path:
    """The best checkpoint as a transformers folder (config, safetensors, tokenizer, label names)."""
    model, params, meta = checkpoints.restore_best_params(workdir)
    tokenizer = load_tokenizer(Path(workdir) / "tokenizer")
    try:
        return save_pretrained(export_dir, model.config, params, tokenizer, meta["label_names"])
    except ValueError as error:  # a model transformers cannot run: train.py's one error line
        raise config_lib.ConfigError(f"{workdir} cannot be exported: {error} (infer.py serves "
                                     "the workdir itself)") from error
