"""VideoClipCollator: processor-equivalent pixels, conservative masks, public views."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from maskdp_helpers import randomize_sensitive

from hf_maskdp.training.collator import VideoClipCollator
from hf_maskdp.video import decode_mask, encode_mask, encode_video


def _row(shape=(8, 36, 52), density=0.2, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random(shape) < density
    return {"video": rng.integers(0, 256, (*shape, 3), dtype=np.uint8), "sensitive_mask": encode_mask(mask), "label": 1}


def test_matches_the_videomae_image_processor():
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil

    processor = VideoMAEImageProcessorPil(size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24})
    row = _row()
    frames = np.asarray(row["video"])[[1, 3, 5, 7]]  # 4 of 8 frames, evenly spread
    expected = processor(list(frames), return_tensors="pt")["pixel_values"][0]
    batch = VideoClipCollator(processor, num_frames=4)([row])
    assert batch["pixel_values"].shape == (1, 4, 3, 24, 24) == (1, *expected.shape)
    # PIL rounds the resized frame to uint8 (<= 0.5/255, i.e. 0.004 after normalizing by 0.5)
    assert (batch["pixel_values"][0] - expected).abs().max() < 0.01
    assert batch["labels"].tolist() == [1]
    assert batch["sensitive_mask"].shape == (1, 4, 24, 24)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.01, 0.2, 0.7]), st.sampled_from([(6, 20, 24), (5, 40, 30)]))
def test_public_view_is_blind_to_sensitive_pixels(seed, density, shape):
    rows = [_row(shape, density, seed), _row(shape, density, seed + 1)]
    collator = VideoClipCollator(num_frames=4, image_size=16)
    a = collator.public_batch(rows)
    b = collator.public_batch(randomize_sensitive(rows, seed + 7))
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert torch.equal(a["sensitive_mask"], b["sensitive_mask"])
    assert (a["pixel_values"].permute(0, 1, 3, 4, 2)[a["sensitive_mask"]] == 0).all()


def test_mask_is_conservative_through_frame_sampling_and_resizing():
    shape = (6, 40, 40)
    mask = np.zeros(shape, bool)
    mask[3, 17, 22] = True  # one sensitive pixel in frame 3, which is sampled (frames 0, 2, 3, 5)
    row = {"video": np.zeros((*shape, 3), np.uint8), "sensitive_mask": encode_mask(mask), "label": 0}
    out = VideoClipCollator(num_frames=4, image_size=16)([row])["sensitive_mask"][0]
    assert out[2].any() and not out[[0, 1, 3]].any()


def test_reads_the_anonymizer_columns_from_a_dataset():
    import datasets

    from hf_maskdp.video import mask_feature, video_feature

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    mask = np.zeros((4, 16, 16), bool)
    mask[:, :8] = True
    features = datasets.Features(
        {"video": video_feature(), "sensitive_mask": mask_feature(), "label": datasets.Value("int64")}
    )
    ds = datasets.Dataset.from_dict(
        {"video": [{"path": None, "bytes": encode_video(frames)}], "sensitive_mask": [encode_mask(mask)], "label": [2]},
        features=features,
    )
    batch = VideoClipCollator(num_frames=4, image_size=16)([ds[0]])
    expected = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255 * 2 - 1  # same size: no resize
    assert torch.allclose(batch["pixel_values"][0], expected, atol=1e-6)  # lossless video
    assert torch.equal(batch["sensitive_mask"][0], torch.from_numpy(decode_mask(ds[0]["sensitive_mask"])))


def test_bad_rows_get_clear_errors():
    collator = VideoClipCollator(num_frames=4, image_size=16)
    row = _row((6, 20, 24))
    with pytest.raises(ValueError, match="must match its video"):
        collator([{**row, "sensitive_mask": encode_mask(np.zeros((6, 20, 20), bool))}])
    with pytest.raises(ValueError, match="needs the 'sensitive_mask' column"):
        collator.public_batch([{"video": row["video"], "label": 0}])
    with pytest.raises(ValueError, match="no 'video' column"):
        collator([{"label": 0}])


def test_format_2_rows_public_view_reads_the_layer_and_the_private_branch_the_composite():
    from hf_maskdp import encode_anonymized_clip, read_anonymized_clip

    rng = np.random.default_rng(3)
    shape = (4, 24, 32)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    frames = np.stack([np.stack([xx * 7 + t, yy * 9, xx + yy], -1) for t in range(shape[0])]).astype(np.uint8)
    mask = np.ones(shape, bool)
    mask[:, 4:20, 8:20] = False  # the avatar
    row = {**encode_anonymized_clip(frames, mask), "label": 1}
    noise = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    swapped = {**row, "video": {"path": None, "bytes": encode_video(noise, lossless=False)}}  # another composite
    collator = VideoClipCollator(num_frames=4, image_size=16)
    assert torch.equal(collator.public_batch([row])["pixel_values"], collator.public_batch([swapped])["pixel_values"])
    assert torch.equal(
        collator.public_batch([row])["pixel_values"], collator.public_batch([{**row, "video": None}])["pixel_values"]
    )
    full = collator([row])["pixel_values"]
    assert not torch.equal(full, collator([swapped])["pixel_values"])  # the private branch reads the composite
    expected = collator([{"video": read_anonymized_clip(row)[0], "sensitive_mask": mask, "label": 1}])["pixel_values"]
    assert torch.equal(full, expected)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([0.05, 0.5]), st.sampled_from([(6, 20, 24), (5, 40, 30)]))
def test_scene_fill_is_blind_to_sensitive_pixels(seed, density, shape):
    """`public_fill="scene"`: sensitive pixels show a public scene drawn by the collator's own
    generator; for the same seed the view is bit-identical whatever the sensitive pixels hold."""
    rows = [_row(shape, density, seed), _row(shape, density, seed + 1)]
    a = VideoClipCollator(num_frames=4, image_size=16, public_fill="scene", public_fill_seed=seed).public_batch(rows)
    b = VideoClipCollator(num_frames=4, image_size=16, public_fill="scene", public_fill_seed=seed).public_batch(
        randomize_sensitive(rows, seed + 7)
    )
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["sensitive_mask"], b["sensitive_mask"])


def test_scene_fill_paints_public_photos_where_the_clip_is_sensitive():
    row = _row((6, 32, 32), density=0.0)
    mask = np.zeros((6, 32, 32), bool)
    mask[:, :, :16] = True  # the left half is sensitive
    row["sensitive_mask"] = encode_mask(mask)
    scene = VideoClipCollator(num_frames=4, image_size=32, public_fill="scene", public_fill_seed=1).public_batch([row])
    mean = VideoClipCollator(num_frames=4, image_size=32).public_batch([row])
    left, right = (slice(None), slice(None), slice(None), slice(None), slice(0, 16)), (..., slice(17, 32))
    assert (mean["pixel_values"][left] == 0).all() and scene["pixel_values"][left].std() > 0.02  # a photo, not a colour
    assert torch.equal(scene["pixel_values"][right], mean["pixel_values"][right])  # public pixels untouched
    other = VideoClipCollator(num_frames=4, image_size=32, public_fill="scene", public_fill_seed=2).public_batch([row])
    assert not torch.equal(other["pixel_values"][left], scene["pixel_values"][left])  # the scene comes from the seed
    with pytest.raises(ValueError, match="public_fill"):
        VideoClipCollator(public_fill="blur")
