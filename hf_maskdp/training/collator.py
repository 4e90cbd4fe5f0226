"""`VideoClipCollator`: dataset rows -> `pixel_values`, `sensitive_mask`, `labels` for a video model.

It samples `num_frames` evenly, resizes (shortest edge), centre-crops, rescales and normalizes
like the model's image processor (VideoMAE's defaults without one), in torch. The mask goes
through the same geometry conservatively (`hf_maskdp.privacy.masks`): a resized pixel is
sensitive if any source pixel under its interpolation kernel is.

Rows with a mask are read with `hf_maskdp.read_anonymized_clip`: public pixels come from the
stored avatar layer (never from the lossy composite, whose codec saw real pixels).
`public_batch` builds the public view for MaskDP's public branch from the layer alone: sensitive
source pixels are replaced by the mean colour *before* resizing (so no kernel can mix them in),
and resized pixels marked sensitive are set to 0 (the mean after normalization).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..privacy.masks import fill_sensitive, resample_footprint, resize_mask

_VIDEOMAE_MEAN = (0.5, 0.5, 0.5)  # transformers' IMAGENET_STANDARD_MEAN / STD, VideoMAE's defaults
_VIDEOMAE_STD = (0.5, 0.5, 0.5)


def uniform_frame_indices(num_source_frames: int, num_frames: int) -> list[int]:
    """`num_frames` indices spread evenly over the clip (deterministic: no hidden RNG draws)."""
    if num_source_frames < 1:
        raise ValueError("clip has no frames")
    step = num_source_frames / num_frames
    return [min(num_source_frames - 1, math.floor((i + 0.5) * step)) for i in range(num_frames)]


class VideoClipCollator:
    """Collate rows with a video, an optional sensitivity mask and a label.

    Args:
        image_processor: a transformers image/video processor whose `size`, `crop_size`,
            `image_mean`, `image_std`, `do_*` and `rescale_factor` are followed. `None` uses
            VideoMAE's defaults (shortest edge 224, centre crop 224, mean = std = 0.5).
        num_frames: frames per clip, sampled evenly over the whole clip.
        image_size: if set, overrides the processor: resize the shortest edge to `image_size`
            and centre-crop an `image_size` square (use the model's `config.image_size`).
        video_column / mask_column / label_column: row keys (`labels` is accepted for `label`).
    """

    def __init__(
        self,
        image_processor: Any = None,
        num_frames: int = 16,
        image_size: int | None = None,
        video_column: str = "video",
        mask_column: str = "sensitive_mask",
        label_column: str = "label",
    ):
        p = image_processor
        size = dict(getattr(p, "size", None) or {"shortest_edge": 224})
        crop = dict(getattr(p, "crop_size", None) or {"height": 224, "width": 224})
        if image_size is not None:
            size, crop = {"shortest_edge": image_size}, {"height": image_size, "width": image_size}
        self.num_frames = num_frames
        self.size = size
        self.crop_size = crop
        self.do_resize = getattr(p, "do_resize", True) is not False
        self.do_center_crop = getattr(p, "do_center_crop", True) is not False
        self.do_rescale = getattr(p, "do_rescale", True) is not False
        self.rescale_factor = float(getattr(p, "rescale_factor", None) or 1 / 255)
        self.do_normalize = getattr(p, "do_normalize", True) is not False
        self.image_mean = tuple(getattr(p, "image_mean", None) or _VIDEOMAE_MEAN)
        self.image_std = tuple(getattr(p, "image_std", None) or _VIDEOMAE_STD)
        self.video_column, self.mask_column, self.label_column = video_column, mask_column, label_column

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Full clips (the private branch, evaluation, non-private training)."""
        return self._collate(examples, public_view=False)

    def public_batch(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        """Public views: the output depends on pixels with `m = 0` only (needs the mask column)."""
        return self._collate(examples, public_view=True)

    # ------------------------------------------------------------------ internals

    def _collate(self, examples: list[dict], public_view: bool) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        clips = [self._clip(ex, public_view) for ex in examples]
        batch = {"pixel_values": torch.stack([c[0] for c in clips])}
        if all(c[1] is not None for c in clips):
            batch["sensitive_mask"] = torch.stack([c[1] for c in clips])
        labels = [ex.get(self.label_column, ex.get("labels")) for ex in examples]
        if all(label is not None for label in labels):
            batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
        return batch

    def _clip(self, example: dict, public_view: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        from ..storage import read_anonymized_clip
        from ..video import load_video_frames

        if self.video_column not in example:
            raise ValueError(f"row has no {self.video_column!r} column (keys: {sorted(example)}); set video_column=")
        mask = None
        if example.get(self.mask_column) is not None:
            # Public pixels come from the avatar layer; the public view does not even decode the composite.
            frames, mask = read_anonymized_clip(example, video_column=self.video_column, mask_column=self.mask_column,
                                                public_only=public_view)  # fmt: skip
        elif public_view:
            raise ValueError(
                f"the public view needs the {self.mask_column!r} column; pass an anonymized dataset "
                "(hf-maskdp anonymize) or set mask_column= to the column that holds the mask"
            )
        else:
            frames = load_video_frames(example[self.video_column])
        index = uniform_frame_indices(len(frames), self.num_frames)
        x = torch.from_numpy(np.ascontiguousarray(frames[index])).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
        m = torch.from_numpy(mask[index]) if mask is not None else None
        if public_view:
            mean_colour = torch.tensor(self.image_mean).view(1, 3, 1, 1) / self.rescale_factor
            x = torch.where(m[:, None], mean_colour.expand_as(x), x)  # before any kernel can mix pixels
        x, m = self._resize_and_crop(x, m)
        if self.do_rescale:
            x = x * self.rescale_factor
        if self.do_normalize:
            x = (x - torch.tensor(self.image_mean).view(1, 3, 1, 1)) / torch.tensor(self.image_std).view(1, 3, 1, 1)
        if public_view:
            x = fill_sensitive(x[None], m[None], 0.0)[0]
        return x, m

    def _output_size(self, h: int, w: int) -> tuple[int, int]:
        if "shortest_edge" in self.size:
            short = self.size["shortest_edge"]
            if h <= w:
                return short, int(short * w / h)
            return int(short * h / w), short
        return self.size["height"], self.size["width"]

    def _resize_and_crop(self, x: torch.Tensor, m: torch.Tensor | None):
        h, w = x.shape[-2:]
        out_h, out_w = self._output_size(h, w) if self.do_resize else (h, w)
        crop_h, crop_w = (self.crop_size["height"], self.crop_size["width"]) if self.do_center_crop else (out_h, out_w)
        if crop_h > out_h or crop_w > out_w:
            raise ValueError(f"crop {crop_h}x{crop_w} is larger than the resized frame {out_h}x{out_w}")
        top, left = (out_h - crop_h) // 2, (out_w - crop_w) // 2
        if (out_h, out_w) != (h, w):
            x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
            if m is not None:
                rows = resample_footprint(h, out_h, top, crop_h)
                cols = resample_footprint(w, out_w, left, crop_w)
                m = resize_mask(m, rows, cols)
        elif m is not None:
            m = m[:, top : top + crop_h, left : left + crop_w]
        return x[..., top : top + crop_h, left : left + crop_w], m
