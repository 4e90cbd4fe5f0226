import numpy as np
import pytest

from hf_maskdp.anonymize.body import JOINT, make_body_model
from hf_maskdp.data import (
    ACTION_NAMES,
    ACTIONS,
    BACKGROUND_NAMES,
    build_action_dataset,
    generate_clip,
    save_action_dataset,
)
from hf_maskdp.data.actions import posture_to_body_pose
from hf_maskdp.data.backgrounds import choose_background
from hf_maskdp.video import decode_mask, load_video_frames

TINY = dict(num_train=4, num_test=2, num_frames=6, size=64, progress=False)


@pytest.fixture(scope="module")
def tiny():
    return build_action_dataset(seed=5, **TINY)


def test_columns_labels_and_ground_truth(tiny):
    assert set(tiny) == {"train", "test"} and (tiny["train"].num_rows, tiny["test"].num_rows) == (4, 2)
    train = tiny["train"]
    assert train.features["label"].names == list(ACTION_NAMES)
    assert sorted(train["label"]) == [0, 1, 2, 3]  # balanced: one of each of the first labels
    for row in train:
        frames = load_video_frames(row["video"])
        mask = decode_mask(row["person_mask"])
        assert frames.shape == (6, 64, 64, 3) and mask.shape == (6, 64, 64)
        assert row["background"] in BACKGROUND_NAMES and 0 <= row["identity"] < 8
        assert np.asarray(row["body_pose"]).shape == (6, 21, 3)
        joints = np.asarray(row["joints_2d"])
        for frame_mask, frame_joints in zip(mask, joints):
            rows_with_person = np.nonzero(frame_mask.any(1))[0]
            assert rows_with_person.max() - rows_with_person.min() + 1 >= 32  # at least half the frame tall
            u, v = np.rint(frame_joints[JOINT["spine2"]]).astype(int)
            assert frame_mask[v, u]  # the true 2D joints lie on the true person


def test_deterministic_for_a_seed(tiny):
    again = build_action_dataset(seed=5, **TINY)
    other = build_action_dataset(seed=6, **TINY)
    for a, b, c in zip(tiny["train"], again["train"], other["train"]):
        np.testing.assert_array_equal(load_video_frames(a["video"]), load_video_frames(b["video"]))
        assert a["person_mask"] == b["person_mask"] and a["identity"] == b["identity"] and a["label"] == b["label"]
        assert not np.array_equal(load_video_frames(a["video"]), load_video_frames(c["video"]))


def test_backgrounds_are_informative_but_not_decisive():
    rng = np.random.default_rng(0)
    for label in range(len(ACTION_NAMES)):
        picks = [choose_background(label, rng, 0.6) for _ in range(2000)]
        preferred = np.mean([p == BACKGROUND_NAMES[label] for p in picks])
        assert 0.6 < preferred < 0.7  # 0.6 + 0.4 / 8 = 0.65
        assert set(picks) == set(BACKGROUND_NAMES)  # every scene occurs with every action


def test_every_action_moves_and_actions_differ():
    body = make_body_model(seed=0)
    rest = body.rest_joints()
    trajectories = {}
    for name, action in ACTIONS.items():
        trajectory = []
        for phase in np.linspace(0, 2 * np.pi, 9):
            _, joints = body.pose(posture_to_body_pose(action(phase, 1.0), rest))
            trajectory.append(joints)
        trajectories[name] = np.stack(trajectory)
        assert np.ptp(trajectories[name], axis=0).max() > 0.2, f"{name} barely moves"
    names = list(trajectories)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            # some joint is, on average over the cycle, far apart in the two actions
            apart = np.linalg.norm(trajectories[a] - trajectories[b], axis=-1).mean(0).max()
            assert apart > 0.2, f"{a} and {b} look alike"
    head = JOINT["head"]
    wave, reach = trajectories["wave"], trajectories["reach_up"]
    assert (wave[:, JOINT["right_wrist"], 1] > wave[:, head, 1]).all()  # the waving hand stays up
    assert (wave[:, JOINT["left_wrist"], 1] < wave[:, JOINT["pelvis"], 1] + 0.1).all()
    assert (reach[4, [JOINT["left_wrist"], JOINT["right_wrist"]], 1] > reach[4, head, 1] + 0.3).all()  # mid-cycle
    squat = trajectories["squat"]  # hips-to-ankles height shrinks at the bottom of the squat
    legs = squat[:, JOINT["pelvis"], 1] - squat[:, JOINT["left_ankle"], 1]
    assert legs[4] < legs[0] - 0.3


def test_aiming_reaches_the_requested_direction():
    body = make_body_model(seed=0)
    posture = ACTIONS["clap"](1.0, 1.0)
    _, joints = body.pose(posture_to_body_pose(posture, body.rest_joints()))
    for bone, child in (("left_shoulder", "left_elbow"), ("right_elbow", "right_wrist")):
        direction = joints[JOINT[child]] - joints[JOINT[bone]]
        np.testing.assert_allclose(direction / np.linalg.norm(direction), posture.aim[bone], atol=1e-4)


def test_save_writes_a_dataset_and_a_video_folder(tiny, tmp_path):
    from datasets import load_from_disk

    save_action_dataset(tiny, tmp_path)
    reloaded = load_from_disk(str(tmp_path / "dataset"))
    assert reloaded["test"]["identity"] == tiny["test"]["identity"]
    metadata = (tmp_path / "videos" / "test" / "metadata.csv").read_text().splitlines()
    assert metadata[0] == "file_name,label,identity,background" and len(metadata) == 3
    first = metadata[1].split(",")
    assert first[1] == ACTION_NAMES[tiny["test"][0]["label"]]
    frames = load_video_frames(str(tmp_path / "videos" / "test" / first[0]))
    np.testing.assert_array_equal(frames, load_video_frames(tiny["test"][0]["video"]))


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="background_bias"):
        build_action_dataset(1, 1, background_bias=1.5, progress=False)
    with pytest.raises(ValueError, match="size >= 32"):
        build_action_dataset(1, 1, size=8, progress=False)


def test_mediapipe_finds_the_generated_people():
    """The anonymizer runs real pose estimation on these clips: the people must be detectable."""
    mediapipe = pytest.importorskip("mediapipe")
    from hf_maskdp.data.build import ActionDatasetConfig, ClipGenerator

    generator = ClipGenerator(ActionDatasetConfig(num_frames=8, size=112, seed=2))
    found = total = 0
    for label in range(len(ACTION_NAMES)):
        clip = generator.clip("test", label, label)
        with mediapipe.solutions.pose.Pose(model_complexity=1) as pose:
            for frame, joints in zip(clip["frames"], clip["joints_2d"]):
                result = pose.process(frame)
                total += 1
                if result.pose_landmarks is not None:
                    nose = result.pose_landmarks.landmark[0]
                    # the detection is of our person: its nose lies near the true head joint
                    found += np.linalg.norm([nose.x * 112, nose.y * 112] - joints[JOINT["head"]]) < 15
    assert found / total >= 0.9


def test_generate_clip_gives_one_row():
    clip = generate_clip(seed=3, label="wave", num_frames=4, size=48)
    assert clip["label"] == 0 and clip["label_name"] == "wave"
    assert clip["video"].shape == (4, 48, 48, 3) and clip["video"].dtype == np.uint8
    assert clip["person_mask"].shape == (4, 48, 48) and clip["person_mask"].any()
    with pytest.raises(ValueError, match="unknown action"):
        generate_clip(label="moonwalk")


def test_public_corpus_is_disjoint_from_the_private_data():
    """The pretraining corpus shares no action, scene or person with the private data."""
    from hf_maskdp.data.actions import PUBLIC_ACTION_NAMES
    from hf_maskdp.data.backgrounds import PUBLIC_BACKGROUND_NAMES
    from hf_maskdp.data.build import identity_appearance
    from hf_maskdp.pretrain import PretrainConfig, public_corpus_config

    assert not set(PUBLIC_ACTION_NAMES) & set(ACTION_NAMES) and len(PUBLIC_ACTION_NAMES) == 6
    assert not set(PUBLIC_BACKGROUND_NAMES) & set(BACKGROUND_NAMES)
    corpus = public_corpus_config(PretrainConfig())
    assert corpus.action_names == PUBLIC_ACTION_NAMES and set(corpus.scenes) == set(PUBLIC_BACKGROUND_NAMES)
    private_looks = {repr(identity_appearance(i, 0, pool=0)) for i in range(8)}
    public_looks = {repr(identity_appearance(i, 0, pool=corpus.identity_pool)) for i in range(corpus.num_identities)}
    assert corpus.identity_pool != 0 and not private_looks & public_looks
    data = build_action_dataset(
        seed=0,
        vocabulary="public",
        scenes=PUBLIC_BACKGROUND_NAMES,
        identity_pool=1,
        **{**TINY, "num_train": 6, "num_test": 1},
    )
    assert data["train"].features["label"].names == list(PUBLIC_ACTION_NAMES)
    assert set(data["train"]["background"]) <= set(PUBLIC_BACKGROUND_NAMES)


def test_every_public_action_moves_the_body():
    from hf_maskdp.data.actions import PUBLIC_ACTIONS

    rest = make_body_model().rest_joints()
    for name, action in PUBLIC_ACTIONS.items():
        poses = [posture_to_body_pose(action(phase, 1.0), rest) for phase in np.linspace(0, 2 * np.pi, 9)]
        assert np.ptp(np.stack(poses), axis=0).max() > 0.3, name  # some joint turns by > 0.3 rad over a repetition


def test_one_scene_regime_and_framing():
    """The `ntu` regime films every action in one scene; people fill the asked share of the frame."""
    data = build_action_dataset(seed=1, scenes=("living_room",), background_bias=0.0, person_height=(0.85, 0.9), **TINY)
    assert set(data["train"]["background"]) == {"living_room"}
    for row in data["train"]:
        rows_with_person = np.nonzero(decode_mask(row["person_mask"]).any(2))[1]
        assert rows_with_person.max() - rows_with_person.min() + 1 >= 0.7 * 64


@pytest.mark.parametrize(
    "bad",
    [
        dict(scenes=("nowhere",)),
        dict(scenes=()),
        dict(vocabulary="secret"),
        dict(person_height=(0.9, 0.5)),
        dict(repetitions=(0, 1)),
    ],
)
def test_bad_generator_settings_are_refused(bad):
    from hf_maskdp.data.build import ActionDatasetConfig

    with pytest.raises(ValueError):
        ActionDatasetConfig(**bad)
