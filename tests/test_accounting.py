"""The accountant against the libraries it builds on, and its edge cases."""

from __future__ import annotations

import itertools
import math

import dp_accounting
import pytest
from dp_accounting.pld import privacy_loss_distribution
from dp_accounting.rdp import RdpAccountant
from opacus.accountants import RDPAccountant

from hf_maskdp.privacy.accounting import calibrate_noise_multiplier, compute_epsilon, resolve_steps

# (q, σ, steps, δ) a DP-SGD run can realistically use. Left out: q = 0.1 runs with ε > 40
# (no privacy to speak of), where dp-accounting's series for small orders does not converge
# and it drops them, so its ε is larger than opacus' (the PLD, tighter still, agrees with us).
DIVERGENT = {(0.1, 0.8, 1000), (0.1, 0.8, 10000), (0.1, 1.1, 10000)}
GRID = [
    (q, sigma, steps, delta)
    for q, sigma, steps, delta in itertools.product(
        [0.001, 0.01, 0.1], [0.8, 1.1, 2.0], [100, 1000, 10000], [1e-5, 1e-7]
    )
    if (q, sigma, steps) not in DIVERGENT
]
PLD_GRID = [(0.01, 1.1, 10000, 1e-5), (0.1, 2.0, 100, 1e-5), (0.001, 0.8, 1000, 1e-7), (0.05, 1.5, 500, 1e-6)]


def sgm_event(q, sigma, steps):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


@pytest.mark.filterwarnings("ignore:Optimal order is the")
@pytest.mark.parametrize("q, sigma, steps, delta", GRID)
def test_rdp_matches_opacus_and_dp_accounting(q, sigma, steps, delta):
    ours = compute_epsilon(q, sigma, steps, delta)

    opacus_accountant = RDPAccountant()
    for _ in range(steps):  # the way a trainer uses it: one call per step
        opacus_accountant.step(noise_multiplier=sigma, sample_rate=q)
    opacus_eps = opacus_accountant.get_epsilon(delta=delta)
    google = RdpAccountant()
    google.compose(sgm_event(q, sigma, steps))

    assert ours <= opacus_eps * (1 + 1e-9)  # our order grid is a superset of opacus' default one
    assert ours == pytest.approx(opacus_eps, rel=0.01)
    assert ours == pytest.approx(google.get_epsilon(delta), rel=0.01)


@pytest.mark.parametrize("q, sigma, steps, delta", PLD_GRID)
def test_pld_is_tighter_than_rdp_and_matches_dp_accounting(q, sigma, steps, delta):
    rdp, pld, prv = (compute_epsilon(q, sigma, steps, delta, accountant=a) for a in ("rdp", "pld", "prv"))
    assert 0 < pld <= rdp and 0 < prv <= rdp
    # An independent route through dp-accounting: build the PLD of one step and self-compose it.
    reference = (
        privacy_loss_distribution.from_gaussian_mechanism(
            standard_deviation=sigma, sampling_prob=q, value_discretization_interval=1e-4
        )
        .self_compose(steps)
        .get_epsilon_for_delta(delta)
    )
    assert pld == pytest.approx(reference, rel=0.01)
    assert prv == pytest.approx(pld, rel=0.03)  # two numerical methods, one mechanism


def test_tighter_accountants_never_exceed_rdp_even_at_tiny_epsilon():
    # PRV's error bar (0.01) is larger than the whole ε here; the reported value must still be <= RDP.
    for accountant in ("prv", "pld"):
        assert compute_epsilon(1.0, 100.0, 1, 1e-5, accountant) <= compute_epsilon(1.0, 100.0, 1, 1e-5, "rdp")


def test_monotone_in_steps_sample_rate_and_noise():
    def eps(q=0.01, sigma=1.0, steps=1000):
        return compute_epsilon(q, sigma, steps, 1e-5)

    by_steps = [eps(steps=t) for t in (10, 100, 1000, 10000)]
    by_rate = [eps(q=q) for q in (0.001, 0.005, 0.02, 0.1, 1.0)]
    by_noise = [eps(sigma=s) for s in (0.6, 0.9, 1.5, 3.0, 10.0)]
    assert by_steps == sorted(by_steps) and len(set(by_steps)) == len(by_steps)
    assert by_rate == sorted(by_rate) and len(set(by_rate)) == len(by_rate)
    assert by_noise == sorted(by_noise, reverse=True) and len(set(by_noise)) == len(by_noise)


@pytest.mark.parametrize("accountant, tolerance", [("rdp", 1e-3), ("pld", 1e-2)])  # PLD is slower
def test_calibrate_round_trip(accountant, tolerance):
    q, epochs, delta, target = 0.02, 1, 1e-5, 2.0
    sigma = calibrate_noise_multiplier(
        target, q, epochs=epochs, delta=delta, accountant=accountant, tolerance=tolerance
    )
    assert compute_epsilon(q, sigma, epochs=epochs, delta=delta, accountant=accountant) <= target
    # Smallest: a little less noise already misses the target.
    assert compute_epsilon(q, sigma / (1 + 2 * tolerance), epochs=epochs, delta=delta, accountant=accountant) > target


@pytest.mark.filterwarnings("ignore:Optimal order is the")
def test_calibrate_agrees_with_opacus_helper():
    from opacus.accountants.utils import get_noise_multiplier

    ours = calibrate_noise_multiplier(1.0, 0.01, steps=2000, delta=1e-5)
    theirs = get_noise_multiplier(target_epsilon=1.0, target_delta=1e-5, sample_rate=0.01, steps=2000, accountant="rdp")
    assert ours == pytest.approx(theirs, rel=0.01)


def test_epochs_become_steps():
    assert resolve_steps(0.1, epochs=3) == 30  # 3 / 0.1 is 30.000000000000004 in floats
    assert resolve_steps(0.03, epochs=1) == 34  # ceil(33.33...)
    assert compute_epsilon(0.01, 1.0, epochs=2) == compute_epsilon(0.01, 1.0, steps=200)


def test_no_noise_and_no_steps_are_refused():
    # sigma = 0 is no privacy at all and zero steps is no run: both are bad input, never an epsilon.
    for accountant in ("rdp", "prv", "pld"):
        with pytest.raises(ValueError, match="noise_multiplier=0.0"):
            compute_epsilon(0.01, 0.0, steps=10, accountant=accountant)
        with pytest.raises(ValueError, match="steps=0"):
            compute_epsilon(0.01, 1.0, steps=0, accountant=accountant)


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: compute_epsilon(0.0, 1.0, 10), ["sample_rate=0.0", "(0, 1]"]),
        (lambda: compute_epsilon(1.5, 1.0, 10), ["sample_rate=1.5", "(0, 1]"]),
        (lambda: compute_epsilon(float("nan"), 1.0, 10), ["sample_rate=nan"]),
        (lambda: compute_epsilon(0.1, -1.0, 10), ["noise_multiplier=-1.0", "> 0"]),
        (lambda: compute_epsilon(0.1, 1.0, 10, delta=0.0), ["delta=0.0", "(0, 1)"]),
        (lambda: compute_epsilon(0.1, 1.0, 10, delta=1.0), ["delta=1.0", "(0, 1)"]),
        (lambda: compute_epsilon(0.1, 1.0, -1), ["steps=-1", ">= 1"]),
        (lambda: compute_epsilon(0.1, 1.0, 2.5), ["steps=2.5", "whole number"]),
        (lambda: compute_epsilon(0.1, 1.0), ["steps", "epochs"]),
        (lambda: compute_epsilon(0.1, 1.0, 10, epochs=1), ["exactly one of steps or epochs"]),
        (lambda: compute_epsilon(0.1, 1.0, epochs=0), ["epochs=0", "> 0"]),
        (lambda: compute_epsilon(0.1, 1.0, 10, accountant="gdp"), ["accountant='gdp'", "rdp, prv, pld"]),
        (lambda: calibrate_noise_multiplier(0.0, 0.1, 10), ["target_epsilon=0.0", "> 0"]),
        (lambda: calibrate_noise_multiplier(math.inf, 0.1, 10), ["target_epsilon=inf"]),
        (lambda: calibrate_noise_multiplier(1.0, 0.1, 0), ["steps=0", ">= 1"]),
        (lambda: calibrate_noise_multiplier(1e-9, 0.5, 10000), ["target_epsilon=1e-09", "cannot be reached", "1000"]),
    ],
)
def test_bad_input_names_parameter_value_and_range(call, words):
    with pytest.raises(ValueError) as info:
        call()
    for word in words:
        assert word in str(info.value)
