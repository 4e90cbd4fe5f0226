"""`hf-maskdp quickstart [--output-dir DIR] [--fast]`: the whole method on the embedded dataset.

Generates labelled action clips, anonymizes them (real pose estimation), trains the same small
VideoMAE without privacy, with DP-SGD, on public views only and with MaskDP, and writes
results.md, results.json and results.png, the MaskDP model and the anonymized dataset (each with
its card) to DIR. About ten minutes on two CPU cores; --fast is a run of about a minute.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("quickstart", help="run the whole method on the embedded dataset (make demo)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="quickstart_output", help="where results, model and dataset go")
    parser.add_argument("--fast", action="store_true", help="a tiny run (a few training steps per setting)")
    parser.add_argument("--target-epsilon", type=float, default=1.0, help="privacy budget of the five settings")
    parser.add_argument("--seed", type=int, default=0, help="dataset, avatars and initial weights")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..quickstart import QuickstartConfig, run_quickstart

    settings = dict(output_dir=args.output_dir, target_epsilon=args.target_epsilon, seed=args.seed)
    config = QuickstartConfig.fast(**settings) if args.fast else QuickstartConfig(**settings)
    result = run_quickstart(config)
    print("wrote " + ", ".join(str(path) for path in result.files.values()))
    return 0
