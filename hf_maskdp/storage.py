"""How an anonymized row stores its clip, and the one way to read it back.

Storage format 3 (what `encode_anonymized_clip` writes):

- `video`: the composite, what people watch and the Hub viewer plays; H.264 yuv420p in mp4 at
  `crf` (18).
- `avatar_layer`: the same frames with every sensitive pixel replaced *before* encoding, from
  public pixels only (`avatar_layer()`); H.264 yuv420p at `layer_crf` (23), as a raw H.264
  stream (Annex B, `Value("binary")`): nobody watches the layer, and an mp4 header and index
  cost about 1 KB per clip, a seventh of a 112-px clip's bytes (docs/benchmarks.md).
- `sensitive_mask`: `True` = may carry real information. Rounded out to `mask_block` x
  `mask_block` tiles (2; `cover_blocks`): every tile holding a sensitive pixel is all
  sensitive, so the stored mask is a superset of the anonymizer's, never a subset, and the
  layer is built from this stored mask. Packed with one bit per tile (`encode_mask(block=)`);
  the blocky mask costs 2-7 % of the public pixels a 112-px model sees on real clips (19 % on
  tiny 112-px clips with thin limbs; docs/benchmarks.md); `mask_block=1` is exact.
- `storage_format`: `3`.

Both videos are written without x264's SEI settings string (about 650 bytes each, a tenth of a
small clip's bytes) and the composite without the muxer's encoder tag: nothing a decoder reads.

Storage format 2 (before): the same pixels, with the layer in mp4 (a `datasets.Video` value)
and the mask packed per pixel; its rows still load and read the same way. Storage format 1
(before that): `video` is lossless RGB H.264 (crf 0) and public pixels are read from it (they
decode exactly as rendered). Rows without a `storage_format` column are format 1; they still
load; they are 4-20x larger (docs/benchmarks.md).

`read_anonymized_clip` composes `where(mask, composite, layer)`: sensitive pixels from the
composite, public pixels from the layer. The layer's encoder never sees a real pixel (its input
is a function of the render and the public mask alone), so however much a lossy codec mixes
neighbouring pixels (chroma subsampling, block transforms, motion prediction), every pixel it
decodes is a function of public inputs only. That is all MaskDP needs of public pixels
(docs/privacy.md); they do not need to be exact.

The layer must be a function of its input frames, and libx264 (as PyAV bundles it) is not quite:
with its macroblock-tree rate control (`mbtree`, on by default) identical frames were encoded to
different bytes depending on what the process had encoded before (single-threaded too: it reads
memory it did not write, which may have held real pixels). Hypothesis found such inputs within
300 examples; with `mbtree=0` none in 4500. Without mbtree, two runs in about 20 of the test file
on a heavily loaded machine still gave different layer bytes, which points at thread timing; one
encoder thread removes that. The layer is therefore encoded with `mbtree=0:threads=1`
(`LAYER_X264_PARAMS`), and tests/test_storage.py checks that two clips differing only in
sensitive pixels give byte-identical layers. The composite keeps x264's defaults (it is read
only where `m = 1`, where anything goes).

yuv420p needs even sizes: odd-sized frames are padded by one row/column (repeating the last one)
before encoding and cropped back to the mask's shape when reading.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hf_maskdp.video import (
    decode_mask,
    encode_mask,
    encode_video,
    expand_tiles,
    load_video_frames,
    mask_feature,
    reduce_tiles,
    video_feature,
)

STORAGE_FORMAT = 3  # what encode_anonymized_clip writes
MP4_LAYER_FORMAT = 2  # the layer in mp4, masks packed per pixel (read as before)
LOSSLESS_FORMAT = 1  # lossless RGB video, no layer (rows without a storage_format column)
LAYER_CONTAINER = "h264"  # format 3: the layer as a raw H.264 stream
FORMAT_COLUMN = "storage_format"
LAYER_COLUMN = "avatar_layer"
LAYER_FILL = 128  # sensitive pixels of the layer away from the avatar's edge: mid grey, neutral chroma
EDGE_FILL_RADIUS = 2  # sensitive pixels this close to a public one take the public pixels' colour (avatar_layer)
DEFAULT_CRF = 18  # the composite: near transparent, what people watch (scripts/bench_storage.py, docs/benchmarks.md)
DEFAULT_LAYER_CRF = 23  # public pixels still closer to the render than one crf-18 encoding of the whole clip gets them
DEFAULT_MASK_BLOCK = 2  # sensitive_mask rounded out to 2x2 tiles: half its bytes (docs/benchmarks.md)
AVATAR_MASK_BLOCK = 16  # the stored avatar_mask, rounded out likewise: it is only checked against (public ⊆ avatar)
DEFAULT_PRESET = "veryfast"  # slower presets saved 1-3 % of the bytes at 2-3x the encode time
LAYER_X264_PARAMS = "mbtree=0:threads=1"  # the layer's bytes must be a function of its frames: module docstring
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def check_quality(crf: Any, preset: Any, layer_crf: Any = DEFAULT_LAYER_CRF, mask_block: Any = 1) -> None:
    """ValueError unless `crf` and `layer_crf` are x264 constant rate factors, `preset` an x264 preset
    and `mask_block` a block size in pixels."""
    for name, value in (("crf", crf), ("layer_crf", layer_crf)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 51:
            raise ValueError(
                f"{name}={value!r}: choose an integer in [0, 51] (lower is better quality; 18 is near transparent)"
            )
    if preset not in X264_PRESETS:
        raise ValueError(f"preset={preset!r}: choose one of {X264_PRESETS}")
    if isinstance(mask_block, bool) or not isinstance(mask_block, (int, np.integer)) or not 1 <= mask_block <= 64:
        raise ValueError(
            f"mask_block={mask_block!r}: choose an integer in [1, 64] (1 stores the mask exactly; "
            f"{DEFAULT_MASK_BLOCK} rounds it out to {DEFAULT_MASK_BLOCK}x{DEFAULT_MASK_BLOCK} blocks)"
        )


def encode_anonymized_clip(
    frames: Any,
    sensitive_mask: Any,
    fps: float = 25.0,
    *,
    crf: int = DEFAULT_CRF,
    layer_crf: int = DEFAULT_LAYER_CRF,
    preset: str = DEFAULT_PRESET,
    mask_block: int = DEFAULT_MASK_BLOCK,
) -> dict:
    """The storage columns of one anonymized row (format 3).

    `frames` uint8 `(T, H, W, 3)`, the anonymized composite; `sensitive_mask` bool `(T, H, W)`.
    Returns `{"video", "avatar_layer", "sensitive_mask", "storage_format"}`: the composite as a
    `datasets.Video(decode=False)` value `{"path": None, "bytes": mp4}` at `crf`, the layer as
    the bytes of a raw H.264 stream at `layer_crf` (both x264 `preset`), the mask packed per
    `mask_block` tile.
    """
    check_quality(crf, preset, layer_crf, mask_block)
    frames = load_video_frames(frames)
    mask = decode_mask(sensitive_mask)
    if mask.shape != frames.shape[:3]:
        raise ValueError(
            f"sensitive_mask has shape {list(mask.shape)} but the frames are {list(frames.shape[:3])} (T, H, W): "
            "pass one mask value per pixel of the clip"
        )
    mask = cover_blocks(mask, mask_block)  # a superset: what is stored, and all the layer may read
    layer = avatar_layer(frames, mask)  # the only input of the layer's encoder: no real pixel in it
    options = {"fps": fps, "lossless": False, "preset": preset, "strip_metadata": True}
    return {
        "video": {"path": None, "bytes": encode_video(_pad_even(frames), crf=int(crf), **options)},
        LAYER_COLUMN: encode_video(
            _pad_even(layer), crf=int(layer_crf), x264_params=LAYER_X264_PARAMS, container=LAYER_CONTAINER, **options
        ),
        "sensitive_mask": encode_mask(mask, block=int(mask_block)),
        FORMAT_COLUMN: STORAGE_FORMAT,
    }


def cover_blocks(mask: np.ndarray, block: int) -> np.ndarray:
    """`mask` with every `block` x `block` tile (from the top left) that holds a True pixel all True.

    A superset of `mask`, so a conservative `sensitive_mask` (more pixels sensitive, never fewer)
    and an `avatar_mask` that still covers every public pixel; blocky masks pack several times
    smaller (docs/benchmarks.md).
    """
    if block == 1:
        return mask
    return expand_tiles(reduce_tiles(mask, block), block, mask.shape)


def avatar_layer(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The frames with every sensitive pixel replaced, computed from public pixels and the mask only.

    Sensitive pixels within `EDGE_FILL_RADIUS` pixels of a public one take the mean of the public
    pixels around them, the others `LAYER_FILL`. The fill is discarded on reading; it only spares
    the avatar's edges from bleeding towards grey through chroma subsampling and block transforms
    (measured: public-pixel error at avatar edges about halved, docs/benchmarks.md).
    """
    import cv2

    public_only = np.where(mask[..., None], np.uint8(0), frames)  # every real pixel is gone from here on
    layer = public_only + np.uint8(LAYER_FILL) * mask[..., None].astype(np.uint8)
    if EDGE_FILL_RADIUS == 0:
        return layer
    radius, window = EDGE_FILL_RADIUS, (2 * EDGE_FILL_RADIUS + 1,) * 2
    for t in np.flatnonzero(mask.any(axis=(1, 2)) & ~mask.all(axis=(1, 2))):
        rows, cols = np.flatnonzero(~mask[t].all(axis=1)), np.flatnonzero(~mask[t].all(axis=0))
        box = (
            slice(max(rows[0] - radius, 0), rows[-1] + radius + 1),
            slice(max(cols[0] - radius, 0), cols[-1] + radius + 1),
        )
        # sums over the window of public pixels (zero outside the box: all sensitive there)
        total = cv2.boxFilter(public_only[t][box], cv2.CV_32F, window, normalize=False, borderType=cv2.BORDER_CONSTANT)
        count = cv2.boxFilter(
            (~mask[t][box]).astype(np.uint8), cv2.CV_32F, window, normalize=False, borderType=cv2.BORDER_CONSTANT
        )
        edge = mask[t][box] & (count > 0.5)
        layer[t][box][edge] = np.clip(np.rint(total[edge] / count[edge][:, None]), 0, 255).astype(np.uint8)
    return layer


def read_anonymized_clip(
    row: dict, *, video_column: str = "video", mask_column: str = "sensitive_mask", public_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """`(frames uint8 (T, H, W, 3), sensitive_mask bool (T, H, W))` of a stored anonymized row.

    Public pixels (`mask == False`) come from the avatar layer (formats 2 and 3; from the lossless
    video in format 1), sensitive ones from the composite. `public_only=True` does not decode the
    composite at all and returns `LAYER_FILL` at every sensitive pixel: what a public view may read.
    """
    mask = decode_mask(row.get(mask_column))
    version = storage_format(row)
    if version == LOSSLESS_FORMAT:
        frames = _decoded(row.get(video_column), mask.shape, video_column, crop=False)
        if public_only:
            frames = np.where(mask[..., None], np.uint8(LAYER_FILL), frames)
        return frames, mask
    layer = _decoded(row.get(LAYER_COLUMN), mask.shape, LAYER_COLUMN, container=_layer_container(version))
    if public_only:
        return np.where(mask[..., None], np.uint8(LAYER_FILL), layer), mask
    composite = _decoded(row.get(video_column), mask.shape, video_column)
    return np.where(mask[..., None], composite, layer), mask


def storage_format(row: dict) -> int:
    """The storage format of a row: its `storage_format` value, 1 (lossless) when it has none."""
    version = row.get(FORMAT_COLUMN)
    if version is None:
        if row.get(LAYER_COLUMN) is not None:
            raise ValueError(
                f"row has an '{LAYER_COLUMN}' but no '{FORMAT_COLUMN}': write rows with encode_anonymized_clip"
            )
        return LOSSLESS_FORMAT
    if version not in (LOSSLESS_FORMAT, MP4_LAYER_FORMAT, STORAGE_FORMAT):
        raise ValueError(
            f"storage_format {version!r} is unknown to this hf_maskdp (it reads 1, 2 and 3); upgrade hf_maskdp"
        )
    return int(version)


def stored_shape_problem(row: dict, mask_shape: tuple, video_shape, video_column: str = "video") -> str | None:
    """Why the stored videos of `row` do not fit its mask of `mask_shape` (None when they do).

    `video_shape(value, container=None) -> (T, H, W)` reads a video's shape
    (`hf_maskdp.video.video_shape` reads the container header, or counts a raw stream's frames,
    without decoding)."""
    version = storage_format(row)
    expected = tuple(mask_shape) if version == LOSSLESS_FORMAT else stored_frame_shape(mask_shape)
    columns = (video_column,) if version == LOSSLESS_FORMAT else (video_column, LAYER_COLUMN)
    for column in columns:
        if row.get(column) is None:
            return f"has a mask but no '{column}' (storage format {version}); re-run the anonymizer on it"
        container = _layer_container(version) if column == LAYER_COLUMN else None
        shape = tuple(video_shape(row[column], container=container))
        if shape != expected:
            return (
                f"'{column}' is {list(shape)} (T, H, W) but its mask is {list(mask_shape)}; the mask must "
                "cover every pixel of the clip"
            )
    return None


def storage_features() -> dict:
    """`datasets` features of the columns `encode_anonymized_clip` writes."""
    from datasets import Value

    return {
        "video": video_feature(),
        LAYER_COLUMN: Value("binary"),  # a raw H.264 stream: not a video the Hub viewer would play
        "sensitive_mask": mask_feature(),
        FORMAT_COLUMN: Value("int32"),
    }


def stored_frame_shape(shape: tuple) -> tuple[int, int, int]:
    """`(T, H, W)` of the stored videos of a format-2 or -3 clip of `shape`: H and W rounded up to even."""
    t, h, w = (int(n) for n in shape[:3])
    return t, h + h % 2, w + w % 2


def _pad_even(frames: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: repeat the last row/column of odd-sized frames."""
    _, height, width = stored_frame_shape(frames.shape)
    if (height, width) == frames.shape[1:3]:
        return frames
    return np.pad(frames, ((0, 0), (0, height - frames.shape[1]), (0, width - frames.shape[2]), (0, 0)), mode="edge")


def _layer_container(version: int) -> str | None:
    return LAYER_CONTAINER if version == STORAGE_FORMAT else None  # format 2: mp4, recognised by its header


def _decoded(value: Any, mask_shape: tuple, column: str, crop: bool = True, container: str | None = None) -> np.ndarray:
    if value is None:
        raise ValueError(f"'{column}' is None: the row has no clip (was it withheld by the anonymizer?)")
    frames = load_video_frames(value, container=container)
    t, h, w = mask_shape
    if crop and frames.shape[:3] == stored_frame_shape(mask_shape):
        frames = frames[:, :h, :w]  # the padding of odd sizes
    if frames.shape[:3] != tuple(mask_shape):
        raise ValueError(
            f"the mask has shape {tuple(mask_shape)} but '{column}' is {frames.shape[:3]} (T, H, W): "
            "each mask must match its video frame for frame; re-run the anonymizer on this row"
        )
    return frames
