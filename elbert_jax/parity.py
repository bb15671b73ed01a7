"""Numerical comparison with transformers' PyTorch models (needs torch: ``pip install -e .[dev]``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from elbert_jax.convert import load_pretrained, params_from_state_dict, read_state_dict


def random_batch(vocab_size: int, batch: int = 4, seq_len: int = 12, pad_token_id: int = 0,
                 pairs: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """Random ids with padded rows of different lengths and, optionally, a second segment."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab_size, size=(batch, seq_len)).astype(np.int64)
    lengths = np.linspace(seq_len, max(2, seq_len // 3), batch).astype(int)
    mask = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, ids, pad_token_id)
    token_types = np.zeros_like(ids)
    if pairs:
        token_types = ((np.arange(seq_len)[None, :] >= lengths[:, None] // 2) & (mask == 1))
        token_types = token_types.astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": token_types}


def save_random_checkpoint(folder: str | os.PathLike, kind: str, *, head: bool | str = True,
                           seed: int = 0, **config: Any) -> Path:
    """A randomly initialised transformers model of family ``kind`` (a ``model_type``: "bert",
    "roberta", ...) saved with ``save_pretrained``: with a classifier (``head=True``), without
    (False), with a masked-LM head (``head="mlm"``) or with its pretraining heads
    (``"pretraining"``: ELECTRA's discriminator as released). ``config`` sets its transformers
    config (the family's defaults otherwise: the base shapes). LayerNorm weights and biases, which
    start at 1 and 0, are perturbed so that a mix-up shows."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.AutoConfig.for_model(kind, **config)
    auto = {True: "AutoModelForSequenceClassification", False: "AutoModel",
            "mlm": "AutoModelForMaskedLM", "pretraining": "AutoModelForPreTraining"}[head]
    model = getattr(transformers, auto).from_config(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return Path(folder)


def compare_with_transformers(folder: str | os.PathLike, batch: dict[str, np.ndarray],
                              **load_kwargs: Any) -> dict[str, float]:
    """Max abs differences between our model and transformers' on ``batch``, float32.

    Returns ``hidden_states`` (max over all layers, positions and rows, index 0 included) and
    ``logits`` (our last exit against ``AutoModelForSequenceClassification``). When the checkpoint
    has no classifier (a bare ``BertModel``), both sides initialise one at random; ours is then
    replaced by transformers' so that the logits are comparable (``head_copied`` = 1.0).
    """
    import torch
    import transformers

    model, params = load_pretrained(folder, **load_kwargs)
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=model.config.num_labels, dtype=torch.float32).eval()
    has_head = any(k.startswith("classifier.") for k in read_state_dict(folder))
    if not has_head:
        state = {k: v.numpy() for k, v in reference.state_dict().items()}
        params = {**params, "exits": params_from_state_dict(model.config, state)[0]["exits"]}
    ours = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                       batch["token_type_ids"], output_hidden_states=True)
    inputs = {k: torch.as_tensor(v) for k, v in batch.items()
              if k != "token_type_ids" or model.config.token_types}  # DistilBERT takes none
    with torch.no_grad():
        theirs = reference(**inputs, output_hidden_states=True)
    hidden = max(float(np.abs(t.numpy() - np.asarray(o)).max())
                 for t, o in zip(theirs.hidden_states, ours.hidden_states, strict=True))
    logits = float(np.abs(theirs.logits.numpy() - np.asarray(ours.exit_logits[-1])).max())
    return {"hidden_states": hidden, "logits": logits, "head_copied": float(not has_head)}
