"""Storage format of anonymized rows: a lossy composite, a lossy avatar layer that never saw a real
pixel, the mask (rounded out to blocks, never fewer sensitive pixels); public pixels read back are a
function of public inputs only."""

import io

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from storage_helpers import format2_row

import hf_maskdp
from hf_maskdp.storage import (
    DEFAULT_MASK_BLOCK,
    LAYER_FILL,
    STORAGE_FORMAT,
    _pad_even,
    avatar_layer,
    cover_blocks,
    encode_anonymized_clip,
    read_anonymized_clip,
)
from hf_maskdp.video import (
    decode_mask,
    encode_mask,
    encode_video,
    load_video_frames,
    mask_feature,
    video_feature,
    video_shape,
)


def _smooth_clip(shape, seed=0):
    """Gradients that move: what a video codec handles well (random noise it cannot compress)."""
    t, h, w = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    base = rng.uniform(0, 2 * np.pi, 3)
    frames = [np.stack([127 + 100 * np.sin(xx / 9 + yy / 13 + i / 3 + b) for b in base], -1) for i in range(t)]
    return np.clip(frames, 0, 255).astype(np.uint8)


def _avatar_mask(shape):
    """An ellipse 'avatar' (public) that moves; everything else sensitive."""
    t, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    return np.stack([((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 3 - i) / (w / 5)) ** 2 > 1 for i in range(t)])


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(1, 10), st.integers(1, 40), st.integers(1, 40)),  # 10: several B-frame groups
    density=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]),
    block=st.sampled_from([1, 2, 3]),
)
def test_public_pixels_read_back_do_not_depend_on_sensitive_pixels(seed, shape, density, block):
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = rng.random(shape) < density
    stored = cover_blocks(mask, block)  # the mask the row keeps: a superset
    assert stored[mask].all()
    other = frames.copy()  # differ on pixels sensitive in the stored mask only (the layer may read no other)
    other[stored] = rng.integers(0, 256, (int(stored.sum()), 3), dtype=np.uint8)
    a, b = encode_anonymized_clip(frames, mask, mask_block=block), encode_anonymized_clip(other, mask, mask_block=block)
    assert a["avatar_layer"] == b["avatar_layer"]  # the layer's encoder saw the same input
    assert a["sensitive_mask"] == b["sensitive_mask"] and a["sensitive_mask"]["block"] == block
    frames_a, mask_a = read_anonymized_clip(a)
    frames_b, mask_b = read_anonymized_clip(b)
    assert frames_a.shape == frames_b.shape == (*shape, 3) and frames_a.dtype == np.uint8
    np.testing.assert_array_equal(mask_a, stored)
    np.testing.assert_array_equal(mask_b, stored)
    np.testing.assert_array_equal(frames_a[~stored], frames_b[~stored])  # bit-identical public pixels


def test_public_pixels_never_come_from_the_composite():
    shape = (6, 32, 48)
    frames = _smooth_clip(shape)
    row = encode_anonymized_clip(frames, _avatar_mask(shape))
    mask = decode_mask(row["sensitive_mask"])  # the stored one, what readers use
    noise = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    swapped = {**row, "video": {"path": None, "bytes": encode_video(noise, lossless=False)}}
    honest, _ = read_anonymized_clip(row)
    tampered, _ = read_anonymized_clip(swapped)
    np.testing.assert_array_equal(tampered[~mask], honest[~mask])
    assert not np.array_equal(tampered[mask], honest[mask])  # the composite is read, only where m = 1
    public, public_mask = read_anonymized_clip(swapped, public_only=True)
    np.testing.assert_array_equal(public[~mask], honest[~mask])
    assert (public[mask] == LAYER_FILL).all() and np.array_equal(public_mask, mask)
    # the public view does not need the composite at all
    public_without_video, _ = read_anonymized_clip({**row, "video": None}, public_only=True)
    np.testing.assert_array_equal(public_without_video, public)


@pytest.mark.parametrize("shape", [(8, 32, 48), (5, 33, 47)])
def test_round_trip_is_close_lossy_h264_and_keeps_shape(shape):
    frames, mask = _smooth_clip(shape), _avatar_mask(shape)
    row = hf_maskdp.encode_anonymized_clip(frames, mask, fps=12.5)
    assert sorted(row) == ["avatar_layer", "sensitive_mask", "storage_format", "video"]
    assert row["storage_format"] == STORAGE_FORMAT == 3 and row["video"]["path"] is None
    assert isinstance(row["avatar_layer"], bytes)  # a raw H.264 stream: no container, nobody watches the layer
    for data, container in ((row["video"]["bytes"], None), (row["avatar_layer"], "h264")):
        with av.open(io.BytesIO(data), format=container) as opened:  # the composite: what browsers play
            stream = opened.streams.video[0]
            assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
            assert (stream.height, stream.width) == (shape[1] + shape[1] % 2, shape[2] + shape[2] % 2)  # padded to even
            assert opened.format.name == ("h264" if container else "mov,mp4,m4a,3gp,3g2,mj2")
            assert container or float(stream.average_rate) == 12.5
    assert video_shape(row["avatar_layer"], container="h264") == (
        shape[0],
        shape[1] + shape[1] % 2,
        shape[2] + shape[2] % 2,
    )
    back, back_mask = hf_maskdp.read_anonymized_clip(row)
    assert back.shape == frames.shape and back.dtype == np.uint8
    np.testing.assert_array_equal(back_mask, cover_blocks(mask, DEFAULT_MASK_BLOCK))
    mask = back_mask
    # as close as one ordinary lossy encoding of the frames at the stream's crf (18, the layer 23), but at avatar edges
    error = np.abs(back.astype(int) - frames)
    plain = {
        crf: np.abs(
            load_video_frames(encode_video(_pad_even(frames), lossless=False, crf=crf))[
                :, : shape[1], : shape[2]
            ].astype(int)
            - frames
        )
        for crf in (18, 23)
    }
    interior = ~ndimage.binary_dilation(mask, np.ones((1, 9, 9), bool))  # public, 4+ px from any sensitive pixel
    assert error[mask].mean() < plain[18][mask].mean() + 0.5
    assert error[interior].mean() < plain[23][interior].mean() + 1


def test_the_layer_is_made_of_public_pixels_only():
    shape = (3, 32, 48)
    frames, mask = _smooth_clip(shape), _avatar_mask(shape)
    mask[1] = True  # a frame without avatar
    layer = avatar_layer(frames, mask)
    np.testing.assert_array_equal(layer[~mask], frames[~mask])
    assert (layer[1] == LAYER_FILL).all()
    far = mask & ~ndimage.binary_dilation(~mask, np.ones((1, 5, 5), bool))  # > 2 px from the avatar
    assert (layer[far] == LAYER_FILL).all() and not (layer[mask & ~far] == LAYER_FILL).all()
    noisy = np.where(mask[..., None], np.random.default_rng(0).integers(0, 256, frames.shape, dtype=np.uint8), frames)
    np.testing.assert_array_equal(avatar_layer(noisy, mask), layer)


def test_quality_knobs():
    shape = (6, 32, 48)
    frames, mask = _smooth_clip(shape), _avatar_mask(shape)
    fine = encode_anonymized_clip(frames, mask, crf=10, layer_crf=10)
    coarse = encode_anonymized_clip(frames, mask, crf=35, layer_crf=35, preset="ultrafast")
    assert len(coarse["video"]["bytes"]) < len(fine["video"]["bytes"])
    assert len(coarse["avatar_layer"]) < len(fine["avatar_layer"])
    errors = [np.abs(read_anonymized_clip(row)[0].astype(int) - frames) for row in (fine, coarse)]
    assert errors[0][mask].mean() < errors[1][mask].mean() and errors[0][~mask].mean() < errors[1][~mask].mean()
    layer_only = encode_anonymized_clip(frames, mask, crf=10, layer_crf=35)
    # the composite stays at crf 10 (compared decoded: its threaded encoder may vary bytes under load)
    composites = [load_video_frames(row["video"]).astype(int) for row in (layer_only, fine, coarse)]
    assert np.abs(composites[0] - composites[1]).mean() < 0.5 < np.abs(composites[2] - composites[1]).mean()
    assert layer_only["avatar_layer"] == encode_anonymized_clip(frames, mask, layer_crf=35)["avatar_layer"]
    with pytest.raises(ValueError, match=r"layer_crf=-1: choose an integer in \[0, 51\]"):
        encode_anonymized_clip(frames, mask, layer_crf=-1)
    with pytest.raises(ValueError, match=r"crf=60: choose an integer in \[0, 51\]"):
        encode_anonymized_clip(frames, mask, crf=60)
    with pytest.raises(ValueError, match="preset='turbo': choose one of"):
        encode_anonymized_clip(frames, mask, preset="turbo")
    with pytest.raises(ValueError, match="preset='turbo'"):
        hf_maskdp.AnonymizerConfig(preset="turbo")


def test_lossless_format_1_rows_still_read_exactly():
    shape = (4, 17, 20)
    frames, mask = _smooth_clip(shape), _avatar_mask(shape)
    row = {"video": {"path": None, "bytes": encode_video(frames)}, "sensitive_mask": encode_mask(mask)}
    back, back_mask = read_anonymized_clip(row)
    np.testing.assert_array_equal(back, frames)
    np.testing.assert_array_equal(back_mask, mask)
    public, _ = read_anonymized_clip(row, public_only=True)
    np.testing.assert_array_equal(public[~mask], frames[~mask])
    assert (public[mask] == LAYER_FILL).all()
    explicit, _ = read_anonymized_clip({**row, "storage_format": 1})
    np.testing.assert_array_equal(explicit, frames)


def test_bad_rows_get_clear_errors():
    shape = (4, 16, 16)
    frames, mask = _smooth_clip(shape), _avatar_mask(shape)
    with pytest.raises(ValueError, match=r"sensitive_mask has shape \[4, 16, 8\] but the frames are \[4, 16, 16\]"):
        encode_anonymized_clip(frames, mask[..., :8])
    row = encode_anonymized_clip(frames, mask)
    with pytest.raises(ValueError, match=r"storage_format 7 is unknown to this hf_maskdp \(it reads 1, 2 and 3\)"):
        read_anonymized_clip({**row, "storage_format": 7})
    with pytest.raises(ValueError, match="'avatar_layer' is None"):
        read_anonymized_clip({**row, "avatar_layer": None})
    with pytest.raises(ValueError, match="withheld"):
        read_anonymized_clip({**row, "video": None})
    with pytest.raises(ValueError, match=r"the mask has shape \(4, 16, 8\) but 'avatar_layer' is \(4, 16, 16\)"):
        read_anonymized_clip({**row, "sensitive_mask": encode_mask(mask[..., :8])})
    with pytest.raises(ValueError, match="has an 'avatar_layer' but no 'storage_format'"):
        read_anonymized_clip({key: value for key, value in row.items() if key != "storage_format"})


def test_rows_survive_a_saved_dataset(tmp_path):
    import datasets

    from hf_maskdp.storage import storage_features

    shape = (4, 16, 24)
    frames, mask = _smooth_clip(shape), _avatar_mask(shape)
    row = {**encode_anonymized_clip(frames, mask), "avatar_mask": encode_mask(~mask), "label": 3}
    features = datasets.Features(
        {**storage_features(), "avatar_mask": mask_feature(), "label": datasets.Value("int64")}
    )
    assert features["video"] == video_feature() and features["avatar_layer"] == datasets.Value("binary")
    datasets.Dataset.from_list([row], features=features).save_to_disk(tmp_path / "ds")
    loaded = datasets.load_from_disk(str(tmp_path / "ds"))[0]
    for expected, got in zip(read_anonymized_clip(row), read_anonymized_clip(loaded)):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(decode_mask(loaded["sensitive_mask"]), cover_blocks(mask, DEFAULT_MASK_BLOCK))


def test_mask_block_rounds_the_mask_out_never_in():
    mask = np.zeros((2, 5, 7), bool)
    mask[0, 0, 0] = mask[0, 4, 6] = mask[1, 3, 2] = True
    tiles = cover_blocks(mask, 2)
    expected = np.zeros_like(mask)
    expected[0, :2, :2] = expected[0, 4:, 6:] = expected[1, 2:4, 2:4] = True  # partial tiles at the edges too
    np.testing.assert_array_equal(tiles, expected)
    assert cover_blocks(mask, 1) is mask and cover_blocks(mask, 8).all(axis=(1, 2)).all()
    shape = (4, 32, 48)
    frames = _smooth_clip(shape)
    exact = encode_anonymized_clip(frames, _avatar_mask(shape), mask_block=1)
    np.testing.assert_array_equal(decode_mask(exact["sensitive_mask"]), _avatar_mask(shape))
    blocky = encode_anonymized_clip(frames, _avatar_mask(shape), mask_block=4)
    assert len(blocky["sensitive_mask"]["packed"]) < len(exact["sensitive_mask"]["packed"]) / 2
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=r"mask_block=.*: choose an integer in \[1, 64\]"):
            encode_anonymized_clip(frames, _avatar_mask(shape), mask_block=bad)
    with pytest.raises(ValueError, match=r"mask_block=0"):
        hf_maskdp.AnonymizerConfig(mask_block=0)


def test_videos_carry_no_x264_settings_string_nor_encoder_tag():
    shape = (4, 32, 48)
    frames, mask = _smooth_clip(shape), _avatar_mask(shape)
    row = encode_anonymized_clip(frames, mask)
    assert b"x264 - core" not in row["video"]["bytes"] and b"x264 - core" not in row["avatar_layer"]
    assert b"Lavf" not in row["video"]["bytes"]  # the muxer's encoder tag
    one_thread = {"lossless": False, "x264_params": "threads=1"}  # bytes that depend on the frames alone
    kept, stripped = (encode_video(_pad_even(frames), strip_metadata=strip, **one_thread) for strip in (False, True))
    assert b"x264 - core" in kept and b"Lavf" in kept and len(stripped) < len(kept) - 600
    np.testing.assert_array_equal(load_video_frames(stripped), load_video_frames(kept))  # metadata only


@pytest.mark.parametrize("mask_block", [1, 2])
def test_format_2_rows_still_read_their_public_pixels_from_their_own_layer(mask_block):
    shape = (6, 33, 48)
    frames, mask = _smooth_clip(shape), _avatar_mask(shape)
    now = encode_anonymized_clip(frames, mask, mask_block=mask_block)
    older = {**format2_row(frames, mask, mask_block), "video": now["video"]}  # one composite: its encoder is threaded
    assert "block" not in older["sensitive_mask"] and b"x264 - core" in older["avatar_layer"]["bytes"]
    back, back_mask = read_anonymized_clip(older)
    stored = cover_blocks(mask, mask_block)
    np.testing.assert_array_equal(back_mask, stored)
    layer = load_video_frames(older["avatar_layer"])[:, : shape[1]]
    np.testing.assert_array_equal(back[~stored], layer[~stored])  # public pixels: format 2's mp4 layer, exactly
    composite = load_video_frames(older["video"])[:, : shape[1]]
    np.testing.assert_array_equal(back[stored], composite[stored])
    public, _ = read_anonymized_clip(older, public_only=True)
    np.testing.assert_array_equal(public[~stored], layer[~stored])
    for got, expected in zip(read_anonymized_clip(now), (back, back_mask)):
        np.testing.assert_array_equal(got, expected)  # format 3 changed containers and packing, not pixels
    assert len(now["avatar_layer"]) < len(older["avatar_layer"]["bytes"]) - 700  # no mp4 header and index, no SEI
    smaller_mask = len(now["sensitive_mask"]["packed"]) < len(older["sensitive_mask"]["packed"])
    assert smaller_mask == (mask_block > 1)  # one bit per tile
