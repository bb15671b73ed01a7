"""Parity with transformers at the base shapes of each family, on random weights (no download).

Each family's transformers config defaults are its base model's shape (ELECTRA's are
electra-small's; albert-base-v2 aside, whose defaults are ALBERT-xxlarge's: the tests cover it from
../shared's config). A random
``*ForSequenceClassification`` is saved, loaded by elbert_jax and both are run in float32 on padded
rows; the max abs differences of the hidden states (every layer and position) and of the logits
of our last exit are printed, one JSON line per family.

COMMAND: python bench/parity.py   # BERT, RoBERTa, DistilBERT, ELECTRA: each <= 1e-5; ~1 minute
                                  # on 2 CPU cores
"""

from __future__ import annotations

import json
import tempfile

from absl import app, flags

from elbert_jax.parity import compare_with_transformers, random_batch, save_random_checkpoint

flags.DEFINE_list("families", ["bert", "roberta", "distilbert", "electra"],
                  "Families at their base shape.")
flags.DEFINE_integer("seq_len", 64, "Row width; rows are padded to it from 64, 49, 35, 21 tokens at 64.")
FLAGS = flags.FLAGS
# what a family's base checkpoint sets apart from its transformers config defaults
BASE = {"roberta": dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                        pad_token_id=1, layer_norm_eps=1e-5)}


def main(argv: list[str]) -> None:
    del argv
    for family in FLAGS.families:
        with tempfile.TemporaryDirectory() as folder:
            save_random_checkpoint(folder, family, num_labels=3, **BASE.get(family, {}))
            config = json.load(open(f"{folder}/config.json"))
            batch = random_batch(config["vocab_size"], batch=4, seq_len=FLAGS.seq_len,
                                 pad_token_id=config.get("pad_token_id") or 0,
                                 pairs=config.get("type_vocab_size", 2) > 1)
            diffs = compare_with_transformers(folder, batch)
        print(json.dumps({"family": family, **diffs}), flush=True)


if __name__ == "__main__":
    app.run(main)
