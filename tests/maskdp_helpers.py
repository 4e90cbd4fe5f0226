"""Tiny VideoMAE models and clips shared by the MaskDP tests (CPU, a second or two each)."""

from __future__ import annotations

import numpy as np
import torch
from transformers import VideoMAEConfig, VideoMAEForVideoClassification

from hf_maskdp.privacy.mask_checks import anonymizer_provenance
from hf_maskdp.training.collator import VideoClipCollator
from hf_maskdp.training.config import MaskDPConfig
from hf_maskdp.video import encode_mask

IMAGE, FRAMES = 16, 4

# A privacy record as MaskDPTrainer saves it (tests of the record schema, cards and loading share it).
MASKDP_RECORD = {
    "privacy_mode": "maskdp",
    "epsilon": 0.8731,
    "delta": 1e-05,
    "accountant": "rdp",
    "noise_multiplier": 1.37,
    "per_sample_clip_norm": 1.0,
    "sample_rate": 0.125,
    "steps": 24,
    "epochs": 3.0,
    "public_view": "fill",
    "mask_column": "sensitive_mask",
    "training_rows": 16,
    "private_records": 16,
    "world_size": 1,
    "trust_masks": False,
    "fully_public_records": 0,
}


def tiny_model(seed: int = 0, layers: int = 1) -> VideoMAEForVideoClassification:
    torch.manual_seed(seed)
    config = VideoMAEConfig(
        image_size=IMAGE,
        patch_size=8,
        num_frames=FRAMES,
        tubelet_size=2,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    return VideoMAEForVideoClassification(config)


def tiny_collator() -> VideoClipCollator:
    return VideoClipCollator(num_frames=FRAMES, image_size=IMAGE)


def make_rows(n: int = 8, mask: str = "half", seed: int = 0, shape=(6, 20, 24)) -> list[dict]:
    """Rows like the anonymizer's output: uint8 frames, encoded masks (the avatar covers exactly the
    public pixels), the anonymizer's provenance (these stand for its output), a label.

    mask: "half" (left half sensitive), "all" (m = 1 everywhere), "none" (m = 0), "random" (a random box).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        video = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        if mask == "half":
            m = np.zeros(shape, bool)
            m[:, :, : shape[2] // 2] = True
        elif mask == "all":
            m = np.ones(shape, bool)
        elif mask == "none":
            m = np.zeros(shape, bool)
        else:  # a random box, different in every clip
            m = np.zeros(shape, bool)
            top, left = rng.integers(0, shape[1]), rng.integers(0, shape[2])
            m[:, top : top + rng.integers(1, shape[1]), left : left + rng.integers(1, shape[2])] = True
        rows.append(
            {
                "video": video,
                "sensitive_mask": encode_mask(m),
                "avatar_mask": encode_mask(~m),
                "provenance": anonymizer_provenance(),
                "label": i % 3,
            }
        )
    return rows


def tiny_args(tmp_path, **overrides) -> MaskDPConfig:
    settings = dict(
        output_dir=str(tmp_path / "out"),
        privacy_mode="maskdp",
        noise_multiplier=1.0,
        private_batch_size=2,
        public_batch_size=2,
        per_device_train_batch_size=2,
        num_train_epochs=1,
        dp_seed=0,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        logging_steps=1,
        disable_tqdm=True,
    )
    settings.update(overrides)
    return MaskDPConfig(**settings)


def randomize_sensitive(rows: list[dict], seed: int = 1) -> list[dict]:
    """Same rows with every m = 1 pixel replaced by fresh random values."""
    from hf_maskdp.video import decode_mask

    rng = np.random.default_rng(seed)
    out = []
    for row in rows:
        m = decode_mask(row["sensitive_mask"])
        video = row["video"].copy()
        video[m] = rng.integers(0, 256, (int(m.sum()), 3), dtype=np.uint8)
        out.append({**row, "video": video})
    return out
