# COMMAND: python train.py --config configs/fsa_minilm_exits.py --workdir runs/fsa_minilm_exits
#   then: python train.py --config configs/fsa_minilm_exits.py --workdir runs/fsa_minilm_exits --mode report
# The early-exit recipe for all-MiniLM-L6-v2 (../shared) on ../shared Financial PhraseBank 50Agree:
# configs/fsa_minilm.py with exits that can read something below the last layer. This checkpoint's
# [CLS] state is input-independent below layer 5 (docs/results.md), so the exits read the token
# mean; each layer gets its own pooler and classifier, since the six hidden spaces differ; and
# exits 1-5 also learn from the last exit (self-distillation). CWB window 4.
# Expected (docs/results.md, seed 0): last exit 0.834, exits 1..6 0.59 0.67 0.79 0.83 0.83 0.83; CWB
# 0.831 at computation cost 0.45 on the test sweep, 0.816-0.826 when its window and tau are chosen
# on validation (--mode report). About 11 minutes on 2 CPU cores.
from pathlib import Path

from elbert_jax.training import load_config_file


def get_config():
    config = load_config_file(Path(__file__).with_name("fsa_minilm.py"))
    config.model.pooling = "mean"
    config.model.head_per_layer = True
    config.train.distill_weight = 1.0
    config.exit.window = 4
    return config
