"""Build the embedded action dataset: rendered people performing actions in real scenes.

Every clip is a pure function of `(seed, split, index)`, so a dataset is reproducible
bit for bit. The "real" people here are rendered too (no real action video can be
downloaded), but the anonymizer treats them as real: it runs pose estimation on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hf_maskdp.anonymize.body import JOINT, Appearance, make_body_model
from hf_maskdp.anonymize.render import Camera, MeshRenderer
from hf_maskdp.data.actions import ACTION_NAMES, ACTIONS, PUBLIC_ACTIONS, posture_to_body_pose
from hf_maskdp.data.backgrounds import BACKGROUND_NAMES, PUBLIC_BACKGROUND_NAMES, background_crop, choose_background

SPLITS = {"train": 0, "test": 1, "validation": 2}  # each split draws from its own seed


@dataclass
class ActionDatasetConfig:
    """What the generator draws. The defaults are the original small benchmark; `hf_maskdp.quickstart`
    sets the regimes it measures (one scene for every action, or scenes that hint at the label)."""

    num_frames: int = 16
    size: int = 112
    fps: float = 8.0
    num_identities: int = 8
    identity_pool: int = 0  # identities are drawn from pool `identity_pool`: 0 private, others disjoint
    background_bias: float = 0.6  # P(an action's preferred scene); otherwise any scene
    scenes: tuple[str, ...] = BACKGROUND_NAMES  # the scenes clips are shot in
    vocabulary: str = "private"  # "private": ACTIONS; "public": PUBLIC_ACTIONS (disjoint, for pretraining)
    person_height: tuple[float, float] = (0.55, 0.8)  # fraction of the frame height the person fills
    repetitions: tuple[float, float] = (0.7, 1.5)  # action repetitions per clip (speed)
    seed: int = 0

    def __post_init__(self):
        if self.num_frames < 1 or self.size < 32:
            raise ValueError(f"need num_frames >= 1 and size >= 32, got {self.num_frames} and {self.size}")
        if not 0 <= self.background_bias <= 1:
            raise ValueError(f"background_bias must be a probability, got {self.background_bias}")
        if self.num_identities < 1:
            raise ValueError(f"num_identities must be >= 1, got {self.num_identities}")
        if self.vocabulary not in ("private", "public"):
            raise ValueError(f"vocabulary={self.vocabulary!r}: choose 'private' or 'public'")
        known = BACKGROUND_NAMES + PUBLIC_BACKGROUND_NAMES
        if not self.scenes or set(self.scenes) - set(known):
            raise ValueError(f"scenes must be a non-empty subset of {known}, got {self.scenes!r}")
        self.scenes = tuple(self.scenes)
        self.person_height, self.repetitions = tuple(self.person_height), tuple(self.repetitions)
        if not 0.2 <= self.person_height[0] <= self.person_height[1] <= 1.0:
            raise ValueError(f"person_height={self.person_height}: need 0.2 <= low <= high <= 1")
        if not 0 < self.repetitions[0] <= self.repetitions[1]:
            raise ValueError(f"repetitions={self.repetitions}: need 0 < low <= high")

    @property
    def actions(self) -> dict:
        return ACTIONS if self.vocabulary == "private" else PUBLIC_ACTIONS

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(self.actions)


def identity_appearance(identity: int, seed: int = 0, pool: int = 0) -> Appearance:
    """The look (skin, clothes, hair, body shape) of identity `identity` in pool `pool` of `seed`;
    pools are disjoint populations (the private data is pool 0)."""
    key = [seed, 1_000_003, identity] if pool == 0 else [seed, 1_000_003, identity, pool]
    return Appearance.sample(np.random.default_rng(key))


class ClipGenerator:
    """Renders clips; holds one renderer and one body model per identity."""

    def __init__(self, config: ActionDatasetConfig):
        self.config = config
        self.renderer = MeshRenderer(config.size, config.size)
        self._bodies = {}

    def body(self, identity: int):
        if identity not in self._bodies:
            appearance = identity_appearance(identity, self.config.seed, self.config.identity_pool)
            self._bodies[identity] = make_body_model(appearance=appearance)
        return self._bodies[identity]

    def clip(self, split: str, index: int, label: int) -> dict:
        config = self.config
        key = (
            [config.seed, SPLITS[split], index]
            if config.identity_pool == 0
            else [config.seed, SPLITS[split], index, config.identity_pool]
        )
        rng = np.random.default_rng(key)
        identity = int(rng.integers(config.num_identities))
        background = choose_background(label, rng, config.background_bias, config.scenes)
        cycles = rng.uniform(*config.repetitions)  # repetitions per clip: the speed
        amplitude = rng.uniform(0.7, 1.0)
        phase0 = rng.uniform(0, 2 * np.pi)
        body_turn = rng.uniform(-0.2, 0.2)  # radians about the vertical

        body = self.body(identity)
        rest_joints = body.rest_joints()
        camera, ankle_height = self._camera(body, rng)
        scene = background_crop(background, config.size, rng)

        frames, masks, body_poses, joints_2d = [], [], [], []
        for t in range(config.num_frames):
            phase = phase0 + 2 * np.pi * cycles * t / config.num_frames
            posture = config.actions[config.action_names[label]](phase, amplitude)
            body_pose = posture_to_body_pose(posture, rest_joints)
            mesh, joints = body.pose(body_pose, global_orient=(0.0, body_turn, 0.0))
            # keep the lower foot on the ground (squats sink, jumps lift)
            lift = ankle_height + posture.jump - joints[[JOINT["left_ankle"], JOINT["right_ankle"]], 1].min()
            mesh.vertices[:, 1] += lift
            joints[:, 1] += lift
            render = self.renderer.render([mesh], camera)
            frames.append(render.over(scene))
            masks.append(render.coverage > 0)
            body_poses.append(body_pose)
            joints_2d.append(camera.project(joints).astype(np.float32))
        return {
            "frames": np.stack(frames),
            "person_mask": np.stack(masks),
            "label": label,
            "identity": identity,
            "background": background,
            "body_pose": np.stack(body_poses),
            "joints_2d": np.stack(joints_2d),
        }

    def _camera(self, body, rng) -> tuple[Camera, float]:
        """A camera in front of the body (yaw +-35 deg) framing it at 55-80 % of the image height."""
        mesh, joints = body.pose(np.zeros((21, 3)))
        top, bottom = mesh.vertices[:, 1].max(), mesh.vertices[:, 1].min()
        fov = 50.0
        fill = rng.uniform(*self.config.person_height)
        distance = (top - bottom) / fill / (2 * np.tan(np.radians(fov) / 2))
        yaw, elevation = np.radians(rng.uniform(-35, 35)), np.radians(rng.uniform(-5, 15))
        target = np.array([rng.uniform(-0.12, 0.12), (top + bottom) / 2 + rng.uniform(-0.08, 0.08), 0.0])
        eye = target + distance * np.array(
            [np.sin(yaw) * np.cos(elevation), np.sin(elevation), np.cos(yaw) * np.cos(elevation)]
        )
        size = self.config.size
        camera = Camera.look_at(eye, target, size, size, fov_y_degrees=fov)
        return camera, float(joints[[JOINT["left_ankle"], JOINT["right_ankle"]], 1].min())


def generate_clip(seed: int = 0, label: int | str | None = None, num_frames: int = 16, size: int = 112) -> dict:
    """One clip as a row: `video` (uint8 frames (T, H, W, 3)), `person_mask` (bool (T, H, W)),
    `label`, `label_name`, `identity`, `background`, `body_pose`, `joints_2d`."""
    if isinstance(label, str):
        if label not in ACTION_NAMES:
            raise ValueError(f"unknown action {label!r}; choose one of {list(ACTION_NAMES)}")
        label = ACTION_NAMES.index(label)
    if label is None:
        label = int(np.random.default_rng(seed).integers(len(ACTION_NAMES)))
    config = ActionDatasetConfig(num_frames=num_frames, size=size, seed=seed)
    clip = ClipGenerator(config).clip("train", 0, int(label))
    clip["video"] = clip.pop("frames")
    clip["label_name"] = ACTION_NAMES[label]
    return clip


def _features(config: ActionDatasetConfig):
    from datasets import Array3D, ClassLabel, Features, Value

    from hf_maskdp.video import mask_feature, video_feature

    return Features(
        {
            "video": video_feature(),
            "label": ClassLabel(names=list(config.action_names)),
            "identity": Value("int32"),
            "background": Value("string"),
            "person_mask": mask_feature(),
            "body_pose": Array3D((config.num_frames, 21, 3), "float32"),
            "joints_2d": Array3D((config.num_frames, 22, 2), "float32"),
        }
    )


def _split_rows(generator: ClipGenerator, split: str, count: int, progress: bool):
    from tqdm.auto import tqdm

    from hf_maskdp.video import encode_mask, encode_video

    config = generator.config
    # balanced labels in a seeded order
    classes = len(config.action_names)
    labels = np.random.default_rng([config.seed, SPLITS[split], 7]).permutation(np.arange(count) % classes)
    for index in tqdm(range(count), desc=f"rendering {split} clips", disable=not progress):
        clip = generator.clip(split, index, int(labels[index]))
        clip["video"] = {"path": f"{split}_{index:05d}.mp4", "bytes": encode_video(clip.pop("frames"), fps=config.fps)}
        clip["person_mask"] = encode_mask(clip["person_mask"])
        yield clip


def build_action_dataset(
    num_train: int = 48,
    num_test: int = 24,
    num_frames: int = 16,
    size: int = 112,
    seed: int = 0,
    progress: bool = True,
    **config_kwargs,
):
    """Generate a `DatasetDict` with `train` and `test` splits of labelled action clips.

    Columns: `video` (lossless mp4, `datasets.Video(decode=False)` values), `label`
    (ClassLabel over the vocabulary's action names), `identity` (who performs it), `background`
    (the scene), and ground truth for tests: `person_mask` (encoded, True where the person
    covers any part of a pixel), `body_pose` (T, 21, 3) and `joints_2d` (T, 22, 2) pixels.
    `config_kwargs` are further `ActionDatasetConfig` fields (scenes, vocabulary, framing, ...).
    """
    config = ActionDatasetConfig(num_frames=num_frames, size=size, seed=seed, **config_kwargs)
    return build_action_dataset_from_config(config, {"train": num_train, "test": num_test}, progress)


def build_action_dataset_from_config(config: ActionDatasetConfig, sizes: dict[str, int], progress: bool = True):
    """A `DatasetDict` with one split per `sizes` entry (`train`, `validation`, `test`)."""
    from datasets import Dataset, DatasetDict

    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}: choose from {list(SPLITS)}")
    generator = ClipGenerator(config)
    features = _features(config)
    splits = {}
    for split, count in sizes.items():
        columns = {name: [] for name in features}
        for row in _split_rows(generator, split, count, progress):
            for name in columns:
                columns[name].append(row[name])
        splits[split] = Dataset.from_dict(columns, features=features)
    return DatasetDict(splits)


def save_action_dataset(dataset, output_dir, videos: bool = True) -> Path:
    """Save with `save_to_disk`; with `videos`, also write `videos/<split>/*.mp4` + metadata.csv.

    The video folder is what `hf-maskdp anonymize` and `hf_maskdp.data.load_video_folder` read.
    """
    import csv

    output_dir = Path(output_dir)
    dataset.save_to_disk(str(output_dir / "dataset"))
    if videos:
        for split, rows in dataset.items():
            folder = output_dir / "videos" / split
            folder.mkdir(parents=True, exist_ok=True)
            names = rows.features["label"].names
            with open(folder / "metadata.csv", "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["file_name", "label", "identity", "background"])
                for row in rows.select_columns(["video", "label", "identity", "background"]):
                    (folder / row["video"]["path"]).write_bytes(row["video"]["bytes"])
                    writer.writerow([row["video"]["path"], names[row["label"]], row["identity"], row["background"]])
    return output_dir
