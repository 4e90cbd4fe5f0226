"""SMPL-H avatars through `smplx`, from model files the user supplies (`body_model="smplh"`).

SMPL-H is licensed: nothing here ships or downloads it. Users register at
https://mano.is.tue.mpg.de, download "Extended SMPL+H model" (the `.npz` files used by
AMASS) and pass `model_path=` (a file, or a folder holding `SMPLH_NEUTRAL.npz` or
`neutral/model.npz`), or set the `SMPLH_MODEL_PATH` environment variable.

The body shares the mannequin's contract (see `body.py`): SMPL world frame (y up, facing
+z, metres), 21 axis-angle body joints, a painted look from `Appearance` whose `shape`
gives the betas. Hands stay in the model's mean (relaxed) pose.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from pathlib import Path

import numpy as np

from hf_maskdp.anonymize.body import SMPLH_BODY_JOINTS, SMPLH_PARENTS, Appearance, Mesh, paint

SMPLH_URL = "https://mano.is.tue.mpg.de"
NUM_SMPLH_JOINTS = 52  # 22 body joints + 2 x 15 hand joints
# key -> the shape it must have (V vertices, J joints, B betas, P pose blend shapes)
SMPLH_KEYS = {
    "v_template": "(V, 3)",
    "shapedirs": "(V, 3, B)",
    "posedirs": "(V, 3, 9 * (J - 1))",
    "J_regressor": "(J, V)",
    "weights": "(V, J)",
    "kintree_table": "(2, J)",
    "f": "(F, 3)",
    "hands_componentsl": "(45, 45)",
    "hands_componentsr": "(45, 45)",
    "hands_meanl": "(45,)",
    "hands_meanr": "(45,)",
}
_HELP = (
    f"Download the SMPL-H model files from {SMPLH_URL} (register, then 'Extended SMPL+H model', "
    "the .npz files used by AMASS) and pass the .npz file, or a folder holding SMPLH_NEUTRAL.npz "
    "or neutral/model.npz, as smplh_model_path= (or set SMPLH_MODEL_PATH). Expected keys: "
    + ", ".join(f"{key} {shape}" for key, shape in SMPLH_KEYS.items())
    + f", with J = {NUM_SMPLH_JOINTS}."
)


def resolve_model_path(model_path: str | os.PathLike | None = None, gender: str = "neutral") -> Path:
    """The SMPL-H `.npz` file to load, or a FileNotFoundError that says where to get it."""
    model_path = model_path or os.environ.get("SMPLH_MODEL_PATH")
    if not model_path:
        raise FileNotFoundError(f"body_model='smplh' needs the SMPL-H model files, and none was given. {_HELP}")
    path = Path(model_path).expanduser()
    if path.is_dir():
        candidates = [path / f"SMPLH_{gender.upper()}.npz", path / gender.lower() / "model.npz"]
        path = next((candidate for candidate in candidates if candidate.is_file()), candidates[0])
    if not path.is_file():
        raise FileNotFoundError(f"SMPL-H model file not found: {path}. {_HELP}")
    if path.suffix != ".npz":
        raise ValueError(f"SMPL-H model file {path} is not an .npz file. {_HELP}")
    return path


def check_model_file(path: Path) -> None:
    """Raise a ValueError naming what is wrong with an SMPL-H `.npz`, before smplx trips on it."""
    try:
        data = np.load(path, allow_pickle=True)
        keys = set(data.files)
    except Exception as error:  # numpy raises several types for a corrupt archive
        raise ValueError(f"cannot read SMPL-H model file {path} ({error}). {_HELP}") from error
    missing = [key for key in SMPLH_KEYS if key not in keys]
    if missing:
        raise ValueError(f"SMPL-H model file {path} lacks {missing}. {_HELP}")
    num_vertices = data["v_template"].shape[0]
    num_joints = data["J_regressor"].shape[0]
    problems = []
    if data["v_template"].shape != (num_vertices, 3):
        problems.append(f"v_template is {data['v_template'].shape}")
    if data["shapedirs"].ndim != 3 or data["shapedirs"].shape[:2] != (num_vertices, 3):
        problems.append(f"shapedirs is {data['shapedirs'].shape}")
    if num_joints != NUM_SMPLH_JOINTS:
        problems.append(f"J_regressor has {num_joints} joints (SMPL has 24: is this an SMPL file?)")
    if data["weights"].shape != (num_vertices, num_joints):
        problems.append(f"weights is {data['weights'].shape}")
    if data["posedirs"].shape != (num_vertices, 3, 9 * (num_joints - 1)):
        problems.append(f"posedirs is {data['posedirs'].shape}")
    parents = np.asarray(data["kintree_table"])[0, : len(SMPLH_PARENTS)].astype(np.int64)
    parents[0] = -1
    if tuple(parents) != SMPLH_PARENTS:
        problems.append("kintree_table's body joints are not the SMPL-H skeleton")
    if num_vertices <= 6787:  # smplx reads face/hand/feet keypoints at fixed SMPL vertex ids up to 6787
        problems.append(f"it has {num_vertices} vertices (SMPL-H has 6890)")
    if problems:
        raise ValueError(f"SMPL-H model file {path} is malformed: {'; '.join(problems)}. {_HELP}")


@functools.lru_cache(maxsize=4)
def load_smplh(path: str, num_betas: int = 10):
    """The smplx SMPL-H layer for a model file, checked first, one per process and file."""
    import smplx

    check_model_file(Path(path))
    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning for files with < 300 betas
        model = smplx.SMPLH(path, ext="npz", num_betas=num_betas, use_pca=False, flat_hand_mean=False)
    return model.eval()


class SMPLHBody:
    """A painted SMPL-H body (smplx) with the shape `appearance.shape` (betas)."""

    def __init__(self, appearance: Appearance | None = None, model_path=None, gender: str = "neutral"):
        import torch

        self.appearance = appearance or Appearance()
        betas = np.asarray(self.appearance.shape, dtype=np.float32)
        self._model = load_smplh(str(resolve_model_path(model_path, gender)), num_betas=len(betas))
        self._betas = torch.zeros(1, self._model.num_betas)
        self._betas[0, : len(betas)] = torch.from_numpy(betas[: self._model.num_betas])
        self._faces = np.asarray(self._model.faces, dtype=np.int32)
        rest_vertices, self._rest_joints = self._forward(np.zeros((21, 3), np.float32), None, None)
        self._colors = paint(rest_vertices, self._rest_joints, self.appearance)

    def rest_joints(self) -> np.ndarray:
        return self._rest_joints.copy()

    def _forward(self, body_pose, global_orient, transl):
        import torch

        def row(value):
            return None if value is None else torch.as_tensor(np.asarray(value, np.float32).reshape(1, -1))

        with torch.no_grad():
            output = self._model(
                betas=self._betas,
                body_pose=row(body_pose),
                global_orient=row(np.zeros(3) if global_orient is None else global_orient),
                transl=row(np.zeros(3) if transl is None else transl),
            )
        joints = output.joints[0, : len(SMPLH_BODY_JOINTS)].numpy().astype(np.float32)
        return output.vertices[0].numpy().astype(np.float32), joints

    def pose(self, body_pose, global_orient=None, transl=None) -> tuple[Mesh, np.ndarray]:
        body_pose = np.asarray(body_pose, dtype=np.float32)
        if body_pose.shape != (21, 3):
            raise ValueError(f"body_pose must be (21, 3) axis-angle (SMPL-H body joints 1..21), got {body_pose.shape}")
        vertices, joints = self._forward(body_pose, global_orient, transl)
        return Mesh(vertices=vertices, faces=self._faces, vertex_colors=self._colors), joints
