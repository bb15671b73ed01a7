"""transformers checkpoints <-> elbert_jax parameters, both ways.

Reads ``AlbertModel``/``AlbertForSequenceClassification``/``BertModel``/``BertForSequenceClassification``
and their RoBERTa (DistilRoBERTa too), DistilBERT and ELECTRA (discriminator) equivalents
folders (``.safetensors``, sharded or not, or ``pytorch_model.bin``) from a local path or the hub, and
writes a folder that ``AutoModelForSequenceClassification`` loads with logits equal to our last exit.
The mapping is one table of names (``_LAYER_NAMES``); loading walks our own parameter template so
every parameter is either found, or (only the exit head) initialised and reported.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax
import jax
import numpy as np

from elbert_jax.model import ElbertModel, EncoderConfig, Params, init_params

log = logging.getLogger("elbert_jax")

# our layer submodule -> (ALBERT name, BERT and RoBERTa name, DistilBERT name), relative to one
# layer's prefix (_LAYER_PREFIX)
_LAYER_NAMES = {
    "query": ("attention.query", "attention.self.query", "attention.q_lin"),
    "key": ("attention.key", "attention.self.key", "attention.k_lin"),
    "value": ("attention.value", "attention.self.value", "attention.v_lin"),
    "attention_output": ("attention.dense", "attention.output.dense", "attention.out_lin"),
    "attention_layer_norm": ("attention.LayerNorm", "attention.output.LayerNorm", "sa_layer_norm"),
    "ffn": ("ffn", "intermediate.dense", "ffn.lin1"),
    "ffn_output": ("ffn_output", "output.dense", "ffn.lin2"),
    "output_layer_norm": ("full_layer_layer_norm", "output.LayerNorm", "output_layer_norm"),
}
_LAYER_COLUMN = {"albert": 0, "bert": 1, "roberta": 1, "distilbert": 2, "electra": 1}
_LAYER_PREFIX = {"albert": "encoder.albert_layer_groups.{}.albert_layers.0.",
                 "bert": "encoder.layer.{}.", "roberta": "encoder.layer.{}.",
                 "distilbert": "transformer.layer.{}.", "electra": "encoder.layer.{}."}
# the Dense from embedding width E to H (ours: embeddings/embedding_hidden_mapping_in)
_EMBEDDING_PROJECTION = {"albert": "encoder.embedding_hidden_mapping_in",
                         "electra": "embeddings_project"}
# our exit head's pooler and classifier in each family. RoBERTa's classification head reads <s>
# through its own dense + tanh; its pretrained ``pooler`` is not used by transformers' classifier
# (RobertaForSequenceClassification has none), so it is not ours either; ELECTRA's head is
# RoBERTa's with a GELU. DistilBERT's ``pre_classifier`` (dense + ReLU) is its pooler.
_POOLER = {"albert": "pooler", "bert": "pooler.dense", "roberta": "classifier.dense",
           "distilbert": "pre_classifier", "electra": "classifier.dense"}
_CLASSIFIER = {"albert": "classifier", "bert": "classifier", "roberta": "classifier.out_proj",
               "distilbert": "classifier", "electra": "classifier.out_proj"}
_OUTSIDE_THE_ENCODER = ("classifier.", "pre_classifier.")  # keys without the model's prefix
# checkpoint keys that carry nothing we use (pretraining heads, RoBERTa's unused pooler, buffers)
_IGNORED_PREFIXES = ("predictions.", "sop_classifier.", "cls.", "lm_head.", "pooler.",
                     "vocab_transform.", "vocab_layer_norm.", "vocab_projector.",
                     "discriminator_predictions.", "generator_predictions.", "generator_lm_head.",
                     "embeddings.position_ids", "embeddings.token_type_ids")
_ARCHITECTURES = {"albert": "Albert", "bert": "Bert", "roberta": "Roberta", "distilbert": "DistilBert",
                  "electra": "Electra"}
# masked-LM head: its dense layer, its norm, its output bias, the decoder's weight (the word
# embeddings, tied) and the decoder's bias (the output bias again; DistilBERT has only the one)
_MLM_HEAD = {
    "albert": ("predictions.dense", "predictions.LayerNorm", "predictions.bias",
               "predictions.decoder.weight", "predictions.decoder.bias"),
    "bert": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
             "cls.predictions.bias", "cls.predictions.decoder.weight", "cls.predictions.decoder.bias"),
    "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias", "lm_head.decoder.weight",
                "lm_head.decoder.bias"),
    "distilbert": ("vocab_transform", "vocab_layer_norm", "vocab_projector.bias",
                   "vocab_projector.weight", None),
}
MASKED_LM_FAMILIES = tuple(_MLM_HEAD)
# families that are another's architecture under their own name (same keys, ``roberta.`` included);
# they load as that family and export as it, which transformers runs the same way
_SAME_AS = {"xlm-roberta": "roberta", "camembert": "roberta"}
# DistilBertConfig's names for the fields that BertConfig names as EncoderConfig does
_DISTILBERT_NAMES = {"dim": "hidden_size", "n_layers": "num_hidden_layers",
                     "n_heads": "num_attention_heads", "hidden_dim": "intermediate_size",
                     "activation": "hidden_act", "dropout": "hidden_dropout_prob",
                     "attention_dropout": "attention_probs_dropout_prob",
                     "seq_classif_dropout": "classifier_dropout"}
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_HUB_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*",
                 "spiece.model", "vocab.txt", "vocab.json", "merges.txt", "special_tokens_map.json"]
# older hub repos (ProsusAI/finbert's generation) hold PyTorch pickles only: fetched only then
_HUB_PYTORCH_PATTERNS = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]


def config_from_hf(hf_config: Any, num_labels: int | None = None, **overrides: Any) -> EncoderConfig:
    """EncoderConfig from a transformers ALBERT/BERT/RoBERTa/DistilBERT/ELECTRA config or dict."""
    c = hf_config if isinstance(hf_config, Mapping) else hf_config.to_dict()
    model_type = _SAME_AS.get(c.get("model_type"), c.get("model_type"))
    if model_type not in _ARCHITECTURES:
        raise ValueError(f"model_type={model_type!r} is not supported: elbert_jax loads ALBERT, BERT, "
                         "RoBERTa (XLM-RoBERTa, CamemBERT), DistilBERT and ELECTRA checkpoints")
    if model_type == "distilbert":
        if c.get("sinusoidal_pos_embds"):
            raise ValueError("sinusoidal_pos_embds=True is not supported: transformers keeps that "
                             "DistilBERT position table fixed, where ours would train it")
        c = {**c, **{ours: c[theirs] for theirs, ours in _DISTILBERT_NAMES.items() if theirs in c},
             "type_vocab_size": 1, "layer_norm_eps": 1e-12}  # no token types; a fixed epsilon
    if c.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type={c['position_embedding_type']!r} is not supported "
                         "(only 'absolute')")
    if model_type == "albert" and c.get("inner_group_num", 1) != 1:
        raise ValueError(f"inner_group_num={c['inner_group_num']} is not supported (only 1, as in every "
                         "released ALBERT checkpoint)")
    if num_labels is None:
        id2label = c.get("id2label") or {}
        num_labels = len(id2label) or c.get("num_labels", 2)
    if model_type == "albert":
        classifier_dropout = c.get("classifier_dropout_prob", 0.1)
    else:
        classifier_dropout = c.get("classifier_dropout")
        if classifier_dropout is None:
            classifier_dropout = c.get("hidden_dropout_prob", 0.1)
    pad_token_id = c.get("pad_token_id")  # an explicit 0 stays 0
    if pad_token_id is None:
        pad_token_id = 1 if model_type == "roberta" else 0
    embedding_size = None  # E = H: no projection
    if model_type == "albert":
        embedding_size = c.get("embedding_size", 128)
    elif model_type == "electra" and c.get("embedding_size", c["hidden_size"]) != c["hidden_size"]:
        embedding_size = c["embedding_size"]
    fields = dict(
        model_type=model_type,
        vocab_size=c["vocab_size"],
        embedding_size=embedding_size,
        hidden_size=c["hidden_size"],
        num_hidden_layers=c["num_hidden_layers"],
        num_hidden_groups=c.get("num_hidden_groups", 1) if model_type == "albert" else None,
        num_attention_heads=c["num_attention_heads"],
        intermediate_size=c["intermediate_size"],
        hidden_act=c.get("hidden_act", "gelu"),
        hidden_dropout_prob=c.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=c.get("attention_probs_dropout_prob", 0.1),
        classifier_dropout_prob=classifier_dropout,
        max_position_embeddings=c.get("max_position_embeddings", 512),
        type_vocab_size=c.get("type_vocab_size", 2),
        layer_norm_eps=c.get("layer_norm_eps", 1e-12),
        initializer_range=c.get("initializer_range", 0.02),
        pad_token_id=pad_token_id,
        num_labels=num_labels,
    )
    fields.update(overrides)
    return EncoderConfig(**fields)


def config_to_hf(config: EncoderConfig, label_names: Sequence[str] | None = None) -> Any:
    """A transformers config for ``*ForSequenceClassification`` matching ``config``."""
    import transformers

    if config.pooling != "cls":
        raise ValueError(f"pooling={config.pooling!r} has no transformers *ForSequenceClassification "
                         "equivalent (its head reads [CLS]); export supports pooling='cls' only")
    labels = list(label_names) if label_names else [f"LABEL_{i}" for i in range(config.num_labels)]
    if len(labels) != config.num_labels:
        raise ValueError(f"{len(labels)} label names for num_labels={config.num_labels}")
    common = dict(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size, hidden_act=config.hidden_act,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size, layer_norm_eps=config.layer_norm_eps,
        initializer_range=config.initializer_range, pad_token_id=config.pad_token_id,
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
    )
    if config.model_type == "albert":
        return transformers.AlbertConfig(
            embedding_size=config.embedding_size, num_hidden_groups=config.groups, inner_group_num=1,
            classifier_dropout_prob=config.classifier_dropout_prob,
            architectures=["AlbertForSequenceClassification"], **common)
    if config.model_type == "distilbert":
        if config.layer_norm_eps != 1e-12:
            raise ValueError(f"layer_norm_eps={config.layer_norm_eps} cannot be exported: "
                             "DistilBERT's is fixed at 1e-12")
        names = {ours: theirs for theirs, ours in _DISTILBERT_NAMES.items()}
        fields = {names.get(k, k): v for k, v in common.items()
                  if k not in ("type_vocab_size", "layer_norm_eps")}
        fields[names["classifier_dropout"]] = config.classifier_dropout_prob
        return transformers.DistilBertConfig(sinusoidal_pos_embds=False, **fields,
                                             architectures=["DistilBertForSequenceClassification"])
    if config.model_type == "electra":
        common["embedding_size"] = config.embedding_size or config.hidden_size
    family = _ARCHITECTURES[config.model_type]
    return getattr(transformers, family + "Config")(
        classifier_dropout=config.classifier_dropout_prob,
        architectures=[family + "ForSequenceClassification"], **common)


def _hf_name(config: EncoderConfig, path: tuple[str, ...], index: int | None) -> tuple[str, str]:
    """(transformers key without model prefix, how to transform) for one of our parameter paths.

    ``index`` is the hidden group for layer parameters. Transforms: 'T' (Dense kernel, transposed),
    'id' (bias, LayerNorm scale/bias, embedding table).
    """
    *module, leaf = path
    suffix = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}[leaf]
    how = "T" if leaf == "kernel" else "id"
    top = module[0]
    if top == "embeddings":
        if module[1] == "embedding_hidden_mapping_in":
            return f"{_EMBEDDING_PROJECTION[config.model_type]}.{suffix}", how
        return f"embeddings.{module[1]}.{suffix}", how
    if top == "encoder":
        name = _LAYER_NAMES[module[-1]][_LAYER_COLUMN[config.model_type]]
        return f"{_LAYER_PREFIX[config.model_type].format(index)}{name}.{suffix}", how
    if top == "exits":
        if module[-1] == "pooler":
            return f"{_POOLER[config.model_type]}.{suffix}", how
        return f"{_CLASSIFIER[config.model_type]}.{suffix}", how
    raise KeyError(path)


def _normalise_keys(state: Mapping[str, np.ndarray], model_type: str) -> dict[str, np.ndarray]:
    """Strips the model's prefix (``bert.``, ...) and maps legacy ``gamma``/``beta`` names."""
    out = {}
    for key, value in state.items():
        if key.startswith(model_type + "."):
            key = key[len(model_type) + 1:]
        if key.endswith(".gamma"):
            key = key[:-len("gamma")] + "weight"
        elif key.endswith(".beta"):
            key = key[:-len("beta")] + "bias"
        out[key] = value
    return out


def params_from_state_dict(config: EncoderConfig, state: Mapping[str, np.ndarray], seed: int = 0,
                           source: str = "checkpoint") -> tuple[Params, dict[str, list[str]]]:
    """Our params from a transformers state dict (numpy, any float dtype).

    Returns the params and a report: ``initialised`` (exit-head parameters absent from the
    checkpoint, kept at their random init) and ``unused`` (checkpoint keys we did not read).
    A missing encoder parameter or a shape mismatch is an error naming the key and ``source``.
    """
    state = _normalise_keys(state, config.model_type)
    template = flax.traverse_util.flatten_dict(flax.core.unfreeze(init_params(config, seed)))
    per_layer_head = config.head_per_layer
    stacked_len = {"encoder": config.groups, "exits": config.num_hidden_layers if per_layer_head else 0}
    used: set[str] = set()
    initialised: list[str] = []
    out = {}
    for path, init in template.items():
        top = path[0]
        copies = stacked_len.get(top, 0)
        indices = range(copies) if (top == "encoder") else [None]
        arrays = []
        for index in indices:
            key, how = _hf_name(config, path, index)
            if key not in state:
                if top == "exits":
                    arrays = None
                    initialised.append(key)
                    break
                raise KeyError(f"{source}: parameter {key!r} is missing (needed for "
                               f"{'/'.join(path)}); is this a {config.model_type} checkpoint with "
                               f"{config.groups} hidden group(s)?")
            value = np.asarray(state[key], dtype=np.float32)
            value = value.T if how == "T" else value
            used.add(key)
            arrays.append(value)
        if arrays is None:
            out[path] = init
            continue
        value = np.stack(arrays) if top == "encoder" else arrays[0]
        if top == "exits" and per_layer_head:
            value = np.broadcast_to(value, (config.num_hidden_layers,) + value.shape)
        if value.shape != init.shape:
            raise ValueError(f"{source}: {key!r} has shape {tuple(state[key].shape)}, which does not "
                             f"fit {'/'.join(path)} {tuple(init.shape)} of {config}")
        out[path] = jax.numpy.asarray(value)
    unused = sorted(k for k in state if k not in used and not k.startswith(_IGNORED_PREFIXES))
    params = flax.traverse_util.unflatten_dict(out)
    return params, {"initialised": initialised, "unused": unused}


def state_dict_from_params(config: EncoderConfig, params: Params) -> dict[str, np.ndarray]:
    """transformers ``*ForSequenceClassification`` state dict (float32 numpy) from our params.

    With per-layer heads, the last layer's head becomes the exported classifier.
    """
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params))
    state = {}
    for path, value in flat.items():
        value = np.asarray(value, dtype=np.float32)
        top = path[0]
        if top == "exits" and config.head_per_layer:
            value = value[-1]
        copies = range(config.groups) if top == "encoder" else [None]
        for index in copies:
            key, how = _hf_name(config, path, index)
            v = value[index] if index is not None else value
            v = v.T if how == "T" else v
            full = key if key.startswith(_OUTSIDE_THE_ENCODER) else f"{config.model_type}.{key}"
            state[full] = np.ascontiguousarray(v)
    return state


def mlm_head_names(config: EncoderConfig) -> dict[tuple[str, ...], str]:
    """Our masked-LM head's parameter paths (``pretrain.MaskedLMHead``) and their keys in
    transformers' ``*ForMaskedLM`` (``MASKED_LM_FAMILIES``). Their decoder weight is the word
    embedding table (tied) and their decoder bias is ``bias`` again."""
    dense, norm, bias, _, _ = _MLM_HEAD[config.model_type]
    return {("dense", "kernel"): dense + ".weight", ("dense", "bias"): dense + ".bias",
            ("LayerNorm", "scale"): norm + ".weight", ("LayerNorm", "bias"): norm + ".bias",
            ("bias",): bias}


def mlm_head_from_state_dict(config: EncoderConfig, state: Mapping[str, np.ndarray], init: Params
                             ) -> tuple[Params, bool]:
    """The masked-LM head of a checkpoint that has one (``*ForPreTraining``/``*ForMaskedLM``), else
    ``init``; and whether it came from the checkpoint. A partial head is an error."""
    names = mlm_head_names(config)
    found = [key for key in names.values() if key in state]
    if not found:
        return init, False
    if len(found) < len(names):
        raise KeyError(f"the checkpoint's masked-LM head lacks {sorted(set(names.values()) - set(found))}")
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(init))
    out = {}
    for path, key in names.items():
        value = np.asarray(state[key], np.float32)
        value = value.T if path[-1] == "kernel" else value
        if value.shape != flat[path].shape:
            raise ValueError(f"{key!r} has shape {value.shape}, which does not fit {flat[path].shape}")
        out[path] = jax.numpy.asarray(value)
    return flax.traverse_util.unflatten_dict(out), True


def mlm_head_state_dict(config: EncoderConfig, head: Params, word_embeddings: np.ndarray
                        ) -> dict[str, np.ndarray]:
    """transformers' masked-LM head tensors from ours, the tied decoder included."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(head))
    state = {}
    for path, key in mlm_head_names(config).items():
        value = np.asarray(flat[path], np.float32)
        state[key] = np.ascontiguousarray(value.T if path[-1] == "kernel" else value)
    _, _, bias, decoder, decoder_bias = _MLM_HEAD[config.model_type]
    state[decoder] = np.asarray(word_embeddings, np.float32)
    if decoder_bias is not None:
        state[decoder_bias] = state[bias]
    return state


def _resolve(name_or_path: str | os.PathLike) -> Path:
    """A local folder as is; otherwise a hub repo id, downloaded (weights, config, tokenizer):
    safetensors, or the PyTorch pickles where a repo has no safetensors (reading them needs
    torch)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{path} is a file; pass the checkpoint folder")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(str(name_or_path), allow_patterns=_HUB_PATTERNS))
        if not any((folder / name).exists() for name in _WEIGHT_FILES):
            folder = Path(snapshot_download(str(name_or_path),
                                            allow_patterns=_HUB_PYTORCH_PATTERNS))
        return folder
    except Exception as err:  # offline, unknown repo: say what was tried
        raise OSError(f"{name_or_path!r} is not a local folder and could not be fetched from the "
                      f"hub ({type(err).__name__}: {err})") from err


def read_state_dict(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a transformers checkpoint folder as numpy (safetensors preferred)."""
    folder = Path(folder)
    names = [f for f in _WEIGHT_FILES if (folder / f).exists()]
    if not names:
        raise FileNotFoundError(f"{folder}: no weights found (looked for {', '.join(_WEIGHT_FILES)})")
    name = names[0]
    if name.endswith(".index.json"):
        index = json.loads((folder / name).read_text())
        files = sorted(set(index["weight_map"].values()))
    else:
        files = [name]
    state: dict[str, np.ndarray] = {}
    for file in files:
        if file.endswith(".safetensors"):
            from safetensors.numpy import load_file

            state.update(load_file(folder / file))
        else:
            try:
                import torch
            except ImportError as err:
                raise ImportError(f"{folder / file} is a PyTorch pickle; reading it needs torch "
                                  "(pip install torch), or convert it to safetensors") from err
            tensors = torch.load(folder / file, map_location="cpu", weights_only=True)
            state.update({k: v.float().numpy() for k, v in tensors.items()})
    return state


def read_checkpoint(name_or_path: str | os.PathLike) -> tuple[Any, dict[str, np.ndarray], Path]:
    """A transformers checkpoint's config, all its tensors (numpy) and its local folder."""
    import transformers

    folder = _resolve(name_or_path)
    return transformers.AutoConfig.from_pretrained(folder), read_state_dict(folder), folder


def load_pretrained(name_or_path: str | os.PathLike, num_labels: int | None = None, *,
                    seed: int = 0, new_head: bool = False, require_head: bool = False,
                    checkpoint: tuple[Any, dict[str, np.ndarray], Path] | None = None,
                    **config_overrides: Any) -> tuple[ElbertModel, Params]:
    """Model and float32 params from a transformers checkpoint (folder or hub id) of a family
    ``config_from_hf`` takes.

    ``num_labels`` defaults to the checkpoint's label count; a checkpoint whose classifier has a
    different count is refused (its head would be meaningless) unless ``new_head`` asks for a
    fresh classifier. ``config_overrides`` set ``EncoderConfig`` fields such as
    ``dtype="bfloat16"``, ``head_per_layer=True`` or dropouts. The exit head's pooler and
    classifier come from the checkpoint when it has them; otherwise they are initialised from
    ``seed`` and a warning names them, or, with ``require_head`` (serving, where a random head
    would answer at random), a ValueError does. ``checkpoint``: ``read_checkpoint(name_or_path)``
    when the caller has read it already (for the tensors a classifier does not use).
    """
    hf_config, state, folder = checkpoint or read_checkpoint(name_or_path)
    config = config_from_hf(hf_config, num_labels, **config_overrides)
    prefix = _CLASSIFIER[config.model_type] + "."  # classifier keys carry no model prefix
    weight = state.get(prefix + "weight")
    labels = weight.shape[0] if weight is not None else None
    if new_head:  # a fresh classifier; the pooler (RoBERTa: the head's dense layer) stays
        state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    elif labels is not None and labels != config.num_labels:
        names = list((hf_config.to_dict().get("id2label") or {}).values())
        raise ValueError(f"{folder}: the checkpoint's classifier has num_labels={labels} {names} "
                         f"but num_labels={config.num_labels} was asked for; use matching labels, "
                         "or new_head=True (config model.new_head) for a fresh classifier")
    params, report = params_from_state_dict(config, state, seed, str(folder))
    if report["initialised"] and require_head:
        raise ValueError(f"{folder}: not a trained classifier ({', '.join(report['initialised'])} "
                         "not in the checkpoint, e.g. a bare encoder or a masked-LM model); "
                         "fine-tune it first (train.py --config.model.name_or_path=...)")
    if report["initialised"]:
        log.warning("%s: exit head initialised from seed %d (not in the checkpoint): %s", folder,
                    seed, ", ".join(report["initialised"]))
    else:
        log.info("%s: exit head (pooler and classifier) imported from the checkpoint", folder)
    if report["unused"]:
        log.warning("%s: %d checkpoint tensors not used: %s", folder, len(report["unused"]),
                    ", ".join(report["unused"][:10]))
    return ElbertModel(config), params


def save_pretrained(folder: str | os.PathLike, config: EncoderConfig, params: Params,
                    tokenizer: Any = None, label_names: Sequence[str] | None = None,
                    classifier: bool = True, extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """Writes a transformers folder: config.json, model.safetensors and the tokenizer's files.

    ``AutoModelForSequenceClassification.from_pretrained(folder)`` then gives our last exit's logits.
    ``classifier=False`` leaves the classifier out (an encoder to fine-tune, whose exits start
    fresh); ``extra`` adds tensors under their transformers names (a masked-LM head).
    """
    from safetensors.numpy import save_file

    hf_config = config_to_hf(config, label_names)  # may refuse: before anything is written
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(folder)
    state = state_dict_from_params(config, params)
    if not classifier:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    save_file(state | dict(extra or {}), folder / "model.safetensors", metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder
