"""elbert_jax: ELBERT (ALBERT with confidence-window early exit) in JAX/Flax."""

from elbert_jax.convert import (config_from_hf, config_to_hf, load_pretrained, params_from_state_dict,
                                read_state_dict, save_pretrained, state_dict_from_params)
from elbert_jax.engines import ENGINES, Engine, Results
from elbert_jax.exits import ExitPolicy
from elbert_jax.model import (ElbertModel, EncoderConfig, ModelOutput, TransformerLayer, head_params,
                              init_params, layer_params)
from elbert_jax.predict import Predictor
from elbert_jax.serving import Batcher
from elbert_jax.tokenizer import Tokenizer, load_tokenizer

__version__ = "0.1.0"

__all__ = [
    "Batcher", "config_from_hf", "config_to_hf", "ElbertModel", "EncoderConfig", "Engine",
    "ENGINES", "ExitPolicy", "head_params", "init_params", "layer_params", "load_pretrained",
    "load_tokenizer", "ModelOutput", "params_from_state_dict", "Predictor", "read_state_dict",
    "Results", "save_pretrained", "state_dict_from_params", "Tokenizer", "TransformerLayer",
]
