"""body_model="smplh": a synthetic SMPL-H .npz (the real keys and shapes, tube geometry) loaded by smplx."""

import numpy as np
import pytest

from hf_maskdp.anonymize.body import JOINT, SMPLH_PARENTS, Appearance, BodyModel, MannequinBody
from hf_maskdp.anonymize.render import Camera, MeshRenderer
from hf_maskdp.anonymize.smplh import SMPLH_URL, SMPLHBody, check_model_file, resolve_model_path

NUM_VERTICES, NUM_BETAS = 6890, 16


def smplh_skeleton() -> tuple[np.ndarray, list[int]]:
    """52 rest joints (22 body joints from the mannequin, 3 joints for each of 5 fingers per hand)."""
    body = MannequinBody(Appearance()).rest_joints().astype(np.float64)
    joints, parents = list(body), list(SMPLH_PARENTS)
    for wrist, elbow in ((JOINT["left_wrist"], JOINT["left_elbow"]), (JOINT["right_wrist"], JOINT["right_elbow"])):
        forearm = (body[wrist] - body[elbow]) / np.linalg.norm(body[wrist] - body[elbow])
        for finger in range(5):
            parent = wrist
            for knuckle in range(3):
                joints.append(body[wrist] + forearm * 0.03 * (knuckle + 1) + np.array([0, 0, 0.015 * (finger - 2)]))
                parents.append(parent)
                parent = len(joints) - 1
    return np.array(joints), parents


def tube(start, end, radius, sides=8, rings=6):
    """Vertices and faces of an open cylinder from `start` to `end`."""
    axis = end - start
    helper = np.array([1.0, 0, 0]) if abs(axis[0]) < 0.9 * np.linalg.norm(axis) else np.array([0, 1.0, 0])
    u = np.cross(axis, helper)
    u /= np.linalg.norm(u)
    v = np.cross(axis, u) / np.linalg.norm(axis)
    angles = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    circle = radius * (np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v)
    vertices = np.concatenate([start + t * axis + circle for t in np.linspace(0, 1, rings)])
    faces = []
    for ring in range(rings - 1):
        for side in range(sides):
            a, b = ring * sides + side, ring * sides + (side + 1) % sides
            faces += [[a, b, b + sides], [a, b + sides, a + sides]]
    return vertices, np.array(faces)


def write_synthetic_smplh(path, num_joints=52, drop=()):
    """An .npz with the keys and shapes of the Extended SMPL+H release: one tube per bone, each
    skinned rigidly to the joint that turns it, a vertex at each joint (the joint regressor), and
    a height-like first shape direction."""
    joints, parents = smplh_skeleton()
    vertices, faces, weights = [joints], [], [np.eye(52)]  # joint vertices come first: J_regressor = I
    count = 52
    for child in range(1, 52):
        parent = parents[child]
        radius = 0.06 if child < 22 else 0.008
        tube_vertices, tube_faces = tube(joints[parent], joints[child], radius)
        vertices.append(tube_vertices)
        faces.append(tube_faces + count)
        weights.append(np.tile(np.eye(52)[parent], (len(tube_vertices), 1)))
        count += len(tube_vertices)
    padding = NUM_VERTICES - count  # unused vertices at the pelvis, so that vertex ids match SMPL-H's
    vertices.append(np.tile(joints[0], (padding, 1)))
    weights.append(np.tile(np.eye(52)[0], (padding, 1)))
    v_template = np.concatenate(vertices)
    shapedirs = np.random.default_rng(0).normal(0, 0.002, (NUM_VERTICES, 3, NUM_BETAS))
    shapedirs[:, :, 0] = 0
    shapedirs[:, 1, 0] = 0.05 * (v_template[:, 1] - v_template[:, 1].min())  # beta 0 stretches the body up
    kintree = np.array([parents, range(52)], dtype=np.int64)
    kintree[0, 0] = 4294967295  # as in the release (uint32 -1)
    data = dict(
        v_template=v_template,
        shapedirs=shapedirs,
        posedirs=np.zeros((NUM_VERTICES, 3, 9 * 51)),
        J_regressor=np.eye(52, NUM_VERTICES)[:num_joints],
        weights=np.concatenate(weights),
        kintree_table=kintree,
        f=np.concatenate(faces).astype(np.uint32),
        hands_componentsl=np.eye(45),
        hands_componentsr=np.eye(45),
        hands_meanl=np.zeros(45),
        hands_meanr=np.zeros(45),
    )
    np.savez(path, **{key: value for key, value in data.items() if key not in drop})
    return path


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_synthetic_smplh(tmp_path_factory.mktemp("smplh") / "SMPLH_NEUTRAL.npz")


@pytest.fixture(scope="module")
def body(model_path):
    return SMPLHBody(Appearance(), model_path=model_path)


def test_loads_through_smplx_with_the_smplh_skeleton(body, model_path):
    assert isinstance(body, BodyModel)
    expected, _ = smplh_skeleton()
    np.testing.assert_allclose(body.rest_joints(), expected[:22], atol=1e-5)
    mesh, joints = body.pose(np.zeros((21, 3)))
    assert mesh.vertices.shape == (NUM_VERTICES, 3) and mesh.vertex_colors.shape == (NUM_VERTICES, 3)
    np.testing.assert_allclose(joints, body.rest_joints(), atol=1e-6)
    # a folder with SMPLH_NEUTRAL.npz works too
    assert resolve_model_path(model_path.parent) == model_path


def test_pose_follows_smplx_conventions(body):
    rest = body.rest_joints()
    body_pose = np.zeros((21, 3), np.float32)
    body_pose[JOINT["left_shoulder"] - 1] = [0, 0, 1.0]  # +z turns the +x arm upwards
    mesh, joints = body.pose(body_pose, transl=[0.1, 0.2, 3.0])
    wrist = JOINT["left_wrist"]
    assert joints[wrist, 1] - 0.2 > rest[wrist, 1] + 0.3
    np.testing.assert_allclose(joints[JOINT["right_wrist"]], rest[JOINT["right_wrist"]] + [0.1, 0.2, 3.0], atol=1e-5)
    np.testing.assert_allclose(joints[0], rest[0] + [0.1, 0.2, 3.0], atol=1e-5)  # pelvis lands at rest + transl
    # global_orient turns about the pelvis: a half turn about y swaps left and right
    _, turned = body.pose(np.zeros((21, 3)), global_orient=[0, np.pi, 0])
    np.testing.assert_allclose(turned[0], rest[0], atol=1e-5)
    assert turned[JOINT["left_hip"], 0] < turned[0, 0] < turned[JOINT["right_hip"], 0]


def test_shape_and_colours_come_from_the_appearance(model_path, body):
    tall = SMPLHBody(Appearance(shape=(2.0,) + (0.0,) * 9), model_path=model_path)
    assert tall.rest_joints()[JOINT["head"], 1] > body.rest_joints()[JOINT["head"], 1] + 0.05
    look = Appearance.sample(np.random.default_rng(3))
    first, again = SMPLHBody(look, model_path=model_path), SMPLHBody(look, model_path=model_path)
    np.testing.assert_array_equal(
        first.pose(np.zeros((21, 3)))[0].vertex_colors, again.pose(np.zeros((21, 3)))[0].vertex_colors
    )
    colors = first.pose(np.zeros((21, 3)))[0].vertex_colors
    assert (
        np.isclose(colors, look.shirt, atol=1e-6).all(1).any() and np.isclose(colors, look.skin, atol=1e-6).all(1).any()
    )


def test_renders_with_mesh_renderer(body):
    mesh, joints = body.pose(np.zeros((21, 3)), transl=[0, 0, 0])
    camera = Camera.look_at(eye=joints[0] + [0, 0, 3.0], target=joints[0], width=96, height=128)
    out = MeshRenderer(96, 128).render([mesh], camera)
    for joint in ("pelvis", "spine3", "left_knee", "right_knee"):
        u, v = np.rint(camera.project(joints[JOINT[joint]][None])[0]).astype(int)
        assert out.coverage[v, u] == 1.0 and out.person_index[v, u] == 0, joint
    u, v = np.rint(camera.project(joints[JOINT["spine3"]][None])[0]).astype(int)
    shirt = np.array(body.appearance.shirt) * 255
    assert np.abs(out.rgb[v, u] - shirt).max() < 0.6 * 255  # shaded shirt colour, not background
    assert 0.02 < out.coverage.mean() < 0.5


def test_missing_file_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("SMPLH_MODEL_PATH", raising=False)
    with pytest.raises(FileNotFoundError, match=SMPLH_URL):
        SMPLHBody(Appearance())
    with pytest.raises(FileNotFoundError, match="Extended SMPL\\+H"):
        SMPLHBody(Appearance(), model_path=tmp_path / "nowhere.npz")
    with pytest.raises(FileNotFoundError, match="SMPLH_NEUTRAL.npz"):
        SMPLHBody(Appearance(), model_path=tmp_path)  # a folder without the file


def test_malformed_files_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"lacks \['shapedirs'\].*hands_meanr"):
        check_model_file(write_synthetic_smplh(tmp_path / "a.npz", drop=("shapedirs",)))
    with pytest.raises(ValueError, match="J_regressor has 24 joints"):
        check_model_file(write_synthetic_smplh(tmp_path / "b.npz", num_joints=24))
    (tmp_path / "c.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read SMPL-H model file"):
        SMPLHBody(Appearance(), model_path=tmp_path / "c.npz")
