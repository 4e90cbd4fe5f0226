"""The embedded action dataset: rendered people performing actions in front of real photos.

Exports load lazily, so `hf_maskdp.data.layouts` imports without the generator's dependencies.
"""

import importlib

_EXPORTS = {
    "ACTIONS": "hf_maskdp.data.actions",
    "ACTION_NAMES": "hf_maskdp.data.actions",
    "BACKGROUND_NAMES": "hf_maskdp.data.backgrounds",
    "ActionDatasetConfig": "hf_maskdp.data.build",
    "build_action_dataset": "hf_maskdp.data.build",
    "generate_clip": "hf_maskdp.data.build",
    "identity_appearance": "hf_maskdp.data.build",
    "load_video_folder": "hf_maskdp.data.folder",
    "save_action_dataset": "hf_maskdp.data.build",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hf_maskdp.data' has no attribute {name!r}")
