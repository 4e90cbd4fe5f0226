"""Attacks on the anonymization (fast form of scripts/attack_anonymization.py).

The identity probe must beat chance on the original clips (so these tests can fail) and must
not on the public view of anonymized clips, which is what MaskDP publishes without noise.
"""

from __future__ import annotations

import numpy as np
import pytest

mp = pytest.importorskip("mediapipe")

from hf_maskdp.anonymize.pipeline import AnonymizerConfig, AvatarAnonymizer  # noqa: E402
from hf_maskdp.data import build_action_dataset  # noqa: E402
from hf_maskdp.privacy.attacks import (  # noqa: E402
    binomial_summary,
    chance_accuracy,
    clip_pixels,
    face_check,
    identity_probe,
)
from hf_maskdp.storage import encode_anonymized_clip  # noqa: E402
from hf_maskdp.training.collator import VideoClipCollator  # noqa: E402
from hf_maskdp.video import decode_mask, load_video_frames  # noqa: E402

pytestmark = pytest.mark.timeout(300)
SIGNIFICANT = 0.01  # one-sided p-value below which a probe "beats chance"


@pytest.fixture(scope="module")
def data():
    """20 train + 12 test clips of 4 people, anonymized, the input kept as `original`."""
    data = build_action_dataset(
        num_train=20, num_test=12, num_frames=4, size=96, num_identities=4, seed=1, progress=False
    )
    data = data.map(lambda row: {"original": row["video"]})
    anonymizer = AvatarAnonymizer(AnonymizerConfig(seed=0, errors="keep"))
    return data.map(anonymizer, batched=True, batch_size=8, features=anonymizer.features(data["train"].features))


def probe(data, view: str):
    collator = VideoClipCollator(
        num_frames=4, image_size=64, video_column="original" if view == "original" else "video"
    )
    splits = []
    for split in ("train", "test"):
        rows = list(data[split])
        if view == "original":  # the input clip itself, not composed with the avatar layer through the mask
            rows = [{k: v for k, v in r.items() if k != "sensitive_mask"} for r in rows]
        if view == "broken masks":  # a broken anonymizer: the real person published as public pixels
            rows = [
                {**r, **encode_anonymized_clip(load_video_frames(r["original"]), ~decode_mask(r["person_mask"]))}
                for r in rows
            ]  # stored as the anonymizer stores clips
        pixels = clip_pixels(rows, collator, public_view=view in ("public view", "broken masks"))
        splits += [pixels, [r["identity"] for r in rows]]
    return identity_probe(*splits, probe="linear", view=view)


def test_probe_recognizes_people_in_original_clips(data):
    result = probe(data, "original")
    assert result.p_value < SIGNIFICANT and result.accuracy > 2 * result.chance, result


def test_public_view_of_anonymized_clips_is_not_recognized(data):
    statuses = [status for split in data.values() for status in split["anonymization"]]
    assert statuses.count("ok") >= 0.75 * len(statuses)  # others are kept all-sensitive: nothing public
    result = probe(data, "public view")
    assert result.p_value >= SIGNIFICANT, f"identity leaks through the public view: {result}"


def test_public_view_probe_catches_broken_masks(data):
    """The same public-view probe, on masks that mark the real person public, finds the people."""
    result = probe(data, "broken masks")
    assert result.p_value < SIGNIFICANT, result


def test_clopper_pearson_interval_and_binomial_test():
    # exact textbook values: 0 of 10 -> upper bound 1 - 0.025 ** (1/10); 10 of 10 -> lower bound 0.025 ** (1/10)
    none, every = binomial_summary(0, 10, 0.5), binomial_summary(10, 10, 0.5)
    assert none["ci_low"] == 0 and none["ci_high"] == pytest.approx(1 - 0.025**0.1)
    assert every["ci_high"] == 1 and every["ci_low"] == pytest.approx(0.025**0.1)
    assert every["p_value"] == pytest.approx(0.5**10) and none["p_value"] == 1.0
    half = binomial_summary(5, 10, 0.5)
    assert half["ci_low"] < 0.5 < half["ci_high"] and half["p_value"] > 0.5
    with pytest.raises(ValueError, match="correct <= total"):
        binomial_summary(11, 10, 0.5)


def test_chance_is_what_an_identity_blind_guess_scores():
    labels = np.array([0, 0, 0, 1])
    assert chance_accuracy(np.zeros(4, int), labels, 2) == 0.75  # always the commonest
    assert chance_accuracy(np.array([0, 1, 0, 1]), labels, 2) == 0.5


def astronaut(num_frames=4, size=224):
    import cv2
    import skimage.data

    image = skimage.data.astronaut()
    crops = [image[20 + 2 * t : 460 + 2 * t, 10 + 3 * t : 450 + 3 * t] for t in range(num_frames)]
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])


def test_no_face_on_real_pixels_after_anonymization():
    frames = astronaut()
    result = AvatarAnonymizer(AnonymizerConfig(seed=0)).anonymize_clip(frames)
    assert result.ok
    check = face_check(frames, result.frames, result.sensitive_mask)
    assert check.input_faces == [1] * len(frames)  # BlazeFace finds the real face in every input frame
    assert not check.leaked, check
    # the same check flags the input itself published as the output (every pixel real)
    unchanged = face_check(frames, frames, np.ones(frames.shape[:3], bool))
    assert unchanged.leaked and unchanged.output_faces_on_sensitive == [1] * len(frames)
