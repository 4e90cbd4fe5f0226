"""Privacy accounting for MaskDP training.

Under masked adjacency (one record's sensitive content replaced by nothing), the only
part of a MaskDP step that sees sensitive content is the private branch, which is the
Poisson-subsampled Gaussian mechanism with sensitivity C (see docs/privacy.md). So the
guarantee of T steps is exactly the DP-SGD guarantee, and we compute it with the
libraries that the DP community maintains:

- ``"rdp"`` (default, what the theorem states): opacus' RDP analysis of the subsampled
  Gaussian (Mironov, Talwar, Zhang 2019) converted with Balle et al. 2020, Theorem 21.
- ``"prv"``: opacus' PRV accountant (Gopi et al. 2021), the upper end of its error bar.
- ``"pld"``: Google dp-accounting's privacy loss distribution accountant.

PRV and PLD are tighter; each reports min(its ε, RDP's ε), both valid upper bounds.

All three use add/remove adjacency, which is what masked adjacency is for the private
branch: the record's clipped gradient goes from ḡ_i to 0.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings

import numpy as np

from hf_maskdp.constants import ACCOUNTANTS

# dp-accounting's default orders: opacus' defaults plus 11 and large orders that matter
# when ε is small. A superset of opacus' grid, so ours is never looser than opacus'.
RDP_ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024])

# Calibration searches σ in [MIN_NOISE, MAX_NOISE]; a target outside that range is an error.
MIN_NOISE_MULTIPLIER = 1e-2
MAX_NOISE_MULTIPLIER = 1e3

# dp-accounting's PLD holds the privacy loss on a grid of step `value_discretization_interval`
# (default 1e-4). One step's loss spans about (1 + 20σ) / σ² and the composed loss reaches about
# ε, so a tiny σ needs billions of points (σ = 1e-3, q = 0.01, 100 steps: a 38 GiB array). The
# grid is coarsened to at most PLD_MAX_POINTS points of that span: a coarser grid is still a
# valid upper bound (dp-accounting rounds pessimistically), and is used only where ε is huge anyway.
# Beyond PLD_MAX_INTERVAL the PLD says nothing RDP does not (and dp-accounting overflows): refused.
PLD_INTERVAL = 1e-4
PLD_MAX_POINTS = 1e6
PLD_MAX_INTERVAL = 1.0


class AccountantRangeError(ValueError):
    """The chosen numerical accountant cannot handle these parameters (use "rdp")."""


def delta_warning(delta: float, dataset_size: int | None) -> str | None:
    """A sentence for δ > 1/N (N records), else None: δ is the chance the guarantee fails outright."""
    if not dataset_size or delta <= 1 / dataset_size:
        return None
    return (
        f"delta={delta:g} is larger than 1/N = 1/{dataset_size}: δ is the probability that the guarantee "
        "fails outright (a mechanism that publishes one random record in full is (0, 1/N)-DP), so this run "
        f"may expose a record. Choose δ well below 1/N, e.g. {min(1e-5, 0.1 / dataset_size):.0e}"
    )


def resolve_steps(sample_rate: float, steps: int | None = None, epochs: float | None = None) -> int:
    """Number of steps from `steps`, or from `epochs` as ceil(epochs / sample_rate)."""
    if (steps is None) == (epochs is None):
        raise ValueError(f"give exactly one of steps or epochs (got steps={steps!r}, epochs={epochs!r})")
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, numbers.Real) or not float(steps).is_integer():
            raise ValueError(f"steps={steps!r} must be a whole number >= 1")
        if steps < 1:
            raise ValueError(f"steps={steps!r} is out of range: must be >= 1")
        return int(steps)
    return steps_for_epochs(sample_rate, epochs)


def steps_for_epochs(sample_rate: float, epochs: float) -> int:
    """Optimizer steps of `epochs` epochs with Poisson rate `sample_rate`: ceil(epochs / q).

    The one definition of "epochs -> steps": `hf-maskdp privacy --epochs`, the Space and
    `MaskDPTrainer` (num_train_epochs) all use it, so a σ calibrated for E epochs is used for
    exactly the steps it was calibrated for.
    """
    _check_sample_rate(sample_rate)
    _check_real("epochs", epochs)
    if not epochs > 0:
        raise ValueError(f"epochs={epochs!r} is out of range: must be > 0")
    exact = epochs / sample_rate
    # 3 / 0.1 is 30.000000000000004 in floating point: that is 30 steps, not 31.
    nearest = round(exact)
    return int(nearest) if math.isclose(exact, nearest, rel_tol=1e-9) else math.ceil(exact)


def compute_epsilon(
    sample_rate: float,
    noise_multiplier: float,
    steps: int | None = None,
    delta: float = 1e-5,
    accountant: str = "rdp",
    epochs: float | None = None,
) -> float:
    """ε of `steps` MaskDP (or DP-SGD) steps with Poisson rate `sample_rate` and noise σ.

    Args:
        sample_rate: Poisson sampling rate q of the private batch, in (0, 1].
        noise_multiplier: σ, the noise std divided by the clip norm C; > 0 (σ = 0 is no
            privacy at all, so it is refused rather than reported).
        steps: number of optimizer steps T >= 1 (each one counts, empty batches included).
        delta: δ in (0, 1); choose it well below 1 / dataset size.
        accountant: "rdp" (default), "prv" or "pld".
        epochs: alternative to `steps`: T = ceil(epochs / sample_rate).
    """
    _check_sample_rate(sample_rate)
    _check_real("noise_multiplier", noise_multiplier)
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier={noise_multiplier!r} is out of range: must be > 0 (0 is no privacy)")
    _check_delta(delta)
    _check_accountant(accountant)
    steps = resolve_steps(sample_rate, steps, epochs)
    epsilon = float(_EPSILON[accountant](sample_rate, noise_multiplier, steps, delta))
    if accountant != "rdp":
        # Every accountant's answer is a valid upper bound, so the smaller one is too. This
        # keeps the contract that PRV/PLD never report more than RDP (PRV adds its error
        # bar, which can exceed RDP's slack when ε is tiny).
        epsilon = min(epsilon, _rdp_epsilon(sample_rate, noise_multiplier, steps, delta))
    return max(0.0, epsilon)


def calibrate_noise_multiplier(
    target_epsilon: float,
    sample_rate: float,
    steps: int | None = None,
    delta: float = 1e-5,
    accountant: str = "rdp",
    epochs: float | None = None,
    tolerance: float = 1e-3,
) -> float:
    """The smallest σ (to relative `tolerance`) whose ε is <= `target_epsilon`.

    ε at the returned σ is guaranteed to be <= target: the search returns the upper end
    of its bracket, which was evaluated. Raises ValueError when no σ in
    [MIN_NOISE_MULTIPLIER, MAX_NOISE_MULTIPLIER] works.
    """
    _check_real("target_epsilon", target_epsilon)
    if not 0 < target_epsilon < math.inf:
        raise ValueError(f"target_epsilon={target_epsilon!r} is out of range: must be > 0 and finite")
    _check_sample_rate(sample_rate)
    _check_delta(delta)
    _check_accountant(accountant)
    steps = resolve_steps(sample_rate, steps, epochs)
    if steps < 1:
        raise ValueError(f"steps={steps!r} is out of range: calibration needs steps >= 1")

    evaluated = {}

    def epsilon(sigma: float, name: str = accountant) -> float:
        if (sigma, name) not in evaluated:
            try:
                evaluated[sigma, name] = compute_epsilon(sample_rate, sigma, steps, delta, name)
            except AccountantRangeError:  # a σ too small to account numerically is not a σ to return
                evaluated[sigma, name] = math.inf
        return evaluated[sigma, name]

    low, high = MIN_NOISE_MULTIPLIER, MAX_NOISE_MULTIPLIER
    rdp_reaches = epsilon(high, "rdp") <= target_epsilon
    if not rdp_reaches and epsilon(high) > target_epsilon:
        raise ValueError(
            f"target_epsilon={target_epsilon!r} cannot be reached with noise_multiplier <= "
            f"{MAX_NOISE_MULTIPLIER:g} (sample_rate={sample_rate!r}, steps={steps}, delta={delta!r}); "
            "raise target_epsilon or delta, or lower sample_rate or steps"
        )
    if accountant != "rdp":
        # PRV and PLD report min(their ε, RDP's ε), so RDP's σ meets the target: start there and
        # step down, rather than evaluate the slow numerical accountants at tiny σ, where they
        # are slowest and least stable.
        if rdp_reaches:
            high = calibrate_noise_multiplier(target_epsilon, sample_rate, steps, delta, "rdp", tolerance=tolerance)
        low = max(high * 0.9, MIN_NOISE_MULTIPLIER)
        while low > MIN_NOISE_MULTIPLIER and epsilon(low) <= target_epsilon:
            low, high = max(low * 0.9, MIN_NOISE_MULTIPLIER), low
    if epsilon(low) <= target_epsilon:
        return low  # the search range ends here: any smaller σ is not a sane choice
    # ε falls with σ: bisect on log σ, keeping ε(low) > target >= ε(high).
    while high / low > 1 + tolerance:
        mid = math.sqrt(low * high)
        if epsilon(mid) <= target_epsilon:
            high = mid
        else:
            low = mid
    return high


def _rdp_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(sigma, q, steps)]
    with _quiet():
        return accountant.get_epsilon(delta=delta, alphas=list(RDP_ORDERS))


def _prv_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = [(sigma, q, steps)]
    with _quiet():
        return accountant.get_epsilon(delta=delta)  # the upper end of its error bar


def _pld_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    import dp_accounting

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    rdp = _rdp_epsilon(q, sigma, steps, delta)
    interval = max(PLD_INTERVAL, ((1 + 20 * sigma) / sigma**2 + rdp) / PLD_MAX_POINTS)  # see PLD_MAX_POINTS
    refusal = (
        f"noise_multiplier={sigma!r} is too small for the pld accountant (sample_rate={q!r}, steps={steps}: "
        f"RDP's epsilon is {rdp:.3g}, no privacy to speak of); use accountant='rdp'"
    )
    if interval > PLD_MAX_INTERVAL:
        raise AccountantRangeError(refusal)
    accountant = dp_accounting.pld.PLDAccountant(value_discretization_interval=interval)
    try:
        accountant.compose(event)
        return accountant.get_epsilon(delta)
    except (MemoryError, OverflowError):  # numpy refuses a huge allocation up front: nothing half-done
        raise AccountantRangeError(refusal) from None


@contextlib.contextmanager
def _quiet():
    # opacus warns when the best RDP order is at the edge of the grid (the bound is still
    # valid, only a bit loose), and its PRV code takes log(0) in regions it then discards.
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        warnings.filterwarnings("ignore", message="Optimal order is the")
        yield


_EPSILON = {"rdp": _rdp_epsilon, "prv": _prv_epsilon, "pld": _pld_epsilon}


def _check_real(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name}={value!r} must be a real number")


def _check_sample_rate(sample_rate) -> None:
    _check_real("sample_rate", sample_rate)
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate={sample_rate!r} is out of range: must be in (0, 1]")


def _check_delta(delta) -> None:
    _check_real("delta", delta)
    if not 0 < delta < 1:
        raise ValueError(f"delta={delta!r} is out of range: must be in (0, 1)")


def _check_accountant(accountant) -> None:
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant={accountant!r} is unknown: must be one of {', '.join(ACCOUNTANTS)}")
