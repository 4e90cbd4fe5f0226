"""Remove the real person: the region to erase, and the background painted into it.

Every pixel this module writes is computed from real pixels, so it stays sensitive
(`sensitive_mask == True`); only the avatar drawn on top afterwards can be public.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from hf_maskdp.anonymize.pose import Detection, PoseTrack

# Landmark pairs whose segments (thickened) cover the body when no segmentation exists.
_LIMBS = [
    (11, 12),
    (11, 23),
    (12, 24),
    (23, 24),
    (11, 13),
    (13, 15),
    (12, 14),
    (14, 16),
    (15, 19),
    (16, 20),
    (23, 25),
    (25, 27),
    (24, 26),
    (26, 28),
    (27, 31),
    (28, 32),
    (27, 29),
    (28, 30),
    (0, 11),
    (0, 12),
]


def person_region(track: PoseTrack, shape: tuple[int, int, int], dilation: float) -> np.ndarray:
    """Bool (T, H, W): where the real person may be, generously.

    The union of the segmentation (where it exists, low threshold; for frames filled by tracking,
    that of the nearest measured frames on both sides), a skeleton drawn with
    thick limbs and a head disc (so a weak segmentation never leaves a limb behind), then a
    dilation by `dilation` times the frame diagonal.
    """
    num_frames, height, width = shape
    region = np.zeros(shape, bool)
    if track.person_mask is not None:
        segmented = track.person_mask > 0.2
        region |= segmented
        detected = np.flatnonzero(track.detected)
        for t in np.flatnonzero(track.valid & ~track.detected):  # filled frames: neighbours' masks too
            before, after = detected[detected < t], detected[detected > t]
            for source in (before[-1:], after[:1]):
                if len(source):
                    region[t] |= segmented[source[0]]
    for t in np.flatnonzero(track.valid):
        if np.isfinite(track.keypoints_2d[t]).all():
            region[t] = _draw_body(region[t], track.keypoints_2d[t])
    kernel = _disc(dilation, height, width)
    for t in range(num_frames):
        if region[t].any():
            region[t] = cv2.dilate(region[t].astype(np.uint8), kernel).astype(bool)
    return region


def attached_segments(segmentation: np.ndarray, region: np.ndarray, min_inside: float, dilation: float) -> np.ndarray:
    """Bool (T, H, W): the blobs of `segmentation` that belong to the people in `region`, grown by `dilation`.

    `segmentation` (T, H, W bool) comes from a person segmentation of the real frames other than the
    pose model's; `region` is the people's erase region (`person_region`). A blob belongs to them when
    at least `min_inside` of its pixels already lie in `region`: hair, the top of a head or a limb the
    pose put elsewhere stick out of it, while a blob mostly outside is someone (or something) else and is
    left alone, evidence for the residual check.
    """
    num_frames, height, width = segmentation.shape
    attached = np.zeros(segmentation.shape, bool)
    kernel = _disc(dilation, height, width)
    for t in range(num_frames):
        if not (segmentation[t] & region[t]).any():
            continue
        count, labels = cv2.connectedComponents(segmentation[t].astype(np.uint8))
        blob_size = np.bincount(labels.ravel(), minlength=count)
        inside = np.bincount(labels[region[t]], minlength=count)
        keep = inside >= min_inside * blob_size
        keep[0] = False  # the background label
        if keep.any():
            attached[t] = cv2.dilate(keep[labels].astype(np.uint8), kernel).astype(bool)
    return attached


def detection_region(person: Detection, shape: tuple[int, int], dilation: float = 0.02) -> np.ndarray:
    """Bool (H, W): one person in one frame, as `person_region` draws it (segmentation, body, dilation)."""
    region = np.zeros(shape, bool) if person.person_mask is None else person.person_mask > 0.2
    if np.isfinite(person.keypoints_2d).all():
        region = _draw_body(region, person.keypoints_2d)
    return cv2.dilate(region.astype(np.uint8), _disc(dilation, *shape)).astype(bool)


def _draw_body(region: np.ndarray, points: np.ndarray) -> np.ndarray:
    """`region` plus the skeleton drawn with thick limbs, a head disc and the torso."""
    canvas = region.astype(np.uint8)
    shoulders = np.linalg.norm(points[11] - points[12])
    hips = np.linalg.norm(points[11] - points[23])
    limb = max(3, int(0.25 * max(shoulders, 0.5 * hips)))
    for a, b in _LIMBS:
        cv2.line(canvas, _pixel(points[a]), _pixel(points[b]), 1, limb)
    head = max(limb, int(1.2 * np.linalg.norm(points[7] - points[8])), int(0.5 * shoulders))
    cv2.circle(canvas, _pixel(points[0]), head, 1, -1)
    cv2.fillConvexPoly(canvas, np.array([_pixel(points[k]) for k in (11, 12, 24, 23)]), 1)
    return canvas.astype(bool)


def _disc(dilation: float, height: int, width: int) -> np.ndarray:
    radius = max(2, int(round(dilation * np.hypot(height, width))))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(np.clip(round(float(point[0])), -10000, 10000)), int(np.clip(round(float(point[1])), -10000, 10000))


class Inpainter(Protocol):
    def __call__(self, frames: np.ndarray, region: np.ndarray, never_copy: np.ndarray | None = None) -> np.ndarray: ...


class TemporalBackgroundInpainter:
    """Fill the region with the background seen in other frames where the camera is static,
    else (and for pixels never seen uncovered) with OpenCV inpainting.

    A frame uses the temporal model only if its own uncovered pixels agree with it
    (`static_tolerance` grey levels on average), which rules out pans, zooms and lighting
    changes. OpenCV inpainting runs at most `max_inpaint_size` pixels across (it is slow on
    large holes and the hole is mostly hidden by the avatar anyway).

    `never_copy` (T, H, W bool, optional) marks pixels outside the region that are no background
    sample either: a person segmentation. A real person left real in one frame (for the residual
    check to find) must not be painted into the others, where they would look static and real.
    """

    def __init__(self, static_tolerance: float = 6.0, max_inpaint_size: int = 128):
        self.static_tolerance = static_tolerance
        self.max_inpaint_size = max_inpaint_size

    def __call__(self, frames: np.ndarray, region: np.ndarray, never_copy: np.ndarray | None = None) -> np.ndarray:
        out = frames.copy()
        if not region.any():
            return out
        free = ~region if never_copy is None else ~(region | never_copy)
        background, seen = self._temporal_median(frames, ~free)
        for t in range(len(frames)):
            if not region[t].any():
                continue
            hole = region[t].copy()
            if (free[t] & seen).any():
                difference = np.abs(frames[t].astype(np.int16) - background.astype(np.int16)).mean(-1)
                if difference[free[t] & seen].mean() <= self.static_tolerance:
                    use = hole & seen
                    out[t][use] = background[use]
                    hole &= ~seen
            if hole.any():
                out[t][hole] = self._opencv(out[t], hole)[hole]
        return out

    @staticmethod
    def _temporal_median(frames: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel, the (lower) median over the frames where it is outside the region."""
        free_count = (~region).sum(0)
        stack = np.where(region[..., None], np.inf, frames.astype(np.float32))
        stack.sort(axis=0)  # covered samples (inf) sort last
        middle = (np.maximum(free_count, 1) - 1) // 2
        median = np.take_along_axis(stack, middle[None, :, :, None].repeat(3, axis=-1), axis=0)[0]
        seen = free_count > 0
        return np.where(seen[..., None], median, 0).astype(np.uint8), seen

    def _opencv(self, frame: np.ndarray, hole: np.ndarray) -> np.ndarray:
        height, width = hole.shape
        scale = min(1.0, self.max_inpaint_size / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            small_hole = cv2.resize(hole.astype(np.uint8), size, interpolation=cv2.INTER_AREA) > 0
            small = cv2.inpaint(small, small_hole.astype(np.uint8), 3, cv2.INPAINT_NS)
            return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        return cv2.inpaint(frame, hole.astype(np.uint8), 3, cv2.INPAINT_NS)


def make_inpainter(name: str) -> Inpainter:
    if name == "temporal":
        return TemporalBackgroundInpainter()
    if name == "opencv":
        return TemporalBackgroundInpainter(static_tolerance=-1.0)  # never trust the temporal model
    raise ValueError(f"unknown inpainter {name!r}; choose 'temporal' or 'opencv'")
