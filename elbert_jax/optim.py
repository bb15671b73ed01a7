"""The optimiser and train state: AdamW with warmup and linear decay on the encoder, ELBERT's
exit-weight logits ``t`` on their own constant-lr Adam, and optional per-module lr scales and
parameter averaging (kept in the optimiser state, so checkpointed and resumed with it)."""

from __future__ import annotations

from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from elbert_jax.losses import init_weight_logits
from elbert_jax.model import EncoderConfig, Params


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


def scale_by_module(decay: float, head_scale: float = 1.0) -> optax.GradientTransformation:
    """Per-module learning rates: layer-wise decay below the top, and faster exit heads.

    Lower layers hold the general features pre-training paid for, so fine-tuning moves them less.
    Hidden group g of G (stacked on the leading axis) gets ``decay ** (G - 1 - g)``, the embeddings
    ``decay ** G`` and the exit heads ``head_scale``. For BERT stacks a group is a layer; ALBERT's
    one shared group gets 1, so there only the embeddings are slowed. The heads start from random
    weights: at the encoder's 5e-5 the shallow ones of a 6-layer MiniLM stay near the majority
    class, while a linear probe on the same frozen states reaches 0.74 (docs/results.md).
    """
    def scale(updates: Params, params: Params | None = None) -> Params:
        del params
        groups = None
        for path, leaf in jax.tree_util.tree_leaves_with_path(updates):
            if _top_module(path) == "encoder":
                groups = leaf.shape[0]
                break

        def multiply(path, u):
            top = _top_module(path)
            if top == "exits":
                return u * head_scale
            if top == "embeddings" and groups is not None:
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
    """AdamW + warmup + linear decay + clipping (+ per-module lr scales) on the encoder;
    constant-lr Adam on ``t``; an average of the encoder params when ``t.ema_decay > 0``."""
    encoder = optax.chain(optax.clip_by_global_norm(t.clip_norm),
                          scheduled_adamw(t.lr, t.warmup_fraction, t.weight_decay, total_updates))
    if t.layer_lr_decay < 1 or t.head_lr_scale != 1:
        encoder = optax.chain(encoder, scale_by_module(t.layer_lr_decay, t.head_lr_scale))
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
