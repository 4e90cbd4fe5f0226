"""Empirical privacy audit: lower bounds on ε from many runs, next to what the accountant states.

Rows: the Gaussian mechanism (known ε: checks the statistics), the real MaskDPTrainer for several
(σ, q, steps), and two deliberately broken trainers that the audit must catch.

    .venv/bin/python scripts/audit_privacy.py [--runs 500] [--confidence 0.95]

A correct row must have its lower bound at or below the accountant's ε (PLD, the tightest); a
broken row is caught when its lower bound exceeds the accountant's ε (RDP, what the run states).
"""

from __future__ import annotations

import argparse
import time

from dp_accounting.gaussian_mechanism import get_epsilon_gaussian

from hf_maskdp.privacy.audit import epsilon_lower_bound, gaussian_mechanism_scores
from hf_maskdp.training.audit import audit_training

# (variant, σ, private records (q = 1 / records), steps)
TRAINING_ROWS = [
    ("correct", 1.0, 1, 1),
    ("correct", 2.0, 1, 1),
    ("correct", 1.0, 2, 1),
    ("correct", 1.0, 2, 3),
    ("no_noise", 5.0, 1, 1),
    ("no_noise", 5.0, 2, 1),
    ("public_reads_sensitive", 5.0, 2, 1),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="runs per dataset (D and D') for each row")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--delta", type=float, default=1e-5)
    args = parser.parse_args()

    header = f"{'mechanism':<31}{'sigma':>6}{'q':>6}{'steps':>6}{'runs':>6}{'eps RDP':>9}{'eps PLD':>9}{'eps lower':>10}  verdict"
    print(f"confidence {args.confidence}, delta {args.delta}\n{header}\n{'-' * len(header)}")
    failures = 0
    for sigma in (0.5, 1.0):
        true_eps = get_epsilon_gaussian(sigma, args.delta)
        result = epsilon_lower_bound(*gaussian_mechanism_scores(sigma, args.runs * 4), args.delta, args.confidence)
        ok = result.epsilon_lower_bound <= true_eps
        failures += not ok
        print(
            f"{'gaussian (exact eps)':<31}{sigma:>6}{1:>6}{1:>6}{args.runs * 4:>6}{true_eps:>9.3f}{true_eps:>9.3f}"
            f"{result.epsilon_lower_bound:>10.3f}  {'ok' if ok else 'INVALID BOUND'}"
        )
    for variant, sigma, records, steps in TRAINING_ROWS:
        start = time.perf_counter()
        audit = audit_training(
            sigma,
            private_records=records,
            steps=steps,
            runs=args.runs,
            variant=variant,
            delta=args.delta,
            confidence=args.confidence,
        )
        lower = audit.result.epsilon_lower_bound
        if variant == "correct":
            ok = lower <= audit.epsilon_pld
            verdict = "ok" if ok else "BUG: bound above the accountant"
        else:
            ok = lower > audit.epsilon_rdp
            verdict = "caught" if ok else "not caught (more runs?)"
        failures += not ok
        print(
            f"{'trainer: ' + variant:<31}{sigma:>6}{audit.sample_rate:>6.2g}{steps:>6}{args.runs:>6}"
            f"{audit.epsilon_rdp:>9.3f}{audit.epsilon_pld:>9.3f}{lower:>10.3f}  {verdict}"
            f"  ({time.perf_counter() - start:.0f} s)"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
