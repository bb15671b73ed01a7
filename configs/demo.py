# COMMAND: python train.py --config configs/demo.py --workdir runs/demo
# The offline quickstart: no download. 2500 template sentences written for this project
# (elbert_jax/demo.py), a WordPiece tokenizer built from them, and a 4-layer ALBERT (shared layer,
# E=32, H=64) trained from scratch with ELBERT's dynamic exit weights. About a minute on 2 CPU
# cores. Expected (measured, docs/results.md): test accuracy 0.998-1.0 at the last exit and
# 0.995-1.0 with CWB (tau 0.5, N 2) at computation cost 0.34-0.43 (float rounding, of the CPU and
# of the code, moves it): the templates are easy, this shows the machinery, not a benchmark.
from elbert_jax.config import base_config


def get_config():
    config = base_config()
    config.seed = 0
    config.model.name_or_path = ""  # from scratch: config.model.scratch
    config.data.source = "demo"
    config.data.max_length = 32
    config.data.buckets = (16, 32)
    config.model.classifier_dropout_prob = 0.0
    config.data.demo_size = 2500
    config.train.epochs = 15
    config.train.batch_size = 32
    config.train.lr = 5e-4
    config.train.warmup_fraction = 0.1
    config.train.log_every = 10
    config.exit.window = 2
    return config
