"""Exit policies: one step rule each, used one layer at a time and, scanned over depth, post hoc.

A policy sees each row's class probabilities after every layer and keeps a small per-row state
(for CWB, the last ``N`` argmaxes, margins and top probabilities in chronological order). ``step``
is that rule; ``oracle`` scans it over a full-depth ``[L, B, K]`` stack, which gives exactly the
exit layer and prediction an early-exit engine must reproduce (spec section 4). Thresholds may be
traced arrays, so a sweep is a ``vmap`` over thresholds of one jitted function.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

POLICIES = ("cwb", "entropy", "raw_entropy", "patience", "max_prob", "static")
CWB_VARIANTS = ("bias_1", "bias_2", "bias_3")


@dataclasses.dataclass(frozen=True)
class ExitPolicy:
    """Which rule and its settings.

    - ``cwb``: exit if normalised entropy < ``threshold`` (stage 1), else if the last ``window``
      layers agree on the argmax with top-1 margin > 2 * ``margin`` (``bias_1``), plus a
      non-decreasing top probability (``bias_2``) or a top-probability range <= ``spread``
      (``bias_3``).
    - ``entropy`` / ``raw_entropy``: entropy (divided by log K / in nats) < ``threshold``.
    - ``patience``: the argmax unchanged for ``patience`` consecutive layers (PABEE).
    - ``max_prob``: top probability >= ``threshold``.
    - ``static``: every row exits at layer ``layer`` (1-based).
    The last layer always exits. ``temperatures`` (one per layer, or empty for none): each rule
    reads layer ``l``'s probabilities as ``softmax(log p / T_l)`` (``fit_temperatures``), so that
    one threshold means the same confidence at every depth; argmaxes are unchanged.
    """

    name: str = "cwb"
    threshold: float = 0.5
    window: int = 4
    margin: float = 0.0
    variant: str = "bias_1"
    spread: float = 0.1
    patience: int = 2
    layer: int = 1
    temperatures: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        # A JSON round trip gives a list, which jit cannot hash as part of a static policy.
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        if not all(math.isfinite(t) and t > 0 for t in self.temperatures):
            raise ValueError(f"temperatures={self.temperatures} must be finite and > 0")
        if self.name not in POLICIES:
            raise ValueError(f"exit policy {self.name!r} is not one of {POLICIES}")
        if self.variant not in CWB_VARIANTS:
            raise ValueError(f"CWB variant {self.variant!r} is not one of {CWB_VARIANTS}")
        for field in ("window", "patience", "layer"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field}={getattr(self, field)} must be >= 1")
        # A NaN compares false everywhere, so it would silently turn the rule off.
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold={self.threshold} must be a finite number")
        for field in ("margin", "spread"):
            if not getattr(self, field) >= 0:
                raise ValueError(f"{field}={getattr(self, field)} must be >= 0")

    def replace(self, **changes: Any) -> "ExitPolicy":
        return dataclasses.replace(self, **changes)


class ExitState(NamedTuple):
    """Per-row memory: chronological buffers of the last ``window`` layers and a run counter."""

    argmax: Array   # [B, W] int32, -1 where no layer yet
    margin: Array   # [B, W] float32 top-1 minus top-2 probability
    top: Array      # [B, W] float32 top probability
    run: Array      # [B] int32 consecutive layers with an unchanged argmax, minus one


def _buffer_width(policy: ExitPolicy) -> int:
    return int(policy.window) if policy.name == "cwb" else 1


def init_state(policy: ExitPolicy, batch: int) -> ExitState:
    width = _buffer_width(policy)
    return ExitState(argmax=jnp.full((batch, width), -1, jnp.int32),
                     margin=jnp.zeros((batch, width), jnp.float32),
                     top=jnp.zeros((batch, width), jnp.float32),
                     run=jnp.zeros((batch,), jnp.int32))


def entropy(probs: Array, normalised: bool = True) -> Array:
    """Entropy of each row of ``probs`` [..., K] (0 log 0 = 0), optionally divided by log K."""
    h = -jnp.sum(jnp.where(probs > 0, probs * jnp.log(jnp.where(probs > 0, probs, 1.0)), 0.0), -1)
    return h / jnp.log(probs.shape[-1]) if normalised else h


def step(policy: ExitPolicy, state: ExitState, probs: Array, layer: Array | int,
         num_layers: int, threshold: Array | float | None = None) -> tuple[ExitState, Array]:
    """Updates ``state`` with layer ``layer``'s (1-based) ``probs`` [B, K]; returns (state, exit [B]).

    ``threshold`` overrides ``policy.threshold`` (and ``patience``/``layer`` for those policies),
    possibly as a traced value.
    """
    probs = probs.astype(jnp.float32)
    if policy.temperatures:
        if len(policy.temperatures) != num_layers:
            raise ValueError(f"{len(policy.temperatures)} temperatures for {num_layers} layers")
        index = jnp.clip(jnp.asarray(layer) - 1, 0, num_layers - 1)  # [] or [B] (refill)
        temperature = jnp.asarray(policy.temperatures, jnp.float32)[index]
        probs = temper(probs, temperature[..., None] if temperature.ndim else temperature)
    tau = policy.threshold if threshold is None else threshold
    top2 = jax.lax.top_k(probs, 2)[0] if probs.shape[-1] > 1 else jnp.concatenate(
        [probs, jnp.zeros_like(probs)], -1)
    argmax = jnp.argmax(probs, -1).astype(jnp.int32)
    same = argmax == state.argmax[:, -1]
    run = jnp.where(same, state.run + 1, 0)
    state = ExitState(
        argmax=jnp.concatenate([state.argmax[:, 1:], argmax[:, None]], 1),
        margin=jnp.concatenate([state.margin[:, 1:], (top2[:, 0] - top2[:, 1])[:, None]], 1),
        top=jnp.concatenate([state.top[:, 1:], top2[:, :1]], 1),
        run=run)
    name = policy.name
    if name == "cwb":
        stage1 = entropy(probs) < tau
        full = state.argmax[:, 0] >= 0  # the window holds `window` layers
        agree = full & jnp.all(state.argmax == argmax[:, None], 1) & jnp.all(
            state.margin > 2 * policy.margin, 1)
        if policy.variant == "bias_2":
            agree = agree & jnp.all(jnp.diff(state.top, axis=1) >= 0, 1)
        elif policy.variant == "bias_3":
            agree = agree & (state.top.max(1) - state.top.min(1) <= policy.spread)
        exit_now = stage1 | agree
    elif name in ("entropy", "raw_entropy"):
        exit_now = entropy(probs, normalised=name == "entropy") < tau
    elif name == "max_prob":
        exit_now = top2[:, 0] >= tau
    elif name == "patience":
        patience = policy.patience if threshold is None else threshold
        exit_now = run >= patience
    else:  # static
        depth = policy.layer if threshold is None else threshold
        exit_now = jnp.broadcast_to(layer >= depth, argmax.shape)
    return state, exit_now | (layer >= num_layers)


def temper(probs: Array, temperature: Array | float) -> Array:
    """``softmax(log(probs) / temperature)``: the probabilities of logits divided by the
    temperature (the log-sum-exp a softmax subtracts cancels), from the probabilities alone."""
    return jax.nn.softmax(jnp.log(probs) / temperature, -1)


def fit_temperatures(probs: np.ndarray, labels: np.ndarray,
                     bounds: tuple[float, float] = (0.05, 20.0)) -> np.ndarray:
    """Per exit, the temperature in ``bounds`` that minimises the negative log-likelihood of
    ``labels`` under ``temper(probs [L, N, K], T)`` (temperature scaling, Guo et al. 2017), fitted
    on held-out texts. The NLL is convex in 1 / T, so a golden-section search over log T finds
    its minimum; float64, deterministic."""
    log_p = np.log(np.maximum(np.asarray(probs, np.float64), np.finfo(np.float32).tiny))
    labels = np.asarray(labels)

    def nll(log_t: np.ndarray) -> np.ndarray:  # [L] for one log T per exit
        z = log_p / np.exp(log_t)[:, None, None]
        z_max = z.max(-1, keepdims=True)
        log_norm = np.log(np.exp(z - z_max).sum(-1)) + z_max[..., 0]
        return np.mean(log_norm - np.take_along_axis(z, labels[None, :, None], -1)[..., 0], -1)

    golden = (math.sqrt(5) - 1) / 2
    lo = np.full(log_p.shape[0], math.log(bounds[0]))
    hi = np.full(log_p.shape[0], math.log(bounds[1]))
    for _ in range(80):  # the bracket shrinks to 0.618^80 of its width
        a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
        left = nll(a) <= nll(b)
        hi, lo = np.where(left, b, hi), np.where(left, lo, a)
    return np.exp((lo + hi) / 2)


class Exits(NamedTuple):
    """Per row: ``layer`` (1-based exit layer) and ``prediction`` (argmax at that layer)."""

    layer: Array
    prediction: Array


def oracle(policy: ExitPolicy, probs: Array, threshold: Array | float | None = None) -> Exits:
    """Exit layer and prediction of every row from a full-depth pass, ``probs`` [L, B, K]."""
    num_layers, batch = probs.shape[:2]

    def body(carry, inputs):
        state, exited, layer_out, pred_out = carry
        layer_probs, layer = inputs
        state, exit_now = step(policy, state, layer_probs, layer, num_layers, threshold)
        first = exit_now & ~exited
        layer_out = jnp.where(first, layer, layer_out)
        pred_out = jnp.where(first, jnp.argmax(layer_probs, -1).astype(jnp.int32), pred_out)
        return (state, exited | exit_now, layer_out, pred_out), None

    zeros = jnp.zeros((batch,), jnp.int32)
    carry = (init_state(policy, batch), jnp.zeros((batch,), bool), zeros, zeros)
    layers = jnp.arange(1, num_layers + 1, dtype=jnp.int32)
    (_, _, layer_out, pred_out), _ = jax.lax.scan(body, carry, (probs, layers))
    return Exits(layer=layer_out, prediction=pred_out)


def default_threshold(policy: ExitPolicy) -> float:
    """The value ``step``'s ``threshold`` stands for by default: tau, the patience or the layer."""
    return float({"patience": policy.patience, "static": policy.layer}.get(policy.name,
                                                                         policy.threshold))


def with_threshold(policy: ExitPolicy, value: float) -> ExitPolicy:
    """``policy`` with ``value`` where ``step`` reads its threshold (``default_threshold``'s
    inverse), so a point of a sweep becomes a policy to serve."""
    field = {"patience": "patience", "static": "layer"}.get(policy.name, "threshold")
    return policy.replace(**{field: float(value) if field == "threshold" else int(round(value))})


def default_thresholds(policy: ExitPolicy, num_layers: int) -> np.ndarray:
    """The grid a sweep walks for ``policy``: probability/entropy levels in steps of 0.01 (0.005
    for max-prob) so that a cost budget is met closely, or integer depths."""
    if policy.name in ("cwb", "entropy"):
        return np.round(np.linspace(0.01, 0.99, 99), 4)
    if policy.name == "raw_entropy":
        return np.round(np.linspace(0.01, 1.1, 110), 4)
    if policy.name == "max_prob":
        return np.round(np.linspace(0.335, 0.995, 133), 4)
    if policy.name == "patience":
        return np.arange(1, num_layers, dtype=np.int32)
    return np.arange(1, num_layers + 1, dtype=np.int32)


def sweep(policy: ExitPolicy, probs: Array, labels: Array,
          thresholds: np.ndarray | None = None) -> list[dict[str, float]]:
    """Accuracy and computation cost (mean exit layer / L) of ``policy`` at every threshold."""
    num_layers = probs.shape[0]
    thresholds = default_thresholds(policy, num_layers) if thresholds is None else thresholds
    grid = jnp.asarray(thresholds)
    run = jax.jit(jax.vmap(lambda t: oracle(policy, probs, t)))
    exits = run(grid)
    labels = jnp.asarray(labels)
    accuracy = (exits.prediction == labels[None]).mean(1)
    cost = exits.layer.mean(1) / num_layers
    return [{"policy": policy.name, "threshold": float(t), "accuracy": float(a), "cost": float(c)}
            for t, a, c in zip(np.asarray(thresholds), np.asarray(accuracy), np.asarray(cost))]
