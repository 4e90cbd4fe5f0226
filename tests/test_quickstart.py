"""`hf-maskdp quickstart --fast` end to end: generation, anonymization (cached), every setting with
several seeds from the public checkpoint, the report (mean ± std, claim lines), the plot, the saved
MaskDP model and the anonymized dataset (each with its card)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from hf_maskdp.cli import main
from hf_maskdp.quickstart import RESULT_KEYS, QuickstartConfig, QuickstartResult, planned_runs

pytestmark = pytest.mark.timeout(900)  # the fixture runs the whole quickstart: minutes on 2 busy cores


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory, cache_dir):
    pytest.importorskip("mediapipe", reason="the quickstart runs real pose estimation (mediapipe 0.10.21)")
    output = tmp_path_factory.mktemp("quickstart")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_MASKDP_CACHE", str(cache_dir))
        assert main(["quickstart", "--fast", "--output-dir", str(output)]) == 0
    return output


def test_results_cover_every_setting_and_seed(quickstart_dir):
    config = QuickstartConfig.fast()
    rows = json.loads((quickstart_dir / "results.json").read_text())
    trained = [r for r in rows if r["setting"] != "background_only"]
    assert [(r["setting"], r["seed"]) for r in trained] == [(r["setting"], r["seed"]) for r in planned_runs(config)]
    assert sum(r["setting"] == "background_only" for r in rows) == 1  # the scene-only baseline
    for row in rows:
        assert set(RESULT_KEYS) <= set(row) and row["regime"] == "ntu"
        for key in ("test_accuracy_original", "val_accuracy_original"):
            assert 0.0 <= row[key] <= 1.0
        if row["setting"] == "background_only":
            continue
        assert row["init"] == "public" and row["num_private_records"] > 0 and row["steps"] >= 1
        assert 0.0 <= row["test_accuracy_public_view"] <= 1.0
        if row["setting"] == "none":
            assert row["epsilon"] is None and row["delta"] is None  # not private: no budget, not "0"
        elif row["setting"] == "public_only":
            assert row["epsilon"] == 0.0  # never reads a sensitive pixel
        else:
            assert row["delta"] == 1e-5 and row["noise_multiplier"] > 0
    for setting in ("dpsgd", "maskdp"):  # every seed runs every claim budget, calibrated to it and never above
        for seed in config.seeds:
            spent = sorted(r["epsilon"] for r in rows if r["setting"] == setting and r["seed"] == seed)
            budgets = sorted(config.claim_epsilons)
            assert all(b * 0.98 <= e <= b + 1e-9 for e, b in zip(spent, budgets, strict=True))


def test_report_gives_means_over_seeds_and_the_claim(quickstart_dir):
    report = (quickstart_dir / "results.md").read_text()
    assert "| `maskdp` | anonymized | 1 | 2 |" in report and " ± " in report  # two seeds, mean ± std
    assert "`background_only`" in report and "test acc. (public view)" in report
    assert "ε = 0.5: maskdp" in report and "claim **" in report
    assert "frames with a tracked person" in report  # the detection rate is reported
    png = (quickstart_dir / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_saved_maskdp_model_reloads_and_its_card_states_epsilon(quickstart_dir):
    from transformers import AutoModelForVideoClassification

    rows = json.loads((quickstart_dir / "results.json").read_text())
    saved = next(
        r for r in rows if r["setting"] == "maskdp" and r["seed"] == 0 and math.isclose(r["epsilon"], 1.0, rel_tol=0.02)
    )
    model = AutoModelForVideoClassification.from_pretrained(quickstart_dir / "maskdp_model")
    record = model.config.maskdp
    assert record["privacy_mode"] == "maskdp" and record["epsilon"] == pytest.approx(saved["epsilon"])
    card = (quickstart_dir / "maskdp_model" / "README.md").read_text()
    assert f"ε = {saved['epsilon']:.4g}" in card and "MaskDP" in card


def test_anonymized_dataset_is_saved_with_masks_and_card(quickstart_dir):
    from hf_maskdp.hub import load_anonymized_dataset

    dataset = load_anonymized_dataset(str(quickstart_dir / "anonymized_dataset"))  # verifies every mask
    assert set(dataset) == {"train", "validation", "test"}
    for split in dataset.values():
        assert set(split["anonymization"]) == {"ok"}
        assert "identity" not in split.column_names and "background" not in split.column_names  # not published
    card = (quickstart_dir / "anonymized_dataset" / "README.md").read_text()
    assert "sensitive_mask" in card and "clips withheld" in card


def test_a_rerun_reuses_the_anonymized_data(quickstart_dir, cache_dir, monkeypatch, tmp_path):
    from hf_maskdp import quickstart

    config = QuickstartConfig.fast(cache_dir=str(cache_dir), progress=False)

    def anonymize_again(*args):
        raise AssertionError("anonymized again although an identical run is cached")

    monkeypatch.setattr(quickstart, "_anonymize", anonymize_again)
    anonymized, stats = quickstart._anonymize_cached(quickstart._generate(config, "ntu"), config, "ntu")
    assert len(anonymized["train"]) == stats["train"]["clips_kept"] > 0
    other = QuickstartConfig.fast(cache_dir=str(cache_dir), data_seed=1)  # another configuration, another entry
    assert quickstart._cache_folder(other, "ntu") != quickstart._cache_folder(config, "ntu")
    # another anonymizer (its code changed, e.g. a stricter residual check): another entry too
    from hf_maskdp import anonymize

    changed = Path(shutil.copytree(Path(anonymize.__file__).parent, tmp_path / "anonymize"))
    (changed / "residual.py").write_text((changed / "residual.py").read_text() + "\n# changed\n")
    folder = quickstart._cache_folder(config, "ntu")
    monkeypatch.setattr(anonymize, "__file__", str(changed / "__init__.py"))
    assert quickstart._cache_folder(config, "ntu") != folder


def test_an_interrupted_quickstart_resumes_with_its_finished_runs(quickstart_dir, cache_dir, monkeypatch):
    from hf_maskdp import quickstart

    log = quickstart_dir / quickstart.RUNS_LOG
    config = QuickstartConfig.fast(output_dir=str(quickstart_dir), progress=False)
    lines = log.read_text().splitlines()
    assert len(lines) == len(planned_runs(config))
    log.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])  # killed while appending the last run
    before = json.loads((quickstart_dir / "results.json").read_text())
    trained, train = [], quickstart._train_and_evaluate
    monkeypatch.setattr(quickstart, "_train_and_evaluate", lambda *a, **k: trained.append(a[1]) or train(*a, **k))
    monkeypatch.setenv("HF_MASKDP_CACHE", str(cache_dir))
    after = quickstart.run_quickstart(config).rows
    assert trained == [planned_runs(config)[-1]]  # only the unfinished run trains again
    assert after[:-1] == before[:-1] and len(after) == len(before)
    assert len(log.read_text().splitlines()) == len(lines)
    assert quickstart._FinishedRuns(log, QuickstartConfig.fast(data_seed=1)).rows == {}  # another configuration


def test_only_the_noisy_runs_get_the_private_optimizer(tmp_path):
    """Every setting trains alike except the optimizer of the runs with a noisy private branch."""
    import torch
    from transformers import Trainer

    from hf_maskdp.quickstart import training_args

    config = QuickstartConfig(private_grad_weight=0.5)
    for run in planned_runs(config):
        args = training_args(run, config, tmp_path)
        private = run["setting"] in ("dpsgd", "maskdp")
        assert args.optim == ("sgd" if private else "adamw_torch") and args.seed == run["seed"]
        assert args.learning_rate == (config.private_learning_rate if private else config.learning_rate)
        assert args.private_grad_weight == (0.5 if run["setting"] == "maskdp" else 1.0)
        assert args.num_train_epochs == config.epochs
    sgd = training_args(dict(setting="dpsgd", train_data="original", target=1.0, seed=0), config, tmp_path)
    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(sgd)
    assert optimizer_class is torch.optim.SGD and kwargs["momentum"] == 0.9
    # dpsgd_adamw (the benchmark preset): dpsgd's noisy update goes through AdamW, maskdp keeps SGD
    adam = QuickstartConfig(dpsgd_adamw=True)
    dpsgd, maskdp = (
        training_args(dict(setting=setting, train_data="original", target=1.0, seed=0), adam, tmp_path)
        for setting in ("dpsgd", "maskdp")
    )
    assert (dpsgd.optim, dpsgd.learning_rate, dpsgd.privacy_mode) == ("adamw_torch", adam.learning_rate, "dpsgd")
    assert (maskdp.optim, maskdp.learning_rate) == ("sgd", adam.private_learning_rate)
    assert not maskdp.branch_adam and not dpsgd.branch_adam
    # maskdp_branch_adam: maskdp keeps Adam moments per branch at the AdamW learning rate, plain SGD steps them
    branch = QuickstartConfig(maskdp_branch_adam=True, private_grad_weight=0.3)
    for run in planned_runs(branch):
        args = training_args(run, branch, tmp_path)
        assert args.branch_adam == (run["setting"] == "maskdp")
    maskdp = training_args(dict(setting="maskdp", train_data="anonymized", target=1.0, seed=0), branch, tmp_path)
    assert (maskdp.learning_rate, maskdp.private_grad_weight) == (branch.learning_rate, 0.3)
    optimizer_class, kwargs = Trainer.get_optimizer_cls_and_kwargs(maskdp)
    assert optimizer_class is torch.optim.SGD and kwargs.get("momentum", 0) == 0


def test_presets_and_their_sizes():
    benchmark = QuickstartConfig.preset("benchmark")
    assert benchmark.num_train >= 1000 and set(benchmark.regimes) == {"ntu", "ucf"} and len(benchmark.seeds) >= 3
    runs = planned_runs(benchmark)
    for setting in ("dpsgd", "maskdp"):
        for epsilon in (0.25, 0.5, 1.0):
            assert sum(r["setting"] == setting and r["target"] == epsilon for r in runs) >= 3
    demo = QuickstartConfig.preset("demo")
    assert len(demo.seeds) >= 3 and set(demo.claim_epsilons) == {0.25, 0.5, 1.0}
    with pytest.raises(ValueError, match="unknown preset"):
        QuickstartConfig.preset("huge")
    with pytest.raises(ValueError, match="regimes"):
        QuickstartConfig(regimes=("kinetics",))


def test_the_cli_passes_the_levers_to_the_preset(monkeypatch, tmp_path):
    from hf_maskdp import quickstart

    seen = []
    monkeypatch.setattr(
        quickstart, "run_quickstart", lambda config: seen.append(config) or QuickstartResult([], {}, tmp_path)
    )
    argv = ["quickstart", "--preset", "benchmark", "--regime", "ucf", "--output-dir", str(tmp_path)]
    levers = ["--public-fill", "mean", "--private-grad-weight", "1", "--maskdp-branch-adam", "--clip-frames", "16"]
    assert main([*argv, *levers]) == 0
    assert main(argv) == 0
    chosen, preset = seen
    assert (chosen.public_fill, chosen.private_grad_weight, chosen.regimes) == ("mean", 1.0, ("ucf",))
    assert chosen.maskdp_branch_adam and (chosen.clip_frames, preset.clip_frames) == (16, 8)
    assert (preset.public_fill, preset.private_grad_weight, preset.num_train) == ("scene", 0.1, 1024)
    assert preset.dpsgd_adamw and not QuickstartConfig.preset("demo").dpsgd_adamw
