"""The private branch's Gaussian mechanism (docs/privacy.md, "One training step", step 3).

    G_priv = (sum_i clip_C(g_i) + N(0, sigma^2 C^2 I)) / (q N)

- `attach_per_sample_grads`: opacus hooks (measured correct on every VideoMAE layer) that fill
  `p.grad_sample` during a backward of a *sum*-reduced loss.
- `per_sample_backward`: the private backward; fills `p.grad_sample`, skips the batched grads.
- `accumulate_clipped`: clip each example's whole-model gradient to norm C and add it to a sum.
- `privatize`: sum over processes, Gaussian noise added once in total (by rank 0), divide by
  the *expected* batch size q N (never the realized one, which would depend on the sample).
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from torch import nn


def check_model_supported(model: nn.Module) -> None:
    """Raise ValueError if per-sample gradients would be wrong (BatchNorm mixes examples...)."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        listed = "; ".join(str(e) for e in errors[:3])
        raise ValueError(
            f"this model cannot be trained with per-sample clipping: {listed}. Fix it with "
            "`model = opacus.validators.ModuleValidator.fix(model)` (e.g. BatchNorm -> GroupNorm)"
        )


def attach_per_sample_grads(model: nn.Module):
    """Attach opacus per-sample-gradient hooks to `model` in place (no wrapper, so the state dict
    keeps its keys). Returns the hooks object; its `enable_hooks()` / `disable_hooks()` switch
    per-sample capture on for the private branch only."""
    from opacus.grad_sample import GradSampleHooks

    hooks = GradSampleHooks(model, batch_first=True, loss_reduction="sum", strict=True)
    hooks.disable_hooks()
    return hooks


def backward_targets(model: nn.Module) -> list[nn.Parameter]:
    """The parameters `per_sample_backward` asks autograd for: each layer's cheap ones (biases,
    norm scales), or all of its own when it has none, so the gradient reaches every layer."""
    targets = []
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        targets += [p for p in own if p.dim() <= 1] or own
    return targets


def per_sample_backward(loss: torch.Tensor, targets: list[nn.Parameter]) -> None:
    """Backward of the private branch: fills `p.grad_sample` (the hooks), leaves `p.grad` alone.

    Asking autograd only for `backward_targets` (not the weight matrices) still runs every
    layer's backward, so every hook fires, but skips the batched weight gradients that the hooks
    recompute per example anyway (measured on VideoMAE: 1.55x -> 1.13x a plain backward). Asking
    for the input pixels instead would add a costly Conv3d input gradient.
    """
    with warnings.catch_warnings():
        # opacus' full backward hooks warn when the input (pixels) needs no grad: expected here.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        torch.autograd.grad(loss, targets, allow_unused=True)


def accumulate_clipped(params: list[nn.Parameter], clip_norm: float, total: list[torch.Tensor]) -> int:
    """Add `sum_i g_i * min(1, C / ||g_i||)` from `p.grad_sample` into `total`; clear the grads.

    Returns the number of examples. An example whose gradient is NaN or infinite contributes
    zero (norm 0 <= C, so the guarantee holds): raising instead would stop training on one
    record's content without noise. A model that is non-finite everywhere is caught on the
    *noisy* update by the trainer, which is post-processing.
    """
    samples = [p.grad_sample for p in params]
    if any(s is None for s in samples):
        missing = [i for i, s in enumerate(samples) if s is None]
        raise RuntimeError(
            f"no per-sample gradient for {len(missing)} trainable parameters: every "
            "trainable parameter must take part in the forward pass"
        )
    batch = samples[0].shape[0]
    rows = [s.reshape(batch, -1) for s in samples]
    # Norms accumulate in float64 (no overflow, no rounding past C) without a float64 copy of the grads.
    squared = torch.stack([torch.linalg.vector_norm(r, dim=1, dtype=torch.float64) for r in rows]).pow(2).sum(dim=0)
    norms = squared.sqrt()
    finite = torch.isfinite(norms)
    factor = torch.where(finite, (clip_norm / (norms + 1e-6)).clamp(max=1.0), torch.zeros_like(norms))
    for p, r, t in zip(params, rows, total):
        if not finite.all():
            r = torch.where(finite[:, None].to(r.device), r, torch.zeros_like(r))  # 0 * NaN would be NaN
        # sum_i factor_i g_i as one matrix-vector product, in the sum's precision (fp32 also under bf16
        # autocast, whose per-example gradients are bf16)
        t.view(-1).addmv_(r.T.to(t.dtype), factor.to(t.dtype))
        p.grad_sample = None
        p.grad = None
    return batch


def privatize(
    total: torch.Tensor,
    noise_multiplier: float,
    clip_norm: float,
    expected_batch_size: float,
    generator: torch.Generator,
    add_noise: bool,
) -> torch.Tensor:
    """All-reduce the flat clipped sum over processes with N(0, (sigma C)^2) added exactly once,
    then divide by `expected_batch_size` (q N, the whole dataset's). In place; returns `total`.
    `add_noise` must be true on exactly one rank (rank 0); with one process it is simply true."""
    if add_noise and noise_multiplier > 0:
        noise = torch.normal(
            0.0, noise_multiplier * clip_norm, size=total.shape, generator=generator, device=generator.device
        )
        total += noise.to(total.device, total.dtype)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    total /= expected_batch_size
    return total
