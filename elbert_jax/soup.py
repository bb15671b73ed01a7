"""Uniform model soups (Wortsman et al. 2022): the mean of the best params of runs fine-tuned from
one checkpoint on one split. Runs from the same pre-trained weights stay in one basin, so their
average is one model with one model's inference cost, often as good as their ensemble.

    python -m elbert_jax.soup --out runs/soup_s0 runs/a_s0 runs/b_s0 runs/c_s0

The output is a workdir like a training run's (``best/``, ``model.json``, ``config.json``,
``tokenizer/``, ``metrics.jsonl`` with the soup's validation and test metrics, ``soup.json``
naming its ingredients), so ``infer.py``, ``--mode report``/``export`` and
``elbert_jax.summary`` take it as they take a run.

``--greedy`` makes the paper's greedy soup instead: the runs ranked by validation accuracy, each
added only if the soup's validation accuracy does not drop. It picks on the validation texts, so
its validation score is no longer a fair estimate; compare greedy soups on test or on a split
the choice did not see. ``--checkpoint last`` averages the states the runs ended with instead of
the epochs they kept on validation (what ``train.select_metric=last`` keeps in ``best/``).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np
import orbax.checkpoint as ocp

from elbert_jax import config as config_lib
from elbert_jax import data as data_lib
from elbert_jax import checkpoints, training
from elbert_jax.model import Params
from elbert_jax.tokenizer import load_tokenizer


def average_params(trees: Sequence[Params]) -> Params:
    """The leaf-wise mean, in float32, summed in the given order (deterministic)."""
    return jax.tree.map(lambda *leaves: np.mean(np.stack([np.asarray(x, np.float32)
                                                          for x in leaves]), 0), *trees)


def _shape_of(key: str, value: Any) -> Any:
    """model.json's ``key`` without the run settings that leave the params' meaning alone
    (dtype, attention kernel, dropout): runs may differ in those and still be averaged."""
    if key != "encoder":
        return value
    return {k: v for k, v in value.items() if k not in checkpoints.RESUMABLE_CHANGES}


def _same_tokenizer(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors and names == sorted(p.name for p in b.iterdir())


def make_soup(workdirs: Sequence[str | Path], out: str | Path,
              greedy: bool = False, checkpoint: str = "best") -> dict[str, Any]:
    """Averages the runs' best (or ``last``, ``checkpoints.restore_params``) params into the workdir
    ``out`` and scores it on validation and test; returns both metric dicts. Runs of another
    architecture, label set, tokenizer or split are refused, each named. ``greedy``: Wortsman et
    al.'s greedy soup (module docstring)."""
    workdirs = [Path(w) for w in workdirs]
    out = Path(out)
    if not workdirs:
        raise ValueError("a soup needs at least one run")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; a soup is written to a new folder")
    first = workdirs[0]
    loaded = [checkpoints.restore_params(w, checkpoint) for w in workdirs]
    model, _, meta = loaded[0]
    configs = [checkpoints.saved_config(w) for w in workdirs]
    config = configs[0]
    split = checkpoints.split_identity(config)
    # any ingredient trained on the validation texts makes the soup's validation score optimistic
    trained_on = any(c.data.train_on_validation for c in configs)
    ingredients, trees = [], []
    for workdir, config_w, (_, params_w, meta_w) in zip(workdirs, configs, loaded):
        for key in ("encoder", "label_names", "max_length", "buckets"):
            if _shape_of(key, meta_w[key]) != _shape_of(key, meta[key]):
                raise ValueError(f"{workdir}: model.json's {key} differs from {first}'s; a soup "
                                 "averages runs of one architecture, label set and input length")
        if checkpoints.split_identity(config_w) != split:
            raise ValueError(f"{workdir}: another data split than {first} (config.json's data "
                             "section or seed); set data.split_seed to train runs on one split")
        if greedy and config_w.data.train_on_validation:
            raise ValueError(f"{workdir} trained on its validation texts "
                             "(data.train_on_validation), which a greedy soup chooses on")
        if not _same_tokenizer(first / "tokenizer", workdir / "tokenizer"):
            raise ValueError(f"{workdir}/tokenizer differs from {first}/tokenizer")
        trees.append(params_w)
        ingredients.append({"workdir": str(workdir), f"{checkpoint}_step": meta_w[f"{checkpoint}_step"]})

    splits = training.load_splits(config)
    tokenizer = load_tokenizer(first / "tokenizer")
    prob_fn = training.make_prob_fn(model)
    policy = config_lib.exit_policy(config)
    encoded = {s: data_lib.encode(tokenizer, getattr(splits, s), meta["max_length"])
               for s in ("validation", "test")}

    def score(params: Params, split: str) -> dict[str, Any]:
        probs = training.exit_probabilities(prob_fn, params, encoded[split],
                                            config.train.eval_batch_size, meta["buckets"])
        return training.exit_metrics(probs, encoded[split].labels, policy)

    if greedy:
        chosen, soup = _greedy(trees, ingredients, lambda p: score(p, "validation")["accuracy"])
        # by identity: a run named twice is two ingredients, equal as dicts
        rejected = [i for i in ingredients if all(i is not c for c in chosen)]
        ingredients = chosen
    else:
        soup = average_params(trees)
    metrics = {s: score(soup, s) for s in ("validation", "test")}

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(first / "tokenizer", out / "tokenizer")
    for name in ("config.json", "model.json"):
        shutil.copy(first / name, out / name)
    with checkpoints.checkpoint_manager(out / "best", 1) as manager:
        manager.save(0, args=ocp.args.Composite(
            params=ocp.args.StandardSave(soup),
            meta=ocp.args.JsonSave({"epoch": 0, "validation": metrics["validation"],
                                    "soup_of": ingredients})))
        manager.wait_until_finished()
    with open(out / "metrics.jsonl", "w") as f:
        f.write(json.dumps({"step": 0, "epoch": 0, "split": "validation", "best": True,
                            **metrics["validation"]}) + "\n")
        f.write(json.dumps({"step": 0, "split": "test", **metrics["test"]}) + "\n")
    extra = {"greedy": True, "rejected": rejected} if greedy else {}
    checkpoints.write_json(out / "soup.json", {"ingredients": ingredients, **extra, **metrics,
                                               "validation_trained_on": trained_on})
    return metrics


def _greedy(trees: Sequence[Params], ingredients: list[dict],
            accuracy: Callable[[Params], float]) -> tuple[list[dict], Params]:
    """The greedy soup: ingredients ranked by their own validation accuracy (ties keep the given
    order), each kept if the soup with it scores at least as well. Returns the kept ingredients,
    each with its validation accuracy, and their mean."""
    for ingredient, tree in zip(ingredients, trees):
        ingredient["validation_accuracy"] = accuracy(tree)
    order = sorted(range(len(trees)), key=lambda i: -ingredients[i]["validation_accuracy"])
    kept, best = [order[0]], ingredients[order[0]]["validation_accuracy"]
    for i in order[1:]:
        if (score := accuracy(average_params([trees[j] for j in kept + [i]]))) >= best:
            kept, best = kept + [i], score
    return [ingredients[i] for i in kept], average_params([trees[j] for j in kept])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m elbert_jax.soup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdirs", nargs="+", type=Path, help="trained runs (their best/)")
    parser.add_argument("--out", type=Path, required=True, help="a new workdir for the soup")
    parser.add_argument("--greedy", action="store_true",
                        help="keep a run only if it does not lower validation accuracy")
    parser.add_argument("--checkpoint", choices=sorted(checkpoints.CHECKPOINTS), default="best",
                        help="average each run's epoch kept on validation (best) or its last state")
    args = parser.parse_args(argv)
    try:
        metrics = make_soup(args.workdirs, args.out, greedy=args.greedy, checkpoint=args.checkpoint)
    except (OSError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    for split, m in metrics.items():
        print(json.dumps({"split": split, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                          "per_exit_accuracy": m["per_exit_accuracy"]}))


if __name__ == "__main__":
    main()
