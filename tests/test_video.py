"""Video decode/encode and mask storage: exact round trips and clear errors."""

import io

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hf_maskdp.storage import cover_blocks
from hf_maskdp.video import (
    decode_mask,
    encode_mask,
    encode_video,
    load_video_frames,
    mask_feature,
    video_feature,
    video_shape,
)


def _clip(t=6, h=33, w=47, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_encode_video_is_lossless_for_odd_sizes(tmp_path):
    frames = _clip()
    data = encode_video(frames, fps=12.5, path=tmp_path / "clip.mp4")
    for source in (data, tmp_path / "clip.mp4", str(tmp_path / "clip.mp4"), {"path": None, "bytes": data}):
        np.testing.assert_array_equal(load_video_frames(source), frames)
    assert load_video_frames(data, max_frames=2).shape == (2, 33, 47, 3)
    for source in (data, tmp_path / "clip.mp4", {"path": None, "bytes": data}, frames):
        assert video_shape(source) == (6, 33, 47)  # from the header, without decoding


def test_reads_a_lossy_yuv420_mp4_written_by_another_encoder(tmp_path):
    # A common real-world file: yuv420p H.264 at a variable frame rate, written by PyAV directly.
    path = tmp_path / "ordinary.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = np.full((48, 64, 3), 40 * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    frames = load_video_frames(path)
    assert frames.shape == (5, 48, 64, 3) and frames.dtype == np.uint8
    assert abs(int(frames[4].mean()) - 160) <= 3


@pytest.mark.parametrize(
    "value, shape",
    [
        (np.zeros((4, 8, 9, 3), np.uint8), (4, 8, 9, 3)),
        (np.zeros((4, 8, 9), np.uint8), (4, 8, 9, 3)),  # grayscale clip
        (np.zeros((8, 9, 3), np.uint8), (1, 8, 9, 3)),  # one image
        (np.ones((2, 8, 9, 3), np.float32), (2, 8, 9, 3)),  # float in [0, 1]
        ([np.zeros((8, 9, 3), np.uint8)] * 3, (3, 8, 9, 3)),
    ],
)
def test_load_video_frames_accepts_arrays_and_lists(value, shape):
    frames = load_video_frames(value)
    assert frames.shape == shape and frames.dtype == np.uint8


def test_load_video_frames_accepts_tensors_and_pil():
    import torch
    from PIL import Image

    frames = _clip(t=2)
    np.testing.assert_array_equal(load_video_frames(torch.from_numpy(frames)), frames)
    np.testing.assert_array_equal(load_video_frames([Image.fromarray(f) for f in frames]), frames)


@pytest.mark.parametrize(
    "value, message",
    [
        (b"", "zero-length"),
        (b"\x00not a video" * 50, "cannot decode"),
        ({"path": None, "bytes": None}, "neither"),
        (None, "no video"),
        (np.zeros((0, 8, 8, 3), np.uint8), "zero frames"),
        (np.zeros((2, 3, 8, 8, 3), np.uint8), "cannot read frames of shape"),
    ],
)
def test_bad_videos_raise_clear_errors(value, message):
    with pytest.raises(ValueError, match=message):
        load_video_frames(value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        load_video_frames(tmp_path / "missing.mp4")


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 4), st.integers(1, 17), st.integers(1, 23))),
    st.sampled_from([1, 2, 3, 16]),
)
def test_mask_round_trip_is_exact(mask, block):
    mask = cover_blocks(mask, block)  # constant on its tiles, as the anonymizer stores it
    encoded = encode_mask(mask, block=block)
    assert encoded["shape"] == list(mask.shape) and encoded["block"] == block
    np.testing.assert_array_equal(decode_mask(encoded), mask)
    if block > 1 and not mask.all() and mask.any():
        assert len(encoded["packed"]) <= len(encode_mask(mask)["packed"])


def test_masks_packed_per_tile_refuse_masks_that_are_not_and_old_masks_read_per_pixel():
    mask = np.zeros((2, 6, 6), bool)
    mask[0, 1, 1] = True  # one pixel of a 2x2 tile
    with pytest.raises(ValueError, match=r"not constant on 2x2 tiles: round it out first .*cover_blocks"):
        encode_mask(mask, block=2)
    with pytest.raises(ValueError, match=r"block=0: choose an integer >= 1"):
        encode_mask(mask, block=0)
    older = {key: value for key, value in encode_mask(mask).items() if key != "block"}  # written before `block`
    np.testing.assert_array_equal(decode_mask(older), mask)
    np.testing.assert_array_equal(decode_mask({**older, "block": None}), mask)  # Arrow fills a missing field so


def test_masks_survive_a_dataset_round_trip(tmp_path):
    from datasets import Dataset, Features, load_from_disk

    mask = np.zeros((3, 20, 30), bool)
    mask[:, 5:15, 10:25] = True
    frames = _clip(t=3, h=20, w=30)
    features = Features({"video": video_feature(), "sensitive_mask": mask_feature()})
    Dataset.from_dict(
        {"video": [{"path": None, "bytes": encode_video(frames)}], "sensitive_mask": [encode_mask(mask)]},
        features=features,
    ).save_to_disk(tmp_path / "ds")
    row = load_from_disk(tmp_path / "ds")[0]
    np.testing.assert_array_equal(decode_mask(row["sensitive_mask"]), mask)
    np.testing.assert_array_equal(load_video_frames(row["video"]), frames)


def test_mask_is_compact():
    mask = np.zeros((16, 224, 224), bool)
    mask[:, 50:200, 80:150] = True
    assert len(encode_mask(mask)["packed"]) < mask.size / 8 / 20  # far below one bit per pixel


@pytest.mark.parametrize(
    "value, message",
    [
        ({"shape": [2, 3]}, "expected keys"),
        ({"shape": [2, 3], "packed": b""}, "not \\(T, H, W\\)"),
        ({"shape": [1, 4, 4], "packed": b"junk"}, "not packbits"),
        ({"shape": [1, 40, 40], "packed": __import__("zlib").compress(b"\x00")}, "do not fit"),
        ({"shape": [1, 40, 40], "packed": __import__("zlib").compress(b"\x00" * 200), "block": 2}, "in 2x2 tiles"),
        ({"shape": [1, 4, 4], "packed": __import__("zlib").compress(b"\x00" * 2), "block": 0}, "block 0"),
        (np.full((2, 3, 3), 7), "boolean"),
        (np.zeros((3,), bool), "shape"),
        (None, "no mask"),
    ],
)
def test_malformed_masks_are_refused(value, message):
    with pytest.raises(ValueError, match=message):
        decode_mask(value)


def test_encode_mask_rejects_non_binary():
    with pytest.raises(ValueError, match="boolean"):
        encode_mask(np.full((1, 2, 2), 0.5))


def test_display_encoding_is_ordinary_yuv420p_h264():
    frames = np.full((3, 33, 47, 3), 120, np.uint8)
    data = encode_video(frames, lossless=False)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
    decoded = load_video_frames(data)
    assert decoded.shape == (3, 32, 46, 3)  # cropped to even sizes
    assert np.abs(decoded.astype(int) - 120).max() <= 3
