"""The ELBERT encoder: ALBERT (shared layer) or BERT-family (BERT, RoBERTa, DistilBERT, ELECTRA:
unshared layers) with one exit per layer.

One module serves both families. The layer stack is two nested ``nn.scan``s: an outer scan over the
``G`` hidden groups whose weights are stacked on a leading axis (``variable_axes``), and an inner scan
over the ``L / G`` layers of a group that reuse those weights (``variable_broadcast``). ALBERT has
``G = 1`` (one layer applied ``L`` times), BERT has ``G = L``, and ALBERT's ``num_hidden_groups`` is any
divisor of ``L`` in between. Every layer parameter therefore carries a leading axis of size ``G``;
``layer_params`` picks layer ``i``'s slice, which is what the early-exit engines use to drive one
layer at a time inside a ``lax.while_loop``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Params = Any

MODEL_TYPES = ("albert", "bert", "roberta", "distilbert", "electra")
ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}
# the exit head's activation where a family's classifier does not use BERT's tanh
HEAD_ACTIVATIONS = {"distilbert": jax.nn.relu, "electra": ACTIVATIONS["gelu"]}
DTYPES = ("float32", "bfloat16", "float16")
POOLINGS = ("cls", "mean")
ATTENTIONS = ("auto", "xla", "cudnn", "cudnn_lengths", "pallas")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Architecture of an ELBERT encoder; field names follow transformers' configs.

    ``num_hidden_groups`` defaults to 1 for ALBERT (all layers share weights) and to
    ``num_hidden_layers`` for BERT (every layer has its own). ``dtype`` is the compute dtype;
    parameters are always float32. ``pooling`` is what an exit head reads: the [CLS] vector (the
    paper, transformers' *ForSequenceClassification) or the masked mean of the tokens, for
    sentence-transformers checkpoints such as all-MiniLM-L6-v2 whose [CLS] state carries almost no
    input information below the last layer (docs/results.md). ``attention`` picks the kernel:
    ``xla`` (scores and softmax in float32, any device), ``cudnn`` (cuDNN's fused flash attention
    with the mask as a bias; GPU, bfloat16/float16 only), ``cudnn_lengths`` (cuDNN fed key lengths;
    right-padded masks only, which every elbert_jax pipeline makes), ``pallas`` (Pallas' Triton
    flash attention, the mask as segment ids; interpreted off the GPU, where float32 products may
    run in TF32) or ``auto``: on a GPU in half precision ``pallas`` at inference on the shapes
    where it was the fastest on the H200 (docs/benchmarks.md), ``cudnn`` in training and on other
    shapes; XLA elsewhere. ``fuse_qkv`` runs
    the query, key and value projections as one matrix product over their concatenated weights (one
    read of the input instead of three); the parameters stay three ``Dense`` layers either way. On
    the H100 it paid only with Triton gemms; with the cuBLAS epilogues that ``parallel.configure_xla``
    selects, splitting its output costs more than it saves (docs/benchmarks.md), so it is off.
    """

    model_type: str = "albert"
    vocab_size: int = 30000
    embedding_size: int | None = 128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_hidden_groups: int | None = None
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu_new"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    classifier_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    num_labels: int = 3
    head_per_layer: bool = False
    pooling: str = "cls"
    dtype: str = "float32"
    attention: str = "xla"
    fuse_qkv: bool = False

    def __post_init__(self) -> None:
        errors = []
        if self.model_type not in MODEL_TYPES:
            errors.append(f"model_type={self.model_type!r} is not one of {MODEL_TYPES}")
        if (self.model_type not in ("albert", "electra")
                and self.embedding_size not in (None, self.hidden_size)):
            errors.append(f"model_type={self.model_type!r} has no factorised embeddings: "
                          "embedding_size must be None")
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                errors.append(f"{name}={value!r} must be a positive integer")
        if self.embedding_size is not None and (not isinstance(self.embedding_size, int)
                                                or self.embedding_size < 1):
            errors.append(f"embedding_size={self.embedding_size!r} must be a positive integer or None")
        if (isinstance(self.hidden_size, int) and isinstance(self.num_attention_heads, int)
                and self.num_attention_heads > 0 and self.hidden_size % self.num_attention_heads):
            errors.append(f"hidden_size={self.hidden_size} is not a multiple of "
                          f"num_attention_heads={self.num_attention_heads}")
        groups = self.num_hidden_groups
        if groups is not None:
            if not isinstance(groups, int) or groups < 1:
                errors.append(f"num_hidden_groups={groups!r} must be a positive integer")
            elif isinstance(self.num_hidden_layers, int) and self.num_hidden_layers % groups:
                errors.append(f"num_hidden_groups={groups} must divide num_hidden_layers="
                              f"{self.num_hidden_layers} (uneven groups are not supported)")
        if self.hidden_act not in ACTIVATIONS:
            errors.append(f"hidden_act={self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob"):
            value = getattr(self, name)
            if not 0.0 <= float(value) < 1.0:
                errors.append(f"{name}={value!r} must be in [0, 1)")
        if self.pooling not in POOLINGS:
            errors.append(f"pooling={self.pooling!r} is not one of {POOLINGS}")
        if self.dtype not in DTYPES:
            errors.append(f"dtype={self.dtype!r} is not one of {DTYPES}")
        if not isinstance(self.fuse_qkv, bool):
            errors.append(f"fuse_qkv={self.fuse_qkv!r} must be a bool")
        if self.attention not in ATTENTIONS:
            errors.append(f"attention={self.attention!r} is not one of {ATTENTIONS}")
        elif self.attention.startswith("cudnn") and self.dtype == "float32":
            errors.append(f"attention={self.attention!r} needs dtype bfloat16 or float16")
        if errors:
            raise ValueError("invalid EncoderConfig: " + "; ".join(errors))

    @property
    def groups(self) -> int:
        """Number of distinct layer weight sets (1 = fully shared, L = unshared)."""
        if self.num_hidden_groups is not None:
            return self.num_hidden_groups
        return 1 if self.model_type == "albert" else self.num_hidden_layers

    @property
    def position_offset(self) -> int:
        """The position of the first token: 0, but ``pad_token_id + 1`` in RoBERTa, whose lower
        positions are not for tokens (``position_ids``)."""
        return self.pad_token_id + 1 if self.model_type == "roberta" else 0

    @property
    def max_length(self) -> int:
        """The longest sequence the position table holds."""
        return self.max_position_embeddings - self.position_offset

    @property
    def projects_embeddings(self) -> bool:
        """Whether embeddings of width E pass through a Dense to H before layer 1: always in
        ALBERT, in ELECTRA when E != H (ELECTRA-small's 128 -> 256)."""
        return self.model_type == "albert" or (
            self.model_type == "electra" and self.embedding_size not in (None, self.hidden_size))

    @property
    def token_types(self) -> bool:
        """Whether the model has token-type embeddings (DistilBERT has none)."""
        return self.model_type != "distilbert"

    @property
    def shared(self) -> bool:
        return self.groups == 1

    @property
    def compute_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    def replace(self, **changes: Any) -> "EncoderConfig":
        return dataclasses.replace(self, **changes)


@flax.struct.dataclass
class ModelOutput:
    """``exit_logits``: [L, B, K] float32; ``hidden_states``: [L + 1, B, S, H] or None."""

    exit_logits: Array
    hidden_states: Array | None = None


def _dense(config: EncoderConfig, features: int, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=config.compute_dtype, param_dtype=jnp.float32,
                    kernel_init=nn.initializers.normal(config.initializer_range), name=name)


class _DenseWeights(nn.Module):
    """A ``Dense`` layer's kernel and bias (same names, shapes and initialisation), returned rather
    than applied, so that several projections of one input can run as one matrix product."""

    config: EncoderConfig
    features: int

    @nn.compact
    def __call__(self, in_features: int) -> tuple[Array, Array]:
        init = nn.initializers.normal(self.config.initializer_range)
        kernel = self.param("kernel", init, (in_features, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return kernel, bias


def _projections(config: EncoderConfig, x: Array, names: tuple[str, ...]) -> list[Array]:
    """``Dense(H)`` of ``x`` under each of ``names``: one product over the concatenated kernels with
    ``fuse_qkv``, else one ``Dense`` each; the parameter tree is the same."""
    hidden = x.shape[-1]
    if not config.fuse_qkv:
        return [_dense(config, hidden, name)(x) for name in names]
    weights = [_DenseWeights(config, hidden, name=name)(hidden) for name in names]
    dtype = config.compute_dtype
    kernel = jnp.concatenate([k for k, _ in weights], axis=1).astype(dtype)
    bias = jnp.concatenate([b for _, b in weights]).astype(dtype)
    out = jax.lax.dot_general(x.astype(dtype), kernel, (((x.ndim - 1,), (0,)), ((), ()))) + bias
    return jnp.split(out, len(names), axis=-1)


def _layer_norm(config: EncoderConfig, name: str) -> nn.LayerNorm:
    # Two-pass statistics (mean, then the mean square of x - mean), as PyTorch computes them: no
    # cancellation in E[x^2] - E[x]^2, and a chain of two row reductions that XLA's GPU normalisation
    # fusion can emit as one kernel with the residual add in front.
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=config.compute_dtype,
                        param_dtype=jnp.float32, use_fast_variance=False, name=name)


def _embed(config: EncoderConfig, num: int, features: int, name: str) -> nn.Embed:
    return nn.Embed(num, features, dtype=config.compute_dtype, param_dtype=jnp.float32,
                    embedding_init=nn.initializers.normal(config.initializer_range), name=name)


def pool(config: EncoderConfig, hidden: Array, key_mask: Array) -> Array:
    """What an exit reads from [..., S, H] states: [CLS], or the mean over unmasked tokens.

    ``key_mask`` is the [B, S] attention mask or its [B, 1, 1, S] boolean form.
    """
    if config.pooling == "cls":
        return hidden[..., 0, :]
    weights = key_mask.reshape(key_mask.shape[0], -1).astype(jnp.float32)
    total = jnp.einsum("...bsh,bs->...bh", hidden.astype(jnp.float32), weights)
    return (total / jnp.maximum(weights.sum(-1), 1.0)[:, None]).astype(hidden.dtype)


def attention_bias(attention_mask: Array) -> Array:
    """[B, S] 0/1 key mask -> [B, 1, 1, S] boolean that broadcasts over heads and queries."""
    return attention_mask.astype(bool)[:, None, None, :]


def position_ids(config: EncoderConfig, input_ids: Array) -> Array:
    """0, 1, 2, ... for ALBERT and BERT. RoBERTa (after fairseq) numbers the non-padding tokens
    from ``pad_token_id + 1`` and gives padding ``pad_token_id``, so its positions depend on where
    the padding is, as in transformers' ``create_position_ids_from_input_ids``."""
    if not config.position_offset:
        return jnp.arange(input_ids.shape[-1])[None, :]
    real = (input_ids != config.pad_token_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=-1) * real + config.pad_token_id


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout; ALBERT then maps E -> H.

    A model with one token type (RoBERTa) reads type 0 everywhere: its tokenizer gives no types,
    and the second segment of a pair that ours marks 1 is type 0 to it. DistilBERT has no
    token-type embeddings at all and ignores them."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, input_ids: Array, token_type_ids: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        width = cfg.embedding_size or cfg.hidden_size
        seq_len = input_ids.shape[-1]
        if seq_len > cfg.max_length:
            raise ValueError(f"sequence length {seq_len} exceeds the {cfg.max_length} positions of "
                             f"max_position_embeddings={cfg.max_position_embeddings}")
        if cfg.type_vocab_size == 1:
            token_type_ids = jnp.zeros_like(input_ids)
        x = _embed(cfg, cfg.vocab_size, width, "word_embeddings")(input_ids)
        x = x + _embed(cfg, cfg.max_position_embeddings, width, "position_embeddings")(
            position_ids(cfg, input_ids))
        if cfg.token_types:
            x = x + _embed(cfg, cfg.type_vocab_size, width, "token_type_embeddings")(token_type_ids)
        x = _layer_norm(cfg, "LayerNorm")(x)
        x = nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)
        if cfg.projects_embeddings:
            x = _dense(cfg, cfg.hidden_size, "embedding_hidden_mapping_in")(x)
        return x


class TransformerLayer(nn.Module):
    """Post-LN layer, identical in ALBERT, BERT, RoBERTa and DistilBERT up to parameter names (see
    ``convert``), but for DistilBERT's missing dropout after the attention output."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        batch, seq_len, hidden = x.shape
        heads = cfg.num_attention_heads
        head_dim = hidden // heads

        def split(t: Array) -> Array:
            return t.reshape(batch, seq_len, heads, head_dim)

        q, k, v = map(split, _projections(cfg, x, ("query", "key", "value")))
        dropout = bool(cfg.attention_probs_dropout_prob) and not deterministic
        drop = nn.Dropout(cfg.attention_probs_dropout_prob)
        kernel = "xla" if dropout else _attention_kernel(cfg, head_dim, seq_len, deterministic)
        context = attend(q, k, v, mask, kernel,
                         lambda probs: drop(probs, deterministic=deterministic))
        context = context.reshape(batch, seq_len, hidden)
        attn = _dense(cfg, hidden, "attention_output")(context)
        if cfg.model_type != "distilbert":
            attn = nn.Dropout(cfg.hidden_dropout_prob)(attn, deterministic=deterministic)
        x = _layer_norm(cfg, "attention_layer_norm")(x + attn)
        h = ACTIVATIONS[cfg.hidden_act](_dense(cfg, cfg.intermediate_size, "ffn")(x))
        h = _dense(cfg, hidden, "ffn_output")(h)
        h = nn.Dropout(cfg.hidden_dropout_prob)(h, deterministic=deterministic)
        return _layer_norm(cfg, "output_layer_norm")(x + h)


def attend(q: Array, k: Array, v: Array, key_mask: Array, kernel: str = "xla",
           dropout: Callable[[Array], Array] = lambda probs: probs) -> Array:
    """Context [B, S, N, D] of queries, keys and values [B, S, N, D] under a [B, 1, 1, S] boolean
    key mask, by ``kernel`` (``EncoderConfig.attention`` less ``auto``): ``xla`` computes the
    scores and softmax in float32 whatever the compute dtype (bf16 logits lose the ranking) and
    applies ``dropout`` to the probabilities; the others are one fused kernel each, with float32
    scores inside that never reach memory. Every kernel gives the same context at the unmasked
    query positions; at masked ones (which no later step reads) ``pallas`` attends to the other
    masked keys."""
    batch, seq_len, _, head_dim = q.shape
    if kernel == "cudnn":
        full_mask = jnp.broadcast_to(key_mask, (batch, 1, seq_len, seq_len))  # cuDNN's bias shape
        return jax.nn.dot_product_attention(q, k, v, mask=full_mask, implementation="cudnn")
    if kernel == "cudnn_lengths":  # right padding: the first `lengths` keys are the valid ones
        lengths = key_mask.reshape(batch, seq_len).sum(-1, dtype=jnp.int32)
        return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                            implementation="cudnn")
    if kernel == "pallas":
        from jax.experimental.pallas.ops.gpu import attention as pallas_gpu

        if seq_len % 16:
            raise ValueError(f"attention='pallas' needs a sequence length divisible by 16, "
                             f"got {seq_len}")
        block, back = math.gcd(seq_len, 64), math.gcd(seq_len, 32)  # backward: Pallas' defaults
        segments = key_mask.reshape(batch, seq_len).astype(jnp.int32)
        return pallas_gpu.mha(q, k, v, segments, sm_scale=head_dim ** -0.5,
                              block_sizes=pallas_gpu.BlockSizes(block, block, back, back, back, back),
                              interpret=jax.default_backend() != "gpu")
    if kernel != "xla":
        raise ValueError(f"attention kernel {kernel!r} is not one of {ATTENTIONS[1:]}")
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(head_dim))
    scores = jnp.where(key_mask, scores, jnp.finfo(jnp.float32).min)
    probs = dropout(jax.nn.softmax(scores, axis=-1).astype(q.dtype))
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def _attention_kernel(config: EncoderConfig, head_dim: int, seq_len: int,
                      deterministic: bool = True) -> str:
    """The kernel a layer uses: ``attention``, with ``auto`` resolved on a GPU with a half-precision
    dtype to Pallas' flash attention at inference where it was measured (2.7x cuDNN's kernel and
    1.14x its full depth on the H200 at [1024, 64, 12, 64], docs/benchmarks.md): head size 64 and
    its 64-token blocks, so sequence lengths that are multiples of 64. Elsewhere (other shapes,
    whose Triton builds no GPU has run yet, and training: Pallas' backward pass is not timed)
    cuDNN's where it takes the head size, else XLA's."""
    if config.attention != "auto":
        return config.attention
    if jax.default_backend() != "gpu" or config.dtype == "float32":
        return "xla"
    if deterministic and seq_len % 64 == 0 and head_dim == 64:
        return "pallas"
    if head_dim % 8 == 0 and head_dim <= 128:
        return "cudnn"
    return "xla"


class _LayerStep(nn.Module):
    """One scan step: carry (hidden, mask); emit the full hidden state or only [CLS]."""

    config: EncoderConfig
    deterministic: bool
    keep_hidden: bool

    @nn.compact
    def __call__(self, carry: tuple[Array, Array], _: Any) -> tuple[tuple[Array, Array], Array]:
        x, mask = carry
        x = TransformerLayer(self.config, name="layer")(x, mask, self.deterministic)
        return (x, mask), (x if self.keep_hidden else pool(self.config, x, mask))


class _LayerGroup(nn.Module):
    """The L / G layers of one hidden group: one weight set broadcast across an inner scan."""

    config: EncoderConfig
    deterministic: bool
    keep_hidden: bool

    @nn.compact
    def __call__(self, carry: tuple[Array, Array], _: Any) -> tuple[tuple[Array, Array], Array]:
        cfg = self.config
        scan = nn.scan(_LayerStep, variable_broadcast="params",
                       split_rngs={"params": False, "dropout": True},
                       length=cfg.num_hidden_layers // cfg.groups)
        return scan(cfg, self.deterministic, self.keep_hidden, name="layers")(carry, None)


class LayerStack(nn.Module):
    """All L layers; returns the final carry and the per-layer outputs stacked as [L, ...]."""

    config: EncoderConfig
    deterministic: bool = True
    keep_hidden: bool = False

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> tuple[Array, Array]:
        cfg = self.config
        scan = nn.scan(_LayerGroup, variable_axes={"params": 0},
                       split_rngs={"params": True, "dropout": True}, length=cfg.groups)
        (x, _), per_layer = scan(cfg, self.deterministic, self.keep_hidden, name="groups")(
            (x, mask), None)
        per_layer = per_layer.reshape((cfg.num_hidden_layers,) + per_layer.shape[2:])
        return x, per_layer


class ExitHead(nn.Module):
    """Pooler (Linear H->H + tanh on [CLS]) -> dropout -> Linear H->K: *ForSequenceClassification.

    RoBERTa's classification head is the same with a dropout in front as well (its ``dense`` and
    ``out_proj`` are our ``pooler`` and ``classifier``), and so is ELECTRA's with a GELU for the
    tanh; DistilBERT's has a ReLU for the tanh (its ``pre_classifier`` is our ``pooler``)."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, cls_hidden: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        if cfg.model_type in ("roberta", "electra"):
            cls_hidden = nn.Dropout(cfg.classifier_dropout_prob)(cls_hidden,
                                                                 deterministic=deterministic)
        pooled = _dense(cfg, cfg.hidden_size, "pooler")(cls_hidden)
        pooled = HEAD_ACTIVATIONS.get(cfg.model_type, jnp.tanh)(pooled)
        pooled = nn.Dropout(cfg.classifier_dropout_prob)(pooled, deterministic=deterministic)
        return _dense(cfg, cfg.num_labels, "classifier")(pooled).astype(jnp.float32)


class ExitHeads(nn.Module):
    """Applies the exits to [L, B, H] [CLS] states: one shared head, or one per layer."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, cls_per_layer: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        if not cfg.head_per_layer:
            return ExitHead(cfg, name="head")(cls_per_layer, deterministic)
        heads = nn.vmap(ExitHead, variable_axes={"params": 0},
                        split_rngs={"params": True, "dropout": True},
                        in_axes=(0, None), axis_size=cfg.num_hidden_layers)
        return heads(cfg, name="head")(cls_per_layer, deterministic)


class ElbertModel(nn.Module):
    """Multi-exit encoder. ``__call__`` runs full depth and returns every exit's logits.

    ``embed``, ``layer`` and ``exit`` expose the pieces one at a time (inference only) so that an
    early-exit engine can advance rows layer by layer; they read the same parameter tree.
    """

    config: EncoderConfig

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None,
                 token_type_ids: Array | None = None, deterministic: bool = True,
                 output_hidden_states: bool = False) -> ModelOutput:
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = Embeddings(self.config, name="embeddings")(input_ids, token_type_ids, deterministic)
        stack = LayerStack(self.config, deterministic, output_hidden_states, name="encoder")
        _, per_layer = stack(x, attention_bias(attention_mask))
        cls = pool(self.config, per_layer, attention_mask) if output_hidden_states else per_layer
        logits = ExitHeads(self.config, name="exits")(cls, deterministic)
        hidden = jnp.concatenate([x[None], per_layer]) if output_hidden_states else None
        return ModelOutput(exit_logits=logits, hidden_states=hidden)

    def embed(self, input_ids: Array, token_type_ids: Array | None = None) -> Array:
        """Embeddings projected to H: the input of layer 1."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        return Embeddings(self.config, parent=None).apply(
            {"params": self.variables["params"]["embeddings"]}, input_ids, token_type_ids, True)

    def layer(self, hidden: Array, attention_mask: Array, layer_index: Array | int) -> Array:
        """Applies layer ``layer_index`` (0-based, may be traced) to ``hidden`` [B, S, H]."""
        weights = layer_params(self.config, self.variables["params"], layer_index)
        return TransformerLayer(self.config, parent=None).apply(
            {"params": weights}, hidden, attention_bias(attention_mask), True)

    def exit(self, hidden_cls: Array, layer_index: Array | int) -> Array:
        """Exit logits [B, K] of layer ``layer_index`` from its pooled states [B, H] (``pool``)."""
        weights = head_params(self.config, self.variables["params"], layer_index)
        return ExitHead(self.config, parent=None).apply({"params": weights}, hidden_cls, True)


def layer_params(config: EncoderConfig, params: Params, layer_index: Array | int) -> Params:
    """The weights layer ``layer_index`` uses: its group's slice of the stacked parameters."""
    stacked = params["encoder"]["groups"]["layers"]["layer"]
    group = layer_index // (config.num_hidden_layers // config.groups)
    return jax.tree.map(lambda p: p[group], stacked)


def head_params(config: EncoderConfig, params: Params, layer_index: Array | int) -> Params:
    """The exit-head weights of layer ``layer_index`` (the one shared head by default)."""
    head = params["exits"]["head"]
    if not config.head_per_layer:
        return head
    return jax.tree.map(lambda p: p[layer_index], head)


def compute_weights(config: EncoderConfig, params: Params) -> Params:
    """``params`` with the weights every layer casts to the compute dtype on use (``Dense`` kernels
    and biases, embedding tables) cast once, up front. Inside an engine's layer loop XLA repeats
    those casts at every layer call; the outputs are bit-identical either way. LayerNorm
    parameters stay float32, as the layers read them."""
    dtype = config.compute_dtype
    if dtype == jnp.float32:
        return params

    def walk(tree: Any) -> Any:
        if not isinstance(tree, Mapping):
            return tree
        dense = "kernel" in tree
        return {k: v.astype(dtype) if k in ("kernel", "embedding") or (dense and k == "bias")
                else walk(v) for k, v in tree.items()}

    return walk(params)


def init_params(config: EncoderConfig, seed: int | Array = 0, seq_len: int = 8) -> Params:
    """Random initialisation as transformers does it: N(0, initializer_range), zero biases."""
    rng = jax.random.PRNGKey(seed) if isinstance(seed, int) else seed
    ids = jnp.zeros((1, min(seq_len, config.max_position_embeddings)), jnp.int32)
    return ElbertModel(config).init(rng, ids)["params"]
