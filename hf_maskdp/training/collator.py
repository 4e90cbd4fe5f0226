"""`VideoClipCollator`: dataset rows -> `pixel_values`, `sensitive_mask`, `labels` for a video model.

It samples `num_frames` evenly, resizes (shortest edge), centre-crops, rescales and normalizes
like the model's image processor (VideoMAE's defaults without one), in torch. The mask goes
through the same geometry conservatively (`hf_maskdp.privacy.masks`): a resized pixel is
sensitive if any source pixel under its interpolation kernel is.

Rows with a mask are read with `hf_maskdp.read_anonymized_clip`: public pixels come from the
stored avatar layer (never from the lossy composite, whose codec saw real pixels).
`public_batch` builds the public view for MaskDP's public branch from the layer alone: sensitive
source pixels are replaced *before* resizing (so no kernel can mix them in), by the mean colour
(`public_fill="mean"`) or by a public scene drawn from the collator's own generator
(`public_fill="scene"`: the avatar appears in surroundings, as people do in real clips, and nothing
about them depends on a record). Resized pixels marked sensitive get the fill again (0, the mean
after normalization, or the scene).
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


def check_labels(dataset, num_labels: int | None, label_column: str = "label") -> None:
    """Refuse, before any step, labels the model cannot take: not whole numbers, or outside
    `[0, num_labels)` (torch would fail mid-run, after private steps spent budget)."""
    if hasattr(dataset, "column_names"):  # a datasets.Dataset: the column, without decoding videos
        column = label_column if label_column in dataset.column_names else "labels"
        if column not in dataset.column_names:
            return  # the collator names the missing column
        labels = dataset.with_format(None)[column]
    else:
        labels = [row.get(label_column, row.get("labels")) for row in (dataset[i] for i in range(len(dataset)))]
    wrong = [
        i
        for i, label in enumerate(labels)
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer))
    ]
    if wrong:
        raise ValueError(
            f"{len(wrong)} of {len(labels)} rows have a label that is not a class index (first: row {wrong[0]}, "
            f"{labels[wrong[0]]!r}); labels must be whole numbers in [0, num_labels): map names to ids with "
            "dataset.class_encode_column('label') or cast the column to int"
        )
    if num_labels is not None:
        outside = [i for i, label in enumerate(labels) if not 0 <= label < num_labels]
        if outside:
            raise ValueError(
                f"{len(outside)} of {len(labels)} rows have a label outside [0, {num_labels}) (first: row "
                f"{outside[0]}, label {labels[outside[0]]}); the model has num_labels={num_labels}: build it with "
                "num_labels = the number of classes, or fix the labels"
            )


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
        public_fill: what the public view shows where a clip is sensitive: "mean" (the mean colour)
            or "scene" (a public scene photo, `hf_maskdp.data.backgrounds.public_scene`).
        public_fill_seed: seed of the scene draws (a generator of the collator's own, never the data's).
    """

    def __init__(
        self,
        image_processor: Any = None,
        num_frames: int = 16,
        image_size: int | None = None,
        video_column: str = "video",
        mask_column: str = "sensitive_mask",
        label_column: str = "label",
        public_fill: str = "mean",
        public_fill_seed: int | None = 0,
    ):
        if public_fill not in ("mean", "scene"):
            raise ValueError(f"public_fill={public_fill!r}: choose 'mean' or 'scene'")
        self.public_fill = public_fill
        self._scene_rng = np.random.default_rng(public_fill_seed)
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
            frames, mask = read_anonymized_clip(
                example, video_column=self.video_column, mask_column=self.mask_column, public_only=public_view
            )
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
            fill = self._public_fill(x.shape)
            x = fill_sensitive(x[None], m[None], fill)[0]  # before any kernel can mix pixels
        x, m = self._resize_and_crop(x, m)
        x = self._rescale_and_normalize(x)
        if public_view:  # widened mask after resizing: those pixels get the fill too
            fill = (
                self._rescale_and_normalize(self._resize_and_crop(fill, None)[0])
                if self.public_fill == "scene"
                else 0.0
            )
            x = fill_sensitive(x[None], m[None], fill)[0]
        return x, m

    def _rescale_and_normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.do_rescale:
            x = x * self.rescale_factor
        if self.do_normalize:
            x = (x - torch.tensor(self.image_mean).view(1, 3, 1, 1)) / torch.tensor(self.image_std).view(1, 3, 1, 1)
        return x

    def _public_fill(self, shape) -> torch.Tensor:
        """What replaces sensitive pixels in the public view, (T, 3, H, W) or broadcastable to it."""
        if self.public_fill == "mean":
            return (torch.tensor(self.image_mean).view(1, 3, 1, 1) / self.rescale_factor).expand(shape)
        from ..data.backgrounds import public_scene

        scene = public_scene(shape[-2], shape[-1], self._scene_rng)  # one scene per clip, from public photos only
        return torch.tensor(scene).permute(2, 0, 1).float()[None].expand(shape)

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
