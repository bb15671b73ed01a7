"""Trains an ELBERT model: python train.py --config configs/fsa.py --workdir runs/fsa.

Not yet: the training pipeline (data, multi-exit losses, Orbax checkpoints) lands with the
training issue. The model, checkpoint conversion and tokenizer are ready in ``elbert_jax``.
"""

import sys

if __name__ == "__main__":
    sys.exit("train.py: not yet implemented (training issue); see README.md for what works now")
