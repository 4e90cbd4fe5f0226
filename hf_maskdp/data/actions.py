"""Actions as joint-angle trajectories in the SMPL-H body convention.

Each action maps a phase (radians; one repetition per 2*pi) and an amplitude in (0, 1]
to a `Posture`: the world direction each limb bone should point in (body frame: y up,
the body faces +z, its left is +x), a few direct local rotations (spine, neck, ankles)
and a jump height. `posture_to_body_pose` turns that into smplx-style axis-angles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from hf_maskdp.anonymize.body import JOINT, SMPLH_BODY_JOINTS, SMPLH_PARENTS

# the child joint whose direction a bone's rotation aims
_BONE_CHILD = {
    "left_shoulder": "left_elbow",
    "right_shoulder": "right_elbow",
    "left_elbow": "left_wrist",
    "right_elbow": "right_wrist",
    "left_hip": "left_knee",
    "right_hip": "right_knee",
    "left_knee": "left_ankle",
    "right_knee": "right_ankle",
}


@dataclass
class Posture:
    aim: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # bone -> world direction
    local: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # joint -> axis-angle
    jump: float = 0.0  # metres the feet leave the ground


def _unit(*vector):
    vector = np.asarray(vector, dtype=np.float64)
    return vector / np.linalg.norm(vector)


def _mirror(direction):
    """Left-side direction -> the matching right-side one."""
    x, y, z = direction
    return _unit(-x, y, z)


def _arms(left_upper, left_fore, right_upper=None, right_fore=None):
    right_upper = _mirror(left_upper) if right_upper is None else right_upper
    right_fore = _mirror(left_fore) if right_fore is None else right_fore
    return {
        "left_shoulder": _unit(*left_upper),
        "left_elbow": _unit(*left_fore),
        "right_shoulder": _unit(*right_upper),
        "right_elbow": _unit(*right_fore),
    }


ARM_DOWN = _unit(0.25, -1.0, 0.05)
FOREARM_DOWN = _unit(0.15, -1.0, 0.2)


def _blend(a, b, weight):
    return _unit(*((1 - weight) * np.asarray(a) + weight * np.asarray(b)))


def wave(phase, amplitude):
    swing = 0.6 * amplitude * np.sin(phase)  # the forearm sways side to side above the elbow
    aim = _arms(
        ARM_DOWN,
        FOREARM_DOWN,
        right_upper=_unit(-0.9, 0.25, 0.3),
        right_fore=_unit(-np.sin(swing), np.cos(swing), 0.25),
    )
    return Posture(aim=aim, local={"head": (0.0, -0.15, 0.0)})


def clap(phase, amplitude):
    closed = 0.5 * (1 + np.sin(phase)) * amplitude  # 1: palms together in front of the chest
    upper = _unit(0.35, -0.45, 0.8)
    fore = _blend(_unit(0.9, 0.2, 0.5), _unit(-0.6, 0.25, 0.75), closed)
    return Posture(aim=_arms(upper, fore))


def squat(phase, amplitude):
    depth = 0.5 * (1 - np.cos(phase)) * amplitude  # 0 standing, 1 deep squat
    thigh = 1.3 * depth  # forward swing of the thighs
    shin = 0.55 * depth  # knees travel forward over the toes
    aim = _arms(_unit(0.15, -0.2 + 0.2 * depth, 1.0), _unit(0.1, -0.1 + 0.1 * depth, 1.0))
    aim["left_hip"], aim["right_hip"] = (
        _unit(0.12, -np.cos(thigh), np.sin(thigh)),
        _unit(-0.12, -np.cos(thigh), np.sin(thigh)),
    )
    aim["left_knee"] = aim["right_knee"] = _unit(0.0, -np.cos(shin), -np.sin(shin))
    return Posture(aim=aim, local={"spine1": (0.45 * depth, 0, 0), "spine2": (0.15 * depth, 0, 0)})


def jumping_jacks(phase, amplitude):
    open_ = 0.5 * (1 - np.cos(phase)) * amplitude
    elevation = np.radians(-70 + 165 * open_)  # arms from the sides to overhead
    arm = _unit(np.cos(elevation), np.sin(elevation), 0.1)
    legs = 0.28 * open_
    aim = _arms(arm, arm)
    aim["left_hip"] = aim["left_knee"] = _unit(np.sin(legs), -np.cos(legs), 0.02)
    aim["right_hip"] = aim["right_knee"] = _unit(-np.sin(legs), -np.cos(legs), 0.02)
    return Posture(aim=aim, jump=0.1 * amplitude * abs(np.sin(phase)))


def punch(phase, amplitude):
    guard_upper, guard_fore = _unit(0.35, -0.8, 0.45), _unit(-0.15, 0.75, 0.65)
    strike = _unit(0.08, 0.05, 1.0)
    left = amplitude * max(0.0, np.sin(phase)) ** 2
    right = amplitude * max(0.0, -np.sin(phase)) ** 2
    aim = _arms(
        _blend(guard_upper, strike, left),
        _blend(guard_fore, strike, left),
        _blend(_mirror(guard_upper), _mirror(strike), right),
        _blend(_mirror(guard_fore), _mirror(strike), right),
    )
    twist = 0.35 * (left - right)  # the shoulders turn into each punch
    return Posture(aim=aim, local={"spine2": (0, -twist, 0), "spine3": (0, -twist, 0)})


def reach_up(phase, amplitude):
    raised = 0.5 * (1 - np.cos(phase)) * amplitude
    angle = np.radians(-75 + 170 * raised)  # arms sweep forward and up to overhead (sagittal plane)
    arm = _unit(0.15, np.sin(angle), np.cos(angle))
    return Posture(
        aim=_arms(arm, arm),
        local={
            "spine2": (-0.15 * raised, 0, 0),
            "head": (-0.3 * raised, 0, 0),
            "left_ankle": (0.5 * raised, 0, 0),  # up on tiptoe
            "right_ankle": (0.5 * raised, 0, 0),
        },
    )


# A second vocabulary, disjoint from ACTIONS: the public pretraining corpus performs these (as
# Kinetics' classes are disjoint from UCF-101's), so pretraining never sees a private action.
def kick(phase, amplitude):
    swing = amplitude * max(0.0, np.sin(phase))  # the right leg swings forward and up
    thigh = 1.4 * swing
    aim = _arms(_unit(0.5, -0.8, -0.1), _unit(0.4, -0.9, 0.1))
    aim["right_hip"] = _unit(-0.1, -np.cos(thigh), np.sin(thigh))
    aim["right_knee"] = _unit(-0.1, -np.cos(thigh * 1.1), np.sin(thigh * 1.1))
    return Posture(aim=aim, local={"spine1": (-0.2 * swing, 0, 0)})


def side_bend(phase, amplitude):
    bend = 0.45 * amplitude * np.sin(phase)  # the trunk leans left and right, one arm overhead
    up = _unit(-0.3 * np.sign(bend) if bend else 0.0, 1.0, 0.1)
    aim = _arms(
        up if bend < 0 else ARM_DOWN,
        up if bend < 0 else FOREARM_DOWN,
        _mirror(up) if bend >= 0 else _mirror(ARM_DOWN),
        _mirror(up) if bend >= 0 else _mirror(FOREARM_DOWN),
    )
    return Posture(
        aim=aim, local={"spine1": (0, 0, -0.5 * bend), "spine2": (0, 0, -0.5 * bend), "spine3": (0, 0, -0.3 * bend)}
    )


def arm_circles(phase, amplitude):
    radius = 0.6 * amplitude  # straight arms held sideways trace circles
    arm = _unit(1.0, radius * np.sin(phase), radius * np.cos(phase))
    return Posture(aim=_arms(arm, arm))


def march(phase, amplitude):
    left = amplitude * max(0.0, np.sin(phase))  # knees up in turn, arms swing opposite
    right = amplitude * max(0.0, -np.sin(phase))
    aim = _arms(
        _unit(0.15, -1.0, -0.6 * left + 0.6 * right),
        _unit(0.1, -0.3, 1.0),
        _unit(-0.15, -1.0, 0.6 * left - 0.6 * right),
        _unit(-0.1, -0.3, 1.0),
    )
    aim["left_hip"] = _unit(0.1, -np.cos(1.4 * left), np.sin(1.4 * left))
    aim["left_knee"] = _unit(0.1, -1.0, -0.2 * left)
    aim["right_hip"] = _unit(-0.1, -np.cos(1.4 * right), np.sin(1.4 * right))
    aim["right_knee"] = _unit(-0.1, -1.0, -0.2 * right)
    return Posture(aim=aim, jump=0.03 * amplitude * abs(np.sin(phase)))


def bow(phase, amplitude):
    depth = 0.5 * (1 - np.cos(phase)) * amplitude  # the trunk folds forward, arms hang
    aim = _arms(_unit(0.15, -1.0, 0.5 * depth), _unit(0.1, -1.0, 0.4 * depth))
    return Posture(
        aim=aim, local={"spine1": (0.7 * depth, 0, 0), "spine2": (0.3 * depth, 0, 0), "neck": (0.2 * depth, 0, 0)}
    )


def twist(phase, amplitude):
    turn = 0.6 * amplitude * np.sin(phase)  # arms out sideways, the trunk turns about the spine
    aim = _arms(_unit(1.0, 0.0, -0.2), _unit(1.0, 0.0, -0.2))
    return Posture(
        aim=aim, local={"spine1": (0, turn * 0.4, 0), "spine2": (0, turn * 0.4, 0), "spine3": (0, turn * 0.3, 0)}
    )


ACTIONS = {
    "wave": wave,
    "clap": clap,
    "squat": squat,
    "jumping_jacks": jumping_jacks,
    "punch": punch,
    "reach_up": reach_up,
}
ACTION_NAMES = tuple(ACTIONS)
PUBLIC_ACTIONS = {
    "kick": kick,
    "side_bend": side_bend,
    "arm_circles": arm_circles,
    "march": march,
    "bow": bow,
    "twist": twist,
}
PUBLIC_ACTION_NAMES = tuple(PUBLIC_ACTIONS)


def posture_to_body_pose(posture: Posture, rest_joints: np.ndarray) -> np.ndarray:
    """Posture -> (21, 3) axis-angle body pose, aiming each bone with the smallest swing."""
    world = [np.eye(3)] * len(SMPLH_PARENTS)
    body_pose = np.zeros((21, 3))
    for joint, name in enumerate(SMPLH_BODY_JOINTS[1:], start=1):
        parent_world = world[SMPLH_PARENTS[joint]]
        local = Rotation.from_rotvec(posture.local.get(name, (0.0, 0.0, 0.0))).as_matrix()
        if name in posture.aim:
            current = parent_world @ local @ _unit(*(rest_joints[JOINT[_BONE_CHILD[name]]] - rest_joints[joint]))
            local = parent_world.T @ _swing(current, posture.aim[name]) @ parent_world @ local
        world[joint] = parent_world @ local
        body_pose[joint - 1] = Rotation.from_matrix(local).as_rotvec()
    return body_pose.astype(np.float32)


def _swing(source, target):
    """The smallest rotation matrix taking unit vector `source` to unit vector `target`."""
    axis = np.cross(source, target)
    sine, cosine = np.linalg.norm(axis), float(np.dot(source, target))
    if sine < 1e-9:
        return np.eye(3) if cosine > 0 else Rotation.from_rotvec(np.pi * _perpendicular(source)).as_matrix()
    return Rotation.from_rotvec(axis / sine * np.arctan2(sine, cosine)).as_matrix()


def _perpendicular(vector):
    other = np.eye(3)[np.argmin(np.abs(vector))]
    return _unit(*np.cross(vector, other))
