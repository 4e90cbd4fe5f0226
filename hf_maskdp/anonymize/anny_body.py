"""Anny avatars (`body_model="anny"`): diverse ages, shapes and skin tones, Apache-2.0.

Anny (https://github.com/naver/anny, `pip install anny`) is a MakeHuman-based body model
with phenotype parameters (gender, age, muscle, weight, height, proportions in [0, 1]).
It is an optional extra: imported on first use. Its first load builds a ~790 MB cache
(`ANNY_CACHE_DIR`, default ~/.cache/anny) in one to three minutes; the model is then kept
once per process.

Anny's world is z up, facing -y, metres; it is turned into the SMPL frame of `body.py`
(y up, facing +z). SMPL-H joint rotations drive Anny's bones through its "world-orient"
pose parameterization: each bone takes the world rotation of the SMPL-H joint that turns it.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
from scipy.spatial.transform import Rotation

from hf_maskdp.anonymize.body import JOINT, SMPLH_BODY_JOINTS, SMPLH_PARENTS, Appearance, Mesh, paint

_INSTALL_HELP = (
    "body_model='anny' needs the optional `anny` package: pip install anny (Apache-2.0; it pulls "
    "warp-lang). Its first load builds a ~790 MB cache in ANNY_CACHE_DIR (default ~/.cache/anny)."
)
ANNY_TO_SMPL = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # x_smpl = ANNY_TO_SMPL @ x_anny

# SMPL-H joint -> the Anny bone whose head sits at that joint
JOINT_BONES = {
    "pelvis": "root",
    "spine1": "spine04",
    "spine2": "spine03",
    "spine3": "spine01",
    "neck": "neck01",
    "head": "head",
    "left_foot": "toe3-1.L",
    "right_foot": "toe3-1.R",
}
# Anny bone -> the SMPL-H joint whose rotation turns it; bones not listed follow their parent
BONE_DRIVERS = {
    "root": "pelvis",
    "spine05": "pelvis",
    "spine04": "spine1",
    "spine03": "spine2",
    "spine02": "spine3",
    "spine01": "spine3",
    "neck01": "neck",
    "head": "head",
}
for _side, _s in (("left", "L"), ("right", "R")):
    JOINT_BONES.update(
        {
            f"{_side}_hip": f"upperleg01.{_s}",
            f"{_side}_knee": f"lowerleg01.{_s}",
            f"{_side}_ankle": f"foot.{_s}",
            f"{_side}_collar": f"clavicle.{_s}",
            f"{_side}_shoulder": f"upperarm01.{_s}",
            f"{_side}_elbow": f"lowerarm01.{_s}",
            f"{_side}_wrist": f"wrist.{_s}",
        }
    )
    BONE_DRIVERS.update(
        {
            f"pelvis.{_s}": "pelvis",
            f"upperleg01.{_s}": f"{_side}_hip",
            f"upperleg02.{_s}": f"{_side}_hip",
            f"lowerleg01.{_s}": f"{_side}_knee",
            f"lowerleg02.{_s}": f"{_side}_knee",
            f"foot.{_s}": f"{_side}_ankle",
            f"clavicle.{_s}": f"{_side}_collar",
            f"shoulder01.{_s}": f"{_side}_collar",
            f"upperarm01.{_s}": f"{_side}_shoulder",
            f"upperarm02.{_s}": f"{_side}_shoulder",
            f"lowerarm01.{_s}": f"{_side}_elbow",
            f"lowerarm02.{_s}": f"{_side}_elbow",
            f"wrist.{_s}": f"{_side}_wrist",
        }
    )


@functools.lru_cache(maxsize=1)
def load_anny():
    """The Anny model, built once per process (the first build fills Anny's disk cache)."""
    try:
        import anny
        import torch
    except ImportError as error:
        raise ImportError(_INSTALL_HELP) from error
    return anny.Anny().to(dtype=torch.float32).eval()


def sample_phenotype(rng: np.random.Generator) -> dict[str, float]:
    """Diverse bodies: any gender, ages from child to old, shapes away from the extremes."""
    return {
        "gender": float(rng.random()),
        "age": float(rng.uniform(1 / 3, 1.0)),  # Anny's age axis: 1/3 child, 2/3 young adult, 1 old
        **{key: float(rng.beta(2, 2)) for key in ("muscle", "weight", "height", "proportions")},
    }


def _appearance_rng(appearance: Appearance) -> np.random.Generator:
    """A generator seeded by the (seeded, public) appearance: one body per look, in every process."""
    digest = hashlib.blake2b(repr(appearance).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


class AnnyBody:
    """A painted Anny body with a phenotype sampled from the appearance (or given)."""

    def __init__(self, appearance: Appearance | None = None, phenotype: dict[str, float] | None = None):
        import torch

        self.appearance = appearance or Appearance()
        self.phenotype = phenotype or sample_phenotype(_appearance_rng(self.appearance))
        self._model = load_anny()
        labels = list(self._model.bone_labels)
        self._joint_bones = [labels.index(JOINT_BONES[name]) for name in SMPLH_BODY_JOINTS]
        parents = [int(p) for p in self._model.bone_parents]
        drivers = []
        for bone, label in enumerate(labels):  # parents come before children
            drivers.append(JOINT[BONE_DRIVERS[label]] if label in BONE_DRIVERS else drivers[parents[bone]])
        self._drivers = np.array(drivers)
        self._phenotype = {key: torch.tensor([value], dtype=torch.float32) for key, value in self.phenotype.items()}
        with torch.no_grad():
            rest = self._model(phenotype_kwargs=self._phenotype)
        self._rest_poses = rest["rest_bone_poses"][0].numpy().astype(np.float64)
        self._faces = np.asarray(self._model.faces, dtype=np.int32)
        rest_vertices = rest["rest_vertices"][0].numpy() @ ANNY_TO_SMPL.T  # "vertices" has the root moved to 0
        self._rest_joints = (self._rest_poses[self._joint_bones, :3, 3] @ ANNY_TO_SMPL.T).astype(np.float32)
        self._colors = paint(rest_vertices, self._rest_joints, self.appearance)

    def rest_joints(self) -> np.ndarray:
        return self._rest_joints.copy()

    def pose(self, body_pose, global_orient=None, transl=None) -> tuple[Mesh, np.ndarray]:
        import torch

        body_pose = np.asarray(body_pose, dtype=np.float64)
        if body_pose.shape != (21, 3):
            raise ValueError(f"body_pose must be (21, 3) axis-angle (SMPL-H body joints 1..21), got {body_pose.shape}")
        orient = np.zeros(3) if global_orient is None else np.asarray(global_orient, np.float64).reshape(3)
        local = Rotation.from_rotvec(np.vstack([orient, body_pose])).as_matrix()
        world = np.empty_like(local)  # each SMPL-H joint's rotation from rest, in SMPL axes
        for j, parent in enumerate(SMPLH_PARENTS):
            world[j] = local[j] if parent < 0 else world[parent] @ local[j]
        world = ANNY_TO_SMPL.T @ world @ ANNY_TO_SMPL  # the same rotations in Anny's axes
        deltas = np.tile(np.eye(4), (len(self._drivers), 1, 1))
        deltas[:, :3, :3] = world[self._drivers] @ self._rest_poses[:, :3, :3]  # world-orient: D = G R_rest
        deltas[0, :3, 3] = self._rest_poses[0, :3, 3]  # the root (pelvis) stays where it rests
        with torch.no_grad():
            out = self._model(
                pose_parameters=torch.tensor(deltas[None], dtype=torch.float32),
                phenotype_kwargs=self._phenotype,
                pose_parameterization="world-orient",
            )
        shift = np.zeros(3) if transl is None else np.asarray(transl, np.float64).reshape(3)
        vertices = out["vertices"][0].numpy() @ ANNY_TO_SMPL.T + shift
        joints = out["bone_poses"][0, self._joint_bones, :3, 3].numpy() @ ANNY_TO_SMPL.T + shift
        mesh = Mesh(vertices=vertices, faces=self._faces, vertex_colors=self._colors)
        return mesh, joints.astype(np.float32)
