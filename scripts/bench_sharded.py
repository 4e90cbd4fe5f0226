"""Benchmark sharded anonymization: frames per second with 1 and 2 local workers, side by side.

    .venv/bin/python scripts/bench_sharded.py [--clips 8] [--frames 16] [--size 240] [--tasks 4]

Generates `--clips` clips (`hf_maskdp.data`: a rendered person acting in front of a real photo,
`--size` px square, about UCF-101's 320x240 pixel count at 240), then runs the same command a
user would, `hf-maskdp anonymize CLIPS OUT --tasks T --workers W`, once per W in a fresh output
folder. frames/s = input frames / the run's wall time as the command reports it (planning, the
pool's start, every worker building its models, all tasks, writing the shards). The machine's
load average is printed before and after each run: other jobs on the machine slow both runs and
the 2-worker run more (it needs both cores). The projection for UCF-101 (about 2.5 M frames)
assumes one worker per core, each as fast as one worker here.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from hf_maskdp.anonymize.sharded import read_progress

UCF101_FRAMES = 2.5e6


def make_clips(root: Path, clips: int, frames: int, size: int) -> None:
    from hf_maskdp.data import generate_clip
    from hf_maskdp.video import encode_video

    for i in range(clips):
        clip = generate_clip(seed=i, num_frames=frames, size=size)
        folder = root / clip["label_name"]
        folder.mkdir(parents=True, exist_ok=True)
        encode_video(clip["video"], fps=25, path=folder / f"clip_{i:03d}.mp4")


def run(clips: Path, output: Path, tasks: int, workers: int) -> tuple[float, float]:
    """Seconds of one sharded run, as `hf-maskdp anonymize` reports them, and the CPU seconds its tasks used."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [
        sys.executable,
        "-m",
        "hf_maskdp.cli",
        "anonymize",
        str(clips),
        str(output),
        "--tasks",
        str(tasks),
        "--workers",
        str(workers),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(result.stderr[-2000:])
    print("   ", result.stdout.strip().splitlines()[-1])
    seconds = float(re.search(r"this run: \d+ tasks \(\d+ clips\) in ([\d.]+) s", result.stdout)[1])
    cpu = sum(state["cpu_seconds"] for state in read_progress(output).values())  # each task's own CPU time
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=240)
    parser.add_argument("--tasks", type=int, default=4)
    args = parser.parse_args()

    frames = args.clips * args.frames
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        make_clips(folder / "clips", args.clips, args.frames, args.size)
        print(
            f"{args.clips} clips x {args.frames} frames at {args.size}x{args.size}, {args.tasks} tasks, "
            f"{os.cpu_count()} CPUs"
        )
        fps, cpu_per_frame = {}, {}
        for workers in (1, 2):
            load = os.getloadavg()[0]
            seconds, cpu = run(folder / "clips", folder / f"out-{workers}", args.tasks, workers)
            fps[workers], cpu_per_frame[workers] = frames / seconds, cpu / frames
            print(
                f"  {workers} worker(s): {seconds:.1f} s, {fps[workers]:.2f} frames/s; tasks used {cpu:.0f} CPU s "
                f"({cpu_per_frame[workers]:.3f} per frame, {cpu / seconds:.2f} cores on average; "
                f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after)"
            )
    print()
    print("| workers | frames/s (wall) | speed-up | task CPU s per frame |")
    print("|---|---|---|---|")
    for workers, value in fps.items():
        print(f"| {workers} | {value:.2f} | {value / fps[1]:.2f}x | {cpu_per_frame[workers]:.3f} |")
    core_fps = 1 / cpu_per_frame[2]  # one dedicated core, from the tasks' CPU time
    print(
        f"\nUCF-101 (~{UCF101_FRAMES / 1e6:.1f} M frames) on 100 cores: {UCF101_FRAMES / (100 * core_fps) / 3600:.1f} hours "
        f"at {core_fps:.1f} frames/s per dedicated core (task CPU time); "
        f"{UCF101_FRAMES / (100 * fps[2] / 2) / 3600:.1f} hours at this machine's wall rate per core"
    )


if __name__ == "__main__":
    main()
