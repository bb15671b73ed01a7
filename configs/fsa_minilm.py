# COMMAND: python train.py --config configs/fsa_minilm.py --workdir runs/fsa_minilm
#   other seeds / subsets: --config.seed=1 --config.data.subset=AllAgree (with AllAgree's 1,626
#   training texts add --config.train.epochs=8 --config.train.select_metric=accuracy
#   --config.train.head_lr_scale=10: expected test 0.956 / 0.954 / 0.945 on seeds 0/1/2, mean 0.951
#   (the head at 10x the lr, adopted 2026-12-06 by a pre-registered rule on splits 3-5: 1,293
#   against 1,287 test texts; without it 0.940). Before that option: the epoch best on
#   validation is kept, as chosen on splits 3-5 (docs/results.md): 515 of 3 x 181 texts against
#   514 for --config.train.batch_size=32 --config.data.max_length=128 and 512 for
#   --config.train.rdrop=4.0; test means 0.940, 0.9499 and 0.948: docs/results.md; a soup of
#   three runs a split, as for 50Agree below, tied it on validation at 515 and tests at 0.9535,
#   a lead that did not replicate on splits 3-5: 1,286 against 1,287 of 1,356 test texts;
#   --config.data.train_from=50Agree --config.train.epochs=4, training with the rest of
#   PhraseBank too, tests at 0.954, 0.954 and 0.952 on splits 0-2, 3-5 and 6-11 but lost or tied
#   on validation, and both replications were short of the registered p < 0.05: 0.42 and 0.080).
#   Task-adaptive pretraining first (--mode pretrain --workdir runs/ATAPT_sN --config.seed=N
#   --config.data.subset=AllAgree, then this command with
#   --config.model.name_or_path=runs/ATAPT_sN/encoder) won validation by one text (516 against
#   515, test 0.9476) but did not replicate on splits 3-5 (test 1,283 against 1,287), and lost on
#   50Agree (982 against 994 validation texts, test 0.827): not recommended.
# The real offline run: all-MiniLM-L6-v2 (../shared, a pre-trained 6-layer BERT) on ../shared
# Financial PhraseBank 50Agree, FinBERT split, AdamW 5e-5, 4 epochs, batch 16 (chosen on
# validation over 32 and over max_length 128 on 2026-11-25), 10% warmup, ELBERT dynamic exit
# weights, CWB window 2; the last epoch is kept (train.select_metric=last since 2026-11-29, by a
# pre-registered rule on splits 3-5: 2,424 against 2,415 test texts for the epoch best on
# validation). Expected (docs/results.md, seeds 0/1/2): final-exit test accuracy
# 0.842 / 0.834 / 0.820, mean 0.832 (keeping the epoch best on validation: 0.842 / 0.846 / 0.818,
# mean 0.835; the transformers fine-tuning reference: 0.835). About 7-13 minutes on 2 CPU cores.
# Results recorded before 2026-11-25 ran at batch 32.
# --config.train.rdrop=4.0 (R-Drop) tests at 0.848 / 0.850 / 0.826, mean 0.842, but lost on
# validation (986 against 994 texts of 3 x 387), so it is not the default; ~30 minutes a seed.
# Recommended on validation (997 against 994, docs/results.md): a uniform soup of three runs on
# one split, this command with --config.seed=N, N+10, N+20 and --config.data.split_seed=N, then
# python -m elbert_jax.soup --out runs/soup_sN RUN RUN RUN (three runs' training, one model's
# inference). Of the runs' last epochs: test 0.851 / 0.847 / 0.815, mean 0.838 (validation 997
# of 3 x 387); of the epochs best on validation (--config.train.select_metric=accuracy): 0.847 /
# 0.847 / 0.814, mean 0.836 (997).
from pathlib import Path

from elbert_jax.config import base_config

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def get_config():
    config = base_config()
    config.seed = 0
    config.model.name_or_path = str(SHARED / "models" / "all-MiniLM-L6-v2")
    config.data.source = "phrasebank"
    config.data.path = str(SHARED / "data" / "financial_phrasebank" / "FinancialPhraseBank-v1.0")
    config.data.subset = "50Agree"
    config.train.epochs = 4
    config.train.lr = 5e-5
    config.train.batch_size = 16
    config.train.weight_decay = 0.01
    config.train.select_metric = "last"
    config.exit.window = 2
    return config
