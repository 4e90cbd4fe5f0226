#!/usr/bin/env python
"""Step time and memory of one training step under each privacy mode, side by side.

Same VideoMAE (112 px, 16 frames, 4 layers, hidden 192) and batch (4 private clips; maskdp also
4 public clips) under `none`, `dpsgd`, `maskdp` (both public views) and opacus' own
`make_private` as an outside reference, plus `none` on 8 clips (the clips a maskdp step reads).
The modes take turns step by step in one process, so a busy machine slows them all alike;
peak memory comes from a fresh process per mode. Collation (frame sampling, resizing,
normalizing, public views) is timed apart from the step's compute. Prints medians of wall and
CPU time and the ratios to `none`.

    python scripts/bench_training.py [--steps 8] [--threads 2] [--device cuda]

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

# mode -> (privacy_mode, public_view, private clips)
MODES = {"none": ("none", None, 4), "dpsgd": ("dpsgd", None, 4), "maskdp": ("maskdp", "fill", 4),
         "maskdp-drop": ("maskdp", "drop", 4), "opacus": ("opacus", None, 4), "none-8": ("none", None, 8)}
BATCH, FRAMES, SIZE = 4, 16, 112


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _model():
    import torch
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(0)
    config = VideoMAEConfig(image_size=SIZE, num_frames=FRAMES, hidden_size=192, num_hidden_layers=4,
                            num_attention_heads=3, intermediate_size=768, num_labels=10)
    return VideoMAEForVideoClassification(config)


def _rows(n: int):
    import numpy as np

    from hf_maskdp.video import encode_mask

    rng = np.random.default_rng(0)
    mask = np.zeros((FRAMES, SIZE, SIZE), bool)
    mask[:, :, : SIZE // 2] = True  # half of every frame sensitive
    return [{"video": rng.integers(0, 256, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8),
             "sensitive_mask": encode_mask(mask), "label": i % 10} for i in range(n)]


class TimedCollator:
    """A `VideoClipCollator` that adds the seconds spent collating to `self.seconds`."""

    def __init__(self):
        from hf_maskdp.training.collator import VideoClipCollator

        self.collator = VideoClipCollator(num_frames=FRAMES, image_size=SIZE)
        self.video_column = self.collator.video_column
        self.seconds = 0.0

    def _timed(self, fn, rows):
        start = time.perf_counter()
        try:
            return fn(rows)
        finally:
            self.seconds += time.perf_counter() - start

    def __call__(self, rows):
        return self._timed(self.collator, rows)

    def public_batch(self, rows):
        return self._timed(self.collator.public_batch, rows)


def make_step(mode: str, device: str = "cpu"):
    """(step, collator): `step()` runs one full training step of `mode`; `collator.seconds` collation."""
    import torch

    privacy_mode, view, clips = MODES[mode]
    rows, collator = _rows(clips + BATCH), TimedCollator()
    if privacy_mode == "opacus":
        from opacus import PrivacyEngine

        model = _model().to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loader = torch.utils.data.DataLoader(list(range(clips)), batch_size=clips)
        model, optimizer, _ = PrivacyEngine().make_private(module=model, optimizer=optimizer, data_loader=loader,
                                                           noise_multiplier=1.0, max_grad_norm=1.0,
                                                           poisson_sampling=False, grad_sample_mode="hooks")

        def step():
            batch = collator(rows[:clips])
            optimizer.zero_grad()
            logits = model(pixel_values=batch["pixel_values"].to(device)).logits
            torch.nn.functional.cross_entropy(logits, batch["labels"].to(device)).backward()
            optimizer.step()

        return step, collator
    from hf_maskdp.training.config import MaskDPConfig
    from hf_maskdp.training.trainer import MaskDPTrainer

    args = MaskDPConfig(output_dir=tempfile.mkdtemp(), privacy_mode=privacy_mode,
                        noise_multiplier=1.0 if privacy_mode != "none" else None, private_batch_size=clips,
                        public_batch_size=BATCH, per_device_train_batch_size=clips, public_view=view or "fill",
                        report_to="none", use_cpu=device == "cpu", dp_seed=0, learning_rate=1e-4,
                        trust_masks=True)  # synthetic masks made here, not by the anonymizer
    trainer = MaskDPTrainer(model=_model(), args=args, train_dataset=rows, data_collator=collator)
    trainer.get_train_dataloader()
    trainer.create_optimizer()
    indices = {"private": list(range(clips)), "public": list(range(clips, clips + BATCH))}

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES))
    parser.add_argument("--_mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")  # opacus, on frozen pixels
    logging.getLogger("hf_maskdp").setLevel(logging.ERROR)  # the fixed dp_seed warning: fine in a benchmark
    if args._mode:
        print(json.dumps(peak_memory(args._mode, args.device)))
        return
    modes = args.modes.split(",")
    results = {}
    for mode in modes:  # memory: each mode alone in its own process
        out = subprocess.run([sys.executable, __file__, "--_mode", mode, "--threads", str(args.threads),
                              "--device", args.device],
                             capture_output=True, text=True, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    # time: the modes take turns step by step, so a busy machine slows them all alike
    steps = {mode: make_step(mode, args.device) for mode in modes}
    samples = {mode: {"wall": [], "cpu": [], "collate": []} for mode in modes}
    for round_ in range(args.steps + 2):
        for mode, (step, collator) in steps.items():
            collator.seconds = 0.0
            _sync(args.device)
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            _sync(args.device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if round_ >= 2:  # warm-up rounds
                samples[mode]["wall"].append(wall - collator.seconds)
                samples[mode]["cpu"].append(cpu)
                samples[mode]["collate"].append(collator.seconds)
    for mode in modes:
        results[mode].update({key: statistics.median(values) for key, values in samples[mode].items()})
    base = results["none"] if "none" in results else next(iter(results.values()))
    print(f"VideoMAE {SIZE}px x {FRAMES} frames, 4 layers, hidden 192; batch {BATCH} (+{BATCH} public for maskdp); "
          f"{args.device}, torch threads {args.threads}; median of {args.steps} interleaved steps")
    print("step s: wall time of the step without collation; cpu s: process CPU time of the whole step")
    print(f"{'mode':<12} {'collate s':>9} {'step s':>8} {'x none':>7} {'cpu s':>7} {'x none':>7} "
          f"{'peak MB':>8} {'step MB':>8} {'x none':>7}")
    for mode, r in results.items():
        print(f"{mode:<12} {r['collate']:>9.3f} {r['wall']:>8.3f} {r['wall'] / base['wall']:>7.2f} {r['cpu']:>7.3f} "
              f"{r['cpu'] / base['cpu']:>7.2f} {r['peak_mb']:>8.0f} {r['extra_mb']:>8.0f} "
              f"{r['peak_mb'] / base['peak_mb']:>7.2f}")


if __name__ == "__main__":
    main()
