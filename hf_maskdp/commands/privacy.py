"""`hf-maskdp privacy`: ε of a training run, or the noise multiplier for a target ε."""

from __future__ import annotations

from hf_maskdp.constants import ACCOUNTANTS, DEFAULT_ACCOUNTANT


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "privacy",
        help="privacy accounting: compute ε or calibrate the noise multiplier",
        description="MaskDP privacy accounting (Poisson-subsampled Gaussian mechanism).",
    )
    commands = parser.add_subparsers(dest="privacy_command", metavar="{epsilon,calibrate}", required=True)

    epsilon = commands.add_parser("epsilon", help="print ε of a run")
    epsilon.add_argument("--noise-multiplier", type=float, required=True, help="σ: noise std / clip norm")
    _add_run_arguments(epsilon)
    epsilon.set_defaults(handler=_epsilon)

    calibrate = commands.add_parser("calibrate", help="print the smallest σ whose ε is <= the target")
    calibrate.add_argument("--target-epsilon", type=float, required=True)
    _add_run_arguments(calibrate)
    calibrate.set_defaults(handler=_calibrate)


def _add_run_arguments(parser) -> None:
    parser.add_argument("--sample-rate", type=float, required=True, help="Poisson sampling rate q in (0, 1]")
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=int, help="number of optimizer steps")
    length.add_argument("--epochs", type=float, help="epochs; steps = ceil(epochs / sample rate)")
    parser.add_argument(
        "--delta", type=float, default=1e-5, help="δ in (0, 1), well below 1/dataset size (default 1e-5)"
    )
    parser.add_argument(
        "--accountant",
        choices=ACCOUNTANTS,
        default=DEFAULT_ACCOUNTANT,
        help=f"default: {DEFAULT_ACCOUNTANT} (what the theorem states)",
    )
    parser.add_argument(
        "--dataset-size",
        type=int,
        default=None,
        help="N, records with sensitive content: warns when δ > 1/N (default: N >= 1/sample rate)",
    )


def _warn_about_delta(args) -> None:
    """δ > 1/N lets the guarantee fail for a whole record; N is at least 1/q (an expected batch of one)."""
    import math
    import sys

    from hf_maskdp.privacy.accounting import delta_warning

    if args.dataset_size is not None and args.dataset_size < 1:
        raise ValueError(f"--dataset-size {args.dataset_size} must be >= 1")
    warning = delta_warning(args.delta, args.dataset_size or math.ceil(1 / args.sample_rate))  # both checked
    if warning:
        print(f"hf-maskdp privacy: warning: {warning}", file=sys.stderr)


def _epsilon(args) -> int:
    from hf_maskdp.privacy.accounting import compute_epsilon

    # Full precision: rounding ε down would understate the privacy cost.
    epsilon = compute_epsilon(
        args.sample_rate, args.noise_multiplier, args.steps, args.delta, args.accountant, args.epochs
    )
    _warn_about_delta(args)
    print(repr(epsilon))
    return 0


def _calibrate(args) -> int:
    from hf_maskdp.privacy.accounting import calibrate_noise_multiplier

    # Full precision: a rounded-down σ could miss the target.
    sigma = calibrate_noise_multiplier(
        args.target_epsilon, args.sample_rate, args.steps, args.delta, args.accountant, args.epochs
    )
    _warn_about_delta(args)
    print(repr(sigma))
    return 0
