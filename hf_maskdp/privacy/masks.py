"""Sensitivity masks through the model's geometry, and the public views built from them.

The public branch of MaskDP may read only pixels with `m = 0` (docs/privacy.md, "One training step", step 4).
Everything that changes geometry keeps the mask conservative: an output pixel or token is
public only if *every* input pixel it can depend on is public.

- `resample_footprint` / `resize_mask`: for a resize (bilinear, antialiased) followed by a crop,
  an output pixel is sensitive if any source pixel inside its interpolation kernel's support is.
- `token_mask`: a VideoMAE token (one tubelet) is sensitive if any of its pixels is.
- `fill_sensitive`: the `fill` view; replaces sensitive pixels by a constant.
"""

from __future__ import annotations

import torch


def resample_footprint(in_size: int, out_size: int, crop_start: int = 0, crop_size: int | None = None) -> torch.Tensor:
    """Bool matrix `(crop_size, in_size)`: which source pixels each output pixel can read.

    Covers `torch.nn.functional.interpolate(mode="bilinear", antialias=True, align_corners=False)`
    from `in_size` to `out_size`, then a crop `[crop_start, crop_start + crop_size)`. The bilinear
    (triangle) kernel has radius `max(scale, 1)` source pixels around the output pixel's centre,
    where `scale = in_size / out_size`; one extra pixel on each side absorbs rounding.
    """
    crop_size = out_size if crop_size is None else crop_size
    scale = in_size / out_size
    radius = max(scale, 1.0)
    out_idx = torch.arange(crop_start, crop_start + crop_size, dtype=torch.float64)
    centre = (out_idx + 0.5) * scale - 0.5
    lo = torch.floor(centre - radius).clamp(min=0) - 1
    hi = torch.ceil(centre + radius).clamp(max=in_size - 1) + 1
    src = torch.arange(in_size, dtype=torch.float64)
    return (src[None, :] >= lo[:, None]) & (src[None, :] <= hi[:, None])


def resize_mask(mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Carry a bool mask `(..., H, W)` through a resize+crop given its footprints (conservative).

    `rows` `(H', H)` and `cols` `(W', W)` come from `resample_footprint`; an output pixel is
    sensitive iff some source pixel in its footprint is (a max-pool over the kernel support).
    """
    # Counts of sensitive pixels in each footprint; float32 counts are exact far beyond any frame.
    counts = rows.float() @ mask.float() @ cols.float().T
    return counts > 0


def token_mask(pixel_mask: torch.Tensor, tubelet_size: int, patch_size: int) -> torch.Tensor:
    """Per-token sensitivity: a token is sensitive when any pixel of its tubelet is.

    `pixel_mask` is bool `(T, H, W)` or `(B, T, H, W)`; the result is `(num_tokens,)` or
    `(B, num_tokens)` in VideoMAE's token order (time, then rows, then columns).
    """
    mask = torch.as_tensor(pixel_mask).bool()
    single = mask.dim() == 3
    if single:
        mask = mask[None]
    if mask.dim() != 4:
        raise ValueError(f"pixel_mask must have shape (T, H, W) or (B, T, H, W); got {tuple(mask.shape)}")
    b, t, h, w = mask.shape
    if t % tubelet_size or h % patch_size or w % patch_size:
        raise ValueError(
            f"mask shape (T={t}, H={h}, W={w}) is not a multiple of tubelet_size={tubelet_size} and "
            f"patch_size={patch_size}; resize the clip to the model's image_size and num_frames first"
        )
    blocks = mask.reshape(b, t // tubelet_size, tubelet_size, h // patch_size, patch_size, w // patch_size, patch_size)
    tokens = blocks.any(dim=6).any(dim=4).any(dim=2).reshape(b, -1)
    return tokens[0] if single else tokens


def fill_sensitive(
    pixel_values: torch.Tensor, pixel_mask: torch.Tensor, value: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """The `fill` public view: pixels with `m = 1` become `value` (a constant, or a tensor that
    broadcasts to `pixel_values` and depends on no record, such as a public scene).

    `pixel_values` is `(B, T, C, H, W)` (VideoMAE layout) and `pixel_mask` `(B, T, H, W)`.
    `torch.where` selects, so the result does not depend on sensitive values at all (not even
    through NaN or inf).
    """
    if pixel_values.shape[:2] + pixel_values.shape[3:] != pixel_mask.shape:
        raise ValueError(
            f"mask {tuple(pixel_mask.shape)} does not match pixel_values {tuple(pixel_values.shape)} "
            "(expected (B, T, H, W) for pixel_values (B, T, C, H, W))"
        )
    fill = torch.as_tensor(value, dtype=pixel_values.dtype).expand_as(pixel_values)
    return torch.where(pixel_mask[:, :, None].bool(), fill, pixel_values)


def has_public_content(
    pixel_mask: torch.Tensor, public_view: str, tubelet_size: int = 2, patch_size: int = 16
) -> torch.Tensor:
    """Bool `(B,)`: which clips have anything the public view can use (others are skipped).

    `fill` needs one public pixel; `drop` needs one token whose whole tubelet is public.
    """
    if public_view == "drop":
        return (~token_mask(pixel_mask, tubelet_size, patch_size)).any(dim=1)
    return (~pixel_mask.bool()).flatten(1).any(dim=1)
