"""Early-exit inference engines: exact per-row exits at any batch size.

Every engine returns, for every row, the exit layer and prediction that ``exits.oracle`` gives on a
full-depth pass (spec section 4); they differ only in how much work they skip:

- ``reference``: one row at a time, batch 1, layer by layer, stopping at the exit. The semantics.
- ``full``: the whole batch at full depth, then the oracle. The full-depth peer.
- ``masked``: a ``lax.while_loop`` over layers for a batch; exited rows stay in the batch, masked;
  the loop stops when every row has exited, so a batch costs as much as its deepest row.
- ``compact``: as ``masked``, but whenever at most half the slots are still active the active rows
  are gathered to the front and the loop continues on a batch half as big (sizes B, B/2, ... down
  to ``min_batch``), all inside one jitted program.
- ``refill``: continuous batching over a queue. ``batch_size`` slots, each at its own depth; with
  ALBERT's shared layer one layer call advances rows at different depths, and an exited row's slot
  takes the next waiting text at once. When the queue is empty the remaining rows drain through the
  ``compact`` levels. An unshared stack (BERT, or ALBERT with several hidden groups) cannot run rows
  at different depths in one call; there ``refill`` groups rows by depth (``grouped_refill``): each
  call runs one depth's layer on ``batch_size`` rows of that depth, or starts that many new texts.

All batched engines are one jitted program per (batch size, sequence bucket, queue size): no host
round-trip inside the loop. The ``Engine`` front end sorts rows by length, cuts them into sequence
buckets, and returns results in input order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from elbert_jax import exits
from elbert_jax.data import bucket_for
from elbert_jax.model import ElbertModel, Params, compute_weights, pool

Array = jax.Array
ENGINES = ("reference", "full", "masked", "compact", "refill")


class Results(NamedTuple):
    """Per row: 1-based exit ``layer``, ``prediction``, ``probs`` [K] at the exit and, if asked,
    ``trace`` [L, K]: every computed layer's probabilities, NaN after the exit layer."""

    layer: Any
    prediction: Any
    probs: Any
    trace: Any = None


class _Slots(NamedTuple):
    hidden: Array        # [s, S, H] compute dtype
    mask: Array          # [s, S] int32
    row: Array           # [s] queue row held by the slot, -1 when free
    depth: Array         # [s] layers done
    threshold: Array     # [s] the row's policy threshold
    state: exits.ExitState


def _apply(model: ElbertModel, params: Params, method: str, *args: Any) -> Array:
    return model.apply({"params": params}, *args, method=method)


def _softmax(logits: Array) -> Array:
    return jax.nn.softmax(logits.astype(jnp.float32), -1)


def halving_levels(batch_size: int, min_batch: int) -> tuple[int, ...]:
    """Slot counts of the ``compact`` levels: B, B/2, ... while >= ``min_batch`` (B at least)."""
    levels = [batch_size]
    while levels[-1] // 2 >= max(min_batch, 1):
        levels.append(levels[-1] // 2)
    return tuple(levels)


def early_exit(model: ElbertModel, policy: exits.ExitPolicy, levels: Sequence[int],
               per_row_depth: bool, keep_trace: bool, params: Params, input_ids: Array,
               attention_mask: Array, token_type_ids: Array, thresholds: Array,
               num_valid: Array) -> Results:
    """The batched engines' loop over a queue of ``Q`` rows [Q, S]; rows ``>= num_valid`` are padding.

    ``thresholds`` [Q] is each row's policy threshold (``default_threshold`` for all, or per row).

    ``levels`` are the slot counts (``(B,)`` for ``masked``, halving for ``compact`` and ``refill``).
    Free slots take the next queued rows before every layer call; with ``Q == levels[0]`` that
    happens once, at the start, and every active row sits at the same depth, so the layer index is
    the loop counter (any stack). ``per_row_depth`` (``refill``, shared stacks only) lets rows at
    different depths share a call: the layer weights are the same and each row's exit head is
    picked by its own depth.
    """
    cfg = model.config
    num_layers, num_labels = cfg.num_hidden_layers, cfg.num_labels
    queue, seq_len = input_ids.shape
    if per_row_depth and cfg.groups != 1:
        raise ValueError("rows at different depths can share a layer call only when all layers "
                         f"share weights (num_hidden_groups=1), not with {cfg.groups} groups")

    def exit_probs(cls: Array, depth: Array, step: Array) -> Array:
        if per_row_depth and cfg.head_per_layer:  # every head on every row, keep each row's own
            every = jax.vmap(lambda i: _apply(model, params, "exit", cls, i))(jnp.arange(num_layers))
            pick = jnp.clip(depth - 1, 0, num_layers - 1)
            return _softmax(jnp.take_along_axis(every, pick[None, :, None], 0)[0])
        return _softmax(_apply(model, params, "exit", cls, step))

    def load(slots: _Slots, next_row: Array) -> tuple[_Slots, Array]:
        free = slots.row < 0
        new_row = next_row + jnp.cumsum(free) - 1
        take = free & (new_row < num_valid)
        src = jnp.minimum(new_row, queue - 1)

        def fill(slots: _Slots) -> _Slots:
            def pick(new: Array, old: Array) -> Array:
                return jnp.where(take.reshape((-1,) + (1,) * (old.ndim - 1)), new, old)

            hidden = _apply(model, params, "embed", input_ids[src], token_type_ids[src])
            fresh = exits.init_state(policy, slots.row.shape[0])
            return _Slots(pick(hidden, slots.hidden), pick(attention_mask[src], slots.mask),
                          pick(new_row, slots.row), pick(jnp.zeros_like(slots.depth), slots.depth),
                          pick(thresholds[src], slots.threshold),
                          jax.tree.map(pick, fresh, slots.state))

        slots = jax.lax.cond(take.any(), fill, lambda s: s, slots)
        return slots, next_row + take.sum()

    def advance(slots: _Slots, out: Results, step: Array) -> tuple[_Slots, Results]:
        active = slots.row >= 0
        layer_index = jnp.minimum(step, num_layers - 1)
        hidden = _apply(model, params, "layer", slots.hidden, slots.mask, layer_index)
        depth = slots.depth + active
        probs = exit_probs(pool(cfg, hidden, slots.mask), depth, layer_index)
        state, exit_now = exits.step(policy, slots.state, probs, depth, num_layers,
                                     slots.threshold)
        done = exit_now & active
        out = _record(out, slots.row, done, active, depth, probs)
        slots = _Slots(hidden, slots.mask, jnp.where(done, -1, slots.row), depth,
                       slots.threshold, state)
        return slots, out

    first = levels[0]
    dtype = cfg.compute_dtype
    slots = _Slots(hidden=jnp.zeros((first, seq_len, cfg.hidden_size), dtype),
                   mask=jnp.zeros((first, seq_len), attention_mask.dtype),
                   row=jnp.full((first,), -1, jnp.int32), depth=jnp.zeros((first,), jnp.int32),
                   threshold=jnp.zeros((first,), thresholds.dtype),
                   state=exits.init_state(policy, first))
    out = _empty_results(queue, num_layers, num_labels, keep_trace)
    refill = queue > first
    next_row = jnp.int32(0)
    if not refill:  # every row is loaded once, up front; the loops never load again
        slots, next_row = load(slots, next_row)
    carry = (slots, out, next_row, jnp.int32(0))
    for level, size in enumerate(levels):
        if level:  # gather the active rows (at most `size` of them) to the front
            order = jnp.argsort(carry[0].row < 0, stable=True)[:size]
            carry = (jax.tree.map(lambda x: x[order], carry[0]),) + carry[1:]
        floor = 0 if level == len(levels) - 1 else size // 2
        loads = refill and level == 0  # the queue is empty before the first level is left

        def cond(carry: tuple, floor: int = floor) -> Array:
            slots, _, next_row, _ = carry
            return (next_row < num_valid) | ((slots.row >= 0).sum() > floor)

        def body(carry: tuple, loads: bool = loads) -> tuple:
            slots, out, next_row, step = carry
            if loads:
                slots, next_row = load(slots, next_row)
            slots, out = advance(slots, out, step)
            return slots, out, next_row, step + 1

        carry = jax.lax.while_loop(cond, body, carry)
    return carry[1]


def grouped_refill(model: ElbertModel, policy: exits.ExitPolicy, levels: Sequence[int],
                   keep_trace: bool, params: Params, input_ids: Array, attention_mask: Array,
                   token_type_ids: Array, thresholds: Array, num_valid: Array) -> Results:
    """``refill`` for unshared stacks, which cannot advance rows at different depths in one call.

    Started rows wait in a pool of slots, grouped by depth. Each loop step either advances up to
    ``W`` rows of one depth through that depth's layer (the fullest group, the deepest on ties) or,
    when no group fills a call and ``W`` slots are free, starts the next ``W`` queued rows at
    layer 1. The pool holds ``min(L, Q / W) x W`` rows: while the queue lasts, either ``W`` slots
    are free or one of the ``L - 1`` depths holds ``W`` rows, so every call is full until the
    queue runs out. The tail then drains at the widths of ``levels`` (as ``compact`` does), each
    while some group holds more rows than the next width. Arguments as ``early_exit``.
    """
    cfg = model.config
    num_layers, num_labels = cfg.num_hidden_layers, cfg.num_labels
    queue, seq_len = input_ids.shape
    size = min(num_layers, -(-queue // levels[0])) * levels[0]
    order = jnp.arange(num_layers)

    def counts(waiting: _Slots) -> Array:  # [L]: pooled rows per depth (0 is never pooled)
        depth = jnp.where(waiting.row >= 0, waiting.depth, num_layers)
        return jnp.zeros(num_layers + 1, jnp.int32).at[depth].add(1)[:num_layers]

    def step(carry: tuple, width: int, may_start: bool) -> tuple:
        waiting, out, next_row = carry
        active = waiting.row >= 0
        count = counts(waiting)
        group = jnp.argmax(count * num_layers + order)  # fullest, deepest on ties
        start = jnp.bool_(False)
        if may_start:
            start = ((next_row < num_valid) & (count[group] < width)
                     & (size - count.sum() >= width))

        def from_queue(_: None) -> tuple:
            src = next_row + jnp.arange(width)
            row = jnp.where(src < num_valid, src, -1)
            src = jnp.minimum(src, queue - 1)
            free = jnp.nonzero(~active, size=width, fill_value=size)[0]
            return (_apply(model, params, "embed", input_ids[src], token_type_ids[src]),
                    attention_mask[src], row, thresholds[src], exits.init_state(policy, width),
                    jnp.where(row >= 0, free, size))

        def from_pool(_: None) -> tuple:
            slot = jnp.nonzero(active & (waiting.depth == group), size=width, fill_value=size)[0]
            take = jnp.minimum(slot, size - 1)
            return (waiting.hidden[take], waiting.mask[take],
                    jnp.where(slot < size, waiting.row[take], -1), waiting.threshold[take],
                    jax.tree.map(lambda x: x[take], waiting.state), slot)

        if may_start:
            hidden, mask, row, threshold, state, slot = jax.lax.cond(start, from_queue, from_pool,
                                                                     None)
        else:
            hidden, mask, row, threshold, state, slot = from_pool(None)
        index = jnp.where(start, 0, group)
        hidden = _apply(model, params, "layer", hidden, mask, index)
        probs = _softmax(_apply(model, params, "exit", pool(cfg, hidden, mask), index))
        state, exit_now = exits.step(policy, state, probs, index + 1, num_layers, threshold)
        valid = row >= 0
        done = exit_now & valid
        out = _record(out, row, done, valid, jnp.broadcast_to(index + 1, row.shape), probs)

        def put(old: Array, new: Array) -> Array:
            return old.at[slot].set(new, mode="drop")

        waiting = _Slots(put(waiting.hidden, hidden), put(waiting.mask, mask),
                         put(waiting.row, jnp.where(done, -1, row)),
                         put(waiting.depth, jnp.broadcast_to(index + 1, row.shape)),
                         put(waiting.threshold, threshold), jax.tree.map(put, waiting.state, state))
        return waiting, out, next_row + jnp.where(start, width, 0)

    waiting = _Slots(hidden=jnp.zeros((size, seq_len, cfg.hidden_size), cfg.compute_dtype),
                     mask=jnp.zeros((size, seq_len), attention_mask.dtype),
                     row=jnp.full((size,), -1, jnp.int32), depth=jnp.zeros((size,), jnp.int32),
                     threshold=jnp.zeros((size,), thresholds.dtype),
                     state=exits.init_state(policy, size))
    carry = (waiting, _empty_results(queue, num_layers, num_labels, keep_trace), jnp.int32(0))
    for level, width in enumerate(levels):
        floor = 0 if level == len(levels) - 1 else levels[level + 1]

        def cond(carry: tuple, floor: int = floor, may_start: bool = level == 0) -> Array:
            waiting, _, next_row = carry
            more = counts(waiting).max() > floor
            return more | (next_row < num_valid) if may_start else more

        carry = jax.lax.while_loop(
            cond, functools.partial(step, width=width, may_start=level == 0), carry)
    return carry[1]


def _record(out: Results, row: Array, done: Array, computed: Array, layer: Array,
            probs: Array) -> Results:
    """Writes the rows that exit now (``done``) into ``out`` at their queue ``row``, and with a
    trace every ``computed`` row's ``probs`` at its ``layer`` (1-based); other rows are sent out
    of range, where the scatter drops them."""
    queue = out.layer.shape[0]
    target = jnp.where(done, row, queue)
    trace = out.trace
    if trace is not None:
        trace = trace.at[jnp.where(computed, row, queue),
                         jnp.clip(layer - 1, 0, trace.shape[1] - 1)].set(probs, mode="drop")
    return Results(
        layer=out.layer.at[target].set(layer, mode="drop"),
        prediction=out.prediction.at[target].set(jnp.argmax(probs, -1).astype(jnp.int32),
                                                 mode="drop"),
        probs=out.probs.at[target].set(probs, mode="drop"), trace=trace)


def _empty_results(queue: int, num_layers: int, num_labels: int, keep_trace: bool) -> Results:
    return Results(layer=jnp.zeros((queue,), jnp.int32), prediction=jnp.zeros((queue,), jnp.int32),
                   probs=jnp.zeros((queue, num_labels), jnp.float32),
                   trace=jnp.full((queue, num_layers, num_labels), jnp.nan, jnp.float32)
                   if keep_trace else None)


def full_depth(model: ElbertModel, policy: exits.ExitPolicy, keep_trace: bool, params: Params,
               input_ids: Array, attention_mask: Array, token_type_ids: Array,
               thresholds: Array) -> Results:
    """Every layer for every row, then the oracle: the same rows, none of the savings."""
    logits = model.apply({"params": params}, input_ids, attention_mask, token_type_ids).exit_logits
    probs = _softmax(logits)
    chosen = exits.oracle(policy, probs, thresholds)
    at_exit = jnp.take_along_axis(probs, (chosen.layer - 1)[None, :, None], 0)[0]
    trace = None
    if keep_trace:
        computed = jnp.arange(1, probs.shape[0] + 1)[:, None] <= chosen.layer[None, :]
        trace = jnp.where(computed[..., None], probs, jnp.nan).transpose(1, 0, 2)
    return Results(chosen.layer, chosen.prediction, at_exit, trace)


class _Reference:
    """Batch 1, layer by layer, each row at its own unpadded length: what every engine must match."""

    def __init__(self, model: ElbertModel, policy: exits.ExitPolicy, params: Params):
        self.model, self.policy, self.params = model, policy, params
        self.embed = jax.jit(lambda p, ids, types: _apply(model, p, "embed", ids, types))
        self.layer = jax.jit(lambda p, h, m, i: _apply(model, p, "layer", h, m, i))
        self.exit = jax.jit(lambda p, c, i: _softmax(_apply(model, p, "exit", c, i)))

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                 token_type_ids: np.ndarray, thresholds: np.ndarray, keep_trace: bool) -> Results:
        num_layers = self.model.config.num_hidden_layers
        num_labels = self.model.config.num_labels
        rows = len(input_ids)
        out = Results(np.zeros(rows, np.int32), np.zeros(rows, np.int32),
                      np.zeros((rows, num_labels), np.float32),
                      np.full((rows, num_layers, num_labels), np.nan, np.float32)
                      if keep_trace else None)
        for n in range(rows):
            keep = attention_mask[n] > 0
            mask = attention_mask[n][keep][None]
            hidden = self.embed(self.params, input_ids[n][keep][None], token_type_ids[n][keep][None])
            state = exits.init_state(self.policy, 1)
            for i in range(num_layers):
                hidden = self.layer(self.params, hidden, mask, i)
                probs = self.exit(self.params, pool(self.model.config, hidden, mask), i)
                state, exit_now = exits.step(self.policy, state, probs, i + 1, num_layers,
                                             thresholds[n:n + 1])
                if out.trace is not None:
                    out.trace[n, i] = np.asarray(probs[0])
                if bool(exit_now[0]):
                    out.layer[n], out.probs[n] = i + 1, np.asarray(probs[0])
                    out.prediction[n] = int(np.argmax(out.probs[n]))
                    break
        return out


@dataclasses.dataclass
class Engine:
    """Early-exit classification of token-id rows, exact, in input order.

    ``kind`` is one of ``ENGINES``; ``refill`` groups rows by depth on unshared stacks (see the
    module docstring). Rows are sorted by length and padded to the
    smallest of ``buckets`` holding them; ``batch_size`` is the slot count (``refill``) or rows per
    batch, and a call with fewer rows runs on the smallest power of two of slots that holds them;
    a ``refill`` queue holds up to ``queue_batches`` batches of one sequence bucket.
    """

    model: ElbertModel
    params: Params
    policy: exits.ExitPolicy
    kind: str = "refill"
    batch_size: int = 64
    buckets: Sequence[int] = (16, 32, 64)
    min_batch: int = 8
    queue_batches: int = 64
    trace: bool = False
    mesh: jax.sharding.Mesh | None = None

    def __post_init__(self) -> None:
        if self.kind not in ENGINES:
            raise ValueError(f"engine {self.kind!r} is not one of {ENGINES}")
        if self.batch_size < 1 or self.min_batch < 1 or self.queue_batches < 1:
            raise ValueError("batch_size, min_batch and queue_batches must be >= 1")
        self._programs: dict[tuple, Callable] = {}
        self._reference = _Reference(self.model, self.policy, self.params)

    @property
    def devices(self) -> int:
        """Devices the rows are split over (``mesh``'s size; 1 without a mesh)."""
        return 1 if self.mesh is None else self.mesh.size

    def _program(self, levels: tuple[int, ...] | None, refill: bool = False) -> Callable:
        """The jitted engine; with a mesh, every device runs it on its own rows (``shard_map``,
        no communication: each device's loop stops when its own rows have exited)."""
        key = (levels, refill)
        if key not in self._programs:
            if levels is None:
                fn = functools.partial(full_depth, self.model, self.policy, self.trace)
            elif refill and self.model.config.groups != 1:
                fn = functools.partial(grouped_refill, self.model, self.policy, levels, self.trace)
            else:
                fn = functools.partial(early_exit, self.model, self.policy, levels, refill,
                                       self.trace)
            cast = functools.partial(compute_weights, self.model.config)
            fn = (lambda params, *args, f=fn: f(cast(params), *args))  # casts once, not per layer
            if self.mesh is not None:
                rows = jax.sharding.PartitionSpec(self.mesh.axis_names)
                local = fn if levels is None else (lambda *a, f=fn: f(*a[:-1], a[-1][0]))
                fn = jax.shard_map(local, mesh=self.mesh, out_specs=rows, check_vma=False,
                                   in_specs=(jax.sharding.PartitionSpec(),)
                                   + (rows,) * (4 if levels is None else 5))
            self._programs[key] = jax.jit(fn)
        return self._programs[key]

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                 token_type_ids: np.ndarray | None = None,
                 thresholds: np.ndarray | None = None) -> Results:
        """Rows [N, S] (right-padded, int) -> ``Results`` of numpy arrays over the N rows.

        ``thresholds`` [N], if given, replaces the policy's threshold row by row (``tau``, or the
        patience / static layer for those policies): a per-request accuracy-speed trade-off.
        """
        input_ids = np.asarray(input_ids, np.int32)
        attention_mask = np.asarray(attention_mask, np.int32)
        token_type_ids = (np.zeros_like(input_ids) if token_type_ids is None
                          else np.asarray(token_type_ids, np.int32))
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape or \
                token_type_ids.shape != input_ids.shape:
            raise ValueError(f"input_ids, attention_mask and token_type_ids must share one [N, S] "
                             f"shape, got {input_ids.shape}, {attention_mask.shape}, "
                             f"{token_type_ids.shape}")
        default = exits.default_threshold(self.policy)
        thresholds = (np.full(len(input_ids), default, np.float32) if thresholds is None
                      else np.asarray(thresholds, np.float32))
        if thresholds.shape != (len(input_ids),):
            raise ValueError(f"thresholds must have shape ({len(input_ids)},), "
                             f"got {thresholds.shape}")
        if self.kind == "reference":
            return self._reference(input_ids, attention_mask, token_type_ids, thresholds,
                                   self.trace)
        rows = len(input_ids)
        lengths = np.maximum(attention_mask.sum(1), 1)
        order = np.argsort(lengths, kind="stable")
        chunks, devices = self._chunks(order, lengths), self.devices
        if devices > 1 and self.kind == "refill":  # each device gets a share of every queue
            chunks = [part for chunk in chunks for part in np.array_split(chunk, devices)]
        pieces = []  # (device results, [(row indices, offset in the results)]); fetched at the end
        for first in range(0, len(chunks), devices):
            group = chunks[first:first + devices]
            group += [group[0][:0]] * (devices - len(group))  # idle devices get no rows
            longest = int(max(lengths[chunk].max() for chunk in group if len(chunk)))
            width = max(min(bucket_for(longest, self.buckets), input_ids.shape[1]), longest)
            slots = max(self._slots(len(chunk)) for chunk in group)
            capacity = max(self._capacity(len(chunk), slots) for chunk in group)
            filler = next(int(chunk[0]) for chunk in group if len(chunk))
            take = np.concatenate([np.concatenate([chunk, np.full(capacity - len(chunk), filler)])
                                   for chunk in group])
            args = (input_ids[take, :width], attention_mask[take, :width],
                    token_type_ids[take, :width], thresholds[take])
            num_valid = np.array([len(chunk) for chunk in group], np.int32)
            if self.kind == "full":
                result = self._program(None)(self.params, *args)
            else:
                levels = ((slots,) if self.kind == "masked"
                          else halving_levels(slots, self.min_batch))
                result = self._program(levels, self.kind == "refill")(
                    self.params, *args, num_valid if self.mesh is not None else num_valid[0])
            pieces.append((result, [(chunk, d * capacity) for d, chunk in enumerate(group)]))
        return _gather(pieces, rows, self.model.config, self.trace)

    def _chunks(self, order: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
        if self.kind != "refill":
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        # one queue per sequence bucket (rows of a queue share a width), split at the queue size
        widths = bucket_for(lengths[order], self.buckets)
        limit = self.batch_size * self.queue_batches
        chunks = []
        for width in np.unique(widths):
            group = order[widths == width]
            chunks += [group[i:i + limit] for i in range(0, len(group), limit)]
        return chunks

    def _slots(self, rows: int) -> int:
        """Slots (rows per layer call) for a chunk of ``rows``: ``batch_size``, or for fewer rows
        the smallest power of two holding them. A few requests then cost a few rows' compute,
        not a full batch's (one text on the MiniLM exits recipe at batch 64, 2 CPU cores: 37 ->
        3.9 ms), for at most log2(batch_size) more programs per bucket."""
        return min(self.batch_size, 1 << max(rows - 1, 0).bit_length())

    def _capacity(self, rows: int, slots: int) -> int:
        """Queue rows padded to ``slots`` x a power of two, so a stream compiles a handful of
        programs."""
        if self.kind != "refill":
            return slots
        batches = 1
        while batches * slots < rows:
            batches *= 2
        return batches * slots


def _gather(pieces: list[tuple[Results, list[tuple[np.ndarray, int]]]], rows: int, config: Any,
            keep_trace: bool) -> Results:
    out = Results(np.zeros(rows, np.int32), np.zeros(rows, np.int32),
                  np.zeros((rows, config.num_labels), np.float32),
                  np.zeros((rows, config.num_hidden_layers, config.num_labels), np.float32)
                  if keep_trace else None)
    for result, placed in pieces:
        result = jax.device_get(result)
        for chunk, offset in placed:
            where = slice(offset, offset + len(chunk))
            out.layer[chunk] = result.layer[where]
            out.prediction[chunk] = result.prediction[where]
            out.probs[chunk] = result.probs[where]
            if keep_trace:
                out.trace[chunk] = result.trace[where]
    return out
