"""Sharded, resumable anonymization (hf_maskdp/anonymize/sharded.py) on real clips, real mediapipe
and real datatrove executors: local process pools, a SIGKILLed run resumed, the Slurm job
description run as its array tasks would, and a local Ray cluster."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mediapipe")
pytest.importorskip("datatrove")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hf_maskdp.anonymize.sharded import ShardPlan, read_progress  # noqa: E402

pytestmark = pytest.mark.timeout(600)
ALICE = "hf_alice_write"
REPO = Path(__file__).resolve().parents[1]


def cli(*argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """`hf-maskdp anonymize ...` in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **kwargs.pop("env", {})}
    command = [sys.executable, "-m", "hf_maskdp.cli", "anonymize", *argv]
    result = subprocess.run(command, capture_output=True, text=True, env=env, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def files_state(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every shard: a shard written again gets a new inode (temp file renamed)."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted((folder / "data").glob("*.parquet"))}


def completions(output: Path) -> set[int]:
    return {int(p.name) for p in (output / ".hf_maskdp/datatrove/completions").glob("*")}


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """8 tiny generated clips (a rendered person acting in front of a real photo) in two class folders."""
    from hf_maskdp.data import generate_clip
    from hf_maskdp.video import encode_video

    root = tmp_path_factory.mktemp("clips")
    for i in range(8):
        clip = generate_clip(seed=i, label=i % 2, num_frames=3, size=96)
        folder = root / clip["label_name"]
        folder.mkdir(exist_ok=True)
        encode_video(clip["video"], fps=10, path=folder / f"clip_{i}.mp4")
    return root


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory) -> Path:
    """The embedded action dataset (train 2, test 3 rows) saved with save_to_disk: keys are split/index."""
    from hf_maskdp.data import build_action_dataset

    path = tmp_path_factory.mktemp("saved") / "actions"
    build_action_dataset(num_train=2, num_test=3, num_frames=3, size=96, progress=False).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def finished_run(saved_dataset, tmp_path_factory):
    """3 tasks over 2 splits on a pool of 2 worker processes."""
    output = tmp_path_factory.mktemp("runs") / "finished"
    result = cli(str(saved_dataset), str(output), "--tasks", "3", "--workers", "2", "--max-frames", "3")
    return output, result


# --------------------------------------------------------------------------- the plan


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 30), min_size=1, max_size=4), tasks=st.integers(1, 40))
def test_tasks_cover_every_row_exactly_once_in_order(sizes, tasks):
    splits = {f"s{i}": n for i, n in enumerate(sizes)}
    plan = ShardPlan(
        input="x", split=None, video_column="video", tasks=tasks, splits=splits, keys_sha256="", anonymizer={}
    )
    rows = [
        (split, index)
        for rank in range(tasks)
        for split, start, stop in plan.ranges(rank)
        for index in range(start, stop)
    ]
    assert rows == [(split, index) for split, n in splits.items() for index in range(n)]
    names = [plan.shard_name(split, rank) for rank in range(tasks) for split, _, _ in plan.ranges(rank)]
    assert len(names) == len(set(names))  # one file per (task, split): nothing overwrites another task's rows


def test_progress_counts_earlier_tasks_as_done_and_rates_this_run_only(tmp_path):
    from hf_maskdp.anonymize.sharded import ProgressMonitor, _write_json

    plan = ShardPlan(
        input="x", split=None, video_column="video", tasks=4, splits={"train": 40}, keys_sha256="", anonymizer={}
    )
    monitor = ProgressMonitor(tmp_path, plan)
    ten_seconds_in = monitor.started + 10
    folder = tmp_path / ".hf_maskdp/progress"
    earlier, now = monitor.started - 100, monitor.started + 1
    _write_json(folder / "00000.json", {"rank": 0, "clips": 10, "frames": 160, "done": True, "started": earlier})
    _write_json(
        folder / "00001.json", {"rank": 1, "clips": 4, "frames": 64, "done": False, "started": earlier}
    )  # killed
    _write_json(folder / "00002.json", {"rank": 2, "clips": 5, "frames": 80, "done": False, "started": now})
    snapshot = monitor.snapshot(now=ten_seconds_in)
    assert snapshot["clips"] == 15 and snapshot["total"] == 40  # the killed task's 4 clips will be redone
    assert snapshot["fps"] == pytest.approx(8.0)  # 80 frames this run in 10 s
    assert snapshot["eta"] == pytest.approx(50.0)  # 25 clips left at 0.5 clips/s
    assert monitor.line(now=ten_seconds_in) == "anonymize: 15/40 clips, 8.0 frames/s, ETA 00:00:50"


# --------------------------------------------------------------------------- a local run on 2 processes


def test_shards_load_as_one_dataset_in_input_order(finished_run, saved_dataset):
    import datasets

    from hf_maskdp import load_anonymized_dataset

    output, result = finished_run
    source = datasets.load_from_disk(str(saved_dataset))
    loaded = load_anonymized_dataset(str(output))  # validates every mask against its clip
    assert {name: len(part) for name, part in loaded.items()} == {"train": 2, "test": 3}
    for name, part in loaded.items():
        assert part["source"] == [f"{name}/{i}" for i in range(len(source[name]))]
        assert part["identity"] == source[name]["identity"]  # input columns pass through, in order
    # 5 rows in 3 tasks: 1 + 2 + 2; task 1 holds the last train row and the first test row.
    assert sorted(p.name for p in (output / "data").glob("*")) == [
        "test-00001-of-00003.parquet",
        "test-00002-of-00003.parquet",
        "train-00000-of-00003.parquet",
        "train-00001-of-00003.parquet",
    ]
    assert not list((output / ".hf_maskdp/tmp").iterdir())
    assert "this run: 3 tasks (5 clips)" in result.stdout and "anonymized 5 clips" in result.stdout
    progress = re.search(r"anonymize: 5/5 clips, ([\d.]+) frames/s, ETA 00:00:00", result.stderr)
    assert progress and float(progress[1]) > 0  # the monitor's last line
    # The same map function as `hf-maskdp anonymize` without --tasks: the same rows come out.
    from hf_maskdp.anonymize.pipeline import AnonymizerConfig, AvatarAnonymizer
    from hf_maskdp.commands.anonymize import load_input
    from hf_maskdp.video import decode_mask

    anonymizer = AvatarAnonymizer(AnonymizerConfig(max_frames=3))
    for name, part in load_input(str(saved_dataset)).items():
        expected = part.map(anonymizer, batched=True, batch_size=2, features=anonymizer.features(part.features))
        assert loaded[name]["anonymization"] == expected["anonymization"]
        for got, want in zip(loaded[name]["sensitive_mask"], expected["sensitive_mask"]):
            assert (got == decode_mask(want)).all()
    plain = datasets.load_dataset(str(output))  # the Hub's {split}-NNNNN-of-NNNNN names: plain datasets agrees
    assert {name: len(part) for name, part in plain.items()} == {"train": 2, "test": 3}


def test_models_are_built_once_per_worker_process(finished_run):
    output, _ = finished_run
    progress = read_progress(output)
    assert sorted(progress) == [0, 1, 2] and all(state["done"] for state in progress.values())
    pids = [state["pid"] for state in progress.values()]
    assert len(pids) == 3 and len(set(pids)) <= 2  # 3 tasks on a pool of 2 processes: one process ran two
    assert os.getpid() not in pids  # the tasks ran in worker processes, not in the launcher
    assert all(state["anonymizers_built_in_process"] == 1 for state in progress.values())


def test_rerun_skips_completed_tasks_and_refuses_another_plan(finished_run, saved_dataset):
    output, _ = finished_run
    before = files_state(output)
    again = cli(str(saved_dataset), str(output), "--tasks", "3", "--workers", "2", "--max-frames", "3")
    assert "this run: 0 tasks (0 clips)" in again.stdout and "3 of 3 tasks already complete" in again.stdout
    assert files_state(output) == before
    for change in (["--tasks", "2"], ["--tasks", "3", "--seed", "1"]):
        refused = cli(str(saved_dataset), str(output), "--workers", "2", "--max-frames", "3", *change, check=False)
        assert refused.returncode == 2
        assert refused.stderr.strip().endswith("or --overwrite to start again)") and refused.stderr.count("\n") == 1
    assert files_state(output) == before


def test_an_unfinished_run_is_refused_by_the_loader(finished_run, tmp_path):
    from hf_maskdp import load_anonymized_dataset

    copy = tmp_path / "copy"
    shutil.copytree(finished_run[0], copy)
    (copy / ".hf_maskdp/datatrove/completions/00001").unlink()
    with pytest.raises(ValueError, match=r"unfinished sharded run \(2 of 3 tasks done\)"):
        load_anonymized_dataset(str(copy))


def test_push_uploads_the_shards_as_they_are_privately(finished_run, hub):
    from hf_maskdp.anonymize.sharded import push_shards
    from hf_maskdp.hub import load_anonymized_dataset

    output, _ = finished_run
    url = push_shards(output, "alice/sharded-anonymized", token=ALICE, anonymizer_info={"body_model": "mannequin"})
    repo = hub.repo("alice/sharded-anonymized", "dataset")
    assert url.endswith("alice/sharded-anonymized") and repo.private
    uploaded = repo.files("main")[1]
    shards = {f"data/{p.name}": p.read_bytes() for p in (output / "data").glob("*.parquet")}
    assert set(uploaded) - {".gitattributes"} == set(shards) | {"README.md"}  # nothing of .hf_maskdp/
    assert all(uploaded[name].content == content for name, content in shards.items())  # not rewritten
    assert "mannequin" in uploaded["README.md"].content.decode()
    loaded = load_anonymized_dataset("alice/sharded-anonymized", token=ALICE)  # the Hub reads the splits from the names
    assert {name: len(part) for name, part in loaded.items()} == {"train": 2, "test": 3}


# --------------------------------------------------------------------------- killed, then resumed


def test_a_run_killed_midway_resumes_without_duplicates_or_gaps(clip_folder, tmp_path):
    output = tmp_path / "out"
    argv = [str(clip_folder), str(output), "--tasks", "4", "--workers", "2", "--batch-size", "1", "--max-frames", "3"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        [sys.executable, "-m", "hf_maskdp.cli", "anonymize", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    # Kill when at least one task is complete and another has written part of its rows.
    deadline = time.time() + 400
    while time.time() < deadline and run.poll() is None:
        midway = [s for s in read_progress(output).values() if not s["done"] and s["clips"] >= 1]
        if completions(output) and midway:
            break
        time.sleep(0.1)
    assert run.poll() is None, "the run ended before it could be killed midway"
    os.killpg(run.pid, signal.SIGKILL)  # the launcher, datatrove's forkserver and every worker
    run.wait()
    done_first = completions(output)
    killed_midway = {s["rank"] for s in read_progress(output).values() if not s["done"] and s["clips"] >= 1}
    assert 1 <= len(done_first) < 4 and killed_midway and not killed_midway & done_first
    kept = {name: state for name, state in files_state(output).items() if int(name.split("-")[1]) in done_first}
    assert len(kept) == len(done_first)  # a killed task's rows never reached data/

    again = cli(*argv)
    redone = 4 - len(done_first)
    assert f"this run: {redone} tasks ({2 * redone} clips)" in again.stdout  # only the unfinished work
    assert f"{len(done_first)} of 4 tasks already complete (skipped)" in again.stdout
    assert "anonymize: 8/8 clips" in again.stderr  # progress counts the earlier run's completed tasks
    after = files_state(output)
    assert {name: after[name] for name in kept} == kept  # completed shards untouched
    from hf_maskdp import load_anonymized_dataset

    rows = load_anonymized_dataset(str(output))["train"]
    inputs = sorted(str(p.relative_to(clip_folder)) for p in clip_folder.rglob("*.mp4"))
    assert len(rows) == 8 and sorted(rows["source"]) == inputs  # one row per file, all distinct
    print(f"killed with {len(done_first)}/4 tasks done; the re-run redid {redone} tasks ({2 * redone} of 8 clips)")


# --------------------------------------------------------------------------- Slurm and Ray


def _fake_cluster_commands(folder: Path) -> None:
    """sbatch records each script and answers like Slurm; scontrol expands the node list (one node)."""
    folder.mkdir()
    scripts = {
        "sbatch": f'#!/bin/bash\nn=$(ls {folder}/job_*.sh 2>/dev/null | wc -l)\ncp "${{@: -1}}" {folder}/job_$n.sh\n'
        f'echo "$@" > {folder}/job_$n.args\necho "Submitted batch job $((100 + n))"\n',
        "scontrol": "#!/bin/bash\necho localhost\n",
    }
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod(stat.S_IRWXU)


def test_slurm_job_array_description_runs_as_array_tasks(saved_dataset, tmp_path):
    bin_dir, output = tmp_path / "bin", tmp_path / "out"
    _fake_cluster_commands(bin_dir)
    path = f"{bin_dir}:{os.environ['PATH']}"
    argv = [
        str(saved_dataset),
        str(output),
        "--tasks",
        "2",
        "--workers",
        "2",
        "--max-frames",
        "2",
        "--split",
        "test",
        "--executor",
        "slurm",
        "--slurm-partition",
        "cpu",
        "--slurm-time",
        "2:00:00",
        "--slurm-mem-per-cpu-gb",
        "3",
    ]
    submitted = cli(*argv, env={"PATH": path})
    assert "submitted 2 tasks (3 clips) to Slurm" in submitted.stdout
    script = (bin_dir / "job_0.sh").read_text()  # the job array; job_1 is datatrove's stats merge after it
    directives = dict(
        line[len("#SBATCH --") :].partition("=")[::2] for line in script.splitlines() if line.startswith("#SBATCH")
    )
    assert directives["array"] == "0-1%2" and directives["partition"] == "cpu" and directives["time"] == "2:00:00"
    assert directives["cpus-per-task"] == "1" and directives["mem-per-cpu"] == "3G"
    assert directives["job-name"] == "hf-maskdp-anonymize"
    assert f"source {sys.prefix}/bin/activate" in script
    pickled = output / ".hf_maskdp/datatrove/executor.pik"
    command = next(line for line in script.splitlines() if "launch_pickled_pipeline" in line)
    assert command.startswith("srun") and command.endswith(f"launch_pickled_pipeline {pickled}")
    assert "#SBATCH --dependency=afterok:100" in (bin_dir / "job_1.sh").read_text()  # stats merge after the array
    assert not (output / "data").exists()  # submitted, nothing run here

    for task in ("0", "1"):  # what each array task runs on its node
        env = {
            **os.environ,
            "PATH": path,
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
            "SLURM_ARRAY_TASK_ID": task,
            "SLURM_NODELIST": "localhost",
            "SLURM_JOB_ID": "100",
        }
        launcher = Path(sys.executable).parent / "launch_pickled_pipeline"
        subprocess.run([str(launcher), str(pickled)], env=env, check=True, capture_output=True)
    done = cli(*argv, env={"PATH": path})  # all done: the summary, no new submission
    assert "this run: 0 tasks" in done.stdout and "anonymized 3 clips" in done.stdout
    assert not (bin_dir / "job_2.sh").exists()


def test_ray_executor_on_a_local_cluster(saved_dataset, tmp_path):
    pytest.importorskip("ray")
    from hf_maskdp import load_anonymized_dataset

    output = tmp_path / "out"
    result = cli(
        str(saved_dataset),
        str(output),
        "--tasks",
        "2",
        "--workers",
        "2",
        "--max-frames",
        "2",
        "--split",
        "test",
        "--executor",
        "ray",
        env={"RAY_DISABLE_USAGE_STATS": "1"},
    )
    assert "this run: 2 tasks (3 clips)" in result.stdout
    assert load_anonymized_dataset(str(output))["test"]["source"] == ["test/0", "test/1", "test/2"]


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--tasks", "2", "--num-proc", "2"], "--num-proc is for a single datasets.map"),
        (["--tasks", "2", "--slurm-partition", "cpu"], "need --executor slurm"),
        (["--tasks", "2", "--executor", "slurm"], "--executor slurm needs --slurm-partition"),
        (["--tasks", "0"], "--tasks 0: use at least 1 task"),
    ],
)
def test_bad_sharding_options_give_one_clear_line(saved_dataset, tmp_path, options, message):
    result = cli(str(saved_dataset), str(tmp_path / "out"), *options, check=False)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1
