"""Per-example gradients of the private branch, from one backward of a *sum*-reduced loss.

Opacus-style hooks, without opacus' general machinery (a zero-filled copy of every per-example
gradient, a parameter walk per layer per call). A forward hook on each layer with trainable
parameters keeps the layer's input and hooks the gradient of its output; when that gradient
arrives, the layer's per-example gradients are formed from (input, output gradient) and stored in
`p.grad_sample`, shape `(batch, *p.shape)`. Each layer's rule is chosen once, when attached:

- `nn.Linear`: `g_b^T x_b` for every example `b` as one batched matmul (the multiply-adds of the
  batched weight gradient, which the private backward never computes);
- `nn.LayerNorm`: the normalized input times the output gradient, summed per example;
- a patchifying convolution (kernel = stride, no padding: VideoMAE's tubelet embedding): its
  patches as rows, then the batched matmul of `nn.Linear`;
- any other layer: opacus' grad sampler for its type, or opacus' functorch rule (as opacus does).
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


def linear_samples(layer: nn.Linear, activations: list, g: torch.Tensor) -> dict:
    batch = g.shape[0]
    g = g.reshape(batch, -1, g.shape[-1])  # (batch, positions, out)
    samples = {}
    if layer.weight.requires_grad:
        x = activations[0].reshape(batch, -1, layer.in_features).to(g.dtype)
        samples[layer.weight] = torch.bmm(g.transpose(1, 2), x)
    if layer.bias is not None and layer.bias.requires_grad:
        samples[layer.bias] = g.sum(dim=1)
    return samples


def layer_norm_samples(layer: nn.LayerNorm, activations: list, g: torch.Tensor) -> dict:
    batch, shape = g.shape[0], layer.normalized_shape
    samples = {}
    if layer.weight is not None and layer.weight.requires_grad:
        normalized = F.layer_norm(activations[0], shape, eps=layer.eps)  # recomputed: cheaper than kept
        samples[layer.weight] = (normalized * g).reshape(batch, -1, *shape).sum(dim=1)
    if layer.bias is not None and layer.bias.requires_grad:
        samples[layer.bias] = g.reshape(batch, -1, *shape).sum(dim=1)
    return samples


def is_patchifying(layer: nn.Module) -> bool:
    """A convolution whose windows tile its input without overlap: each output position reads one patch."""
    return (
        type(layer) in (nn.Conv1d, nn.Conv2d, nn.Conv3d)
        and tuple(layer.kernel_size) == tuple(layer.stride)
        and all(p == 0 for p in layer.padding)
        and all(d == 1 for d in layer.dilation)
        and layer.groups == 1
    )


def patch_conv_samples(layer: nn.Module, activations: list, g: torch.Tensor) -> dict:
    x, kernel, positions = activations[0], layer.kernel_size, g.shape[2:]
    batch, channels, dims = x.shape[0], x.shape[1], len(kernel)
    g = g.reshape(batch, g.shape[1], -1)  # (batch, out channels, positions)
    samples = {}
    if layer.weight.requires_grad:
        # (batch, C, o1*k1, o2*k2, ...) -> (batch, o1*o2*..., C*k1*k2*...): one row per patch
        x = x[(slice(None), slice(None), *(slice(0, o * k) for o, k in zip(positions, kernel)))]
        x = x.reshape(batch, channels, *(d for o, k in zip(positions, kernel) for d in (o, k)))
        x = x.permute(0, *range(2, 2 + 2 * dims, 2), 1, *range(3, 3 + 2 * dims, 2))
        patches = x.reshape(batch, math.prod(positions), -1).to(g.dtype)
        samples[layer.weight] = torch.bmm(g, patches).view(batch, *layer.weight.shape)
    if layer.bias is not None and layer.bias.requires_grad:
        samples[layer.bias] = g.sum(dim=2)
    return samples


def sampler_for(layer: nn.Module):
    """`(layer, inputs, output_grad) -> {param: per-example grads}` for `layer`, and whether it
    covers the parameters of `layer`'s children too (opacus' functorch rule does)."""
    from opacus.grad_sample import GradSampleModule
    from opacus.grad_sample.functorch import ft_compute_per_sample_gradient, prepare_layer

    if type(layer) is nn.Linear:
        return linear_samples, False
    if type(layer) is nn.LayerNorm:
        return layer_norm_samples, False
    if is_patchifying(layer):
        return patch_conv_samples, False
    if type(layer) in GradSampleModule.GRAD_SAMPLERS:
        return GradSampleModule.GRAD_SAMPLERS[type(layer)], False
    prepare_layer(layer)  # a functional copy of the layer, made before any hook is attached to it
    return ft_compute_per_sample_gradient, True


def hooked_layers(module: nn.Module):
    """(layer, sampler) for each layer with trainable parameters of its own, as opacus picks them."""
    if any(p.requires_grad for p in module.parameters(recurse=False)):
        sampler, covers_children = sampler_for(module)
        yield module, sampler
        if covers_children:
            return
    for child in module.children():
        yield from hooked_layers(child)


class PerSampleGradients:
    """Hooks that fill `p.grad_sample` in a backward while enabled (`enable_hooks()`), for the
    private branch only. `roots` holds, for the forward since enabled, the outputs of the layers
    that read no input with a gradient (the pixels' patch embedding): `backward_targets`."""

    def __init__(self, model: nn.Module):
        self.enabled = False
        self.roots: list[torch.Tensor] = []
        self.handles = [
            layer.register_forward_hook(partial(self._keep_input, sampler)) for layer, sampler in hooked_layers(model)
        ]

    def enable_hooks(self) -> None:
        self.enabled, self.roots = True, []

    def disable_hooks(self) -> None:
        self.enabled, self.roots = False, []

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def take_roots(self) -> list[torch.Tensor]:
        roots, self.roots = self.roots, []
        return roots

    def _keep_input(self, sampler, layer, inputs, output) -> None:
        if not (self.enabled and layer.training and torch.is_grad_enabled()):
            return
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        activations = [t.detach() if isinstance(t, torch.Tensor) else t for t in inputs]
        if not any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs):
            self.roots.append(output)
        output.register_hook(partial(_store_samples, sampler, layer, activations))


def _store_samples(sampler, layer, activations, grad) -> None:
    for p, sample in sampler(layer, activations, grad.detach()).items():
        if not p.requires_grad:
            continue
        # a layer called twice in one forward: each example's gradients add up
        p.grad_sample = sample if getattr(p, "grad_sample", None) is None else p.grad_sample + sample
