"""Hub round trips against the local Hub-compatible server started in conftest.py.

The real huggingface_hub / datasets / transformers clients run unchanged; the server honours
private repos (401 without the owner's token), which is what "private by default" is tested on.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from maskdp_helpers import MASKDP_RECORD  # noqa: E402
from storage_helpers import format2_row  # noqa: E402

from hf_maskdp.hub import (  # noqa: E402
    PRIVACY_RECORD_FILE,
    load_anonymized_dataset,
    push_anonymized_dataset,
    push_private_model,
    validate_repo_id,
    write_model_card,
)
from hf_maskdp.privacy.mask_checks import anonymizer_provenance  # noqa: E402
from hf_maskdp.storage import (  # noqa: E402
    STORAGE_FORMAT,
    encode_anonymized_clip,
    read_anonymized_clip,
    storage_features,
)
from hf_maskdp.video import encode_mask, encode_video, mask_feature, video_feature  # noqa: E402

ALICE, BOB = "hf_alice_write", "hf_bob_write"
ANONYMIZER = {
    "pose_estimator": "mediapipe-pose-0.10.21",
    "body_model": "smplh (user-supplied)",
    "inpainter": "opencv-telea",
    "refiner": "none",
    "seed": 1234,
}
NONE_RECORD = {
    **MASKDP_RECORD,
    "privacy_mode": "none",
    "epsilon": None,
    "delta": None,
    "accountant": None,
    "noise_multiplier": None,
    "per_sample_clip_norm": None,
    "sample_rate": None,
}


def _repo(name: str, user: str = "alice") -> str:
    return f"{user}/{name}-{uuid.uuid4().hex[:8]}"  # one session-wide server: unique names per test


def _clips(n: int = 3, seed: int = 0, storage_format: int = STORAGE_FORMAT):
    """Tiny anonymized-looking rows: random frames, masks, statuses (as the anonymizer writes them;
    `storage_format` 1 or 2: as it wrote them before)."""
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8) for _ in range(n)]
    masks = [rng.random((4, 16, 16)) < 0.6 for _ in range(n)]
    writers = {
        1: lambda f, m: {"video": {"path": "clip.mp4", "bytes": encode_video(f)}, "sensitive_mask": encode_mask(m)},
        2: lambda f, m: format2_row(f, m, mask_block=1),
        3: lambda f, m: encode_anonymized_clip(f, m, mask_block=1),  # exact, so the tests can compare masks
    }
    stored = [writers[storage_format](frames[i], masks[i]) for i in range(n)]
    rows = [
        {
            **stored[i],
            "avatar_mask": encode_mask(~masks[i]),
            "anonymization": ["ok", "partial: lost track", "no_person"][i % 3],
            "provenance": anonymizer_provenance(ANONYMIZER),
            "label": i % 2,
        }
        for i in range(n)
    ]
    columns = {
        1: {"video": video_feature(), "sensitive_mask": mask_feature()},
        2: {**storage_features(), "avatar_layer": video_feature()},
        3: storage_features(),
    }[storage_format]
    features = datasets.Features(
        {
            **columns,
            "avatar_mask": mask_feature(),
            "anonymization": datasets.Value("string"),
            "provenance": datasets.Value("string"),
            "label": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_list(rows, features=features), masks


def _anonymous_get(url: str) -> int:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", ["name-only", "a/b/c", "/name", "user/", "us er/name", "user/na..me", 42])
def test_repo_id_must_be_user_slash_name(bad):
    with pytest.raises(ValueError, match="user/name"):
        validate_repo_id(bad)


def test_push_without_token_says_how_to_log_in(hub):
    dataset, _ = _clips(1)
    repo_id = _repo("no-token")
    with pytest.raises(ValueError, match="hf auth login"):
        push_anonymized_dataset(dataset, repo_id)
    assert ("dataset", repo_id) not in hub.state.repos


def test_wrong_token_is_a_clear_error_before_any_upload(hub):
    dataset, _ = _clips(1)
    repo_id = _repo("wrong-token")
    with pytest.raises(ValueError, match="rejected the token.*hf auth login"):
        push_anonymized_dataset(dataset, repo_id, token="hf_not_a_real_token")
    assert ("dataset", repo_id) not in hub.state.repos


def test_token_of_another_user_cannot_push_there():
    dataset, _ = _clips(1)
    with pytest.raises(ValueError, match="no write access to the namespace 'alice'"):
        push_anonymized_dataset(dataset, _repo("bobs-attempt"), token=BOB)


def test_dataset_without_masks_is_refused_before_upload(hub, tmp_path):
    dataset, _ = _clips(1)
    unmasked = dataset.remove_columns(["sensitive_mask"])
    repo_id = _repo("unmasked")
    with pytest.raises(ValueError, match="no 'sensitive_mask' column.*anonymize"):
        push_anonymized_dataset(unmasked, repo_id, token=ALICE)
    assert ("dataset", repo_id) not in hub.state.repos
    unmasked.save_to_disk(tmp_path / "unmasked")
    with pytest.raises(ValueError, match="no 'sensitive_mask' column"):
        load_anonymized_dataset(str(tmp_path / "unmasked"))


def test_malformed_masks_are_refused(tmp_path):
    dataset, _ = _clips(2)
    corrupt = dataset.map(
        lambda row, i: {
            "sensitive_mask": {"shape": [4, 16, 16], "packed": b"junk"} if i == 1 else row["sensitive_mask"]
        },
        with_indices=True,
    )
    corrupt.save_to_disk(tmp_path / "corrupt")
    with pytest.raises(ValueError, match="row 1 has a malformed 'sensitive_mask'"):
        load_anonymized_dataset(str(tmp_path / "corrupt"))
    # Only the second row is wrong: every row's mask is checked against its clip.
    wrong_shape = dataset.map(
        lambda row, i: {"sensitive_mask": encode_mask(np.ones((4, 8, 8), bool)) if i == 1 else row["sensitive_mask"]},
        with_indices=True,
    )
    with pytest.raises(ValueError, match=r"row 1 'video' is \[4, 16, 16\] \(T, H, W\) but its mask is \[4, 8, 8\]"):
        push_anonymized_dataset(wrong_shape, _repo("wrong-shape"), token=ALICE)
    # formats 2 and 3: the avatar layer must fit the mask too (format 3's raw stream: its frames counted)
    small_layer = encode_anonymized_clip(np.zeros((4, 40, 40, 3), np.uint8), np.ones((4, 40, 40), bool))["avatar_layer"]
    wrong_layer = dataset.map(
        lambda row, i: {"avatar_layer": small_layer if i == 1 else row["avatar_layer"]}, with_indices=True
    )
    with pytest.raises(
        ValueError, match=r"row 1 'avatar_layer' is \[4, 40, 40\] \(T, H, W\) but its mask is \[4, 16, 16\]"
    ):
        push_anonymized_dataset(wrong_layer, _repo("wrong-layer"), token=ALICE)


# --------------------------------------------------------------------------- datasets


def test_dataset_round_trip_is_private_by_default(hub, tmp_path):
    dataset, masks = _clips(3)
    repo_id = _repo("clips")
    url = push_anonymized_dataset(dataset, repo_id, token=ALICE, anonymizer_info=ANONYMIZER, summary={"people": 4})
    assert url.endswith(f"datasets/{repo_id}")
    assert hub.repo(repo_id, "dataset").private
    assert _anonymous_get(hub.url(repo_id, "README.md", "dataset")) == 401

    # Load in a fresh process with an empty cache: once with the owner's token, once anonymously.
    script = f"""
import json, numpy as np
from hf_maskdp import read_anonymized_clip
from hf_maskdp.hub import load_anonymized_dataset
out = {{}}
try:  # first, while the cache is empty (datasets falls back to its cache when the Hub says no)
    load_anonymized_dataset({repo_id!r}, split="train")
except ValueError as err:
    out["anonymous"] = str(err)
ds = load_anonymized_dataset({repo_id!r}, split="train", token={ALICE!r})
out.update(n=len(ds), masks=[np.asarray(r["sensitive_mask"]).tolist() for r in ds],
           dtype=str(ds[0]["sensitive_mask"].dtype), video=sorted(ds[0]["video"]), labels=list(ds["label"]),
           frames=[read_anonymized_clip(r)[0].tolist() for r in ds])
print("RESULT" + json.dumps(out))
"""
    env = {**os.environ, "HF_HOME": str(tmp_path / "fresh_home")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["n"] == 3 and result["labels"] == [0, 1, 0]
    assert result["dtype"] == "bool" and result["video"] == ["bytes", "path"]
    for loaded, original in zip(result["masks"], masks):
        np.testing.assert_array_equal(np.array(loaded, dtype=bool), original)
    for loaded, row in zip(result["frames"], dataset):  # the stored videos came back unchanged
        np.testing.assert_array_equal(np.array(loaded, dtype=np.uint8), read_anonymized_clip(row)[0])
    assert "private" in result["anonymous"] and "token=" in result["anonymous"], result["anonymous"]

    # The card says what was done, what the mask means, the counts and the license caveat.
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(repo_id, repo_type="dataset", token=ALICE)
    text = card.content
    for fact in (
        "mediapipe-pose-0.10.21",
        "smplh (user-supplied)",
        "opencv-telea",
        "| 1234 |",
        "**`True` means the pixel may carry real-world",
        "MaskDP relies on `sensitive_mask`",
        "The backgrounds are real",
        "Clips: 3",
        "Frames: 12",
        "People replaced: 4",
        "`no_person`: 1, `ok`: 1, `partial`: 1",
        "non-commercial",
        "MaskDPTrainer",
        "Storage format 3 (3 clips)",
        "H.264 yuv420p in mp4 at crf 18 and `avatar_layer` at crf 23 as a raw H.264 stream (binary), preset veryfast",
        "hf_maskdp.read_anonymized_clip",
        f'load_anonymized_dataset("{repo_id}"',
    ):
        assert fact in text, fact
    # datasets' own metadata survived the card rewrite (it is what load_dataset reads the features from)
    assert card.data["configs"][0]["config_name"] == "default" and "maskdp" in card.data["tags"]


def test_public_push_needs_the_explicit_flag_and_warns(hub, caplog, tmp_path):
    dataset, masks = _clips(3)
    splits = datasets.DatasetDict({"train": dataset.select([0, 1]), "test": dataset.select([2])})
    repo_id = _repo("public")
    with caplog.at_level(logging.WARNING, logger="hf_maskdp.hub"):
        push_anonymized_dataset(splits, repo_id, private=False, token=ALICE)
    assert "PUBLIC" in caplog.text and "REAL backgrounds" in caplog.text
    assert not hub.repo(repo_id, "dataset").private
    assert _anonymous_get(hub.url(repo_id, "README.md", "dataset")) == 200
    loaded = load_anonymized_dataset(repo_id, cache_dir=str(tmp_path / "cache"))  # no token needed
    assert {name: len(split) for name, split in loaded.items()} == {"train": 2, "test": 1}
    np.testing.assert_array_equal(loaded["test"][0]["sensitive_mask"], masks[2])
    with pytest.raises(ValueError, match="streaming"):
        load_anonymized_dataset(repo_id, streaming=True)

    with pytest.raises(ValueError, match="private must be True or False"):
        push_anonymized_dataset(dataset, _repo("truthy"), private="no", token=ALICE)


def test_private_push_into_an_existing_public_repo_is_refused(hub):
    from huggingface_hub import HfApi

    repo_id = _repo("was-public")
    HfApi(token=ALICE).create_repo(repo_id, repo_type="dataset", private=False)
    dataset, _ = _clips(1)
    with pytest.raises(ValueError, match="already exists and is PUBLIC"):
        push_anonymized_dataset(dataset, repo_id, token=ALICE)
    assert hub.repo(repo_id, "dataset").commits[hub.repo(repo_id, "dataset").main].keys() == {".gitattributes"}


def test_card_states_how_the_mask_was_rounded():
    from hf_maskdp.hub import dataset_card

    summary = {"clips": 2, "frames": 8, "splits": {"train": 2}, "storage_formats": {3: 2}}
    rounded = "`sensitive_mask` is rounded out to 2x2-pixel tiles"
    assert rounded in dataset_card("a/b", {**ANONYMIZER, "mask_block": 2}, summary).content
    for info in ({**ANONYMIZER, "mask_block": 1}, ANONYMIZER):  # exact, or written before mask_block existed
        assert "rounded out" not in dataset_card("a/b", info, summary).content


@pytest.mark.parametrize("storage_format", [3, 2, 1])
def test_local_save_to_disk_round_trip(tmp_path, caplog, storage_format):
    dataset, masks = _clips(2, storage_format=storage_format)
    datasets.DatasetDict({"train": dataset}).save_to_disk(tmp_path / "dd")
    with caplog.at_level(logging.INFO, logger="hf_maskdp.hub"):
        loaded = load_anonymized_dataset(str(tmp_path / "dd"), split="train")
    notes = [line for line in caplog.text.splitlines() if "storage format" in line]  # one line for old formats
    assert len(notes) == (storage_format != 3)
    assert all(f"storage format {storage_format} (" in note for note in notes)
    assert loaded[1]["avatar_mask"].dtype == bool
    np.testing.assert_array_equal(loaded[1]["avatar_mask"], ~masks[1])
    assert loaded[1]["video"]["bytes"] == dataset[1]["video"]["bytes"]
    frames, mask = read_anonymized_clip(
        loaded[1]
    )  # masks already decoded by the loader: read_anonymized_clip takes both
    np.testing.assert_array_equal(mask, masks[1])
    np.testing.assert_array_equal(frames, read_anonymized_clip(dataset[1])[0])


# --------------------------------------------------------------------------- model cards and models


def test_model_card_states_the_budget_spent(tmp_path):
    card = write_model_card(
        tmp_path,
        MASKDP_RECORD,
        model_name="tiny-maskdp",
        dataset_info={"name": "alice/clips", "split": "train", "anonymizer": ANONYMIZER},
        eval_results={"eval_accuracy": 0.625, "eval_runtime": 1.5},
    )
    text = (tmp_path / "README.md").read_text()
    assert text == str(card)
    for fact in (
        "(ε = 0.8731, δ = 1e-05)-MaskDP",
        "| ε spent | 0.8731 |",
        "| δ | 1e-05 |",
        "| Accountant | rdp |",
        "| Noise multiplier σ | 1.37 |",
        "| Per-sample clip norm C | 1.0 |",
        "| Sampling rate q (Poisson) | 0.125 |",
        "| Optimizer steps | 24 |",
        "| Epochs | 3.0 |",
        "Not protected**: the labels, the masks themselves, and the avatars' pose",
        "alice/clips",
        "smplh (user-supplied)",
        "| accuracy | 0.6250 |",
    ):
        assert fact in text, fact
    assert "runtime" not in text
    result = card.data.eval_results[0]
    assert (result.metric_type, result.metric_value, result.dataset_type) == ("accuracy", 0.625, "alice/clips")


def test_model_card_for_a_non_private_run_says_so_plainly(tmp_path):
    write_model_card(tmp_path, NONE_RECORD, model_name="baseline")
    text = (tmp_path / "README.md").read_text()
    assert "**Not private.**" in text and "no privacy guarantee" in text
    assert "ε = 0" not in text.replace('not "ε = 0"', "") and "ε spent | None" not in text
    assert "differential-privacy" not in text


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epsilon": 0.0}, "epsilon must be null"),  # `none` claiming ε = 0 would be a false guarantee
        ({"privacy_mode": "maskdp", "epsilon": None}, "needs a finite epsilon"),
        ({"privacy_mode": "dp"}, "unknown"),
    ],
)
def test_inconsistent_privacy_records_are_refused(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        write_model_card(tmp_path, {**NONE_RECORD, **change})
    with pytest.raises(ValueError, match="lacks"):
        write_model_card(tmp_path, {"privacy_mode": "maskdp", "epsilon": 1.0})


def _tiny_videomae(output_dir):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    config = VideoMAEConfig(
        image_size=16,
        patch_size=8,
        num_frames=4,
        tubelet_size=2,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
    )
    model = VideoMAEForVideoClassification(config)
    model.config.maskdp = MASKDP_RECORD
    model.save_pretrained(output_dir)
    (output_dir / PRIVACY_RECORD_FILE).write_text(json.dumps(MASKDP_RECORD))
    return model


def test_model_push_is_private_and_loads_with_from_pretrained(hub, tmp_path):
    import torch
    from huggingface_hub import ModelCard
    from transformers import AutoModelForVideoClassification

    model = _tiny_videomae(tmp_path / "out")
    repo_id = _repo("tiny-maskdp")
    url = push_private_model(tmp_path / "out", repo_id, token=ALICE)
    assert url.endswith(repo_id) and hub.repo(repo_id).private
    assert _anonymous_get(hub.url(repo_id, "config.json")) == 401

    loaded = AutoModelForVideoClassification.from_pretrained(repo_id, token=ALICE, cache_dir=tmp_path / "c1")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.config.maskdp["epsilon"] == MASKDP_RECORD["epsilon"]
    card = ModelCard.load(repo_id, token=ALICE)
    assert "(ε = 0.8731, δ = 1e-05)-MaskDP" in card.content and "maskdp" in card.data.tags

    # Anonymous and foreign readers (fresh caches, so nothing is served from disk) are turned away.
    from huggingface_hub.errors import RepositoryNotFoundError

    for token in (None, BOB):
        with pytest.raises((OSError, RepositoryNotFoundError)):
            AutoModelForVideoClassification.from_pretrained(repo_id, token=token, cache_dir=tmp_path / f"c-{token}")


def test_model_push_requires_a_saved_model_with_its_privacy_record(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        push_private_model(tmp_path, _repo("empty"), token=ALICE)
    _tiny_videomae(tmp_path / "out")
    (tmp_path / "out" / PRIVACY_RECORD_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=PRIVACY_RECORD_FILE):
        push_private_model(tmp_path / "out", _repo("no-record"), token=ALICE)


def test_trainer_round_trip_dataset_to_private_model(hub, tmp_path):
    """Anonymized dataset on the Hub -> MaskDPTrainer -> trainer.push_to_hub -> from_pretrained."""
    import torch
    from huggingface_hub import ModelCard
    from maskdp_helpers import tiny_args, tiny_collator, tiny_model
    from transformers import AutoModelForVideoClassification

    from hf_maskdp.training.trainer import MaskDPTrainer

    dataset, _ = _clips(4, seed=3)
    data_repo = _repo("train-clips")
    push_anonymized_dataset(dataset, data_repo, token=ALICE, anonymizer_info=ANONYMIZER)
    train = load_anonymized_dataset(data_repo, split="train", token=ALICE, cache_dir=str(tmp_path / "dcache"))

    model_repo = _repo("maskdp-model")
    args = tiny_args(tmp_path, hub_model_id=model_repo, hub_token=ALICE, max_steps=2)
    trainer = MaskDPTrainer(model=tiny_model(), args=args, data_collator=tiny_collator(), train_dataset=train)
    trainer.train()
    trainer.push_to_hub(dataset=data_repo)
    assert hub.repo(model_repo).private  # private by default (MaskDPConfig.hub_private_repo)
    assert _anonymous_get(hub.url(model_repo, "config.json")) == 401

    loaded = AutoModelForVideoClassification.from_pretrained(model_repo, token=ALICE, cache_dir=tmp_path / "mcache")
    for (name, a), (_, b) in zip(trainer.model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    record = loaded.config.maskdp
    assert record["privacy_mode"] == "maskdp" and record["steps"] == 2 and record["epsilon"] > 0
    card = ModelCard.load(model_repo, token=ALICE).content
    assert f"(ε = {record['epsilon']:.4g}, δ = {record['delta']:.3g})-MaskDP" in card
    assert f"| ε spent | {record['epsilon']} |" in card and data_repo in card
