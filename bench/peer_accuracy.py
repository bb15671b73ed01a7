"""Accuracy of transformers' own fine-tuning on exactly our split: the peer for docs/results.md.

COMMAND (2-core CPU: 9 minutes a seed measured alone, up to 19 beside other work):
  python bench/peer_accuracy.py --config configs/fsa_minilm.py --config.seed=2 \
      --output bench/results/peer_minilm_50agree_s2.json
COMMAND (smoke run): add --max_steps 4

The reference table in ../shared/docs/benchmarks.md fine-tuned the same checkpoint with its own
data code, so its seed-N split need not be ours. Here the split, the tokenised batches and their
order come from the library (``load_splits``, ``train_batches`` of the config and seed), and the
recipe is the config's (lr, weight decay, warmup, clipping, epochs, batch size, max_length; not
its R-Drop, ``train.rdrop``: the peer is plain fine-tuning):
transformers' ``AutoModelForSequenceClassification`` from the same checkpoint, one exit, fp32,
the best epoch chosen on validation accuracy as our trainer chooses it by default. It prints
the test accuracy and macro-F1 of that epoch and of the last one (what ``train.select_metric=last``
keeps, as ``configs/fsa_minilm.py`` does since 2026-11-29). With ``data.train_on_validation``
(``configs/fsa_minilm.py`` since 2026-12-06) it trains on the validation texts too and the "best"
epoch is the last; the peer recorded in docs/results.md (0.829) trained on the training texts
alone: add ``--config.data.train_on_validation=False`` to repeat it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/torch_peer.py

config_flags.DEFINE_config_file("config", None, "A training config (its model must be a "
                                "transformers checkpoint).", lock_config=True)
flags.DEFINE_integer("max_steps", 0, "Steps per epoch (0 = all; for smoke runs).")
flags.DEFINE_string("output", None, "Also write the results as JSON here.")
FLAGS = flags.FLAGS


def evaluate(hf, encoded, batch_size: int, buckets, dev: str) -> dict:
    """Accuracy and macro-F1 of the model's one exit over ``encoded``."""
    import numpy as np
    import torch
    from sklearn.metrics import f1_score

    from elbert_jax import data as data_lib
    from torch_peer import to_torch

    hf.eval()
    preds = np.empty(len(encoded), np.int64)
    with torch.no_grad():
        for batch in data_lib.eval_batches(encoded, batch_size, buckets):
            keep = batch["weight"] > 0
            b = to_torch(batch, dev)
            logits = hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                        token_type_ids=b["token_type_ids"]).logits
            preds[batch["index"][keep]] = logits.argmax(-1).cpu().numpy()[keep]
    hf.train()
    labels = encoded.labels
    return {"accuracy": float((preds == labels).mean()),
            "macro_f1": float(f1_score(labels, preds, average="macro"))}


def main(argv):
    del argv
    import torch
    import transformers

    from elbert_jax import data as data_lib
    from elbert_jax.tokenizer import load_tokenizer
    from elbert_jax.config import validate_config
    from elbert_jax.training import load_splits
    from torch_peer import make_step

    config = FLAGS.config
    validate_config(config)
    d, t = config.data, config.train
    splits = load_splits(config)
    tokenizer = load_tokenizer(config.model.tokenizer or config.model.name_or_path)
    buckets = tokenizer.buckets(d.max_length, d.buckets)
    encoded = {name: data_lib.encode(tokenizer, getattr(splits, name), d.max_length)
               for name in ("train", "validation", "test")}
    torch.manual_seed(config.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        config.model.name_or_path, num_labels=len(splits.label_names), dtype=torch.float32
    ).to(dev).train()
    spe = data_lib.steps_per_epoch(len(encoded["train"]), t.batch_size)
    if FLAGS.max_steps:
        spe = min(spe, FLAGS.max_steps)
    step = make_step(hf, t, spe * t.epochs, bf16=False)
    epochs, best, start = [], None, time.perf_counter()
    for epoch in range(t.epochs):
        batches = data_lib.train_batches(encoded["train"], t.batch_size, config.seed, epoch, buckets,
                                         group_by_length=config.data.group_by_length)
        loss = [float(step(b)) for _, b in zip(range(spe), batches)]
        row = {"epoch": epoch, "train_loss": sum(loss) / len(loss),
               "validation": evaluate(hf, encoded["validation"], t.eval_batch_size, buckets, dev),
               "test": evaluate(hf, encoded["test"], t.eval_batch_size, buckets, dev)}
        epochs.append(row)
        print(json.dumps(row), flush=True)
        if (d.train_on_validation or best is None  # a refit has no epoch to choose: the last
                or row["validation"]["accuracy"] > best["validation"]["accuracy"]):
            best = row
    result = {"model": config.model.name_or_path, "subset": d.subset, "seed": config.seed, "device": dev,
              "splits": splits.stats, "recipe": {k: t[k] for k in (
                  "lr", "weight_decay", "warmup_fraction", "clip_norm", "epochs", "batch_size")},
              "max_length": d.max_length, "validation_trained_on": d.train_on_validation,
              "seconds": time.perf_counter() - start,
              "best_epoch": best["epoch"], "best_validation_accuracy": best["validation"]["accuracy"],
              "test_at_best_epoch": best["test"], "test_at_last_epoch": epochs[-1]["test"],
              "epochs": epochs}
    print(json.dumps({k: v for k, v in result.items() if k != "epochs"}, indent=1))
    if FLAGS.output:
        Path(FLAGS.output).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main)
