"""Task-adaptive pretraining: masked-language-model training of a checkpoint's encoder on the
task's own training texts before it is fine-tuned on their labels (TAPT, Gururangan et al. 2020,
"Don't Stop Pretraining"; FinBERT's further pretraining, Araci 2019, is the same idea on a larger
financial corpus).

  python train.py --config configs/fsa_minilm.py --workdir runs/tapt_s0 --mode pretrain
  python train.py --config configs/fsa_minilm.py --workdir runs/ft_s0 \\
      --config.model.name_or_path=runs/tapt_s0/encoder

It reads the texts of the training split (the config's data section and seed decide it) and,
with ``pretrain.texts``, an unlabelled corpus too (domain-adaptive pretraining, the paper's other
arm; its texts that are validation or test texts of the split are refused or dropped), with
BERT's masking (15% of the tokens, of those 80% [MASK], 10% a random token, 10% unchanged, drawn
afresh every epoch as RoBERTa does); the held-out masked-LM loss is measured on the validation
texts with one fixed masking. ``WORKDIR/encoder`` is a transformers folder (the encoder, the
checkpoint's pooler, the masked-LM head under ``*ForMaskedLM`` names, no classifier, the tokenizer)
with ``pretraining.json``, which lists a digest of every text it was trained on: fine-tuning from
it refuses a split whose validation or test texts are among them. A refit's config
(``data.train_on_validation``) trains on its validation texts, so its pretraining reads them too
(its held-out loss is then on trained texts): fine-tune a refit from that encoder, not a run that
validates on them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm.auto import tqdm

from elbert_jax import config as config_lib
from elbert_jax import checkpoints, convert, optim, parallel, training
from elbert_jax import data as data_lib
from elbert_jax.model import (ACTIVATIONS, Embeddings, EncoderConfig, LayerStack, Params, _dense,
                              _layer_norm, attention_bias)
from elbert_jax.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger("elbert_jax")

RECORD = "pretraining.json"


class MaskedLMHead(nn.Module):
    """transformers' masked-LM head: Dense (to E for ALBERT, H for BERT and RoBERTa), activation,
    LayerNorm, then the word embedding table as the decoder (tied) plus a bias."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, hidden: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        cfg = self.config
        x = _dense(cfg, cfg.embedding_size or cfg.hidden_size, "dense")(hidden)
        act = "gelu" if cfg.model_type == "roberta" else cfg.hidden_act  # RobertaLMHead's fixed GELU
        x = _layer_norm(cfg, "LayerNorm")(ACTIVATIONS[act](x))
        bias = self.param("bias", nn.initializers.zeros_init(), (cfg.vocab_size,), jnp.float32)
        logits = jnp.einsum("...e,ve->...v", x, word_embeddings.astype(x.dtype),
                            preferred_element_type=jnp.float32)
        return logits + bias


class MaskedLM(nn.Module):
    """The encoder (the same parameter names as ``ElbertModel``'s ``embeddings`` and ``encoder``)
    and the masked-LM head, which reads only the ``positions`` [B, P] it predicts: a vocabulary
    projection of every token would cost more than the encoder on MiniLM."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, token_type_ids: jax.Array,
                 positions: jax.Array, deterministic: bool = True) -> jax.Array:
        embeddings = Embeddings(self.config, name="embeddings")
        x = embeddings(input_ids, token_type_ids, deterministic)
        x, _ = LayerStack(self.config, deterministic, name="encoder")(x, attention_bias(attention_mask))
        picked = jnp.take_along_axis(x, positions[..., None], axis=1)
        table = embeddings.variables["params"]["word_embeddings"]["embedding"]
        return MaskedLMHead(self.config, name="mlm")(picked, table)


def mask_tokens(input_ids: np.ndarray, candidates: np.ndarray, rng: np.random.Generator,
                mask_token_id: int, vocab_size: int, rate: float = 0.15
                ) -> dict[str, np.ndarray]:
    """BERT's masking of one batch: in each row round(rate x its candidate tokens) of them (at
    least one) are chosen; of those 80% become ``mask_token_id``, 10% a random token, 10% stay.

    Returns ``input_ids`` (masked), and the chosen ``positions``, their original ``labels`` and
    ``weights`` (1 for a chosen slot, 0 for padding), each [B, P] with P = ceil(rate x width), so
    every batch of one width has one shape."""
    batch, width = input_ids.shape
    slots = max(1, int(np.ceil(rate * width)))
    count = candidates.sum(1)
    chosen = np.where(count > 0, np.maximum(1, np.rint(rate * count)), 0).astype(np.int64)
    chosen = np.minimum(chosen, slots)
    scores = np.where(candidates, rng.random((batch, width)), 2.0)  # candidates first, shuffled
    order = np.argsort(scores, axis=1, kind="stable")[:, :slots]
    weights = np.arange(slots)[None, :] < chosen[:, None]
    positions = np.where(weights, order, 0)
    labels = np.where(weights, np.take_along_axis(input_ids, positions, axis=1), 0)
    action = rng.random((batch, slots))
    replaced = np.where(action < 0.8, mask_token_id,
                        np.where(action < 0.9, rng.integers(0, vocab_size, (batch, slots)), labels))
    masked = input_ids.copy()
    rows = np.broadcast_to(np.arange(batch)[:, None], (batch, slots))
    masked[rows[weights], positions[weights]] = replaced[weights]
    return {"input_ids": masked.astype(np.int32), "positions": positions.astype(np.int32),
            "labels": labels.astype(np.int32), "weights": weights.astype(np.float32)}


def text_digest(text: str, pair: str | None = None) -> str:
    """What ``pretraining.json`` lists for a text: 16 hex digits of its SHA-256."""
    whole = text if pair is None else f"{text}\x00{pair}"
    return hashlib.sha256(whole.encode("utf-8")).hexdigest()[:16]


def digests(texts: data_lib.TextSet) -> list[str]:
    pairs = texts.pairs if texts.pairs is not None else [None] * len(texts)
    return [text_digest(t, p) for t, p in zip(texts.texts, pairs)]


def check_held_out(model_path: str | Path, held_out: Iterable[tuple[str, data_lib.TextSet]]) -> None:
    """Refuses to fine-tune a model pretrained here on texts it will be validated or tested on."""
    record = Path(model_path) / RECORD
    if not record.is_file():
        return
    seen = set(json.loads(record.read_text())["text_digests"])
    for name, texts in held_out:
        overlap = sum(d in seen for d in digests(texts))
        if overlap:
            raise ValueError(f"{model_path} was pretrained on {overlap} of this run's {len(texts)} "
                             f"{name} texts ({record}); pretrain on this run's split (same data "
                             "section and seed) so that its held-out texts stay unseen")


class _Masking:
    """BERT's masking applied to encoded batches, special tokens never chosen."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int, rate: float):
        hf = tokenizer.hf
        if hf.mask_token_id is None:
            raise ValueError(f"the tokenizer ({type(hf).__name__}) has no mask token; masked-LM "
                             "pretraining needs one")
        self.mask_token_id, self.vocab_size, self.rate = int(hf.mask_token_id), vocab_size, rate
        self.special = np.array(sorted(set(hf.all_special_ids)), np.int32)

    def masked(self, batch: dict, rng: np.random.Generator) -> dict:
        ids = batch["input_ids"]
        candidates = (batch["attention_mask"] > 0) & ~np.isin(ids, self.special)
        out = mask_tokens(ids, candidates, rng, self.mask_token_id, self.vocab_size, self.rate)
        return {"attention_mask": batch["attention_mask"], "token_type_ids": batch["token_type_ids"],
                **out}


def read_corpus(path: str | Path, column: str, held_out: set[str], policy: str = "refuse"
                ) -> tuple[list[str], dict[str, Any]]:
    """The texts of an unlabelled corpus file (``pretrain.texts``) and what was left out.

    A row that holds no text is a ``DataError`` naming the file and line; blank texts are skipped
    and counted. Texts whose digest is in ``held_out`` (the run's validation and test texts) make
    the whole run a ``DataError`` (``policy="refuse"``) or are dropped and counted (``"drop"``)."""
    from elbert_jax.predict import read_texts

    texts, blank, leaked = [], 0, []
    for row, text in enumerate(read_texts(path, column, bad_rows="error"), 1):
        if not text.strip():
            blank += 1
        elif text_digest(text) in held_out:
            leaked.append(row)
        else:
            texts.append(text)
    if leaked and policy == "refuse":
        rows = ", ".join(map(str, leaked[:5])) + (", ..." if len(leaked) > 5 else "")
        raise data_lib.DataError(
            f"{path}: {len(leaked)} of its texts are validation or test texts of this run's split "
            f"(rows {rows}); remove them, or set pretrain.held_out=drop to leave them out")
    return texts, {"path": str(path), "texts": len(texts), "blank_skipped": blank,
                   "held_out_dropped": len(leaked)}


def _stack(parts: list[data_lib.Encoded]) -> data_lib.Encoded:
    """Encoded rows of several sets as one (each part padded to the same max_length)."""
    fields = ("input_ids", "attention_mask", "token_type_ids", "labels", "lengths", "truncated")
    return data_lib.Encoded(*(np.concatenate([getattr(part, f) for part in parts]) for f in fields))


def _optimizer(p: ml_collections.ConfigDict, total: int) -> optax.GradientTransformation:
    """The fine-tuning optimiser's AdamW and schedule; the head at ``head_lr`` (a fresh head
    starts random)."""
    groups = {name: optim.scheduled_adamw(lr, p.warmup_fraction, p.weight_decay, total)
              for name, lr in (("encoder", p.lr), ("head", p.head_lr))}
    label = lambda params: {k: jax.tree.map(lambda _: "head" if k == "mlm" else "encoder", v)  # noqa: E731
                            for k, v in params.items()}
    return optax.chain(optax.clip_by_global_norm(p.clip_norm), optax.multi_transform(groups, label))


def _loss(model: MaskedLM, params: Params, batch: dict, rng: jax.Array | None
          ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    logits = masked_lm_logits(model, params, batch, rng)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    w = batch["weights"]
    right = (logits.argmax(-1) == batch["labels"]) * w
    return (ce * w).sum() / jnp.maximum(w.sum(), 1.0), (right.sum(), w.sum())


def load_masked_lm(name_or_path: str | Path, seed: int = 0, **overrides: Any
                   ) -> tuple[MaskedLM, Params, Params, bool]:
    """The masked LM of a transformers checkpoint: the model, its params, the checkpoint's exit
    head (pooler, kept for export) and whether the masked-LM head came from the checkpoint (else
    it starts at transformers' initialisation from ``seed``)."""
    checkpoint = convert.read_checkpoint(name_or_path)
    encoder, params = convert.load_pretrained(name_or_path, seed=seed, checkpoint=checkpoint,
                                              **overrides)
    config = encoder.config
    if config.model_type not in convert.MASKED_LM_FAMILIES:
        raise config_lib.ConfigError(
            f"{name_or_path}: masked-LM pretraining takes {', '.join(convert.MASKED_LM_FAMILIES)} "
            f"checkpoints, not {config.model_type} (an ELECTRA discriminator learnt to spot replaced "
            "tokens, and has no masked-LM head)")
    model = MaskedLM(config)
    ids = jnp.zeros((1, 8), jnp.int32)
    init = model.init(jax.random.PRNGKey(seed), ids, ids + 1, ids, ids[:, :2])["params"]["mlm"]
    head, imported = convert.mlm_head_from_state_dict(config, checkpoint[1], init)
    full = {"embeddings": params["embeddings"], "encoder": params["encoder"], "mlm": head}
    return model, full, params["exits"], imported


def pretrain(config: ml_collections.ConfigDict, workdir: str | Path,
             stop_at_step: int | None = None) -> dict[str, Any]:
    """Masked-LM training of ``config.model.name_or_path`` on the training texts of the config's
    split (``config.pretrain`` sets the run); writes ``workdir/encoder`` and returns the held-out
    masked-LM loss and accuracy before and after.

    Every epoch ends with a checkpoint in ``workdir/checkpoints``: rerunning the same command after
    an interruption resumes from it and ends with the same encoder as an uninterrupted run (the
    masking, batches and dropout are functions of the seed, epoch and step). Once the encoder is
    written the checkpoint is deleted, and a rerun returns the recorded result.
    ``stop_at_step`` ends the run early without a checkpoint, as a crash would (for tests)."""
    config_lib.validate_config(config)
    m, d, p = config.model, config.data, config.pretrain
    if not m.name_or_path:
        raise ValueError("pretraining continues a checkpoint: set model.name_or_path")
    if jax.process_count() > 1:
        raise NotImplementedError("pretraining runs on the devices of one host, not a multi-host job")
    workdir = Path(workdir)
    out, config_path = workdir / "encoder", workdir / "config.json"
    same_config = (not config_path.exists()
                   or json.loads(config_path.read_text()) == json.loads(config.to_json()))
    if (out / RECORD).is_file():
        if not same_config:
            raise FileExistsError(f"{out} was pretrained with another config ({config_path}); use a "
                                  "new workdir")
        log.info("%s is pretrained already; nothing to do", out)
        record = json.loads((out / RECORD).read_text())
        return {k: v for k, v in record.items() if k not in ("split", "text_digests")}
    if not same_config:
        log.warning("%s differs from this run's config; its checkpoint is resumed anyway (use a new "
                    "--workdir for a new run)", config_path)
    splits = training.load_splits(config)
    tokenizer = load_tokenizer(m.tokenizer or m.name_or_path)
    dropout = {k: m[k] for k in ("hidden_dropout_prob", "attention_probs_dropout_prob") if m[k] >= 0}
    model, params, exit_head, imported = load_masked_lm(m.name_or_path, config.seed, dtype=m.dtype,
                                                        **dropout)
    training.check_model_fits(config, model.config, tokenizer)
    log.info("masked-LM head %s", "from the checkpoint" if imported else "initialised (not in the "
             "checkpoint)")
    masking = _Masking(tokenizer, model.config.vocab_size, p.mask_rate)
    buckets = tokenizer.buckets(d.max_length, d.buckets)
    train = data_lib.encode(tokenizer, splits.train, d.max_length)
    trained_on = digests(splits.train)
    corpus = None
    if p.texts:
        texts, corpus = read_corpus(p.texts, p.text_column,
                                    set(digests(splits.validation) + digests(splits.test)), p.held_out)
        log.info("corpus %s: %s", p.texts, json.dumps(corpus))
        extra = data_lib.TextSet(texts, np.zeros(len(texts), np.int32))
        train = _stack([train, data_lib.encode(tokenizer, extra, d.max_length)])
        trained_on += [text_digest(t) for t in texts]
    if d.train_on_validation:
        log.warning("data.train_on_validation: the validation texts are pretrained on, so the "
                    "held-out masked-LM loss below is on trained texts")
    validation = data_lib.encode(tokenizer, splits.validation, d.max_length)
    held_out = [masking.masked(b, np.random.default_rng([config.seed, 1 << 20, i]))
                for i, b in enumerate(data_lib.eval_batches(validation, p.batch_size, buckets))]
    spe = data_lib.steps_per_epoch(len(train), p.batch_size)
    total = spe * p.epochs
    tx = _optimizer(p, total)
    state = {"params": params, "opt_state": tx.init(params)}

    mesh = parallel.data_mesh(config_lib.data_devices(config.train))  # the batch's rows split over it
    rows, replicated = parallel.rows(mesh), parallel.replicated(mesh)

    @functools.partial(jax.jit, donate_argnums=0, out_shardings=replicated)
    def step(state: dict, batch: dict, rng: jax.Array) -> tuple[dict, jax.Array]:
        (loss, _), grads = jax.value_and_grad(lambda q: _loss(model, q, batch, rng),
                                              has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, loss

    evaluate_batch = jax.jit(lambda params, batch: _loss(model, params, batch, None),
                             out_shardings=replicated)

    def evaluate(params: Params) -> dict[str, float]:
        totals = np.zeros(3)
        for batch in held_out:
            loss, (right, count) = evaluate_batch(params, parallel.put_batch(batch, rows))
            totals += (float(loss) * float(count), float(right), float(count))
        return {"mlm_loss": totals[0] / totals[2], "mlm_accuracy": totals[1] / totals[2]}

    workdir.mkdir(parents=True, exist_ok=True)
    config_path.write_text(config.to_json(indent=2) + "\n")
    metrics_path = workdir / "metrics.jsonl"
    manager = checkpoints.checkpoint_manager(workdir / "checkpoints", 1)
    resumed = checkpoints.restore_latest(manager, jax.eval_shape(lambda: state), workdir)
    texts_digest = hashlib.sha256("".join(trained_on).encode()).hexdigest()
    if resumed is not None:
        state, meta = resumed
        if meta["texts_digest"] != texts_digest:
            raise ValueError(f"{workdir / 'checkpoints'} was trained on other texts than this run "
                             "reads (did the corpus file change?); use a new workdir")
        checkpoints.truncate_metrics(metrics_path, meta["step"])
    state = parallel.replicate(state, mesh)
    if resumed is None:
        meta = {"step": 0, "seconds": 0.0, "before": evaluate(state["params"]), "validation": None,
                "texts_digest": texts_digest}
        metrics_path.write_text(json.dumps({"step": 0, "split": "validation", **meta["before"]}) + "\n")
        log.info("validation masked-LM loss %.4f, accuracy %.4f before pretraining",
                 meta["before"]["mlm_loss"], meta["before"]["mlm_accuracy"])
    step_no = meta["step"]
    key = jax.random.PRNGKey(config.seed)
    bar = tqdm(total=total, initial=step_no, disable=not config.train.progress, unit="batch",
               dynamic_ncols=True)
    with manager, open(metrics_path, "a") as metrics:
        for epoch in range(step_no // spe, p.epochs):
            tick = time.perf_counter()
            for i, batch in enumerate(data_lib.train_batches(train, p.batch_size, config.seed, epoch,
                                                             buckets)):
                batch = masking.masked(batch, np.random.default_rng([config.seed, epoch, i]))
                state, loss = step(state, parallel.put_batch(batch, rows),
                                   jax.random.fold_in(key, step_no))
                step_no += 1
                bar.update(1)
                if step_no % config.train.log_every == 0:
                    loss = float(loss)
                    if not np.isfinite(loss):
                        raise FloatingPointError(f"masked-LM loss is {loss} at step {step_no}")
                    bar.set_postfix(loss=f"{loss:.3f}")
                    metrics.write(json.dumps({"step": step_no, "epoch": epoch, "mlm_loss": loss}) + "\n")
                if step_no == stop_at_step:
                    bar.close()
                    return {"stopped_at": step_no}
            val = evaluate(state["params"])
            metrics.write(json.dumps({"step": step_no, "epoch": epoch, "split": "validation", **val})
                          + "\n")
            metrics.flush()
            log.info("epoch %d validation masked-LM loss %.4f, accuracy %.4f", epoch,
                     val["mlm_loss"], val["mlm_accuracy"])
            meta = {**meta, "step": step_no, "validation": val,
                    "seconds": meta["seconds"] + time.perf_counter() - tick}
            checkpoints.save_checkpoint(manager, step_no, state, meta)
        manager.wait_until_finished()
    bar.close()
    params = state["params"]
    encoder_params = {"embeddings": params["embeddings"], "encoder": params["encoder"],
                      "exits": exit_head}
    table = np.asarray(params["embeddings"]["word_embeddings"]["embedding"])
    convert.save_pretrained(out, model.config, encoder_params, tokenizer, classifier=False,
                            extra=convert.mlm_head_state_dict(model.config, params["mlm"], table))
    result = {"before": meta["before"], "after": meta["validation"], "steps": step_no,
              "seconds": round(meta["seconds"], 1), "texts": len(train), "corpus": corpus,
              "head_from_checkpoint": imported, "from": str(m.name_or_path)}
    (out / RECORD).write_text(json.dumps({**result, "split": checkpoints.split_identity(config),
                                          "text_digests": sorted(set(trained_on))}) + "\n")
    shutil.rmtree(workdir / "checkpoints")
    log.info("wrote %s: fine-tune with --config.model.name_or_path=%s", out, out)
    return result


def masked_lm_logits(model: MaskedLM, params: Params, batch: dict, dropout: jax.Array | None = None
                     ) -> jax.Array:
    """[B, P, V] logits at ``batch['positions']``; with a ``dropout`` key, as in training."""
    return model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                       batch["token_type_ids"], batch["positions"], deterministic=dropout is None,
                       rngs=None if dropout is None else {"dropout": dropout})


__all__ = ["MaskedLM", "MaskedLMHead", "check_held_out", "load_masked_lm", "mask_tokens",
           "masked_lm_logits", "pretrain", "read_corpus", "text_digest"]
