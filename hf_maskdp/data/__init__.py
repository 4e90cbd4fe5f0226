"""The embedded action dataset: rendered people performing actions in front of real photos."""

from hf_maskdp.data.actions import ACTION_NAMES, ACTIONS
from hf_maskdp.data.backgrounds import BACKGROUND_NAMES
from hf_maskdp.data.build import ActionDatasetConfig, build_action_dataset, identity_appearance, save_action_dataset

__all__ = [
    "ACTIONS",
    "ACTION_NAMES",
    "BACKGROUND_NAMES",
    "ActionDatasetConfig",
    "build_action_dataset",
    "identity_appearance",
    "save_action_dataset",
]
