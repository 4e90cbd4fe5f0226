"""Pose sources: where each person's 2D/3D landmarks come from.

A pose source maps a clip `(T, H, W, 3)` (and its dataset row) to a list of `PoseTrack`s,
one per person. Landmarks follow the 33-point BlazePose layout that mediapipe uses, so a
dataset that ships its own poses (`GivenPose`) plugs into the same fitting code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

NUM_LANDMARKS = 33  # BlazePose topology (mediapipe `PoseLandmark`)

_MEDIAPIPE_HELP = (
    "the 'mediapipe' pose source needs mediapipe 0.10.21 (the last wheel that ships its models). "
    "Install it with: pip install --no-deps mediapipe==0.10.21 absl-py attrs flatbuffers 'protobuf>=4.25.3,<5' "
    "(it declares numpy<2 but works with numpy 2; --no-deps keeps your numpy). "
    "Or use AnonymizerConfig(pose_source='given') with poses stored in the dataset."
)


@dataclass
class PoseTrack:
    """One person through a clip of T frames. Frames without a measurement hold NaN."""

    keypoints_2d: np.ndarray  # (T, 33, 2) float32 pixel coordinates (x right, y down)
    keypoints_3d: np.ndarray  # (T, 33, 3) float32 metres, hip-centred, camera axes (x right, y down, z forward)
    visibility: np.ndarray  # (T, 33) float32 in [0, 1]
    detected: np.ndarray  # (T,) bool: the pose source measured this frame
    valid: np.ndarray  # (T,) bool: the frame has a pose (measured, or filled by tracking)
    person_mask: np.ndarray | None = None  # (T, H, W) float32 soft segmentation, or None

    @property
    def num_frames(self) -> int:
        return len(self.detected)

    def replace(self, **changes) -> PoseTrack:
        return replace(self, **changes)


class PoseSource(Protocol):
    def __call__(self, frames: np.ndarray, row: dict | None = None) -> list[PoseTrack]: ...


def empty_track(num_frames: int) -> PoseTrack:
    nan = np.float32(np.nan)
    return PoseTrack(
        keypoints_2d=np.full((num_frames, NUM_LANDMARKS, 2), nan, np.float32),
        keypoints_3d=np.full((num_frames, NUM_LANDMARKS, 3), nan, np.float32),
        visibility=np.zeros((num_frames, NUM_LANDMARKS), np.float32),
        detected=np.zeros(num_frames, bool),
        valid=np.zeros(num_frames, bool),
    )


class MediaPipePose:
    """mediapipe 0.10.21 legacy BlazePose (model_complexity=1): one person per clip, with a
    person segmentation mask. The graph is built lazily, once per process, and reset per clip
    so tracking never carries over from one clip to the next."""

    def __init__(self, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self._pose = None

    def __getstate__(self):  # the mediapipe graph cannot be pickled; workers rebuild it
        return {**self.__dict__, "_pose": None}

    def _graph(self):
        if self._pose is None:
            try:
                import mediapipe as mp
            except ImportError as err:
                raise ImportError(_MEDIAPIPE_HELP) from err
            self._pose = mp.solutions.pose.Pose(
                static_image_mode=False,
                model_complexity=1,  # 0 and 2 try to download their model and fail offline
                smooth_landmarks=True,
                enable_segmentation=True,
                min_detection_confidence=self.min_detection_confidence,
                min_tracking_confidence=self.min_tracking_confidence,
            )
        return self._pose

    def __call__(self, frames: np.ndarray, row: dict | None = None) -> list[PoseTrack]:
        pose = self._graph()
        pose.reset()
        num_frames, height, width = frames.shape[:3]
        track = empty_track(num_frames)
        person_mask = np.zeros((num_frames, height, width), np.float32)
        for t, frame in enumerate(frames):
            result = pose.process(np.ascontiguousarray(frame))
            if result.pose_landmarks is None or result.pose_world_landmarks is None:
                continue
            image = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], np.float32)
            world = np.array([(p.x, p.y, p.z) for p in result.pose_world_landmarks.landmark], np.float32)
            track.keypoints_2d[t] = image[:, :2] * (width, height)
            track.keypoints_3d[t] = world
            track.visibility[t] = image[:, 2]
            track.detected[t] = track.valid[t] = True
            if result.segmentation_mask is not None:
                person_mask[t] = result.segmentation_mask
        if not track.detected.any():
            return []
        track.person_mask = person_mask
        return [track]


class GivenPose:
    """Poses shipped with the dataset, in column `column`: per person a dict with
    `keypoints_2d` (T, 33, 2) pixels, `keypoints_3d` (T, 33, 3) metres in camera axes, optional
    `visibility` (T, 33) and `person_mask` (T, H, W); NaN rows mark frames without a pose.
    The column holds one such dict, or a list of them (several people)."""

    def __init__(self, column: str = "pose"):
        self.column = column

    def __call__(self, frames: np.ndarray, row: dict | None = None) -> list[PoseTrack]:
        if row is None or row.get(self.column) is None:
            raise ValueError(
                f"pose_source='given' reads poses from column {self.column!r}, but this row has none; "
                "add the column or use pose_source='mediapipe'."
            )
        value = row[self.column]
        people = value if isinstance(value, (list, tuple)) else [value]
        return [self._track(person, frames.shape[:3]) for person in people]

    def _track(self, person: Any, shape: tuple[int, int, int]) -> PoseTrack:
        num_frames, height, width = shape
        if not isinstance(person, dict) or "keypoints_2d" not in person or "keypoints_3d" not in person:
            raise ValueError(f"column {self.column!r}: each person needs 'keypoints_2d' and 'keypoints_3d' arrays")
        k2 = np.asarray(person["keypoints_2d"], np.float32)
        k3 = np.asarray(person["keypoints_3d"], np.float32)
        if k2.shape != (num_frames, NUM_LANDMARKS, 2) or k3.shape != (num_frames, NUM_LANDMARKS, 3):
            raise ValueError(
                f"column {self.column!r}: expected keypoints_2d {(num_frames, NUM_LANDMARKS, 2)} and keypoints_3d "
                f"{(num_frames, NUM_LANDMARKS, 3)} for this {num_frames}-frame clip, got {k2.shape} and {k3.shape}"
            )
        detected = np.isfinite(k2).all(axis=(1, 2)) & np.isfinite(k3).all(axis=(1, 2))
        visibility = person.get("visibility")
        visibility = np.ones((num_frames, NUM_LANDMARKS), np.float32) if visibility is None else np.asarray(visibility, np.float32)
        mask = person.get("person_mask")
        if mask is not None:
            mask = np.asarray(mask, np.float32)
            if mask.shape != (num_frames, height, width):
                raise ValueError(f"column {self.column!r}: person_mask has shape {mask.shape}, expected {shape}")
        return PoseTrack(k2.copy(), k3.copy(), visibility, detected, detected.copy(), mask)


def make_pose_source(name: str, column: str = "pose", min_detection_confidence: float = 0.5) -> PoseSource:
    if name == "mediapipe":
        return MediaPipePose(min_detection_confidence=min_detection_confidence)
    if name == "given":
        return GivenPose(column)
    raise ValueError(f"unknown pose_source {name!r}; choose 'mediapipe' or 'given'")
