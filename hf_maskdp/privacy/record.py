"""`PrivacyRecord`: what a training run guarantees. `MaskDPTrainer` saves it (`maskdp_privacy.json`
and `model.config.maskdp`), the model card renders it and `hf_maskdp.hub` checks it when loading.

The field names are the JSON keys of saved records: renaming one would stop old models from loading.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from hf_maskdp.constants import PRIVACY_MODES, PRIVACY_RECORD_FILE


@dataclass
class PrivacyRecord:
    privacy_mode: str
    epsilon: float | None  # None only for "none": no guarantee (not "ε = 0")
    delta: float | None
    accountant: str | None  # None: no private branch (public_only, none)
    noise_multiplier: float | None
    per_sample_clip_norm: float | None
    sample_rate: float | None  # q = private_batch_size / private_records
    steps: int
    epochs: float | None
    public_view: str | None
    mask_column: str | None
    training_rows: int | None  # every row; the public branch draws from all of them
    private_records: int | None  # rows with sensitive content (maskdp) or all rows (dpsgd)
    world_size: int
    # Records written before the mask provenance checks lack these two.
    trust_masks: bool | None = None
    fully_public_records: int | None = None

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> PrivacyRecord:
        """The record of a saved dict, checked (`check`): a missing or unknown field is an error."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.name not in record]
        unknown = sorted(set(record) - set(names))
        if missing or unknown:
            found = (f"lacks {missing}" if missing else "") + (" and " if missing and unknown else "")
            found += f"has unknown fields {unknown}" if unknown else ""
            raise ValueError(
                f"privacy record {found}: use the one MaskDPTrainer writes ({PRIVACY_RECORD_FILE}); "
                f"its fields are {names}"
            )
        return cls(**record).check()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> PrivacyRecord:
        """A known mode; private modes need a finite ε and a δ, "none" must have ε null."""
        mode = self.privacy_mode
        if mode not in PRIVACY_MODES:
            raise ValueError(f"privacy_mode {mode!r} is unknown: expected one of {PRIVACY_MODES}")
        if mode == "none" and self.epsilon is not None:
            raise ValueError("privacy_mode 'none' spends no budget and promises nothing: its epsilon must be null")
        if mode != "none" and (self.epsilon is None or not math.isfinite(self.epsilon) or self.delta is None):
            raise ValueError(
                f"privacy_mode {mode!r} needs a finite epsilon and a delta in the record, got "
                f"epsilon={self.epsilon!r}, delta={self.delta!r}"
            )
        return self
