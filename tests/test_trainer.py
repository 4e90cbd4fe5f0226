"""MaskDPTrainer: the privacy contract of docs/privacy.md, end to end on tiny VideoMAE models."""

import json
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from maskdp_helpers import make_rows, randomize_sensitive, tiny_args, tiny_collator, tiny_model
from torch import nn
from transformers import VideoMAEForVideoClassification

from hf_maskdp.privacy import mechanism
from hf_maskdp.privacy.accounting import compute_epsilon
from hf_maskdp.privacy.sampling import make_generator
from hf_maskdp.training.config import MaskDPConfig
from hf_maskdp.training.trainer import MaskDPTrainer, withheld_rows


def _trainer(tmp_path, rows, model=None, **overrides):
    return MaskDPTrainer(
        model=model or tiny_model(),
        args=tiny_args(tmp_path, **overrides),
        train_dataset=rows,
        data_collator=tiny_collator(),
    )


def _weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# 1. The public branch is blind to sensitive pixels ------------------------------------------

_blind = {}


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["fill", "drop"]))
def test_public_gradient_is_bit_identical_when_sensitive_pixels_change(tmp_path_factory, seed, view):
    if view not in _blind:
        _blind[view] = _trainer(tmp_path_factory.mktemp(view), make_rows(4), public_view=view)
    trainer = _blind[view]
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    rows = make_rows(4, mask="random", seed=seed)
    grads = []
    for data in (rows, randomize_sensitive(rows, seed + 1)):
        trainer.train_dataset = data
        grad, _ = trainer._mean_gradient([0, 1, 2, 3], params, public=True)
        grads.append(grad)
    if view == "drop":  # the random boxes can touch every patch of all four clips: no token kept, nothing to compare
        assume(grads[0].abs().sum() > 0)
    assert grads[0].abs().sum() > 0
    assert torch.equal(*grads)


def test_public_only_training_ends_with_bit_identical_weights(tmp_path):
    rows = make_rows(6, mask="random")
    results = []
    for data in (rows, randomize_sensitive(rows)):
        trainer = _trainer(tmp_path, data, privacy_mode="public_only", noise_multiplier=None, num_train_epochs=2)
        trainer.train()
        results.append(_weights(trainer))
    assert _same_weights(*results)
    assert not _same_weights(results[0], _weights(_trainer(tmp_path, rows)))  # it did train


def test_drop_view_batches_clips_with_different_token_counts_like_single_clips(tmp_path):
    trainer = _trainer(tmp_path, make_rows(4), public_view="drop")
    batch = trainer.data_collator.public_batch(make_rows(4, mask="none"))
    mask = torch.zeros(4, 4, 16, 16, dtype=torch.bool)  # 8 tokens: (2 tubelets) x 2 x 2 patches
    mask[1, :2, :8, :8] = True  # 7 public tokens
    mask[2, :, :8] = True  # 4 public tokens
    mask[3, :2, :8, :8] = True  # 7 again: shares a forward with clip 1
    batch["sensitive_mask"] = mask
    together, n = trainer._public_loss_sum(batch)
    alone = sum(trainer._public_loss_sum({k: v[i : i + 1] for k, v in batch.items()})[0] for i in range(4))
    assert n == 4 and torch.allclose(together, alone, atol=1e-5)


# 2. Sanity properties: m == 1 is DP-SGD, m == 0 needs no noise -------------------------------


def test_all_sensitive_maskdp_equals_dpsgd_exactly(tmp_path):
    rows = make_rows(8, mask="all")
    weights = {}
    for mode in ("maskdp", "dpsgd"):
        trainer = _trainer(tmp_path, rows, privacy_mode=mode)
        trainer.train()
        weights[mode] = _weights(trainer)
        assert trainer.state.global_step == 4
    assert _same_weights(weights["maskdp"], weights["dpsgd"])


def test_all_public_maskdp_draws_no_noise_and_spends_nothing(tmp_path):
    trainer = _trainer(tmp_path, make_rows(8, mask="none"), target_epsilon=1.0, noise_multiplier=None)
    trainer.train()
    assert torch.equal(trainer._noise_generator.get_state(), make_generator(0, "noise").get_state())
    assert trainer.privacy_spent() == (0.0, 0.0)
    assert trainer.state.global_step == 4  # 8 records / public_batch_size 2


# 3. Per-sample gradients and clipping ------------------------------------------------------


@pytest.mark.parametrize("patch_bias", [True, False])
def test_per_sample_gradients_match_a_loop_and_clipping_bounds_the_norm(patch_bias):
    model = tiny_model(layers=2)
    if not patch_bias:  # a layer with a weight matrix only: the backward must still reach it
        model.videomae.embeddings.patch_embeddings.projection.bias = None
    batch = tiny_collator()(make_rows(3, mask="random"))
    params = [p for p in model.parameters() if p.requires_grad]
    loop = []
    for i in range(3):
        model.zero_grad()
        logits = model(pixel_values=batch["pixel_values"][i : i + 1]).logits
        nn.functional.cross_entropy(logits, batch["labels"][i : i + 1], reduction="sum").backward()
        loop.append([p.grad.clone() for p in params])
    hooks = mechanism.attach_per_sample_grads(model)
    hooks.enable_hooks()
    model.zero_grad()
    logits = model(pixel_values=batch["pixel_values"]).logits
    loss = nn.functional.cross_entropy(logits, batch["labels"], reduction="sum")
    mechanism.per_sample_backward(loss, mechanism.backward_targets(model))  # the trainer's private backward
    assert all(p.grad is None for p in params)  # no raw batch gradient is even computed
    for j, p in enumerate(params):
        assert torch.allclose(p.grad_sample, torch.stack([g[j] for g in loop]), atol=1e-6)
    clip = 0.1
    total = [torch.zeros_like(p) for p in params]
    assert mechanism.accumulate_clipped(params, clip, total) == 3
    norms = [torch.sqrt(sum(g.pow(2).sum() for g in grads)) for grads in loop]
    assert min(norms) > clip  # so clipping is active
    expected = [sum(grads[j] * (clip / (n + 1e-6)) for grads, n in zip(loop, norms)) for j in range(len(params))]
    assert all(torch.allclose(t, e, atol=1e-7) for t, e in zip(total, expected))
    for grads, n in zip(loop, norms):
        assert torch.sqrt(sum((g * (clip / (n + 1e-6))).pow(2).sum() for g in grads)) <= clip


# 4 and 6. Noise of the right size, and an empty Poisson batch is a noise-only step -------------


def test_empty_batch_step_adds_noise_with_std_sigma_c_over_qn(tmp_path):
    sigma, clip = 2.0, 0.5
    trainer = _trainer(
        tmp_path,
        make_rows(8),
        privacy_mode="dpsgd",
        noise_multiplier=sigma,
        per_sample_clip_norm=clip,
        private_batch_size=2,
    )
    trainer.get_train_dataloader()
    trainer.training_step(trainer.model, {"private": [], "public": []})
    noise = torch.cat([p.grad.reshape(-1) for p in trainer.model.parameters()])
    expected = sigma * clip / 2  # q N = private_batch_size = 2
    assert noise.numel() > 5000
    assert abs(noise.std().item() / expected - 1) < 0.04
    assert abs(noise.mean().item()) < 4 * expected / math.sqrt(noise.numel())


def test_training_goes_on_through_empty_poisson_batches(tmp_path):
    trainer = _trainer(tmp_path, make_rows(8), private_batch_size=1)
    sizes = [len(step["private"]) for step in trainer.get_train_dataloader()]
    assert 0 in sizes and len(sizes) == 8
    trainer.train()  # the same seeded draws: the same empty batch comes up
    assert trainer.state.global_step == 8
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


# 5. Reported epsilon, logs, saved record -------------------------------------------------


def test_reported_epsilon_logs_and_saved_model(tmp_path):
    trainer = _trainer(tmp_path, make_rows(8), num_train_epochs=2)
    trainer.train()
    eps, delta = trainer.privacy_spent()
    assert eps == compute_epsilon(0.25, 1.0, steps=8, delta=1e-5) and delta == 1e-5
    steps_logged = [log for log in trainer.state.log_history if "learning_rate" in log]
    assert [log["epsilon"] for log in steps_logged] == [
        compute_epsilon(0.25, 1.0, steps=s, delta=1e-5) for s in range(1, 9)
    ]
    assert not any("grad_norm" in log for log in trainer.state.log_history)
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    record = json.loads((out / "maskdp_privacy.json").read_text())
    assert record["epsilon"] == eps and record["steps"] == 8 and record["sample_rate"] == 0.25
    assert record["noise_multiplier"] == 1.0 and record["world_size"] == 1 and record["training_rows"] == 8
    assert record["private_records"] == 8
    loaded = VideoMAEForVideoClassification.from_pretrained(str(out))
    assert loaded.config.maskdp == record
    assert _same_weights(_weights(trainer), {k: v for k, v in loaded.state_dict().items()})
    with pytest.raises(ValueError, match="second train"):  # would restart the accountant's step count
        trainer.train()


def test_dpsgd_logs_no_private_loss(tmp_path):
    trainer = _trainer(tmp_path, make_rows(4), privacy_mode="dpsgd")
    trainer.train()
    assert not any("loss" in log or "train_loss" in log for log in trainer.state.log_history)


def test_target_epsilon_is_calibrated_and_stop_at_epsilon_stops_before_the_budget(tmp_path):
    trainer = _trainer(tmp_path, make_rows(8), target_epsilon=3.0, noise_multiplier=None, num_train_epochs=2)
    trainer.train()
    eps, _ = trainer.privacy_spent()
    assert trainer.state.global_step == 8 and 2.9 < eps <= 3.0
    budget = (compute_epsilon(0.25, 1.0, steps=3) + compute_epsilon(0.25, 1.0, steps=4)) / 2
    trainer = _trainer(tmp_path, make_rows(8), num_train_epochs=2, stop_at_epsilon=budget)
    trainer.train()
    assert trainer.state.global_step == 3 and trainer.privacy_spent()[0] <= budget


# 8. Misuse ------------------------------------------------------------------------------


def test_bad_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="exactly one of target_epsilon or noise_multiplier"):
        tiny_args(tmp_path, target_epsilon=1.0)
    with pytest.raises(ValueError, match="exactly one of target_epsilon or noise_multiplier"):
        tiny_args(tmp_path, noise_multiplier=None)
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be 1"):
        tiny_args(tmp_path, gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match="max_grad_norm"):
        tiny_args(tmp_path, max_grad_norm=1.0)
    with pytest.raises(ValueError, match="spends no budget"):
        tiny_args(tmp_path, privacy_mode="none", noise_multiplier=None, stop_at_epsilon=1.0)
    with pytest.raises(ValueError, match="public_view"):
        tiny_args(tmp_path, public_view="blur")
    assert MaskDPConfig(output_dir=str(tmp_path), noise_multiplier=1.0).hub_private_repo is True


def test_bad_data_and_models_fail_before_training(tmp_path):
    rows = make_rows(4)
    no_mask = [{k: v for k, v in r.items() if k != "sensitive_mask"} for r in rows]
    with pytest.raises(ValueError, match="mask column 'sensitive_mask'"):
        _trainer(tmp_path, no_mask).train()
    import numpy as np

    from hf_maskdp.video import encode_mask

    wrong = [{**r, "sensitive_mask": encode_mask(np.ones((6, 20, 20), bool))} for r in rows]
    with pytest.raises(ValueError, match="whose shape is not their clip.s.*the mask must cover every pixel"):
        _trainer(tmp_path, wrong).train()
    with pytest.raises(ValueError, match="q = batch / records <= 1"):
        _trainer(tmp_path, rows, private_batch_size=5).train()
    model = tiny_model()
    model.fc_norm = nn.BatchNorm1d(16)
    with pytest.raises(ValueError, match="ModuleValidator.fix"):
        _trainer(tmp_path, rows, model=model)


def _anonymized_dataset(rows, withheld=("no_person", "error: undecodable")):
    """`rows` as the anonymizer writes them, plus withheld rows: no video, masks with 0 frames."""
    import datasets
    import numpy as np

    from hf_maskdp.privacy.mask_checks import anonymizer_provenance
    from hf_maskdp.video import encode_mask, encode_video, mask_feature, video_feature

    empty = encode_mask(np.zeros((0, 20, 24), bool))
    features = datasets.Features(
        {
            "video": video_feature(),
            "sensitive_mask": mask_feature(),
            "avatar_mask": mask_feature(),
            "provenance": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["a", "b", "c"]),
            "anonymization": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "video": [{"path": None, "bytes": encode_video(r["video"])} for r in rows] + [None] * len(withheld),
            "sensitive_mask": [r["sensitive_mask"] for r in rows] + [empty] * len(withheld),
            "avatar_mask": [r["avatar_mask"] for r in rows] + [empty] * len(withheld),
            "provenance": [r["provenance"] for r in rows] + [anonymizer_provenance()] * len(withheld),
            "label": [r["label"] for r in rows] + [0] * len(withheld),
            "anonymization": ["ok"] * len(rows) + list(withheld),
        },
        features=features,
    )


def test_withheld_rows_are_refused_before_training_with_the_fix(tmp_path):
    ds = _anonymized_dataset(make_rows(4, mask="all"))
    trainer = _trainer(tmp_path, ds)
    refused = r"2 of 6 rows have no video.*\(error: 1, no_person: 1\).*filter\(lambda video"
    with pytest.raises(ValueError, match=refused):
        trainer.train()
    assert trainer.state.global_step == 0
    published = ds.filter(lambda video: video is not None, input_columns="video")  # the fix the error names
    trainer = _trainer(tmp_path, published, num_train_epochs=2)
    trainer.train()
    record = trainer.privacy_record()
    # the accountant counts the 4 rows trained on, not the 6 of the raw dataset
    assert (
        record["training_rows"] == record["private_records"] == 4
        and record["sample_rate"] == 0.5
        and record["steps"] == 4
    )
    assert record["epsilon"] == compute_epsilon(0.5, 1.0, steps=4, delta=1e-5)
    rows = make_rows(2)
    assert withheld_rows([rows[0], {**rows[1], "video": None}, {"label": 0}]) == [1]  # lists of rows too


def test_non_finite_example_contributes_zero_and_a_non_finite_model_stops_the_step(tmp_path):
    # One example's NaN gradient must neither poison the noisy sum nor stop training (that would
    # reveal one record's content without noise): it contributes zero, a vector of norm <= C.
    weight = nn.Parameter(torch.zeros(3))
    weight.grad_sample = torch.tensor([[3.0, 4.0, 0.0], [float("nan"), 1.0, 0.0], [0.0, 0.0, 0.5]])
    total = [torch.zeros(3)]
    assert mechanism.accumulate_clipped([weight], 1.0, total) == 3
    expected = torch.tensor([3.0, 4.0, 0.0]) / (5.0 + 1e-6) + torch.tensor([0.0, 0.0, 0.5])
    assert torch.allclose(total[0], expected)
    # A model that is non-finite everywhere is caught on the noisy update.
    trainer = _trainer(tmp_path, make_rows(4), privacy_mode="dpsgd")
    trainer.get_train_dataloader()
    with torch.no_grad():
        trainer.model.classifier.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        trainer.training_step(trainer.model, {"private": [0, 1], "public": []})


# The command line -------------------------------------------------------------------------


def test_train_command_saves_and_pushes_privately(hub, tmp_path, monkeypatch, capsys):
    import datasets

    from hf_maskdp.cli import main

    ds = _anonymized_dataset(make_rows(4, mask="random"), withheld=["no_person"])
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "model"
    base = [
        "train",
        str(tmp_path / "ds"),
        str(out),
        "--private-batch-size",
        "2",
        "--epochs",
        "1",
        "--image-size",
        "16",
        "--num-frames",
        "4",
        "--layers",
        "1",
        "--hidden-size",
        "64",
    ]
    assert main(base) == 2
    assert "needs --target-epsilon or --noise-multiplier" in capsys.readouterr().err
    monkeypatch.setenv("HF_TOKEN", "hf_alice_write")
    assert (
        main(
            [
                *base,
                "--noise-multiplier",
                "1.0",
                "--eval-split",
                "test",
                "--push-to-hub",
                "alice/cli-maskdp",
                "--workers",
                "1",
                "--bf16",
            ]
        )
        == 0
    )  # a worker decodes the steps; bf16 autocast
    assert "train: skipping 1 of 5 clips withheld by the anonymizer" in capsys.readouterr().out
    record = json.loads((out / "maskdp_privacy.json").read_text())
    assert record["steps"] == 2 and record["epsilon"] == compute_epsilon(0.5, 1.0, steps=2, delta=1e-5)
    assert record["training_rows"] == 4
    assert (out / "README.md").is_file() and hub.repo("alice/cli-maskdp").private
