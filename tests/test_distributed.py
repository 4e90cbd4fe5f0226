"""Two CPU processes (gloo): Poisson per shard, one all-reduce, the noise added once in total."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hf_maskdp.privacy.accounting import compute_epsilon

HERE = Path(__file__).parent


def _launch(launcher: list[str], out: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [*launcher, str(HERE / "distributed_maskdp.py"), str(out), *extra]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.timeout(300)
def test_two_process_accelerate_run(tmp_path):
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    result = _launch(launcher, tmp_path / "result.json")
    assert result["world_size"] == 2
    # Variance of the noise-only update is sigma^2 C^2 / (qN)^2 once, not twice (1.41x std).
    assert abs(result["noise_std_ratio"] - 1) < 0.04
    assert result["noise_equal_on_ranks"] and result["params_max_diff"] == 0.0
    # Same q, steps and epsilon as one process on the whole dataset: 8 records, batch 2, 2 epochs.
    assert result["sample_rate"] == 0.25 and result["steps"] == 8
    assert result["epsilon"] == compute_epsilon(0.25, 1.0, steps=8, delta=1e-5)
    # branch_adam's moments (and so the weights) are the same on both processes, step after step.
    assert result["branch_adam_equal_on_ranks"] and result["branch_adam_steps"] == [4, 4]


@pytest.mark.timeout(300)
def test_processes_that_do_not_see_each_other_are_refused(tmp_path):
    """torchrun on CPU without use_cpu=True: each process would think it is alone."""
    result = _launch(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], tmp_path / "result.json", "--no-cpu"
    )
    assert "processes were launched but the Trainer sees world_size=1" in result["error"]
