"""Shared fixtures: tiny random transformers checkpoints saved locally, and ../shared when present."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# One XLA compilation cache for the whole session, subprocesses included (they inherit the
# environment): the engine tests and the train.py / infer.py runs compile the same small programs
# over and over. Set before any test module imports jax; an outer setting wins; removed at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="elbert_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")

# pytest-xdist runs one worker a core; on a GPU each would otherwise take 75% of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

SHARED = Path(os.environ.get("ELBERT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
ALBERT_TOKENIZER = SHARED / "models" / "albert-base-v2-tokenizer"
MINILM = SHARED / "models" / "all-MiniLM-L6-v2"


def shared_path(path: Path) -> Path:
    """``path`` under ../shared, or a pytest skip saying it is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not beside this checkout)")
    return path


def save_random_hf(folder: Path, kind: str, *, head: bool | str = True, seed: int = 0,
                   **config) -> Path:
    """``elbert_jax.parity.save_random_checkpoint``, skipped without torch."""
    pytest.importorskip("torch")
    from elbert_jax.parity import save_random_checkpoint

    return save_random_checkpoint(folder, kind, head=head, seed=seed, **config)


def save_roberta_tokenizer(folder: Path) -> Path:
    """A small byte-level BPE tokenizer of RoBERTa's kind (``<s> A </s></s> B </s>``, padding id 1,
    no token types): the 256 byte symbols and a few merges, saved with ``save_pretrained``."""
    import transformers
    from tokenizers import pre_tokenizers

    merges = [("Ġ", "t"), ("Ġ", "s"), ("Ġ", "p"), ("e", "r"), ("i", "n"), ("Ġt", "h"), ("o", "f"),
              ("Ġp", "r"), ("Ġpr", "of"), ("e", "s")]
    pieces = (["<s>", "<pad>", "</s>", "<unk>"] + sorted(pre_tokenizers.ByteLevel.alphabet())
              + ["".join(m) for m in merges] + ["<mask>"])
    tokenizer = transformers.RobertaTokenizer(vocab={p: i for i, p in enumerate(pieces)},
                                              merges=merges)
    tokenizer.save_pretrained(folder)
    return Path(folder)


TINY_ALBERT = dict(vocab_size=99, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                   num_attention_heads=4, intermediate_size=37, max_position_embeddings=64)
TINY_BERT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=64)
# RoBERTa: one token type, padding id 1, positions numbered from 2 (hence 64 + 2 of them)
TINY_ROBERTA = dict(TINY_BERT, type_vocab_size=1, pad_token_id=1, max_position_embeddings=66)
# DistilBERT: its config's own names; no token types, no pooler (a pre_classifier with a ReLU)
TINY_DISTILBERT = dict(vocab_size=99, dim=32, n_layers=3, n_heads=4, hidden_dim=37,
                       max_position_embeddings=64)
# ELECTRA: BERT's layers after a projection of the embeddings from E to H (when E != H)
TINY_ELECTRA = dict(TINY_BERT, embedding_size=16)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A workdir trained with configs/tiny.py (seconds on CPU), shared by the test modules."""
    from elbert_jax import config as config_lib
    from elbert_jax import training

    workdir = tmp_path_factory.mktemp("tiny")
    config = config_lib.load_config_file(Path(__file__).resolve().parents[1] / "configs" / "tiny.py")
    return workdir, training.train_and_evaluate(config, workdir)


@pytest.fixture(scope="session")
def second_run(tmp_path_factory, trained):
    """Another tiny run on the `trained` fixture's split (seed 0): other init, order and dropout."""
    from elbert_jax import config as config_lib
    from elbert_jax import training

    workdir = tmp_path_factory.mktemp("tiny_seed1")
    config = config_lib.load_config_file(Path(__file__).resolve().parents[1] / "configs" / "tiny.py",
                                         **{"seed": 1, "data.split_seed": 0, "train.epochs": 1})
    training.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture
def other_split_run(trained, tmp_path):
    """A copy of the `trained` workdir whose config.json names another split (split seed 7)."""
    import json
    import shutil

    other = tmp_path / "other_split"
    shutil.copytree(trained[0], other)
    config = json.loads((other / "config.json").read_text())
    config["data"]["split_seed"] = 7
    (other / "config.json").write_text(json.dumps(config))
    return other
