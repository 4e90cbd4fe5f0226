"""`hf-maskdp privacy epsilon|calibrate`: the numbers, and one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hf_maskdp.cli import main
from hf_maskdp.privacy.accounting import calibrate_noise_multiplier, compute_epsilon

BINARY = Path(sys.executable).parent / "hf-maskdp"


def test_epsilon_prints_the_accountants_value(capsys):
    assert (
        main(
            [
                "privacy",
                "epsilon",
                "--sample-rate",
                "0.01",
                "--noise-multiplier",
                "1.1",
                "--steps",
                "10000",
                "--delta",
                "1e-5",
            ]
        )
        == 0
    )
    assert float(capsys.readouterr().out) == compute_epsilon(0.01, 1.1, 10000, 1e-5)


def test_epsilon_with_epochs_and_another_accountant(capsys):
    assert (
        main(
            [
                "privacy",
                "epsilon",
                "--sample-rate",
                "0.1",
                "--noise-multiplier",
                "1.0",
                "--epochs",
                "3",
                "--delta",
                "1e-6",
                "--accountant",
                "pld",
            ]
        )
        == 0
    )
    assert float(capsys.readouterr().out) == compute_epsilon(0.1, 1.0, steps=30, delta=1e-6, accountant="pld")


def test_calibrate_prints_sigma_that_meets_the_target(capsys):
    assert (
        main(
            [
                "privacy",
                "calibrate",
                "--target-epsilon",
                "2",
                "--sample-rate",
                "0.01",
                "--epochs",
                "5",
                "--delta",
                "1e-5",
            ]
        )
        == 0
    )
    sigma = float(capsys.readouterr().out)
    assert sigma == calibrate_noise_multiplier(2.0, 0.01, epochs=5, delta=1e-5)
    assert compute_epsilon(0.01, sigma, epochs=5, delta=1e-5) <= 2.0  # printed at full precision


@pytest.mark.parametrize(
    "argv, message",
    [
        (["epsilon", "--sample-rate", "1.5", "--noise-multiplier", "1", "--steps", "10"], "sample_rate=1.5"),
        (["epsilon", "--sample-rate", "0.1", "--noise-multiplier", "-1", "--steps", "10"], "noise_multiplier=-1.0"),
        (["epsilon", "--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "10", "--delta", "2"], "delta=2.0"),
        (["epsilon", "--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "-3"], "steps=-3"),
        (["calibrate", "--target-epsilon", "1e-9", "--sample-rate", "0.5", "--steps", "10000"], "cannot be reached"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(["privacy", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err and "Traceback" not in captured.err


def test_installed_binary():
    ok = subprocess.run(
        [
            str(BINARY),
            "privacy",
            "epsilon",
            "--sample-rate",
            "0.01",
            "--noise-multiplier",
            "1.1",
            "--steps",
            "10000",
            "--delta",
            "1e-5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and float(ok.stdout) == compute_epsilon(0.01, 1.1, 10000, 1e-5)
    bad = subprocess.run(
        [str(BINARY), "privacy", "epsilon", "--sample-rate", "0", "--noise-multiplier", "1.1", "--steps", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "hf-maskdp privacy: error: sample_rate=0.0 is out of range: must be in (0, 1]"
