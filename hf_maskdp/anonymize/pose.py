"""Pose sources: where each person's 2D/3D landmarks come from.

A pose source maps a clip `(T, H, W, 3)` (and its dataset row) to a list of `PoseTrack`s,
one per person. Landmarks follow the 33-point BlazePose layout that mediapipe uses, so a
dataset that ships its own poses (`GivenPose`) plugs into the same fitting code.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from hf_maskdp.anonymize.errors import ClipError

NUM_LANDMARKS = 33  # BlazePose topology (mediapipe `PoseLandmark`)

_MEDIAPIPE_HELP = (
    "the 'mediapipe' pose source needs mediapipe 0.10.21 (the last wheel that ships its models). "
    "Install it with: pip install --no-deps mediapipe==0.10.21 absl-py attrs flatbuffers 'protobuf>=4.25.3,<5' "
    "(it declares numpy<2 but works with numpy 2; --no-deps keeps your numpy). "
    "Or use AnonymizerConfig(pose_source='given') with poses stored in the dataset."
)


def import_mediapipe():
    """The `mediapipe` module, or an ImportError saying how to install the version that works."""
    try:
        import mediapipe as mp
    except ImportError as err:
        raise ImportError(_MEDIAPIPE_HELP) from err
    return mp


# mediapipe's C++ (absl) log lines at INFO and WARNING, e.g. "W0000 00:00:17.. 9508 inference_feedback_manager.cc:114]
# Feedback manager requires ...", 10-30 per clip. absl writes them to fd 2 before any level applies: GLOG_minloglevel,
# TF_CPP_MIN_LOG_LEVEL and absl-py's verbosity leave them all (measured), and mediapipe exposes no C++ log setting.
_MEDIAPIPE_NOISE = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+\.cc:\d+\]"  # absl/glog INFO and WARNING (E, F are kept)
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate)"
)
_quiet = threading.Lock()
_quiet_state = {"depth": 0, "saved_fd": None, "capture": None}


@contextmanager
def quiet_mediapipe_logs():
    """While mediapipe works (the pose stage, the residual check), send fd 2 to a temporary file;
    afterwards write back every line but mediapipe's C++ INFO/WARNING lines (`_MEDIAPIPE_NOISE`).
    Nothing else is lost: our warnings and other threads' output come out when the stage ends, and
    progress bars, written between stages, are untouched. Nested and concurrent uses share one window."""
    state = _quiet_state
    with _quiet:
        if state["depth"] == 0:
            sys.stderr.flush()
            state["capture"] = tempfile.TemporaryFile()
            state["saved_fd"] = os.dup(2)
            os.dup2(state["capture"].fileno(), 2)
        state["depth"] += 1
    try:
        yield
    finally:
        with _quiet:
            state["depth"] -= 1
            if state["depth"] == 0:
                sys.stderr.flush()
                os.dup2(state["saved_fd"], 2)
                os.close(state["saved_fd"])
                capture = state["capture"]
                capture.seek(0)
                kept = [line for line in capture.read().splitlines(keepends=True) if not _MEDIAPIPE_NOISE.match(line)]
                capture.close()
                if kept:
                    os.write(2, b"".join(kept))


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


@dataclass
class Detection:
    """One person found in one frame."""

    keypoints_2d: np.ndarray  # (33, 2) pixels
    keypoints_3d: np.ndarray  # (33, 3) metres, camera axes
    visibility: np.ndarray  # (33,)
    person_mask: np.ndarray | None = None  # (H, W) float32 soft segmentation

    def box(self) -> np.ndarray:
        """(x0, y0, x1, y1) around the landmarks."""
        return np.concatenate([self.keypoints_2d.min(0), self.keypoints_2d.max(0)])


class MediaPipePose:
    """mediapipe 0.10.21 legacy BlazePose (model_complexity=1), which finds one person per call,
    with a person segmentation mask. Several people: after a person is found, their region is
    painted grey and the frame is searched again, up to `max_people` times; search `k` keeps its
    own tracking graph, and `tracking.link_detections` links the people of consecutive frames.
    Later searches run the person detector on every frame, so they need `extra_person_confidence`:
    on astronaut-photo clips (6 clips, 1 or 2 people, 224-320 px) 0.5 and 0.8 still reported
    ghosts (the space shuttle, background left between painted people), 0.85 none, and 0.88
    started to miss the second person. A ghost is kept as a person (never silently dropped): it
    can cost a clip its `ok` status, never privacy.
    The graphs are built lazily, once per process, and reset per clip so tracking never carries
    over from one clip to the next. Then `CropSearch` (if `search_crops`) looks in crops around
    person segmentation nobody found explains, with `crop_confidence=0.7`: at 0.5 and 0.6 it found a
    ghost in the Space's 24-frame astronaut example (a second track, so `partial`); at 0.6 it also
    found the second pedestrian of tests/data/three_people.mp4, at 0.7 it no longer does (that clip
    is then withheld by the residual check). A ghost costs `ok`, never privacy."""

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        max_people: int = 4,
        extra_person_confidence: float = 0.85,
        search_crops: bool = True,
        crop_confidence: float = 0.7,
    ):
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.max_people = max_people
        self.extra_person_confidence = extra_person_confidence
        self.search_crops = search_crops
        self.crop_confidence = crop_confidence  # see CropSearch
        self._graphs: list = []
        self._crops: CropSearch | None = None

    def __getstate__(self):  # mediapipe graphs cannot be pickled; workers rebuild them
        return {**self.__dict__, "_graphs": [], "_crops": None}

    def _searches(self) -> list:
        if not self._graphs:
            mp = import_mediapipe()
            self._graphs = [
                mp.solutions.pose.Pose(
                    static_image_mode=False,
                    model_complexity=1,  # 0 and 2 try to download their model and fail offline
                    smooth_landmarks=True,
                    enable_segmentation=True,
                    min_detection_confidence=max(self.min_detection_confidence, self.extra_person_confidence * (k > 0)),
                    min_tracking_confidence=max(self.min_tracking_confidence, self.extra_person_confidence * (k > 0)),
                )
                for k in range(self.max_people)
            ]
        return self._graphs

    @quiet_mediapipe_logs()
    def __call__(self, frames: np.ndarray, row: dict | None = None) -> list[PoseTrack]:
        from hf_maskdp.anonymize.tracking import link_detections

        graphs = self._searches()
        for graph in graphs:
            graph.reset()
        if self.search_crops and self._crops is None:
            self._crops = CropSearch(max(self.min_detection_confidence, self.crop_confidence))
        return link_detections([self._people(graphs, frame, self._crops) for frame in frames], frames.shape[:3])

    @staticmethod
    def _people(graphs: list, frame: np.ndarray, crops: CropSearch | None = None) -> list[Detection]:
        """Everyone found in one frame: search, paint the person found grey, search again; then
        search crops around person segmentation that nobody found explains (`CropSearch`)."""
        from hf_maskdp.anonymize.inpaint import detection_region

        height, width = frame.shape[:2]
        people: list[Detection] = []
        searched = np.ascontiguousarray(frame)
        found = np.zeros((height, width), bool)  # where the people found so far are
        for graph in graphs:
            result = graph.process(searched)
            if result.pose_landmarks is None or result.pose_world_landmarks is None:
                break
            image = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], np.float32)
            world = np.array([(p.x, p.y, p.z) for p in result.pose_world_landmarks.landmark], np.float32)
            mask = None if result.segmentation_mask is None else result.segmentation_mask.astype(np.float32)
            person = Detection(image[:, :2] * (width, height), world, image[:, 2], mask)
            if _inside(person, found):  # the painted region (or someone found already) again: stop
                break
            people.append(person)
            region = detection_region(person, (height, width))
            found |= region
            searched = searched.copy()
            searched[region] = 128  # neutral grey, so this search cannot find that person again
        if crops is not None:
            for person in crops(frame, found, len(graphs) - len(people), searched):
                people.append(person)
                found |= detection_region(person, (height, width))
        return people


class CropSearch:
    """Search again where the full-frame pose search found nobody but a person segmentation model
    sees someone: mediapipe's pose detector looks for one person per frame and, at 256 px, misses
    small, close-up or partly visible people that a crop around them shows clearly.

    The segmentation is `residual.ResidualPersonCheck`'s (selfie segmentation), minus the people
    found already; each blob of at least `min_area` of the frame is cropped with a margin,
    resized to `crop_size` and searched by BlazePose in static-image mode. A person counts when
    most of their visible landmarks lie on the blob (a segmentation false positive such as a
    tripod rarely yields a pose, and never one on itself).
    """

    def __init__(
        self, min_detection_confidence: float = 0.5, min_area: float = 0.003, crop_size: int = 256, margin: float = 0.3
    ):
        self.min_detection_confidence = min_detection_confidence
        self.min_area = min_area
        self.crop_size = crop_size
        self.margin = margin
        self.max_blobs = 4  # blobs searched per frame, largest first (each search is one pose run)
        self._graph = None
        self._check = None

    def pose_graph(self):
        if self._graph is None:
            mp = import_mediapipe()
            self._graph = mp.solutions.pose.Pose(
                static_image_mode=True,
                model_complexity=1,
                enable_segmentation=True,
                min_detection_confidence=self.min_detection_confidence,
            )
            from hf_maskdp.anonymize.residual import ResidualPersonCheck

            self._check = ResidualPersonCheck()
        return self._graph

    def blobs(self, segmentation: np.ndarray, min_area: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """(box (x0, y0, x1, y1), blob mask) of each segmented blob above `min_area`, largest first."""
        import cv2

        count, labels, stats, _ = cv2.connectedComponentsWithStats(segmentation.astype(np.uint8))
        order = np.argsort(-stats[1:, cv2.CC_STAT_AREA]) + 1
        return [
            (np.array([x, y, x + w, y + h]), labels == k)
            for k in order
            for x, y, w, h, area in [stats[k]]
            if area >= min_area * segmentation.size
        ]

    @quiet_mediapipe_logs()
    def find(self, frame: np.ndarray, box: np.ndarray, blob: np.ndarray) -> Detection | None:
        """A person in the crop of `frame` around `box` whose landmarks lie mostly on `blob`, or None."""
        import cv2

        height, width = frame.shape[:2]
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0) * (1 + 2 * self.margin)  # a square crop: the detector's own aspect
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        x1, y1 = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
        crop = frame[y0:y1, x0:x1]
        scale = self.crop_size / max(crop.shape[:2])
        resized = cv2.resize(
            crop,
            (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
            interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA,
        )
        result = self.pose_graph().process(np.ascontiguousarray(resized))
        if result.pose_landmarks is None or result.pose_world_landmarks is None:
            return None
        image = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], np.float32)
        world = np.array([(p.x, p.y, p.z) for p in result.pose_world_landmarks.landmark], np.float32)
        points = image[:, :2] * (x1 - x0, y1 - y0) + (x0, y0)
        mask = None
        if result.segmentation_mask is not None:
            mask = np.zeros((height, width), np.float32)
            mask[y0:y1, x0:x1] = cv2.resize(result.segmentation_mask.astype(np.float32), (x1 - x0, y1 - y0))
        person = Detection(points, world, image[:, 2], mask)
        grown = cv2.dilate(blob.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        return person if _inside(person, grown) else None

    @quiet_mediapipe_logs()
    def __call__(
        self, frame: np.ndarray, found: np.ndarray, max_people: int, searched: np.ndarray | None = None
    ) -> list[Detection]:
        """People around segmentation of `frame` that `found` (H, W bool: the people found) does not explain,
        searched in crops of `searched` (default `frame`; the pose stage passes the frame with the people
        found painted grey, so they are not found again: a grey silhouette can itself pass for a person,
        which costs a clip its `ok` status, never privacy). A person found again lies on `found` and is dropped."""
        if max_people <= 0:
            return []
        self.pose_graph()
        segmentation = self._check.evidence(frame[None], hands=False, faces=False)[0].segmentation & ~found
        people = []
        for box, blob in self.blobs(segmentation, self.min_area)[: self.max_blobs]:
            person = self.find(frame if searched is None else searched, box, blob)
            if person is not None and not _inside(person, found):
                people.append(person)
                if len(people) == max_people:
                    break
        return people


def _inside(person: Detection, region: np.ndarray) -> bool:
    """Most of the person's visible landmarks lie in `region`."""
    height, width = region.shape
    points = person.keypoints_2d[person.visibility > 0.5]
    if len(points) == 0:
        points = person.keypoints_2d
    x = np.clip(np.rint(points[:, 0]).astype(int), 0, width - 1)
    y = np.clip(np.rint(points[:, 1]).astype(int), 0, height - 1)
    return bool(region[y, x].mean() > 0.5)


class GivenPose:
    """Poses shipped with the dataset, in column `column`: per person a dict with
    `keypoints_2d` (T, 33, 2) pixels, `keypoints_3d` (T, 33, 3) metres in camera axes, optional
    `visibility` (T, 33) and `person_mask` (T, H, W); NaN rows mark frames without a pose.
    The column holds one such dict, or a list of them (several people)."""

    def __init__(self, column: str = "pose"):
        self.column = column

    def __call__(self, frames: np.ndarray, row: dict | None = None) -> list[PoseTrack]:
        if row is None or row.get(self.column) is None:
            raise ClipError(
                f"pose_source='given' reads poses from column {self.column!r}, but this row has none; "
                "add the column or use pose_source='mediapipe'."
            )
        value = row[self.column]
        people = value if isinstance(value, (list, tuple)) else [value]
        return [self._track(person, frames.shape[:3]) for person in people]

    def _track(self, person: Any, shape: tuple[int, int, int]) -> PoseTrack:
        num_frames, height, width = shape
        if not isinstance(person, dict) or "keypoints_2d" not in person or "keypoints_3d" not in person:
            raise ClipError(f"column {self.column!r}: each person needs 'keypoints_2d' and 'keypoints_3d' arrays")
        try:
            k2 = np.asarray(person["keypoints_2d"], np.float32)
            k3 = np.asarray(person["keypoints_3d"], np.float32)
        except (TypeError, ValueError) as err:
            raise ClipError(f"column {self.column!r}: keypoints are not numeric arrays ({err})") from err
        if k2.shape != (num_frames, NUM_LANDMARKS, 2) or k3.shape != (num_frames, NUM_LANDMARKS, 3):
            raise ClipError(
                f"column {self.column!r}: expected keypoints_2d {(num_frames, NUM_LANDMARKS, 2)} and keypoints_3d "
                f"{(num_frames, NUM_LANDMARKS, 3)} for this {num_frames}-frame clip, got {k2.shape} and {k3.shape}"
            )
        detected = np.isfinite(k2).all(axis=(1, 2)) & np.isfinite(k3).all(axis=(1, 2))
        visibility = person.get("visibility")
        visibility = (
            np.ones((num_frames, NUM_LANDMARKS), np.float32)
            if visibility is None
            else np.asarray(visibility, np.float32)
        )
        mask = person.get("person_mask")
        if mask is not None:
            mask = np.asarray(mask, np.float32)
            if mask.shape != (num_frames, height, width):
                raise ClipError(f"column {self.column!r}: person_mask has shape {mask.shape}, expected {shape}")
        return PoseTrack(k2.copy(), k3.copy(), visibility, detected, detected.copy(), mask)


def make_pose_source(
    name: str,
    column: str = "pose",
    min_detection_confidence: float = 0.5,
    max_people: int = 4,
    search_crops: bool = True,
) -> PoseSource:
    if name == "mediapipe":
        return MediaPipePose(
            min_detection_confidence=min_detection_confidence, max_people=max_people, search_crops=search_crops
        )
    if name == "given":
        return GivenPose(column)
    raise ValueError(f"unknown pose_source {name!r}; choose 'mediapipe' or 'given'")
