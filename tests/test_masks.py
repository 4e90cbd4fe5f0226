"""Masks through the model's geometry: token masks, conservative resizing, the fill view."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_maskdp.privacy.masks import fill_sensitive, has_public_content, resample_footprint, resize_mask, token_mask


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.002, 0.05, 0.5]))
def test_token_is_sensitive_iff_any_pixel_of_its_tubelet_is(seed, density):
    mask = torch.from_numpy(np.random.default_rng(seed).random((2, 4, 16, 24)) < density)
    tokens = token_mask(mask, tubelet_size=2, patch_size=8)
    assert tokens.shape == (2, 2 * 2 * 3)
    k = 0
    for t in range(2):
        for r in range(2):
            for c in range(3):
                block = mask[:, 2 * t : 2 * t + 2, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8]
                assert torch.equal(tokens[:, k], block.flatten(1).any(dim=1))
                k += 1
    assert torch.equal(token_mask(mask[0], 2, 8), tokens[0])


def test_token_mask_rejects_shapes_that_do_not_tile():
    with pytest.raises(ValueError, match="multiple of tubelet_size"):
        token_mask(torch.zeros(3, 16, 16, dtype=torch.bool), tubelet_size=2, patch_size=8)


@settings(max_examples=40, deadline=None)
@given(st.integers(4, 70), st.integers(4, 70), st.integers(4, 40), st.integers(4, 40), st.integers(0, 2**31 - 1))
def test_resized_pixels_marked_public_never_read_a_sensitive_pixel(h, w, out_h, out_w, seed):
    """Perturb only m = 1 source pixels (no fill): every output pixel the resized mask calls
    public must come out bit-identical, for down- and up-sampling alike."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g) * 255
    mask = torch.rand(h, w, generator=g) < 0.1
    y = torch.where(mask, torch.rand(1, 3, h, w, generator=g) * 1e4, x)
    a = F.interpolate(x, (out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    b = F.interpolate(y, (out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
    out_mask = resize_mask(mask[None], resample_footprint(h, out_h), resample_footprint(w, out_w))[0]
    changed = (a != b).any(dim=1)[0]
    assert not (changed & ~out_mask).any()


def test_resize_mask_keeps_a_single_sensitive_pixel_and_crops():
    mask = torch.zeros(1, 64, 64, dtype=torch.bool)
    mask[0, 30, 30] = True
    rows = resample_footprint(64, 32, crop_start=8, crop_size=16)
    out = resize_mask(mask, rows, resample_footprint(64, 32))
    assert out.shape == (1, 16, 32)
    assert out.any() and out.sum() <= 4 * 4  # dilated by the kernel, but only locally


def test_fill_view_ignores_sensitive_values_even_nan():
    x = torch.randn(2, 4, 3, 8, 8)
    mask = torch.rand(2, 4, 8, 8) < 0.5
    poisoned = torch.where(mask[:, :, None], torch.full_like(x, float("nan")), x)
    assert torch.equal(fill_sensitive(x, mask), fill_sensitive(poisoned, mask))
    assert torch.equal(fill_sensitive(x, mask)[~mask[:, :, None].expand_as(x)], x[~mask[:, :, None].expand_as(x)])
    with pytest.raises(ValueError, match="does not match"):
        fill_sensitive(x, mask[:, :2])


def test_public_content_per_view():
    mask = torch.ones(3, 4, 16, 16, dtype=torch.bool)
    mask[1, :, 0, 0] = False  # one public pixel: enough for fill, no whole token
    mask[2, :2, :8, :8] = False  # one whole public tubelet
    assert has_public_content(mask, "fill").tolist() == [False, True, True]
    assert has_public_content(mask, "drop", tubelet_size=2, patch_size=8).tolist() == [False, False, True]
