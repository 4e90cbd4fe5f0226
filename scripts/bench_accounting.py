"""ε of one DP-SGD / MaskDP run under each accountant, and the time one `compute_epsilon` call takes.

.venv/bin/python scripts/bench_accounting.py [--sample-rate 0.01 --noise-multiplier 1.1 --steps 10000 --delta 1e-5]
"""

from __future__ import annotations

import argparse
import time

from hf_maskdp.privacy.accounting import ACCOUNTANTS, compute_epsilon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample-rate", type=float, default=0.01)
    parser.add_argument("--noise-multiplier", type=float, default=1.1)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    run = (args.sample_rate, args.noise_multiplier, args.steps, args.delta)
    print(f"q={args.sample_rate}  sigma={args.noise_multiplier}  steps={args.steps}  delta={args.delta}")
    print(f"{'accountant':<11}{'epsilon':>10}{'ms / call':>12}{'vs rdp':>9}")
    rdp_ms = None
    for accountant in ACCOUNTANTS:
        compute_epsilon(*run, accountant=accountant)  # warm up: imports
        start = time.perf_counter()
        for _ in range(args.repeats):
            epsilon = compute_epsilon(*run, accountant=accountant)
        ms = 1000 * (time.perf_counter() - start) / args.repeats
        rdp_ms = rdp_ms or ms
        print(f"{accountant:<11}{epsilon:>10.4f}{ms:>12.1f}{ms / rdp_ms:>8.1f}x")


if __name__ == "__main__":
    main()
