# COMMAND: python train.py --config configs/fsa_minilm_allagree.py --workdir runs/fsa_minilm_allagree
#   other seeds: --config.seed=1 (each seed its own FinBERT split of AllAgree's deduplicated 2,259
#   sentences: 1,626 train / 181 validation / 452 test)
# Expected (docs/results.md, 2-core CPU, about 12 minutes): last-exit test accuracy 0.956 / 0.954 /
# 0.945 on seeds 0/1/2, mean 0.951 (1,290 of 1,356), the AllAgree >= 0.95 target.
# configs/fsa_minilm.py on the AllAgree subset, with what AllAgree's smaller training set chose:
# 8 epochs (chosen on validation over 4), the epoch best on validation kept (the last epoch lost
# on splits 3-5), so its validation texts are not trained on, and the classifier head at ten times
# the encoder's learning rate (adopted 2026-12-06 by a pre-registered rule on splits 3-5: 1,293
# against 1,287 test texts; paired on seeds 0-2 against the runs without it: +1.11 points, 95%
# interval [+0.00, +2.21], McNemar p = 0.07). The same as configs/fsa_minilm.py with
# --config.data.subset=AllAgree --config.train.epochs=8 --config.train.select_metric=accuracy
# --config.train.head_lr_scale=10 --config.data.train_on_validation=False --config.train.rdrop=0.
# Tried and not adopted by their rules (docs/results.md): batch 32 with max_length 128, R-Drop, a
# uniform soup of three runs (0.9535 on seeds 0-2, level on splits 3-5), training with the rest of
# PhraseBank too (--config.data.train_from=50Agree --config.train.epochs=4: 0.954, short of its
# registered p < 0.05 twice), task-adaptive pretraining (--mode pretrain) first.
from pathlib import Path

from elbert_jax.config import load_config_file


def get_config():
    config = load_config_file(Path(__file__).with_name("fsa_minilm.py"))
    config.data.subset = "AllAgree"
    config.data.train_on_validation = False
    config.train.epochs = 8
    config.train.select_metric = "accuracy"
    config.train.head_lr_scale = 10.0
    config.train.rdrop = 0.0  # R-Drop (the 50Agree recipe's since 2026-12-07) lost its rule here
    return config
