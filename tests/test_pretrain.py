"""`hf-maskdp pretrain`: a shortened rebuild of the public checkpoint runs end to end, and the
quickstart's `from_pretrained` path loads it with a fresh head for the private actions."""

from __future__ import annotations

import json

import pytest
import torch

from hf_maskdp.cli import main
from hf_maskdp.data import ACTION_NAMES
from hf_maskdp.pretrain import SHIPPED_CHECKPOINT, PretrainConfig, load_pretrained_backbone

pytestmark = pytest.mark.timeout(300)


SHORT = ["--num-train", "32", "--num-test", "6", "--clip-frames", "4"]  # 4 frames: fast, and not the default


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # the rendered public clips, shared by the rebuilds here


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, corpus_cache):
    output = tmp_path_factory.mktemp("pretrained") / "videomae-public"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_MASKDP_CACHE", str(corpus_cache))
        assert main(["pretrain", str(output), *SHORT, "--epochs", "1"]) == 0
    return output


def test_shortened_rebuild_writes_a_checkpoint_with_its_card(checkpoint):
    from hf_maskdp.data.actions import PUBLIC_ACTION_NAMES

    record = json.loads((checkpoint / "pretraining.json").read_text())
    metrics = record["metrics"]
    assert 0 <= metrics["test_accuracy_full_clips"] <= 1 and metrics["chance"] == pytest.approx(1 / 6)
    card = (checkpoint / "README.md").read_text()
    assert "public data only" in card and "disjoint" in card and "hf-maskdp pretrain" in card
    config = json.loads((checkpoint / "config.json").read_text())
    assert list(config["id2label"].values()) == list(PUBLIC_ACTION_NAMES)  # it saw only the public vocabulary
    assert config["num_frames"] == 4


def test_quickstart_refuses_a_checkpoint_of_another_clip_shape_before_any_work(checkpoint, tmp_path):
    from hf_maskdp.quickstart import QuickstartConfig, build_model, run_quickstart

    assert build_model(QuickstartConfig(pretrained_model=str(checkpoint), clip_frames=4), seed=0).config.num_frames == 4
    output = tmp_path / "out"
    with pytest.raises(ValueError, match="4 frames at 112 px.*--clip-frames"):
        run_quickstart(QuickstartConfig(pretrained_model=str(checkpoint), clip_frames=8, output_dir=str(output)))
    assert not output.exists()  # refused before generating or anonymizing anything


def test_backbone_loads_with_a_fresh_head_for_the_private_actions(checkpoint):
    from transformers import VideoMAEForVideoClassification

    pretrained = VideoMAEForVideoClassification.from_pretrained(checkpoint)
    model = load_pretrained_backbone(str(checkpoint), ACTION_NAMES, seed=3)
    assert model.config.id2label == dict(enumerate(ACTION_NAMES))
    for name, weight in pretrained.state_dict().items():
        if name.startswith("classifier"):
            assert not torch.equal(weight, model.state_dict()[name])  # re-drawn: other classes
        else:
            assert torch.equal(weight, model.state_dict()[name]), name  # the public backbone, unchanged
    again = load_pretrained_backbone(str(checkpoint), ACTION_NAMES, seed=3)
    assert torch.equal(again.classifier.weight, model.classifier.weight)  # the head is seeded


def test_shipped_checkpoint_matches_the_default_shape_and_reports_its_accuracy():
    config = json.loads((SHIPPED_CHECKPOINT / "config.json").read_text())
    defaults = PretrainConfig()
    assert (config["hidden_size"], config["num_hidden_layers"], config["patch_size"], config["image_size"]) == (
        defaults.hidden_size,
        defaults.num_layers,
        defaults.patch_size,
        defaults.clip_size,
    )
    metrics = json.loads((SHIPPED_CHECKPOINT / "pretraining.json").read_text())["metrics"]
    assert metrics["test_accuracy_full_clips"] > metrics["chance"]  # pretraining itself succeeded


def test_self_supervised_rebuild_transfers_its_encoder(tmp_path, corpus_cache, monkeypatch):
    from hf_maskdp.pretrain import build_classifier

    output = tmp_path / "videomae-masked"
    monkeypatch.setenv("HF_MASKDP_CACHE", str(corpus_cache))
    assert main(["pretrain", str(output), *SHORT, "--epochs", "0", "--masked-epochs", "1"]) == 0
    record = json.loads((output / "pretraining.json").read_text())
    assert record["config"]["masked_epochs"] == 1 and "tube masking" in (output / "README.md").read_text()
    trained = load_pretrained_backbone(str(output), ACTION_NAMES).videomae.state_dict()
    initial = build_classifier(PretrainConfig(**record["config"]), ACTION_NAMES).videomae.state_dict()
    changed = [name for name, weight in initial.items() if not torch.equal(weight, trained[name])]
    assert any("encoder.layer.0.attention" in name for name in changed)  # the masked stage's encoder was kept


def test_tube_mask_hides_the_same_patches_in_every_tubelet():
    from hf_maskdp.pretrain import masked_video_model, tube_mask
    from hf_maskdp.training.model import videomae_classifier

    config = videomae_classifier(6, image_size=32, num_frames=4, hidden_size=32, num_layers=1, patch_size=8).config
    hidden = tube_mask(5, config, 0.75, torch.Generator().manual_seed(0))
    per_tubelet = hidden.view(5, 2, 16)
    assert torch.equal(per_tubelet[:, 0], per_tubelet[:, 1]) and (per_tubelet.sum(-1) == 12).all()
    assert len({tuple(row.tolist()) for row in per_tubelet[:, 0]}) > 1  # each clip draws its own patches
    pixels = torch.randn(5, 4, 3, 32, 32)
    assert masked_video_model(config)(pixel_values=pixels, bool_masked_pos=hidden).loss.isfinite()


@pytest.mark.parametrize(
    "bad",
    [
        dict(num_train=4, batch_size=8),
        dict(fill_share=1.5),
        dict(clip_frames=3),
        dict(epochs=0),
        dict(masked_epochs=1, mask_ratio=1.0),
    ],
)
def test_bad_pretraining_settings_are_refused(bad):
    with pytest.raises(ValueError):
        PretrainConfig(**bad)
