"""Avatar body models: posable, painted meshes driven by SMPL-H body joints.

World frame of every body model (the SMPL convention): metres, y up, the body faces +z
and its left side is +x. `pose` follows smplx: `body_pose[i]` is the axis-angle rotation
of joint `i + 1` relative to its parent, `global_orient` rotates the whole body about the
pelvis, and `transl` moves it (so the pelvis lands at `rest_joints()[0] + transl`).

The avatar is computed from public inputs only (a pose and a seeded random appearance):
it never reads a real pixel, which is what lets its pixels be marked non-sensitive.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

SMPLH_BODY_JOINTS = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
)
SMPLH_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19)
JOINT = {name: index for index, name in enumerate(SMPLH_BODY_JOINTS)}


@dataclass
class Mesh:
    vertices: np.ndarray  # (V, 3) float32, metres
    faces: np.ndarray  # (F, 3) int32
    vertex_colors: np.ndarray  # (V, 3) float32 in [0, 1]

    def __post_init__(self):
        self.vertices = np.asarray(self.vertices, dtype=np.float32)
        self.faces = np.asarray(self.faces, dtype=np.int32)
        self.vertex_colors = np.asarray(self.vertex_colors, dtype=np.float32)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"Mesh.vertices must be (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"Mesh.faces must be (F, 3), got {self.faces.shape}")
        if self.vertex_colors.shape != self.vertices.shape:
            raise ValueError(f"Mesh.vertex_colors must be {self.vertices.shape}, got {self.vertex_colors.shape}")


@runtime_checkable
class BodyModel(Protocol):
    appearance: Appearance

    def rest_joints(self) -> np.ndarray:
        """(22, 3) joint positions in metres for the zero pose."""

    def pose(self, body_pose, global_orient=None, transl=None) -> tuple[Mesh, np.ndarray]:
        """(21, 3) axis-angle body pose -> (posed Mesh, (22, 3) joint positions)."""


# Skin tones from light to dark (sRGB), roughly spanning the Fitzpatrick scale.
SKIN_TONES = np.array(
    [
        [0.96, 0.80, 0.69],
        [0.92, 0.74, 0.60],
        [0.86, 0.66, 0.52],
        [0.78, 0.57, 0.42],
        [0.66, 0.46, 0.32],
        [0.55, 0.37, 0.25],
        [0.43, 0.28, 0.19],
        [0.33, 0.21, 0.14],
    ]
)
CLOTHING_COLORS = np.array(
    [
        [0.80, 0.10, 0.10],  # red
        [0.10, 0.25, 0.70],  # blue
        [0.10, 0.55, 0.20],  # green
        [0.95, 0.75, 0.10],  # yellow
        [0.55, 0.20, 0.65],  # purple
        [0.95, 0.50, 0.10],  # orange
        [0.10, 0.60, 0.65],  # teal
        [0.90, 0.90, 0.90],  # white
        [0.15, 0.15, 0.18],  # black
        [0.45, 0.45, 0.50],  # grey
        [0.20, 0.25, 0.45],  # navy
        [0.45, 0.30, 0.15],  # brown
        [0.85, 0.45, 0.60],  # pink
    ]
)
HAIR_COLORS = np.array(
    [[0.08, 0.06, 0.05], [0.25, 0.15, 0.08], [0.50, 0.35, 0.18], [0.80, 0.65, 0.40], [0.6, 0.6, 0.6]]
)


PUPIL_COLOR = (0.1, 0.07, 0.05)
MOUTH_COLOR = (0.6, 0.15, 0.15)


@dataclass
class Appearance:
    """How an avatar looks: colours in [0, 1] sRGB and SMPL-X shape coefficients."""

    skin: tuple[float, float, float] = (0.86, 0.66, 0.52)
    shirt: tuple[float, float, float] = (0.10, 0.25, 0.70)
    trousers: tuple[float, float, float] = (0.15, 0.15, 0.18)
    shoes: tuple[float, float, float] = (0.30, 0.20, 0.12)
    hair: tuple[float, float, float] = (0.08, 0.06, 0.05)
    long_sleeves: bool = True
    shape: tuple[float, ...] = field(default_factory=lambda: (0.0,) * 10)  # betas; shape[0] ~ height

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Appearance:
        """A random look: skin tone, distinct shirt and trouser colours, hair, body shape."""

        def jitter(color, amount=0.04):
            return tuple(float(c) for c in np.clip(color + rng.normal(0, amount, 3), 0, 1))

        shirt, trousers = rng.choice(len(CLOTHING_COLORS), size=2, replace=False)
        shape = np.zeros(10)
        shape[:2] = np.clip(rng.normal(0, 1, 2), -2, 2)
        return cls(
            skin=jitter(SKIN_TONES[rng.integers(len(SKIN_TONES))], 0.02),
            shirt=jitter(CLOTHING_COLORS[shirt]),
            trousers=jitter(CLOTHING_COLORS[trousers]),
            shoes=jitter(CLOTHING_COLORS[rng.choice([8, 11, 7, 9])]),
            hair=jitter(HAIR_COLORS[rng.integers(len(HAIR_COLORS))], 0.02),
            long_sleeves=bool(rng.random() < 0.5),
            shape=tuple(float(b) for b in shape),
        )


# ----------------------------------------------------------------------------- painting

# Bones (joint, child or pseudo-end) and the garment that covers each. Pseudo-ends extend
# the chain past the wrists (hands) and the head (skull top).
_BONE_GARMENT = {
    ("pelvis", "spine1"): "shirt",
    ("spine1", "spine2"): "shirt",
    ("spine2", "spine3"): "shirt",
    ("spine3", "neck"): "shirt",
    ("spine3", "left_collar"): "shirt",
    ("spine3", "right_collar"): "shirt",
    ("left_collar", "left_shoulder"): "shirt",
    ("right_collar", "right_shoulder"): "shirt",
    ("left_shoulder", "left_elbow"): "shirt",
    ("right_shoulder", "right_elbow"): "shirt",
    ("left_elbow", "left_wrist"): "sleeve",
    ("right_elbow", "right_wrist"): "sleeve",
    ("left_wrist", "left_hand_end"): "skin",
    ("right_wrist", "right_hand_end"): "skin",
    ("neck", "head"): "neck",
    ("head", "head_end"): "head",
    ("pelvis", "left_hip"): "trousers",
    ("pelvis", "right_hip"): "trousers",
    ("left_hip", "left_knee"): "trousers",
    ("right_hip", "right_knee"): "trousers",
    ("left_knee", "left_ankle"): "trousers",
    ("right_knee", "right_ankle"): "trousers",
    ("left_ankle", "left_foot"): "shoes",
    ("right_ankle", "right_foot"): "shoes",
}


def _segment_distance(points, start, end):
    direction = end - start
    along = np.clip((points - start) @ direction / max(direction @ direction, 1e-12), 0, 1)
    return np.linalg.norm(points - (start + along[:, None] * direction), axis=1)


def paint(rest_vertices: np.ndarray, rest_joints: np.ndarray, appearance: Appearance) -> np.ndarray:
    """Vertex colours for a body in its rest pose: clothes by nearest bone, and a face.

    Works from geometry alone (vertices + skeleton), so any body model can share it.
    The face matters: mediapipe reads a faceless body as seen from behind.
    """
    joints = {name: rest_joints[i] for i, name in enumerate(SMPLH_BODY_JOINTS)}
    for side in ("left", "right"):
        forearm = joints[f"{side}_wrist"] - joints[f"{side}_elbow"]
        joints[f"{side}_hand_end"] = joints[f"{side}_wrist"] + 0.7 * forearm
    joints["head_end"] = joints["head"] + np.array([0.0, 0.2, 0.0])

    bones = list(_BONE_GARMENT)
    distances = np.stack([_segment_distance(rest_vertices, joints[a], joints[b]) for a, b in bones], axis=1)
    garments = np.array([_BONE_GARMENT[bone] for bone in bones])[distances.argmin(1)]

    # the waist splits the torso between shirt and trousers
    waist = joints["pelvis"][1] + 0.45 * (joints["spine1"][1] - joints["pelvis"][1])
    garments[(garments == "shirt") & (rest_vertices[:, 1] < waist)] = "trousers"
    garments[garments == "sleeve"] = "shirt" if appearance.long_sleeves else "skin"
    head = np.isin(garments, ["head", "neck"]) & (rest_vertices[:, 1] > joints["neck"][1])
    garments[np.isin(garments, ["head", "neck"])] = "skin"

    colors = np.zeros_like(rest_vertices, dtype=np.float32)
    for name in ("shirt", "trousers", "shoes", "skin"):
        colors[garments == name] = getattr(appearance, name)
    _paint_face(colors, rest_vertices, head, joints["head"], appearance)
    return colors


def _paint_face(colors, vertices, head, head_joint, appearance):
    """Hair cap, eyes, brows and mouth on the front (+z) of the head, by rest geometry."""
    head_vertices = vertices[head]
    top = head_vertices[:, 1].max()
    chin = top - 1.6 * (top - head_joint[1])  # the head joint sits ~60 % of the way up the face
    front = head_vertices[:, 2].max()
    centre_x = 0.5 * (head_vertices[:, 0].max() + head_vertices[:, 0].min())
    height = top - chin
    x, y, z = (vertices[:, k] for k in range(3))
    facing = head & (z > front - 0.05)

    eye_y = chin + 0.5 * height
    hair = head & ((y > eye_y + 0.22 * height) | (z < front - 0.09) & (y > chin + 0.3 * height))
    colors[hair] = appearance.hair

    eye_radius = 0.12 * height
    eye_dx = 0.17 * height
    for side in (-1, 1):
        eye = facing & (
            ((x - centre_x - side * eye_dx) / eye_radius) ** 2 + ((y - eye_y) / (0.7 * eye_radius)) ** 2 < 1
        )
        colors[eye] = (0.95, 0.95, 0.95)
        pupil = facing & (((x - centre_x - side * eye_dx) ** 2 + (y - eye_y) ** 2) < (0.5 * eye_radius) ** 2)
        colors[pupil] = PUPIL_COLOR
        brow = facing & (np.abs(x - centre_x - side * eye_dx) < 1.2 * eye_radius)
        brow &= np.abs(y - eye_y - 1.3 * eye_radius) < 0.25 * eye_radius
        colors[brow] = appearance.hair
    mouth_y = chin + 0.22 * height
    mouth = facing & (((x - centre_x) / (0.2 * height)) ** 2 + ((y - mouth_y) / (0.05 * height)) ** 2 < 1)
    colors[mouth] = MOUTH_COLOR


# ----------------------------------------------------------------------------- mannequin


@functools.lru_cache(maxsize=1)
def _base_mannequin():
    try:
        from mannequin import Mannequin
    except ImportError as error:
        raise ImportError("the default body model needs the `mannequin-x` package: pip install mannequin-x") from error
    return Mannequin("wooden")


@functools.lru_cache(maxsize=8)
def _load_mannequin(shape: tuple[float, ...]):
    # every avatar has its own shape: reshape a copy of the loaded model (half the cost of loading it
    # again); `reshape` sets new attributes on the copy and the shared weights are only read
    model = copy.copy(_base_mannequin())
    model.reshape(np.asarray(shape, dtype=np.float32))
    return model


class MannequinBody:
    """The `mannequin-x` wooden mannequin (Apache-2.0, skinned, SMPL-X skeleton), painted."""

    def __init__(self, appearance: Appearance | None = None):
        self.appearance = appearance or Appearance()
        self._model = _load_mannequin(tuple(float(b) for b in self.appearance.shape))
        rest = self._model.rest_pose()
        self._rest_joints = self._model.joint_transforms(rest)[: len(SMPLH_BODY_JOINTS), :3, 3].astype(np.float32)
        rest_vertices = self._model.vertices(rest)
        self._faces = np.asarray(self._model.faces, dtype=np.int32)
        self._colors = paint(rest_vertices, self._rest_joints, self.appearance)
        self._skinning = _blend_skinning(self._model)

    def rest_joints(self) -> np.ndarray:
        return self._rest_joints.copy()

    def pose(self, body_pose, global_orient=None, transl=None) -> tuple[Mesh, np.ndarray]:
        body_pose = np.asarray(body_pose, dtype=np.float32)
        if body_pose.shape != (21, 3):
            raise ValueError(f"body_pose must be (21, 3) axis-angle (SMPL-H body joints 1..21), got {body_pose.shape}")
        parameters = self._model.rest_pose()
        parameters["body_pose"] = body_pose
        # pelvis_rotation turns the body about the pelvis (smplx's global_orient); mannequin's
        # global_rotation would also swing the pelvis about the origin
        if global_orient is not None:
            parameters["pelvis_rotation"] = np.asarray(global_orient, dtype=np.float32).reshape(3)
        if transl is not None:
            parameters["global_translation"] = np.asarray(transl, dtype=np.float32).reshape(3)
        transforms = self._model.joint_transforms(parameters)
        vertices = self._model.vertices(parameters) if self._skinning is None else self._skinning(transforms)
        joints = transforms[: len(SMPLH_BODY_JOINTS), :3, 3]
        mesh = Mesh(vertices=vertices, faces=self._faces, vertex_colors=self._colors)
        return mesh, joints.astype(np.float32)


def _blend_skinning(model):
    """`transforms (J, 4, 4) -> vertices (V, 3)`: the mannequin's linear blend skinning, ten times faster.

    mannequin-x transforms each vertex by each of its K joints and then blends the K results
    (8 ms a pose); blending each vertex's joint matrices first (one sparse product) and applying the
    blend once gives the same vertices to float precision (tests/test_body.py) in under
    1 ms. Reads the model's skinning arrays; None (use `model.vertices`) where this version has none."""
    import scipy.sparse

    try:
        joints, weights = model._skin_joint_indices, model._skin_weights
        rest, bind = model._identity["skin_vertices"], model._identity["skin_bind_positions"]
    except (AttributeError, KeyError, TypeError):
        return None
    if joints is None or weights is None:
        return None
    count, k = joints.shape
    blend = scipy.sparse.csr_matrix(
        (weights.reshape(-1), (np.repeat(np.arange(count), k), joints.reshape(-1))), shape=(count, len(bind))
    )

    def skin(transforms: np.ndarray) -> np.ndarray:
        rotations, translations = transforms[:, :3, :3], transforms[:, :3, 3]
        # vertex v = sum_k w_vk (R_k (x_v - b_k) + t_k) = (sum_k w_vk R_k) x_v + sum_k w_vk (t_k - R_k b_k)
        offsets = translations - np.einsum("jik,jk->ji", rotations, bind)
        blended = blend @ np.concatenate([rotations.reshape(-1, 9), offsets], axis=1)
        return np.einsum("vij,vj->vi", blended[:, :9].reshape(-1, 3, 3), rest) + blended[:, 9:]

    return skin


def _smplh(appearance: Appearance, **options) -> BodyModel:
    from .smplh import SMPLHBody  # needs the user's licensed SMPL-H files

    return SMPLHBody(appearance, **options)


def _anny(appearance: Appearance, **options) -> BodyModel:
    from .anny_body import AnnyBody  # optional extra: pip install "hf_maskdp[anny]"

    return AnnyBody(appearance, **options)


# name -> factory(appearance, **options); heavy bodies import on first use.
BODY_MODELS = {"mannequin": MannequinBody, "smplh": _smplh, "anny": _anny}


def make_body_model(
    name: str = "mannequin", appearance: Appearance | None = None, seed: int = 0, **options
) -> BodyModel:
    """A body model by name; without `appearance`, one is sampled from `seed`.

    `options` go to the body's constructor (e.g. `model_path=` for "smplh").
    """
    if name not in BODY_MODELS:
        raise ValueError(f"unknown body model {name!r}; choose one of {sorted(BODY_MODELS)}")
    if appearance is None:
        appearance = Appearance.sample(np.random.default_rng(seed))
    return BODY_MODELS[name](appearance, **options)
