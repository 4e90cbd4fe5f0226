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
from typing import Any, Callable, Protocol

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
    can cost a clip its `ok` status, never privacy. People this search misses are the residual
    check's to find (`residual.py`), which withholds the clip.

    No search in crops: BlazePose run on crops around person segmentation nobody explained
    (`CropSearch`) added no person on the real clips in tests/data. Their pedestrians, 50 px tall in
    the source, got detector scores of 0.3-0.6 in a crop, in a few frames each, while 0.5-0.6 already
    found ghosts in astronaut clips (docs/benchmarks.md, "Real footage"). It now only confirms
    segmentation in the residual check.

    The graphs are built lazily, once per process. Nothing carries over from one clip to the next:
    mediapipe's own landmark smoothing is off (ours, `tracking.smooth`, works per clip), and a graph
    that tracked someone at the end of the last clip is cleared by `clear_tracking` (rebuilt when the
    frame size changes)."""

    def __init__(
        self,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        max_people: int = 4,
        extra_person_confidence: float = 0.85,
    ):
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.max_people = max_people
        self.extra_person_confidence = extra_person_confidence
        self._graphs: list = []
        self._tracking: set[int] = set()  # the searches whose last frame gave a pose: they hold a track
        self._size: tuple | None = None  # (H, W) of the last clip

    def __getstate__(self):  # mediapipe graphs cannot be pickled; workers rebuild them
        return {**self.__dict__, "_graphs": [], "_tracking": set(), "_size": None}

    def _searches(self) -> list:
        if not self._graphs:
            mp = import_mediapipe()
            self._graphs = [
                mp.solutions.pose.Pose(
                    static_image_mode=False,
                    model_complexity=1,  # 0 and 2 try to download their model and fail offline
                    smooth_landmarks=False,  # its filters outlive a clip; tracking.smooth smooths per clip
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

        graphs, size = self._searches(), frames.shape[1:3]
        for k, graph in enumerate(graphs):
            if size != self._size:  # the segmentation smoothing keeps a mask of the old size: rebuild
                graph.reset()
            elif k in self._tracking:
                clear_tracking(graph, size, lambda result: result.pose_landmarks is not None)
        self._tracking.clear()
        self._size = size
        return link_detections([self._people(frame) for frame in frames], frames.shape[:3])

    def _people(self, frame: np.ndarray) -> list[Detection]:
        """Everyone found in one frame: search, paint the person found grey, search again."""
        from hf_maskdp.anonymize.inpaint import detection_region

        height, width = frame.shape[:2]
        people: list[Detection] = []
        searched = np.ascontiguousarray(frame)
        found = np.zeros((height, width), bool)  # where the people found so far are
        for k, graph in enumerate(self._graphs):
            result = graph.process(searched)
            if result.pose_landmarks is None or result.pose_world_landmarks is None:
                self._tracking.discard(k)
                break
            self._tracking.add(k)
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
        return people


def clear_tracking(graph, shape: tuple[int, int], found: Callable[[Any], bool]) -> None:
    """Make a video-mode mediapipe graph forget what it tracks, before the next clip.

    `graph.reset()` does it by rebuilding the graph, which reloads its models: about 80 ms of CPU
    per graph per clip, 10 ms a frame per graph on an 8-frame clip. One uniform grey frame (`shape` = (H, W))
    does it in one model run: the tracked region shows nobody, so the graph drops it and, with no
    smoothing filters, keeps nothing (tests/test_real_footage.py checks that a clip coming after another
    comes out identical to one from new graphs). Should the grey frame still give a result (`found`), reset."""
    if found(graph.process(np.full((*shape, 3), 128, np.uint8))):
        graph.reset()


class CropSearch:
    """Is there a person on this blob of person segmentation? One of the residual check's two
    confirmations (`residual.ResidualPersonCheck`; the other is motion): selfie segmentation also
    calls a tripod or a coffee cup a person, so a still blob counts only when BlazePose, run in
    static-image mode on a crop around it (with a margin, resized to `crop_size`), finds a person
    with most visible landmarks on it.
    """

    def __init__(self, min_detection_confidence: float = 0.5, crop_size: int = 256, margin: float = 0.3):
        self.min_detection_confidence = min_detection_confidence
        self.crop_size = crop_size
        self.margin = margin
        self._graph = None

    def pose_graph(self):
        if self._graph is None:
            mp = import_mediapipe()
            self._graph = mp.solutions.pose.Pose(
                static_image_mode=True,
                model_complexity=1,
                min_detection_confidence=self.min_detection_confidence,
            )
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
        person = Detection(image[:, :2] * (x1 - x0, y1 - y0) + (x0, y0), world, image[:, 2])
        grown = cv2.dilate(blob.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        return person if _inside(person, grown) else None


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
    name: str, column: str = "pose", min_detection_confidence: float = 0.5, max_people: int = 4
) -> PoseSource:
    if name == "mediapipe":
        return MediaPipePose(min_detection_confidence=min_detection_confidence, max_people=max_people)
    if name == "given":
        return GivenPose(column)
    raise ValueError(f"unknown pose_source {name!r}; choose 'mediapipe' or 'given'")
