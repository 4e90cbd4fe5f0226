"""`hf-maskdp quickstart --fast` end to end: generation, anonymization, every setting, the report,
the plot, the saved MaskDP model and the anonymized dataset (each with its card)."""

from __future__ import annotations

import json
import math

import pytest

from hf_maskdp.cli import main
from hf_maskdp.quickstart import MAIN_SETTINGS, RESULT_KEYS, QuickstartConfig, planned_runs

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory):
    pytest.importorskip("mediapipe", reason="the quickstart runs real pose estimation (mediapipe 0.10.21)")
    output = tmp_path_factory.mktemp("quickstart")
    assert main(["quickstart", "--fast", "--output-dir", str(output)]) == 0
    return output


def test_results_cover_the_five_settings(quickstart_dir):
    rows = json.loads((quickstart_dir / "results.json").read_text())
    assert len(rows) == len(planned_runs(QuickstartConfig.fast()))
    assert [(r["setting"], r["train_data"]) for r in rows[: len(MAIN_SETTINGS)]] == MAIN_SETTINGS
    for row in rows:
        assert set(RESULT_KEYS) <= set(row)
        assert 0.0 <= row["test_accuracy_original"] <= 1.0 and 0.0 <= row["test_accuracy_anonymized"] <= 1.0
        assert row["train_seconds"] > 0 and row["steps"] >= 1
        if row["setting"] == "none":
            assert row["epsilon"] is None and row["delta"] is None  # not private: no budget, not "0"
        elif row["setting"] == "public_only":
            assert row["epsilon"] == 0.0  # never reads a sensitive pixel
        else:
            assert row["delta"] == 1e-5 and row["noise_multiplier"] > 0
    for setting in ("dpsgd", "maskdp"):  # one run per budget, each calibrated to it and never above it
        spent = sorted(r["epsilon"] for r in rows if r["setting"] == setting and r["public_view"] != "drop")
        budgets = sorted(QuickstartConfig.fast().epsilons)
        assert all(b * 0.98 <= e <= b + 1e-9 for e, b in zip(spent, budgets, strict=True))
    main_maskdp = rows[len(MAIN_SETTINGS) - 1]
    assert math.isclose(main_maskdp["epsilon"], 1.0, rel_tol=0.02)
    assert {r["public_view"] for r in rows if r["setting"] == "maskdp"} == {"fill", "drop"}


def test_report_and_plot_are_written(quickstart_dir):
    report = (quickstart_dir / "results.md").read_text()
    assert "| `maskdp` | anonymized | fill |" in report and "| `dpsgd` | original | — |" in report
    assert "frames with a tracked person" in report  # the detection rate is reported
    png = (quickstart_dir / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_saved_maskdp_model_reloads_and_its_card_states_epsilon(quickstart_dir):
    from transformers import AutoModelForVideoClassification

    rows = json.loads((quickstart_dir / "results.json").read_text())
    epsilon = rows[len(MAIN_SETTINGS) - 1]["epsilon"]
    model = AutoModelForVideoClassification.from_pretrained(quickstart_dir / "maskdp_model")
    record = model.config.maskdp
    assert record["privacy_mode"] == "maskdp" and record["epsilon"] == pytest.approx(epsilon)
    card = (quickstart_dir / "maskdp_model" / "README.md").read_text()
    assert f"ε = {epsilon:.4g}" in card and "MaskDP" in card


def test_anonymized_dataset_is_saved_with_masks_and_card(quickstart_dir):
    from hf_maskdp.hub import load_anonymized_dataset

    dataset = load_anonymized_dataset(str(quickstart_dir / "anonymized_dataset"))  # verifies every mask
    for split in dataset.values():
        assert set(split["anonymization"]) == {"ok"}
        assert "identity" not in split.column_names  # who performs the action is not published
    card = (quickstart_dir / "anonymized_dataset" / "README.md").read_text()
    assert "sensitive_mask" in card and "clips withheld" in card


def test_only_the_noisy_runs_get_the_private_optimizer(tmp_path):
    """Every setting trains alike except the optimizer of the runs with a noisy private branch."""
    import torch
    from transformers import Trainer

    from hf_maskdp.quickstart import training_args

    config = QuickstartConfig(private_grad_weight=0.5)
    for run in planned_runs(config):
        args = training_args(run, config, tmp_path)
        private = run["setting"] in ("dpsgd", "maskdp")
        assert args.optim == ("sgd" if private else "adamw_torch")
        assert args.learning_rate == (config.private_learning_rate if private else config.learning_rate)
        assert args.private_grad_weight == 0.5 and args.num_train_epochs == config.epochs
    sgd = training_args(dict(setting="dpsgd", train_data="original", target=1.0, view=None), config, tmp_path)
    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(sgd)
    assert optimizer_class is torch.optim.SGD and kwargs["momentum"] == 0.9
