"""Storage of anonymized clips: format 3 (lossy composite + raw-stream avatar layer + masks per tile)
as written now and format 2 as written before (the layer in mp4, masks per pixel), against format 1
(lossless video + masks) and against the same frames encoded once, lossy, side by side.

    .venv/bin/python scripts/bench_storage.py [--embedded-clips 8] [--picture docs/images/avatar_edges_lossy.png]

Clips: the embedded action dataset (`hf_maskdp.data.build_action_dataset`, 16 frames at 112 px),
real photos (the scikit-image astronaut as a pan/zoom at 224x224, 320x240 and 640x480, and
next to a second astronaut at 448x224, as scripts/bench_anonymize.py makes them) and the real
footage of tests/data (8 frames at 320x240), all anonymized by the real pipeline. For each group:

- bytes per clip of the saved dataset (`save_to_disk`, every file: videos, masks, metadata) in
  format 1, format 2 (before) and format 3 (now; with `avatar_mask` as the anonymizer writes it),
  and of the anonymized frames encoded once as H.264 crf 18 yuv420p (`encode_video(lossless=False)`,
  the reference: what the clip costs as an ordinary video), with each stored column's share;
- encode and read time per clip (formats 2 and 3 read compose `where(mask, composite, layer)`; the
  public view reads only the layer), and the share of public pixels the model still sees
  (`VideoClipCollator`, 8 frames at 112 px) with the rounded-out mask;
- how far the frames read back are from the anonymized frames: mean absolute error and PSNR on
  public pixels, on public pixels within 2 px of a sensitive one (the avatar's edge) and on
  sensitive pixels, next to the reference encoding's error on the same pixels.

Then a sweep of the quality knobs (crf, layer_crf, preset) and of the layer's design choices, and
the picture of an avatar edge after lossy coding.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))  # bench_anonymize's clips
import hf_maskdp.storage as storage  # noqa: E402
from hf_maskdp.storage import encode_anonymized_clip, read_anonymized_clip, storage_features  # noqa: E402
from hf_maskdp.video import decode_mask, encode_mask, encode_video, load_video_frames, mask_feature, video_feature  # noqa: E402


def real_clips() -> list[tuple[str, np.ndarray]]:
    import skimage.data
    from bench_anonymize import astronaut_clip, side_by_side_clip

    return [
        ("astronaut 224x224", astronaut_clip(16, 224, 224)),
        ("astronaut 320x240", astronaut_clip(32, 320, 240)),
        ("astronaut 640x480", astronaut_clip(32, 640, 480)),
        ("two astronauts 448x224", side_by_side_clip(skimage.data.astronaut(), 16, 224)),
    ]


def footage_clips() -> list[tuple[str, np.ndarray]]:
    import glob

    folder = os.path.join(os.path.dirname(__file__), "..", "tests", "data")
    return [(os.path.basename(path), load_video_frames(path)) for path in sorted(glob.glob(f"{folder}/*.mp4"))]


def embedded_clips(count: int) -> list[tuple[str, np.ndarray]]:
    from hf_maskdp.data import build_action_dataset

    data = build_action_dataset(num_train=count, num_test=0, num_frames=16, size=112, progress=False)["train"]
    return [(f"embedded {i}", load_video_frames(row["video"])) for i, row in enumerate(data)]


def anonymize(clips):
    """(frames, sensitive_mask, avatar_mask) of every clip the anonymizer could process."""
    from hf_maskdp.anonymize.pipeline import AvatarAnonymizer

    anonymizer = AvatarAnonymizer(seed=0, errors="keep")
    out = []
    for name, frames in clips:
        result = anonymizer.anonymize_clip(frames)
        if result.frames is None:
            print(f"  skipped {name}: {result.status}")
            continue
        sensitive = result.sensitive_mask if result.ok else np.ones(result.frames.shape[:3], bool)
        out.append((name, result.frames, sensitive, result.avatar_mask, result.fps))
    return out


def timed(fn, *args, repeat=3, **kwargs):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return value, best


def format1_row(frames, sensitive, avatar, fps):
    return {
        "video": {"path": None, "bytes": encode_video(frames, fps=fps)},
        "sensitive_mask": encode_mask(sensitive),
        "avatar_mask": encode_mask(avatar),
    }


def format3_row(frames, sensitive, avatar, fps, **quality):
    """What the anonymizer writes now (`AvatarAnonymizer._row`)."""
    stored_avatar = storage.cover_blocks(avatar, storage.AVATAR_MASK_BLOCK)
    return {
        **encode_anonymized_clip(frames, sensitive, fps=fps, **quality),
        "avatar_mask": encode_mask(stored_avatar, block=storage.AVATAR_MASK_BLOCK),
    }


def format2_row(frames, sensitive, avatar, fps):
    """What the anonymizer wrote before (format 2): the layer in mp4, masks packed per pixel; the
    composite as in format 3, which lacks only the muxer's 37-byte encoder tag. The same pixels."""
    stored = storage.cover_blocks(sensitive, storage.DEFAULT_MASK_BLOCK)
    options = {"fps": fps, "lossless": False, "preset": storage.DEFAULT_PRESET, "strip_metadata": True}
    layer = storage._pad_even(storage.avatar_layer(frames, stored))
    return {
        "video": {"path": None, "bytes": encode_video(storage._pad_even(frames), crf=storage.DEFAULT_CRF, **options)},
        "avatar_layer": {
            "path": None,
            "bytes": encode_video(layer, crf=storage.DEFAULT_LAYER_CRF, x264_params="mbtree=0:threads=1", **options),
        },
        "sensitive_mask": encode_mask(stored),
        "storage_format": storage.MP4_LAYER_FORMAT,
        "avatar_mask": encode_mask(storage.cover_blocks(avatar, storage.AVATAR_MASK_BLOCK)),
    }


def saved_bytes(rows, features, keep=None) -> int:
    """Bytes of every file `save_to_disk` writes (of the first `keep` rows; 0: the schema alone)."""
    import datasets

    with tempfile.TemporaryDirectory() as folder:
        dataset = datasets.Dataset.from_list(rows, features=datasets.Features(features))
        dataset.select(range(len(rows) if keep is None else keep)).save_to_disk(folder)
        return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(folder) for f in files)


def reference(frames, fps):
    """The anonymized frames as one ordinary lossy video (crf 18, yuv420p, veryfast)."""
    data = encode_video(storage._pad_even(frames), fps=fps, lossless=False, crf=18, preset="veryfast")
    return data, load_video_frames(data)[:, : frames.shape[1], : frames.shape[2]]


def pixel_sets(sensitive):
    from scipy import ndimage

    near = ndimage.binary_dilation(sensitive, np.ones((1, 5, 5), bool))
    return {"public": ~sensitive, "edge": ~sensitive & near, "sensitive": sensitive}


def errors(decoded, frames, sensitive) -> dict:
    diff = decoded.astype(np.float64) - frames
    out = {}
    for name, where in pixel_sets(sensitive).items():
        d = diff[where]
        mse = float((d**2).mean()) if d.size else 0.0
        out[name] = (float(np.abs(d).mean()) if d.size else 0.0, 10 * np.log10(255**2 / mse) if mse else float("inf"))
    return out


def arrow_overhead(rows, features) -> tuple[float, float]:
    """(bytes per row, bytes once per dataset) that `save_to_disk` adds to the stored columns' bytes:
    from the dataset of the first row and of all rows."""
    extra = [
        saved_bytes(rows, features, keep=k) - sum(column_bytes(r, c) for r in rows[:k] for c in STORED_COLUMNS)
        for k in (1, len(rows))
    ]
    per_row = (extra[1] - extra[0]) / max(len(rows) - 1, 1)
    return per_row, extra[0] - per_row


STORED_COLUMNS = ("video", "avatar_layer", "sensitive_mask", "avatar_mask")


def column_bytes(row, column) -> int:
    value = row[column]
    return len(value if isinstance(value, bytes) else value["packed"] if "packed" in value else value["bytes"])


def bench_group(title, clips) -> None:
    n = len(clips)
    writers = {
        "format 1 (lossless)": format1_row,
        "format 2 (before: mp4 layer, masks per pixel)": format2_row,
        "format 3 now": format3_row,
    }
    rows = {name: [] for name in writers}
    encode, read = dict.fromkeys(writers, 0.0), dict.fromkeys(writers, 0.0)
    public_read, ref_bytes, ref_plain_bytes, err2, err_ref = 0.0, 0, 0, [], []
    for _, frames, sensitive, avatar, fps in clips:
        for name, writer in writers.items():
            row, seconds = timed(writer, frames, sensitive, avatar, fps)
            rows[name].append(row)
            encode[name] += seconds
            if name.startswith("format 1"):
                read[name] += timed(lambda: (load_video_frames(row["video"]), decode_mask(row["sensitive_mask"])))[1]
            else:
                (back, _), seconds = timed(read_anonymized_clip, row)
                read[name] += seconds
        public_read += timed(read_anonymized_clip, row, public_only=True)[1]
        data, plain = reference(frames, fps)
        ref_bytes += len(data)
        ref_plain_bytes += len(encode_video(storage._pad_even(frames), fps=fps, lossless=False, strip_metadata=True))
        err2.append(errors(back, frames, decode_mask(row["sensitive_mask"])))
        err_ref.append(errors(plain, frames, decode_mask(row["sensitive_mask"])))
    f1 = {"video": video_feature(), "sensitive_mask": mask_feature(), "avatar_mask": mask_feature()}
    f2 = {**storage_features(), "avatar_layer": video_feature(), "avatar_mask": mask_feature()}
    f3 = {**storage_features(), "avatar_mask": mask_feature()}
    ref = ref_bytes / n
    public = np.mean([(~c[2]).mean() for c in clips])
    shapes = sorted({f"{c[1].shape[0]}x{c[1].shape[2]}x{c[1].shape[1]}" for c in clips})
    print(f"\n## {title}: {n} clips ({', '.join(shapes)} frames x W x H), {public:.1%} of pixels public")
    print(
        f"{'':42} | {'KB/clip':>8} | {'x lossy crf 18':>14} | {'encode ms':>9} | {'read ms':>8} | "
        + " | ".join(f"{c:>14}" for c in STORED_COLUMNS)
    )
    print(f"{'reference: frames lossy crf 18':42} | {ref / 1e3:8.1f} | {1:14.2f} |")
    print(
        f"{'reference without its SEI string':42} | {ref_plain_bytes / n / 1e3:8.1f} | {ref_plain_bytes / ref_bytes:14.2f} |"
    )
    for name in writers:
        saved = saved_bytes(rows[name], {"1": f1, "2": f2, "3": f3}[name[len("format ")]]) / n
        parts = [
            sum(column_bytes(r, c) for r in rows[name]) / n / ref if c in rows[name][0] else 0 for c in STORED_COLUMNS
        ]
        print(
            f"{name + ', saved':42} | {saved / 1e3:8.1f} | {saved / ref:14.2f} | {1e3 * encode[name] / n:9.1f} | "
            f"{1e3 * read[name] / n:8.1f} | " + " | ".join(f"{share:13.3f}x" for share in parts)
        )
    print(
        f"{'format 3 now, public view (layer only)':42} | {'':>8} | {'':>14} | {'':>9} | {1e3 * public_read / n:8.1f} |"
    )
    old, now = "format 2 (before: mp4 layer, masks per pixel)", "format 3 now"
    print(
        f"format 3 now vs format 2: encode {encode[now] / encode[old]:.2f}x, read {read[now] / read[old]:.2f}x the "
        f"time; dataset files other than the columns: {(saved - sum(parts) * ref) / 1e3:.2f} KB per clip here"
    )
    per_row, fixed = arrow_overhead(rows[now], f3)
    print(
        f"  of which {fixed / 1e3:.2f} KB once per saved dataset (JSON files, Arrow schema and batch header) and "
        f"{per_row:.0f} bytes per clip: a clip in a large dataset costs "
        f"{(saved - fixed / n) / ref:.2f}x the lossy crf 18 encoding"
    )
    now = rows[now]
    model_public([format3_row(*clip[1:], mask_block=1) for clip in clips], now)
    collator_difference(rows["format 1 (lossless)"], now)
    print(
        f"{'error vs anonymized frames (now)':34} | {'public MAE':>10} | {'PSNR':>5} | {'edge MAE':>8} | {'PSNR':>5} | {'sensitive MAE':>13} | {'PSNR':>5}"
    )
    for label, errs in (("format 3 now, read back", err2), ("reference lossy crf 18", err_ref)):
        cells = []
        for key in ("public", "edge", "sensitive"):
            mae = np.mean([e[key][0] for e in errs])
            psnr = np.mean([e[key][1] for e in errs if np.isfinite(e[key][1])])
            cells.append(f"{mae:>{13 if key == 'sensitive' else (10 if key == 'public' else 8)}.2f} | {psnr:5.1f}")
        print(f"{label:34} | " + " | ".join(cells))


def model_public(before, now) -> None:
    """The share of public pixels the model sees (`VideoClipCollator`, 8 frames at 112 px) with the
    stored mask rounded out, against the exact mask."""
    from hf_maskdp.training.collator import VideoClipCollator

    collator = VideoClipCollator(num_frames=8, image_size=112)
    counts = [sum(float((~collator([r])["sensitive_mask"].bool()).sum()) for r in rows) for rows in (before, now)]
    if counts[0]:
        print(
            f"public pixels at the model's input with the stored mask: {counts[1] / counts[0]:.3f} of the exact mask's"
        )


def collator_difference(rows1, rows2) -> None:
    """What the model sees: `VideoClipCollator` (8 frames, 112 px, as the quickstart) on format 1 and 2 rows."""
    from hf_maskdp.training.collator import VideoClipCollator

    collator = VideoClipCollator(num_frames=8, image_size=112)
    full, public = [], []
    for a, b in zip(rows1, rows2):
        full.append((collator([a])["pixel_values"] - collator([b])["pixel_values"]).abs().mean().item())
        public.append(
            (collator.public_batch([a])["pixel_values"] - collator.public_batch([b])["pixel_values"])
            .abs()
            .mean()
            .item()
        )
    scale = 255 / 2  # VideoMAE normalization: 0-255 -> -1..1
    print(
        f"model input (collator pixel_values), format 3 vs format 1: mean |difference| {scale * np.mean(full):.2f} "
        f"(full clip), {scale * np.mean(public):.2f} (public view), in 0-255 units"
    )


@contextmanager
def layer_design(edge_fill_radius=None, x264_params=None):
    saved = storage.EDGE_FILL_RADIUS, storage.LAYER_X264_PARAMS
    if edge_fill_radius is not None:
        storage.EDGE_FILL_RADIUS = edge_fill_radius
    if x264_params is not None:
        storage.LAYER_X264_PARAMS = x264_params
    try:
        yield
    finally:
        storage.EDGE_FILL_RADIUS, storage.LAYER_X264_PARAMS = saved


def sweep(title, clips) -> None:
    print(f"\n## Quality knobs and layer design, {title} (stored bytes = videos + both masks, not the dataset files)")
    print(
        f"{'setting':48} | {'x lossy crf 18':>14} | {'encode ms':>9} | {'public kept':>11} | {'public PSNR':>11} | "
        f"{'edge PSNR':>9} | {'sens. PSNR':>10}"
    )
    ref = sum(len(reference(frames, fps)[0]) for _, frames, _, _, fps in clips)
    cases = [
        ("crf 18, layer crf 23, mask block 2 (default)", {}, {}),
        ("mask block 1 (exact)", {"mask_block": 1}, {}),
        ("mask block 4", {"mask_block": 4}, {}),
        ("layer crf 18", {"layer_crf": 18}, {}),
        ("layer crf 26", {"layer_crf": 26}, {}),
        ("layer crf 26, mask block 1", {"layer_crf": 26, "mask_block": 1}, {}),
        ("layer crf 26, mask block 4", {"layer_crf": 26, "mask_block": 4}, {}),
        ("preset medium", {"preset": "medium"}, {}),
        ("crf 23, layer crf 23", {"crf": 23}, {}),
        ("layer: grey fill, no edge fill", {}, {"edge_fill_radius": 0}),
        ("layer: edge fill radius 4", {}, {"edge_fill_radius": 4}),
        ("layer: 8 B-frames", {}, {"x264_params": "mbtree=0:threads=1:bframes=8"}),
        ("layer: with mbtree (not a function of its input)", {}, {"x264_params": "mbtree=1"}),
    ]
    reference_errors = []
    for label, quality, design in cases:
        total, seconds, errs, kept = 0, 0.0, [], []
        with layer_design(**design):
            for _, frames, sensitive, avatar, fps in clips:
                row, t = timed(format3_row, frames, sensitive, avatar, fps, repeat=1, **quality)
                total += sum(column_bytes(row, c) for c in STORED_COLUMNS)
                seconds += t
                stored = decode_mask(row["sensitive_mask"])
                errs.append(errors(read_anonymized_clip(row)[0], frames, stored))
                if not quality and not design:  # the default: the reference's errors on the same pixels
                    reference_errors.append(errors(reference(frames, fps)[1], frames, stored))
                if (~sensitive).any():
                    kept.append((~stored).sum() / (~sensitive).sum())
        if label.endswith("(default)"):
            print_psnr("reference: frames lossy crf 18, veryfast", 1, None, None, reference_errors)
        print_psnr(label, total / ref, 1e3 * seconds / len(clips), np.mean(kept) if kept else 1.0, errs)


def print_psnr(label, ratio, ms, kept, errs) -> None:
    psnr = {k: np.mean([e[k][1] for e in errs if np.isfinite(e[k][1])]) for k in ("public", "edge", "sensitive")}
    ms, kept = ("" if ms is None else f"{ms:.1f}"), ("" if kept is None else f"{kept:.2f}")
    print(
        f"{label:48} | {ratio:14.2f} | {ms:>9} | {kept:>11} | {psnr['public']:11.1f} | {psnr['edge']:9.1f} | "
        f"{psnr['sensitive']:10.1f}"
    )


def picture(clip, path: str) -> None:
    """An avatar edge, 4x enlarged: anonymized frame | format 3 read back with a grey layer fill |
    with the edge fill (default) | |error| x 4 of the default (pixels the stored mask marks sensitive black)."""
    import cv2
    from scipy import ndimage

    name, frames, sensitive, avatar, fps = clip
    t = int(np.argmax((~sensitive).sum(axis=(1, 2))))  # the frame with the most avatar
    public = ~sensitive[t]
    edge = public & ndimage.binary_dilation(~public, np.ones((5, 5), bool))
    ys, xs = np.nonzero(edge)
    cy, cx = int(np.median(ys)), int(xs[np.argmin(np.abs(ys - np.median(ys)))])  # an edge point at mid height
    size = 64
    y0, x0 = np.clip(cy - size // 2, 0, frames.shape[1] - size), np.clip(cx - size // 2, 0, frames.shape[2] - size)
    crop = (slice(y0, y0 + size), slice(x0, x0 + size))
    with layer_design(edge_fill_radius=0):
        grey = read_anonymized_clip(encode_anonymized_clip(frames, sensitive, fps=fps))[0][t]
    default, stored = read_anonymized_clip(encode_anonymized_clip(frames, sensitive, fps=fps))
    default, public = default[t], ~stored[t]  # the pixels read from the layer
    diff = np.where(public[..., None], np.clip(4 * np.abs(default.astype(int) - frames[t]), 0, 255), 0).astype(np.uint8)
    panels = []
    for image, text in (
        (frames[t], "anonymized (exact)"),
        (grey, "read back, grey fill"),
        (default, "read back, edge fill"),
        (diff, "|error| x4, public px"),
    ):
        big = cv2.resize(image[crop], (4 * size, 4 * size), interpolation=cv2.INTER_NEAREST)
        strip = np.full((24, big.shape[1], 3), 255, np.uint8)
        cv2.putText(strip, text, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(np.concatenate([strip, big]))
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    cv2.imwrite(path, np.concatenate(panels, axis=1)[..., ::-1])
    print(f"\npicture of an avatar edge ({name}, frame {t}, crf 18) saved to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embedded-clips", type=int, default=8)
    parser.add_argument("--picture", default="outputs/avatar_edges_lossy.png")
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; times are the best of 3 runs per clip")
    real = anonymize(real_clips())
    footage = anonymize(footage_clips())
    embedded = anonymize(embedded_clips(args.embedded_clips))
    bench_group("embedded action dataset (hf_maskdp.data)", embedded)
    bench_group("real photos (astronaut pan/zoom)", real)
    bench_group("real footage (tests/data)", footage)
    if not args.no_sweep:
        sweep("embedded", embedded)
        sweep("real photos", real)
        sweep("real footage", footage)
    picture(max(real, key=lambda clip: (~clip[2]).mean()), args.picture)


if __name__ == "__main__":
    main()
