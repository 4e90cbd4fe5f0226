"""The paper-scale scripts in scripts/: --help, the accelerate config, and runs on a tiny UCF-101 folder."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hf_maskdp.video import encode_video

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
ALICE = "hf_alice_write"  # a write token of the test Hub (tests/conftest.py)


def _script(name: str):
    """Import a script as a module, so tests call its `main(argv)` in-process (no interpreter start-up)."""
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), SCRIPTS / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["anonymize_dataset.py", "train_maskdp.py"])
def test_script_help(name):
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / name), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "output_dir" in result.stdout and "--push" in result.stdout


def test_accelerate_config_is_a_valid_multi_gpu_config():
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(SCRIPTS / "accelerate_config.yaml"))
    assert config.distributed_type == "MULTI_GPU" and config.num_processes > 1
    assert config.mixed_precision == "no" and not config.use_cpu


# --------------------------------------------------------------------------- a tiny UCF-101 folder


def _person_clip(frames: int = 3, size: int = 96) -> np.ndarray:
    """A real photo of a person (scikit-image's astronaut), as a still clip."""
    from skimage import data

    image = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    return np.stack([image] * frames)


@pytest.fixture(scope="module")
def tiny_ucf101(tmp_path_factory) -> Path:
    """UCF-101 layout. Split 1: two clips with a person for training, one for testing.
    Split 2 tests on a clip with nobody in it (an empty room)."""
    root = tmp_path_factory.mktemp("ucf101")
    person = _person_clip()
    clips = {
        "Archery/v_Archery_g08_c01.avi": person,
        "Archery/v_Archery_g09_c02.avi": person[:, :, ::-1],  # mirrored: another clip
        "Bowling/v_Bowling_g01_c01.avi": np.roll(person, 8, axis=2),
        "Bowling/v_Bowling_g02_c01.avi": np.full((3, 96, 96, 3), 90, np.uint8),
    }
    for name, frames in clips.items():
        (root / "UCF-101" / name).parent.mkdir(parents=True, exist_ok=True)
        encode_video(frames, fps=10, path=root / "UCF-101" / name)
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Archery\r\n2 Bowling\r\n")
    for split in (1, 2):
        (lists / f"trainlist0{split}.txt").write_text(
            "Archery/v_Archery_g08_c01.avi 1\r\nArchery/v_Archery_g09_c02.avi 1\r\n"
        )
    (lists / "testlist01.txt").write_text("Bowling/v_Bowling_g01_c01.avi\r\n")
    (lists / "testlist02.txt").write_text("Bowling/v_Bowling_g02_c01.avi\r\n")
    return root


@pytest.fixture(scope="module")
def anonymized_ucf101(tiny_ucf101, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("anonymized") / "ucf101-anonymized"
    code = _script("anonymize_dataset.py").main(
        ["--input", str(tiny_ucf101), "--output_dir", str(output), "--max_frames", "3", "--seed", "7"]
    )
    assert code == 0
    return output


def test_anonymize_script_on_a_ucf101_folder(anonymized_ucf101):
    from hf_maskdp.hub import load_anonymized_dataset

    data = load_anonymized_dataset(str(anonymized_ucf101))  # validates every mask
    train, test = data["train"], data["test"]
    assert train.features["label"].names == ["Archery", "Bowling"] and train["label"] == [0, 0]
    assert test["label"] == [1] and list(train["anonymization"]) + list(test["anonymization"]) == ["ok"] * 3
    assert train["num_people"] == [1, 1]
    mask = train[0]["sensitive_mask"]
    assert mask.shape == (3, 96, 96) and 0 < (~mask).mean() < 1  # an avatar's pixels are public, the rest not
    # identity metadata (file name, actor group) is dropped by default
    assert not {"video_id", "group"} & set(train.column_names)
    summary = json.loads((anonymized_ucf101 / "anonymization_summary.json").read_text())
    assert summary["splits"]["train"] == {"clips": 2, "status_counts": {"ok": 2}, "anonymized_fraction": 1.0}
    card = (anonymized_ucf101 / "README.md").read_text()
    assert "The backgrounds are real" in card and "mannequin" in card


def test_anonymize_script_withholds_a_clip_with_nobody_to_replace(tiny_ucf101, tmp_path):
    from datasets import load_from_disk

    argv = [
        "--input",
        str(tiny_ucf101),
        "--output_dir",
        str(tmp_path / "out"),
        "--official_split",
        "2",
        "--splits",
        "test",
    ]
    assert _script("anonymize_dataset.py").main(argv) == 0
    test = load_from_disk(str(tmp_path / "out"))["test"]
    # never published as anonymized: no video, and the status says why
    assert test["anonymization"] == ["no_person"] and test[0]["video"] is None


def test_anonymize_script_pushes_private_by_default(tiny_ucf101, tmp_path, hub):
    from huggingface_hub import HfApi

    script = _script("anonymize_dataset.py")
    repo = "alice/ucf101-anonymized-script"
    argv = [
        "--input",
        str(tiny_ucf101),
        "--output_dir",
        str(tmp_path / "out"),
        "--splits",
        "train",
        "--max_clips",
        "1",
        "--max_frames",
        "2",
        "--keep_identity_columns",
        "--push_to_hub",
        repo,
        "--token",
        ALICE,
    ]
    assert script.main(argv) == 0
    info = HfApi().repo_info(repo, repo_type="dataset", token=ALICE)
    assert info.private
    saved = __import__("datasets").load_from_disk(str(tmp_path / "out"))
    assert list(saved) == ["train"] and saved["train"]["video_id"] == ["v_Archery_g08_c01"]


def test_anonymize_script_bad_input_gives_one_clear_line(tiny_ucf101, anonymized_ucf101, tmp_path, capsys):
    script = _script("anonymize_dataset.py")
    assert script.main(["--input", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "out")]) == 2
    assert "input folder not found" in capsys.readouterr().err
    assert script.main(["--input", str(tiny_ucf101), "--output_dir", str(anonymized_ucf101)]) == 2
    assert "is not empty; choose a new folder" in capsys.readouterr().err
    assert (
        script.main(["--input", str(tiny_ucf101), "--output_dir", str(tmp_path / "o"), "--splits", "validation"]) == 2
    )
    assert "no split ['validation'] in the input" in capsys.readouterr().err
    assert script.main(["--input", str(tmp_path), "--output_dir", str(tmp_path / "o"), "--errors", "ignore"]) == 2
    assert "errors='ignore'" in capsys.readouterr().err


def test_train_script_runs_two_maskdp_steps_on_the_anonymized_folder(anonymized_ucf101, tmp_path):
    from transformers import VideoMAEForVideoClassification

    output = tmp_path / "model"
    tiny_model = ["--num-frames", "2", "--image-size", "32", "--layers", "1", "--hidden-size", "64"]
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "train_maskdp.py"),
            str(anonymized_ucf101),
            str(output),
            "--eval-split",
            "test",
            "--privacy-mode",
            "maskdp",
            "--noise-multiplier",
            "1.0",
            "--max-steps",
            "2",
            "--private-batch-size",
            "2",
            "--public-batch-size",
            "1",
            "--micro-batch-size",
            "2",
            *tiny_model,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((output / "maskdp_privacy.json").read_text())
    assert record["privacy_mode"] == "maskdp" and record["steps"] == 2 and record["training_rows"] == 2
    assert record["epsilon"] > 0 and record["mask_column"] == "sensitive_mask"
    model = VideoMAEForVideoClassification.from_pretrained(output)
    assert model.config.id2label == {0: "Archery", 1: "Bowling"}
