# COMMAND: python train.py --config configs/fsa.py --workdir runs/fsa
#   local data instead of the hub: --config.data.path=/path/to/FinancialPhraseBank-v1.0(.zip)
#   a local ALBERT folder:         --config.model.name_or_path=/path/to/albert-base-v2
# The paper's setting: albert-base-v2 (hub) fine-tuned on Financial PhraseBank 50Agree (hub zip),
# FinBERT split, ELBERT dynamic weights, CWB exit with window 4 (N=4 for L=12). Needs a GPU for a
# sensible run time (add --config.model.dtype=bfloat16). Expected: not measured here (no ALBERT
# weights are reachable offline); FinBERT reports 0.86 accuracy on 50Agree with BERT-base.
from elbert_jax.config import base_config


def get_config():
    config = base_config()
    config.model.name_or_path = "albert-base-v2"
    config.data.source = "phrasebank"
    config.data.path = ""  # "" = download FinancialPhraseBank-v1.0.zip from the hub
    config.data.subset = "50Agree"
    config.train.epochs = 3
    config.train.lr = 3e-5
    config.exit.window = 4
    return config
