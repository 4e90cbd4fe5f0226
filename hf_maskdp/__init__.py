"""hf_maskdp: avatar anonymization and Masked Differential Privacy for video action recognition.

The public API is re-exported here lazily, so `import hf_maskdp` stays fast and heavy
optional dependencies load only when used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # privacy accounting
    "compute_epsilon": "hf_maskdp.privacy.accounting",
    "calibrate_noise_multiplier": "hf_maskdp.privacy.accounting",
    "token_mask": "hf_maskdp.privacy.masks",
    # video and mask storage
    "load_video_frames": "hf_maskdp.video",
    "encode_video": "hf_maskdp.video",
    "encode_mask": "hf_maskdp.video",
    "decode_mask": "hf_maskdp.video",
    "encode_anonymized_clip": "hf_maskdp.storage",
    "read_anonymized_clip": "hf_maskdp.storage",
    # training
    "MaskDPConfig": "hf_maskdp.training.config",
    "MaskDPTrainer": "hf_maskdp.training.trainer",
    "VideoClipCollator": "hf_maskdp.training.collator",
    "withheld_rows": "hf_maskdp.training.trainer",
    # anonymization
    "AvatarAnonymizer": "hf_maskdp.anonymize.pipeline",
    "AnonymizerConfig": "hf_maskdp.anonymize.pipeline",
    "Refiner": "hf_maskdp.anonymize.refine",
    "RefinerConfig": "hf_maskdp.anonymize.refine",
    # embedded action dataset
    "build_action_dataset": "hf_maskdp.data",
    "save_action_dataset": "hf_maskdp.data",
    # the main job
    "QuickstartConfig": "hf_maskdp.quickstart",
    "run_quickstart": "hf_maskdp.quickstart",
    # hub
    "load_anonymized_dataset": "hf_maskdp.hub",
    "push_anonymized_dataset": "hf_maskdp.hub",
    "push_private_model": "hf_maskdp.hub",
    "write_model_card": "hf_maskdp.hub",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hf_maskdp' has no attribute {name!r}")


def __dir__():
    return __all__ + ["__version__"]
