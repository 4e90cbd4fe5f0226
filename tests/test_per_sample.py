"""Per-example gradients and norms of the private backward against one backward per example."""

import pytest
import torch
from maskdp_helpers import make_rows, tiny_collator, tiny_model
from torch import nn

from hf_maskdp.privacy import mechanism


class Scale(nn.Module):
    """A layer no rule covers: opacus' functorch rule computes its per-example gradients."""

    def __init__(self, width: int):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, width))

    def forward(self, x):
        return x * self.scale


class Mixed(nn.Module):
    """One of each kind of layer the hooks meet: a patchifying convolution without bias (the only
    layer that reads the input), an overlapping one (opacus' rule), GroupNorm, LayerNorm, a custom
    layer, a Linear called twice and a frozen one."""

    def __init__(self):
        super().__init__()
        self.patches = nn.Conv2d(3, 8, kernel_size=4, stride=4, bias=False)
        self.conv = nn.Conv2d(8, 8, kernel_size=3, padding=1)
        self.group_norm = nn.GroupNorm(2, 8)
        self.norm = nn.LayerNorm(8)
        self.scale = Scale(8)
        self.shared = nn.Linear(8, 8)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(8, 3)

    def forward(self, pixels):
        x = self.group_norm(self.conv(self.patches(pixels)))
        x = self.scale(self.norm(x.flatten(2).transpose(1, 2)))  # (batch, tokens, 8)
        x = self.shared(torch.relu(self.shared(x)))
        return self.head(self.frozen(x).mean(dim=1))


def _loss_sum(model, inputs, labels):
    logits = model(inputs)
    logits = getattr(logits, "logits", logits)
    return nn.functional.cross_entropy(logits, labels, reduction="sum")


def _one_backward_per_example(model, inputs, labels, params):
    grads = []
    for i in range(len(labels)):
        model.zero_grad()
        _loss_sum(model, inputs[i : i + 1], labels[i : i + 1]).backward()
        grads.append([p.grad.clone() for p in params])
    model.zero_grad()
    return [torch.stack([g[j] for g in grads]) for j in range(len(params))]


def _private_backward(model, inputs, labels):
    hooks = mechanism.attach_per_sample_grads(model)
    hooks.enable_hooks()
    mechanism.per_sample_backward(_loss_sum(model, inputs, labels), mechanism.backward_targets(model))
    hooks.disable_hooks()
    hooks.remove_hooks()


@pytest.mark.parametrize("model_name", ["videomae", "mixed"])
def test_per_example_gradients_and_norms_match_one_backward_per_example(model_name):
    if model_name == "videomae":
        model, batch = tiny_model(layers=2), tiny_collator()(make_rows(3, mask="random"))
        inputs, labels = batch["pixel_values"], batch["labels"]
    else:
        torch.manual_seed(0)
        model, inputs, labels = Mixed(), torch.randn(3, 3, 16, 16), torch.tensor([0, 2, 1])
    params = [p for p in model.parameters() if p.requires_grad]
    expected = _one_backward_per_example(model, inputs, labels, params)
    _private_backward(model, inputs, labels)
    assert all(p.grad is None for p in params)  # no batched gradient is formed
    for p, e in zip(params, expected):
        assert torch.allclose(p.grad_sample, e, rtol=1e-5, atol=1e-6)
    expected_norms = torch.sqrt(sum(e.double().pow(2).flatten(1).sum(dim=1) for e in expected))
    norms = mechanism.squared_norms([p.grad_sample.flatten(1) for p in params]).sqrt()
    assert torch.allclose(norms, expected_norms, rtol=1e-5, atol=0)
    if model_name == "mixed":
        assert all(getattr(p, "grad_sample", None) is None for p in model.frozen.parameters())


def test_a_gradient_past_fp32_squares_is_clipped_not_dropped():
    # 1e20 squared overflows fp32: its norm is summed again in fp64, so the example is clipped to C.
    weight = nn.Parameter(torch.zeros(2))
    weight.grad_sample = torch.tensor([[1e20, 0.0], [0.3, 0.4]])
    assert mechanism.squared_norms([weight.grad_sample]).tolist() == pytest.approx([1e40, 0.25])
    total = [torch.zeros(2)]
    mechanism.accumulate_clipped([weight], 1.0, total)
    assert torch.allclose(total[0], torch.tensor([1.0 + 0.3, 0.4]))
