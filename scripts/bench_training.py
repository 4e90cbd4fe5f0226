#!/usr/bin/env python
"""Step time and memory of one training step under each privacy mode, side by side.

Same VideoMAE and batch under `none`, `dpsgd`, `maskdp` (both public views) and opacus' own
`make_private` as an outside reference, plus `none-2x` (a non-private step on the clips a maskdp
step reads: its private and its public clips). Shapes: `--shape tiny` (112 px, 16 frames,
4 layers, hidden 192, batch 4) or `--shape base` (VideoMAE-base width and token count: 224 px,
16 frames = 1568 tokens, hidden 768, batch 2; 4 layers on CPU, all 12 on a GPU).
The modes take turns step by step in one process, so a busy machine slows them all alike;
peak memory comes from a fresh process per mode. Collation (frame sampling, resizing,
normalizing, public views: the DataLoader workers' part in training) is timed apart from the
step's compute. Prints medians of wall and CPU time and two ratios, each the median over rounds
of the ratio within a round: to `none` on the private batch alone, and to `none` on the same
clips (`none-2x` for maskdp, `none` for the modes that read only the private batch).

`--loader` instead times the whole training loop (`MaskDPTrainer.train`) on real encoded clips
(320x240, `--clip-frames` frames, decoded by PyAV) with the step batches built in the main
process (`dataloader_num_workers=0`, the serial path) and in 2 DataLoader workers.

    python scripts/bench_training.py [--steps 8] [--threads 2] [--device cuda] [--shape base]
    python scripts/bench_training.py --loader [--clip-frames 150]

On `--device cuda` the memory columns are the GPU's peak allocated memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

# mode -> (privacy_mode, public_view, private clips as a multiple of the batch)
MODES = {
    "none": ("none", None, 1),
    "dpsgd": ("dpsgd", None, 1),
    "maskdp": ("maskdp", "fill", 1),
    "maskdp-drop": ("maskdp", "drop", 1),
    "opacus": ("opacus", None, 1),
    "none-2x": ("none", None, 2),
}
SAME_CLIPS = {"maskdp": "none-2x", "maskdp-drop": "none-2x"}  # the non-private step on the clips a mode reads
SHAPES = {  # VideoMAE configuration and batch
    "tiny": {
        "image_size": 112,
        "hidden_size": 192,
        "num_hidden_layers": 4,
        "num_attention_heads": 3,
        "intermediate_size": 768,
        "batch": 4,
    },
    "base": {
        "image_size": 224,
        "hidden_size": 768,
        "num_hidden_layers": 4,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "batch": 2,
    },
}
FRAMES = 16
SHAPE = dict(SHAPES["tiny"])  # set by main()


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _model():
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(0)
    config = VideoMAEConfig(num_frames=FRAMES, num_labels=10, **{k: v for k, v in SHAPE.items() if k != "batch"})
    return VideoMAEForVideoClassification(config)


def _rows(n: int, frames: int = FRAMES, height: int | None = None, width: int | None = None, encoded: bool = False):
    """`n` random clips, the left half of every frame sensitive; `encoded`: as datasets store them (H.264)."""
    import numpy as np

    from hf_maskdp.video import encode_mask, encode_video

    height, width = height or SHAPE["image_size"], width or SHAPE["image_size"]
    rng = np.random.default_rng(0)
    mask = np.zeros((frames, height, width), bool)
    mask[:, :, : width // 2] = True
    rows = []
    for i in range(n):
        video = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
        if encoded:
            video = {"path": None, "bytes": encode_video(video)}
        rows.append({"video": video, "sensitive_mask": encode_mask(mask), "label": i % 10})
    return rows


class TimedCollator:
    """A `VideoClipCollator` that adds the wall and CPU seconds spent collating to `seconds` and `cpu_seconds`."""

    def __init__(self):
        from hf_maskdp.training.collator import VideoClipCollator

        self.collator = VideoClipCollator(num_frames=FRAMES, image_size=SHAPE["image_size"])
        self.video_column = self.collator.video_column
        self.seconds = self.cpu_seconds = 0.0

    def _timed(self, fn, rows):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(rows)
        finally:
            self.seconds += time.perf_counter() - start
            self.cpu_seconds += time.process_time() - cpu

    def __call__(self, rows):
        return self._timed(self.collator, rows)

    def public_batch(self, rows):
        return self._timed(self.collator.public_batch, rows)


def make_step(mode: str, device: str = "cpu"):
    """(step, collator): `step()` runs one full training step of `mode`; `collator.seconds` collation."""
    import torch

    privacy_mode, view, multiple = MODES[mode]
    batch = SHAPE["batch"]
    clips = multiple * batch
    rows, collator = _rows(clips + batch), TimedCollator()
    if privacy_mode == "opacus":
        from opacus import PrivacyEngine

        model = _model().to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loader = torch.utils.data.DataLoader(list(range(clips)), batch_size=clips)
        model, optimizer, _ = PrivacyEngine().make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            poisson_sampling=False,
            grad_sample_mode="hooks",
        )

        def step():
            batch = collator(rows[:clips])
            optimizer.zero_grad()
            logits = model(pixel_values=batch["pixel_values"].to(device)).logits
            torch.nn.functional.cross_entropy(logits, batch["labels"].to(device)).backward()
            optimizer.step()

        return step, collator
    from hf_maskdp.training.config import MaskDPConfig
    from hf_maskdp.training.trainer import MaskDPTrainer

    args = MaskDPConfig(
        output_dir=tempfile.mkdtemp(),
        privacy_mode=privacy_mode,
        noise_multiplier=1.0 if privacy_mode != "none" else None,
        private_batch_size=clips,
        public_batch_size=batch,
        per_device_train_batch_size=clips,
        public_view=view or "fill",
        report_to="none",
        use_cpu=device == "cpu",
        dp_seed=0,
        learning_rate=1e-4,
        trust_masks=True,
    )  # synthetic masks made here, not by the anonymizer
    trainer = MaskDPTrainer(model=_model(), args=args, train_dataset=rows, data_collator=collator)
    trainer.get_train_dataloader()
    trainer.create_optimizer()
    indices = {"private": list(range(clips)), "public": list(range(clips, clips + batch))}

    def step():
        trainer.training_step(trainer.model, indices)
        trainer.optimizer.step()
        trainer.model.zero_grad()

    return step, collator


def peak_memory(mode: str, device: str) -> dict:
    """Run in a fresh process: peak memory, and how much the steps added to it."""
    import torch

    step, _ = make_step(mode, device)
    cuda = device.startswith("cuda")
    before = torch.cuda.memory_allocated() if cuda else _rss_kb("VmRSS") * 1024
    for _ in range(3):
        step()
    peak = torch.cuda.max_memory_allocated() if cuda else _rss_kb("VmHWM") * 1024
    return {"peak_mb": peak / 2**20, "extra_mb": (peak - before) / 2**20}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_loader(args) -> None:
    """Training loop time per step with decoding included: step batches built serially (0 workers)
    or in 2 DataLoader workers that decode the next steps' clips while this one computes."""
    from hf_maskdp.training.collator import VideoClipCollator
    from hf_maskdp.training.config import MaskDPConfig
    from hf_maskdp.training.trainer import MaskDPTrainer

    batch = SHAPE["batch"]
    rows = _rows(4 * batch, frames=args.clip_frames, height=240, width=320, encoded=True)
    per_step = {0: [], 2: []}
    for _ in range(args.repeats):  # alternate, so a busy machine slows both alike
        for workers in per_step:
            config = MaskDPConfig(
                output_dir=tempfile.mkdtemp(),
                privacy_mode="maskdp",
                noise_multiplier=1.0,
                private_batch_size=batch,
                public_batch_size=batch,
                per_device_train_batch_size=batch,
                max_steps=args.steps,
                dataloader_num_workers=workers,
                report_to="none",
                use_cpu=args.device == "cpu",
                dp_seed=0,
                save_strategy="no",
                disable_tqdm=True,
                logging_strategy="no",
                trust_masks=True,
            )  # synthetic masks made here
            trainer = MaskDPTrainer(
                model=_model(),
                args=config,
                train_dataset=rows,
                data_collator=VideoClipCollator(num_frames=FRAMES, image_size=SHAPE["image_size"]),
            )
            trainer._plan()  # decodes one row and every mask: setup, not a step
            start = time.perf_counter()
            trainer.train()
            per_step[workers].append((time.perf_counter() - start) / args.steps)
    print(
        f"MaskDPTrainer.train, maskdp, {args.shape} model, batch {batch} private (Poisson) + {batch} public; "
        f"clips 320x240 x {args.clip_frames} frames (H.264, PyAV), {FRAMES} sampled; {args.device}, "
        f"torch threads {args.threads}; median of {args.repeats} runs of {args.steps} steps"
    )
    serial = statistics.median(per_step[0])
    for workers, times in per_step.items():
        median = statistics.median(times)
        print(f"dataloader_num_workers={workers}: {median:.3f} s/step  ({median / serial:.2f}x the serial path)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    parser.add_argument("--loader", action="store_true", help="time the training loop with decoding, 0 vs 2 workers")
    parser.add_argument("--clip-frames", type=int, default=150, help="frames per encoded clip (--loader)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per worker count (--loader)")
    parser.add_argument("--_mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    SHAPE.update(SHAPES[args.shape])
    if args.shape == "base" and args.device.startswith("cuda"):
        SHAPE["num_hidden_layers"] = 12  # the whole VideoMAE-base on a GPU
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")  # opacus, on frozen pixels
    logging.getLogger("hf_maskdp").setLevel(logging.ERROR)  # the fixed dp_seed warning: fine in a benchmark
    if args.loader:
        return bench_loader(args)
    if args._mode:
        print(json.dumps(peak_memory(args._mode, args.device)))
        return
    modes = args.modes.split(",")
    results = {}
    for mode in modes:  # memory: each mode alone in its own process
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--_mode",
                mode,
                "--threads",
                str(args.threads),
                "--device",
                args.device,
                "--shape",
                args.shape,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    # time: the modes take turns step by step, so a busy machine slows them all alike
    steps = {mode: make_step(mode, args.device) for mode in modes}
    samples = {mode: {"wall": [], "cpu": [], "collate": []} for mode in modes}
    for round_ in range(args.steps + 2):
        for mode, (step, collator) in steps.items():
            collator.seconds = collator.cpu_seconds = 0.0
            _sync(args.device)
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            _sync(args.device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if round_ >= 2:  # warm-up rounds
                samples[mode]["wall"].append(wall - collator.seconds)
                samples[mode]["cpu"].append(cpu - collator.cpu_seconds)
                samples[mode]["collate"].append(collator.seconds)
    for mode in modes:
        results[mode].update({key: statistics.median(values) for key, values in samples[mode].items()})
    base = "none" if "none" in modes else modes[0]

    def ratio(mode: str, reference: str | None, key: str) -> float:
        """Median over rounds of the time ratio within a round (paired: both ran back to back)."""
        if reference not in samples:
            return float("nan")
        if key == "peak_mb":
            return results[mode][key] / results[reference][key]
        return statistics.median(a / b for a, b in zip(samples[mode][key], samples[reference][key]))

    batch = SHAPE["batch"]
    print(
        f"VideoMAE {SHAPE['image_size']}px x {FRAMES} frames, {SHAPE['num_hidden_layers']} layers, hidden "
        f"{SHAPE['hidden_size']}; batch {batch} (+{batch} public for maskdp); {args.device}, torch threads "
        f"{args.threads}; medians of {args.steps} interleaved rounds"
    )
    print(
        "step s: wall time of the step; cpu s: process CPU time of the step (both without collation, which "
        "DataLoader workers do in training); x none: vs a non-private step on the private batch; x same: vs a "
        "non-private step on the same clips; ratios are medians of the ratios within each round"
    )
    print(
        f"{'mode':<12} {'collate s':>9} {'step s':>8} {'x none':>7} {'x same':>7} {'cpu s':>7} {'x none':>7} "
        f"{'x same':>7} {'peak MB':>8} {'step MB':>8} {'x none':>7} {'x same':>7}"
    )
    for mode, r in results.items():
        same = SAME_CLIPS.get(mode, base)
        ratios = [(ratio(mode, base, key), ratio(mode, same, key)) for key in ("wall", "cpu", "peak_mb")]
        print(
            f"{mode:<12} {r['collate']:>9.3f} {r['wall']:>8.3f} {ratios[0][0]:>7.2f} {ratios[0][1]:>7.2f} "
            f"{r['cpu']:>7.3f} {ratios[1][0]:>7.2f} {ratios[1][1]:>7.2f} {r['peak_mb']:>8.0f} {r['extra_mb']:>8.0f} "
            f"{ratios[2][0]:>7.2f} {ratios[2][1]:>7.2f}"
        )


if __name__ == "__main__":
    main()
