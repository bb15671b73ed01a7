"""The trainer: config -> data -> multi-exit training with Optax -> Orbax checkpoints in a workdir.

A workdir holds everything needed to resume, evaluate and serve: ``config.json`` (the run's
config), ``model.json`` (architecture, label names, exit defaults, a digest of each split's texts),
``tokenizer/``, ``checkpoints/`` (latest train states) and ``best/`` (params chosen on validation),
and ``metrics.jsonl``; ``elbert_jax.checkpoints`` reads and checks it, ``elbert_jax.optim`` builds
the optimiser, ``elbert_jax.config`` the config. Rerunning the same command resumes from the latest
checkpoint; the data order and dropout keys are pure functions of (seed, step), so a resumed run
equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from elbert_jax import data as data_lib
from elbert_jax import demo, exits, parallel
from elbert_jax.checkpoints import (check_resumable, checkpoint_manager, restore_best_params,
                                    restore_latest, restore_params, save_checkpoint,
                                    truncate_metrics, write_json)
from elbert_jax.config import ConfigError, data_devices, exit_policy, validate_config
from elbert_jax.convert import load_pretrained
from elbert_jax.losses import multi_exit_loss
from elbert_jax.model import ElbertModel, EncoderConfig, Params, init_params
from elbert_jax.optim import TrainState, averaged_params, initial_state, make_optimizer
from elbert_jax.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger("elbert_jax")

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
    if d.train_on_validation:  # a refit: the settings were chosen, the epoch is the last
        train = train.concat(validation)
        stats["train_on_validation"] = len(validation)
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
    return train.concat(extra), {"subset": d.train_from, "added": len(extra), "rows_read": len(larger)}


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
            corpus = splits.train.texts + (splits.train.pairs or [])  # both sentences of a pair
            tokenizer = load_tokenizer(demo.train_tokenizer(corpus, tok_dir,
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
    check_model_fits(config, model.config, tokenizer)
    return model, params, tokenizer


def check_model_fits(config: ml_collections.ConfigDict, encoder: EncoderConfig,
                     tokenizer: Tokenizer) -> None:
    """Refuses a ``data.max_length`` beyond the model's positions or a tokenizer with ids beyond
    its vocabulary: JAX would clamp those indices and train on the wrong embeddings in silence."""
    m = config.model
    fits = [(config.data.max_length <= encoder.max_length,
             f"data.max_length={config.data.max_length} exceeds the {encoder.max_length} "
             f"positions the model has (max_position_embeddings={encoder.max_position_embeddings})"),
            (tokenizer.vocab_size <= encoder.vocab_size,
             f"the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary "
             f"{encoder.vocab_size} (model.tokenizer={m.tokenizer!r} does not belong to "
             f"model.name_or_path={m.name_or_path!r}?)")]
    errors = [message for ok, message in fits if not ok]
    if errors:
        raise ConfigError("invalid config: " + "; ".join(errors))


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

        held_out = [("test", splits.test)]
        if not config.data.train_on_validation:  # a refit trains on its validation texts anyway
            held_out.insert(0, ("validation", splits.validation))
        check_held_out(config.model.name_or_path, held_out)
    model, params, tokenizer = build_model(config, splits, workdir)
    m = model.config
    if config.train.rdrop and not (m.hidden_dropout_prob or m.attention_probs_dropout_prob
                                   or m.classifier_dropout_prob):
        raise ValueError("train.rdrop compares two dropout passes, but the model's dropout rates "
                         "(hidden, attention, classifier) are all 0")
    data_digest = {name: getattr(splits, name).digest() for name in ("train", "validation", "test")}
    check_resumable(workdir, dataclasses.asdict(model.config), splits.label_names, data_digest)
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
    write_json(workdir / "model.json", {
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
