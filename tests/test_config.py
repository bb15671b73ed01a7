"""Config files, dotted overrides and up-front validation (every bad key named at once)."""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections
import pytest

from elbert_jax import config as config_lib

ROOT = Path(__file__).resolve().parents[1]


def tiny(**overrides):
    return config_lib.load_config_file(ROOT / "configs" / "tiny.py", **overrides)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.py")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    config_lib.validate_config(config_lib.load_config_file(path))
    assert path.read_text().startswith("# COMMAND: python train.py --config configs/" + path.name)


def test_config_validation_names_keys():
    with pytest.raises(ValueError, match="train.weighting='cubic'") as err:
        config_lib.validate_config(tiny(**{"train.weighting": "cubic", "data.source": "web"}))
    assert "data.source='web'" in str(err.value)
    config = tiny()
    with config.unlocked():
        config.train.epochz = 3
    with pytest.raises(ValueError, match="unknown key train.epochz"):
        config_lib.validate_config(config)
    with pytest.raises(KeyError, match="Did you mean"):
        tiny(**{"train.epochz": 3})  # a locked config refuses unknown keys outright


def test_config_validation_types_and_impossible_values():
    raw = json.loads(tiny().to_json())
    raw["train"]["epochs"] = "3"
    raw["train"]["progress"] = 1
    raw["exit"]["threshold"] = "high"
    raw["data"]["label_names"] = [0, 1]
    raw["exit"]["calibrate"] = "yes"
    with pytest.raises(ValueError) as err:
        config_lib.validate_config(ml_collections.ConfigDict(raw))
    for expected in ("train.epochs='3' must be an int", "train.progress=1 must be a bool",
                     "exit.threshold='high' must be a number", "data.label_names=[0, 1] must be None",
                     "exit.calibrate='yes' must be a bool"):
        assert expected in str(err.value)
    bad = {"train.batch_size": 0, "model.scratch.hidden_size": 31, "data.max_length": 64,
           "data.bad_rows": "ignore", "train.data_parallel": "maybe", "train.log_every": 0,
           "model.classifier_dropout_prob": 1.5, "data.label_names": ["a", "a"],
           "train.ema_decay": 1.0, "train.layer_lr_decay": 0.0, "train.head_lr_scale": 0.0,
           "train.label_smoothing": 1.0,
           "train.rdrop": -1.0, "train.teacher_weight": 0.0, "train.teacher_temperature": 0.0,
           "exit.choose_by": "votes", "data.pair_column": "sentence2"}  # tiny reads demo data
    with pytest.raises(ValueError) as err:
        config_lib.validate_config(tiny(**bad))
    for expected in ("train batch sizes", "hidden_size=31 is not a multiple of num_attention_heads=2",
                     "data.max_length=64 exceeds model.scratch.max_position_embeddings=32",
                     "data.bad_rows='ignore'", "train.data_parallel='maybe'", "train.log_every=0",
                     "dropout", "data.label_names=['a', 'a']", "train.ema_decay=1.0 must be",
                     "train.layer_lr_decay=0.0 must be", "train.head_lr_scale=0.0 must be",
                     "train.label_smoothing=1.0 must be",
                     "train.rdrop=-1.0 must be", "train.teacher_weight=0.0 must be",
                     "train.teacher_temperature=0.0 must be", "exit.choose_by='votes'",
                     "data.pair_column='sentence2' needs data.source 'files' or 'hub'"):
        assert expected in str(err.value)
