"""The trainer: config -> data -> multi-exit training with Optax -> Orbax checkpoints in a workdir.

A workdir holds everything needed to resume, evaluate and serve: ``config.json`` (the run's
config), ``model.json`` (architecture, label names, exit defaults), ``tokenizer/``,
``checkpoints/`` (latest train states) and ``best/`` (params chosen on validation), and
``metrics.jsonl``. Rerunning the same command resumes from the latest checkpoint; the data order
and dropout keys are pure functions of (seed, step), so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from elbert_jax import data as data_lib
from elbert_jax import demo, exits, parallel
from elbert_jax.convert import load_pretrained
from elbert_jax.losses import WEIGHTINGS, init_weight_logits, multi_exit_loss
from elbert_jax.model import ElbertModel, EncoderConfig, Params, init_params
from elbert_jax.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger("elbert_jax")

SOURCES = ("phrasebank", "files", "hub", "demo")
# What train.select_metric keeps in DIR/best: the epoch best on that validation metric, or the last.
SELECT_METRICS = ("accuracy", "macro_f1", "policy_accuracy", "last")
CHOOSE_BY = ("accuracy", "agreement")  # what --mode report picks a setting by on validation (exit.choose_by)


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
        raise ValueError("invalid config: " + "; ".join(errors))
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
        (d.source != "files" or bool(d.train_file), "data.source='files' needs data.train_file"),
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
        raise ValueError("invalid config: " + "; ".join(errors))


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


# ---------------------------------------------------------------- data and model

def load_splits(config: ml_collections.ConfigDict) -> data_lib.Splits:
    """The configured data, deduplicated and split reproducibly from ``config.seed`` (or
    ``data.split_seed``)."""
    d = config.data
    names = list(d.label_names) if d.label_names else None
    given: dict[str, data_lib.TextSet] = {}
    bad = data_lib.BadRows(d.bad_rows)
    if d.source in ("phrasebank", "demo"):
        if d.source == "demo":
            full = demo.make_sentences(d.demo_size, seed=0)
        else:
            path = d.path or data_lib.download_phrasebank()
            full = data_lib.read_phrasebank(path, d.subset, bad)
            data_lib.add_agreement(full, path, d.agreement_targets, bad)
        names = list(data_lib.PHRASEBANK_LABELS)
    elif d.source == "files":
        pair = d.pair_column or None
        full, names = data_lib.read_table(d.train_file, d.text_column, d.label_column, pair, names,
                                          bad)
        for split, path in (("validation", d.validation_file), ("test", d.test_file)):
            if path:
                given[split] = data_lib.read_table(path, d.text_column, d.label_column, pair, names,
                                                   bad)[0]
    else:
        pair = d.pair_column or None
        load = lambda split: data_lib.load_hub_dataset(  # noqa: E731
            d.hub_name, split, d.hub_config or None, d.text_column, d.label_column, pair, bad)
        full, names = load(d.train_split)
        for split in ("validation", "test"):
            name = d[f"{split}_split"]
            if name:
                given[split] = load(name)[0]
    bad.check()  # every file read first, so one run reports every bad row
    if len(full) < 3:
        raise data_lib.DataError(f"{d.train_file or d.path or d.hub_name or d.source}: "
                                 f"{len(full) or 'no'} usable rows; a train/validation/test "
                                 "split needs at least 3")
    stats: dict[str, Any] = {"bad_rows_skipped": bad.counts()} if bad.rows else {}
    if d.deduplicate:
        full, stats["dedup"] = data_lib.deduplicate(full)
    if "validation" in given and "test" in given:
        train, validation, test = full, given["validation"], given["test"]
    else:
        split_seed = d.split_seed if d.split_seed >= 0 else config.seed
        tr, va, te = data_lib.split_indices(full.labels, split_seed, d.test_fraction,
                                            d.validation_fraction, d.split == "stratified")
        train, validation, test = full.subset(tr), full.subset(va), full.subset(te)
        if "test" in given:  # a given test set: the held-out part of train becomes validation
            train, validation, test = full.subset(np.concatenate([tr, te])), full.subset(va), given["test"]
    if d.train_from:
        train, stats["train_from"] = _train_from(d, path, full, train)
    stats.update(train=len(train), validation=len(validation), test=len(test))
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        if len(part) and part.labels.max() >= len(names):
            raise data_lib.DataError(f"{name} split has label ids beyond {names}")
    return data_lib.Splits(train, validation, test, names, stats)


def _train_from(d: ml_collections.ConfigDict, path: str | Path, subset: data_lib.TextSet,
                train: data_lib.TextSet) -> tuple[data_lib.TextSet, dict[str, Any]]:
    """``train`` plus the texts of PhraseBank subset ``d.train_from`` that ``subset`` (every
    split of it) does not hold, so no validation or test text is trained on."""
    unread = data_lib.BadRows(d.bad_rows)  # its own: the subset's bad rows are in these files too
    larger = data_lib.read_phrasebank(path, d.train_from, unread)
    unread.check()
    if d.deduplicate:
        larger, _ = data_lib.deduplicate(larger)
    held = set(subset.texts)
    extra = larger.subset([i for i, t in enumerate(larger.texts) if t not in held])
    data_lib.add_agreement(extra, path, d.agreement_targets, unread)
    unread.check()
    joined = data_lib.TextSet(
        train.texts + extra.texts, np.concatenate([train.labels, extra.labels]), None,
        None if train.targets is None else np.concatenate([train.targets, extra.targets]),
        None if train.agreement is None or extra.agreement is None
        else np.concatenate([train.agreement, extra.agreement]))
    return joined, {"subset": d.train_from, "added": len(extra), "rows_read": len(larger)}


def build_model(config: ml_collections.ConfigDict, splits: data_lib.Splits, workdir: Path
                ) -> tuple[ElbertModel, Params, Tokenizer]:
    """Model, initial params and tokenizer (one trained from scratch is written to
    ``workdir/tokenizer``; the caller saves any other there once the workdir is known to fit)."""
    m = config.model
    num_labels = len(splits.label_names)
    tok_dir = workdir / "tokenizer"
    dropout = {k: m[k] for k in ("hidden_dropout_prob", "attention_probs_dropout_prob") if m[k] >= 0}
    if m.name_or_path:
        tokenizer = load_tokenizer(m.tokenizer or m.name_or_path)
        model, params = load_pretrained(m.name_or_path, num_labels, seed=config.seed, dtype=m.dtype,
                                        head_per_layer=m.head_per_layer, pooling=m.pooling,
                                        new_head=m.new_head,
                                        classifier_dropout_prob=m.classifier_dropout_prob, **dropout)
    else:
        if m.tokenizer:
            tokenizer = load_tokenizer(m.tokenizer)
        elif (tok_dir / "tokenizer.json").exists():
            tokenizer = load_tokenizer(tok_dir)
        else:
            tokenizer = load_tokenizer(demo.train_tokenizer(splits.train.texts, tok_dir,
                                                            m.scratch.tokenizer_vocab_size))
        fields = {k: v for k, v in m.scratch.items() if k != "tokenizer_vocab_size"}
        fields.update(dropout)
        if fields.get("model_type") == "bert":
            fields["embedding_size"] = None
        encoder = EncoderConfig(vocab_size=tokenizer.vocab_size, num_labels=num_labels,
                                dtype=m.dtype, head_per_layer=m.head_per_layer, pooling=m.pooling,
                                classifier_dropout_prob=m.classifier_dropout_prob,
                                pad_token_id=tokenizer.pad_token_id, **fields)
        model, params = ElbertModel(encoder), init_params(encoder, config.seed)
    return model, params, tokenizer


def workdir_probabilities(workdir: str | Path, texts: data_lib.TextSet, batch_size: int = 128,
                          checkpoint: str = "best") -> tuple[np.ndarray, ElbertModel, dict[str, Any]]:
    """[L, N, K] exit probabilities of a trained workdir's best (or ``last``) checkpoint for
    ``texts``, with its own tokenizer and input length; the model and meta (``restore_params``)."""
    model, params, meta = restore_params(workdir, checkpoint)
    encoded = data_lib.encode(load_tokenizer(Path(workdir) / "tokenizer"), texts, meta["max_length"])
    probs = exit_probabilities(make_prob_fn(model), params, encoded, batch_size, meta["buckets"])
    return probs, model, meta


def teacher_targets(t: ml_collections.ConfigDict, splits: data_lib.Splits
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """Training targets that mix the labels (or their soft targets) with ``t.teacher``'s last-exit
    probabilities at temperature ``t.teacher_temperature`` (Hinton et al.'s soft targets; a teacher
    of the same architecture makes a born-again network, Furlanello et al. 2018). The teacher may
    be another architecture or tokenizer; it must predict the same labels. Its probabilities on
    the training texts are what it learnt from, so a temperature > 1 is what shows its
    second choices."""
    train = splits.train
    probs, _, meta = workdir_probabilities(t.teacher, train)
    if meta["label_names"] != splits.label_names:
        raise ValueError(f"train.teacher={t.teacher} predicts {meta['label_names']}, this run "
                         f"{splits.label_names}")
    tempered = np.exp(np.log(np.maximum(probs[-1], 1e-30)) / t.teacher_temperature)
    tempered /= tempered.sum(-1, keepdims=True)
    labels = (train.targets if train.targets is not None
              else np.eye(len(splits.label_names), dtype=np.float32)[train.labels])
    targets = ((1 - t.teacher_weight) * labels + t.teacher_weight * tempered).astype(np.float32)
    stats = {"workdir": str(t.teacher), "best_step": meta["best_step"],
             "train_accuracy": round(float((probs[-1].argmax(-1) == train.labels).mean()), 4),
             "mean_target_of_label": round(float(targets[np.arange(len(train)), train.labels].mean()),
                                           4)}
    log.info("teacher %s: train accuracy %.4f, mean target of the label %.4f", t.teacher,
             stats["train_accuracy"], stats["mean_target_of_label"])
    return targets, stats


# ---------------------------------------------------------------- optimisation

@flax.struct.dataclass
class TrainState:
    step: jax.Array              # batches seen (micro-steps when accumulating)
    params: dict[str, Any]       # {"model": encoder params, "t": ELBERT's exit-weight logits}
    opt_state: Any


def _running_sum() -> optax.GradientTransformation:
    """The authors' quirk: t's gradient is never zeroed, so Adam sees the running sum."""
    def init(params):
        return jax.tree.map(jnp.zeros_like, params)

    def update(updates, state, params=None):
        total = jax.tree.map(jnp.add, state, updates)
        return total, total
    return optax.GradientTransformation(init, update)


class AveragedState(NamedTuple):
    inner: optax.OptState
    average: optax.EmaState  # EMA of the encoder params after each update, not yet debiased


def with_param_average(tx: optax.GradientTransformation, decay: float
                       ) -> optax.GradientTransformation:
    """``tx``, also keeping an exponential moving average of the encoder params it produces.

    Fine-tuning on a few thousand texts fits in an epoch or two and then wanders from epoch to
    epoch; the average smooths that out. It lives in the optimizer state, so it is checkpointed
    and a resumed run equals an uninterrupted one.
    """
    ema = optax.ema(decay, debias=True)

    def init(params):
        return AveragedState(tx.init(params), ema.init(params["model"]))

    def update(updates, state, params):
        updates, inner = tx.update(updates, state.inner, params)
        _, average = ema.update(optax.apply_updates(params["model"], updates["model"]),
                                state.average)
        return updates, AveragedState(inner, average)
    return optax.GradientTransformation(init, update)


def averaged_params(opt_state: Any, decay: float) -> Params | None:
    """The debiased parameter average of a ``with_param_average`` state (None without one)."""
    if isinstance(opt_state, optax.MultiStepsState):
        opt_state = opt_state.inner_opt_state
    if not isinstance(opt_state, AveragedState):
        return None
    correction = 1 - decay ** opt_state.average.count.astype(jnp.float32)
    return jax.tree.map(lambda x: x / correction, opt_state.average.ema)


def scale_by_layer_depth(decay: float) -> optax.GradientTransformation:
    """Layer-wise learning-rate decay: scale encoder updates by ``decay`` per group below the top.

    Lower layers hold the general features pre-training paid for, so fine-tuning moves them less.
    Hidden group g of G (stacked on the leading axis) gets ``decay ** (G - 1 - g)``, the embeddings
    ``decay ** G`` and the exit heads 1. For BERT stacks a group is a layer; ALBERT's one shared
    group gets 1, so there only the embeddings are slowed.
    """
    def scale(updates: Params, params: Params | None = None) -> Params:
        del params
        groups = None
        for path, leaf in jax.tree_util.tree_leaves_with_path(updates):
            if _top_module(path) == "encoder":
                groups = leaf.shape[0]
                break
        if groups is None:
            return updates

        def multiply(path, u):
            top = _top_module(path)
            if top == "embeddings":
                return u * decay ** groups
            if top == "encoder":
                factors = decay ** jnp.arange(groups - 1, -1, -1, dtype=u.dtype)
                return u * factors.reshape((groups,) + (1,) * (u.ndim - 1))
            return u
        return jax.tree_util.tree_map_with_path(multiply, updates)
    return optax.stateless(scale)


def _top_module(path: tuple) -> str:
    """The encoder module a parameter path belongs to (``embeddings``/``encoder``/``exits``),
    skipping the ``model`` key of the full training params."""
    keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return keys[1] if keys[:1] == ["model"] and len(keys) > 1 else (keys[0] if keys else "")


def scheduled_adamw(lr: float, warmup_fraction: float, weight_decay: float, total_updates: int
                    ) -> optax.GradientTransformation:
    """AdamW at ``lr`` after a linear warmup over ``warmup_fraction`` of the updates, decaying
    linearly to 0; no weight decay on biases and LayerNorm scales (BERT's recipe)."""
    warmup = int(warmup_fraction * total_updates)
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, max(warmup, 1)),
         optax.linear_schedule(lr, 0.0, max(total_updates - warmup, 1))], [warmup])
    decay = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, _: path[-1].key not in ("bias", "scale"), params)
    return optax.adamw(schedule, weight_decay=weight_decay, mask=decay)


def make_optimizer(t: ml_collections.ConfigDict, total_updates: int) -> optax.GradientTransformation:
    """AdamW + warmup + linear decay + clipping (+ layer-wise lr decay) on the encoder;
    constant-lr Adam on ``t``; an average of the encoder params when ``t.ema_decay > 0``."""
    encoder = optax.chain(optax.clip_by_global_norm(t.clip_norm),
                          scheduled_adamw(t.lr, t.warmup_fraction, t.weight_decay, total_updates))
    if t.layer_lr_decay < 1:
        encoder = optax.chain(encoder, scale_by_layer_depth(t.layer_lr_decay))
    weights = optax.adam(t.t_lr)
    if t.t_grad_quirk:
        weights = optax.chain(_running_sum(), weights)
    labels = lambda params: {"model": jax.tree.map(lambda _: "model", params["model"]),  # noqa: E731
                             "t": "t"}
    tx = optax.multi_transform({"model": encoder, "t": weights}, labels)
    if t.ema_decay:
        tx = with_param_average(tx, t.ema_decay)
    return optax.MultiSteps(tx, every_k_schedule=t.grad_accum) if t.grad_accum > 1 else tx


def initial_state(encoder: EncoderConfig, params: Params, tx: optax.GradientTransformation
                  ) -> TrainState:
    """Step 0: the encoder's params and ELBERT's exit-weight logits ``t``, and their optimiser state."""
    full = {"model": params, "t": init_weight_logits(encoder.num_hidden_layers)}
    return TrainState(jnp.zeros((), jnp.int32), full, tx.init(full))


def make_train_step(model: ElbertModel, tx: optax.GradientTransformation,
                    config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh):
    """The jitted step: state replicated on ``mesh``, the batch's rows split over it."""
    t = config.train
    base_key = jax.random.PRNGKey(config.seed)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(base_key, state.step)

        def loss_fn(params):
            inputs = [batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")]
            if t.rdrop:  # both dropout passes in one call: every row twice, masks drawn apart
                inputs = [jnp.concatenate([x, x]) for x in inputs]
            out = model.apply({"params": params["model"]}, *inputs, deterministic=False,
                              rngs={"dropout": key})
            return multi_exit_loss(out.exit_logits, batch["labels"], batch["weight"], t.weighting,
                                   params["t"], t.distill_weight, t.distill_temperature,
                                   t.label_smoothing, t.rdrop, batch.get("targets"))

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(state.step + 1, params, opt_state), {"loss": loss, **aux}

    step = jax.jit(train_step, donate_argnums=0, out_shardings=parallel.replicated(mesh))
    rows = parallel.rows(mesh)
    return lambda state, batch: step(state, parallel.put_batch(batch, rows))


# ---------------------------------------------------------------- evaluation

def make_prob_fn(model: ElbertModel, mesh: jax.sharding.Mesh | None = None):
    """(params, numpy batch) -> numpy [L, B, K] exit probabilities, rows split over ``mesh``."""
    mesh = mesh or parallel.data_mesh(1)
    rows = parallel.rows(mesh)

    @functools.partial(jax.jit, out_shardings=jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(None, parallel.AXIS)))
    def probs(params, batch):
        out = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                          batch["token_type_ids"])
        return jax.nn.softmax(out.exit_logits, -1)

    inputs = ("input_ids", "attention_mask", "token_type_ids")
    return lambda params, batch: parallel.to_host(probs(
        params, parallel.put_batch({k: batch[k] for k in inputs}, rows)))


def exit_probabilities(prob_fn, params: Params, encoded: data_lib.Encoded, batch_size: int,
                       buckets) -> np.ndarray:
    """[L, N, K] probabilities of every exit for every row, in input order (one full-depth pass)."""
    chunks, rows = [], []
    for batch in data_lib.eval_batches(encoded, batch_size, buckets):
        keep = batch["weight"] > 0
        chunks.append(prob_fn(params, batch)[:, keep])
        rows.append(batch["index"][keep])
    probs = np.concatenate(chunks, 1)
    out = np.empty_like(probs)
    out[:, np.concatenate(rows)] = probs
    return out


def exit_metrics(probs: np.ndarray, labels: np.ndarray, policy: exits.ExitPolicy) -> dict[str, Any]:
    """Per-exit accuracy and macro-F1, final exit, and the configured policy's accuracy and cost."""
    from sklearn.metrics import f1_score

    preds = probs.argmax(-1)
    classes = list(range(probs.shape[-1]))
    per_acc = (preds == labels[None]).mean(1)
    per_f1 = [f1_score(labels, p, average="macro", labels=classes, zero_division=0) for p in preds]
    result = exits.oracle(policy, jnp.asarray(probs))
    num_layers = probs.shape[0]
    return {"accuracy": float(per_acc[-1]), "macro_f1": float(per_f1[-1]),
            "per_exit_accuracy": [round(float(a), 5) for a in per_acc],
            "per_exit_macro_f1": [round(float(f), 5) for f in per_f1],
            "policy_accuracy": float((np.asarray(result.prediction) == labels).mean()),
            "policy_cost": float(np.asarray(result.layer).mean() / num_layers),
            "mean_exit_layer": float(np.asarray(result.layer).mean())}


# ---------------------------------------------------------------- checkpoints

def checkpoint_manager(path: Path, keep: int) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(path.absolute(), options=ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True))


def _digest(tree: Any) -> str | None:
    """SHA-256 of every leaf's bytes: a checkpoint whose files were damaged without breaking their
    format (flipped bytes) still restores, and only this catches it. None when a leaf is sharded
    across hosts (no single host holds it)."""
    leaves = jax.tree.leaves(tree)
    if not all(getattr(x, "is_fully_addressable", True) or getattr(x, "is_fully_replicated", False)
               for x in leaves):
        return None
    digest = hashlib.sha256()
    for leaf in jax.device_get(leaves):
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
    """Saves ``state`` with ``meta`` and the state's digest, which ``restore_latest`` checks."""
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({**meta, "digest": _digest(state)})))


def restore_latest(manager: ocp.CheckpointManager, abstract: Any, workdir: Path
                   ) -> tuple[Any, dict] | None:
    """(state, meta) of the newest readable checkpoint saved by ``save_checkpoint``, or None if
    there is none.

    A checkpoint that fails to restore or to match its digest (truncated or corrupted files) is
    moved to ``workdir/unreadable_checkpoints/`` with a warning, and the one before it is tried.
    """
    folder = workdir / "checkpoints"
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = _restore_checked(manager, step, abstract)
        except Exception as err:  # noqa: BLE001 - any failure means: not this checkpoint
            aside = workdir / "unreadable_checkpoints" / str(step)
            aside.parent.mkdir(exist_ok=True)
            (folder / str(step)).rename(aside)
            manager.reload()
            log.warning("checkpoint %s is unreadable (%s: %.200s); moved to %s, trying the one "
                        "before it", folder / str(step), type(err).__name__, err, aside)
            continue
        log.info("resumed from %s at step %d", folder, step)
        return restored["state"], restored["meta"]
    if any((workdir / "unreadable_checkpoints").glob("*")):
        log.warning("no readable checkpoint left in %s: training starts from step 0", folder)
    return None


def _restore_checked(manager: ocp.CheckpointManager, step: int, abstract: Any) -> dict:
    """{"state", "meta"} of a ``save_checkpoint`` checkpoint; ValueError if the state does not
    match the digest saved with it."""
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    expected = restored["meta"].get("digest")
    if expected is not None and _digest(restored["state"]) != expected:
        raise ValueError(f"checkpoint {step}: its contents do not match the digest saved with it")
    return restored


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def saved_config(workdir: str | Path) -> ml_collections.ConfigDict:
    """A workdir's ``config.json`` over today's defaults: a run saved before a key existed lacks
    it."""
    path = Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{workdir}: not a workdir written by train.py (no config.json)")
    config = base_config()
    config.update(json.loads(path.read_text()))
    return config


def split_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What decides a run's texts and split: the data section with the split's seed resolved.
    Runs with equal identities were trained and scored on the same texts."""
    d = config.data.to_dict()
    d["split_seed"] = d["split_seed"] if d["split_seed"] >= 0 else config.seed
    del d["group_by_length"]  # the training batch order, not the data
    del d["agreement_targets"]  # training targets; the splits and their labels are the same
    del d["train_from"]  # more training texts; validation and test are the same
    return d


def restore_best_params(workdir: str | Path) -> tuple[ElbertModel, Params, dict]:
    """Model, best params and ``model.json`` (labels, exit defaults) of a trained workdir, with
    ``best_step``, the step the best checkpoint was saved at (what a report was made from)."""
    workdir = Path(workdir)
    model, abstract, meta = _workdir_model(workdir)
    with checkpoint_manager(workdir / "best", 1) as manager:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"{workdir / 'best'}: no checkpoint (has training run an epoch?)")
        restored = manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract)))
    return model, restored["params"], meta | {"best_step": int(step)}


def _workdir_model(workdir: Path) -> tuple[ElbertModel, Params, dict]:
    """The model, the shapes of its params and ``model.json`` of a trained workdir."""
    if not (workdir / "model.json").is_file():
        raise FileNotFoundError(f"{workdir}: not a workdir written by train.py (no model.json)")
    meta = json.loads((workdir / "model.json").read_text())
    config = EncoderConfig(**meta["encoder"])
    return ElbertModel(config), jax.eval_shape(lambda: init_params(config)), meta


def restore_last_params(workdir: str | Path) -> tuple[ElbertModel, Params, dict]:
    """As ``restore_best_params``, but the params the finished run ended with (its last training
    state in ``checkpoints/``, the parameter average when it kept one), chosen without looking at
    validation; ``last_step`` in the meta. A run that has not finished is refused."""
    workdir = Path(workdir)
    model, _, meta = _workdir_model(workdir)
    config = saved_config(workdir)
    finished = [test["step"]] if (test := metrics_records(workdir)[1]) else []
    folder = workdir / "checkpoints"
    if not folder.is_dir():  # e.g. a soup, which was never trained
        raise FileNotFoundError(f"{folder}: none, so no last training state to score")
    with checkpoint_manager(folder, config.train.keep_checkpoints) as manager:
        step = manager.latest_step()
        if not finished or step != finished[-1]:
            raise FileNotFoundError(f"{folder}: no last state of a finished run (latest "
                                    f"checkpoint {step}, finished at {finished[-1:] or 'none'})")
        tx = make_optimizer(config.train, 1)  # the state's shapes do not depend on the schedule
        abstract = jax.eval_shape(lambda: initial_state(model.config, init_params(model.config), tx))
        state = _restore_checked(manager, step, abstract)["state"]
    params = averaged_params(state.opt_state, config.train.ema_decay)
    return model, state.params["model"] if params is None else params, meta | {"last_step": step}


CHECKPOINTS = {"best": restore_best_params, "last": restore_last_params}


def restore_params(workdir: str | Path, checkpoint: str = "best"
                   ) -> tuple[ElbertModel, Params, dict]:
    """A trained workdir's model, params and meta at ``checkpoint``: ``best`` (kept on
    validation, ``train.select_metric``) or ``last`` (where training ended)."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint={checkpoint!r} is not one of {sorted(CHECKPOINTS)}")
    return CHECKPOINTS[checkpoint](workdir)


def metrics_records(workdir: str | Path) -> tuple[list[dict], dict | None]:
    """``metrics.jsonl``'s validation records in epoch order (the last of each epoch: a resumed
    run may repeat one) and its last test record (written when the run finished)."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics (not a training workdir?)")
    by_epoch, test = {}, None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err.msg})") from None
        if record.get("split") == "validation":
            by_epoch[record["epoch"]] = record
        elif record.get("split") == "test":
            test = record
    return [by_epoch[e] for e in sorted(by_epoch)], test


# ---------------------------------------------------------------- the loop

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path,
                       stop_at_step: int | None = None) -> dict[str, Any]:
    """Trains (or resumes) in ``workdir``; returns the best validation metrics and test metrics.

    ``stop_at_step`` ends the run early without a checkpoint, as a crash would (for tests).
    """
    validate_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.json"
    if config_path.exists() and json.loads(config_path.read_text()) != json.loads(config.to_json()):
        log.warning("%s differs from this run's config; the workdir's checkpoints are resumed "
                    "anyway (use a new --workdir for a new run)", config_path)
    splits = load_splits(config)
    if config.model.name_or_path:
        from elbert_jax.pretrain import check_held_out

        check_held_out(config.model.name_or_path, (("validation", splits.validation),
                                                   ("test", splits.test)))
    model, params, tokenizer = build_model(config, splits, workdir)
    m = model.config
    if config.train.rdrop and not (m.hidden_dropout_prob or m.attention_probs_dropout_prob
                                   or m.classifier_dropout_prob):
        raise ValueError("train.rdrop compares two dropout passes, but the model's dropout rates "
                         "(hidden, attention, classifier) are all 0")
    data_digest = {name: getattr(splits, name).digest() for name in ("train", "validation", "test")}
    _check_resumable(workdir, dataclasses.asdict(model.config), splits.label_names, data_digest)
    if config.train.teacher:
        splits.train.targets, splits.stats["teacher"] = teacher_targets(config.train, splits)
    policy = exit_policy(config)
    d, t = config.data, config.train
    buckets = tokenizer.buckets(d.max_length, d.buckets)
    encoded = {name: data_lib.encode(tokenizer, getattr(splits, name), d.max_length)
               for name in ("train", "validation", "test")}
    splits.stats[f"truncated_to_{d.max_length}_tokens"] = {
        name: int(part.truncated.sum()) for name, part in encoded.items()}
    log.info("data: %s", json.dumps(splits.stats))
    config_path.write_text(config.to_json(indent=2) + "\n")
    tokenizer.save_pretrained(workdir / "tokenizer")
    _write_json(workdir / "model.json", {
        "encoder": dataclasses.asdict(model.config), "label_names": splits.label_names,
        "max_length": d.max_length, "buckets": buckets, "exit": config.exit.to_dict(),
        "data_stats": splits.stats, "data_digest": data_digest})

    spe = data_lib.steps_per_epoch(len(encoded["train"]), t.batch_size)
    total = spe * t.epochs if not t.max_steps else min(t.max_steps, spe * t.epochs)
    tx = make_optimizer(t, max(total // t.grad_accum, 1))
    state = initial_state(model.config, params, tx)
    mesh = parallel.data_mesh(data_devices(t))
    latest = checkpoint_manager(workdir / "checkpoints", t.keep_checkpoints)
    best = checkpoint_manager(workdir / "best", 1)
    best_metric = -np.inf
    resumed = restore_latest(latest, jax.eval_shape(lambda: state), workdir)
    if resumed is not None:
        state, best_metric = resumed[0], resumed[1]["best_metric"]
    state = parallel.replicate(state, mesh)
    metrics_path = workdir / "metrics.jsonl"
    truncate_metrics(metrics_path, int(state.step))
    train_step = make_train_step(model, tx, config, mesh)
    prob_fn = make_prob_fn(model, mesh)
    log.info("data parallel over %d device(s) on %d host(s)", mesh.size, jax.process_count())

    def save_latest() -> None:
        save_checkpoint(latest, int(state.step), state, {"best_metric": best_metric})

    step = int(state.step)
    bar = tqdm(total=total, initial=step, disable=not t.progress or not parallel.is_leader(),
               unit="batch", dynamic_ncols=True)
    try:
        with open(metrics_path, "a") as metrics_file, _board(workdir, step, t.tensorboard) as board:
            def write(record: dict) -> None:
                if parallel.is_leader():  # one metrics file per job, not one line per host
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                if board is not None:
                    for tag, value in _scalars(record):
                        board.add_scalar(tag, value, record["step"])
                    board.flush()

            tick, seen = time.perf_counter(), 0
            while step < total:
                epoch, start = divmod(step, spe)
                for batch in data_lib.train_batches(encoded["train"], t.batch_size, config.seed, epoch,
                                                    buckets, start, d.group_by_length):
                    batch.pop("index")
                    state, out = train_step(state, batch)
                    step += 1
                    seen += int(batch["weight"].sum())
                    bar.update(1)
                    saving = bool(t.checkpoint_every and step % t.checkpoint_every == 0 and step % spe)
                    if step % t.log_every == 0 or step == total or saving or step % spe == 0:
                        loss = float(out["loss"])  # checked before anything is saved
                        if not np.isfinite(loss):
                            raise FloatingPointError(f"loss is {loss} at step {step}; the last good "
                                                     f"checkpoint in {workdir / 'checkpoints'} is intact")
                    if step % t.log_every == 0 or step == total:
                        rate = seen / (time.perf_counter() - tick)
                        bar.set_postfix(loss=f"{loss:.4f}", texts_per_s=f"{rate:.0f}")
                        write({"step": step, "epoch": epoch, "loss": loss, "texts_per_s": rate,
                               "exit_weights": np.asarray(out["weights"]).round(4).tolist()})
                        tick, seen = time.perf_counter(), 0
                    if saving:
                        save_latest()
                    if step == total or step == stop_at_step:
                        break
                if step == stop_at_step:
                    bar.close()
                    latest.close()
                    best.close()
                    return {"stopped_at": step}
                if step % spe == 0 or step == total:
                    params = averaged_params(state.opt_state, t.ema_decay)
                    if params is None:
                        params = state.params["model"]
                    probs = exit_probabilities(prob_fn, params, encoded["validation"],
                                               t.eval_batch_size, buckets)
                    val = exit_metrics(probs, encoded["validation"].labels, policy)
                    score = val["accuracy" if t.select_metric == "last" else t.select_metric]
                    improved = t.select_metric == "last" or score > best_metric
                    if improved:
                        best_metric = score
                        best.save(step, args=ocp.args.Composite(
                            params=ocp.args.StandardSave(params),
                            meta=ocp.args.JsonSave({"epoch": epoch, "validation": val})), force=True)
                    write({"step": step, "epoch": epoch, "split": "validation", "best": improved, **val})
                    log.info("epoch %d validation: accuracy %.4f macro-F1 %.4f %s %.4f at cost %.3f",
                             epoch, val["accuracy"], val["macro_f1"], policy.name,
                             val["policy_accuracy"], val["policy_cost"])
                    save_latest()
            bar.close()
            latest.wait_until_finished()
            best.wait_until_finished()
            _, best_params, _ = restore_best_params(workdir)
            probs = exit_probabilities(prob_fn, best_params, encoded["test"], t.eval_batch_size, buckets)
            test = exit_metrics(probs, encoded["test"].labels, policy)
            write({"step": step, "split": "test", **test})
    except BaseException:  # a failed run still releases Orbax's background threads
        latest.close()
        best.close()
        raise
    latest.close()
    best.close()
    log.info("test (best checkpoint): accuracy %.4f macro-F1 %.4f", test["accuracy"], test["macro_f1"])
    return {"best_validation": best_metric, "test": test, "step": step}


# Same parameters, another run setting (a model.json written before a setting existed lacks it).
_RESUMABLE_CHANGES = ("dtype", "attention", "fuse_qkv", "hidden_dropout_prob",
                      "attention_probs_dropout_prob", "classifier_dropout_prob")


def _check_resumable(workdir: Path, encoder: dict, label_names: list[str],
                     data_digest: dict[str, str] | None = None) -> None:
    """A workdir with checkpoints resumes only the same architecture, labels and texts; say what
    differs. Other texts would score a model on test texts another split trained it on, and
    overwrite the record of which split it was (a workdir written before digests is not checked)."""
    meta_path = workdir / "model.json"
    if not meta_path.exists() or not any((workdir / "checkpoints").glob("[0-9]*")):
        return
    meta = json.loads(meta_path.read_text())
    saved = meta.get("data_digest")
    if saved and data_digest:
        other = [name for name in data_digest if saved.get(name) != data_digest[name]]
        if other:
            raise ValueError(f"{workdir} holds checkpoints trained on other texts (the "
                             f"{', '.join(other)} split(s) differ: another split seed, subset or "
                             "data file?); use a new --workdir, or restore the config that made it")
    old = dict(meta["encoder"], label_names=meta["label_names"])
    new = json.loads(json.dumps(dict(encoder, label_names=label_names)))
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(new)
               if old.get(k) != new.get(k) and k not in _RESUMABLE_CHANGES]
    if changed:
        raise ValueError(f"{workdir} holds checkpoints of a different model ({'; '.join(changed)}); "
                         "use a new --workdir, or restore the config that made it")


def _board(workdir: Path, step: int, enabled: bool) -> contextlib.AbstractContextManager:
    """A TensorBoard writer on ``workdir/tensorboard`` (process 0 only), or None. Its
    ``purge_step`` makes TensorBoard drop what an interrupted run logged after the checkpoint it
    resumes from, as ``truncate_metrics`` does for ``metrics.jsonl``."""
    if not enabled or not parallel.is_leader():
        return contextlib.nullcontext()
    from tensorboardX import SummaryWriter

    # tensorboardX names event files by the second and host and opens them "wb": a resumed
    # writer started within the same second would wipe the first run's file without the suffix
    return SummaryWriter(str(workdir / "tensorboard"), purge_step=step or None,
                         filename_suffix=f".{os.getpid()}.{step}")


def _scalars(record: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """``metrics.jsonl`` record -> (tag, value): ``train/loss``, ``validation/accuracy``,
    ``validation/per_exit_accuracy/3`` (lists are per exit, 1-based), ..."""
    split = record.get("split", "train")
    for key, value in record.items():
        if key in ("step", "epoch", "split") or isinstance(value, bool):  # bool: "best"
            continue
        if isinstance(value, (int, float)):
            yield f"{split}/{key}", float(value)
        elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            yield from ((f"{split}/{key}/{i}", float(v)) for i, v in enumerate(value, 1))


def truncate_metrics(path: Path, step: int) -> None:
    """Drops records written after ``step`` by a run that died before checkpointing them."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in lines))
