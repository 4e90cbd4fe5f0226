import numpy as np
import pytest

from hf_maskdp.anonymize.body import (
    JOINT,
    MOUTH_COLOR,
    PUPIL_COLOR,
    SMPLH_BODY_JOINTS,
    SMPLH_PARENTS,
    Appearance,
    BodyModel,
    Mesh,
    make_body_model,
)


@pytest.fixture(scope="module")
def body():
    return make_body_model("mannequin", appearance=Appearance())


def axis_angle_pose(**rotations):
    body_pose = np.zeros((21, 3), np.float32)
    for joint, rotation in rotations.items():
        body_pose[JOINT[joint] - 1] = rotation  # body_pose excludes the pelvis
    return body_pose


def test_skeleton_is_smplh_body():
    assert len(SMPLH_BODY_JOINTS) == len(SMPLH_PARENTS) == 22
    assert SMPLH_PARENTS[JOINT["left_wrist"]] == JOINT["left_elbow"]
    assert all(parent < child for child, parent in enumerate(SMPLH_PARENTS))


def test_rest_pose_is_upright_and_facing_plus_z(body):
    assert isinstance(body, BodyModel)
    joints = body.rest_joints()
    assert joints.shape == (22, 3)
    assert joints[JOINT["head"], 1] > joints[JOINT["pelvis"], 1] > joints[JOINT["left_ankle"], 1]
    assert joints[JOINT["left_shoulder"], 0] > 0 > joints[JOINT["right_shoulder"], 0]  # left is +x
    mesh, posed = body.pose(np.zeros((21, 3)))
    np.testing.assert_allclose(posed, joints, atol=1e-5)
    assert mesh.vertices.shape == mesh.vertex_colors.shape and mesh.faces.dtype == np.int32
    assert mesh.faces.max() < len(mesh.vertices)
    assert 0 <= mesh.vertex_colors.min() and mesh.vertex_colors.max() <= 1
    # toes stick out to the front (+z): the body faces +z
    assert joints[JOINT["left_foot"], 2] > joints[JOINT["left_ankle"], 2]


def test_raising_the_left_arm_moves_the_left_wrist_and_its_skin_up(body):
    rest_mesh, rest = body.pose(np.zeros((21, 3)))
    # rotating about +z turns the +x-pointing arm towards +y
    mesh, joints = body.pose(axis_angle_pose(left_shoulder=[0, 0, 1.0]))
    wrist, elbow = JOINT["left_wrist"], JOINT["left_elbow"]
    assert joints[wrist, 1] > rest[wrist, 1] + 0.3
    assert joints[elbow, 1] > rest[elbow, 1] + 0.1
    np.testing.assert_allclose(joints[JOINT["right_wrist"]], rest[JOINT["right_wrist"]], atol=1e-6)
    np.testing.assert_allclose(joints[JOINT["left_shoulder"]], rest[JOINT["left_shoulder"]], atol=1e-6)
    # the skin around the wrist travels with it
    near_wrist = np.linalg.norm(rest_mesh.vertices - rest[wrist], axis=1) < 0.05
    assert near_wrist.sum() > 10
    moved = mesh.vertices[near_wrist].mean(0) - rest_mesh.vertices[near_wrist].mean(0)
    np.testing.assert_allclose(moved, joints[wrist] - rest[wrist], atol=0.02)
    # the right leg's skin does not move
    right_knee = np.linalg.norm(rest_mesh.vertices - rest[JOINT["right_knee"]], axis=1) < 0.08
    np.testing.assert_allclose(mesh.vertices[right_knee], rest_mesh.vertices[right_knee], atol=1e-5)


def test_bending_the_knee_moves_only_the_lower_leg(body):
    _, rest = body.pose(np.zeros((21, 3)))
    _, joints = body.pose(axis_angle_pose(left_knee=[1.2, 0, 0]))
    ankle = JOINT["left_ankle"]
    assert joints[ankle, 2] < rest[ankle, 2] - 0.2  # +x rotation swings the shin backwards (-z)
    np.testing.assert_allclose(joints[: JOINT["left_knee"] + 1], rest[: JOINT["left_knee"] + 1], atol=1e-6)


def test_global_orient_turns_about_the_pelvis_and_transl_moves(body):
    rest = body.rest_joints()
    transl = np.array([0.5, 0.2, 3.0])
    turn = np.array([0.0, np.pi / 2, 0.0])  # a quarter turn about +y: facing +z -> facing +x
    mesh, joints = body.pose(np.zeros((21, 3)), global_orient=turn, transl=transl)
    pelvis = JOINT["pelvis"]
    np.testing.assert_allclose(joints[pelvis], rest[pelvis] + transl, atol=1e-5)
    rotation = np.array([[0, 0, 1], [0, 1, 0], [-1, 0, 0]])  # Ry(90 degrees)
    expected = (rest - rest[pelvis]) @ rotation.T + rest[pelvis] + transl
    np.testing.assert_allclose(joints, expected, atol=1e-5)
    rest_mesh, _ = body.pose(np.zeros((21, 3)))
    np.testing.assert_allclose(
        mesh.vertices, (rest_mesh.vertices - rest[pelvis]) @ rotation.T + rest[pelvis] + transl, atol=1e-4
    )


def test_fast_skinning_matches_the_mannequin_package():
    """`pose` blends each vertex's joint matrices once (`_blend_skinning`); mannequin-x's own skinning gives
    the same vertices, for a reshaped body in random poses."""
    body = make_body_model("mannequin", appearance=Appearance.sample(np.random.default_rng(5)))
    assert body._skinning is not None  # the fast path is taken with the installed mannequin-x
    rng = np.random.default_rng(0)
    for _ in range(3):
        body_pose, orient = rng.normal(0, 0.5, (21, 3)).astype(np.float32), rng.normal(0, 1, 3).astype(np.float32)
        mesh, _ = body.pose(body_pose, global_orient=orient, transl=[0.1, -0.2, 0.3])
        parameters = {**body._model.rest_pose(), "body_pose": body_pose, "pelvis_rotation": orient}
        parameters["global_translation"] = np.array([0.1, -0.2, 0.3], np.float32)
        np.testing.assert_allclose(mesh.vertices, body._model.vertices(parameters), atol=1e-5)


def test_appearance_sampling_is_seeded_and_varied():
    a = Appearance.sample(np.random.default_rng(3))
    assert a == Appearance.sample(np.random.default_rng(3))
    looks = [Appearance.sample(np.random.default_rng(seed)) for seed in range(12)]
    assert len({look.skin for look in looks}) > 6 and len({look.shirt for look in looks}) > 6
    assert all(look.shirt != look.trousers for look in looks)
    for look in looks:
        for color in (look.skin, look.shirt, look.trousers, look.shoes, look.hair):
            assert len(color) == 3 and all(0 <= c <= 1 for c in color)


def test_body_shape_changes_height():
    tall = make_body_model(appearance=Appearance(shape=(2.0,) + (0.0,) * 9)).rest_joints()
    short = make_body_model(appearance=Appearance(shape=(-2.0,) + (0.0,) * 9)).rest_joints()
    head, ankle = JOINT["head"], JOINT["left_ankle"]
    assert (tall[head, 1] - tall[ankle, 1]) > (short[head, 1] - short[ankle, 1]) + 0.1


def test_painted_like_a_clothed_person_with_a_face():
    look = Appearance(
        skin=(0.8, 0.6, 0.5), shirt=(0.9, 0.1, 0.1), trousers=(0.1, 0.1, 0.9), hair=(0.8, 0.65, 0.4), long_sleeves=False
    )
    body = make_body_model(appearance=look)
    mesh, joints = body.pose(np.zeros((21, 3)))
    colors, vertices = mesh.vertex_colors, mesh.vertices

    def color_near(joint, radius=0.06):
        near = np.linalg.norm(vertices - joints[JOINT[joint]], axis=1) < radius
        values, counts = np.unique(colors[near].round(3), axis=0, return_counts=True)
        return tuple(values[counts.argmax()])

    np.testing.assert_allclose(color_near("spine2", 0.15), look.shirt, atol=1e-3)
    np.testing.assert_allclose(color_near("left_knee", 0.1), look.trousers, atol=1e-3)
    np.testing.assert_allclose(color_near("left_wrist"), look.skin, atol=1e-3)  # short sleeves
    # a face: dark pupils and a mouth only on the front of the head, hair on the back
    head = vertices[:, 1] > joints[JOINT["neck"], 1] + 0.05
    for feature in (PUPIL_COLOR, MOUTH_COLOR):
        painted = np.all(np.isclose(colors, feature, atol=1e-3), axis=1)
        assert painted.sum() > 5 and (vertices[painted, 2] > joints[JOINT["head"], 2] + 0.05).all()
    back = head & (vertices[:, 2] < joints[JOINT["head"], 2] - 0.08)
    assert np.mean(np.all(np.isclose(colors[back], look.hair, atol=1e-3), axis=1)) > 0.8


def test_bad_input_is_a_clear_error(body):
    with pytest.raises(ValueError, match="body_pose must be"):
        body.pose(np.zeros((23, 3)))
    with pytest.raises(ValueError, match="unknown body model"):
        make_body_model("smurf")
    with pytest.raises(ValueError, match="vertex_colors"):
        Mesh(np.zeros((3, 3)), np.zeros((1, 3)), np.zeros((2, 3)))


def test_seeded_body_models_differ_by_seed():
    a, b = make_body_model(seed=1), make_body_model(seed=2)
    assert a.appearance != b.appearance
    assert make_body_model(seed=1).appearance == a.appearance
