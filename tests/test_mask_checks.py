"""Defence in depth (issue 18): masks nobody can vouch for are refused by the loader and the trainer,
accounting inputs are checked, and bad data fails before the first private step."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from maskdp_helpers import make_rows, tiny_args, tiny_collator, tiny_model

datasets = pytest.importorskip("datasets")

from hf_maskdp.hub import load_anonymized_dataset, write_model_card  # noqa: E402
from hf_maskdp.privacy.mask_checks import anonymizer_provenance, check_masks  # noqa: E402
from hf_maskdp.storage import cover_blocks  # noqa: E402
from hf_maskdp.training.trainer import MaskDPTrainer  # noqa: E402
from hf_maskdp.video import encode_mask, encode_video, mask_feature, video_feature  # noqa: E402

ALL_PUBLIC = encode_mask(np.zeros((6, 20, 24), bool))


def _dataset(rows):
    """Rows (maskdp_helpers.make_rows) stored as the anonymizer stores them: mp4 bytes, packed masks."""
    columns = [c for c in ("sensitive_mask", "avatar_mask", "provenance") if c in rows[0]]
    features = {
        "video": video_feature(),
        "label": datasets.Value("int64"),
        **{c: datasets.Value("string") if c == "provenance" else mask_feature() for c in columns},
    }
    data = {
        "video": [{"path": None, "bytes": encode_video(r["video"])} for r in rows],
        "label": [r["label"] for r in rows],
        **{c: [r[c] for r in rows] for c in columns},
    }
    return datasets.Dataset.from_dict(data, features=datasets.Features(features))


def _forged(rows, which=(1, 3)):
    """The attack of the issue: some rows' masks flipped to all-public while their avatars cover part."""
    return [{**row, "sensitive_mask": ALL_PUBLIC} if i in which else row for i, row in enumerate(rows)]


def _trainer(tmp_path, rows, **overrides):
    return MaskDPTrainer(
        model=tiny_model(), args=tiny_args(tmp_path, **overrides), train_dataset=rows, data_collator=tiny_collator()
    )


# --------------------------------------------------------------------------- the check itself


def test_public_outside_the_avatar_is_found_on_the_packed_bits():
    shape = (3, 5, 7)  # 105 pixels: the last packed byte has 7 padding bits, which must not count
    sensitive = np.ones(shape, bool)
    sensitive[:, 1:3, 2:5] = False
    avatar = ~sensitive
    row = {
        "video": np.zeros((*shape, 3), np.uint8),
        "sensitive_mask": encode_mask(sensitive),
        "avatar_mask": encode_mask(avatar),
        "provenance": anonymizer_provenance(),
    }
    assert check_masks([row]).fully_public == []
    for t, y, x in [(0, 1, 2), (2, 2, 4)]:  # one public pixel outside the avatar, first and last of the box
        avatar_short = avatar.copy()
        avatar_short[t, y, x] = False
        with pytest.raises(ValueError, match=r"1 of 1 rows \(rows 0\) have public pixels outside 'avatar_mask'"):
            check_masks([{**row, "avatar_mask": encode_mask(avatar_short)}])
    # decoded arrays (a dataset read through its transform) are checked the same way
    assert check_masks([{**row, "sensitive_mask": sensitive, "avatar_mask": avatar}]).rows == 1
    everything = {
        **row,
        "sensitive_mask": encode_mask(np.zeros(shape, bool)),
        "avatar_mask": encode_mask(np.ones(shape, bool)),
    }
    assert check_masks([row, everything]).fully_public == [1]


def test_masks_packed_per_tile_are_checked_the_same_way():
    shape = (2, 9, 13)  # partial tiles at the right and bottom edges
    sensitive = np.ones(shape, bool)
    sensitive[:, 2:6, 4:8] = False
    avatar = cover_blocks(~sensitive, 4)  # as the anonymizer stores it: rounded out, one bit per tile
    row = {
        "video": np.zeros((*shape, 3), np.uint8),
        "sensitive_mask": encode_mask(sensitive, block=2),
        "avatar_mask": encode_mask(avatar, block=4),
        "provenance": anonymizer_provenance(),
    }
    assert check_masks([row]).rows == 1
    forged = sensitive.copy()
    forged[1, 8, 12] = False  # one public pixel in a corner no avatar tile covers
    with pytest.raises(ValueError, match=r"1 of 1 rows \(rows 0\) have public pixels outside 'avatar_mask'"):
        check_masks([{**row, "sensitive_mask": encode_mask(forged)}])
    assert check_masks([{**row, "sensitive_mask": encode_mask(np.ones(shape, bool), block=2)}]).fully_public == []


def test_forged_masks_are_refused_by_the_loader_naming_the_rows(tmp_path):
    rows = make_rows(5, mask="random")
    _dataset(rows).save_to_disk(str(tmp_path / "good"))
    assert len(load_anonymized_dataset(str(tmp_path / "good"))) == 5
    _dataset(_forged(rows)).save_to_disk(str(tmp_path / "forged"))
    with pytest.raises(ValueError, match=r"2 of 5 rows \(rows 1, 3\) have public pixels outside 'avatar_mask'"):
        load_anonymized_dataset(str(tmp_path / "forged"))
    with pytest.raises(ValueError, match="public pixels outside"):  # not even on the user's word: it contradicts itself
        load_anonymized_dataset(str(tmp_path / "forged"), trust_masks=True)
    # A real clip with a hand-made all-public mask, no avatar_mask, no status, no provenance.
    hand_made = [{"video": r["video"], "sensitive_mask": ALL_PUBLIC, "label": r["label"]} for r in rows[:2]]
    _dataset(hand_made).save_to_disk(str(tmp_path / "hand_made"))
    with pytest.raises(ValueError, match=r"2 of 2 rows \(rows 0, 1\) have no anonymizer provenance.*trust_masks=True"):
        load_anonymized_dataset(str(tmp_path / "hand_made"))
    loaded = load_anonymized_dataset(str(tmp_path / "hand_made"), trust_masks=True)  # on the user's word
    assert not loaded[0]["sensitive_mask"].any()


def test_provenance_survives_the_hub_and_a_forged_push_is_refused_on_load(hub, tmp_path):
    rows = make_rows(3, mask="random")
    _dataset(rows).push_to_hub("alice/vouched", token="hf_alice_write", private=True)  # datasets' own push
    loaded = load_anonymized_dataset(
        "alice/vouched", split="train", token="hf_alice_write", cache_dir=str(tmp_path / "c1")
    )
    assert json.loads(loaded[0]["provenance"])["invariant"] == "public ⊆ avatar"
    _dataset(_forged(rows, which=(2,))).push_to_hub("alice/forged", token="hf_alice_write", private=True)
    with pytest.raises(ValueError, match=r"rows \(rows 2\) have public pixels outside"):
        load_anonymized_dataset("alice/forged", split="train", token="hf_alice_write", cache_dir=str(tmp_path / "c2"))


def test_missing_local_path_says_it_does_not_exist(tmp_path):
    for missing in (tmp_path / "nope", "./no/such/folder", "not_here"):
        with pytest.raises(FileNotFoundError, match="does not exist: no such local folder"):
            load_anonymized_dataset(str(missing))
    (tmp_path / "file.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="is a file"):
        load_anonymized_dataset(str(tmp_path / "file.parquet"))


# --------------------------------------------------------------------------- the trainer


@pytest.mark.parametrize("mode", ["maskdp", "public_only"])
def test_trainer_refuses_forged_masks_before_any_step(tmp_path, mode):
    extra = {"noise_multiplier": None} if mode == "public_only" else {}
    rows = make_rows(6, mask="random")
    trainer = _trainer(tmp_path, _forged(rows), privacy_mode=mode, **extra)
    with pytest.raises(ValueError, match=r"train_dataset: .*2 of 6 rows \(rows 1, 3\) have public pixels outside"):
        trainer.train()
    assert trainer.state.global_step == 0
    unvouched = [{k: v for k, v in row.items() if k != "provenance"} for row in rows]
    with pytest.raises(ValueError, match=r"6 of 6 rows .* have no anonymizer provenance.*--trust-masks"):
        _trainer(tmp_path, unvouched, privacy_mode=mode, **extra).train()
    _trainer(tmp_path, unvouched, privacy_mode="dpsgd").train()  # dpsgd protects whole clips: masks unused


def test_trust_masks_override_is_recorded_and_stated_on_the_card(tmp_path, caplog):
    rows = [
        {"video": r["video"], "sensitive_mask": r["sensitive_mask"], "label": r["label"]}
        for r in make_rows(4, mask="random")
    ]  # masks from elsewhere: no avatar, no provenance
    rows[2]["sensitive_mask"] = ALL_PUBLIC
    with caplog.at_level(logging.WARNING, logger="hf_maskdp.training.trainer"):
        trainer = _trainer(tmp_path, rows, trust_masks=True)
    assert "trust_masks=True" in caplog.text
    trainer.train()
    record = trainer.privacy_record()
    assert record["trust_masks"] is True and record["fully_public_records"] == 1
    card = write_model_card(tmp_path / "card", record).content
    assert "Masks not verified (`trust_masks=True`)" in card and "| Masks verified | **NO: trust_masks=True**" in card
    assert "| Records with no sensitive pixel (public only) | 1 |" in card
    checked = _trainer(tmp_path / "v", make_rows(4, mask="random"))
    checked.train()
    assert checked.privacy_record()["trust_masks"] is False
    assert "| Masks verified | yes" in write_model_card(tmp_path / "card2", checked.privacy_record()).content


def test_train_command_refuses_a_forged_dataset_and_trusts_on_request(tmp_path, capsys):
    from hf_maskdp.cli import main

    rows = make_rows(4, mask="random")
    datasets.DatasetDict({"train": _dataset(_forged(rows, which=(0,)))}).save_to_disk(str(tmp_path / "forged"))
    unvouched = [{k: v for k, v in r.items() if k not in ("provenance", "avatar_mask")} for r in rows]
    unvouched[1]["sensitive_mask"] = ALL_PUBLIC
    datasets.DatasetDict({"train": _dataset(unvouched)}).save_to_disk(str(tmp_path / "own"))
    base = [
        "--private-batch-size",
        "2",
        "--epochs",
        "1",
        "--noise-multiplier",
        "1.0",
        "--image-size",
        "16",
        "--num-frames",
        "4",
        "--layers",
        "1",
        "--hidden-size",
        "64",
        "--cpu",
    ]
    assert main(["train", str(tmp_path / "forged"), str(tmp_path / "m1"), *base]) == 2
    err = capsys.readouterr().err
    assert "rows (rows 0) have public pixels outside 'avatar_mask'" in err and "Traceback" not in err
    assert main(["train", str(tmp_path / "own"), str(tmp_path / "m2"), *base]) == 2
    assert "have no anonymizer provenance" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "own"), str(tmp_path / "m3"), *base, "--trust-masks"]) == 0
    assert "1 of 4 training clips have no sensitive pixel (public only); masks TRUSTED" in capsys.readouterr().out
    assert "Masks not verified" in (tmp_path / "m3" / "README.md").read_text()


# --------------------------------------------------------------------------- labels and shapes, before step 1


@pytest.mark.parametrize(
    "label, problem",
    [
        (3, r"1 of 4 rows have a label outside \[0, 3\) \(first: row 2, label 3\).*num_labels=3"),
        (-1, r"label outside \[0, 3\) \(first: row 2, label -1\)"),
        (1.5, r"1 of 4 rows have a label that is not a class index \(first: row 2, 1.5\)"),
        ("walk", r"not a class index \(first: row 2, 'walk'\).*class_encode_column"),
    ],
)
def test_labels_the_model_cannot_take_fail_before_training(tmp_path, label, problem):
    rows = make_rows(4)
    rows[2]["label"] = label
    trainer = _trainer(tmp_path, rows)
    with pytest.raises(ValueError, match=problem):
        trainer.train()
    assert trainer.state.global_step == 0
    as_dataset = _dataset(make_rows(4)).map(lambda row, i: {"label": 7 if i == 3 else row["label"]}, with_indices=True)
    with pytest.raises(ValueError, match=r"first: row 3, label 7"):
        _trainer(tmp_path, as_dataset).train()


@pytest.mark.parametrize("mode", ["maskdp", "dpsgd"])
def test_a_wrong_mask_shape_in_a_later_row_fails_before_the_first_step(tmp_path, mode):
    rows = make_rows(6)
    wrong = np.ones((6, 20, 20), bool)
    rows[4] = {**rows[4], "sensitive_mask": encode_mask(wrong), "avatar_mask": encode_mask(~wrong)}
    trainer = _trainer(tmp_path, _dataset(rows), privacy_mode=mode)
    with pytest.raises(
        ValueError,
        match=r"rows 4\) have a 'sensitive_mask' whose shape is not their clip's.*"
        r"'video' is \[6, 20, 24\] .* but its mask is \[6, 20, 20\]",
    ):
        trainer.train()
    assert trainer.state.global_step == 0


# --------------------------------------------------------------------------- accounting inputs


def test_delta_and_sigma_are_checked(tmp_path, caplog):
    with pytest.raises(ValueError, match=r"target_delta=0.5 must be in \(0, 0.5\).*fails outright"):
        tiny_args(tmp_path, target_delta=0.5)
    with pytest.raises(ValueError, match="noise_multiplier=inf must be > 0.*finite"):
        tiny_args(tmp_path, noise_multiplier=float("inf"))
    with caplog.at_level(logging.WARNING, logger="hf_maskdp.training.trainer"):
        _trainer(tmp_path, make_rows(4, mask="all"), target_delta=0.3).get_train_dataloader()
    assert "delta=0.3 is larger than 1/N = 1/4: δ is the probability that the guarantee fails outright" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_maskdp.training.trainer"):
        _trainer(tmp_path, make_rows(4, mask="all")).get_train_dataloader()
    assert "larger than 1/N" not in caplog.text


def test_privacy_cli_warns_about_delta_and_refuses_pld_it_cannot_discretise(capsys):
    from hf_maskdp.cli import main

    run = ["--sample-rate", "0.01", "--steps", "100"]
    assert main(["privacy", "epsilon", "--noise-multiplier", "1e-3", *run, "--accountant", "pld"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "too small for the pld accountant" in err and "accountant='rdp'" in err
    assert (
        main(["privacy", "epsilon", "--noise-multiplier", "1.0", *run, "--delta", "0.1", "--dataset-size", "12"]) == 0
    )
    assert "warning: delta=0.1 is larger than 1/N = 1/12" in capsys.readouterr().err
    assert main(["privacy", "epsilon", "--noise-multiplier", "1.0", *run, "--delta", "0.02"]) == 0  # N >= 1/q = 100
    assert "larger than 1/N = 1/100" in capsys.readouterr().err
    assert main(["privacy", "epsilon", "--noise-multiplier", "1.0", *run]) == 0
    assert capsys.readouterr().err == ""


def test_pld_calibration_steps_over_sigmas_it_cannot_discretise():
    from hf_maskdp.privacy.accounting import calibrate_noise_multiplier, compute_epsilon

    # a target so loose that the search walks down to tiny σ, where PLD refuses: it stops there
    sigma = calibrate_noise_multiplier(1e6, 0.5, steps=10, delta=1e-5, accountant="pld")
    assert compute_epsilon(0.5, sigma, steps=10, delta=1e-5, accountant="pld") <= 1e6


def test_trainer_finds_the_private_records_on_the_packed_bits_without_decoding_masks(tmp_path):
    """With `load_anonymized_dataset`'s transform set, planning the run decodes no mask column (the
    trainer reads the packed bits through Arrow): only row 0, collated once as a format check."""
    from hf_maskdp.hub import DecodeMasks

    rows = make_rows(6, mask="random")
    rows[2]["sensitive_mask"] = rows[2]["avatar_mask"] = encode_mask(np.zeros((6, 20, 24), bool))
    rows[2]["avatar_mask"] = encode_mask(np.ones((6, 20, 24), bool))  # all public, all avatar: vouched for
    decoded = []

    def counting_decode(batch):
        decoded.extend(batch["sensitive_mask"])
        return DecodeMasks()(batch)

    dataset = _dataset(rows).with_transform(counting_decode)
    trainer = _trainer(tmp_path, dataset)
    trainer.get_train_dataloader()  # plans the run: masks checked, private records chosen
    assert trainer._private_indices == [0, 1, 3, 4, 5] and trainer.sample_rate == 2 / 5
    assert len(decoded) == 1  # row 0's format check; the old code decoded every mask twice
