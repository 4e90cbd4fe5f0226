"""Mask storage: packbits+zlib (what hf_maskdp stores) against per-frame PNG, side by side.

    python scripts/bench_masks.py

Prints bytes per clip and encode/decode times for a moving-person mask, 16 frames at 224x224.
"""

import time

import cv2
import numpy as np

from hf_maskdp.video import decode_mask, encode_mask


def person_mask(t=16, h=224, w=224, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    masks = []
    for i in range(t):  # an ellipse body plus a head that move, with a ragged edge
        cx, cy = w / 2 + 20 * np.sin(i / 3), h / 2
        body = ((xx - cx) / 40) ** 2 + ((yy - cy) / 90) ** 2 < 1 + 0.05 * rng.standard_normal((h, w))
        head = (xx - cx) ** 2 + (yy - cy + 100) ** 2 < 22**2
        masks.append(~(body | head))  # sensitive = everything but the avatar
    return np.stack(masks)


def png_encode(mask):
    return [cv2.imencode(".png", m.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_BILEVEL, 1])[1].tobytes() for m in mask]


def png_decode(frames):
    return np.stack([cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_GRAYSCALE) > 0 for f in frames])


def timed(fn, *args, repeat=20):
    start = time.perf_counter()
    for _ in range(repeat):
        out = fn(*args)
    return out, (time.perf_counter() - start) / repeat * 1e3


def main():
    mask = person_mask()
    packed, enc_ms = timed(encode_mask, mask)
    back, dec_ms = timed(decode_mask, packed)
    assert np.array_equal(back, mask)
    pngs, png_enc_ms = timed(png_encode, mask)
    png_back, png_dec_ms = timed(png_decode, pngs)
    assert np.array_equal(png_back, mask)
    raw = mask.size // 8
    rows = [
        ("packbits+zlib", len(packed["packed"]), enc_ms, dec_ms),
        ("png (1-bit, per frame)", sum(map(len, pngs)), png_enc_ms, png_dec_ms),
    ]
    print(f"mask {mask.shape}, raw bits {raw} bytes")
    print(f"{'codec':24s} {'bytes':>8s} {'x raw':>7s} {'encode ms':>10s} {'decode ms':>10s}")
    for name, size, e, d in rows:
        print(f"{name:24s} {size:8d} {size / raw:7.3f} {e:10.2f} {d:10.2f}")


if __name__ == "__main__":
    main()
