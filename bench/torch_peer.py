"""transformers' PyTorch fine-tuning as the peer of our trainer: the same batches, optimiser and
schedule, one exit. Shared by bench/train_epoch.py (speed) and bench/peer_accuracy.py (accuracy)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # imported lazily below: torch is a dev-only dependency
    import torch


def make_step(hf, t, total_steps: int, bf16: bool) -> Callable[[dict], "torch.Tensor"]:
    """A training step for ``hf`` on one of our numpy batches: AdamW (no decay on biases and
    LayerNorm), linear warmup then decay, global-norm clipping, loss over the real rows only."""
    import torch
    import transformers

    dev = next(hf.parameters()).device.type
    decay = [p for n, p in hf.named_parameters() if not n.endswith("bias") and "LayerNorm" not in n]
    rest = [p for n, p in hf.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=t.lr, fused=dev == "cuda")
    sched = transformers.get_linear_schedule_with_warmup(opt, int(t.warmup_fraction * total_steps),
                                                         total_steps)
    autocast = torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16)

    def step(batch: dict, forward=hf) -> torch.Tensor:
        b = to_torch(batch, dev)
        with autocast:
            logits = forward(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                             token_type_ids=b["token_type_ids"]).logits
        ce = torch.nn.functional.cross_entropy(logits.float(), b["labels"].long(), reduction="none")
        loss = (ce * b["weight"]).sum() / b["weight"].sum().clamp(min=1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), t.clip_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def to_torch(batch: dict, dev: str) -> dict:
    """Our numpy batch on ``dev``. Padding rows (weight 0) have an all-zero mask, for which SDPA
    gives NaN (and 0 * NaN = NaN in the loss): they see their first token instead (ours gives
    such rows a uniform softmax; their outputs are ignored either way)."""
    import torch

    b = {k: torch.from_numpy(v).to(dev, non_blocking=True) for k, v in batch.items() if k != "index"}
    b["attention_mask"] = b["attention_mask"].clone()  # on CPU it shares the caller's numpy memory
    b["attention_mask"][:, 0] = 1
    return b
