# COMMAND: python train.py --config configs/fsa_minilm.py --workdir runs/fsa_minilm
#   other seeds / subsets: --config.seed=1 --config.data.subset=AllAgree (with AllAgree's 1,626
#   training texts, --config.train.epochs=8 was better on validation, and adding
#   --config.train.layer_lr_decay=0.9 by 3 of 543 validation texts, though not on test:
#   docs/results.md)
# The real offline run: all-MiniLM-L6-v2 (../shared, a pre-trained 6-layer BERT) on ../shared
# Financial PhraseBank 50Agree, FinBERT split, AdamW 5e-5, 4 epochs, batch 32, 10% warmup,
# ELBERT dynamic exit weights, CWB window 2. Expected (docs/results.md): final-exit test accuracy
# around the transformers fine-tuning baseline of 0.835 (benchmarks.md).
from pathlib import Path

from elbert_jax.training import base_config

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
    config.train.weight_decay = 0.01
    config.exit.window = 2
    return config
