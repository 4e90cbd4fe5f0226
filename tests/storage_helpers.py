"""Rows in the storage formats hf_maskdp wrote before, for the tests that check they still load."""

from __future__ import annotations

import numpy as np

from hf_maskdp.storage import _pad_even, avatar_layer, cover_blocks, encode_anonymized_clip
from hf_maskdp.video import encode_mask, encode_video


def format2_row(frames: np.ndarray, mask: np.ndarray, mask_block: int = 2) -> dict:
    """A storage-format-2 row as the anonymizer wrote it: the layer in mp4 (with x264's SEI), masks
    packed per pixel, no `block` in the mask value."""
    stored = cover_blocks(mask, mask_block)
    layer = encode_video(
        _pad_even(avatar_layer(frames, stored)), lossless=False, crf=23, x264_params="mbtree=0:threads=1"
    )
    per_pixel = encode_mask(stored)
    del per_pixel["block"]
    return {
        "video": encode_anonymized_clip(frames, mask, mask_block=mask_block)["video"],
        "avatar_layer": {"path": None, "bytes": layer},
        "sensitive_mask": per_pixel,
        "storage_format": 2,
    }
