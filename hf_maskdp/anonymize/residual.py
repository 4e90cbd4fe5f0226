"""Independent residual-person check: is a real person still visible in an anonymized clip?

The pose model that placed the avatars can miss people (close-ups, partly visible or small
people, a second person next to the first). Before a clip is published, three other detectors
read every output frame, and any real-person evidence on pixels no avatar covers (the pixels
left real, marked sensitive) makes the clip `residual_person: ...`, withheld by default:

- person segmentation: mediapipe's legacy `selfie_segmentation` (landscape model), which finds
  close-up and partly visible people that pose misses, but also calls a camera tripod or a
  close-up coffee cup a person. So a segment counts only when it moves against the scene
  (`SceneMotion`: a walking person does, a tripod, a cone or a lamp does not, whatever the
  camera does) or when BlazePose, run on a crop around it (static-image mode, the avatars
  painted over from their surroundings), finds a person with most landmarks on it
  (`pose.CropSearch`). On small, far pedestrians the crop pose confirms a quarter of the
  segments, motion nearly all (docs/benchmarks.md, "Real footage");
- faces: BlazeFace full range (`face_detection`, model_selection=1), which misses turned faces,
  so it is never relied on alone;
- hands: mediapipe `hands` (lite model);
- a found person's own body left real beside their avatar (legs below an avatar the pose placed too
  high): given the input frames, a segment of *their* person segmentation that reaches into the found
  people's region but lies mostly outside the avatars and the erased region, and is still segmented in
  the output (`body_left_real`). Such legs neither move nor give a pose in a crop.

All three models ship in the mediapipe 0.10.21 wheel. The check reads every frame, at the
frame's own resolution (each model resizes to its own input size, 256x144 to 192x192, so a
smaller copy would save nothing and lose small people), since a person may be visible in one
frame only. Segmentation and hands run on every frame; faces (5 ms a frame) only on frames where
the segmentation marks some pixel off the avatars at least faintly (`faint_segmentation`, 0.05, a
tenth of its own threshold): every face found on the real footage lies on segmentation of 0.95 or
more, while frames whose only person is under an avatar have nothing to look at. Hands are not
gated so: the hand model also fires on a real person's legs at a frame edge where the
segmentation sees nothing (docs/benchmarks.md, "Real footage"). An avatar's own edges are blurred
by the 256x144 segmentation, so evidence within `avatar_margin` of an avatar counts as the
avatar's; so does evidence on pixels the inpainter painted over (person-shaped smears of
background, no real person).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cv2
import numpy as np

from hf_maskdp.anonymize.pose import quiet_mediapipe_logs
from hf_maskdp.constants import STATUS_RESIDUAL


@dataclass
class Evidence:
    """Real-person evidence in one frame."""

    segmentation: np.ndarray  # (H, W) bool: pixels the segmentation model calls person
    faces: list  # (x0, y0, x1, y1) pixel boxes
    hands: list  # (x0, y0, x1, y1) pixel boxes around each hand's landmarks


class ResidualPersonCheck:
    """`check(frames, avatar_mask)` -> None when no real person is left, else a status.

    Thresholds (tuned on the real clips in tests/data, see docs/benchmarks.md):
    `segmentation_threshold=0.5` on the model's soft mask; a person-segmentation blob counts when
    at least `min_area` (fraction of the frame, 0.3 %: a 12x19 px blob at 320x240) of it lies
    outside the avatars (dilated by `avatar_margin` of the frame diagonal) and at least
    `min_moving` of its pixels move against the scene (`SceneMotion`, None: pose only), or a pose
    is found on it (up to `max_blobs` blobs per frame, largest first); a face or hand counts
    when at least `min_uncovered` (a quarter) of its box lies outside them. A face box above
    `close_up_face` of the frame is reported as a close-up that a body avatar cannot cover.
    """

    def __init__(
        self,
        segmentation_threshold: float = 0.5,
        min_area: float = 0.003,
        avatar_margin: float = 0.015,
        min_face_confidence: float = 0.5,
        min_hand_confidence: float = 0.5,
        min_uncovered: float = 0.25,
        close_up_face: float = 0.08,
        faint_segmentation: float = 0.05,
        min_moving: float | None = 0.1,
    ):
        self.segmentation_threshold = segmentation_threshold
        self.min_area = min_area
        self.avatar_margin = avatar_margin
        self.min_face_confidence = min_face_confidence
        self.min_hand_confidence = min_hand_confidence
        self.min_uncovered = min_uncovered
        self.close_up_face = close_up_face  # a face box above this fraction of the frame: a close-up
        self.faint_segmentation = faint_segmentation  # check(): faces only where segmentation reaches this
        # 94 % of the street video's pedestrian segments have >= 10 % of their pixels moving; its static clutter
        # (cones, a tripod, a lamp) at most 0.2 % with a still camera, 5 % in a simulated pan (docs/benchmarks.md).
        self.min_moving = min_moving
        self.max_blobs = 4  # segmented blobs searched per frame, largest first
        # `body_left_real`: a segment reaching into a found person's region with less than this share inside it
        # (the rendered people's leaks: 40-89 %; docs/benchmarks.md, "A found person's body left real")
        self.attached_share = 0.9
        self._segmenter = None
        self._models: tuple | None = None  # the face and hand graphs
        self._crops = None
        self._tracking_hands = False  # the hand graph's last frame showed hands: it tracks them
        self._hands_size: tuple | None = None  # (H, W) of the frames it saw last

    def __getstate__(self):  # mediapipe graphs cannot be pickled; workers rebuild them
        return {
            **self.__dict__,
            "_segmenter": None,
            "_models": None,
            "_crops": None,
            "_tracking_hands": False,
            "_hands_size": None,
        }

    def _crop_search(self):
        if self._crops is None:
            from hf_maskdp.anonymize.pose import CropSearch

            self._crops = CropSearch()
        return self._crops

    def _graphs(self) -> tuple:
        """The face and hand graphs. Built where they run (in `evidence`): a graph opens its models in
        background threads, whose log lines must fall inside `quiet_mediapipe_logs`."""
        if self._models is None:
            from hf_maskdp.anonymize.pose import import_mediapipe

            mp = import_mediapipe()
            self._models = (
                mp.solutions.face_detection.FaceDetection(
                    model_selection=1, min_detection_confidence=self.min_face_confidence
                ),
                mp.solutions.hands.Hands(
                    static_image_mode=False,
                    max_num_hands=4,
                    model_complexity=0,
                    min_detection_confidence=self.min_hand_confidence,
                ),
            )
        return self._models

    @quiet_mediapipe_logs()
    def segmentation(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W) float32: the segmentation model's soft person mask of each frame (what `evidence` thresholds)."""
        if self._segmenter is None:
            from hf_maskdp.anonymize.pose import import_mediapipe

            self._segmenter = import_mediapipe().solutions.selfie_segmentation.SelfieSegmentation(model_selection=1)
        return np.array([self._segmenter.process(np.ascontiguousarray(frame)).segmentation_mask for frame in frames])

    @quiet_mediapipe_logs()
    def evidence(self, frames: np.ndarray, covered: np.ndarray | None = None) -> list[Evidence]:
        """Per frame, where the three detectors see a person (hand tracking starts afresh per call).

        With `covered` (T, H, W bool: what `check` counts as the avatars'), faces are looked for only in
        frames where the segmentation reaches `faint_segmentation` on some uncovered pixel (see the module
        docstring); hands always."""
        from hf_maskdp.anonymize.pose import clear_tracking

        face_detector, hand_detector = self._graphs()
        height, width = frames.shape[1:3]
        if self._tracking_hands and (height, width) != self._hands_size:
            hand_detector.reset()
        elif self._tracking_hands:
            clear_tracking(hand_detector, (height, width), lambda result: result.multi_hand_landmarks is not None)
        self._hands_size = (height, width)
        size = np.array([width, height, width, height], np.float32)
        result = []
        for t, (frame, soft) in enumerate(zip(frames, self.segmentation(frames))):
            frame = np.ascontiguousarray(frame)
            segmentation = soft > self.segmentation_threshold
            faint = covered is None or (soft[~covered[t]] > self.faint_segmentation).any()
            face_boxes = []
            for detection in (face_detector.process(frame).detections if faint else None) or []:
                box = detection.location_data.relative_bounding_box
                face_boxes.append(np.array([box.xmin, box.ymin, box.xmin + box.width, box.ymin + box.height]) * size)
            hand_boxes = []
            hands = hand_detector.process(frame).multi_hand_landmarks
            self._tracking_hands = hands is not None
            for landmarks in hands or []:
                points = np.array([(p.x, p.y) for p in landmarks.landmark], np.float32)
                hand_boxes.append(np.concatenate([points.min(0), points.max(0)]) * size)
            result.append(Evidence(segmentation, face_boxes, hand_boxes))
        return result

    def scene_motion(self, frames: np.ndarray, covered: np.ndarray, evidence: list[Evidence]) -> SceneMotion | None:
        """What `uncovered` needs to tell moving segments from static clutter in this clip (None: pose only)."""
        if self.min_moving is None:
            return None
        return SceneMotion(frames, covered | np.array([e.segmentation for e in evidence]).reshape(covered.shape))

    def uncovered(
        self, evidence: Evidence, covered: np.ndarray, frame: np.ndarray, motion: SceneMotion | None = None, t: int = 0
    ) -> list[str]:
        """What of `evidence` (frame `t`) lies outside `covered` (H, W bool, already grown by the margin).

        With `motion` (`scene_motion` of the clip), a segment that moves counts without a pose."""
        height, width = covered.shape
        found = []
        outside = evidence.segmentation & ~covered
        if outside.sum() >= self.min_area * height * width:
            crops, searched = self._crop_search(), None
            for box, blob in crops.blobs(outside, self.min_area)[: self.max_blobs]:
                if motion is not None and motion.moving_share(t, box, blob) >= self.min_moving:
                    found.append("person (segmentation and motion)")
                    break
                if searched is None:
                    # The avatars are painted over from their surroundings first: otherwise the detector locks
                    # onto an avatar next to the real person (and grey would leave a person-shaped hole).
                    searched = cv2.inpaint(np.ascontiguousarray(frame), covered.astype(np.uint8), 3, cv2.INPAINT_TELEA)
                if crops.find(searched, box, blob) is not None:
                    found.append("person (segmentation and pose)")
                    break
        for kind, boxes in (("face", evidence.faces), ("hand", evidence.hands)):
            for box in boxes:
                x0, y0, x1, y1 = np.clip(np.rint(box), 0, [width, height, width, height]).astype(int)
                if x1 <= x0 or y1 <= y0:
                    continue
                if (~covered[y0:y1, x0:x1]).mean() >= self.min_uncovered:
                    close_up = kind == "face" and (x1 - x0) * (y1 - y0) >= self.close_up_face * height * width
                    found.append("close-up face" if close_up else kind)
                    break
        return found

    def uncovered_per_frame(self, frames: np.ndarray, covered: np.ndarray, evidence: list[Evidence]) -> list[list[str]]:
        """`uncovered` for every frame of a clip, motion included (`covered`: T, H, W bool, grown)."""
        motion = self.scene_motion(frames, covered, evidence)
        return [self.uncovered(e, covered[t], frames[t], motion, t) for t, e in enumerate(evidence)]

    def grow(self, mask: np.ndarray) -> np.ndarray:
        """`mask` (H, W bool) dilated by `avatar_margin` of the frame diagonal."""
        height, width = mask.shape
        radius = max(1, int(round(self.avatar_margin * np.hypot(height, width))))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)

    @quiet_mediapipe_logs()
    def check(
        self,
        frames: np.ndarray,
        avatar_mask: np.ndarray,
        erased: np.ndarray | None = None,
        real_frames: np.ndarray | None = None,
    ) -> str | None:
        """None if no frame shows real-person evidence outside the avatars, else a `residual_person: ...` status.

        `erased` (T, H, W bool, optional): pixels painted over from the background (inpainting), which
        hold no real person however the segmentation reads their smears; they count as covered.
        `real_frames` (the input of the anonymizer, optional; needs `erased`, the found people's region):
        also look for a found person's own body left real beside their avatar (`left_of_found_people`)."""
        frames_with: dict[str, list[int]] = {}
        covered = np.array([self.grow(mask) for mask in avatar_mask], bool).reshape(avatar_mask.shape)
        if erased is not None:
            covered |= erased
        evidence = self.evidence(frames, covered)
        found = self.uncovered_per_frame(frames, covered, evidence)
        if real_frames is not None and erased is not None:
            for t in self.left_of_found_people(real_frames, erased, covered, evidence):
                found[t].append("a found person's body beside their avatar")
        for t, kinds in enumerate(found):
            for kind in kinds:
                frames_with.setdefault(kind, []).append(t)
        if not frames_with:
            return None
        return residual_status(frames_with, len(frames))

    def left_of_found_people(
        self, real_frames: np.ndarray, region: np.ndarray, covered: np.ndarray, evidence: list[Evidence]
    ) -> list[int]:
        """Frames where a found person's own body is left real (`body_left_real`; `region`: the found people's
        erase region, `covered`: what counts as the avatars', `evidence`: the output's, from `evidence`)."""
        segmented = self.segmentation(real_frames) > self.segmentation_threshold
        return [
            t
            for t, seen in enumerate(evidence)
            if body_left_real(
                segmented[t], region[t], covered[t], seen.segmentation, self.attached_share, self.min_area
            )
        ]


def body_left_real(
    segmented: np.ndarray,
    region: np.ndarray,
    covered: np.ndarray,
    still_segmented: np.ndarray,
    attached_share: float = 0.9,
    min_area: float = 0.003,
) -> bool:
    """Is a found person's own body left real in this frame? Legs below an avatar the pose placed too high,
    an avatar torso over a whole person: such pixels neither move (a person standing, or legs the inpainter
    copied into the other frames) nor give a pose in a crop (legs alone), so `uncovered` misses them.

    A blob of `segmented` (person segmentation of the real frame, H, W bool) that reaches into `region` (the
    found people's erase region) belongs to them. It counts when less than `attached_share` of it lies in
    the region, at least `min_area` of the frame lies outside `covered`, and at least half of those
    uncovered pixels are segmented in the output too (`still_segmented`). The last condition rejects the
    segmentation spreading from a real person onto tape, a sign or the road: once the person is an avatar,
    the spread is mostly gone (docs/benchmarks.md, "A found person's body left real")."""
    if not (segmented & region).any():
        return False
    count, labels = cv2.connectedComponents(segmented.astype(np.uint8))
    size = np.bincount(labels.ravel(), minlength=count)
    inside = np.bincount(labels[region], minlength=count)
    uncovered = np.bincount(labels[~covered], minlength=count)
    still = np.bincount(labels[~covered & still_segmented], minlength=count)
    attached = (inside > 0) & (inside < attached_share * size)
    attached &= (uncovered >= min_area * segmented.size) & (2 * still >= uncovered)
    attached[0] = False  # the background label
    return bool(attached.any())


class SceneMotion:
    """Which pixels of a clip move against the scene: a walking person does, static clutter does not.

    Frame t is compared with the per-pixel median of its neighbours within `radius` frames (itself
    included), each aligned to it by the camera's motion: a similarity (pan, zoom, roll) fitted with
    RANSAC to corners tracked by pyramidal Lucas-Kanade on pixels `ignored` marks neither segmented
    nor covered (people and avatars move on their own). A pixel moves when it differs from that
    median by more than `threshold` (0-255) in some channel. Neighbour pixels outside the
    neighbour's view or `ignored` there do not vote; a pixel with fewer than half of the
    neighbours voting never moves (the pose confirmation still applies). Within the clip only: a
    person standing still all along does not move, and is left to the pose confirmation.
    """

    def __init__(self, frames: np.ndarray, ignored: np.ndarray, radius: int = 4, threshold: int = 25):
        self.frames, self.ignored, self.radius, self.threshold = frames, ignored, radius, threshold
        self._steps: list[np.ndarray] | None = None  # 3x3 maps of frame t's pixels into frame t + 1's

    def _camera_steps(self) -> list[np.ndarray]:
        if self._steps is None:
            gray = [cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in self.frames]
            self._steps = [camera_step(gray[t], gray[t + 1], ~self.ignored[t]) for t in range(len(gray) - 1)]
        return self._steps

    def _to_frame(self, s: int, t: int) -> np.ndarray:
        """3x3 map of frame s's pixel coordinates into frame t's."""
        steps, A = self._camera_steps(), np.eye(3)
        for k in range(s, t):
            A = steps[k] @ A
        for k in range(t, s):
            A = np.linalg.inv(steps[k]) @ A
        return A

    def moving_share(self, t: int, box: np.ndarray, blob: np.ndarray) -> float:
        """The share of `blob`'s pixels (H, W bool in frame t, inside `box` x0, y0, x1, y1) that move."""
        x0, y0, x1, y1 = (int(v) for v in box)
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)  # frame t's box -> (0, 0)
        size = (x1 - x0, y1 - y0)
        stack, voters = [], []
        for s in range(max(0, t - self.radius), min(len(self.frames), t + self.radius + 1)):
            A = (shift @ self._to_frame(s, t))[:2]
            frame = np.ascontiguousarray(self.frames[s])
            stack.append(cv2.warpAffine(frame, A, size, flags=cv2.INTER_LINEAR).astype(np.float32))
            seen = cv2.warpAffine((~self.ignored[s]).astype(np.uint8), A, size, flags=cv2.INTER_NEAREST) > 0
            voters.append(seen | (s == t))
            stack[-1][~voters[-1]] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: no vote
            median = np.nanmedian(np.stack(stack), axis=0)
        difference = np.abs(self.frames[t, y0:y1, x0:x1].astype(np.float32) - median).max(-1)
        moving = (difference > self.threshold) & (2 * np.sum(voters, 0) > len(voters))
        return float(moving[blob[y0:y1, x0:x1]].mean())


def camera_step(before: np.ndarray, after: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """3x3 similarity mapping `before`'s pixels to `after`'s (grey frames), from corners on `usable`
    pixels; the identity where too few corners are found or tracked (a still camera's answer)."""
    corners = cv2.goodFeaturesToTrack(before, 200, 0.01, 7, mask=usable.astype(np.uint8) * 255)
    A = None
    if corners is not None and len(corners) >= 8:
        tracked, ok, _ = cv2.calcOpticalFlowPyrLK(before, after, corners, None, winSize=(21, 21), maxLevel=3)
        ok = ok.ravel() == 1
        if ok.sum() >= 8:
            A, _ = cv2.estimateAffinePartial2D(corners[ok], tracked[ok], method=cv2.RANSAC, ransacReprojThreshold=2.0)
    return np.vstack([A if A is not None else np.eye(2, 3), [0, 0, 1]])


def residual_status(frames_with: dict[str, list[int]], num_frames: int) -> str:
    """`residual_person: ...` naming the evidence, how many frames and the first one."""
    parts = ", ".join(
        f"{kind} in {len(ts)} of {num_frames} frames (first: frame {ts[0]})" for kind, ts in frames_with.items()
    )
    if "close-up face" in frames_with:
        return f"{STATUS_RESIDUAL}: close-up a body avatar cannot cover: {parts}"
    if set(frames_with) == {"hand"}:
        return f"{STATUS_RESIDUAL}: real hands outside the avatars (a body avatar cannot cover hands alone): {parts}"
    return f"{STATUS_RESIDUAL}: a real person outside the avatars: {parts}"
