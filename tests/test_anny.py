"""body_model="anny". Skipped unless the optional `anny` package is installed (pip install anny): its
first load builds a ~790 MB cache (minutes), so CI does not install it."""

import numpy as np
import pytest

pytest.importorskip("anny", reason="optional extra `anny` is not installed (pip install anny)")

from hf_maskdp.anonymize.anny_body import AnnyBody, sample_phenotype  # noqa: E402
from hf_maskdp.anonymize.body import JOINT, Appearance, BodyModel  # noqa: E402
from hf_maskdp.anonymize.render import Camera, MeshRenderer  # noqa: E402


@pytest.fixture(scope="module")
def body():
    return AnnyBody(Appearance.sample(np.random.default_rng(0)))


def test_rest_pose_in_the_smpl_frame(body):
    assert isinstance(body, BodyModel)
    joints = body.rest_joints()
    assert joints[JOINT["head"], 1] > joints[JOINT["pelvis"], 1] > joints[JOINT["left_ankle"], 1]  # y up
    assert joints[JOINT["left_shoulder"], 0] > 0 > joints[JOINT["right_shoulder"], 0]  # left is +x
    assert joints[JOINT["left_foot"], 2] > joints[JOINT["left_ankle"], 2]  # toes point to +z
    mesh, posed = body.pose(np.zeros((21, 3)))
    np.testing.assert_allclose(posed, joints, atol=1e-5)
    assert mesh.faces.max() < len(mesh.vertices) and mesh.vertex_colors.shape == mesh.vertices.shape


def test_smplh_rotations_drive_the_bones(body):
    rest = body.rest_joints()
    body_pose = np.zeros((21, 3))
    body_pose[JOINT["left_shoulder"] - 1] = [0, 0, 1.0]  # raises the left arm
    body_pose[JOINT["left_knee"] - 1] = [1.2, 0, 0]  # swings the left shin back
    _, joints = body.pose(body_pose, transl=[0.1, 0.2, 3.0])
    joints = joints - [0.1, 0.2, 3.0]
    assert joints[JOINT["left_wrist"], 1] > rest[JOINT["left_wrist"], 1] + 0.3
    assert joints[JOINT["left_ankle"], 2] < rest[JOINT["left_ankle"], 2] - 0.2
    np.testing.assert_allclose(joints[JOINT["right_wrist"]], rest[JOINT["right_wrist"]], atol=1e-4)
    np.testing.assert_allclose(joints[0], rest[0], atol=1e-4)
    _, turned = body.pose(np.zeros((21, 3)), global_orient=[0, np.pi, 0])  # about the pelvis
    np.testing.assert_allclose(turned[0], rest[0], atol=1e-4)
    assert turned[JOINT["left_hip"], 0] < turned[0, 0]


def test_seeded_diverse_bodies(body):
    phenotypes = [sample_phenotype(np.random.default_rng(seed)) for seed in range(20)]
    ages = [p["age"] for p in phenotypes]
    assert min(ages) < 0.5 < max(ages) and all(0 <= v <= 1 for p in phenotypes for v in p.values())
    same = AnnyBody(body.appearance)  # the same look gives the same body, in any process
    assert same.phenotype == body.phenotype
    np.testing.assert_array_equal(same.pose(np.zeros((21, 3)))[0].vertices, body.pose(np.zeros((21, 3)))[0].vertices)
    other = AnnyBody(Appearance.sample(np.random.default_rng(1)))
    assert other.phenotype != body.phenotype
    heights = [b.rest_joints()[JOINT["head"], 1] - b.rest_joints()[JOINT["left_ankle"], 1] for b in (body, other)]
    assert abs(heights[0] - heights[1]) > 0.01


def test_renders(body):
    mesh, joints = body.pose(np.zeros((21, 3)))
    camera = Camera.look_at(eye=joints[0] + [0, 0, 3.5], target=joints[0], width=96, height=128)
    out = MeshRenderer(96, 128).render([mesh], camera)
    for joint in ("pelvis", "spine3", "head", "left_knee"):
        u, v = np.rint(camera.project(joints[JOINT[joint]][None])[0]).astype(int)
        assert out.coverage[v, u] == 1.0, joint
