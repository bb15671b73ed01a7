# COMMAND: python train.py --config configs/tiny.py --workdir /tmp/tiny
# For the tests: the demo data, a 3-layer H=16 ALBERT, one short epoch on 2 CPU cores in seconds.
# Expected: runs end to end; accuracy is not meaningful.
from elbert_jax.config import base_config


def get_config():
    config = base_config()
    config.seed = 0
    config.model.name_or_path = ""
    config.model.scratch.embedding_size = 8
    config.model.scratch.hidden_size = 16
    config.model.scratch.num_hidden_layers = 3
    config.model.scratch.num_attention_heads = 2
    config.model.scratch.intermediate_size = 32
    config.model.scratch.max_position_embeddings = 32
    config.model.scratch.tokenizer_vocab_size = 200
    config.data.source = "demo"
    config.data.demo_size = 200
    config.data.max_length = 32
    config.data.buckets = (16, 32)
    config.train.epochs = 2
    config.train.batch_size = 16
    config.train.eval_batch_size = 32
    config.train.lr = 1e-3
    config.train.log_every = 2
    config.train.progress = False
    config.exit.window = 2
    return config
