"""Temporal consistency: link people across frames, fill short detection gaps, smooth landmarks
and cameras, seed one identity per person.

Frames still without a pose after `fill_gaps` are reported by the pipeline (status `partial`),
never silently passed through.
"""

from __future__ import annotations

import hashlib

import numpy as np

from hf_maskdp.anonymize.pose import Detection, PoseTrack, empty_track


def link_detections(
    people: list[list[Detection]], shape: tuple[int, int, int], min_iou: float = 0.1
) -> list[PoseTrack]:
    """One `PoseTrack` per person from the people found in each frame.

    Each frame's people are matched to the tracks by the overlap (IoU) of their landmark
    boxes with each track's last box (one-to-one, best total overlap); a person matching no
    track starts a new one. Tracks come out ordered by first frame, then left to right, so
    person indices (and avatar identities) do not depend on which search found whom.
    """
    from scipy.optimize import linear_sum_assignment

    num_frames, height, width = shape
    tracks: list[PoseTrack] = []
    last_box: list[np.ndarray] = []
    for t, found in enumerate(people):
        boxes = [person.box() for person in found]
        assigned = [-1] * len(found)
        if tracks and found:
            iou = np.array([[_iou(box, previous) for previous in last_box] for box in boxes])
            for i, k in zip(*linear_sum_assignment(-iou)):
                if iou[i, k] >= min_iou:
                    assigned[i] = k
        for person, box, k in zip(found, boxes, assigned):
            if k < 0:
                tracks.append(empty_track(num_frames))
                tracks[-1].person_mask = np.zeros(shape, np.float32)
                last_box.append(box)
                k = len(tracks) - 1
            track = tracks[k]
            track.keypoints_2d[t], track.keypoints_3d[t], track.visibility[t] = (
                person.keypoints_2d,
                person.keypoints_3d,
                person.visibility,
            )
            track.detected[t] = track.valid[t] = True
            if person.person_mask is not None:
                track.person_mask[t] = person.person_mask
            last_box[k] = box
    order = sorted(range(len(tracks)), key=lambda k: (tracks[k].detected.argmax(), _first_box(tracks[k])[0]))
    return [tracks[k] for k in order]


def _first_box(track: PoseTrack) -> np.ndarray:
    points = track.keypoints_2d[track.detected.argmax()]
    return np.concatenate([points.min(0), points.max(0)])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


def fill_gaps(track: PoseTrack, max_gap: int) -> PoseTrack:
    """Interpolate landmarks linearly across gaps of at most `max_gap` frames between two
    measured frames, and hold the nearest pose over at most `max_gap` frames at either end."""
    detected = np.flatnonzero(track.detected)
    if len(detected) == 0 or max_gap <= 0:
        return track.replace(valid=track.detected.copy())
    k2, k3, vis = track.keypoints_2d.copy(), track.keypoints_3d.copy(), track.visibility.copy()
    valid = track.detected.copy()
    for start, end in zip(detected[:-1], detected[1:]):
        if 1 < end - start <= max_gap + 1:
            w = ((np.arange(start + 1, end) - start) / (end - start))[:, None, None]
            for arr in (k2, k3):
                arr[start + 1 : end] = (1 - w) * arr[start] + w * arr[end]
            vis[start + 1 : end] = np.minimum(vis[start], vis[end])
            valid[start + 1 : end] = True
    first, last = detected[0], detected[-1]
    for lo, hi, source in (
        (max(0, first - max_gap), first, first),
        (last + 1, min(track.num_frames, last + 1 + max_gap), last),
    ):
        k2[lo:hi], k3[lo:hi], vis[lo:hi] = k2[source], k3[source], vis[source]
        valid[lo:hi] = True
    return track.replace(keypoints_2d=k2, keypoints_3d=k3, visibility=vis, valid=valid)


def smooth(track: PoseTrack, sigma: float) -> PoseTrack:
    """Gaussian smoothing over time (in frames) within each run of valid frames."""
    return track.replace(
        keypoints_2d=smooth_series(track.keypoints_2d, track.valid, sigma),
        keypoints_3d=smooth_series(track.keypoints_3d, track.valid, sigma),
    )


def smooth_series(values: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """`values` (T, ...) smoothed over time with a Gaussian of `sigma` frames, within each run of
    `valid` frames (only neighbours inside the run count, so gaps and clip ends do not bias it).

    A Gaussian-weighted local line, not a plain weighted mean: inside a run the two are the same,
    but near a run's end a mean only sees one side and lags a moving person (by ~1.6 sigma frames;
    on tests/data/one_person.mp4 the first frame's avatar stood a third of a body width behind them)."""
    if sigma <= 0:
        return values
    radius = max(1, int(round(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    out = values.copy()
    for start, end in _runs(valid):
        run = values[start:end].astype(np.float64)
        sums = np.zeros((2, *run.shape))  # sum of w * y and of w * d * y (d: offset of the neighbour)
        moments = np.zeros((3, len(run)))  # sum of w, w * d and w * d^2
        for offset, k in zip(offsets, kernel):
            lo, hi = max(0, -offset), min(len(run), len(run) - offset)
            if lo < hi:
                neighbours = run[lo + offset : hi + offset]
                sums[0, lo:hi] += k * neighbours
                sums[1, lo:hi] += k * offset * neighbours
                moments[:, lo:hi] += (k * np.array([1, offset, offset**2]))[:, None]
        s0, s1, s2 = (m.reshape(-1, *[1] * (run.ndim - 1)) for m in moments)
        det = s0 * s2 - s1**2
        line = (s2 * sums[0] - s1 * sums[1]) / np.where(det > 1e-9, det, 1.0)  # the line's value at d = 0
        out[start:end] = np.where(det > 1e-9, line, sums[0] / s0)  # a one-frame run: its own value
    return out


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def identity_seed(seed: int, person_index: int, track: PoseTrack) -> int:
    """A reproducible seed for one person's avatar look.

    It mixes the user's seed, the person's index and a digest of the person's estimated
    2D pose, which is public (the avatar is driven by it anyway): so each clip gets its own
    look, the same one in every worker process, and no real pixel influences it.
    """
    pose = np.nan_to_num(np.round(track.keypoints_2d[track.valid], 0)).astype(np.int32)
    digest = hashlib.blake2b(pose.tobytes(), digest_size=8, key=f"{seed}:{person_index}".encode()).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF
