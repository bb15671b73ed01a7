"""The run configuration: every key with its default, config files with dotted overrides, and
validation that reports every bad key at once before any compute.

Configs are Python files whose ``get_config()`` starts from :func:`base_config` (the Flax
examples' ``configs/default.py`` pattern); ``train.py --config path.py --config.x=y`` loads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import ml_collections

from elbert_jax import data as data_lib
from elbert_jax import exits
from elbert_jax.losses import WEIGHTINGS

SOURCES = ("phrasebank", "files", "hub", "demo")
# What train.select_metric keeps in DIR/best: the epoch best on that validation metric, or the last.
SELECT_METRICS = ("accuracy", "macro_f1", "policy_accuracy", "last")
CHOOSE_BY = ("accuracy", "agreement")  # what --mode report picks a setting by on validation (exit.choose_by)


class ConfigError(ValueError):
    """A config that cannot run: every bad key, named (train.py prints it without a traceback)."""


def base_config() -> ml_collections.ConfigDict:
    """Every key a config may set, with defaults (spec section 2). Configs start from this."""
    c = ml_collections.ConfigDict()
    c.seed = 42
    c.model = ml_collections.ConfigDict(dict(
        name_or_path="albert-base-v2",  # "" = from scratch with `scratch`
        tokenizer="",                   # "" = the model's own (or trained on the data from scratch)
        dtype="float32", head_per_layer=False, pooling="cls",
        new_head=False,  # True: a fresh classifier even if the checkpoint has one (other labels)
        hidden_dropout_prob=-1.0, attention_probs_dropout_prob=-1.0,  # < 0: the checkpoint's
        classifier_dropout_prob=0.1,
        scratch=ml_collections.ConfigDict(dict(
            model_type="albert", embedding_size=32, hidden_size=64, num_hidden_layers=4,
            num_attention_heads=4, intermediate_size=128, hidden_act="gelu_new",
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
            max_position_embeddings=128, tokenizer_vocab_size=600)),
    ))
    c.data = ml_collections.ConfigDict(dict(
        source="phrasebank", path="", subset="50Agree", deduplicate=True,
        split="finbert", test_fraction=0.2, validation_fraction=0.1,
        split_seed=-1,  # >= 0: the split's seed instead of `seed` (runs on one split, e.g. a soup's)
        train_file="", validation_file="", test_file="",
        hub_name="", hub_config="", train_split="train", validation_split="validation",
        test_split="test", text_column="text", label_column="label", pair_column="",
        label_names=ml_collections.FieldReference(None, field_type=list),
        demo_size=1500, max_length=64, buckets=(16, 32, 64),
        group_by_length=0,  # G > 0: training batches of similar lengths, sorted within G batches
        agreement_targets=False,  # PhraseBank: train on soft targets from annotator agreement
        # PhraseBank: a larger subset (e.g. 50Agree for subset AllAgree) whose texts outside
        # `subset` join the training split; validation and test stay `subset`'s
        train_from="",
        # True: the validation texts join training (a refit once settings are chosen); they then
        # measure nothing, so train.select_metric must be "last" and reports flag their choices
        train_on_validation=False,
        bad_rows="error",  # "skip": drop unreadable rows (counted and reported) instead of stopping
    ))
    c.train = ml_collections.ConfigDict(dict(
        epochs=3, batch_size=32, eval_batch_size=128, grad_accum=1,
        lr=3e-5, weight_decay=0.01, warmup_fraction=0.1, clip_norm=1.0,
        weighting="dyn", t_lr=1e-2, t_grad_quirk=False,
        distill_weight=0.0, distill_temperature=1.0,
        label_smoothing=0.0,  # > 0: each exit's cross-entropy against (1 - eps) one-hot + eps / K
        rdrop=0.0,  # > 0: R-Drop, two dropout passes per row, + rdrop x their symmetric KL per exit
        teacher="",  # a trained workdir: every exit also learns its last exit's train probabilities
        teacher_weight=0.5,  # targets = (1 - w) labels + w teacher probabilities
        teacher_temperature=1.0,  # the teacher's probabilities from logits / T
        ema_decay=0.0,  # > 0: evaluate, select and save an EMA of the encoder params (Polyak)
        layer_lr_decay=1.0,  # < 1: layer-wise lr decay, lr x decay^(depth below the top group)
        head_lr_scale=1.0,  # the exit heads' lr is lr x this (they start from random weights)
        log_every=20, checkpoint_every=0, keep_checkpoints=2, select_metric="accuracy",
        progress=True, max_steps=0,
        tensorboard=False,  # also write metrics.jsonl's numbers as TensorBoard scalars (tensorboardX)
        data_parallel="auto",  # "auto": split every batch over all devices (and hosts); "off": one
    ))
    c.pretrain = ml_collections.ConfigDict(dict(  # train.py --mode pretrain (elbert_jax.pretrain)
        epochs=10, batch_size=32, lr=1e-4, weight_decay=0.01, warmup_fraction=0.06, clip_norm=1.0,
        head_lr=1e-3,  # the masked-LM head's; one the checkpoint lacks starts random
        mask_rate=0.15,
        texts="",  # also an unlabelled corpus: .txt (a text a line) or .csv/.tsv/.jsonl's text_column
        text_column="text",
        held_out="refuse",  # corpus texts that are validation/test texts: "refuse" the run, "drop" them
    ))
    c.exit = ml_collections.ConfigDict(dict(
        policy="cwb", threshold=0.5, window=4, margin=0.0, variant="bias_1", spread=0.1,
        patience=2, layer=1,
        choose_by="agreement",  # --mode report's choice on validation: "agreement" with the last
        # exit (chosen 2026-11-29 by a pre-registered rule, docs/results.md) or "accuracy"
        calibrate=False,  # --mode report: fit one temperature per exit on validation and sweep and
        # choose every policy on the calibrated probabilities (exits.fit_temperatures)
    ))
    return c


def load_config_file(path: str | Path, **overrides: Any) -> ml_collections.ConfigDict:
    """``get_config()`` of a config file, with dotted overrides: ``{"train.epochs": 1}``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_elbert_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.lock()
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Every error found at once, each naming its key, before any compute."""
    errors = []
    schema = base_config()

    def walk(got: Any, want: Any, prefix: str) -> None:
        for key in got.keys():
            name = f"{prefix}{key}"
            if key not in want:
                errors.append(f"unknown key {name}")
            elif isinstance(want[key], ml_collections.ConfigDict):
                if isinstance(got[key], ml_collections.ConfigDict):
                    walk(got[key], want[key], name + ".")
                else:
                    errors.append(f"{name} must be a section")
            elif not _same_type(got[key], want[key]):
                errors.append(f"{name}={got[key]!r} must be {_type_name(want[key])}, "
                              f"not {type(got[key]).__name__}")
    walk(config, schema, "")
    if errors:
        raise ConfigError("invalid config: " + "; ".join(errors))
    d, t, e, s = config.data, config.train, config.exit, config.model.scratch
    devices = data_devices(t)
    checks = [
        (d.source in SOURCES, f"data.source={d.source!r} is not one of {SOURCES}"),
        (d.split in ("finbert", "stratified"), f"data.split={d.split!r} is not finbert/stratified"),
        (0 < d.test_fraction < 1 and 0 < d.validation_fraction < 1, "data fractions must be in (0, 1)"),
        (d.max_length >= 8, f"data.max_length={d.max_length} must be >= 8"),
        (all(0 < b for b in d.buckets), f"data.buckets={d.buckets} must be positive"),
        (d.group_by_length >= 0, f"data.group_by_length={d.group_by_length} must be >= 0"),
        (d.split_seed >= -1, f"data.split_seed={d.split_seed} must be >= 0, or -1 for `seed`"),
        (d.source != "phrasebank" or d.subset in data_lib.PHRASEBANK_SUBSETS,
         f"data.subset={d.subset!r} is not one of {data_lib.PHRASEBANK_SUBSETS}"),
        (not d.agreement_targets or d.source == "phrasebank",
         "data.agreement_targets=True needs data.source='phrasebank' (its four agreement subsets)"),
        (not d.train_from or (d.source == "phrasebank" and d.train_from in data_lib.PHRASEBANK_SUBSETS
                              and d.subset in data_lib.PHRASEBANK_SUBSETS and
                              data_lib.PHRASEBANK_SUBSETS.index(d.train_from)
                              < data_lib.PHRASEBANK_SUBSETS.index(d.subset)),
         f"data.train_from={d.train_from!r} must be a PhraseBank subset larger than data.subset="
         f"{d.subset!r} (one of {data_lib.PHRASEBANK_SUBSETS[:-1]}, with data.source='phrasebank')"),
        (not d.train_on_validation or t.select_metric == "last",
         "data.train_on_validation=True trains on the validation texts, so train.select_metric "
         f"must be 'last' (not {t.select_metric!r}): an epoch chosen on trained texts is a leak"),
        (d.source != "files" or bool(d.train_file), "data.source='files' needs data.train_file"),
        (not d.pair_column or d.source in ("files", "hub"),
         f"data.pair_column={d.pair_column!r} needs data.source 'files' or 'hub' ({d.source!r} "
         "has no sentence pairs)"),
        (d.source != "hub" or bool(d.hub_name), "data.source='hub' needs data.hub_name"),
        (t.epochs >= 1, f"train.epochs={t.epochs} must be >= 1"),
        (t.batch_size >= 1 and t.eval_batch_size >= 1, "train batch sizes must be >= 1"),
        (t.grad_accum >= 1, f"train.grad_accum={t.grad_accum} must be >= 1"),
        (t.lr > 0 and t.t_lr > 0, "train.lr and train.t_lr must be > 0"),
        (0 <= t.warmup_fraction < 1, f"train.warmup_fraction={t.warmup_fraction} must be in [0, 1)"),
        (t.clip_norm > 0, f"train.clip_norm={t.clip_norm} must be > 0"),
        (t.weighting in WEIGHTINGS, f"train.weighting={t.weighting!r} is not one of {WEIGHTINGS}"),
        (t.select_metric in SELECT_METRICS,
         f"train.select_metric={t.select_metric!r} is not one of {'/'.join(SELECT_METRICS)}"),
        (t.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1"),
        (config.model.dtype in ("float32", "bfloat16", "float16"),
         f"model.dtype={config.model.dtype!r} is not float32/bfloat16/float16"),
        (config.model.pooling in ("cls", "mean"),
         f"model.pooling={config.model.pooling!r} is not cls/mean"),
        (d.bad_rows in data_lib.BAD_ROWS, f"data.bad_rows={d.bad_rows!r} is not one of "
         f"{data_lib.BAD_ROWS}"),
        (not d.label_names or len(set(d.label_names)) == len(d.label_names) >= 2,
         f"data.label_names={d.label_names} must be >= 2 distinct names"),
        (d.demo_size >= 20, f"data.demo_size={d.demo_size} must be >= 20"),
        (t.log_every >= 1, f"train.log_every={t.log_every} must be >= 1"),
        (t.checkpoint_every >= 0 and t.max_steps >= 0,
         "train.checkpoint_every and train.max_steps must be >= 0"),
        (t.weight_decay >= 0 and t.distill_weight >= 0, "train.weight_decay and "
         "train.distill_weight must be >= 0"),
        (t.distill_temperature > 0, f"train.distill_temperature={t.distill_temperature} must be > 0"),
        (0 <= t.label_smoothing < 1, f"train.label_smoothing={t.label_smoothing} must be in [0, 1)"),
        (t.rdrop >= 0, f"train.rdrop={t.rdrop} must be >= 0"),
        (0 < t.teacher_weight <= 1, f"train.teacher_weight={t.teacher_weight} must be in (0, 1]"),
        (t.teacher_temperature > 0,
         f"train.teacher_temperature={t.teacher_temperature} must be > 0"),
        (not t.teacher or (Path(t.teacher) / "model.json").is_file(),
         f"train.teacher={t.teacher!r} is not a workdir written by train.py (no model.json)"),
        (0 <= t.ema_decay < 1, f"train.ema_decay={t.ema_decay} must be in [0, 1)"),
        (0 < t.layer_lr_decay <= 1, f"train.layer_lr_decay={t.layer_lr_decay} must be in (0, 1]"),
        (t.head_lr_scale > 0, f"train.head_lr_scale={t.head_lr_scale} must be > 0"),
        (config.pretrain.epochs >= 1 and config.pretrain.batch_size >= 1,
         "pretrain.epochs and pretrain.batch_size must be >= 1"),
        (config.pretrain.lr > 0 and config.pretrain.head_lr > 0 and config.pretrain.clip_norm > 0
         and config.pretrain.weight_decay >= 0, "pretrain.lr, head_lr and clip_norm must be > 0, "
         "weight_decay >= 0"),
        (0 <= config.pretrain.warmup_fraction < 1,
         f"pretrain.warmup_fraction={config.pretrain.warmup_fraction} must be in [0, 1)"),
        (0 < config.pretrain.mask_rate < 1,
         f"pretrain.mask_rate={config.pretrain.mask_rate} must be in (0, 1)"),
        (not config.pretrain.texts or Path(config.pretrain.texts).is_file(),
         f"pretrain.texts={config.pretrain.texts!r} is not a file"),
        (not config.pretrain.texts or Path(config.pretrain.texts).suffix.lower()
         in data_lib.INPUT_FORMATS,
         f"pretrain.texts={config.pretrain.texts!r} is not one of {data_lib.INPUT_FORMATS}"),
        (config.pretrain.held_out in ("refuse", "drop"),
         f"pretrain.held_out={config.pretrain.held_out!r} is not refuse or drop"),
        (e.choose_by in CHOOSE_BY, f"exit.choose_by={e.choose_by!r} is not one of {CHOOSE_BY}"),
        (t.data_parallel in ("auto", "off"), f"train.data_parallel={t.data_parallel!r} is not auto/off"),
        (t.batch_size % devices == 0 and t.eval_batch_size % devices == 0
         and config.pretrain.batch_size % devices == 0,
         f"train.batch_size={t.batch_size}, train.eval_batch_size={t.eval_batch_size} and "
         f"pretrain.batch_size={config.pretrain.batch_size} must be multiples of the {devices} "
         "devices the batch is split over"),
        (all(0 <= config.model[k] < 1 or config.model[k] < 0 for k in
             ("hidden_dropout_prob", "attention_probs_dropout_prob"))
         and 0 <= config.model.classifier_dropout_prob < 1, "model dropout rates must be < 1"),
    ]
    if not config.model.name_or_path:  # a model from scratch: its sizes come from model.scratch
        checks += [
            (s.model_type in ("albert", "bert"),
             f"model.scratch.model_type={s.model_type!r} is not albert/bert"),
            (s.hidden_size % max(s.num_attention_heads, 1) == 0,
             f"model.scratch.hidden_size={s.hidden_size} is not a multiple of "
             f"num_attention_heads={s.num_attention_heads}"),
            (min(s.hidden_size, s.num_hidden_layers, s.num_attention_heads, s.intermediate_size,
                 s.embedding_size) >= 1, "model.scratch sizes must be >= 1"),
            (d.max_length <= s.max_position_embeddings,
             f"data.max_length={d.max_length} exceeds model.scratch.max_position_embeddings="
             f"{s.max_position_embeddings}"),
        ]
    if t.tensorboard:
        import importlib.util

        checks.append((importlib.util.find_spec("tensorboardX") is not None,
                       "train.tensorboard=True needs tensorboardX (pip install -e '.[tensorboard]')"))
    errors = [message for ok, message in checks if not ok]
    try:
        exit_policy(config)
    except ValueError as err:
        errors.append(f"exit: {err}")
    if errors:
        raise ConfigError("invalid config: " + "; ".join(errors))


def _same_type(got: Any, want: Any) -> bool:
    """Config value types: ints pass for floats, lists for tuples, None/list for label_names."""
    if want is None:  # label_names: None or a list of names
        return got is None or (isinstance(got, (list, tuple)) and all(isinstance(x, str) for x in got))
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(got, bool) and isinstance(want, bool)
    if isinstance(want, float):
        return isinstance(got, (int, float))
    if isinstance(want, (list, tuple)):
        return isinstance(got, (list, tuple))
    return isinstance(got, type(want))


def _type_name(value: Any) -> str:
    if value is None:
        return "None or a list of strings"
    return {bool: "a bool", int: "an int", float: "a number", str: "a string",
            tuple: "a list", list: "a list"}.get(type(value), type(value).__name__)


def data_devices(t: ml_collections.ConfigDict) -> int:
    """Devices a training batch is split over: all of them unless ``train.data_parallel='off'``."""
    return jax.device_count() if t.data_parallel == "auto" else 1


def exit_policy(config: ml_collections.ConfigDict) -> exits.ExitPolicy:
    e = config.exit
    return exits.ExitPolicy(name=e.policy, threshold=e.threshold, window=e.window, margin=e.margin,
                            variant=e.variant, spread=e.spread, patience=e.patience, layer=e.layer)
