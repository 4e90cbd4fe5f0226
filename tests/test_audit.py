"""The audit's statistics on a mechanism with known ε, and the real trainer audited (fast form).

The full audit, with many more runs, is `scripts/audit_privacy.py`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting.gaussian_mechanism import get_epsilon_gaussian

from hf_maskdp.privacy.audit import (
    clopper_pearson_upper,
    epsilon_from_rates,
    epsilon_lower_bound,
    gaussian_mechanism_scores,
)
from hf_maskdp.training.audit import audit_training


def test_clopper_pearson_matches_closed_form_and_covers():
    # With no errors the exact one-sided bound is 1 - alpha^(1/n).
    assert clopper_pearson_upper(0, 50, 0.025) == pytest.approx(1 - 0.025 ** (1 / 50))
    assert clopper_pearson_upper(7, 7, 0.05) == 1.0
    # Coverage: the bound is above the true rate in >= 95 % of repeated experiments.
    rng = np.random.default_rng(0)
    errors = rng.binomial(40, 0.2, size=2000)
    covered = np.mean([clopper_pearson_upper(int(k), 40, 0.05) >= 0.2 for k in errors])
    assert covered >= 0.95


def test_epsilon_from_rates():
    assert epsilon_from_rates(0.5, 0.5, 0.0) == 0.0  # a coin flip proves nothing
    assert epsilon_from_rates(0.0, 0.0, 1e-5) == math.inf  # a perfect test: no ε is enough
    assert epsilon_from_rates(0.1, 0.2, 0.0) == pytest.approx(math.log(0.8 / 0.1))
    assert epsilon_from_rates(0.2, 0.1, 0.0) == pytest.approx(math.log(0.8 / 0.1))  # both directions


@pytest.mark.parametrize("sigma, share", [(0.5, 0.25), (1.0, 0.15), (2.0, 0.0)])
def test_gaussian_mechanism_bound_is_valid_and_not_trivial(sigma, share):
    delta = 1e-5
    true_epsilon = get_epsilon_gaussian(sigma, delta)
    bounds = [
        epsilon_lower_bound(*gaussian_mechanism_scores(sigma, 2000, seed=s), delta, seed=s).epsilon_lower_bound
        for s in range(5)
    ]
    assert max(bounds) < true_epsilon
    assert min(bounds) > share * true_epsilon  # it measures something (fewer runs than ε needs at σ = 2)


def test_identical_mechanisms_give_no_evidence():
    rng = np.random.default_rng(1)
    result = epsilon_lower_bound(rng.standard_normal(500), rng.standard_normal(500), 1e-5)
    assert result.epsilon_lower_bound < 0.3


def test_bad_audit_input():
    with pytest.raises(ValueError, match="at least 4 runs"):
        epsilon_lower_bound([1.0, 2.0], [0.0, 1.0, 2.0, 3.0], 1e-5)
    with pytest.raises(ValueError, match="confidence=1.5"):
        epsilon_lower_bound(np.zeros(10), np.ones(10), 1e-5, confidence=1.5)
    with pytest.raises(ValueError, match="variant='oops'"):
        audit_training(1.0, variant="oops")


# The real MaskDPTrainer: q = 1, one step, σ = 5 (ε = 0.80). 40 runs per dataset cannot prove much
# (a perfect test proves ε >= 1.6 at 95 %), but that is already more than the broken variants may
# spend, and the correct trainer must stay below its accountant.
SIGMA, RUNS = 5.0, 40


def test_correct_trainer_stays_below_its_accountant():
    audit = audit_training(SIGMA, private_records=1, runs=RUNS, variant="correct")
    assert audit.result.epsilon_lower_bound <= audit.epsilon_pld <= audit.epsilon_rdp


@pytest.mark.parametrize("variant", ["no_noise", "public_reads_sensitive"])
def test_broken_trainer_is_caught(variant):
    audit = audit_training(SIGMA, private_records=1, runs=RUNS, variant=variant)
    assert audit.result.epsilon_lower_bound > audit.epsilon_rdp
