"""Texts in, predictions out, from a trained workdir.

For now every batch runs full depth and the exit policy is applied to the stacked exits (the
oracle): exact exit layers and labels, without the speed. The batched early-exit engines replace
the full-depth pass and must give the same rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from elbert_jax import exits, training
from elbert_jax.data import Encoded, eval_batches
from elbert_jax.model import ElbertModel, Params
from elbert_jax.tokenizer import Tokenizer, load_tokenizer


@dataclasses.dataclass
class Predictor:
    model: ElbertModel
    params: Params
    tokenizer: Tokenizer
    label_names: list[str]
    policy: exits.ExitPolicy
    max_length: int = 64
    buckets: Sequence[int] = (16, 32, 64)
    batch_size: int = 64

    @classmethod
    def from_workdir(cls, workdir: str | Path, **policy_overrides: Any) -> "Predictor":
        """The workdir's best checkpoint; its configured exit policy unless overridden."""
        model, params, meta = training.restore_best_params(workdir)
        settings = dict(meta["exit"])
        settings["name"] = settings.pop("policy")
        settings.update({k: v for k, v in policy_overrides.items() if v is not None})
        policy = exits.ExitPolicy(**settings)
        return cls(model, params, load_tokenizer(Path(workdir) / "tokenizer"), meta["label_names"],
                   policy, meta["max_length"], meta["buckets"])

    def __post_init__(self) -> None:
        model, policy = self.model, self.policy

        @jax.jit
        def run(params, batch):
            out = model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                              batch["token_type_ids"])
            probs = jax.nn.softmax(out.exit_logits, -1)
            chosen = exits.oracle(policy, probs)
            exit_probs = jnp.take_along_axis(probs, (chosen.layer - 1)[None, :, None], 0)[0]
            return chosen.layer, chosen.prediction, exit_probs, probs

        self._run = run

    def predict(self, texts: Sequence[str], trace: bool = False) -> list[dict[str, Any]]:
        """One dict per text, in order: ``label``, ``probs`` (at the exit), ``exit_layer``."""
        texts = list(texts)
        enc = self.tokenizer(texts, max_length=self.max_length, pad_to=self.max_length)
        encoded = Encoded(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"],
                          np.zeros(len(texts), np.int32), enc["attention_mask"].sum(1))
        rows: list[dict[str, Any] | None] = [None] * len(texts)
        for batch in eval_batches(encoded, self.batch_size, self.buckets):
            layer, pred, exit_probs, probs = map(np.asarray, self._run(self.params, batch))
            for j, i in enumerate(batch["index"][batch["weight"] > 0]):
                row = {"label": self.label_names[pred[j]], "probs": exit_probs[j].round(6).tolist(),
                       "exit_layer": int(layer[j])}
                if trace:
                    row["trace"] = probs[:, j].round(6).tolist()
                rows[i] = row
        return rows  # type: ignore[return-value]

    def stream(self, texts: Iterable[str], chunk: int = 4096, trace: bool = False
               ) -> Iterator[dict[str, Any]]:
        """Predictions for an arbitrarily long iterable, in order, holding ``chunk`` texts at a time."""
        buffer: list[str] = []
        for text in texts:
            buffer.append(text)
            if len(buffer) == chunk:
                yield from self.predict(buffer, trace)
                buffer = []
        if buffer:
            yield from self.predict(buffer, trace)
