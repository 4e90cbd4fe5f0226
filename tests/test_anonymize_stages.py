"""Unit tests of the anonymizer's stages: tracking, fitting, inpainting, compositing, plus a
synthetic clip of a moving rendered figure through the whole pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

cv2 = pytest.importorskip("cv2")
skimage_data = pytest.importorskip("skimage.data")

from hf_maskdp.anonymize.body import JOINT, SMPLH_PARENTS, make_body_model  # noqa: E402
from hf_maskdp.anonymize.composite import composite  # noqa: E402
from hf_maskdp.anonymize.fit import (  # noqa: E402
    LEFT_EAR,
    LEFT_FOOT,
    LEFT_INDEX,
    LEFT_PINKY,
    NOSE,
    PNP_PAIRS,
    RIGHT_EAR,
    RIGHT_FOOT,
    RIGHT_INDEX,
    RIGHT_PINKY,
    FittedFrame,
    default_intrinsics,
    fit_camera,
    fit_rotations,
    smooth_cameras,
)
from hf_maskdp.anonymize.inpaint import TemporalBackgroundInpainter, person_region  # noqa: E402
from hf_maskdp.anonymize.pose import Detection, GivenPose, empty_track  # noqa: E402
from hf_maskdp.anonymize.render import Camera, MeshRenderer, RenderOutput  # noqa: E402
from hf_maskdp.anonymize.tracking import fill_gaps, identity_seed, link_detections, smooth  # noqa: E402

SMPL_TO_CAMERA = np.diag([1.0, -1.0, -1.0])  # body facing +z, y up -> facing the camera, y down


# ----------------------------------------------------------------------------- tracking


def _track_with(detected: list[bool]):
    track = empty_track(len(detected))
    for t, seen in enumerate(detected):
        if seen:
            track.keypoints_2d[t] = 10.0 * t
            track.keypoints_3d[t] = 0.1 * t
            track.visibility[t] = 1.0
    track.detected[:] = track.valid[:] = detected
    return track


def test_fill_gaps_interpolates_short_gaps_only():
    track = fill_gaps(_track_with([1, 0, 0, 1, 0, 0, 0, 0, 1, 0]), max_gap=2)
    assert track.valid.tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 1, 1]  # the 4-frame gap stays a gap; ends held
    np.testing.assert_allclose(track.keypoints_2d[1:3, 0, 0], [10.0, 20.0])  # linear between frames 0 and 3
    assert track.detected.sum() == 3  # measured frames are still told apart from filled ones
    assert np.isnan(track.keypoints_2d[4:8]).all()


def test_fill_gaps_holds_ends_over_at_most_max_gap():
    track = fill_gaps(_track_with([0, 0, 0, 1, 0, 0, 0]), max_gap=2)
    assert track.valid.tolist() == [0, 1, 1, 1, 1, 1, 0]


def test_smooth_keeps_linear_motion_and_damps_jitter():
    track = _track_with([1] * 9)
    np.testing.assert_allclose(smooth(track, 1.0).keypoints_2d[3:-3], track.keypoints_2d[3:-3], atol=1e-4)
    jitter = track.replace(keypoints_2d=track.keypoints_2d + np.where(np.arange(9) % 2, 3.0, -3.0)[:, None, None])
    residual = smooth(jitter, 1.5).keypoints_2d - smooth(track, 1.5).keypoints_2d  # smoothing is linear
    assert np.abs(residual[3:-3]).max() < 0.5  # +-3 pixels of jitter damped


def test_region_of_a_filled_frame_includes_its_neighbours_segmentation():
    track = _track_with([1, 0, 1])
    track.keypoints_2d[:] = np.nan  # no skeleton: only the segmentation counts here
    track.person_mask = np.zeros((3, 20, 20), np.float32)
    track.person_mask[0, 2:6, 2:6] = track.person_mask[2, 12:16, 12:16] = 1.0
    region = person_region(fill_gaps(track, 1), (3, 20, 20), dilation=0.0)
    assert region[1, 2:6, 2:6].all() and region[1, 12:16, 12:16].all()


def test_identity_seed_is_reproducible_and_per_person():
    track = _track_with([1] * 4)
    assert identity_seed(0, 0, track) == identity_seed(0, 0, fill_gaps(track, 2))
    assert len({identity_seed(0, 0, track), identity_seed(0, 1, track), identity_seed(1, 0, track)}) == 3


def _person_at(x: float, y: float = 50.0) -> Detection:
    """A 20 x 60 px person whose landmarks spread around (x, y)."""
    points = np.stack([np.linspace(x - 10, x + 10, 33), np.linspace(y - 30, y + 30, 33)], 1).astype(np.float32)
    return Detection(points, np.zeros((33, 3), np.float32), np.ones(33, np.float32))


def test_link_detections_follows_each_person_whatever_the_search_order():
    # two people walking towards each other; the searches find them in either order, one is missed
    # in frame 2 and a third person enters in frame 3
    frames = [
        [_person_at(20), _person_at(80)],
        [_person_at(86), _person_at(26)],
        [_person_at(32)],
        [_person_at(74), _person_at(140), _person_at(38)],
    ]
    tracks = link_detections(frames, (4, 100, 160))
    assert len(tracks) == 3
    centres = [np.where(track.detected, track.keypoints_2d[:, :, 0].mean(1), np.nan) for track in tracks]
    np.testing.assert_allclose(centres[0], [20, 26, 32, 38])  # ordered by first frame, then left to right
    np.testing.assert_allclose(centres[1], [80, 86, np.nan, 74])  # re-found after a missed frame
    np.testing.assert_allclose(centres[2], [np.nan, np.nan, np.nan, 140])
    assert tracks[1].valid.tolist() == [True, True, False, True]  # the miss is left to fill_gaps


def test_given_pose_checks_shapes():
    with pytest.raises(ValueError, match=r"expected keypoints_2d \(2, 33, 2\)"):
        GivenPose()(
            np.zeros((2, 8, 8, 3), np.uint8),
            {"pose": {"keypoints_2d": np.zeros((3, 33, 2)), "keypoints_3d": np.zeros((2, 33, 3))}},
        )


# ----------------------------------------------------------------------------- fitting


@pytest.fixture(scope="module")
def body():
    return make_body_model("mannequin", seed=0)


def landmarks_from_joints(joints: np.ndarray) -> np.ndarray:
    """33 BlazePose-like landmarks (camera axes) placed on a posed skeleton's joints."""
    lm = np.zeros((33, 3))
    for j, k in PNP_PAIRS:
        lm[k] = joints[j]
    head = joints[JOINT["head"]]
    lm[LEFT_EAR], lm[RIGHT_EAR] = head + [0.08, 0, 0], head - [0.08, 0, 0]
    lm[NOSE] = head + [0, 0, -0.1]  # the face looks at the camera (-z)
    for wrist, elbow, index, pinky in (
        ("left_wrist", "left_elbow", LEFT_INDEX, LEFT_PINKY),
        ("right_wrist", "right_elbow", RIGHT_INDEX, RIGHT_PINKY),
    ):
        lm[index] = lm[pinky] = joints[JOINT[wrist]] + 0.3 * (joints[JOINT[wrist]] - joints[JOINT[elbow]])
    lm[LEFT_FOOT], lm[RIGHT_FOOT] = joints[JOINT["left_foot"]], joints[JOINT["right_foot"]]
    return lm


def test_fit_rotations_point_every_bone_at_its_landmarks(body):
    rng = np.random.default_rng(0)
    body_pose = np.zeros((21, 3))
    for name in ("left_shoulder", "right_shoulder", "left_elbow", "right_hip", "left_knee", "spine2"):
        body_pose[JOINT[name] - 1] = rng.normal(0, 0.4, 3)
    orient = (Rotation.from_matrix(SMPL_TO_CAMERA) * Rotation.from_rotvec([0, 0.5, 0])).as_rotvec()
    _, target = body.pose(body_pose, global_orient=orient)
    target = target - target[0]

    global_orient, fitted_pose = fit_rotations(body.rest_joints(), landmarks_from_joints(target))
    _, joints = body.pose(fitted_pose, global_orient=global_orient)
    joints = joints - joints[0]
    for child in ("left_knee", "right_knee", "left_ankle", "left_elbow", "right_elbow", "left_wrist", "right_wrist"):
        j, p = JOINT[child], SMPLH_PARENTS[JOINT[child]]
        want, got = target[j] - target[p], joints[j] - joints[p]
        angle = np.degrees(np.arccos(np.clip(want @ got / np.linalg.norm(want) / np.linalg.norm(got), -1, 1)))
        assert angle < 8, f"{child}: bone off by {angle:.1f} degrees"


def test_fit_camera_reprojects_onto_the_2d_landmarks(body):
    _, joints = body.pose(np.zeros((21, 3)), global_orient=Rotation.from_matrix(SMPL_TO_CAMERA).as_rotvec())
    joints = joints - joints[0]
    K = default_intrinsics(200, 160)
    truth = Camera(K=K, R=Rotation.from_rotvec([0.1, -0.2, 0.05]).as_matrix(), t=[0.2, 0.1, 4.0], width=200, height=160)
    keypoints = np.zeros((33, 2))
    for j, k in PNP_PAIRS:
        keypoints[k] = truth.project(joints[j : j + 1])[0]
    camera = fit_camera(joints, keypoints, np.ones(33), K, 200, 160)
    error = np.linalg.norm(camera.project(joints) - truth.project(joints), axis=1)
    assert error.max() < 0.5


def test_smooth_cameras_damps_jitter_and_keeps_steady_motion(body):
    mesh, joints = body.pose(np.zeros((21, 3)))
    K = default_intrinsics(64, 64)
    jitter = np.where(np.arange(30) % 2, 0.05, -0.05)  # metres / radians, every other frame
    fits = {
        t: FittedFrame(
            mesh,
            joints,
            Camera(
                K=K,
                R=Rotation.from_rotvec([0, 0.02 * t + jitter[t], 0]).as_matrix(),
                t=[0.1 * t, jitter[t], 3.0],
                width=64,
                height=64,
            ),
        )
        for t in range(30)
        if t != 20
    }
    smoothed = smooth_cameras(fits, 30, sigma=2.0)
    assert sorted(smoothed) == sorted(fits)  # the unfitted frame stays unfitted
    for t in (8, 9, 10):  # away from the ends of a run of fitted frames: steady motion kept, jitter gone
        camera = smoothed[t].camera
        np.testing.assert_allclose(camera.t, [0.1 * t, 0, 3.0], atol=0.005)
        np.testing.assert_allclose(Rotation.from_matrix(camera.R).as_rotvec(), [0, 0.02 * t, 0], atol=0.005)
    for t in (0, 19, 21, 29):  # at the ends of a run: jitter damped to under half, and no lag behind the motion
        assert abs(smoothed[t].camera.t[1]) < 0.025
        assert abs(smoothed[t].camera.t[0] - 0.1 * t) < 0.01  # a plain mean lags here by 0.13 m
    assert smooth_cameras(fits, 30, sigma=0.0) is fits


# ----------------------------------------------------------------------------- inpainting and compositing


def test_temporal_background_recovers_a_static_scene_exactly():
    background = skimage_data.coffee()[::4, ::4].copy()  # (100, 150, 3)
    frames = np.repeat(background[None], 6, axis=0)
    region = np.zeros(frames.shape[:3], bool)
    for t in range(6):  # a "person" walking across
        frames[t, 20:80, 10 + 20 * t : 40 + 20 * t] = 255
        region[t, 18:82, 8 + 20 * t : 42 + 20 * t] = True
    out = TemporalBackgroundInpainter()(frames, region)
    np.testing.assert_array_equal(out, np.repeat(background[None], 6, axis=0))


def test_moving_camera_falls_back_to_opencv_inpainting():
    image = skimage_data.coffee()[::2, ::2]
    frames = np.stack([image[40:140, 10 * t : 10 * t + 150] for t in range(4)])  # a pan
    region = np.zeros(frames.shape[:3], bool)
    region[:, 30:70, 50:100] = True
    out = TemporalBackgroundInpainter()(frames, region)
    np.testing.assert_array_equal(out[~region], frames[~region])  # outside the region: untouched
    median = TemporalBackgroundInpainter._temporal_median(frames, region)[0]
    assert not (out[1][region[1]] == median[region[1]]).all()  # did not paste a misaligned background


def test_composite_public_pixels_are_the_render_bit_exactly():
    rng = np.random.default_rng(0)
    coverage = np.zeros((6, 6), np.float32)
    coverage[1:5, 1:5] = 1.0
    coverage[1, 1:5] = 0.5  # antialiased edge
    coverage[0, 0] = 1.0 / 9
    render = RenderOutput(
        rng.integers(0, 256, (6, 6, 3), dtype=np.uint8),
        np.ones((6, 6), np.float32),
        coverage,
        np.where(coverage > 0, 0, -1).astype(np.int16),
    )
    frames = []
    for seed in (1, 2):
        background = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
        frame, sensitive, avatar = composite(background, render)
        np.testing.assert_array_equal(sensitive, coverage < 1)  # public only where fully covered
        np.testing.assert_array_equal(avatar, coverage > 0)
        np.testing.assert_array_equal(frame[~sensitive], render.rgb[~sensitive])
        np.testing.assert_array_equal(frame[coverage == 0], background[coverage == 0])
        frames.append(frame)
    assert (frames[0][1, 1:5] != frames[1][1, 1:5]).any()  # the edge mixes in real pixels: sensitive


@pytest.mark.parametrize("supersample", [2, 3])
def test_every_pixel_that_real_pixels_change_is_sensitive(supersample):
    """A real avatar rendered with 2x2 (the anonymizer's default) or 3x3 samples, over two different
    backgrounds: every output pixel that differs between them is marked sensitive, at every edge."""
    body = make_body_model("mannequin", seed=3)
    body_pose = np.zeros((21, 3))
    body_pose[JOINT["left_shoulder"] - 1] = [0, 0, 0.9]  # an arm out: thin parts, many edges
    mesh, _ = body.pose(body_pose, transl=[0, -0.2, 0])
    camera = Camera.look_at(eye=(0, 0.0, 2.4), target=(0, 0.0, 0), width=96, height=96)
    render = MeshRenderer(96, 96, supersample).render([mesh], camera)
    assert set(np.unique(render.coverage * supersample**2).round(4)) <= set(range(supersample**2 + 1))
    outputs = [
        composite(np.random.default_rng(seed).integers(0, 256, (96, 96, 3), np.uint8), render) for seed in (1, 2)
    ]
    (frame_a, sensitive, avatar), (frame_b, sensitive_b, _) = outputs
    np.testing.assert_array_equal(sensitive, sensitive_b)
    assert (~sensitive).sum() > 500 and (avatar & sensitive).sum() > 100  # a body, with antialiased edges
    assert not ((frame_a != frame_b).any(-1) & ~sensitive).any()


# ----------------------------------------------------------------------------- a rendered figure


def moving_figure_clip(num_frames=6, size=192):
    """A painted avatar waving its arm and stepping sideways over a (blurred) real photo."""
    body = make_body_model("mannequin", seed=3)
    renderer = MeshRenderer(size, size)
    camera = Camera.look_at(eye=(0, 0.0, 2.4), target=(0, 0.0, 0), width=size, height=size)
    # mediapipe misses small figures on busy photos (docs: DEPENDENCIES), so soften the photo
    background = cv2.resize(
        cv2.GaussianBlur(skimage_data.coffee(), (0, 0), 12), (size, size), interpolation=cv2.INTER_AREA
    )
    frames, masks = [], []
    for t in range(num_frames):
        body_pose = np.zeros((21, 3))
        body_pose[JOINT["left_shoulder"] - 1] = [0, 0, 0.3 + 0.15 * t]
        body_pose[JOINT["right_shoulder"] - 1] = [0, 0, -0.6]
        mesh, _ = body.pose(body_pose, transl=[0.04 * t - 0.1, -0.2, 0])
        render = renderer.render([mesh], camera)
        frames.append(render.over(background))
        masks.append(render.coverage > 0)
    return np.stack(frames), np.stack(masks)


def test_moving_rendered_figure_is_replaced():
    from hf_maskdp.anonymize.pipeline import AvatarAnonymizer

    pytest.importorskip("mediapipe")
    frames, figure = moving_figure_clip()
    result = AvatarAnonymizer(seed=0).anonymize_clip(frames)
    assert result.status == "ok" and result.num_people == 1
    for t in range(len(frames)):
        iou = (figure[t] & result.avatar_mask[t]).sum() / (figure[t] | result.avatar_mask[t]).sum()
        assert iou > 0.4, f"frame {t}: avatar misplaced (IoU {iou:.2f})"
    changed = np.abs(result.frames.astype(int) - frames.astype(int)).mean(-1)
    assert changed[figure].mean() > 20


_QUIET_SCRIPT = r"""
import os, sys, warnings
from hf_maskdp.anonymize.pose import quiet_mediapipe_logs
print("before", file=sys.stderr, flush=True)
with quiet_mediapipe_logs():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"W0000 00:00:1796168324.873496   24960 inference_feedback_manager.cc:114] Feedback manager\n")
    os.write(2, b"I0000 00:00:1796168324.873496   24960 gl_context.cc:357] GL version\n")
    with quiet_mediapipe_logs():  # nested: one window
        os.write(2, b"E0000 00:00:1796168324.873496   24960 calculator_graph.cc:887] a real error\n")
    warnings.warn("our own warning")
    print("our own line", file=sys.stderr)
print("\rprogress 100%", file=sys.stderr)
"""


def test_mediapipe_log_lines_are_dropped_and_everything_else_is_kept():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _QUIET_SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "absl::InitializeLog" not in err and "inference_feedback_manager" not in err and "gl_context" not in err
    for kept in ("before", "a real error", "UserWarning: our own warning", "our own line", "progress 100%"):
        assert kept in err, (kept, err)
