#!/usr/bin/env python
"""Step time and memory of one training step under each privacy mode, side by side.

Same VideoMAE (112 px, 16 frames, 4 layers, hidden 192) and batch (4 private clips; maskdp also
4 public clips) under `none`, `dpsgd`, `maskdp` and opacus' own `make_private` as an outside
reference. Step times are measured with the modes taking turns in one process (a busy machine
slows all alike); peak memory in a fresh process per mode. Prints medians and ratios to `none`.

    python scripts/bench_training.py [--steps 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ["none", "dpsgd", "maskdp", "opacus"]
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


def _rows():
    import numpy as np

    from hf_maskdp.video import encode_mask

    rng = np.random.default_rng(0)
    rows = []
    for i in range(2 * BATCH):
        mask = np.zeros((FRAMES, SIZE, SIZE), bool)
        mask[:, :, : SIZE // 2] = True  # half of every frame sensitive
        rows.append({"video": rng.integers(0, 256, (FRAMES, SIZE, SIZE, 3), dtype=np.uint8),
                     "sensitive_mask": encode_mask(mask), "label": i % 10})
    return rows


def make_step(mode: str):
    """A closure running one full training step of `mode` (collation included)."""
    import torch

    from hf_maskdp.training.collator import VideoClipCollator

    rows, collator = _rows(), VideoClipCollator(num_frames=FRAMES, image_size=SIZE)
    if mode == "opacus":
        from opacus import PrivacyEngine

        model = _model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        loader = torch.utils.data.DataLoader(list(range(BATCH)), batch_size=BATCH)
        model, optimizer, _ = PrivacyEngine().make_private(module=model, optimizer=optimizer, data_loader=loader,
                                                           noise_multiplier=1.0, max_grad_norm=1.0,
                                                           poisson_sampling=False, grad_sample_mode="hooks")

        def step():
            batch = collator(rows[:BATCH])
            optimizer.zero_grad()
            logits = model(pixel_values=batch["pixel_values"]).logits
            torch.nn.functional.cross_entropy(logits, batch["labels"]).backward()
            optimizer.step()

        return step
    from hf_maskdp.training.config import MaskDPConfig
    from hf_maskdp.training.trainer import MaskDPTrainer

    args = MaskDPConfig(output_dir=tempfile.mkdtemp(), privacy_mode=mode,
                        noise_multiplier=1.0 if mode != "none" else None, private_batch_size=BATCH,
                        public_batch_size=BATCH, per_device_train_batch_size=BATCH, report_to="none", use_cpu=True,
                        dp_seed=0, learning_rate=1e-4)
    trainer = MaskDPTrainer(model=_model(), args=args, train_dataset=rows, data_collator=collator)
    trainer.get_train_dataloader()
    trainer.create_optimizer()
    indices = {"private": list(range(BATCH)), "public": list(range(BATCH, 2 * BATCH))}

    def step():
        trainer.training_step(trainer.model, indices)
        trainer.optimizer.step()
        trainer.model.zero_grad()

    return step


def peak_memory(mode: str) -> dict:
    """Run in a fresh process: peak RSS, and how much the steps added to it."""
    step = make_step(mode)
    before = _rss_kb("VmRSS")
    for _ in range(3):
        step()
    return {"peak_mb": _rss_kb("VmHWM") / 1024, "extra_mb": (_rss_kb("VmHWM") - before) / 1024}


def torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--_mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch_threads(args.threads)
    if args._mode:
        print(json.dumps(peak_memory(args._mode)))
        return
    results = {}
    for mode in MODES:  # memory: each mode alone in its own process
        out = subprocess.run([sys.executable, __file__, "--_mode", mode, "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    # time: the modes take turns step by step, so a busy machine slows them all alike
    steps = {mode: make_step(mode) for mode in MODES}
    times = {mode: [] for mode in MODES}
    for round_ in range(args.steps + 2):
        for mode, step in steps.items():
            start = time.perf_counter()
            step()
            if round_ >= 2:
                times[mode].append(time.perf_counter() - start)
    for mode in MODES:
        results[mode]["median_s"] = statistics.median(times[mode])
    base = results["none"]
    print(f"VideoMAE {SIZE}px x {FRAMES} frames, 4 layers, hidden 192; batch {BATCH} (+{BATCH} public for maskdp); "
          f"{args.threads} threads; median of {args.steps} steps; collation included in every mode")
    print(f"{'mode':<8} {'step s':>8} {'x none':>7} {'peak MB':>8} {'step MB':>8} {'x none':>7}")
    for mode, r in results.items():
        print(f"{mode:<8} {r['median_s']:>8.3f} {r['median_s'] / base['median_s']:>7.2f} {r['peak_mb']:>8.0f} "
              f"{r['extra_mb']:>8.0f} {r['peak_mb'] / base['peak_mb']:>7.2f}")


if __name__ == "__main__":
    main()
