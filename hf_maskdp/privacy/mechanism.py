"""The private branch's Gaussian mechanism (docs/privacy.md, "One training step", step 3).

    G_priv = (sum_i clip_C(g_i) + N(0, sigma^2 C^2 I)) / (q N)

- `attach_per_sample_grads`: hooks (`per_sample.py`, opacus-style) that fill `p.grad_sample`
  during a backward of a *sum*-reduced loss.
- `per_sample_backward`: the private backward; fills `p.grad_sample`, computes no batched grads.
- `accumulate_clipped`: clip each example's whole-model gradient to norm C and add it to a sum.
- `privatize`: sum over processes, Gaussian noise added once in total (by rank 0), divide by
  the *expected* batch size q N (never the realized one, which would depend on the sample).
"""

from __future__ import annotations

import weakref

import torch
import torch.distributed as dist
from torch import nn

from .per_sample import PerSampleGradients


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


_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its PerSampleGradients


def attach_per_sample_grads(model: nn.Module) -> PerSampleGradients:
    """Attach per-example-gradient hooks to `model` in place (no wrapper, so the state dict keeps
    its keys). Returns the hooks object; its `enable_hooks()` / `disable_hooks()` switch
    per-sample capture on for the private branch only."""
    hooks = _ATTACHED[model] = PerSampleGradients(model)
    return hooks


def backward_targets(model: nn.Module) -> list[torch.Tensor]:
    """What `per_sample_backward` asks autograd for, after a forward with the hooks enabled: the
    outputs of the layers that read no input with a gradient (the patch embedding of the pixels).
    Every other hooked layer lies between the loss and one of them, so its backward runs and its
    hook fires, yet autograd computes no parameter gradient at all: the hooks form them per example.
    (Asking for the cheap parameters instead, the biases, still costs a Conv3d weight gradient:
    its backward computes one even when only the bias is asked for, measured.)"""
    hooks = _ATTACHED.get(model)
    if hooks is None:
        raise ValueError("call attach_per_sample_grads(model) before the private backward")
    roots = hooks.take_roots()
    if not roots:
        raise RuntimeError(
            "no hooked layer read the batch in the last forward: enable the hooks before the private "
            "forward, and pass inputs that need no gradient (pixels, not a tensor with requires_grad)"
        )
    return roots


def per_sample_backward(loss: torch.Tensor, targets: list[torch.Tensor]) -> None:
    """Backward of the private branch: fills `p.grad_sample` (the hooks), leaves `p.grad` alone.
    `targets` are `backward_targets(model)`: only activation gradients are computed, and each layer's
    per-example gradients replace its batched weight gradient (the same multiply-adds)."""
    torch.autograd.grad(loss, targets, allow_unused=True)


def accumulate_clipped(params: list[nn.Parameter], clip_norm: float, total: list[torch.Tensor]) -> int:
    """Add `sum_i g_i * min(1, C / ||g_i||)` from `p.grad_sample` into `total`; clear the grads.

    Returns the number of examples. An example whose gradient is NaN or infinite contributes
    zero (norm 0 <= C, so the guarantee holds): raising instead would stop training on one
    record's content without noise. A model that is non-finite everywhere is caught on the
    *noisy* update by the trainer, which is post-processing.
    """
    samples = [getattr(p, "grad_sample", None) for p in params]
    if any(s is None for s in samples):
        missing = [i for i, s in enumerate(samples) if s is None]
        raise RuntimeError(
            f"no per-sample gradient for {len(missing)} trainable parameters: every "
            "trainable parameter must take part in the forward pass"
        )
    batch = samples[0].shape[0]
    rows = [s.reshape(batch, -1) for s in samples]
    norms = squared_norms(rows).sqrt()
    finite = torch.isfinite(norms)
    factor = torch.where(finite, (clip_norm / (norms + 1e-6)).clamp(max=1.0), torch.zeros_like(norms))
    all_finite = bool(finite.all())
    for p, r, t in zip(params, rows, total):
        if not all_finite:
            r = torch.where(finite[:, None].to(r.device), r, torch.zeros_like(r))  # 0 * NaN would be NaN
        # sum_i factor_i g_i as one matrix-vector product, in the sum's precision (fp32 also under bf16
        # autocast, whose per-example gradients are bf16)
        t.view(-1).addmv_(r.T.to(t.dtype), factor.to(t.dtype))
        p.grad_sample = None
        p.grad = None
    return batch


def squared_norms(rows: list[torch.Tensor]) -> torch.Tensor:
    """Each example's squared whole-model gradient norm, in float64, from per-parameter `(batch, n)` rows.

    Within a parameter the squares are summed in fp32 (pairwise summation: relative error about 1e-7,
    the precision of the fp32 sum the clipped gradients enter; 4-5x faster than fp64 on CPU), across
    parameters in fp64. A parameter whose fp32 sum is not finite (a square past fp32's range) is
    summed again in fp64, so overflow never turns a finite gradient into a dropped one.
    """
    per_param = torch.stack([r.float().pow(2).sum(dim=1) for r in rows]).double()
    overflowed = (~torch.isfinite(per_param).all(dim=1)).nonzero().flatten().tolist()
    for i in overflowed:  # rare: NaN/inf gradients, or squares above 3.4e38
        per_param[i] = rows[i].double().pow(2).sum(dim=1)
    return per_param.sum(dim=0)


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
