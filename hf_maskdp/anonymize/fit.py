"""Fit a body model to landmarks: joint rotations from the 3D landmarks, a camera from the 2D ones.

Rotations: each bone of the body's rest skeleton (SMPL-H joints) is turned, parent before
child, onto the direction of the matching landmark bone (the smallest such rotation, so
twist stays at rest); the pelvis, upper spine and head take a full frame from two directions.
Everything is solved in camera axes (x right, y down, z forward, where mediapipe's world
landmarks live), so the posed body already faces the camera the way the person did.

Camera: intrinsics from an assumed field of view; extrinsics by PnP between the posed
body's joints and the 2D landmarks (mediapipe's 3D landmarks assume an adult's size; PnP
puts the avatar where the person appears in the image, whatever its own size).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from hf_maskdp.anonymize.body import JOINT, SMPLH_PARENTS, BodyModel, Mesh
from hf_maskdp.anonymize.render import Camera

# BlazePose landmark indices
NOSE, LEFT_EAR, RIGHT_EAR = 0, 7, 8
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_ELBOW, RIGHT_ELBOW, LEFT_WRIST, RIGHT_WRIST = 11, 12, 13, 14, 15, 16
LEFT_PINKY, RIGHT_PINKY, LEFT_INDEX, RIGHT_INDEX = 17, 18, 19, 20
LEFT_HIP, RIGHT_HIP, LEFT_KNEE, RIGHT_KNEE, LEFT_ANKLE, RIGHT_ANKLE = 23, 24, 25, 26, 27, 28
LEFT_FOOT, RIGHT_FOOT = 31, 32

# SMPL-H joints that coincide with one landmark: used for PnP
PNP_PAIRS = [
    (JOINT["left_hip"], LEFT_HIP),
    (JOINT["right_hip"], RIGHT_HIP),
    (JOINT["left_knee"], LEFT_KNEE),
    (JOINT["right_knee"], RIGHT_KNEE),
    (JOINT["left_ankle"], LEFT_ANKLE),
    (JOINT["right_ankle"], RIGHT_ANKLE),
    (JOINT["left_shoulder"], LEFT_SHOULDER),
    (JOINT["right_shoulder"], RIGHT_SHOULDER),
    (JOINT["left_elbow"], LEFT_ELBOW),
    (JOINT["right_elbow"], RIGHT_ELBOW),
    (JOINT["left_wrist"], LEFT_WRIST),
    (JOINT["right_wrist"], RIGHT_WRIST),
]


@dataclass
class FittedFrame:
    mesh: Mesh  # posed body, pelvis at the origin, camera-aligned axes
    joints: np.ndarray  # (22, 3)
    camera: Camera

    def is_finite(self) -> bool:
        return bool(
            np.isfinite(self.mesh.vertices).all()
            and np.isfinite(self.camera.R).all()
            and np.isfinite(self.camera.t).all()
        )


def default_intrinsics(width: int, height: int, focal_length: float | None = None) -> np.ndarray:
    """A pinhole K with ~53 degrees across the longer side unless `focal_length` (pixels) is given."""
    focal = focal_length or float(max(width, height))
    return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]])


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / max(np.linalg.norm(v), 1e-9)


def _align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction `source` to direction `target`."""
    a, b = _normalize(source), _normalize(target)
    axis = np.cross(a, b)
    sin, cos = np.linalg.norm(axis), float(np.clip(a @ b, -1, 1))
    if sin < 1e-8:
        if cos > 0:
            return np.eye(3)
        perpendicular = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        return Rotation.from_rotvec(np.pi * _normalize(perpendicular)).as_matrix()
    return Rotation.from_rotvec(axis / sin * np.arctan2(sin, cos)).as_matrix()


def _frame(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Orthonormal basis (columns) from a primary direction and a secondary one."""
    a = _normalize(primary)
    b = _normalize(secondary - (secondary @ a) * a)
    return np.stack([a, b, np.cross(a, b)], axis=1)


def _align_frames(rest_primary, rest_secondary, target_primary, target_secondary) -> np.ndarray:
    return _frame(target_primary, target_secondary) @ _frame(rest_primary, rest_secondary).T


def landmark_targets(landmarks_3d: np.ndarray) -> dict[str, np.ndarray]:
    """Named 3D points (camera axes) from the 33 landmarks."""
    lm = landmarks_3d.astype(np.float64)
    points = {
        "pelvis": 0.5 * (lm[LEFT_HIP] + lm[RIGHT_HIP]),
        "neck": 0.5 * (lm[LEFT_SHOULDER] + lm[RIGHT_SHOULDER]),
        "head": 0.5 * (lm[LEFT_EAR] + lm[RIGHT_EAR]),
        "nose": lm[NOSE],
        "left_hand": 0.5 * (lm[LEFT_INDEX] + lm[LEFT_PINKY]),
        "right_hand": 0.5 * (lm[RIGHT_INDEX] + lm[RIGHT_PINKY]),
    }
    parts = ("hip", "knee", "ankle", "foot", "shoulder", "elbow", "wrist", "ear")
    left = (LEFT_HIP, LEFT_KNEE, LEFT_ANKLE, LEFT_FOOT, LEFT_SHOULDER, LEFT_ELBOW, LEFT_WRIST, LEFT_EAR)
    right = (RIGHT_HIP, RIGHT_KNEE, RIGHT_ANKLE, RIGHT_FOOT, RIGHT_SHOULDER, RIGHT_ELBOW, RIGHT_WRIST, RIGHT_EAR)
    for part, left_index, right_index in zip(parts, left, right):
        points[f"left_{part}"], points[f"right_{part}"] = lm[left_index], lm[right_index]
    return points


def fit_rotations(rest_joints: np.ndarray, landmarks_3d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(global_orient (3,), body_pose (21, 3)) axis-angle that point the rest skeleton's bones
    along the landmark bones."""
    rest = rest_joints.astype(np.float64)
    p = landmark_targets(landmarks_3d)
    up, lateral = p["neck"] - p["pelvis"], p["left_hip"] - p["right_hip"]
    shoulders = p["left_shoulder"] - p["right_shoulder"]
    # target direction of each joint's bone (from the joint to its child, or a pseudo-child)
    bone_target = {
        "spine1": up,
        "spine2": up,
        "left_hip": p["left_knee"] - p["left_hip"],
        "right_hip": p["right_knee"] - p["right_hip"],
        "left_knee": p["left_ankle"] - p["left_knee"],
        "right_knee": p["right_ankle"] - p["right_knee"],
        "left_ankle": p["left_foot"] - p["left_ankle"],
        "right_ankle": p["right_foot"] - p["right_ankle"],
        "neck": p["head"] - p["neck"],
        "left_collar": p["left_shoulder"] - p["neck"],
        "right_collar": p["right_shoulder"] - p["neck"],
        "left_shoulder": p["left_elbow"] - p["left_shoulder"],
        "right_shoulder": p["right_elbow"] - p["right_shoulder"],
        "left_elbow": p["left_wrist"] - p["left_elbow"],
        "right_elbow": p["right_wrist"] - p["right_elbow"],
        "left_wrist": p["left_hand"] - p["left_wrist"],
        "right_wrist": p["right_hand"] - p["right_wrist"],
    }
    child = {
        "spine1": "spine2",
        "spine2": "spine3",
        "left_hip": "left_knee",
        "right_hip": "right_knee",
        "left_knee": "left_ankle",
        "right_knee": "right_ankle",
        "left_ankle": "left_foot",
        "right_ankle": "right_foot",
        "neck": "head",
        "left_collar": "left_shoulder",
        "right_collar": "right_shoulder",
        "left_shoulder": "left_elbow",
        "right_shoulder": "right_elbow",
        "left_elbow": "left_wrist",
        "right_elbow": "right_wrist",
    }

    def rest_bone(name):
        if name in child:
            return rest[JOINT[child[name]]] - rest[JOINT[name]]
        elbow = "left_elbow" if name == "left_wrist" else "right_elbow"  # hands continue the forearm
        return rest[JOINT[name]] - rest[JOINT[elbow]]

    names = list(JOINT)
    world = [np.eye(3)] * len(names)
    for j, name in enumerate(names):
        parent = SMPLH_PARENTS[j]
        if name == "pelvis":
            world[j] = _align_frames(
                rest[JOINT["spine3"]] - rest[0], rest[JOINT["left_hip"]] - rest[JOINT["right_hip"]], up, lateral
            )
        elif name == "spine3":
            rest_up = rest[JOINT["neck"]] - rest[j]
            rest_lateral = rest[JOINT["left_shoulder"]] - rest[JOINT["right_shoulder"]]
            world[j] = _align_frames(rest_up, rest_lateral, up, shoulders)
        elif name == "head":  # the face looks along +z at rest, ears along x
            face = p["nose"] - p["head"]
            world[j] = _align_frames(np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), p["left_ear"] - p["right_ear"], face)
        elif name in bone_target:
            world[j] = _align(world[parent] @ rest_bone(name), bone_target[name]) @ world[parent]
        else:  # feet: follow the parent
            world[j] = world[parent]
    local = [world[0]] + [world[SMPLH_PARENTS[j]].T @ world[j] for j in range(1, len(names))]
    rotvecs = Rotation.from_matrix(np.stack(local)).as_rotvec()
    return rotvecs[0].astype(np.float32), rotvecs[1:].astype(np.float32)


def fit_camera(
    joints: np.ndarray, keypoints_2d: np.ndarray, visibility: np.ndarray, K: np.ndarray, width: int, height: int
) -> Camera:
    """Camera extrinsics that project the posed joints onto the 2D landmarks (PnP).

    Starts from the body facing the camera as fitted (R = I) with the translation that best
    explains the 2D points, then refines R and t by iterative PnP if that lowers the error.
    """
    object_points = np.array([joints[j] for j, _ in PNP_PAIRS], np.float64)
    image_points = np.array([keypoints_2d[k] for _, k in PNP_PAIRS], np.float64)
    weights = np.array([visibility[k] for _, k in PNP_PAIRS]) > 0.5
    if weights.sum() < 6:
        weights[:] = True  # few visible joints: use all predictions rather than none
    object_points, image_points = object_points[weights], image_points[weights]

    # translation only, linear: (u - cx) (Z + tz) = f (X + tx), same for v
    (fx, _, cx), (_, fy, cy) = K[0], K[1]
    X, Y, Z = object_points.T
    du, dv = image_points[:, 0] - cx, image_points[:, 1] - cy
    zeros, ones = np.zeros_like(X), np.ones_like(X)
    A = np.concatenate([np.stack([fx * ones, zeros, -du], 1), np.stack([zeros, fy * ones, -dv], 1)])
    b = np.concatenate([du * Z - fx * X, dv * Z - fy * Y])
    t0 = np.linalg.lstsq(A, b, rcond=None)[0]
    if t0[2] <= 0.2:
        t0[2] = 3.0  # degenerate (e.g. all points on a line): stand the body 3 m away
    rvec, tvec = np.zeros(3), t0.copy()

    def error(r, t):
        projected, _ = cv2.projectPoints(object_points, r, t, K, None)
        return float(np.mean(np.linalg.norm(projected[:, 0] - image_points, axis=1)))

    best = error(rvec, tvec)
    try:
        ok, r1, t1 = cv2.solvePnP(
            object_points, image_points, K, None, rvec.copy(), tvec.copy(), True, cv2.SOLVEPNP_ITERATIVE
        )
    except cv2.error:  # degenerate points: keep the linear solution
        ok = False
    if ok and t1[2, 0] > 0.2 and np.isfinite(t1).all() and error(r1, t1) < best:
        rvec, tvec = r1[:, 0], t1[:, 0]
    return Camera(K=K, R=cv2.Rodrigues(np.asarray(rvec, np.float64))[0], t=tvec, width=width, height=height)


def fit_frame(body: BodyModel, landmarks_3d, keypoints_2d, visibility, K, width, height) -> FittedFrame:
    global_orient, body_pose = fit_rotations(body.rest_joints(), landmarks_3d)
    mesh, joints = body.pose(body_pose, global_orient=global_orient)
    pelvis = joints[0].copy()  # centre the body so PnP's translation is the person's position
    mesh = Mesh(mesh.vertices - pelvis, mesh.faces, mesh.vertex_colors)
    joints = joints - pelvis
    camera = fit_camera(joints, keypoints_2d, visibility, K, width, height)
    return FittedFrame(mesh=mesh, joints=joints, camera=camera)


def smooth_cameras(fits: dict[int, FittedFrame], num_frames: int, sigma: float) -> dict[int, FittedFrame]:
    """Smooth one person's per-frame camera (PnP rotation and translation) over time, within runs
    of consecutive fitted frames, so the avatar does not jitter where the 2D landmarks do."""
    from hf_maskdp.anonymize.tracking import smooth_series

    if sigma <= 0 or not fits:
        return fits
    valid = np.zeros(num_frames, bool)
    valid[list(fits)] = True
    translations, rotations = np.zeros((num_frames, 3)), np.zeros((num_frames, 3))
    for t, fit in fits.items():
        translations[t], rotations[t] = fit.camera.t, Rotation.from_matrix(fit.camera.R).as_rotvec()
    translations = smooth_series(translations, valid, sigma)
    rotations = smooth_series(rotations, valid, sigma)  # PnP rotations stay small: rotation vectors average well
    return {
        t: FittedFrame(
            fit.mesh,
            fit.joints,
            Camera(
                K=fit.camera.K,
                R=Rotation.from_rotvec(rotations[t]).as_matrix(),
                t=translations[t],
                width=fit.camera.width,
                height=fit.camera.height,
            ),
        )
        for t, fit in fits.items()
    }
