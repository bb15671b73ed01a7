"""A run's workdir on disk: Orbax checkpoints (latest train states with a digest of their bytes,
and the params kept on validation) and the JSON records beside them (``config.json``,
``model.json``, ``metrics.jsonl``). Everything that reads a trained run (reports, comparisons,
soups, serving) goes through here; only training writes it."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from elbert_jax.config import base_config
from elbert_jax.model import ElbertModel, EncoderConfig, Params, init_params
from elbert_jax.optim import averaged_params, initial_state, make_optimizer

log = logging.getLogger("elbert_jax")


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


def write_json(path: Path, value: Any) -> None:
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


def input_columns(workdir: str | Path) -> tuple[str, str]:
    """(text column, pair column) a run's inputs come in: its data section's for a run on tables
    (files, hub), else ("text", ""); pair column "" = single texts."""
    data = saved_config(workdir).data
    if data.source in ("files", "hub"):
        return data.text_column, data.pair_column
    return "text", ""


def validation_trained_on(workdir: str | Path) -> bool:
    """Whether the workdir's params were trained on its validation texts (a refit, or a soup with
    a refit among its runs), which makes any score or choice on them optimistic."""
    workdir = Path(workdir)
    soup = workdir / "soup.json"  # a soup's config.json is its first run's; older soups lack the key
    if soup.is_file() and "validation_trained_on" in (record := json.loads(soup.read_text())):
        return bool(record["validation_trained_on"])
    return (workdir / "config.json").is_file() and bool(saved_config(workdir).data.train_on_validation)


def split_identity(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """What decides a run's texts and split: the data section with the split's seed resolved.
    Runs with equal identities were trained and scored on the same texts."""
    d = config.data.to_dict()
    d["split_seed"] = d["split_seed"] if d["split_seed"] >= 0 else config.seed
    del d["group_by_length"]  # the training batch order, not the data
    del d["agreement_targets"]  # training targets; the splits and their labels are the same
    del d["train_from"]  # more training texts; validation and test are the same
    del d["train_on_validation"]  # likewise: the splits are the same, training also reads one
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


# Same parameters, another run setting (a model.json written before a setting existed lacks it).
RESUMABLE_CHANGES = ("dtype", "attention", "fuse_qkv", "hidden_dropout_prob",
                      "attention_probs_dropout_prob", "classifier_dropout_prob")


def other_texts(workdir: Path, data_digest: dict[str, str]) -> list[str]:
    """The splits among ``data_digest``'s whose texts differ from those the workdir's run read
    (``model.json``; none for a workdir written before digests)."""
    meta_path = Path(workdir) / "model.json"
    saved = json.loads(meta_path.read_text()).get("data_digest") if meta_path.is_file() else None
    return [name for name in data_digest if saved and saved.get(name) != data_digest[name]]


def check_resumable(workdir: Path, encoder: dict, label_names: list[str],
                     data_digest: dict[str, str] | None = None) -> None:
    """A workdir with checkpoints resumes only the same architecture, labels and texts; say what
    differs. Other texts would score a model on test texts another split trained it on, and
    overwrite the record of which split it was (a workdir written before digests is not checked)."""
    meta_path = workdir / "model.json"
    if not meta_path.exists() or not any((workdir / "checkpoints").glob("[0-9]*")):
        return
    meta = json.loads(meta_path.read_text())
    if other := other_texts(workdir, data_digest or {}):
        raise ValueError(f"{workdir} holds checkpoints trained on other texts (the "
                         f"{', '.join(other)} split(s) differ: another split seed, subset or "
                         "data file?); use a new --workdir, or restore the config that made it")
    old = dict(meta["encoder"], label_names=meta["label_names"])
    new = json.loads(json.dumps(dict(encoder, label_names=label_names)))
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(new)
               if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES]
    if changed:
        raise ValueError(f"{workdir} holds checkpoints of a different model ({'; '.join(changed)}); "
                         "use a new --workdir, or restore the config that made it")


def truncate_metrics(path: Path, step: int) -> None:
    """Drops records written after ``step`` by a run that died before checkpointing them."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines()
             if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in lines))
