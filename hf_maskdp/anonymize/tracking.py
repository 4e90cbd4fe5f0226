"""Temporal consistency: fill short detection gaps, smooth landmarks, seed one identity per person.

Frames still without a pose after `fill_gaps` are reported by the pipeline (status `partial`),
never silently passed through.
"""

from __future__ import annotations

import hashlib

import numpy as np

from hf_maskdp.anonymize.pose import PoseTrack


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
    for lo, hi, source in ((max(0, first - max_gap), first, first), (last + 1, min(track.num_frames, last + 1 + max_gap), last)):
        k2[lo:hi], k3[lo:hi], vis[lo:hi] = k2[source], k3[source], vis[source]
        valid[lo:hi] = True
    return track.replace(keypoints_2d=k2, keypoints_3d=k3, visibility=vis, valid=valid)


def smooth(track: PoseTrack, sigma: float) -> PoseTrack:
    """Gaussian smoothing over time (in frames) within each run of valid frames."""
    if sigma <= 0:
        return track
    radius = max(1, int(round(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    k2, k3 = track.keypoints_2d.copy(), track.keypoints_3d.copy()
    for start, end in _runs(track.valid):
        for source, target in ((track.keypoints_2d, k2), (track.keypoints_3d, k3)):
            run = source[start:end].astype(np.float64)
            total = np.zeros_like(run)
            weight = np.zeros(len(run))
            for offset, k in zip(offsets, kernel):  # only neighbours inside the run count
                lo, hi = max(0, -offset), min(len(run), len(run) - offset)
                if lo < hi:
                    total[lo:hi] += k * run[lo + offset : hi + offset]
                    weight[lo:hi] += k
            target[start:end] = total / weight[:, None, None]
    return track.replace(keypoints_2d=k2, keypoints_3d=k3)


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
