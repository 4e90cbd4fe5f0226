"""`PrivacyRecord`: the one schema of what a run guarantees, and the names shared through `hf_maskdp.constants`."""

from __future__ import annotations

import argparse

import pytest
from maskdp_helpers import MASKDP_RECORD as RECORD

from hf_maskdp import constants
from hf_maskdp.cli import build_parser
from hf_maskdp.privacy.record import PrivacyRecord

# The JSON keys of every saved record, as MaskDPTrainer has written them: a rename would stop old models loading.
SAVED_KEYS = [
    "privacy_mode",
    "epsilon",
    "delta",
    "accountant",
    "noise_multiplier",
    "per_sample_clip_norm",
    "sample_rate",
    "steps",
    "epochs",
    "public_view",
    "mask_column",
    "training_rows",
    "private_records",
    "world_size",
    "trust_masks",
    "fully_public_records",
]


def test_field_names_are_the_saved_json_keys_and_round_trip():
    assert list(PrivacyRecord.from_dict(RECORD).to_dict()) == SAVED_KEYS
    assert PrivacyRecord.from_dict(RECORD).to_dict() == RECORD


def test_a_record_written_before_the_mask_checks_still_loads():
    old = {k: v for k, v in RECORD.items() if k not in ("trust_masks", "fully_public_records")}
    record = PrivacyRecord.from_dict(old)
    assert record.trust_masks is None and record.fully_public_records is None


def test_missing_and_unknown_fields_are_named():
    with pytest.raises(ValueError, match=r"lacks \['world_size'\].*maskdp_privacy.json"):
        PrivacyRecord.from_dict({k: v for k, v in RECORD.items() if k != "world_size"})
    with pytest.raises(ValueError, match=r"unknown fields \['dataset_size'\]"):
        PrivacyRecord.from_dict({**RECORD, "dataset_size": 16})
    with pytest.raises(ValueError, match="unknown: expected one of"):
        PrivacyRecord.from_dict({**RECORD, "privacy_mode": "dp"})


def _choices(parser: argparse.ArgumentParser, *path: str) -> dict[str, tuple]:
    """{option: choices} of the subcommand at `path` (e.g. "privacy", "epsilon")."""
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return {a.option_strings[0]: tuple(a.choices) for a in parser._actions if a.choices and a.option_strings}


def test_cli_choices_are_the_constants():
    parser = build_parser()
    train = _choices(parser, "train")
    assert train["--privacy-mode"] == constants.PRIVACY_MODES
    assert train["--public-view"] == constants.PUBLIC_VIEWS
    for command in ("epsilon", "calibrate"):
        assert _choices(parser, "privacy", command)["--accountant"] == constants.ACCOUNTANTS


def test_a_saved_record_is_checked_when_read(tmp_path):
    import json

    from hf_maskdp.hub import read_privacy_record

    (tmp_path / constants.PRIVACY_RECORD_FILE).write_text(json.dumps(RECORD))
    assert read_privacy_record(tmp_path) == RECORD
    (tmp_path / constants.PRIVACY_RECORD_FILE).write_text(json.dumps({**RECORD, "epsilon": None}))
    with pytest.raises(ValueError, match="needs a finite epsilon"):
        read_privacy_record(tmp_path)
