"""Empirical privacy auditing: a statistically valid lower bound on ε from many runs.

Run a mechanism many times on two masked-adjacent datasets, D (a canary's sensitive content
present) and D' (replaced by ⊥), score each output, and ask how well a threshold on the
score tells the two apart. (ε, δ)-DP caps any test's error rates (Kairouz et al. 2015):

    FPR + e^ε FNR >= 1 - δ    and    FNR + e^ε FPR >= 1 - δ,

so upper confidence bounds on FPR and FNR give a lower bound on ε (Jagielski et al. 2020,
Nasr et al. 2021). An implementation whose lower bound exceeds its accountant's ε is broken.

Validity: the threshold and direction are chosen on one half of the runs and the bound is
computed on the other half, with one-sided Clopper-Pearson bounds at (1 - confidence) / 2
each, so the returned bound holds with probability >= `confidence`.

This module holds only the statistics; `hf_maskdp.training.audit.audit_training` runs the real
`MaskDPTrainer` (and two deliberately broken variants) and scores its runs with them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class AuditResult:
    """A lower bound on ε that holds with probability >= `confidence`."""

    epsilon_lower_bound: float
    confidence: float
    threshold: float
    direction: str  # "above": guess "canary present" when score > threshold; "below": when <
    fpr_upper: float
    fnr_upper: float
    runs: int  # per dataset


def clopper_pearson_upper(errors, trials: int, alpha: float):
    """One-sided upper bound on a rate: P[rate > bound] <= alpha after `errors` of `trials`
    (a float, or an array for an array of error counts)."""
    from scipy.stats import beta

    errors = np.asarray(errors)
    # beta.ppf(..., b=0) is nan; with every trial an error the bound is 1.
    upper = np.where(errors >= trials, 1.0, beta.ppf(1 - alpha, errors + 1, np.maximum(trials - errors, 1)))
    return float(upper) if upper.ndim == 0 else upper


def epsilon_from_rates(fpr: float, fnr: float, delta: float) -> float:
    """The largest ε that (ε, δ)-DP must have for a test with these error rates (>= 0)."""
    bounds = [0.0]
    for a, b in ((fpr, fnr), (fnr, fpr)):
        if a > 0 and 1 - delta - b > a:
            bounds.append(math.log((1 - delta - b) / a))
        elif a == 0 and 1 - delta - b > 0:
            bounds.append(math.inf)
    return max(bounds)


def epsilon_lower_bound(scores_in, scores_out, delta: float, confidence: float = 0.95, seed: int = 0) -> AuditResult:
    """Lower bound on ε from scores of runs on D (`scores_in`) and D' (`scores_out`)."""
    scores_in, scores_out = np.asarray(scores_in, float), np.asarray(scores_out, float)
    if min(len(scores_in), len(scores_out)) < 4:
        raise ValueError(f"need at least 4 runs per dataset (got {len(scores_in)} and {len(scores_out)})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence!r} is out of range: must be in (0, 1)")
    if not 0 <= delta < 1:
        raise ValueError(f"delta={delta!r} is out of range: must be in [0, 1)")
    rng = np.random.default_rng(seed)
    select_in, held_in = np.array_split(rng.permutation(scores_in), 2)
    select_out, held_out = np.array_split(rng.permutation(scores_out), 2)
    alpha = (1 - confidence) / 2  # one bound on FPR, one on FNR

    def bounds(thresholds, direction, s_in, s_out):
        """(ε bound, FPR bound, FNR bound) arrays for the test "score above/below t"."""
        s_in, s_out = np.sort(s_in), np.sort(s_out)
        above_in = len(s_in) - np.searchsorted(s_in, thresholds, side="right")
        above_out = len(s_out) - np.searchsorted(s_out, thresholds, side="right")
        below_in = np.searchsorted(s_in, thresholds, side="left")
        below_out = np.searchsorted(s_out, thresholds, side="left")
        # false positive: guess "present" on D'; false negative: guess "absent" on D.
        if direction == "above":
            false_pos, false_neg = above_out, len(s_in) - above_in
        else:
            false_pos, false_neg = below_out, len(s_in) - below_in
        fpr = clopper_pearson_upper(false_pos, len(s_out), alpha)
        fnr = clopper_pearson_upper(false_neg, len(s_in), alpha)
        return np.vectorize(epsilon_from_rates)(fpr, fnr, delta), fpr, fnr

    # Candidate thresholds: midpoints of the sorted selection scores (and both ends).
    pooled = np.unique(np.concatenate([select_in, select_out]))
    thresholds = np.concatenate([[pooled[0] - 1], (pooled[1:] + pooled[:-1]) / 2, [pooled[-1] + 1]])
    best_value, threshold, direction = -1.0, 0.0, "above"
    for candidate in ("above", "below"):
        values = bounds(thresholds, candidate, select_in, select_out)[0]
        if values.max() > best_value:
            best_value, threshold, direction = values.max(), float(thresholds[values.argmax()]), candidate
    eps, fpr, fnr = (float(x[0]) for x in bounds(np.array([threshold]), direction, held_in, held_out))
    return AuditResult(eps, confidence, threshold, direction, fpr, fnr, len(scores_in))


def gaussian_mechanism_scores(noise_multiplier: float, runs: int, seed: int = 0):
    """Outputs of the Gaussian mechanism with sensitivity 1: N(1, σ²) on D, N(0, σ²) on D'."""
    rng = np.random.default_rng(seed)
    return 1 + noise_multiplier * rng.standard_normal(runs), noise_multiplier * rng.standard_normal(runs)
