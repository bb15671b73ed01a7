# COMMAND: python train.py --config configs/demo.py --workdir runs/demo
# The offline quickstart: no download. 1500 template sentences written for this project
# (elbert_jax/demo.py), a WordPiece tokenizer trained on them, and a 4-layer ALBERT (shared layer,
# E=32, H=64) trained from scratch with ELBERT's dynamic exit weights. About 1-2 minutes on 2 CPU
# cores. Expected: test accuracy >= 0.9 at the last exit, CWB (tau=0.5) close to it at lower cost.
from elbert_jax.training import base_config


def get_config():
    config = base_config()
    config.seed = 0
    config.model.name_or_path = ""  # from scratch: config.model.scratch
    config.data.source = "demo"
    config.data.max_length = 32
    config.data.buckets = (16, 32)
    config.train.epochs = 6
    config.train.batch_size = 32
    config.train.lr = 2e-3
    config.train.warmup_fraction = 0.1
    config.train.log_every = 10
    config.exit.window = 2
    return config
